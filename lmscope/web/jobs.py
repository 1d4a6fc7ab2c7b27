"""Jobs on the one loaded model: a queue anyone can see, one worker thread, progress events, cancel.

The worker runs one job at a time (the model is shared), so the server's event loop never waits on a model:
requests are answered while a job runs. Each job keeps its events (``queued``, ``started``, ``progress``,
``result``, ``done`` / ``failed`` / ``cancelled``); a subscriber reads them from any index and is woken by the
worker through its own event loop (no polling). Cancelling a queued job drops it; a running job stops at its next
progress refresh (:mod:`lmscope.progress`). A job that fails is reported with one line; the worker goes on.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from lmscope.errors import LmscopeError
from lmscope.progress import Cancelled, listening

log = logging.getLogger(__name__)

TERMINAL = ("done", "failed", "cancelled")
MAX_KEPT = 200  # finished jobs remembered (their run folders stay on disk)


@dataclass
class WebJob:
    """One request to run a task on the model."""

    id: str
    task: str
    params: dict
    state: str = "queued"
    events: list[dict] = field(default_factory=list)
    created: float = field(default_factory=time.time)
    started: float | None = None
    finished: float | None = None
    error: str | None = None
    run: str | None = None  # the id of the run folder it wrote
    cancel: threading.Event = field(default_factory=threading.Event)

    def public(self) -> dict:
        """The job as the API shows it (no events)."""
        last = next((e for e in reversed(self.events) if e["type"] == "progress"), None)
        return {"id": self.id, "task": self.task, "params": self.params, "state": self.state,
                "created": self.created, "started": self.started, "finished": self.finished,
                "error": self.error, "run": self.run, "progress": last}


Execute = Callable[[WebJob, Callable[[str, dict], None]], None]


class JobQueue:
    """Runs ``execute(job, emit)`` for each submitted job, one at a time, in a daemon thread."""

    def __init__(self, execute: Execute):
        self.execute = execute
        self.jobs: dict[str, WebJob] = {}
        self.lock = threading.Lock()
        self.pending: queue.Queue[WebJob | None] = queue.Queue()
        self.subscribers: set[tuple[asyncio.AbstractEventLoop, asyncio.Event]] = set()
        self.ids = itertools.count(1)
        self.thread = threading.Thread(target=self._work, name="lmscope-jobs", daemon=True)
        self.thread.start()

    def submit(self, task: str, params: dict) -> WebJob:
        """Queue a job; returns it at once."""
        job = WebJob(f"j{next(self.ids)}", task, params)
        with self.lock:
            self.jobs[job.id] = job
            self._forget_old()
        self._emit(job, "queued", {"position": self.pending.qsize()})
        self.pending.put(job)
        return job

    def get(self, job_id: str) -> WebJob | None:
        """The job with this id (None when unknown)."""
        return self.jobs.get(job_id)

    def listing(self) -> list[dict]:
        """Every remembered job, oldest first (the visible queue)."""
        with self.lock:
            return [j.public() for j in self.jobs.values()]

    def cancel(self, job: WebJob) -> None:
        """Drop a queued job, or ask a running one to stop at its next progress refresh."""
        job.cancel.set()
        with self.lock:
            waiting = job.state == "queued"
            if waiting:
                job.state = "cancelled"  # the worker skips it
        if waiting:
            self._finish(job, "cancelled", {"message": "cancelled before it started"})

    def stop(self) -> None:
        """Let the worker end after the current job (server shutdown)."""
        for job in list(self.jobs.values()):
            if job.state == "queued":
                self.cancel(job)
        self.pending.put(None)

    # events -------------------------------------------------------------------------------------------------

    def _emit(self, job: WebJob, kind: str, data: dict) -> None:
        with self.lock:
            job.events.append({"type": kind, "time": time.time(), **data})
            waiters = list(self.subscribers)
        for loop, event in waiters:
            try:
                loop.call_soon_threadsafe(event.set)
            except RuntimeError:  # that loop is closed: its subscriber is gone
                self.subscribers.discard((loop, event))

    def subscribe(self) -> asyncio.Event:
        """An asyncio event set whenever any job emits (call from the event loop; :meth:`unsubscribe` after)."""
        event = asyncio.Event()
        self.subscribers.add((asyncio.get_running_loop(), event))
        return event

    def unsubscribe(self, event: asyncio.Event) -> None:
        """Stop waking ``event``."""
        self.subscribers = {s for s in self.subscribers if s[1] is not event}

    # the worker ---------------------------------------------------------------------------------------------

    def _work(self) -> None:
        while (job := self.pending.get()) is not None:
            with self.lock:
                if job.state != "queued":
                    continue  # cancelled while it waited
                job.state, job.started = "running", time.time()
            self._emit(job, "started", {})
            self._run(job)

    def _run(self, job: WebJob) -> None:
        def progress(update: dict) -> None:
            if job.cancel.is_set():
                raise Cancelled("cancelled by the user")
            self._emit(job, "progress", update)

        def emit(kind: str, data: dict) -> None:
            if kind == "run":
                job.run = data.get("run")
            self._emit(job, kind, data)

        try:
            with listening(progress):
                self.execute(job, emit)
        except Cancelled as err:
            self._finish(job, "cancelled", {"message": str(err)})
        except LmscopeError as err:
            self._finish(job, "failed", {"message": str(err)})
        except Exception as err:  # noqa: BLE001  (any failure of a job must leave the server running)
            log.exception("job %s (%s) failed", job.id, job.task)
            self._finish(job, "failed", {"message": f"{type(err).__name__}: {err}"})
        else:
            self._finish(job, "done", {"run": job.run})

    def _finish(self, job: WebJob, state: str, data: dict) -> None:
        job.state, job.finished = state, time.time()
        job.error = data.get("message") if state != "done" else None
        self._emit(job, state, data)

    def _forget_old(self) -> None:
        finished = [j for j in self.jobs.values() if j.state in TERMINAL]
        for job in finished[: max(0, len(finished) - MAX_KEPT)]:
            del self.jobs[job.id]
