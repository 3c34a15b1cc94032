r"""The ``flax.linen`` front end: Bayesian dense and conv layers, MLP, ensembles, critics, ELBO.

Each module only gathers its parameters, its prior and its PRNG key and then calls the
pure functions of this package (:mod:`bayeslayers_jax.core`,
:mod:`bayeslayers_jax.core`, :mod:`bayeslayers_jax.core`, :mod:`bayeslayers_jax.core`).

Conventions (shared by every layer here):

* Parameters live in the ``'params'`` collection: ``weight_mu`` and ``weight_rho`` of shape
  ``(in_features, features)`` (Flax layout; PyTorch/ObjectRL stores ``(out, in)``) and
  ``bias_mu``, ``bias_rho`` of shape ``(features,)``. The standard deviation is
  ``exp(rho)``, or ``softplus(rho)`` with ``use_softplus=True``.
* Initial values follow the reference (and ``torch.nn.Linear``): ``weight_mu`` is
  kaiming-uniform with ``a = sqrt(5)``, i.e. ``U(-1/sqrt(in), 1/sqrt(in))``; ``bias_mu`` is
  ``U(-1/sqrt(in), 1/sqrt(in))``; every ``rho`` is ``-4.6`` (std about ``0.01``).
* The Gaussian prior lives in the non-trainable ``'prior'`` collection as ``weight_mean``,
  ``weight_std``, ``bias_mean`` and ``bias_std``; each is a scalar or an array of the
  weight's (bias's) shape. Replacing that subtree is the reference's ``update_prior``.
* ``layer.apply(variables, method='kl')`` returns the closed-form KL divergence of the
  layer; during every forward pass the layer also sows it into the ``'kl'`` collection, so
  ``apply(..., mutable=['kl'])`` collects a whole model's KL and :func:`total_kl` sums it.
* ``map`` (maximum a posteriori: means only, no noise, never a key) is set on the module or
  at the call, like ``flax.linen.Dropout.deterministic``; when neither sets it the layer
  samples (the reference's default).
* Sampling keys come from ``rng=`` at the call or from ``rngs={'sample': key}`` at
  ``apply`` (stream name set by ``rng_collection``), and the two give different noise for
  the same ``key``:

  - ``rng=key`` uses ``key`` itself: :class:`BBBLinear` draws its weights (and bias, as
    the kernel's last row) in one call ``sample_weights(key, ...)`` and
    :class:`LRLinear` calls ``local_reparameterization(key, ...)``, so the pure functions
    reproduce the layer exactly;
  - the stream uses ``self.make_rng('sample')``: the key Flax derives from ``key``, the
    layer's path in the model and the number of keys already drawn from that stream in this
    ``apply``. So every layer of a model gets its own noise from one ``key``, and a layer
    applied alone with ``rngs={'sample': key}`` gives the noise of ``rng=k`` with ``k`` the
    key a top-level module's ``make_rng('sample')`` returns for ``key``.

  Either way the same key (and, for the stream, the same model) gives the same noise,
  which is the JAX form of the reference's ``manual_reset``; a new key
  (``jax.random.split``) gives a fresh draw. A sampling call with neither raises a
  ``ValueError``; the layer never falls back to another stream. Only during ``init`` does
  a missing key not raise: the layer then returns its mean (MAP) output, because ``init``
  only needs the shapes.

Examples:
    >>> import jax, jax.numpy as jnp
    >>> from bayeslayers_jax import LRLinear
    >>> x = jnp.ones((2, 3))
    >>> layer = LRLinear(4)
    >>> variables = layer.init(jax.random.key(0), x)
    >>> key = jax.random.key(1)
    >>> y = layer.apply(variables, x, rng=key)
    >>> y.shape
    (2, 4)
    >>> bool(jnp.all(y == layer.apply(variables, x, rng=key)))  # same key, same noise
    True
    >>> bool(jnp.all(y == layer.apply(variables, x, rngs={'sample': key})))  # derived key
    False
"""

from bayeslayers_jax.linen._bayesianize import Bayesianized as Bayesianized
from bayeslayers_jax.linen._bayesianize import MOPED_DELTA as MOPED_DELTA
from bayeslayers_jax.linen._bayesianize import bayesianize as bayesianize
from bayeslayers_jax.linen._linear import BBBLinear as BBBLinear
from bayeslayers_jax.linen._linear import CLTLinear as CLTLinear
from bayeslayers_jax.linen._linear import CLTLinearDet as CLTLinearDet
from bayeslayers_jax.linen._linear import FlipoutLinear as FlipoutLinear
from bayeslayers_jax.linen._linear import LRLinear as LRLinear
from bayeslayers_jax.linen._linear import crelu as crelu
from bayeslayers_jax.linen._conv import BBBConv as BBBConv
from bayeslayers_jax.linen._conv import CLTConv as CLTConv
from bayeslayers_jax.linen._conv import CLTConvDet as CLTConvDet
from bayeslayers_jax.linen._conv import FlipoutConv as FlipoutConv
from bayeslayers_jax.linen._conv import LRConv as LRConv
from bayeslayers_jax.linen._mlp import BayesianMLP as BayesianMLP
from bayeslayers_jax.linen._mlp import LAYER_TYPES as LAYER_TYPES
from bayeslayers_jax.linen._ensemble import Ensemble as Ensemble
from bayeslayers_jax.linen._ensemble import ensemble_size as ensemble_size
from bayeslayers_jax.linen._ensemble import is_ensemble as is_ensemble
from bayeslayers_jax.linen._critic import BayesianCritic as BayesianCritic
from bayeslayers_jax.linen._critic import value_bound as value_bound
from bayeslayers_jax.linen._noise import LearnedNoise as LearnedNoise
from bayeslayers_jax.linen._noise import NOISE_PARAM as NOISE_PARAM
from bayeslayers_jax.linen._noise import has_learned_noise as has_learned_noise
from bayeslayers_jax.linen._noise import learned_noise_var as learned_noise_var
from bayeslayers_jax.linen._variables import member as member
from bayeslayers_jax.linen._variables import total_kl as total_kl
from bayeslayers_jax.linen._variables import update_prior as update_prior
from bayeslayers_jax.linen._variables import without_kl as without_kl
from bayeslayers_jax.linen._objectives import elbo_loss as elbo_loss
from bayeslayers_jax.linen._objectives import make_elbo_loss_fn as make_elbo_loss_fn

__all__ = [
    "BBBLinear",
    "CLTLinear",
    "CLTLinearDet",
    "FlipoutLinear",
    "LRLinear",
    "crelu",
    "BBBConv",
    "CLTConv",
    "CLTConvDet",
    "FlipoutConv",
    "LRConv",
    "LAYER_TYPES",
    "BayesianMLP",
    "Ensemble",
    "ensemble_size",
    "is_ensemble",
    "BayesianCritic",
    "value_bound",
    "NOISE_PARAM",
    "LearnedNoise",
    "has_learned_noise",
    "learned_noise_var",
    "member",
    "total_kl",
    "update_prior",
    "without_kl",
    "elbo_loss",
    "make_elbo_loss_fn",
    "bayesianize",
    "Bayesianized",
    "MOPED_DELTA",
]
