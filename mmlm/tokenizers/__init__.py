"""Tokenizers, one per token space, all with the same face (see docs/architecture.md)."""
