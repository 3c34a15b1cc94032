r"""Make an existing ``flax.nnx`` model Bayesian: its ``nnx.Linear``/``nnx.Conv`` become the package's layers.

An NNX model is a graph of objects, not code, so :func:`bayesianize` edits the graph: it
clones the model (:func:`flax.nnx.clone`), walks the clone (:func:`flax.nnx.iter_graph`:
attributes, ``nnx.List``/``nnx.Dict`` and ``nnx.data`` lists and dicts of submodules) and
puts in place of every selected ``nnx.Linear`` and ``nnx.Conv`` the package's NNX layer of
the method (:class:`~bayeslayers_jax.nnx.LRLinear`, :class:`~bayeslayers_jax.nnx.LRConv`,
...), built with the layer's options. The model's own ``__call__`` then runs the Bayesian
layers; nothing is restated here: the forward passes, the KL and the keys are the layers'.
The rules shared with the linen :func:`~bayeslayers_jax.bayesianize` (option checks,
``rho`` initialization, MOPED) are :mod:`bayeslayers_jax._bayesianize_rules`.
"""

from __future__ import annotations

import inspect
from typing import Any, Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from bayeslayers_jax import _bayesianize_rules as rules
from bayeslayers_jax.core import propagate_moments
from bayeslayers_jax.nnx._conv import BBBConv, FlipoutConv, LRConv
from bayeslayers_jax.nnx._linear import BayesianLinear, BBBLinear, FlipoutLinear, LRLinear, first_not_none

__all__ = ["bayesianize", "MomentPropagated"]

Array = jax.Array

# 'clt' holds its parameters in the LR layers (the same weight_mu/weight_rho/bias_*) and
# propagates moments through the whole model (MomentPropagated).
_LAYERS = {
    "bbb": (BBBLinear, BBBConv), "lr": (LRLinear, LRConv), "flipout": (FlipoutLinear, FlipoutConv),
    "clt": (LRLinear, LRConv),
}
_CONVERTIBLE = (nnx.Linear, nnx.Conv)


def _default(cls: type, name: str) -> Any:
    return inspect.signature(cls.__init__).parameters[name].default


# What the package's layers compute; a layer configured otherwise is refused by name.
_DEFAULTS = {
    "precision": None, "preferred_element_type": None, "mask": None,
    "promote_dtype": _default(nnx.Linear, "promote_dtype"),
    "dot_general": _default(nnx.Linear, "dot_general"),
    "conv_general_dilated": _default(nnx.Conv, "conv_general_dilated"),
}
_PLAIN_METADATA = set(nnx.Param(jnp.zeros(())).get_metadata())


def _short(value: Any) -> str:
    if hasattr(value, "shape"):
        return f"<array of shape {tuple(value.shape)}>"
    return getattr(value, "__qualname__", None) or repr(value)


def _check_layer(node: nnx.Module, path: str) -> None:
    """``ValueError`` naming the layer for an option the package's layers cannot honour."""
    name = f"{type(node).__name__} {path!r}"
    for option, default in _DEFAULTS.items():
        if hasattr(node, option) and getattr(node, option) is not default:
            raise ValueError(
                f"bayesianize cannot honour {option}={_short(getattr(node, option))} of the {name} (the package's "
                f"layers support the default only): exclude it (exclude={path!r})"
            )
    for var in ("kernel", "bias"):
        extra = set(getattr(node, var).get_metadata()) - _PLAIN_METADATA if getattr(node, var, None) is not None else ()
        if extra:
            raise ValueError(
                f"bayesianize cannot carry the {var} metadata {sorted(extra)} of the {name} "
                f"(sharding annotations are not copied): exclude it (exclude={path!r})"
            )
    shape = tuple(node.kernel.shape)
    expected = node.kernel_shape if isinstance(node, nnx.Conv) else (node.in_features, node.out_features)
    if shape != tuple(expected):
        raise ValueError(
            f"the {name} has a kernel of shape {shape}, not {tuple(expected)} (a layer stacked by "
            f"nnx.vmap?): bayesianize converts single layers only; exclude it (exclude={path!r})"
        )


