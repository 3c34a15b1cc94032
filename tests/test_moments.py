"""ReLU / CReLU moments against a 50-digit mpmath ground truth, in the tails and at the edges."""

from functools import lru_cache

import hypothesis.strategies as st
import jax
import jax.numpy as jnp
import mpmath as mp
import numpy as np
import pytest
from hypothesis import given, settings

from bayeslayers_jax import crelu_moments, neg_relu_moments, relu_moments

mp.mp.dps = 50

# Tolerances of issue 2: relative error at the 99.9th percentile of the grid.
REL_TOL = {np.float64: 1e-10, np.float32: 1e-4}
SIGMAS = {
    np.float64: [1e-300, 1e-150, 1e-10, 1.0, 3.7e5, 1e10, 1e150, 1e154],  # 1e154**2 ~ max
    np.float32: [1e-30, 1e-10, 1.0, 3.7e5, 1e10, 1e19],  # 1e19**2 ~ float32 max
}


def _a_grid():
    """|mu/sigma| up to 60, dense in both tails and around 0 (where branches switch)."""
    core = np.linspace(-8, 8, 321)
    tail = np.concatenate([np.linspace(8, 60, 261), np.geomspace(1e-6, 1, 40)])
    return np.unique(np.concatenate([core, tail, -tail, [0.0]]))


def _truth(mu, sigma):
    """Exact (50-digit) moments and derivatives of relu(N(mu, sigma^2)) for binary mu, sigma."""
    mu = mu if isinstance(mu, mp.mpf) else mp.mpf(float(mu))
    sigma = sigma if isinstance(sigma, mp.mpf) else mp.mpf(float(sigma))
    a = mu / sigma
    cdf, pdf = mp.ncdf(a), mp.npdf(a)
    h_pos = pdf + a * cdf  # h(a)
    h_neg = pdf - a * (1 - cdf)  # h(-a), written without cancellation issues at 50 digits
    mean = sigma * h_pos
    var = sigma**2 * (cdf - h_pos * h_neg)
    return mean, var, cdf, pdf, 2 * mean * mp.ncdf(-a), 2 * sigma * cdf - 2 * mean * pdf


@lru_cache(maxsize=None)
def _grid(dtype):
    rows = []
    for sigma in SIGMAS[dtype]:
        s = dtype(sigma)
        for a in _a_grid():
            m = dtype(a * float(s))
            if not np.isfinite(m):
                continue
            rows.append((m, s, *_truth(m, s)))
    mu = np.array([r[0] for r in rows], dtype)
    sigma = np.array([r[1] for r in rows], dtype)
    truth = [list(col) for col in zip(*[r[2:] for r in rows])]
    return mu, sigma, truth


def _errors(got, truth, dtype):
    """Relative error where the truth is a normal number of dtype, else |abs error| / tiny."""
    tiny = mp.mpf(float(np.finfo(dtype).tiny))
    out = []
    for g, t in zip(np.asarray(got, np.float64), truth):
        if abs(t) >= tiny:
            out.append(float(abs(mp.mpf(float(g)) - t) / abs(t)))
        else:
            out.append(0.0 if abs(mp.mpf(float(g)) - t) < tiny else np.inf)
    return np.array(out)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_relu_moments_match_mpmath_in_the_tails(dtype):
    mu, sigma, truth = _grid(dtype)
    mean, var = jax.jit(relu_moments)(jnp.asarray(mu), jnp.asarray(sigma))
    assert mean.dtype == dtype and var.dtype == dtype
    assert np.all(np.isfinite(mean)) and np.all(np.isfinite(var))
    assert np.all(np.asarray(var) >= 0) and np.all(np.asarray(mean) >= 0)
    for got, exact in ((mean, truth[0]), (var, truth[1])):
        err = _errors(got, exact, dtype)
        assert np.percentile(err, 99.9) <= REL_TOL[dtype], np.percentile(err, 99.9)
        # Not only the percentile: no point is wrong by more than a few orders of the bound.
        assert err.max() <= 1e3 * REL_TOL[dtype], err.max()


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_neg_relu_and_crelu_match_mpmath(dtype):
    mu, sigma, _ = _grid(dtype)
    _, _, truth_neg = _grid_neg(dtype)
    neg_mean, neg_var = neg_relu_moments(jnp.asarray(mu), jnp.asarray(sigma))
    for got, exact in ((neg_mean, truth_neg[0]), (neg_var, truth_neg[1])):
        assert np.percentile(_errors(got, exact, dtype), 99.9) <= REL_TOL[dtype]
    c_mean, c_var = crelu_moments(jnp.asarray(mu)[None], jnp.asarray(sigma)[None])
    n = mu.shape[0]
    assert c_mean.shape == (1, 2 * n)
    p_mean, p_var = relu_moments(jnp.asarray(mu), jnp.asarray(sigma))
    # CReLU is exactly the concatenation (same code path, bit-identical).
    np.testing.assert_array_equal(c_mean[0], np.concatenate([p_mean, neg_mean]))
    np.testing.assert_array_equal(c_var[0], np.concatenate([p_var, neg_var]))


