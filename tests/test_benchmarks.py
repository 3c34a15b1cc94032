"""Tests of the benchmark suite (``python -m benchmarks``).

The suite's numbers are timings, which are never asserted. These tests check that the
``--smoke`` run works end to end and writes valid JSON and Markdown with the expected
content, and check the parts that are exact: the FLOP model (against counts done by hand
here), the timer's repeat logic, and argument validation.
"""

import json
import math
import os
import sys
import time

import pytest

from benchmarks.flops import METHODS, SHAPES, flop_ratio, matmul_flops
from benchmarks.suite import Config
from benchmarks.timing import time_call

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory, run_with_progress):
    """Runs ``python -m benchmarks --smoke`` once in a fresh process (float32, default JAX
    configuration, unaffected by this test session's x64 and strict-promotion settings)."""
    out = tmp_path_factory.mktemp("bench")
    env = dict(os.environ)
    env["PYTHONPATH"] = REPO + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env["JAX_PLATFORMS"] = "cpu"
    # Smoke numbers are not measurements: compile without LLVM optimization (about half the
    # compile time, which dominates a smoke run).
    env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") + " --xla_backend_optimization_level=0").strip()
    proc = run_with_progress(
        [sys.executable, "-m", "benchmarks", "--smoke", "--out", str(out)],
        label="benchmarks --smoke", cwd=REPO, env=env, timeout=600,
    )
    return proc, out


@pytest.mark.slow
def test_smoke_run_writes_json_and_markdown(smoke_run):
    proc, out = smoke_run
    assert proc.returncode == 0, proc.stderr[-3000:]
    files = sorted(os.listdir(out))
    assert len(files) == 2, files
    json_name, md_name = files
    assert json_name.endswith("_smoke.json") and md_name == json_name[:-5] + ".md"
    # Named by device and date: cpu-<cores>core_<YYYY-MM-DD>_smoke.
    assert json_name.startswith(f"cpu-{os.cpu_count()}core_20")
    # Progress lines numbered 1..N on stderr, the table on stdout.
    assert "device: cpu" in proc.stderr and "versions: jax" in proc.stderr
    assert "[ 1/" in proc.stderr
    assert "| method | forward ms |" in proc.stdout

    with open(out / json_name, encoding="utf-8") as fh:
        results = json.load(fh)
    expected = {"meta", "device", "config", "shapes", "records", "mc", "ensemble", "memory",
                "torch", "targets"}
    assert expected <= set(results)
    assert results["device"]["platform"] == "cpu"
    assert results["config"]["smoke"] is True
    assert results["torch"]["status"] in ("not installed", "ok")

    records = {(r["shape"], r["method"], r["mode"]): r for r in results["records"]}
    assert set(records) == {("rl", m, mode) for m in METHODS for mode in ("forward", "train")}
    for (shape, method, mode), r in records.items():
        assert r["median_s"] > 0 and math.isfinite(r["median_s"])
        assert r["compile_s"] > 0
        assert r["flop_ratio"] == flop_ratio(method, SHAPES[shape], mode)
        assert math.isclose(r["vs_flop_limit"], r["ratio_to_dense"] / r["flop_ratio"], rel_tol=1e-12)
        assert r["memory"]["total_bytes"] > 0
        if mode == "train":
            assert r["final_loss_finite"] is True
    # The baseline's ratio to itself is exactly one.
    assert records[("rl", "dense", "train")]["ratio_to_dense"] == 1.0

    mc = {m["method"]: m for m in results["mc"]}
    assert set(mc) == {"bbb", "lr", "clt", "cltdet"}
    assert mc["bbb"]["samples"] == SHAPES["rl"].mc_samples and mc["bbb"]["samples_per_s"] > 0
    assert mc["clt"]["analytic"] is True
    ensemble = {e["method"]: e for e in results["ensemble"]}
    assert set(ensemble) == {"dense"}  # --smoke times the Dense ensemble only
    assert all(e["members"] == 10 and e["speedup"] > 0 for e in ensemble.values())
    assert results["memory"]["process_peaks"][0]["kind"] == "host_max_rss"
    # The three CPU targets are reported with a measured value (met or not is not tested).
    assert [(t["method"], t["limit"]) for t in results["targets"]] == [
        ("clt", 3.0), ("bbb", 1.5), ("lr", 2.5)
    ]
    assert all(t["measured"] > 0 and t["met"] in (True, False) for t in results["targets"])

    with open(out / md_name, encoding="utf-8") as fh:
        md = fh.read()
    for heading in ("## RL critic (rl)", "## Targets", "## Monte Carlo predictive",
                    "## Ensemble of networks", "## Memory", "## PyTorch comparison"):
        assert heading in md
    for name in ("Dense", "MAP", "BBB", "LR", "CLT", "CLTDet"):
        assert f"| {name} |" in md


