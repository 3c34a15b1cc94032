"""Moment propagation through an affine layer with Gaussian weights (the CLT layers' core).

One implementation, :func:`_clt_moments`, serves every linear map: the dense product
(:func:`clt_linear_moments`) and the convolution (:func:`clt_conv_moments`); see
:mod:`bayeslayers_jax.core`.
"""

from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp

from bayeslayers_jax.core._linear_map import DENSE, Conv, Padding
from bayeslayers_jax._checks import (
    as_float_array,
    check_bias,
    check_same_shape,
    nonnegative_or_nan,
)

__all__ = ["clt_linear_moments", "clt_conv_moments"]


def _row_vector(b: jax.Array, ndim: int) -> jax.Array:
    """Reshapes a ``(features,)`` bias to broadcast against a rank-``ndim`` output explicitly."""
    return b.reshape((1,) * (ndim - 1) + (-1,))


def clt_linear_moments(
    mu: jax.Array,
    var: jax.Array | None,
    weight_mu: jax.Array,
    weight_var: jax.Array | None,
    bias_mu: jax.Array | None = None,
    bias_var: jax.Array | None = None,
) -> tuple[jax.Array, jax.Array]:
    r"""Exact mean and variance of ``x @ W + b`` for independent Gaussian ``x``, ``W`` and ``b``.

    With inputs :math:`x_i` of mean :math:`\mu_i` and variance :math:`s_i`, independent of each
    other and of the weights :math:`W_{ij} \sim \mathcal N(M_{ij}, V_{ij})`:

    .. math::
       \mathbb E[y_j] = \sum_i \mu_i M_{ij} + b^\mu_j, \qquad
       \operatorname{Var}[y_j] = \sum_i (s_i + \mu_i^2) V_{ij} + s_i M_{ij}^2 + b^{v}_j

    By the central limit theorem ``y`` is close to Gaussian for wide layers, which is what lets
    a CLT network propagate ``(mean, var)`` instead of samples (Wu et al., 2019; Haussmann et
    al., 2019).

    Args:
      mu: input means, ``(..., in_features)``.
      var: input variances of the same shape, or ``None`` for a deterministic input.
      weight_mu: ``(in_features, features)`` weight means.
      weight_var: weight variances of the same shape, or ``None`` for deterministic weights.
      bias_mu: optional ``(features,)`` bias means.
      bias_var: optional ``(features,)`` bias variances (requires ``bias_mu``).

    Returns:
      ``(mean, var)`` of shape ``(..., features)``; the variance is >= 0 (zeros when both the
      input and the weights are deterministic).

    Raises:
      ValueError: a concrete ``var``, ``weight_var`` or ``bias_var`` with a negative entry
        (and the shape errors, naming the arguments).

    Negative and NaN variances: under ``jax.jit`` the values cannot be checked, so a negative
    entry of ``var``, ``weight_var`` or ``bias_var`` is read as NaN: the outputs that depend
    on it are NaN, never a negative variance. A NaN anywhere gives NaN in what depends on it.

    Supported range: the products are formed as written (``mu**2``, ``var``, ``mu * M``), so
    every one of ``mu**2 * V``, ``var * M**2`` and ``mu**2`` must be finite: ``|mu|`` below
    ``sqrt(finfo.max)`` (1.8e19 in float32, 1.3e154 in float64). Beyond it the variance
    overflows to ``inf`` (not NaN), even where the exact value would be finite.

    Examples:
      >>> import jax.numpy as jnp
      >>> mean, var = clt_linear_moments(
      ...     jnp.array([[1.0, 2.0]]), jnp.array([[0.5, 0.0]]),
      ...     jnp.ones((2, 1)), jnp.full((2, 1), 0.1), jnp.zeros(1), jnp.full(1, 0.2))
      >>> print(mean, var)  # 1 + 2; (0.5 + 1) 0.1 + 4 (0.1) + 0.5 + 0.2
      [[3.]] [[1.25]]

    References:
      Wu, Nowozin, Meeds, Turner, Hernandez-Lobato, Gaunt (2019). Deterministic Variational
      Inference for Robust Bayesian Neural Networks. ICLR.
      Haussmann, Hamprecht, Kandemir (2019). Sampling-Free Variational Inference of Bayesian
      Neural Networks by Variance Backpropagation. UAI.
    """
    return _clt_moments(DENSE, "weight", mu, var, weight_mu, weight_var, bias_mu, bias_var)


