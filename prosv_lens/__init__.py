"""prosv-lens: train, run and understand prompt-only steering vectors with TransformerLens."""

__version__ = "0.1.0"
