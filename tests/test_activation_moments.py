"""Gaussian moments of activations (issue 17) against mpmath quadrature, in the tails and at the edges.

Ground truth: for X = mu + sigma Z, E f(X) and Var f(X) = E (f(X) - E f(X))^2 (two passes, so the
variance has no cancellation) by composite 12-point Gauss-Legendre in z at 20 digits, on panels
placed where the integrands carry mass (z = 0; the exponential tilts z = +-s, +-2s; the probit
tilts -q c^2 mu s / (1 + q c^2 s^2); the kink or transition at z0 = -mu/s, resolved at its own
scale) and split at the kink. Where the exact value has no relative precision in the plain
integrand it is integrated in an exactly equivalent form: bounded functions at -|mu|
(f(x) = 1 - f(-x), or f odd with f + 1 = erfc(-x), 2 sigmoid(2x)), ELU's variance as that of
f + alpha. Derivatives: d/dmu E = E f'(X), d/dsigma E = E[Z f'(X)], d Var = 2 E[(f - m) f'(X) (1 or
Z)] by the same quadrature (independent of the code's formulas). The quadrature was checked
against closed forms (log-normal, ReLU, Phi(h), GELU's mean) and a 30-digit run on other panels
to 1e-18.

Bounds: float64 within 2x the bounds stated in each docstring (measured on a 252-point grid with
|mu/sigma| up to 60, sigma from 1e-6 to 10); float32 within 2x its stated bound, at most 336 ulps
(the stated float32 bounds, <= 2e-5 = 168 ulps, are the worst of the same grid with inputs
rounded to float32, where rounding mu/sigma alone costs up to (mu/sigma)^2 / 2 ulps).
"""

from __future__ import annotations

import functools
import math
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import mpmath as mp
import numpy as np
import pytest
from mpmath.calculus.quadrature import GaussLegendre

from bayeslayers_jax.core._activations import elu_moments, exp_moments, leaky_relu_moments
from bayeslayers_jax.core._activations_probit import erf_moments, gelu_moments, probit_moments
from bayeslayers_jax.core._activations_smooth import sigmoid_moments, silu_moments, softplus_moments, tanh_moments

DPS = 20

# ----------------------------------------------------------------------------- mpmath ground truth


def _sig(x):
    return 1 / (1 + mp.exp(-x))


def _dsig(x):
    e = mp.exp(-abs(x))
    return e / (1 + e) ** 2


def _softplus(x):
    return mp.log1p(mp.exp(x)) if x < 0 else x + mp.log1p(mp.exp(-x))


class Act(NamedTuple):
    fn: Callable  # the function under test, (mu, sigma, *param)
    f: Callable  # mpmath f (for 'odd1': f + 1; for 'shift': f itself)
    fp: Callable  # mpmath f'
    kinds: frozenset
    mode: str | None  # None | 'reflect01' (f(x) = 1 - f(-x)) | 'odd1' (odd, f given as f + 1) | 'shift'
    param: float | None
    bound64: tuple  # (mean, var) stated float64 relative bounds
    bound32: tuple
    abs64: float  # absolute bound for means that cross zero (0: the mean keeps one sign)
    abs32: float
    kink: float | None = None  # f'(0+) - f'(0-) if f has a kink at 0


def _elu_mp(alpha):
    a = mp.mpf(alpha)
    return (lambda x: x if x > 0 else a * mp.expm1(x)), (lambda x: mp.mpf(1) if x > 0 else a * mp.exp(x))


def _leaky_mp(s):
    s = mp.mpf(s)
    return (lambda x: x if x > 0 else s * x), (lambda x: mp.mpf(1) if x > 0 else s)


