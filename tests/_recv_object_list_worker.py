"""What each rank runs for test_recv_object_list_of_another_length_names_both_and_stays_in_step
in tests/test_distributed_api.py, under ``mpiexec -n 2 python tests/_recv_object_list_worker.py
OUTDIR``: recv_object_list given a list of another length than the sender's, then a matching
one; rank 1 writes OUTDIR/rank1.json."""
from __future__ import annotations

import json
import sys

import minidl.distributed as dist


def main(out):
    dist.init_process_group("mpi")
    rank = dist.get_rank()
    if rank == 0:
        for objects in ([1, 2, 3], ["a", "b"], [{"x": 1}], [None, "c"]):
            dist.send_object_list(objects, dst=1)
    else:
        got = []
        for room in (2, 2, 3, 2):
            box = ["untouched"] * room
            try:
                sender = dist.recv_object_list(box, src=0 if room == 3 else None)
                got.append(["ok", sender, box])
            except ValueError as e:
                got.append(["ValueError", str(e), box])
        with open(f"{out}/rank1.json", "w") as f:
            json.dump(got, f)
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1])
