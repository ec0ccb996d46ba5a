"""HSDP and device meshes in FSDP: FullyShardedDataParallel's HYBRID_SHARD /
_HYBRID_SHARD_ZERO2 (a 2-D mesh, a (shard, replicate) tuple of groups, or the default groups)
and ``device_mesh=``, and ``fully_shard(module, mesh=...)`` with a 1-D and a 2-D mesh.

Four ranks in one launch of ``mpiexec -n 4 tests/_hsdp_worker.py`` (two cores are enough: the
model is small), skipped only where mpi4py or mpiexec is missing, with that reason. Each rank
trains on its quarter of the batch; the references are the plain model trained here, in one
process, on the whole batch. The HSDP models' DCP checkpoints are loaded here into a plain
model.
"""
import json
import math

import numpy as np
import pytest

import minidl
import minidl.distributed.checkpoint as dcp
import minidl.nn.functional as F
from minidl.distributed.checkpoint.state_dict import get_state_dict, set_state_dict
from test_distributed import REPO, needs_mpi, run_mpi
import _fsdp_worker as fw
import _hsdp_worker as worker

WORKER = REPO / "tests" / "_hsdp_worker.py"
RANKS = worker.WORLD


@pytest.fixture(scope="module")
def launched(tmp_path_factory):
    out = tmp_path_factory.mktemp("hsdp")
    rc, so, se, _ = run_mpi([WORKER, out], n=RANKS, timeout=600)
    assert rc == 0, f"exit {rc}\n{so}\n{se}"
    return (out, [json.loads((out / f"rank{r}.json").read_text()) for r in range(RANKS)],
            [dict(np.load(out / f"rank{r}.npz")) for r in range(RANKS)])


_references = {}


def reference(opt_name):
    """The plain model and optimizer after the same steps on the whole batch (all ranks')."""
    if opt_name not in _references:
        _references[opt_name] = fw.train_reference("mlp", opt_name, world=RANKS)
    return _references[opt_name]


def _ids(runs):
    return [".".join(r) for r in runs]


@needs_mpi
@pytest.mark.parametrize("run", worker.RUNS, ids=_ids(worker.RUNS))
def test_training_equals_one_process_on_the_whole_batch(launched, run):
    """Every rank's model (gathered whole) after SGD-momentum / Adam steps on its quarter of
    the batch equals the plain model trained on the whole batch, float64, to rounding:
    gradients averaged over all four ranks, whether reduce-scattered over four or over a
    shard pair and then all-reduced across the replicas."""
    _, _, arrays = launched
    tag = ".".join(run)
    ref, _ = reference(run[1])
    for rank in range(RANKS):
        for key, want in ref.state_dict().items():
            got = arrays[rank][f"{tag}|{key}"]
            np.testing.assert_allclose(got, want.numpy(), rtol=1e-12, atol=1e-12,
                                       err_msg=f"rank {rank} {key}")


@needs_mpi
@pytest.mark.parametrize("run", worker.RUNS, ids=_ids(worker.RUNS))
def test_each_rank_holds_only_its_shard(launched, run):
    """A rank holds 1/shard-group-size of each unit (FSDP1) or parameter (fully_shard),
    padded: half with a (2, 2) mesh or a (shard pair, replicate pair) tuple, a quarter with
    the 1-D mesh and the default groups (one node: the world); its gradients and optimizer
    state the same sizes."""
    _, ranks, _ = launched
    tag = ".".join(run)
    shard_size = worker.SETUPS[run[0]][3]
    for rank, r in enumerate(ranks):
        info = r["train"][tag]
        assert info["shard_group_size"] == shard_size, rank
        want = [math.ceil(n / shard_size) for n in info["whole"]]
        assert info["pieces"] == want, (rank, info)
        assert info["grads"] == want and info["state"] == want, (rank, info)
        if worker.SETUPS[run[0]][0] == "fsdp2":
            plain = [p.data.size for p in fw.make_model("mlp").parameters()]
            assert info["whole"] == plain
        else:
            assert sum(info["whole"]) == sum(p.data.size
                                             for p in fw.make_model("mlp").parameters())


@needs_mpi
def test_clip_grad_norm_under_hsdp_is_the_whole_models(launched):
    """clip_grad_norm_ of a HYBRID_SHARD model on a (2, 2) mesh: the norm of the whole
    model's gradient on the whole batch (each shard pair's pieces summed, not the replicas
    counted twice), on every rank."""
    _, ranks, _ = launched
    plain = fw.make_model("mlp")
    x, y = fw.data("mlp", 0, RANKS)
    F.cross_entropy(plain(minidl.tensor(x, dtype=x.dtype)), minidl.tensor(y)).backward()
    want = math.sqrt(sum(float((p.grad.numpy() ** 2).sum()) for p in plain.parameters()))
    for r in ranks:
        assert r["train"]["hybrid_grad_norm"] == pytest.approx(want, rel=1e-12)


@needs_mpi
def test_default_hybrid_groups_are_one_node(launched):
    """HYBRID_SHARD without groups shards within one node (new_subgroups): on this machine
    the whole world, replicated over groups of one rank."""
    _, ranks, _ = launched
    assert [r["default_groups"] for r in ranks] == [[RANKS, 1]] * RANKS


