"""Explainer and simulator backends behind one interface: a local causal LM, or an OpenAI-compatible endpoint.

``explain(prompt)`` returns the explanation text. ``simulate(explanation, tokens)`` returns the predicted activation
of each token (0 .. max_value), or None when the answer cannot be read. ``detect(explanation, text)`` returns the
probability that the unit fires somewhere in ``text``, or None.

Local: explanations are greedy continuations; the simulator is Bills et al.'s "all at once" method: one forward pass
over the prompt with every token followed by a tab and the placeholder "unknown", reading at each tab the
probabilities of the value tokens ("0" .. "10" where each is one token, else "0" .. "9") and returning their
expected value; detection compares P(" Yes") and P(" No").

HTTP: chat completions; responses are cached on disk by a hash of the request (a rerun costs nothing, a killed run
resumes), requests are retried with exponential backoff, a budget caps the requests a run sends, and an endpoint
that cannot be reached raises :class:`EndpointError` after the retries.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import torch

from lmscope.errors import EndpointError
from lmscope.io import read_json, write_json
from lmscope.model.generate import greedy
from lmscope.model.lm import LM

log = logging.getLogger(__name__)
PROMPTS = Path(__file__).resolve().parent / "prompts"


def load_prompt(name: str, folder: str | Path = "") -> str:
    """A prompt template: from ``folder`` when it has the file, else the packaged one."""
    custom = Path(folder) / name if folder else None
    return (custom if custom and custom.is_file() else PROMPTS / name).read_text(encoding="utf-8")


def show(token: str) -> str:
    """A token as one line of a prompt (newlines and tabs escaped)."""
    return token.replace("\n", "\\n").replace("\t", "\\t")


class LocalBackend:
    """Explainer / simulator from a causal LM lmscope has loaded."""

    def __init__(self, lm: LM, prompts: str | Path = "", explanation_tokens: int = 40):
        self.lm, self.prompts, self.explanation_tokens = lm, prompts, explanation_tokens
        tok = lm.tokenizer
        ids = [tok(str(v), add_special_tokens=False)["input_ids"] for v in range(11)]
        single = [i[0] for i in ids if len(i) == 1]
        self.max_value = 10 if len(single) == 11 else 9
        self.value_ids = torch.tensor([i[0] for i in ids[: self.max_value + 1]])
        self.tab = tok("\t", add_special_tokens=False)["input_ids"]
        self.unknown = tok("unknown", add_special_tokens=False)["input_ids"]
        self.newline = tok("\n", add_special_tokens=False)["input_ids"]
        self.yes_no = [tok(w, add_special_tokens=False)["input_ids"][0] for w in (" Yes", " No")]

    def explain(self, prompt: str) -> str:
        """The greedy continuation's first line."""
        text = greedy(self.lm, prompt, self.explanation_tokens)
        return text.strip().split("\n")[0].strip()

    @torch.no_grad()
    def simulate(self, explanation: str, tokens: list[str]) -> list[float] | None:
        """Expected value of each token's activation, read in one forward pass."""
        head = load_prompt("simulator.txt", self.prompts).format(explanation=explanation, max_value=self.max_value)
        tok = self.lm.tokenizer
        ids = list(tok(head)["input_ids"])
        where = []
        for t in tokens:
            ids += tok(show(t), add_special_tokens=False)["input_ids"] + self.tab
            where.append(len(ids) - 1)  # the logits here predict the value after the tab
            ids += self.unknown + self.newline
        logits = self.lm(torch.tensor([ids]))[0, where].float()  # (tokens, vocab)
        probs = torch.softmax(logits[:, self.value_ids.to(logits.device)], -1)  # over the value tokens only
        values = torch.arange(self.max_value + 1, device=probs.device, dtype=probs.dtype)
        return (probs @ values).tolist()

    @torch.no_grad()
    def detect(self, explanation: str, text: str) -> float | None:
        """P(" Yes") / (P(" Yes") + P(" No")) after the detection prompt."""
        prompt = load_prompt("detector.txt", self.prompts).format(explanation=explanation, text=text)
        last = self.lm(prompt)[0, -1].float()
        return float(torch.softmax(last[self.yes_no], -1)[0])


