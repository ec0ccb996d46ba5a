"""``torch.futures``: a Future holds the result of work that may still be running (an
asynchronous collective's ``Work.get_future()``, a DDP communication hook's return value).

``wait()`` runs whatever completes it and returns the value; ``then(callback)`` gives a new
Future whose value is ``callback(this_future)``, computed when that one is waited on. minidl's
futures complete on the thread that waits (there is no background thread), which is when
torch's would have completed at the latest.
"""
from __future__ import annotations

__all__ = ["Future", "collect_all", "wait_all"]


class Future:
    def __init__(self, *, devices=None, _waiter=None):
        self._waiter = _waiter
        self._done = False
        self._value = None
        self._error = None
        self._callbacks = []

    def done(self) -> bool:
        return self._done

    def wait(self):
        """Complete this future (waiting for what it stands for) and return its value."""
        if not self._done:
            if self._waiter is None:
                raise RuntimeError("Future.wait(): nothing will complete this future; call "
                                   "set_result() first")
            try:
                self._set(self._waiter(), None)
            except Exception as exc:  # the error is kept, and raised to every waiter
                self._set(None, exc)
        if self._error is not None:
            raise self._error
        return self._value

    def value(self):
        """The value of a completed future (torch's: raises if it is not done yet)."""
        if not self._done:
            raise RuntimeError("Future.value(): the future is not completed yet; call wait()")
        if self._error is not None:
            raise self._error
        return self._value

    def set_result(self, result):
        if self._done:
            raise RuntimeError("Future.set_result(): the future is already completed")
        self._set(result, None)

    def set_exception(self, result):
        if self._done:
            raise RuntimeError("Future.set_exception(): the future is already completed")
        self._set(None, result)

    def _set(self, value, error):
        self._value, self._error, self._done = value, error, True
        callbacks, self._callbacks = self._callbacks, []
        for cb in callbacks:
            cb(self)

    def then(self, callback):
        """A Future of ``callback(self)`` (called with this future completed)."""
        def run():
            self.wait()
            return callback(self)
        nxt = Future(_waiter=run)
        if self._done:
            nxt.wait()
        return nxt

    def add_done_callback(self, callback):
        if self._done:
            callback(self)
        else:
            self._callbacks.append(callback)


def collect_all(futures):
    """A Future of the list of ``futures`` themselves, completed once every one is."""
    futures = list(futures)

    def run():
        for f in futures:
            f.wait()
        return futures
    return Future(_waiter=run)


def wait_all(futures):
    """Wait for every future; their values, in order."""
    return [f.wait() for f in futures]
