"""Tests of the benchmark suite (``python -m benchmarks``).

The suite's numbers are timings, which are never asserted. These tests check that the
``--smoke`` run works end to end (outside the tracked ``benchmarks/results/``) and writes
valid JSON and Markdown with the expected content, and check the parts that are exact: the
FLOP model (against counts done by hand here), the timer's repeat logic, the target
evaluation, argument validation, and that the PyTorch comparison times the same objective
as the JAX side with ObjectRL's own layers (when torch and objectrl are installed).
"""

import io
import json
import math
import os
import sys
import time

import numpy as np
import pytest

from benchmarks.flops import METHODS, SHAPES, Shape, flop_ratio, matmul_flops
from benchmarks.suite import TARGETS, Config, evaluate_targets
from benchmarks.timing import time_call, time_interleaved

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS = os.path.join(REPO, "benchmarks", "results")


def _torch_ready():
    from benchmarks import torch_compare

    return torch_compare.availability() == "ok"


needs_objectrl = pytest.mark.skipif(not _torch_ready(), reason="torch or objectrl not installed")


def _run_cli(run_with_progress, tmp, args, label):
    """Runs ``python -m benchmarks *args`` in a fresh CPU process with ``TMPDIR=tmp`` (so the
    default output folders of smoke runs land there); returns ``(proc, before, after)`` with
    the listings of the tracked ``benchmarks/results/`` before and after."""
    env = dict(os.environ)
    env["PYTHONPATH"] = REPO + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env["JAX_PLATFORMS"] = "cpu"
    env["TMPDIR"] = str(tmp)
    before = sorted(os.listdir(RESULTS))
    proc = run_with_progress([sys.executable, "-m", "benchmarks", *args], label=label, cwd=REPO,
                             env=env, timeout=900)
    return proc, before, sorted(os.listdir(RESULTS))


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory, run_with_progress):
    """Runs ``python -m benchmarks --smoke`` once in a fresh process (float32, default JAX
    configuration, unaffected by this test session's x64 and strict-promotion settings),
    with its default output folder: ``TMPDIR`` points into this test's temporary folder."""
    tmp = tmp_path_factory.mktemp("bench")
    # Compiled at XLA's default optimization level: --xla_backend_optimization_level=0 saved
    # little here and its code gives NaN actor gradients in the SAC update with 2 LR critics
    # (jitted only; the same update is finite eagerly and at the default level).
    proc, before, after = _run_cli(run_with_progress, tmp, ["--smoke"], "benchmarks --smoke")
    return proc, tmp / "bayeslayers_jax_benchmarks_smoke", before, after


