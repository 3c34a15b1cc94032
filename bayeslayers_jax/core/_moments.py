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
positive terms, so there is no cancellation. In float64, below a threshold ``t = 4``, where
the direct formulas lose about :math:`t^4` ulps, we use
:math:`R = \Phi(-t)/\varphi(t)`, :math:`g = 1 - tR`, :math:`w = (1+t^2)R - t` with
:math:`\Phi(-t) = \operatorname{erfc}(t/\sqrt2)/2` (never ``1 - ndtr(t)``). Above it, a
continued fraction of fixed depth (32 terms, started from its fixed point and evaluated
division free, so it vectorizes and jits) converges to float64 precision. In float32 (and
half precision, computed in float32) each ratio is instead one polynomial, no branch and no
``erfc``: with :math:`r = 1/(t+2)` and :math:`q = (t-2)/(t+2) \in [-1, 1)`,

.. math::
   R = r F_0(q), \quad g = r^2 F_1(q), \quad w = 2r^3 F_2(q),

where the :math:`F_n \to 1` as :math:`t \to \infty` carry the asymptotics, are exact at
:math:`t = 0`, and are degree-12 near-minimax fits in relative error against mpmath
(``tools/fit_relu_moment_rationals.py``): measured maximum relative errors over
:math:`t \in [0, 10^6]` of 2.7e-7, 5.3e-7 and 1.0e-6 (a few ulps). It costs about 20% less
than the direct formula plus continued fraction it replaces (moments with their gradient).
Products with :math:`\sigma` are assembled in log space,
:math:`\exp(\log\sigma + \log\varphi(t))` times a tail ratio, so nothing underflows before
the result does.

