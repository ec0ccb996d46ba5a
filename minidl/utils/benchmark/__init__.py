"""``minidl.utils.benchmark``, as ``torch.utils.benchmark``: ``Timer`` runs a statement many
times and returns a ``Measurement`` (median, mean, IQR of the per-run times) for code that
uses minidl, waiting for the GPU at the end of each run when the statement ran there.

    t = Timer("model(x)", globals={"model": model, "x": x}, num_threads=2)
    m = t.blocked_autorange(min_run_time=1.0)
    print(m.median)

Built on the standard library's ``timeit``. torch's ``Compare``, ``Fuzzer`` and
``collect_callgrind`` are not here."""
from __future__ import annotations

import statistics
import timeit as _timeit

import numpy as np

__all__ = ["Timer", "Measurement"]


def _synchronize():
    from ... import cuda

    if cuda.is_available():
        cuda.synchronize()


def _unit(seconds):
    for scale, name in ((1.0, "s"), (1e-3, "ms"), (1e-6, "us"), (1e-9, "ns")):
        if seconds >= scale:
            return scale, name
    return 1e-9, "ns"


# a task's fields, each with its default (torch's TaskSpec)
_TASK_SPEC_FIELDS = {"stmt": "", "setup": "pass", "global_setup": "", "label": None,
                     "sub_label": None, "description": None, "env": None, "num_threads": 1}


class Measurement:
    """The times of ``number_per_run`` executions of ``task_spec``'s statement, ``raw_times``
    seconds per run; ``times`` are per execution. ``median``, ``mean``, ``iqr`` in seconds."""

    def __init__(self, number_per_run, raw_times, task_spec=None, metadata=None):
        if number_per_run < 1 or not raw_times:
            raise ValueError("Measurement: needs at least one run of at least one execution")
        self.number_per_run = int(number_per_run)
        self.raw_times = [float(t) for t in raw_times]
        self.task_spec = task_spec or {}
        self.metadata = metadata
        self.times = [t / self.number_per_run for t in self.raw_times]

    @property
    def median(self):
        return float(statistics.median(self.times))

    @property
    def mean(self):
        return float(statistics.fmean(self.times))

    @property
    def iqr(self):
        q1, q3 = np.quantile(self.times, [0.25, 0.75])
        return float(q3 - q1)

    @property
    def has_warnings(self):
        """As torch's: the spread is large against the median (IQR over 10% of it) or there
        are few runs (under 4), so the figure may not repeat."""
        return len(self.times) < 4 or self.iqr > 0.1 * self.median

    def __getattr__(self, name):
        """The task's fields (``label``, ``sub_label``, ``description``, ``stmt``, ``env``...)
        read from the measurement itself, as torch's Measurement forwards them."""
        if name in _TASK_SPEC_FIELDS and "task_spec" in vars(self):
            return self.task_spec.get(name, _TASK_SPEC_FIELDS[name])
        raise AttributeError(f"'Measurement' object has no attribute {name!r}")

    @property
    def as_row_name(self):
        return self.sub_label or self.stmt or "[Unknown]"

    @property
    def title(self):
        """The label (else a one-line statement), with ": sub_label" where there is one, as
        torch's; a statement of several lines indented under "stmt:"."""
        sub = self.sub_label
        head = self.label if self.label is not None else self.stmt
        if self.label is not None or "\n" not in self.stmt:
            return head + (f": {sub}" if sub else "")
        body = "\n".join("  " + line for line in self.stmt.splitlines())
        return f"stmt:{f' ({sub})' if sub else ''}\n{body}"

    def __repr__(self):
        scale, unit = _unit(self.median)
        q1, q3 = np.quantile(self.times, [0.25, 0.75])
        description = self.task_spec.get("description")
        lines = [f"<minidl.utils.benchmark.Measurement object at {hex(id(self))}>", self.title]
        if description:
            lines.append(description)
        if len(self.times) > 1:
            lines.append(f"  Median: {self.median / scale:.2f} {unit}")
            lines.append(f"  IQR:    {(q3 - q1) / scale:.2f} {unit} ({q1 / scale:.2f} to "
                         f"{q3 / scale:.2f})")
        else:
            lines.append(f"  {self.median / scale:.2f} {unit}")
        threads = self.task_spec.get("num_threads", 1)
        lines.append(f"  {len(self.times)} measurement{'s' if len(self.times) != 1 else ''}, "
                     f"{self.number_per_run} runs per measurement, {threads} thread"
                     f"{'s' if threads != 1 else ''}")
        if self.has_warnings:
            lines.append("  WARNING: Interquartile range is "
                         f"{100 * self.iqr / self.median:.1f}% of the median measurement."
                         if len(self.times) >= 4 else
                         "  WARNING: fewer than 4 measurements; the figure may not repeat.")
        return "\n".join(lines)


