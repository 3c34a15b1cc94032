"""Pooling and flattening of CLT moments, so that a CLT conv net can end in a dense CLT head.

A CLT layer passes ``(mean, var)`` pairs, elementwise means and variances of its outputs.
Average pooling is linear, so its mean is exact; its variance needs the covariances of the
pooled inputs, which moment propagation does not carry: like every CLT layer it treats the
inputs as independent (see :func:`avg_pool_moments`). Flattening only moves elements.

Max pooling is left out on purpose. The maximum of Gaussians is not Gaussian, and its
moments depend on the correlations between the inputs of a window (Clark, 1961, gives the
maximum of two correlated Gaussians; more inputs need a chain of pairwise approximations).
Neighbouring convolution outputs share most of their receptive field and the kernel, so
they are strongly correlated, which the propagated moments do not record; assuming
independence instead overstates the mean of the maximum systematically (four independent
``N(0, 1)`` have a maximum of mean 1.03; four perfectly correlated ones, 0). Use average
pooling or a strided convolution in a CLT network.

References:
  Clark (1961). The Greatest of a Finite Set of Random Variables. Operations Research 9(2).
"""

from __future__ import annotations

import math
from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

from bayeslayers_jax._checks import as_float_array, check_same_shape, nonnegative_or_nan

__all__ = ["avg_pool_moments", "flatten_moments"]


def _checked_pair(mean, var):
    """``mean`` and ``var`` as floating arrays of one shape and dtype (``var`` may be None)."""
    mean = as_float_array("mean", mean)
    if var is None:
        return mean, None
    var = as_float_array("var", var)
    check_same_shape(mean=mean, var=var)
    dtype = jnp.result_type(mean, var)
    return mean.astype(dtype), nonnegative_or_nan("var", var.astype(dtype))


def avg_pool_moments(
    mean: jax.Array,
    var: jax.Array | None,
    window_shape: Sequence[int],
    strides: Sequence[int] | None = None,
    padding: str | Sequence[tuple[int, int]] = "VALID",
    count_include_pad: bool = True,
) -> tuple[jax.Array, jax.Array | None]:
    r"""Mean and variance of the average of each pooling window (:func:`flax.linen.avg_pool`).

    For the inputs :math:`x_i` of a window :math:`W` of :math:`k` elements (``k`` counts the
    padding with ``count_include_pad=True``, as :func:`flax.linen.avg_pool` does):

    .. math::
       \mathbb E\Big[\frac1k \sum_{i \in W} x_i\Big] = \frac1k \sum_{i \in W} \mu_i, \qquad
       \operatorname{Var}\Big[\frac1k \sum_{i \in W} x_i\Big] = \frac1{k^2} \sum_{i \in W} s_i

    The mean is exact. The variance is exact when the inputs of a window are uncorrelated,
    the independence assumption every CLT layer makes about its inputs; for positively
    correlated inputs (neighbouring convolution outputs usually are) it is too small by the
    missing covariances :math:`\frac{1}{k^2}\sum_{i \ne j} \operatorname{Cov}(x_i, x_j)`.

    Args:
      mean: means ``(*batch, *spatial, features)`` (channels last, as ``flax.linen.avg_pool``).
      var: variances of the same shape, or ``None`` (a deterministic input, e.g. MAP mode).
      window_shape: the window, one size per spatial axis.
      strides: the strides (default: 1 per spatial axis).
      padding: ``'VALID'``, ``'SAME'`` or ``(low, high)`` pairs per spatial axis.
      count_include_pad: divide by the full window size (``True``) or by the number of
        non-padding elements (``False``).

    Returns:
      ``(mean, var)`` pooled (``var`` is ``None`` when it was ``None``). A NaN feeds NaN
      into every window that holds it; a negative variance raises ``ValueError`` when
      concrete and becomes NaN under ``jax.jit``.

    Examples:
      >>> import jax.numpy as jnp
      >>> m, v = avg_pool_moments(jnp.arange(16.0).reshape(1, 4, 4, 1), jnp.ones((1, 4, 4, 1)),
      ...                         (2, 2), strides=(2, 2))
      >>> print(m[0, :, :, 0], v[0, 0, 0, 0])  # 4 independent unit variances: 4 / 4**2
      [[ 2.5  4.5]
       [10.5 12.5]] 0.25
    """
    mean, var = _checked_pair(mean, var)
    window_shape = tuple(window_shape)
    if not window_shape or not all(isinstance(w, int) and w >= 1 for w in window_shape):
        raise ValueError(f"`window_shape` must be a non-empty tuple of positive integers, got {window_shape!r}.")
    if mean.ndim < len(window_shape) + 1:
        raise ValueError(
            f"`mean` must have shape (*batch, {len(window_shape)} spatial axes, features) for "
            f"`window_shape` {window_shape}, got shape {mean.shape}."
        )
    strides = None if strides is None else tuple(strides)

    def window_sum(x):
        # A Python scalar init: reduce_window is differentiable only with a constant init.
        return nn.pool(x, 0.0, lax.add, window_shape, strides, padding)

    if count_include_pad:
        count = jnp.asarray(math.prod(window_shape), mean.dtype)
    else:
        # Non-padding elements per window: the window sum of ones over one example's spatial axes.
        spatial = mean.shape[mean.ndim - 1 - len(window_shape) : -1]
        count = window_sum(jnp.ones(spatial + (1,), mean.dtype))
        count = count.reshape((1,) * (mean.ndim - count.ndim) + count.shape)
    pooled_mean = window_sum(mean) / count
    return pooled_mean, None if var is None else window_sum(var) / (count * count)


def flatten_moments(
    mean: jax.Array, var: jax.Array | None, *, batch_dims: int = 1
) -> tuple[jax.Array, jax.Array | None]:
    """Flattens every axis after the first ``batch_dims`` of ``mean`` and ``var`` alike.

    Flattening moves elements without changing them, so the moments are exact; use it
    between the last CLT convolution (or pooling) and a dense CLT layer.

    Args:
      mean: means, at least ``batch_dims`` axes.
      var: variances of the same shape, or ``None``.
      batch_dims: leading axes to keep (0 flattens a single example to one vector).

    Returns:
      ``(mean, var)`` of shape ``mean.shape[:batch_dims] + (-1,)``.

    Examples:
      >>> import jax.numpy as jnp
      >>> m, v = flatten_moments(jnp.ones((2, 3, 3, 4)), jnp.ones((2, 3, 3, 4)))
      >>> print(m.shape, v.shape)
      (2, 36) (2, 36)
    """
    mean, var = _checked_pair(mean, var)
    if isinstance(batch_dims, bool) or not isinstance(batch_dims, int) or not 0 <= batch_dims <= mean.ndim:
        raise ValueError(
            f"`batch_dims` must be an integer in [0, {mean.ndim}] for `mean` of shape {mean.shape}, "
            f"got {batch_dims!r}."
        )
    shape = mean.shape[:batch_dims] + (-1,)
    return mean.reshape(shape), None if var is None else var.reshape(shape)
