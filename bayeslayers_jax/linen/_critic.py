r"""``BayesianCritic``: a Bayesian Q-function head ``Q(s, a)`` for actor-critic agents.

A critic maps a state and an action to a scalar value. :class:`BayesianCritic` concatenates
``(state, action)`` on the last axis, runs a :class:`~bayeslayers_jax.BayesianMLP` whose
hidden widths are ``features`` and whose output width is 1 (the output layer's
``is_output`` is set for you), and drops the trailing unit axis, so the value has the
batch's shape ``(B,)`` like the TD targets it is trained on (inside an
:class:`~bayeslayers_jax.Ensemble`: ``(members, B)``).

:func:`value_bound` forms the optimistic or pessimistic value
``mean + beta * std`` from any critic output (a CLT critic's ``(mean, var)``, a sampled or
deterministic critic's array), in MAP mode too.

References:
  Haarnoja et al. 2018, "Soft Actor-Critic: Off-Policy Maximum Entropy Deep Reinforcement
  Learning with a Stochastic Actor"; Ciosek et al. 2019, "Better Exploration with Optimistic
  Actor-Critic" (``mean +/- beta * std`` bounds); Wu et al. 2019 (CLT moment propagation).
"""

from __future__ import annotations

import dataclasses

from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import flax.linen as nn

from bayeslayers_jax._checks import as_float_array
from bayeslayers_jax.linen._mlp import BayesianMLP
from bayeslayers_jax.core._sampling import safe_sqrt

__all__ = ["BayesianCritic", "value_bound"]

Array = jax.Array


#: The :class:`BayesianMLP` fields a critic forwards unchanged (all but ``features``).
_MLP_FIELDS = tuple(
    f.name for f in dataclasses.fields(BayesianMLP) if f.init and f.name not in ("features", "parent", "name")
)


class BayesianCritic(nn.Module):
    r"""A Bayesian critic ``Q(state, action)`` with the output layer set up for negative values.

    ``__call__(state, action, *, map=None, rng=None)`` concatenates ``[state, action]`` on the
    last axis and returns, for ``B`` examples:

    * ``'clt'`` / ``'cltdet'`` (the default is ``'clt'``): ``(mean, var)``, both of shape
      ``(B,)``: the Gaussian moments of Q over the weight posterior. **In MAP mode ``var`` is
      an array of zeros** (not ``None`` as for a bare ``BayesianMLP``), so code that forms
      ``mean - beta * sqrt(var)`` needs no branch; ``'cltdet'`` with a deterministic input
      also gives zeros.
    * ``'bbb'`` / ``'lr'``: one sample of Q of shape ``(B,)`` (one weight or noise draw per
      call, from ``rngs={'sample': key}`` or ``rng=key``); in MAP mode the mean network's Q.
      Use :func:`~bayeslayers_jax.predictive` for its mean and variance.

    The variables are exactly those of ``BayesianMLP(tuple(features) + (1,), ...)`` (layers
    ``layers_0`` ... ``layers_{len(features)}``), so :func:`~bayeslayers_jax.update_prior`,
    porting and the training helpers treat a critic as an MLP.

    .. note::
       **Why the output layer matters.** A CLT layer with ``is_output=False`` applies the
       ReLU (CReLU) moment matching to its output, and the mean of a ReLU is never negative.
       A hand-built CLT stack whose last layer still has an activation therefore *cannot
       output a negative value*: fitted to a Q target of -100 its mean stays at 0 without
       any error (the gradient of ``E[relu]`` vanishes as its mean goes negative). Critic
       values are usually negative (costs, Pendulum's rewards), so the last layer must have
       ``is_output=True``; this class (and ``BayesianMLP``) sets it.

    Attributes:
      features: hidden widths (the output width 1 is appended), e.g. ``(256, 256)``.
      layer_type: ``'clt'`` (default), ``'cltdet'``, ``'lr'`` or ``'bbb'``.
      act: ``'relu'`` or ``'crelu'``.
      prior_mean, prior_std, bias_prior_mean, bias_prior_std, use_softplus, rng_collection,
      dtype, param_dtype: as in :class:`~bayeslayers_jax.BayesianMLP`.
      map: MAP mode; may instead be given at the call.

    Examples:
      >>> import jax, jax.numpy as jnp
      >>> from bayeslayers_jax import BayesianCritic, Ensemble, value_bound
      >>> critic = BayesianCritic((32, 32))
      >>> s, a = jnp.ones((5, 3)), jnp.zeros((5, 1))
      >>> variables = critic.init(jax.random.key(0), s, a)
      >>> mean, var = critic.apply(variables, s, a)
      >>> mean.shape, var.shape, bool(jnp.all(var > 0))
      ((5,), (5,), True)
      >>> _, var_map = critic.apply(variables, s, a, map=True)
      >>> bool(jnp.all(var_map == 0))
      True
      >>> q = Ensemble(critic, 2).apply(Ensemble(critic, 2).init(jax.random.key(1), s, a), s, a)
      >>> q[0].shape
      (2, 5)
      >>> value_bound(q, beta=-1.0).min(axis=0).shape  # pessimistic, then min over members
      (5,)
    """

    features: Sequence[int] = (256, 256)
    layer_type: str = "clt"
    act: str = "relu"
    use_bias: bool = True
    prior_mean: Any = 0.0
    prior_std: Any = 1.0
    bias_prior_mean: Any = None
    bias_prior_std: Any = None
    use_softplus: bool = False
    map: bool | None = None
    rng_collection: str = "sample"
    dtype: Any = None
    param_dtype: Any = jnp.float32
    weight_rho_init: Any = BayesianMLP.weight_rho_init
    bias_rho_init: Any = BayesianMLP.bias_rho_init

    def __post_init__(self) -> None:
        if isinstance(self.features, (int, np.integer)) or not isinstance(self.features, Sequence):
            raise TypeError(f"features must be a sequence of hidden widths, got {self.features!r}")
        super().__post_init__()

    def setup(self) -> None:
        # Every BayesianMLP field but the widths is the critic's own field of the same name.
        shared = {name: getattr(self, name) for name in _MLP_FIELDS}
        self.net = BayesianMLP(features=tuple(self.features) + (1,), **shared)
        nn.share_scope(self, self.net)  # the variables are the MLP's own (layers_0, ...)

    def __call__(
        self, state: Array, action: Array, *, map: bool | None = None, rng: Array | None = None
    ) -> Array | tuple[Array, Array]:
        """Evaluates ``Q(state, action)``.

        Args:
          state: states, shape ``(B, state_dim)`` (any leading axes, shared with ``action``).
          action: actions, shape ``(B, action_dim)``.
          map: MAP mode for this call (exclusive with the ``map`` field).
          rng: PRNG key for this call (``'bbb'``/``'lr'``).

        Returns:
          ``(mean, var)`` of shape ``(B,)`` for CLT types (``var`` zeros in MAP mode); a
          sample of shape ``(B,)`` for ``'bbb'``/``'lr'``.

        Raises:
          ValueError: if ``state`` and ``action`` differ in their leading (batch) axes or
            are scalars.
        """
        state = as_float_array("state", state)
        action = as_float_array("action", action)
        if state.ndim < 1 or action.ndim < 1 or state.shape[:-1] != action.shape[:-1]:
            raise ValueError(
                f"state and action must share their leading (batch) axes and have a feature "
                f"axis last, got state {state.shape} and action {action.shape}"
            )
        dtype = jnp.result_type(state, action)
        x = jnp.concatenate([state.astype(dtype), action.astype(dtype)], axis=-1)
        if self.net.is_clt:
            mean, var = self.net(x, map=map)
            mean = mean[..., 0]
            var = jnp.zeros_like(mean) if var is None else var[..., 0]
            return mean, var
        return self.net(x, map=map, rng=rng)[..., 0]


