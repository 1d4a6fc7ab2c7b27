"""Fixtures of the autointerp tests: a tiny model whose tokenizer knows digits and whitespace, a corpus, and a local
OpenAI-compatible stub server (scripted failures, delays and answers).

Shared by tests/methods/autointerp (through its conftest.py) and tests/cli/test_autointerp_cli.py, which import them
by name."""

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import transformers as T
from tokenizers import Regex, Tokenizer, models, pre_tokenizers

import lmscope
from tests.helpers import LLAMA_LIKE, write_corpus

WORDS = ["The", "capital", "of", "France", "is", "Paris", "Eiffel", "Tower", "located", "in", "city", "the", "a"]


def digit_tokenizer():
    """Words, single whitespace characters, digits 0..10 and punctuation, one token each (97 ids)."""
    specials = ["<pad>", "<bos>", "<eos>", "<unk>"]
    pieces = [" ", "\t", "\n", *[str(i) for i in range(11)], "unknown", "Yes", "No", ".", ",", ":", '"', "?", "<", ">",
              "start", "end", "find"]
    words = WORDS + [f"w{i}" for i in range(97 - len(specials) - len(pieces) - len(WORDS))]
    vocab = {w: i for i, w in enumerate(specials + pieces + words)}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Split(Regex(r"\s|\d+|\w+|[^\w\s]"), behavior="isolated")
    return T.PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<bos>", eos_token="<eos>", unk_token="<unk>",
                                     pad_token="<pad>")


@pytest.fixture
def lm():
    import torch
    torch.manual_seed(0)
    model = T.AutoModelForCausalLM.from_config(T.LlamaConfig(**{**LLAMA_LIKE, "max_position_embeddings": 2048}))
    return lmscope.load((model.eval(), digit_tokenizer()))


@pytest.fixture
def corpus(tmp_path) -> str:
    return write_corpus(tmp_path / "corpus.txt", extra_words=40, lengths=(8, 40), docs=200)


class Stub:
    """What the stub server does: ``script`` is a list of actions for the next requests ("500", "sleep", an answer
    text, or a reply as it is sent: ``{"status": 400, "body": <JSON value or text>}``); when it is empty,
    ``answer(messages)`` answers."""

    def __init__(self):
        self.script, self.requests = [], []
        self.answer = lambda messages: "Paris"


@pytest.fixture
def stub():
    state = Stub()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_POST(self):  # noqa: N802
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            state.requests.append(body)
            action = state.script.pop(0) if state.script else None
            if isinstance(action, dict):  # a reply as it is sent: any status, any body
                body = action["body"]
                payload = (body if isinstance(body, str) else json.dumps(body)).encode()
                self.send_response(action.get("status", 200))
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)
                return
            if action == "500":
                self.send_response(500)
                self.end_headers()
                return
            if action == "sleep":
                import time
                time.sleep(1.0)
            text = action if action not in (None, "sleep") else state.answer(body["messages"])
            payload = json.dumps({"choices": [{"message": {"role": "assistant", "content": text}}]}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    state.url = f"http://127.0.0.1:{server.server_address[1]}/v1"
    yield state
    server.shutdown()
