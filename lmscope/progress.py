"""Progress bars that a caller can follow and cancel: tqdm on the terminal, events to a listener when one is set.

Methods import :class:`tqdm` from here instead of ``tqdm.auto``. With no listener it is exactly ``tqdm.auto.tqdm``.
The web workbench runs a job under :func:`listening`: every refresh of a bar created in that thread calls the
listener with ``{"desc", "n", "total", "rate"}``, and a listener that raises (e.g. :class:`Cancelled`) stops the
method at its next refresh, which is how a long job is cancelled without the method knowing about jobs.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar

from tqdm.auto import tqdm as _tqdm

from lmscope.errors import LmscopeError

Listener = Callable[[dict], None]
_LISTENER: ContextVar[Listener | None] = ContextVar("lmscope_progress_listener", default=None)


class Cancelled(LmscopeError):
    """A job was cancelled by its user; raised from inside a progress refresh."""


class tqdm(_tqdm):  # noqa: N801  (a drop-in for tqdm.auto.tqdm)
    """``tqdm.auto.tqdm`` that also reports every refresh to the listener of the current context, if any.

    tqdm calls ``display`` while it holds its global lock, so a listener's exception is kept and raised from the
    next ``update`` (iteration calls it too), after the lock is released.
    """

    _stop: BaseException | None = None

    def display(self, msg=None, pos=None):  # noqa: D102  (tqdm's own)
        listener = _LISTENER.get()
        if listener is not None and self._stop is None:
            try:
                listener({"desc": self.desc or "", "n": self.n, "total": self.total,
                          "rate": self.format_dict.get("rate")})
            except Exception as err:  # noqa: BLE001  (re-raised by update, outside tqdm's lock)
                self._stop = err
        return super().display(msg, pos)

    def update(self, n=1):  # noqa: D102  (tqdm's own)
        shown = super().update(n)
        if self._stop is not None:
            raise self._stop
        return shown


def listening_now() -> bool:
    """Whether a listener follows this context (methods show a bar they would hide for short loops)."""
    return _LISTENER.get() is not None


@contextmanager
def listening(listener: Listener) -> Iterator[None]:
    """Send the progress of every bar refreshed in this context (thread) to ``listener``."""
    token = _LISTENER.set(listener)
    try:
        yield
    finally:
        _LISTENER.reset(token)
