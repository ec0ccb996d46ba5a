"""minidl.distributed.checkpoint (torch.distributed.checkpoint, "DCP").

The single-process cases run here; the multi-rank ones (DDP, FSDP, fully_shard on 2 ranks)
run in one launch of ``mpiexec -n 2 tests/_dcp_worker.py`` (skipped only where mpi4py or
mpiexec is missing, with that reason), and the references are computed here, in one process,
by the plain model on the whole batch.
"""
import json
import os
import warnings

import numpy as np
import pytest

import minidl
import minidl.distributed.checkpoint as dcp
import minidl.nn as nn
import minidl.nn.functional as F
from minidl import optim
from minidl.distributed.checkpoint.state_dict import (StateDictOptions, get_model_state_dict,
                                                      get_optimizer_state_dict, get_state_dict,
                                                      set_model_state_dict,
                                                      set_optimizer_state_dict, set_state_dict)
from test_distributed import REPO, needs_mpi, run_mpi
import _dcp_worker as worker
import _fsdp_worker as fw

WORKER = REPO / "tests" / "_dcp_worker.py"


def small(seed=0):
    minidl.manual_seed(seed)
    return nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))


def batch():
    rng = np.random.default_rng(5)
    return minidl.tensor(rng.standard_normal((6, 4))), minidl.tensor(rng.integers(0, 3, 6))


def train(model, opt, n):
    x, y = batch()
    losses = []
    for _ in range(n):
        opt.zero_grad()
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        losses.append(float(loss.item()))
    return losses


def arrays(sd):
    return {k: v.numpy().copy() for k, v in sd.items()}


# ---- one process ------------------------------------------------------------------------------
def test_round_trip_model_and_adam_resumes_identically(tmp_path):
    model, opt = small(), None
    opt = optim.Adam(model.parameters(), lr=0.01)
    train(model, opt, 3)
    msd, osd = get_state_dict(model, opt)
    dcp.save({"model": msd, "optim": osd, "epoch": 3, "note": ("a", 1)}, checkpoint_id=tmp_path)
    want = train(model, opt, 4)

    fresh = small(seed=9)
    fresh_opt = optim.Adam(fresh.parameters(), lr=0.5)
    msd2, osd2 = get_state_dict(fresh, fresh_opt)
    state = {"model": msd2, "optim": osd2, "epoch": 0, "note": None}
    dcp.load(state, checkpoint_id=tmp_path)
    assert state["epoch"] == 3 and state["note"] == ("a", 1)  # non-tensor values replaced
    assert state["optim"]["param_groups"][0]["lr"] == 0.01  # nested values too
    assert state["optim"]["state"]["0.weight"]["step"] == 3
    set_state_dict(fresh, fresh_opt, model_state_dict=state["model"],
                   optim_state_dict=state["optim"])
    assert fresh_opt.param_groups[0]["lr"] == 0.01
    assert train(fresh, fresh_opt, 4) == want  # bit for bit


def test_load_fills_in_place_and_casts_to_the_targets_dtype(tmp_path):
    model = small()
    sd = model.state_dict()
    dcp.save({k: v.to(minidl.float64) for k, v in sd.items()}, checkpoint_id=tmp_path)
    other = small(seed=3)
    target = other.state_dict()
    before = {k: id(v) for k, v in target.items()}
    dcp.load(target, checkpoint_id=tmp_path)
    assert {k: id(v) for k, v in target.items()} == before  # the same Tensors, filled
    for k, v in sd.items():
        assert target[k].dtype == np.float32
        np.testing.assert_array_equal(target[k].numpy(), v.numpy())
        # a plain module's state dict shares its arrays: the model itself is loaded
        np.testing.assert_array_equal(other.state_dict()[k].numpy(), v.numpy())


@pytest.mark.parametrize("saved,target", [("bfloat16", "float32"), ("float16", "bfloat16"),
                                           ("int64", "float32"), ("float64", "float64")])
