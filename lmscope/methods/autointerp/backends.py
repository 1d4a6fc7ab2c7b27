"""Explainer and simulator backends behind one interface: a local causal LM, or an OpenAI-compatible endpoint.

Every backend is a :class:`Backend`: ``explain(prompt)`` returns the explanation text; ``simulate_many(explanation,
excerpts)`` the predicted activation of each token of each excerpt (0 .. max_value, or None for an answer that
cannot be read); ``detect_many(explanation, texts)`` the probability that the unit fires somewhere in each text;
``fuzz_many(explanation, texts)`` the probability that the tokens marked << >> in each text are what the explanation
describes (Paulo et al. 2024's fuzzing). The one-item forms (``simulate``, ``detect``, ``fuzz``) ask one.

Local: explanations are greedy continuations, asked through the model's chat template when it has one (an instruct
model); the simulator is Bills et al.'s "all at once" method: one forward pass over the prompt with every token
followed by a tab and the placeholder "unknown", reading at each tab the probabilities of the value tokens ("0" ..
"10" where each is one token, else "0" .. "9") and returning their expected value; detection and fuzzing ask the
model to quote the word (the marked token) that fits the explanation or answer "None", and P(fits) is 1 - P(None) at
the answer's first token (``judge="quote"``), or compare P(Yes) and P(No) (``judge="yes-no"``: a 1.5B instruct
model answers Yes to nearly anything, P(Yes) 0.81-0.88 with a month in the text or not). The prompt's shared part
(instructions and explanation) runs once per explanation and every excerpt reuses its KV cache, the excerpts
batched (:func:`lmscope.model.kv.continuation_logits`); the instructions before the explanation, the same for every
unit, run once per backend (:class:`lmscope.model.kv.SharedHead`).

HTTP: chat completions; responses are cached on disk by a hash of the request (a rerun costs nothing, a killed run
resumes), requests are retried with exponential backoff, a budget caps the requests a run sends, and an endpoint
that cannot be reached raises :class:`EndpointError` after the retries. Only what may pass is retried (throttling,
server errors, timeouts, connection errors); a client error (HTTP 4xx: the request itself is wrong) is reported
after one request, and so is an answer that is not a chat completion. An answer is validated before it is cached,
and a cached answer that is not valid (a corrupt file, one of another request) is discarded and asked again. The
many-item questions run ``concurrency`` requests at once.

Prompt templates (``prompts/``, or a folder overriding some of them) use only their own placeholders
(:data:`PLACEHOLDERS`) and at least the ones they cannot do without; :func:`check_prompts` checks a folder up front.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import logging
import os
import re
import string
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch

from lmscope.errors import ArtifactError, ConfigError, EndpointError
from lmscope.io import read_json, write_json
from lmscope.methods.autointerp.config import check_url
from lmscope.model.generate import greedy
from lmscope.model.kv import SharedHead, continuation_logits
from lmscope.model.lm import LM
from lmscope.model.precision import machine

log = logging.getLogger(__name__)
PROMPTS = Path(__file__).resolve().parent / "prompts"
WORD = re.compile(r"\w+|[^\w\s]")  # a quotable word of a text: a run of letters / digits, or one symbol
MARKED = re.compile(r"<<(.*?)>>", re.S)  # the marked spans of a fuzzing text
MARK = "\x00EXPLANATION\x00"  # where a prompt's explanation goes, to find the fixed instructions before it


#: Each prompt file: the placeholders it is given, and those it cannot do without (at least one of each group).
PLACEHOLDERS = {
    "explainer.txt": (("max_value", "examples", "nonzero"), (("examples", "nonzero"),)),
    "explainer_chat.txt": (("max_value", "examples", "top_tokens"), (("examples",),)),
    "simulator.txt": (("explanation", "max_value"), (("explanation",),)),
    "simulator_chat.txt": (("explanation", "max_value", "tokens"), (("explanation",), ("tokens",))),
    "detector.txt": (("explanation", "text"), (("explanation",), ("text",))),
    "fuzzer.txt": (("explanation", "text"), (("explanation",), ("text",))),
    "detector_quote.txt": (("explanation", "text"), (("explanation",), ("text",))),
    "fuzzer_quote.txt": (("explanation", "text"), (("explanation",), ("text",))),
}
_SAMPLE = {"max_value": 10}  # a trial value of each placeholder (text for the others)


def check_template(name: str, text: str, path: str | Path = "") -> None:
    """The template ``text`` of prompt file ``name`` uses only its placeholders, and those it needs.

    Raises one :class:`ConfigError` naming the file (``path``) and the placeholder; ``{{`` and ``}}`` are literal
    braces.
    """
    given, needed = PLACEHOLDERS[name]
    where = f"prompt file {path or name}"
    hint = f"its placeholders are {', '.join(given)} (write {{{{ and }}}} for a literal brace)"
    try:
        fields = [f for _, f, _, _ in string.Formatter().parse(text) if f is not None]
    except ValueError as err:
        raise ConfigError(f"{where} is not a valid template ({err}); {hint}") from err
    for f in fields:
        if f not in given:
            raise ConfigError(f"{where} uses {{{f}}}, which this prompt does not have: {hint}")
    for group in needed:
        if not set(group) & set(fields):
            raise ConfigError(f"{where} never uses {' or '.join(f'{{{g}}}' for g in group)}: without it the "
                              f"prompt cannot do its work; {hint}")
    try:
        text.format(**{g: _SAMPLE.get(g, "x") for g in given})
    except (ValueError, TypeError, KeyError, IndexError, AttributeError) as err:
        raise ConfigError(f"{where} cannot be filled in ({type(err).__name__}: {err}); {hint}") from err


def _read_prompt(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise ConfigError(f"prompt file {path} is not UTF-8 text") from err
    except OSError as err:
        raise ConfigError(f"prompt file {path} cannot be read ({err.strerror or err})") from err


def _prompt_folder(folder: str | Path) -> Path:
    path = Path(folder)
    if not path.exists():
        raise ConfigError(f"prompts folder {path} does not exist (leave out --prompts for the packaged prompts)")
    if not path.is_dir():
        raise ConfigError(f"prompts folder {path} is a file, not a folder of prompt files")
    return path


def check_prompts(folder: str | Path) -> None:
    """A prompts folder exists, overrides at least one prompt, and each of its prompt files is a valid template.

    Raises one :class:`ConfigError` naming the folder or file; ``folder`` "" (the packaged prompts) passes.
    """
    if not folder:
        return
    path = _prompt_folder(folder)
    found = [name for name in PLACEHOLDERS if (path / name).exists()]
    if not found:
        raise ConfigError(f"prompts folder {path} holds none of {', '.join(PLACEHOLDERS)}: it would override "
                          "nothing")
    for name in found:
        load_prompt(name, path)


def load_prompt(name: str, folder: str | Path = "") -> str:
    """A prompt template, checked (:func:`check_template`): from ``folder`` when it has the file, else the packaged one.

    A ``folder`` that does not exist is a :class:`ConfigError`, not a silent fallback to the packaged prompts.
    """
    path = PROMPTS / name
    if folder:
        custom = _prompt_folder(folder) / name
        if custom.exists():
            if not custom.is_file():
                raise ConfigError(f"prompt file {custom} is not a file")
            path = custom
    text = _read_prompt(path)
    if name in PLACEHOLDERS:
        check_template(name, text, path)
    return text


def shorten(text: str, limit: int = 300) -> str:
    """``text`` on one line, cut to about ``limit`` characters (for an error message)."""
    text = " ".join(str(text).split())
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"


def chat_content(answer) -> str | None:
    """The text of a chat completion (``choices[0].message.content``), or None when ``answer`` is not one."""
    try:
        content = answer["choices"][0]["message"]["content"]
    except (KeyError, IndexError, TypeError):
        return None
    return content if isinstance(content, str) else None


def show(token: str) -> str:
    """A token as one line of a prompt (newlines and tabs escaped)."""
    return token.replace("\n", "\\n").replace("\t", "\\t")


def _body(err: urllib.error.HTTPError) -> str:
    """The text of an HTTP error's answer ("" when it cannot be read); a JSON error's message alone."""
    try:
        text = err.read().decode("utf-8", errors="replace")
    except (OSError, http.client.HTTPException):
        return ""
    try:
        answer = json.loads(text)
    except (ValueError, RecursionError):
        return text
    message = answer.get("error") if isinstance(answer, dict) else None
    message = message.get("message", message) if isinstance(message, dict) else message
    return message if isinstance(message, str) and message else text


class Backend:
    """What the scorers ask of an explainer / simulator (see the module docstring).

    A backend gives ``explain`` and the one-item questions ``simulate``, ``detect`` and ``fuzz``; the many-item
    forms default to asking one at a time, and a backend that can batch them overrides those.
    """

    max_value = 10
    chat = True  # explain takes the chat explainer prompt (explainer_chat.txt); False: Bills et al.'s completion
    runs_on = ""  # what answers, in words (a model, its dtype and the machine; an endpoint): each record says it

    def explain(self, prompt: str) -> str:
        raise NotImplementedError

    def simulate(self, explanation: str, tokens: list[str]) -> list[float] | None:
        return self.simulate_many(explanation, [tokens])[0]

    def detect(self, explanation: str, text: str) -> float | None:
        return self.detect_many(explanation, [text])[0]

    def fuzz(self, explanation: str, text: str) -> float | None:
        return self.fuzz_many(explanation, [text])[0]

    def simulate_many(self, explanation: str, excerpts: list[list[str]]) -> list[list[float] | None]:
        return [self.simulate(explanation, tokens) for tokens in excerpts]

    def detect_many(self, explanation: str, texts: list[str]) -> list[float | None]:
        return [self.detect(explanation, text) for text in texts]

    def fuzz_many(self, explanation: str, texts: list[str]) -> list[float | None]:
        return [self.fuzz(explanation, text) for text in texts]


class LocalBackend(Backend):
    """Explainer / simulator from a causal LM lmscope has loaded."""

    def __init__(self, lm: LM, prompts: str | Path = "", explanation_tokens: int = 40, chat: str = "auto",
                 judge: str = "quote"):
        check_prompts(prompts)
        if judge not in ("quote", "yes-no"):
            raise ConfigError(f"judge must be quote or yes-no, got {judge!r}")
        self.lm, self.prompts, self.explanation_tokens, self.judge = lm, prompts, explanation_tokens, judge
        self.runs_on = f"{lm.name}, {str(lm.dtype).removeprefix('torch.')}, on {machine(lm.device)}"
        tok = lm.tokenizer
        has_template = bool(getattr(tok, "chat_template", None))
        if chat == "on" and not has_template:
            raise ConfigError(f"--chat on: the tokenizer of {lm.name} has no chat template")
        self.chat = has_template and chat != "off"
        ids = [tok(str(v), add_special_tokens=False)["input_ids"] for v in range(11)]
        single = [i[0] for i in ids if len(i) == 1]
        self.max_value = 10 if len(single) == 11 else 9
        self.value_ids = torch.tensor([i[0] for i in ids[: self.max_value + 1]])
        self.tab = tok("\t", add_special_tokens=False)["input_ids"]
        self.unknown = tok("unknown", add_special_tokens=False)["input_ids"]
        self.newline = tok("\n", add_special_tokens=False)["input_ids"]
        answers = ("Yes", "No", "None") if self.chat else (" Yes", " No", " None")  # a chat answer: its own message
        *self.yes_no, self.none = [tok(w, add_special_tokens=False)["input_ids"][0] for w in answers]
        self._first: dict[str, set[int]] = {}  # word -> first tokens of the answers quoting it
        self._heads: dict[str, SharedHead] = {}  # a prompt's fixed instructions -> their KV cache, run once

    @property
    def judge_name(self) -> str:
        """The judge as a run records it (a run scored another way is not resumed with this one)."""
        return "quote (a word of the text)" if self.judge == "quote" else self.judge

    def as_chat(self, prompt: str) -> str:
        """``prompt`` as the model's chat (unchanged without chat).

        All but its last line is the user's message; the last line, the cue ("the main thing this neuron does is
        find"), starts the assistant's answer ("Answer:" is left out: the answer is the message itself).
        """
        if not self.chat:
            return prompt
        head, _, cue = prompt.rstrip().rpartition("\n")
        messages = [{"role": "user", "content": head.strip()}]
        text = self.lm.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        return text + (cue.strip() if not cue.strip().endswith(":") else "")

    def explain(self, prompt: str) -> str:
        """The greedy continuation's first line."""
        text = greedy(self.lm, self.as_chat(prompt), self.explanation_tokens)
        return text.strip().split("\n")[0].strip()

    def _head(self, marked: str, *marks: str) -> SharedHead:
        """The fixed start of a prompt whose variable parts are ``marks`` in ``marked``, its KV cache kept.

        Up to the last line break before the first mark (a line break ends a token in these tokenizers; a head that
        still tokenizes apart from the whole prompt is simply not used: :meth:`SharedHead.covers`).
        """
        static = marked[: min(marked.index(m) for m in marks if m in marked)]
        static = static[: static.rfind("\n") + 1]
        if static not in self._heads:
            self._heads[static] = SharedHead(self.lm.tokenizer(static)["input_ids"] if static else [])
        return self._heads[static]

    def _tokens(self, text: str) -> list[int]:
        return list(self.lm.tokenizer(text, add_special_tokens=False)["input_ids"])

    @torch.no_grad()
    def simulate_many(self, explanation: str, excerpts: list[list[str]]) -> list[list[float] | None]:
        """Expected value of each token's activation: the instructions once, every excerpt read after them."""
        template = load_prompt("simulator.txt", self.prompts)
        head = template.format(explanation=explanation, max_value=self.max_value)
        shared = self._head(template.format(explanation=MARK, max_value=self.max_value), MARK)
        rows, where = [], []
        for tokens in excerpts:
            ids, at = [], []
            for t in tokens:
                ids += self._tokens(show(t)) + self.tab
                at.append(len(ids) - 1)  # the logits here predict the value after the tab
                ids += self.unknown + self.newline
            rows.append(ids)
            where.append(at)
        prefix = list(self.lm.tokenizer(head)["input_ids"])
        values = torch.arange(self.max_value + 1, dtype=torch.float32)
        out = []
        for logits in continuation_logits(self.lm, prefix, rows, where, head=shared):  # (tokens, vocab) each
            probs = torch.softmax(logits[:, self.value_ids.to(logits.device)].cpu(), -1)  # over the value tokens
            out.append((probs @ values).tolist())
        return out

    def quotable(self, words: list[str]) -> list[int]:
        """First tokens of the answers that quote one of ``words``.

        Each word as written, in lower / capitalised / upper case, with or without a leading space; never None's.
        """
        ids = set()
        for word in words:
            if word not in self._first:
                forms = {f for w in {word, word.lower(), word.capitalize(), word.upper()} for f in (w, " " + w)}
                self._first[word] = {p[0] for p in (self._tokens(f) for f in forms) if p}
            ids |= self._first[word]
        return sorted(ids - {self.none})

    @torch.no_grad()
    def _judge_many(self, name: str, explanation: str, texts: list[str], marked: bool = False) -> list[float | None]:
        """P(fits) after prompt ``name`` (``_quote`` added for the quote judge) for each text.

        The instructions before the text run once. Yes-no: P(Yes) / (P(Yes) + P(No)). Quote: the answer's first token
        quotes a word of the text (``marked``: a marked word) rather than saying None, P(quote) / (P(quote) + P(None));
        a word the judge names that the text does not hold counts for nothing (a small judge copies the explanation's
        own words: asked for "the word 'the'" in a text without one, Qwen-1.5B answers "the" with P 0.6).
        """
        mark = "\x00TEXT\x00"
        name = name.replace(".txt", "_quote.txt") if self.judge == "quote" else name
        template = load_prompt(name, self.prompts)
        prompt = self.as_chat(template.format(explanation=explanation, text=mark))
        shared = self._head(self.as_chat(template.format(explanation=MARK, text=mark)), MARK, mark)
        head, _, tail = prompt.partition(mark)
        prefix = list(self.lm.tokenizer(head)["input_ids"])
        rows = [self._tokens(text + tail) for text in texts]
        out = []
        answers = continuation_logits(self.lm, prefix, rows, [[len(r) - 1] for r in rows], head=shared)
        for text, row in zip(texts, answers):
            logits = row[0].float()
            if self.judge == "quote":
                probs = torch.softmax(logits, -1)
                words = WORD.findall(" ".join(MARKED.findall(text)) if marked else text)
                quote, none = float(probs[self.quotable(words)].sum()), float(probs[self.none])
                out.append(quote / (quote + none) if quote + none > 0 else 0.0)
            else:
                out.append(float(torch.softmax(logits[self.yes_no], -1)[0]))
        return out

    def detect_many(self, explanation: str, texts: list[str]) -> list[float | None]:
        """P that some word of each text is what the explanation describes."""
        return self._judge_many("detector.txt", explanation, texts)

    def fuzz_many(self, explanation: str, texts: list[str]) -> list[float | None]:
        """P that the marked tokens of each text are what the explanation describes."""
        return self._judge_many("fuzzer.txt", explanation, texts, marked=True)


