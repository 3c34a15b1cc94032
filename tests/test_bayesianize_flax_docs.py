"""``bl.bayesianize`` on a model written by Flax, not by us: the ``CNN`` of Flax's linen MNIST
example, with each method ('bbb', 'lr', 'flipout'; 'clt' once it exists) and MOPED means.

The model below is copied as Flax writes it in its MNIST example (``examples/mnist/train.py``
of google/flax, the ``CNN`` of the linen MNIST / "Getting started" tutorial of the Flax
documentation): default ``float32`` parameters, ``nn.avg_pool``, a ``reshape`` flatten.
Only the input is small (8x8x1 instead of 28x28x1) to keep the test fast.

Float64: the pretrained variables and the input are cast to float64, so the original and the
bayesianized model compute in float64. ``nn.avg_pool`` divides by an ``np.int64`` window size,
which the suite's strict dtype promotion rejects: the calls run under standard promotion.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import traverse_util

import bayeslayers_jax as bl

EPS = float(np.finfo(np.float64).eps)


class CNN(nn.Module):
  """A simple CNN model."""

  @nn.compact
  def __call__(self, x):
    x = nn.Conv(features=32, kernel_size=(3, 3))(x)
    x = nn.relu(x)
    x = nn.avg_pool(x, window_shape=(2, 2), strides=(2, 2))
    x = nn.Conv(features=64, kernel_size=(3, 3))(x)
    x = nn.relu(x)
    x = nn.avg_pool(x, window_shape=(2, 2), strides=(2, 2))
    x = x.reshape((x.shape[0], -1))  # flatten
    x = nn.Dense(features=256)(x)
    x = nn.relu(x)
    x = nn.Dense(features=10)(x)
    return x


LAYERS = ("Conv_0", "Conv_1", "Dense_0", "Dense_1")
# The largest dot product of the model sums 3 * 3 * 32 = 288 (Conv_1) or 256 (Dense_1)
# terms; two float64 evaluations of the same sums in possibly different orders differ by at
# most ~n * eps * sum|terms| per layer (Higham's bound). Stated tolerance: 300 * eps times
# the output's scale, per layer, four layers.
MAP_RTOL = 4 * 300 * EPS


@pytest.fixture(autouse=True)
def _standard_promotion():
    with jax.numpy_dtype_promotion("standard"):
        yield


def _f64(tree):
    return jax.tree_util.tree_map(lambda a: jnp.asarray(a, jnp.float64), tree)


@pytest.fixture(scope="module")
def setup():
    with jax.numpy_dtype_promotion("standard"):
        model = CNN()
        x = jax.random.uniform(jax.random.key(0), (2, 8, 8, 1), jnp.float64)
        variables = _f64(model.init(jax.random.key(1), x.astype(jnp.float32)))  # "pretrained"
        ref = model.apply(variables, x)
    return model, x, variables, ref


def _bayesianized(model, method, variables, x):
    bnn = bl.bayesianize(model, method=method, pretrained=variables)
    return bnn, _f64(bnn.init(jax.random.key(2), x))


@pytest.mark.parametrize("method", ["bbb", "lr", "flipout"])
def test_flax_docs_cnn_bayesianized(setup, method):
    model, x, variables, ref = setup
    bnn, bvars = _bayesianized(model, method, variables, x)
    layers = {k[:-1]: k for k in traverse_util.flatten_dict(bvars["params"]) if k[-1] == "weight_mu"}
    assert sorted(p[0] for p in layers) == sorted(LAYERS)
    for name in LAYERS:  # MOPED: the means are the pretrained kernels and biases, exactly
        np.testing.assert_array_equal(bvars["params"][name]["weight_mu"], variables["params"][name]["kernel"])
        np.testing.assert_array_equal(bvars["params"][name]["bias_mu"], variables["params"][name]["bias"])

    out_map = bnn.apply(bvars, x, map=True)
    assert out_map.dtype == jnp.float64 and out_map.shape == ref.shape == (2, 10)
    np.testing.assert_allclose(out_map, ref, rtol=0, atol=MAP_RTOL * float(jnp.max(jnp.abs(ref))))

    out, state = bnn.apply(bvars, x, rngs={"sample": jax.random.key(3)}, mutable=["kl"])
    assert out.shape == ref.shape and bool(jnp.all(jnp.isfinite(out)))
    # MOPED std 0.1 |w|: a weight draw moves the logits by a few percent of their scale,
    # far above the float64 rounding of the MAP comparison (> 1e9 times MAP_RTOL).
    assert float(jnp.max(jnp.abs(out - out_map))) > 1e-3 * float(jnp.max(jnp.abs(ref)))
    out2 = bnn.apply(bvars, x, rngs={"sample": jax.random.key(4)})
    assert float(jnp.max(jnp.abs(out2 - out))) > 0.0  # another key, another draw

    kl = bl.total_kl(state)
    # Independent closed form: KL(N(mu, exp(rho)^2) || N(0, 1)) summed over every converted
    # weight and bias (the default prior), evaluated with the package's elementwise kl_normal.
    expected = sum(
        float(jnp.sum(bl.kl_normal(p[f"{w}_mu"], jnp.exp(p[f"{w}_rho"]), 0.0, 1.0)))
        for p in (bvars["params"][n] for n in LAYERS) for w in ("weight", "bias")
    )
    assert np.isfinite(float(kl)) and float(kl) > 0
    np.testing.assert_allclose(float(kl), expected, rtol=1e-12)


def test_flax_docs_cnn_bayesianized_clt(setup):
    """'clt' (moment propagation): MAP mean = the original, (mean, var) finite, var > 0."""
    model, x, variables, ref = setup
    bnn, bvars = _bayesianized(model, "clt", variables, x)
    mean_map, var_map = bnn.apply(bvars, x, map=True)  # MAP: (out, None), as BayesianMLP's CLT
    assert var_map is None
    np.testing.assert_allclose(mean_map, ref, rtol=0, atol=MAP_RTOL * float(jnp.max(jnp.abs(ref))))
    out, state = bnn.apply(bvars, x, mutable=["kl"])
    assert isinstance(out, tuple) and len(out) == 2  # CLT returns (mean, var)
    mean, var = out
    assert mean.shape == var.shape == ref.shape
    assert bool(jnp.all(jnp.isfinite(mean))) and bool(jnp.all(jnp.isfinite(var)))
    assert bool(jnp.all(var >= 0)) and float(jnp.max(var)) > 0
    kl = float(bl.total_kl(state))
    assert np.isfinite(kl) and kl > 0