def test_dtypes_round_trip_and_cast_into_the_target(tmp_path, saved, target):
    values = [1.5, -2.25, 3.0]
    dcp.save({"t": minidl.tensor(values).to(getattr(minidl, saved)),
              "empty": minidl.tensor(np.zeros((0, 3)))}, checkpoint_id=tmp_path)
    assert dcp.FileSystemReader(tmp_path).read_metadata().state_dict_metadata["t"].dtype == \
        str(np.dtype(getattr(minidl, saved)))
    sd = {"t": minidl.tensor([0.0, 0.0, 0.0]).to(getattr(minidl, target)),
          "empty": minidl.tensor(np.ones((0, 3)))}
    dcp.load(sd, checkpoint_id=tmp_path)
    assert sd["t"].dtype == np.dtype(getattr(minidl, target))
    want = [1.0, -2.0, 3.0] if saved == "int64" else values
    assert sd["t"].numpy().astype(np.float64).tolist() == want


def test_missing_key_raises_naming_it_and_partial_load_allows_it(tmp_path):
    dcp.save({"a": minidl.tensor([1.0, 2.0])}, checkpoint_id=tmp_path)
    sd = {"a": minidl.tensor([0.0, 0.0]), "b": minidl.tensor([5.0])}
    with pytest.raises(RuntimeError, match=r"Missing key in checkpoint state_dict: b\."):
        dcp.load(sd, checkpoint_id=tmp_path)
    assert sd["a"].numpy().tolist() == [0.0, 0.0]  # nothing changed
    dcp.load(sd, checkpoint_id=tmp_path,
             planner=dcp.DefaultLoadPlanner(allow_partial_load=True))
    assert sd["a"].numpy().tolist() == [1.0, 2.0] and sd["b"].numpy().tolist() == [5.0]
    # keys only the checkpoint has are ignored
    only = {"x": 1}
    dcp.save({"a": minidl.tensor([1.0]), "x": 2}, checkpoint_id=tmp_path / "c2")
    dcp.load(only, checkpoint_id=tmp_path / "c2")
    assert only == {"x": 2}


def test_shape_mismatch_names_key_and_both_shapes_and_changes_nothing(tmp_path):
    dcp.save({"w": minidl.tensor(np.ones((2, 3))), "b": minidl.tensor([1.0])},
             checkpoint_id=tmp_path)
    sd = {"b": minidl.tensor([0.0]), "w": minidl.tensor(np.zeros((3, 2)))}
    with pytest.raises(ValueError, match=r"Size mismatch between saved \(2, 3\) and current: "
                                         r"\(3, 2\) for w "):
        dcp.load(sd, checkpoint_id=tmp_path)
    assert sd["b"].numpy().tolist() == [0.0]
    with pytest.raises(TypeError, match="'b' is a tensor"):
        dcp.load({"b": 1}, checkpoint_id=tmp_path)


