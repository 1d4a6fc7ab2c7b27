"""Dataset loaders (known_1000, CounterFact, IOI), the packaged corpora, and the stream of their activations.

Modules: ``corpus`` (the packaged corpora, splits, packed token batches), ``activations`` (TextConfig / CorpusConfig and
the one activation stream), ``facts`` (known_1000, CounterFact), ``ioi`` (IOI prompt pairs), ``images`` (captioned
images drawn offline for the bundled VLM).
"""

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
