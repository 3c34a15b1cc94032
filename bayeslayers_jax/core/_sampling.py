"""Reparameterized sampling: Bayes by Backprop weights, local reparameterization, Flipout.

Local reparameterization and Flipout are each written once, against a linear map (the dense
product or a convolution, :mod:`bayeslayers_jax.core`): :func:`local_reparameterization`
and :func:`local_reparameterization_conv`, :func:`flipout` and :func:`flipout_conv` are the
two instances of each.
"""

from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp

from bayeslayers_jax._checks import as_float_array, check_bias, check_same_shape
from bayeslayers_jax.core._linear_map import DENSE, Conv, Padding

__all__ = [
    "sample_weights",
    "local_reparameterization",
    "local_reparameterization_conv",
    "flipout",
    "flipout_conv",
    "safe_sqrt",
]


def _check_key(key) -> None:
    if key is None:
        raise ValueError(
            "A PRNG key is required to sample: pass `key=jax.random.key(...)` "
            "(or a split of one); got None."
        )


def safe_sqrt(v: jax.Array) -> jax.Array:
    r"""Square root of a variance with a finite (zero) gradient at ``v = 0``.

    .. math:: \operatorname{safe\_sqrt}(v) = \sqrt v, \qquad
       \frac{d}{dv}\operatorname{safe\_sqrt}(v)\Big|_{v=0} := 0

    Only the exact zero is guarded (the double-``where`` pattern): a NaN or a negative ``v``
    gives NaN, value and gradient, so a corrupted variance never turns into zero noise.

    Args:
      v: variances (>= 0), any floating array.

    Returns:
      ``sqrt(v)``, same shape and dtype; NaN where ``v`` is NaN or negative.

    Examples:
      >>> import jax, jax.numpy as jnp
      >>> print(safe_sqrt(jnp.array([4.0, 0.0, -1.0, jnp.nan])))
      [ 2.  0. nan nan]
      >>> print(jax.grad(safe_sqrt)(0.0))
      0.0
    """
    zero = v == 0
    return jnp.where(zero, 0, jnp.sqrt(jnp.where(zero, 1, v)))


def _weight_noise(key: jax.Array, shape: tuple[int, ...], dtype) -> jax.Array:
    """Standard normals for one weight sample (shared by every example of a batch)."""
    # Non-partitionable threefry: one weight sample is replicated on every device anyway
    # (nothing to shard), and on CPU this bit generator is 7-14% of a BBB train step faster.
    with jax.threefry_partitionable(False):
        return jax.random.normal(key, shape, dtype)


def sample_weights(key: jax.Array, mu: jax.Array, std: jax.Array) -> jax.Array:
    r"""Draws ``W = mu + std * eps`` with ``eps ~ N(0, I)`` (Bayes by Backprop).

    .. math:: W = \mu + \sigma \odot \varepsilon, \quad \varepsilon \sim \mathcal N(0, I)

    The draw is differentiable in ``mu`` and ``std`` (the reparameterization trick) and is a
    pure function of ``key``: the same key gives the same weights, which is the JAX form of
    ObjectRL's ``manual_reset``. The normals come from threefry in its non-partitionable
    mode (``jax.threefry_partitionable(False)``) whatever the global setting: a weight sample
    is replicated on every device, so there is nothing to shard, and this mode is the faster
    one on CPU (about 7% of a Bayes by Backprop train step, measured). Local
    reparameterization keeps the default partitionable mode, because its noise has the
    batch's shape and is generated sharded along the batch (see :mod:`bayeslayers_jax.parallel`).

    Args:
      key: a ``jax.random`` key.
      mu: posterior means, any shape.
      std: posterior stds (>= 0), same shape as ``mu``.

    Returns:
      One sample of the weights, shape and dtype of ``mu``.

    References:
      Blundell, Cornebise, Kavukcuoglu, Wierstra (2015). Weight Uncertainty in Neural Networks.
    """
    _check_key(key)
    mu, std = as_float_array("mu", mu), as_float_array("std", std)
    check_same_shape(mu=mu, std=std)
    dtype = jnp.result_type(mu, std)
    eps = _weight_noise(key, mu.shape, dtype)
    return mu.astype(dtype) + std.astype(dtype) * eps