def test_missing_or_incomplete_or_corrupt_checkpoint(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        dcp.load({"a": minidl.tensor([1.0])}, checkpoint_id=tmp_path / "nope")
    (tmp_path / "half").mkdir()
    (tmp_path / "half" / "0123456789ab.rank0.data").write_bytes(b"xx")
    with pytest.raises(FileNotFoundError, match=r"no complete checkpoint.*\.metadata"):
        dcp.load({"a": minidl.tensor([1.0])}, checkpoint_id=tmp_path / "half")
    dcp.save({"a": minidl.tensor(np.arange(10.0))}, checkpoint_id=tmp_path / "ok")
    (data,) = [p for p in (tmp_path / "ok").iterdir() if p.name.endswith(".data")]
    data.write_bytes(data.read_bytes()[:-4])
    with pytest.raises(ValueError, match=f"{data.name}.*truncated or corrupt"):
        dcp.load({"a": minidl.tensor(np.zeros(10))}, checkpoint_id=tmp_path / "ok")
    data.unlink()
    with pytest.raises(FileNotFoundError, match=f"cannot read checkpoint data file.*{data.name}"):
        dcp.load({"a": minidl.tensor(np.zeros(10))}, checkpoint_id=tmp_path / "ok")
    (tmp_path / "ok" / ".metadata").write_text("{not json")
    with pytest.raises(ValueError, match=r"\.metadata.*corrupt"):
        dcp.load({"a": minidl.tensor(np.zeros(10))}, checkpoint_id=tmp_path / "ok")


def test_a_save_that_dies_leaves_the_previous_checkpoint(tmp_path, monkeypatch):
    dcp.save({"a": minidl.tensor([1.0, 2.0])}, checkpoint_id=tmp_path)
    first = sorted(os.listdir(tmp_path))

    def die(self, meta):
        raise OSError("disk full")

    monkeypatch.setattr(dcp.FileSystemWriter, "_write_metadata", die)
    with pytest.raises(OSError, match="disk full"):
        dcp.save({"a": minidl.tensor([7.0, 8.0])}, checkpoint_id=tmp_path)
    monkeypatch.undo()
    sd = {"a": minidl.tensor([0.0, 0.0])}
    dcp.load(sd, checkpoint_id=tmp_path)
    assert sd["a"].numpy().tolist() == [1.0, 2.0]  # the old one, whole
    dcp.save({"a": minidl.tensor([3.0, 4.0])}, checkpoint_id=tmp_path)
    files = sorted(os.listdir(tmp_path))
    assert len(files) == 2 and files != first  # the earlier saves' data files are gone
    dcp.load(sd, checkpoint_id=tmp_path)
    assert sd["a"].numpy().tolist() == [3.0, 4.0]


def test_bad_arguments(tmp_path):
    with pytest.raises(RuntimeError, match="checkpoint_id must be given"):
        dcp.save({"a": minidl.tensor([1.0])})
    with pytest.raises(RuntimeError, match="checkpoint_id must be given"):
        dcp.load({"a": minidl.tensor([1.0])})
    (tmp_path / "file").write_text("x")
    with pytest.raises(NotADirectoryError, match="is a file"):
        dcp.save({"a": minidl.tensor([1.0])}, checkpoint_id=tmp_path / "file")
    with pytest.raises(TypeError, match="must be a dict"):
        dcp.save([minidl.tensor([1.0])], checkpoint_id=tmp_path / "d")
    with pytest.raises(TypeError, match="keys must be str or int"):
        dcp.save({(1, 2): minidl.tensor([1.0])}, checkpoint_id=tmp_path / "d")
    with pytest.raises(TypeError, match="cannot be pickled"):
        dcp.save({"f": lambda: 1}, checkpoint_id=tmp_path / "d")
    assert not (tmp_path / "d").exists() or not os.listdir(tmp_path / "d")  # checked first
    with pytest.raises(TypeError, match="options must be a StateDictOptions"):
        get_model_state_dict(small(), options={"full_state_dict": True})


def test_writer_reader_objects_async_save_and_deprecated_aliases(tmp_path):
    sd = {"a": minidl.tensor([1.0, 2.0]), "n": 4}
    future = dcp.async_save(sd, storage_writer=dcp.FileSystemWriter(tmp_path))
    assert future.done()
    meta = future.result()
    assert isinstance(meta.state_dict_metadata["a"], dcp.TensorStorageMetadata)
    assert meta.state_dict_metadata["a"].size == (2,)
    assert isinstance(dcp.FileSystemReader(tmp_path).read_metadata().state_dict_metadata["n"],
                      dcp.BytesStorageMetadata)
    with pytest.warns(FutureWarning, match="`save_state_dict` is deprecated"):
        dcp.save_state_dict(sd, dcp.FileSystemWriter(tmp_path / "old"))
    target = {"a": minidl.tensor([0.0, 0.0]), "n": 0}
    with pytest.warns(FutureWarning, match="`load_state_dict` is deprecated"):
        dcp.load_state_dict(target, dcp.FileSystemReader(tmp_path / "old"))
    assert target["n"] == 4 and target["a"].numpy().tolist() == [1.0, 2.0]


def test_state_dict_options():
    model = small()
    model[0].weight.requires_grad = False
    opt = optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1, momentum=0.9)
    msd = get_model_state_dict(model, options=StateDictOptions(ignore_frozen_params=True))
    assert list(msd) == ["0.bias", "2.weight", "2.bias"]
    flat = get_optimizer_state_dict(model, opt, options=StateDictOptions(
        flatten_optimizer_state_dict=True))
    assert "state.2.weight.momentum_buffer" in flat and flat["param_groups.0.bias.lr"] == 0.1
    flat["param_groups.0.bias.lr"] = 0.25
    for name in ("0.bias", "2.weight", "2.bias"):
        flat[f"param_groups.{name}.lr"] = 0.25
    set_optimizer_state_dict(model, opt, flat)
    assert opt.param_groups[0]["lr"] == 0.25
    result = set_model_state_dict(model, {"0.bias": minidl.tensor(np.zeros(8))},
                                  options=StateDictOptions(strict=False))
    assert "2.weight" in result.missing_keys
    assert not model[0].bias.numpy().any()
    with pytest.raises(ValueError, match="parameter group"):
        set_optimizer_state_dict(model, opt, {"state": {}, "param_groups": []})


