"""minidl.profiler: what a profiled training step records (ops, backward nodes, optimizer
steps, batches, user ranges, module ranges), self versus total times, the schedule's state
machine against torch.profiler.schedule, the Chrome trace, the table, and that the hooks are
gone when no profiler records."""
import gzip
import json
import re
import warnings

import numpy as np
import pytest

import minidl
import minidl.nn as nn
import minidl.nn.functional as F
from minidl import autograd
from minidl.data import DataLoader, TensorDataset
from minidl.profiler import (
    ProfilerAction, ProfilerActivity, profile, record_function, schedule,
)

import _fake_gpu

OPT_STEP = "Optimizer.step#SGD.step"
NEXT_BATCH = "enumerate(DataLoader)#_SingleProcessDataLoaderIter.__next__"


class SmallCNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 4, 3, padding=1)
        self.conv2 = nn.Conv2d(4, 6, 3)
        self.pool = nn.MaxPool2d(2)
        self.fc = nn.Linear(6 * 3 * 3, 5)

    def forward(self, x):
        x = self.pool(F.relu(self.conv1(x)))
        x = F.relu(self.conv2(x))
        return self.fc(x.flatten(1))


def _data(n=4, device="cpu"):
    rng = np.random.default_rng(0)
    x = minidl.tensor(rng.standard_normal((n, 1, 10, 10)).astype(np.float32), device=device)
    y = minidl.tensor(rng.integers(0, 5, n), device=device)
    return x, y


def _train_step(model, opt, x, y):
    opt.zero_grad()
    loss = F.cross_entropy(model(x), y)
    loss.backward()
    opt.step()
    return loss


def _profiled_step(**kwargs):
    model = SmallCNN()
    opt = minidl.optim.SGD(model.parameters(), lr=0.1)
    x, y = _data()
    with profile(activities=[ProfilerActivity.CPU], **kwargs) as prof:
        _train_step(model, opt, x, y)
    return prof


def _counts(prof):
    return {e.key: e.count for e in prof.key_averages()}


def _by_name(prof, name):
    return [e for e in prof.events() if e.name == name]


# ---- what a training step records ----------------------------------------------------------
def test_a_train_step_records_each_op_node_and_the_optimizer_step():
    prof = _profiled_step()
    counts = _counts(prof)
    assert counts["Conv2d"] == 2 and counts["Conv2dBackward"] == 2
    assert counts["Linear"] == 1 and counts["LinearBackward"] == 1
    assert counts["MaxPool2d"] == 1 and counts["MaxPool2dBackward"] == 1
    assert counts["ReLU"] == 2 and counts["ReLUBackward"] == 2
    assert counts["CrossEntropy"] == 1 and counts["CrossEntropyBackward"] == 1
    assert counts[OPT_STEP] == 1 and counts["Optimizer.zero_grad#SGD.zero_grad"] == 1
    assert not any(k.startswith("nn.Module:") for k in counts)  # only with with_modules
    assert not any(k.startswith("ProfilerStep#") for k in counts)  # only with a schedule
    # the backward nodes ran in reverse order of their forwards
    names = [e.name for e in prof.events()]
    assert names.index("LinearBackward") < names.index("Conv2dBackward")
    assert names.index("Conv2d") < names.index("Linear") < names.index("CrossEntropyBackward")


def test_self_times_are_non_negative_and_add_up_to_the_totals():
    prof = _profiled_step()
    events = prof.events()
    for e in events:
        assert e.self_cpu_time_total >= 0
        assert e.self_cpu_time_total <= e.cpu_time_total + 1e-9
        kids = sum(c.cpu_time_total for c in e.cpu_children)
        assert e.self_cpu_time_total == pytest.approx(max(e.cpu_time_total - kids, 0), abs=1e-6)
        for c in e.cpu_children:  # a child lies inside its parent
            assert c.cpu_parent is e
            assert e.time_range.start <= c.time_range.start <= c.time_range.end
            assert c.time_range.end <= e.time_range.end
    top = [e for e in events if e.cpu_parent is None]
    assert sum(e.self_cpu_time_total for e in events) == pytest.approx(
        sum(e.cpu_time_total for e in top), rel=1e-6, abs=1e-3)
    avg = prof.key_averages()
    for a in avg:
        assert a.cpu_time == pytest.approx(a.cpu_time_total / a.count)
        assert 0 <= a.self_cpu_time_total <= a.cpu_time_total + 1e-9
    assert avg.total_average().count == len(events)