RETRIED = (408, 429)  # and every 5xx: the request may pass later; any other 4xx will not


class HttpBackend(Backend):
    """An OpenAI-compatible chat endpoint, with an on-disk response cache, retries, a budget and a timeout."""

    max_value = 10

    def __init__(self, base_url: str, model: str, cache_dir: str | Path, api_key_env: str = "OPENAI_API_KEY",
                 timeout: float = 60.0, retries: int = 4, budget: int = 2000, prompts: str | Path = "",
                 explanation_tokens: int = 40, backoff: float = 1.0, concurrency: int = 4):
        check_url(base_url)
        check_prompts(prompts)
        self.url = base_url.rstrip("/") + "/chat/completions"
        self.model, self.key_env, self.key = model, api_key_env, os.environ.get(api_key_env, "")
        self.cache = Path(cache_dir)
        self.cache.mkdir(parents=True, exist_ok=True)
        self.timeout, self.retries, self.budget, self.backoff = timeout, retries, budget, backoff
        self.prompts, self.explanation_tokens, self.concurrency = prompts, explanation_tokens, concurrency
        self.runs_on = f"{model} at {base_url}"
        self.sent = 0  # requests sent by this run (cache hits excluded)
        self.malformed = 0
        self.lock = threading.Lock()  # requests may run in parallel threads

    def _cached(self, path: Path, request: dict) -> str | None:
        """The cached answer to ``request``; one that is not valid is discarded (None: ask again)."""
        if not path.is_file():
            return None
        try:
            cached = read_json(path)
        except ArtifactError:
            cached = None
        if isinstance(cached, dict) and cached.get("request") == request and isinstance(cached.get("content"), str):
            return cached["content"]
        log.warning("%s: the cached answer is not a valid answer to its request; discarded, asking again", path)
        path.unlink(missing_ok=True)
        return None

    def _post(self, messages: list[dict], max_tokens: int) -> str:
        request = {"model": self.model, "messages": messages, "max_tokens": max_tokens, "temperature": 0}
        key = hashlib.sha256(json.dumps(request, sort_keys=True).encode()).hexdigest()
        path = self.cache / f"{key}.json"
        content = self._cached(path, request)
        if content is not None:
            return content
        with self.lock:
            spent = self.sent >= self.budget
        if spent:
            raise EndpointError(f"the request budget of this run ({self.budget}) is spent; finished units are "
                                f"saved and answers cached: rerun (with a larger --budget) to go on")
        content = self._send(request)  # a valid answer: anything else raised
        with self.lock:  # two threads may ask the same question
            write_json(path, {"request": request, "content": content})
        return content

    def _send(self, request: dict) -> str:
        """The text of the endpoint's answer; transient failures are retried, anything else raises at once."""
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
                    raw = response.read()
            except urllib.error.HTTPError as err:
                error = f"HTTP {err.code}" + (f": {shorten(text, 150)}" if (text := _body(err)) else "")
                if err.code not in RETRIED and err.code < 500:
                    raise EndpointError(self._refused(err.code, err.reason, text)) from None
            except (OSError, http.client.HTTPException) as err:  # connection errors, timeouts, cut-off answers
                error = f"{type(err).__name__}: {getattr(err, 'reason', err)}"
            else:
                return self._content(raw)
            log.info("%s: attempt %d failed (%s)", self.url, attempt + 1, error)
        tries = f"{self.retries + 1} tries" if self.retries else "1 try"
        raise EndpointError(f"{self.url} failed after {tries} ({error}); finished units are saved and answers "
                            f"cached: rerun the same command to resume")

    def _content(self, raw: bytes) -> str:
        """The answer's text, or an :class:`EndpointError` showing what the server returned instead."""
        text = raw.decode("utf-8", errors="replace")
        try:
            answer = json.loads(text)
        except (ValueError, RecursionError):
            raise EndpointError(f"{self.url} returned {shorten(text) or 'an empty answer'}: not JSON, so not a chat "
                                "completion; nothing was cached") from None
        content = chat_content(answer)
        if content is None:
            raise EndpointError(f"{self.url} returned {shorten(json.dumps(answer, ensure_ascii=False))}: not a chat "
                                "completion (no choices[0].message.content text); nothing was cached")
        return content

    def _refused(self, code: int, reason: str, text: str) -> str:
        """The message of a client error (HTTP 4xx other than 408 / 429): what the server said, and what to check."""
        check = {401: f"check the key in ${self.key_env}", 403: f"check the key in ${self.key_env}",
                 404: "check --base-url (it ends before /chat/completions) and --api-model"}.get(
                     code, "the request itself is wrong, so it was not sent again")
        return f"{self.url} answered HTTP {code} {reason}: {shorten(text) or '(no message)'}; {check}"

    def explain(self, prompt: str) -> str:
        """The answer's first line (without the prompt's last line, the cue, where the answer repeats it)."""
        answer = self._post([{"role": "user", "content": prompt}], self.explanation_tokens)
        line = answer.strip().split("\n")[0].strip()
        cue = prompt.rstrip().rpartition("\n")[2].strip()
        return line[len(cue):].strip() if cue and line.lower().startswith(cue.lower()) else line

    def _map(self, fn, items: list) -> list:
        """``fn`` of every item, ``concurrency`` requests at once (answers in the items' order)."""
        if self.concurrency <= 1 or len(items) <= 1:
            return [fn(i) for i in items]
        with ThreadPoolExecutor(max_workers=self.concurrency) as pool:
            return list(pool.map(fn, items))

    def simulate_many(self, explanation: str, excerpts: list[list[str]]) -> list[list[float] | None]:
        return self._map(lambda tokens: self.simulate(explanation, tokens), excerpts)

    def detect_many(self, explanation: str, texts: list[str]) -> list[float | None]:
        return self._map(lambda text: self.detect(explanation, text), texts)

    def fuzz_many(self, explanation: str, texts: list[str]) -> list[float | None]:
        return self._map(lambda text: self.fuzz(explanation, text), texts)

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

    def _yes(self, name: str, explanation: str, text: str) -> float | None:
        """1 for an answer starting with yes, 0 for no, None (counted) otherwise."""
        prompt = load_prompt(name, self.prompts).format(explanation=explanation, text=text)
        answer = self._post([{"role": "user", "content": prompt}], 3).strip().lower()
        if answer.startswith("yes") or answer.startswith("no"):
            return 1.0 if answer.startswith("yes") else 0.0
        with self.lock:
            self.malformed += 1
        return None

    def detect(self, explanation: str, text: str) -> float | None:
        """1 when the endpoint answers that the unit fires in ``text``, 0 when not, None (counted) otherwise."""
        return self._yes("detector.txt", explanation, text)

    def fuzz(self, explanation: str, text: str) -> float | None:
        """1 when the endpoint answers that the marked tokens fit, 0 when not, None (counted) otherwise."""
        return self._yes("fuzzer.txt", explanation, text)
