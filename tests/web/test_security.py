"""The workbench as an attacker on this machine would try it (loopback only): cross-site writes, DNS rebinding, no
token, slow and endless requests, odd file names. Each finding of the security review is reproduced here over real
HTTP against a served workbench (tiny model) and must be refused; the browser's view of the same attacks is in
test_browser_attacks.py."""

from __future__ import annotations

import os
import socket
import time

import pytest

from lmscope.cli import main
from lmscope.errors import InputError
from lmscope.web import Background
from lmscope.web import server as web_server
from lmscope.web.app import BodyLimit
from lmscope.web.security import FILE_CSP, Security
from lmscope.web.server import BoundedH11
from lmscope.web.tasks import Workbench
from tests.web.http import Http

EDIT = {"task": "edit", "params": {"prompt": "{} is located in the city of", "subject": "The Eiffel Tower",
                                   "target": " London", "v_steps": 1, "layer": 1, "mom2_adjustment": False}}
LENS = {"task": "lens", "params": {"prompt": "The Eiffel Tower is in"}}


def no_jobs(server) -> bool:
    status, jobs = server.http.get("/api/jobs")
    return status == 200 and jobs == []


# 1. cross-site requests ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("content_type, body", [
    ("text/plain", '{"task": "edit", "params": {}}'),
    ("application/x-www-form-urlencoded", "task=undo"),
    ("multipart/form-data; boundary=x", '--x\r\nContent-Disposition: form-data; name="task"\r\n\r\nundo\r\n--x--'),
    (None, '{"task": "undo"}'),
])
def test_writes_that_are_not_json_are_refused_even_with_the_token(served, content_type, body):
    headers = {"Origin": "http://evil.example"} | ({"Content-Type": content_type} if content_type else {})
    status, _, answer = served.http.call("POST", "/api/jobs", body, headers)
    assert status == 403 and b"application/json" in answer
    assert no_jobs(served)


@pytest.mark.parametrize("headers", [{"Origin": "http://evil.example"}, {"Origin": "null"},
                                     {"Sec-Fetch-Site": "cross-site"}, {"Sec-Fetch-Site": "same-site"}])
def test_json_writes_from_another_origin_are_refused(served, headers):
    status, _, answer = served.http.call("POST", "/api/jobs", EDIT, headers)
    assert status == 403 and b"cross-origin" in answer
    assert no_jobs(served)
    status, _, _ = served.http.call("DELETE", "/api/jobs/j1", None, {"Content-Type": "application/json", **headers})
    assert status == 403


def test_the_servers_own_origin_may_write(served):
    origin = {"Origin": served.url, "Sec-Fetch-Site": "same-origin"}
    status, job = served.http.post("/api/jobs", LENS, headers=origin)
    assert status == 202 and served.http.wait(job["id"])["type"] == "done"


# 2. DNS rebinding ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("method, path", [("GET", "/"), ("GET", "/api/runs"), ("GET", "/api/file?run=0/x&name=a.json"),
                                          ("GET", "/api/view?run=0/x"), ("POST", "/api/jobs"),
                                          ("GET", "/static/app.js")])
def test_a_rebound_host_name_is_refused(served, method, path):
    port = served.url.rsplit(":", 1)[1]
    body = EDIT if method == "POST" else None
    for host in (f"evil.example:{port}", "evil.example", f"localhost.evil.example:{port}", f"127.0.0.1.nip.io:{port}"):
        status, _, answer = served.http.call(method, path, body, {"Host": host})
        assert status == 403 and b"host" in answer, (host, path)
    assert no_jobs(served)


