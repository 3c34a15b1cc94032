r"""Bayesian linear layers as ``flax.nnx`` modules: the NNX twins of the ``flax.linen`` layers.

The same layers as :mod:`bayeslayers_jax.layers` and :mod:`bayeslayers_jax.mlp`, written
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

**Training** with ``nnx.Optimizer`` / ``nnx.jit`` / ``nnx.value_and_grad``:
:func:`elbo_loss` is :func:`bayeslayers_jax.elbo_loss` for NNX models (the same likelihoods
and normalization, through :func:`~bayeslayers_jax.objectives.elbo_from_outputs`).

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

from __future__ import annotations

from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from flax import traverse_util
import flax.linen as nn

from bayeslayers_jax import _layer_core as core
from bayeslayers_jax import mlp as _mlp
from bayeslayers_jax import objectives as _objectives
from bayeslayers_jax._layer_core import INIT_RHO
from bayeslayers_jax.layers import default_weight_mu_init

__all__ = [
    "Prior",
    "BBBLinear",
    "LRLinear",
    "CLTLinear",
    "CLTLinearDet",
    "BayesianMLP",
    "Ensemble",
    "LAYER_TYPES",
    "total_kl",
    "elbo_loss",
    "from_linen",
    "to_linen",
]

Array = jax.Array
Dtype = Any
Initializer = Callable[..., Array]


def _remedy(rng_collection: str) -> str:
    """How an NNX layer takes a stream key, for :func:`~bayeslayers_jax._layer_core.missing_key_error`."""
    return (
        f"rngs with a '{rng_collection}' stream (nnx.Rngs(params=..., {rng_collection}=...)) "
        "at construction or at the call"
    )



class Prior(nnx.Variable):
    """The Gaussian prior of a layer's parameters: a variable type of its own, never trained.

    Not an ``nnx.Param``, so ``nnx.Optimizer(model, tx, wrt=nnx.Param)`` and ``nnx.grad``
    skip it; ``nnx.state(model, Prior)`` selects every prior of a model.

    Examples:
        >>> from flax import nnx
        >>> from bayeslayers_jax.nnx import BBBLinear, Prior
        >>> layer = BBBLinear(3, 2, prior_std=0.5, rngs=nnx.Rngs(0))
        >>> sorted(nnx.to_pure_dict(nnx.state(layer, Prior)))
        ['bias_mean', 'bias_std', 'weight_mean', 'weight_std']
        >>> print(layer.weight_std[...])
        0.5
    """


def _first(*values: Any) -> Any:
    """The first value that is not ``None`` (``None`` if all are)."""
    return next((v for v in values if v is not None), None)


class _MapFlag(nnx.Module):
    """The ``map`` attribute of the layers and the MLP: ``nnx.view(model, map=...)`` sets it."""

    def set_view(self, map: bool | None = None) -> None:
        """Sets ``map`` for ``nnx.view(model, map=...)`` (``None`` leaves it unchanged).

        Examples:
            >>> import jax.numpy as jnp
            >>> from flax import nnx
            >>> from bayeslayers_jax.nnx import BBBLinear
            >>> layer = nnx.view(BBBLinear(3, 2, rngs=nnx.Rngs(0)), map=True)
            >>> layer.map, layer(jnp.ones((1, 3))).shape  # MAP: no key needed
            (True, (1, 2))
        """
        if map is not None:
            self.map = map


class _BayesianLinear(_MapFlag):
    """Construction, parameters, priors and keys shared by the NNX layers (private)."""

    # Layers with deterministic weights (CLTLinearDet) override this.
    _has_std = True
    # The affine map of the layer family.
    _op = core.DENSE

    def __init__(
        self,
        in_features: int,
        out_features: int,
        *,
        use_bias: bool = True,
        prior_mean: Any = 0.0,
        prior_std: Any = 1.0,
        bias_prior_mean: Any = None,
        bias_prior_std: Any = None,
        use_softplus: bool = False,
        map: bool | None = None,
        rng_collection: str = "sample",
        dtype: Dtype | None = None,
        param_dtype: Dtype = jnp.float32,
        weight_mu_init: Initializer = default_weight_mu_init,
        weight_rho_init: Initializer = nn.initializers.constant(INIT_RHO),
        bias_mu_init: Initializer | None = None,
        bias_rho_init: Initializer = nn.initializers.constant(INIT_RHO),
        act: str | None = None,
        is_input: bool = False,
        is_output: bool = False,
        rngs: nnx.Rngs,
    ) -> None:
        core.check_features(in_features, "in_features")
        core.check_features(out_features, "out_features")
        core.check_rng_collection(rng_collection)
        core.check_layer_config(
            features=out_features,
            use_bias=use_bias,
            prior_mean=prior_mean,
            prior_std=prior_std,
            bias_prior_mean=bias_prior_mean,
            bias_prior_std=bias_prior_std,
            map=map,
            has_std=self._has_std,
            act=act,
        )
        if not isinstance(rngs, nnx.Rngs):
            raise TypeError(f"rngs must be an nnx.Rngs (its 'params' stream initializes), got {rngs!r}")
        self.in_features = int(in_features)
        self.out_features = int(out_features)
        self.use_bias = use_bias
        self.use_softplus = use_softplus
        self.map = map
        self.rng_collection = rng_collection
        self.dtype = dtype
        self.param_dtype = param_dtype
        if act is not None:
            self.act, self.is_input, self.is_output = act, is_input, is_output
        kernel_shape = (self.in_features, self.out_features)
        inits = {
            "weight_mu": (weight_mu_init, kernel_shape),
            "weight_rho": (weight_rho_init, kernel_shape),
            "bias_mu": (bias_mu_init or core.torch_bias_init(self.in_features), (self.out_features,)),
            "bias_rho": (bias_rho_init, (self.out_features,)),
        }
        for name in core.param_names(has_std=self._has_std, use_bias=use_bias):
            init, shape = inits[name]
            setattr(self, name, nnx.Param(init(rngs.params(), shape, param_dtype)))
        if self._has_std:
            priors = core.prior_values(
                kernel_shape, self.out_features, param_dtype, use_bias=use_bias,
                prior_mean=prior_mean, prior_std=prior_std,
                bias_prior_mean=bias_prior_mean, bias_prior_std=bias_prior_std,
            )
            for name, value in priors.items():
                setattr(self, name, Prior(value))
        # The layer's own noise stream, only from a stream of that name (never 'default').
        self.rngs = rngs[rng_collection].fork() if rng_collection in rngs else nnx.data(None)

    # ----------------------------------------------------------------- internals
    def _params(self) -> dict[str, Array]:
        return {n: getattr(self, n)[...] for n in core.param_names(has_std=self._has_std, use_bias=self.use_bias)}

    def _priors(self) -> dict[str, Array]:
        names = ["weight_mean", "weight_std"] + (["bias_mean", "bias_std"] if self.use_bias else [])
        return {n: getattr(self, n)[...] for n in names}

    def _map(self, map: bool | None) -> bool:
        """The call's ``map`` over the attribute (NNX's rule, as ``nnx.Dropout``); default False."""
        return bool(_first(map, self.map, False))

    def _key(self, rng: Array | None, rngs: nnx.Rngs | nnx.RngStream | None) -> Array:
        """The sampling key: ``rng``, else one key of ``rngs``, else of the layer's own stream."""
        if rng is not None:
            return rng
        if rngs is None:
            stream = self.rngs
        elif isinstance(rngs, nnx.Rngs):  # its own stream of that name, never 'default'
            stream = rngs[self.rng_collection] if self.rng_collection in rngs else None
        elif isinstance(rngs, nnx.RngStream):
            stream = rngs
        else:
            raise TypeError(
                f"rngs must be an nnx.Rngs or an nnx.RngStream (pass a key as rng=), got {type(rngs).__name__}"
            )
        if stream is None:
            raise core.missing_key_error(type(self).__name__, self.rng_collection, _remedy(self.rng_collection))
        return stream()

    def _input(self, x: Any, input_name: str) -> Array:
        x = core.check_input(x, input_name)
        core.check_input_width(x.shape[-1], self.in_features, input_name, type(self).__name__)
        return x

    def _sample_call(self, forward, x: Any, map: bool | None, rng: Array | None, rngs: Any) -> Array:
        map_ = self._map(map)
        x = self._input(x, "x")
        key = None if map_ else self._key(rng, rngs)
        return core.sample_forward(forward, key, x, self._params(), self.use_softplus, self.dtype, self._op)

    def _clt_call(self, mu: Any, var: Any, map: bool | None) -> tuple[Array, Array | None]:
        map_ = self._map(map)
        mu = self._input(mu, "mu")
        return core.clt_layer_forward(
            mu, var, self._params(), map=map_, is_input=self.is_input, var_optional=False,
            layer_name=type(self).__name__, use_softplus=self.use_softplus, dtype=self.dtype,
            act=self.act, is_output=self.is_output, op=self._op,
        )

    # ------------------------------------------------------------ public views
    def mean(self) -> tuple[Array, Array | None]:
        """Means ``(weight_mu, bias_mu)`` (``bias_mu`` is ``None`` without bias).

        Examples:
            >>> from flax import nnx
            >>> from bayeslayers_jax.nnx import CLTLinearDet
            >>> w, b = CLTLinearDet(3, 2, use_bias=False, rngs=nnx.Rngs(0)).mean()
            >>> w.shape, b
            ((3, 2), None)
        """
        p = self._params()
        return p["weight_mu"], p.get("bias_mu")

    def std(self) -> tuple[Array, Array | None]:
        """Standard deviations ``exp(rho)`` (``softplus(rho)`` with ``use_softplus``).

        Examples:
            >>> from flax import nnx
            >>> from bayeslayers_jax.nnx import LRLinear
            >>> w_std, b_std = LRLinear(3, 2, rngs=nnx.Rngs(0)).std()
            >>> print(round(float(w_std[0, 0]), 5))  # exp(-4.6)
            0.01005
        """
        core.require_std(self._has_std, type(self).__name__, "std")
        return core.param_stds(self._params(), self.use_softplus)

    def var(self) -> tuple[Array, Array | None]:
        """Variances, the squares of :meth:`std`.

        Examples:
            >>> from flax import nnx
            >>> from bayeslayers_jax.nnx import LRLinear
            >>> w_var, b_var = LRLinear(3, 2, rngs=nnx.Rngs(0)).var()
            >>> print(round(float(b_var[0]), 7))  # exp(-9.2)
            0.000101
        """
        core.require_std(self._has_std, type(self).__name__, "var")
        return core.param_vars(self._params(), self.use_softplus)

    def kl(self) -> Array:
        """Closed-form ``KL(q || p)`` summed over all weights and biases.

        .. math::
            \\mathrm{KL} = \\sum \\log\\frac{\\sigma_p}{\\sigma_q}
            + \\frac{\\sigma_q^2 + (\\mu_q - \\mu_p)^2}{2\\sigma_p^2} - \\frac12

        with the prior of the layer's :class:`Prior` variables.

        Examples:
            >>> from flax import nnx
            >>> from bayeslayers_jax.nnx import BBBLinear
            >>> bool(BBBLinear(3, 2, rngs=nnx.Rngs(0)).kl() > 0)
            True
        """
        core.require_std(self._has_std, type(self).__name__, "KL")
        return core.layer_kl(self._params(), self._priors(), self.use_softplus)


