# cython: boundscheck=False, wraparound=False
"""Placeholder; the interleaver lands with the kernels work."""

def version():
    return 0