@pytest.mark.slow
def test_smoke_run_writes_json_and_markdown(smoke_run):
    proc, out, before, after = smoke_run
    assert proc.returncode == 0, proc.stderr[-3000:]
    # The smoke run writes into the temporary folder, never into the tracked results.
    assert before == after
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
    expected = {"meta", "device", "config", "shapes", "records", "mc", "ensemble", "rl_update",
                "memory", "torch", "targets"}
    assert expected <= set(results)
    assert results["device"]["platform"] == "cpu"
    assert results["config"]["smoke"] is True and results["config"]["torch_compile"] is False

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

    # --smoke times the Dense and CLT ensembles: forward and train, vmapped and separate.
    ensemble = {e["method"]: e for e in results["ensemble"]}
    assert set(ensemble) == {"dense", "clt"}
    for e in ensemble.values():
        assert e["members"] == 10 and e["shape"] == "rl"
        assert e["forward"]["speedup"] > 0 and e["train"]["speedup"] > 0
        assert e["train"]["one_s"] > 0 and e["train"]["vmapped_over_one"] > 0

    # The SAC update: Dense, LR and CLT critics, 2 critics 128 wide, finite losses.
    sac = {r["critic"]: r for r in results["rl_update"]}
    assert set(sac) == {"dense", "lr", "clt"}
    assert all((r["members"], r["width"]) == (2, 128) and r["losses_finite"] for r in sac.values())
    assert sac["dense"]["ratio_to_dense"] == 1.0

    # The user-style rows (benchmarks/natural.py): every row once, timed in the train group,
    # with the ratios to its Dense twin and to the suite's own step of the same method.
    natural = {r["row"]: r for r in results["natural"]}
    assert set(natural) == {"natural/dense", "natural/bbb", "natural/lr", "natural/clt",
                            "propagate/clt", "bayesianize/lr"}
    twin = natural["natural/dense"]["median_s"]
    for row, r in natural.items():
        assert r["shape"] == "rl" and r["final_loss_finite"] is True and r["compile_s"] > 0
        assert math.isclose(r["ratio_to_twin"], r["median_s"] / twin, rel_tol=1e-12)
        assert math.isclose(r["ratio_to_suite"],
                            r["median_s"] / records[("rl", r["method"], "train")]["median_s"],
                            rel_tol=1e-12)
    assert natural["natural/dense"]["ratio_to_twin"] == 1.0

    torch = results["torch"]
    if _torch_ready():
        assert torch["status"] == "ok" and torch["omp_wait_policy"]
        steps = {(r["method"], r["impl"]): r for r in torch["records"]}
        assert set(steps) == {(m, "eager") for m in ("dense", "bbb", "lr", "clt")}  # no compile
        for (method, _), r in steps.items():
            assert r["median_s"] > 0 and r["final_loss_finite"] is True
            assert math.isclose(r["ours_over_torch"],
                                records[("rl", method, "train")]["median_s"] / r["median_s"])
    else:
        assert torch["status"] != "ok"

    # Every CPU target is reported; those of the smoke run's scope carry a measured value.
    assert len(results["targets"]) == sum(t["platform"] == "cpu" for t in TARGETS)
    for t in results["targets"]:
        in_scope = (t.get("shape", "rl") == "rl" and t.get("width", 128) == 128
                    and t.get("method") in ("dense", "clt", "lr", "bbb")
                    and (t["kind"] != "vs_objectrl" or (_torch_ready() and t["impl"] == "eager"))
                    and (t["kind"] != "ensemble_speedup" or t["method"] in ensemble))
        assert (t["measured"] is not None) == in_scope, t
        assert t["met"] in ((True, False) if in_scope else (None,))

    with open(out / md_name, encoding="utf-8") as fh:
        md = fh.read()
    assert "| rl | `propagate/clt` |" in md
    for heading in ("## RL critic (rl)", "## Targets", "## Monte Carlo predictive", "## Train steps written",
                    "## Ensembles", "## SAC update", "## Memory", "## PyTorch comparison"):
        assert heading in md
    for name in ("Dense", "MAP", "BBB", "LR", "CLT", "CLTDet"):
        assert f"| {name} |" in md


def test_natural_rows_optimize_the_suites_objective():
    """The deterministic-objective user-style rows (``natural/dense``, ``natural/clt``,
    ``propagate/clt``) have exactly the suite's loss (``elbo_loss`` of ``BayesianMLP``,
    ``gaussian_nll`` for Dense) on the same parameters and batch, so they time the same
    objective; parameter trees are mapped by layer index (``propagate/clt`` gets the CLT
    network's means and ``rho``). float32, three layers: rtol 1e-5. Each step runs and gives
    a finite loss (the sampling rows are exercised by the smoke run)."""
    import jax
    import optax

    from benchmarks import models, natural

    shape = Shape("t", 16, (3, 8, 8, 1), 2, "test")
    with jax.enable_x64(False), jax.numpy_dtype_promotion("standard"):
        x = jax.random.normal(jax.random.key(0), (16, 3))
        y = jax.random.normal(jax.random.key(1), (16, 1))
        key = jax.random.PRNGKey(2)
        tx = optax.adam(1e-3)
        for row, method in (("natural/dense", "dense"), ("natural/clt", "clt"), ("propagate/clt", "clt")):
            ns = natural.build_natural_step(row, shape, jax.random.PRNGKey(3), tx)
            net = models.build_network(method, shape, jax.random.PRNGKey(4))
            suite_params = net.params
            layers = [suite_params[f"layers_{i}"] if method != "dense" else suite_params[f"Dense_{i}"]
                      for i in range(3)]
            if row == "natural/dense":
                params = {f"Dense_{i}": layers[i] for i in range(3)}
            elif row == "natural/clt":
                params = {f"CLTLinear_{i}": layers[i] for i in range(3)}
            else:
                params = {"mu": {f"Dense_{i}": {"kernel": p["weight_mu"], "bias": p["bias_mu"]}
                                 for i, p in enumerate(layers)},
                          "rho": {f"Dense_{i}": {"kernel": p["weight_rho"], "bias": p["bias_rho"]}
                                  for i, p in enumerate(layers)}}
            ours = float(ns.loss(params, x, y, key))
            suite = float(net.loss(suite_params, net.rest, x, y, key))
            assert ours == pytest.approx(suite, rel=1e-5), row
            _, _, _, loss = ns.step(*ns.state, x, y)
            assert np.isfinite(float(loss)), row
        with pytest.raises(ValueError, match="unknown natural row"):
            natural.build_natural_step("natural/map", shape, key, tx)


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