def _build(node: nnx.Module, method: str, rngs: nnx.Rngs, **fields: Any) -> BayesianLinear:
    """The package's layer in place of ``node`` (an ``nnx.Linear`` or ``nnx.Conv``)."""
    linear_cls, conv_cls = _LAYERS[method]
    common = dict(use_bias=node.use_bias, dtype=node.dtype, param_dtype=node.param_dtype, rngs=rngs, **fields)
    if isinstance(node, nnx.Conv):
        one = lambda v: 1 if v is None else v  # noqa: E731  (nnx.Conv's None means 1)
        return conv_cls(
            node.in_features, node.out_features, node.kernel_size, strides=one(node.strides),
            padding=node.padding, input_dilation=one(node.input_dilation),
            kernel_dilation=one(node.kernel_dilation), feature_group_count=node.feature_group_count, **common,
        )
    return linear_cls(node.in_features, node.out_features, **common)


def _constant(value: Array) -> Any:
    return lambda key, shape, dtype=None: value


def _moped_fields(node: nnx.Module, *, delta: float, prior: bool, prior_std: float | None,
                  use_softplus: bool) -> dict[str, Any]:
    """MOPED's initializers (and centred prior): the means are ``node``'s kernel and bias,
    the std ``delta |w|`` floored (:func:`~bayeslayers_jax._bayesianize_rules.moped_values`)."""
    fields: dict[str, Any] = {}
    for src, dst in (("kernel", "weight"), ("bias", "bias")):
        if src == "bias" and not node.use_bias:
            continue
        w = jnp.asarray(getattr(node, src)[...]).astype(node.param_dtype)
        values = rules.moped_values(w, delta=delta, use_softplus=use_softplus, prior_std=prior_std)
        fields[f"{dst}_mu_init"], fields[f"{dst}_rho_init"] = _constant(values["mu"]), _constant(values["rho"])
        if prior:
            pre = "" if dst == "weight" else "bias_"
            fields[f"{pre}prior_mean"], fields[f"{pre}prior_std"] = values["mean"], values["std"]
    return fields


def _replace(root: Any, new: dict[int, BayesianLinear]) -> None:
    """Puts ``new[id(old)]`` at every reference to a converted ``old`` in the graph of ``root``."""
    for path, parent in list(nnx.iter_graph(root)):
        where = "/".join(map(str, path)) or type(root).__name__
        if isinstance(parent, tuple) and any(id(c) in new for c in parent):
            raise ValueError(
                f"bayesianize cannot replace a layer inside the tuple at {where!r}: hold the layers in an "
                f"nnx.List (or exclude them)"
            )
        if isinstance(parent, (list, nnx.List)):
            items = list(enumerate(parent))
        elif isinstance(parent, (dict, nnx.Dict)):
            items = list(parent.items())
        elif isinstance(parent, nnx.Module):
            items = [(k, v) for k, v in vars(parent).items() if not k.startswith("_pytree__")]
        else:
            continue
        for key, child in items:
            if id(child) not in new:
                continue
            if isinstance(parent, (list, dict, nnx.List, nnx.Dict)):
                parent[key] = new[id(child)]
            else:
                setattr(parent, key, new[id(child)])


