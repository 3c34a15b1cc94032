"""The fused Pallas CLT + ReLU kernel equals the unfused XLA path (interpret mode on CPU).

The reference is the public composition a CLT hidden layer runs (``clt_forward`` with
``act='relu'``): :func:`clt_linear_moments`, then :func:`relu_moments` of ``safe_sqrt(var)``.
One test compares with a :class:`CLTLinear` hidden layer's ``apply`` itself, one with ``vmap``
over an ensemble axis of weights.

Tolerance (derived, not tuned). The kernel sums the input width in another order (chunks of
``block_k``, the bias added first), so the pre-activation moments differ from the reference's
by at most twice the bound on one floating-point sum of ``n`` terms in any order,
``gamma_n * sum |terms|`` with ``gamma_n = n u / (1 - n u)``, ``u = eps / 2`` (Higham, Accuracy
and Stability, 3.1), ``n = K + 4`` (the width, the bias and the roundings of the products):

    dm = 2 gamma_n (|x_mean| @ |w_mu| + |b_mu|),
    dv = 2 gamma_n ((x_var + x_mean^2) @ w_var + x_var @ w_mu^2 + b_var)   (all terms >= 0).

``sigma = sqrt(v)`` then moves by ``ds <= min(sqrt(dv), dv / sigma)``. The ReLU moments' first
derivatives are bounded (Price's theorem: ``|dE/dm| = Phi <= 1``, ``|dE/ds| = phi <=
1/sqrt(2 pi)``, ``|dV/dm| = 2 E Phi(-a) <= 2 E``, ``|dV/ds| <= 2 s``), so

    |dE| <= dm + ds / sqrt(2 pi) + r |E|,   |dV| <= 2 E dm + 2 s ds + r V,

with ``r = 64 eps`` for the two evaluations' own rounding (``relu_moments`` is accurate to
a few ulps; 64 covers the log-space products in the tails, measured well below it).
Where the pre-activation sums are exact in any order (integer means, power-of-two
variances: the tails test), only ``r`` remains.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bayeslayers_jax import clt_dense_relu_fused, clt_linear_moments, relu_moments, safe_sqrt

BLOCKS = dict(block_b=2, block_n=2, block_k=4)
fused = jax.jit(clt_dense_relu_fused, static_argnames=("interpret", "block_b", "block_n", "block_k"))


@jax.jit
def unfused(x_mean, x_var, w_mu, w_var, b_mu=None, b_var=None):
    mean, var = clt_linear_moments(x_mean, x_var, w_mu, w_var, b_mu, b_var)
    return relu_moments(mean, safe_sqrt(var))


def _inputs(key, batch, k, n, dtype):
    ks = jax.random.split(key, 6)
    return (
        jax.random.normal(ks[0], batch + (k,), dtype),
        jax.random.uniform(ks[1], batch + (k,), dtype),
        jax.random.normal(ks[2], (k, n), dtype) / float(np.sqrt(k)),
        0.1 * jax.random.uniform(ks[3], (k, n), dtype),
        jax.random.normal(ks[4], (n,), dtype),
        0.1 * jax.random.uniform(ks[5], (n,), dtype),
    )


def _tolerance(x_mean, x_var, w_mu, w_var, b_mu, b_var, ref_mean, ref_var):
    """The first-order bound of the module docstring, elementwise (evaluated in float64)."""
    eps = np.finfo(x_mean.dtype).eps
    n = x_mean.shape[-1] + 4
    gamma = n * eps / 2 / (1 - n * eps / 2)
    f64 = lambda a, like: np.zeros(np.shape(like)) if a is None else np.asarray(a, np.float64)  # noqa: E731
    xm, wm = f64(x_mean, x_mean), f64(w_mu, w_mu)
    xv, wv = f64(x_var, x_mean), f64(w_var, w_mu)
    bm, bv = f64(b_mu, w_mu[0]), f64(b_var, w_mu[0])
    dm = 2 * gamma * (np.abs(xm) @ np.abs(wm) + np.abs(bm))
    v = (xv + xm**2) @ wv + xv @ wm**2 + bv
    dv = 2 * gamma * v
    s = np.sqrt(v)
    with np.errstate(divide="ignore", invalid="ignore"):
        ds = np.minimum(np.sqrt(dv), np.where(s > 0, dv / s, np.inf))
    r = 64 * eps
    mean, var = np.asarray(ref_mean, np.float64), np.asarray(ref_var, np.float64)
    tol_mean = dm + ds / np.sqrt(2 * np.pi) + r * np.abs(mean)
    tol_var = 2 * mean * dm + 2 * s * ds + r * var
    return tol_mean, tol_var


def _assert_close(args, blocks=BLOCKS):
    mean, var = fused(*args, **blocks)
    ref_mean, ref_var = unfused(*args)
    assert mean.dtype == ref_mean.dtype and mean.shape == ref_mean.shape
    tol_mean, tol_var = _tolerance(*args, ref_mean, ref_var)
    assert np.all(np.abs(mean - ref_mean) <= tol_mean), float(np.max(np.abs(mean - ref_mean) - tol_mean))
    assert np.all(np.abs(var - ref_var) <= tol_var), float(np.max(np.abs(var - ref_var) - tol_var))
    assert np.all(np.isfinite(mean)) and np.all(var >= 0)
    return mean, var


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.float64])
def test_equals_the_xla_path_with_padding_on_every_axis(dtype):
    # 5 rows, 7 inputs, 3 outputs: none divisible by the blocks (2, 4, 2), two chunks of K
    _assert_close(_inputs(jax.random.key(0), (5,), 7, 3, dtype))


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.float64])
def test_leading_axes_and_default_blocks(dtype):
    # default blocks (64, 64, 32) shrink to the dimensions; 40 inputs make two chunks of 32
    args = _inputs(jax.random.key(1), (2, 3), 40, 5, dtype)
    mean, _ = fused(*args)
    assert mean.shape == (2, 3, 5)
    _assert_close(args, blocks={})


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.float64])
def test_tails_agree_to_rounding_where_the_sums_are_exact(dtype):
    # Column j has pre-activation mean t * c_j and std c_j (a = t) with c_j powers of two, so
    # x @ W is exact in any summation order: only the ReLU moments' own rounding (r) remains.
    t = np.array([-1e6, -1e4, -60.0, -30.0, -8.0, -1.0, 0.0, 1.0, 8.0, 30.0, 60.0, 1e4, 1e6])
    x_mean = jnp.asarray(np.stack([t, np.ones_like(t)], axis=1), dtype)
    c = np.array([2.0**-10, 1.0, 2.0**10])
    w_mu = jnp.asarray(np.stack([c, np.zeros(3)]), dtype)
    w_var = jnp.asarray(np.stack([np.zeros(3), c**2]), dtype)
    mean, var = fused(x_mean, None, w_mu, w_var, **BLOCKS)
    ref_mean, ref_var = unfused(x_mean, None, w_mu, w_var)
    r = 64 * float(np.finfo(dtype).eps)
    np.testing.assert_allclose(mean, ref_mean, rtol=r, atol=0)
    np.testing.assert_allclose(var, ref_var, rtol=r, atol=0)
    assert np.all(np.isfinite(mean)) and np.all(np.isfinite(var)) and np.all(var >= 0) and np.all(mean >= 0)
    # the tail is exercised: at a = -8 the exact mean, sigma phi(8)/64 (1 + O(1/64)) ~ 8e-17
    # sigma, is positive and representable in both dtypes (a cancelling formula gives 0 or < 0)
    assert np.all(ref_mean[4] > 0) and np.all(ref_var[4] > 0)
    np.testing.assert_allclose(mean[-1], 1e6 * c, rtol=r)  # a = 1e6: relu(X) = X


def test_deterministic_input_none_equals_zeros_and_deterministic_everything():
    x_mean, _, w_mu, w_var, b_mu, b_var = _inputs(jax.random.key(2), (5,), 7, 3, jnp.float64)
    none = fused(x_mean, None, w_mu, w_var, b_mu, b_var, **BLOCKS)
    zeros = fused(x_mean, jnp.zeros_like(x_mean), w_mu, w_var, b_mu, b_var, **BLOCKS)
    for a, b in zip(none, zeros):  # var = 0 adds exact zeros: identical
        np.testing.assert_array_equal(a, b)
    _assert_close((x_mean, None, w_mu, w_var, b_mu, b_var))
    # sigma = 0 everywhere: (relu(x @ W + b), 0) exactly for the variance
    mean, var = fused(x_mean, None, w_mu, None, b_mu, **BLOCKS)
    np.testing.assert_array_equal(var, 0.0)
    tol_mean, _ = _tolerance(x_mean, None, w_mu, None, b_mu, None, mean, var)
    assert np.all(np.abs(mean - np.maximum(np.asarray(x_mean) @ np.asarray(w_mu) + np.asarray(b_mu), 0)) <= tol_mean)


def test_nan_propagates_to_what_depends_on_it():
    x_mean, x_var, w_mu, w_var, b_mu, b_var = _inputs(jax.random.key(3), (5,), 7, 3, jnp.float64)
    x_mean = x_mean.at[1, 5].set(jnp.nan)  # row 1 (second K chunk)
    w_var = w_var.at[2, 2].set(jnp.nan)  # column 2 of the variance
    mean, var = fused(x_mean, x_var, w_mu, w_var, b_mu, b_var, **BLOCKS)
    rows, cols = np.arange(5) != 1, np.arange(3) != 2
    assert np.all(np.isnan(mean[1])) and np.all(np.isnan(var[1]))
    assert np.all(np.isnan(mean[:, 2])) and np.all(np.isnan(var[:, 2]))
    assert np.all(np.isfinite(mean[np.ix_(rows, cols)])) and np.all(np.isfinite(var[np.ix_(rows, cols)]))


def _loss(fn, args, cot):
    mean, var = fn(*args)
    return jnp.sum(mean * cot[0] + var * cot[1])


@pytest.mark.parametrize("deterministic_input", [False, True])
def test_gradients_are_the_reference_gradients(deterministic_input):
    args = list(_inputs(jax.random.key(4), (5,), 7, 3, jnp.float64))
    if deterministic_input:
        args[1] = None  # the first layer: sigma = 0 where w_var = 0
        args[3] = args[3].at[:, 0].set(0.0)
    cot = jax.random.normal(jax.random.key(5), (2, 5, 3), jnp.float64)
    argnums = tuple(i for i, a in enumerate(args) if a is not None)
    grad = jax.jit(jax.grad(lambda *a: _loss(functools.partial(fused, **BLOCKS), a, cot), argnums))
    ref_grad = jax.jit(jax.grad(lambda *a: _loss(unfused, a, cot), argnums))
    got, want = grad(*args), ref_grad(*args)
    for g, w in zip(got, want):
        # the backward pass *is* the reference's VJP (same inputs, same cotangent): equal up to
        # XLA fusing the two programs differently, a few ulps
        np.testing.assert_allclose(g, w, rtol=16 * np.finfo(np.float64).eps, atol=1e-300)
        assert np.all(np.isfinite(g))


def test_traced_negative_variance_is_nan_and_concrete_raises():
    x_mean, x_var, w_mu, w_var, b_mu, b_var = _inputs(jax.random.key(6), (5,), 7, 3, jnp.float64)
    bad = x_var.at[0, 0].set(-1.0)
    mean, var = fused(x_mean, bad, w_mu, w_var, b_mu, b_var, **BLOCKS)  # traced under jit
    assert np.all(np.isnan(var[0])) and np.all(np.isfinite(var[1:]))
    with pytest.raises(ValueError, match="`x_var`"):
        clt_dense_relu_fused(x_mean, bad, w_mu, w_var, b_mu, b_var)


@pytest.mark.parametrize(
    "change, name",
    [
        (dict(w_mu=jnp.ones((6, 3))), "w_mu"),
        (dict(w_mu=jnp.ones((7, 3, 1))), "w_mu"),
        (dict(x_var=jnp.ones((5, 6))), "x_var"),
        (dict(w_var=jnp.ones((7, 2))), "w_var"),
        (dict(b_mu=jnp.ones(4)), "b_mu"),
        (dict(b_var=jnp.ones((1, 3))), "b_var"),
        (dict(b_mu=None), "b_var"),
        (dict(block_b=3), "block_b"),
        (dict(block_n=0), "block_n"),
        (dict(block_k=True), "block_k"),
        (dict(interpret=False), "interpret"),
    ],
)
def test_bad_arguments_raise_value_error_naming_them(change, name):
    if name == "interpret" and jax.default_backend() == "gpu":
        pytest.skip("interpret=False is valid on a GPU")
    args = dict(zip(("x_mean", "x_var", "w_mu", "w_var", "b_mu", "b_var"),
                    _inputs(jax.random.key(7), (5,), 7, 3, jnp.float64)))
    args.update(change)
    with pytest.raises(ValueError, match=f"`{name}`"):
        clt_dense_relu_fused(**args)


def test_non_float_dtypes_raise_type_error():
    with pytest.raises(TypeError, match="`x_mean`"):
        clt_dense_relu_fused(jnp.ones((2, 3), jnp.complex64), None, jnp.ones((3, 1)), None)
    with pytest.raises(TypeError, match="float32 or float64"):
        clt_dense_relu_fused(jnp.ones((2, 3), jnp.float16), None, jnp.ones((3, 1), jnp.float16), None)


def test_benchmark_skips_off_gpu_and_its_smoke_path_runs(capsys):
    from benchmarks import pallas_clt

    if jax.default_backend() == "gpu":
        pytest.skip("on a GPU the benchmark measures; this test checks the CPU paths")
    assert pallas_clt.main([]) == 0
    assert "skipped" in capsys.readouterr().out
    results = pallas_clt.run(pallas_clt.SMOKE_SHAPES, budget_s=0.0, interpret=True, configs=((2, 2, 4),))
    (row,) = results["rows"]
    # the smoke path checks the kernel against XLA with this file's bound
    assert row["max_abs_diff_mean"] <= 1e-5 and row["fused_s"] > 0 and row["xla_s"] > 0


def test_equals_a_clt_linear_hidden_layer():
    from bayeslayers_jax import rho_to_std
    from bayeslayers_jax.linen import CLTLinear

    x_mean, x_var, *_ = _inputs(jax.random.key(8), (5,), 7, 3, jnp.float64)
    layer = CLTLinear(features=3, param_dtype=jnp.float64)  # hidden layer, act='relu'
    variables = jax.jit(layer.init)(jax.random.key(9), x_mean, x_var)
    p = variables["params"]
    want = jax.jit(layer.apply)(variables, x_mean, x_var)
    args = (x_mean, x_var, p["weight_mu"], rho_to_std(p["weight_rho"]) ** 2,
            p["bias_mu"], rho_to_std(p["bias_rho"]) ** 2)
    mean, var = fused(*args, **BLOCKS)
    tol_mean, tol_var = _tolerance(*args, *want)
    assert np.all(np.abs(mean - want[0]) <= tol_mean) and np.all(np.abs(var - want[1]) <= tol_var)


def test_vmap_over_an_ensemble_axis_of_weights():
    # what an Ensemble (nn.vmap) does: one batched kernel, equal to each member's own call
    members = [_inputs(jax.random.key(10 + m), (5,), 7, 3, jnp.float64) for m in range(2)]
    stacked = [jnp.stack(a) for a in zip(*members)]
    mean, var = jax.jit(jax.vmap(functools.partial(clt_dense_relu_fused, **BLOCKS)))(*stacked)
    for m, args in enumerate(members):
        ref_mean, ref_var = unfused(*args)
        tol_mean, tol_var = _tolerance(*args, ref_mean, ref_var)
        assert np.all(np.abs(mean[m] - ref_mean) <= tol_mean) and np.all(np.abs(var[m] - ref_var) <= tol_var)
