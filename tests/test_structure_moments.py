"""Moments through network structure: max / min (Clark), max pooling, layer norm, dropout.

Truth: mpmath quadrature of the maximum's own distribution (not Clark's formula), Monte Carlo
within 4 standard errors, and flax's modules on deterministic inputs.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp
import mpmath as mp
import numpy as np
import pytest

from bayeslayers_jax.core._structure import max_moments, max_pool_moments, min_moments
from bayeslayers_jax.core._structure_norm import dropout_moments, layer_norm_moments
from conv_montecarlo import assert_moments_within_4se

# Jitted once per signature: eager dispatch of the float64 tail continued fraction is slow.
max_jit, min_jit = jax.jit(max_moments), jax.jit(min_moments)
pool_jit = jax.jit(max_pool_moments, static_argnames=("window_shape", "strides", "padding"))

# (mu1, var1, mu2, var2, rho): every value exactly representable in float32, so one mpmath
# truth serves both dtypes. Correlated and anticorrelated arms, a tie at rho ~ -1, |alpha| = 8
# with a mean of 1e-16 (all tail), theta -> 0 (rho = 1 - 2**-20), a deterministic arm, tiny
# and unequal variances, large means.
POINTS = [
    (0.25, 1.0, -0.125, 2.0, 0.5),
    (0.25, 1.0, -0.125, 2.0, -0.875),
    (1.0, 0.5, 1.0, 0.5, -1 + 2**-20),
    (0.0, 0.5, -8.0, 0.5, 0.0),
    (-3.0, 2**-14, 2.0, 4.0, 0.25),
    (5.0, 1.0, 5 - 2**-7, 1.0, 1 - 2**-20),
    (2.0, 1.0, 2.0, 0.25, 0.875),
    (96.0, 2**-7, 95.0, 1.0, 0.0),
    (0.0, 0.0, 0.0, 1.0, 0.0),
    (1024.0, 1.0, 1025.0, 4.0, -0.5),
]
# Float64 only: |alpha| = 30 (a mean of 2e-199) and theta = 1.4e-6 (rho = 1 - 2**-40).
POINTS64 = [(0.0, 0.5, -30.0, 0.5, 0.0), (5.0, 1.0, 5 - 2**-17, 1.0, 1 - 2**-40)]


def _max_truth(mu1, v1, mu2, v2, rho):
    """Mean and variance of max(X1, X2) by 1-D quadrature of its distribution, ~20 digits.

    The density of the maximum is f(z) = phi_1(z) P[X2 <= z | X1 = z] + phi_2(z) P[X1 <= z | X2 = z]
    (the derivative of P[X1 <= z, X2 <= z]; the conditionals are normal): the full 2-D
    integral with one variable integrated out exactly. For independent arms the mean comes
    from the layer-cake identity E[max] = mu_b + int P[X_b <= z < X_s] dz, whose positive
    integrand keeps a mean of 1e-199 to full relative precision. A deterministic arm is an
    atom of the maximum at its value.
    """
    mu1, v1, mu2, v2, rho = map(mp.mpf, (mu1, v1, mu2, v2, rho))
    s1, s2 = mp.sqrt(v1), mp.sqrt(v2)
    if v1 == 0 or v2 == 0:
        c, (m, s) = (mu1, (mu2, s2)) if v1 == 0 else (mu2, (mu1, s1))
        atom = mp.ncdf((c - m) / s)

        def moment(g):
            return g(c) * atom + mp.quad(lambda z: g(z) * mp.npdf(z, m, s), [c, c + 10 * s, mp.inf])

        mean = moment(lambda z: z)
        return mean, moment(lambda z: (z - mean) ** 2)
    r = mp.sqrt(1 - rho**2)

    def cond_cdf(z, ma, sa, mb, sb):  # P[Xb <= z | Xa = z]
        return mp.ncdf((z - mb - rho * sb * (z - ma) / sa) / (sb * r))

    def f(z):
        return mp.npdf(z, mu1, s1) * cond_cdf(z, mu1, s1, mu2, s2) + mp.npdf(z, mu2, s2) * cond_cdf(z, mu2, s2, mu1, s1)

    pts = {mu1, mu2, mu1 - 10 * s1, mu1 + 10 * s1, mu2 - 10 * s2, mu2 + 10 * s2}
    for sa, sb, ma, mb in ((s1, s2, mu1, mu2), (s2, s1, mu2, mu1)):
        if 1 - rho * sb / sa != 0:  # where a conditional CDF is steepest
            pts.add((mb - rho * sb * ma / sa) / (1 - rho * sb / sa))
    pts = [-mp.inf] + sorted(pts) + [mp.inf]
    if rho == 0:
        (mb, sb), (ms, ss) = sorted(((mu1, s1), (mu2, s2)), key=lambda a: -a[0])
        th = mp.sqrt(sb**2 + ss**2)
        grid = mp.linspace(ms - 8 * th, mb + 8 * th, 1 + int((mb - ms) / th * 4 + 64))
        edges = {m + k * s for m, s in ((mb, sb), (ms, ss)) for k in (-3, -1, 0, 1, 3)}
        lc = [-mp.inf] + sorted(set(grid) | edges) + [mp.inf]
        tail = mp.quad(lambda z: mp.ncdf((z - mb) / sb) * mp.ncdf((ms - z) / ss), lc, method="gauss-legendre")
        mean = mb + tail
    else:
        mean = mp.quad(lambda z: z * f(z), pts)
    return mean, mp.quad(lambda z: (z - mean) ** 2 * f(z), pts)


@pytest.fixture(scope="module")
def max_truth():
    with mp.workdps(20):
        return {p: _max_truth(*p) for p in POINTS + POINTS64}


def _alpha(mu1, v1, mu2, v2, rho):
    theta2 = mp.mpf(v1) + v2 - 2 * mp.mpf(rho) * mp.sqrt(mp.mpf(v1) * v2)
    return abs(mp.mpf(mu1) - mu2) / mp.sqrt(theta2)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_max_moments_match_mpmath_quadrature(max_truth, dtype):
    """Errors within 16 ulps times the conditioning 1 + alpha**2 of alpha = d / theta (phi(alpha)
    has relative condition number alpha**2), relative to the mean's correction beyond the
    larger mean and to the variance; the inputs' own scale bounds the rounding of the sum."""
    points = POINTS + (POINTS64 if dtype == np.float64 else [])
    args = [jnp.asarray(np.array([p[i] for p in points], dtype)) for i in range(5)]
    mean, var = jax.jit(max_moments)(*args)
    assert mean.dtype == var.dtype == dtype
    eps, tiny = float(np.finfo(dtype).eps), mp.mpf(float(np.finfo(dtype).tiny))
    for p, m, v in zip(points, np.asarray(mean, np.float64), np.asarray(var, np.float64)):
        exact_m, exact_v = max_truth[p]
        cond = 1 + _alpha(*p) ** 2
        mu_b = max(p[0], p[2])
        tol_m = 16 * eps * (abs(p[0]) + abs(p[2]) + cond * abs(exact_m - mu_b)) + tiny
        assert abs(mp.mpf(float(m)) - exact_m) <= tol_m, (p, m, exact_m)
        assert abs(mp.mpf(float(v)) - exact_v) <= 16 * eps * cond * exact_v + tiny, (p, v, exact_v)


