"""What minidl changes in the host process for the CPU kernels, gathered in ``configure()``.

Three process-wide settings, each measured to matter on a 2-core machine and each with its own
switch (an environment variable read when ``configure()`` runs):

- numba's threading layer becomes OpenMP with a short spin (``OMP_SPINCOUNT``), and the
  kernels go parallel from the smaller sizes of ``launch.SPINNING_WORKERS``; or ``workqueue``
  where GNU OpenMP cannot be loaded that way (off: ``MINIDL_THREADING_TUNING=0``, or choose a
  layer yourself with ``NUMBA_THREADING_LAYER``);
- glibc's malloc keeps freed memory for the next step (off: ``MINIDL_MALLOC_TUNING=0``, or set
  ``MALLOC_MMAP_THRESHOLD_``, ``MALLOC_TRIM_THRESHOLD_`` or ``GLIBC_TUNABLES`` yourself);
- every OpenBLAS loaded in the process (numpy's, SciPy's) stops its idle workers after 2^20
  cycles instead of 2^28 (off: ``MINIDL_BLAS_TUNING=0``, or set ``OPENBLAS_THREAD_TIMEOUT``).

``configure()`` runs once per process, on the first CPU op (when ``minidl.backend.cpu`` is
imported); later calls return the first call's report. It takes a lock, so two threads that
start their first op together do not tune twice.
"""
from __future__ import annotations

import os
import sys
import threading
from typing import NamedTuple

# OpenBLAS's idle workers spin for 2^OPENBLAS_THREAD_TIMEOUT cycles (default 2^28, ~0.1 s) after
# every multi-threaded call before they sleep. A numba parallel kernel started in that window
# shares a core with a spinning worker: LeNet-5 inference at batch 1000 took 37 ms instead of
# 21 ms, and the ResNet-50 3x3 conv ran 1.3x or 2.2x PyTorch's time depending on whether a worker
# was still spinning. 2^20 cycles (~0.3 ms) keeps the workers awake between the GEMMs of one
# layer but asleep by the time the next numba kernel runs; 2^16 or shorter made the back-to-back
# GEMMs of a training step wake sleeping workers (LeNet-5 step +30%), 2^24 or longer brought the
# contention back (measured with `pytest benchmarks --benchmark-only`, per timeout 2^4..2^28).
BLAS_SPIN_LOG2 = 20


class Configuration(NamedTuple):
    """What ``configure()`` changed: the threading layer it chose (None: left to numba or the
    user), whether it set glibc's malloc thresholds, and the paths of the OpenBLAS libraries
    whose worker spin time it shortened."""

    threading_layer: str | None
    malloc_tuned: bool
    blas_tuned: tuple


_lock = threading.Lock()
_configuration: Configuration | None = None


def configure() -> Configuration:
    """Apply minidl's process-wide CPU settings once (see the module docstring) and return what
    was changed. Thread-safe; every call after the first returns the first call's report."""
    global _configuration
    with _lock:
        if _configuration is None:
            _configuration = Configuration(_choose_threads(), _keep_freed_memory(),
                                           tuple(_shorten_blas_spin()))
        return _configuration


def set_num_threads(n):
    """Threads for minidl's numba kernels and numpy's OpenBLAS (``minidl.set_num_threads``, as
    ``torch.set_num_threads``). Use it rather than ``numba.set_num_threads``: numba starts its
    worker pool on that call, and a pool started before ``configure()`` chose its layer runs
    on OpenMP with libgomp's default spin, whose spinning workers made ResNet-50 inference 2x
    slower beside PyTorch. Returns the count set (at most numba's NUMBA_NUM_THREADS)."""
    configure()
    import numba

    n = max(1, min(int(n), numba.config.NUMBA_NUM_THREADS))
    numba.set_num_threads(n)
    for _, lib in openblas_libraries():
        for name in ("openblas_set_num_threads", "scipy_openblas_set_num_threads64_",
                     "openblas_set_num_threads64_"):
            fn = getattr(lib, name, None)
            if fn is not None:
                fn(n)
                break
    return n


def _off(variable):
    return os.environ.get(variable, "1") == "0"


# numba's OpenMP workers spin this many rounds (GOMP_SPINCOUNT, tens of microseconds) after a
# parallel kernel before they sleep: long enough that the next kernel finds them awake, short
# enough that they are asleep again by the time numpy's BLAS wants the cores.
OMP_SPINCOUNT = 10_000