def local_reparameterization(
    key: jax.Array,
    x: jax.Array,
    weight_mu: jax.Array,
    weight_std: jax.Array,
    bias_mu: jax.Array | None = None,
    bias_std: jax.Array | None = None,
) -> jax.Array:
    r"""Samples the pre-activations of an affine layer with Gaussian weights directly.

    For independent weights :math:`W_{ij} \sim \mathcal N(\mu_{ij}, \sigma_{ij}^2)` and a fixed
    input row ``x``, each output is Gaussian:

    .. math::
       m = x W_\mu + b_\mu, \qquad v = x^{2} \sigma_W^{2} + \sigma_b^{2}, \qquad
       y = m + \sqrt{v} \odot \varepsilon, \quad \varepsilon \sim \mathcal N(0, I)

    with one ``eps`` per output element, so every example in a batch gets independent
    weights at the cost of two matrix products (Kingma, Salimans & Welling, 2015).

    Args:
      key: a ``jax.random`` key.
      x: inputs of shape ``(..., in_features)``.
      weight_mu, weight_std: ``(in_features, features)`` means and stds.
      bias_mu, bias_std: optional ``(features,)`` means and stds (``bias_std=None`` with a
        ``bias_mu`` means a deterministic bias).

    Returns:
      A sample of shape ``(..., features)``. A NaN in any input gives NaN in every output it
      feeds (the square root guards only the exact zero variance, see :func:`safe_sqrt`).

    References:
      Kingma, Salimans, Welling (2015). Variational Dropout and the Local Reparameterization Trick.

    Examples:
      >>> import jax, jax.numpy as jnp
      >>> x, w = jnp.ones((2, 3)), jnp.ones((3, 2))
      >>> print(local_reparameterization(jax.random.key(0), x, w, jnp.zeros((3, 2))))
      [[3. 3.]
       [3. 3.]]
      >>> y = local_reparameterization(jax.random.key(0), x, w, jnp.full((3, 2), jnp.nan))
      >>> print(bool(jnp.isnan(y).all()))
      True
    """
    return _local_reparameterization(DENSE, "weight", key, x, weight_mu, weight_std, bias_mu, bias_std)


def local_reparameterization_conv(
    key: jax.Array,
    x: jax.Array,
    kernel_mu: jax.Array,
    kernel_std: jax.Array,
    bias_mu: jax.Array | None = None,
    bias_std: jax.Array | None = None,
    *,
    strides: int | Sequence[int] = 1,
    padding: Padding = "SAME",
    input_dilation: int | Sequence[int] = 1,
    kernel_dilation: int | Sequence[int] = 1,
    feature_group_count: int = 1,
) -> jax.Array:
    r"""Local reparameterization for a convolution with a Gaussian kernel.

    :func:`local_reparameterization` with the matrix product replaced by the convolution
    :math:`\star` (:class:`flax.linen.Conv`, channels last, kernel
    ``(*kernel_size, in_features // feature_group_count, features)``):

    .. math::
       m = x \star K_\mu + b_\mu, \qquad v = x^2 \star \sigma_K^2 + \sigma_b^2, \qquad
       y = m + \sqrt v \odot \varepsilon

    with one ``eps`` per output element. Each output element then has its exact marginal
    under a kernel sample, but two outputs of one example (neighbouring positions) are
    independent, whereas under one kernel sample they would be correlated: the estimator
    of the expected loss stays unbiased, its samples are not those of a single network.

    Args:
      key: a ``jax.random`` key.
      x: inputs ``(*batch, *spatial, in_features)``.
      kernel_mu, kernel_std: kernel means and stds, Flax's kernel shape.
      bias_mu, bias_std: optional ``(features,)`` means and stds.
      strides, padding, input_dilation, kernel_dilation, feature_group_count: as for
        :class:`flax.linen.Conv`.

    Returns:
      A sample of shape ``(*batch, *out_spatial, features)``; NaN propagates.

    References:
      Kingma, Salimans, Welling (2015). Variational Dropout and the Local Reparameterization Trick.

    Examples:
      >>> import jax, jax.numpy as jnp
      >>> y = local_reparameterization_conv(
      ...     jax.random.key(0), jnp.ones((2, 5, 5, 3)), jnp.ones((3, 3, 3, 4)),
      ...     jnp.full((3, 3, 3, 4), 0.1), strides=2)
      >>> print(y.shape)
      (2, 3, 3, 4)
    """
    conv = Conv(strides, padding, input_dilation, kernel_dilation, feature_group_count)
    return _local_reparameterization(conv, "kernel", key, x, kernel_mu, kernel_std, bias_mu, bias_std)


