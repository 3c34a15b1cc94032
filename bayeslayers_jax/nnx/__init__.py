r"""Bayesian linear layers as ``flax.nnx`` modules: the NNX twins of the ``flax.linen`` layers.

The same layers as :mod:`bayeslayers_jax.linen`, written
the NNX way (``Layer(in_features, out_features, *, rngs, ...)``, state held by the module),
and nothing else: every check, prior rule, error, KL and forward pass is the one of
:mod:`bayeslayers_jax._layer_core` that the linen layers call, so the two front ends give
the same numbers for the same parameters and raise the same errors for the same bad input.

* **Parameters** are ``nnx.Param`` attributes ``weight_mu``, ``weight_rho`` of shape
  ``(in_features, out_features)`` (Flax layout) and ``bias_mu``, ``bias_rho`` of shape
  ``(out_features,)``, initialized from the same distributions as the linen layers
  (kaiming-uniform means, ``U(+-1/sqrt(in))`` bias, ``rho = -4.6``), with keys from the
  ``'params'`` stream of ``rngs``.
* **The prior** lives in :class:`Prior` variables ``weight_mean``, ``weight_std``,
  ``bias_mean``, ``bias_std`` (a scalar or an array of the parameter's shape), a type of its
  own, so ``nnx.Optimizer(model, tx, wrt=nnx.Param)`` and ``nnx.grad`` leave it alone;
  ``layer.weight_std.set_value(...)`` is the reference's ``update_prior``.
* **MAP mode** (means only, never a key) is the ``map`` attribute or the ``map=`` call
  argument, like ``nnx.Dropout.deterministic``: the call argument wins over the attribute
  (NNX's rule; linen's ``merge_param`` raises when both are set), ``None`` in both means
  sampling, and ``nnx.view(model, map=True)`` switches a whole model.
* **KL**: ``layer.kl()`` is the closed-form ``KL(q || p)`` of a layer; :func:`total_kl`
  sums it over a model (each layer once, an :class:`Ensemble`'s members included).

**Keys, and when NNX and linen give the same noise.** A sampling call takes its key from,
in this order:

1. ``rng=key`` at the call: ``key`` itself, exactly as the linen layer's ``rng=key``, so
   the same parameters and the same key give **bit-identical** outputs in both front ends
   (:class:`BayesianMLP` splits it per layer with ``jax.random.split(rng, n_layers)`` in
   both, and :class:`Ensemble` per member with ``jax.random.split(rng, size)`` as the linen
   :class:`~bayeslayers_jax.Ensemble`);
2. ``rngs=`` at the call (an ``nnx.Rngs`` with a ``'sample'`` stream, or an
   ``nnx.RngStream``): one key drawn from it and used as in 1;
3. the layer's own stream: built as ``rngs['sample'].fork()`` when the ``rngs`` given at
   construction has a ``'sample'`` stream (``nnx.Rngs(params=0, sample=1)``), as
   ``nnx.Dropout`` does; each call draws ``fold_in(stream key, count)`` and increments the
   count (state carried by ``nnx.jit``).

Stream keys are *derived* keys, in both front ends, and the derivations differ: linen's
``rngs={'sample': key}`` hashes the layer's path in the model, NNX folds in the stream's
call count. So a stream gives reproducible noise within a front end (the same seeds give
the same draws), but only ``rng=key`` reproduces linen's noise. A ``'sample'`` stream must
be named: an ``nnx.Rngs(0)`` (only a ``'default'`` stream) gives the layer no stream of its
own, and a sampling call without a key raises ``ValueError`` rather than fall back silently
to another stream.

**Interop.** :func:`from_linen` loads a linen layer's or ``BayesianMLP``'s variables
(``{'params': ..., 'prior': ...}``, e.g. from a checkpoint or
:func:`~bayeslayers_jax.port_objectrl_mlp`) into the NNX twin, :func:`to_linen` gives
them back; the NNX state paths are the linen ones (a ``BayesianMLP``'s layers are the
attributes ``layers_0, layers_1, ...``).

**Your own model**: :func:`bayesianize` returns a copy of an NNX model whose ``nnx.Linear``
and ``nnx.Conv`` layers are this module's Bayesian layers (MOPED from its kernels included).

**Training** with ``nnx.Optimizer`` / ``nnx.jit`` / ``nnx.value_and_grad``:
:func:`elbo_loss` is :func:`bayeslayers_jax.elbo_loss` for NNX models (the same likelihoods
and normalization, through :func:`~bayeslayers_jax.elbo_from_outputs`).

``import bayeslayers_jax`` does not import this module (nor ``flax.nnx``);
``import bayeslayers_jax.nnx`` does.

Examples:
    >>> import jax, jax.numpy as jnp
    >>> from flax import nnx
    >>> from bayeslayers_jax.nnx import LRLinear
    >>> layer = LRLinear(3, 4, rngs=nnx.Rngs(params=0, sample=1))
    >>> x = jnp.ones((2, 3))
    >>> layer(x).shape  # noise from the layer's own 'sample' stream
    (2, 4)
    >>> key = jax.random.key(2)
    >>> bool(jnp.all(layer(x, rng=key) == layer(x, rng=key)))  # same key, same noise
    True
    >>> bool(jnp.all(layer(x, map=True) == x @ layer.weight_mu[...] + layer.bias_mu[...]))
    True
"""

from bayeslayers_jax.nnx._conv import BBBConv as BBBConv
from bayeslayers_jax.nnx._conv import CLTConv as CLTConv
from bayeslayers_jax.nnx._conv import CLTConvDet as CLTConvDet
from bayeslayers_jax.nnx._conv import FlipoutConv as FlipoutConv
from bayeslayers_jax.nnx._conv import LRConv as LRConv
from bayeslayers_jax.nnx._critic import BayesianCritic as BayesianCritic
from bayeslayers_jax.nnx._linear import FlipoutLinear as FlipoutLinear
from bayeslayers_jax.nnx._noise import LearnedNoise as LearnedNoise
from bayeslayers_jax.nnx._linear import BBBLinear as BBBLinear
from bayeslayers_jax.nnx._linear import CLTLinear as CLTLinear
from bayeslayers_jax.nnx._linear import CLTLinearDet as CLTLinearDet
from bayeslayers_jax.nnx._linear import LAYER_TYPES as LAYER_TYPES
from bayeslayers_jax.nnx._linear import LRLinear as LRLinear
from bayeslayers_jax.nnx._linear import Prior as Prior
from bayeslayers_jax.nnx._mlp import BayesianMLP as BayesianMLP
from bayeslayers_jax.nnx._ensemble import Ensemble as Ensemble
from bayeslayers_jax.nnx._ensemble import total_kl as total_kl
from bayeslayers_jax.nnx._objectives import elbo_loss as elbo_loss
from bayeslayers_jax.nnx._interop import from_linen as from_linen
from bayeslayers_jax.nnx._interop import to_linen as to_linen
from bayeslayers_jax.nnx._bayesianize import MomentPropagated as MomentPropagated
from bayeslayers_jax.nnx._bayesianize import bayesianize as bayesianize

__all__ = [
    "FlipoutLinear",
    "BBBConv",
    "LRConv",
    "FlipoutConv",
    "CLTConv",
    "CLTConvDet",
    "BayesianCritic",
    "LearnedNoise",
    "Prior",
    "BBBLinear",
    "LRLinear",
    "CLTLinear",
    "CLTLinearDet",
    "LAYER_TYPES",
    "BayesianMLP",
    "Ensemble",
    "total_kl",
    "elbo_loss",
    "from_linen",
    "to_linen",
    "bayesianize",
    "MomentPropagated",
]