def test_record_function_nests_and_gives_self_versus_total():
    a = minidl.ones(3, 4, requires_grad=True)
    with profile() as prof:
        with record_function("outer"):
            b = a * 2.0
            with record_function("inner"):
                c = b.exp()
            loss = c.sum()
        loss.backward()
    outer, = _by_name(prof, "outer")
    inner, = _by_name(prof, "inner")
    assert inner.cpu_parent is outer and inner in outer.cpu_children
    assert [c.name for c in inner.cpu_children] == ["Exp"]
    assert [c.name for c in outer.cpu_children] == ["Mul", "inner", "Sum"]
    assert outer.is_user_annotation and not inner.cpu_children[0].is_user_annotation
    assert outer.self_cpu_time_total == pytest.approx(
        outer.cpu_time_total - sum(c.cpu_time_total for c in outer.cpu_children), abs=1e-6)
    # the backward nodes ran outside both ranges
    assert {e.name for e in prof.events() if e.cpu_parent is None} >= {
        "outer", "SumBackward", "ExpBackward", "MulBackward"}


def test_record_function_as_a_decorator_and_without_a_profiler():
    @record_function("my_step")
    def step(x):
        return (x * 3.0).sum()

    x = minidl.ones(2)
    assert step(x).item() == 6.0  # no profiler: it just runs
    with record_function("nothing to record"):
        pass
    with profile() as prof:
        step(x)
        step(x)
    ranges = _by_name(prof, "my_step")
    assert len(ranges) == 2 and all([c.name for c in r.cpu_children] == ["Mul", "Sum"]
                                    for r in ranges)
    assert step.__name__ == "step"
    with pytest.raises(TypeError, match="name must be a str"):
        record_function(3)


