"""Commands about models: ``models`` (the registry and the store) and ``info`` (one model's layout)."""

from __future__ import annotations

import json

from lmscope import store
from lmscope.cli.registry import arg, command, load_model
from lmscope.model.loading import list_models


@command("models")
def models(args) -> int:
    """Print the registry and the store's location."""
    print(f"cache: {store.root()}")
    for row in list_models():
        state = f"cached at {row['path']}" if row["cached"] else "not cached yet (converted on first use)"
        print(f"{row['name']:<14} {row['description']}\n{'':<14} original: {row['hub_id']}; {state}")
    print("Also accepted: a local Hugging Face folder, a local .gguf file, or a hub id (when online).")
    return 0


@command("info",
         arg("name", nargs="?", help="model (default: --model)"))
def info(args) -> int:
    """Print what lmscope knows about a model."""
    print(json.dumps(load_model(args, args.name).describe(), indent=2))
    return 0
