r"""Observation noise: a learned noise level for any model, and its recalibration on held-out data.

**Learned noise.** :class:`LearnedNoise` wraps any model (a :class:`~bayeslayers_jax.BayesianMLP`
of any layer type, a user's module) and adds one trainable parameter per output,
``noise_log_std`` (shape ``(D,)``), in the model's own ``'params'`` collection, beside its
weights. So ``optax`` updates it like any weight, with no special code, and
:func:`~bayeslayers_jax.elbo_loss` and :func:`~bayeslayers_jax.predictive` read it from the
variables (:func:`learned_noise_var`). The parametrization is the log standard deviation,

.. math::
    s^2 = \exp(2\,\mathtt{noise\_log\_std}),

unconstrained (any real value is a valid noise level, no projection or clipping), and an
Adam step changes the std by a relative amount, whatever the scale of the targets. It is a
point estimate (no prior, no KL): the noise is a hyperparameter fitted by maximizing the
ELBO. For an :class:`~bayeslayers_jax.Ensemble`, wrap the member,
``Ensemble(LearnedNoise(model), M)``: every member learns its own noise (the deep-ensemble
recipe of Lakshminarayanan et al. 2017).

**The double-counting trap.** Maximizing the *expected* log-likelihood of the ELBO over the
noise gives, for a Gaussian likelihood,

.. math::
    \hat s^2 = \frac1N\sum_i \mathbb E_q\big[(y_i - f(x_i))^2\big]
    = \frac1N\sum_i \big[(y_i - \bar f(x_i))^2 + \mathrm{Var}_q[f(x_i)]\big],

the squared residual *plus the epistemic variance* on the training set. The predictive
variance :math:`\mathrm{Var}_q[f(x)] + \hat s^2` then adds the epistemic variance a second
time, so the predictive intervals are too wide (a real case: learned noise std 58 against a
test RMSE of 57 on scikit-learn's diabetes data, 98% coverage of nominal 95% intervals).
The learned noise is right for *training*; to *report* calibrated intervals, refit the noise
on a held-out validation split by maximizing the validation likelihood of the full
predictive :math:`\mathcal N(\bar f(x), \mathrm{Var}_q[f(x)] + s^2)` (:func:`fit_noise_var`,
or :func:`~bayeslayers_jax.calibrated_noise_var` for a model) and pass it to
:func:`~bayeslayers_jax.predictive` as ``noise_var``. The validation data are independent of
the weights, so their residuals measure the noise the predictive is missing, not a part of
the epistemic variance already counted.

References:
  Lakshminarayanan, Pritzel & Blundell 2017, "Simple and Scalable Predictive Uncertainty
  Estimation using Deep Ensembles"; Kendall & Gal 2017, "What Uncertainties Do We Need in
  Bayesian Deep Learning for Computer Vision?"; Kuleshov, Fenner & Ermon 2018, "Accurate
  Uncertainties for Deep Learning Using Calibrated Regression" (recalibration on held-out data).
"""

from __future__ import annotations

import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from bayeslayers_jax._checks import check_concrete_real
from bayeslayers_jax.linen._ensemble import Ensemble, is_ensemble

__all__ = ["NOISE_PARAM", "LearnedNoise", "has_learned_noise", "learned_noise_var"]

#: Name of the learned-noise parameter in the ``'params'`` collection.
NOISE_PARAM = "noise_log_std"


