"""One module per method; each takes (model, inputs, config) and returns a result dataclass."""
