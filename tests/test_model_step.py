"""scripts/gpt2_step.py, the whole-model training step, checked on the CPU with --tiny models."""

import json
import pathlib

import pytest
import torch

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


def test_a_synchronization_inside_layernorm_is_attributed_to_it(step_script):
    """The check of the profile can fail: an .item() in a function of the layernorm package counts
    as ours (its frame named after the package's file), one elsewhere does not."""
    from torch.profiler import ProfilerActivity, profile

    namespace = {}
    exec(compile("def inside(t):\n    return t.sum().item()\n", "/somewhere/layernorm/fake_module.py", "exec"),
         namespace)
    t = torch.randn(4)
    with profile(activities=[ProfilerActivity.CPU], with_stack=True) as prof:
        namespace["inside"](t)
        t.max().item()
    syncs = [s for s in step_script.host_syncs(prof.events()) if s["name"] == "aten::item"]
    assert [s["ours"] for s in syncs] == [True, False]


def test_without_a_gpu_the_full_size_step_is_refused(step_script, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert step_script.main(["--model", "encoder"]) == 2
