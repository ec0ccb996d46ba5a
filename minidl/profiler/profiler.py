"""``profile``, ``schedule``, ``ProfilerActivity`` and ``ProfilerAction``, as torch.profiler's.

A profile is a state machine over training steps: ``schedule(step)`` says for each step
whether to do nothing, warm up, or record, and the last recorded step of a cycle hands the
cycle's events to ``on_trace_ready``. Recording means installing a ``Recorder`` as the hook
that ``Function.apply`` and the backward engine look at; between recordings the hook is None
and minidl runs exactly as without a profiler.
"""
from __future__ import annotations

import enum
import os
import socket
import time
import warnings

from .. import backend
from . import _recorder
from ._recorder import Recorder, record_function
from .events import EventList


class _ScheduleError(AssertionError, ValueError):
    """Bad profiler arguments: an AssertionError as torch raises, and a ValueError as
    minidl's other argument errors."""


class ProfilerNotReadyError(AssertionError, RuntimeError):
    """Results asked of a profile that has finished no recording yet (PyTorch asserts)."""


class ProfilerActivity(enum.Enum):
    """What to profile: ``CPU`` (ops' wall time on the host) and ``CUDA`` (each op's time on
    the GPU's current stream, from CUDA events). Values as torch's."""

    CPU = 0
    CUDA = 2


class ProfilerAction(enum.Enum):
    """What the profiler does at a step; a schedule returns one per step. DEVICE_STOPPED is
    torch's internal state, never returned by a schedule."""

    NONE = 0
    WARMUP = 1
    RECORD = 2
    RECORD_AND_SAVE = 3
    DEVICE_STOPPED = 4


def supported_activities():
    """The activities this machine can profile: CPU, and CUDA where CuPy sees a GPU."""
    acts = {ProfilerActivity.CPU}
    if backend.cuda_available():
        acts.add(ProfilerActivity.CUDA)
    return acts


def schedule(*, wait, warmup, active, repeat=0, skip_first=0, skip_first_wait=0):
    """torch.profiler.schedule: skip ``skip_first`` steps, then cycles of ``wait`` idle steps,
    ``warmup`` steps and ``active`` recorded steps (the last one RECORD_AND_SAVE), ``repeat``
    cycles (0: until the profiler stops). ``skip_first_wait`` leaves out the first cycle's
    wait. Returns the function from a step number to its ``ProfilerAction``."""
    for name, value in (("wait", wait), ("warmup", warmup), ("active", active),
                        ("repeat", repeat), ("skip_first", skip_first),
                        ("skip_first_wait", skip_first_wait)):
        if not isinstance(value, int) or isinstance(value, bool):
            raise TypeError(f"schedule: {name} must be an int, got {type(value).__name__}")
    if wait < 0 or warmup < 0 or active <= 0 or repeat < 0 or skip_first < 0:
        raise _ScheduleError(
            f"Invalid profiler schedule arguments. Got wait={wait} (need >= 0), "
            f"warmup={warmup} (need >= 0), active={active} (need > 0), repeat={repeat} "
            f"(need >= 0), skip_first={skip_first} (need >= 0).")
    if warmup == 0:
        warnings.warn("Profiler won't be using warmup, this can skew profiler results",
                      stacklevel=2)
    cycle = wait + warmup + active

    def schedule_fn(step):
        if step < 0:
            raise _ScheduleError(f"Step must be non-negative. Got {step}.")
        if step < skip_first:
            return ProfilerAction.NONE
        step -= skip_first
        if skip_first_wait:
            step += wait  # the first cycle starts at its warmup
        if repeat > 0 and step >= repeat * cycle:
            return ProfilerAction.NONE
        at = step % cycle
        if at < wait:
            return ProfilerAction.NONE
        if at < wait + warmup:
            return ProfilerAction.WARMUP
        return ProfilerAction.RECORD if at < cycle - 1 else ProfilerAction.RECORD_AND_SAVE
    return schedule_fn


def tensorboard_trace_handler(dir_name, worker_name=None, use_gzip=False):
    """An ``on_trace_ready`` that writes each cycle's Chrome trace into ``dir_name`` as
    ``{worker_name}.{nanoseconds}.pt.trace.json`` (``.gz`` with use_gzip), the names
    TensorBoard's profiler plugin reads; ``worker_name`` defaults to ``{host}_{pid}``."""
    dir_name = os.fspath(dir_name)
    if os.path.exists(dir_name) and not os.path.isdir(dir_name):
        raise ValueError(f"tensorboard_trace_handler: {dir_name!r} exists and is not a "
                         "directory")

    def handler(prof):
        os.makedirs(dir_name, exist_ok=True)
        name = worker_name or f"{socket.gethostname()}_{os.getpid()}"
        path = os.path.join(dir_name, f"{name}.{time.time_ns()}.pt.trace.json")
        prof.export_chrome_trace(path + ".gz" if use_gzip else path)
    return handler


