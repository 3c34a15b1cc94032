r"""MC dropout, the hand-written baseline of the real-data uncertainty benchmark.

A plain ``flax.linen`` network of ``nn.Dense`` layers with ReLU and ``nn.Dropout`` after every
hidden activation, trained with dropout on and the same Gaussian weight prior (L2) as the MAP
networks, and used at test time with dropout still on: the average over ``num_samples``
dropout masks approximates the predictive of a variational posterior (Gal & Ghahramani 2016).
It is not part of the package: it is the baseline a user writes by hand, kept here so the
benchmark (:mod:`benchmarks.uq`) compares the package's layers with it on the same data and
budget.

References:
  Gal & Ghahramani 2016, "Dropout as a Bayesian Approximation: Representing Model Uncertainty
  in Deep Learning"; Srivastava et al. 2014, "Dropout: A Simple Way to Prevent Neural Networks
  from Overfitting".
"""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

__all__ = ["DropoutMLP", "l2_penalty", "mc_dropout_outputs"]


class DropoutMLP(nn.Module):
    """``Dense -> ReLU -> Dropout`` for every hidden width, then a ``Dense`` output layer.

    Attributes:
      features: hidden widths followed by the output width (as :class:`bayeslayers_jax.BayesianMLP`).
      rate: dropout probability of every hidden activation.

    Examples:
      >>> import jax, jax.numpy as jnp
      >>> net = DropoutMLP((8, 2), rate=0.5)
      >>> x = jnp.ones((3, 4))
      >>> v = net.init(jax.random.key(0), x, deterministic=True)
      >>> a = net.apply(v, x, deterministic=False, rngs={"dropout": jax.random.key(1)})
      >>> b = net.apply(v, x, deterministic=False, rngs={"dropout": jax.random.key(2)})
      >>> a.shape, bool(jnp.any(a != b))  # two masks, two outputs
      ((3, 2), True)
    """

    features: Sequence[int]
    rate: float = 0.1

    @nn.compact
    def __call__(self, x: jax.Array, *, deterministic: bool) -> jax.Array:
        for width in self.features[:-1]:
            x = nn.relu(nn.Dense(width)(x))
            x = nn.Dropout(self.rate)(x, deterministic=deterministic)
        return nn.Dense(self.features[-1])(x)


def l2_penalty(params, prior_std: float = 1.0) -> jax.Array:
    r"""Gaussian negative log prior of every parameter, :math:`\sum_i w_i^2 / (2\sigma_0^2)`.

    The same regularizer as :func:`bayeslayers_jax.neg_log_prior` gives the package's MAP
    networks (zero-mean prior of std ``prior_std`` on weights and biases), for a plain Flax
    parameter tree.

    Examples:
      >>> import jax.numpy as jnp
      >>> print(float(l2_penalty({"kernel": jnp.array([2.0]), "bias": jnp.array([1.0])})))
      2.5
    """
    leaves = jax.tree_util.tree_leaves(params)
    return sum(jnp.sum(jnp.square(leaf)) for leaf in leaves) / (2.0 * prior_std**2)


def mc_dropout_outputs(net: DropoutMLP, variables, x: jax.Array, key: jax.Array,
                       num_samples: int) -> jax.Array:
    """Outputs under ``num_samples`` independent dropout masks, vmapped: ``(num_samples, B, out)``.

    Examples:
      >>> import jax, jax.numpy as jnp
      >>> net = DropoutMLP((8, 1))
      >>> v = net.init(jax.random.key(0), jnp.ones((3, 2)), deterministic=True)
      >>> mc_dropout_outputs(net, v, jnp.ones((3, 2)), jax.random.key(1), 16).shape
      (16, 3, 1)
    """
    keys = jax.random.split(key, num_samples)
    return jax.vmap(lambda k: net.apply(variables, x, deterministic=False, rngs={"dropout": k}))(keys)
