r"""``LearnedNoise`` for NNX: any model plus a trainable observation-noise level per output.

The NNX twin of :class:`bayeslayers_jax.LearnedNoise` (see :mod:`bayeslayers_jax.linen._noise`
for the parametrization and the double-counting trap): the wrapper holds the model as its
attribute ``model`` and, beside it, the ``nnx.Param`` ``noise_log_std`` of shape ``(D,)``,

.. math::
    s^2 = \exp(2\,\mathtt{noise\_log\_std}),

trained by the same ``nnx.Optimizer(..., wrt=nnx.Param)`` as the weights and read by
:func:`~bayeslayers_jax.nnx.elbo_loss` (:func:`learned_noise_var`). An ensemble of noisy
members is ``Ensemble(lambda r: LearnedNoise(make(r), D), M, rngs=...)``.

The state paths are ``model/...`` and ``noise_log_std``; the linen wrapper shares its
model's scope (``layers_0/...`` and ``noise_log_std``), so linen variables load with
:func:`~bayeslayers_jax.nnx.from_linen` after nesting everything but ``noise_log_std``
under ``'model'``.

References:
  Lakshminarayanan, Pritzel & Blundell 2017, "Simple and Scalable Predictive Uncertainty
  Estimation using Deep Ensembles"; Kendall & Gal 2017, "What Uncertainties Do We Need in
  Bayesian Deep Learning for Computer Vision?".
"""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from bayeslayers_jax import _layer_core as core
from bayeslayers_jax._checks import check_concrete_real
from bayeslayers_jax.nnx._ensemble import Ensemble

__all__ = ["NOISE_PARAM", "LearnedNoise", "has_learned_noise", "learned_noise_var"]

#: Name of the learned-noise parameter.
NOISE_PARAM = "noise_log_std"


def _out_features(model: nnx.Module) -> int | None:
    layers = getattr(model, "layers", None)
    if layers:
        return getattr(layers[-1], "out_features", None)
    return getattr(model, "out_features", None)


class LearnedNoise(nnx.Module):
    r"""``model`` plus a trainable noise level per output, ``noise_log_std`` (NNX).

    Returns ``model``'s output unchanged and passes every argument through (``map=``,
    ``rng=``, ``rngs=``, ``var``); ``nnx.view(noisy, map=True)`` reaches the model's layers.

    Args:
      model: an NNX module returning an array or ``(mean, var)``; not an
        :class:`~bayeslayers_jax.nnx.Ensemble` (wrap its member instead).
      out_features: ``D``, the output's last axis; ``None``: the model's own (the last
        layer's ``out_features`` of a :class:`~bayeslayers_jax.nnx.BayesianMLP`, or the
        model's ``out_features``).
      init_std: the initial noise std (``> 0``).
      param_dtype: dtype of ``noise_log_std``.

    Examples:
      >>> import jax.numpy as jnp
      >>> from flax import nnx
      >>> from bayeslayers_jax.nnx import BayesianMLP
      >>> from bayeslayers_jax.nnx._noise import LearnedNoise, learned_noise_var
      >>> noisy = LearnedNoise(BayesianMLP(3, (16, 1), layer_type='clt', rngs=nnx.Rngs(0)), init_std=0.5)
      >>> noisy.noise_log_std.shape
      (1,)
      >>> print(learned_noise_var(noisy).round(4))  # 0.5 ** 2
      [0.25]
      >>> mean, var = noisy(jnp.ones((4, 3)))
      >>> mean.shape
      (4, 1)
    """

    def __init__(
        self, model: nnx.Module, out_features: int | None = None, *, init_std: float = 1.0,
        param_dtype: Any = jnp.float32,
    ) -> None:
        if isinstance(model, Ensemble):
            raise TypeError(
                "LearnedNoise(Ensemble(...)) is not supported: wrap the member instead, "
                "Ensemble(lambda rngs: LearnedNoise(make(rngs)), size, rngs=...), so every "
                "member learns its own noise"
            )
        if not isinstance(model, nnx.Module):
            raise TypeError(f"model must be a flax.nnx Module, got {type(model).__name__}")
        check_concrete_real("init_std", init_std, "positive")
        if out_features is None:
            out_features = _out_features(model)
            if out_features is None:
                raise ValueError(
                    f"out_features is needed: the output width of a {type(model).__name__} is unknown"
                )
        core.check_features(out_features, "out_features")
        self.model = model
        self.noise_log_std = nnx.Param(
            jnp.full((int(out_features),), math.log(float(init_std)), param_dtype)
        )

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """``model(*args, **kwargs)``, unchanged."""
        return self.model(*args, **kwargs)


def has_learned_noise(model: Any) -> bool:
    """Whether ``model`` is a :class:`LearnedNoise` or an ``Ensemble`` of them.

    Examples:
      >>> from flax import nnx
      >>> from bayeslayers_jax.nnx import BayesianMLP
      >>> has_learned_noise(BayesianMLP(2, (1,), rngs=nnx.Rngs(0)))
      False
    """
    if isinstance(model, Ensemble):
        model = model.members
    return isinstance(model, LearnedNoise)


def learned_noise_var(model: Any) -> jax.Array | None:
    r"""The learned noise variance ``exp(2 * noise_log_std)``, or ``None`` without one.

    Returns:
      ``None`` if ``model`` has no learned noise; else shape ``(D,)``, or ``(M, D)`` for an
      :class:`~bayeslayers_jax.nnx.Ensemble` of ``M`` members.

    Examples:
      >>> from flax import nnx
      >>> from bayeslayers_jax.nnx import BayesianMLP, Ensemble
      >>> ens = Ensemble(lambda r: LearnedNoise(BayesianMLP(4, (8, 2), rngs=r)), 3, rngs=nnx.Rngs(0))
      >>> learned_noise_var(ens).shape
      (3, 2)
    """
    if not has_learned_noise(model):
        return None
    target = model.members if isinstance(model, Ensemble) else model
    return jnp.exp(2 * target.noise_log_std[...])