class LearnedNoise(nn.Module):
    r"""``model`` plus a trainable observation-noise level per output (``noise_log_std``).

    The wrapper returns ``model``'s output unchanged (a sampled output, or a CLT model's
    ``(mean, var)``), passes every argument through (``map=``, ``rng=``, ``var=``), and
    shares ``model``'s variable tree (``nn.share_scope``): the parameters are the model's
    own plus ``params['noise_log_std']`` of shape ``(D,)`` (``D`` = the output's last axis),
    so the noise is trained by the same optimizer as the weights, and the noise variance is
    ``exp(2 * noise_log_std)``. See the module docstring for the parametrization and for the
    double-counting trap.

    Attributes:
      model: the network (any ``flax.linen`` module returning an array or ``(mean, var)``);
        not an :class:`~bayeslayers_jax.Ensemble` (wrap its member instead).
      init_std: the initial noise std (``> 0``; 1 suits standardized targets).
      param_dtype: dtype of ``noise_log_std``.

    Examples:
      >>> import jax, jax.numpy as jnp
      >>> from bayeslayers_jax import BayesianMLP, LearnedNoise, learned_noise_var
      >>> model = LearnedNoise(BayesianMLP((16, 1), layer_type='clt'), init_std=0.5)
      >>> x = jnp.ones((4, 3))
      >>> v = model.init(jax.random.key(0), x)
      >>> v['params']['noise_log_std'].shape, sorted(v['params'])[:2]
      ((1,), ['layers_0', 'layers_1'])
      >>> print(learned_noise_var(model, v).round(4))  # 0.5 ** 2
      [0.25]
      >>> mean, var = model.apply(v, x)  # the wrapped model's output, unchanged
      >>> mean.shape
      (4, 1)
    """

    model: nn.Module
    init_std: float = 1.0
    param_dtype: Any = jnp.float32

    def __post_init__(self) -> None:
        if isinstance(self.model, Ensemble):
            raise TypeError(
                "LearnedNoise(Ensemble(...)) is not supported: wrap the member instead, "
                "Ensemble(LearnedNoise(model), size), so every member learns its own noise"
            )
        if not isinstance(self.model, nn.Module):
            raise TypeError(f"model must be a flax.linen Module, got {type(self.model).__name__}")
        check_concrete_real("init_std", self.init_std, "positive")
        super().__post_init__()

    def setup(self) -> None:
        nn.share_scope(self, self.model)

    @nn.compact
    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        out = self.model(*args, **kwargs)
        ref = out[0] if isinstance(out, tuple) else out
        init = nn.initializers.constant(math.log(float(self.init_std)))
        self.param(NOISE_PARAM, init, tuple(jnp.shape(ref))[-1:], self.param_dtype)
        return out


def has_learned_noise(model: Any) -> bool:
    """Whether ``model`` is a :class:`LearnedNoise` or an ``Ensemble`` of one.

    Examples:
      >>> from bayeslayers_jax import BayesianMLP, Ensemble, LearnedNoise
      >>> mlp = BayesianMLP((1,))
      >>> has_learned_noise(mlp), has_learned_noise(Ensemble(LearnedNoise(mlp), 2))
      (False, True)
    """
    if is_ensemble(model):
        model = model.module
    return isinstance(model, LearnedNoise)


def learned_noise_var(model: Any, variables: Any) -> jax.Array | None:
    r"""The learned noise variance ``exp(2 * noise_log_std)`` of ``model``, or ``None``.

    Args:
      model: any model; only a :class:`LearnedNoise` (or an ``Ensemble`` of one) has a
        learned noise.
      variables: its variables (with ``'params'``).

    Returns:
      ``None`` if the model has no learned noise; else an array of shape ``(D,)`` (one
      variance per output), or ``(M, D)`` for an ensemble of ``M`` members.

    Examples:
      >>> import jax, jax.numpy as jnp
      >>> from bayeslayers_jax import BayesianMLP, Ensemble, LearnedNoise
      >>> ens = Ensemble(LearnedNoise(BayesianMLP((8, 2))), 3)
      >>> v = ens.init(jax.random.key(0), jnp.ones((1, 4)))
      >>> learned_noise_var(ens, v).shape
      (3, 2)
    """
    if not has_learned_noise(model):
        return None
    try:
        log_std = variables["params"][NOISE_PARAM]
    except (KeyError, TypeError):
        raise ValueError(
            f"variables of a LearnedNoise model must hold params['{NOISE_PARAM}']; got params "
            f"with keys {sorted(variables.get('params', {}))}"
        ) from None
    return jnp.exp(2 * jnp.asarray(log_std))
