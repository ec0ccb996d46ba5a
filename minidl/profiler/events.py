"""The recorded events and their summaries, as ``torch.autograd.profiler_util``:
``FunctionEvent`` (one range: an op, a backward node, a user range), ``FunctionEventAvg`` (the
events of one name, summed) and ``EventList`` (a list of either, with ``key_averages``,
``table`` and ``export_chrome_trace``). Times are in microseconds, memory in bytes."""
from __future__ import annotations

import gzip
import json
import math
import os


class Interval:
    """A range's start and end, in microseconds from the profiler's start."""

    def __init__(self, start=0.0, end=0.0):
        self.start, self.end = start, end

    def elapsed_us(self):
        return self.end - self.start

    def __repr__(self):
        return f"Interval(start={self.start:.3f}, end={self.end:.3f})"


class _Times:
    """The averages and torch's deprecated ``cuda_*`` names, shared by both event kinds."""

    @property
    def cpu_time(self):
        """The average total CPU time of one call."""
        return self.cpu_time_total / self.count if self.count else 0.0

    @property
    def device_time(self):
        return self.device_time_total / self.count if self.count else 0.0

    # torch's older names for the device columns
    cuda_time = device_time

    @property
    def cuda_time_total(self):
        return self.device_time_total

    @property
    def self_cuda_time_total(self):
        return self.self_device_time_total

    @property
    def cuda_memory_usage(self):
        return self.device_memory_usage

    @property
    def self_cuda_memory_usage(self):
        return self.self_device_memory_usage


class FunctionEvent(_Times):
    """One recorded range. ``cpu_children``/``cpu_parent``: the ranges directly inside it and
    the one it is directly inside (same thread). Self times exclude the children's."""

    def __init__(self, id, name, thread, kind, parent):
        self.id = id
        self.name = name
        self.thread = thread
        self.kind = kind  # "cpu_op" (an op or a backward node) or "user_annotation"
        self.is_user_annotation = kind == "user_annotation"
        self.cpu_parent = parent
        self.cpu_children = []
        self.input_shapes = []
        self.stack = []
        self.args = None
        self.count = 1
        self.time_range = Interval()
        self.device_time_total = 0.0
        self.device_start = None  # GPU start, in microseconds on the CPU's clock
        # set by the recorder's finish(): totals include the children, self ones do not
        self.cpu_time_total = self.self_cpu_time_total = 0.0
        self.self_device_time_total = 0.0
        self.cpu_memory_usage = self.self_cpu_memory_usage = 0
        self.device_memory_usage = self.self_device_memory_usage = 0
        self._start_ns = self._end_ns = 0
        self._cuda = None  # [start, end] CUDA events until they are read
        self._own_bytes = (0, 0)  # bytes of the outputs on the host, on the device
        self.flops = 0  # with_flops: the op's FLOPs (minidl.utils.flop_counter's formulas)

    @property
    def key(self):
        return self.name

    def __repr__(self):
        return (f"<FunctionEvent id={self.id} name={self.name} "
                f"cpu_time_total={self.cpu_time_total:.3f}us "
                f"self_cpu_time_total={self.self_cpu_time_total:.3f}us "
                f"device_time_total={self.device_time_total:.3f}us "
                f"input_shapes={self.input_shapes} cpu_memory_usage={self.cpu_memory_usage}>")


def finish(events):
    """Fill in totals and self figures of ``events`` (in the order they opened: a parent
    before its children) once their times are known."""
    for ev in reversed(events):  # children first
        ev.cpu_time_total = ev.time_range.elapsed_us()
        host, dev = ev._own_bytes
        child_cpu = child_dev = 0.0
        for c in ev.cpu_children:
            child_cpu += c.cpu_time_total
            child_dev += c.device_time_total
            host += c.cpu_memory_usage
            dev += c.device_memory_usage
        ev.self_cpu_time_total = max(ev.cpu_time_total - child_cpu, 0.0)
        ev.self_device_time_total = max(ev.device_time_total - child_dev, 0.0)
        ev.cpu_memory_usage, ev.self_cpu_memory_usage = host, ev._own_bytes[0]
        ev.device_memory_usage, ev.self_device_memory_usage = dev, ev._own_bytes[1]


_SUMMED = ("count", "cpu_time_total", "self_cpu_time_total", "device_time_total",
           "self_device_time_total", "cpu_memory_usage", "self_cpu_memory_usage",
           "device_memory_usage", "self_device_memory_usage", "flops")


