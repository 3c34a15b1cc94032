"""Test configuration: float64 available, strict dtype and rank promotion.

Like Equinox's suite, we run with ``jax_numpy_dtype_promotion='strict'`` and
``jax_numpy_rank_promotion='raise'`` so that silent up-casts and silent broadcasting
in library code are caught; warnings are errors (see ``pyproject.toml``).

These settings are process-wide and take effect when pytest collects ``tests/``; the
docstring examples and the README blocks run under JAX's defaults instead (see the
``conftest.py`` at the repository root).
"""

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
