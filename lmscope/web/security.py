"""Who may drive the workbench: a token per launch, a Host allow-list, same-origin JSON writes, strict headers.

Modelled on Jupyter Server. A web page the user happens to have open must not be able to run jobs on the served
model, read its run folders or edit its weights:

- **token**: every ``/api/`` route needs an ``Authorization: Bearer TOKEN`` header or the session cookie. The
  printed URL ``/?token=TOKEN`` trades the token for an HttpOnly, SameSite=Strict cookie and redirects to the page
  (the token leaves the address bar). ``--no-token`` is allowed on loopback only.
- **Host allow-list** (DNS rebinding): a request whose Host is not a local name, the bound address, an IP literal
  while bound off loopback (a rebinding attack needs a *name*), or a name given with ``--allow-host`` gets a 403.
- **writes** (anything but GET / HEAD) need ``Content-Type: application/json`` (no HTML form and no no-cors fetch
  can send it) and, when the browser sends an Origin or ``Sec-Fetch-Site``, the server's own origin.
- **headers** on every response: a Content-Security-Policy limited to 'self' with ``frame-ancestors 'none'``,
  ``X-Content-Type-Options: nosniff``, ``Referrer-Policy: no-referrer``, ``X-Frame-Options: DENY``.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
import logging
import secrets
import socket
from dataclasses import dataclass, field
from http.cookies import SimpleCookie
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from lmscope.errors import InputError

log = logging.getLogger(__name__)

STATIC = Path(__file__).parent / "static"
LOCAL_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})
WILDCARDS = frozenset({"0.0.0.0", "::", ""})
MIN_TOKEN = 16  # characters of a --token
COOKIE_DAYS = 30
READS = frozenset({"GET", "HEAD"})
PAGE_CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
            "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'")
# a run folder's HTML report: shown, never run (no script, no form; an opaque page cannot call the API)
FILE_CSP = ("sandbox allow-popups allow-popups-to-escape-sandbox; default-src 'none'; img-src 'self' data:; "
            "style-src 'unsafe-inline'; frame-ancestors 'none'")
HEADERS = {"x-content-type-options": "nosniff", "referrer-policy": "no-referrer", "x-frame-options": "DENY",
           "cross-origin-resource-policy": "same-origin", "cache-control": "no-store"}


def is_loopback(host: str) -> bool:
    """Whether ``host`` (a name or an address) is this machine only."""
    if host in ("localhost",):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        try:
            return ipaddress.ip_address(socket.gethostbyname(host)).is_loopback
        except (OSError, ValueError):
            return False


def _ip(name: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(name)
    except ValueError:
        return None


def split_host(header: str) -> str:
    """The host name of a Host header, lower case, without port or IPv6 brackets ('' when malformed)."""
    header = header.strip().lower()
    if header.startswith("["):
        end = header.find("]")
        return header[1:end] if end > 0 else ""
    name = header.rsplit(":", 1)[0] if header.count(":") == 1 else header
    return name.rstrip(".")


@dataclass(frozen=True)
class Security:
    """The workbench's access rules for one launch (see the module docstring)."""

    token: str | None  # None: no token (loopback only)
    host: str = "127.0.0.1"  # the address bound
    port: int | None = None
    allow_hosts: frozenset[str] = field(default_factory=frozenset)

    @classmethod
    def launch(cls, host: str = "127.0.0.1", port: int | None = None, token: str | None = None,
               no_token: bool = False, allow_hosts: tuple[str, ...] | list[str] = ()) -> Security:
        """The rules of one launch: a fresh random token unless one is given; off loopback a token is required."""
        if no_token and token:
            raise InputError("--token and --no-token contradict each other; give one")
        if no_token and not is_loopback(host):
            raise InputError(f"--no-token is refused off loopback (--host {host}): anyone who can reach the port "
                             "could run jobs and edit the model; keep the token")
        if token is not None and (len(token) < MIN_TOKEN or not token.isprintable() or " " in token):
            raise InputError(f"--token must be at least {MIN_TOKEN} printable characters without spaces")
        names = frozenset(split_host(h) for h in allow_hosts)
        if "" in names:
            raise InputError("--allow-host takes host names, e.g. --allow-host mybox.local")
        chosen = None if no_token else token or secrets.token_urlsafe(32)
        return cls(chosen, host, port, names)

    # who is asking ---------------------------------------------------------------------------------------------

    def host_allowed(self, header: str) -> bool:
        """Whether a request's Host header names this server (and not a rebinding attacker's domain)."""
        name = split_host(header)
        if not name:
            return False
        if name in LOCAL_NAMES or name in self.allow_hosts or name == split_host(self.host):
            return True
        ip = _ip(name)
        if ip is not None and ip.is_loopback:
            return True
        # off loopback the token guards the API; an IP literal cannot be a rebound name
        return ip is not None and not is_loopback(self.host)

    @property
    def cookie_name(self) -> str:
        """Cookies are shared by every port of a host: one name per port keeps two workbenches apart."""
        return f"lmscope-{self.port}" if self.port else "lmscope"

    @property
    def cookie_value(self) -> str:
        """The session cookie: derived from the token (a fixed --token keeps bookmarks working across restarts)."""
        return hmac.new((self.token or "").encode(), b"lmscope-session", hashlib.sha256).hexdigest()

    def token_ok(self, given: str | None) -> bool:
        """Whether ``given`` is this launch's token (constant time)."""
        return self.token is None or (given is not None and hmac.compare_digest(given.encode(), self.token.encode()))

    def authorized(self, headers: dict[bytes, bytes]) -> bool:
        """Whether the request carries the token (Authorization header) or the session cookie."""
        if self.token is None:
            return True
        auth = headers.get(b"authorization", b"").decode("latin-1").strip()
        scheme, _, value = auth.partition(" ")
        if scheme.lower() in ("bearer", "token") and self.token_ok(value.strip()):
            return True
        cookie = SimpleCookie()
        try:
            cookie.load(headers.get(b"cookie", b"").decode("latin-1"))
        except Exception:  # noqa: BLE001  (a malformed cookie header is simply no cookie)
            return False
        morsel = cookie.get(self.cookie_name)
        return morsel is not None and hmac.compare_digest(morsel.value.encode(), self.cookie_value.encode())

    def write_refusal(self, headers: dict[bytes, bytes], scheme: str) -> str | None:
        """Why a POST / DELETE is refused (None: allowed): JSON only, and only from this server's own pages."""
        media = headers.get(b"content-type", b"").decode("latin-1").split(";")[0].strip().lower()
        if media != "application/json":
            return "writes need Content-Type: application/json"
        fetch_site = headers.get(b"sec-fetch-site", b"").decode("latin-1").lower()
        if fetch_site not in ("", "same-origin", "none"):
            return f"cross-origin request blocked ({fetch_site})"
        origin = headers.get(b"origin")
        if origin is not None:
            own = f"{scheme}://{headers.get(b'host', b'').decode('latin-1').lower()}"
            if origin.decode("latin-1").lower().rstrip("/") != own:
                return f"cross-origin request blocked (origin {origin.decode('latin-1')!r} is not {own!r})"
        return None

    # what to print ---------------------------------------------------------------------------------------------

    def urls(self) -> list[str]:
        """Addresses a person can open (with the token): a wildcard bind prints this machine's name and loopback."""
        port = f":{self.port}" if self.port else ""
        query = f"/?token={self.token}" if self.token else "/"
        if self.host in WILDCARDS:
            hosts = [socket.gethostname(), "127.0.0.1"]
        else:
            hosts = [f"[{self.host}]" if ":" in self.host else self.host]
        return [f"http://{h}{port}{query}" for h in hosts]


