"""Helpers on a linen model's variables dict: the KL collection, priors, ensemble members."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from bayeslayers_jax import _layer_core as core

__all__ = ["total_kl", "without_kl", "update_prior", "member"]

Array = jax.Array
Dtype = Any


def total_kl(kl_collection: Any, *, per_member: bool = False) -> Array:
    """Sums every KL term sown by the Bayesian layers of a model.

    For an :class:`~bayeslayers_jax.Ensemble` every sown value has a leading member axis:
    the default sums over it too (the KL of the whole ensemble, i.e. the sum of the members'
    KLs), ``per_member=True`` keeps it and returns one KL per member.

    Args:
        kl_collection: the ``'kl'`` collection returned by
            ``model.apply(variables, ..., mutable=['kl'])`` (either ``state['kl']`` or the
            whole ``state`` dict whose only collection is ``'kl'``), or any pytree of KL
            values.
        per_member: return the KL of each ensemble member, shape ``(members,)``: every leaf
            must then have the member axis first (all of the same length).

    Returns:
        The scalar sum of all leaves (``0.0`` for an empty tree, e.g. a ``'cltdet'`` model);
        with ``per_member`` the per-member sums (an empty tree raises, since the number of
        members is unknown).

    Raises:
        ValueError: with ``per_member``, for an empty tree, a scalar leaf or leaves whose
            first axes differ.

    Examples:
        >>> import jax, jax.numpy as jnp
        >>> from bayeslayers_jax import BayesianMLP, Ensemble
        >>> x = jnp.ones((4, 2))
        >>> model = Ensemble(BayesianMLP((8, 1), layer_type='clt'), 3)
        >>> _, state = model.apply(model.init(jax.random.key(0), x), x, mutable=['kl'])
        >>> total_kl(state).shape, total_kl(state, per_member=True).shape
        ((), (3,))
        >>> bool(jnp.isclose(total_kl(state), total_kl(state, per_member=True).sum()))
        True
    """
    leaves = jax.tree_util.tree_leaves(kl_collection)
    if per_member:
        if not leaves:
            raise ValueError("per_member=True needs sown KL values with a member axis, got an empty tree")
        sizes = {jnp.shape(leaf)[0] if jnp.ndim(leaf) else None for leaf in leaves}
        if None in sizes or len(sizes) != 1:
            raise ValueError(
                "per_member=True needs every KL leaf to have the same leading member axis, got "
                f"shapes {[jnp.shape(leaf) for leaf in leaves]}"
            )
        leaves = [jnp.reshape(leaf, (jnp.shape(leaf)[0], -1)).sum(axis=1) for leaf in leaves]
        total = leaves[0]
        for leaf in leaves[1:]:
            total = total + leaf
        return total
    if not leaves:
        return jnp.asarray(0.0)  # weakly typed: adds to any float dtype under strict promotion
    total = jnp.sum(leaves[0])
    for leaf in leaves[1:]:
        total = total + jnp.sum(leaf)
    return total


def without_kl(variables: Any) -> dict[str, Any]:
    """``variables`` without a stale ``'kl'`` collection (so sown KL values never add up)."""
    return {name: col for name, col in variables.items() if name != "kl"}


def update_prior(variables: Any, layer: str | None = None, **values: Any) -> dict[str, Any]:
    """Returns ``variables`` with one layer's prior replaced: the JAX form of ``update_prior``.

    The prior lives in the non-trainable ``'prior'`` collection; this swaps entries of that
    subtree without touching anything else (the input is not modified).

    **Ensembles.** The variables of an :class:`~bayeslayers_jax.Ensemble` carry a leading
    member axis (detected from the layer's parameters: a ``weight_mu`` of shape
    ``(members, in, out)``); an entry is then stored per member, with its member axis, and a
    value is read as

    * a scalar: the same prior for every member (stored with shape ``(members,)``);
    * shape ``(members,)``: one scalar per member (also accepted as ``(members, 1)`` or
      ``(members, 1, 1)``, the unambiguous form when a bias has ``members`` features);
    * the parameter's own shape (``(in, out)`` or ``(out,)``): the same array for every member;
    * ``(members,)`` followed by the parameter's shape: one array per member.

    The member axis is never dropped: any other shape raises.

    Args:
        variables: a layer's or a model's (or an ensemble's) variables (with a ``'prior'``
            collection).
        layer: the layer's name in a model's ``'prior'`` collection (e.g. ``'layers_1'`` of a
            ``BayesianMLP``); ``None`` for the variables of a single layer.
        **values: any of ``weight_mean``, ``weight_std``, ``bias_mean``, ``bias_std``: a
            scalar or an array of the existing entry's shape (Flax layout), or one of the
            ensemble forms above.

    Returns:
        New variables with those prior entries replaced.

    Raises:
        ValueError: unknown layer or entry, a shape that matches none of the forms above, or
            a std that is not finite and > 0.

    Examples:
        >>> import jax, jax.numpy as jnp
        >>> from bayeslayers_jax import BayesianMLP, Ensemble
        >>> x = jnp.ones((2, 3))
        >>> v = BayesianMLP((4, 1)).init(jax.random.key(0), x)
        >>> print(update_prior(v, 'layers_1', weight_std=0.5)['prior']['layers_1']['weight_std'])
        0.5
        >>> ens = Ensemble(BayesianMLP((4, 1)), 3)
        >>> ve = ens.init(jax.random.key(0), x)
        >>> print(update_prior(ve, 'layers_1', weight_std=0.5)['prior']['layers_1']['weight_std'])
        [0.5 0.5 0.5]
        >>> per_member = jnp.array([0.1, 0.2, 0.3])
        >>> print(update_prior(ve, 'layers_1', weight_std=per_member)['prior']['layers_1']['weight_std'])
        [0.1 0.2 0.3]
    """
    if "prior" not in variables:
        raise ValueError("variables have no 'prior' collection (CLTLinearDet layers have no prior)")
    prior = dict(variables["prior"])
    table = prior if layer is None else prior.get(layer)
    if table is None:
        raise ValueError(f"layer {layer!r} has no prior; layers with a prior: {sorted(prior)}")
    table = dict(table)
    params = variables.get("params", {})
    params = params if layer is None else params.get(layer, {})

    def stacked(value: Any, lead: tuple[int, ...], shape: tuple[int, ...], dtype: Dtype, name: str) -> Array:
        """A prior value for parameters of shape ``lead + shape`` (``lead``: member axes)."""
        arr = jnp.asarray(value, dtype=dtype)
        per_member_scalar = {lead, lead + (1,) * len(shape)}
        if lead == shape and arr.shape == lead and len(shape) > 0:
            raise ValueError(
                f"{name} of shape {arr.shape} is ambiguous for {lead[0]} members and parameters of "
                f"shape {shape}: pass shape {lead + (1,) * len(shape)} for one value per member, or "
                f"shape {lead + shape} for the same array for every member"
            )
        if arr.size == 1:
            return jnp.full(lead, jnp.reshape(arr, ()), dtype)
        if arr.shape in per_member_scalar:
            return jnp.reshape(arr, lead)
        if arr.shape == shape:
            return jnp.broadcast_to(arr, lead + shape)
        if arr.shape == lead + shape:
            return arr
        raise ValueError(
            f"{name} of an ensemble layer ({lead[0]} members, parameter shape {shape}) must be a "
            f"scalar, shape {lead} (one per member), {shape} (shared) or {lead + shape} (one "
            f"array per member), got shape {arr.shape}"
        )

    for name, value in values.items():
        if name not in table:
            raise ValueError(f"unknown prior entry {name!r}; this layer has {sorted(table)}")
        core.check_prior_value(name, value)
        # An array prior has the shape of its parameter (the current entry may be a scalar).
        is_weight = name.startswith("weight")
        reference = params.get("weight_mu" if is_weight else "bias_mu", table[name])
        ref_shape = tuple(jnp.shape(reference))
        num_lead = len(ref_shape) - (2 if is_weight else 1)
        if is_weight and "bias_mu" in params:  # any kernel rank (convolutions): the bias is (features,)
            num_lead = jnp.ndim(params["bias_mu"]) - 1
        elif is_weight and jnp.ndim(table[name]) < len(ref_shape):  # a scalar prior, per member or not
            num_lead = jnp.ndim(table[name])
        dtype = jnp.result_type(table[name])
        if reference is table[name] or num_lead <= 0:
            table[name] = core.prior_array(value, ref_shape, dtype, name)
        else:  # an ensemble: keep the member axes
            lead = ref_shape[:num_lead]
            table[name] = stacked(value, lead, ref_shape[num_lead:], dtype, name)
    if layer is None:
        return {**variables, "prior": table}
    return {**variables, "prior": {**prior, layer: table}}


def member(variables: Any, index: int) -> Any:
    """Member ``index``'s variables from an ensemble's stacked variables (usable with ``module.apply``).

    Args:
      variables: an :class:`Ensemble`'s variables (every leaf has the member axis first).
      index: the member, ``0 <= index < size``.

    Returns:
      The same tree with the member axis indexed away.

    Examples:
      >>> import jax, jax.numpy as jnp, flax.linen as nn
      >>> from bayeslayers_jax import Ensemble
      >>> ens = Ensemble(nn.Dense(2), 3)
      >>> v = ens.init(jax.random.key(0), jnp.ones((1, 4)))
      >>> member(v, 1)['params']['kernel'].shape
      (4, 2)
    """
    leaves = jax.tree_util.tree_leaves(variables)
    if not leaves:
        raise ValueError("variables hold no arrays")
    size = int(np.shape(leaves[0])[0]) if np.ndim(leaves[0]) else 0
    if isinstance(index, bool) or not isinstance(index, (int, np.integer)) or not 0 <= index < size:
        raise ValueError(f"index must be an int in [0, {size}) (the member axis), got {index!r}")
    return jax.tree.map(lambda a: a[index], variables)