class BBBLinear(_BayesianLinear):
    """Bayes by Backprop linear layer (NNX): samples the weights once per call.

    .. math::
        W = \\mu_W + \\sigma_W \\odot \\varepsilon_W,\\quad b = \\mu_b + \\sigma_b \\odot
        \\varepsilon_b,\\quad y = x W + b

    The twin of :class:`bayeslayers_jax.BBBLinear` (same fields and defaults, same draw:
    :func:`~bayeslayers_jax._layer_core.bbb_forward`), with an explicit input width.

    Args:
        in_features, out_features: input and output widths.
        use_bias, prior_mean, prior_std, bias_prior_mean, bias_prior_std, use_softplus,
            dtype, param_dtype, weight_mu_init, weight_rho_init, bias_mu_init,
            bias_rho_init: as the linen layer's fields.
        map: MAP mode (means only); the ``map=`` call argument wins over it.
        rng_collection: the stream name (``'sample'``) taken from ``rngs``.
        rngs: ``nnx.Rngs``: ``'params'`` (or ``'default'``) initializes; a stream named
            ``rng_collection`` becomes the layer's noise stream (module docstring).

    References:
        Blundell et al., "Weight Uncertainty in Neural Networks", ICML 2015.

    Examples:
        >>> import jax, jax.numpy as jnp
        >>> from flax import nnx
        >>> from bayeslayers_jax.nnx import BBBLinear
        >>> layer = BBBLinear(3, 2, rngs=nnx.Rngs(params=0, sample=1))
        >>> layer.weight_mu.shape, layer.bias_rho.shape
        ((3, 2), (2,))
        >>> y = layer(jnp.ones((5, 3)))
        >>> bool(jnp.all(y == y[0]))  # one weight sample for the whole batch
        True
    """

    def __init__(self, in_features: int, out_features: int, *, rngs: nnx.Rngs, **kwargs: Any) -> None:
        super().__init__(in_features, out_features, rngs=rngs, **kwargs)

    def __call__(
        self, x: Array, *, map: bool | None = None, rng: Array | None = None, rngs: Any = None
    ) -> Array:
        """Applies the layer.

        Args:
            x: inputs, features on the last axis.
            map: MAP mode for this call (wins over the attribute).
            rng: PRNG key for this call (used as is, like the linen layer's ``rng``).
            rngs: ``nnx.Rngs`` or ``nnx.RngStream`` to draw this call's key from.

        Returns:
            Outputs of shape ``x.shape[:-1] + (out_features,)``.
        """
        return self._sample_call(core.bbb_forward, x, map, rng, rngs)