# the middleware ------------------------------------------------------------------------------------------------


def _headers(scope) -> dict[bytes, bytes]:
    return {k.lower(): v for k, v in scope.get("headers", [])}


class Guard:
    """ASGI middleware applying :class:`Security` to every request, and its headers to every response."""

    def __init__(self, app, security: Security):
        self.app, self.security = app, security

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        send = self._with_headers(send)
        headers, path, method = _headers(scope), scope.get("path", ""), scope.get("method", "GET")
        if not self.security.host_allowed(headers.get(b"host", b"").decode("latin-1")):
            log.warning("refused a request for host %r (add it with --allow-host if it is yours)",
                        headers.get(b"host", b"").decode("latin-1"))
            return await _json(send, 403, "this host name is not allowed (lmscope serve --allow-host NAME)")
        if method not in READS:
            reason = self.security.write_refusal(headers, scope.get("scheme", "http"))
            if reason:
                return await _json(send, 403, reason)
        if path == "/":
            return await self._page(scope, receive, send, headers)
        if path.startswith("/api/") and not self.security.authorized(headers):
            return await _json(send, 401, "not signed in: open the address with ?token= that lmscope serve printed, "
                                          "or send Authorization: Bearer TOKEN")
        return await self.app(scope, receive, send)

    async def _page(self, scope, receive, send, headers) -> None:
        """``/``: trade ``?token=`` for the cookie, show the page when signed in, else the sign-in page."""
        query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
        given = query.get("token", [None])[0]
        if given is not None and self.security.token is not None:
            if not self.security.token_ok(given):
                return await _html(send, 401, _login("That token is not this workbench's."))
            cookie = (f"{self.security.cookie_name}={self.security.cookie_value}; HttpOnly; SameSite=Strict; "
                      f"Path=/; Max-Age={COOKIE_DAYS * 86400}")
            return await _send(send, 303, b"", [(b"location", b"/"), (b"set-cookie", cookie.encode())])
        if not self.security.authorized(headers):
            return await _html(send, 401, _login())
        return await self.app(scope, receive, send)

    def _with_headers(self, send):
        async def wrapped(message):
            if message["type"] == "http.response.start":
                present = {k.lower() for k, _ in message.get("headers", [])}
                extra = [(k.encode(), v.encode()) for k, v in HEADERS.items() if k.encode() not in present]
                if b"content-security-policy" not in present:
                    extra.append((b"content-security-policy", PAGE_CSP.encode()))
                message = {**message, "headers": [*message.get("headers", []), *extra]}
            await send(message)
        return wrapped


def _login(message: str = "") -> bytes:
    page = (STATIC / "login.html").read_text(encoding="utf-8")
    return page.replace("<!--message-->", message).encode()


async def _send(send, status: int, body: bytes, headers: list[tuple[bytes, bytes]]) -> None:
    await send({"type": "http.response.start", "status": status,
                "headers": [*headers, (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


async def _json(send, status: int, error: str) -> None:
    await _send(send, status, json.dumps({"error": error}).encode(), [(b"content-type", b"application/json")])


async def _html(send, status: int, body: bytes) -> None:
    await _send(send, status, body, [(b"content-type", b"text/html; charset=utf-8")])


def origin_of(url: str) -> str:
    """scheme://host[:port] of a URL (for messages and tests)."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"
