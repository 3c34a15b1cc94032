"""draft"""

from __future__ import annotations

import math

import jax.numpy as jnp
import numpy as np
from jax.scipy.special import erf, ndtr

from bayeslayers_jax._checks import broadcast_floats, concrete_value
from bayeslayers_jax.core._moments import _tail_ratios, neg_relu_moments, relu_moments

__all__ = [
    "leaky_relu_moments",
    "exp_moments",
    "probit_moments",
    "erf_moments",
    "gelu_moments",
]

_LOG_SQRT_2PI = 0.5 * math.log(2.0 * math.pi)
_SQRT_HALF = math.sqrt(0.5)
_SQRT_2 = math.sqrt(2.0)


# ----------------------------------------------------------------------------- shared helpers


def _check_sigma(sigma) -> None:
    concrete = concrete_value(sigma)
    if concrete is not None:
        negative = concrete < 0
        if np.any(negative):
            raise ValueError(
                f"`sigma` must be >= 0 (a standard deviation), got {int(negative.sum())} negative "
                f"entries (min {float(concrete[negative].min())}) in shape {concrete.shape}."
            )


def _inputs(mu, sigma):
    """Broadcast floats, a concrete negative ``sigma`` raises, traced negatives become NaN,
    half precision is computed in float32. Returns ``(mu, sigma, out_dtype)``."""
    _check_sigma(sigma)
    mu, sigma = broadcast_floats(mu=mu, sigma=sigma)
    out_dtype = mu.dtype
    work = jnp.float32 if jnp.finfo(out_dtype).bits < 32 else out_dtype
    mu, sigma = mu.astype(work), sigma.astype(work)
    sigma = jnp.where(sigma < 0, jnp.nan, sigma)
    return mu, sigma, out_dtype


def _is64(x) -> bool:
    return jnp.finfo(x.dtype).bits >= 64


def _nodes(x, values):
    """``values`` (1-D numpy) as an array of ``x``'s dtype shaped ``(1, ..., 1, n)``."""
    arr = jnp.asarray(np.asarray(values), x.dtype)
    return arr.reshape((1,) * x.ndim + (-1,))


def _phi(x):
    return jnp.exp(-0.5 * x * x - _LOG_SQRT_2PI)


def _finish(mean, var, out_dtype):
    return mean.astype(out_dtype), var.astype(out_dtype)


def _sigma_zero(core, f0, mu, sigma, *args):
    """Evaluates ``core(mu, sigma_safe, *args)`` and returns ``(f0(mu), 0)`` where ``sigma == 0``
    (double ``where``: the unused branch sees ``sigma = 1``, so its gradient stays finite)."""
    zero = sigma == 0
    safe = jnp.where(zero, jnp.ones_like(sigma), sigma)
    mean, var = core(mu, safe, *args)
    return jnp.where(zero, f0(mu, sigma, *args), mean), jnp.where(zero, jnp.zeros_like(var), var)


# ----------------------------------------------------------------------------- probit / erf

_GL64 = np.polynomial.legendre.leggauss(32)
_GL32 = np.polynomial.legendre.leggauss(16)
# Truncation of the T-difference integral where its integrand has fallen below exp(-E).
_TRUNC64, _TRUNC32 = 44.0, 22.0
# Beyond |h| = 50 the probit variance underflows in every dtype (exp(-h^2/2) < 1e-540).
_H_VAR_MAX = 50.0


def _probit_var(h, s2):
    r"""``Var[Phi(X)]`` from ``h = mu/sqrt(1+s^2)`` and ``s2 = sigma^2 > 0``:

    ``(1/pi) exp(-h^2 (1+a^2)/2) int_a^1 exp(-h^2 (x^2-a^2)/2) / (1+x^2) dx``, ``a = 1/sqrt(1+2 s^2)``.
    """
    k = jnp.sqrt(1.0 + 2.0 * s2)
    a = 1.0 / k
    one_minus_a = 2.0 * s2 / ((k + 1.0) * k)
    t = jnp.minimum(jnp.abs(h), _H_VAR_MAX)
    trunc = _TRUNC64 if _is64(h) else _TRUNC32
    b = t * a
    pos = t > 0
    t_safe = jnp.where(pos, t, 1.0)
    reach = jnp.where(pos, 2.0 * trunc / (t_safe * (b + jnp.sqrt(b * b + 2.0 * trunc))), jnp.inf)
    length = jnp.minimum(one_minus_a, reach)
    xi, wi = _GL64 if _is64(h) else _GL32
    half = 0.5 * length[..., None]
    d = half * (1.0 + _nodes(h, xi))  # x - a at the nodes
    x = a[..., None] + d
    tt = (t * t)[..., None]
    integrand = jnp.exp(-0.5 * tt * d * (2.0 * a[..., None] + d)) / (1.0 + x * x)
    integral = jnp.sum(half * _nodes(h, wi) * integrand, axis=-1)
    return jnp.exp(-0.5 * t * t * (1.0 + a * a)) * integral / math.pi