@pytest.mark.slow  # compiles the forward pass and train step of six conv networks
def test_conv_shape_counts_flops_builds_and_trains():
    """The conv shape: FLOPs of its im2col matmuls by hand; every method builds and trains."""
    import jax
    import optax

    from benchmarks import models

    conv = SHAPES["conv"]
    assert conv.input_shape == (64, 16, 16, 3)
    assert conv.label() == "batch 64, 16x16x3 -> conv3x3 32 -> conv3x3 32 -> avg pool -> 10"
    rows = 64 * 16 * 16
    assert matmul_flops("dense", conv) == 2 * rows * (9 * 3 * 32 + 9 * 32 * 32) + 2 * 64 * 32 * 10
    clt = rows * (2 * 9 * 3 * 32 + 3 * 9 * 32 * 32) + 64 * 3 * 32 * 10
    assert flop_ratio("clt", conv) == clt / (rows * (9 * 3 * 32 + 9 * 32 * 32) + 64 * 32 * 10)
    tiny = Shape("tiny", 4, (2, 3, 2), 2, "tiny conv", spatial=(5, 5))
    tx = optax.adam(1e-3)
    # The suite runs under JAX's defaults (float32, standard promotion), as the smoke run does.
    with jax.enable_x64(False), jax.numpy_dtype_promotion("standard"):
        x = jax.random.normal(jax.random.key(0), tiny.input_shape)
        y = jax.random.normal(jax.random.key(1), (4, 2))
        for method in METHODS:
            net = models.build_network(method, tiny, jax.random.key(2))
            out = net.forward(net.variables, x, jax.random.key(3))
            mean = out[0] if isinstance(out, tuple) else out
            assert mean.shape == (4, 2), method
            state = (net.params, tx.init(net.params), jax.random.key(4))
            _, loss = models.make_train_step(net, tx)(state, net.rest, x, y)
            assert np.isfinite(float(loss)), method


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
    # A call declared warm (it ran before, taking 20 ms) gets no warm-up call.
    calls.clear()
    t = time_interleaved({"c": call}, budget_s=0.0, min_repeats=2, sync=lambda _: None,
                         warm={"c": 0.02})
    assert len(calls) == t["c"].repeats * t["c"].number == 2
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
    with pytest.raises(ValueError, match="rl_critics"):
        Config(rl_critics=("bbb",))
    with pytest.raises(ValueError, match="torch_compile_methods"):
        Config(torch_compile_methods=("cltdet",))
    with pytest.raises(ValueError, match="rl_members"):
        Config(rl_members=(0,))
    assert Config(methods=("clt",)).run_methods == ("dense", "clt")
    assert Config(rl_critics=("clt",)).run_rl_critics == ("dense", "clt")
    assert Config().shapes == ("rl", "mid", "wide")


