"""The Starlette app of ``lmscope serve``: the JSON API, the server-sent job events and the static page.

Every error is a JSON ``{"error": "..."}`` with a 4xx status (a 500 says only that something broke and is logged
with its traceback on the server); request bodies are limited to :data:`MAX_BODY` bytes and must arrive in time.
Who may call it is :mod:`lmscope.web.security`'s business (token, Host allow-list, same-origin JSON writes);
how it is served, :mod:`lmscope.web.server`'s (timeouts, a cap on connections).
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from collections import OrderedDict
from contextlib import asynccontextmanager
from pathlib import Path

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from lmscope.errors import LmscopeError
from lmscope.io import CFG_NAME, load_result
from lmscope.web.features import FeatureIndex
from lmscope.web.jobs import TERMINAL, JobQueue
from lmscope.web.runs import BadName, NotFound, RunIndex, entry
from lmscope.web.security import FILE_CSP, Guard, Security
from lmscope.web.server import BODY_TIMEOUT_S, Threaded, free_port
from lmscope.web.tasks import NEEDS_TRANSCODERS, TASKS, Workbench, check_params, describe, execute, token_counter
from lmscope.web.views import add_feature_notes, view

log = logging.getLogger(__name__)

STATIC = Path(__file__).parent / "static"
PAGES = {"app.js": "text/javascript", "app.css": "text/css", "login.js": "text/javascript"}
MAX_BODY = 64 * 1024  # bytes of one request body
MAX_QUEUED = 16  # jobs waiting at most
KEEPALIVE_S = 15.0
MEDIA = {".png": "image/png", ".html": "text/html; charset=utf-8", ".json": "application/json"}  # what the page shows


class Api:
    """The routes' shared state: the bench (model + edits), the run index, the job queue, a small view cache."""

    def __init__(self, bench: Workbench, results: list[Path]):
        self.bench = bench
        self.count = token_counter(bench.lm)
        roots = list(results)
        if not any(bench.out.resolve().is_relative_to(Path(r).resolve()) for r in roots):
            roots.append(bench.out)  # the workbench's own runs are always listed
        self.index = RunIndex(roots)
        self.features = FeatureIndex(self.index)
        self.jobs = JobQueue(lambda job, emit: execute(bench, job, emit, self.register))
        self.cache: OrderedDict[tuple, dict] = OrderedDict()
        self.cache_lock = threading.Lock()

    def register(self, folder: Path) -> str:
        """The run id of a folder the bench just wrote."""
        folder = folder.resolve()
        for i, root in enumerate(self.index.roots):
            if folder.is_relative_to(root):
                return f"{i}/{folder.relative_to(root).as_posix()}"
        raise NotFound(f"{folder} is outside the result directories")

    def view(self, run_id: str) -> dict:
        """The view of a run, cached by (id, modification time of its result); a graph's feature notes read anew."""
        ref = self.index.ref(run_id)
        key = (run_id, (ref.result / CFG_NAME).stat().st_mtime_ns)
        with self.cache_lock:
            page = self.cache.get(key)
            if page is not None:
                self.cache.move_to_end(key)
        if page is not None:
            return add_feature_notes(page, self.features.notes)  # feature pages may have been added since
        page = {"run": run_id, **view(load_result(ref.result), ref.folder)}
        with self.cache_lock:
            self.cache[key] = page
            while len(self.cache) > 64:
                self.cache.popitem(last=False)
        return add_feature_notes(page, self.features.notes)


def _api(request: Request) -> Api:
    return request.app.state.api


def _param(request: Request, name: str) -> str:
    value = request.query_params.get(name)
    if value is None:
        raise HTTPException(400, f"missing query parameter {name!r}")
    return value


# routes --------------------------------------------------------------------------------------------------------


async def index(request: Request) -> Response:
    return FileResponse(STATIC / "index.html", media_type="text/html; charset=utf-8")


async def static(request: Request) -> Response:
    name = request.path_params["name"]
    if name not in PAGES:
        raise HTTPException(404, f"no static file {name!r}")
    return FileResponse(STATIC / name, media_type=PAGES[name])


async def health(request: Request) -> Response:
    api = _api(request)
    running = [j["id"] for j in api.jobs.listing() if j["state"] == "running"]
    return JSONResponse({"ok": True, "model": api.bench.lm.name, "running": running})