def test_get_state_dict_structure_matches_torch():
    torch = pytest.importorskip("torch")
    tsd = pytest.importorskip("torch.distributed.checkpoint.state_dict")
    tmodel = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3))
    topt = torch.optim.Adam(tmodel.parameters(), lr=0.01)
    # torch's works in one process without a process group; a fresh optimizer's state is made
    t_msd, t_osd = tsd.get_state_dict(tmodel, topt)
    model = small()
    opt = optim.Adam(model.parameters(), lr=0.01)
    msd, osd = get_state_dict(model, opt)
    assert list(msd) == list(t_msd)
    assert set(osd) == set(t_osd) == {"state", "param_groups"}
    assert list(osd["state"]) == list(t_osd["state"])
    for k, entry in t_osd["state"].items():
        assert set(osd["state"][k]) == set(entry)
        for key in ("exp_avg", "exp_avg_sq"):
            assert tuple(osd["state"][k][key].shape) == tuple(entry[key].shape)
    assert [g["params"] for g in osd["param_groups"]] == \
        [g["params"] for g in t_osd["param_groups"]]
    assert set(osd["param_groups"][0]) == set(t_osd["param_groups"][0])
    t_flat = tsd.get_optimizer_state_dict(tmodel, topt, options=tsd.StateDictOptions(
        flatten_optimizer_state_dict=True))
    flat = get_optimizer_state_dict(model, opt, options=StateDictOptions(
        flatten_optimizer_state_dict=True))
    assert set(flat) == set(t_flat)
    # the model is untouched by making the optimizer's state
    np.testing.assert_array_equal(model[0].weight.numpy(), small()[0].weight.numpy())


# ---- 2 ranks ----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def launched(tmp_path_factory):
    out = tmp_path_factory.mktemp("dcp")
    model, opt = fw.train_reference("mlp", "adam", steps=worker.BEFORE)
    msd, osd = get_state_dict(model, opt)
    dcp.save({"model": msd, "optim": osd}, checkpoint_id=out / "plain_ckpt")
    rc, so, se, _ = run_mpi([WORKER, out, out / "plain_ckpt"], timeout=300)
    assert rc == 0, f"exit {rc}\n{so}\n{se}"
    return out, [json.loads((out / f"dcp.rank{r}.json").read_text()) for r in range(2)]


def _whole_batch_continuation(model, opt):
    losses = []
    for s in range(worker.BEFORE, worker.BEFORE + worker.AFTER):
        x, y = fw.data("mlp", s)
        opt.zero_grad()
        loss = F.cross_entropy(model(minidl.tensor(x, dtype=x.dtype)), minidl.tensor(y))
        loss.backward()
        opt.step()
        losses.append(float(loss.item()))
    return losses


