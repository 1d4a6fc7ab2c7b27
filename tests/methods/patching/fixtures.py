"""What the IOI tests share with tests/cli/test_patching_cli.py: IOI records for the tiny word-level tokenizer, and a
fixture that writes them to a file."""

import json

import pytest

# names the tiny word-level tokenizer knows (one token each); "w.." are filler words
RECORDS = [
    {"case_id": 0, "prompt": "Then Paris and France w1 w2 w3 . Paris w4 w5 to", "answer": "France"},
    {"case_id": 1, "prompt": "Then Eiffel and Tower w6 w7 . Tower w8 w9 to", "answer": "Eiffel"},
    {"case_id": 2, "prompt": "Then France and Eiffel w3 . France w2 w1 to", "answer": "Eiffel"},
    {"case_id": 3, "prompt": "Then Paris and Tower w5 w6 w7 w8 . Paris w9 to", "answer": "Tower"},
    {"case_id": 4, "prompt": "no repeated name here: Paris w1", "answer": "Paris"},  # skipped
]


@pytest.fixture
def data(tmp_path):
    path = tmp_path / "ioi.json"
    path.write_text(json.dumps(RECORDS))
    return path
