"""What several test files share: the console entry point run inside the test process, its one-line
errors, and the errors of a loader given a bad JSON file."""
import json
import sys
from types import SimpleNamespace

import pytest

from mmlm.errors import MmlmError


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


def assert_bad_json_rejected(load, path, other_version: dict, broken: str, missing, missing_match: str):
    """`load` refuses, each with one clear error, a JSON file of another format version, one that is
    not JSON, and a missing file."""
    path.write_text(json.dumps(other_version))
    with pytest.raises(MmlmError, match="incompatible version"):
        load(path)
    path.write_text(broken)
    with pytest.raises(MmlmError, match="unreadable"):
        load(path)
    with pytest.raises(MmlmError, match=missing_match):
        load(missing)