def test_a_custom_function_is_one_range_around_the_ops_it_runs():
    class Double(minidl.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            return x * 2.0

        @staticmethod
        def backward(ctx, g):
            return g * 2.0

    x = minidl.ones(3, requires_grad=True)
    with profile() as prof:
        Double.apply(x).sum().backward()
    d, = _by_name(prof, "Double")
    assert [c.name for c in d.cpu_children] == ["Mul"]
    node, = _by_name(prof, "DoubleBackward")  # torch's name for the custom function's node
    assert [c.name for c in node.cpu_children] == ["Mul"]  # the user's backward ran ops
    assert Double.apply(x).grad_fn.name() == "DoubleBackward"
    np.testing.assert_allclose(x.grad.numpy(), 2.0)


def test_autograd_grad_records_its_nodes_too():
    x = minidl.ones(3, requires_grad=True)
    with profile() as prof:
        (g,) = minidl.autograd.grad((x * x).sum(), x)
    assert _counts(prof)["MulBackward"] == 1
    np.testing.assert_allclose(g.numpy(), 2.0)


# ---- the hooks are gone without a profiler ------------------------------------------------
def test_the_hook_global_is_none_outside_the_profile_even_after_an_exception():
    assert autograd._profiler_hook is None
    with profile() as prof:
        assert autograd._profiler_hook is not None
        minidl.ones(2) + 1
    assert autograd._profiler_hook is None
    with pytest.raises(ZeroDivisionError):
        with profile() as prof:
            with record_function("doomed"):
                minidl.ones(2) * 2.0
                1 / 0
    assert autograd._profiler_hook is None
    assert [e.name for e in prof.events()] == ["doomed", "Mul"]  # still kept, as torch
    # an op that raised inside a range leaves the nesting intact
    with profile() as prof:
        with record_function("outer"):
            with pytest.raises(ValueError):
                F.conv2d(minidl.ones(1, 3, 4, 4), minidl.ones(2, 1, 3, 3))
            minidl.ones(2) * 2.0
        minidl.ones(2) * 3.0
    outer, = _by_name(prof, "outer")
    assert [c.name for c in outer.cpu_children][-1] == "Mul"
    assert prof.events()[-1].name == "Mul" and prof.events()[-1].cpu_parent is None
    assert autograd._profiler_hook is None


def test_one_profiler_at_a_time_and_stop_is_idempotent():
    with profile() as prof:
        with pytest.raises(RuntimeError, match="already running"):
            profile().start()
    assert autograd._profiler_hook is None
    prof.stop()  # a second stop does nothing
    p = profile()
    p.start()
    minidl.ones(2) * 2.0
    p.stop()
    assert [e.name for e in p.events()] == ["Mul"]
    assert autograd._profiler_hook is None
    with pytest.raises(RuntimeError, match="step"):
        p.step()


# ---- the schedule -------------------------------------------------------------------------
SCHEDULES = [dict(wait=1, warmup=1, active=2), dict(wait=0, warmup=2, active=1, repeat=2),
             dict(wait=2, warmup=1, active=3, repeat=1, skip_first=3),
             dict(wait=3, warmup=1, active=1, repeat=3, skip_first=2, skip_first_wait=1),
             dict(wait=1, warmup=0, active=1)]


@pytest.mark.parametrize("kwargs", SCHEDULES)
def test_schedule_matches_torch(kwargs):
    torch_profiler = pytest.importorskip("torch.profiler")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ours, theirs = schedule(**kwargs), torch_profiler.schedule(**kwargs)
    for step in range(40):
        a, b = ours(step), theirs(step)
        assert (a.name, a.value) == (b.name, b.value), (step, kwargs)


def test_schedule_refuses_what_torch_refuses():
    torch_profiler = pytest.importorskip("torch.profiler")
    for bad in (dict(wait=-1, warmup=1, active=1), dict(wait=0, warmup=1, active=0),
                dict(wait=0, warmup=1, active=1, repeat=-1)):
        with pytest.raises(AssertionError):
            torch_profiler.schedule(**bad)
        with pytest.raises(AssertionError, match="Invalid profiler schedule"):
            schedule(**bad)
    with pytest.raises(AssertionError, match="non-negative"):
        schedule(wait=0, warmup=1, active=1)(-1)
    with pytest.warns(UserWarning, match="warmup"):
        schedule(wait=1, warmup=0, active=1)
    with pytest.raises(TypeError):
        schedule(1, 1, 1)  # keyword-only, as torch's
    assert [a.name for a in ProfilerAction] == [
        a.name for a in torch_profiler.ProfilerAction]


def test_a_scheduled_profile_records_the_active_steps_and_hands_each_cycle_over():
    model = SmallCNN()
    opt = minidl.optim.SGD(model.parameters(), lr=0.1)
    x, y = _data()
    cycles, recording = [], []

    def ready(prof):
        cycles.append((prof.step_num, [e.name for e in prof.events()]))

    sched = schedule(wait=1, warmup=1, active=2, repeat=2)
    with profile(schedule=sched, on_trace_ready=ready) as prof:
        for _ in range(10):
            recording.append(autograd._profiler_hook is not None)
            _train_step(model, opt, x, y)
            prof.step()
    assert recording == [False, False, True, True, False, False, True, True, False, False]
    assert [c[0] for c in cycles] == [4, 8]  # called at the step after the cycle's last
    for step_num, names in cycles:
        steps = [n for n in names if n.startswith("ProfilerStep#")]
        assert steps == [f"ProfilerStep#{step_num - 2}", f"ProfilerStep#{step_num - 1}"]
        assert names.count("Conv2d") == 4 and names.count(OPT_STEP) == 2
    # a step's range holds that step's ops
    step_ev = _by_name(prof, "ProfilerStep#6")[0]
    assert sum(1 for c in step_ev.cpu_children if c.name == OPT_STEP) == 1
    assert autograd._profiler_hook is None


def test_without_a_schedule_on_trace_ready_is_called_once_at_the_end():
    seen = []
    with profile(on_trace_ready=lambda p: seen.append(len(p.events()))) as prof:
        minidl.ones(2) * 2.0
        prof.step()  # no schedule: recording goes on
        minidl.ones(2) * 3.0
    assert seen == [2]


def test_acc_events_keeps_the_events_of_every_cycle():
    sched = schedule(wait=0, warmup=1, active=1)
    with profile(schedule=sched, acc_events=True) as prof:
        for _ in range(6):
            minidl.ones(2) * 2.0
            prof.step()
    assert _counts(prof)["Mul"] == 3


# ---- the Chrome trace -----------------------------------------------------------------------
@pytest.mark.parametrize("gz", [False, True])
def test_chrome_trace_is_json_with_complete_events(tmp_path, gz):
    prof = _profiled_step(record_shapes=True)
    path = tmp_path / ("trace.json.gz" if gz else "trace.json")
    prof.export_chrome_trace(str(path))
    raw = gzip.open(path).read() if gz else path.read_bytes()
    doc = json.loads(raw)
    events = [e for e in doc["traceEvents"] if e["ph"] == "X"]
    assert len(events) == len(prof.events())
    for e in events:
        assert isinstance(e["name"], str) and isinstance(e["pid"], int)
        assert isinstance(e["tid"], int)
        assert isinstance(e["ts"], (int, float)) and e["dur"] >= 0
    conv = [e for e in events if e["name"] == "Conv2d"]
    assert len(conv) == 2 and conv[0]["cat"] == "cpu_op"
    assert conv[0]["args"]["Input Dims"] == [[4, 1, 10, 10], [4, 1, 3, 3], [4]]
    step, = [e for e in events if e["name"] == OPT_STEP]
    assert step["cat"] == "user_annotation"
    # ts and dur are microseconds, as recorded
    first = prof.events()[0]
    match, = [e for e in events if e["args"]["External id"] == first.id]
    assert match["dur"] == pytest.approx(first.cpu_time_total, abs=1e-3)
    assert any(e["ph"] == "M" and e["name"] == "process_name" for e in doc["traceEvents"])
    with pytest.raises(TypeError, match="key_averages"):
        prof.key_averages().export_chrome_trace(str(tmp_path / "x.json"))


# ---- the table ----------------------------------------------------------------------------
def _header(table):
    return re.split(r"\s{2,}", table.splitlines()[1].strip())


def _rows(table):
    lines = table.splitlines()
    return lines[3:lines.index(lines[0], 3)]


def test_table_has_torchs_columns_and_sorts():
    prof = _profiled_step()
    table = prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=-1)
    assert _header(table) == ["Name", "Self CPU %", "Self CPU", "CPU total %", "CPU total",
                              "CPU time avg", "# of Calls"]
    rows = _rows(table)
    assert len(rows) == len(prof.key_averages())
    assert table.rstrip().splitlines()[-1].startswith("Self CPU time total: ")
    selfs = sorted((e.self_cpu_time_total for e in prof.key_averages()), reverse=True)
    names = [re.split(r"\s{2,}", r.strip())[0] for r in rows]
    by_name = {e.key: e.self_cpu_time_total for e in prof.key_averages()}
    assert [by_name[n] for n in names] == selfs
    assert len(_rows(prof.key_averages().table(sort_by="cpu_time_total", row_limit=3))) == 3
    total_sorted = _rows(prof.key_averages().table(sort_by="cpu_time_total", row_limit=1))
    biggest = max(prof.key_averages(), key=lambda e: e.cpu_time_total).key
    assert total_sorted[0].strip().startswith(biggest)
    counts = prof.key_averages().table(sort_by="count", row_limit=-1)
    conv_row, = [r for r in _rows(counts) if r.strip().startswith("Conv2d ")]
    assert conv_row.split()[-1] == "2"
    with pytest.raises(AttributeError, match="cannot sort by"):
        prof.key_averages().table(sort_by="speed")
    # percentages are shares of the summed self time
    first = re.split(r"\s{2,}", rows[0].strip())
    top = max(prof.key_averages(), key=lambda e: e.self_cpu_time_total)
    assert first[1] == f"{100 * top.self_cpu_time_total / sum(selfs):.2f}%"