def test_smoke_and_gpu_presets():
    """``--smoke`` writes outside the tracked results by default and skips torch.compile;
    ``--preset gpu-quick`` is bounded (soft time limit) and options override it."""
    from benchmarks.__main__ import SMOKE_OUT, _config, parse_args

    assert os.path.commonpath([SMOKE_OUT, RESULTS]) != RESULTS
    smoke = _config(parse_args(["--smoke"]))
    assert smoke.smoke and not smoke.torch_compile and smoke.shapes == ("rl",)
    assert smoke.rl_members == (2,) and smoke.rl_widths == (128,)
    gpu = _config(parse_args(["--preset", "gpu-quick"]))
    assert gpu.max_minutes is not None and gpu.max_minutes <= 8
    assert gpu.torch_compile_methods == ("clt",) and "clt" in gpu.ensemble_methods
    assert _config(parse_args(["--preset", "gpu-quick", "--shapes", "rl"])).shapes == ("rl",)


def _fake_results(platform="cpu"):
    """Results holding exactly one measurement per target kind, with known values."""
    return {
        "device": {"platform": platform},
        "records": [{"shape": "rl", "method": "clt", "mode": "train", "ratio_to_dense": 3.5},
                    {"shape": "rl", "method": "lr", "mode": "forward", "ratio_to_dense": 1.0}],
        "torch": {"status": "ok", "records": [
            {"shape": "mid", "method": "lr", "impl": "compile", "ours_over_torch": 0.8},
            {"shape": "mid", "method": "lr", "impl": "eager", "error": "failed"}]},
        "rl_update": [{"critic": "clt", "members": 2, "width": 256, "ratio_to_dense": 2.9},
                      {"critic": "lr", "members": 2, "width": 128, "skipped": "time limit"}],
        "ensemble": [{"shape": "rl", "method": "clt", "members": 10,
                      "forward": {"speedup": 1.2},
                      "train": {"speedup": 2.0, "vmapped_s": 3.0, "one_s": 1.0}}],
    }


def test_evaluate_targets_reads_each_kind():
    by_key = {}
    for t in evaluate_targets(_fake_results()):
        by_key[(t["kind"], t.get("shape"), t["method"], t.get("impl"), t.get("mode"), t.get("width"))] = t
    assert by_key[("ratio", "rl", "clt", None, None, None)]["measured"] == 3.5
    assert by_key[("ratio", "rl", "clt", None, None, None)]["met"] is False  # limit 3.4
    assert by_key[("ratio", "rl", "lr", None, None, None)]["measured"] is None  # forward only
    t = by_key[("vs_objectrl", "mid", "lr", "compile", None, None)]
    assert (t["measured"], t["met"]) == (0.8, True)
    assert by_key[("vs_objectrl", "mid", "lr", "eager", None, None)]["met"] is None  # an error
    assert by_key[("sac_ratio", None, "clt", None, None, 256)]["met"] is True  # 2.9 <= 3
    assert by_key[("sac_ratio", None, "lr", None, None, 128)]["measured"] is None  # skipped
    assert by_key[("ensemble_speedup", "rl", "clt", None, "forward", None)]["met"] is False
    assert by_key[("ensemble_speedup", "rl", "clt", None, "train", None)]["met"] is True
    gpu = {t["kind"]: t for t in evaluate_targets(_fake_results("gpu"))}
    assert gpu["ensemble_vs_one"]["measured"] == 3.0 and gpu["ensemble_vs_one"]["met"] is False
    assert evaluate_targets(_fake_results("tpu")) == []


def test_time_limit_skips_work_and_reports_it():
    """With a soft limit already spent, every unit of work is skipped and reported as
    skipped: the results and the Markdown still come out, every target unmeasured."""
    from benchmarks.report import markdown_report
    from benchmarks.suite import run_suite

    cfg = Config(shapes=("rl",), torch="off", max_minutes=0.0, rl_members=(2,), rl_widths=(128,))
    results = run_suite(cfg, stream=io.StringIO())
    assert results["records"] == [] and results["ensemble"] == []
    assert results["meta"]["skipped"] and "time limit" in results["meta"]["skipped"][0]
    assert {r["critic"] for r in results["rl_update"]} == {"dense", "lr", "clt"}
    assert all("time limit" in r["skipped"] for r in results["rl_update"])
    assert all(t["measured"] is None and t["met"] is None for t in results["targets"])
    md = markdown_report(results)
    assert "skipped" in md and "## Targets" in md