@needs_mpi
@pytest.mark.parametrize("run", worker.CHECKPOINTED, ids=_ids(worker.CHECKPOINTED))
def test_hsdp_checkpoint_loads_into_one_process_model(launched, run):
    """get_state_dict + dcp.save on the four HSDP ranks (each piece held by two replicas,
    written once), then get_state_dict + dcp.load + set_state_dict here in one process into
    a plain model and optimizer built from another seed: the trained weights and optimizer
    state of the reference."""
    out, _, _ = launched
    tag = ".".join(run)
    model = fw.make_model("mlp", seed=7)
    opt = fw.make_opt(run[1], model.parameters())
    model_sd, optim_sd = get_state_dict(model, opt)
    state = {"model": model_sd, "optim": optim_sd}
    dcp.load(state, checkpoint_id=str(out / f"ckpt.{tag}"), no_dist=True)
    set_state_dict(model, opt, model_state_dict=state["model"], optim_state_dict=state["optim"])
    ref, ref_opt = reference(run[1])
    for (key, want), got in zip(ref.state_dict().items(), model.state_dict().values()):
        np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-12, atol=1e-12,
                                   err_msg=key)
    ref_state = list(ref_opt.state.values())
    got_state = list(opt.state.values())
    assert len(got_state) == len(ref_state) == 6
    for want, got in zip(ref_state, got_state):
        assert set(got) == set(want)
        for key in want:
            np.testing.assert_allclose(np.asarray(getattr(got[key], "data", got[key])),
                                       np.asarray(getattr(want[key], "data", want[key])),
                                       rtol=1e-12, atol=1e-12, err_msg=key)


@needs_mpi
def test_sharded_state_dict_saves_with_dcp_as_torchs(launched):
    """``with FSDP.state_dict_type(model, SHARDED_STATE_DICT): dcp.save({"model":
    model.state_dict()})``: the sharded values are FlatShards (a piece and its place), so DCP
    writes the whole model (HSDP's replicas once); ``dcp.load`` into another FSDP model's
    SHARDED state_dict (four quarters instead of two halves) and load_state_dict, or into a
    plain model here, give the trained weights."""
    out, ranks, arrays = launched
    assert [r["train"]["sharded_values"] for r in ranks] == [["FlatShard"]] * RANKS  # no buffers
    ref, _ = reference(worker.SHARDED_RUN.split(".")[1])
    plain = fw.make_model("mlp", seed=7)
    state = {"model": plain.state_dict()}
    dcp.load(state, checkpoint_id=str(out / "sharded"), no_dist=True)
    plain.load_state_dict(state["model"])
    for key, want in ref.state_dict().items():
        np.testing.assert_allclose(plain.state_dict()[key].numpy(), want.numpy(), rtol=1e-12,
                                   atol=1e-12, err_msg=key)
        for rank in range(RANKS):
            np.testing.assert_allclose(arrays[rank][f"resharded|{key}"], want.numpy(),
                                       rtol=1e-12, atol=1e-12, err_msg=f"rank {rank} {key}")


ERRORS = {
    "hybrid_1d_mesh": "ValueError: FullyShardedDataParallel: HYBRID_SHARD takes a 2-D "
                      "device_mesh (dim 0 replicate, dim 1 shard), got a 1-D mesh of shape (4,)",
    "hybrid_3d_mesh": "got a 3-D mesh of shape (1, 2, 2)",
    "full_shard_2d_mesh": "ValueError: FullyShardedDataParallel: FULL_SHARD takes a 1-D "
                          "device_mesh (the ranks to shard over), got a 2-D mesh of shape (2, 2)",
    "mesh_not_a_mesh": "TypeError: FullyShardedDataParallel: device_mesh must be a DeviceMesh "
                       "(init_device_mesh), got list",
    "both": "ValueError: FullyShardedDataParallel: cannot pass both process_group and "
            "device_mesh",
    "one_group": "ValueError: FullyShardedDataParallel: HYBRID_SHARD takes process_group="
                 "(shard group, replicate group), a tuple of two ProcessGroups, got ProcessGroup",
    "three_groups": "a tuple of two ProcessGroups, got a tuple of 3",
    "not_groups": "got a tuple of 2: ['ProcessGroup', 'str']",
    "tuple_without_hybrid": "ValueError: FullyShardedDataParallel: a (shard group, replicate "
                            "group) pair as process_group is for HYBRID_SHARD or "
                            "_HYBRID_SHARD_ZERO2, not FULL_SHARD",
    "replicas_hold_other_pieces": "ValueError: FullyShardedDataParallel: the replicate group "
                                  "holds ranks that do not hold the same shard",
    "fsdp2_3d_mesh": "ValueError: fully_shard expects a 1D or 2D DeviceMesh but got a 3-D mesh "
                     "of shape (1, 2, 2)",
    "fsdp2_not_a_mesh": "TypeError: fully_shard: mesh must be a DeviceMesh (init_device_mesh), "
                        "got str",
}


@needs_mpi
@pytest.mark.parametrize("case", sorted(ERRORS))
def test_bad_groups_and_meshes_are_refused_by_name(launched, case):
    """Meshes of the wrong dimension for the strategy, a process_group that is not a (shard,
    replicate) pair of groups, a pair without HYBRID_SHARD, replicas that hold different
    pieces: refused on every rank, naming what did not fit, the module left as it was."""
    _, ranks, _ = launched
    for rank, r in enumerate(ranks):
        got = r["errors"][case]
        assert got is not None and ERRORS[case] in got, (rank, got)
        assert r["errors"]["unchanged"] is True
