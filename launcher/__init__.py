"""launcher: cluster-first fine-tuning for LLMs and VLMs."""

__version__ = "0.1.0"
