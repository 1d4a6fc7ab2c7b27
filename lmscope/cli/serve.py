"""The ``serve`` command: the local web workbench (``lmscope.web``) over one model and the run folders on disk."""

from __future__ import annotations

import ipaddress
import logging
import socket
import sys
from pathlib import Path

from lmscope.cli.registry import arg, command, load_model
from lmscope.errors import InputError
from lmscope.runs import prepare_out

log = logging.getLogger(__name__)


def _loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(socket.gethostbyname(host)).is_loopback
    except (OSError, ValueError):
        return False


def _check_port(host: str, port: int) -> None:
    """Fail with one line when the address cannot be bound (in use, not ours), before the model loads."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as err:
            raise InputError(f"cannot listen on {host}:{port}: {err.strerror or err}; choose another --port") from err


@command("serve", "local web workbench: browse runs, run lens / trace / lesion / neurons / ROME edits in the browser",
         arg("--results", nargs="+", type=Path, default=[Path("out")],
             help="folders whose run folders are listed (default: out)"),
         arg("--runs-out", type=Path, default=Path("out/serve"), help="where jobs started from the page write their "
                                                                      "run folders (default: out/serve)"),
         arg("--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1, this machine only)"),
         arg("--port", type=int, default=8000, help="port (default: 8000)"))
def serve(args) -> int:
    """Serve the workbench until Ctrl-C: one model in memory, one job at a time, runs saved as normal run folders."""
    import uvicorn  # only this command needs the server

    from lmscope.web import create_app
    from lmscope.web.tasks import Workbench

    if not 0 < args.port < 65536:
        raise InputError(f"--port must be in 1..65535, not {args.port}")
    _check_port(args.host, args.port)
    out = prepare_out(args.runs_out)
    lm = load_model(args)
    app = create_app(Workbench(lm, out), args.results)
    if not _loopback(args.host):
        print(f"WARNING: the workbench listens on {args.host}, reachable from other machines; it runs any prompt "
              "on your model and serves your result folders to anyone who can connect", file=sys.stderr)
    print(f"lmscope workbench: http://{args.host}:{args.port}/  (model {lm.name}; runs from "
          f"{', '.join(str(r) for r in args.results)}; new runs in {out}; Ctrl-C stops)", flush=True)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
    return 0
