"""Make an existing ``flax.linen`` model Bayesian without editing its source.

:func:`bayesianize` wraps a model in a :class:`Bayesianized` module that runs it under
:func:`flax.linen.intercept_methods`: every selected ``nn.Dense`` (and ``nn.DenseGeneral``
with a 2-D kernel, and unmasked ``nn.Conv``, with the convolution's affine map) call is
replaced by the package's own Bayesian forward pass (:func:`~bayeslayers_jax._layer_core.bbb_forward`,
``lr_forward`` or ``flipout_forward``; ``mean_forward`` in MAP mode and for ``'clt'``,
whose moments come from :func:`~bayeslayers_jax.core.propagate_moments` of the whole
model, in ``_bayesianize_clt``), with its
parameters ``weight_mu``/``weight_rho``/``bias_mu``/``bias_rho``, its ``'prior'`` variables
and its sown ``'kl'`` created *in the Dense's own scope*.

Why interception rather than rewriting the model: a linen model is code, not a graph, so
swapping its submodules would need its source (or fragile attribute surgery on
dataclass fields, which breaks for submodules created inline in ``@nn.compact``).
Intercepting the Dense's ``__call__`` works for any model, compact or ``setup``-style, and
keeps the user's parameter paths (``Dense_0/weight_mu``, the wrapper shares the model's
scope via :func:`flax.linen.share_scope`), so :func:`~bayeslayers_jax.total_kl`,
:func:`~bayeslayers_jax.elbo_loss` and :func:`~bayeslayers_jax.predictive` treat the result
as a model built from this package's layers. No formula is restated here: the forward
passes and the KL are the ones the package's layers call.
"""

from __future__ import annotations

import fnmatch
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import flax.linen as nn
from flax import traverse_util
from flax.core import meta

from bayeslayers_jax import _layer_core as core
from bayeslayers_jax._bayesianize_rules import MOPED_DELTA, check_options, moped_std, rho_initializer
from bayeslayers_jax._bayesianize_rules import MOPED_MIN_STD as MOPED_MIN_STD
from bayeslayers_jax._bayesianize_rules import as_patterns as _as_patterns
from bayeslayers_jax._bayesianize_rules import std_to_rho as _std_to_rho
from bayeslayers_jax.linen._bayesianize_clt import clt_moments
from bayeslayers_jax.linen._conv import conv_affine_map

__all__ = ["bayesianize", "Bayesianized", "MOPED_DELTA"]

Array = jax.Array

_FORWARDS = {"bbb": core.bbb_forward, "lr": core.lr_forward, "flipout": core.flipout_forward}


def _convertible(module: nn.Module) -> bool:
    """``nn.Dense``, ``nn.DenseGeneral`` and unmasked ``nn.Conv`` (exactly those types: a
    subclass may change the call)."""
    return type(module) in (nn.Dense, nn.DenseGeneral) or (type(module) is nn.Conv and module.mask is None)


def _dense_general_features(mod: nn.DenseGeneral, x: Array) -> int:
    """The ``features`` of a ``DenseGeneral`` with a 2-D kernel (``x @ K``), else ``ValueError``."""
    features = mod.features if isinstance(mod.features, Sequence) else (mod.features,)
    axis = mod.axis if isinstance(mod.axis, Sequence) else (mod.axis,)
    batch_dims = mod.batch_dims if isinstance(mod.batch_dims, Sequence) else (mod.batch_dims,)
    ndim = np.ndim(x)
    if len(features) != 1 or len(axis) != 1 or axis[0] % max(ndim, 1) != ndim - 1 or batch_dims:
        raise ValueError(
            f"bayesianize converts an nn.DenseGeneral only with a 2-D kernel (one int `features`, "
            f"axis=-1, no batch_dims); layer {mod.name!r} has features={mod.features!r}, "
            f"axis={mod.axis!r}, batch_dims={mod.batch_dims!r}: exclude it (exclude={mod.name!r})"
        )
    return int(features[0])