def _load_plain(ckpt):
    model, opt = fw.make_model("mlp", seed=7), None
    opt = fw.make_opt("adam", model.parameters())
    msd, osd = get_state_dict(model, opt)
    state = {"model": msd, "optim": osd}
    dcp.load(state, checkpoint_id=ckpt)
    set_state_dict(model, opt, model_state_dict=state["model"], optim_state_dict=state["optim"])
    return model, opt


@needs_mpi
@pytest.mark.parametrize("style", ["ddp", "fsdp", "fsdp2"])
def test_two_ranks_save_resume_on_two_ranks_identically(launched, style):
    """Saved after BEFORE steps on 2 ranks, loaded into a fresh model (other initial weights)
    and optimizer on 2 ranks: the next losses are the uninterrupted run's, bit for bit."""
    _, infos = launched
    for r in infos:
        info = r[style]
        assert info["future_done"]
        assert info["resumed"] == info["uninterrupted"][worker.BEFORE:]
        assert info["weights_resumed"] == info["weights_at_save"]


@needs_mpi
def test_what_each_rank_writes(launched):
    """DDP's replicated tensors are written once (rank 0's file only); FSDP's ranks each write
    their own pieces (FlatShards), which together make the model."""
    _, infos = launched
    assert [f.split(".", 1)[1] for f in infos[0]["ddp"]["files"]] == ["rank0.data"]
    plain = sum(p.data.size for p in fw.make_model("mlp").parameters())
    for style in ("fsdp", "fsdp2"):
        assert [f.split(".", 1)[1] for f in infos[0][style]["files"]] == \
            ["rank0.data", "rank1.data"]
        assert infos[0][style]["sharded_values"] == sorted(
            n for n, _ in fw.make_model("mlp").named_parameters())
        assert infos[0][style]["local_elements"] + infos[1][style]["local_elements"] == plain


@needs_mpi
@pytest.mark.parametrize("style", ["ddp", "fsdp", "fsdp2"])
def test_two_rank_checkpoint_loads_into_one_plain_process(launched, style):
    """The 2-rank checkpoint loads into the plain model in one process: the weights and Adam
    state of the whole-batch run after BEFORE steps, and training goes on with the 2-rank
    run's losses (the mean of the ranks' halves) and the uninterrupted run's."""
    out, infos = launched
    model, opt = _load_plain(out / f"{style}_ckpt")
    ref, ref_opt = fw.train_reference("mlp", "adam", steps=worker.BEFORE)
    for (k, v), w in zip(model.state_dict().items(), ref.state_dict().values()):
        np.testing.assert_allclose(v.numpy(), w.numpy(), rtol=1e-12, atol=1e-14, err_msg=k)
    for p, q in zip(model.parameters(), ref.parameters()):
        for key in ("exp_avg", "exp_avg_sq"):
            np.testing.assert_allclose(opt.state[id(p)][key], ref_opt.state[id(q)][key],
                                       rtol=1e-10, atol=1e-16)
        assert opt.state[id(p)]["step"] == worker.BEFORE
    losses = _whole_batch_continuation(model, opt)
    ranks = np.mean([r[style]["resumed"] for r in infos], axis=0)
    np.testing.assert_allclose(losses, ranks, rtol=1e-12)
    ref_losses = _whole_batch_continuation(ref, ref_opt)
    np.testing.assert_allclose(losses, ref_losses, rtol=1e-12)


@needs_mpi
def test_one_process_checkpoint_loads_into_two_fsdp_ranks(launched):
    out, infos = launched
    model, opt = _load_plain(out / "plain_ckpt")
    for r in infos:
        got = r["fsdp_from_plain"]["weights"]
        for k, v in model.state_dict().items():
            np.testing.assert_array_equal(np.array(got[k]), v.numpy(), err_msg=k)
    losses = _whole_batch_continuation(model, opt)
    ranks = np.mean([r["fsdp_from_plain"]["losses"] for r in infos], axis=0)
    np.testing.assert_allclose(ranks, losses, rtol=1e-12)