def test_table_header_matches_torchs_for_the_same_options():
    torch = pytest.importorskip("torch")
    from torch.profiler import profile as torch_profile

    for kwargs in (dict(), dict(profile_memory=True)):
        with torch_profile(activities=[torch.profiler.ProfilerActivity.CPU], **kwargs) as tp:
            torch.ones(3, 4) * 2
        ours = _profiled_step(**kwargs)
        assert _header(ours.key_averages().table()) == _header(tp.key_averages().table())
    with torch_profile(activities=[torch.profiler.ProfilerActivity.CPU],
                       record_shapes=True) as tp:
        torch.ones(3, 4) * 2
    ours = _profiled_step(record_shapes=True)
    assert _header(ours.key_averages(group_by_input_shape=True).table()) == _header(
        tp.key_averages(group_by_input_shape=True).table())


# ---- options --------------------------------------------------------------------------------
def test_with_modules_adds_a_range_per_module_call():
    prof = _profiled_step(with_modules=True)
    counts = _counts(prof)
    assert counts["nn.Module: SmallCNN"] == 1 and counts["nn.Module: Conv2d"] == 2
    assert counts["nn.Module: Linear"] == 1 and counts["nn.Module: MaxPool2d"] == 1
    for mod in _by_name(prof, "nn.Module: Conv2d"):
        assert mod.cpu_parent.name == "nn.Module: SmallCNN"
        assert [c.name for c in mod.cpu_children] == ["Conv2d"]