class MomentPropagated(nnx.Module):
    r"""A bayesianized NNX model run by moment propagation (``bayesianize(..., method='clt')``).

    ``self.model`` is the model with its converted layers (the LR layers' parameters); the call
    is :func:`~bayeslayers_jax.core.propagate_moments` of ``self.model``'s call in MAP mode,
    with the posterior means ``weight_mu``/``bias_mu`` and the variances :math:`\sigma^2` of
    every converted layer as the random inputs, every other variable deterministic: the
    mean-field Gaussian moments of the output (exact through the affine maps; each
    nonlinearity moment-matched, what ``propagate_moments`` supports). No key is used.

    Examples:
        >>> import jax.numpy as jnp
        >>> from flax import nnx
        >>> import bayeslayers_jax.nnx as bnx
        >>> net = nnx.Sequential(nnx.Linear(3, 8, rngs=nnx.Rngs(0)), nnx.relu, nnx.Linear(8, 1, rngs=nnx.Rngs(1)))
        >>> model = bnx.bayesianize(net, 'clt', rngs=nnx.Rngs(2))
        >>> mean, var = model(jnp.ones((4, 3)))
        >>> mean.shape, bool(jnp.all(var > 0)), model(jnp.ones((4, 3)), map=True)[1]
        ((4, 1), True, None)
    """

    def __init__(self, model: nnx.Module) -> None:
        self.model = model

    def __call__(self, *args: Any, map: bool | None = None, **kwargs: Any) -> tuple[Any, Any]:
        """``(mean, var)`` of ``self.model(*args, **kwargs)`` (``map=True``: ``(out, None)``).

        Args:
            *args: the model's positional inputs (deterministic).
            map: MAP mode: the means' forward pass, ``var`` ``None``.
            **kwargs: the model's keyword arguments.

        Returns:
            ``(mean, var)``, each with the structure of the model's output.
        """
        graphdef, params, rest = nnx.split(nnx.view(self.model, map=True), nnx.Param, ...)
        if first_not_none(map, False):
            out = nnx.merge(graphdef, params, rest)(*args, **kwargs)
            return out, jax.tree_util.tree_map(lambda _: None, out)
        pure = nnx.to_pure_dict(params)
        variances = jax.tree_util.tree_map(lambda _: None, pure)
        for path, layer in nnx.iter_graph(self.model):
            if isinstance(layer, BayesianLinear):
                w_var, b_var = layer.var()
                node = variances
                for key in path:
                    node = node[key]
                node["weight_mu"] = w_var
                if b_var is not None:
                    node["bias_mu"] = b_var

        def fn(values: Any, *inputs: Any) -> Any:
            state = nnx.State(params)
            nnx.replace_by_pure_dict(state, values)
            return nnx.merge(graphdef, state, rest)(*inputs, **kwargs)

        return propagate_moments(fn)((pure, *args), (variances, *(None for _ in args)))


