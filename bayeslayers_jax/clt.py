"""Moment propagation through an affine layer with Gaussian weights (the CLT layer's core)."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from bayeslayers_jax._checks import (
    as_float_array,
    check_bias,
    check_kernel,
    check_same_shape,
    nonnegative_or_nan,
)

__all__ = ["clt_linear_moments"]


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
    mu = as_float_array("mu", mu)
    weight_mu = as_float_array("weight_mu", weight_mu)
    check_kernel("mu", mu, "weight_mu", weight_mu)
    arrays = [mu, weight_mu]
    if var is not None:
        var = as_float_array("var", var)
        check_same_shape(mu=mu, var=var)
        arrays.append(var)
    if weight_var is not None:
        weight_var = as_float_array("weight_var", weight_var)
        check_same_shape(weight_mu=weight_mu, weight_var=weight_var)
        arrays.append(weight_var)
    if bias_var is not None and bias_mu is None:
        raise ValueError("`bias_var` was given without `bias_mu`.")
    for name, b in (("bias_mu", bias_mu), ("bias_var", bias_var)):
        if b is not None:
            check_bias(name, as_float_array(name, b), "weight_mu", weight_mu)
            arrays.append(as_float_array(name, b))
    dtype = jnp.result_type(*arrays)
    cast = lambda a: None if a is None else jnp.asarray(a, dtype)  # noqa: E731
    mu, var, weight_mu, weight_var = cast(mu), cast(var), cast(weight_mu), cast(weight_var)
    if var is not None:
        var = nonnegative_or_nan("var", var)
    if weight_var is not None:
        weight_var = nonnegative_or_nan("weight_var", weight_var)
    if bias_var is not None:
        bias_var = nonnegative_or_nan("bias_var", cast(bias_var))

    mean = mu @ weight_mu
    out_var = None
    if weight_var is not None:
        second_moment = mu * mu if var is None else var + mu * mu
        out_var = second_moment @ weight_var
    if var is not None:
        term = var @ (weight_mu * weight_mu)
        out_var = term if out_var is None else out_var + term
    if out_var is None:
        out_var = jnp.zeros_like(mean)
    if bias_mu is not None:
        mean = mean + _row_vector(cast(bias_mu), mean.ndim)
    if bias_var is not None:
        out_var = out_var + _row_vector(cast(bias_var), mean.ndim)
    return mean, out_var