ACTS = {
    "sigmoid": Act(sigmoid_moments, _sig, _dsig, frozenset({"exp"}), "reflect01", None,
                   (2e-15, 1.5e-13), (1.2e-6, 2e-5), 0, 0),
    "tanh": Act(tanh_moments, lambda x: 2 / (1 + mp.exp(-2 * x)), lambda x: 4 * _dsig(2 * x),
                frozenset({"exp2"}), "odd1", None, (1.2e-14, 2.5e-13), (3e-6, 3e-6), 7e-15, 2e-7),
    "silu": Act(silu_moments, lambda x: x * _sig(x), lambda x: _sig(x) + x * _dsig(x), frozenset({"exp"}),
                None, None, (2e-14, 4.5e-13), (9e-7, 4e-6), 1.5e-14, 2.3e-6),
    "softplus": Act(softplus_moments, _softplus, _sig, frozenset({"exp"}), None, None,
                    (3.5e-14, 4e-13), (1.2e-6, 9e-7), 0, 0),
    "gelu": Act(gelu_moments, lambda x: x * mp.ncdf(x), lambda x: mp.ncdf(x) + x * mp.npdf(x),
                frozenset({"probit"}), None, None, (5e-15, 1.2e-13), (8e-7, 8e-6), 4e-15, 1.3e-6),
    "probit": Act(probit_moments, mp.ncdf, mp.npdf, frozenset({"probit"}), "reflect01", None,
                  (2e-13, 1.2e-13), (4e-6, 5e-6), 0, 0),
    "erf": Act(erf_moments, lambda x: mp.erfc(-x), lambda x: 2 / mp.sqrt(mp.pi) * mp.exp(-x * x),
               frozenset({"erf"}), "odd1", None, (3e-16, 3e-13), (3e-7, 8e-6), 0, 0),
    "exp": Act(exp_moments, mp.exp, mp.exp, frozenset({"exp"}), None, None, (3e-15, 3e-14), (1.2e-6, 3e-6), 0, 0),
    "elu": Act(elu_moments, *_elu_mp(1.0), frozenset({"exp", "kink"}), "shift", 1.0,
               (8e-15, 4e-13), (7e-6, 6e-6), 1e-14, 2e-6, kink=0.0),
    "elu_alpha_half": Act(elu_moments, *_elu_mp(0.5), frozenset({"exp", "kink"}), "shift", 0.5,
                    (8e-15, 4e-13), (7e-6, 6e-6), 1e-14, 2e-6, kink=0.5),
    "leaky": Act(leaky_relu_moments, *_leaky_mp(0.1), frozenset({"kink"}), None, 0.1,
                 (1.5e-15, 1.5e-14), (4e-7, 1.1e-6), 1e-14, 2e-6, kink=0.9),
}


@functools.lru_cache(maxsize=None)
def _gl_nodes(prec):
    return GaussLegendre(mp.mp).calc_nodes(3, prec)  # 12 nodes on [-1, 1]