def bayesianize(
    model: nnx.Module,
    method: str = "lr",
    *,
    rngs: nnx.Rngs,
    include: str | type | Sequence[str | type] | None = None,
    exclude: str | type | Sequence[str | type] | None = None,
    prior_mean: float = 0.0,
    prior_std: float = 1.0,
    init_std: float | None = None,
    use_softplus: bool = False,
    moped: bool = False,
    moped_delta: float = rules.MOPED_DELTA,
    moped_prior: bool = False,
    moped_prior_std: float | None = None,
) -> nnx.Module:
    r"""Makes the ``nnx.Linear``/``nnx.Conv`` layers of a ``flax.nnx`` model Bayesian (mean-field Gaussian).

    Returns a **new model** (:func:`flax.nnx.clone` of ``model``, shared references kept)
    in which every selected ``nnx.Linear`` and ``nnx.Conv`` (exactly these types: a subclass
    may change the call) is replaced by the package's layer of the method, with the layer's
    ``use_bias``, ``dtype``, ``param_dtype`` and, for a convolution, ``kernel_size``,
    ``strides``, ``padding``, ``input_dilation``, ``kernel_dilation`` and
    ``feature_group_count``. ``model`` itself is left untouched: it stays the deterministic
    model (e.g. the pretrained one MOPED starts from), and an error half-way leaves nothing
    changed. Every other module (``BatchNorm``, ``Dropout``, ...) is the clone's, unchanged.

    =============  ===============================================  =============================
    method         layers                                           call returns
    =============  ===============================================  =============================
    ``'bbb'``      :class:`BBBLinear`, :class:`BBBConv`             the model's output, sampled
    ``'lr'``       :class:`LRLinear`, :class:`LRConv`               the model's output, sampled
    ``'flipout'``  :class:`FlipoutLinear`, :class:`FlipoutConv`     the model's output, sampled
    ``'clt'``      :class:`LRLinear`, :class:`LRConv` (parameters)  ``(mean, var)``, no key
    =============  ===============================================  =============================

    Each converted layer has ``weight_mu``, ``weight_rho``, ``bias_mu``, ``bias_rho`` with
    ``rho = log(init_std)`` (``INIT_RHO`` if ``None``; ``inv_softplus`` with
    ``use_softplus``) and the prior :math:`\mathcal N(\text{prior\_mean},
    \text{prior\_std}^2)`. Its means are drawn by the package's layer initializers from
    ``rngs``' ``'params'`` stream (``nnx.Linear`` does not keep its ``kernel_init``), or,
    with **MOPED** (``moped=True``, Krishnan et al. 2020), are the model's current
    kernels and biases, with initial std ``moped_delta * |w|`` floored at
    :data:`~bayeslayers_jax._bayesianize_rules.MOPED_MIN_STD`; ``moped_prior=True`` centres
    the prior there too (std ``delta |w|``, or ``moped_prior_std``). Then the MAP output
    equals the model's.

    **Keys and MAP.** A plain model's ``__call__`` takes no ``rng=``/``map=``, so the
    converted layers sample from their own ``'sample'`` streams: give ``rngs`` one
    (``nnx.Rngs(params=0, sample=1)``; :func:`flax.nnx.reseed` re-keys them,
    ``nnx.reseed(model, sample=key)``); without it a sampling call raises. MAP mode (the
    means only, no key) is ``nnx.view(model, map=True)``, which sets ``map`` on every
    converted layer. :func:`total_kl` sums their KL; :func:`elbo_loss` works on the model
    (without ``map=``/``rng=``, which it would pass to the model's call; for the MAP model
    give it the view). ``'clt'`` returns a :class:`MomentPropagated` wrapping the
    converted model: :func:`~bayeslayers_jax.core.propagate_moments` of its call (what
    that supports, e.g. ReLU/tanh/GELU, pooling, LayerNorm, BatchNorm in inference mode),
    ``map=True`` at its call gives ``(out, None)``.

    Args:
        model: a ``flax.nnx`` model (or a single ``nnx.Linear``/``nnx.Conv``).
        method: ``'bbb'``, ``'lr'``, ``'flipout'`` or ``'clt'`` (the table above).
        rngs: ``nnx.Rngs``: ``'params'`` initializes the means, a ``'sample'`` stream gives
            every converted layer its own noise stream.
        include: only the layers matching one of these: fnmatch patterns on the attribute
            path (``'layers/0'``, ``'encoder/*'``) or its last part (``'linear1'``), or
            Module types. ``None``: every ``nnx.Linear``/``nnx.Conv``.
        exclude: layers matching one of these stay deterministic.
        prior_mean, prior_std: the scalar prior.
        init_std: initial posterior std (``None``: ``exp(-4.6) ~ 0.01``).
        use_softplus: ``std = softplus(rho)``.
        moped: MOPED initialization from the model's kernels and biases.
        moped_delta, moped_prior, moped_prior_std: MOPED options (above).

    Returns:
        The new model (``'clt'``: a :class:`MomentPropagated`).

    Raises:
        ValueError: an unknown ``method``, no convertible layer, an ``include``/``exclude``
            pattern that matches no ``nnx.Linear``/``nnx.Conv``, a layer option the package's
            layers cannot honour (``precision``, ``mask``, a custom ``dot_general``, ...;
            the message names the layer), a layer inside a tuple.

    References:
        Krishnan, Subedar and Tickoo, "Specifying Weight Priors in Bayesian Deep Neural
        Networks with Empirical Bayes", AAAI 2020 (MOPED).

    Examples:
        >>> import jax.numpy as jnp
        >>> from flax import nnx
        >>> import bayeslayers_jax.nnx as bnx
        >>> class MLP(nnx.Module):
        ...     def __init__(self, rngs):
        ...         self.linear1, self.linear2 = nnx.Linear(3, 8, rngs=rngs), nnx.Linear(8, 1, rngs=rngs)
        ...     def __call__(self, x):
        ...         return self.linear2(nnx.relu(self.linear1(x)))
        >>> net, x = MLP(nnx.Rngs(0)), jnp.ones((4, 3))
        >>> bnet = bnx.bayesianize(net, 'lr', rngs=nnx.Rngs(params=1, sample=2), moped=True)
        >>> type(bnet.linear1).__name__, type(net.linear1).__name__  # net is unchanged
        ('LRLinear', 'Linear')
        >>> bnet(x).shape, bool(bnx.total_kl(bnet) > 0)
        ((4, 1), True)
        >>> bool(jnp.all(nnx.view(bnet, map=True)(x) == net(x)))  # MOPED: MAP is the model
        True
    """
    rules.check_options(
        method=method, prior_mean=prior_mean, prior_std=prior_std, init_std=init_std, moped_delta=moped_delta,
        moped_prior_std=moped_prior_std, include=include, exclude=exclude,
    )
    if not isinstance(model, nnx.Module):
        raise TypeError(f"model must be an nnx.Module, got {type(model).__name__}")
    if not isinstance(rngs, nnx.Rngs):
        raise TypeError(f"rngs must be an nnx.Rngs, got {rngs!r}")
    include_p, exclude_p = rules.as_patterns(include, "include"), rules.as_patterns(exclude, "exclude")

    def matches(p: Any, node: nnx.Module, path: str) -> bool:
        return isinstance(node, p) if isinstance(p, type) else rules.pattern_matches(p, path)

    clone = nnx.clone(model)
    found = [("/".join(map(str, path)), node) for path, node in nnx.iter_graph(clone)
             if type(node) in _CONVERTIBLE]
    for field, patterns in (("include", include_p), ("exclude", exclude_p)):
        for p in patterns:
            if isinstance(p, str) and not any(rules.pattern_matches(p, path) for path, _ in found):
                raise ValueError(
                    f"{field} pattern {p!r} matches no nnx.Linear/nnx.Conv of {type(model).__name__} "
                    f"(its layers: {[path for path, _ in found]})"
                )
    selected = [(path, node) for path, node in found
                if (not include_p or any(matches(p, node, path) for p in include_p))
                and not any(matches(p, node, path) for p in exclude_p)]
    if not selected:
        raise ValueError(
            f"bayesianize found no nnx.Linear/nnx.Conv to convert in {type(model).__name__} "
            f"(its layers: {[path for path, _ in found]}, include={include!r}, exclude={exclude!r})"
        )
    rho_init = rules.rho_initializer(init_std, use_softplus)
    new: dict[int, BayesianLinear] = {}
    for path, node in selected:
        _check_layer(node, path or type(model).__name__)
        fields = dict(prior_mean=prior_mean, prior_std=prior_std, use_softplus=use_softplus,
                      weight_rho_init=rho_init, bias_rho_init=rho_init)
        if moped:
            fields.update(_moped_fields(node, delta=moped_delta, prior=moped_prior, prior_std=moped_prior_std,
                                        use_softplus=use_softplus))
        new[id(node)] = _build(node, method, rngs, **fields)
    if id(clone) in new:  # the model is itself a Linear/Conv
        out = new[id(clone)]
    else:
        _replace(clone, new)
        out = clone
    return MomentPropagated(out) if method == "clt" else out