def _probit_core(mu, sigma):
    s2 = sigma * sigma
    h = mu / jnp.sqrt(1.0 + s2)
    return ndtr(h), _probit_var(h, s2)


def _probit_f0(mu, sigma):
    return ndtr(mu)


def probit_moments(mu, sigma):
    """draft"""
    mu, sigma, out = _inputs(mu, sigma)
    return _finish(*_sigma_zero(_probit_core, _probit_f0, mu, sigma), out)


def _erf_core(mu, sigma):
    s2 = sigma * sigma
    k = jnp.sqrt(1.0 + 2.0 * s2)
    mean = erf(mu / k)
    h = _SQRT_2 * mu / k  # the probit h of sqrt(2) X
    return mean, 4.0 * _probit_var(h, 2.0 * s2)


def erf_moments(mu, sigma):
    """draft"""
    mu, sigma, out = _inputs(mu, sigma)
    return _finish(*_sigma_zero(_erf_core, lambda m, s: erf(m), mu, sigma), out)


# ----------------------------------------------------------------------------- GELU


def _gelu_mean(mu, sigma, r, h):
    """``E[X Phi(X)] = mu Phi(h) + sigma^2 phi(h)/r``; for ``h < 0`` as
    ``phi(h)/r (r^2 g(|h|) - 1)`` with ``g(t) = h(-t)/phi(t)`` (no cancellation but the true zero)."""
    t = jnp.abs(h)
    phi = _phi(t)
    g = _tail_ratios(t, phi).g
    lower = phi / r * (r * r * g - 1.0)
    upper = mu * ndtr(h) + sigma * sigma * phi / r
    return jnp.where(h < 0, lower, upper)


def _gelu_var_nonpos(mu, sigma):
    """``Var[X Phi(X)]`` for ``mu <= 0`` in closed form (Stein's lemma and the probit variance)."""
    s2 = sigma * sigma
    r2 = 1.0 + s2
    r = jnp.sqrt(r2)
    k = jnp.sqrt(1.0 + 2.0 * s2)
    h = mu / r
    mean = _gelu_mean(mu, sigma, r, h)
    p = ndtr(h)
    e_phi2 = p * p + _probit_var(h, s2)  # E[Phi(X)^2]
    hk = h / k
    bracket = mu * (1.0 + 1.0 / r2) * ndtr(hk) + s2 / (r * k) * _phi(hk)
    second = (mu * mu + s2) * e_phi2 + 2.0 * s2 * _phi(h) / r * bracket
    return mean, jnp.maximum(second - mean * mean, 0.0)


def _gelu_core(mu, sigma):
    s2 = sigma * sigma
    r = jnp.sqrt(1.0 + s2)
    h = mu / r
    mean = _gelu_mean(mu, sigma, r, h)
    _, var_neg = _gelu_var_nonpos(-jnp.abs(mu), sigma)
    # GELU(x) = x + GELU(-x): Var = s^2 (1 - 2 E[GELU'(-X)]) + Var[GELU(-X)] (Stein), for mu > 0.
    pos = jnp.maximum(mu, 0.0)
    extra = s2 * (erf(pos / r * _SQRT_HALF) + 2.0 * pos * _phi(pos / r) / (r * r * r))
    return mean, var_neg + extra


def _gelu_f0(mu, sigma):
    return mu * ndtr(mu)


def gelu_moments(mu, sigma):
    """draft"""
    mu, sigma, out = _inputs(mu, sigma)
    return _finish(*_sigma_zero(_gelu_core, _gelu_f0, mu, sigma), out)


# ----------------------------------------------------------------------------- exp, leaky ReLU


def _exp_core(mu, sigma):
    s2 = sigma * sigma
    mean = jnp.exp(mu + 0.5 * s2)
    # log Var = 2 log sigma + log(expm1(s^2)/s^2) + 2 mu + s^2
    big = s2 > 1.0
    s2_small = jnp.where(big, 1.0, s2)
    s2_big = jnp.where(big, s2, 2.0)
    log_ratio = jnp.where(
        big,
        s2_big + jnp.log1p(-jnp.exp(-s2_big)) - jnp.log(s2_big),
        jnp.log(jnp.where(s2_small > 0, jnp.expm1(s2_small) / jnp.where(s2_small > 0, s2_small, 1.0), 1.0)),
    )
    var = jnp.exp(2.0 * jnp.log(sigma) + log_ratio + 2.0 * mu + s2)
    return mean, var


def exp_moments(mu, sigma):
    """draft"""
    mu, sigma, out = _inputs(mu, sigma)
    return _finish(*_sigma_zero(_exp_core, lambda m, s: jnp.exp(m), mu, sigma), out)


def leaky_relu_moments(mu, sigma, negative_slope=0.01):
    """draft"""
    mu, sigma, out = _inputs(mu, sigma)
    slope = jnp.asarray(negative_slope, mu.dtype)
    pm, pv = relu_moments(mu, sigma)
    nm, nv = neg_relu_moments(mu, sigma)
    mean = pm - slope * nm
    var = pv + slope * slope * nv + 2.0 * slope * pm * nm
    return _finish(mean, jnp.maximum(var, 0.0), out)
