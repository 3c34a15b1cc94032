"""draft"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import ndtr

from bayeslayers_jax.core._activations import (
    _LOG_SQRT_2PI,
    _V_MAX,
    _finish,
    _gh_centered_var,
    _inputs,
    _is64,
    _nodes,
    _phi,
    _sigma_zero,
    _tail3,
)

__all__ = ["sigmoid_moments", "tanh_moments", "silu_moments", "softplus_moments"]


def _crvz_weights(n: int) -> np.ndarray:
    """Cohen-Rodriguez Villegas-Zagier weights: sum_k (-1)^k a_k ~= sum_k w_k a_k (k < n)."""
    d = (3.0 + math.sqrt(8.0)) ** n
    d = (d + 1.0 / d) / 2.0
    b, c = -1.0, -d
    out = []
    for k in range(n):
        c = b - c
        out.append(c / d)
        b = (k + n) * (k - n) * b / ((k + 0.5) * (k + 1.0))
    return np.array(out)


# Terms of the accelerated alternating series: relative error <= 2 (2 n^2 + 1) / 5.83^n.
_N64, _N32 = 26, 14
_W = {n: _crvz_weights(n) for n in (_N64, _N32)}
_K = {n: np.arange(n, dtype=np.float64) for n in (_N64, _N32)}
# coefficients of log(1 + t)^2 = sum_{k>=2} (-1)^k (2 H_{k-1} / k) t^k, for k = j + 2
_L2 = {n: np.array([2.0 * sum(1.0 / i for i in range(1, j + 2)) / (j + 2) for j in range(n)]) for n in (_N64, _N32)}


class _HalfLine(NamedTuple):
    """``E[X^j e^{-kX}; X > 0] / sigma^j`` for ``k = 0..n+1``, ``j = 0, 1, 2`` (axis -1 is k)."""

    m0: jax.Array
    m1: jax.Array
    m2: jax.Array


def _half_line(m, s, n) -> _HalfLine:
    # With u = k s - v (v = m/s): phi(v) {R, g, w}(u) for u >= 0 (Mills-ratio forms, no overflow),
    # else exp(-k m + k^2 s^2 / 2) {Phi(a), h(a), (1 + a^2) Phi(a) + a phi(a)}, a = -u > 0.
    k = _nodes(m, np.arange(n + 2, dtype=np.float64))
    v = jnp.clip(m / s, -_V_MAX, _V_MAX)[..., None]
    u = k * s[..., None] - v
    upper = u >= 0
    # (where, not maximum: a tie at u = 0 must send the whole derivative to the branch used)
    uu = jnp.where(upper, u, 0.0)
    tail = _tail3(uu)
    pv = jnp.exp(-0.5 * v * v - _LOG_SQRT_2PI)
    a = jnp.where(upper, 0.0, -u)
    expo = jnp.where(upper, 0.0, k * (0.5 * k * s[..., None] - v) * s[..., None])
    e = jnp.exp(expo)
    cdf, pdf = ndtr(a), _phi(a)
    return _HalfLine(
        jnp.where(upper, pv * tail.mills, e * cdf),
        jnp.where(upper, pv * tail.g, e * (pdf + a * cdf)),
        jnp.where(upper, pv * tail.w, e * ((1.0 + a * a) * cdf + a * pdf)),
    )


def _sum(terms, n):
    """The accelerated alternating sum ``sum_k (-1)^k terms[..., k]`` over the first n terms."""
    return jnp.sum(_nodes(terms[..., 0], _W[n]) * terms[..., :n], axis=-1)


def _series_n(x):
    return _N64 if _is64(x) else _N32


class _Sides(NamedTuple):
    pos: _HalfLine  # X > 0, t = exp(-X)
    neg: _HalfLine  # X < 0, t = exp(X)
    n: int


def _sides(mu, s) -> _Sides:
    n = _series_n(mu)
    both = _half_line(jnp.stack([mu, -mu]), jnp.stack([s, s]), n)  # one evaluation of the ratios
    return _Sides(_HalfLine(*(x[0] for x in both)), _HalfLine(*(x[1] for x in both)), n)


def _swap(sd: _Sides, flip) -> _Sides:
    """The sides of ``-X`` where ``flip`` (reflection ``mu -> -mu``)."""
    f = flip[..., None]
    pick = lambda a, b: _HalfLine(*(jnp.where(f, y, x) for x, y in zip(a, b)))  # noqa: E731
    return _Sides(pick(sd.pos, sd.neg), pick(sd.neg, sd.pos), sd.n)


def _kk(sd: _Sides):
    return _nodes(sd.pos.m0[..., 0], _K[sd.n])


def _sigmoid_m1(sd):
    # x > 0: 1/(1+t) = sum (-1)^k t^k;  x < 0: t/(1+t) = sum (-1)^k t^(k+1)
    return _sum(sd.pos.m0, sd.n) + _sum(sd.neg.m0[..., 1:], sd.n)


def _sigmoid_m2(sd):
    k1 = _kk(sd) + 1.0  # 1/(1+t)^2 = sum (-1)^k (k+1) t^k
    return _sum(k1 * sd.pos.m0[..., : sd.n], sd.n) + _sum(k1 * sd.neg.m0[..., 2:], sd.n)


def _silu_m1(sd, s):
    return s * (_sum(sd.pos.m1, sd.n) - _sum(sd.neg.m1[..., 1:], sd.n))


def _silu_m2(sd, s):
    k1 = _kk(sd) + 1.0
    return s * s * (_sum(k1 * sd.pos.m2[..., : sd.n], sd.n) + _sum(k1 * sd.neg.m2[..., 2:], sd.n))


def _softplus_m1(sd, s):
    inv = 1.0 / (_kk(sd) + 1.0)  # log(1+t) = sum (-1)^k t^(k+1) / (k+1)
    return s * sd.pos.m1[..., 0] + _sum(inv * sd.pos.m0[..., 1 : sd.n + 1], sd.n) + _sum(
        inv * sd.neg.m0[..., 1 : sd.n + 1], sd.n
    )


def _softplus_m2(sd, s):
    inv = 1.0 / (_kk(sd) + 1.0)
    c = _nodes(sd.pos.m0[..., 0], _L2[sd.n])
    pos = s * s * sd.pos.m2[..., 0] + 2.0 * s * _sum(inv * sd.pos.m1[..., 1 : sd.n + 1], sd.n)
    return pos + _sum(c * sd.pos.m0[..., 2:], sd.n) + _sum(c * sd.neg.m0[..., 2:], sd.n)


def _x_sig_sig(sd, s):
    """``E[X sigmoid(X) sigmoid(-X)]``: x t/(1+t)^2 = x sum (-1)^k (k+1) t^(k+1), odd in x."""
    k1 = _kk(sd) + 1.0
    return s * (_sum(k1 * sd.pos.m1[..., 1 : sd.n + 1], sd.n) - _sum(k1 * sd.neg.m1[..., 1 : sd.n + 1], sd.n))


# ----------------------------------------------------------------------------- exact differences


@jax.custom_jvp
def _sigmoid(x):
    """``jax.nn.sigmoid`` with the derivative ``sigmoid(x) sigmoid(-x)`` (no ``1 - sigmoid``
    cancellation in the upper tail)."""
    return jax.nn.sigmoid(x)


@_sigmoid.defjvp
def _sigmoid_jvp(primals, tangents):
    (x,), (dx,) = primals, tangents
    return _sigmoid(x), _sigmoid(x) * _sigmoid(-x) * dx


def _tanh(x):
    """``tanh`` whose derivative is ``4 sigmoid(2x) sigmoid(-2x)`` (not ``1 - tanh^2``)."""
    return _tanh_cj(x)


@jax.custom_jvp
def _tanh_cj(x):
    return jnp.tanh(x)


@_tanh_cj.defjvp
def _tanh_cj_jvp(primals, tangents):
    (x,), (dx,) = primals, tangents
    return _tanh_cj(x), 4.0 * _sigmoid(2.0 * x) * _sigmoid(-2.0 * x) * dx


def _silu(x):
    return x * _sigmoid(x)


def _sig_diff(b, delta):
    """``sigmoid(b + delta) - sigmoid(b) = sinh(delta/2) / (2 cosh(a/2) cosh(b/2))``, overflow free."""
    a = b + delta
    ea, eb = jnp.exp(-jnp.abs(a)), jnp.exp(-jnp.abs(b))
    return 2.0 * jnp.sinh(0.5 * delta) * jnp.exp(-0.5 * (jnp.abs(a) + jnp.abs(b))) / ((1.0 + ea) * (1.0 + eb))


def _tanh_diff(b, delta):
    return 2.0 * _sig_diff(2.0 * b, 2.0 * delta)


def _silu_diff(b, delta):
    return delta * _sigmoid(b + delta) + b * _sig_diff(b, delta)


def _softplus_diff(b, delta):
    return jnp.log1p(_sigmoid(b) * jnp.expm1(delta))


# Below this sigma the variance is Gauss-Hermite on exact differences (the poles of the
# logistic are at distance pi / sigma from the real axis; measured: 32 nodes reach float64
# precision, 16 float32 precision, up to sigma = 0.7).
_GH_SIGMA = 0.7


def _small_sigma(f, diff, mu, sigma, mean, var, scale=1.0):
    """Where ``scale * sigma <= _GH_SIGMA``: mean ``f(mu) + E[d]`` and variance from Gauss-Hermite
    on the exact differences ``d``; elsewhere the series values."""
    small = scale * sigma <= _GH_SIGMA
    e1, gh = _gh_centered_var(diff, mu, jnp.where(small, sigma, 0.0))
    return jnp.where(small, f(mu) + e1, mean), jnp.where(small, gh, jnp.maximum(var, 0.0))


# ----------------------------------------------------------------------------- cores


def _sigmoid_core(mu, sigma):
    sd = _sides(mu, sigma)
    mean = _sigmoid_m1(sd)
    rd = _swap(sd, mu > 0)  # Var[sigmoid(X)] = Var[sigmoid(-X)]: evaluate at -|mu|
    m1 = _sigmoid_m1(rd)
    var = _sigmoid_m2(rd) - m1 * m1
    return _small_sigma(_sigmoid, _sig_diff, mu, sigma, mean, var)


def _tanh_core(mu, sigma):
    sd = _sides(2.0 * mu, 2.0 * sigma)
    mean = _sigmoid_m1(sd) - _sigmoid_m1(_swap(sd, jnp.ones(mu.shape, bool)))
    rd = _swap(sd, mu > 0)
    m1 = _sigmoid_m1(rd)
    var = 4.0 * (_sigmoid_m2(rd) - m1 * m1)
    return _small_sigma(_tanh, _tanh_diff, mu, sigma, mean, var, scale=2.0)


def _silu_core(mu, sigma):
    sd = _sides(mu, sigma)
    mean = _silu_m1(sd, sigma)
    flip = mu > 0
    rd = _swap(sd, flip)
    m1 = _silu_m1(rd, sigma)
    var_neg = _silu_m2(rd, sigma) - m1 * m1
    # silu(x) = x + silu(-x): for mu > 0, Var = s^2 (1 - 2 E[silu'(-X)]) + Var[silu(-X)] (Stein),
    # E[silu'(-X)] = E[sigmoid(-X)] - E[X sigmoid(X) sigmoid(-X)].
    ref = _swap(sd, jnp.ones(mu.shape, bool))
    stein = 1.0 - 2.0 * _sigmoid_m1(ref) + 2.0 * _x_sig_sig(sd, sigma)
    var = var_neg + jnp.where(flip, sigma * sigma * stein, 0.0)
    return _small_sigma(_silu, _silu_diff, mu, sigma, mean, var)


def _softplus_core(mu, sigma):
    sd = _sides(mu, sigma)
    mean = _softplus_m1(sd, sigma)
    flip = mu > 0
    rd = _swap(sd, flip)
    m1 = _softplus_m1(rd, sigma)
    var_neg = _softplus_m2(rd, sigma) - m1 * m1
    # softplus(x) = x + softplus(-x): Var = s^2 (1 - 2 E[sigmoid(-X)]) + Var[softplus(-X)].
    ref = _swap(sd, jnp.ones(mu.shape, bool))
    stein = 1.0 - 2.0 * _sigmoid_m1(ref)
    var = var_neg + jnp.where(flip, sigma * sigma * stein, 0.0)
    return _small_sigma(jax.nn.softplus, _softplus_diff, mu, sigma, mean, var)


def sigmoid_moments(mu, sigma):
    """draft"""
    mu, sigma, out = _inputs(mu, sigma)
    return _finish(*_sigma_zero(_sigmoid_core, lambda m, s: _sigmoid(m), mu, sigma), out)


def tanh_moments(mu, sigma):
    """draft"""
    mu, sigma, out = _inputs(mu, sigma)
    return _finish(*_sigma_zero(_tanh_core, lambda m, s: _tanh(m), mu, sigma), out)


def silu_moments(mu, sigma):
    """draft"""
    mu, sigma, out = _inputs(mu, sigma)
    return _finish(*_sigma_zero(_silu_core, lambda m, s: _silu(m), mu, sigma), out)


def softplus_moments(mu, sigma):
    """draft"""
    mu, sigma, out = _inputs(mu, sigma)
    return _finish(*_sigma_zero(_softplus_core, lambda m, s: jax.nn.softplus(m), mu, sigma), out)
