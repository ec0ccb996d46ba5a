"""minidl.multiprocessing (torch.multiprocessing): start_processes' join notices a failed
process (an exception, a long traceback, a kill, an unpicklable error) at once, ends the
others, and waits its timeout once, not once per process. Found by an audit against torch
2.13: each test failed before its fix."""
import pytest

import minidl


def _sleep_or_fail(i, how):
    import os
    import signal
    import time
    if i == 0 or how == "sleep":
        time.sleep(40)
    elif how == "raise":
        raise ValueError("x" * 200_000)       # longer than a pipe's buffer
    elif how == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    elif how == "unpicklable":
        raise ValueError(lambda: 0)


@pytest.mark.parametrize("how", ["raise", "kill", "unpicklable"])
def test_spawn_join_notices_any_failure_at_once(how):
    import time
    mp = minidl.multiprocessing
    start = time.monotonic()
    ctx = mp.start_processes(_sleep_or_fail, args=(how,), nprocs=2, join=False,
                             start_method="fork")
    # before: rank 0 was joined first (40 s), and a long traceback blocked rank 1 in its pipe
    exc = mp.ProcessExitedException if how == "kill" else mp.ProcessRaisedException
    with pytest.raises(exc) as e:
        while not ctx.join(timeout=1, grace_period=0):
            assert time.monotonic() - start < 20, "join did not notice rank 1's failure"
    assert time.monotonic() - start < 20 and e.value.error_index == 1
    assert not ctx.processes[0].is_alive()                       # the others were ended
    if how == "kill":
        assert e.value.signal_name == "SIGKILL" and "terminated with signal SIGKILL" in str(e.value)
    else:
        assert "ValueError" in str(e.value)


def test_join_timeout_waits_once_not_per_process():
    import time
    mp = minidl.multiprocessing
    ctx = mp.start_processes(_sleep_or_fail, args=("sleep",), nprocs=8, join=False,
                             start_method="fork")
    try:
        start = time.monotonic()
        assert ctx.join(timeout=0.5) is False
        # was 0.5 s for each running process (4 s); the slack is for a busy machine
        assert time.monotonic() - start < 2.5
    finally:
        for p in ctx.processes:
            p.kill()
            p.join()
