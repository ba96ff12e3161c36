"""The SLURM launcher's submission, with stand-ins for the SLURM commands (no cluster here)."""
import os
import stat

from mmlm.sweep.launch import SubmititPool

FAKE_SBATCH = """#!/bin/sh
cp "$1" "{capture}/$(basename "$1")"
echo "Submitted batch job 4242"
"""


def fake_command(folder, name, text):
    path = folder / name
    path.write_text(text)
    path.chmod(path.stat().st_mode | stat.S_IEXEC)


def test_slurm_jobs_are_one_array_with_the_requested_resources(tmp_path, monkeypatch):
    bin_dir, capture = tmp_path / "bin", tmp_path / "captured"
    bin_dir.mkdir()
    capture.mkdir()
    fake_command(bin_dir, "sbatch", FAKE_SBATCH.format(capture=capture))
    for name in ("srun", "scancel", "sacct", "squeue"):
        fake_command(bin_dir, name, "#!/bin/sh\nexit 0\n")
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")

    out = tmp_path / "out"
    pool = SubmititPool(out, "slurm", jobs=2, slurm={"partition": "gpu", "gpus_per_run": 1, "time_limit": 90,
                                                        "cpus_per_task": 4, "mem": 16.0})
    pool.submit(["run-a", "run-b", "run-c"])
    try:
        scripts = list(capture.iterdir())
        assert len(scripts) == 1  # one array for the whole sweep
        text = scripts[0].read_text()
        for line in ("#SBATCH --partition=gpu", "#SBATCH --gpus-per-node=1", "#SBATCH --time=90",
                     "#SBATCH --cpus-per-task=4", "#SBATCH --mem=16GB", "#SBATCH --array=0-2%2"):
            assert line in text, f"{line!r} not in the sbatch script:\n{text}"
        assert str(out / "submitit") in text
        assert sorted(pool.jobs_by_id) == ["run-a", "run-b", "run-c"]
    finally:
        pool.close()
