"""Audit of the additions of 2026-12-07 (flex_attention, _pytree, multiprocessing, legacy
profiler and friends, onnx.export misuse) against torch 2.13: each test failed before its fix."""
import collections
import warnings

import numpy as np
import pytest

import minidl
from minidl.nn.attention import flex_attention as mfa

_RNG = np.random.default_rng(7)
_NT = collections.namedtuple("_NT", "a b")
_Q, _K, _V = (_RNG.standard_normal((2, 4, 8, 16)).astype(np.float32) for _ in range(3))


def _causal(b, h, qi, ki):
    return qi >= ki


# ---- flex_attention ---------------------------------------------------------------------

@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_flex_low_precision_works_in_float32_like_torch(dtype):
    torch = pytest.importorskip("torch")
    from torch.nn.attention import flex_attention as tfa
    tq, tk, tv = (torch.tensor(a).to(getattr(torch, dtype)) for a in (_Q, _K, _V))
    mq, mk, mv = (minidl.tensor(t.float().numpy()).to(getattr(minidl, dtype))
                  for t in (tq, tk, tv))
    seen = []

    def sm(s, b, h, qi, ki):
        return s * 2

    def seen_sm(s, b, h, qi, ki):
        seen.append(str(s.dtype))
        return s * 2
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        to, taux = tfa.flex_attention(tq, tk, tv, score_mod=sm,
                                      return_aux=tfa.AuxRequest(lse=True))
    mo, maux = mfa.flex_attention(mq, mk, mv, score_mod=seen_sm,
                                  return_aux=mfa.AuxRequest(lse=True))
    assert str(mo.dtype) == dtype and str(maux.lse.dtype) == "float32"
    assert str(taux.lse.dtype) == "torch.float32" and seen[-1] == "float32"
    np.testing.assert_allclose(maux.lse.numpy(), taux.lse.numpy(), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(mo.float().numpy(), to.float().numpy(), rtol=0, atol=1e-2)


def test_flex_value_dtype_follows_query_and_low_precision_has_grads():
    q = minidl.tensor(_Q)
    out = mfa.flex_attention(q, minidl.tensor(_K), minidl.tensor(_V).half())
    assert out.dtype == minidl.float32                     # torch: value cast to query's dtype
    qh = minidl.tensor(_Q).half().detach().requires_grad_()
    mfa.flex_attention(qh, minidl.tensor(_K).half(), minidl.tensor(_V).half()).sum().backward()
    assert qh.grad is not None and qh.grad.dtype == minidl.float16


def _torch_and_minidl_masks(B=None, H=None, n=256, bs=64):
    pytest.importorskip("torch")
    from torch.nn.attention import flex_attention as tfa
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        t = tfa.create_block_mask(_causal, B, H, n, n, device="cpu", BLOCK_SIZE=bs)
    return t, mfa.create_block_mask(_causal, B, H, n, n, BLOCK_SIZE=bs)


def _same_tables(t, m):
    for f in ("kv_num_blocks", "kv_indices", "full_kv_num_blocks", "full_kv_indices",
              "q_num_blocks", "full_q_num_blocks"):
        np.testing.assert_array_equal(getattr(m, f).numpy(), getattr(t, f).numpy(), err_msg=f)
    assert m.shape == tuple(t.shape)


def test_block_mask_to_string_str_and_as_tuple_match_torch():
    t, m = _torch_and_minidl_masks(B=2, H=3)
    assert m.to_string() == t.to_string()
    assert m.to_string(grid_size=(3, 3), limit=2) == t.to_string(grid_size=(3, 3), limit=2)
    assert str(m) == str(t)
    mt, tt = m.as_tuple(), t.as_tuple()
    assert len(mt) == len(tt) == 17 and mt[:2] == tt[:2] and mt[-3:-1] == tt[-3:-1]
    assert m.as_tuple(flatten=False)[0] == (256, 256)


def test_block_mask_adjust_and_slicing_match_torch():
    t, m = _torch_and_minidl_masks(B=2, H=2)
    _same_tables(t._adjust(128, 192), m._adjust(128, 192))
    _same_tables(t._adjust(100, 70), m._adjust(100, 70))
    for idx in [(slice(None), slice(None), slice(None, 2)), 1, (0, 1), (slice(0, 1), -1)]:
        ts, ms = t[idx], m[idx]
        for f in ("kv_num_blocks", "kv_indices", "full_kv_num_blocks", "full_kv_indices"):
            np.testing.assert_array_equal(getattr(ms, f).numpy(), getattr(ts, f).numpy())
    # torch: a sliced mask's mask_mod refuses to run
    q = minidl.tensor(_RNG.standard_normal((2, 2, 256, 8)).astype(np.float32))
    with pytest.raises(RuntimeError, match="sliced BlockMask"):
        mfa.flex_attention(q, q, q, block_mask=m[:, :, :])
    adj = m._adjust(128, 128)
    out = mfa.flex_attention(q[:, :, :128], q[:, :, :128], q[:, :, :128], block_mask=adj)
    ref = mfa.flex_attention(q[:, :, :128], q[:, :, :128], q[:, :, :128],
                             block_mask=mfa.create_block_mask(_causal, 2, 2, 128, 128))
    np.testing.assert_allclose(out.numpy(), ref.numpy(), rtol=1e-6)
    with pytest.raises(ValueError, match="blocks"):
        m._adjust(512, 256)


def test_flex_masks_on_the_fake_gpu(monkeypatch, host_kernels):
    import _fake_gpu

    from minidl.nn import _flex_attention as impl
    _fake_gpu.install(monkeypatch, host_kernels)
    q = minidl.tensor(_Q[:1, :2]).to("cuda").requires_grad_()
    with _fake_gpu.strict(impl):                   # CuPy refuses np.asarray of device data
        bm = mfa.create_block_mask(_causal, None, None, 8, 8, device="cuda")
        dense = mfa.create_mask(_causal, None, None, 8, 8, device="cuda")
        out = mfa.flex_attention(q, q, q, block_mask=bm)
        out.sum().backward()
    assert bm.kv_num_blocks.device == "cuda" and dense.device == "cuda"
    assert out.device == "cuda" and q.grad.device == "cuda"
    assert bm.to("cpu").kv_num_blocks.device == "cpu"
    with pytest.raises(RuntimeError, match="block_mask on cpu"):      # torch refuses too
        mfa.flex_attention(q, q, q, block_mask=bm.to("cpu"))


# ---- utils._pytree -------------------------------------------------------------------------

def test_pytree_map_matches_dict_kinds_by_key_and_checks_contexts():
    from minidl.utils import _pytree as pt
    dd = collections.defaultdict
    a, b = dd(list, {"x": 1, "y": 2}), dd(list, {"y": 20, "x": 10})
    assert dict(pt.tree_map(lambda p, q: p + q, a, b)) == {"x": 11, "y": 22}   # was 21, 12
    assert pt.tree_map(lambda p, q: p + q, collections.OrderedDict(x=1), {"x": 2}) == {"x": 3}
    assert pt.tree_map(lambda p, q: p + q, {"x": 1}, dd(int, x=2)) == {"x": 3}
    with pytest.raises(ValueError, match=r"missing key\(s\): \{'y'\}; extra key\(s\): \{'z'\}"):
        pt.tree_map(lambda p, q: p, {"x": 1, "y": 2}, {"x": 1, "z": 2})
    Other = collections.namedtuple("Other", "a b")
    with pytest.raises(ValueError, match="context mismatch"):           # torch refuses too
        pt.tree_map(lambda p, q: p, _NT(1, 2), Other(1, 2))


def test_treespec_dumps_loads_round_trip_and_read_torchs():
    from minidl.utils import _pytree as pt
    tree = {"a": [1, (2,)], "b": None, "c": collections.OrderedDict(x=1),
            "d": collections.defaultdict(list, {"q": 1}), "e": collections.deque([1], maxlen=3),
            5: 1}
    spec = pt.tree_structure(tree)
    assert pt.treespec_loads(pt.treespec_dumps(spec)) == spec
    with pytest.raises(NotImplementedError, match="namedtuple"):
        pt.treespec_dumps(pt.tree_structure(_NT(1, 2)))
    with pytest.raises(ValueError, match="protocol"):
        pt.treespec_dumps(spec, protocol=7)
    torch = pytest.importorskip("torch")
    tspec = torch.utils._pytree.tree_structure(tree)
    assert pt.treespec_dumps(spec) == torch.utils._pytree.treespec_dumps(tspec)
    assert pt.treespec_loads(torch.utils._pytree.treespec_dumps(tspec)) == spec


# ---- multiprocessing ---------------------------------------------------------------------

def _sleep_or_fail(i, how):
    import os
    import signal
    import time
    if i == 0 or how == "sleep":
        time.sleep(40)
    elif how == "raise":
        raise ValueError("x" * 200_000)       # longer than a pipe's buffer
    elif how == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    elif how == "unpicklable":
        raise ValueError(lambda: 0)


@pytest.mark.parametrize("how", ["raise", "kill", "unpicklable"])
def test_spawn_join_notices_any_failure_at_once(how):
    import time
    mp = minidl.multiprocessing
    start = time.monotonic()
    ctx = mp.start_processes(_sleep_or_fail, args=(how,), nprocs=2, join=False,
                             start_method="fork")
    # before: rank 0 was joined first (40 s), and a long traceback blocked rank 1 in its pipe
    exc = mp.ProcessExitedException if how == "kill" else mp.ProcessRaisedException
    with pytest.raises(exc) as e:
        while not ctx.join(timeout=1, grace_period=0):
            assert time.monotonic() - start < 20, "join did not notice rank 1's failure"
    assert time.monotonic() - start < 20 and e.value.error_index == 1
    assert not ctx.processes[0].is_alive()                       # the others were ended
    if how == "kill":
        assert e.value.signal_name == "SIGKILL" and "terminated with signal SIGKILL" in str(e.value)
    else:
        assert "ValueError" in str(e.value)


def test_join_timeout_waits_once_not_per_process():
    import time
    mp = minidl.multiprocessing
    ctx = mp.start_processes(_sleep_or_fail, args=("sleep",), nprocs=8, join=False,
                             start_method="fork")
    try:
        start = time.monotonic()
        assert ctx.join(timeout=0.5) is False
        # was 0.5 s for each running process (4 s); the slack is for a busy machine
        assert time.monotonic() - start < 2.5
    finally:
        for p in ctx.processes:
            p.kill()
            p.join()


# ---- legacy constructors, set_default_tensor_type, backends ------------------------------

def test_legacy_tensor_constructor_forms_as_torch():
    assert minidl.Tensor().shape == (0,) and minidl.Tensor().dtype == minidl.float32
    t = minidl.Tensor(2, 3, device="cpu")                      # was a TypeError
    assert t.shape == (2, 3) and t.device == "cpu" and t.dtype == minidl.float32
    assert minidl.Tensor(minidl.Size([4, 5])).shape == (4, 5)   # was the data [4, 5]
    assert minidl.Tensor(minidl.Size([])).shape == ()
    with pytest.raises(TypeError, match="non-negative ints"):
        minidl.Tensor(2, 3, dtype=minidl.float64)


def test_set_default_tensor_type_cuda_without_cupy_changes_nothing(monkeypatch):
    from minidl import backend
    monkeypatch.setattr(backend, "_cuda_ready", False)
    monkeypatch.setattr(backend, "_load_cupy", lambda: None)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(RuntimeError, match="CuPy"):       # torch refuses too
            minidl.set_default_tensor_type("torch.cuda.DoubleTensor")
    assert minidl.get_default_device() == "cpu" and minidl.get_default_dtype() == minidl.float32


def test_backends_refuse_misspelt_matmul_switch_and_have_torchs_helpers():
    b = minidl.backends
    with pytest.raises(AttributeError, match="Unknown attribute allow_tf32x"):
        b.cuda.matmul.allow_tf32x = True                       # torch refuses; was ignored
    assert b.cuda.matmul.allow_fp16_reduced_precision_reduction is True
    before = b.cuda.matmul.allow_tf32
    b.cuda.matmul.allow_tf32 = before
    assert b.cuda.flash_sdp_enabled() and b.cuda.math_sdp_enabled()
    b.cuda.enable_flash_sdp(False)
    try:
        assert not b.cuda.flash_sdp_enabled() and b.cuda.mem_efficient_sdp_enabled()
    finally:
        b.cuda.enable_flash_sdp(True)
    assert b.cuda.is_built() in (True, False)
    enabled, bench = b.cudnn.enabled, b.cudnn.benchmark
    with b.cudnn.flags(enabled=False, benchmark=True):
        assert b.cudnn.enabled is False and b.cudnn.benchmark is True
    assert (b.cudnn.enabled, b.cudnn.benchmark) == (enabled, bench)


# ---- onnx.export misuse ------------------------------------------------------------------

def _ort(path, *inputs):
    ort = pytest.importorskip("onnxruntime")
    s = ort.InferenceSession(str(path))
    return s.run(None, {i.name: a for i, a in zip(s.get_inputs(), inputs)})


class _InPlace(minidl.nn.Module):
    def __init__(self):
        super().__init__()
        self.l = minidl.nn.Linear(4, 4)
        self.act = minidl.nn.ReLU(inplace=True)
        self.register_buffer("calls", minidl.zeros(1))

    def forward(self, x):
        x.mul_(3)                                  # the caller's input must not change
        y = self.act(self.l(x) - 0.2)
        y.add_(1)
        self.calls += 1                            # a buffer updated in forward
        return {"y": minidl.nn.functional.relu(y - 1.5, inplace=True) * 2, "none": None}


def test_onnx_export_records_in_place_ops_and_leaves_state_alone(tmp_path):
    pytest.importorskip("onnx")
    m = _InPlace()
    m.l.weight.grad = minidl.ones(4, 4)
    x = minidl.tensor(_RNG.standard_normal((3, 4)).astype(np.float32))
    x0 = x.numpy().copy()
    state = {k: v.numpy().copy() for k, v in m.state_dict().items()}
    minidl.onnx.export(m, (x,), tmp_path / "m.onnx")    # was: relu/add_ left out, silently
    assert np.array_equal(x.numpy(), x0)
    assert all(np.array_equal(v.numpy(), state[k]) for k, v in m.state_dict().items())
    assert m.training and m.l.weight.grad.numpy().sum() == 16
    (got,) = _ort(tmp_path / "m.onnx", x0)
    np.testing.assert_allclose(got, m(minidl.tensor(x0))["y"].detach().numpy(), atol=1e-5)


def test_onnx_export_refuses_in_place_changes_it_cannot_record(tmp_path):
    pytest.importorskip("onnx")

    class OnView(minidl.nn.Module):
        def forward(self, x):
            y = x * 2
            y[:, :2].relu_()
            return y
    with pytest.raises(minidl.onnx.OnnxExporterError, match="in place"):
        minidl.onnx.export(OnView(), (minidl.randn(2, 4),), tmp_path / "v.onnx")
    assert not (tmp_path / "v.onnx").exists()

    class SetsBuffer(minidl.nn.Module):
        def __init__(self):
            super().__init__()
            self.register_buffer("n", minidl.zeros(2))

        def forward(self, x):
            self.n[0] = 5
            return x + self.n.sum()
    m = SetsBuffer()
    with pytest.raises(minidl.onnx.OnnxExporterError, match="in place"):
        minidl.onnx.export(m, (minidl.randn(2),), tmp_path / "b.onnx")
    assert m.n.tolist() == [0.0, 0.0]                        # left as it was


def test_onnx_export_arguments_and_files_as_torch(tmp_path):
    pytest.importorskip("onnx")
    onnx_ = minidl.onnx
    m = minidl.nn.Sequential(minidl.nn.Linear(4, 2), minidl.nn.Dropout(0.5))
    x = minidl.randn(3, 4)
    with open(tmp_path / "t.onnx", "w") as fh:                    # refused before any work
        with pytest.raises(TypeError, match="text-mode file"):
            onnx_.export(m, (x,), fh)
    (tmp_path / "r.onnx").write_bytes(b"")
    with open(tmp_path / "r.onnx", "rb") as fh:
        with pytest.raises(ValueError, match="not open for writing"):
            onnx_.export(m, (x,), fh)
    with pytest.raises(IsADirectoryError, match="is a folder"):
        onnx_.export(m, (x,), tmp_path)
    onnx_.export(m, (), tmp_path / "k.onnx", kwargs={"input": x}, dynamo=False,
                 training=onnx_.TrainingMode.EVAL)
    m.train()  # a training-mode graph is exported since (tests/test_onnx_export_third.py)
    onnx_.export(m, (x,), tmp_path / "t2.onnx", training=onnx_.TrainingMode.PRESERVE)
    with pytest.raises(NotImplementedError, match="custom_opsets"):  # torch's, not supported
        onnx_.export(m, (x,), tmp_path / "p.onnx", custom_opsets={"x": 1})
    with pytest.raises(TypeError, match="no_such_option"):           # not torch's at all
        onnx_.export(m, (x,), tmp_path / "p.onnx", no_such_option=1)

    class Nothing(minidl.nn.Module):
        def forward(self, x):
            return None
    with pytest.raises(onnx_.OnnxExporterError, match="returned a NoneType"):
        onnx_.export(Nothing(), (x,), tmp_path / "n.onnx")
    assert m.training and not (tmp_path / "p.onnx").exists()


def test_flex_key_batch_of_one_broadcasts_with_a_batched_block_mask():
    torch = pytest.importorskip("torch")
    from torch.nn.attention import flex_attention as tfa
    k1, v1 = _K[:1], _V[:1]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        tbm = tfa.create_block_mask(_causal, 2, None, 8, 8, device="cpu", BLOCK_SIZE=4)
        want = tfa.flex_attention(torch.tensor(_Q), torch.tensor(k1), torch.tensor(v1),
                                  block_mask=tbm)
    mbm = mfa.create_block_mask(_causal, 2, None, 8, 8, BLOCK_SIZE=4)
    got = mfa.flex_attention(minidl.tensor(_Q), minidl.tensor(k1), minidl.tensor(v1),
                             block_mask=mbm)
    np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="key batch"):                  # torch refuses too
        mfa.flex_attention(minidl.tensor(_Q), minidl.tensor(k1), minidl.tensor(v1))


def test_legacy_profiler_is_not_reentrant_as_torch():
    prof = minidl.autograd.profiler.profile()
    with prof:
        minidl.ones(2) * 2
    first = len(prof.function_events)
    with pytest.raises(RuntimeError, match="not reentrant"):
        with prof:
            minidl.ones(2) * 2
    assert first > 0 and len(prof.function_events) == first
