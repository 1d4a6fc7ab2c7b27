"""The ``serve`` command: the local web workbench (``lmscope.web``) over one model and the run folders on disk."""

from __future__ import annotations

import logging
import os
import socket
import sys
from pathlib import Path

from lmscope.cli.graphs import load_transcoders
from lmscope.cli.registry import arg, command, load_model
from lmscope.errors import InputError
from lmscope.runs import prepare_out

log = logging.getLogger(__name__)

TOKEN_ENV = "LMSCOPE_SERVE_TOKEN"


def _check_port(host: str, port: int) -> None:
    """Fail with one line when the address cannot be bound (in use, not ours), before the model loads."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as err:
            raise InputError(f"cannot listen on {host}:{port}: {err.strerror or err}; choose another --port") from err


@command("serve",
         arg("--results", nargs="+", type=Path, default=[Path("out")],
             help="folders whose run folders are listed (default: out)"),
         arg("--runs-out", type=Path, default=Path("out/serve"), help="where jobs started from the page write their "
                                                                      "run folders (default: out/serve)"),
         arg("--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1, this machine only)"),
         arg("--port", type=int, default=8000, help="port (default: 8000)"),
         arg("--token", default=None, help=f"the secret the page and API calls need (default: ${TOKEN_ENV}, else a "
                                           "new random one per launch, printed in the address to open)"),
         arg("--no-token", action="store_true", help="no token (loopback only; any program of this machine's users "
                                                     "can then drive the workbench)"),
         arg("--allow-host", nargs="+", default=[], metavar="NAME",
             help="more host names the browser may use (localhost, 127.0.0.1, [::1] and --host always are)"),
         arg("--transcoders", type=Path, default=None, metavar="FOLDER",
             help="transcoders (one per layer, as for lmscope graph): the page can then build attribution graphs and "
                  "clamp their features"))
def serve(args) -> int:
    """Serve the workbench until Ctrl-C: one model in memory, one job at a time, runs saved as normal run folders."""
    from lmscope.web import create_app
    from lmscope.web.security import Security, is_loopback
    from lmscope.web.server import run
    from lmscope.web.tasks import Workbench

    if not 0 < args.port < 65536:
        raise InputError(f"--port must be in 1..65535, not {args.port}")
    token = args.token or (None if args.no_token else os.environ.get(TOKEN_ENV) or None)
    security = Security.launch(args.host, args.port, token, args.no_token, args.allow_host)
    _check_port(args.host, args.port)
    out = prepare_out(args.runs_out)
    lm = load_model(args)
    transcoders = load_transcoders(args.transcoders, lm) if args.transcoders is not None else {}
    app = create_app(Workbench(lm, out, transcoders=transcoders, transcoder_source=str(args.transcoders or "")),
                     args.results, security)
    if not is_loopback(args.host):
        print(f"WARNING: the workbench listens on {args.host}, reachable from other machines: anyone with the token "
              "can run prompts on your model and read your result folders; the connection is not encrypted",
              file=sys.stderr)
    if security.token is None:
        print("WARNING: --no-token: any program or user on this machine can drive the workbench", file=sys.stderr)
    print(f"lmscope workbench (model {lm.name}; runs from {', '.join(str(r) for r in args.results)}; new runs in "
          f"{out}; Ctrl-C stops). Open:", flush=True)
    for url in security.urls():
        print(f"    {url}", flush=True)
    run(app, args.host, args.port)
    return 0
