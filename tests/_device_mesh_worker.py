"""What each rank runs for tests/test_device_mesh.py, under
``mpiexec -n 4 python tests/_device_mesh_worker.py OUTDIR``: a (2, 2) DeviceMesh and its
groups, sub-meshes, new_subgroups, objects sent point to point, and bad input; each rank writes
OUTDIR/rank<R>.json."""
from __future__ import annotations

import json
import sys

import numpy as np

import minidl
import minidl.distributed as dist
from minidl.distributed.device_mesh import DeviceMesh, init_device_mesh


def _catch(fn):
    try:
        fn()
    except Exception as e:  # noqa: BLE001  (the test reads the message)
        return f"{type(e).__name__}: {e}"
    return "no error"


def _sum_over(group):
    x = minidl.tensor([float(dist.get_rank())], dtype=minidl.float64)
    dist.all_reduce(x, group=group)
    return float(x.item())


def main(out):
    mesh = init_device_mesh("cpu", (2, 2), mesh_dim_names=("dp", "tp"))  # starts the group
    rank = dist.get_rank()
    r = {"repr": repr(mesh), "shape": list(mesh.shape), "ndim": mesh.ndim, "size": mesh.size(),
         "size_tp": mesh.size("tp"), "coordinate": mesh.get_coordinate(),
         "local_dp": mesh.get_local_rank("dp"), "local_tp": mesh.get_local_rank(1),
         "ranks_dp": dist.get_process_group_ranks(mesh.get_group("dp")),
         "ranks_tp": dist.get_process_group_ranks(mesh.get_group(1)),
         "sum_dp": _sum_over(mesh.get_group("dp")), "sum_tp": _sum_over(mesh.get_group("tp")),
         "all_groups": [dist.get_process_group_ranks(g) for g in mesh.get_all_groups()]}
    tp = mesh["tp"]
    r["sub_tp"] = [tp.mesh.tolist(), tp.mesh_dim_names, tp.get_local_rank(),
                   tp.get_group() is mesh.get_group("tp"), mesh["dp", "tp"] is mesh]
    flat = init_device_mesh("cpu", (4,))
    r["flat"] = [repr(flat), flat.get_group() is dist.group.WORLD, flat.get_local_rank(),
                 _sum_over(flat.get_group())]
    explicit = DeviceMesh("cpu", minidl.tensor([[0, 2], [1, 3]]))
    r["explicit"] = [explicit.get_coordinate(),
                     dist.get_process_group_ranks(explicit.get_group(0)), explicit == mesh]
    # new_subgroups
    cur, groups = dist.new_subgroups(2)
    r["subgroups"] = [dist.get_process_group_ranks(cur), len(groups), _sum_over(cur)]
    cur, groups = dist.new_subgroups_by_enumeration([[0, 3], [1, 2]])
    r["by_enumeration"] = [dist.get_process_group_ranks(cur), _sum_over(cur)]
    # objects, point to point: 0 -> 3 (received from any rank), 1 -> 2 (named source)
    payload = [{"step": 7, "lr": 0.1}, "text", np.arange(3), None]
    if rank == 0:
        dist.send_object_list(payload, dst=3)
    elif rank == 3:
        got = [None] * 4
        r["recv_from_any"] = [dist.recv_object_list(got), got[0], got[1], got[2].tolist(), got[3]]
    elif rank == 1:
        dist.send_object_list([[]], dst=2)
    else:
        got = [1]
        r["recv_named"] = [dist.recv_object_list(got, src=1), got]
    # bad input
    r["errors"] = {
        "shape": _catch(lambda: init_device_mesh("cpu", (3,))),
        "names_length": _catch(lambda: init_device_mesh("cpu", (2, 2), mesh_dim_names=("a",))),
        "names_unique": _catch(lambda: DeviceMesh("cpu", [[0, 1], [2, 3]],
                                                  mesh_dim_names=("a", "a"))),
        "twice": _catch(lambda: DeviceMesh("cpu", [[0, 1], [1, 2]])),
        "outside": _catch(lambda: DeviceMesh("cpu", [0, 9])),
        "group_2d": _catch(lambda: mesh.get_group()),
        "bad_name": _catch(lambda: mesh["pp"]),
        "bad_dim": _catch(lambda: mesh.get_group(2)),
        "order": _catch(lambda: mesh["tp", "dp"]),
        "indexed_type": _catch(lambda: init_device_mesh("cuda:0", (4,))),
        "subgroup_size": _catch(lambda: dist.new_subgroups(3)),
        "overlap": _catch(lambda: dist.new_subgroups_by_enumeration([[0, 1], [1, 2]])),
    }
    with open(f"{out}/rank{rank}.json", "w") as f:
        json.dump(r, f)
    dist.barrier()


if __name__ == "__main__":
    main(sys.argv[1])
