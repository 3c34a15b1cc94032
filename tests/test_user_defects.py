"""Regression tests for the defects a new user hit (issue 20): each fails on the old code."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import bayeslayers_jax as bl


def _kl_numpy(params, prior_mean, prior_std):
    """Closed-form KL(N(mu, exp(rho)^2) || N(m, s^2)) summed, in float64 NumPy."""
    total = 0.0
    for kind in ("weight", "bias"):
        mu = np.asarray(params[f"{kind}_mu"], np.float64)
        std = np.exp(np.asarray(params[f"{kind}_rho"], np.float64))
        total += np.sum(np.log(prior_std / std) + (std**2 + (mu - prior_mean) ** 2) / (2 * prior_std**2) - 0.5)
    return total


# ------------------------------------------------------------------ 1. the 'prior' collection
@pytest.mark.parametrize("layer_type", ["lr", "clt"])
def test_apply_without_prior_collection_raises_instead_of_using_the_default(layer_type):
    x = jnp.linspace(-1.0, 1.0, 6, dtype=jnp.float32).reshape(3, 2)
    model = bl.BayesianMLP((4, 1), layer_type=layer_type)
    variables = bl.update_prior(model.init(jax.random.key(0), x), "layers_1", weight_std=0.5)
    rngs = {"sample": jax.random.key(1)}
    _, coll = model.apply(variables, x, rngs=rngs, mutable=["kl"])
    # The full variables use the updated prior: the KL of layers_1 is the N(0, 0.5^2) one
    # (weights) and N(0, 1) (bias), to float64 rounding.
    p1 = variables["params"]["layers_1"]
    want = _kl_numpy({"weight_mu": p1["weight_mu"], "weight_rho": p1["weight_rho"],
                      "bias_mu": np.zeros(0), "bias_rho": np.zeros(0)}, 0.0, 0.5)
    want += _kl_numpy({"weight_mu": np.zeros(0), "weight_rho": np.zeros(0),
                       "bias_mu": p1["bias_mu"], "bias_rho": p1["bias_rho"]}, 0.0, 1.0)
    np.testing.assert_allclose(float(coll["kl"]["layers_1"]["kl"]), want, rtol=1e-5)  # float32 params: a few ulps of ~20 terms
    with pytest.raises(ValueError, match=r"'prior'.*model\.apply\(variables"):
        model.apply({"params": variables["params"]}, x, rngs=rngs, mutable=["kl"])
    with pytest.raises(ValueError, match="'prior'"):  # also without collecting the KL
        model.apply({"params": variables["params"]}, x, rngs=rngs)
    # The suggested fix works.
    fixed = {"params": variables["params"], "prior": variables["prior"]}
    _, coll2 = model.apply(fixed, x, rngs=rngs, mutable=["kl"])
    assert float(coll2["kl"]["layers_1"]["kl"]) == float(coll["kl"]["layers_1"]["kl"])


def test_kl_view_and_conv_layers_need_the_prior_too():
    x = jnp.ones((1, 4, 4, 1), jnp.float32)
    conv = bl.BBBConv(2, kernel_size=(3, 3))
    v = conv.init(jax.random.key(0), x, rng=jax.random.key(1))
    with pytest.raises(ValueError, match="'prior'"):
        conv.apply({"params": v["params"]}, x, rng=jax.random.key(2))
    dense = bl.LRLinear(2)
    vd = dense.init(jax.random.key(0), jnp.ones((1, 3), jnp.float32))
    with pytest.raises(ValueError, match="'prior'"):
        dense.apply({"params": vd["params"]}, method="kl")
    np.testing.assert_allclose(float(dense.apply(vd, method="kl")), _kl_numpy(vd["params"], 0.0, 1.0), rtol=1e-5)  # float32 params: a few ulps of ~20 terms


def test_deterministic_clt_layer_has_no_prior_and_is_unaffected():
    x = jnp.ones((2, 3), jnp.float32)
    layer = bl.CLTLinearDet(2, is_input=True)
    v = layer.init(jax.random.key(0), x)
    assert "prior" not in v
    mean, var = layer.apply({"params": v["params"]}, x)
    assert mean.shape == (2, 2) and var is None


# ------------------------------------------------------- 2./4. predictive with the wrong mode
def test_predictive_clt_mode_on_a_sampling_model_says_it_is_not_clt():
    x = jnp.ones((2, 3), jnp.float32)
    model = bl.BayesianMLP((4, 1), layer_type="lr")
    v = model.init(jax.random.key(0), x)
    with pytest.raises(ValueError, match=r"not|single array") as err:
        bl.predictive(model, v, x, mode="clt", key=jax.random.key(1))
    msg = str(err.value)
    assert "single array" in msg and "'sample'" in msg and "'map'" in msg and "PRNG" not in msg
    with pytest.raises(ValueError, match="single array"):
        bl.predictive_probs(model, v, x, mode="clt", key=jax.random.key(1))


def test_predictive_sample_mode_on_a_clt_model_says_it_returns_mean_var():
    x = jnp.ones((2, 3), jnp.float32)
    model = bl.BayesianMLP((4, 1), layer_type="clt")
    v = model.init(jax.random.key(0), x)
    with pytest.raises(ValueError, match=r"\(mean, var\).*mode='clt'"):
        bl.predictive(model, v, x, mode="sample", key=jax.random.key(1), num_samples=4)
    with pytest.raises(ValueError, match=r"\(mean, var\)"):
        bl.predictive_probs(model, v, x, mode="sample", key=jax.random.key(1), num_samples=4)


# --------------------------------------------------------------- 3./4. a tuple as one input
def test_tuple_into_a_clt_layer_raises_at_init_with_the_fix():
    x = jnp.ones((2, 3), jnp.float32)
    first = bl.CLTLinear(4, is_input=True)
    out = first.apply(first.init(jax.random.key(0), x), x)
    second = bl.CLTLinear(2)
    with pytest.raises(ValueError, match=r"layer\(mean, var\)"):
        second.init(jax.random.key(1), out)


def test_tuple_into_an_nnx_clt_layer_raises_with_the_fix():
    from bayeslayers_jax import nnx as bnn
    from flax import nnx

    layer = bnn.CLTLinear(4, 2, rngs=nnx.Rngs(0))
    m = jnp.ones((2, 4), jnp.float32)
    with pytest.raises(ValueError, match=r"layer\(mean, var\)"):
        layer((m, jnp.ones((2, 4), jnp.float32)))


@pytest.mark.parametrize("cls", [bl.BBBLinear, bl.LRLinear])
def test_clt_output_into_a_sampling_layer_says_clt_returns_mean_var(cls):
    x = jnp.ones((2, 3), jnp.float32)
    clt = bl.CLTLinear(3, is_input=True)
    out = clt.apply(clt.init(jax.random.key(0), x), x)
    with pytest.raises(ValueError, match=r"\(mean, var\)"):
        cls(2).init(jax.random.key(1), out, rng=jax.random.key(2))


# ------------------------------------------------------------------- 5. negative stds
@pytest.mark.parametrize("fn", [bl.relu_moments, bl.neg_relu_moments, bl.crelu_moments])
def test_concrete_negative_sigma_raises_and_traced_gives_nan(fn):
    mu = jnp.array([0.3, -1.0, 2.0])
    sigma = jnp.array([1.0, -0.5, 0.0])
    with pytest.raises(ValueError, match="sigma"):
        fn(mu, sigma)
    mean, var = jax.jit(fn)(mu, sigma)
    bad = np.isnan(np.asarray(mean)) | np.isnan(np.asarray(var))
    # Only the negative entry (both CReLU halves of it) is NaN.
    want = [False, True, False] * (2 if fn is bl.crelu_moments else 1)
    assert bad.tolist() == want
    mean0, _ = fn(mu, jnp.array([1.0, np.nan, 0.0]))  # NaN still propagates, no error
    assert np.isnan(np.asarray(mean0)).tolist() == want


def test_kl_normal_negative_std_raises_naming_it():
    with pytest.raises(ValueError, match="std_q"):
        bl.kl_normal(0.0, -0.5, 0.0, 1.0)
    with pytest.raises(ValueError, match="std_p"):
        bl.kl_normal(0.0, 0.5, 0.0, jnp.array([1.0, -1.0]))
    with pytest.raises(ValueError, match="std_p"):
        bl.kl_normal_from_log_std(0.0, 0.0, 0.0, -1.0)
    assert bool(jnp.isnan(jax.jit(bl.kl_normal)(0.0, -0.5, 0.0, 1.0)))
    assert bool(jnp.isnan(bl.kl_normal(0.0, jnp.nan, 0.0, 1.0)))
    assert float(bl.kl_normal(0.0, 0.0, 0.0, 1.0)) == np.inf  # std_q = 0 is allowed
