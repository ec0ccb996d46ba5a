"""minidl.utils.benchmark (torch.utils.benchmark): Timer measures a statement (globals, setup,
timeit / autorange / blocked_autorange), Measurement's statistics, argument checks,
and torch's units and fields."""
import numpy as np
import pytest

import minidl
from minidl.utils.benchmark import Measurement, Timer


# ---- utils.benchmark.Timer --------------------------------------------------------------------

def test_timer_measures_a_statement():
    x = minidl.randn(32, 32)
    calls = []
    t = Timer("f(x)", setup="y = 1", globals={"x": x, "f": lambda a: calls.append(1) or a @ a},
              label="matmul", sub_label="32", description="float32", num_threads=1)
    m = t.timeit(50)
    assert isinstance(m, Measurement) and m.number_per_run == 50 and len(m.times) == 1
    assert len(calls) == 51  # one warm-up, then the timed 50
    assert m.median > 0 and m.mean == pytest.approx(m.raw_times[0] / 50)
    text = repr(m)
    assert "matmul: 32" in text and "float32" in text and "50 runs per measurement" in text
    m = t.blocked_autorange(min_run_time=0.05)
    assert sum(m.raw_times) >= 0.05 and m.raw_times[0] >= 0.0
    assert m.number_per_run >= 1 and m.median == pytest.approx(np.median(m.times))
    before = minidl.get_num_threads()
    Timer(lambda: None, num_threads=1).timeit(3)
    assert minidl.get_num_threads() == before  # put back after timing


def test_measurement_statistics_and_timer_argument_checks():
    m = Measurement(10, [1.0, 2.0, 3.0, 4.0, 10.0])
    assert m.times == [0.1, 0.2, 0.3, 0.4, 1.0]
    assert m.median == pytest.approx(0.3) and m.mean == pytest.approx(0.4)
    assert m.iqr == pytest.approx(0.2) and m.has_warnings  # IQR is 67% of the median
    with pytest.raises(ValueError):
        Measurement(0, [1.0])
    with pytest.raises(ValueError, match="num_threads"):
        Timer("pass", num_threads=0)
    with pytest.raises(ValueError, match="language"):
        Timer("pass", language="c++")
    with pytest.raises(NotImplementedError, match="blocked_autorange"):
        Timer("pass").autorange()


def test_timer_matches_torch_units_and_fields():
    benchmark = pytest.importorskip("torch.utils.benchmark")
    ours = Timer("pass").timeit(1000)
    theirs = benchmark.Timer("pass").timeit(1000)
    for name in ("number_per_run", "raw_times", "times", "median", "mean", "iqr"):
        assert hasattr(theirs, name) and hasattr(ours, name)
    assert ours.number_per_run == theirs.number_per_run == 1000