def test_min_moments_by_the_sum_identity(max_truth):
    """min + max = X1 + X2, so E[min] = mu1 + mu2 - E[max]; the variance is max's of (-X1, -X2)."""
    args = [jnp.asarray(np.array([p[i] for p in POINTS])) for i in range(5)]
    mean, var = min_jit(*args)
    neg_mean, neg_var = max_jit(-args[0], args[1], -args[2], args[3], args[4])
    np.testing.assert_array_equal(var, neg_var)
    np.testing.assert_array_equal(mean, -neg_mean)
    eps = np.finfo(np.float64).eps
    for p, m in zip(POINTS, np.asarray(mean)):
        exact = p[0] + p[2] - max_truth[p][0]
        assert abs(mp.mpf(float(m)) - exact) <= 16 * eps * (abs(p[0]) + abs(p[2]) + abs(exact) + 1e-300)


def test_theta_zero_is_exact_and_huge_alpha_has_reached_its_limit():
    # X1 - X2 deterministic (rho = 1, equal variances; first four): the larger mean and its
    # arm's variance, exactly. |alpha| = 60 and beyond (last three): exp(-1800) underflows, so
    # the moments are the dominant arm's.
    mu1, v1 = np.array([3.0, 2.0, 1.5, -1.0, 0.0, -60.0, 1e6]), np.array([2.0, 2.0, 0.0, 0.0, 0.5, 0.5, 1.0])
    mu2, v2 = np.array([1.0, 2.0, 1.5, -4.0, -60.0, 0.0, 0.0]), np.array([2.0, 2.0, 0.0, 0.0, 0.5, 0.5, 0.0])
    rho = np.array([1.0, 1.0, 1.0, 1.0, 0.0, 0.0, 0.0])
    m, v = max_jit(mu1, v1, mu2, v2, rho)
    np.testing.assert_array_equal(m, [3.0, 2.0, 1.5, -1.0, 0.0, 0.0, 1e6])
    np.testing.assert_array_equal(v[:4], [2.0, 2.0, 0.0, 0.0])
    np.testing.assert_allclose(v[4:], [0.5, 0.5, 1.0], rtol=4 * np.finfo(np.float64).eps)
    m, v = max_jit(*(x[4:].astype(np.float32) for x in (mu1, v1, mu2, v2, rho)))
    np.testing.assert_array_equal(m, np.array([0.0, 0.0, 1e6], np.float32))
    np.testing.assert_allclose(v, np.array([0.5, 0.5, 1.0], np.float32), rtol=4 * np.finfo(np.float32).eps)


