"""Feature pages: examples from one pass, sorted, consistent with the encoder; self-contained HTML; Neuronpedia."""

import json
import re

import torch

from lmscope import Site, load_result
from lmscope.data import iter_texts, token_batches
from lmscope.methods.sae import FeatureConfig, SaeConfig, build_sae, feature_examples
from lmscope.viz.features import write_feature_pages

SITE = Site(1, "resid_post")


def test_feature_pages(lm, corpus, tmp_path):
    sae = build_sae(SaeConfig("topk", d_in=lm.d_model, ratio=2, k=4), seed=0).eval()
    cfg = FeatureConfig(corpus=corpus, split="all", tokens=512, seq_len=16, batch_size=4, n_features=5,
                        top_examples=4, quantile_bins=2, per_bin=2, left=4, right=2, logit_tokens=3)
    result = feature_examples(lm, sae, SITE, cfg)
    n_rows = 512 // 16
    assert len(result.pages) == 5 and n_rows * 14 < result.tokens <= 512 - n_rows and result.density.shape == (64,)
    assert abs(float(result.density.sum()) - 4.0) < 1e-4  # TopK: exactly k features fire per counted token
    assert all(e["max_index"] > 0 for p in result.pages for e in p["top"])  # never a row's first position
    page = result.pages[0]
    maxima = [e["max"] for e in page["top"]]
    assert maxima == sorted(maxima, reverse=True) and abs(maxima[0] - page["max"]) < 1e-4
    example = page["top"][0]
    assert example["values"][example["max_index"]] == example["max"]
    with torch.no_grad():  # the same pass, by hand
        codes = torch.cat([sae.encode(lm.run_with_cache(ids, [SITE])[1][SITE])[:, 1:].flatten(0, 1)
                           for ids in token_batches(lm.tokenizer, iter_texts(corpus), 16, 4, max_tokens=512)])
    assert abs(float(codes[:, page["feature"]].max()) - page["max"]) < 1e-5
    assert len(page["logits"]["positive"]) == 3
    assert sum(page["histogram"]["heights"]) == round(page["density"] * result.tokens)
    back = load_result(result.save(tmp_path / "result"))
    assert back.pages == result.pages and torch.equal(back.density, result.density)

    index = write_feature_pages(result, tmp_path / "pages")
    html = index.read_text()
    assert all(f'href="feature-{p["feature"]}.html"' in html for p in result.pages)
    for p in result.pages:
        page_html = (tmp_path / "pages" / f"feature-{p['feature']}.html").read_text()
        assert not re.search(r'(src|href)="(https?:)?//', page_html)  # no CDN, nothing fetched
        assert "<svg" in page_html and "Top-activating contexts" in page_html
        assert json.loads((tmp_path / "pages" / f"feature-{p['feature']}.json").read_text()) == json.loads(
            json.dumps(p))
    export = json.loads((tmp_path / "pages" / "neuronpedia.json").read_text())
    assert export["layer"] == "resid_post.1" and len(export["features"]) == 5
    first = export["features"][0]
    assert {"feature_index", "frac_nonzero", "pos_str", "neg_str", "activations"} <= set(first)
    assert {"tokens", "values", "bin_min"} <= set(first["activations"][0])


def test_chosen_features_and_a_feature_that_never_fires(lm, corpus):
    sae = build_sae(SaeConfig("relu", d_in=lm.d_model, width=8), seed=0).eval()
    with torch.no_grad():
        sae.b_enc[3] = -1e6  # feature 3 never fires
    cfg = FeatureConfig(corpus=corpus, split="all", tokens=256, seq_len=16, batch_size=4, features=(3, 5))
    result = feature_examples(lm, sae, SITE, cfg)
    assert [p["feature"] for p in result.pages] == [3, 5]
    assert result.pages[0]["top"] == [] and result.pages[0]["density"] == 0.0 and result.pages[1]["top"]