def test_record_shapes_and_grouping_by_input_shape():
    model = SmallCNN()
    with profile(record_shapes=True) as prof:
        model(_data(4)[0])
        model(_data(2)[0])
    c1 = _by_name(prof, "Conv2d")[0]
    assert c1.input_shapes == [[4, 1, 10, 10], [4, 1, 3, 3], [4]]
    groups = [e for e in prof.key_averages(group_by_input_shape=True) if e.key == "Conv2d"]
    assert sorted(str(g.input_shapes) for g in groups) == sorted([
        "[[4, 1, 10, 10], [4, 1, 3, 3], [4]]", "[[2, 1, 10, 10], [4, 1, 3, 3], [4]]",
        "[[4, 4, 5, 5], [6, 4, 3, 3], [6]]", "[[2, 4, 5, 5], [6, 4, 3, 3], [6]]"])
    assert all(g.count == 1 for g in groups)
    assert "Input Shapes" in prof.key_averages(group_by_input_shape=True).table()
    plain, = [e for e in prof.key_averages() if e.key == "Conv2d"]
    assert plain.count == 4 and plain.input_shapes == ""
    assert "Input Shapes" not in prof.key_averages().table()
    with profile() as prof:
        model(_data(2)[0])
    assert _by_name(prof, "Conv2d")[0].input_shapes == []


def test_profile_memory_counts_output_bytes_and_sums_them_up_the_tree():
    a = minidl.ones(3, 4)  # float32: 48 bytes per (3, 4) result
    with profile(profile_memory=True) as prof:
        with record_function("two"):
            b = a * 2.0
            b.exp()
        a.sum()  # a 0-d float32: 4 bytes
    two, = _by_name(prof, "two")
    assert [c.self_cpu_memory_usage for c in two.cpu_children] == [48, 48]
    assert two.self_cpu_memory_usage == 0 and two.cpu_memory_usage == 96
    assert _by_name(prof, "Sum")[0].cpu_memory_usage == 4
    assert prof.key_averages().total_average().self_cpu_memory_usage == 100
    table = prof.key_averages().table()
    assert "CPU Mem" in _header(table) and "Self CPU Mem" in _header(table)
    assert "96 B" in table
    assert _profiled_step().events()[0].cpu_memory_usage == 0  # not asked: not counted


def test_with_stack_keeps_the_callers_and_groups_by_them():
    with profile(with_stack=True) as prof:
        minidl.ones(2) * 2.0
    mul, = _by_name(prof, "Mul")
    assert any("test_profiler.py" in s and "test_with_stack" in s for s in mul.stack)
    assert not any("minidl/profiler" in s for s in mul.stack)
    avg = prof.key_averages(group_by_stack_n=2)
    assert len(avg[0].stack) <= 2
    assert "Source Location" in avg.table()


def test_dataloader_batches_are_ranges_while_a_profiler_runs():
    ds = TensorDataset(minidl.arange(10.0), minidl.arange(10))
    loader = DataLoader(ds, batch_size=4)
    outside = iter(loader)
    assert type(outside).__name__ != "ProfiledIterator"  # no profiler: the plain iterator
    with profile() as prof:
        batches = [xb.sum() for xb, _ in loader]
    assert len(batches) == 3
    assert _counts(prof)[NEXT_BATCH] == 4  # three batches and the StopIteration, as torch