def test_torch_comparison_reports_missing_torch(monkeypatch):
    """With torch unimportable (``sys.modules['torch'] = None`` makes the import fail) the
    comparison is skipped with a status, never an exception."""
    from benchmarks import suite, torch_compare

    monkeypatch.setitem(sys.modules, "torch", None)
    assert torch_compare.torch_version() == "not installed"
    assert torch_compare.availability() == "torch not installed"
    assert suite._torch_info(Config(), "cpu") == {"status": "torch not installed"}
    assert suite._torch_info(Config(torch="off"), "cpu") == {"status": "off"}


@needs_objectrl
def test_objectrl_clt_cannot_backpropagate_and_the_twin_matches_it():
    """ObjectRL's CLTLinear as shipped fails in backward (in-place writes); the twin the
    suite times gives bit-identical forward moments and finite gradients."""
    import torch
    from objectrl.nets.layers.bayesian_layers import CLTLinear

    from benchmarks.torch_compare import clt_twin_class

    twin_cls = clt_twin_class()
    torch.manual_seed(0)
    widths = (3, 16, 16, 1)
    shipped = [CLTLinear(widths[i], widths[i + 1], is_input=i == 0, is_output=i == 2)
               for i in range(3)]
    twins = [twin_cls(widths[i], widths[i + 1], is_input=i == 0, is_output=i == 2)
             for i in range(3)]
    for a, b in zip(shipped, twins):
        b.load_state_dict(a.state_dict())
    x = torch.randn(32, 3)

    def run(layers):
        mean, var = x, None
        for layer in layers:
            mean, var = layer(mean, var)
        return mean, var

    mean_s, var_s = run(shipped)
    with pytest.raises(RuntimeError, match="inplace operation"):
        (mean_s.sum() + var_s.sum()).backward()
    mean_t, var_t = run(twins)
    assert torch.equal(mean_t, mean_s.detach()) and torch.equal(var_t, var_s.detach())
    (mean_t.sum() + var_t.sum()).backward()
    assert all(torch.isfinite(p.grad).all() for layer in twins for p in layer.parameters())


@needs_objectrl
@pytest.mark.parametrize("method", ["dense", "clt"])
def test_torch_loss_is_the_jax_loss(method):
    """The PyTorch step's objective (ObjectRL layers) equals the JAX suite's
    (``elbo_loss`` / ``gaussian_nll``) on the same parameters: the deterministic methods,
    ported with ``port_objectrl_mlp``; float32 on both sides, so agreement to a few ulp of
    the loss times the accumulation depth (rtol 1e-5)."""
    import jax
    import jax.numpy as jnp
    import torch

    from bayeslayers_jax.porting import port_objectrl_mlp
    from benchmarks import models, torch_compare

    shape = Shape("t", 64, (5, 16, 16, 1), 2, "test")
    torch.manual_seed(1)
    layers = torch_compare.network(method, shape)
    # Spread the std parameters so the KL and the variances are not all alike.
    with torch.no_grad():
        for layer in layers:
            for name, p in layer.named_parameters():
                if "rho" in name:
                    p.uniform_(-5.0, -1.0)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((shape.batch, 5)).astype(np.float32)
    y = rng.standard_normal((shape.batch, 1)).astype(np.float32)
    torch_loss = float(torch_compare.loss_fn(method, layers, shape.batch)(
        torch.from_numpy(x), torch.from_numpy(y)).detach())

    net = models.build_network(method, shape, jax.random.PRNGKey(0))
    state = {k: v.detach().numpy() for k, v in layers.state_dict().items()}
    if method == "dense":
        params = {f"Dense_{i}": {"kernel": jnp.asarray(state[f"{i}.weight"].T),
                                 "bias": jnp.asarray(state[f"{i}.bias"])} for i in range(3)}
        variables = {"params": params}
    else:
        variables = port_objectrl_mlp(state, net.module)
    rest = {k: v for k, v in variables.items() if k != "params"}
    jax_loss = float(net.loss(variables["params"], rest, jnp.asarray(x), jnp.asarray(y),
                              jax.random.PRNGKey(0)))
    assert jax_loss == pytest.approx(torch_loss, rel=1e-5)


