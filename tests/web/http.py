"""A small HTTP client for the served workbench in tests: every call carries the token unless told not to."""

from __future__ import annotations

import http.client
import json
from urllib.parse import urlsplit


class Http:
    """Requests to one served workbench (``Background``): ``call`` gives (status, headers, body)."""

    def __init__(self, url: str, token: str | None):
        parts = urlsplit(url)
        self.host, self.port, self.token = parts.hostname, parts.port, token

    def call(self, method: str, path: str, body: bytes | str | dict | None = None, headers: dict | None = None,
             auth: bool = True, timeout: float = 60) -> tuple[int, dict, bytes]:
        """One request; ``body`` as a dict is sent as JSON (Content-Type: application/json)."""
        sent = dict(headers or {})
        if isinstance(body, dict):
            body = json.dumps(body)
            sent.setdefault("Content-Type", "application/json")
        if auth and self.token:
            sent.setdefault("Authorization", f"Bearer {self.token}")
        conn = http.client.HTTPConnection(self.host, self.port, timeout=timeout)
        try:
            conn.request(method, path, body=body, headers=sent)
            response = conn.getresponse()
            return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
        finally:
            conn.close()

    def get(self, path: str, **kw):
        """GET -> (status, JSON body)."""
        status, _, body = self.call("GET", path, **kw)
        return status, json.loads(body)

    def post(self, path: str, body: dict, **kw):
        """POST JSON -> (status, JSON body)."""
        status, _, answer = self.call("POST", path, body, **kw)
        return status, json.loads(answer)

    def wait(self, job: str, timeout: float = 300) -> dict:
        """Read a job's event stream until its final event."""
        conn = http.client.HTTPConnection(self.host, self.port, timeout=timeout)
        try:
            conn.request("GET", f"/api/jobs/{job}/events", headers={"Authorization": f"Bearer {self.token}"})
            response = conn.getresponse()
            assert response.status == 200, response.read()
            for line in response:
                if line.startswith(b"data: "):
                    event = json.loads(line[6:])
                    if event["type"] in ("done", "failed", "cancelled"):
                        return event
        finally:
            conn.close()
        raise AssertionError("the event stream ended without a final event")
