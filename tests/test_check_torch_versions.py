"""scripts/check_torch_versions.sh with a stand-in environment (making a real one downloads gigabytes)."""

import os
import pathlib
import shutil
import subprocess

import pytest

SCRIPT = pathlib.Path(__file__).resolve().parents[1] / "scripts" / "check_torch_versions.sh"

if shutil.which("bash") is None:
    pytest.skip("needs bash", allow_module_level=True)


def stand_in(versions_dir, spec, exit_status=0):
    """An environment already made for ``spec`` whose python logs its arguments and exits so."""
    python = versions_dir / spec / "bin" / "python"
    python.parent.mkdir(parents=True)
    python.write_text(f'#!/usr/bin/env bash\necho "$*" >> "{versions_dir}/calls"\n'
                      f'case "$*" in *pytest*) exit {exit_status};; esac\necho "2.9.9 triton 3.9.9"\n')
    python.chmod(0o755)


def run(versions_dir, *args):
    return subprocess.run(["bash", str(SCRIPT), *args], env={**os.environ, "TORCH_VERSIONS_DIR": str(versions_dir)},
                          capture_output=True, text=True, timeout=60)


def test_each_version_runs_the_suite_with_the_arguments_given(tmp_path):
    stand_in(tmp_path, "2.7.1")
    stand_in(tmp_path, "2.11.0@3.12")
    done = run(tmp_path, "2.7.1", "2.11.0@3.12", "--", "tests/test_files.py", "-x")
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.count("=== torch 2.9.9 triton 3.9.9") == 2
    suites = [line for line in (tmp_path / "calls").read_text().splitlines() if "pytest" in line]
    assert suites == ["-m pytest -q -p no:cacheprovider tests/test_files.py -x"] * 2


def test_a_failing_version_fails_the_run_and_the_others_still_run(tmp_path):
    stand_in(tmp_path, "2.7.1", exit_status=1)
    stand_in(tmp_path, "2.13.0")
    done = run(tmp_path, "2.7.1", "2.13.0")
    assert done.returncode == 1
    assert sum("pytest" in line for line in (tmp_path / "calls").read_text().splitlines()) == 2