def test_tanh_gaussian_actor_log_prob():
    """The SAC actor's log-density with the stable tanh correction equals
    ``log N(u; mean, std) - sum log(1 - tanh(u)**2)`` evaluated directly in float64 from the
    same pre-squash sample ``u`` (the actor runs in float32: rtol 1e-5)."""
    import jax
    import jax.numpy as jnp

    from benchmarks.rl_update import TanhGaussianActor

    actor = TanhGaussianActor(act_dim=3, width=8)
    s = jnp.asarray(np.random.default_rng(0).standard_normal((16, 4)), jnp.float32)
    params = actor.init(jax.random.PRNGKey(0), s, jax.random.PRNGKey(1))["params"]
    key = jax.random.PRNGKey(2)
    action, log_prob = actor.apply({"params": params}, s, key)

    p = jax.tree_util.tree_map(lambda a: np.asarray(a, np.float64), params)
    h = np.maximum(np.asarray(s, np.float64) @ p["Dense_0"]["kernel"] + p["Dense_0"]["bias"], 0)
    h = np.maximum(h @ p["Dense_1"]["kernel"] + p["Dense_1"]["bias"], 0)
    out = h @ p["Dense_2"]["kernel"] + p["Dense_2"]["bias"]
    mean, log_std = out[:, :3], np.clip(out[:, 3:], -5.0, 2.0)
    eps = np.asarray(jax.random.normal(key, (16, 3), jnp.float32), np.float64)
    u = mean + np.exp(log_std) * eps
    direct = np.sum(-0.5 * ((u - mean) / np.exp(log_std)) ** 2 - log_std - 0.5 * np.log(2 * np.pi)
                    - np.log1p(-np.tanh(u) ** 2), axis=-1)
    assert action.shape == (16, 3) and log_prob.dtype == jnp.float32
    np.testing.assert_allclose(np.asarray(action, np.float64), np.tanh(u), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.asarray(log_prob, np.float64), direct, rtol=1e-5, atol=1e-5)


# ----------------------------------------------------------------------------------------------
# The real-data uncertainty benchmark (python -m benchmarks uq)


def test_uq_splits_are_disjoint_standardized_and_stratified():
    """Digits 0-4 vs 5-9: train, validation and test parts never share an image, the OOD part
    is exactly the 5-9 images, the training inputs are standardized (mean 0, std 1 or 0 for a
    constant pixel, float32 round-off), and the stratified test part holds every class in the
    proportion of the 0-4 data (within one image per class)."""
    from sklearn.datasets import load_digits

    from benchmarks.uq import TASKS, load_task

    task = TASKS["digits"]
    data = load_task(task, seed=0)
    x_all, y_all = load_digits(return_X_y=True)
    n_in, n_ood = int(np.sum(y_all < 5)), int(np.sum(y_all >= 5))
    s, n_train, d = data["x_train"].shape
    assert (s, d) == (task.num_splits, 64)
    assert n_train + data["n_val"] + data["n_test"] == n_in and data["n_ood"] == n_ood
    assert data["n_test"] == math.ceil(task.test_fraction * n_in)  # scikit-learn rounds up
    x = data["x_train"][0].astype(np.float64)
    np.testing.assert_allclose(x.mean(axis=0), 0.0, atol=1e-5)
    std = x.std(axis=0)
    assert np.all((np.abs(std - 1.0) < 1e-4) | (std < 1e-6))
    # Labels: the OOD part is marked -1, the rest are 0-4 in the data's class proportions.
    y_eval = data["y_eval"][0]
    n_val, n_test = data["n_val"], data["n_test"]
    assert np.all(y_eval[n_val + n_test:] == -1) and np.all(y_eval[: n_val + n_test] >= 0)
    counts = np.bincount(y_eval[n_val: n_val + n_test], minlength=5)
    expected = np.bincount(y_all[y_all < 5]) * n_test / n_in
    assert np.all(np.abs(counts - expected) <= 1.0)
    # Disjoint parts that together are the 0-4 images, in every split; the rows are those images.
    x_in = x_all[y_all < 5]
    for split in range(s):
        train, val, test = (data["indices"][part][split] for part in ("train", "val", "test"))
        assert sorted(np.concatenate([train, val, test]).tolist()) == list(range(n_in))
        mean, sd = x_in[train].mean(axis=0), x_in[train].std(axis=0)
        sd = np.where(sd > 0, sd, 1.0)
        np.testing.assert_allclose(data["x_eval"][split][:n_val], (x_in[val] - mean) / sd, atol=1e-5)
    assert not np.array_equal(data["indices"]["test"][0], data["indices"]["test"][1])


