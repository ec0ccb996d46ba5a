"""``torch.autograd.profiler``: the older profiler API, over ``minidl.profiler`` (it lives
here, beside the profiler it uses, and ``import minidl`` names it ``minidl.autograd.profiler``:
the autograd layer imports nothing above it).

    with minidl.autograd.profiler.profile(record_shapes=True) as prof:
        model(x).sum().backward()
    print(prof.key_averages().table(sort_by="self_cpu_time_total"))

``profile(use_cuda=True)`` (or ``use_device="cuda"``) adds the GPU's times; ``enabled=False``
records nothing; ``record_function`` is the profiler's. (``emit_nvtx`` is not here: NVTX
ranges come from ``minidl.cuda.nvtx`` by hand.)
"""
from __future__ import annotations

import warnings

from ._recorder import record_function  # noqa: F401  (torch.autograd.profiler.record_function)
from .events import EventList, FunctionEvent  # noqa: F401

__all__ = ["profile", "record_function", "EventList", "FunctionEvent"]


class profile:  # noqa: N801  (torch's name)
    """Record the ops of the block (and their backward) as ``minidl.profiler.profile`` does;
    the results as torch's: ``key_averages()``, ``table()``, ``function_events``,
    ``export_chrome_trace(path)``, ``self_cpu_time_total``."""

    def __init__(self, enabled=True, *, use_cuda=False, use_device=None, record_shapes=False,
                 with_flops=False, profile_memory=False, with_stack=False, with_modules=False,
                 use_kineto=False, use_cpu=True, experimental_config=None, acc_events=False,
                 custom_trace_id_callback=None, post_processing_timeout_s=None,
                 activity_filters=None):
        from .profiler import ProfilerActivity

        if use_cuda:
            warnings.warn("The attribute `use_cuda` will be deprecated soon, please use "
                          "``use_device = 'cuda'`` instead.", FutureWarning, stacklevel=2)
            use_device = "cuda"
        if use_device not in (None, "cuda"):
            raise ValueError(f"profile: use_device must be None or 'cuda', got {use_device!r}")
        if not use_cpu and use_device is None:
            raise ValueError("profile: use_cpu=False needs use_device='cuda' (nothing would "
                             "be recorded)")
        self.enabled = bool(enabled)
        acts = ([ProfilerActivity.CPU] if use_cpu else []) + \
            ([ProfilerActivity.CUDA] if use_device == "cuda" else [])
        self._kw = dict(activities=acts, record_shapes=record_shapes, with_flops=with_flops,
                        profile_memory=profile_memory, with_stack=with_stack,
                        with_modules=with_modules)
        self._prof = None
        self._entered = False

    def __enter__(self):
        if self._entered:  # torch refuses too: a second run would replace the first's events
            raise RuntimeError("Profiler context manager is not reentrant: this profile() "
                               "already ran; make a new one for another run")
        self._entered = True
        if self.enabled:
            from .profiler import profile as _profile

            self._prof = _profile(**self._kw)
            self._prof.__enter__()
        return self

    def __exit__(self, *exc):
        if self._prof is not None:
            self._prof.__exit__(*exc)
        return False

    def _recorded(self, what):
        if self._prof is None:
            raise RuntimeError(f"profile.{what}: the profiler was not enabled (or not run)")
        return self._prof

    @property
    def function_events(self):
        return self._recorded("function_events").events()

    def key_averages(self, group_by_input_shape=False, group_by_stack_n=0):
        return self._recorded("key_averages").key_averages(group_by_input_shape,
                                                           group_by_stack_n)

    def table(self, sort_by=None, row_limit=100, **kwargs):
        return self.function_events.table(sort_by=sort_by, row_limit=row_limit, **kwargs)

    def total_average(self):
        return self.function_events.total_average()

    @property
    def self_cpu_time_total(self):
        return self.function_events.self_cpu_time_total

    def export_chrome_trace(self, path):
        self._recorded("export_chrome_trace").export_chrome_trace(path)

    def __str__(self):
        return self.table() if self._prof is not None else "<unfinished profile>"
