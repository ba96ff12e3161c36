"""Build the Cython kernels; all metadata lives in setup.cfg."""
from Cython.Build import cythonize
from setuptools import Extension, setup

# -ffp-contract=off: no fused multiply-add, so the interleaver's float64 mixture arithmetic rounds exactly
# like its Python reference twin on every platform (aarch64 compilers fuse by default).
extensions = [
    Extension("mmlm.kernels._interleave", ["kernels/_interleave.pyx"],
              extra_compile_args=["-O3", "-ffp-contract=off"]),
    # the scaling-law fit's objective and polish (ahead of time: no JIT start-up in `mmlm fit`)
    Extension("mmlm.kernels._lawfit", ["kernels/_lawfit.pyx"], extra_compile_args=["-O3", "-ffp-contract=off"]),
]

setup(ext_modules=cythonize(extensions, language_level=3))
