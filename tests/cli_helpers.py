"""Running the console entry point inside the test process, and checking its one-line errors."""
import sys
from types import SimpleNamespace


def run_main(capsys, *args):
    """The same entry point as `mmlm ...` in this process (no interpreter start-up): exit code and captured output."""
    from mmlm.cli.main import main

    saved, sys.argv = sys.argv, ["mmlm", *map(str, args)]
    try:
        main()
        code = 0
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else 1
    finally:
        sys.argv = saved
    out, err = capsys.readouterr()
    return SimpleNamespace(returncode=code, stdout=out, stderr=err)


def assert_clean_error(r, *fragments):
    """Exit code 1, exactly one stderr line `error: ...` holding every fragment, no traceback."""
    assert r.returncode == 1, (r.stdout, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), r.stderr
    assert "Traceback" not in r.stderr + r.stdout
    for f in fragments:
        assert f in lines[0], (f, lines[0])