def _matches(pattern: Any, module: nn.Module, path: str) -> bool:
    if isinstance(pattern, type):
        return isinstance(module, pattern)
    return fnmatch.fnmatchcase(path, pattern) or fnmatch.fnmatchcase(str(module.name), pattern)


class Bayesianized(nn.Module):
    """A ``flax.linen`` model whose ``nn.Dense``/``nn.Conv`` layers are Bayesian (see :func:`bayesianize`).

    Attributes:
        model: the wrapped deterministic model.
        method: ``'bbb'``, ``'lr'``, ``'flipout'`` or ``'clt'``.
        include, exclude: selection of the Dense layers (see :func:`bayesianize`).
        prior_mean, prior_std: the Gaussian prior of every converted weight and bias (scalars).
        init_std: initial posterior std (``None``: ``exp(INIT_RHO) ~ 0.01``).
        use_softplus: ``std = softplus(rho)`` instead of ``exp(rho)``.
        pretrained: variables of the deterministic model (MOPED initialization) or ``None``.
        moped_delta: MOPED's ``delta``.
        moped_prior: centre the prior at the pretrained weights.
        moped_prior_std: the MOPED prior std (``None``: ``delta * |w|``).
        rng_collection: PRNG stream of the weight noise.
    """

    model: nn.Module
    method: str = "lr"
    include: Any = None
    exclude: Any = None
    prior_mean: float = 0.0
    prior_std: float = 1.0
    init_std: float | None = None
    use_softplus: bool = False
    pretrained: Any = None
    moped_delta: float = MOPED_DELTA
    moped_prior: bool = False
    moped_prior_std: float | None = None
    rng_collection: str = "sample"

    def __post_init__(self) -> None:
        core.check_rng_collection(self.rng_collection)
        check_options(
            method=self.method, prior_mean=self.prior_mean, prior_std=self.prior_std, init_std=self.init_std,
            moped_delta=self.moped_delta, moped_prior_std=self.moped_prior_std, include=self.include,
            exclude=self.exclude,
        )
        super().__post_init__()

    def setup(self) -> None:
        nn.share_scope(self, self.model)

    # ------------------------------------------------------------------ the Dense call
    def _selected(self, module: nn.Module, path: str) -> bool:
        include = _as_patterns(self.include, "include")
        exclude = _as_patterns(self.exclude, "exclude")
        if include and not any(_matches(p, module, path) for p in include):
            return False
        return not any(_matches(p, module, path) for p in exclude)

    def _priors(self, mod: nn.Module, kernel_shape: tuple[int, ...], features: int) -> dict[str, Array]:
        specs = core.prior_specs(
            kernel_shape, features, use_bias=mod.use_bias, prior_mean=self.prior_mean,
            prior_std=self.prior_std, bias_prior_mean=None, bias_prior_std=None,
        )
        priors = {}
        for name, (value, shape, field) in specs.items():
            if mod.has_variable("prior", name):
                priors[name] = mod.get_variable("prior", name)
                continue
            make = lambda v=value, s=shape, f=field: core.prior_array(v, s, mod.param_dtype, f)  # noqa: E731
            if mod.is_initializing() and mod.is_mutable_collection("prior"):
                priors[name] = mod.variable("prior", name, make).value
            else:
                priors[name] = make()
        return priors

    def _convert(self, mod: nn.Module, x: Any, map_: bool) -> Array:
        """The Bayesian call of a selected ``nn.Dense`` or ``nn.Conv`` ``mod`` (bound)."""
        x = core.check_input(x, "x")
        if isinstance(mod, nn.Conv):
            ks = (mod.kernel_size,) if isinstance(mod.kernel_size, int) else tuple(mod.kernel_size)
            groups = mod.feature_group_count
            shape = ks + (x.shape[-1] // groups, mod.features)
            op = conv_affine_map(
                mod.strides if mod.strides is not None else 1, mod.padding,
                mod.input_dilation if mod.input_dilation is not None else 1,
                mod.kernel_dilation if mod.kernel_dilation is not None else 1, groups,
            )
            layer_name = f"bayesianized Conv {mod.name!r}"
        else:
            features = _dense_general_features(mod, x) if isinstance(mod, nn.DenseGeneral) else mod.features
            shape, op, layer_name = (x.shape[-1], features), core.DENSE, f"bayesianized Dense {mod.name!r}"
            if mod.has_variable("params", "weight_mu"):
                expected = mod.get_variable("params", "weight_mu").shape[0]
                core.check_input_width(x.shape[-1], expected, "x", layer_name)

        rho_init = rho_initializer(self.init_std, self.use_softplus)

        features = shape[-1]
        inits = {
            "weight_mu": (mod.kernel_init, shape),
            "weight_rho": (rho_init, shape),
            "bias_mu": (mod.bias_init, (features,)),
            "bias_rho": (rho_init, (features,)),
        }
        params = {
            name: meta.unbox(mod.param(name, inits[name][0], inits[name][1], mod.param_dtype))
            for name in core.param_names(has_std=True, use_bias=mod.use_bias)
        }
        priors = self._priors(mod, shape, features)
        if mod.is_mutable_collection("kl") and not mod.is_initializing():
            mod.sow(
                "kl", "kl", core.layer_kl(params, priors, self.use_softplus),
                init_fn=lambda: jnp.zeros((), mod.param_dtype), reduce_fn=lambda _, new: new,
            )
        key = None
        if not map_ and self.method != "clt":
            if mod.has_rng(self.rng_collection):
                key = mod.make_rng(self.rng_collection)
            elif not mod.is_initializing():
                raise core.missing_key_error(layer_name, self.rng_collection)
        # The convolution's affine map applies a throw-away nn.Conv (built with parent=None by
        # core._linear_map.Conv); the interceptor passes it through (see __call__).
        if key is None:  # MAP, and 'clt' (whose moments come from the whole model: __call__)
            return core.mean_forward(x, params, mod.dtype, op)
        return core.sample_forward(_FORWARDS[self.method], key, x, params, self.use_softplus, mod.dtype, op)

    @nn.compact
    def __call__(self, *args: Any, map: bool | None = None, **kwargs: Any) -> Any:
        """Runs the wrapped model with its selected Dense layers Bayesian.

        Args:
            *args, **kwargs: the wrapped model's arguments.
            map: MAP mode: the weight means only (no key needed).

        Returns:
            The wrapped model's output (one sample of it unless ``map``); for ``'clt'`` the
            pair ``(mean, var)`` of its moments (``var`` is ``None`` in MAP mode).
        """
        if map is not None and not isinstance(map, (bool, np.bool_)):
            raise TypeError(f"map must be a bool or None, got {map!r}")
        map_ = bool(map)
        root = tuple(self.scope.path)
        seen: list[str] = []
        converted: list[str] = []
        paths: list[tuple[str, ...]] = []
        busy: list[bool] = []

        def interceptor(next_fun, f_args, f_kwargs, context):
            mod = context.module
            if busy or context.method_name != "__call__" or not _convertible(mod):
                return next_fun(*f_args, **f_kwargs)
            path = "/".join(str(p) for p in mod.scope.path[len(root):])
            seen.append(path)
            if not self._selected(mod, path):
                return next_fun(*f_args, **f_kwargs)
            converted.append(path)
            paths.append(tuple(str(p) for p in mod.scope.path[len(root):]))
            busy.append(True)  # the forward's own throw-away nn.Conv passes through
            try:
                return self._convert(mod, *f_args, map_=map_, **f_kwargs)
            finally:
                busy.pop()

        with nn.intercept_methods(interceptor):
            out = self.model(*args, **kwargs)
        if self.is_initializing():
            self._check_selection(seen, converted)
        if self.method != "clt":
            return out
        if map_:
            return out, jax.tree_util.tree_map(lambda _: None, out)
        # The pass above created the parameters and sowed the KL; its output (the means'
        # forward pass) is unused here and removed by XLA under jit.
        return clt_moments(self.model, self.variables, paths, self.use_softplus, args, kwargs)

    def _check_selection(self, seen: list[str], converted: list[str]) -> None:
        for field in ("include", "exclude"):
            for p in _as_patterns(getattr(self, field), field):
                if isinstance(p, str) and not any(
                    fnmatch.fnmatchcase(s, p) or fnmatch.fnmatchcase(s.rsplit("/", 1)[-1], p) for s in seen
                ):
                    raise ValueError(
                        f"{field} pattern {p!r} matches no nn.Dense/nn.Conv layer of "
                        f"{type(self.model).__name__} (its Dense/Conv layers: {sorted(set(seen))})"
                    )
        if not converted:
            raise ValueError(
                f"bayesianize found no nn.Dense/nn.Conv layer to convert in {type(self.model).__name__} "
                f"(Dense/Conv layers called: {sorted(set(seen))}, include={self.include!r}, "
                f"exclude={self.exclude!r})"
            )

    # ------------------------------------------------------------------------ MOPED
    def init(self, rngs: Any, *args: Any, **kwargs: Any) -> Any:
        """As :meth:`flax.linen.Module.init`; with ``pretrained``, the MOPED initialization."""
        variables = super().init(rngs, *args, **kwargs)
        if self.pretrained is None:
            return variables
        return _moped(
            variables, self.pretrained, delta=self.moped_delta, prior=self.moped_prior,
            prior_std=self.moped_prior_std, use_softplus=self.use_softplus,
        )


def _moped(variables: Any, pretrained: Any, *, delta: float, prior: bool, prior_std: float | None,
           use_softplus: bool) -> dict[str, Any]:
    """The MOPED variables: means = pretrained weights, std = delta |w|, the rest copied."""
    pretrained = dict(pretrained)
    if "params" not in pretrained:
        raise ValueError("pretrained must be the variables of the deterministic model (a dict with 'params')")
    flat = traverse_util.flatten_dict(meta.unbox(dict(variables)))
    pre = traverse_util.flatten_dict(meta.unbox(pretrained))
    layers = {k[1:-1] for k in flat if k[0] == "params" and k[-1] == "weight_mu"}
    out = dict(flat)
    used = set()
    for key, value in flat.items():
        col, path, name = key[0], key[1:-1], key[-1]
        if col == "params" and path in layers and name in core.PARAM_NAMES:
            src = ("params",) + path + ("kernel" if name.startswith("weight") else "bias",)
        elif col == "prior" and path in layers:
            src = ("params",) + path + ("kernel" if name.startswith("weight") else "bias",)
        else:
            src = key
        if src not in pre:
            raise ValueError(
                f"pretrained does not match the model: it has no {'/'.join(map(str, src))} "
                f"(needed for {'/'.join(map(str, key))})"
            )
        w = jnp.asarray(pre[src])
        ref_shape = np.shape(value) if col != "prior" else np.shape(flat[("params",) + path + (
            "weight_mu" if name.startswith("weight") else "bias_mu",)])
        if w.shape != tuple(ref_shape):
            raise ValueError(
                f"pretrained {'/'.join(map(str, src))} has shape {w.shape}, the model needs {tuple(ref_shape)}"
            )
        used.add(src)
        dtype = jnp.asarray(value).dtype
        w = w.astype(dtype)
        std = moped_std(w, delta)
        if col == "params" and path in layers and name in core.PARAM_NAMES:
            out[key] = w if name.endswith("_mu") else _std_to_rho(std, use_softplus).astype(dtype)
        elif col == "prior" and path in layers:
            if not prior:
                continue
            if name.endswith("_mean"):
                out[key] = w
            else:
                out[key] = std if prior_std is None else jnp.full(w.shape, prior_std, dtype)
        else:
            out[key] = w
    extra = sorted("/".join(map(str, k)) for k in pre if k not in used and k[0] != "kl")
    if extra:
        raise ValueError(f"pretrained does not match the model: unused entries {extra}")
    return traverse_util.unflatten_dict(out)


def bayesianize(
    model: nn.Module,
    method: str = "lr",
    *,
    include: str | type | Sequence[str | type] | None = None,
    exclude: str | type | Sequence[str | type] | None = None,
    prior_mean: float = 0.0,
    prior_std: float = 1.0,
    init_std: float | None = None,
    use_softplus: bool = False,
    pretrained: Any = None,
    moped_delta: float = MOPED_DELTA,
    moped_prior: bool = False,
    moped_prior_std: float | None = None,
    rng_collection: str = "sample",
) -> Bayesianized:
    r"""Makes the ``nn.Dense``/``nn.Conv`` layers of a ``flax.linen`` model Bayesian (mean-field Gaussian).

    Each selected Dense (or ``nn.DenseGeneral`` with a 2-D kernel: one int ``features``,
    ``axis=-1``, no ``batch_dims``; any other ``DenseGeneral`` raises ``ValueError`` naming
    it, exclude it to keep it deterministic; or ``nn.Conv`` without ``mask``; exactly these types, since a
    subclass may change the call; ``precision`` and a custom ``dot_general`` or
    ``conv_general_dilated`` are not honoured) gets the parameters of the package's layers, in its own scope:
    ``weight_mu`` (initialized by the Dense's ``kernel_init``), ``weight_rho``,
    ``bias_mu`` (``bias_init``), ``bias_rho`` with ``rho = log(init_std)``, the prior
    :math:`\mathcal N(\text{prior\_mean}, \text{prior\_std}^2)` in ``'prior'``, and its
    closed-form KL sown into ``'kl'``:

    .. math::
        W \sim \mathcal N(\mu_W, \sigma_W^2),\quad \sigma = e^{\rho},\qquad
        \mathrm{KL} = \sum \log\frac{\sigma_p}{\sigma} + \frac{\sigma^2 + (\mu - \mu_p)^2}
        {2\sigma_p^2} - \frac12 .

    Its call is then :class:`~bayeslayers_jax.BBBLinear`'s (``'bbb'``),
    :class:`~bayeslayers_jax.LRLinear`'s (``'lr'``) or
    :class:`~bayeslayers_jax.FlipoutLinear`'s (``'flipout'``) forward pass, with a key
    from ``make_rng(rng_collection)``; ``map=True`` at the call runs the means only. All other
    modules (BatchNorm, Dropout, ...) run unchanged. Parameter paths stay the model's.

    =============  =============================  =============================================
    method         layers                         call returns
    =============  =============================  =============================================
    ``'bbb'``      Dense, 2-D DenseGeneral, Conv  one sample (a weight draw per call)
    ``'lr'``       Dense, 2-D DenseGeneral, Conv  one sample (local reparameterization)
    ``'flipout'``  Dense, 2-D DenseGeneral, Conv  one sample (Flipout signs)
    ``'clt'``      Dense, 2-D DenseGeneral, Conv  ``(mean, var)``, no key; MAP: ``(out, None)``
    =============  =============================  =============================================

    **'clt'** (sampling-free): the same parameters and KL, and the output is
    :func:`~bayeslayers_jax.core.propagate_moments` of the wrapped model's own ``apply``
    with the posterior means as ``kernel``/``bias`` and variances :math:`\sigma^2` (from
    ``rho`` as above), every other variable deterministic: the mean-field Gaussian moments
    (each intermediate re-matched to independent Gaussians; exact through the affine maps).
    The model may use what ``propagate_moments`` supports (dense and convolution maps,
    sums, reshapes, pooling, ReLU/GELU/SiLU/tanh/sigmoid/ELU/softplus/..., LayerNorm; its
    docstring lists them); anything else raises ``NotImplementedError`` naming the
    primitive. Its positional inputs are deterministic; stateful modules must run in
    inference mode (BatchNorm with running averages, Dropout deterministic) and no
    ``rngs`` reach the model.

    **MOPED** (``pretrained=variables`` of the deterministic model): ``init`` returns
    ``weight_mu``/``bias_mu`` equal to the pretrained kernels/biases, the initial std
    ``delta * |w|`` (``moped_delta``, default 0.1 as in the paper; floored at
    :data:`MOPED_MIN_STD`), all other variables (BatchNorm statistics, ...) copied, so the
    MAP output equals the pretrained model's. ``moped_prior=True`` also centres the prior
    at the pretrained weights with std ``delta * |w|`` (or ``moped_prior_std``).

    Args:
        model: a ``flax.linen`` model.
        method: ``'bbb'``, ``'lr'``, ``'flipout'`` or ``'clt'`` (the table above).
        include: only Dense layers matching one of these: fnmatch patterns on the path
            relative to the model (``'Dense_0'``, ``'encoder/*'``) or on the layer name, or
            Module types. ``None``: every Dense.
        exclude: Dense layers matching one of these stay deterministic.
        prior_mean, prior_std: the scalar prior.
        init_std: initial posterior std (``None``: ``exp(-4.6) ~ 0.01``, :data:`INIT_RHO`).
        use_softplus: ``std = softplus(rho)``.
        pretrained: deterministic variables for MOPED, or ``None``.
        moped_delta, moped_prior, moped_prior_std: MOPED options (above).
        rng_collection: PRNG stream of the weight noise.

    Returns:
        A :class:`Bayesianized` module (call as ``model.apply(v, x, rngs={'sample': k})``;
        ``'clt'``: ``mean, var = model.apply(v, x)``).

    Raises:
        ValueError: an unsupported ``method``, no convertible Dense (at ``init``), an
            ``include``/``exclude`` pattern that matches no Dense, ``pretrained`` variables
            whose tree or shapes differ from the model's, a sampling call without a key.

    References:
        Blundell et al., "Weight Uncertainty in Neural Networks", ICML 2015. Kingma,
        Salimans and Welling, "Variational Dropout and the Local Reparameterization Trick",
        NeurIPS 2015. Krishnan, Subedar and Tickoo, "Specifying Weight Priors in Bayesian
        Deep Neural Networks with Empirical Bayes", AAAI 2020 (MOPED). Wu et al.,
        "Deterministic Variational Inference for Robust Bayesian Neural Networks", ICLR
        2019 (moment propagation, ``'clt'``).

    Examples:
        >>> import jax, jax.numpy as jnp, flax.linen as nn
        >>> from bayeslayers_jax.linen._bayesianize import bayesianize
        >>> net = nn.Sequential([nn.Dense(8), nn.relu, nn.Dense(1)])
        >>> x = jnp.ones((4, 3))
        >>> bnet = bayesianize(net, 'lr')
        >>> v = bnet.init(jax.random.key(0), x)
        >>> sorted(v['params']['layers_0'])
        ['bias_mu', 'bias_rho', 'weight_mu', 'weight_rho']
        >>> y = bnet.apply(v, x, rngs={'sample': jax.random.key(1)})
        >>> y.shape, bnet.apply(v, x, map=True).shape
        ((4, 1), (4, 1))
        >>> bclt = bayesianize(net, 'clt')  # sampling-free: (mean, var), no key
        >>> mean, var = bclt.apply(bclt.init(jax.random.key(0), x), x)
        >>> mean.shape, bool(jnp.all(var > 0))
        ((4, 1), True)
        >>> pre = net.init(jax.random.key(2), x)  # MOPED: start from a trained net
        >>> vm = bayesianize(net, pretrained=pre).init(jax.random.key(0), x)
        >>> bool(jnp.all(bayesianize(net, pretrained=pre).apply(vm, x, map=True) == net.apply(pre, x)))
        True
    """
    return Bayesianized(
        model, method=method, include=include, exclude=exclude, prior_mean=prior_mean,
        prior_std=prior_std, init_std=init_std, use_softplus=use_softplus, pretrained=pretrained,
        moped_delta=moped_delta, moped_prior=moped_prior, moped_prior_std=moped_prior_std,
        rng_collection=rng_collection,
    )
