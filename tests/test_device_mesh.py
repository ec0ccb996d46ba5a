"""``minidl.distributed.device_mesh`` (DeviceMesh, init_device_mesh), ``new_subgroups`` and
``send_object_list``/``recv_object_list``: four ranks in one launch of
``mpiexec -n 4 tests/_device_mesh_worker.py`` (two cores are enough: the cases are small),
skipped only where mpi4py or mpiexec is missing, with that reason."""
import inspect
import json

import pytest

import minidl.distributed as dist
from test_distributed import REPO, needs_mpi, run_mpi

WORKER = REPO / "tests" / "_device_mesh_worker.py"


@pytest.fixture(scope="module")
def ranks(tmp_path_factory):
    out = tmp_path_factory.mktemp("mesh")
    rc, so, se, _ = run_mpi([WORKER, out], n=4, timeout=300)
    assert rc == 0, f"exit {rc}\n{so}\n{se}"
    return [json.loads((out / f"rank{r}.json").read_text()) for r in range(4)]


@needs_mpi
def test_a_2x2_mesh_lays_out_ranks_and_groups_as_torch(ranks):
    for rank, r in enumerate(ranks):
        dp, tp = divmod(rank, 2)
        assert r["repr"] == "DeviceMesh('cpu', [[0, 1], [2, 3]], mesh_dim_names=('dp', 'tp'))"
        assert (r["shape"], r["ndim"], r["size"], r["size_tp"]) == ([2, 2], 2, 4, 2)
        assert r["coordinate"] == [dp, tp] and (r["local_dp"], r["local_tp"]) == (dp, tp)
        assert r["ranks_dp"] == [tp, tp + 2] and r["ranks_tp"] == [2 * dp, 2 * dp + 1]
        assert r["sum_dp"] == tp + tp + 2 and r["sum_tp"] == 4 * dp + 1  # reduced per group
        assert r["all_groups"] == [r["ranks_dp"], r["ranks_tp"]]
        assert r["sub_tp"] == [[2 * dp, 2 * dp + 1], ["tp"], tp, True, True]
        assert r["flat"] == ["DeviceMesh('cpu', [0, 1, 2, 3])", True, rank, 6.0]
        # the mesh [[0, 2], [1, 3]]: rank r at (r % 2, r // 2), its column along dim 0
        col = rank // 2
        assert r["explicit"] == [[rank % 2, col], [2 * col, 2 * col + 1], False]


@needs_mpi
def test_new_subgroups_and_objects_point_to_point(ranks):
    for rank, r in enumerate(ranks):
        pair = [rank - rank % 2, rank - rank % 2 + 1]
        assert r["subgroups"] == [pair, 2, float(sum(pair))]
        mine = [0, 3] if rank in (0, 3) else [1, 2]
        assert r["by_enumeration"] == [mine, 3.0]
    assert ranks[3]["recv_from_any"] == [0, {"step": 7, "lr": 0.1}, "text", [0, 1, 2], None]
    assert ranks[2]["recv_named"] == [1, [[]]]


@needs_mpi
def test_bad_meshes_are_refused_by_name(ranks):
    e = ranks[0]["errors"]
    assert e["shape"] == "RuntimeError: init_device_mesh: mesh_shape (3,) holds 3 ranks, the " \
                         "world has 4"
    assert "should have same length" in e["names_length"]
    assert "each mesh_dim_name must be unique" in e["names_unique"]
    assert e["twice"] == "ValueError: DeviceMesh: mesh [[0, 1], [1, 2]] names a rank twice"
    assert "ranks outside the world of 4" in e["outside"]
    assert "`mesh_dim` needs to be specified when device_mesh.ndim > 1" in e["group_2d"]
    assert e["bad_name"].startswith("KeyError") and "'pp'" in e["bad_name"]
    assert e["bad_dim"].startswith("IndexError") and "out of range for a 2-D mesh" in e["bad_dim"]
    assert "in the mesh's order" in e["order"]
    assert "not a device with an index" in e["indexed_type"]
    assert "must be divisible by group_size (3)" in e["subgroup_size"]
    assert "rank 1 is in subgroups 0 and 1" in e["overlap"]


def test_signatures_match_torch():
    pytest.importorskip("torch")
    from minidl.distributed import device_mesh

    import torch.distributed as tdist
    from torch.distributed import device_mesh as tmesh

    for name in ("new_subgroups", "new_subgroups_by_enumeration", "send_object_list",
                 "recv_object_list"):
        assert list(inspect.signature(getattr(dist, name)).parameters) == \
            list(inspect.signature(getattr(tdist, name)).parameters), name
    ours = list(inspect.signature(device_mesh.init_device_mesh).parameters)
    theirs = list(inspect.signature(tmesh.init_device_mesh).parameters)
    assert ours == theirs
    for method in ("size", "get_group", "get_local_rank", "get_coordinate", "get_rank",
                   "get_all_groups"):
        assert hasattr(tmesh.DeviceMesh, method) and hasattr(device_mesh.DeviceMesh, method)
