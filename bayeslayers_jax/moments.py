r"""Moments of ReLU and CReLU of a Gaussian, exact to float precision in the tails.

For :math:`X \sim \mathcal N(\mu, \sigma^2)`, :math:`a = \mu / \sigma` and
:math:`h(a) = \varphi(a) + a\Phi(a)`:

.. math::
   \mathbb E[\operatorname{relu} X] = \sigma h(a), \qquad
   \operatorname{Var}[\operatorname{relu} X] = \sigma^2\big(\Phi(a) - h(a)h(-a)\big)

(Frey & Hinton, 1999; Wu et al., 2019). Written this way both expressions cancel
catastrophically for :math:`a \ll 0`, where the mean is :math:`\approx \sigma\varphi(a)/a^2`
and the variance :math:`\approx 2\sigma^2\varphi(a)/|a|^3`. We use instead, with
:math:`t = |a|`, the normal tail's repeated integrals
:math:`\mathrm{Hh}_n(t) = \int_t^\infty \mathrm{Hh}_{n-1}`, :math:`\mathrm{Hh}_{-1} = \varphi`
(Abramowitz & Stegun 26.2.41, DLMF 7.18):

.. math::
   h(-t) = \mathrm{Hh}_1(t) = \varphi(t)\,g(t), \qquad
   \mathbb E[\operatorname{relu}(Z - t)^2] = 2\mathrm{Hh}_2(t) = \varphi(t)\,w(t),

   g = r_0 r_1, \quad w = 2 r_0 r_1 r_2, \quad
   r_n = \frac{\mathrm{Hh}_n}{\mathrm{Hh}_{n-1}} = \cfrac{1}{t + \cfrac{n+1}{t + \cfrac{n+2}{t + \cdots}}}

The ratios :math:`r_n` follow from the recurrence
:math:`n\,\mathrm{Hh}_n = \mathrm{Hh}_{n-2} - t\,\mathrm{Hh}_{n-1}`; they are products of
positive terms, so there is no cancellation. Below a threshold ``t`` (2.75 in float32, 4 in
float64), where the direct formulas lose about :math:`t^4` ulps, we use
:math:`R = \Phi(-t)/\varphi(t)`, :math:`g = 1 - tR`, :math:`w = (1+t^2)R - t` with
:math:`\Phi(-t) = \operatorname{erfc}(t/\sqrt2)/2` (never ``1 - ndtr(t)``). Above it, a
continued fraction of fixed depth (12 terms in float32, 32 in float64, started from its
fixed point and evaluated division free, so it vectorizes and jits) converges to the dtype's
precision. Products with :math:`\sigma` are assembled in log space,
:math:`\exp(\log\sigma + \log\varphi(t))` times a tail ratio, so nothing underflows before
the result does.

Gradients come from closed forms through :func:`jax.custom_jvp` (Price's theorem):
:math:`\partial_\mu \mathbb E = \Phi(a)`, :math:`\partial_\sigma \mathbb E = \varphi(a)`,
:math:`\partial_\mu \operatorname{Var} = 2\,\mathbb E\,\Phi(-a)`,
:math:`\partial_\sigma \operatorname{Var} = 2\sigma\Phi(a) - 2\,\mathbb E\,\varphi(a)`.
They are finite everywhere, :math:`\sigma = 0` included, where they take their limits as
:math:`\sigma \to 0^+` (at :math:`\mu = \sigma = 0`: :math:`\Phi(0) = 1/2`,
:math:`\varphi(0)`). A negative ``sigma`` is read as ``|sigma|`` (the distribution only
depends on :math:`\sigma^2`). Half-precision inputs are computed in float32 and cast back.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp

from bayeslayers_jax._checks import broadcast_floats

__all__ = ["relu_moments", "neg_relu_moments", "crelu_moments"]

_LOG_SQRT_2PI = 0.5 * math.log(2.0 * math.pi)
_LOG_2 = math.log(2.0)
_SQRT_HALF = math.sqrt(0.5)
# |mu / sigma| is clipped here: beyond it every quantity has reached its limit exactly
# (Phi = 0 or 1, phi = 0) in every dtype, and t**2 stays finite even in float16 -> float32.
_A_MAX = 1e6


class _TailRatios(NamedTuple):
    """Scaled tail quantities at t = |a| >= 0 (all positive, see the module docstring)."""

    mills: jax.Array  # R(t) = Phi(-t) / phi(t) = r_0
    g: jax.Array  # h(-t) / phi(t) = 1 - t R = r_0 r_1
    w: jax.Array  # E[relu(Z - t)^2] / phi(t) = (1 + t^2) R - t = 2 r_0 r_1 r_2


def _cf_settings(dtype) -> tuple[float, int]:
    """(threshold, depth) of the continued fraction, by dtype precision (measured against mpmath)."""
    if jnp.finfo(dtype).bits >= 64:
        return 4.0, 32
    return 2.75, 12


def _tail_ratios(t: jax.Array, phi: jax.Array) -> _TailRatios:
    """R, g and w at ``t >= 0`` (``phi = phi(t)``): direct formulas, else a continued fraction."""
    threshold, depth = _cf_settings(t.dtype)
    # Direct formulas below the threshold (t clipped so the unused branch stays finite).
    td = jnp.minimum(t, threshold)
    phi_d = jnp.where(t <= threshold, phi, math.exp(-0.5 * threshold**2 - _LOG_SQRT_2PI))
    # Phi(-td) = erfc(td / sqrt 2) / 2 (one erfc: ndtr would also evaluate erf and a second erfc)
    mills_direct = (0.5 * jax.lax.erfc(td * _SQRT_HALF)) / phi_d
    g_direct = 1.0 - td * mills_direct
    w_direct = (1.0 + td * td) * mills_direct - td
    # Continued fraction r_n = 1 / (t + (n + 1) r_{n+1}), as the ratio r_n = p_n / q_n of the
    # recurrence p_n = u q_{n+1}, q_n = q_{n+1} + (n + 1) u p_{n+1} (u = 1/t: both scaled by
    # u at each step, so nothing overflows). Division free: r_0 = p_0 / q_0,
    # r_0 r_1 = u^2 q_2 / q_0 and r_0 r_1 r_2 = u^2 p_2 / q_0. It starts from the fixed point
    # of r = 1 / (t + (depth + 2) r), which the tail of the fraction approaches, so a few
    # terms reach the dtype's precision (12 in float32, 32 in float64, measured vs mpmath).
    tc = jnp.maximum(t, threshold)
    u = 1.0 / tc
    p = 2.0 / (tc + jnp.sqrt(tc * tc + 4.0 * (depth + 2)))
    q = jnp.ones_like(u)
    p2 = q2 = p
    for n in range(depth, -1, -1):
        p, q = u * q, q + ((n + 1) * u) * p
        if n == 2:
            p2, q2 = p, q
    inv_q0 = 1.0 / q
    u2 = u * u
    use_cf = t > threshold
    return _TailRatios(
        mills=jnp.where(use_cf, p * inv_q0, mills_direct),
        g=jnp.where(use_cf, u2 * q2 * inv_q0, g_direct),
        w=jnp.where(use_cf, 2.0 * u2 * p2 * inv_q0, w_direct),
    )


@jax.jit  # compiled once per shape and dtype, so eager calls are not dispatched op by op
def _both_sides(mu, sigma):
    """Moments and derivative coefficients of relu(X) and relu(-X) for X ~ N(mu, sigma^2).

    relu(X) and relu(-X) have the same ``t = |mu| / sigma``; each is on the "lower" side
    (its own ``a < 0``: the tail) or the "upper" side. Both sides' quantities are computed
    once and selected per output. Returns ``(pos, neg)``, each
    ``(mean, var, (dmean_dmu_s, dmean_dsigma, dvar_dmu_s, dvar_dsigma))`` with ``mu_s = +-mu``.
    """
    positive = sigma > 0
    safe_sigma = jnp.where(positive, sigma, 1.0)
    a = jnp.where(positive, mu / safe_sigma, jnp.sign(mu) * _A_MAX)
    a = jnp.clip(a, -_A_MAX, _A_MAX)
    t = jnp.abs(a)
    log_phi = -0.5 * t * t - _LOG_SQRT_2PI
    phi = jnp.exp(log_phi)
    tail = _tail_ratios(t, phi)
    # Products with sigma in log space, so nothing underflows before the result does:
    # two_sigma_phi = 2 sigma phi(t), sigma2_phi = sigma^2 phi(t) (exactly 0 at sigma = 0).
    log_sigma = jnp.log(sigma)
    two_sigma_phi = jnp.exp(_LOG_2 + log_sigma + log_phi)
    sigma2_phi = jnp.exp(2.0 * log_sigma + log_phi)
    upper_tail = tail.mills * phi  # Phi(-t)
    h_minus = phi * tail.g  # h(-t)
    h_plus = t + h_minus  # h(t)

    # Lower side (a_s = -t): phi(t) times positive tail ratios, no cancellation.
    lower = (
        0.5 * two_sigma_phi * tail.g,  # mean = sigma h(-t)
        sigma2_phi * (tail.w - phi * tail.g * tail.g),  # var
        upper_tail,  # d mean / d mu_s = Phi(-t)
        two_sigma_phi * tail.g * (1.0 - upper_tail),  # d var / d mu_s = 2 mean Phi(t)
        two_sigma_phi * (tail.mills - phi * tail.g),  # d var / d sigma = 2 sigma (Phi(-t) - phi h(-t))
    )
    # Upper side (a_s = t): h(t) = t + h(-t); mean = sigma h(t), which is |mu| once t is clipped.
    upper = (
        jnp.where(t < _A_MAX, sigma * h_plus, jnp.abs(mu)),
        sigma * sigma * jnp.maximum(1.0 - upper_tail - h_plus * h_minus, 0.0),
        1.0 - upper_tail,  # Phi(t)
        two_sigma_phi * h_plus * tail.mills,  # 2 mean Phi(-t) = 2 sigma h(t) phi R
        2.0 * sigma * jnp.maximum(1.0 - upper_tail - h_plus * phi, 0.0),
    )

    def side(is_lower):
        m, v, dm_dmu, dv_dmu, dv_dsigma = (jnp.where(is_lower, lo, hi) for lo, hi in zip(lower, upper))
        return m, v, (dm_dmu, phi, dv_dmu, dv_dsigma)

    return side(a < 0), side(a > 0)


@jax.custom_jvp
def _relu_moments_core(mu, sigma):
    (mean, var, _), (neg_mean, neg_var, _) = _both_sides(mu, sigma)
    return mean, var, neg_mean, neg_var


@_relu_moments_core.defjvp
def _relu_moments_core_jvp(primals, tangents):
    mu, sigma = primals
    dmu, dsigma = tangents
    (mean, var, c), (neg_mean, neg_var, nc) = _both_sides(mu, sigma)
    # relu(X): d/dmu, d/dsigma. relu(-X) = relu of N(-mu, sigma^2): d/dmu flips sign.
    tangent_out = (
        c[0] * dmu + c[1] * dsigma,
        c[2] * dmu + c[3] * dsigma,
        -nc[0] * dmu + nc[1] * dsigma,
        -nc[2] * dmu + nc[3] * dsigma,
    )
    return (mean, var, neg_mean, neg_var), tangent_out


def _moments(mu, sigma):
    """Broadcasts, upcasts half precision to float32, and evaluates both sides."""
    mu, sigma = broadcast_floats(mu=mu, sigma=sigma)
    out_dtype = mu.dtype
    work_dtype = jnp.float32 if jnp.finfo(out_dtype).bits < 32 else out_dtype
    mu, sigma = mu.astype(work_dtype), jnp.abs(sigma.astype(work_dtype))
    results = _relu_moments_core(mu, sigma)
    return tuple(r.astype(out_dtype) for r in results)


def relu_moments(mu: jax.Array, sigma: jax.Array) -> tuple[jax.Array, jax.Array]:
    r"""Mean and variance of :math:`\operatorname{relu}(X)` for :math:`X \sim \mathcal N(\mu, \sigma^2)`.

    .. math::
       \mathbb E = \sigma h(a), \quad \operatorname{Var} = \sigma^2(\Phi(a) - h(a)h(-a)), \quad
       a = \mu/\sigma, \quad h(a) = \varphi(a) + a\Phi(a)

    Accurate to a few ulps for every finite ``mu`` and ``sigma >= 0`` (tails evaluated by
    continued fractions and in log space, see the module docstring); never NaN or Inf, the
    variance is never negative, and the gradients (closed form, custom JVP) are finite at
    ``sigma = 0``.

    Args:
      mu: means, any floating array.
      sigma: standard deviations (not variances), broadcastable against ``mu``.

    Returns:
      ``(mean, var)`` of the broadcast shape, in the input dtype.

    References:
      Frey & Hinton (1999). Variational Learning in Nonlinear Gaussian Belief Networks.
      Wu et al. (2019). Deterministic Variational Inference for Robust Bayesian Neural Networks.
    """
    mean, var, _, _ = _moments(mu, sigma)
    return mean, var


def neg_relu_moments(mu: jax.Array, sigma: jax.Array) -> tuple[jax.Array, jax.Array]:
    r"""Mean and variance of :math:`\operatorname{relu}(-X)`, :math:`X \sim \mathcal N(\mu, \sigma^2)`.

    Equal to :func:`relu_moments` ``(-mu, sigma)``; the negative half of a CReLU.

    Args:
      mu: means, any floating array.
      sigma: standard deviations, broadcastable against ``mu``.

    Returns:
      ``(mean, var)`` of the broadcast shape, in the input dtype.
    """
    _, _, mean, var = _moments(mu, sigma)
    return mean, var


def crelu_moments(mu: jax.Array, sigma: jax.Array) -> tuple[jax.Array, jax.Array]:
    r"""Mean and variance of :math:`\operatorname{crelu}(X) = [\operatorname{relu}(X), \operatorname{relu}(-X)]`.

    Both halves share one evaluation of the tail functions (they have the same :math:`|a|`).
    The outputs are concatenated on the last axis, so they have twice the input's width; the
    diagonal moments are returned (the two halves of one unit are not independent, but a CLT
    layer only propagates variances).

    Args:
      mu: means, shape ``(..., n)`` with at least one axis.
      sigma: standard deviations, broadcastable against ``mu``.

    Returns:
      ``(mean, var)``, each of shape ``(..., 2n)``.

    References:
      Shang, Sohn, Almeida, Lee (2016). Understanding and Improving Convolutional Neural
      Networks via Concatenated Rectified Linear Units. ICML.
    """
    mean, var, neg_mean, neg_var = _moments(mu, sigma)
    if mean.ndim == 0:
        raise ValueError("`mu` and `sigma` must have at least one axis to concatenate a CReLU on; got scalars.")
    return jnp.concatenate([mean, neg_mean], axis=-1), jnp.concatenate([var, neg_var], axis=-1)
