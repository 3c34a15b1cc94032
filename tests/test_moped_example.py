"""The MOPED digits example (examples/moped_digits.py) at a small size: MAP keeps the accuracy
exactly, every metric is finite, and the fine-tuned Bayesian net detects digits 5-9."""

import importlib.util
import json
import math
import os
import sys

import pytest

pytest.importorskip("sklearn")

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _example():
    spec = importlib.util.spec_from_file_location("moped_digits", os.path.join(REPO, "examples", "moped_digits.py"))
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # the example's dataclasses (flax Modules) look their module up
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow  # trains a small CNN (150 steps), fine-tunes it (50), compiles two predictives: ~30 s
def test_moped_example_small_run(tmp_path, default_jax_config):
    # The example is a user's script: JAX's defaults (float32, standard promotion; Flax's
    # nn.avg_pool divides by an int window size, which the suite's strict promotion rejects).
    out = tmp_path / "moped.json"
    result = _example().main(["--quick", "--out", str(out)])
    assert json.loads(out.read_text()) == json.loads(json.dumps(result))
    cfg, rows = result["config"], result["rows"]
    assert (cfg["det_steps"], cfg["steps"], cfg["samples"]) == (150, 50, 20)
    assert cfg["n_train"] + cfg["n_test"] + cfg["n_ood"] == 1797
    # MOPED: the MAP network is the trained one, so every test prediction and hence the
    # accuracy are equal exactly (accuracy is a count over n_test: no tolerance applies).
    assert result["map_predictions_equal"] is True
    assert rows["moped_init_map"]["accuracy"] == rows["deterministic"]["accuracy"]
    # The logits themselves: the same float32 ops on the same weights (<= a few ulp of |logit| < 100).
    assert result["map_max_abs_logit_diff"] <= 1e-4
    for name, r in rows.items():
        assert 0 <= r["accuracy"] <= 1 and 0 <= r["ece"] <= 1 and 0 <= r["ood_auroc"] <= 1, name
        assert math.isfinite(r["nll"]) and r["nll"] > 0, name
    assert math.isfinite(result["finetune_final_loss"])
    # OOD AUROC of the fine-tuned Bayesian net against chance: under the null (AUROC = 0.5)
    # its standard error is sqrt((n1 + n2 + 1) / (12 n1 n2)) (Hanley & McNeil 1982), about
    # 0.019 for 301 vs 896 images; require 4 standard errors above chance.
    n1, n2 = cfg["n_test"], cfg["n_ood"]
    se_null = math.sqrt((n1 + n2 + 1) / (12 * n1 * n2))
    for name in ("deterministic", "moped_finetuned"):
        assert rows[name]["ood_auroc"] > 0.5 + 4 * se_null, (name, rows[name]["ood_auroc"], se_null)
    # The fine-tuned net still classifies (5 classes: chance is 0.2; 301 test images).
    assert rows["moped_finetuned"]["accuracy"] > 0.9