# Zero variances (ties included), |alpha| = 60, rho = +-1: where gradients must stay finite.
EDGES = np.array([
    # mu1, v1, mu2, v2, rho
    (0.0, 0.0, 0.0, 0.0, 0.0),  # a deterministic tie
    (1.0, 0.0, 0.0, 0.0, 0.0),
    (0.0, 1.0, 0.0, 0.0, 0.0),
    (0.0, 0.0, 0.0, 1.0, 0.5),
    (60.0, 1.0, 0.0, 0.0, 0.0),
    (-60.0, 1.0, 0.0, 1.0, 0.0),
    (0.0, 1.0, 0.0, 1.0, -1.0),
    (1.0, 1.0, 1.0, 1.0, 1.0),  # X1 = X2
])
_max_jacobian = jax.jit(jax.vmap(jax.jacrev(lambda *a: jnp.stack(max_moments(*a)), argnums=(0, 1, 2, 3, 4))))


def test_max_gradients_equal_clark_and_are_finite_at_zero_variance(max_truth):
    """dE/dmu1 = Phi(alpha), dE/dmu2 = Phi(-alpha) (Clark 1961), against mpmath's ncdf, and
    finite first derivatives of both moments at the edges, in both dtypes."""
    points = [p for p in POINTS if p[1] > 0 and p[3] > 0]
    rows = np.concatenate([np.array(points), EDGES])
    grads = _max_jacobian(*rows.T)
    assert all(bool(jnp.all(jnp.isfinite(g))) for g in grads)
    eps = np.finfo(np.float64).eps
    for p, d1, d2 in zip(points, np.asarray(grads[0][:, 0]), np.asarray(grads[2][:, 0])):
        a = (mp.mpf(p[0]) - p[2]) / mp.sqrt(mp.mpf(p[1]) + p[3] - 2 * mp.mpf(p[4]) * mp.sqrt(mp.mpf(p[1]) * p[3]))
        cond = 16 * eps * (1 + a**2)
        assert abs(d1 - mp.ncdf(a)) <= cond * mp.ncdf(a) + 1e-300 and abs(d2 - mp.ncdf(-a)) <= cond * mp.ncdf(-a)
    # At the deterministic tie the maximum is symmetric: each mean gets half of the derivative.
    assert float(grads[0][len(points), 0]) == float(grads[2][len(points), 0]) == 0.5
    grads = _max_jacobian(*EDGES.astype(np.float32).T)
    assert all(bool(jnp.all(jnp.isfinite(g))) for g in grads)


