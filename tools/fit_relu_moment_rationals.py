r"""Fit the float32 polynomial approximations of the scaled normal-tail ratios in moments.py.

Offline tool (not part of the package). For ``t >= 0`` let ``r = 1 / (t + K)`` and
``q = (t - K) / (t + K) = 1 - 2 K r``, which maps ``[0, inf)`` onto ``[-1, 1)``. With

.. math::
   R(t) = \Phi(-t)/\varphi(t), \quad g(t) = 1 - tR(t), \quad w(t) = (1 + t^2)R(t) - t,

the functions ``F_0 = R/r``, ``F_1 = g/r^2`` and ``F_2 = w/(2 r^3)`` are smooth and bounded on
``q in [-1, 1]`` (they tend to 1 at ``t = inf``, since ``R ~ 1/t``, ``g ~ 1/t^2``,
``w ~ 2/t^3``), so one polynomial in ``q`` each, written ``F_n(q) = F_n(-1) + (1 + q) P_n(q)``
so that the values at ``t = 0`` are exact (``K = 2``: ``r = 1/2`` and ``q = -1`` exactly), times ``r``, ``r^2``, ``2 r^3``, gives the
ratios with a small *relative* error over all ``t >= 0`` (tails included): no branch, no
``erfc``, one division.

Method: 50-digit mpmath values on a dense grid in ``q`` (Chebyshev-clustered), a weighted
least-squares fit in relative error in the Chebyshev basis, then Lawson's iteratively
reweighted least squares towards the minimax (equioscillating) relative error, converted to
monomial coefficients for Horner. The script prints the coefficients and the maximum relative
error of the float32 Horner evaluation (numpy float32, on a fresh grid of 200k points in t,
including t up to 1e6) against mpmath.

Run: ``python tools/fit_relu_moment_rationals.py [K] [degree]`` (moments.py: K = 2, degree 12).
"""

from __future__ import annotations

import sys

import mpmath as mp
import numpy as np

mp.mp.dps = 30


def _ratios(t: mp.mpf):
    """Exact R, g, w at t >= 0 (mpmath; g and w lose 4 log10(t) digits to cancellation, so the
    working precision grows with t)."""
    with mp.workdps(30 + 4 * int(mp.log10(t + 1))):
        t = mp.mpf(t)
        big_r = mp.ncdf(-t) / mp.npdf(t)
        g = 1 - t * big_r
        w = (1 + t * t) * big_r - t
        return +big_r, +g, +w


def _targets(q: np.ndarray, k: float):
    """F_0, F_1, F_2 at q in [-1, 1] (limits 1 at q = 1)."""
    out = np.empty((3, q.size))
    for i, qi in enumerate(q):
        if qi >= 1.0:
            out[:, i] = 1.0
            continue
        qm = mp.mpf(float(qi))
        t = mp.mpf(k) * (1 + qm) / (1 - qm)
        r = 1 / (t + k)
        big_r, g, w = _ratios(t)
        out[:, i] = [float(big_r / r), float(g / r**2), float(w / (2 * r**3))]
    return out


def _fit(q, f, c, degree, iterations=60):
    """P of degree ``degree - 1`` such that ``c + (1 + q) P(q)`` is near-minimax in relative
    error against ``f`` (Lawson's IRLS in the Chebyshev basis); ``c = f(-1)`` is then exact."""
    basis = np.polynomial.chebyshev.chebvander(q, degree - 1) * (1 + q)[:, None]
    a = basis / f[:, None]  # relative error rows
    b = 1.0 - c / f
    weights = np.full(q.size, 1.0 / q.size)
    for _ in range(iterations):
        sw = np.sqrt(weights)
        coef, *_ = np.linalg.lstsq(a * sw[:, None], b * sw, rcond=None)
        err = np.abs(a @ coef - b)
        weights = weights * err
        weights /= weights.sum()
    return np.polynomial.chebyshev.cheb2poly(coef)  # monomial, lowest degree first


def pinned_values(k):
    """F_n(-1) (t = 0), rounded to float32: K sqrt(pi/2), K^2, K^3 sqrt(pi/2) / 2. With K a
    power of 2, r = 1/K and these are exact scalings of float32(sqrt(pi/2)) and 1, so the
    float32 R(0), g(0), w(0) are the correctly rounded values."""
    s = float(np.float32(np.sqrt(np.pi / 2)))
    return tuple(float(np.float32(v)) for v in (k * s, k * k, k**3 * s / 2))


def evaluate_f32(t, k, pinned, coefs):
    """Float32 evaluation exactly as moments.py does it: R, g, w."""
    t = np.asarray(t, np.float32)
    r = np.float32(1.0) / (t + np.float32(k))
    q = np.float32(1.0) - np.float32(2.0 * k) * r
    p = np.float32(1.0) + q
    outs = []
    for c0, c in zip(pinned, coefs):
        acc = np.full_like(t, np.float32(c[-1]))
        for ci in c[-2::-1]:
            acc = acc * q + np.float32(ci)
        outs.append(np.float32(c0) + p * acc)
    return r * outs[0], (r * r) * outs[1], (np.float32(2.0) * (r * r)) * (r * outs[2])


def check(k, pinned, coefs, n=20000):
    t = np.unique(np.concatenate([np.linspace(0, 12, n), np.geomspace(1e-8, 1e6, n), [0.0]])).astype(np.float32)
    got = evaluate_f32(t, k, pinned, coefs)
    worst = []
    for j in range(3):
        errs = []
        for ti, gi in zip(t, got[j]):
            exact = _ratios(mp.mpf(float(ti)))[j]
            errs.append(float(abs(mp.mpf(float(gi)) - exact) / exact))
        worst.append(max(errs))
    return worst


def main():
    k = float(sys.argv[1]) if len(sys.argv) > 1 else 2.0
    degree = int(sys.argv[2]) if len(sys.argv) > 2 else 12
    m = 3000
    q = np.cos(np.pi * (np.arange(m) + 0.5) / m)[::-1]
    q = np.concatenate([[-1.0], q, [1.0]])
    f = _targets(q, k)
    pinned = pinned_values(k)
    coefs = [_fit(q, f[j], pinned[j], degree) for j in range(3)]
    for j, name in enumerate(("F0 (R)", "F1 (g)", "F2 (w)")):
        fit = pinned[j] + (1 + q) * np.polynomial.polynomial.polyval(q, coefs[j])
        print(f"{name}: F(-1) = {pinned[j]!r}, float64 fit max rel err {np.max(np.abs(fit / f[j] - 1)):.3g}")
        print("  (" + ", ".join(f"{x:.9e}" for x in coefs[j]) + ")")
    print("float32 Horner max rel err R, g, w:", ["%.3g" % e for e in check(k, pinned, coefs, n=4000)])


if __name__ == "__main__":
    main()
