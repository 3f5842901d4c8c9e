"""scripts/gpt2_step.py, the whole-model training step, checked on the CPU with --tiny models."""

import json
import pathlib

import pytest
import torch

import layernorm
from helpers import load_script


@pytest.fixture(scope="module")
def step_script():
    return load_script("gpt2_step")


@pytest.mark.parametrize("model", ["gpt2", "encoder", "llama"])
def test_each_model_runs_its_variants_and_profiles_them(step_script, model, tmp_path):
    if model != "encoder":
        pytest.importorskip("transformers")
    out = tmp_path / "step.json"
    argv = ["--model", model, "--device", "cpu", "--tiny", "--batch", "2", "--seq", "16", "--warmup", "1",
            "--steps", "1", "--out", str(out), "--profile", str(tmp_path / "profile")]
    assert step_script.main(argv) == 0
    summary = json.loads(out.read_text())
    variants = step_script.MODELS[model][2]
    assert list(summary["ms_per_step"]) == list(variants)
    assert all(len(times) == 2 and min(times) > 0 for times in summary["ms_per_step"].values())
    assert set(summary["speedup"]) == set(variants[1:])
    for variant in variants:
        found = summary["profile"][variant]
        assert pathlib.Path(found["trace"]).is_file()
        assert found["host_syncs_in_layernorm"] == 0  # a step with our norms waits on nothing of ours


def _traced(function, tmp_path):
    """The Chrome trace torch.profiler writes of one call, with Python stacks."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], with_stack=True) as prof:
        function()
    prof.export_chrome_trace(str(tmp_path / "trace.json"))
    return json.loads((tmp_path / "trace.json").read_text())


def test_a_synchronization_inside_layernorm_is_attributed_to_it(step_script, tmp_path):
    """The check of the profile can fail: an .item() in a function of the layernorm package counts
    as ours, one elsewhere (here a file named like the package, outside it) does not."""
    namespace = {}
    inside = pathlib.Path(layernorm.__file__).resolve().parent / "fake_module.py"
    exec(compile("def inside(t):\n    return t.sum().item()\n", str(inside), "exec"), namespace)
    exec(compile("def outside(t):\n    return t.min().item()\n", "/elsewhere/layernorm_like/x.py", "exec"),
         namespace)
    t = torch.randn(4)

    def calls():
        namespace["inside"](t)
        t.max().item()
        namespace["outside"](t)

    syncs = [s for s in step_script.host_syncs(_traced(calls, tmp_path)) if s["name"] == "aten::item"]
    assert [s["ours"] for s in syncs] == [True, False, False]
    assert any("inside" in frame for frame in syncs[0]["stack"])


def test_a_trace_without_python_frames_leaves_the_attribution_unknown(step_script, tmp_path):
    trace = _traced(lambda: torch.randn(4).sum().item(), tmp_path)
    trace["traceEvents"] = [e for e in trace["traceEvents"] if e.get("cat") != "python_function"]
    assert step_script.host_syncs(trace) is None


def test_without_a_gpu_the_full_size_step_is_refused(step_script, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert step_script.main(["--model", "encoder"]) == 2