@lru_cache(maxsize=None)
def _grid_neg(dtype):
    mu, sigma, _ = _grid(dtype)
    truth = [list(col) for col in zip(*[_truth(-m, s) for m, s in zip(mu, sigma)])]
    return mu, sigma, truth


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_gradients_match_closed_form_ground_truth(dtype):
    mu, sigma, truth = _grid(dtype)
    mu_j, sigma_j = jnp.asarray(mu), jnp.asarray(sigma)

    def grads(i):
        f = lambda m, s: relu_moments(m, s)[i].sum()  # noqa: E731
        return jax.jit(jax.grad(f, argnums=(0, 1)))(mu_j, sigma_j)

    (dm_dmu, dm_dsigma), (dv_dmu, dv_dsigma) = grads(0), grads(1)
    tol = 1e-6 if dtype == np.float64 else 1e-4
    for got, exact in ((dm_dmu, truth[2]), (dm_dsigma, truth[3]), (dv_dmu, truth[4]), (dv_dsigma, truth[5])):
        assert np.all(np.isfinite(got))
        err = _errors(got, exact, dtype)
        assert np.percentile(err, 99.9) <= tol, np.percentile(err, 99.9)


def test_closed_form_derivatives_equal_numerical_derivatives_of_the_truth():
    """The closed forms used by the custom JVP are the true derivatives (mpmath finite differences)."""
    for a, sigma in [(-7.5, 0.3), (-1.2, 2.0), (0.0, 1.0), (0.4, 0.7), (3.0, 5.0)]:
        mu, sigma = mp.mpf(a) * mp.mpf(sigma), mp.mpf(sigma)
        exact = _truth(mu, sigma)
        mean_f = lambda m, s: _truth(m, s)[0]  # noqa: E731
        var_f = lambda m, s: _truth(m, s)[1]  # noqa: E731
        numeric = [
            mp.diff(lambda m: mean_f(m, sigma), mu),
            mp.diff(lambda s: mean_f(mu, s), sigma),
            mp.diff(lambda m: var_f(m, sigma), mu),
            mp.diff(lambda s: var_f(mu, s), sigma),
        ]
        for closed, num in zip(exact[2:], numeric):
            assert abs(closed - num) <= 1e-12 * max(abs(num), 1e-30)


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.float64])
def test_sigma_zero_gives_relu_and_finite_limit_gradients(dtype):
    mu = jnp.array([-3.0, -1e-30, 0.0, 1e-30, 2.5], dtype)
    sigma = jnp.zeros_like(mu)
    mean, var = relu_moments(mu, sigma)
    np.testing.assert_array_equal(mean, jnp.maximum(mu, 0))
    np.testing.assert_array_equal(var, 0)
    g_mu, g_sigma = jax.grad(lambda m, s: relu_moments(m, s)[0].sum(), argnums=(0, 1))(mu, sigma)
    # Limits as sigma -> 0+: d/dmu -> Phi(+-inf) or Phi(0) = 1/2; d/dsigma -> phi(a).
    np.testing.assert_array_equal(g_mu, jnp.array([0, 0, 0.5, 1, 1], dtype))
    np.testing.assert_allclose(g_sigma, jnp.array([0, 0, 1 / np.sqrt(2 * np.pi), 0, 0], dtype), rtol=1e-6)
    gv_mu, gv_sigma = jax.grad(lambda m, s: relu_moments(m, s)[1].sum(), argnums=(0, 1))(mu, sigma)
    np.testing.assert_array_equal(gv_mu, 0)
    np.testing.assert_array_equal(gv_sigma, 0)


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.float64])
def test_extreme_inputs_never_give_nan_inf_or_negative_variance(dtype):
    info = jnp.finfo(dtype)
    big_sigma = float(np.sqrt(float(info.max))) / 2
    values = [0.0, float(info.tiny) / 4, float(info.tiny), 1e-3, 1.0, 1e3, big_sigma]
    mus = jnp.array([s * v for v in values for s in (-1.0, 1.0)], dtype)
    sigmas = jnp.array(values, dtype)
    mu, sigma = jnp.meshgrid(mus, sigmas)
    mean, var = relu_moments(mu, sigma)
    grads = jax.grad(lambda m, s: sum(x.sum() for x in crelu_moments(m, s)), argnums=(0, 1))(mu, sigma)
    for arr in (mean, var, *grads):
        assert bool(jnp.all(jnp.isfinite(arr)))
    assert bool(jnp.all(var >= 0)) and bool(jnp.all(mean >= 0))