def test_max_nan_propagation_and_errors():
    # Columns 0-4: input i is NaN; column 5: a negative variance, 6: rho = 2, under jit.
    args = np.tile(np.array([1.0, 0.5, 0.0, 2.0, 0.3])[:, None], (1, 7))
    np.fill_diagonal(args, np.nan)
    args[1, 5], args[4, 6] = -1.0, 2.0
    assert bool(jnp.all(jnp.isnan(jnp.stack(max_jit(*args))))) and bool(jnp.all(jnp.isnan(jnp.stack(min_jit(*args)))))
    with pytest.raises(ValueError, match="`var1` must be >= 0"):
        max_moments(0.0, -1.0, 0.0, 1.0)
    with pytest.raises(ValueError, match="`var2` must be >= 0"):
        min_moments(0.0, 1.0, 0.0, -1.0)
    with pytest.raises(ValueError, match=r"`rho` must be a correlation in \[-1, 1\]"):
        max_moments(0.0, 1.0, 0.0, 1.0, rho=1.5)


POOL_CASES = [
    dict(window_shape=(2, 2), strides=(2, 2)),
    dict(window_shape=(3, 3), strides=(1, 2), padding="SAME"),
    dict(window_shape=(3, 2), padding=((1, 2), (0, 1))),
]


@pytest.mark.parametrize("pool", POOL_CASES)
def test_max_pool_with_zero_variance_is_flax_max_pool(pool):
    rng = np.random.default_rng(0)
    # Float64 with a batch axis for every case; float32 without one for the first.
    for shape, dtype in [((2, 5, 6, 3), np.float64)] + ([((5, 6, 3), np.float32)] if pool is POOL_CASES[0] else []):
        mean = jnp.asarray(rng.normal(size=shape).round(1), dtype)  # .round(1): ties in windows
        expected = nn.max_pool(mean, **pool)
        m, v = pool_jit(mean, jnp.zeros_like(mean), **pool)
        assert m.dtype == v.dtype == dtype and m.shape == expected.shape
        np.testing.assert_array_equal(m, expected)
        np.testing.assert_array_equal(v, np.zeros(expected.shape))
        m, none = max_pool_moments(mean, None, **pool)
        assert none is None
        np.testing.assert_array_equal(m, expected)
    m, v = max_pool_moments(jnp.arange(5.0).reshape(5, 1), jnp.ones((5, 1)), (1,))  # one spatial axis, k = 1
    np.testing.assert_array_equal(m, jnp.arange(5.0).reshape(5, 1))
    np.testing.assert_array_equal(v, jnp.ones((5, 1)))


@pytest.mark.parametrize("pool", POOL_CASES[:2])
def test_max_pool_of_independent_inputs_against_monte_carlo(pool):
    """Mean within 4 standard errors; variance ratio within the docstring's measured range
    (2x2: 0.91 - 1.00, 3x3: 0.86 - 1.00), widened by 4 Monte Carlo standard errors."""
    rng = np.random.default_rng(1)
    mean, var = jnp.asarray(rng.normal(size=(2, 4, 4, 3))), jnp.asarray(rng.uniform(0.1, 2.0, (2, 4, 4, 3)))
    n = 20_000
    x = mean[None] + jnp.sqrt(var)[None] * jax.random.normal(jax.random.key(2), (n,) + mean.shape)
    samples = np.asarray(jax.jit(jax.vmap(lambda s: nn.max_pool(s, **pool)))(x))
    m, v = pool_jit(mean, var, **pool)
    mc_mean, mc_var = samples.mean(0), samples.var(0, ddof=1)
    assert np.all(np.abs(np.asarray(m) - mc_mean) <= 4 * np.sqrt(mc_var / n))
    se_ratio = np.sqrt(np.maximum(((samples - mc_mean) ** 4).mean(0) - mc_var**2, 0) / n) / mc_var
    ratio = np.asarray(v) / mc_var
    low = 0.91 if pool["window_shape"] == (2, 2) else 0.86
    assert np.all(ratio >= low - 4 * se_ratio) and np.all(ratio <= 1.0 + 4 * se_ratio), (ratio.min(), ratio.max())