def test_cuda_activity_on_a_cpu_only_run_warns_once_and_profiles_the_cpu(monkeypatch):
    from minidl.profiler import profiler as prof_module

    monkeypatch.setattr(minidl.backend, "cuda_available", lambda: False)
    monkeypatch.setattr(prof_module, "_cuda_warned", False)
    with pytest.warns(UserWarning, match="CUDA is not available"):
        p = profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        profile(activities=[ProfilerActivity.CUDA])  # only once
    with p:
        minidl.ones(2) * 2.0
    assert "CUDA" not in p.key_averages().table()
    assert profile().activities == {ProfilerActivity.CPU}
    with pytest.raises(TypeError):
        profile(activities=ProfilerActivity.CPU)
    with pytest.raises(AssertionError):
        profile(activities=[])


def test_cuda_events_time_each_op_on_the_fake_gpu(monkeypatch, host_kernels, tmp_path):
    _fake_gpu.install(monkeypatch, host_kernels)
    model = SmallCNN().to("cuda")
    opt = minidl.optim.SGD(model.parameters(), lr=0.1)
    x, y = _data(device="cuda")
    before = _fake_gpu.FakeEvent.recorded
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA],
                 profile_memory=True) as prof:
        _train_step(model, opt, x, y)
    assert _fake_gpu.FakeEvent.recorded - before >= 2 * len(prof.events())
    header = _header(prof.key_averages().table(sort_by="cuda_time_total"))
    assert header[:10] == ["Name", "Self CPU %", "Self CPU", "CPU total %", "CPU total",
                           "CPU time avg", "Self CUDA", "Self CUDA %", "CUDA total",
                           "CUDA time avg"]
    assert "CUDA Mem" in header  # the outputs live on the device
    conv = _by_name(prof, "Conv2d")[0]
    assert conv.device_time_total == 0.0 and conv.cuda_time_total == 0.0
    assert conv.device_memory_usage > 0 and conv.cpu_memory_usage == 0
    assert _counts(prof)["Conv2dBackward"] == 2
    prof.export_chrome_trace(str(tmp_path / "t.json"))
    doc = json.loads((tmp_path / "t.json").read_text())
    kernels = [e for e in doc["traceEvents"] if e.get("cat") == "kernel"]
    assert {"Conv2d", "Conv2dBackward"} <= {e["name"] for e in kernels}
    assert autograd._profiler_hook is None


def test_a_range_open_when_the_profiler_stops_is_closed_there():
    p = profile()
    p.start()
    r = record_function("straddles")
    r.__enter__()
    minidl.ones(2) * 2.0
    p.stop()
    minidl.ones(2) * 3.0  # not recorded
    r.__exit__(None, None, None)  # nothing left to close
    assert [e.name for e in p.events()] == ["straddles", "Mul"]
    straddles = p.events()[0]
    assert straddles.cpu_time_total >= straddles.cpu_children[0].cpu_time_total


def test_autocast_ops_are_recorded_once_each():
    lin = nn.Linear(4, 3)
    x = minidl.ones(2, 4)
    with profile() as prof:
        with minidl.autocast("cpu", dtype=minidl.bfloat16):
            lin(x)
    counts = _counts(prof)
    assert counts["Linear"] == 1


def test_tensorboard_trace_handler_writes_one_trace_per_cycle(tmp_path):
    from minidl.profiler import tensorboard_trace_handler

    sched = schedule(wait=0, warmup=1, active=1, repeat=2)
    with profile(schedule=sched, on_trace_ready=tensorboard_trace_handler(
            tmp_path / "tb", worker_name="w0")) as prof:
        for _ in range(5):
            minidl.ones(2) * 2.0
            prof.step()
    files = sorted((tmp_path / "tb").iterdir())
    assert len(files) == 2 and all(f.name.startswith("w0.") and
                                   f.name.endswith(".pt.trace.json") for f in files)
    names = [e["name"] for e in json.loads(files[0].read_text())["traceEvents"]
             if e["ph"] == "X"]
    assert names == ["ProfilerStep#1", "Mul"]