def test_negative_sigma_raises_when_concrete_and_gives_nan_when_traced():
    # The rule changed (issue 20): a negative sigma was read as |sigma|; now it is an error.
    mu = jnp.array([-2.0, 0.5, 3.0])
    sigma = jnp.array([1.5, -0.2, 4.0])
    with pytest.raises(ValueError, match="sigma"):
        relu_moments(mu, sigma)
    mean, var = jax.jit(relu_moments)(mu, sigma)
    assert np.isnan(np.asarray(mean)).tolist() == [False, True, False]
    assert np.isnan(np.asarray(var)).tolist() == [False, True, False]


def test_bfloat16_is_computed_in_float32_and_rounded_once():
    mu = jnp.linspace(-6, 6, 97, dtype=jnp.float32)
    sigma = jnp.full_like(mu, 1.3)
    mean16, var16 = relu_moments(mu.astype(jnp.bfloat16), sigma.astype(jnp.bfloat16))
    assert mean16.dtype == jnp.bfloat16
    mean32, var32 = relu_moments(mu.astype(jnp.bfloat16).astype(jnp.float32), sigma.astype(jnp.bfloat16).astype(jnp.float32))
    # One rounding to bfloat16 (8 significant bits): relative error <= 2**-8.
    np.testing.assert_allclose(mean16.astype(jnp.float32), mean32, rtol=2**-8)
    np.testing.assert_allclose(var16.astype(jnp.float32), var32, rtol=2**-8)


def test_batch_shapes_broadcasting_vmap_and_jit():
    key = jax.random.key(0)
    mu = jax.random.normal(key, (3, 4, 5))
    sigma = jnp.abs(jax.random.normal(jax.random.key(1), (5,)))
    mean, var = relu_moments(mu, jnp.broadcast_to(sigma, mu.shape))
    mean_b, _ = relu_moments(mu, sigma[None, None, :])  # explicit broadcastable shapes
    np.testing.assert_array_equal(mean, mean_b)
    mean_v, var_v = jax.vmap(jax.jit(relu_moments), in_axes=(0, None))(mu, jnp.broadcast_to(sigma, (4, 5)))
    np.testing.assert_allclose(mean_v, mean, rtol=1e-12)
    np.testing.assert_allclose(var_v, var, rtol=1e-12)
    c_mean, c_var = crelu_moments(mu, jnp.broadcast_to(sigma, mu.shape))
    assert c_mean.shape == (3, 4, 10) and c_var.shape == (3, 4, 10)


def test_mismatched_shapes_raise_a_value_error_naming_the_arguments():
    with pytest.raises(ValueError, match=r"`mu` \(3,\).*`sigma` \(4,\)"):
        relu_moments(jnp.zeros(3), jnp.ones(4))
    with pytest.raises(ValueError, match="at least one axis"):
        crelu_moments(jnp.float32(0.0), jnp.float32(1.0))


