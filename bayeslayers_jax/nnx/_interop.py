"""Interop with the linen front end through plain variable dicts (the NNX paths are linen's).
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from flax import traverse_util

from bayeslayers_jax.nnx._ensemble import Ensemble
from bayeslayers_jax.nnx._linear import Prior

__all__ = ["to_linen", "from_linen", "linen_collections"]

Array = jax.Array
Dtype = Any
Initializer = Callable[..., Array]


# ----------------------------------------------------------------------------- interop
def linen_collections(model: nnx.Module) -> tuple[dict[str, Any], dict[str, Any]]:
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
    params, prior = linen_collections(_target(model))
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