def test_flop_model_matches_hand_count():
    """Counts for the RL critic (24 -> 256 -> 256 -> 1, batch 256) done by hand."""
    rl = SHAPES["rl"]
    dense = 2 * 256 * (24 * 256 + 256 * 256 + 256 * 1)
    assert matmul_flops("dense", rl) == dense == 36_831_232
    assert flop_ratio("bbb", rl) == 1.0 and flop_ratio("map", rl) == 1.0
    assert flop_ratio("lr", rl) == 2.0
    # CLT: 2 matmuls in the input layer, 3 in the others.
    clt = 2 * 24 * 256 + 3 * 256 * 256 + 3 * 256
    assert flop_ratio("clt", rl) == clt / (24 * 256 + 256 * 256 + 256)
    assert 2.9 < flop_ratio("clt", rl) < 3.0
    # Train step: 2x forward for the first layer (no input gradient), 3x for the others.
    dense_train = 2 * 256 * (2 * 24 * 256 + 3 * 256 * 256 + 3 * 256)
    assert matmul_flops("dense", rl, "train") == dense_train
    wide = SHAPES["wide"]
    assert flop_ratio("cltdet", wide) == (512 * 2048 + 2 * (2048 * 2048 + 2048)) / (
        512 * 2048 + 2048 * 2048 + 2048
    )
    with pytest.raises(ValueError, match="method"):
        matmul_flops("mcdropout", rl)
    with pytest.raises(ValueError, match="mode"):
        matmul_flops("dense", rl, "backward")


def test_time_call_repeats_and_median():
    """Budget 0 gives exactly ``min_repeats`` repeats of ``number`` calls after one warm-up;
    a call that sleeps 20 ms can never be timed below 20 ms."""
    calls = []

    def call():
        calls.append(1)
        time.sleep(0.02)
        return 0

    t = time_call(call, budget_s=0.0, min_repeats=3, max_repeats=10, sync=lambda _: None)
    assert t.repeats == 3 and t.number == 1
    assert len(calls) == 1 + t.repeats * t.number
    assert t.min_s >= 0.02 and t.median_s >= t.min_s
    with pytest.raises(ValueError, match="min_repeats"):
        time_call(call, budget_s=1.0, min_repeats=0)
    with pytest.raises(ValueError, match="budget_s"):
        time_call(call, budget_s=-1.0)


def test_config_rejects_unknown_names():
    with pytest.raises(ValueError, match="shapes"):
        Config(shapes=("huge",))
    with pytest.raises(ValueError, match="methods"):
        Config(methods=("mcdropout",))
    with pytest.raises(ValueError, match="torch"):
        Config(torch="yes")
    assert Config(methods=("clt",)).run_methods == ("dense", "clt")


def test_torch_comparison_reports_missing_torch(monkeypatch):
    """With torch unimportable (``sys.modules['torch'] = None`` makes the import fail) the
    comparison is skipped with a status, never an exception."""
    from benchmarks import torch_compare

    monkeypatch.setitem(sys.modules, "torch", None)
    assert torch_compare.torch_version() == "not installed"
    out = torch_compare.run_torch([SHAPES["rl"]], ["dense"], use_cuda=False, budget_s=0.0,
                                  min_repeats=1, max_repeats=1)
    assert out == {"status": "not installed"}