def test_local_names_and_allowed_hosts_are_served(lm, tmp_path):
    server = Background(Workbench(lm, tmp_path / "serve"), [tmp_path], allow_hosts=("mybox.local",))
    try:
        http, port = Http(server.url, server.token), server.url.rsplit(":", 1)[1]
        for host in (f"127.0.0.1:{port}", f"localhost:{port}", f"[::1]:{port}", f"mybox.local:{port}", "LOCALHOST"):
            assert http.call("GET", "/api/health", headers={"Host": host})[0] == 200, host
        assert http.call("GET", "/api/health", headers={"Host": f"other.local:{port}"})[0] == 403
    finally:
        server.stop()


def test_security_headers_on_every_response(served):
    for method, path, auth in [("GET", "/", True), ("GET", "/", False), ("GET", "/api/health", True),
                               ("GET", "/api/nothing", True), ("GET", "/api/runs", False),
                               ("GET", "/static/app.js", False), ("POST", "/api/jobs", True)]:
        _, headers, _ = served.http.call(method, path, "x" if method == "POST" else None, auth=auth)
        assert "frame-ancestors 'none'" in headers["content-security-policy"], path
        assert "default-src 'self'" in headers["content-security-policy"] or path != "/"
        assert headers["x-content-type-options"] == "nosniff" and headers["referrer-policy"] == "no-referrer"
        assert headers["x-frame-options"] == "DENY"


# 3. authentication ---------------------------------------------------------------------------------------------


def test_the_api_needs_the_token_or_its_cookie(served):
    for path in ("/api/health", "/api/runs", "/api/model", "/api/jobs", "/api/tasks"):
        status, _, body = served.http.call("GET", path, auth=False)
        assert status == 401 and b"token" in body, path
        assert served.http.call("GET", path, headers={"Authorization": "Bearer wrong-token-000000"},
                                auth=False)[0] == 401
    assert served.http.call("POST", "/api/jobs", LENS, auth=False)[0] == 401 and no_jobs(served)
    status, _, page = served.http.call("GET", "/", auth=False)
    assert status == 401 and b"token" in page and b"app.js" not in page  # the sign-in page, not the workbench
    assert served.http.call("GET", "/?token=wrong-token-000000", auth=False)[0] == 401
    status, headers, _ = served.http.call("GET", f"/?token={served.token}", auth=False)
    assert status == 303 and headers["location"] == "/"
    cookie = headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and served.token not in cookie
    jar = {"Cookie": cookie.split(";")[0]}
    assert served.http.call("GET", "/api/runs", headers=jar, auth=False)[0] == 200
    status, _, page = served.http.call("GET", "/", headers=jar, auth=False)
    assert status == 200 and b"app.js" in page
    assert served.http.call("GET", "/api/runs", headers={"Cookie": "lmscope=forged"}, auth=False)[0] == 401
    assert served.http.call("GET", "/static/app.js", auth=False)[0] == 200  # the sign-in page needs the style


def test_launch_rules():
    assert Security.launch().token and Security.launch().token != Security.launch().token  # fresh per launch
    assert Security.launch(no_token=True).token is None
    with pytest.raises(InputError, match="off loopback"):
        Security.launch("0.0.0.0", 8000, no_token=True)
    with pytest.raises(InputError, match="at least"):
        Security.launch(token="short")
    wild = Security.launch("0.0.0.0", 8123)
    assert any(socket.gethostname() in u for u in wild.urls()) and all(u.endswith(f"?token={wild.token}")
                                                                       for u in wild.urls())
    assert not any("0.0.0.0" in u for u in wild.urls())
    assert wild.host_allowed("192.168.1.20:8123") and not wild.host_allowed("evil.example:8123")
    assert not Security.launch().host_allowed("192.168.1.20:8123")  # a loopback bind serves local names only


def test_no_token_is_loopback_only_and_still_checks_host_and_writes(lm, tmp_path, capsys):
    assert main(["serve", "--host", "0.0.0.0", "--no-token"]) == 2
    assert "off loopback" in capsys.readouterr().err
    server = Background(Workbench(lm, tmp_path / "serve"), [tmp_path], no_token=True)
    try:
        http = Http(server.url, None)
        assert http.call("GET", "/api/health")[0] == 200
        assert http.call("POST", "/api/jobs", '{"task": "undo"}', {"Content-Type": "text/plain"})[0] == 403
        assert http.call("GET", "/api/runs", headers={"Host": "evil.example"})[0] == 403
    finally:
        server.stop()