@settings(max_examples=200, deadline=None)
@given(
    st.floats(-(2.0**100), 2.0**100, allow_nan=False, width=32),
    st.floats(0, 2.0**60, allow_nan=False, width=32),
)
def test_property_float32_finite_and_nonnegative(mu, sigma):
    m, s = jnp.float32(mu), jnp.float32(sigma)
    mean, var = relu_moments(m, s)
    assert np.isfinite(mean) and np.isfinite(var) and var >= 0 and mean >= 0
    # relu(X) >= X and E relu(X) >= max(mu, 0), up to float32 rounding.
    # (A subnormal mu may be flushed to zero: an absolute error below float32's smallest normal.)
    assert float(mean) >= max(float(m), 0.0) * (1 - 1e-6) - float(np.finfo(np.float32).tiny)


# ----------------------------------------------------------------- second derivatives (issue 10)


def _truth_hessian(mu, sigma):
    """Exact second derivatives of (mean, var) of relu(N(mu, sigma^2)) and the size of their terms.

    Returns ``[(value, scale), ...]`` for E_mm, E_ms, E_ss, V_mm, V_ms, V_ss; ``scale`` is the
    sum of the absolute values of the closed form's terms (what rounding is relative to).
    """
    mu, sigma = mp.mpf(float(mu)), mp.mpf(float(sigma))
    a = mu / sigma
    p, q, phi = mp.ncdf(a), mp.ncdf(-a), mp.npdf(a)
    h = phi + a * p
    terms = [
        [phi / sigma],
        [-a * phi / sigma],
        [a * a * phi / sigma],
        [2 * p * q, -2 * h * phi],
        [2 * phi * q, 2 * phi * a * h],
        [2 * p, -2 * a * phi, -2 * phi * phi, -2 * a * a * h * phi],
    ]
    return [(sum(t), sum(abs(x) for x in t)) for t in terms]


def test_closed_form_second_derivatives_equal_numerical_derivatives_of_the_truth():
    for a, sigma in [(-7.5, 0.3), (-1.2, 2.0), (0.0, 1.0), (0.4, 0.7), (3.0, 5.0)]:
        mu, sigma = mp.mpf(a) * mp.mpf(sigma), mp.mpf(sigma)
        exact = _truth_hessian(mu, sigma)
        mean_f = lambda m, s: _truth(m, s)[0]  # noqa: E731
        var_f = lambda m, s: _truth(m, s)[1]  # noqa: E731
        numeric = []
        for f in (mean_f, var_f):
            numeric += [
                mp.diff(lambda m: f(m, sigma), mu, 2),
                mp.diff(lambda m, s: f(m, s), (mu, sigma), (1, 1)),
                mp.diff(lambda s: f(mu, s), sigma, 2),
            ]
        for (closed, _), num in zip(exact, numeric):
            assert abs(closed - num) <= 1e-10 * max(abs(num), 1e-20), (a, closed, num)


def _hessian_grid(dtype):
    """(mu, sigma) points with sigma > 0, |mu/sigma| <= 12, sigma from tiny to large."""
    a = np.concatenate([np.linspace(-12, 12, 97), [-1e-3, 1e-3]])
    sigmas = [1e-15, 1e-3, 1.0, 7.0, 1e8] if dtype == np.float32 else [1e-150, 1e-3, 1.0, 7.0, 1e100]
    mu = np.array([dtype(x * s) for s in sigmas for x in a], dtype)
    sigma = np.array([dtype(s) for s in sigmas for _ in a], dtype)
    return mu, sigma


def _hessian_errors(h_fn, dtype):
    """Worst error of the computed Hessians relative to eps (1 + a^2) * (|value| + scale)."""
    mu, sigma = _hessian_grid(dtype)
    hess = np.asarray(h_fn(jnp.asarray(mu), jnp.asarray(sigma)), np.float64)  # (n, 2 outputs, 2, 2)
    assert np.all(np.isfinite(hess))
    eps = float(np.finfo(dtype).eps)
    worst = 0.0
    for i in range(len(mu)):
        exact = _truth_hessian(mu[i], sigma[i])
        a = float(mu[i]) / float(sigma[i])
        got = [hess[i, 0, 0, 0], hess[i, 0, 0, 1], hess[i, 0, 1, 1], hess[i, 1, 0, 0], hess[i, 1, 0, 1], hess[i, 1, 1, 1]]
        for g, (value, scale) in zip(got, exact):
            bound = eps * (1 + a * a) * (abs(value) + scale) + _flush_bound(a, dtype) / HESS_ULPS
            worst = max(worst, float(abs(mp.mpf(g) - value) / bound))
    return worst