def _choose_threads():
    """numba's threading layer: OpenMP with a short spin where the GNU OpenMP runtime can be
    loaded with it, numba's workqueue layer otherwise. A layer the user chose is left alone.

    On a 2-vCPU VM a sleeping worker thread woke late: a workqueue launch cost 60-130 us, and
    parallel kernels often ran at one core's speed. OpenMP's workers spin for a while after each
    kernel (a launch then costs ~2 us), but with libgomp's default spin they fought the other
    thread pools for the cores: numpy's BLAS right after a kernel took 8 ms instead of 0.1 ms,
    and with PyTorch's OpenMP runtime in the same process a LeNet step went from 13 ms to 500 ms.
    A spin of ``OMP_SPINCOUNT`` rounds keeps the first and loses the second: ResNet-50 inference
    at batch 8 490-552 -> 466-484 ms, LeNet-5 inference at batch 1000 24 -> 19.5 ms.

    GNU OpenMP does not survive ``fork()``: numba terminates a child that starts a parallel
    kernel. So a forked child runs minidl with one numba thread (serial kernels, as in a PyTorch
    DataLoader worker), set by an ``os.register_at_fork`` hook."""
    if _off("MINIDL_THREADING_TUNING") or os.environ.get("NUMBA_THREADING_LAYER"):
        return None
    import numba

    try:
        started = numba.threading_layer()  # raises until numba's worker pool has started
    except ValueError:
        started = None
    if started is not None:
        if started != "workqueue":
            import warnings

            warnings.warn(f"minidl: numba's threads were started before minidl's first CPU op, on "
                          f"the '{started}' layer with its default settings, which can make minidl "
                          "several times slower next to PyTorch or OpenBLAS; set the thread count "
                          "with minidl.set_num_threads() instead of numba.set_num_threads() (or "
                          "set NUMBA_THREADING_LAYER)", RuntimeWarning, stacklevel=3)
        return started
    layer = "omp" if _load_openmp_with_short_spin() else "workqueue"
    numba.config.THREADING_LAYER = layer
    if layer == "omp":
        from . import launch

        _one_active_level()
        launch.THRESHOLDS.update(launch.SPINNING_WORKERS)  # cheap launches: smaller kernels pay
        if hasattr(os, "register_at_fork"):
            os.register_at_fork(after_in_child=_one_thread_after_fork)
    return layer


def _one_active_level():
    """Start numba's OpenMP pool now, then set OpenMP's nesting back to one active level.

    numba's pool turns nested parallelism on when it starts (``omp_set_nested(1)``: 255 active
    levels), for the main thread's regions. The GNU OpenMP runtime is the process's, so every
    other OpenMP user in the process then nests too: PyTorch imported after minidl's first op
    gets the system's ``libgomp.so.1`` (its wheel's copy has the same soname), and each of its
    parallel regions that calls MKL opened a nested team of its own, more threads than cores.
    Its Transformer-encoder training step (batch 16, sequence 64, d_model 128) took 219 ms
    instead of 25 ms, and longer with a longer spin (1.2 s at GOMP_SPINCOUNT=1e5). minidl's
    kernels never nest a parallel loop in another, so one level costs them nothing. Left alone
    where the user set ``OMP_NESTED`` or ``OMP_MAX_ACTIVE_LEVELS``."""
    if os.environ.get("OMP_NESTED") or os.environ.get("OMP_MAX_ACTIVE_LEVELS"):
        return False
    try:
        import ctypes

        from numba.np.ufunc import parallel

        parallel._launch_threads()  # what numba does on its first parallel kernel
        for path in _loaded_libraries(lambda name: name.startswith("libgomp.so")):
            ctypes.CDLL(path).omp_set_max_active_levels(1)
    except Exception:  # a numba without this internal, or no such symbol: nesting stays on
        return False
    return True


def _load_openmp_with_short_spin():
    """Load numba's GNU OpenMP pool so that its libgomp reads GOMP_SPINCOUNT=OMP_SPINCOUNT (it
    reads the variable once, when it loads); the variable is then removed again, so child
    processes do not inherit it. False where that cannot be done: the runtime is missing, or a
    libgomp is loaded already (it read its settings then). A GOMP_SPINCOUNT or OMP_WAIT_POLICY
    of the user's own is kept as it is."""
    if sys.platform != "linux" or _loaded_libraries(lambda name: name.startswith("libgomp.so")):
        return False
    ours = "GOMP_SPINCOUNT" not in os.environ and "OMP_WAIT_POLICY" not in os.environ
    if ours:
        os.environ["GOMP_SPINCOUNT"] = str(OMP_SPINCOUNT)
    try:
        from numba.np.ufunc import omppool  # noqa: F401  (loads libgomp)
    except (ImportError, OSError):
        return False
    finally:
        if ours:
            del os.environ["GOMP_SPINCOUNT"]
    return True