class FunctionEventAvg(_Times):
    """The events of one key (name, and input shapes or stack where grouped by them), summed;
    ``cpu_time``/``device_time`` are the averages per call."""

    def __init__(self):
        self.key = None
        self.count = 0
        self.cpu_time_total = self.self_cpu_time_total = 0.0
        self.device_time_total = self.self_device_time_total = 0.0
        self.cpu_memory_usage = self.self_cpu_memory_usage = 0
        self.device_memory_usage = self.self_device_memory_usage = 0
        self.input_shapes = None
        self.stack = []
        self.flops = 0
        self.is_user_annotation = False
        self.cpu_parent = None

    def add(self, other):
        if self.key is None:
            self.key = other.key
            self.input_shapes = other.input_shapes
            self.stack = other.stack
            self.is_user_annotation = other.is_user_annotation
            self.cpu_parent = other.cpu_parent
        elif other.key != self.key:
            raise ValueError(f"FunctionEventAvg.add: an event of key {other.key!r} added to "
                             f"the average of {self.key!r}")
        for name in _SUMMED:
            setattr(self, name, getattr(self, name) + getattr(other, name))
        return self

    def __iadd__(self, other):
        return self.add(other)

    def __repr__(self):
        return (f"<FunctionEventAvg key={self.key} count={self.count} "
                f"self_cpu_time_total={self.self_cpu_time_total:.3f}us "
                f"cpu_time_total={self.cpu_time_total:.3f}us "
                f"device_time_total={self.device_time_total:.3f}us "
                f"input_shapes={self.input_shapes} cpu_memory_usage={self.cpu_memory_usage}>")


def _format_time(us):
    if us >= 1e6:
        return f"{us / 1e6:.3f}s"
    if us >= 1e3:
        return f"{us / 1e3:.3f}ms"
    return f"{us:.3f}us"


def _format_share(part, whole):
    return "NaN" if whole == 0 else f"{100.0 * part / whole:.2f}%"


def _format_memory(nbytes):
    for unit, size in (("GB", 1 << 30), ("MB", 1 << 20), ("KB", 1 << 10)):
        if abs(nbytes) >= size:
            return f"{nbytes / size:.2f} {unit}"
    return f"{nbytes} B"


_SORT_KEYS = ("cpu_time", "cpu_time_total", "self_cpu_time_total", "device_time",
              "device_time_total", "self_device_time_total", "cpu_memory_usage",
              "self_cpu_memory_usage", "device_memory_usage", "self_device_memory_usage",
              "count")


class EventList(list):
    """A list of ``FunctionEvent``s (``profile.events()``) or of ``FunctionEventAvg``s
    (``key_averages()``)."""

    def __init__(self, events=(), use_device=None, profile_memory=False, with_flops=False):
        super().__init__(events)
        self._use_device = use_device
        self._profile_memory = profile_memory
        self._with_flops = with_flops

    @property
    def self_cpu_time_total(self):
        return sum(e.self_cpu_time_total for e in self)

    def key_averages(self, group_by_input_shapes=False, group_by_stack_n=0):
        """One ``FunctionEventAvg`` per name (and per input shapes, or per top
        ``group_by_stack_n`` stack entries, where asked), in the order each key first ran."""
        groups = {}
        for ev in self:
            key = (ev.key, ev.is_user_annotation)
            if group_by_input_shapes:
                key += (str(ev.input_shapes),)
            if group_by_stack_n > 0:
                key += tuple(ev.stack[:group_by_stack_n])
            avg = groups.get(key)
            if avg is None:
                avg = groups[key] = FunctionEventAvg()
            avg.add(ev)
        out = EventList(groups.values(), self._use_device, self._profile_memory,
                        self._with_flops)
        for avg in out:
            avg.stack = list(avg.stack[:group_by_stack_n])
            if not group_by_input_shapes:
                avg.input_shapes = ""
        return out

    def total_average(self):
        """Every event summed into one ``FunctionEventAvg`` with key "Total"."""
        total = FunctionEventAvg()
        for ev in self:
            total.key = None
            total.add(ev)
        total.key = "Total"
        return total

    def table(self, sort_by=None, row_limit=100, max_src_column_width=75,
              max_name_column_width=55, max_shapes_column_width=80, header=None,
              top_level_events_only=False, time_unit=None):
        """The events as torch's profiler table, largest ``sort_by`` first (None: as
        recorded); ``row_limit=-1`` shows every row."""
        return _table(self, sort_by, row_limit, max_src_column_width, max_name_column_width,
                      max_shapes_column_width, header, top_level_events_only, time_unit)

    def export_chrome_trace(self, path):
        """Write the events as a Chrome trace (JSON, "X" complete events, microseconds), which
        Perfetto (ui.perfetto.dev) and chrome://tracing open; a path ending in .gz is
        gzipped."""
        write_chrome_trace(self, path)


