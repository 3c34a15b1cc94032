"""The conv digits example (examples/conv_digits.py) runs end to end in a tiny version."""

import json
import math
import os
import sys

import pytest

pytest.importorskip("sklearn")

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.slow  # trains 5 small conv nets for 20 steps and compiles their predictives: about a minute
def test_conv_digits_example_quick_run(tmp_path, run_with_progress):
    env = dict(os.environ)
    env["PYTHONPATH"] = REPO + os.pathsep + env.get("PYTHONPATH", "")
    out = tmp_path / "conv_digits.json"
    proc = run_with_progress(
        [sys.executable, "-W", "error", os.path.join("examples", "conv_digits.py"), "--quick", "--out", str(out)],
        label="conv_digits --quick", timeout=600, env=env, cwd=REPO,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "step time vs plain:" in proc.stdout
    result = json.loads(out.read_text())
    assert result["config"]["steps"] == 20
    assert result["config"]["n_train"] + result["config"]["n_test"] + result["config"]["n_ood"] == 1797
    assert sorted(result["methods"]) == ["bbb", "clt", "flipout", "lr", "plain"]
    for method, metrics in result["methods"].items():
        assert 0 <= metrics["accuracy"] <= 1 and 0 <= metrics["ece"] <= 1 and 0 <= metrics["ood_auroc"] <= 1, method
        assert math.isfinite(metrics["nll"]) and metrics["nll"] > 0 and math.isfinite(metrics["final_loss"]), method
        assert metrics["step_time_vs_plain"] > 0, method
    assert result["methods"]["plain"]["step_time_vs_plain"] == 1.0
