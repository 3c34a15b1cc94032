r"""A minibatch training loop: shuffled epochs, one jit-compiled step, a loss history.

:func:`fit` trains any model of this package (and any ``Ensemble`` or
:class:`~bayeslayers_jax.LearnedNoise` of one) on :func:`~bayeslayers_jax.elbo_loss`, or on a
loss of your own, with any ``optax`` optimizer. Each epoch draws a fresh permutation of the
training set from the key, cuts it into ``N // batch_size`` minibatches (the last
``N mod batch_size`` examples of the permutation wait for a later epoch: every batch has the
same shape, so one compiled step serves them all) and runs the steps with ``jax.lax.scan``
inside one jit-compiled epoch: there is no Python loop over examples or steps, only over
epochs (where ``callback`` may print progress).
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from bayeslayers_jax.linen import make_elbo_loss_fn

__all__ = ["FitResult", "fit", "train_step"]


class FitResult(NamedTuple):
    """What :func:`fit` returns.

    Attributes:
      params: the trained ``'params'`` collection (merge it back:
        ``{**variables, 'params': result.params}``).
      opt_state: the optimizer state (to continue training).
      history: a dict of arrays of shape ``(epochs,)``: ``'loss'`` (the epoch's mean
        minibatch loss) and the epoch means of every entry of the loss's ``aux`` (for
        :func:`~bayeslayers_jax.elbo_loss`: ``'nll'`` and ``'kl'``, with the member axis
        last for ensembles, whose member losses are ``'member_loss'``).

    Examples:
      >>> import jax.numpy as jnp
      >>> r = FitResult(params={'w': jnp.zeros(2)}, opt_state=(), history={'loss': jnp.ones(3)})
      >>> params, opt_state, history = r  # a NamedTuple: unpacks
      >>> history['loss'].shape
      (3,)
    """

    params: Any
    opt_state: Any
    history: dict


def _num_examples(data) -> int:
    sizes = {int(np.shape(leaf)[0]) if np.ndim(leaf) else -1 for leaf in jax.tree_util.tree_leaves(data)}
    if len(sizes) != 1 or -1 in sizes:
        raise ValueError(
            "x and y must be arrays (or tuples of arrays) with one common leading example axis, "
            f"got leading sizes {sorted(sizes)}"
        )
    return sizes.pop()


def fit(model, variables, x, y, *, epochs, batch_size, optimizer, key, loss_fn=None, opt_state=None,
        callback: Callable[[int, dict], None] | None = None, **elbo_kwargs) -> FitResult:
    r"""Trains ``variables['params']`` for ``epochs`` shuffled epochs of minibatches.

    The default loss is :func:`~bayeslayers_jax.elbo_loss` with ``num_train_examples = N``
    (the size of ``x``) and ``**elbo_kwargs`` (``likelihood``, ``noise_var``, ``map``,
    ``kl_weight``, ``clt_categorical``, ...), through
    :func:`~bayeslayers_jax.make_elbo_loss_fn`: the per-example negative ELBO, so the
    learning rate does not depend on the batch size. Every step gets its own key (one split
    per step from ``key``, which also draws the epoch permutations), used for weight samples
    and Monte Carlo logit draws.

    Args:
      model: the network (a ``flax.linen`` module, an ``Ensemble``, a ``LearnedNoise``); only
        used to build the default loss (ignored with ``loss_fn``).
      variables: its variables; ``'params'`` are trained, the rest (``'prior'``) are fixed.
      x: inputs with the example axis first (or a tuple of such arrays).
      y: targets with the example axis first (an ensemble's per-member targets are not
        supported here: pass shared targets).
      epochs: number of passes (a positive int).
      batch_size: minibatch size (a positive int, at most ``N``).
      optimizer: an ``optax.GradientTransformation``.
      key: PRNG key (keyword-only).
      loss_fn: optional ``loss_fn(params, (x_batch, y_batch), key) -> (loss, aux)`` replacing
        the ELBO (then ``elbo_kwargs`` must be empty); ``aux`` is a dict of arrays.
      opt_state: optimizer state to continue from (default ``optimizer.init(params)``).
      callback: called after every epoch as ``callback(epoch, {name: value})`` with the
        epoch's means as Python floats or NumPy arrays (this syncs with the device once per
        epoch; leave it ``None`` for none).
      **elbo_kwargs: keyword arguments of :func:`~bayeslayers_jax.elbo_loss`.

    Returns:
      A :class:`FitResult` ``(params, opt_state, history)``.

    Examples:
      >>> import jax, jax.numpy as jnp, optax
      >>> from bayeslayers_jax import BayesianMLP, LearnedNoise
      >>> x = jnp.linspace(-1, 1, 64)[:, None]
      >>> y = 2 * x + 0.1 * jax.random.normal(jax.random.key(0), x.shape)
      >>> model = LearnedNoise(BayesianMLP((16, 1), layer_type='clt'))
      >>> v = model.init(jax.random.key(1), x)
      >>> result = fit(model, v, x, y, epochs=5, batch_size=16, optimizer=optax.adam(1e-2),
      ...              key=jax.random.key(2))
      >>> result.history['loss'].shape, bool(result.history['loss'][-1] < result.history['loss'][0])
      ((5,), True)
    """
    for name, value in (("epochs", epochs), ("batch_size", batch_size)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise ValueError(f"{name} must be a positive int, got {value!r}")
    if not isinstance(optimizer, optax.GradientTransformation):
        raise TypeError(f"optimizer must be an optax.GradientTransformation, got {type(optimizer).__name__}")
    n = _num_examples((x, y))
    if batch_size > n:
        raise ValueError(f"batch_size must be at most the number of examples {n}, got {batch_size}")
    if loss_fn is None:
        loss_fn = make_elbo_loss_fn(model, variables, num_train_examples=n, has_aux=True, **elbo_kwargs)
    elif elbo_kwargs:
        raise TypeError(f"elbo_kwargs {sorted(elbo_kwargs)} are only used without loss_fn")
    params = variables["params"]
    if opt_state is None:
        opt_state = optimizer.init(params)
    steps = n // batch_size
    data = (x, y)

    one_step = train_step(loss_fn, optimizer, has_aux=True)

    def step(carry, inputs):
        params, opt_state = carry
        idx, k = inputs
        batch = jax.tree.map(lambda a: jnp.take(a, idx, axis=0), data)
        params, opt_state, (loss, aux) = one_step(params, opt_state, batch, k)
        return (params, opt_state), (loss, aux)

    @jax.jit
    def epoch(params, opt_state, k):
        k_perm, k_steps = jax.random.split(k)
        idx = jax.random.permutation(k_perm, n)[: steps * batch_size].reshape(steps, batch_size)
        (params, opt_state), (loss, aux) = jax.lax.scan(
            step, (params, opt_state), (idx, jax.random.split(k_steps, steps)))
        means = {("member_loss" if name == "loss" else name): jnp.mean(a, axis=0) for name, a in aux.items()}
        means["loss"] = jnp.mean(loss)
        return params, opt_state, means

    records = []
    for e, k in enumerate(jax.random.split(key, epochs)):
        params, opt_state, means = epoch(params, opt_state, k)
        records.append(means)
        if callback is not None:
            callback(e, jax.tree.map(lambda a: a.item() if a.ndim == 0 else np.asarray(a), means))
    history = jax.tree.map(lambda *a: jnp.stack(a), *records)
    return FitResult(params=params, opt_state=opt_state, history=history)


def train_step(
    loss_fn: Callable[..., Any], optimizer: optax.GradientTransformation, *, has_aux: bool = False
) -> Callable[..., Any]:
    """The plain (unjitted, single-program) optimizer step for ``loss_fn``.

    Args:
      loss_fn: ``loss_fn(params, batch, key) -> loss`` (or ``(loss, aux)`` with ``has_aux``),
        e.g. built with :func:`bayeslayers_jax.elbo_loss`.
      optimizer: an optax gradient transformation.
      has_aux: whether ``loss_fn`` also returns auxiliary outputs.

    Returns:
      ``step(params, opt_state, batch, key) -> (params, opt_state, loss)`` (``loss`` is
      ``(loss, aux)`` with ``has_aux``).

    Examples:
      Least squares for ``y = 2 x`` (any ``loss_fn(params, batch, key)`` works the same way):

      >>> import jax, jax.numpy as jnp, optax
      >>> from bayeslayers_jax import train_step
      >>> def loss_fn(params, batch, key):
      ...     x, y = batch
      ...     return jnp.mean((params["w"] * x - y) ** 2)
      >>> optimizer = optax.sgd(0.1)
      >>> step = jax.jit(train_step(loss_fn, optimizer))
      >>> params = {"w": jnp.zeros(())}
      >>> opt_state = optimizer.init(params)
      >>> batch = (jnp.array([1.0, 2.0]), jnp.array([2.0, 4.0]))
      >>> for _ in range(50):
      ...     params, opt_state, loss = step(params, opt_state, batch, jax.random.key(0))
      >>> print(round(float(params["w"]), 4), float(loss) < 1e-6)
      2.0 True
    """

    def step(params, opt_state, batch, key):
        loss, grads = jax.value_and_grad(loss_fn, has_aux=has_aux)(params, batch, key)
        # optax computes float ** int32 (Adam's bias correction, schedules): standard promotion
        # there, so the step also runs under jax_numpy_dtype_promotion='strict'.
        with jax.numpy_dtype_promotion("standard"):
            updates, opt_state = optimizer.update(grads, opt_state, params)
            params = optax.apply_updates(params, updates)
        return params, opt_state, loss

    return step
