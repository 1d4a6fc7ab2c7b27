"""Dataset loaders (known_1000, CounterFact, IOI; each takes a path) and the packaged text corpora."""

from lmscope.data.corpus import CORPORA, Document, iter_documents, iter_texts, token_batches
from lmscope.data.facts import (
    CounterFactRecord,
    IOIPrompt,
    KnownFact,
    load_counterfact,
    load_ioi,
    load_known_facts,
    read_records,
)
from lmscope.errors import DataError

__all__ = [
    "CORPORA", "CounterFactRecord", "DataError", "Document", "IOIPrompt", "KnownFact", "iter_documents",
    "iter_texts", "load_counterfact", "load_ioi", "load_known_facts", "read_records", "token_batches",
]
