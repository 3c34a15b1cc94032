"""The propagate_moments regression example (examples/propagate_gelu_regression.py) runs end to end, small."""

import math
import os
import re
import sys

import pytest

pytest.importorskip("sklearn")

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.slow  # two small trainings; compiling the GELU moments' gradient dominates (about 30-50 s on 2 cores)
def test_propagate_gelu_regression_quick_run(run_with_progress):
    env = dict(os.environ)
    env["PYTHONPATH"] = REPO + os.pathsep + env.get("PYTHONPATH", "")
    proc = run_with_progress(
        [sys.executable, "-W", "error", os.path.join("examples", "propagate_gelu_regression.py"), "--quick"],
        label="propagate_gelu_regression --quick", timeout=600, env=env, cwd=REPO,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    out = proc.stdout
    assert "353 train / 89 test" in out  # load_diabetes, 80/20
    rows = re.findall(r"\| (moments|monte_carlo) +(\S+) +(\S+)", out)
    assert len(rows) == 4  # two trainings x two predictives
    for _, nll, rmse in rows:
        # standardized targets: an untrained model is near NLL 1.42 (unit variance), RMSE ~ y_std = 77
        assert math.isfinite(float(nll)) and 0.5 < float(nll) < 3.0
        assert 30.0 < float(rmse) < 100.0
    checks = re.findall(r"^(exact|linearized) +(\S+) +(\S+) \| +(\S+) +(\S+)-(\S+)$", out, re.M)
    assert [c[0] for c in checks] == ["exact", "linearized"]
    for _, med, mx, ratio, lo, hi in checks:
        assert float(med) < 0.5 and 0.5 < float(ratio) < 2.0  # 100 draws: noise ~0.1 sd, ~0.14 in the ratio