def test_max_pool_iid_window_values_gradients_nan_and_errors():
    # Four iid N(0, 1): Clark, step by step: max of two is N(1/sqrt(pi), 1 - 1/pi) matched.
    m, v = pool_jit(jnp.zeros((1, 2, 2, 1)), jnp.ones((1, 2, 2, 1)), window_shape=(2, 2))
    m2, v2 = max_jit(0.0, 1.0, 0.0, 1.0, 0.0)
    m3, v3 = max_jit(m2, v2, 0.0, 1.0, 0.0)
    m4, v4 = max_jit(m3, v3, 0.0, 1.0, 0.0)
    np.testing.assert_allclose([float(m[0, 0, 0, 0]), float(v[0, 0, 0, 0])], [m4, v4], rtol=1e-15)
    # Gradients finite at zero variance with tied means, and with a NaN-free jit.
    f = jax.jit(jax.grad(lambda mu, s: sum(jnp.sum(a) for a in max_pool_moments(mu, s, (2, 2), padding="SAME")), (0, 1)))
    g = f(jnp.zeros((1, 3, 3, 2), np.float32), jnp.zeros((1, 3, 3, 2), np.float32))
    assert all(bool(jnp.all(jnp.isfinite(a))) for a in g)
    # A NaN reaches exactly the windows that hold it (VALID, stride 1: 4 of 9 for a centre element).
    var = jnp.ones((1, 4, 4, 1)).at[0, 1, 1, 0].set(jnp.nan)
    m, v = pool_jit(jnp.zeros((1, 4, 4, 1)), var, window_shape=(2, 2))
    assert np.isnan(m).sum() == np.isnan(v).sum() == 4 and np.all(np.isnan(m[0, :2, :2]))
    _, v = pool_jit(jnp.zeros((1, 2, 2, 1)), -jnp.ones((1, 2, 2, 1)), window_shape=(2, 2))
    assert bool(jnp.all(jnp.isnan(v)))
    with pytest.raises(ValueError, match="`var` must be >= 0"):
        max_pool_moments(jnp.zeros((1, 2, 2, 1)), -jnp.ones((1, 2, 2, 1)), (2, 2))
    with pytest.raises(ValueError, match="`mean` and `var`"):
        max_pool_moments(jnp.zeros((1, 2, 2, 1)), jnp.ones((1, 2, 2, 2)), (2, 2))
    with pytest.raises(ValueError, match=r"`window_shape` must be .* got \(2, 0\)"):
        max_pool_moments(jnp.zeros((1, 2, 2, 1)), None, (2, 0))
    with pytest.raises(ValueError, match=r"`strides` must be 2 positive integers"):
        max_pool_moments(jnp.zeros((1, 2, 2, 1)), None, (2, 2), strides=(1,))
    with pytest.raises(ValueError, match="`padding` must be"):
        max_pool_moments(jnp.zeros((1, 2, 2, 1)), None, (2, 2), padding="FULL")
    with pytest.raises(ValueError, match="does not fit"):
        max_pool_moments(jnp.zeros((1, 2, 2, 1)), jnp.zeros((1, 2, 2, 1)), (3, 3))
    with pytest.raises(ValueError, match=r"`mean` must have shape \(\*batch, 2 spatial axes"):
        max_pool_moments(jnp.zeros((4, 1)), None, (2, 2))


def _flax_layer_norm(x, scale, bias, epsilon, axes):
    ln = nn.LayerNorm(epsilon=epsilon, reduction_axes=axes, feature_axes=axes, param_dtype=x.dtype)
    with jax.numpy_dtype_promotion("standard"):  # flax adds a Python epsilon to float32 statistics
        return ln.apply({"params": {"scale": scale, "bias": bias}}, x)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("axes", [-1, (-2, -1)])