def value_bound(q: Any, beta: Any = 0.0) -> Array:
    r"""The optimistic (``beta > 0``) or pessimistic (``beta < 0``) value ``mean + beta * std``.

    .. math::
        Q_\beta(s, a) = \mu_Q(s, a) + \beta\,\sigma_Q(s, a)

    ``q`` is a critic's output: a ``(mean, var)`` pair (CLT critics; ``var`` may be ``None``
    or zeros in MAP mode, then the std is 0), or a single array (a sampled or a deterministic
    critic's value, std 0). The std is ``sqrt(var)`` with a finite gradient at ``var = 0``;
    a NaN variance gives NaN. Works elementwise, so ensemble outputs ``(members, B)`` keep
    their member axis (reduce it yourself, e.g. ``.min(axis=0)`` for clipped double Q).

    Args:
      q: ``(mean, var)`` or an array of values.
      beta: the number of standard deviations (a scalar or an array broadcastable to ``mean``).

    Returns:
      An array of ``mean``'s shape.

    Raises:
      ValueError: if ``var`` has a different shape from ``mean``.

    References:
      Ciosek et al. 2019, "Better Exploration with Optimistic Actor-Critic"; Kuznetsov et al.
      2020, "Controlling Overestimation Bias with Truncated Mixture of Continuous
      Distributional Quantile Critics".

    Examples:
      >>> import jax.numpy as jnp
      >>> print(value_bound((jnp.array([1.0]), jnp.array([4.0])), beta=-1.5))
      [-2.]
      >>> print(value_bound((jnp.array([1.0]), None), beta=-1.5))  # MAP: std 0
      [1.]
      >>> print(value_bound(jnp.array([3.0]), beta=2.0))  # a plain value: std 0
      [3.]
    """
    if isinstance(q, tuple):
        if len(q) != 2:
            raise ValueError(f"q must be a (mean, var) pair or an array, got a tuple of length {len(q)}")
        mean, var = q
    else:
        mean, var = q, None
    mean = as_float_array("mean", mean)
    if var is None:
        return mean
    var = as_float_array("var", var).astype(mean.dtype)
    if var.shape != mean.shape:
        raise ValueError(f"var must have mean's shape {mean.shape}, got {var.shape}")
    beta = jnp.asarray(beta, mean.dtype)
    return mean + jnp.broadcast_to(beta, mean.shape) * safe_sqrt(var)