def flipout(
    key: jax.Array,
    x: jax.Array,
    weight_mu: jax.Array,
    weight_std: jax.Array,
    bias_mu: jax.Array | None = None,
    bias_std: jax.Array | None = None,
) -> jax.Array:
    r"""Flipout: one shared weight perturbation, decorrelated across the batch by random signs.

    With one perturbation :math:`\Delta W = \sigma_W \odot E`, :math:`E \sim \mathcal N(0, I)`
    drawn per call and, per example :math:`n`, random signs :math:`s_n` (one per input
    feature) and :math:`r_n` (one per output feature):

    .. math::
       y_n = x_n W_\mu + \big((x_n \odot s_n) \Delta W\big) \odot r_n
             + b_\mu + \Delta b \odot r_n

    Example :math:`n` thus uses the weights :math:`W_\mu + \Delta W \odot s_n r_n^\top`,
    which have exactly the distribution of a Bayes by Backprop sample (a Gaussian centred at
    zero is symmetric, so flipping signs independent of it leaves its law unchanged): the
    marginal of each example equals that of :class:`~bayeslayers_jax.BBBLinear`, while the
    examples of a batch see nearly independent perturbations, so the gradient variance falls
    roughly like ``1 / batch`` instead of staying at the shared-sample level. The bias is
    treated as a weight on a constant input (its perturbation ``Δb`` is shared and flipped
    by ``r_n``). Cost: two matrix products, as local reparameterization, but with the
    weight-sample semantics of BBB (correlations between the outputs of one example kept).

    Args:
      key: a ``jax.random`` key (split into the weight, bias and two sign keys).
      x: inputs of shape ``(..., in_features)``; every leading index is one example.
      weight_mu, weight_std: ``(in_features, features)`` means and stds.
      bias_mu, bias_std: optional ``(features,)`` means and stds (``bias_std=None`` with a
        ``bias_mu`` means a deterministic bias).

    Returns:
      A sample of shape ``(..., features)``. NaN propagates to every output it feeds.

    References:
      Wen, Vicol, Ba, Tran, Grosse (2018). Flipout: Efficient Pseudo-Independent Weight
      Perturbations on Mini-Batches. ICLR.

    Examples:
      >>> import jax, jax.numpy as jnp
      >>> x, w = jnp.ones((2, 3)), jnp.ones((3, 2))
      >>> print(flipout(jax.random.key(0), x, w, jnp.zeros((3, 2))))  # zero std: the mean
      [[3. 3.]
       [3. 3.]]
      >>> print(flipout(jax.random.key(0), x, w, 0.1 * w).shape)
      (2, 2)
    """
    return _flipout(DENSE, "weight", key, x, weight_mu, weight_std, bias_mu, bias_std)


def flipout_conv(
    key: jax.Array,
    x: jax.Array,
    kernel_mu: jax.Array,
    kernel_std: jax.Array,
    bias_mu: jax.Array | None = None,
    bias_std: jax.Array | None = None,
    *,
    strides: int | Sequence[int] = 1,
    padding: Padding = "SAME",
    input_dilation: int | Sequence[int] = 1,
    kernel_dilation: int | Sequence[int] = 1,
    feature_group_count: int = 1,
) -> jax.Array:
    r"""Flipout for a convolution (:func:`flipout` with the product replaced by a convolution).

    .. math::
       y_n = x_n \star K_\mu + \big((x_n \odot s_n) \star \Delta K\big) \odot r_n
             + b_\mu + \Delta b \odot r_n

    The signs are drawn per example and per *channel* (``s_n`` per input channel, ``r_n`` per
    output channel) and broadcast over the spatial axes, so each example sees one kernel,
    :math:`K_\mu + \Delta K \odot s_n r_n^\top`, distributed exactly as a Bayes by Backprop
    kernel sample (its outputs keep their spatial correlations), as in Wen et al. (2018) and
    TensorFlow Probability's ``Convolution2DFlipout``.

    Args:
      key: a ``jax.random`` key.
      x: inputs ``(*batch, *spatial, in_features)``; every batch index is one example.
      kernel_mu, kernel_std: kernel means and stds, Flax's kernel shape
        ``(*kernel_size, in_features // feature_group_count, features)``.
      bias_mu, bias_std: optional ``(features,)`` means and stds.
      strides, padding, input_dilation, kernel_dilation, feature_group_count: as for
        :class:`flax.linen.Conv`.

    Returns:
      A sample of shape ``(*batch, *out_spatial, features)``; NaN propagates.

    References:
      Wen, Vicol, Ba, Tran, Grosse (2018). Flipout: Efficient Pseudo-Independent Weight
      Perturbations on Mini-Batches. ICLR.

    Examples:
      >>> import jax, jax.numpy as jnp
      >>> y = flipout_conv(jax.random.key(0), jnp.ones((2, 6, 6, 3)), jnp.ones((3, 3, 3, 4)),
      ...                  jnp.full((3, 3, 3, 4), 0.1), padding='VALID')
      >>> print(y.shape)
      (2, 4, 4, 4)
    """
    conv = Conv(strides, padding, input_dilation, kernel_dilation, feature_group_count)
    return _flipout(conv, "kernel", key, x, kernel_mu, kernel_std, bias_mu, bias_std)


