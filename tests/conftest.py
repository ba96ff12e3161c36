import os

# Tests run on 2-core CI machines; keep torch and numba from oversubscribing.
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

# measured matmul peaks (mmlm.speed) are cached per user; tests keep theirs out of the user's cache
if "MMLM_CACHE_DIR" not in os.environ:
    import tempfile

    os.environ["MMLM_CACHE_DIR"] = tempfile.mkdtemp(prefix="mmlm-test-cache-")
