"""Tests of ``BayesianCritic`` and ``value_bound``."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from bayeslayers_jax import BayesianCritic, BayesianMLP, CLTLinear, Ensemble, value_bound


def _sa(batch=5, seed=0):
    k1, k2 = jax.random.split(jax.random.key(seed))
    return (jax.random.normal(k1, (batch, 3), jnp.float64), jax.random.normal(k2, (batch, 1), jnp.float64))


@pytest.mark.parametrize("layer_type", ["clt", "cltdet", "lr", "bbb"])
def test_critic_is_the_mlp_on_the_concatenation(layer_type):
    critic = BayesianCritic((16,), layer_type=layer_type, param_dtype=jnp.float64)
    mlp = BayesianMLP((16, 1), layer_type=layer_type, param_dtype=jnp.float64)
    s, a = _sa()
    v = critic.init(jax.random.key(0), s, a)
    assert jax.tree.map(jnp.shape, v) == jax.tree.map(jnp.shape, mlp.init(jax.random.key(0), jnp.concatenate([s, a], -1)))
    x = jnp.concatenate([s, a], axis=-1)
    key = jax.random.key(2)
    if layer_type in ("clt", "cltdet"):
        mean, var = critic.apply(v, s, a)
        m_ref, v_ref = mlp.apply(v, x)
        assert mean.shape == var.shape == (5,)
        np.testing.assert_allclose(mean, m_ref[:, 0], rtol=1e-14)
        if v_ref is None:  # cltdet with a deterministic input: exact zeros
            assert np.all(np.asarray(var) == 0)
        else:
            np.testing.assert_allclose(var, v_ref[:, 0], rtol=1e-14)
        mean_map, var_map = critic.apply(v, s, a, map=True)
        np.testing.assert_allclose(mean_map, mlp.apply(v, x, map=True)[0][:, 0], rtol=1e-14)
        assert var_map.shape == (5,) and np.all(np.asarray(var_map) == 0)
    else:
        q = critic.apply(v, s, a, rng=key)
        assert q.shape == (5,)
        np.testing.assert_allclose(q, mlp.apply(v, x, rng=key)[:, 0], rtol=1e-14)
        np.testing.assert_allclose(critic.apply(v, s, a, map=True), mlp.apply(v, x, map=True)[:, 0], rtol=1e-14)


def test_critic_in_an_ensemble_has_member_axis():
    critic = BayesianCritic((16,), param_dtype=jnp.float64)
    ens = Ensemble(critic, 2)
    s, a = _sa()
    v = ens.init(jax.random.key(0), s, a)
    mean, var = ens.apply(v, s, a)
    assert mean.shape == var.shape == (2, 5)
    mean_map, var_map = ens.apply(v, s, a, map=True)
    assert var_map.shape == (2, 5) and np.all(np.asarray(var_map) == 0)


def _fit_constant(module, target, steps=300):
    s, a = _sa(batch=16)
    v = module.init(jax.random.key(0), s, a) if isinstance(module, BayesianCritic) else module.init(jax.random.key(0), jnp.concatenate([s, a], -1))
    opt = optax.adam(0.05)

    def loss(p):
        if isinstance(module, BayesianCritic):
            mean, _ = module.apply({**v, "params": p}, s, a)
        else:
            mean = module.apply({**v, "params": p}, jnp.concatenate([s, a], -1))[0][:, 0]
        return jnp.mean(jnp.square(mean - target))

    @jax.jit
    def step(p, o):
        g = jax.grad(loss)(p)
        with jax.numpy_dtype_promotion("standard"):  # optax's Adam bias correction: float ** int
            u, o = opt.update(g, o)
        return optax.apply_updates(p, u), o

    p, o = v["params"], opt.init(v["params"])
    for _ in range(steps):
        p, o = step(p, o)
    return float(jnp.sqrt(loss(p)))


def test_critic_fits_a_negative_value():
    """The output layer has no activation: the fit comes within 10 of a target of -100.

    (The same 300 Adam steps leave the trap below at an RMSE above 99.)"""
    assert _fit_constant(BayesianCritic((16,), param_dtype=jnp.float64), -100.0) < 10.0


def test_stack_whose_last_layer_has_an_activation_cannot_go_negative():
    """The documented trap: with ``is_output=False`` on the last layer the mean stays >= 0."""

    class Trap(BayesianMLP):
        def setup(self):
            self.layers = [CLTLinear(16, is_input=True, param_dtype=jnp.float64), CLTLinear(1, param_dtype=jnp.float64)]

    rmse = _fit_constant(Trap((16, 1), layer_type="clt"), -100.0)
    assert rmse > 99.0


def test_critic_rejects_mismatched_batches():
    critic = BayesianCritic((8,))
    with pytest.raises(ValueError, match=r"state .*\(5, 3\).*action .*\(4, 1\)"):
        critic.init(jax.random.key(0), jnp.ones((5, 3)), jnp.ones((4, 1)))


def test_value_bound_math_and_map():
    mean = jnp.array([1.0, -2.0], jnp.float64)
    var = jnp.array([4.0, 0.25], jnp.float64)
    np.testing.assert_allclose(value_bound((mean, var), -2.0), [1 - 4.0, -2 - 1.0], rtol=1e-15)
    np.testing.assert_allclose(value_bound((mean, var), 1.0), [3.0, -1.5], rtol=1e-15)
    np.testing.assert_array_equal(value_bound((mean, None), 3.0), mean)
    np.testing.assert_array_equal(value_bound((mean, jnp.zeros(2, jnp.float64)), 3.0), mean)
    np.testing.assert_array_equal(value_bound(mean, 3.0), mean)


def test_value_bound_gradient_finite_at_zero_variance():
    g = jax.grad(lambda v: jnp.sum(value_bound((jnp.zeros(2, jnp.float64), v), -1.0)))(jnp.zeros(2, jnp.float64))
    assert np.all(np.isfinite(g))


def test_value_bound_shape_mismatch_raises():
    with pytest.raises(ValueError, match=r"\(2,\).*\(2, 1\)"):
        value_bound((jnp.zeros(2), jnp.zeros((2, 1))), 1.0)
