"""scripts/device_check.sh without a GPU: it parses, and refuses what it does not know before any GPU work."""

import os
import pathlib
import shutil
import subprocess

import pytest

SCRIPT = pathlib.Path(__file__).resolve().parents[1] / "scripts" / "device_check.sh"

if shutil.which("bash") is None:
    pytest.skip("needs bash", allow_module_level=True)


def run(tmp_path, **env):
    return subprocess.run(["bash", str(SCRIPT)], env={**os.environ, "OUT": str(tmp_path), **env},
                          capture_output=True, text=True, timeout=300)


def test_the_script_parses():
    assert subprocess.run(["bash", "-n", str(SCRIPT)]).returncode == 0


def test_an_unknown_preset_is_refused_before_anything_runs(tmp_path):
    done = run(tmp_path, PRESET="everything")
    assert done.returncode == 2
    assert "no preset 'everything'" in done.stdout and "launch, kernels, bench" in done.stdout
    assert not (tmp_path / "log.txt").exists()


def test_an_unknown_step_fails_the_run_and_names_the_steps(tmp_path):
    done = run(tmp_path, STEPS="bench-everything")
    assert done.returncode == 1
    assert "no step 'bench-everything'" in done.stdout and "tests memcheck sweep" in done.stdout
    assert "=== summary" in (tmp_path / "log.txt").read_text()


def test_bundle_packs_the_results_into_a_few_files(tmp_path):
    """BUNDLE=1 (for a caller that takes back only a few files): OUT holds the log and one archive
    of everything the steps wrote, even when a step failed."""
    import tarfile

    done = run(tmp_path, STEPS="bench-everything", BUNDLE="1")
    assert done.returncode == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["log.txt", "results.tar.gz"]
    with tarfile.open(tmp_path / "results.tar.gz") as archive:
        log = archive.extractfile("./log.txt").read().decode()
    assert "no step 'bench-everything'" in log and log == (tmp_path / "log.txt").read_text()


@pytest.fixture
def python(tmp_path):
    """A stand-in for python that prints the arguments it was called with."""
    path = tmp_path / "python"
    path.write_text('#!/usr/bin/env bash\necho "ARGS: $*"\n')
    path.chmod(0o755)
    return path


def test_the_tour_step_runs_the_tours_gpu_branch(tmp_path, python):
    """STEPS=tour runs `layernorm tour` on cuda with smoke-size experiments and without its bench
    (the full benchmark, longer than one call); TOUR_SIZE and TOUR_ARGS change that."""
    done = run(tmp_path / "out", STEPS="tour", PYTHON=str(python))
    assert done.returncode == 0, done.stdout
    assert f"ARGS: -m layernorm tour --device cuda --out {tmp_path / 'out'}/tour --experiment-size smoke --skip bench" \
        in done.stdout
    done = run(tmp_path / "out", STEPS="tour", PYTHON=str(python), TOUR_SIZE="quick", TOUR_ARGS="")
    assert done.stdout.count("ARGS: -m layernorm tour") == 1 and "--experiment-size quick\n" in done.stdout


def test_the_kernels_preset_sweeps_the_unmeasured_widths_unless_told_otherwise(tmp_path, python):
    done = run(tmp_path / "out", PRESET="kernels", STEPS="sweep", PYTHON=str(python))
    assert done.returncode == 0, done.stdout
    assert "scripts/sweep_launch.py" in done.stdout and "--budget-s 150 --widths 16384 65536 768 1536\n" in done.stdout
    done = run(tmp_path / "out", PRESET="kernels", STEPS="sweep", PYTHON=str(python), SWEEP_ARGS="")
    assert "--budget-s 150\n" in done.stdout and "--widths" not in done.stdout
