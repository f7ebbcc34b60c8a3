"""One model at work at a time in this process: the turn that every model load and model call
takes.

Loading a MACE model compiles e3nn and mace code with ``torch.fx``, whose tracer patches
``torch.nn.Module.__call__`` for the whole process while it traces; mace's calculator and
our predictions set torch's default dtype for the whole process. So a model loaded in one
thread while another thread runs a model breaks both, and a tracer interrupted that way can
leave the process unable to load or run any model again. The web app serves every browser
session from a thread of one process, and the command line runs the same functions.

Every core function that unpickles or runs a model therefore works inside
:func:`model_turn`: a process-wide, reentrant lock served first come, first served. A caller
that has to wait can be told how many callers are ahead of it (``on_wait``), which is how the
pages say "2 ahead of you" instead of freezing. The turn is taken around each load and each
batched prediction, not around a whole analysis, so a long study analysis and a quick E0 fit
of another person take turns instead of one waiting minutes for the other.

Training never runs here: ``mace_run_train`` runs in processes of its own (see
:mod:`mlipft_core.jobs`), so the turn serialises only the interactive model work of one
process. Measured cost: ``bench/workshop_load.py``.
"""

from __future__ import annotations

import functools
import threading
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TypeVar

__all__ = ["WaitFn", "model_turn", "model_work", "waiting", "watching"]

#: Called while a caller waits, with the number of callers ahead of it (at least 1).
WaitFn = Callable[[int], None]

F = TypeVar("F", bound=Callable)


class _Turn:
    """A reentrant first-come-first-served lock that can say how many are ahead."""

    def __init__(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._owner: int | None = None
        self._depth = 0
        self._queue: deque[int] = deque()

    def _free_for(self, me: int) -> bool:
        return self._owner is None and bool(self._queue) and self._queue[0] == me

    def _ahead(self, me: int) -> int:
        return (self._owner is not None) + self._queue.index(me)

    def waiting(self) -> int:
        """Callers waiting for their turn now (the one at work not counted)."""
        with self._cond:
            return len(self._queue)

    def busy(self) -> bool:
        with self._cond:
            return self._owner is not None

    @contextmanager
    def hold(self, on_wait: WaitFn | None = None, poll_s: float = 0.5) -> Iterator[None]:
        me = threading.get_ident()
        with self._cond:
            if self._owner == me:  # already this thread's turn: nested model work
                self._depth += 1
                reentered = True
            else:
                reentered = False
                self._queue.append(me)
        if not reentered:
            on_wait = on_wait or getattr(_WATCHERS, "on_wait", None)
            waited = False
            try:
                while True:
                    with self._cond:
                        if self._free_for(me):
                            self._queue.popleft()
                            self._owner, self._depth = me, 1
                            break
                        ahead = self._ahead(me)
                    if on_wait is not None:
                        waited = True
                        on_wait(ahead)  # outside the lock: it may draw on a page, or raise
                    with self._cond:
                        if not self._free_for(me):
                            self._cond.wait(poll_s)
            except BaseException:
                with self._cond:
                    if me in self._queue:
                        self._queue.remove(me)
                    self._cond.notify_all()
                raise
            if waited:
                try:
                    on_wait(0)  # the wait is over
                except BaseException:
                    self._release()
                    raise
        try:
            yield
        finally:
            self._release()

    def _release(self) -> None:
        with self._cond:
            self._depth -= 1
            if self._depth == 0:
                self._owner = None
                self._cond.notify_all()


_TURN = _Turn()
_WATCHERS = threading.local()


def model_turn(on_wait: WaitFn | None = None, *, poll_s: float = 0.5):
    """Context manager: wait for this process's model turn, hold it inside the block.

    Parameters
    ----------
    on_wait
        Called about every ``poll_s`` seconds while waiting, with the number of callers ahead
        (the one at work included), and once with 0 when the wait is over. Not called when
        the turn is free or already held by the calling thread (the turn is reentrant). An
        exception it raises abandons the wait. Default: the one :func:`watching` set for
        this thread, if any.
    poll_s
        Seconds between ``on_wait`` calls.
    """
    return _TURN.hold(on_wait, poll_s)


@contextmanager
def watching(on_wait: WaitFn) -> Iterator[None]:
    """Inside the block, every model turn this thread waits for reports to ``on_wait``.

    A page sets this around an action whose model work happens deep inside the core (each
    load and batched prediction takes its own turn), so that any wait on the way is shown.
    """
    before = getattr(_WATCHERS, "on_wait", None)
    _WATCHERS.on_wait = on_wait
    try:
        yield
    finally:
        _WATCHERS.on_wait = before


def model_work(func: F) -> F:
    """Decorator: run ``func`` inside :func:`model_turn`."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        with _TURN.hold():
            return func(*args, **kwargs)

    return wrapper  # type: ignore[return-value]


def waiting() -> int:
    """How many callers of this process wait for a model turn now."""
    return _TURN.waiting()