def _flush_bound(a, dtype):
    """Absolute error allowed near underflow: XLA on CPU flushes subnormal intermediates to 0,
    and an intermediate multiplied by up to a^2 may have been flushed."""
    return 16 * float(np.finfo(dtype).tiny) * (1 + a * a)


def _stack_moments(p):
    mean, var = relu_moments(p[0], p[1])
    return jnp.stack([mean, var])


# The rounding of a = mu / sigma moves phi(a) by a^2 ulps; the closed forms add a few ulps per
# term: the bound is 64 eps (1 + a^2) times the size of the terms.
HESS_ULPS = 64


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("mode", ["hessian", "jacfwd_jacrev", "jacrev_jacfwd"])
def test_second_derivatives_match_mpmath(dtype, mode):
    outer = {"hessian": jax.hessian, "jacfwd_jacrev": lambda f: jax.jacfwd(jax.jacrev(f)),
             "jacrev_jacfwd": lambda f: jax.jacrev(jax.jacfwd(f))}[mode]
    h = jax.jit(jax.vmap(lambda m, s: outer(_stack_moments)(jnp.stack([m, s]))))
    assert _hessian_errors(h, dtype) <= HESS_ULPS


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_jvp_of_grad_is_the_hessian_vector_product(dtype):
    mu, sigma = _hessian_grid(dtype)
    v = jnp.asarray(np.array([0.6, -0.8], dtype))

    def hvp(m, s, i):
        g = jax.grad(lambda p: _stack_moments(p)[i])
        return jax.jvp(g, (jnp.stack([m, s]),), (v,))[1]

    hv = np.asarray(jax.jit(jax.vmap(lambda m, s: jnp.stack([hvp(m, s, 0), hvp(m, s, 1)])))(mu, sigma), np.float64)
    eps = float(np.finfo(dtype).eps)
    vv = [float(x) for x in v]
    for i in range(len(mu)):
        (emm, emm_s), (ems, ems_s), (ess, ess_s), (vmm, vmm_s), (vms, vms_s), (vss, vss_s) = _truth_hessian(mu[i], sigma[i])
        a = float(mu[i]) / float(sigma[i])
        for got, (r0, r1), (s0, s1) in [
            (hv[i, 0], (emm * vv[0] + ems * vv[1], ems * vv[0] + ess * vv[1]), (emm_s + ems_s, ems_s + ess_s)),
            (hv[i, 1], (vmm * vv[0] + vms * vv[1], vms * vv[0] + vss * vv[1]), (vmm_s + vms_s, vms_s + vss_s)),
        ]:
            for g, r, s in zip(got, (r0, r1), (s0, s1)):
                bound = HESS_ULPS * eps * (1 + a * a) * (abs(r) + s) + _flush_bound(a, dtype)
                assert abs(mp.mpf(float(g)) - r) <= bound, (mu[i], sigma[i], g, r)


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.float64])
def test_second_derivatives_are_finite_at_sigma_zero_and_tiny_sigma(dtype):
    info = jnp.finfo(dtype)
    tiny_sigma = 1e-19 if dtype == jnp.float32 else 1e-154
    mus = [-3.0, -1e-30, 0.0, 1e-30, 1.0, 2.5]
    sigmas = [0.0, float(info.tiny) / 4, float(info.tiny), tiny_sigma, tiny_sigma / 100]
    mu, sigma = (jnp.asarray(x, dtype).ravel() for x in np.meshgrid(mus, sigmas))
    for fn in (relu_moments, neg_relu_moments):
        for i in (0, 1):
            f = lambda p: fn(p[0], p[1])[i]  # noqa: E731
            for outer in (jax.hessian, lambda g: jax.jacfwd(jax.jacrev(g))):
                h = jax.vmap(lambda m, s: outer(f)(jnp.stack([m, s])))(mu, sigma)
                assert bool(jnp.all(jnp.isfinite(h))), (fn, i)
    # The reproduction: the variance's Hessian at mu = 1, sigma = 0 is its limit.
    h = jax.hessian(lambda p: relu_moments(p[0], p[1])[1])(jnp.array([1.0, 0.0], dtype))
    np.testing.assert_array_equal(h, jnp.array([[0.0, 0.0], [0.0, 2.0]], dtype))
    # crelu's Hessian-vector products at sigma = 0 are finite too.
    g = jax.grad(lambda m, s: sum(x.sum() for x in crelu_moments(m, s)), argnums=(0, 1))
    _, tangents = jax.jvp(lambda m, s: g(m, s), (mu, jnp.zeros_like(mu)), (jnp.ones_like(mu), jnp.ones_like(mu)))
    assert all(bool(jnp.all(jnp.isfinite(t))) for t in tangents)


