"""The NNX ELBO: one forward pass, then the front-end-neutral :func:`~bayeslayers_jax.elbo_from_outputs`.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
from flax import nnx

from bayeslayers_jax.losses._elbo import as_inputs, elbo_from_outputs, ensemble_elbo_from_outputs, neg_log_prior
from bayeslayers_jax.nnx._ensemble import Ensemble, total_kl
from bayeslayers_jax.nnx._interop import linen_collections
from bayeslayers_jax.nnx._noise import learned_noise_var

__all__ = ["elbo_loss"]

Array = jax.Array
Dtype = Any
Initializer = Callable[..., Array]


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
    :func:`~bayeslayers_jax.elbo_from_outputs` with :func:`total_kl` (or, with
    ``map=True``, the means only and :func:`~bayeslayers_jax.neg_log_prior` of the
    parameters), so the likelihoods, checks and normalization are the linen ones:

    .. math::
        \mathcal{L} = \frac{1}{B}\sum_{i} \mathrm{NLL}_i + \beta\,\frac{\mathrm{KL}}{N}

    For an :class:`Ensemble` the loss is the sum of the members' losses (each member's
    gradient is the one it would get alone); targets are shared or stacked per member, and
    ``aux`` holds per-member ``'nll'``, ``'kl'`` and ``'loss'``, as for linen ensembles.

    A :class:`~bayeslayers_jax.nnx._noise.LearnedNoise` model (or an ensemble of them) uses
    its own noise ``exp(2 * noise_log_std)`` (leave ``noise_var`` unset; only the Gaussian
    likelihood), so the gradient trains it, as the linen :func:`bayeslayers_jax.elbo_loss`.

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
            :func:`~bayeslayers_jax.elbo_from_outputs`, which checks them.

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
    # A LearnedNoise model's Gaussian noise is its own parameter (as in the linen elbo_loss).
    learned = learned_noise_var(model)
    if learned is not None:
        likelihood = options.get("likelihood", "gaussian")
        if likelihood != "gaussian":
            raise ValueError(f"a LearnedNoise model has a Gaussian observation noise, but likelihood={likelihood!r}")
        if options.get("noise_var") is not None:
            raise ValueError(
                f"the model learns its noise (LearnedNoise): pass noise_var=None, got noise_var={options['noise_var']!r}"
            )
        options["noise_var"] = learned
    inputs = as_inputs(x)
    kwargs: dict[str, Any] = {"map": True} if map else ({} if rng is None else {"rng": rng})
    out = model(*inputs, **kwargs)

    def kl_of(member: nnx.Module) -> Array:
        if map:
            params, prior = linen_collections(member)
            return neg_log_prior(params, prior)
        return total_kl(member)

    # The Monte Carlo likelihoods (a CLT classifier's logits) draw from ``rng`` unless a
    # ``key`` is given; an ensemble's members get independent keys.
    key = options.pop("key", None)
    if key is None and not map:
        key = rng
    if not isinstance(model, Ensemble):
        return elbo_from_outputs(
            out, y, kl_of(model), num_train_examples=num_train_examples, key=key, **options
        )
    kl = nnx.vmap(lambda m: jnp.asarray(kl_of(m)), in_axes=0, out_axes=0)(model.members)
    return ensemble_elbo_from_outputs(
        out, y, kl, num_train_examples=num_train_examples, key=key,
        noise_axis=None if learned is None else 0, **options,
    )