def test_uq_select_budget_uses_validation_mean_and_never_nan():
    """The budget is the grid epoch with the lowest validation NLL averaged over splits; a
    checkpoint where a split diverged (NaN) never wins, ties go to the earlier epoch, and the
    long budget is not a candidate unless it is in the grid."""
    from benchmarks.uq import select_budget

    record = {"checkpoints": [10, 20, 40, 100],
              "metrics": {"val_nll": [[1.0, 0.8], [0.7, 0.7], [float("nan"), 0.1], [0.0, 0.0]]}}
    assert select_budget(record, (10, 20, 40)) == 20
    record["metrics"]["val_nll"][0] = [0.7, 0.7]
    assert select_budget(record, (10, 20, 40)) == 10


def test_uq_regression_metrics_by_hand():
    """Two equally weighted components, means 0 and 2 (mixture mean 1, spread variance 1),
    each with epistemic variance 0.5 and learned noise 0.25: total variance 1.75. Validation
    residuals +-2, +-3 (mean square 6.5) refit the noise to 6.5 - 1.5 = 5.0. Test targets 1
    and 3 (residuals 0, 2); target std 10, so NLLs gain log 10 and RMSE and stds scale by 10."""
    import jax.numpy as jnp

    from benchmarks.uq import _regression_metrics

    def gauss_nll(r, var):
        return 0.5 * math.log(2 * math.pi * var) + r * r / (2 * var)

    def pdf(x, mu, var):
        return math.exp(-(x - mu) ** 2 / (2 * var)) / math.sqrt(2 * math.pi * var)

    y = jnp.array([3.0, -1.0, 4.0, -2.0, 1.0, 3.0])[:, None]
    means = jnp.stack([jnp.zeros((6, 1)), jnp.full((6, 1), 2.0)])
    got = _regression_metrics((means, jnp.full((2, 6, 1), 0.5), jnp.full((2, 6, 1), 0.25)),
                              y, jnp.asarray(10.0), 4, 2)
    log10 = math.log(10.0)
    expected = {
        "val_nll": (2 * gauss_nll(2.0, 1.75) + 2 * gauss_nll(3.0, 1.75)) / 4 + log10,
        "nll": (gauss_nll(0.0, 1.75) + gauss_nll(2.0, 1.75)) / 2 + log10,
        "mixture_nll": -sum(math.log(0.5 * pdf(t, 0.0, 0.75) + 0.5 * pdf(t, 2.0, 0.75))
                            for t in (1.0, 3.0)) / 2 + log10,
        "rmse": math.sqrt(2.0) * 10.0,
        "coverage": 1.0,  # |r| <= 1.96 sqrt(1.75) = 2.59
        "noise_std": 5.0,
        "nll_cal": (gauss_nll(0.0, 6.5) + gauss_nll(2.0, 6.5)) / 2 + log10,
        "coverage_cal": 1.0,
        "noise_std_cal": math.sqrt(5.0) * 10.0,
        "epistemic_std": math.sqrt(1.5) * 10.0,
    }
    assert sorted(got) == sorted(expected)
    for key, value in expected.items():
        assert float(got[key]) == pytest.approx(value, rel=1e-9), key


