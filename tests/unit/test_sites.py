"""Site names: lmscope's and TransformerLens' hook names read by one parser, and written back."""

import pytest

from lmscope.errors import SiteError
from lmscope.model.sites import KINDS, Site


@pytest.mark.parametrize("text, site", [
    ("resid_post.15", Site(15, "resid_post")), ("resid_post:15", Site(15, "resid_post")),
    ("mlp_key.-1", Site(-1, "mlp_key")), ("blocks.15.hook_resid_post", Site(15, "resid_post")),
    ("blocks.0.hook_resid_pre", Site(0, "resid_pre")), ("blocks.3.hook_mlp_out", Site(3, "mlp_out")),
    ("blocks.2.mlp.hook_post", Site(2, "mlp_key")), ("blocks.2.mlp.hook_pre", Site(2, "mlp_pre")),
    ("blocks.1.attn.hook_pattern", Site(1, "attn_pattern")), ("blocks.4.attn.hook_z", Site(4, "attn_heads")),
    ("blocks.7.hook_attn_out", Site(7, "attn_out")), ("hook_embed", Site(0, "embed")), (" embed.0 ", Site(0, "embed")),
])
def test_lmscope_and_transformerlens_names_parse(text, site):
    assert Site.parse(text) == site


def test_names_round_trip():
    for kind in KINDS:
        site = Site(0 if kind == "embed" else 5, kind)
        assert Site.parse(str(site)) == site
        if site.tl_name is not None:
            assert Site.parse(site.tl_name) == site
    assert Site(3, "mlp_value").tl_name is None  # TransformerLens has no hook for W_out's output before a norm


@pytest.mark.parametrize("text, message", [
    ("blocks.3.hook_resid_mid", "has no lmscope site"), ("blocks.3.attn.hook_q", "has no lmscope site"),
    ("blocks.x.hook_resid_post", "expected blocks.LAYER.HOOK"), ("resid_post", "expected kind.layer"),
    ("resid_post.x", "expected kind.layer"), ("", "not a site"), ("magic.3", "unknown site kind"),
    ("embed.2", "only layer 0"),
    ("blocks.3.ln2.hook_normalized", "without its norm's weight.*--site mlp_in.3"),  # not lmscope's mlp_in
    ("blocks.3.hook_mlp_in", "without its norm's weight"),
])
def test_bad_names_are_one_clear_error(text, message):
    with pytest.raises(SiteError, match=message):
        Site.parse(text)
