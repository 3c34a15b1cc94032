"""Multi-process data parallel: 2 processes x 2 CPU devices train as 1 process x 4 devices.

``tests/_multiprocess_worker.py`` is started as a ``jax.distributed`` cluster of 2 processes
on 127.0.0.1 (each with 2 simulated CPU devices, CPU collectives over gloo, each feeding only
its own 8 rows of the 16-row batch) and, for the reference, as one process with 4 devices and
the whole batch. Both train BBB, LR and CLT models for 3 Adam steps (lr 1e-2) with
:func:`bayeslayers_jax.data_parallel_train_step` in float64 with the same keys. The global
mesh and the partitioned computation are the same, so the runs differ at most by the order
of the cross-device sums (relative round-off ~1e-16 per sum): parameters must agree to 1e-12
absolute (they moved by ~3e-2), losses to 1e-12 relative; the two processes hold identical
replicas. A wrong batch assembly or a per-process noise draw changes them by ~1e-3 or more.
The cluster is bounded to 120 s; processes still running then are killed.
"""

import os
import socket
import subprocess
import sys

import jax
import numpy as np
import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WORKER = os.path.join(REPO, "tests", "_multiprocess_worker.py")
CLUSTER_TIMEOUT_S = 120


def _env(devices: int) -> dict:
    env = dict(os.environ)
    env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") + f" --xla_force_host_platform_device_count={devices}").strip()
    env["JAX_PLATFORMS"] = "cpu"
    env["PYTHONPATH"] = REPO + os.pathsep + env.get("PYTHONPATH", "")
    return env


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run(args_list, devices, timeout, tmp_path):
    """Starts the workers together; kills every one still running after ``timeout`` s."""
    procs, logs = [], []
    for i, args in enumerate(args_list):
        log = open(tmp_path / f"worker{devices}_{i}.log", "w+")
        logs.append(log)
        procs.append(subprocess.Popen([sys.executable, WORKER, *map(str, args)], stdout=log,
                                      stderr=subprocess.STDOUT, env=_env(devices), cwd=REPO))
    try:
        for p in procs:
            p.wait(timeout=timeout)  # the processes run concurrently: one shared deadline
    except subprocess.TimeoutExpired:
        pass
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    text = []
    for log in logs:
        log.seek(0)
        text.append(log.read()[-3000:])
        log.close()
    assert all(p.returncode == 0 for p in procs), (
        f"workers exited with {[p.returncode for p in procs]} (killed after {timeout} s if "
        f"negative):\n" + "\n----\n".join(text)
    )


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    if not hasattr(jax.config, "jax_cpu_collectives_implementation"):
        pytest.skip("this jax has no CPU collectives option (jax_cpu_collectives_implementation)")
    tmp = tmp_path_factory.mktemp("multiprocess")
    _run([(tmp / "single", 0, 0, 1)], 4, 300, tmp)
    port = _free_port()
    _run([(tmp / "multi", port, i, 2) for i in range(2)], 2, CLUSTER_TIMEOUT_S, tmp)
    return [dict(np.load(tmp / name)) for name in ("single.0.npz", "multi.0.npz", "multi.1.npz")]


@pytest.mark.slow  # three fresh processes, a gloo cluster: ~20 s of CPU
@pytest.mark.parametrize("layer_type", ["bbb", "lr", "clt"])
def test_two_processes_train_as_one(runs, layer_type):
    single, p0, p1 = runs
    # The cluster really spans 2 processes of 2 devices, each holding half the batch.
    assert int(p0["process_count"]) == 2 and int(p0["local_devices"]) == 2
    assert int(p0["batch_local_rows"]) == 8 and int(p1["batch_local_rows"]) == 8
    assert int(single["process_count"]) == 1 and int(single["batch_local_rows"]) == 16
    keys = [k for k in single if k.startswith(layer_type + "[")]
    assert len(keys) == 8  # 2 layers x (weight, bias) x (mu, rho)
    for k in keys:
        assert np.max(np.abs(single[k] - single["init_" + k])) > 1e-3  # training moved it
        assert np.max(np.abs(single[k] - p0[k])) <= 1e-12, k
        assert np.max(np.abs(p0[k] - p1[k])) <= 1e-12, k  # the replicas agree
    loss = float(single["loss_" + layer_type])
    assert abs(loss - float(p0["loss_" + layer_type])) <= 1e-12 * abs(loss)


def test_process_local_batch_in_one_process_is_the_whole_batch():
    # With one process its rows are the whole global batch: the same array as shard_batch's.
    import jax.numpy as jnp

    from bayeslayers_jax.parallel import batch_mesh, shard_batch

    mesh = batch_mesh(jax.devices()[:1])
    x = jnp.arange(6.0).reshape(3, 2)
    got = shard_batch(x, mesh, process_local=True)
    assert got.shape == (3, 2) and bool(jnp.all(got == x))
    assert got.sharding.is_equivalent_to(shard_batch(x, mesh).sharding, 2)
    with pytest.raises(ValueError, match="divisible"):
        shard_batch(jnp.ones(()), mesh, process_local=True)
