"""Reparameterized sampling: Bayes by Backprop weights and local reparameterization."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from bayeslayers_jax._checks import as_float_array, check_bias, check_kernel, check_same_shape

__all__ = ["sample_weights", "local_reparameterization", "safe_sqrt"]


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
    # Non-partitionable threefry: one weight sample is replicated on every device anyway
    # (nothing to shard), and on CPU this bit generator is 7-14% of a BBB train step faster.
    with jax.threefry_partitionable(False):
        eps = jax.random.normal(key, mu.shape, dtype)
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
    _check_key(key)
    x = as_float_array("x", x)
    weight_mu, weight_std = as_float_array("weight_mu", weight_mu), as_float_array("weight_std", weight_std)
    check_kernel("x", x, "weight_mu", weight_mu)
    check_same_shape(weight_mu=weight_mu, weight_std=weight_std)
    if bias_std is not None and bias_mu is None:
        raise ValueError("`bias_std` was given without `bias_mu`.")
    dtype = jnp.result_type(x, weight_mu, weight_std)
    x, weight_mu, weight_std = x.astype(dtype), weight_mu.astype(dtype), weight_std.astype(dtype)
    mean = x @ weight_mu
    var = (x * x) @ (weight_std * weight_std)
    if bias_mu is not None:
        bias_mu = as_float_array("bias_mu", bias_mu)
        check_bias("bias_mu", bias_mu, "weight_mu", weight_mu)
        mean = mean + bias_mu.astype(dtype).reshape((1,) * (mean.ndim - 1) + (-1,))
        if bias_std is not None:
            bias_std = as_float_array("bias_std", bias_std)
            check_bias("bias_std", bias_std, "weight_mu", weight_mu)
            bias_var = jnp.square(bias_std.astype(dtype))
            var = var + bias_var.reshape((1,) * (var.ndim - 1) + (-1,))
    eps = jax.random.normal(key, mean.shape, dtype)
    return mean + safe_sqrt(var) * eps