def test_layer_norm_with_zero_variance_is_flax_layer_norm(dtype, axes):
    """To float rounding: flax forms the variance as E[x^2] - E[x]^2, whose rounding error
    eps E[x^2] is relative eps E[x^2] / Var_x in the normalizer."""
    rng = np.random.default_rng(3)
    x = jnp.asarray(rng.normal(0.5, 1.0, (3, 4, 8)), dtype)
    feat = x.shape[-1:] if axes == -1 else x.shape[-2:]
    scale, bias = jnp.asarray(rng.normal(size=feat), dtype), jnp.asarray(rng.normal(size=feat), dtype)
    expected = np.asarray(_flax_layer_norm(x, scale, bias, 1e-5, axes), np.float64)
    ax = (-1,) if axes == -1 else axes
    for method in ("delta", "deterministic"):
        m, v = layer_norm_moments(x, jnp.zeros_like(x), scale, bias, epsilon=1e-5, axis=axes, method=method)
        assert m.dtype == v.dtype == dtype
        np.testing.assert_array_equal(v, np.zeros(x.shape))
        xs = np.asarray(x, np.float64)
        cond = (xs**2).mean(ax, keepdims=True) / xs.var(ax, keepdims=True)
        g = 1 / np.sqrt(xs.var(ax, keepdims=True) + 1e-5)
        tol = 8 * np.finfo(dtype).eps * (cond * np.abs(expected - np.asarray(bias)) + np.abs(xs) * g * np.abs(np.asarray(scale)) + np.abs(np.asarray(bias)))
        assert np.all(np.abs(np.asarray(m, np.float64) - expected) <= tol)
    m, _ = layer_norm_moments(x, None, epsilon=1e-5, axis=axes)
    np.testing.assert_allclose(m, _flax_layer_norm(x, jnp.ones(feat, dtype), jnp.zeros(feat, dtype), 1e-5, axes),
                               rtol=0, atol=64 * float(np.finfo(dtype).eps))


def _layer_norm_samples(key, mean, var, n, eps):
    x = mean[None] + jnp.sqrt(var)[None] * jax.random.normal(key, (n,) + mean.shape)
    u = x - x.mean(-1, keepdims=True)
    return np.asarray(u / jnp.sqrt((u * u).mean(-1, keepdims=True) + eps))


def test_layer_norm_against_monte_carlo():
    """Small variances against the spread of the means: the delta method within 4 standard
    errors, mean and variance. Variances that dominate: the mean within 4 standard errors,
    the variance ratio in the docstring's measured range 0.93 - 1.07 (with 4 standard errors);
    the deterministic normalizer overstates an outlier's variance (docstring: up to 2.5x)."""
    rng = np.random.default_rng(4)
    n_feat, n, eps = 16, 20_000, 1e-6
    mean = jnp.asarray(rng.normal(size=(3, n_feat)))
    small = jnp.asarray(0.01 * rng.uniform(0.5, 1.5, (3, n_feat)))
    samples = _layer_norm_samples(jax.random.key(5), mean, small, n, eps)
    assert_moments_within_4se(samples, *layer_norm_moments(mean, small, epsilon=eps))
    m_det, v_det = layer_norm_moments(mean, small, epsilon=eps, method="deterministic")
    mc_var = samples.var(0, ddof=1)
    assert np.max(np.asarray(v_det) / mc_var) > 1.3  # the saturation the delta method captures
    large = jnp.asarray(10.0 * rng.uniform(0.5, 1.5, (3, n_feat)))
    samples = _layer_norm_samples(jax.random.key(6), mean, large, n, eps)
    m, v = layer_norm_moments(mean, large, epsilon=eps)
    mc_mean, mc_var = samples.mean(0), samples.var(0, ddof=1)
    assert np.all(np.abs(np.asarray(m) - mc_mean) <= 4 * np.sqrt(mc_var / n))
    se_ratio = np.sqrt(np.maximum(((samples - mc_mean) ** 4).mean(0) - mc_var**2, 0) / n) / mc_var
    ratio = np.asarray(v) / mc_var
    assert np.all(ratio >= 0.93 - 4 * se_ratio) and np.all(ratio <= 1.07 + 4 * se_ratio), (ratio.min(), ratio.max())


