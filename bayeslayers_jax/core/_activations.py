"""draft"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import erf, log_ndtr, ndtr

from bayeslayers_jax._checks import broadcast_floats, concrete_value
from bayeslayers_jax.core._moments import _moments as _relu_sides
from bayeslayers_jax.core._moments import _tail_ratios, relu_moments

__all__ = [
    "leaky_relu_moments",
    "exp_moments",
    "probit_moments",
    "erf_moments",
    "gelu_moments",
    "elu_moments",
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


@jax.custom_jvp
def _tail3(t):
    """The tail ratios ``R, g, w`` at ``t >= 0`` (``_moments._tail_ratios``) with closed-form
    derivatives ``R' = -g``, ``g' = -w``, ``w' = t w - 2 g`` (from ``R' = t R - 1``), so that
    autodiff never goes through the continued fraction (much smaller programs to compile)."""
    return _tail_ratios(t, _phi(t))


@_tail3.defjvp
def _tail3_jvp(primals, tangents):
    (t,), (dt,) = primals, tangents
    tail = _tail3(t)
    return tail, type(tail)(-tail.g * dt, -tail.w * dt, (t * tail.w - 2.0 * tail.g) * dt)


def _ratios(*parts):
    """The tail ratios of several arrays ``(..., n_i)`` in one evaluation (one continued fraction
    to compile instead of several), split back into a list."""
    sizes = [p.shape[-1] for p in parts]
    cat = jnp.concatenate(parts, axis=-1)
    tail = _tail3(cat)
    out, start = [], 0
    for n in sizes:
        out.append(type(tail)(*(x[..., start : start + n] for x in tail)))
        start += n
    return out


def _finish(mean, var, out_dtype):
    return mean.astype(out_dtype), var.astype(out_dtype)


# Standard deviations below this are treated as 0: the moments then equal (f(mu), 0) to the
# dtype's precision (sigma^2 is below its smallest normal number; at a kink of f the mean moves
# by less than sigma / 2), and derivatives such as d(mu/sigma)/dsigma = -mu/sigma^2 stay finite.
_SIGMA_MIN64, _SIGMA_MIN32 = 1e-150, 1e-18


def _sigma_zero(core, f0, mu, sigma, *args):
    """Evaluates ``core(mu, sigma_safe, *args)`` and returns ``(f0(mu, sigma), 0)`` where ``sigma``
    is 0 (or below the dtype's ``_SIGMA_MIN``); double ``where``: the unused branch sees
    ``sigma = 1``, so its gradient stays finite. A NaN ``mu`` gives a NaN variance there too."""
    zero = sigma < (_SIGMA_MIN64 if _is64(sigma) else _SIGMA_MIN32)
    safe = jnp.where(zero, jnp.ones_like(sigma), sigma)
    mean, var = core(mu, safe, *args)
    # 0 for a finite mu, with NaN derivatives (in mu and sigma) when mu is NaN
    nan_guard = (mu - mu) * (sigma + mu)
    return (
        jnp.where(zero, f0(mu, sigma, *args) + nan_guard, mean),
        jnp.where(zero, nan_guard, var),
    )


# ----------------------------------------------------------------------------- probit / erf

_GL64 = np.polynomial.legendre.leggauss(32)
_GL32 = np.polynomial.legendre.leggauss(16)
# Truncation of the T-difference integral where its integrand has fallen below exp(-E).
_TRUNC64, _TRUNC32 = 44.0, 22.0
# Beyond |h| = 50 the probit variance underflows in every dtype (exp(-h^2/2) < 1e-540).
_H_VAR_MAX = 50.0


def _probit_var(h, s2, with_second=False):
    r"""``Var[Phi(X)]`` from ``h = mu/sqrt(1+s^2)`` and ``s2 = sigma^2 > 0``:

    ``(1/pi) exp(-h^2 (1+a^2)/2) int_a^1 exp(-h^2 (x^2-a^2)/2) / (1+x^2) dx``, ``a = 1/sqrt(1+2 s^2)``.
    """
    k = jnp.sqrt(1.0 + 2.0 * s2)
    a = 1.0 / k
    one_minus_a = 2.0 * s2 / ((k + 1.0) * k)
    t = jnp.minimum(jnp.abs(h), _H_VAR_MAX)
    trunc = _TRUNC64 if _is64(h) else _TRUNC32
    b = t * a
    pos = t > 1.0  # for t <= 1 the reach exceeds 1 >= 1 - a
    t_safe = jnp.where(pos, t, 1.0)
    reach = jnp.where(pos, 2.0 * trunc / (t_safe * (b + jnp.sqrt(b * b + 2.0 * trunc))), jnp.inf)
    length = jnp.minimum(one_minus_a, reach)
    xi, wi = _GL64 if _is64(h) else _GL32
    half = 0.5 * length[..., None]
    d = half * (1.0 + _nodes(h, xi))  # x - a at the nodes
    x = a[..., None] + d
    tt = (t * t)[..., None]
    integrand = jnp.exp(-0.5 * tt * d * (2.0 * a[..., None] + d)) / (1.0 + x * x)
    wn = half * _nodes(h, wi)
    lead = jnp.exp(-0.5 * t * t * (1.0 + a * a)) / math.pi
    var = lead * jnp.sum(wn * integrand, axis=-1)
    if not with_second:
        return var
    # (1/pi) int_a^1 exp(-h^2 (1+x^2)/2) (rho - (1-x^2)/(1+x^2)) / (1+x^2) dx, rho = s^2/(1+s^2),
    # with rho - (1-x^2)/(1+x^2) = (1 + rho)(x^2 - a^2)/(1 + x^2) (for E[h(X)^2] of GELU)
    one_rho = (1.0 + 2.0 * s2) / (1.0 + s2)
    second = lead * one_rho * jnp.sum(wn * integrand * d * (2.0 * a[..., None] + d) / (1.0 + x * x), axis=-1)
    return var, second


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


def _gelu_mean(mu, sigma, r, h, g):
    """``E[X Phi(X)] = mu Phi(h) + sigma^2 phi(h)/r``; for ``h < 0`` also as
    ``phi(h)/r (r^2 g(|h|) - 1)`` with ``g(t) = H(-t)/phi(t)`` (``g`` given): of the two, the one
    whose terms are smaller (less cancellation) is used."""
    phi = _phi(h)
    r2g = r * r * g
    via_g = phi / r * (r2g - 1.0)
    a_term, b_term = mu * ndtr(h), sigma * sigma * phi / r
    direct = a_term + b_term
    use_g = (h < 0) & (phi / r * (r2g + 1.0) < jnp.abs(a_term) + b_term)
    return jnp.where(use_g, via_g, direct)


def _gelu_var_nonpos(mu, sigma, g_h, g_hk):
    """``Var[X Phi(X)]`` for ``mu <= 0`` in closed form: of two exact forms of ``E[f^2]``, the one
    with less cancellation.

    (A) Stein's lemma: ``E[X^2 Phi^2] = (mu^2+s^2) E[Phi^2] + 2 s^2 (mu E[Phi phi] + E[X Phi phi])``.
    (B) ``x Phi(x) = H(x) - phi(x)``, ``H(x) = phi(x) + x Phi(x) = E[relu(x + Z)]``:
    ``E[f^2] = E[phi^2] - 2 E[H phi] + E[H^2]``, where ``E[H(X)^2] = E[relu(U1) relu(U2)]`` for a
    bivariate normal (correlation ``rho``) is ``r^2 (H(c)^2 + rho Phi(c)^2 + int_0^rho V)`` by
    Price's theorem (``d/drho = BVN(c, c; rho)``), all terms positive: (B) keeps its digits in the
    lower tail, where (A)'s terms cancel.
    """
    s2 = sigma * sigma
    r2 = 1.0 + s2
    r = jnp.sqrt(r2)
    k = jnp.sqrt(1.0 + 2.0 * s2)
    h = mu / r
    mean = _gelu_mean(mu, sigma, r, h, g_h)
    p = ndtr(h)
    var_phi, second = _probit_var(h, s2, with_second=True)
    e_phi2 = p * p + var_phi  # E[Phi(X)^2]
    hk = h / k
    t1 = (mu * mu + s2) * e_phi2
    lead = 2.0 * s2 * _phi(h) / r
    t2a = lead * mu * (1.0 + 1.0 / r2) * ndtr(hk)
    t2b = lead * s2 / (r * k) * _phi(hk)
    form_a, mag_a = t1 + t2a + t2b, t1 + jnp.abs(t2a) + t2b
    # (B): H(c) for c <= 0 is phi(c) g(|c|)
    big_h = _phi(h) * g_h
    big_hk = _phi(hk) * g_hk
    e_phi_sq = jnp.exp(-mu * mu / (k * k)) / (2.0 * math.pi * k)
    e_hphi = _phi(h) * k / r2 * big_hk
    e_h2 = r2 * (big_h * big_h + s2 / r2 * p * p + second)
    form_b, mag_b = e_phi_sq - 2.0 * e_hphi + e_h2, e_phi_sq + 2.0 * e_hphi + e_h2
    use_b = _less_cancellation(form_b, mag_b, form_a, mag_a)
    e_f2 = jnp.where(use_b, form_b, form_a)
    return mean, jnp.maximum(e_f2 - mean * mean, 0.0)


_GH64 = np.polynomial.hermite_e.hermegauss(32)
_GH32 = np.polynomial.hermite_e.hermegauss(16)
_GL8 = np.polynomial.legendre.leggauss(8)


def _less_cancellation(value_b, mag_b, value_a, mag_a):
    """Whether candidate b keeps more digits than a: a larger value relative to the sum of the
    magnitudes of its terms (ratios, not cross products, which would underflow)."""
    rb = value_b / jnp.where(mag_b > 0, mag_b, 1.0)
    ra = value_a / jnp.where(mag_a > 0, mag_a, 1.0)
    return rb > ra


def _gh_centered_var(diff, mu, sigma):
    """``E[f(X)] - f(mu)`` and ``Var[f(X)]``, ``X = mu + sigma Z``, by Gauss-Hermite on ``d(z) = f(mu + sigma z) - f(mu)``, which
    ``diff(mu[..., None], delta)`` evaluates without cancellation: ``E[d^2] - E[d]^2`` then
    loses nothing as ``sigma -> 0`` (``E[d]^2 / E[d^2] = O(sigma^2)``)."""
    z, w = _GH64 if _is64(mu) else _GH32
    w = w / math.sqrt(2.0 * math.pi)
    d = diff(mu[..., None], sigma[..., None] * _nodes(mu, z))
    wn = _nodes(mu, w)
    e1 = jnp.sum(wn * d, axis=-1)
    e2 = jnp.sum(wn * d * d, axis=-1)
    return e1, jnp.maximum(e2 - e1 * e1, 0.0)


def _ndtr_diff(b, delta):
    """``Phi(b + delta) - Phi(b)`` to full relative precision: Gauss-Legendre on
    ``delta int_0^1 phi(b + t delta) dt`` where the two values are close, else the difference."""
    t, w = _GL8
    close = jnp.abs(delta) * (jnp.abs(b) + jnp.abs(delta)) < 1.0
    tt = 0.5 * (1.0 + _nodes(delta, t))
    mv = 0.5 * jnp.sum(_nodes(delta, w) * _phi(b[..., None] + tt * delta[..., None]), axis=-1)
    return jnp.where(close, delta * mv, ndtr(b + delta) - ndtr(b))


def _gelu_diff(b, delta):
    return delta * ndtr(b + delta) + b * _ndtr_diff(b, delta)


# Below this sigma the GELU variance comes from Gauss-Hermite on exact differences.
_GELU_GH_SIGMA = 0.7


def _gelu_core(mu, sigma):
    s2 = sigma * sigma
    r = jnp.sqrt(1.0 + s2)
    h = mu / r
    # the variance is evaluated at -|mu| (reflection below); written with where so that at
    # mu = 0 the derivative is the (two-sided) one of the mu <= 0 branch
    flip = mu > 0
    mu_r = jnp.where(flip, -mu, mu)
    t = (-mu_r / r)[..., None]
    g_h, g_hk = (x.g[..., 0] for x in _ratios(t, t / jnp.sqrt(1.0 + 2.0 * s2)[..., None]))
    mean = _gelu_mean(mu, sigma, r, h, g_h)
    _, var_neg = _gelu_var_nonpos(mu_r, sigma, g_h, g_hk)
    # GELU(x) = x + GELU(-x): Var = s^2 (1 - 2 E[GELU'(-X)]) + Var[GELU(-X)] (Stein), for mu > 0.
    pos = jnp.where(flip, mu, 0.0)
    extra = s2 * (erf(pos / r * _SQRT_HALF) + 2.0 * pos * _phi(pos / r) / (r * r * r))
    small = (sigma <= _GELU_GH_SIGMA) & (jnp.abs(mu) * sigma <= 1.5)
    _, var_gh = _gh_centered_var(_gelu_diff, mu, jnp.where(small, sigma, 0.0))
    return mean, jnp.where(small, var_gh, var_neg + extra)


def _gelu_f0(mu, sigma):
    return mu * ndtr(mu)


def gelu_moments(mu, sigma):
    """draft"""
    mu, sigma, out = _inputs(mu, sigma)
    return _finish(*_sigma_zero(_gelu_core, _gelu_f0, mu, sigma), out)


# ----------------------------------------------------------------------------- exp, leaky ReLU


def _log_expm1(x):
    """``log(expm1(x))`` for ``x > 0``, finite for every finite ``x`` (double ``where``)."""
    big = x > 1.0
    xb, xs = jnp.where(big, x, 2.0), jnp.where(big, 1.0, x)
    return jnp.where(big, xb + jnp.log1p(-jnp.exp(-xb)), jnp.log(jnp.expm1(xs)))


def _exp_core(mu, sigma):
    s2 = sigma * sigma
    mean = jnp.exp(mu + 0.5 * s2)
    # log Var = log expm1(s^2) + 2 mu + s^2: overflows only where Var does
    return mean, jnp.exp(_log_expm1(s2) + 2.0 * mu + s2)


def exp_moments(mu, sigma):
    """draft"""
    mu, sigma, out = _inputs(mu, sigma)
    return _finish(*_sigma_zero(_exp_core, lambda m, s: jnp.exp(m), mu, sigma), out)


def leaky_relu_moments(mu, sigma, negative_slope=0.01):
    """draft"""
    mu, sigma, out = _inputs(mu, sigma)
    slope = jnp.asarray(negative_slope, mu.dtype)
    pm, pv, nm, nv = _relu_sides((1, -1), mu, sigma)  # relu(X), relu(-X): one evaluation
    mean = pm - slope * nm
    var = pv + slope * slope * nv + 2.0 * slope * pm * nm
    return _finish(mean, jnp.maximum(var, 0.0), out)


# ----------------------------------------------------------------------------- ELU

_GL16 = np.polynomial.legendre.leggauss(16)
_V_MAX = 1e4


def _log_phi(x):
    return -0.5 * x * x - _LOG_SQRT_2PI


def _trunc_exp(mu, sigma, v, k, mills):
    """``L_k = E[exp(k X); X < 0] = exp(k mu + k^2 s^2/2) Phi(-v - k s)`` (``v = mu/s``), as
    ``phi(v) R(v + k s)`` where ``v + k s >= 0`` (``mills`` = the Mills ratio ``R`` at
    ``max(v + k s, 0)``), so nothing overflows."""
    u = v + k * sigma
    upper = u >= 0
    via_mills = jnp.exp(_log_phi(v)) * mills
    expo = jnp.where(upper, 0.0, k * mu + 0.5 * (k * sigma) ** 2)
    direct = jnp.exp(expo) * ndtr(jnp.where(upper, 0.0, -u))
    return jnp.where(upper, via_mills, direct)


def _scaled_ratios(v, u, tail):
    """``phi(v) g(u)`` and ``phi(v) w(u)`` for ``u >= v`` (``g = 1 - uR``, ``w = (1+u^2)R - u``,
    the Mills ratio's ``-R'`` and ``R''``; ``tail`` = the ratios at ``max(u, 0)``), positive and
    finite for every real ``u``."""
    upper = u >= 0
    pv = jnp.exp(_log_phi(v))
    un = jnp.where(upper, 0.0, u)
    a = -un
    scale = jnp.exp(0.5 * (un - v) * (un + v))  # phi(v) / phi(u) <= 1
    cdf, pdf = ndtr(a), _phi(a)
    g_neg = scale * (pdf + a * cdf)
    w_neg = scale * ((1.0 + a * a) * cdf + a * pdf)
    return jnp.where(upper, pv * tail.g, g_neg), jnp.where(upper, pv * tail.w, w_neg)


def _elu_neg_part(mu, sigma, v):
    """``E[g]``, ``E[g^2]`` and ``Var[g]`` of ``g = expm1(X) 1{X < 0}``."""
    near = (sigma <= 1.0) & (mu >= -1.0)
    s = jnp.where(near, sigma, 1.0)
    vv = jnp.where(near, v, 0.0)
    t, wt = _GL16
    tn, wn = _nodes(mu, t), _nodes(mu, wt)
    c1 = 0.5 * s[..., None] * (1.0 + tn)  # nodes on [0, s]
    u1 = vv[..., None] + c1
    u2 = u1 + s[..., None]
    # (where, not maximum: a tie at 0 must send the whole derivative to the branch used)
    pos = lambda x: jnp.where(x >= 0, x, 0.0)  # noqa: E731
    r1, r2, ra, rb = _ratios(pos(v + sigma)[..., None], pos(v + 2.0 * sigma)[..., None], pos(u1), pos(u2))
    l0 = ndtr(-v)
    l1 = _trunc_exp(mu, sigma, v, 1.0, r1.mills[..., 0])
    l2 = _trunc_exp(mu, sigma, v, 2.0, r2.mills[..., 0])
    e1_direct = l1 - l0
    e2_direct = l2 - 2.0 * l1 + l0
    # Near the kink (|mu|, sigma <= 1) the differences cancel: E[g] = -int_v^{v+s} phi(v) g(u) du,
    # E[g^2] = int_0^{2s} tent(c) phi(v) w(v + c) dc (R' = -g, R'' = w), by Gauss-Legendre.
    g1, w1 = _scaled_ratios(vv[..., None], u1, ra)
    _, w2 = _scaled_ratios(vv[..., None], u2, rb)
    half = 0.5 * s
    e1_gl = -half * jnp.sum(wn * g1, axis=-1)
    e2_gl = half * jnp.sum(wn * (c1 * w1 + (s[..., None] - c1) * w2), axis=-1)
    # E[expm1(X) - X; X < 0] = int_0^s (s - c) phi(v) w(v + c) dc >= 0 (for the mean near the kink)
    k_gl = half * jnp.sum(wn * (s[..., None] - c1) * w1, axis=-1)
    e1 = jnp.where(near, e1_gl, e1_direct)
    e2 = jnp.where(near, e2_gl, e2_direct)
    var_a = e2 - e1 * e1
    mag_a = e2 + e1 * e1
    # Var[g] = Var[exp(min(X, 0))] = (L2 - L1^2) + q (1 - q - 2 L1), q = P(X > 0), where
    # L2 - L1^2 = exp(2mu + s^2) [expm1(s^2) P2 + (P2 - P1^2)], Pk = Phi(-v - k s), and
    # P2 - P1^2 = P1 Phi(v + s) - (P1 - P2) where P1 > 1/2: exact for the log-normal branch, no
    # cancellation as sigma -> 0 there. Products are formed in log space (each term is bounded
    # by 1), so nothing overflows. Used where mu <= 0 (elsewhere evaluated at mu = -1, sigma = 1).
    valid_b = mu <= 0
    mu_b = jnp.where(valid_b, mu, -1.0)
    v_b = jnp.where(valid_b, v, -1.0)
    sg = jnp.where(valid_b, sigma, 1.0)
    s2 = sg * sg
    base = 2.0 * mu_b + s2
    lp1, lp2 = log_ndtr(-v_b - sg), log_ndtr(-v_b - 2.0 * sg)
    t_em = jnp.exp(base + _log_expm1(s2) + lp2)
    high = -v_b - sg > 0  # P1 > 1/2, then mu < -s^2 and exp(base) < 1
    lo_a, lo_b = jnp.exp(base + lp2), jnp.exp(base + 2.0 * lp1)
    base_h = jnp.where(high, base, 0.0)
    p1 = ndtr(-v_b - sg)
    dp = -_ndtr_diff(-v_b - sg, -sg)  # P1 - P2 >= 0
    qb = ndtr(v_b + sg)
    hi_a, hi_b = jnp.exp(base_h) * p1 * qb, jnp.exp(base_h) * dp
    rest = jnp.where(high, hi_a - hi_b, lo_a - lo_b)
    mag_rest = jnp.where(high, hi_a + hi_b, lo_a + lo_b)
    q = ndtr(v_b)
    l1_b = jnp.where(valid_b, l1, 0.0)
    var_b = t_em + rest + q * (1.0 - q - 2.0 * l1_b)
    mag_b = t_em + mag_rest + q * (1.0 + q + 2.0 * l1_b)
    # use the candidate with the least cancellation (largest value relative to its terms)
    pick_b = valid_b & _less_cancellation(var_b, mag_b, var_a, mag_a)
    return e1, jnp.maximum(jnp.where(pick_b, var_b, var_a), 0.0), near, k_gl


def _elu_core(mu, sigma, alpha):
    v = jnp.clip(mu / sigma, -_V_MAX, _V_MAX)
    pm, pv = relu_moments(mu, sigma)
    e1, var_g, near, k_gl = _elu_neg_part(mu, sigma, v)
    nm = pm - mu  # E[relu(-X)]  (exact identity relu(x) - relu(-x) = x)
    # near the kink: ELU(x) = x + alpha (expm1(x) - x) 1{x<0} + (alpha - 1) x 1{x<0}, no cancellation
    mean = jnp.where(near, mu + alpha * k_gl - (alpha - 1.0) * nm, pm + alpha * e1)
    var = pv + alpha * alpha * var_g - 2.0 * alpha * pm * e1
    return mean, jnp.maximum(var, 0.0)


def _elu_f0(mu, sigma, alpha):
    # At mu = 0 the value is 0 with the one-sided limits' derivatives: d/dmu = (1 + alpha)/2,
    # d/dsigma = (1 - alpha) phi(0).
    at_kink = (1.0 + alpha) / 2.0 * mu + (1.0 - alpha) * math.exp(-_LOG_SQRT_2PI) * sigma
    return jnp.where(mu == 0, at_kink, jnp.where(mu > 0, mu, alpha * jnp.expm1(jnp.minimum(mu, 0.0))))


def elu_moments(mu, sigma, alpha=1.0):
    """draft"""
    mu, sigma, out = _inputs(mu, sigma)
    alpha = jnp.broadcast_to(jnp.asarray(alpha, mu.dtype), mu.shape)
    return _finish(*_sigma_zero(_elu_core, _elu_f0, mu, sigma, alpha), out)
