"""Positive reparameterizations of a standard deviation: ``std = exp(rho)`` or ``softplus(rho)``.

Blundell et al. (2015) parameterize the posterior std as ``softplus(rho)``; ObjectRL's default
is ``exp(rho)``. Both are provided, in forms that never overflow.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from bayeslayers_jax._checks import as_float_array

__all__ = ["softplus", "inv_softplus", "rho_to_std", "rho_to_log_std"]


def softplus(x: jax.Array) -> jax.Array:
    r"""Numerically stable softplus.

    .. math:: \operatorname{softplus}(x) = \log(1 + e^x) = \max(x, 0) + \log(1 + e^{-|x|})

    The naive ``log(1 + exp(x))`` overflows for ``x`` above about 88 (float32) or 709
    (float64); this form is exact to float precision for every finite ``x``.

    Args:
      x: any floating array.

    Returns:
      ``softplus(x)``, same shape and dtype.

    Examples:
      >>> import jax.numpy as jnp
      >>> from bayeslayers_jax import softplus
      >>> print(round(float(softplus(0.0)), 4))  # log 2
      0.6931
      >>> print(float(softplus(1000.0)))  # no overflow
      1000.0
      >>> print(f"{float(softplus(-80.0)):.4e}")  # exp(-80), not 0
      1.8049e-35
    """
    x = as_float_array("x", x)
    return jnp.maximum(x, 0) + jnp.log1p(jnp.exp(-jnp.abs(x)))


def inv_softplus(y: jax.Array) -> jax.Array:
    r"""Inverse of :func:`softplus` for ``y > 0``.

    .. math:: \operatorname{softplus}^{-1}(y) = \log(e^y - 1) = y + \log(-\operatorname{expm1}(-y))

    The right-hand form neither overflows for large ``y`` nor loses precision for tiny ``y``
    (where it tends to ``log y``). ``y <= 0`` has no preimage and gives ``-inf``/``NaN``.

    Args:
      y: positive floating array.

    Returns:
      ``x`` with ``softplus(x) == y`` to float precision.

    Examples:
      >>> import jax.numpy as jnp
      >>> from bayeslayers_jax import inv_softplus, softplus
      >>> print(round(float(inv_softplus(0.01)), 4))  # the rho of a std of 0.01
      -4.6002
      >>> x = jnp.array([-20.0, -1.0, 0.0, 3.0, 50.0])
      >>> bool(jnp.allclose(inv_softplus(softplus(x)), x, rtol=1e-5))
      True
      >>> print(float(inv_softplus(-1.0)))  # no preimage
      nan
    """
    y = as_float_array("y", y)
    return y + jnp.log(-jnp.expm1(-y))


def rho_to_std(rho: jax.Array, use_softplus: bool = False) -> jax.Array:
    r"""Maps an unconstrained parameter ``rho`` to a standard deviation.

    .. math:: \sigma = e^{\rho} \quad\text{or}\quad \sigma = \operatorname{softplus}(\rho)

    Args:
      rho: unconstrained floating array.
      use_softplus: use ``softplus(rho)`` (Blundell et al., 2015) instead of ``exp(rho)``
        (the ObjectRL default).

    Returns:
      The positive standard deviation, same shape and dtype as ``rho``.

    Examples:
      >>> from bayeslayers_jax import rho_to_std
      >>> print(round(float(rho_to_std(-4.6)), 5))  # exp(-4.6): the initial std
      0.01005
      >>> print(round(float(rho_to_std(-4.6, use_softplus=True)), 5))
      0.01
    """
    if not isinstance(use_softplus, bool):
        raise TypeError(f"`use_softplus` must be a bool, got {use_softplus!r}.")
    rho = as_float_array("rho", rho)
    return softplus(rho) if use_softplus else jnp.exp(rho)


def rho_to_log_std(rho: jax.Array, use_softplus: bool = False) -> jax.Array:
    r"""The logarithm of :func:`rho_to_std`, computed without forming the std.

    .. math:: \log\sigma = \rho \quad\text{or}\quad
       \log\sigma = \log\operatorname{softplus}(\rho) = \rho + \log\frac{\log(1 + e^{\rho})}{e^{\rho}}

    With ``exp`` it is ``rho`` itself. With ``softplus``, below ``rho = log(eps)`` the
    correction term is under half an ulp of ``rho`` (:math:`-e^{\rho}/2`), so ``rho`` is
    returned there; above it ``log(softplus(rho))`` is accurate. So the log std is exact and
    finite for every finite ``rho``, where the std itself underflows to 0 (``rho`` below
    about -87.3 in float32 for ``exp``, -103 for ``softplus``), which keeps a KL computed
    from it (:func:`~bayeslayers_jax.kl_normal_from_log_std`) finite.

    Args:
      rho: unconstrained floating array.
      use_softplus: ``std = softplus(rho)`` instead of ``exp(rho)``.

    Returns:
      ``log(std)``, same shape and dtype as ``rho``.

    Examples:
      >>> import jax.numpy as jnp
      >>> print(float(rho_to_log_std(jnp.float32(-200.0), use_softplus=True)))
      -200.0
      >>> print(round(float(rho_to_log_std(jnp.float32(0.0), use_softplus=True)), 4))  # log log 2
      -0.3665
    """
    if not isinstance(use_softplus, bool):
        raise TypeError(f"`use_softplus` must be a bool, got {use_softplus!r}.")
    rho = as_float_array("rho", rho)
    if not use_softplus:
        return rho
    cut = math.log(float(jnp.finfo(rho.dtype).eps))
    return jnp.where(rho < cut, rho, jnp.log(softplus(jnp.maximum(rho, cut))))
