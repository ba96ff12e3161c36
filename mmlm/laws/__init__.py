"""Scaling laws: uni-modal and bi-modal fits, predictions and planning."""