class LRLinear(_BayesianLinear):
    """Local-reparameterization linear layer (NNX): samples the pre-activations.

    .. math::
        m = x\\mu_W + \\mu_b,\\quad v = x^2 \\sigma_W^2 + \\sigma_b^2,\\quad
        y = m + \\sqrt v \\odot \\varepsilon

    The twin of :class:`bayeslayers_jax.LRLinear`; arguments as :class:`BBBLinear`.

    References:
        Kingma, Salimans and Welling, "Variational Dropout and the Local Reparameterization
        Trick", NeurIPS 2015.

    Examples:
        >>> import jax, jax.numpy as jnp
        >>> from flax import nnx
        >>> from bayeslayers_jax.nnx import LRLinear
        >>> layer = LRLinear(3, 2, rngs=nnx.Rngs(0))  # no 'sample' stream: pass a key
        >>> y = layer(jnp.ones((5, 3)), rng=jax.random.key(1))
        >>> y.shape, bool(jnp.all(y == y[0]))  # independent noise per example
        ((5, 2), False)
    """

    def __init__(self, in_features: int, out_features: int, *, rngs: nnx.Rngs, **kwargs: Any) -> None:
        super().__init__(in_features, out_features, rngs=rngs, **kwargs)

    def __call__(
        self, x: Array, *, map: bool | None = None, rng: Array | None = None, rngs: Any = None
    ) -> Array:
        """Applies the layer (arguments as :meth:`BBBLinear.__call__`)."""
        return self._sample_call(core.lr_forward, x, map, rng, rngs)