class HttpBackend:
    """An OpenAI-compatible chat endpoint, with an on-disk response cache, retries, a budget and a timeout."""

    max_value = 10

    def __init__(self, base_url: str, model: str, cache_dir: str | Path, api_key_env: str = "OPENAI_API_KEY",
                 timeout: float = 60.0, retries: int = 4, budget: int = 2000, prompts: str | Path = "",
                 explanation_tokens: int = 40, backoff: float = 1.0):
        self.url = base_url.rstrip("/") + "/chat/completions"
        self.model, self.key = model, os.environ.get(api_key_env, "")
        self.cache = Path(cache_dir)
        self.cache.mkdir(parents=True, exist_ok=True)
        self.timeout, self.retries, self.budget, self.backoff = timeout, retries, budget, backoff
        self.prompts, self.explanation_tokens = prompts, explanation_tokens
        self.sent = 0  # requests sent by this run (cache hits excluded)
        self.malformed = 0
        self.lock = threading.Lock()  # requests may run in parallel threads

    def _post(self, messages: list[dict], max_tokens: int) -> str:
        request = {"model": self.model, "messages": messages, "max_tokens": max_tokens, "temperature": 0}
        key = hashlib.sha256(json.dumps(request, sort_keys=True).encode()).hexdigest()
        path = self.cache / f"{key}.json"
        if path.is_file():
            return read_json(path)["content"]
        with self.lock:
            spent = self.sent >= self.budget
        if spent:
            raise EndpointError(f"the request budget of this run ({self.budget}) is spent; finished units are "
                                f"saved and answers cached: rerun (with a larger --budget) to go on")
        content = self._send(request)
        write_json(path, {"request": request, "content": content})
        return content

    def _send(self, request: dict) -> str:
        body = json.dumps(request).encode()
        headers = {"Content-Type": "application/json", **({"Authorization": f"Bearer {self.key}"} if self.key else {})}
        error = None
        for attempt in range(self.retries + 1):
            if attempt:
                time.sleep(self.backoff * 2 ** (attempt - 1))
            with self.lock:
                self.sent += 1
            try:
                req = urllib.request.Request(self.url, data=body, headers=headers, method="POST")
                with urllib.request.urlopen(req, timeout=self.timeout) as response:
                    return json.loads(response.read())["choices"][0]["message"]["content"]
            except urllib.error.HTTPError as err:
                error = f"HTTP {err.code}"
                if err.code not in (408, 409, 429) and err.code < 500:
                    break  # a request the endpoint refuses: retrying will not help
            except (urllib.error.URLError, TimeoutError, OSError, KeyError, ValueError) as err:
                error = f"{type(err).__name__}: {getattr(err, 'reason', err)}"
            log.info("%s: attempt %d failed (%s)", self.url, attempt + 1, error)
        raise EndpointError(f"{self.url} failed after {self.retries + 1} tries ({error}); finished units are saved "
                            f"and answers cached: rerun the same command to resume")

    def explain(self, prompt: str) -> str:
        """The answer's first line."""
        answer = self._post([{"role": "user", "content": prompt}], self.explanation_tokens)
        return answer.strip().split("\n")[0].strip()

    def simulate(self, explanation: str, tokens: list[str]) -> list[float] | None:
        """One number per token from "token<TAB>number" lines; None (counted) when they cannot be read."""
        prompt = load_prompt("simulator_chat.txt", self.prompts).format(
            explanation=explanation, max_value=self.max_value, tokens="\n".join(show(t) for t in tokens))
        answer = self._post([{"role": "user", "content": prompt}], 8 * len(tokens) + 16)
        values = [re.search(r"(-?\d+(?:\.\d+)?)\s*$", line) for line in answer.strip().splitlines() if line.strip()]
        if len(values) != len(tokens) or not all(values):
            with self.lock:
                self.malformed += 1
            return None
        return [min(max(float(v.group(1)), 0.0), self.max_value) for v in values]

    def detect(self, explanation: str, text: str) -> float | None:
        """1 for an answer starting with yes, 0 for no, None (counted) otherwise."""
        prompt = load_prompt("detector.txt", self.prompts).format(explanation=explanation, text=text)
        answer = self._post([{"role": "user", "content": prompt}], 3).strip().lower()
        if answer.startswith("yes") or answer.startswith("no"):
            return 1.0 if answer.startswith("yes") else 0.0
        with self.lock:
            self.malformed += 1
        return None