def test_uq_clt_target_rule():
    """Met when CLT's NLL and ECE are at most LR's mean + LR's standard error (and its AUROC
    at least LR's mean - standard error); the paired difference is over the same splits."""
    from benchmarks.uq import clt_target, summarize

    def record(nll, ece):
        rec = {"checkpoints": [5], "train_s": [1.0], "metrics": {"nll": [nll], "ece": [ece]}}
        rec["selected"] = rec["long"] = summarize(rec, 5)
        return rec

    lr = record([1.0, 1.2, 1.4], [0.1, 0.1, 0.1])  # NLL mean 1.2, standard error 0.2 / sqrt(3)
    results = {"tasks": {"t": {"task": {"kind": "classification"}, "methods": {
        "lr": lr, "clt": record([1.1, 1.3, 1.5], [0.1, 0.1, 0.1])}}}}
    rows = clt_target(results)
    assert [r["budget"] for r in rows] == ["selected", "long"]
    check = rows[0]["checks"]["nll"]
    assert check["lr"]["se"] == pytest.approx(0.2 / math.sqrt(3))
    assert check["diff"]["mean"] == pytest.approx(0.1) and check["diff"]["se"] == pytest.approx(0.0, abs=1e-12)
    assert check["met"] and rows[0]["met"]  # 1.3 <= 1.2 + 0.1155
    results["tasks"]["t"]["methods"]["clt"] = record([1.2, 1.4, 1.6], [0.1, 0.1, 0.1])
    assert not clt_target(results)[0]["met"]  # 1.4 > 1.3155


def test_uq_cli_rejects_unknown_names(capsys):
    from benchmarks.__main__ import main

    assert main(["uq", "--tasks", "mnist"]) == 2
    assert "unknown task 'mnist'" in capsys.readouterr().err


@pytest.fixture(scope="module")
def uq_quick_run(tmp_path_factory, run_with_progress):
    """``python -m benchmarks uq --quick`` on diabetes and digits (every method, both kinds
    of metrics, OOD), in a fresh float32 process, with its default output folder in TMPDIR."""
    tmp = tmp_path_factory.mktemp("uq")
    proc, before, after = _run_cli(run_with_progress, tmp,
                                   ["uq", "--quick", "--tasks", "diabetes,digits"], "benchmarks uq --quick")
    return proc, tmp / "bayeslayers_jax_uq_quick", before, after


@pytest.mark.slow
def test_uq_quick_run(uq_quick_run):
    """Every method trains and is evaluated: finite metrics at every checkpoint, the selected
    budget from the grid, and numbers a working model must reach even after 6 epochs: digits
    accuracy above 0.8 (chance 0.2; every method is above 0.95 at 6 epochs), OOD AUROC above
    0.6 (chance 0.5), diabetes RMSE below 70 (predicting the training mean gives the target's
    std, about 77) and a 95% coverage in [0, 1]."""
    from benchmarks.uq import CLASSIFICATION_ONLY, METHODS

    proc, out, before, after = uq_quick_run
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert before == after  # never writes into the tracked results
    files = sorted(os.listdir(out))
    assert len(files) == 2 and files[0].startswith("uq_cpu-") and files[0].endswith("_quick.json")
    assert "digits/clt: epoch    6" in proc.stderr and "selected budget" in proc.stderr
    assert "| method | epochs | NLL | mixture NLL | RMSE | 95% coverage | noise std |" in proc.stdout
    assert "| method | epochs | NLL | accuracy | ECE | AUROC entropy | AUROC MI | train s |" in proc.stdout
    with open(out / files[0], encoding="utf-8") as fh:
        results = json.load(fh)
    assert list(results["tasks"]) == ["diabetes", "digits"]
    for task_name, entry in results["tasks"].items():
        expected = [m for m in METHODS if task_name == "digits" or m not in CLASSIFICATION_ONLY]
        assert list(entry["methods"]) == expected
        for name, record in entry["methods"].items():
            assert record["checkpoints"] == [2, 4, 6]
            assert record["selected"]["epochs"] in (2, 4) and record["long"]["epochs"] == 6
            for metric, per_checkpoint in record["metrics"].items():
                assert np.all(np.isfinite(per_checkpoint)), (task_name, name, metric)
            long = record["long"]
            if task_name == "diabetes":
                assert long["rmse"]["mean"] < 70.0, name
                assert 0.0 <= long["coverage"]["mean"] <= 1.0
            else:
                assert long["accuracy"]["mean"] > 0.8, name
                assert long["auroc_entropy"]["mean"] > 0.6, name
                assert ("auroc_mi" in long) == (name != "map"), name
    assert [row["task"] for row in results["clt_target"]] == ["digits", "digits"]