class CLTLinear(_BayesianLinear):
    """Sampling-free layer (NNX): propagates the mean and variance with the CLT.

    .. math::
        m = \\mu\\,\\mu_W + \\mu_b,\\qquad
        v = (\\mathrm{var} + \\mu^2)\\,\\sigma_W^2 + \\mathrm{var}\\,\\mu_W^2 + \\sigma_b^2

    then, unless ``is_output``, ReLU or CReLU moment matching. The twin of
    :class:`bayeslayers_jax.CLTLinear`: ``var=None`` is allowed for the input layer
    (``is_input=True``) or in MAP mode, which returns ``(mean, None)``.

    Args:
        act: ``'relu'`` or ``'crelu'`` (CReLU doubles the output width).
        is_input: the first layer (its input may be deterministic).
        is_output: the last layer (no activation).
        (other arguments as :class:`BBBLinear`; nothing is sampled)

    References:
        Wu et al., "Deterministic Variational Inference for Robust Bayesian Neural
        Networks", ICLR 2019.

    Examples:
        >>> import jax.numpy as jnp
        >>> from flax import nnx
        >>> from bayeslayers_jax.nnx import CLTLinear
        >>> layer = CLTLinear(3, 2, act="crelu", is_input=True, rngs=nnx.Rngs(0))
        >>> mean, var = layer(jnp.ones((5, 3)))
        >>> mean.shape, bool(jnp.all(var >= 0))
        ((5, 4), True)
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        *,
        act: str = "relu",
        is_input: bool = False,
        is_output: bool = False,
        rngs: nnx.Rngs,
        **kwargs: Any,
    ) -> None:
        super().__init__(
            in_features, out_features, act=act, is_input=is_input, is_output=is_output, rngs=rngs, **kwargs
        )

    def __call__(
        self, mu: Array, var: Array | None = None, *, map: bool | None = None
    ) -> tuple[Array, Array | None]:
        """Propagates ``(mu, var)`` (rules as :meth:`bayeslayers_jax.CLTLinear.__call__`).

        Args:
            mu: input means, features on the last axis.
            var: input variances of ``mu``'s shape, or ``None`` (input layer or MAP only).
            map: MAP mode for this call (wins over the attribute).

        Returns:
            ``(mean, var)``; ``(mean, None)`` in MAP mode.
        """
        return self._clt_call(mu, var, map)


class CLTLinearDet(CLTLinear):
    """:class:`CLTLinear` with deterministic weights (NNX): parameters ``weight_mu``, ``bias_mu``.

    .. math::
        m = \\mu\\,W + b,\\qquad v = \\mathrm{var}\\,W^2

    No std parameters, no prior, no KL (:meth:`kl` raises); with ``var=None`` it is a plain
    dense layer with activation returning ``(mean, None)``. The twin of
    :class:`bayeslayers_jax.CLTLinearDet`.

    Examples:
        >>> import jax.numpy as jnp
        >>> from flax import nnx
        >>> from bayeslayers_jax.nnx import CLTLinearDet
        >>> layer = CLTLinearDet(3, 2, is_output=True, rngs=nnx.Rngs(0))
        >>> sorted(nnx.to_pure_dict(nnx.state(layer, nnx.Param)))
        ['bias_mu', 'weight_mu']
        >>> mean, var = layer(jnp.ones((5, 3)), jnp.full((5, 3), 0.1))
        >>> var.shape
        (5, 2)
    """

    _has_std = False


#: Layer types accepted by :class:`BayesianMLP`, and the NNX modules they build.
LAYER_TYPES = {"bbb": BBBLinear, "lr": LRLinear, "clt": CLTLinear, "cltdet": CLTLinearDet}


class BayesianMLP(_MapFlag):
    """A multi-layer perceptron of Bayesian linear layers (NNX twin of :class:`bayeslayers_jax.BayesianMLP`).

    The fields, their checks, the per-layer arguments (CReLU width doubling, the CLT
    ``is_input``/``is_output`` flags) and the forward pass are the linen model's
    (:meth:`bayeslayers_jax.BayesianMLP.layer_kwargs`,
    :func:`bayeslayers_jax.mlp.mlp_forward`); the layers are the attributes ``layers_0,
    layers_1, ...`` (the linen variable paths; :attr:`layers` lists them).

    Args:
        in_features: the input width (NNX modules are built eagerly).
        features: hidden widths followed by the output width.
        rngs: ``nnx.Rngs`` (``'params'``; a ``'sample'`` stream gives every layer a stream).
        **fields: every other field of the linen :class:`bayeslayers_jax.BayesianMLP`, with
            its default and its checks (``layer_type='lr'``, ``act='relu'``, ``use_bias``,
            ``prior_mean``, ``prior_std``, ``bias_prior_mean``, ``bias_prior_std``,
            ``use_softplus``, ``map``, ``rng_collection``, ``dtype``, ``param_dtype``, and any
            field the linen model gains): they are given to a linen ``BayesianMLP`` whose
            ``layer_kwargs`` build the NNX layers, so the twins cannot drift apart.

    Examples:
        >>> import jax.numpy as jnp
        >>> from flax import nnx
        >>> from bayeslayers_jax.nnx import BayesianMLP, total_kl
        >>> model = BayesianMLP(2, (8, 1), layer_type="clt", act="crelu", rngs=nnx.Rngs(0))
        >>> model.layers_1.weight_mu.shape  # CReLU doubled the width
        (16, 1)
        >>> mean, var = model(jnp.ones((5, 2)))
        >>> mean.shape, bool(jnp.all(var > 0)), bool(total_kl(model) > 0)
        ((5, 1), True, True)
    """

    def __init__(self, in_features: int, features: Sequence[int], *, rngs: nnx.Rngs, **fields: Any) -> None:
        core.check_features(in_features, "in_features")
        # The linen model checks the fields and derives each layer's arguments.
        config = _mlp.BayesianMLP(features, **fields)
        self.layer_type = config.layer_type
        self.act = config.act
        self.map = config.map
        self.num_layers = len(config.features)
        width = int(in_features)
        for i in range(self.num_layers):
            kwargs = config.layer_kwargs(i)
            out = kwargs.pop("features")
            setattr(self, f"layers_{i}", LAYER_TYPES[self.layer_type](width, out, rngs=rngs, **kwargs))
            width = out * (2 if self.act == "crelu" else 1)

    @property
    def layers(self) -> tuple[_BayesianLinear, ...]:
        """The layers, input layer first."""
        return tuple(getattr(self, f"layers_{i}") for i in range(self.num_layers))

    @property
    def is_clt(self) -> bool:
        """Whether the layers propagate ``(mean, var)`` (``'clt'`` or ``'cltdet'``)."""
        return self.layer_type in _mlp.CLT_TYPES

    def __call__(
        self,
        x: Array,
        var: Array | None = None,
        *,
        map: bool | None = None,
        rng: Array | None = None,
        rngs: Any = None,
    ) -> Array | tuple[Array, Array | None]:
        """Applies the network (as :meth:`bayeslayers_jax.BayesianMLP.__call__`).

        Args:
            x: inputs (input means for CLT types).
            var: input variance for CLT types (``None``: deterministic input).
            map: MAP mode for every layer (wins over the attributes; ``None``: the model's
                ``map`` if set, else each layer's own).
            rng: PRNG key, split into one key per layer as in linen (bit-identical noise).
            rngs: ``nnx.Rngs``/``nnx.RngStream``: one key is drawn from its ``'sample'``
                stream and used as ``rng``. Without either, each layer uses its own stream.

        Returns:
            ``y`` for ``'bbb'``/``'lr'``; ``(mean, var)`` for ``'clt'``/``'cltdet'``.
        """
        map_ = _first(map, self.map)
        if rng is None and rngs is not None and not self.is_clt and not map_:
            rng = self.layers_0._key(None, rngs)
        return _mlp.mlp_forward(self.layers, x, var, map=map_, rng=rng, layer_type=self.layer_type, act=self.act)


class Ensemble(nnx.Module):
    """``size`` independent members built by ``make_member``, vectorized with ``nnx.vmap``.

    The NNX twin of :class:`bayeslayers_jax.Ensemble`: the members are created by
    ``nnx.vmap`` over ``nnx.split_rngs(rngs, splits=size)`` (every stream split, so
    members are initialized independently and each gets its own noise stream), and stored
    stacked in ``self.members``: every parameter and prior has a leading member axis
    (``weight_mu`` ``(size, in, out)``, a scalar prior ``(size,)``), exactly the linen
    ensemble's variables (:func:`from_linen` / :func:`to_linen` convert them). A call runs
    every member in one ``nnx.vmap`` (no Python loop) and stacks every output leaf.

    Args:
        make_member: ``make_member(rngs) -> module``, e.g.
            ``lambda rngs: BayesianMLP(1, (32, 1), rngs=rngs)``.
        size: the number of members (a positive int).
        rngs: ``nnx.Rngs``; every stream is split per member.

    Examples:
        >>> import jax, jax.numpy as jnp
        >>> from flax import nnx
        >>> from bayeslayers_jax.nnx import BayesianMLP, Ensemble
        >>> ens = Ensemble(lambda rngs: BayesianMLP(3, (16, 1), layer_type="clt", rngs=rngs), 4,
        ...                rngs=nnx.Rngs(0))
        >>> ens.members.layers_0.weight_mu.shape
        (4, 3, 16)
        >>> mean, var = ens(jnp.ones((8, 3)))
        >>> mean.shape, bool(jnp.all(mean[0] != mean[1]))
        ((4, 8, 1), True)
        >>> ens.kl(per_member=True).shape
        (4,)
    """

    def __init__(self, make_member: Callable[[nnx.Rngs], nnx.Module], size: int, *, rngs: nnx.Rngs) -> None:
        if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < 1:
            raise ValueError(f"size must be a positive int, got {size!r}")

        @nnx.split_rngs(splits=int(size))
        @nnx.vmap(in_axes=0, out_axes=0, axis_size=int(size))
        def create(member_rngs: nnx.Rngs) -> nnx.Module:
            return make_member(member_rngs)

        self.size = int(size)
        self.members = create(rngs)

    def __call__(self, *args: Any, rng: Array | None = None, **kwargs: Any) -> Any:
        """Runs every member on the shared inputs ``args`` (and the same ``kwargs``).

        Args:
            *args: the member's positional inputs, shared by all members.
            rng: an optional PRNG key, split with ``jax.random.split(rng, size)``, key ``i``
                going to member ``i`` as its ``rng=`` (as the linen ensemble); without it
                each member uses its own streams.
            **kwargs: the member's keyword arguments (``map=True``, ``var=...``).

        Returns:
            The member's output with a leading member axis on every array.
        """
        keys = None if rng is None else jax.random.split(rng, self.size)

        @nnx.vmap(in_axes=(0, 0 if keys is not None else None) + (None,) * len(args), out_axes=0)
        def run(member: nnx.Module, key: Array | None, *inputs: Any) -> Any:
            extra = kwargs if key is None else {**kwargs, "rng": key}
            return member(*inputs, **extra)

        return run(self.members, keys, *args)

    def kl(self, *, per_member: bool = False) -> Array:
        """The ensemble's KL: the sum of the members' :func:`total_kl` (``per_member``: each).

        Examples:
            >>> import jax.numpy as jnp
            >>> from flax import nnx
            >>> from bayeslayers_jax.nnx import BBBLinear, Ensemble
            >>> ens = Ensemble(lambda rngs: BBBLinear(2, 3, rngs=rngs), 3, rngs=nnx.Rngs(0))
            >>> bool(jnp.isclose(ens.kl(), ens.kl(per_member=True).sum()))
            True
        """

        @nnx.vmap(in_axes=0, out_axes=0)
        def member_kl(member: nnx.Module) -> Array:
            return jnp.asarray(total_kl(member))

        kls = member_kl(self.members)
        return kls if per_member else jnp.sum(kls)


def total_kl(model: nnx.Module) -> Array:
    """Sums the KL of every Bayesian layer of an NNX model (each layer once).

    Walks the model's graph (``nnx.iter_modules``); an :class:`Ensemble` inside contributes
    :meth:`Ensemble.kl` (the sum over its members). The NNX form of
    :func:`bayeslayers_jax.total_kl`.

    Args:
        model: any ``nnx.Module`` holding this module's layers (or a layer itself).

    Returns:
        The scalar KL (``0.0``, weakly typed, for a model without Bayesian layers).

    Examples:
        >>> from flax import nnx
        >>> from bayeslayers_jax.nnx import BayesianMLP, total_kl
        >>> model = BayesianMLP(2, (4, 1), layer_type="bbb", rngs=nnx.Rngs(0))
        >>> bool(abs(total_kl(model) - model.layers_0.kl() - model.layers_1.kl()) < 1e-3)
        True
    """
    modules = list(nnx.iter_modules(model))
    ensembles = [tuple(path) for path, module in modules if isinstance(module, Ensemble)]
    total = jnp.asarray(0.0)
    for path, module in modules:
        inside = [p for p in ensembles if tuple(path[: len(p)]) == p and len(path) > len(p)]
        if inside:
            continue  # an ensemble's member: counted by the ensemble's kl()
        if isinstance(module, Ensemble) or (isinstance(module, _BayesianLinear) and module._has_std):
            total = total + module.kl()
    return total


def elbo_loss(
    model: nnx.Module,
    x: Any,
    y: Any,
    *,
    num_train_examples: int,
    rng: Array | None = None,
    map: bool = False,
    **options: Any,
) -> tuple[Array, dict[str, Array]]:
    r"""Negative ELBO per training example of an NNX model on a minibatch.

    :func:`bayeslayers_jax.elbo_loss` for NNX models: one forward pass, then
    :func:`~bayeslayers_jax.objectives.elbo_from_outputs` with :func:`total_kl` (or, with
    ``map=True``, the means only and :func:`~bayeslayers_jax.neg_log_prior` of the
    parameters), so the likelihoods, checks and normalization are the linen ones:

    .. math::
        \mathcal{L} = \frac{1}{B}\sum_{i} \mathrm{NLL}_i + \beta\,\frac{\mathrm{KL}}{N}

    For an :class:`Ensemble` the loss is the sum of the members' losses (each member's
    gradient is the one it would get alone); targets are shared or stacked per member, and
    ``aux`` holds per-member ``'nll'``, ``'kl'`` and ``'loss'``, as for linen ensembles.

    Args:
        model: an NNX model of this module's layers (e.g. :class:`BayesianMLP`) or an
            :class:`Ensemble`.
        x: inputs; a tuple is unpacked into several positional inputs.
        y: targets (the output's shape) or labels.
        num_train_examples: ``N``, the training-set size.
        rng: PRNG key passed as ``rng=`` (bit-identical to the linen model's ``rng=``);
            ``None``: the model's own ``'sample'`` streams. It is also the ``key`` of the
            Monte Carlo likelihoods (a CLT classifier's logit samples) unless ``key=`` is
            given; without either, those raise as in :func:`bayeslayers_jax.elbo_loss`.
        map: train the MAP (means-only) model, as in :func:`bayeslayers_jax.elbo_loss`.
        **options: the likelihood's options, as in :func:`bayeslayers_jax.elbo_loss`
            (``likelihood``, ``noise_var``, ``kl_weight``, ``key``, ``probit_method``,
            ``clt_categorical``, ``num_logit_samples``): every keyword of
            :func:`~bayeslayers_jax.objectives.elbo_from_outputs`, which checks them.

    Returns:
        ``(loss, aux)``.

    Examples:
        >>> import jax.numpy as jnp, optax
        >>> from flax import nnx
        >>> from bayeslayers_jax.nnx import BayesianMLP, elbo_loss
        >>> model = BayesianMLP(3, (16, 1), layer_type="clt", rngs=nnx.Rngs(0))
        >>> optimizer = nnx.Optimizer(model, optax.adam(1e-2), wrt=nnx.Param)
        >>> x, y = jnp.ones((8, 3)), jnp.zeros((8, 1))
        >>> @nnx.jit
        ... def step(model, optimizer):
        ...     loss_fn = lambda m: elbo_loss(m, x, y, num_train_examples=100, noise_var=0.1)
        ...     (loss, aux), grads = nnx.value_and_grad(loss_fn, has_aux=True)(model)
        ...     optimizer.update(model, grads)
        ...     return loss
        >>> losses = [float(step(model, optimizer)) for _ in range(20)]
        >>> losses[-1] < losses[0]
        True
    """
    inputs = _objectives._as_inputs(x)
    kwargs: dict[str, Any] = {"map": True} if map else ({} if rng is None else {"rng": rng})
    out = model(*inputs, **kwargs)

    def kl_of(member: nnx.Module) -> Array:
        if map:
            params, prior = _linen_collections(member)
            return _objectives.neg_log_prior(params, prior)
        return total_kl(member)

    # The Monte Carlo likelihoods (a CLT classifier's logits) draw from ``rng`` unless a
    # ``key`` is given; an ensemble's members get independent keys.
    key = options.pop("key", None)
    if key is None and not map:
        key = rng
    if not isinstance(model, Ensemble):
        return _objectives.elbo_from_outputs(
            out, y, kl_of(model), num_train_examples=num_train_examples, key=key, **options
        )
    kl = nnx.vmap(lambda m: jnp.asarray(kl_of(m)), in_axes=0, out_axes=0)(model.members)
    return _objectives._ensemble_elbo(out, y, kl, num_train_examples=num_train_examples, key=key, **options)


# ----------------------------------------------------------------------------- interop
def _linen_collections(model: nnx.Module) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(params, prior)`` as linen's nested dicts (the NNX state paths are linen's)."""
    return nnx.to_pure_dict(nnx.state(model, nnx.Param)), nnx.to_pure_dict(nnx.state(model, Prior))


def _target(model: nnx.Module) -> nnx.Module:
    return model.members if isinstance(model, Ensemble) else model


def to_linen(model: nnx.Module) -> dict[str, Any]:
    """The linen variables ``{'params': ..., 'prior': ...}`` of an NNX model.

    For a layer, a :class:`BayesianMLP` or an :class:`Ensemble` (stacked members), the
    result is what the linen twin's ``init`` returns (``'prior'`` omitted when empty, as for
    ``CLTLinearDet``), ready for ``linen_model.apply``, a checkpoint or
    :func:`~bayeslayers_jax.update_prior`.

    Examples:
        >>> from flax import nnx
        >>> from bayeslayers_jax.nnx import BayesianMLP, to_linen
        >>> v = to_linen(BayesianMLP(3, (4, 1), rngs=nnx.Rngs(0)))
        >>> sorted(v), sorted(v["params"]), v["params"]["layers_0"]["weight_mu"].shape
        (['params', 'prior'], ['layers_0', 'layers_1'], (3, 4))
    """
    params, prior = _linen_collections(_target(model))
    return {"params": params, "prior": prior} if prior else {"params": params}


def from_linen(model: nnx.Module, variables: Any) -> nnx.Module:
    """Loads linen variables into an NNX model in place (and returns it).

    ``variables`` are a linen layer's, ``BayesianMLP``'s or ``Ensemble``'s
    (``{'params': ..., 'prior': ...}``; any other collection, such as a sown ``'kl'``, is
    ignored) for the NNX twin ``model`` (same layer type, widths and flags): every
    parameter and prior must be present with the NNX variable's shape. The values are taken
    as they are (no cast), so the NNX model computes exactly what the linen one does.

    Raises:
        ValueError: a missing or unexpected entry, or a shape that differs from the
            model's (named with its path).

    Examples:
        >>> import jax, jax.numpy as jnp
        >>> from flax import nnx
        >>> import bayeslayers_jax as bl
        >>> from bayeslayers_jax.nnx import BayesianMLP, from_linen
        >>> x = jnp.ones((2, 3))
        >>> linen_model = bl.BayesianMLP((4, 1), layer_type="clt")
        >>> variables = linen_model.init(jax.random.key(0), x)
        >>> model = from_linen(BayesianMLP(3, (4, 1), layer_type="clt", rngs=nnx.Rngs(0)), variables)
        >>> bool(jnp.all(model(x)[0] == linen_model.apply(variables, x)[0]))
        True
    """
    target = _target(model)
    state = nnx.state(target, nnx.Any(nnx.Param, Prior))
    expected = traverse_util.flatten_dict(nnx.to_pure_dict(state), sep="/")
    given = {
        **traverse_util.flatten_dict(dict(variables.get("params", {})), sep="/"),
        **traverse_util.flatten_dict(dict(variables.get("prior", {})), sep="/"),
    }
    missing = sorted(set(expected) - set(given))
    extra = sorted(set(given) - set(expected))
    if missing or extra:
        raise ValueError(
            f"variables do not match the {type(model).__name__}: missing entries {missing}, "
            f"unexpected entries {extra}"
        )
    for path, value in sorted(given.items()):
        if tuple(np.shape(value)) != tuple(np.shape(expected[path])):
            raise ValueError(
                f"variables entry {path!r} has shape {tuple(np.shape(value))}, the model's has "
                f"{tuple(np.shape(expected[path]))}"
            )
    nnx.replace_by_pure_dict(
        state, traverse_util.unflatten_dict({k: jnp.asarray(v) for k, v in given.items()}, sep="/")
    )
    nnx.update(target, state)
    return model