# ----------------------------------------------------------------- overflow, NaN (issue 10)


def test_float32_variance_finite_where_exact_value_is_and_jvp_at_huge_sigma():
    mean, var = relu_moments(jnp.float32(0.0), jnp.float32(2.6e19))
    exact = _truth(0.0, float(np.float32(2.6e19)))
    assert abs(float(var) - float(exact[1])) <= 8 * np.finfo(np.float32).eps * float(exact[1])
    # sigma = 2e38: var overflows (exact 1.4e76), but no tangent is NaN (no inf * 0 in the rule).
    for t in [(1.0, 0.0), (0.0, 1.0)]:
        _, tan = jax.jvp(relu_moments, (jnp.float32(0.0), jnp.float32(2e38)), tuple(map(jnp.float32, t)))
        assert not any(bool(jnp.isnan(x)) for x in tan)
    _, (dmean, dvar) = jax.jvp(relu_moments, (jnp.float32(0.0), jnp.float32(2e38)), (jnp.float32(0), jnp.float32(1)))
    exact = _truth(0.0, float(np.float32(2e38)))
    assert abs(float(dvar) - float(exact[5])) <= 8 * np.finfo(np.float32).eps * float(exact[5])


@pytest.mark.parametrize("fn", [relu_moments, neg_relu_moments])
def test_nan_inputs_give_nan_outputs(fn):
    mu = jnp.array([np.nan, 1.0, 1e30, 0.0, np.nan])
    sigma = jnp.array([1.0, np.nan, np.nan, np.nan, 0.0])
    for out in fn(mu, sigma):
        assert bool(jnp.all(jnp.isnan(out)))
    g = jax.grad(lambda m, s: fn(m, s)[1].sum(), argnums=(0, 1))(mu, sigma)
    assert all(bool(jnp.all(jnp.isnan(x))) for x in g)


# ----------------------------------------------------------------- float32 tail polynomials (issue 9)


def test_float32_tail_ratio_polynomials_match_mpmath_to_a_few_ulps():
    """R = Phi(-t)/phi(t), g = h(-t)/phi(t), w = E[relu(Z - t)^2]/phi(t) over all t >= 0.

    The fits' own error is below 3e-7 (tools/fit_relu_moment_rationals.py); float32 rounding of
    r, q and Horner's rule adds a few ulps: the bound is 16 eps in relative error, exact at 0.
    """
    from bayeslayers_jax.core._moments import _tail_ratios

    t = np.unique(np.concatenate([[0.0], np.linspace(0, 12, 601), np.geomspace(1e-7, 1e6, 600)]).astype(np.float32))
    got = [np.asarray(x, np.float64) for x in _tail_ratios(jnp.asarray(t), jnp.zeros_like(jnp.asarray(t)))]
    eps = float(np.finfo(np.float32).eps)
    for i, ti in enumerate(t):
        with mp.workdps(40 + 4 * int(mp.log10(float(ti) + 1))):  # g and w cancel t^2, t^4 digits here
            tm = mp.mpf(float(ti))
            big_r = mp.ncdf(-tm) / mp.npdf(tm)
            exact = (big_r, 1 - tm * big_r, (1 + tm * tm) * big_r - tm)
            for g, e in zip(got, exact):
                assert abs(mp.mpf(g[i]) - e) <= 16 * eps * e, (float(ti), g[i], float(e))
    # Values at t = 0 are the correctly rounded sqrt(pi/2), 1, sqrt(pi/2).
    root = float(np.float32(np.sqrt(np.pi / 2)))
    assert [g[0] for g in got] == [root, 1.0, root]
