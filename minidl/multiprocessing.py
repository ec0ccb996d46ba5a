"""``torch.multiprocessing``: Python's multiprocessing, plus ``spawn``/``start_processes``
(run ``fn(i, *args)`` in ``nprocs`` processes and raise here what one of them raised) and the
sharing-strategy names. A minidl Tensor pickles as its array, so a queue carries copies;
``Module.share_memory()`` is how a model's weights are shared (Hogwild).

Data-parallel training across processes is launched with ``mpiexec`` (see
``minidl.distributed``), not with ``spawn``: a spawned process is not an MPI rank.
"""
from __future__ import annotations

import multiprocessing as _mp
import signal
import traceback
from multiprocessing import *  # noqa: F401,F403  (torch.multiprocessing re-exports it)

__all__ = list(_mp.__all__) + ["spawn", "start_processes", "ProcessContext",
                               "ProcessRaisedException", "ProcessExitedException",
                               "set_sharing_strategy", "get_sharing_strategy",
                               "get_all_sharing_strategies"]

_STRATEGIES = {"file_descriptor", "file_system"}
_strategy = ["file_descriptor"]


def get_all_sharing_strategies():
    return set(_STRATEGIES)


def get_sharing_strategy():
    return _strategy[0]


def set_sharing_strategy(new_strategy):
    """Recorded (minidl shares memory through ``share_memory()``'s shared arrays either way)."""
    if new_strategy not in _STRATEGIES:
        raise ValueError(f"set_sharing_strategy: expected one of {sorted(_STRATEGIES)}, got "
                         f"{new_strategy!r}")
    _strategy[0] = new_strategy


class ProcessException(Exception):
    def __init__(self, msg, error_index, error_pid):
        super().__init__(msg)
        self.msg, self.error_index, self.pid = msg, error_index, error_pid

    def __reduce__(self):
        return type(self), (self.msg, self.error_index, self.pid)


class ProcessRaisedException(ProcessException):
    """A spawned process raised: ``str(e)`` holds its traceback."""


class ProcessExitedException(ProcessException):
    """A spawned process ended with a non-zero exit code (or a signal)."""

    def __init__(self, msg, error_index, error_pid, exit_code, signal_name=None):
        super().__init__(msg, error_index, error_pid)
        self.exit_code, self.signal_name = exit_code, signal_name

    def __reduce__(self):
        return type(self), (self.msg, self.error_index, self.pid, self.exit_code,
                            self.signal_name)


def _wrap(fn, i, args, error_queue):
    try:
        fn(i, *args)
    except KeyboardInterrupt:
        pass
    except Exception:  # noqa: BLE001  (sent to the parent, which raises it)
        error_queue.put(traceback.format_exc())
        raise SystemExit(1) from None


class ProcessContext:
    """The processes ``start_processes(join=False)`` started; ``join()`` them."""

    def __init__(self, processes, error_queues):
        self.processes, self.error_queues = processes, error_queues

    def pids(self):
        return [p.pid for p in self.processes]

    def join(self, timeout=None, grace_period=None):
        """Wait for the processes; True when all ended well, False while some still run (with
        ``timeout``). The first failure ends the others and raises here."""
        for i, p in enumerate(self.processes):
            p.join(timeout)
            if p.exitcode not in (None, 0):
                for other in self.processes:
                    if other.is_alive():
                        other.terminate()
                    other.join(grace_period)
                self._raise(i, p)
        return all(p.exitcode == 0 for p in self.processes)

    def _raise(self, i, p):
        queue = self.error_queues[i]
        if not queue.empty():
            tb = queue.get()
            raise ProcessRaisedException(f"\n\n-- Process {i} terminated with the following "
                                         f"error:\n{tb}", i, p.pid)
        code = p.exitcode
        if code < 0:
            name = signal.Signals(-code).name
            raise ProcessExitedException(f"process {i} terminated with signal {name}", i, p.pid,
                                         code, name)
        raise ProcessExitedException(f"process {i} terminated with exit code {code}", i, p.pid,
                                     code)


def start_processes(fn, args=(), nprocs=1, join=True, daemon=False, start_method="spawn"):
    """Run ``fn(i, *args)`` for i in 0..nprocs-1, each in its own process started with
    ``start_method``; with ``join`` wait for all and raise ``ProcessRaisedException`` (with the
    child's traceback) if one raised, else return the ``ProcessContext``."""
    if isinstance(nprocs, bool) or not isinstance(nprocs, int) or nprocs < 1:
        raise ValueError(f"start_processes: nprocs must be a positive int, got {nprocs!r}")
    ctx = _mp.get_context(start_method)
    processes, queues = [], []
    for i in range(nprocs):
        queue = ctx.SimpleQueue()
        p = ctx.Process(target=_wrap, args=(fn, i, tuple(args), queue), daemon=daemon)
        p.start()
        processes.append(p)
        queues.append(queue)
    context = ProcessContext(processes, queues)
    if not join:
        return context
    while not context.join():
        pass
    return None


def spawn(fn, args=(), nprocs=1, join=True, daemon=False, start_method="spawn"):
    """``start_processes`` with the ``spawn`` start method (torch's, which warns for others)."""
    if start_method != "spawn":
        import warnings

        warnings.warn(f"This method only supports start_method=spawn (got: {start_method}).\n"
                      "To use a different start_method use:\n\t\t "
                      "minidl.multiprocessing.start_processes(...)", FutureWarning, stacklevel=2)
    return start_processes(fn, args, nprocs, join, daemon, start_method)
