"""mmlm: scaling laws for generative mixed-modal language models."""

__version__ = "0.1.0"