def _always_record(step):
    return ProfilerAction.RECORD


_cuda_warned = False


def _warn_no_cuda():
    global _cuda_warned
    if not _cuda_warned:
        _cuda_warned = True
        warnings.warn("CUDA is not available, disabling CUDA profiling (profiling the CPU only)",
                      stacklevel=4)


_NONE, _WARMUP = ProfilerAction.NONE, ProfilerAction.WARMUP
_RECORD, _SAVE = ProfilerAction.RECORD, ProfilerAction.RECORD_AND_SAVE


class profile:
    """torch.profiler.profile: records every op's forward (``Conv2d``), every backward node
    (``Conv2dBackward``), optimizer steps, DataLoader batches and ``record_function`` ranges,
    with their nesting, so that each gets a self time (its own) and a total (with what ran
    inside it).

        with profile(record_shapes=True) as prof:
            train_step()
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=10))
        prof.export_chrome_trace("trace.json")     # open in ui.perfetto.dev

    With ``schedule`` (see ``schedule()``), call ``prof.step()`` after each training step;
    ``on_trace_ready(prof)`` is called at the end of each recorded cycle. ``profile_memory``
    counts the bytes of every op's outputs; ``with_modules`` adds an ``nn.Module: Name`` range
    per Module call; ``with_stack`` keeps each event's Python call stack.
    """

    def __init__(self, *, activities=None, schedule=None, on_trace_ready=None,
                 record_shapes=False, profile_memory=False, with_stack=False, with_flops=False,
                 with_modules=False, acc_events=False):
        if activities is None:
            acts = supported_activities()
        else:
            if isinstance(activities, ProfilerActivity):
                raise TypeError("profile: activities must be a list or set of "
                                "ProfilerActivity, e.g. [ProfilerActivity.CPU]")
            acts = set(activities)
            for a in acts:
                if not isinstance(a, ProfilerActivity):
                    raise TypeError(f"profile: activities must be ProfilerActivity values, "
                                    f"got {a!r}")
        if not acts:
            raise _ScheduleError("No valid profiler activities found")
        if schedule is not None and not callable(schedule):
            raise TypeError(f"profile: schedule must be callable (step -> ProfilerAction), "
                            f"got {type(schedule).__name__}")
        if on_trace_ready is not None and not callable(on_trace_ready):
            raise TypeError(f"profile: on_trace_ready must be callable, got "
                            f"{type(on_trace_ready).__name__}")
        self.activities = acts
        self._cuda = None
        if ProfilerActivity.CUDA in acts:
            if backend.cuda_available():
                self._cuda = backend.cupy_module()
            else:
                _warn_no_cuda()
        self.use_device = "cuda" if self._cuda is not None else None
        self.record_shapes = bool(record_shapes)
        self.profile_memory = bool(profile_memory)
        self.with_stack = bool(with_stack)
        self.with_modules = bool(with_modules)
        self.with_flops = bool(with_flops)
        self.acc_events = bool(acc_events)
        self.on_trace_ready = on_trace_ready
        self.record_steps = schedule is not None  # "ProfilerStep#N" ranges
        self.schedule = schedule if schedule is not None else _always_record
        self.step_num = 0
        self.current_action = self._action(0)
        self.step_rec_fn = None
        self._recorder = None  # the recording in progress (or prepared)
        self._events = None  # the last finished recording's events
        self._origin_ns = None
        self._running = False

    def _action(self, step):
        action = self.schedule(step)
        if not isinstance(action, ProfilerAction):
            raise TypeError(f"profile: the schedule returned {action!r} for step {step}, "
                            "not a ProfilerAction")
        if action is ProfilerAction.DEVICE_STOPPED:
            raise ValueError("ProfilerAction.DEVICE_STOPPED is set internally by the profiler "
                             "and must not be returned by a user-provided schedule")
        return action

    # ---- torch's four primitives -------------------------------------------------------
    def prepare_trace(self):
        kept = self._recorder.events if (self.acc_events and self._recorder) else None
        self._recorder = Recorder(self.record_shapes, self.profile_memory, self.with_stack,
                                  self.with_modules, self._cuda, self._origin_ns,
                                  self.with_flops)
        if kept is not None:
            self._recorder.events = kept

    def start_trace(self):
        self._recorder.start()

    def stop_trace(self):
        rec = self._recorder
        rec.stop()
        self._events = EventList(rec.events, self.use_device, self.profile_memory,
                                 self.with_flops)

    def _trace_ready(self):
        if self.on_trace_ready is not None:
            self.on_trace_ready(self)

    def _transit(self, prev, now):
        """Run what going from action ``prev`` to ``now`` (None: the end) takes."""
        steps = ()
        if prev is _NONE:
            if now is _WARMUP:
                steps = (self.prepare_trace,)
            elif now in (_RECORD, _SAVE):
                steps = (self.prepare_trace, self.start_trace)
        elif prev is _WARMUP:
            if now is _NONE:
                warnings.warn("Incorrect schedule: WARMUP followed by NONE", stacklevel=3)
                steps = (self.start_trace, self.stop_trace)
            elif now in (_RECORD, _SAVE):
                steps = (self.start_trace,)
            elif now is None:
                steps = (self.start_trace, self.stop_trace)
        elif prev is _RECORD:
            if now in (_NONE, _WARMUP):
                warnings.warn(f"Incorrect schedule: RECORD followed by {now.name}",
                              stacklevel=3)
                steps = (self.stop_trace,)
            elif now is None:
                steps = (self.stop_trace, self._trace_ready)
        elif prev is _SAVE:
            steps = (self.stop_trace, self._trace_ready)
            if now is _WARMUP:
                steps += (self.prepare_trace,)
            elif now in (_RECORD, _SAVE):
                steps += (self.prepare_trace, self.start_trace)
        for step in steps:
            step()

    # ---- the public life cycle ----------------------------------------------------------
    def start(self):
        if self._running:
            raise RuntimeError("profiler: start() of a profile that is already running")
        if _recorder.session is not None:
            raise RuntimeError("profiler: another profile() is already running; minidl runs "
                               "one at a time (stop the other one first)")
        if self._origin_ns is None:
            self._origin_ns = time.perf_counter_ns()
        _recorder.session = self
        try:
            self._transit(_NONE, self.current_action)
        except BaseException:
            _recorder.session = None
            if self._recorder is not None:
                _recorder.uninstall(self._recorder)
            raise
        self._running = True
        if self.record_steps:
            self.step_rec_fn = record_function(f"ProfilerStep#{self.step_num}")
            self.step_rec_fn.__enter__()

    def stop(self):
        if not self._running:
            return
        self._running = False
        try:
            if self.step_rec_fn is not None:
                self.step_rec_fn.__exit__(None, None, None)
                self.step_rec_fn = None
        finally:
            if _recorder.session is self:
                _recorder.session = None
            try:
                self._transit(self.current_action, None)
            finally:
                if self._recorder is not None:
                    _recorder.uninstall(self._recorder)  # whatever the callback did

    def step(self):
        """Tell the profiler that the next training step begins."""
        if not self._running:
            raise RuntimeError("profiler: step() outside the profile (call start() or use "
                               "`with profile(...) as prof:` first)")
        if self.step_rec_fn is not None:
            self.step_rec_fn.__exit__(None, None, None)
            self.step_rec_fn = None
        prev = self.current_action
        action = self._action(self.step_num + 1)
        self.step_num += 1
        self.current_action = action
        self._transit(prev, action)
        if self.record_steps:
            self.step_rec_fn = record_function(f"ProfilerStep#{self.step_num}")
            self.step_rec_fn.__enter__()

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc):
        self.stop()
        return False

    # ---- results --------------------------------------------------------------------------
    def events(self):
        """The events of the last finished recording (an ``EventList`` of
        ``FunctionEvent``s, in the order they began); empty before any."""
        if self._events is None:
            return EventList((), self.use_device, self.profile_memory, self.with_flops)
        return self._events

    def key_averages(self, group_by_input_shape=False, group_by_stack_n=0):
        """The events averaged per name (and per input shapes with
        ``group_by_input_shape=True`` and record_shapes; per top ``group_by_stack_n`` stack
        frames with with_stack)."""
        self._check_recorded("key_averages")
        return self.events().key_averages(group_by_input_shape, group_by_stack_n)

    def export_chrome_trace(self, path):
        """The last recording as a Chrome trace JSON file (Perfetto, chrome://tracing)."""
        self._check_recorded("export_chrome_trace")
        self.events().export_chrome_trace(path)

    def _check_recorded(self, what):
        if self._events is None:  # PyTorch: "Profiler must be initialized before ..."
            when = ("it is still recording: call it after stop() (or the `with` block), or "
                    "from on_trace_ready") if self._running else \
                "it has not run: start() it or use `with profile(...) as prof:` first"
            raise ProfilerNotReadyError(f"profiler: {what}() has no finished recording; {when}")