def _edges(mu, s, kinds):
    """Panel edges in z: 2-wide panels of each mass centre's own width w, +-10 w (a kink's mass
    decays exponentially on 1/|z0|: +-40 w), 2/s-wide panels across the transition at z0."""
    one, z0 = mp.mpf(1), -mu / s
    centres = [(mp.mpf(0), one, 10)]
    if "exp" in kinds:
        centres += [(k * s, one, 10) for k in (-2, -1, 1, 2)]
    if "exp2" in kinds:
        centres += [(k * s, one, 10) for k in (-4, -2, 2, 4)]
    for name, c2 in (("probit", 1), ("erf", 2)):
        if name in kinds:
            for q in (1, 2):
                a2 = 1 + q * c2 * s * s
                centres.append((-q * c2 * mu * s / a2, 1 / mp.sqrt(a2), 10))
    centres.append((z0, min(one, 1 / max(abs(z0), one)), 40))
    edges = set()
    for c, w, n in centres:
        edges.update(c + 2 * k * w for k in range(-(n // 2), n // 2 + 1))
    lo, hi = min(edges), max(edges)
    edges.update(z0 + 2 * k / s for k in range(-20, 21) if lo <= z0 + 2 * k / s <= hi)
    edges = sorted(edges)
    out = [edges[0]]
    for e in edges[1:]:
        while e - out[-1] > 2:
            out.append(out[-1] + 2)
        if e - out[-1] > mp.mpf(10) ** -12 or e == z0:
            out.append(e)
    return out


def _quadrature(act, mu, s):
    """Nodes z, weights (including phi(z)), f and f' at mu + s z."""
    zs, ws = [], []
    for a, b in zip(*(lambda e: (e[:-1], e[1:]))(_edges(mu, s, act.kinds))):
        h, c = (b - a) / 2, (a + b) / 2
        for x, w in _gl_nodes(mp.mp.prec):
            z = c + h * x
            zs.append(z)
            ws.append(h * w * mp.exp(-z * z / 2) / mp.sqrt(2 * mp.pi))
    return zs, ws


def _raw(act, mu, s, grads):
    zs, ws = _quadrature(act, mu, s)
    fv = [act.f(mu + s * z) for z in zs]
    m = mp.fsum(w * v for w, v in zip(ws, fv))
    v = mp.fsum(w * (x - m) ** 2 for w, x in zip(ws, fv))
    if act.mode == "shift":  # ELU: variance from f + alpha = alpha e^x (x < 0): full relative precision
        al = mp.mpf(act.param)
        gv = [x + al for x in fv]
        gv = [al * mp.exp(mu + s * z) if mu + s * z <= 0 else g for z, g in zip(zs, gv)]
        mg = mp.fsum(w * g for w, g in zip(ws, gv))
        v = mp.fsum(w * (g - mg) ** 2 for w, g in zip(ws, gv))
    if not grads:
        return m, v
    dv = [act.fp(mu + s * z) for z in zs]
    return (
        mp.fsum(w * d for w, d in zip(ws, dv)),
        mp.fsum(w * d * z for w, d, z in zip(ws, dv, zs)),
        2 * mp.fsum(w * (x - m) * d for w, x, d in zip(ws, fv, dv)),
        2 * mp.fsum(w * (x - m) * d * z for w, x, d, z in zip(ws, fv, dv, zs)),
    )


@functools.lru_cache(maxsize=None)
def _truth(name, mu, s, grads=False):
    """Exact moments (or their mu, sigma derivatives) of ACTS[name] at binary mu, s > 0."""
    act = ACTS[name]
    with mp.workdps(DPS):
        mu, s = mp.mpf(mu), mp.mpf(s)
        flip = act.mode in ("reflect01", "odd1") and mu > 0
        out = list(_raw(act, -mu if flip else mu, s, grads))
        if grads:
            if flip:  # E(mu) = c - E(-mu) (c = 1 or, odd, the f + 1 shift), Var(mu) = Var(-mu)
                out[1], out[2] = -out[1], -out[2]
            return tuple(out)
        m, v = out
        if act.mode == "reflect01" and flip:
            m = 1 - m
        elif act.mode == "odd1":
            m = 1 - m if flip else (m - 1 if mu < 0 else mp.mpf(0))
        return m, v


# ----------------------------------------------------------------------------- the points

# Exactly representable in float32 too (so one truth serves both dtypes; mu/sigma is exact).
RATIOS = [-60.0, -8.0, -1.0, 0.0, 8.0, 60.0]
GRID = [(a * s, s) for s in [2.0**-10, 0.75, 10.0] for a in RATIOS]
# more points, in the slow set (the default run keeps to about 20 s of mpmath)
GRID_SLOW = [(a * s, s) for s in [2.0**-10, 0.25, 0.75, 3.0, 10.0] for a in RATIOS + [-2.0, -0.5, 0.5, 1.0, 2.0]]
GRID_SLOW = [p for p in GRID_SLOW if p not in GRID]
ZERO = [(m, 0.0) for m in (-3.0, -0.5, 0.0, 0.75, 2.0)]
GRAD_POINTS = [(-1.5, 0.5), (0.25, 1.25)]  # Gauss-Hermite and series branches
GRAD_POINTS_SLOW = [(-6.0, 3.0), (2.0, 0.75), (-0.75, 2.0**-10), (45.0, 3.0)]
NAN_POINTS = [(math.nan, 1.0), (1.0, math.nan), (math.nan, 0.0)]


def _edge_points(dtype):
    info = np.finfo(dtype)
    mus = [-1e4, -60.0, -1e-30, 0.0, 1e-30, 0.7, 60.0, 1e4]
    sigmas = [0.0, float(info.tiny), 1e-30, 1e-10, 1.0, 100.0]
    return [(m, s) for m in mus for s in sigmas]


def _evaluate(name, dtype, grads=None):
    """Values (and, by default in float64 only, first derivatives) at all points of this file,
    in one compiled call per function and dtype."""
    grads = (dtype == np.float64) if grads is None else grads
    return _evaluate_cached(name, np.dtype(dtype).name, grads)


@functools.lru_cache(maxsize=None)
def _evaluate_cached(name, dtype_name, grads):
    dtype = np.dtype(dtype_name).type
    act = ACTS[name]
    args = () if act.param is None else (act.param,)
    pts = GRID + GRID_SLOW + ZERO + GRAD_POINTS + GRAD_POINTS_SLOW + NAN_POINTS + [(0.5, -1.0)] + _edge_points(dtype)
    mu = jnp.asarray(np.array([p[0] for p in pts], dtype))
    sigma = jnp.asarray(np.array([p[1] for p in pts], dtype))

    def run(m, s):
        if not grads:
            return act.fn(m, s, *args)
        out, vjp = jax.vjp(lambda a, b: act.fn(a, b, *args), m, s)
        ones, zeros = jnp.ones_like(m), jnp.zeros_like(m)
        return (*out, *vjp((ones, zeros)), *vjp((zeros, ones)))

    # Unoptimized XLA (level 0) halves the compile time; the numerics are the same operations.
    compiled = jax.jit(run).lower(mu, sigma).compile({"xla_backend_optimization_level": 0})
    out = compiled(mu, sigma)
    assert out[0].dtype == dtype and out[1].dtype == dtype
    cols = [np.asarray(x, np.float64) for x in out]
    table = {}
    for i, p in enumerate(pts):
        table.setdefault(p, tuple(c[i] for c in cols))
    return pts, table


NAMES = [n for n in ACTS if n != "elu_alpha_half"]  # ELU with alpha = 0.5: in the slow set
ALL_NAMES = NAMES + [pytest.param("elu_alpha_half", marks=pytest.mark.slow)]
DTYPES = [np.float64, np.float32]


def _bounds(act, dtype):
    rel = act.bound64 if dtype == np.float64 else act.bound32
    return 2 * rel[0], 2 * rel[1], 2 * (act.abs64 if dtype == np.float64 else act.abs32)


# ----------------------------------------------------------------------------- accuracy


def _check_accuracy(name, dtype, grid):
    act = ACTS[name]
    _, table = _evaluate(name, dtype)
    tol_m, tol_v, tol_abs = _bounds(act, dtype)
    big = float(np.finfo(dtype).max)
    # XLA on CPU flushes subnormal intermediates to zero: results within a few orders of the
    # smallest normal number may lose their digits (they stay finite and non-negative)
    floor = 1e-290 if dtype == np.float64 else 1e-30
    for mu, s in grid:
        mean, var = table[(mu, s)][:2]
        tm, tv = _truth(name, mu, s)
        if abs(tm) > big or tv > big:  # exp: the exact value overflows, and so must the result
            assert mean == math.inf or var == math.inf
            continue
        assert np.isfinite(mean) and np.isfinite(var) and var >= 0, (mu, s, mean, var)
        err_m, err_v = abs(mp.mpf(mean) - tm), abs(mp.mpf(var) - tv)
        # relative, plus (for a mean that crosses zero) the stated absolute bound
        assert err_m <= tol_m * abs(tm) + tol_abs + floor, (mu, s, float(mean), float(tm), float(err_m / abs(tm)))
        assert err_v <= tol_v * tv + floor, (mu, s, float(var), float(tv), float(err_v / tv))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", ALL_NAMES)
def test_moments_match_mpmath_quadrature(name, dtype):
    _check_accuracy(name, dtype, GRID)


@pytest.mark.slow
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", NAMES)
def test_moments_match_mpmath_quadrature_on_more_points(name, dtype):
    _check_accuracy(name, dtype, GRID_SLOW)


def _check_sigma_zero(name, dtype, grads):
    act = ACTS[name]
    _, table = _evaluate(name, dtype, grads)
    eps = float(np.finfo(dtype).eps)
    for mu, _ in ZERO:
        values = table[(mu, 0.0)]
        mean, var = values[:2]
        with mp.workdps(DPS):
            x = mp.mpf(float(dtype(mu)))
            f = act.f(x) - (1 if act.mode == "odd1" else 0)
            fp = act.fp(x)
            if act.kink is not None and mu == 0:  # the mean of the one-sided slopes and its jump
                fp = (act.fp(mp.mpf(1e-30)) + act.fp(mp.mpf(-1e-30))) / 2
        # f(mu) itself: jax's ndtr, expm1, ... are good to a few ulps
        assert abs(mean - float(f)) <= 8 * eps * abs(float(f)), (mu, mean, float(f))
        assert var == 0
        if not grads:
            continue
        dm_mu, dm_s, dv_mu, dv_s = values[2:]
        assert dv_mu == 0 and dv_s == 0
        assert abs(dm_mu - float(fp)) <= 8 * eps * abs(float(fp)), (mu, dm_mu, float(fp))
        kink_slope = act.kink / math.sqrt(2 * math.pi) if (act.kink is not None and mu == 0) else 0.0
        assert abs(dm_s - kink_slope) <= 8 * eps * kink_slope, (mu, dm_s, kink_slope)


def _check_edges(name, dtype, grads):
    _, table = _evaluate(name, dtype, grads)
    log_max = math.log(float(np.finfo(dtype).max))
    for p in _edge_points(dtype):
        values = table[p]
        if name == "exp" and not np.all(np.isfinite(values)):
            # exp(1e4) overflows; the moments are +inf only where the exact value overflows
            # (and then the vjp's 0 * inf in the other output makes the derivatives NaN)
            assert max(p[0] + p[1] ** 2 / 2, 2 * p[0] + 2 * p[1] ** 2) > log_max - 1, p
            assert not np.any(np.isnan(values[:2])), (p, values)
            continue
        assert np.all(np.isfinite(values)), (p, values)
        assert values[1] >= 0, (p, values)
    for p in NAN_POINTS:
        assert np.all(np.isnan(table[p])), (p, table[p])
    # a traced negative sigma cannot raise: NaN moments
    assert np.isnan(table[(0.5, -1.0)][0]) and np.isnan(table[(0.5, -1.0)][1])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", ALL_NAMES)
def test_sigma_zero_is_f_of_mu_with_the_limit_derivatives(name, dtype):
    """(float64 with derivatives; float32 values here, derivatives in the slow set.)"""
    _check_sigma_zero(name, dtype, grads=dtype == np.float64)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", ALL_NAMES)
def test_edges_finite_nonnegative_and_nan_propagates(name, dtype):
    _check_edges(name, dtype, grads=dtype == np.float64)


@pytest.mark.slow
@pytest.mark.parametrize("name", NAMES)
def test_float32_derivatives_finite_with_the_limits_at_sigma_zero(name):
    _check_sigma_zero(name, np.float32, grads=True)
    _check_edges(name, np.float32, grads=True)


def _check_derivatives(name, points):
    _, table = _evaluate(name, np.float64)
    for mu, s in points:
        got = table[(mu, s)][2:]
        for g, t in zip(got, _truth(name, mu, s, grads=True)):
            assert abs(mp.mpf(g) - t) <= 1e-11 * abs(t) + 1e-13, (mu, s, g, float(t))


@pytest.mark.parametrize("name", ALL_NAMES)
def test_first_derivatives_match_mpmath(name):
    _check_derivatives(name, GRAD_POINTS)


@pytest.mark.slow
@pytest.mark.parametrize("name", NAMES)
def test_first_derivatives_match_mpmath_on_more_points(name):
    _check_derivatives(name, GRAD_POINTS_SLOW)


# ----------------------------------------------------------------------------- API


@pytest.mark.parametrize("name", NAMES)
def test_concrete_negative_sigma_raises_naming_sigma(name):
    act = ACTS[name]
    args = () if act.param is None else (act.param,)
    with pytest.raises(ValueError, match="`sigma`"):
        act.fn(jnp.zeros(3), jnp.array([1.0, -0.5, 2.0]), *args)


def test_parameters_must_be_finite_and_broadcast():
    with pytest.raises(ValueError, match="alpha"):
        elu_moments(0.0, 1.0, alpha=math.nan)
    with pytest.raises(ValueError, match="negative_slope"):
        leaky_relu_moments(0.0, 1.0, negative_slope=math.inf)
    with pytest.raises(ValueError, match=r"`mu` \(3,\).*`sigma` \(4,\)"):
        exp_moments(jnp.zeros(3), jnp.ones(4))
    # per-unit slopes broadcast like mu: the same as one call per slope
    mu, sigma, slope = jnp.array([-1.0, 0.5]), jnp.array([1.0, 2.0]), jnp.array([0.1, 0.3])
    fn = jax.jit(leaky_relu_moments)
    mean, var = fn(mu[:, None], sigma[:, None], slope[None, :])
    assert mean.shape == (2, 2)
    for j in range(2):
        m1, v1 = fn(mu, sigma, slope[j])
        np.testing.assert_allclose(mean[:, j], m1, rtol=1e-15)
        np.testing.assert_allclose(var[:, j], v1, rtol=1e-15)


def test_bfloat16_is_computed_in_float32_and_rounded_once():
    mu = jnp.linspace(-4, 4, 33, dtype=jnp.float32).astype(jnp.bfloat16)
    sigma = jnp.full_like(mu, 0.8)
    fn = jax.jit(exp_moments)
    m16, v16 = fn(mu, sigma)
    assert m16.dtype == jnp.bfloat16 and v16.dtype == jnp.bfloat16
    m32, v32 = fn(mu.astype(jnp.float32), sigma.astype(jnp.float32))
    np.testing.assert_allclose(m16.astype(jnp.float32), m32, rtol=2**-8)
    np.testing.assert_allclose(v16.astype(jnp.float32), v32, rtol=2**-8)


def test_vmap_and_broadcasting_agree():
    mu = jax.random.normal(jax.random.key(0), (3, 4))
    sigma = jnp.abs(jax.random.normal(jax.random.key(1), (4,)))
    m, v = jax.jit(exp_moments)(mu, sigma[None, :])
    mv, vv = jax.jit(jax.vmap(exp_moments, in_axes=(0, None)))(mu, sigma)
    np.testing.assert_allclose(mv, m, rtol=1e-15)
    np.testing.assert_allclose(vv, v, rtol=1e-15)


@pytest.mark.slow
@pytest.mark.parametrize("name", NAMES)
def test_second_derivatives_are_finite(name):
    act = ACTS[name]
    args = () if act.param is None else (act.param,)
    pts = [(m, s) for m in (-30.0, -1.0, 0.0, 0.5, 30.0) for s in (0.0, 1e-12, 0.3, 1.0, 8.0)]
    mu = jnp.asarray([p[0] for p in pts])
    sigma = jnp.asarray([p[1] for p in pts])
    for i in (0, 1):
        h = jax.jit(jax.vmap(jax.hessian(lambda p: act.fn(p[0], p[1], *args)[i])))(jnp.stack([mu, sigma], 1))
        assert bool(jnp.all(jnp.isfinite(h))), (name, i)