Gradients come from closed forms through :func:`jax.custom_jvp` (Price's theorem):
:math:`\partial_\mu \mathbb E = \Phi(a)`, :math:`\partial_\sigma \mathbb E = \varphi(a)`,
:math:`\partial_\mu \operatorname{Var} = 2\,\mathbb E\,\Phi(-a)`,
:math:`\partial_\sigma \operatorname{Var} = 2\sigma\Phi(a) - 2\,\mathbb E\,\varphi(a)`.
They are finite everywhere, :math:`\sigma = 0` included, where they take their limits as
:math:`\sigma \to 0^+` (at :math:`\mu = \sigma = 0`: :math:`\Phi(0) = 1/2`,
:math:`\varphi(0)`).

Second derivatives: the coefficients above are themselves a :func:`jax.custom_jvp`
function whose rule holds the closed-form second derivatives, so ``jax.hessian``,
``jacfwd(jacrev)``, ``jacrev(jacfwd)`` and ``jvp`` of ``grad`` (Hessian-vector products) all
work (``custom_jvp``, not ``custom_vjp``, keeps forward mode). With :math:`P = \Phi(a)`,
:math:`Q = \Phi(-a)`, :math:`H = h(a)`:

.. math::
   \partial^2_{\mu}\mathbb E = \frac{\varphi}{\sigma}, \quad
   \partial_{\mu}\partial_{\sigma}\mathbb E = -\frac{a\varphi}{\sigma}, \quad
   \partial^2_{\sigma}\mathbb E = \frac{a^2\varphi}{\sigma},

   \partial^2_{\mu}\operatorname{Var} = 2(PQ - H\varphi), \quad
   \partial_{\mu}\partial_{\sigma}\operatorname{Var} = 2\varphi(Q + aH), \quad
   \partial^2_{\sigma}\operatorname{Var} = 2(P - a\varphi - \varphi^2 - a^2 H\varphi)

(the variance's depend on :math:`a` only; tails from the same ratios, in log space). At
:math:`\sigma = 0` they take their limits as :math:`\sigma \to 0^+`; the mean's
:math:`1/\sigma` terms, which tend to 0 for :math:`\mu \ne 0`, are also 0 at
:math:`\mu = \sigma = 0`, where the exact value is the Dirac delta of the kink (the same
convention as ReLU's derivative at 0). Third and higher derivatives are not provided.

Range and special values. Accurate (tested against mpmath) for ``mu`` and ``sigma`` in the
dtype's *normal* range: XLA on CPU flushes subnormal numbers to zero (``float32(1e-40) > 0``
is False there), so a subnormal ``sigma`` acts as ``sigma = 0`` and a result below the
smallest normal number (1.2e-38 in float32, 2.2e-308 in float64) may come out as 0; it is
still finite and non-negative. The variance is finite wherever its exact value is
(``sigma`` multiplies twice, never ``sigma**2`` first): ``relu_moments(0, 2.6e19)`` in
float32 is 2.30e38. A NaN ``mu`` or ``sigma`` gives NaN moments and gradients (nothing is
guarded into a number). A negative ``sigma`` is an error: a concrete one raises
``ValueError`` naming ``sigma``, a traced one (under ``jax.jit``) gives NaN. Half-precision inputs are computed in float32 and cast back.

Evaluation. Only the requested side is evaluated (relu: one side; CReLU: both, sharing ``t``
and the tail ratios).
"""

from __future__ import annotations

import math
from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from bayeslayers_jax._checks import broadcast_floats, concrete_value

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


# Float64: direct formulas up to this t, a continued fraction of this depth above it
# (measured against mpmath).
_CF_THRESHOLD, _CF_DEPTH = 4.0, 32


# Float32 (and half precision, computed in float32): one polynomial per ratio, no branch, no
# erfc (the float32 direct formula plus a 12-term continued fraction cost about 25% more).
# With r = 1 / (t + K) and q = (t - K) / (t + K) = 1 - 2 K r (which maps t in [0, inf) onto
# q in [-1, 1)): R = r F_0(q), g = r^2 F_1(q), w = 2 r^3 F_2(q), where F_n -> 1 as t -> inf
# builds in the asymptotics R ~ 1/t, g ~ 1/t^2, w ~ 2/t^3. F_n(q) = F_n(-1) + (1 + q) P_n(q)
# with the float32 values at t = 0 pinned (K = 2 makes r = 1/2 and q = -1 exact there, so
# R(0), g(0) = 1 and w(0) are correctly rounded: Phi(0) = R(0) phi(0) is exactly 1/2).
# P_n: degree 11 (monomial in q, lowest degree first), fitted by
# tools/fit_relu_moment_rationals.py (K = 2, degree 12): near-minimax in relative error
# against mpmath (Lawson's reweighted least squares in the Chebyshev basis; fit errors
# 1.1e-8, 8.0e-8, 3.0e-7). Evaluated in float32 exactly as below, the measured maximum
# relative errors over t in [0, 1e6] are 2.6e-7 (R), 5.0e-7 (g) and 9.3e-7 (w) with numpy's
# float32 arithmetic and 2.7e-7, 5.3e-7, 1.0e-6 through XLA on CPU (which may fuse
# multiply-adds): a few ulps, where the direct formulas lose up to t^4 ulps.
_POLY_K = 2.0
_POLY_AT_0 = (2.5066282749176025, 4.0, 5.013256549835205)
_POLY_P = (
    (-8.211513451e-01, -9.556575489e-03, 8.173984758e-02, 1.030462347e-02, -1.146840693e-02,
     -5.431517270e-03, 4.728022994e-04, 1.645929200e-03, 5.985659063e-04, -3.297314608e-04,
     -1.927472470e-04, 5.441219091e-05),
    (-1.483815146e+00, -3.219698734e-01, 2.623896029e-01, 1.105080616e-01, -3.190812628e-02,
     -4.016569428e-02, -8.855714689e-03, 8.966793792e-03, 7.477876216e-03, -8.190113619e-04,
     -1.931262863e-03, 1.224537677e-04),
    (-1.594178847e+00, -1.054931577e+00, 3.764205697e-01, 3.989580909e-01, 1.683227428e-02,
     -1.242800924e-01, -7.035197895e-02, 1.106092113e-02, 3.572554727e-02, 7.857933468e-03,
     -7.883269154e-03, -1.857997180e-03),
)


def _tail_ratios_poly(t: jax.Array) -> _TailRatios:
    """R, g and w at ``t >= 0`` in float32: one polynomial each in ``q = (t - K)/(t + K)``."""
    r = 1.0 / (t + _POLY_K)
    q = 1.0 - (2.0 * _POLY_K) * r
    f0, f1, f2 = (jnp.full_like(t, c[-1]) for c in _POLY_P)
    for c0, c1, c2 in zip(*(c[-2::-1] for c in _POLY_P)):
        f0, f1, f2 = f0 * q + c0, f1 * q + c1, f2 * q + c2
    p = 1.0 + q
    f0, f1, f2 = (v0 + p * f for v0, f in zip(_POLY_AT_0, (f0, f1, f2)))
    r2 = r * r
    return _TailRatios(mills=r * f0, g=r2 * f1, w=(2.0 * r2) * (r * f2))


def _tail_ratios(t: jax.Array, phi: jax.Array) -> _TailRatios:
    """R, g and w at ``t >= 0`` (``phi = phi(t)``): float32 polynomials; in float64 direct
    formulas, else a continued fraction."""
    if jnp.finfo(t.dtype).bits < 64:
        return _tail_ratios_poly(t)
    threshold, depth = _CF_THRESHOLD, _CF_DEPTH
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
    # terms reach float64 precision (32 terms, measured vs mpmath).
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


class _Prepared(NamedTuple):
    """Quantities shared by both sides of one evaluation (``t = |mu| / sigma``)."""

    a: jax.Array  # mu / sigma, clipped to +-_A_MAX (+-_A_MAX at sigma = 0; NaN stays NaN)
    t: jax.Array  # |a|
    phi: jax.Array  # phi(t)
    log_phi: jax.Array
    log_sigma: jax.Array
    sigma_phi: jax.Array  # sigma phi(t), exactly 0 at sigma = 0
    tail: _TailRatios


def _prepare(mu, sigma) -> _Prepared:
    # sigma = 0 gives a = +-_A_MAX (the limit); a NaN mu or sigma gives a NaN a, which every
    # output then inherits (no guard turns it into a number).
    zero = sigma == 0
    a = jnp.where(zero, jnp.sign(mu) * _A_MAX, mu / jnp.where(zero, 1.0, sigma))
    a = jnp.clip(a, -_A_MAX, _A_MAX)
    t = jnp.abs(a)
    log_phi = -0.5 * t * t - _LOG_SQRT_2PI
    phi = jnp.exp(log_phi)
    # sigma phi(t) (and sigma^2 phi(t) below) in log space: normal whenever the moments are,
    # even where phi(t) alone underflows (large t, large sigma).
    log_sigma = jnp.log(sigma)
    sigma_phi = jnp.exp(log_sigma + log_phi)
    return _Prepared(a, t, phi, log_phi, log_sigma, sigma_phi, _tail_ratios(t, phi))


def _side_moments(pre: _Prepared, s: int, mu, sigma):
    """``(mean, var)`` of ``relu(s X)`` (``s = +-1``): ``relu`` of ``N(s mu, sigma^2)``."""
    t, phi, tail = pre.t, pre.phi, pre.tail
    lower = (pre.a < 0) if s > 0 else (pre.a > 0)
    # Lower side (a_s = -t): phi(t) times positive tail ratios, products with sigma in log
    # space, so nothing underflows before the result does (exactly 0 at sigma = 0).
    lower_mean = pre.sigma_phi * tail.g  # sigma h(-t)
    lower_var = jnp.exp(2.0 * pre.log_sigma + pre.log_phi) * (tail.w - phi * tail.g * tail.g)
    # Upper side (a_s = t): h(t) = t + h(-t); the mean is |mu| once t is clipped. sigma
    # multiplies twice (never sigma**2 first), so the variance is finite whenever it is.
    h_plus = t + phi * tail.g
    upper_mean = jnp.where(t >= _A_MAX, jnp.abs(mu), sigma * h_plus)
    upper_var = sigma * (sigma * jnp.maximum(1.0 - tail.mills * phi - h_plus * phi * tail.g, 0.0))
    return jnp.where(lower, lower_mean, upper_mean), jnp.where(lower, lower_var, upper_var)


def _side_grads(pre: _Prepared, s: int, sigma):
    """First derivatives of ``relu(s X)``'s moments with respect to ``mu_s = s mu`` and ``sigma``.

    Price's theorem: ``dE/dmu_s = Phi(a_s)``, ``dE/dsigma = phi(a_s)``,
    ``dV/dmu_s = 2 E Phi(-a_s)``, ``dV/dsigma = 2 sigma Phi(a_s) - 2 E phi(a_s)``.
    """
    t, phi, tail = pre.t, pre.phi, pre.tail
    lower = (pre.a < 0) if s > 0 else (pre.a > 0)
    two_sigma_phi = jnp.exp(_LOG_2 + pre.log_sigma + pre.log_phi)  # normal even if sigma phi is not
    upper_tail = tail.mills * phi  # Phi(-t)
    h_plus = t + phi * tail.g
    lower_g = (
        upper_tail,
        two_sigma_phi * tail.g * (1.0 - upper_tail),
        two_sigma_phi * (tail.mills - phi * tail.g),
    )
    upper_g = (
        1.0 - upper_tail,
        two_sigma_phi * h_plus * tail.mills,
        2.0 * (sigma * jnp.maximum(1.0 - upper_tail - h_plus * phi, 0.0)),
    )
    dm_dmu, dv_dmu, dv_dsigma = (jnp.where(lower, lo, hi) for lo, hi in zip(lower_g, upper_g))
    return dm_dmu, phi, dv_dmu, dv_dsigma


def _side_hessian(pre: _Prepared, s: int, sigma):
    """Second derivatives of ``relu(s X)``'s moments in ``(mu_s, sigma)``, finite everywhere.

    With ``a = a_s``, ``P = Phi(a)``, ``Q = Phi(-a)``, ``H = h(a) = E / sigma``:
    ``E_mm = phi/sigma``, ``E_ms = -a phi/sigma``, ``E_ss = a^2 phi/sigma``,
    ``V_mm = 2(P Q - H phi)``, ``V_ms = 2 phi (Q + a H)``,
    ``V_ss = 2(P - a phi - phi^2 - a^2 H phi)``. The variance's are functions of ``a`` alone;
    the mean's scale as ``1/sigma`` and are taken as their limit 0 at ``sigma = 0`` (the
    Dirac delta of the kink at ``mu = sigma = 0`` is also read as 0, ReLU's second derivative
    almost everywhere).
    """
    t, phi, tail = pre.t, pre.phi, pre.tail
    lower = (pre.a < 0) if s > 0 else (pre.a > 0)
    a_s = pre.a if s > 0 else -pre.a
    upper_tail = tail.mills * phi  # Phi(-t)
    p = jnp.where(lower, upper_tail, 1.0 - upper_tail)  # Phi(a_s)
    q = jnp.where(lower, 1.0 - upper_tail, upper_tail)  # Phi(-a_s)
    h = jnp.where(lower, phi * tail.g, t + phi * tail.g)  # h(a_s)
    positive = sigma > 0
    phi_over_sigma = jnp.where(positive, jnp.exp(pre.log_phi - jnp.where(positive, pre.log_sigma, 0.0)), 0.0)
    e_mm = phi_over_sigma
    e_ms = -a_s * phi_over_sigma
    e_ss = a_s * (a_s * phi_over_sigma)
    v_mm = 2.0 * (p * q - h * phi)
    v_ms = 2.0 * phi * (q + a_s * h)
    v_ss = 2.0 * (p - a_s * phi - phi * phi - a_s * (a_s * h) * phi)
    return e_mm, e_ms, e_ss, v_mm, v_ms, v_ss


# ``sides`` is a static tuple of signs: (1,) for relu(X), (-1,) for relu(-X), (1, -1) for CReLU.
@partial(jax.custom_jvp, nondiff_argnums=(0,))
def _moments_core(sides, mu, sigma):
    pre = _prepare(mu, sigma)
    return tuple(x for s in sides for x in _side_moments(pre, s, mu, sigma))


@_moments_core.defjvp
def _moments_core_jvp(sides, primals, tangents):
    # The primal and the coefficients are themselves custom-JVP functions, so this rule is
    # differentiable again (Hessians, jacfwd(jacrev), jvp of grad) with closed forms.
    mu, sigma = primals
    dmu, dsigma = tangents
    out = _moments_core(sides, mu, sigma)
    coef = _grads_core(sides, mu, sigma)
    tangent_out = []
    for i, s in enumerate(sides):
        dm_dmu, dm_dsigma, dv_dmu, dv_dsigma = coef[4 * i : 4 * i + 4]
        tangent_out += [s * dm_dmu * dmu + dm_dsigma * dsigma, s * dv_dmu * dmu + dv_dsigma * dsigma]
    return out, tuple(tangent_out)


@partial(jax.custom_jvp, nondiff_argnums=(0,))
def _grads_core(sides, mu, sigma):
    pre = _prepare(mu, sigma)
    return tuple(x for s in sides for x in _side_grads(pre, s, sigma))


@_grads_core.defjvp
def _grads_core_jvp(sides, primals, tangents):
    mu, sigma = primals
    dmu, dsigma = tangents
    pre = _prepare(mu, sigma)
    out = tuple(x for s in sides for x in _side_grads(pre, s, sigma))
    tangent_out = []
    for s in sides:
        e_mm, e_ms, e_ss, v_mm, v_ms, v_ss = _side_hessian(pre, s, sigma)
        tangent_out += [
            s * e_mm * dmu + e_ms * dsigma,  # d(dE/dmu_s)
            s * e_ms * dmu + e_ss * dsigma,  # d(dE/dsigma)
            s * v_mm * dmu + v_ms * dsigma,  # d(dV/dmu_s)
            s * v_ms * dmu + v_ss * dsigma,  # d(dV/dsigma)
        ]
    return out, tuple(tangent_out)


def _check_sigma(sigma):
    """A concrete negative ``sigma`` raises; a traced one becomes NaN (NaN passes through)."""
    concrete = concrete_value(sigma)
    if concrete is None:
        return jnp.where(sigma < 0, jnp.nan, sigma)
    negative = concrete < 0
    if np.any(negative):
        raise ValueError(
            f"sigma must be >= 0 (a standard deviation), got {int(negative.sum())} negative "
            f"entries (min {float(concrete[negative].min())}) in shape {concrete.shape}"
        )
    return sigma


def _moments(sides, mu, sigma):
    """Broadcasts, upcasts half precision to float32, and evaluates the requested sides."""
    mu, sigma = broadcast_floats(mu=mu, sigma=sigma)
    sigma = _check_sigma(sigma)
    out_dtype = mu.dtype
    work_dtype = jnp.float32 if jnp.finfo(out_dtype).bits < 32 else out_dtype
    mu, sigma = mu.astype(work_dtype), jnp.abs(sigma.astype(work_dtype))
    results = _moments_core(sides, mu, sigma)
    return tuple(r.astype(out_dtype) for r in results)


def relu_moments(mu: jax.Array, sigma: jax.Array) -> tuple[jax.Array, jax.Array]:
    r"""Mean and variance of :math:`\operatorname{relu}(X)` for :math:`X \sim \mathcal N(\mu, \sigma^2)`.

    .. math::
       \mathbb E = \sigma h(a), \quad \operatorname{Var} = \sigma^2(\Phi(a) - h(a)h(-a)), \quad
       a = \mu/\sigma, \quad h(a) = \varphi(a) + a\Phi(a)

    Accurate to a few ulps (times the :math:`a^2` conditioning of ``mu / sigma``) for ``mu``
    and ``sigma >= 0`` in the dtype's normal range (tails by continued fractions in float64,
    fitted polynomials in float32, in log space, see the module docstring); never Inf where
    the exact value is finite, never NaN unless an input is NaN (then NaN), the variance is never negative, and first
    and second derivatives (closed forms, custom JVP) are finite, ``sigma = 0`` included.

    Args:
      mu: means, any floating array.
      sigma: standard deviations (not variances, >= 0), broadcastable against ``mu``. A
        concrete negative entry raises ``ValueError``; under ``jax.jit`` (traced) it gives NaN.

    Returns:
      ``(mean, var)`` of the broadcast shape, in the input dtype.

    References:
      Frey & Hinton (1999). Variational Learning in Nonlinear Gaussian Belief Networks.
      Wu et al. (2019). Deterministic Variational Inference for Robust Bayesian Neural Networks.

    Examples:
      >>> import jax, jax.numpy as jnp
      >>> mean, var = relu_moments(jnp.float32(0.0), jnp.float32(1.0))
      >>> print(round(float(mean), 4), round(float(var), 4))  # 1/sqrt(2 pi), 1/2 - 1/(2 pi)
      0.3989 0.3408
      >>> print(jax.hessian(lambda p: relu_moments(p[0], p[1])[1])(jnp.array([1.0, 0.0])))
      [[0. 0.]
       [0. 2.]]
    """
    return _moments((1,), mu, sigma)


def neg_relu_moments(mu: jax.Array, sigma: jax.Array) -> tuple[jax.Array, jax.Array]:
    r"""Mean and variance of :math:`\operatorname{relu}(-X)`, :math:`X \sim \mathcal N(\mu, \sigma^2)`.

    Equal to :func:`relu_moments` ``(-mu, sigma)``; the negative half of a CReLU.

    Args:
      mu: means, any floating array.
      sigma: standard deviations (>= 0), broadcastable against ``mu``; negative entries as
        in :func:`relu_moments` (``ValueError`` if concrete, NaN if traced).

    Returns:
      ``(mean, var)`` of the broadcast shape, in the input dtype.

    Examples:
      >>> mean, _ = neg_relu_moments(-3.0, 0.0)
      >>> print(float(mean))
      3.0
    """
    return _moments((-1,), mu, sigma)


def crelu_moments(mu: jax.Array, sigma: jax.Array) -> tuple[jax.Array, jax.Array]:
    r"""Mean and variance of :math:`\operatorname{crelu}(X) = [\operatorname{relu}(X), \operatorname{relu}(-X)]`.

    Both halves share one evaluation of the tail functions (they have the same :math:`|a|`).
    The outputs are concatenated on the last axis, so they have twice the input's width; the
    diagonal moments are returned (the two halves of one unit are not independent, but a CLT
    layer only propagates variances).

    Args:
      mu: means, shape ``(..., n)`` with at least one axis.
      sigma: standard deviations (>= 0), broadcastable against ``mu``; negative entries as
        in :func:`relu_moments` (``ValueError`` if concrete, NaN if traced).

    Returns:
      ``(mean, var)``, each of shape ``(..., 2n)``.

    References:
      Shang, Sohn, Almeida, Lee (2016). Understanding and Improving Convolutional Neural
      Networks via Concatenated Rectified Linear Units. ICML.

    Examples:
      >>> import jax.numpy as jnp
      >>> mean, var = crelu_moments(jnp.array([2.0, -1.0]), jnp.zeros(2))
      >>> print(mean, var)
      [2. 0. 0. 1.] [0. 0. 0. 0.]
    """
    mean, var, neg_mean, neg_var = _moments((1, -1), mu, sigma)
    if mean.ndim == 0:
        raise ValueError("`mu` and `sigma` must have at least one axis to concatenate a CReLU on; got scalars.")
    return jnp.concatenate([mean, neg_mean], axis=-1), jnp.concatenate([var, neg_var], axis=-1)
