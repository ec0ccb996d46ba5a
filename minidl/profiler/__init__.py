"""``minidl.profiler``: where a training step's time goes, with torch.profiler's API.

    from minidl.profiler import profile, record_function, ProfilerActivity

    with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
        with record_function("train_step"):
            loss = loss_fn(model(x), y)
            loss.backward()
            opt.step()
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=10))

What is recorded: each op's forward, named as its ``Function`` class (``Conv2d``, ``Linear``,
``Mul``), each node the backward pass runs (``Conv2dBackward``), ``Optimizer.step#SGD.step``,
``Optimizer.zero_grad#SGD.zero_grad``, each DataLoader batch
(``enumerate(DataLoader)#_SingleProcessDataLoaderIter.__next__``), ``record_function`` ranges,
``ProfilerStep#N`` under a schedule, and with ``with_modules=True`` one
``nn.Module: ClassName`` range per Module call. Ranges nest; an event's self time is its total
less the totals of the ranges directly inside it. With ``ProfilerActivity.CUDA`` on a GPU, CUDA
events recorded on the current stream before and after each op give its GPU time.

Without a running profiler nothing of this runs: ``Function.apply`` and the backward engine
check one global (``minidl.autograd._profiler_hook``), which is None.
"""
from ._recorder import record_function
from .events import EventList, FunctionEvent, FunctionEventAvg
from .profiler import (
    ProfilerAction, ProfilerActivity, profile, schedule, supported_activities,
    tensorboard_trace_handler,
)

__all__ = ["profile", "record_function", "schedule", "ProfilerActivity", "ProfilerAction",
           "supported_activities", "tensorboard_trace_handler", "EventList", "FunctionEvent", "FunctionEventAvg"]