def _table(events, sort_by, row_limit, max_src_width, max_name_width, max_shapes_width,
           header, top_level_only, time_unit):
    if not isinstance(row_limit, int) or isinstance(row_limit, bool):
        raise TypeError(f"table: row_limit must be an int, got {type(row_limit).__name__}")
    if time_unit not in (None, "s", "ms", "us"):
        raise ValueError(f"table: time_unit must be 's', 'ms', 'us' or None, got {time_unit!r}")
    if not events:
        return ""
    use_device = events._use_device
    profile_memory = events._profile_memory
    rows = list(events)
    if sort_by is not None:
        attr = sort_by.replace("cuda", "device")
        if attr not in _SORT_KEYS:
            raise AttributeError(f"table: cannot sort by {sort_by!r}; one of "
                                 f"{', '.join(_SORT_KEYS)} (cuda_* for device_*)")
        rows.sort(key=lambda e: getattr(e, attr), reverse=True)
    if top_level_only:
        rows = [e for e in rows if e.cpu_parent is None]
    if row_limit >= 0:
        rows = rows[:row_limit]

    def fmt_time(us):
        if time_unit == "s":
            return f"{us / 1e6:.3f}s"
        if time_unit == "ms":
            return f"{us / 1e3:.3f}ms"
        if time_unit == "us":
            return f"{us:.3f}us"
        return _format_time(us)

    self_cpu_sum = sum(e.self_cpu_time_total for e in events)
    self_dev_sum = sum(e.self_device_time_total for e in events)
    dev = use_device.upper() if use_device else None
    has_dev_mem = any(e.self_device_memory_usage > 0 for e in events)
    with_shapes = any(e.input_shapes for e in events)
    with_stack = any(e.stack for e in events)

    # (header, width, value of a row)
    name_width = max(len(e.key) for e in events) + 4
    if max_name_width is not None:
        name_width = min(name_width, max_name_width)

    def name_of(e):
        name = e.key
        if max_name_width is not None and len(name) >= max_name_width - 3:
            name = name[:max_name_width - 3] + "..."
        return name

    columns = [("Name", name_width, name_of),
               ("Self CPU %", 12, lambda e: _format_share(e.self_cpu_time_total, self_cpu_sum)),
               ("Self CPU", 12, lambda e: fmt_time(e.self_cpu_time_total)),
               ("CPU total %", 12, lambda e: _format_share(e.cpu_time_total, self_cpu_sum)),
               ("CPU total", 12, lambda e: fmt_time(e.cpu_time_total)),
               ("CPU time avg", 12, lambda e: fmt_time(e.cpu_time))]
    if dev is not None:
        columns += [(f"Self {dev}", 12, lambda e: fmt_time(e.self_device_time_total)),
                    (f"Self {dev} %", 12,
                     lambda e: _format_share(e.self_device_time_total, self_dev_sum)),
                    (f"{dev} total", 12, lambda e: fmt_time(e.device_time_total)),
                    (f"{dev} time avg", 12, lambda e: fmt_time(e.device_time))]
    if profile_memory:
        columns += [("CPU Mem", 12, lambda e: _format_memory(e.cpu_memory_usage)),
                    ("Self CPU Mem", 12, lambda e: _format_memory(e.self_cpu_memory_usage))]
        if dev is not None and has_dev_mem:
            columns += [(f"{dev} Mem", 12, lambda e: _format_memory(e.device_memory_usage)),
                        (f"Self {dev} Mem", 12,
                         lambda e: _format_memory(e.self_device_memory_usage))]
    columns.append(("# of Calls", 12, lambda e: str(e.count)))
    if with_shapes:
        width = max(len(str(e.input_shapes)) for e in events) + 4
        width = width if max_shapes_width is None else min(width, max_shapes_width)
        columns.append(("Input Shapes", width, lambda e: str(e.input_shapes)[:width]))
    raw_flops = [e.flops for e in events if e.flops > 0]
    if getattr(events, "_with_flops", False) and raw_flops:
        # torch's header: the unit that the smallest count reads in (FLOPs ... PFLOPs)
        level = int(max(0.0, min(math.log10(min(raw_flops)) / 3, 5.0)))
        unit = ("FLOPs", "KFLOPs", "MFLOPs", "GFLOPs", "TFLOPs", "PFLOPs")[level]
        scale = 10.0 ** (-3 * level)
        columns.append((f"Total {unit}", 12,
                        lambda e: f"{e.flops * scale:8.3f}" if e.flops > 0 else "--"))
    src_width = None
    if with_stack:
        src_width = max(len(s) for e in events for s in e.stack) + 4
        if max_src_width is not None:
            src_width = min(src_width, max_src_width)

    def line(cells, src=None):
        text = "".join(f"{c:>{w}}  " for c, (_, w, _) in zip(cells, columns))
        if src_width is not None:
            text += f"{src:<{src_width}}  "
        return text

    def trim(path):
        if len(path) > src_width:
            path = "..." + path[len(path) - src_width + 3:]
        return path

    sep = "".join("-" * w + "  " for _, w, _ in columns)
    if src_width is not None:
        sep += "-" * src_width + "  "
    out = []
    if header is not None:
        out += ["=" * (len(sep) - 2), header]
    if top_level_only:
        out += ["=" * (len(sep) - 2), "This report only display top-level ops statistics"]
    out += [sep, line([h for h, _, _ in columns], "Source Location"), sep]
    for e in rows:
        out.append(line([get(e) for _, _, get in columns],
                        trim(e.stack[0]) if with_stack and e.stack else ""))
        if with_stack and e.stack:
            blank = [""] * len(columns)
            out += [line(blank, trim(s)) for s in e.stack[1:]]
            out.append(line(blank, ""))
    out += [sep, f"Self CPU time total: {fmt_time(self_cpu_sum)}"]
    if dev is not None:
        out.append(f"Self {dev} time total: {fmt_time(self_dev_sum)}")
    return "\n".join(out) + "\n"


