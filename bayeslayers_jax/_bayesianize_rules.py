"""The rules of ``bayesianize`` that both front ends share (pure: no Flax module is touched).

The linen :func:`~bayeslayers_jax.linen._bayesianize.bayesianize` (interception) and the NNX
:func:`~bayeslayers_jax.nnx.bayesianize` (graph surgery) convert layers in different ways,
but select them, check their options, initialize ``rho`` and apply MOPED by the rules here,
so the two give the same parameters for the same model.
"""

from __future__ import annotations

import fnmatch
from typing import Any, Callable

import jax
import jax.numpy as jnp

from bayeslayers_jax import _layer_core as core
from bayeslayers_jax.core._transforms import inv_softplus

__all__ = [
    "MOPED_DELTA", "MOPED_MIN_STD", "METHODS", "std_to_rho", "rho_initializer", "moped_std",
    "moped_values", "as_patterns", "pattern_matches", "check_options",
]

Array = jax.Array

#: MOPED's default ``delta`` (initial posterior std ``delta * |w|``): the value Krishnan et
#: al. (2020) use in their experiments.
MOPED_DELTA = 0.1

#: Smallest initial std of a MOPED posterior (a pretrained weight of exactly 0 would
#: otherwise get ``std = 0``, ``rho = -inf`` and an infinite KL).
MOPED_MIN_STD = 1e-8

#: The methods of ``bayesianize``.
METHODS = ("bbb", "lr", "flipout", "clt")


def std_to_rho(std: Any, use_softplus: bool) -> Any:
    """The ``rho`` of a std: ``log(std)``, or ``inv_softplus(std)`` with ``use_softplus``."""
    return inv_softplus(std) if use_softplus else jnp.log(std)


def rho_initializer(init_std: float | None, use_softplus: bool) -> Callable[..., Array]:
    """The initializer of every converted ``rho``: ``INIT_RHO``, or the ``rho`` of ``init_std``
    (computed in the parameter dtype)."""

    def init(key: Array, shape: tuple[int, ...], dtype: Any = jnp.float32) -> Array:
        if init_std is None:
            return jnp.full(shape, core.INIT_RHO, dtype)
        return jnp.full(shape, std_to_rho(jnp.asarray(init_std, dtype), use_softplus), dtype)

    return init


def moped_std(w: Array, delta: float) -> Array:
    """MOPED's initial std ``delta * |w|``, floored at :data:`MOPED_MIN_STD` (``w``'s dtype)."""
    return jnp.maximum(delta * jnp.abs(w), jnp.asarray(MOPED_MIN_STD, w.dtype))


def moped_values(w: Array, *, delta: float, use_softplus: bool, prior_std: float | None) -> dict[str, Array]:
    """MOPED's values for one pretrained kernel or bias ``w``: ``mu``, ``rho`` and the
    centred prior's ``mean`` and ``std`` (``delta * |w|`` floored, or ``prior_std``)."""
    std = moped_std(w, delta)
    return {
        "mu": w,
        "rho": std_to_rho(std, use_softplus).astype(w.dtype),
        "mean": w,
        "std": std if prior_std is None else jnp.full(w.shape, prior_std, w.dtype),
    }


def as_patterns(value: Any, name: str) -> tuple:
    """``include``/``exclude`` as a tuple of fnmatch patterns (str) and Module types."""
    if value is None:
        return ()
    if isinstance(value, (str, type)):
        value = (value,)
    value = tuple(value)
    for v in value:
        if not isinstance(v, (str, type)):
            raise TypeError(f"{name} entries must be str patterns or Module types, got {v!r}")
    return value


def pattern_matches(pattern: str, path: str) -> bool:
    """A str pattern matches a layer's ``/``-joined path or its last part (its name)."""
    return fnmatch.fnmatchcase(path, pattern) or fnmatch.fnmatchcase(path.rsplit("/", 1)[-1], pattern)


def check_options(*, method: str, prior_mean: Any, prior_std: Any, init_std: Any, moped_delta: Any,
                  moped_prior_std: Any, include: Any, exclude: Any) -> None:
    """The checks of ``bayesianize``'s options (``ValueError``/``TypeError`` naming the option)."""
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    core.check_prior_value("prior_mean", prior_mean)
    core.check_prior_value("prior_std", prior_std)
    if init_std is not None:
        core.check_prior_value("init_std", init_std)
    core.check_prior_value("moped_delta", moped_delta, "moped_delta")
    if moped_prior_std is not None:
        core.check_prior_value("moped_prior_std", moped_prior_std)
    as_patterns(include, "include")
    as_patterns(exclude, "exclude")
