"""``torch.futures``: a Future holds the result of work that may still be running (an
asynchronous collective's ``Work.get_future()``, a DDP communication hook's return value).

``wait()`` runs whatever completes it and returns the value; ``then(callback)`` gives a new
Future whose value is ``callback(this_future)``, computed as soon as this one completes (by
``set_result`` or by a wait on either). minidl's futures complete on the thread that waits
(there is no background thread), which is when torch's would have completed at the latest.
"""
from __future__ import annotations

__all__ = ["Future", "collect_all", "wait_all"]


class Future:
    def __init__(self, *, devices=None, _waiter=None, _poll=None):
        self._waiter, self._poll = _waiter, _poll  # _poll: whether waiting would not block
        self._done = False
        self._value = None
        self._error = None
        self._callbacks = []

    def done(self) -> bool:
        """Whether the future is completed (a collective's future completes here once the
        collective has, so ``while not fut.done(): ...`` ends)."""
        if not self._done and self._poll is not None and self._poll():
            self._settle()
        return self._done

    def wait(self):
        """Complete this future (waiting for what it stands for) and return its value."""
        if not self._done:
            if self._waiter is None:
                raise RuntimeError("Future.wait(): nothing will complete this future; call "
                                   "set_result() first")
            self._settle()
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

    def _settle(self):
        """Run the waiter and keep its value or its error (raised to every waiter)."""
        try:
            value = self._waiter()
        except Exception as exc:
            self._set(None, exc)
        else:
            self._set(value, None)

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
            nxt._settle()
        else:  # completed as soon as this one is (set_result), as torch's
            self._callbacks.append(lambda _: nxt._done or nxt._settle())
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