def write_chrome_trace(events, path):
    try:
        path = os.fspath(path)
    except TypeError:
        raise TypeError(f"export_chrome_trace: path must be a str or os.PathLike, got "
                        f"{type(path).__name__}") from None
    pid = os.getpid()
    threads = {}  # thread ident -> a small track number, in order of appearance
    trace = []
    for ev in events:
        if not isinstance(ev, FunctionEvent):
            raise TypeError("export_chrome_trace: needs the events of profile.events(), not "
                            "their key_averages()")
        tid = threads.setdefault(ev.thread, len(threads) + 1)
        args = {"External id": ev.id}
        if ev.input_shapes:
            args["Input Dims"] = ev.input_shapes
        if ev.stack:
            args["Call stack"] = ";".join(reversed(ev.stack))
        if ev.args is not None:
            args["Args"] = ev.args
        trace.append({"ph": "X", "cat": ev.kind, "name": ev.name, "pid": pid, "tid": tid,
                      "ts": round(ev.time_range.start, 3),
                      "dur": round(max(ev.time_range.elapsed_us(), 0.0), 3), "args": args})
        if ev.device_start is not None:
            trace.append({"ph": "X",
                          "cat": "gpu_user_annotation" if ev.is_user_annotation else "kernel",
                          "name": ev.name, "pid": 0, "tid": 7,
                          "ts": round(ev.device_start, 3),
                          "dur": round(max(ev.device_time_total, 0.0), 3),
                          "args": {"External id": ev.id, "device": 0, "stream": 7}})
    meta = [{"ph": "M", "name": "process_name", "pid": pid, "tid": 0,
             "args": {"name": "python (CPU)"}}]
    meta += [{"ph": "M", "name": "thread_name", "pid": pid, "tid": tid,
              "args": {"name": f"thread {tid}"}} for tid in threads.values()]
    if any(ev.device_start is not None for ev in events):
        meta += [{"ph": "M", "name": "process_name", "pid": 0, "tid": 0,
                  "args": {"name": "GPU 0 (CUDA events)"}},
                 {"ph": "M", "name": "thread_name", "pid": 0, "tid": 7,
                  "args": {"name": "stream 7 (current stream)"}}]
    doc = {"schemaVersion": 1, "displayTimeUnit": "ms", "traceEvents": meta + trace}
    data = json.dumps(doc).encode()
    if path.endswith(".gz"):
        data = gzip.compress(data)
    _write_atomically(path, data)


def _write_atomically(path, data):
    """``data`` into ``path`` by a temporary beside it and a rename: a folder that does not
    exist, or a directory given as the path, is named; a failed write leaves no half file."""
    target = os.path.abspath(path)
    if os.path.isdir(target):
        raise IsADirectoryError(f"export_chrome_trace: {path} is a directory; give a file path "
                                f"(e.g. trace.json)")
    folder = os.path.dirname(target)
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"export_chrome_trace: cannot write {path}: the folder {folder} "
                                f"does not exist")
    tmp = os.path.join(folder, f".{os.path.basename(target)}.{os.getpid()}-{id(data):x}.tmp")
    try:
        with open(tmp, "xb") as f:
            f.write(data)
        os.replace(tmp, target)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
