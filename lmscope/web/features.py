"""SAE features in the result directories: the pages of ``sae-features`` runs joined with ``autointerp`` runs.

A feature is found by its run and index; its explanation and score come from any autointerp run of the same model
and site (the latest one wins). Search matches the query, case-insensitively, against explanations, each feature's
top token and the tokens its decoder direction raises. Only ``cfg.json`` files are read (no tensors), and what
was read is kept until a run's ``cfg.json`` changes.
"""

from __future__ import annotations

import threading
from pathlib import Path

from lmscope.errors import ArtifactError
from lmscope.io import CFG_NAME, read_json
from lmscope.web.runs import NotFound, RunIndex

PAGE_KIND, INTERP_KIND = "FeatureExamples", "AutointerpResult"


class FeatureIndex:
    """Feature pages and explanations below a :class:`RunIndex`."""

    def __init__(self, index: RunIndex):
        self.index = index
        self.lock = threading.Lock()
        self.read: dict[tuple[str, int], dict] = {}  # (cfg path, mtime) -> cfg

    def _cfg(self, result: Path) -> dict:
        path = result / CFG_NAME
        key = (str(path), path.stat().st_mtime_ns)
        with self.lock:
            if key not in self.read:
                try:
                    self.read[key] = read_json(path)
                except ArtifactError:
                    self.read[key] = {}
            return self.read[key]

    def _runs(self, kind: str) -> list[tuple[str, dict]]:
        return [(r["id"], self._cfg(self.index.ref(r["id"]).result)) for r in self.index.scan() if r["kind"] == kind]

    def explanations(self) -> dict[tuple[str, str, int], dict]:
        """(model, site, feature) -> {"explanation", "score", "detection", "run"}; the newest run first wins."""
        out: dict[tuple[str, str, int], dict] = {}
        for run_id, cfg in self._runs(INTERP_KIND):
            site = (cfg.get("sites") or {}).get("sae", "")
            for rec in cfg.get("records", []):
                if rec.get("kind") == "sae" and rec.get("explanation"):
                    out.setdefault((cfg.get("model", ""), site, int(rec["unit"])), {
                        "explanation": rec["explanation"], "score": rec.get("score"),
                        "detection": rec.get("detection"), "run": run_id})
        return out

    def search(self, query: str, limit: int = 50) -> list[dict]:
        """Features whose explanation, top token or raised tokens contain ``query`` (all features when empty)."""
        q, hits = query.strip().lower(), []
        notes = self.explanations()
        for run_id, cfg in self._runs(PAGE_KIND):
            model, site = cfg.get("model", ""), cfg.get("site", "")
            for page in cfg.get("pages", []):
                note = notes.get((model, site, page["feature"]), {})
                raised = [t for t, _ in page.get("logits", {}).get("positive", [])]
                text = " ".join([note.get("explanation", ""), page.get("top_token", ""), *raised]).lower()
                if q in text:
                    hits.append({"run": run_id, "model": model, "site": site, "feature": page["feature"],
                                 "density": page["density"], "max": page["max"], "top_token": page["top_token"],
                                 "raises": raised[:5], **{k: note.get(k) for k in ("explanation", "score")}})
        return hits[:max(1, min(limit, 500))]

    def notes(self, model: str, wanted: list[tuple[str, int]], contexts: int = 3) -> dict[tuple[str, int], dict]:
        """(site, feature) -> explanation and the top ``contexts`` contexts (text, the activating token marked).

        From any feature-pages run of ``model`` at that site (the newest first); a run of another dictionary at the
        same site would be read too, so each note names its run.
        """
        wanted_set, out = set(wanted), {}
        for run_id, cfg in self._runs(PAGE_KIND):
            if cfg.get("model") != model:
                continue
            for page in cfg.get("pages", []):
                key = (cfg.get("site", ""), page["feature"])
                if key in wanted_set and key not in out:
                    out[key] = {"run": run_id, "contexts": [_marked(ex) for ex in page.get("top", [])[:contexts]]}
        explained = self.explanations() if out else {}  # the autointerp runs are read only when a page matched
        for key, note in out.items():
            note["explanation"] = explained.get((model, *key), {}).get("explanation")
        return out

    def page(self, run_id: str, feature: int) -> dict:
        """One feature's page data (contexts, histogram, logit effects) with its explanation when there is one."""
        ref = self.index.ref(run_id)
        cfg = self._cfg(ref.result)
        if cfg.get("kind") != PAGE_KIND:
            raise NotFound(f"run {run_id!r} holds no feature pages")
        page = next((p for p in cfg.get("pages", []) if p["feature"] == feature), None)
        if page is None:
            raise NotFound(f"feature {feature} has no page in run {run_id!r}")
        note = self.explanations().get((cfg.get("model", ""), cfg.get("site", ""), feature), {})
        return {"run": run_id, "model": cfg.get("model"), "site": cfg.get("site"), "tokens": cfg.get("tokens"),
                **page, "explanation": note.get("explanation"), "score": note.get("score"),
                "detection": note.get("detection")}


def _marked(example: dict, left: int = 8) -> str:
    """A context as text, at most ``left`` tokens before the activating one, which is put in [[ ]]."""
    i = example.get("max_index", 0)
    tokens = example.get("tokens", [])
    return "".join(tokens[max(0, i - left):i]) + f"[[{tokens[i] if i < len(tokens) else ''}]]" + "".join(tokens[i + 1:])