async def model(request: Request) -> Response:
    lm = _api(request).bench.lm
    return JSONResponse({"name": lm.name, "family": lm.layout.spec.name, "layers": lm.n_layers, "d_model": lm.d_model,
                         "vocab": lm.vocab_size, "edited": _api(request).bench.edited()})


async def tasks(request: Request) -> Response:
    return JSONResponse(describe(bool(_api(request).bench.transcoders)))


def runs(request: Request) -> Response:
    return JSONResponse(_api(request).index.scan())


def run_view(request: Request) -> Response:
    return JSONResponse(_api(request).view(_param(request, "run")))


def run_entry(request: Request) -> Response:
    """One run's listing entry (title, command, files): what a deep link or a finished job needs."""
    return JSONResponse(entry(_api(request).index.ref(_param(request, "run"))))


def run_file(request: Request) -> Response:
    """A PNG, HTML or JSON file of a run; HTML is shown sandboxed (no script runs, it cannot call the API)."""
    path = _api(request).index.file(_param(request, "run"), _param(request, "name"), suffixes=tuple(MEDIA))
    suffix = path.suffix.lower()
    headers = {"content-security-policy": FILE_CSP} if suffix == ".html" else {}
    return FileResponse(path, media_type=MEDIA[suffix], headers=headers)


def features(request: Request) -> Response:
    query = request.query_params.get("q", "")
    return JSONResponse(_api(request).features.search(query, limit=_int(request, "limit", 50)))


def feature(request: Request) -> Response:
    api = _api(request)
    return JSONResponse(api.features.page(_param(request, "run"), _int(request, "feature", None)))


def _int(request: Request, name: str, default: int | None) -> int:
    value = request.query_params.get(name)
    if value is None and default is not None:
        return default
    if value is None or not value.lstrip("-").isdigit():
        raise HTTPException(400, f"{name} must be an integer")
    return int(value)


async def submit(request: Request) -> Response:
    api = _api(request)
    try:
        body = json.loads(await request.body() or b"null")
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise HTTPException(400, f"the body is not JSON ({err})") from err
    if not isinstance(body, dict) or not isinstance(body.get("task"), str):
        raise HTTPException(400, 'send {"task": NAME, "params": {...}}')
    task = TASKS.get(body["task"])
    if task is None:
        raise HTTPException(404, f"no task {body['task']!r} (tasks: {', '.join(TASKS)})")
    if task.name in NEEDS_TRANSCODERS:
        api.bench.need_transcoders()
    params = check_params(task, body.get("params") or {}, api.count)
    if sum(j["state"] == "queued" for j in api.jobs.listing()) >= MAX_QUEUED:
        raise HTTPException(429, f"{MAX_QUEUED} jobs are already waiting; try again when one has finished")
    job = api.jobs.submit(task.name, params)
    return JSONResponse(job.public(), status_code=202)


async def jobs(request: Request) -> Response:
    return JSONResponse(_api(request).jobs.listing())


def _job(request: Request):
    job = _api(request).jobs.get(request.path_params["job"])
    if job is None:
        raise HTTPException(404, f"no job {request.path_params['job']!r}")
    return job


async def job_detail(request: Request) -> Response:
    job = _job(request)
    return JSONResponse({**job.public(), "events": job.events})


async def cancel(request: Request) -> Response:
    job = _job(request)
    if job.state in TERMINAL:
        raise HTTPException(409, f"job {job.id} has already {job.state}")
    _api(request).jobs.cancel(job)
    return JSONResponse(job.public(), status_code=202)


