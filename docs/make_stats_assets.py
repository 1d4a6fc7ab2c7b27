"""Write the second-moment statistics that ship with lmscope (lmscope/methods/rome/assets/) and print their table.

For each bundled model's default edit layer: the statistics of the default RomeConfig (wiki, 100,000 samples ->
all 10,033 texts, 512 tokens) are computed (or read from the store), written as the upper triangle, and the
`ShippedMoment` line to paste into lmscope/methods/rome/shipped.py is printed.

    .venv/bin/python docs/make_stats_assets.py
"""

from __future__ import annotations

import lmscope
from lmscope.methods.rome import shipped
from lmscope.methods.rome.stats import key_fingerprint, second_moment

MODELS = (("smollm2-135m", 4), ("gemma3-270m", 5))


def main() -> None:
    shipped.ASSETS.mkdir(exist_ok=True)
    corpus, samples, max_len = shipped.DEFAULTS
    for name, layer in MODELS:
        lm = lmscope.load(name)
        moment = second_moment(lm, layer, corpus, samples, max_len)
        file = f"mom2-{name}-L{layer}.safetensors"
        digest = shipped.pack(moment.matrix, shipped.ASSETS / file)
        print(f'    ShippedMoment("{name}", {layer}, "{file}",\n                  "{digest}", '
              f'"{key_fingerprint(lm, layer)}", {moment.texts}, {moment.tokens}),')


if __name__ == "__main__":
    main()
