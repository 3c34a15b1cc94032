r"""``Ensemble``: ``size`` independent copies of any ``flax.linen`` module, run in one call.

An ensemble is a wrapper, not a new kind of layer: ``Ensemble(module, size)`` lifts
``module`` with :func:`flax.linen.vmap`, so one call runs every member vectorized (no Python
loop) and

* every variable collection (``'params'``, ``'prior'``, the sown ``'kl'``, any other) gets a
  leading *member axis* of length ``size``; the tree below it is exactly the member's own
  tree, so ``jax.tree.map(lambda a: a[i], variables)`` are member ``i``'s variables, usable
  with ``module.apply``;
* members are initialized independently (the ``'params'`` key is split per member) and draw
  independent noise: every PRNG stream passed as ``rngs=`` (``'sample'``, ``'dropout'``, ...)
  is split per member, and a key given as ``rng=`` at the call is split with
  ``jax.random.split(rng, size)``, key ``i`` going to member ``i``;
* every output leaf gets a leading member axis: a sampling model's ``y`` becomes
  ``(size, B, ...)``, a CLT model's ``(mean, var)`` becomes a pair of ``(size, B, ...)``
  arrays, and a MAP CLT model's ``(mean, None)`` stays ``(mean, None)`` with the mean stacked.

It works for this package's models (a :class:`~bayeslayers_jax.BayesianMLP`, a
:class:`~bayeslayers_jax.BayesianCritic`, a user's module built from the layers) and for plain
Flax modules (a deep ensemble of ``nn.Dense`` networks). :func:`~bayeslayers_jax.elbo_loss`,
:func:`~bayeslayers_jax.make_elbo_loss_fn`, :func:`~bayeslayers_jax.predictive`,
:func:`~bayeslayers_jax.predictive_probs`, :func:`~bayeslayers_jax.update_prior` and
:func:`~bayeslayers_jax.total_kl` know about the member axis.

References:
  Lakshminarayanan, Pritzel & Blundell 2017, "Simple and Scalable Predictive Uncertainty
  Estimation using Deep Ensembles"; Osband et al. 2016, "Deep Exploration via Bootstrapped
  DQN"; Chen et al. 2021, "Randomized Ensembled Double Q-Learning".
"""

from __future__ import annotations

from typing import Any

import jax
import flax.linen as nn
import numpy as np

__all__ = ["Ensemble", "is_ensemble", "ensemble_size"]


class Ensemble(nn.Module):
    """``size`` independent members of ``module``, vectorized with :func:`flax.linen.vmap`.

    The members' variables live at the ensemble's own root (``nn.share_scope``), stacked on a
    leading member axis: an ``Ensemble(BayesianMLP(...), 5)`` has ``params['layers_0']
    ['weight_mu']`` of shape ``(5, in, out)`` and ``prior['layers_0']['weight_std']`` of shape
    ``(5,)`` (one scalar prior per member) where the member has ``(in, out)`` and ``()``.

    Calling it as ``ensemble(*args, rng=None, **kwargs)`` calls every member as
    ``module(*args, **kwargs)``; keyword arguments (``map=True``, ``var=...``) are the same for
    every member. Positional inputs are shared by all members (``in_axes=None``, the
    default) or, with ``in_axes=0``, carry a leading member axis of length ``size`` (for
    example a different bootstrap batch per member).

    Attributes:
      module: the member (any unbound ``flax.linen`` module).
      size: the number of members (a positive int).
      in_axes: ``None`` (inputs shared) or ``0`` (inputs stacked on a member axis); an int or
        ``None`` for all positional inputs, or a tuple with one entry per positional input.

    Examples:
      >>> import jax, jax.numpy as jnp
      >>> from bayeslayers_jax import BayesianMLP, Ensemble
      >>> ens = Ensemble(BayesianMLP((16, 1), layer_type='clt'), size=4)
      >>> x = jnp.ones((8, 3))
      >>> variables = ens.init(jax.random.key(0), x)
      >>> variables['params']['layers_0']['weight_mu'].shape
      (4, 3, 16)
      >>> mean, var = ens.apply(variables, x)
      >>> mean.shape, var.shape
      ((4, 8, 1), (4, 8, 1))
      >>> bool(jnp.all(mean[0] != mean[1]))  # independently initialized members
      True
    """

    module: nn.Module
    size: int
    in_axes: Any = None

    def __post_init__(self) -> None:
        if not isinstance(self.module, nn.Module):
            raise TypeError(f"module must be a flax.linen Module, got {type(self.module).__name__}")
        if isinstance(self.size, bool) or not isinstance(self.size, (int, np.integer)) or self.size < 1:
            raise ValueError(f"size must be a positive int, got {self.size!r}")
        super().__post_init__()

    def setup(self) -> None:
        # The member's variables live at the ensemble's root: the tree is the member's own.
        nn.share_scope(self, self.module)

    def _in_axes(self, num_args: int) -> tuple[Any, ...]:
        axes = self.in_axes
        if isinstance(axes, (tuple, list)):
            if len(axes) != num_args:
                raise ValueError(
                    f"in_axes has {len(axes)} entries but the ensemble was called with "
                    f"{num_args} positional inputs"
                )
            return tuple(axes)
        return (axes,) * num_args

    def __call__(self, *args: Any, rng: jax.Array | None = None, **kwargs: Any) -> Any:
        """Runs every member on the inputs; every output leaf gets a leading member axis.

        Args:
          *args: the member's positional inputs (see ``in_axes``).
          rng: an optional PRNG key for the members' ``rng=`` argument, split into one key
            per member (``jax.random.split(rng, size)``); not passed when ``None`` (so plain
            Flax members, which take no ``rng``, work).
          **kwargs: the member's keyword arguments, the same for every member.

        Returns:
          The member's output with a leading axis of length ``size`` on every array.
        """
        keys = None if rng is None else jax.random.split(rng, self.size)

        def run_member(mdl, key, *inputs):
            extra = dict(kwargs) if key is None else {**kwargs, "rng": key}
            return mdl(*inputs, **extra)

        lifted = nn.vmap(
            run_member,
            variable_axes={True: 0},  # every collection: params, prior, kl, batch_stats, ...
            split_rngs={True: True},  # every PRNG stream: params (init), sample, dropout, ...
            in_axes=(0,) + self._in_axes(len(args)),
            out_axes=0,
            axis_size=self.size,
        )
        return lifted(self.module, keys, *args)


def is_ensemble(model: Any) -> bool:
    """Whether ``model`` is an :class:`Ensemble` (outputs and variables carry a member axis).

    Examples:
      >>> import flax.linen as nn
      >>> from bayeslayers_jax import Ensemble
      >>> is_ensemble(Ensemble(nn.Dense(1), 3)), is_ensemble(nn.Dense(1))
      (True, False)
    """
    return isinstance(model, Ensemble)


def ensemble_size(model: Any) -> int | None:
    """The number of members of an :class:`Ensemble`, ``None`` for any other model.

    Examples:
      >>> import flax.linen as nn
      >>> from bayeslayers_jax import Ensemble
      >>> ensemble_size(Ensemble(nn.Dense(1), 3)), ensemble_size(nn.Dense(1))
      (3, None)
    """
    return int(model.size) if isinstance(model, Ensemble) else None


