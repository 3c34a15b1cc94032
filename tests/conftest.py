"""Test configuration: float64 available, strict dtype and rank promotion.

Like Equinox's suite, we run with ``jax_numpy_dtype_promotion='strict'`` and
``jax_numpy_rank_promotion='raise'`` so that silent up-casts and silent broadcasting
in library code are caught; warnings are errors (see ``pyproject.toml``).

These settings are process-wide and take effect when pytest collects ``tests/``; the
docstring examples and the README blocks run under JAX's defaults instead (see the
``conftest.py`` at the repository root).
"""

import json
import os
import subprocess
import sys
import threading
import time

import jax
import pytest

jax.config.update("jax_enable_x64", True)
jax.config.update("jax_numpy_dtype_promotion", "strict")
jax.config.update("jax_numpy_rank_promotion", "raise")


@pytest.fixture(scope="session")
def run_with_progress():
    """``run(args, *, label, timeout, **popen_kwargs) -> subprocess.CompletedProcess``.

    Like ``subprocess.run(args, capture_output=True, text=True, timeout=timeout)``, but every
    line the command writes is also echoed at once as ``[label +12.3s] line``: visible live
    with ``pytest -s`` (and in the report of a failing test), so a long smoke run never sits
    silent. On timeout the command is killed and ``subprocess.TimeoutExpired`` raised.
    """

    def run(args, *, label, timeout, **popen_kwargs):
        start = time.perf_counter()
        captured = {"stdout": [], "stderr": []}

        def pump(stream, name):
            for line in stream:
                captured[name].append(line)
                sys.stdout.write(f"[{label} +{time.perf_counter() - start:.1f}s] {line}")
                sys.stdout.flush()

        # The context manager closes the pipes and waits for the process, also on timeout.
        with subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              **popen_kwargs) as proc:
            threads = [threading.Thread(target=pump, args=(getattr(proc, n), n), daemon=True)
                       for n in ("stdout", "stderr")]
            for t in threads:
                t.start()
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                raise
            finally:
                for t in threads:
                    t.join()
        return subprocess.CompletedProcess(args, proc.returncode, "".join(captured["stdout"]),
                                           "".join(captured["stderr"]))

    return run


@pytest.fixture(scope="session")
def run_on_cpu_devices():
    """``run(script, n_devices=4, timeout=300) -> dict``: ``script`` in a fresh Python process
    with ``n_devices`` simulated CPU devices (``--xla_force_host_platform_device_count``),
    warnings as errors; returns the JSON its last line ``RESULT{...}`` prints.

    A fresh process because the device count is fixed when JAX starts; the script imports
    the package from this checkout.
    """

    def run(script, n_devices=4, timeout=300):
        env = dict(os.environ)
        flag = f"--xla_force_host_platform_device_count={n_devices}"
        env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") + " " + flag).strip()
        env["JAX_PLATFORMS"] = "cpu"
        repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        env["PYTHONPATH"] = repo + os.pathsep + env.get("PYTHONPATH", "")
        proc = subprocess.run([sys.executable, "-W", "error", "-c", script], capture_output=True,
                              text=True, env=env, timeout=timeout, cwd=repo)
        assert proc.returncode == 0, proc.stderr[-4000:]
        line = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT")][-1]
        return json.loads(line[len("RESULT"):])

    return run