@needs_mpi
def test_errors_on_two_ranks(launched):
    _, infos = launched
    for rank, r in enumerate(infos):
        e = r["errors"]
        assert e["missing_key"].startswith(
            "RuntimeError: Missing key in checkpoint state_dict: model.extra.weight.")
        # rank 1 alone lacks a key: both raise, rank 0 naming rank 1
        assert "Missing key in checkpoint state_dict: model.nope." in e["one_rank_fails"]
        if rank == 0:
            assert e["one_rank_fails"].startswith("RuntimeError: load failed on rank 1:")
        assert "ranks disagree on 'w': rank 0 has shape (3,)" in e["unlabelled_pieces"]
        assert "rank 1 shape (4,)" in e["unlabelled_pieces"]
        assert e["bad_dir_left"] is False


def test_no_warning_from_a_plain_round_trip(tmp_path):
    model = small()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        dcp.save(model.state_dict(), checkpoint_id=tmp_path)
        dcp.load(model.state_dict(), checkpoint_id=tmp_path)


@needs_mpi
@pytest.mark.parametrize("variant", [".".join(v) for v in worker.VARIANTS])
def test_other_strategies_optimizers_and_models_resume_identically(launched, variant):
    """SHARD_GRAD_OP with SGD-momentum, NO_SHARD (replicated: one file), a conv net with
    BatchNorm buffers, fully_shard with SGD: resumed on 2 ranks = uninterrupted."""
    _, infos = launched
    for r in infos:
        assert r["variants"][variant]["equal"]
        assert r["variants"][variant]["files"] == (1 if "NO_SHARD" in variant else 2)


@needs_mpi
def test_layouts_and_whole_values_on_two_ranks(launched):
    """An FSDP (FSDP1 units) checkpoint resumes a fully_shard model (the pieces laid out
    otherwise); full_state_dict=True saves the whole values once and resumes identically;
    with cpu_offload too, rank 0 alone gets the state dict."""
    _, infos = launched
    for rank, r in enumerate(infos):
        v = r["variants"]
        assert v["fsdp_to_fsdp2"] and v["full_equal"]
        assert v["full_files"] == 1
        assert v["rank0_only_keys"] == (6 if rank == 0 else 0)


def test_the_docs_example_runs(tmp_path, monkeypatch, capsys):
    text = (REPO / "docs" / "distributed-checkpoint.md").read_text()
    blocks = [b.split("```", 1)[0] for b in text.split("```python\n")[1:]]
    assert blocks
    monkeypatch.chdir(tmp_path)
    for code in blocks:
        exec(compile(code, "distributed-checkpoint.md", "exec"), {})
    assert capsys.readouterr().out.split() == ["1", "1"]
    assert (tmp_path / "ckpt" / "epoch1" / ".metadata").is_file()


def test_reached_as_an_attribute_of_minidl_distributed():
    import minidl.distributed as dist
    assert dist.checkpoint is dcp
    assert dcp.state_dict.get_state_dict is get_state_dict


def test_a_fresh_optimizers_state_is_made_without_touching_the_model_or_real_gradients():
    model = small()
    before = arrays(model.state_dict())
    opt = optim.Adam(model.parameters(), lr=0.1, weight_decay=0.5)
    osd = get_optimizer_state_dict(model, opt)
    assert set(osd["state"]["0.weight"]) == {"step", "exp_avg", "exp_avg_sq"}
    assert osd["state"]["0.weight"]["exp_avg"].shape == (8, 4)
    assert opt.param_groups[0]["lr"] == 0.1
    assert all(p.grad is None for p in model.parameters())
    for k, v in arrays(model.state_dict()).items():
        np.testing.assert_array_equal(v, before[k])
    # a parameter with a gradient: no step is taken (it would use the gradient), as torch
    model2 = small()
    opt2 = optim.Adam(model2.parameters(), lr=0.1)
    x, y = batch()
    F.cross_entropy(model2(x), y).backward()
    assert get_optimizer_state_dict(model2, opt2)["state"] == {}
    assert model2[0].weight.grad is not None


