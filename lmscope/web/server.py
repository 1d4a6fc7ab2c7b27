"""Serving the workbench with uvicorn, bounded: slow or idle connections are closed, open connections are capped.

uvicorn waits for a request's headers and body for ever, so a few hundred half-sent requests would hold every file
descriptor of the process. Here a connection must deliver its request line and headers within
:data:`HEADER_TIMEOUT_S` of connecting (or of its previous response), each chunk of a body must arrive within
:data:`BODY_TIMEOUT_S` (:class:`lmscope.web.app.BodyLimit`), an idle keep-alive connection closes after
:data:`KEEP_ALIVE_S`, and connections beyond :data:`MAX_CONNECTIONS` are closed as they arrive. The soft limit on
open files is raised to the hard one (at most 4,096), and the cap is lowered where that limit is low, so that the
cap, not the OS, is what a flood meets.
"""

from __future__ import annotations

import asyncio
import logging
import math
import resource
import socket
import threading
import time

import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

log = logging.getLogger(__name__)

HEADER_TIMEOUT_S = 10.0
BODY_TIMEOUT_S = 10.0
KEEP_ALIVE_S = 5
MAX_CONNECTIONS = 128
BACKLOG = 64  # connections the kernel queues, and asyncio accepts in one go
RESERVED_FILES = 64  # the process's own: model files, pipes, the listening socket


class BoundedH11(H11Protocol):
    """uvicorn's h11 protocol with a deadline on each request's headers and a cap on open connections."""

    header_timeout = HEADER_TIMEOUT_S
    max_connections = MAX_CONNECTIONS
    _warned = -math.inf  # when the cap was last reported

    def connection_made(self, transport) -> None:  # noqa: D102  (asyncio's)
        self._deadline: asyncio.TimerHandle | None = None
        self._waiting_for, self._since = None, 0.0
        super().connection_made(transport)
        if len(self.connections) > self.max_connections:
            self._make_room()
        if not transport.is_closing():
            self._arm()

    def _make_room(self) -> None:
        """Over the cap: close the connection that has waited longest for its request's headers, else this one.

        A flood of slow or idle clients then cannot lock out a real request.
        """
        waiting = [c for c in self.connections if isinstance(c, BoundedH11) and c is not self
                   and c._deadline is not None and not c.transport.is_closing()]
        victim = min(waiting, key=lambda c: c._since) if waiting else self
        now = time.monotonic()
        if now - BoundedH11._warned > 60:  # once a minute at most: a flood must not flood the log too
            BoundedH11._warned = now
            log.warning("more than %d open connections: closing the ones that wait longest for a request",
                        self.max_connections)
        victim.transport.close()

    def _arm(self) -> None:
        """Start the clock for the next request's headers (the request after the current cycle)."""
        self._disarm()
        self._waiting_for, self._since = self.cycle, time.monotonic()
        self._deadline = self.loop.call_later(self.header_timeout, self._expire)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _expire(self) -> None:
        self._deadline = None
        if self.cycle is self._waiting_for and not self.transport.is_closing():
            log.debug("closing a connection that sent no complete request in %.0f s", self.header_timeout)
            self.transport.close()

    def data_received(self, data: bytes) -> None:  # noqa: D102  (asyncio's)
        idle = self.cycle is None or self.cycle.response_complete
        if idle and self._deadline is None:
            self._arm()  # bytes of a next request on a kept-alive connection: the clock starts again
        super().data_received(data)

    def handle_events(self) -> None:  # noqa: D102  (uvicorn's)
        super().handle_events()
        if self.cycle is not self._waiting_for:
            self._disarm()  # the headers of a request arrived

    def connection_lost(self, exc) -> None:  # noqa: D102  (asyncio's)
        self._disarm()
        super().connection_lost(exc)


def raise_file_limit(wanted: int = 4096) -> None:
    """Raise the soft limit on open files towards ``wanted`` (never above the hard limit)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))


def connection_cap(backlog: int = BACKLOG) -> int:
    """Open connections allowed: :data:`MAX_CONNECTIONS`, fewer when the file limit is low.

    asyncio accepts up to ``backlog`` connections in one go before any of them can be closed, so the file
    descriptors needed at a peak are the process's own, the cap and one backlog.
    """
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return MAX_CONNECTIONS
    return max(8, min(MAX_CONNECTIONS, soft - backlog - RESERVED_FILES))


def config(app, host: str, port: int) -> uvicorn.Config:
    """The uvicorn settings for the workbench: the bounded protocol, short keep-alive, no websockets."""
    protocol = type("BoundedH11", (BoundedH11,), {"max_connections": connection_cap()})
    return uvicorn.Config(app, host=host, port=port, http=protocol, ws="none", timeout_keep_alive=KEEP_ALIVE_S,
                          backlog=BACKLOG, log_level="warning", server_header=False)


def free_port(host: str) -> int:
    """A port free on ``host`` now."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def run(app, host: str, port: int) -> None:
    """Serve ``app`` until interrupted (the ``serve`` command)."""
    raise_file_limit()
    uvicorn.Server(config(app, host, port)).run()


class Threaded:
    """``app`` served from a daemon thread of this process; ``stop()`` ends it."""

    def __init__(self, app, host: str, port: int):
        self.server = uvicorn.Server(config(app, host, port))
        self.thread = threading.Thread(target=self.server.run, name="lmscope-serve", daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"the workbench did not start on {host}:{port}")
            time.sleep(0.02)

    def stop(self) -> None:
        """Stop serving and wait for the server thread."""
        self.server.should_exit = True
        self.thread.join(timeout=30)
