"""Build the Cython kernels; all metadata lives in setup.cfg."""
from Cython.Build import cythonize
from setuptools import Extension, setup

extensions = [
    Extension("mmlm.kernels._interleave", ["kernels/_interleave.pyx"], extra_compile_args=["-O3"]),
]

setup(ext_modules=cythonize(extensions, language_level=3))
