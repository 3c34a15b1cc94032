"""The SAC example (examples/sac_pendulum.py) runs end to end for a few hundred steps."""

import importlib.util
import json
import math
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

pytest.importorskip("gymnasium")

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _load_example():
    spec = importlib.util.spec_from_file_location("sac_pendulum", os.path.join(REPO, "examples", "sac_pendulum.py"))
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # flax dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_sac_example_command_line(tmp_path):
    env = dict(os.environ)
    env["PYTHONPATH"] = REPO + os.pathsep + env.get("PYTHONPATH", "")
    out = tmp_path / "sac.json"
    proc = subprocess.run(
        [sys.executable, "-W", "error", os.path.join("examples", "sac_pendulum.py"), "--method", "clt",
         "--steps", "400", "--start-steps", "300", "--log-every", "200", "--hidden", "32",
         "--eval-episodes", "1", "--seed", "3", "--out", str(out)],
        capture_output=True, text=True, env=env, timeout=300, cwd=REPO,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "[clt seed 3] step    400" in proc.stdout and "ms/update" in proc.stdout
    result = json.loads(out.read_text())
    assert result["config"]["steps"] == 400 and result["config"]["method"] == "clt"
    assert len(result["episode_returns"]) == 2  # Pendulum episodes are 200 steps
    assert all(math.isfinite(r) for r in result["episode_returns"] + result["eval_returns"])
    assert result["ms_per_update_median"] > 0
    assert result["q_uncertainty"]["median_std"] > 0
    assert len(result["final_metrics"]["kl"]) == 2  # per-critic KL of the 2-member ensemble


@pytest.mark.slow
@pytest.mark.parametrize("method", ["lr", "dense"])  # clt: the command-line test
def test_sac_update_is_finite_and_targets_follow_by_polyak(method):
    sac = _load_example()
    cfg = sac.Config(method=method, hidden=16, critics=2, batch_size=32, steps=1000)
    agent, state = sac.make_agent(cfg, 3, 1, jax.random.key(0))
    rng = np.random.default_rng(0)
    batch = (jnp.asarray(rng.normal(size=(32, 3)), jnp.float32), jnp.asarray(rng.uniform(-2, 2, (32, 1)), jnp.float32),
             jnp.asarray(rng.normal(size=32), jnp.float32), jnp.asarray(rng.normal(size=(32, 3)), jnp.float32),
             jnp.zeros(32, jnp.float32))
    with jax.numpy_dtype_promotion("standard"):  # optax's Adam bias correction: float ** int
        new, metrics = agent.update(state, batch, jax.random.key(1))
    for leaf in jax.tree_util.tree_leaves((new, metrics)):
        assert np.all(np.isfinite(np.asarray(leaf)))
    assert metrics["nll"].shape == metrics["kl"].shape == (2,)
    if method == "dense":
        assert np.all(np.asarray(metrics["kl"]) == 0)  # plain SAC: no KL term
    else:
        assert np.all(np.asarray(metrics["kl"]) > 0)
    expected = optax.incremental_update(new["critic"], state["target"], cfg.tau)
    for got, want in zip(jax.tree_util.tree_leaves(new["target"]), jax.tree_util.tree_leaves(expected)):
        np.testing.assert_allclose(got, want, rtol=1e-6)
    # The critics moved (one Adam step of size about lr on every weight).
    moved = [np.max(np.abs(np.asarray(a) - np.asarray(b)))
             for a, b in zip(jax.tree_util.tree_leaves(new["critic"]), jax.tree_util.tree_leaves(state["critic"]))]
    assert max(moved) > 0.5 * cfg.lr