# 4 / 5. bounds on requests: slow, endless, many -----------------------------------------------------------------


def _connect(url: str) -> socket.socket:
    host, port = url.removeprefix("http://").split(":")
    return socket.create_connection((host, int(port)), timeout=30)


def _closed_within(sock: socket.socket, seconds: float) -> bool:
    sock.settimeout(seconds)
    try:
        while True:
            data = sock.recv(4096)
            if not data:
                return True
            if b" 408 " in data:  # a timed-out body is answered, then closed
                continue
    except TimeoutError:
        return False
    except ConnectionResetError:
        return True


def test_half_sent_headers_and_bodies_are_dropped(served, monkeypatch):
    monkeypatch.setattr(BoundedH11, "header_timeout", 1.0)
    monkeypatch.setattr(BodyLimit, "timeout", 1.0)
    slow_headers = _connect(served.url)
    slow_headers.sendall(b"GET /api/health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
    silent = _connect(served.url)
    slow_body = _connect(served.url)
    slow_body.sendall(b"POST /api/jobs HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                      b"Authorization: Bearer " + served.token.encode() + b"\r\nContent-Length: 100\r\n\r\n{\"ta")
    start = time.monotonic()
    assert _closed_within(slow_headers, 5) and _closed_within(silent, 5)
    assert _closed_within(slow_body, 5) and time.monotonic() - start < 6
    assert no_jobs(served)


def test_a_flood_of_idle_connections_never_locks_out_a_request(lm, tmp_path, monkeypatch):
    monkeypatch.setattr(web_server, "MAX_CONNECTIONS", 20)
    server = Background(Workbench(lm, tmp_path / "serve"), [tmp_path])
    fds = len(os.listdir("/proc/self/fd"))
    flood = []
    try:
        for _ in range(120):
            s = _connect(server.url)
            s.sendall(b"GET / HTTP/1.1\r\n")
            flood.append(s)
        time.sleep(0.5)
        assert Http(server.url, server.token).get("/api/health")[0] == 200  # the oldest idle ones made room
        server_side = len(os.listdir("/proc/self/fd")) - fds - len(flood)  # our own sockets are in this process too
        assert server_side <= 20 + 5, server_side
    finally:
        for s in flood:
            s.close()
        server.stop()


def test_the_cap_leaves_room_under_a_low_file_limit(monkeypatch):
    monkeypatch.setattr(web_server.resource, "getrlimit", lambda _: (256, 256))
    assert web_server.connection_cap() == 256 - web_server.BACKLOG - web_server.RESERVED_FILES  # 128
    monkeypatch.setattr(web_server.resource, "getrlimit", lambda _: (200, 200))
    assert web_server.connection_cap() == 72


# 6. file names and types ---------------------------------------------------------------------------------------


def test_odd_file_names_are_400_and_only_page_types_are_served(served, tmp_path):
    status, job = served.http.post("/api/jobs", LENS)
    run = served.http.wait(job["id"])["run"]
    status, _, body = served.http.call("GET", f"/api/file?run={run}&name=lens.json%00.png")
    assert status == 400 and b"control characters" in body
    assert served.http.call("GET", f"/api/view?run={run}%00")[0] == 400
    status, _, body = served.http.call("GET", f"/api/file?run={run}&name=result/tensors.safetensors")
    assert status == 404 and b"only" in body
    assert served.http.call("GET", f"/api/file?run={run}&name=result/cfg.json")[0] == 200
    status, headers, _ = served.http.call("GET", f"/api/file?run={run}&name=report.html")
    assert status == 200 and headers["content-security-policy"] == FILE_CSP  # shown, never run