def _prepare(linear_map, kernel, key, x, w_mu, w_std, b_mu, b_std):
    """Checks and casts the arguments of a sampled linear map to one floating dtype."""
    _check_key(key)
    k_mu, k_std = f"{kernel}_mu", f"{kernel}_std"
    x = as_float_array("x", x)
    w_mu, w_std = as_float_array(k_mu, w_mu), as_float_array(k_std, w_std)
    linear_map.check("x", x, k_mu, w_mu)
    check_same_shape(**{k_mu: w_mu, k_std: w_std})
    if b_std is not None and b_mu is None:
        raise ValueError("`bias_std` was given without `bias_mu`.")
    arrays = {"bias_mu": b_mu, "bias_std": b_std}
    for name, b in arrays.items():
        if b is not None:
            arrays[name] = as_float_array(name, b)
            check_bias(name, arrays[name], k_mu, w_mu)
    dtype = jnp.result_type(x, w_mu, w_std)
    b_mu, b_std = (None if b is None else b.astype(dtype) for b in arrays.values())
    return x.astype(dtype), w_mu.astype(dtype), w_std.astype(dtype), b_mu, b_std


def _row(b: jax.Array, ndim: int) -> jax.Array:
    """A ``(features,)`` vector shaped to broadcast explicitly against a rank-``ndim`` output."""
    return b.reshape((1,) * (ndim - 1) + (-1,))


def _local_reparameterization(linear_map, kernel, key, x, w_mu, w_std, b_mu, b_std):
    """``m + sqrt(v) * eps`` for ``m = A(x, W_mu) + b_mu``, ``v = A(x**2, W_std**2) + b_std**2``."""
    x, w_mu, w_std, b_mu, b_std = _prepare(linear_map, kernel, key, x, w_mu, w_std, b_mu, b_std)
    mean = linear_map(x, w_mu)
    var = linear_map(x * x, w_std * w_std)
    if b_mu is not None:
        mean = mean + _row(b_mu, mean.ndim)
    if b_std is not None:
        var = var + _row(jnp.square(b_std), var.ndim)
    eps = jax.random.normal(key, mean.shape, mean.dtype)
    return mean + safe_sqrt(var) * eps


def _flipout(linear_map, kernel, key, x, w_mu, w_std, b_mu, b_std):
    """``A(x, W_mu) + A(x * s, dW) * r + b_mu + db * r`` with one shared ``dW = W_std * E``."""
    x, w_mu, w_std, b_mu, b_std = _prepare(linear_map, kernel, key, x, w_mu, w_std, b_mu, b_std)
    k_w, k_b, k_in, k_out = jax.random.split(key, 4)
    dtype = x.dtype
    delta = w_std * _weight_noise(k_w, w_mu.shape, dtype)
    s_in = jax.random.rademacher(k_in, linear_map.sign_shape(x, w_mu, output=False), dtype)
    mean = linear_map(x, w_mu)
    s_out = jax.random.rademacher(k_out, linear_map.sign_shape(x, w_mu, output=True), dtype)
    perturbation = linear_map(x * s_in, delta)
    if b_std is not None:
        perturbation = perturbation + _row(b_std * _weight_noise(k_b, b_std.shape, dtype), mean.ndim)
    if b_mu is not None:
        mean = mean + _row(b_mu, mean.ndim)
    return mean + perturbation * s_out