async def events(request: Request) -> Response:
    """Server-sent events of one job from ``since`` on, until it ends (a comment line keeps the stream alive)."""
    job, queue = _job(request), _api(request).jobs
    since = max(0, _int(request, "since", 0))

    async def stream():
        wake = queue.subscribe()
        try:
            sent = since
            while True:
                wake.clear()
                new = job.events[sent:]
                for event in new:
                    yield f"data: {json.dumps(event)}\n\n"
                sent += len(new)
                if job.state in TERMINAL and sent >= len(job.events):
                    return
                try:
                    await asyncio.wait_for(wake.wait(), KEEPALIVE_S)
                except asyncio.TimeoutError:
                    yield ": keep-alive\n\n"
        finally:
            queue.unsubscribe(wake)

    return StreamingResponse(stream(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


# errors and limits ---------------------------------------------------------------------------------------------


async def http_error(request: Request, exc: HTTPException) -> Response:
    return JSONResponse({"error": exc.detail}, status_code=exc.status_code, headers=exc.headers)


async def not_found(request: Request, exc: NotFound) -> Response:
    return JSONResponse({"error": str(exc)}, status_code=400 if isinstance(exc, BadName) else 404)


async def user_error(request: Request, exc: LmscopeError) -> Response:
    return JSONResponse({"error": str(exc)}, status_code=400)


async def server_error(request: Request, exc: Exception) -> Response:
    log.exception("%s %s failed", request.method, request.url.path)
    return JSONResponse({"error": f"the server failed on this request ({type(exc).__name__}); see its log"},
                        status_code=500)


class BodyLimit:
    """Refuse request bodies over ``limit`` bytes (413) and bodies whose next chunk takes over ``timeout`` s (408).

    The length is checked as declared, and counted while the body streams in.
    """

    limit = MAX_BODY
    timeout = BODY_TIMEOUT_S

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope.get("headers", [])).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.limit):
            return await self._refuse(send)
        seen, complete = 0, False

        async def limited():
            nonlocal seen, complete
            if complete:  # the body is in; what follows is the wait for a disconnect (streams)
                return await receive()
            try:
                message = await asyncio.wait_for(receive(), self.timeout)
            except asyncio.TimeoutError as err:
                raise HTTPException(408, f"the request body did not arrive within {self.timeout:g} s",
                                    headers={"connection": "close"}) from err
            complete = message["type"] != "http.request" or not message.get("more_body", False)
            seen += len(message.get("body", b""))
            if seen > self.limit:
                raise HTTPException(413, f"request bodies are limited to {self.limit} bytes")
            return message

        return await self.app(scope, limited, send)

    async def _refuse(self, send) -> None:
        body = json.dumps({"error": f"request bodies are limited to {self.limit} bytes"}).encode()
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})


def create_app(bench: Workbench, results: list[str | Path], security: Security | None = None) -> Starlette:
    """The workbench app over ``bench`` (one loaded model) and the run folders below ``results``.

    ``security`` holds the token and the host names allowed (default: a fresh random token, loopback names);
    ``app.state.security`` keeps it.
    """
    security = security or Security.launch()
    api = Api(bench, [Path(r) for r in results])

    @asynccontextmanager
    async def lifespan(app):
        yield
        api.jobs.stop()

    routes = [Route("/", index), Route("/static/{name}", static), Route("/api/health", health),
              Route("/api/model", model), Route("/api/tasks", tasks), Route("/api/runs", runs),
              Route("/api/view", run_view), Route("/api/run", run_entry), Route("/api/file", run_file),
              Route("/api/features", features), Route("/api/feature", feature),
              Route("/api/jobs", jobs, methods=["GET"]),
              Route("/api/jobs", submit, methods=["POST"]), Route("/api/jobs/{job}", job_detail, methods=["GET"]),
              Route("/api/jobs/{job}", cancel, methods=["DELETE"]), Route("/api/jobs/{job}/events", events)]
    handlers = {HTTPException: http_error, NotFound: not_found, LmscopeError: user_error, Exception: server_error}
    middleware = [Middleware(Guard, security=security), Middleware(BodyLimit)]  # the first is outermost
    app = Starlette(routes=routes, exception_handlers=handlers, lifespan=lifespan, middleware=middleware)
    app.state.api, app.state.security = api, security
    return app


class Background:
    """A workbench served from a thread of this process (notebooks, tests, benchmarks); ``stop()`` ends it.

    ``url`` is the server's address, ``login_url`` the one to open in a browser (it carries the token), and
    ``headers`` what a script sends with each API call (``Authorization: Bearer TOKEN``).
    """

    def __init__(self, bench: Workbench, results: list[str | Path], host: str = "127.0.0.1", port: int = 0,
                 token: str | None = None, no_token: bool = False, allow_hosts: tuple[str, ...] = ()):
        port = port or free_port(host)
        self.security = Security.launch(host, port, token, no_token, allow_hosts)
        self.token = self.security.token
        self.url = f"http://{host}:{port}"
        self.login_url = self.security.urls()[-1]
        self.headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        self.app = create_app(bench, results, self.security)
        self.server = Threaded(self.app, host, port)

    def stop(self) -> None:
        """Stop serving and wait for the server thread."""
        self.server.stop()