def test_layer_norm_deterministic_keeps_the_mean_square_and_edge_cases():
    rng = np.random.default_rng(7)
    mean, var = jnp.asarray(rng.normal(size=(2, 6))), jnp.asarray(rng.uniform(0, 2, (2, 6)))
    m, v = layer_norm_moments(mean, var, epsilon=0.0, method="deterministic")
    # (1/n) sum E[y^2] = 1 at eps = 0: the expected empirical variance E[s^2] normalizes it.
    np.testing.assert_allclose(np.mean(np.asarray(v) + np.asarray(m) ** 2, -1), 1.0, rtol=1e-14)
    # Gradients finite at zero variance, all means equal included (s^2 = 0, only eps left).
    for method in ("delta", "deterministic"):
        grad = jax.jit(jax.grad(lambda a, b: sum(jnp.sum(o) for o in layer_norm_moments(a, b, method=method)), (0, 1)))
        for mu in (jnp.zeros((2, 4)), jnp.arange(8.0).reshape(2, 4)):
            assert all(bool(jnp.all(jnp.isfinite(x))) for x in grad(mu, jnp.zeros((2, 4))))
    # A NaN spoils its own row (the normalizer depends on all of it), not the others.
    m, v = layer_norm_moments(mean, var.at[0, 2].set(jnp.nan))
    assert np.all(np.isnan(m[0])) and np.all(np.isnan(v[0])) and np.all(np.isfinite(m[1]))
    with pytest.raises(ValueError, match="`var` must be >= 0"):
        layer_norm_moments(mean, -var)
    with pytest.raises(ValueError, match="`method` must be 'delta' or 'deterministic'"):
        layer_norm_moments(mean, var, method="exact")
    with pytest.raises(ValueError, match=r"`axis` must name axes of `mean` \(ndim 2\)"):
        layer_norm_moments(mean, var, axis=2)
    with pytest.raises(ValueError, match=r"`scale` of shape \(5,\) must broadcast"):
        layer_norm_moments(mean, var, jnp.ones(5))
    with pytest.raises(ValueError, match="`epsilon` must be a scalar >= 0"):
        layer_norm_moments(mean, var, epsilon=-1.0)


def test_dropout_moments_against_flax_dropout_monte_carlo():
    rng = np.random.default_rng(8)
    mean, var = jnp.asarray(rng.normal(size=(2, 5))), jnp.asarray(rng.uniform(0, 1, (2, 5)))
    n, rate = 40_000, 0.3
    keys = jax.random.split(jax.random.key(9), n)

    def draw(k):
        kx, kd = jax.random.split(k)
        x = mean + jnp.sqrt(var) * jax.random.normal(kx, mean.shape)
        return nn.Dropout(rate, deterministic=False).apply({}, x, rngs={"dropout": kd})

    samples = np.asarray(jax.jit(jax.vmap(draw))(keys))
    assert_moments_within_4se(samples, *dropout_moments(mean, var, rate))


def test_dropout_moments_values_and_errors():
    m, v = dropout_moments(jnp.array([3.0, 1e8]), jnp.array([1.0, 0.0]), 0.0)  # rate 0: identity
    np.testing.assert_array_equal(m, [3.0, 1e8])
    np.testing.assert_array_equal(v, [1.0, 0.0])
    m, v = dropout_moments(jnp.array([1e8], np.float32), None, 0.5)  # no cancellation: m^2 rate / p
    assert v.dtype == np.float32 and float(v[0]) == np.float32(1e16)
    g = jax.grad(lambda a, b: jnp.sum(dropout_moments(a, b, 0.2)[1]), (0, 1))(jnp.zeros(3), jnp.zeros(3))
    assert all(bool(jnp.all(jnp.isfinite(x))) for x in g)
    assert np.isnan(float(dropout_moments(jnp.array(np.nan), jnp.array(1.0), 0.5)[1]))
    for bad in (1.0, -0.1, np.nan):
        with pytest.raises(ValueError, match=r"`rate` must be a scalar in \[0, 1\)"):
            dropout_moments(jnp.ones(2), jnp.ones(2), bad)
    _, v = jax.jit(dropout_moments)(jnp.ones(2), jnp.ones(2), 1.0)
    assert bool(jnp.all(jnp.isnan(v)))
    with pytest.raises(ValueError, match="`var` must be >= 0"):
        dropout_moments(jnp.ones(2), -jnp.ones(2), 0.5)
