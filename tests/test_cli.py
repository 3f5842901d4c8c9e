"""The command line: `layernorm check` prints its table and its exit status means something."""

import os
import shutil
import subprocess
import sys
import textwrap

import pytest

from layernorm import cli
from layernorm.cli import check
from layernorm.cli import main


def test_check_passes_and_prints_the_table(capsys):
    status = main(["check", "--device", "cpu", "--dtype", "float32", "--dtype", "bfloat16"])
    out = capsys.readouterr().out
    assert status == 0
    header = out.splitlines()[0].split()
    assert header[:4] == ["op", "implementation", "device", "dtype"]
    assert "error vs reference" in out.splitlines()[0] and "error vs torch" in out.splitlines()[0]
    rows = [line for line in out.splitlines() if line.startswith(("layer_norm", "rms_norm"))]
    assert len(rows) >= 2 * 2 * 2 * len(check.SHAPES)  # ops x impls x dtypes x shapes
    assert all(line.rstrip().endswith("ok") for line in rows)


def test_check_exits_1_when_a_case_fails(capsys, monkeypatch):
    monkeypatch.setitem(check.TOLERANCE, check.DTYPE_NAMES["float32"], 0.0)
    status = main(["check", "--device", "cpu", "--dtype", "float32", "--impl", "torch"])
    assert status == 1
    assert "FAIL" in capsys.readouterr().out


def test_check_fails_a_case_that_departs_from_pytorchs_op(capsys, monkeypatch):
    """PyTorch's op is an oracle of its own: agreeing with our reference is not enough."""
    torch_float64 = check._torch_float64

    def off_by_a_tenth(*args):
        y, *grads = torch_float64(*args)
        return (y + 0.1, *grads)

    monkeypatch.setattr(check, "_torch_float64", off_by_a_tenth)
    status = main(["check", "--device", "cpu", "--dtype", "float32", "--impl", "reference"])
    assert status == 1
    assert "FAIL" in capsys.readouterr().out


def test_nan_fails_a_case():
    result = check.CaseResult("layer_norm", "torch", "cpu", "float32", "[1]", float("nan"), 1.0)
    assert not result.passed


def test_python_dash_m_entry_point():
    done = subprocess.run(
        [sys.executable, "-m", "layernorm", "check", "--dtype", "float64", "--impl", "reference"],
        capture_output=True, text=True,
    )
    assert done.returncode == 0, done.stderr
    assert "cases passed" in done.stdout


@pytest.mark.skipif(shutil.which("layernorm") is None, reason="package not installed with pip")
def test_console_script():
    done = subprocess.run(["layernorm", "--help"], capture_output=True, text=True)
    assert done.returncode == 0 and "check" in done.stdout


def test_unknown_subcommand_is_a_usage_error():
    with pytest.raises(SystemExit) as exit_info:
        main(["frobnicate"])
    assert exit_info.value.code == 2


@pytest.mark.parametrize("command", ["experiment", "tour"])
def test_commands_that_need_the_experiments_extra_say_how_to_install_it(command, capsys, monkeypatch):
    import importlib.util

    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "mnist1d" else real_find_spec(name, *a))
    assert cli.main([command, "--help"] if command == "tour" else [command, "small-batch"]) == 2
    err = capsys.readouterr().err
    assert "missing: mnist1d" in err and "pip install 'layernorm[experiments]'" in err


def test_the_library_imports_and_checks_with_torch_alone():
    """What `pip install layernorm` gives: torch and nothing else (numpy, matplotlib, tqdm,
    mnist1d hidden); the functions, patch and `layernorm check` still work."""
    code = textwrap.dedent("""
        import importlib.abc, sys
        class Hide(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path, target=None):
                if name.split(".")[0] in {"numpy", "matplotlib", "tqdm", "mnist1d"}:
                    raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        sys.meta_path.insert(0, Hide())
        import warnings; warnings.simplefilter("ignore")
        import torch, layernorm
        x = torch.randn(4, 8)
        layernorm.layer_norm(x, 8); layernorm.rms_norm(x, 8)
        assert layernorm.patch(torch.nn.Sequential(torch.nn.LayerNorm(8))) == 1
        from layernorm import cli
        sys.exit(cli.main(["check", "--dtype", "float32"]))
    """)
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "cases passed" in result.stdout