def _one_thread_after_fork():
    import numba

    numba.set_num_threads(1)  # minidl's kernels then take their serial drivers


def _keep_freed_memory():
    """Let glibc's malloc keep freed memory for the next training step.

    A step allocates and frees tens of MB of activations and gradients. With glibc's default
    policy each large array is a fresh mmap (or the heap top is trimmed back to the kernel after
    every step), so every step paid ~2,300 page faults: 14.5 ms instead of 9.5 ms for LeNet-5 at
    batch 128. Serving arrays up to 64 MB from the heap and trimming only past 256 MB of free
    memory removes them. Skipped off glibc, when the user set either glibc tunable, or with
    MINIDL_MALLOC_TUNING=0."""
    if _off("MINIDL_MALLOC_TUNING") or not sys.platform.startswith("linux"):
        return False
    if any(k in os.environ for k in ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_",
                                     "GLIBC_TUNABLES")):
        return False
    try:
        import ctypes
        import platform

        if platform.libc_ver()[0] != "glibc":
            return False
        libc = ctypes.CDLL("libc.so.6")
        m_trim_threshold, m_mmap_threshold = -1, -3  # from <malloc.h>
        return bool(libc.mallopt(m_mmap_threshold, 64 << 20)
                    and libc.mallopt(m_trim_threshold, 256 << 20))
    except Exception:  # no glibc after all: its default policy stays
        return False


def _loaded_libraries(wanted):
    """Paths of the shared libraries loaded in this process whose file name passes
    ``wanted(name)``, from /proc/self/maps; empty where that cannot be read."""
    paths = set()
    try:
        with open("/proc/self/maps") as maps:
            for line in maps:
                path = line.split()[-1]
                if wanted(os.path.basename(path)):
                    paths.add(path)
    except OSError:
        return []
    return sorted(paths)


def openblas_libraries():
    """(path, ctypes handle) of each OpenBLAS library loaded in this process (numpy's, usually)."""
    import ctypes

    paths = _loaded_libraries(lambda name: "openblas" in name.lower() and ".so" in name)
    libs = []
    for path in paths:
        try:
            libs.append((path, ctypes.CDLL(path)))  # already loaded: the same library
        except OSError:
            pass
    return libs


def blas_tuning_wanted():
    """Whether the environment lets minidl change OpenBLAS's spin time."""
    return (not _off("MINIDL_BLAS_TUNING") and "OPENBLAS_THREAD_TIMEOUT" not in os.environ
            and sys.platform.startswith("linux"))


def _shorten_blas_spin():
    """Set OpenBLAS's worker spin time to 2^BLAS_SPIN_LOG2 cycles in this process; returns the
    paths of the libraries that took it.

    OpenBLAS reads OPENBLAS_THREAD_TIMEOUT when it loads, which is before minidl can set it
    (numpy loads it), so the variable is set for a moment while ``openblas_read_env`` re-reads
    the environment, and the workers are stopped (``blas_thread_shutdown_``) so that the next
    multi-threaded call starts them with the new timeout. Skipped where those symbols are not
    found (MKL, Accelerate, another BLAS), when the user set OPENBLAS_THREAD_TIMEOUT, or with
    MINIDL_BLAS_TUNING=0. Like any BLAS reconfiguration, it must not race a BLAS call running
    in another thread: it runs once, inside ``configure()``."""
    if not blas_tuning_wanted():
        return []
    tuned = []
    for path, lib in openblas_libraries():
        read_env = getattr(lib, "openblas_read_env", None)
        shutdown = getattr(lib, "blas_thread_shutdown_", None)
        if read_env is None or shutdown is None:
            continue
        os.environ["OPENBLAS_THREAD_TIMEOUT"] = str(BLAS_SPIN_LOG2)
        try:
            read_env()
        finally:
            del os.environ["OPENBLAS_THREAD_TIMEOUT"]
        getter = getattr(lib, "openblas_thread_timeout", None)
        if getter is not None and getter() != BLAS_SPIN_LOG2:
            continue  # this build did not take the new value: leave its threads alone
        shutdown()
        tuned.append(path)
    return tuned
