"""The quickstart demo runs end to end from the command line (few steps, small sizes)."""

import json
import math
import os
import sys

import pytest


@pytest.mark.slow
def test_demo_command_line(tmp_path, run_with_progress):
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ)
    env["PYTHONPATH"] = repo + os.pathsep + env.get("PYTHONPATH", "")
    env["MPLBACKEND"] = "Agg"
    out = tmp_path / "demo"
    proc = run_with_progress(
        [sys.executable, "-W", "error", "-m", "bayeslayers_jax.demo", "--steps", "50", "--out",
         str(out), "--seed", "1"],
        label="demo", env=env, timeout=300, cwd=repo,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    stdout = proc.stdout
    # Progress lines and the table with one row per method.
    assert "step     50/50" in stdout
    assert "| method | test NLL | RMSE |" in stdout
    for name in ("MAP", "BBB", "LR", "CLT"):
        assert f"| {name} |" in stdout
    # The closing lines name every file written, and nothing else is in the folder.
    written = [str(out / name) for name in ("results.md", "results.json", "demo.png")]
    assert f"wrote {', '.join(written)}\n" in stdout
    assert sorted(os.listdir(out)) == sorted(os.path.basename(w) for w in written)
    # The PNG (by its 8-byte signature) and the tables.
    with open(out / "demo.png", "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    assert (out / "results.md").read_text().startswith("| method |")
    results = json.loads((out / "results.json").read_text())
    assert results["steps"] == 50 and results["seed"] == 1
    for name, r in results["methods"].items():
        for key in ("nll", "rmse", "coverage_in", "coverage_out", "seconds_per_step"):
            assert math.isfinite(r[key]), (name, key)
        assert 0.0 <= r["coverage_in"] <= 1.0 and 0.0 <= r["coverage_out"] <= 1.0
        # 50 Adam steps from the initialization reduce every method's loss.
        assert r["final_loss"] < r["initial_loss"], name


def test_demo_rejects_bad_options(capsys):
    from bayeslayers_jax.demo import main, run_demo

    try:
        main(["--steps", "0"])
    except SystemExit as exc:  # argparse's error exit
        assert exc.code == 2
    else:
        raise AssertionError("--steps 0 was accepted")
    assert "--steps" in capsys.readouterr().err
    try:
        run_demo(1, None, methods=("MAP", "Ensemble"), verbose=False)
    except ValueError as exc:
        assert "Ensemble" in str(exc)
    else:
        raise AssertionError("an unknown method was accepted")
