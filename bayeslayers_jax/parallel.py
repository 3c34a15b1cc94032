"""Data-parallel training with ``jax.sharding`` (the SPMD partitioner), for any of our models.

The recipe is the standard JAX one: a 1-D :class:`jax.sharding.Mesh` over the devices with one
axis (``'batch'``), the minibatch split along its first axis over that mesh
(``NamedSharding(mesh, P('batch'))``), the parameters, optimizer state and PRNG key replicated
(``NamedSharding(mesh, P())``), and one ``jax.jit`` with those shardings. XLA's SPMD
partitioner inserts the cross-device reductions (the mean over the batch in the NLL, the
gradient all-reduce) by itself: the training step is the single-device step, unchanged.

Keys: the step's key is replicated, so every device sees the same key. BBB draws one weight
sample per step from it (the same weights on every device: one sample per minibatch, exactly
as on one device); LR draws noise of the output's shape, which JAX generates sharded along
the batch (``jax_threefry_partitionable``, the default since JAX 0.5) with the *same values* as
on one device. So a sharded run reproduces the single-device run up to floating-point
reduction order (``tests/test_parallel.py`` checks this on 4 simulated CPU devices).

Multi-device use::

    mesh = batch_mesh()                       # all local devices: GPUs of a host, TPU cores
    step = data_parallel_train_step(loss_fn, optax.adam(1e-3), mesh)
    params, opt_state = replicate((params, opt_state), mesh)
    for x, y in batches:                      # the global batch; size divisible by the devices
        key, sub = jax.random.split(key)
        params, opt_state, loss = step(params, opt_state, shard_batch((x, y), mesh), sub)

* One host with several GPUs or a TPU VM: run the script as it is; ``jax.devices()`` lists
  the accelerators and :func:`batch_mesh` uses them all.
* Simulated devices on a CPU (for testing): ``XLA_FLAGS=--xla_force_host_platform_device_count=4``
  in the environment *before* JAX initializes (before the first ``import jax`` that touches a
  device, e.g. ``XLA_FLAGS=... python train.py``).
* Several hosts (TPU pods, multi-node GPU; several CPU processes): call
  ``jax.distributed.initialize()`` first in every process (the same script everywhere; on
  CPUs set ``jax_cpu_collectives_implementation='gloo'`` before it), build the mesh from
  ``jax.devices()`` (global), replicate the same parameters and use the same keys in every
  process, and give each process its rows of the batch with ``shard_batch(local, mesh,
  process_local=True)``. ``tests/test_multiprocess.py`` checks 2 processes x 2 CPU devices
  against 1 process x 4 devices (parameters within 1e-12, float64).

Ensembles: :func:`shard_ensemble` splits an :class:`~bayeslayers_jax.Ensemble`'s member axis
over a mesh axis (:func:`ensemble_mesh`: ``('members', 'batch')``), each device holding whole
members; a plain ``jax.jit`` of the training step follows those shardings.

References:
  JAX documentation, "Distributed arrays and automatic parallelization" (``jax.sharding``);
  Xu et al. 2021, "GSPMD: General and Scalable Parallelization for ML Computation Graphs".
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import jax
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from bayeslayers_jax.training import train_step

__all__ = [
    "batch_mesh",
    "replicate",
    "shard_batch",
    "data_parallel_train_step",
    "ensemble_mesh",
    "shard_ensemble",
]


def batch_mesh(devices: Sequence[jax.Device] | None = None, axis_name: str = "batch") -> Mesh:
    """A 1-D device mesh for data parallelism.

    Args:
      devices: the devices to use (default: all of ``jax.devices()``).
      axis_name: the name of the mesh axis the batch is split over.

    Returns:
      A :class:`jax.sharding.Mesh` of shape ``(len(devices),)``.

    Examples:
      >>> import jax
      >>> from bayeslayers_jax import batch_mesh
      >>> mesh = batch_mesh()
      >>> mesh.axis_names, mesh.size == len(jax.devices())
      (('batch',), True)
    """
    devices = jax.devices() if devices is None else list(devices)
    if len(devices) == 0:
        raise ValueError("devices must hold at least one device, got an empty sequence")
    return Mesh(np.asarray(devices, dtype=object), (axis_name,))


def replicate(tree: Any, mesh: Mesh) -> Any:
    """Places every leaf of ``tree`` on every device of ``mesh`` (``NamedSharding(mesh, P())``).

    Examples:
      >>> import jax.numpy as jnp
      >>> from bayeslayers_jax import batch_mesh, replicate
      >>> params = replicate({"w": jnp.zeros((3, 2))}, batch_mesh())
      >>> params["w"].sharding.is_fully_replicated
      True
    """
    return jax.device_put(tree, NamedSharding(mesh, P()))


def shard_batch(
    batch: Any, mesh: Mesh, axis_name: str | None = None, *, process_local: bool = False
) -> Any:
    """Splits every leaf of ``batch`` along its first axis over the mesh axis ``axis_name``.

    Args:
      batch: an array or a pytree of arrays (e.g. ``(x, y)``) sharing the batch size: the
        global batch, or with ``process_local`` this process's rows of it.
      mesh: the mesh (see :func:`batch_mesh`).
      axis_name: mesh axis to split over (default: the mesh's only axis).
      process_local: ``batch`` holds only this process's rows (a mesh spanning several
        processes, after ``jax.distributed.initialize``): the global array is assembled with
        :func:`jax.make_array_from_process_local_data`, process ``i``'s rows being the
        ``i``-th block of the global batch. With one process it is the same as ``False``.

    Returns:
      The batch as sharded ``jax.Array`` leaves.

    Raises:
      ValueError: if a leaf is a scalar or its batch size is not divisible by the number of
        devices on the axis.

    Examples:
      >>> import jax, jax.numpy as jnp
      >>> from bayeslayers_jax import batch_mesh, shard_batch
      >>> mesh = batch_mesh()
      >>> x, y = shard_batch((jnp.ones((8, 3)), jnp.zeros((8, 1))), mesh)
      >>> x.shape, len(x.addressable_shards) == len(jax.devices())
      ((8, 3), True)
      >>> shard_batch(jnp.float32(1.0), mesh)  # doctest: +ELLIPSIS
      Traceback (most recent call last):
      ...
      ValueError: batch leaf (root) has shape (): its first (batch) axis must be divisible by the ... devices of mesh axis 'batch'
    """
    axis_name = _axis(mesh, axis_name)
    num = mesh.shape[axis_name]
    sharding = NamedSharding(mesh, P(axis_name))
    if process_local:
        # Each process feeds its own devices: the leaf's rows must split over them.
        num = max(1, num * len(mesh.local_devices) // mesh.devices.size)
    for path, leaf in jax.tree_util.tree_leaves_with_path(batch):
        shape = np.shape(leaf)
        if len(shape) == 0 or shape[0] % num != 0:
            raise ValueError(
                f"batch leaf {jax.tree_util.keystr(path) or '(root)'} has shape {shape}: its first "
                f"(batch) axis must be divisible by the {num} devices of mesh axis {axis_name!r}"
            )
    if process_local:
        return jax.tree.map(lambda leaf: jax.make_array_from_process_local_data(sharding, leaf), batch)
    return jax.device_put(batch, sharding)


def _axis(mesh: Mesh, axis_name: str | None) -> str:
    if axis_name is None:
        if len(mesh.axis_names) != 1:
            raise ValueError(f"axis_name is required for a mesh with axes {mesh.axis_names}")
        return mesh.axis_names[0]
    if axis_name not in mesh.axis_names:
        raise ValueError(f"axis_name {axis_name!r} is not an axis of the mesh {mesh.axis_names}")
    return axis_name


def data_parallel_train_step(
    loss_fn: Callable[..., Any],
    optimizer: optax.GradientTransformation,
    mesh: Mesh | None = None,
    *,
    axis_name: str | None = None,
    has_aux: bool = False,
    donate: bool = False,
) -> Callable[..., Any]:
    """A jitted data-parallel training step: batch sharded over ``mesh``, the rest replicated.

    ``loss_fn`` must average over the batch (as :func:`bayeslayers_jax.neg_elbo` does): the
    sharded step then computes exactly the single-device loss and gradient, with XLA's SPMD
    partitioner doing the cross-device reductions.

    Args:
      loss_fn: ``loss_fn(params, batch, key) -> loss`` (or ``(loss, aux)`` with ``has_aux``);
        ``batch`` is any pytree whose leaves have the batch on their first axis.
      optimizer: an optax gradient transformation.
      mesh: the device mesh (default: :func:`batch_mesh` over all devices).
      axis_name: mesh axis of the batch (default: the mesh's only axis).
      has_aux: whether ``loss_fn`` also returns auxiliary outputs.
      donate: donate the input ``params`` and ``opt_state`` buffers (saves memory; the inputs
        must not be used after the call).

    Returns:
      ``step(params, opt_state, batch, key) -> (params, opt_state, loss)``, jitted with
      ``in_shardings=(replicated, replicated, batch-sharded, replicated)`` and replicated
      outputs. Pass a batch from :func:`shard_batch` (or any array; jit moves it).

    Examples:
      The least-squares problem of :func:`~bayeslayers_jax.train_step`, its batch split over all devices:

      >>> import jax, jax.numpy as jnp, optax
      >>> from bayeslayers_jax import batch_mesh, data_parallel_train_step, replicate, shard_batch
      >>> def loss_fn(params, batch, key):
      ...     x, y = batch
      ...     return jnp.mean((params["w"] * x - y) ** 2)
      >>> mesh = batch_mesh()
      >>> optimizer = optax.sgd(0.1)
      >>> step = data_parallel_train_step(loss_fn, optimizer, mesh)
      >>> params = {"w": jnp.zeros(())}
      >>> params, opt_state = replicate((params, optimizer.init(params)), mesh)
      >>> n = 4 * len(jax.devices())  # the batch size must be divisible by the devices
      >>> x = jnp.linspace(0.5, 2.0, n)
      >>> batch = shard_batch((x, 2.0 * x), mesh)
      >>> for _ in range(50):
      ...     params, opt_state, loss = step(params, opt_state, batch, jax.random.key(0))
      >>> print(round(float(params["w"]), 4))
      2.0
    """
    mesh = batch_mesh() if mesh is None else mesh
    axis_name = _axis(mesh, axis_name)
    replicated = NamedSharding(mesh, P())
    sharded = NamedSharding(mesh, P(axis_name))
    return jax.jit(
        train_step(loss_fn, optimizer, has_aux=has_aux),
        in_shardings=(replicated, replicated, sharded, replicated),
        out_shardings=(replicated, replicated, replicated),
        donate_argnums=(0, 1) if donate else (),
    )


def ensemble_mesh(
    members: int,
    batch: int = 1,
    devices: Sequence[jax.Device] | None = None,
    axis_names: tuple[str, str] = ("members", "batch"),
) -> Mesh:
    """A 2-D device mesh ``(members, batch)`` for an :class:`~bayeslayers_jax.Ensemble`.

    The ensemble's member axis is split over the first mesh axis (:func:`shard_ensemble`),
    the batch over the second (:func:`shard_batch` with ``axis_name='batch'``), or replicated
    along it when ``batch`` is 1. The axes are ``Auto`` (XLA's partitioner propagates the
    shardings), as for :func:`batch_mesh`.

    Args:
      members: devices along the member axis (must divide the ensemble's size).
      batch: devices along the batch axis.
      devices: the devices (default: the first ``members * batch`` of ``jax.devices()``).
      axis_names: names of the two mesh axes.

    Returns:
      A :class:`jax.sharding.Mesh` of shape ``(members, batch)``.

    Raises:
      ValueError: if ``members`` or ``batch`` is not a positive int, or there are fewer
        than ``members * batch`` devices.

    Examples:
      >>> from bayeslayers_jax import ensemble_mesh
      >>> mesh = ensemble_mesh(1)
      >>> mesh.axis_names, mesh.devices.shape
      (('members', 'batch'), (1, 1))
    """
    for name, value in (("members", members), ("batch", batch)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise ValueError(f"{name} must be a positive int, got {value!r}")
    devices = jax.devices() if devices is None else list(devices)
    if len(devices) < members * batch:
        raise ValueError(
            f"devices: a ({members}, {batch}) mesh needs {members * batch} devices, got {len(devices)}"
        )
    grid = np.asarray(devices[: members * batch], dtype=object).reshape(members, batch)
    return Mesh(grid, tuple(axis_names))


def shard_ensemble(tree: Any, mesh: Mesh, member_axis: str = "members", size: int | None = None) -> Any:
    """Splits an ensemble's stacked member axis over the mesh axis ``member_axis``.

    The leaves of an :class:`~bayeslayers_jax.Ensemble`'s variables (linen) or state (NNX,
    ``nnx.state(ensemble)``) all carry a leading member axis of length ``size``: they are
    placed with ``NamedSharding(mesh, P(member_axis))``, so each device along that axis holds
    ``size / mesh.shape[member_axis]`` whole members (replicated along the other mesh axes).
    With ``size`` given, leaves without a leading axis of that length (an optimizer's step
    count) are replicated instead, so ``(params, opt_state)`` can be passed at once.

    No new training step is needed: ``jax.jit`` follows the shardings of its inputs, every
    member's forward and backward pass runs on the devices holding it, and the outputs, the
    gradients and the updated parameters come back sharded the same way (equal to the
    unsharded ensemble to float rounding, ``tests/test_sharded_ensemble.py``).

    Args:
      tree: a pytree of arrays (ensemble variables, ``nnx.State``, optimizer state).
      mesh: the device mesh (e.g. :func:`ensemble_mesh`).
      member_axis: the mesh axis the members are split over.
      size: the number of members; ``None``: every leaf must have the same leading length.

    Returns:
      ``tree`` with its leaves as sharded ``jax.Array`` s.

    Raises:
      ValueError: if ``member_axis`` is not an axis of ``mesh``, a leaf has no leading member
        axis (``size=None``), or the member count is not divisible by the devices on the axis.

    Examples:
      Ten LR members split over the mesh's member axis (here one device), the batch replicated:

      >>> import jax, jax.numpy as jnp
      >>> from bayeslayers_jax import BayesianMLP, Ensemble, ensemble_mesh, shard_ensemble
      >>> ens = Ensemble(BayesianMLP((8, 1), layer_type='lr'), size=10)
      >>> x = jnp.ones((4, 3))
      >>> variables = ens.init(jax.random.key(0), x)
      >>> mesh = ensemble_mesh(members=1)  # e.g. members=2, batch=2 on four devices
      >>> variables = shard_ensemble(variables, mesh)
      >>> variables['params']['layers_0']['weight_mu'].sharding.spec[0]
      'members'
      >>> y = jax.jit(ens.apply)(variables, x, rngs={'sample': jax.random.key(1)})
      >>> y.shape
      (10, 4, 1)
    """
    _axis(mesh, member_axis)
    num = mesh.shape[member_axis]
    leaves = jax.tree_util.tree_leaves_with_path(tree)
    if size is None:
        lengths = {np.shape(leaf)[0] if np.ndim(leaf) else None for _, leaf in leaves}
        if len(lengths) > 1 or None in lengths:
            path, leaf = next(
                (p, lf) for p, lf in leaves
                if not np.ndim(lf) or np.shape(lf)[0] != np.shape(leaves[0][1])[0]
            )
            raise ValueError(
                f"tree leaf {jax.tree_util.keystr(path) or '(root)'} has shape {np.shape(leaf)}, "
                f"not the leading member axis of the others; pass size= to replicate such leaves"
            )
        size = lengths.pop() if lengths else num
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < 1:
        raise ValueError(f"size must be a positive int, got {size!r}")
    if size % num != 0:
        raise ValueError(
            f"size: {size} members cannot be split evenly over the {num} devices of mesh axis "
            f"{member_axis!r}"
        )
    split = NamedSharding(mesh, P(member_axis))
    whole = NamedSharding(mesh, P())
    return jax.tree.map(
        lambda leaf: jax.device_put(leaf, split if np.ndim(leaf) and np.shape(leaf)[0] == size else whole),
        tree,
    )