def test_the_profiling_doc_runs(capsys):
    """docs/profiling.md: every ```python block runs, in order, in one namespace."""
    import os

    from docblocks import python_blocks, run_blocks

    doc = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "docs", "profiling.md")
    assert len(python_blocks(doc)) >= 4
    run_blocks(doc, {"__name__": "profiling_doc"})
    out = capsys.readouterr().out
    assert "Conv2dBackward" in out and "Self CPU time total" in out
    assert autograd._profiler_hook is None


def test_a_range_never_exited_closes_with_the_one_around_it_on_the_fake_gpu(
        monkeypatch, host_kernels):
    _fake_gpu.install(monkeypatch, host_kernels)
    x = minidl.ones(2, device="cuda")
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        with record_function("outer"):
            record_function("forgotten").__enter__()
            x * 2.0
        x * 3.0
        record_function("open at the end").__enter__()
    outer, forgotten, mul, mul2, last = prof.events()
    assert forgotten.cpu_parent is outer and mul.cpu_parent is forgotten
    assert mul2.cpu_parent is None and forgotten.time_range.end <= outer.time_range.end
    assert last.name == "open at the end" and last.device_time_total == 0.0
    assert all(e.device_start is not None for e in prof.events())


# ---- the legacy autograd.profiler.profile is not reentrant, as torch's -------------------------------
def test_legacy_profiler_is_not_reentrant_as_torch():
    prof = minidl.autograd.profiler.profile()
    with prof:
        minidl.ones(2) * 2
    first = len(prof.function_events)
    with pytest.raises(RuntimeError, match="not reentrant"):
        with prof:
            minidl.ones(2) * 2
    assert first > 0 and len(prof.function_events) == first
# ---- misuse: results before a finished recording, export paths --------------------------------

def test_profiler_results_before_a_finished_recording_are_refused(tmp_path):
    from minidl import profiler

    prof = profiler.profile()
    with pytest.raises(AssertionError, match=r"export_chrome_trace\(\) has no finished "
                                             r"recording; it has not run") as info:
        prof.export_chrome_trace(tmp_path / "t.json")  # was: an empty trace, silently
    assert isinstance(info.value, RuntimeError)
    with pytest.raises(AssertionError, match=r"key_averages\(\) has no finished recording"):
        prof.key_averages()
    prof.start()
    try:
        minidl.ones(2) + 1
        with pytest.raises(RuntimeError, match="still recording: call it after stop"):
            prof.export_chrome_trace(tmp_path / "t.json")
    finally:
        prof.stop()
    assert not (tmp_path / "t.json").exists()
    prof.export_chrome_trace(tmp_path / "t.json")  # after stop: the trace
    assert b"traceEvents" in (tmp_path / "t.json").read_bytes()
    assert len(prof.events()) >= 1


def test_profiler_export_names_a_missing_folder_or_a_directory(tmp_path):
    from minidl import profiler

    with profiler.profile() as prof:
        minidl.ones(2) + 1
    with pytest.raises(FileNotFoundError, match=r"the folder .*nodir does not exist"):
        prof.export_chrome_trace(tmp_path / "nodir" / "t.json")
    with pytest.raises(IsADirectoryError, match="is a directory; give a file path"):
        prof.export_chrome_trace(tmp_path)
    with pytest.raises(TypeError, match="export_chrome_trace: path must be a str"):
        prof.export_chrome_trace(None)
    prof.export_chrome_trace(tmp_path / "t.json.gz")
    import gzip
    import json

    assert "traceEvents" in json.loads(gzip.decompress((tmp_path / "t.json.gz").read_bytes()))
    assert [p.name for p in tmp_path.iterdir()] == ["t.json.gz"]  # no temporary left behind


@pytest.mark.filterwarnings("ignore:Profiler won't be using warmup")
def test_profiler_export_from_on_trace_ready_still_works(tmp_path):
    from minidl import profiler

    out = tmp_path / "cycle.json"
    with profiler.profile(schedule=profiler.schedule(wait=0, warmup=0, active=1),
                          on_trace_ready=lambda p: p.export_chrome_trace(out)) as prof:
        minidl.ones(2) + 1
        prof.step()
    assert b"traceEvents" in out.read_bytes()
