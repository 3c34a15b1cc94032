r"""``BayesianCritic`` for NNX: a Bayesian Q-function head ``Q(s, a)`` (twin of the linen critic).

:class:`BayesianCritic` is a :class:`~bayeslayers_jax.nnx.BayesianMLP` of input width
``state_dim + action_dim``, hidden widths ``features`` and output width 1 (the output layer's
``is_output`` set), called on ``(state, action)``: it concatenates them on the last axis and
drops the trailing unit axis. Its layers are the attributes ``layers_0, ...``, the paths of
the linen critic's variables, so :func:`~bayeslayers_jax.nnx.from_linen` loads them as they
are. :func:`~bayeslayers_jax.value_bound` forms ``mean + beta * std`` from its output.

References:
  Haarnoja et al. 2018, "Soft Actor-Critic"; Ciosek et al. 2019, "Better Exploration with
  Optimistic Actor-Critic"; Wu et al. 2019 (CLT moment propagation).
"""

from __future__ import annotations

from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from bayeslayers_jax import _layer_core as core
from bayeslayers_jax._checks import as_float_array
from bayeslayers_jax.nnx._mlp import BayesianMLP

__all__ = ["BayesianCritic"]

Array = jax.Array


class BayesianCritic(BayesianMLP):
    r"""A Bayesian critic ``Q(state, action)`` with the output layer set up for negative values.

    Returns, for ``B`` examples, as the linen :class:`bayeslayers_jax.BayesianCritic`:
    ``(mean, var)`` of shape ``(B,)`` for ``'clt'`` (the default) and ``'cltdet'``, **with
    ``var`` zeros in MAP mode** (not ``None``); one sample of shape ``(B,)`` for ``'bbb'`` /
    ``'lr'`` (the mean network's value in MAP mode). The last layer has ``is_output=True``:
    a CLT layer with the ReLU moment matching on its output could never give a negative Q.

    Args:
      state_dim, action_dim: the widths of the state and the action.
      features: hidden widths (the output width 1 is appended), e.g. ``(256, 256)``.
      layer_type: ``'clt'`` (default), ``'cltdet'``, ``'lr'`` or ``'bbb'``.
      rngs: ``nnx.Rngs`` (``'params'``; a ``'sample'`` stream gives every layer a stream).
      **fields: every other field of :class:`~bayeslayers_jax.nnx.BayesianMLP` (``act``,
        priors, ``use_softplus``, ``map``, ``rng_collection``, ``dtype``, ``param_dtype``,
        initializers).

    Examples:
      >>> import jax.numpy as jnp
      >>> from flax import nnx
      >>> from bayeslayers_jax.nnx._critic import BayesianCritic
      >>> critic = BayesianCritic(3, 1, (32, 32), rngs=nnx.Rngs(0))
      >>> s, a = jnp.ones((5, 3)), jnp.zeros((5, 1))
      >>> mean, var = critic(s, a)
      >>> mean.shape, var.shape, bool(jnp.all(var > 0))
      ((5,), (5,), True)
      >>> _, var_map = critic(s, a, map=True)
      >>> bool(jnp.all(var_map == 0))
      True
    """

    def __init__(
        self,
        state_dim: int,
        action_dim: int,
        features: Sequence[int] = (256, 256),
        *,
        layer_type: str = "clt",
        rngs: nnx.Rngs,
        **fields: Any,
    ) -> None:
        core.check_features(state_dim, "state_dim")
        core.check_features(action_dim, "action_dim")
        if isinstance(features, (int, np.integer)) or not isinstance(features, Sequence):
            raise TypeError(f"features must be a sequence of hidden widths, got {features!r}")
        super().__init__(
            int(state_dim) + int(action_dim), tuple(features) + (1,), layer_type=layer_type, rngs=rngs, **fields
        )
        self.state_dim, self.action_dim = int(state_dim), int(action_dim)

    def __call__(  # type: ignore[override]
        self,
        state: Array,
        action: Array,
        *,
        map: bool | None = None,
        rng: Array | None = None,
        rngs: Any = None,
    ) -> Array | tuple[Array, Array]:
        """Evaluates ``Q(state, action)``.

        Args:
          state: states ``(B, state_dim)`` (any leading axes, shared with ``action``).
          action: actions ``(B, action_dim)``.
          map: MAP mode for this call (wins over the attributes).
          rng: PRNG key for this call (``'bbb'``/``'lr'``; split per layer as in linen).
          rngs: ``nnx.Rngs``/``nnx.RngStream`` to draw this call's key from.

        Returns:
          ``(mean, var)`` of shape ``(B,)`` for CLT types (``var`` zeros in MAP mode); a
          sample of shape ``(B,)`` for ``'bbb'``/``'lr'``.

        Raises:
          ValueError: if ``state`` and ``action`` differ in their leading axes or are scalars.
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
        if self.is_clt:
            mean, var = super().__call__(x, map=map)
            mean = mean[..., 0]
            var = jnp.zeros_like(mean) if var is None else var[..., 0]
            return mean, var
        return super().__call__(x, map=map, rng=rng, rngs=rngs)[..., 0]
