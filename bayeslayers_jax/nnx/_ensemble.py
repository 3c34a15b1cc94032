"""NNX ensembles (members vectorized with ``nnx.vmap``) and the KL of an NNX model.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from bayeslayers_jax.nnx._linear import BayesianLinear

__all__ = ["Ensemble", "total_kl"]

Array = jax.Array
Dtype = Any
Initializer = Callable[..., Array]


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
        if isinstance(module, Ensemble) or (isinstance(module, BayesianLinear) and module._has_std):
            total = total + module.kl()
    return total
