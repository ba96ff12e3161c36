import subprocess
import sys

from mmlm import __version__


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "mmlm.cli.main", *args], capture_output=True, text=True)


def test_version():
    r = run_cli("--version")
    assert r.returncode == 0
    assert r.stdout.strip() == f"mmlm {__version__}"


def test_help_lists_every_command():
    r = run_cli("--help")
    assert r.returncode == 0
    for cmd in ("tokenize", "train", "sweep", "fit", "generate", "law", "analyze"):
        assert cmd in r.stdout
