"""One package per method family, each taking (model, inputs, config) and returning a result dataclass.

``lens`` (logit and tuned lens), ``trace`` (causal tracing), ``rome`` (rank-one editing and CounterFact), ``stages``
(stages of inference), ``sae`` (sparse autoencoders), ``patching`` (activation patching, single units on IOI),
``autointerp`` (explaining and scoring units), ``neurons`` (neuron attribution and editing, text and images),
``projector`` (the bundled VLM's projector), ``graphs`` (attribution graphs over transcoders). Inside a family,
modules import in one direction: its config module at the bottom, its public entry on top. Families do not import
each other; what two of them share lives below them (``lmscope.model``, ``lmscope.data``, ``lmscope.io``,
``lmscope.runs``, ``lmscope.running``, ``lmscope.store``).
"""