def clt_conv_moments(
    mu: jax.Array,
    var: jax.Array | None,
    kernel_mu: jax.Array,
    kernel_var: jax.Array | None,
    bias_mu: jax.Array | None = None,
    bias_var: jax.Array | None = None,
    *,
    strides: int | Sequence[int] = 1,
    padding: Padding = "SAME",
    input_dilation: int | Sequence[int] = 1,
    kernel_dilation: int | Sequence[int] = 1,
    feature_group_count: int = 1,
) -> tuple[jax.Array, jax.Array]:
    r"""Exact mean and variance of a convolution with independent Gaussian inputs and kernel.

    A convolution is a linear map: each output element is a sum over its receptive field
    :math:`R` of input-kernel products, so :func:`clt_linear_moments`'s formula holds with the
    matrix product replaced by the convolution :math:`\star` (the same one, with the same
    arguments, for all three terms):

    .. math::
       \mathbb E[y] = \mu \star K_\mu + b_\mu, \qquad
       \operatorname{Var}[y] = (s + \mu^2) \star K_v + s \star K_\mu^2 + b_v

    for inputs of means :math:`\mu` and variances :math:`s`, independent of each other and
    of the kernel entries :math:`K \sim \mathcal N(K_\mu, K_v)`. The convolution is
    :class:`flax.linen.Conv` (``jax.lax.conv_general_dilated``) with its conventions:
    channels last, kernel of shape ``(*kernel_size, in_features // feature_group_count,
    features)``, any number of spatial axes and of leading batch axes.

    Padding: zero padding (``'SAME'``, ``'VALID'``, explicit pairs, ``'CAUSAL'``) pads the
    mean and the variance with zeros, i.e. with the constant 0, which is exact. With
    ``'REFLECT'``, or ``'CIRCULAR'`` when the dilated kernel is wider than the input, one
    input can fall twice into one receptive field; the formula then treats the two copies
    as independent (its variance misses their covariance). The kernel terms stay exact for
    a deterministic input.

    Args:
      mu: input means, ``(*batch, *spatial, in_features)``.
      var: input variances of the same shape, or ``None`` for a deterministic input.
      kernel_mu: kernel means ``(*kernel_size, in_features // feature_group_count, features)``.
      kernel_var: kernel variances of the same shape, or ``None`` for a deterministic kernel.
      bias_mu: optional ``(features,)`` bias means.
      bias_var: optional ``(features,)`` bias variances (requires ``bias_mu``).
      strides, padding, input_dilation, kernel_dilation, feature_group_count: as for
        :class:`flax.linen.Conv`.

    Returns:
      ``(mean, var)`` of shape ``(*batch, *out_spatial, features)``, the variance >= 0.

    Raises:
      ValueError: shapes that do not fit (naming the arguments), a concrete negative
        variance. Under ``jax.jit`` negative variances become NaN and NaN propagates, as in
        :func:`clt_linear_moments`, whose supported range also applies here.

    Examples:
      >>> import jax.numpy as jnp
      >>> mean, var = clt_conv_moments(
      ...     jnp.ones((1, 4, 4, 2)), jnp.full((1, 4, 4, 2), 0.5),
      ...     jnp.ones((3, 3, 2, 1)), jnp.full((3, 3, 2, 1), 0.1), padding='VALID')
      >>> print(mean.shape, mean[0, 0, 0, 0], var[0, 0, 0, 0])  # 18 terms: 18 (1.5 * 0.1 + 0.5)
      (1, 2, 2, 1) 18.0 11.7

    References:
      Wu et al. (2019); Haussmann et al. (2019): see :func:`clt_linear_moments`.
    """
    conv = Conv(strides, padding, input_dilation, kernel_dilation, feature_group_count)
    return _clt_moments(conv, "kernel", mu, var, kernel_mu, kernel_var, bias_mu, bias_var)


def _clt_moments(linear_map, kernel, mu, var, kernel_mu, kernel_var, bias_mu, bias_var):
    """The moments of ``linear_map(x, K) + b``; ``kernel`` names the kernel arguments."""
    k_mu, k_var = f"{kernel}_mu", f"{kernel}_var"
    mu = as_float_array("mu", mu)
    kernel_mu = as_float_array(k_mu, kernel_mu)
    linear_map.check("mu", mu, k_mu, kernel_mu)
    arrays = [mu, kernel_mu]
    if var is not None:
        var = as_float_array("var", var)
        check_same_shape(mu=mu, var=var)
        arrays.append(var)
    if kernel_var is not None:
        kernel_var = as_float_array(k_var, kernel_var)
        check_same_shape(**{k_mu: kernel_mu, k_var: kernel_var})
        arrays.append(kernel_var)
    if bias_var is not None and bias_mu is None:
        raise ValueError("`bias_var` was given without `bias_mu`.")
    for name, b in (("bias_mu", bias_mu), ("bias_var", bias_var)):
        if b is not None:
            check_bias(name, as_float_array(name, b), k_mu, kernel_mu)
            arrays.append(as_float_array(name, b))
    dtype = jnp.result_type(*arrays)
    cast = lambda a: None if a is None else jnp.asarray(a, dtype)  # noqa: E731
    mu, var, kernel_mu, kernel_var = cast(mu), cast(var), cast(kernel_mu), cast(kernel_var)
    if var is not None:
        var = nonnegative_or_nan("var", var)
    if kernel_var is not None:
        kernel_var = nonnegative_or_nan(k_var, kernel_var)
    if bias_var is not None:
        bias_var = nonnegative_or_nan("bias_var", cast(bias_var))

    mean = linear_map(mu, kernel_mu)
    out_var = None
    if kernel_var is not None:
        second_moment = mu * mu if var is None else var + mu * mu
        out_var = linear_map(second_moment, kernel_var)
    if var is not None:
        term = linear_map(var, kernel_mu * kernel_mu)
        out_var = term if out_var is None else out_var + term
    if out_var is None:
        out_var = jnp.zeros_like(mean)
    if bias_mu is not None:
        mean = mean + _row_vector(cast(bias_mu), mean.ndim)
    if bias_var is not None:
        out_var = out_var + _row_vector(cast(bias_var), mean.ndim)
    return mean, out_var