# ---- sparse tensors refused before anything changes; quantized tensors and plain lists round trip ----
def test_dcp_refuses_sparse_tensors_naming_the_key_before_changing_anything(tmp_path):
    with pytest.raises(TypeError, match=r"save: 's' is a sparse COO tensor"):
        dcp.save({"a": minidl.ones(2), "s": minidl.ones(2, 2).to_sparse()},
                 checkpoint_id=tmp_path / "sp")
    assert not os.path.exists(tmp_path / "sp" / ".metadata")
    dcp.save({"a": minidl.ones(2), "s": minidl.ones(2, 2)}, checkpoint_id=str(tmp_path / "d"))
    a = minidl.zeros(2)
    with pytest.raises(TypeError, match=r"load: 's' is a sparse COO tensor"):
        dcp.load({"a": a, "s": minidl.zeros(2, 2).to_sparse()}, checkpoint_id=tmp_path / "d")
    np.testing.assert_array_equal(a.numpy(), [0, 0])  # nothing loaded by halves


def test_dcp_round_trips_quantized_tensors_and_a_quantized_models_state_dict(tmp_path):
    import minidl.nn as nn
    from minidl.ao import quantization as tq

    x = minidl.tensor(np.linspace(-1, 1, 6).reshape(2, 3).astype(np.float32))
    q = minidl.quantize_per_tensor(x, 0.01, 3, minidl.quint8)
    qc = minidl.quantize_per_channel(x, minidl.tensor([0.01, 0.02]), minidl.tensor([0, 1]), 0,
                                     minidl.qint8)
    dcp.save({"q": q, "qc": qc, "w": x}, checkpoint_id=tmp_path / "q")
    sd = {"q": minidl.quantize_per_tensor(x * 0, 0.02, 1, minidl.quint8),
          "qc": minidl.quantize_per_tensor(x * 0, 0.02, 1, minidl.qint8), "w": minidl.zeros(2, 3)}
    dcp.load(sd, checkpoint_id=tmp_path / "q")
    assert (sd["q"].q_scale(), sd["q"].q_zero_point()) == (0.01, 3)
    np.testing.assert_array_equal(sd["q"].int_repr().numpy(), q.int_repr().numpy())
    assert sd["qc"].q_per_channel_axis() == 0
    np.testing.assert_array_equal(sd["qc"].int_repr().numpy(), qc.int_repr().numpy())
    np.testing.assert_array_equal(sd["w"].numpy(), x.numpy())

    m = tq.quantize_dynamic(nn.Sequential(nn.Linear(6, 5)), {nn.Linear})
    other = tq.quantize_dynamic(nn.Sequential(nn.Linear(6, 5)), {nn.Linear})
    dcp.save({"model": m.state_dict()}, checkpoint_id=tmp_path / "m")
    state = {"model": other.state_dict()}
    dcp.load(state, checkpoint_id=tmp_path / "m")
    other.load_state_dict(state["model"])
    inp = minidl.randn(3, 6)
    np.testing.assert_array_equal(other(inp).numpy(), m(inp).numpy())


def test_dcp_lists_of_plain_values_load_whole_as_torchs(tmp_path):
    saved = {"hist": [1, 2, 3], "names": ["x", "y"], "w": [minidl.ones(2), minidl.ones(1)],
             "m": [{"a": minidl.ones(1)}], "mix": [1, minidl.ones(1)], "e": []}
    dcp.save(saved, checkpoint_id=tmp_path)
    target = {"hist": [], "names": ["q"], "w": [minidl.zeros(2), minidl.zeros(1)],
              "m": [{"a": minidl.zeros(1)}], "mix": [0, minidl.zeros(1)], "e": [5]}
    w0 = target["w"][0]
    dcp.load(target, checkpoint_id=tmp_path)
    assert target["hist"] == [1, 2, 3] and target["names"] == ["x", "y"] and target["e"] == []
    assert target["w"][0] is w0 and w0.tolist() == [1.0, 1.0]  # tensors filled in place
    assert target["m"][0]["a"].tolist() == [1.0] and target["mix"][0] == 1
