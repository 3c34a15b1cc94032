"""Private: the ``'clt'`` output of :func:`~bayeslayers_jax.bayesianize` (moment propagation).

A bayesianized model with ``method='clt'`` keeps its converted layers' ``weight_mu`` /
``weight_rho`` / ``bias_mu`` / ``bias_rho`` exactly as the sampling methods do. Its output is
:func:`~bayeslayers_jax.core.propagate_moments` of the *wrapped model's own* ``apply``, called
with the deterministic variables in which every converted layer's ``kernel`` / ``bias`` are the
posterior means, and variances that are the posterior variances
(:func:`~bayeslayers_jax._layer_core.param_vars`) at those layers and ``None`` (deterministic)
everywhere else. No moment formula is restated here.
"""

from __future__ import annotations

import functools
from typing import Any, Iterable

import flax.linen as nn
from flax import traverse_util
from flax.core import meta

from bayeslayers_jax import _layer_core as core
from bayeslayers_jax.core import propagate_moments

__all__ = ["clt_moments"]

#: Collections the wrapped model itself never reads (the Bayesian layers' own bookkeeping).
_DROPPED = ("prior", "kl", "intermediates")


def clt_moments(model: nn.Module, variables: Any, converted: Iterable[tuple[str, ...]],
                use_softplus: bool, args: tuple, kwargs: dict) -> tuple[Any, Any]:
    """``(mean, var)`` of ``model(*args, **kwargs)`` with Gaussian weights at ``converted``.

    Args:
        model: the wrapped (deterministic) model, bound or not.
        variables: the bayesianized variables (``weight_mu``... at the converted layers).
        converted: paths (tuples of names, relative to the model) of the converted layers.
        use_softplus: ``std = softplus(rho)`` instead of ``exp(rho)``.
        args, kwargs: the model's call; the positional arguments are deterministic.

    Returns:
        The mean-field moments, each with the structure of the model's output.
    """
    flat = traverse_util.flatten_dict(meta.unbox({k: v for k, v in dict(variables).items() if k not in _DROPPED}))
    converted = {_locate(flat, path) for path in converted}
    means: dict[tuple, Any] = {}
    variances: dict[tuple, Any] = {}
    layers: dict[tuple, dict[str, Any]] = {}
    for key, value in flat.items():
        col, path, name = key[0], key[1:-1], key[-1]
        if col == "params" and path in converted and name in core.PARAM_NAMES:
            layers.setdefault(path, {})[name] = value
        else:
            means[key], variances[key] = value, None
    for path, params in layers.items():
        w_var, b_var = core.param_vars(params, use_softplus)
        means[("params",) + path + ("kernel",)] = params["weight_mu"]
        variances[("params",) + path + ("kernel",)] = w_var
        if "bias_mu" in params:
            means[("params",) + path + ("bias",)] = params["bias_mu"]
            variances[("params",) + path + ("bias",)] = b_var
    free = model.clone(parent=None, _deep_clone=True)
    fn = functools.partial(_apply, free, kwargs)
    return propagate_moments(fn)(
        (traverse_util.unflatten_dict(means), *args),
        (traverse_util.unflatten_dict(variances), *(None for _ in args)),
    )


def _locate(flat: dict, path: tuple[str, ...]) -> tuple[str, ...]:
    """The layer's path in the variables: a module's scope path may carry the names of the
    scopes the wrapper shares (e.g. ``('model', 'layers_0')`` for an ``nn.Sequential``)."""
    for i in range(len(path) + 1):
        if ("params",) + path[i:] + ("weight_mu",) in flat:
            return path[i:]
    raise ValueError(f"bayesianize: no weight_mu of the converted layer {'/'.join(path)!r} in the variables")


def _apply(model: nn.Module, kwargs: dict, variables: Any, *args: Any) -> Any:
    return model.apply(variables, *args, **kwargs)
