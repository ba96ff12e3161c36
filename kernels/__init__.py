"""Compiled hot paths (Cython, Numba), each beside a plain reference twin used by the tests."""