class Timer:
    """torch.utils.benchmark.Timer: ``stmt`` and ``setup`` are code strings (or callables, for
    stmt) run with ``globals``; ``num_threads`` sets minidl's thread count while timing (put
    back after). Each timed run ends by waiting for the GPU when CUDA is there."""

    def __init__(self, stmt="pass", setup="pass", global_setup="", timer=None, globals=None,
                 label=None, sub_label=None, description=None, env=None, num_threads=1,
                 language="python"):
        if language not in ("python", "py"):
            raise ValueError(f"Timer: only Python statements are timed here, got language="
                             f"{language!r}")
        if global_setup:
            raise ValueError("Timer: global_setup is for C++ statements, which minidl does not time")
        if not isinstance(num_threads, int) or num_threads < 1:
            raise ValueError(f"Timer: num_threads must be a positive int, got {num_threads!r}")
        self._stmt, self._setup = stmt, setup
        self._globals = dict(globals or {})
        self._clock = timer or _timeit.default_timer
        self._task_spec = {"stmt": stmt if isinstance(stmt, str) else getattr(stmt, "__name__", "stmt"),
                           "setup": setup, "label": label, "sub_label": sub_label,
                           "description": description, "env": env, "num_threads": num_threads}
        self._timer = _timeit.Timer(stmt=stmt, setup=setup, timer=self._synced_clock,
                                    globals=self._globals)

    def _synced_clock(self):
        _synchronize()
        return self._clock()

    def _run(self, number):
        from ... import get_num_threads, set_num_threads

        before = get_num_threads()
        set_num_threads(self._task_spec["num_threads"])
        try:
            return self._timer.timeit(number)
        finally:
            set_num_threads(before)

    def _measure(self, number, raw):
        return Measurement(number, raw, task_spec=self._task_spec)

    def timeit(self, number=1000000):
        """One run of ``number`` executions (after one warm-up execution)."""
        self._run(1)
        return self._measure(number, [self._run(number)])

    def repeat(self, repeat=-1, number=-1):
        raise NotImplementedError("Timer.repeat: use timeit() or blocked_autorange(), as torch "
                                  "says")

    def autorange(self, callback=None):
        raise NotImplementedError("Timer.autorange: use blocked_autorange(), as torch says")

    def _block_size(self):
        """Executions per run so that one run takes at least 10 ms (torch's choice)."""
        number = 1
        while True:
            if self._run(number) >= 0.01 or number >= 10 ** 9:
                return number
            number *= 10

    def blocked_autorange(self, callback=None, min_run_time=0.2):
        """Runs of a block size that takes at least 10 ms each, until ``min_run_time`` seconds
        of timed runs have passed."""
        number = self._block_size()
        raw, total = [], 0.0
        while total < min_run_time or not raw:
            t = self._run(number)
            raw.append(t)
            total += t
            if callback is not None:
                callback(number, t)
        return self._measure(number, raw)

    def adaptive_autorange(self, threshold=0.1, *, min_run_time=0.01, max_run_time=10.0,
                           callback=None):
        """Runs until the IQR is below ``threshold`` of the median (and ``min_run_time`` has
        passed), or ``max_run_time`` seconds are spent."""
        number = self._block_size()
        raw, total = [], 0.0
        while True:
            t = self._run(number)
            raw.append(t)
            total += t
            if callback is not None:
                callback(number, t)
            if len(raw) > 3 and total >= min_run_time:
                m = self._measure(number, raw)
                if m.iqr / m.median < threshold or total >= max_run_time:
                    return m
            elif total >= max_run_time and len(raw) > 3:
                return self._measure(number, raw)
