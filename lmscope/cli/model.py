"""Commands about models: ``models`` (the registry and the store) and ``info`` (one model's layout)."""

from __future__ import annotations

import json

from lmscope import store
from lmscope.cli.registry import arg, command
from lmscope.model.loading import list_models, load

VERIFY_HELP = "re-hash every file of the cached conversion (sha256) instead of trusting an unchanged size and mtime, " \
              "and rebuild a corrupt one (every load does so with LMSCOPE_VERIFY=1)"


def _state(row: dict) -> str:
    if row.get("rebuilt"):
        return f"rebuilt at {row['path']}: the cached conversion was corrupt ({row['rebuilt']})"
    if row["cached"]:
        return f"cached at {row['path']}" + ("; verified: the sha256 of every file matches" if row.get("verified")
                                             else "")
    if row["problem"]:
        return f"cached at {row['path']} but unusable ({row['problem']}); rebuilt on first use"
    return "not cached yet (converted on first use)"


@command("models",
         arg("--verify", action="store_true", help=VERIFY_HELP.replace("the cached conversion", "each cached "
                                                                        "conversion")))
def models(args) -> int:
    """Print the registry and the store's location."""
    print(f"cache: {store.root()}")
    for row in list_models(verify=args.verify):
        print(f"{row['name']:<14} {row['description']}\n{'':<14} original: {row['hub_id'] or '-'}; {_state(row)}")
    print("Also accepted: a local Hugging Face folder, a local .gguf file, or a hub id (when online).")
    return 0


@command("info",
         arg("name", nargs="?", help="model (default: --model)"),
         arg("--verify", action="store_true", help=VERIFY_HELP))
def info(args) -> int:
    """Print what lmscope knows about a model."""
    lm = load(args.name or args.model, device=args.device, dtype=args.dtype, verify=args.verify or None)
    print(json.dumps(lm.describe(), indent=2))
    return 0
