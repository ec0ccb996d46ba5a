"""``torch.multiprocessing``: Python's multiprocessing, plus ``spawn``/``start_processes``
(run ``fn(i, *args)`` in ``nprocs`` processes and raise here what one of them raised) and the
sharing-strategy names. A minidl Tensor pickles as its array, so a queue carries copies;
``Module.share_memory()`` is how a model's weights are shared (Hogwild).

Data-parallel training across processes is launched with ``mpiexec`` (see
``minidl.distributed``), not with ``spawn``: a spawned process is not an MPI rank.
"""
from __future__ import annotations

import multiprocessing as _mp
import multiprocessing.connection as _connection
import os
import signal
import tempfile
import time
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


def _wrap(fn, i, args, error_file):
    try:
        fn(i, *args)
    except KeyboardInterrupt:
        pass
    except Exception:  # noqa: BLE001  (sent to the parent, which raises it)
        # a file, not a pipe: a long traceback in a pipe would block this process until the
        # parent read it, and the parent waits for this process to end first
        with open(error_file, "w", encoding="utf-8") as fh:
            fh.write(traceback.format_exc())
        raise SystemExit(1) from None


class ProcessContext:
    """The processes ``start_processes(join=False)`` started; ``join()`` them."""

    def __init__(self, processes, error_files):
        self.processes, self.error_files = processes, error_files
        self.sentinels = {p.sentinel: i for i, p in enumerate(processes)}

    def pids(self):
        return [p.pid for p in self.processes]

    def join(self, timeout=None, grace_period=None):
        """Wait up to ``timeout`` for any process to end: True when all have ended well, False
        while some still run. The first failure (whichever process it is) ends the others --
        after ``grace_period``, SIGTERM, then SIGKILL -- and raises here, as torch's."""
        if not self.sentinels:
            return True
        failed = None
        for sentinel in _connection.wait(list(self.sentinels), timeout=timeout):
            i = self.sentinels.pop(sentinel)
            self.processes[i].join()
            if self.processes[i].exitcode != 0:
                failed = i
                break
        if failed is None:
            return not self.sentinels
        if grace_period is not None:
            self._join_all(grace_period)
        for p in self.processes:
            if p.is_alive():
                p.terminate()
        self._join_all(30 if grace_period is None else grace_period)
        for p in self.processes:
            if p.is_alive():
                p.kill()
            p.join()
        self._raise(failed, self.processes[failed])

    def _join_all(self, seconds):
        end = time.monotonic() + seconds
        for p in self.processes:
            p.join(max(0.0, end - time.monotonic()))

    def _raise(self, i, p):
        path = self.error_files[i]
        if os.path.exists(path):
            with open(path, encoding="utf-8") as fh:
                tb = fh.read()
            os.unlink(path)
            raise ProcessRaisedException(f"\n\n-- Process {i} terminated with the following "
                                         f"error:\n{tb}", i, p.pid)
        code = p.exitcode
        if code < 0:
            try:
                name = signal.Signals(-code).name
            except ValueError:
                name = f"<Unknown signal {-code}>"
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
    processes, files = [], []
    for i in range(nprocs):
        # a name only: the child creates the file if (and only if) it raises
        fd, path = tempfile.mkstemp(prefix="minidl-errorfile-", suffix=".txt")
        os.close(fd)
        os.unlink(path)
        p = ctx.Process(target=_wrap, args=(fn, i, tuple(args), path), daemon=daemon)
        p.start()
        processes.append(p)
        files.append(path)
    context = ProcessContext(processes, files)
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
