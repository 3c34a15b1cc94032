"""Optional PyTorch comparison against ObjectRL's own Bayesian layers.

The reference this package re-creates is ``objectrl.nets.layers.bayesian_layers`` (PyTorch).
This module imports those layers (``BBBLinear``, ``LRLinear``, ``CLTLinear``) and builds the
same networks and train step as the JAX suite, so the suite can time both in one process,
interleaved (:mod:`benchmarks.suite`). PyTorch and ObjectRL are never dependencies of the
package: both are imported lazily here, and when either is missing the suite reports why and
goes on. (ObjectRL 0.2.x declares ``python >= 3.12`` but its layer module runs on 3.11:
``pip install --no-deps --ignore-requires-python objectrl`` installs it for benchmarking.)

The train step, the same for every method and for the JAX side
(:func:`benchmarks.models.make_train_step`): forward pass, KL (ObjectRL's ``layer.KL()``,
summed over layers), Gaussian negative log-likelihood with observation-noise variance 1 (the
expected NLL ``((y - m)**2 + v) / 2`` for CLT's ``(m, v)`` output), loss = mean NLL + KL / B,
backward, Adam (``torch.optim.Adam(fused=True)``, PyTorch's fastest Adam on CPU and CUDA),
float32. The networks are ObjectRL's layers with ``ReLU`` between them (BBB, LR) or the CLT
layers' own ReLU moment matching (``is_input`` on the first layer, ``is_output`` on the last).
``dense`` is a plain ``torch.nn.Linear`` network, timed eagerly only: it shows how PyTorch's
and XLA's matmuls compare on the device, apart from any Bayesian overhead.

ObjectRL's ``CLTLinear`` cannot backpropagate as shipped: its ``relu_moments`` overwrites
entries of ``relu_mean`` in place (``relu_mean[sigma.eq(0)] = ...``) after ``relu_mean.pow(2)``
saved it for the backward pass, so ``backward()`` raises "one of the variables needed for
gradient computation has been modified by an inplace operation". It is timed through
:func:`clt_twin_class`: a subclass that only replaces ``relu_moments`` by the same formula
with ``torch.where`` instead of the in-place writes (forward values identical; checked in
``tests/test_benchmarks.py``). Everything else (parameters, initialization, forward, KL) is
ObjectRL's code.

Threads: PyTorch gets as many intra-op threads as the machine has CPUs (XLA uses them all
too). Importing this module sets ``OMP_WAIT_POLICY=PASSIVE`` unless the variable is already
set (it must be set before torch loads its OpenMP runtime): with the default active waiting,
libgomp's idle threads spin and fight XLA's thread pool in the same process; on the 2-core
development machine that made PyTorch's train steps 10-20x slower (BBB eager at the RL shape
100-220 ms instead of 6-12 ms, interleaved with a JAX step, on a loaded machine). The policy
in effect is recorded in the results; set ``OMP_WAIT_POLICY=ACTIVE`` to time the other way.

``impl='compile'`` wraps the loss (forward + KL + NLL) in ``torch.compile`` (default mode;
AOTAutograd compiles the backward too); Adam stays eager. The first call, which compiles,
is timed apart and reported as the compile time. Any build or compile failure is reported
as text, never raised.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable
from typing import Any

from benchmarks.flops import Shape

__all__ = [
    "REFERENCE_METHODS",
    "TORCH_METHODS",
    "TorchStep",
    "availability",
    "build_train_step",
    "clt_twin_class",
    "configure_threads",
    "loss_fn",
    "network",
    "objectrl_version",
    "torch_version",
]

#: OpenMP wait policy for PyTorch's threads (see the module docstring); set before torch loads.
OMP_WAIT_POLICY = os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

#: Methods timed with ObjectRL's layers.
REFERENCE_METHODS = ("bbb", "lr", "clt")
#: Methods the PyTorch side can time: a plain ``nn.Linear`` baseline plus ObjectRL's layers.
TORCH_METHODS = ("dense", *REFERENCE_METHODS)


def torch_version() -> str:
    """The installed torch version, or ``'not installed'``."""
    try:
        import torch
    except ImportError:
        return "not installed"
    return str(torch.__version__)


def availability() -> str:
    """``'ok'`` when torch and ObjectRL's layer module import, else the reason."""
    try:
        import torch  # noqa: F401
    except ImportError:
        return "torch not installed"
    try:
        import objectrl.nets.layers.bayesian_layers  # noqa: F401
    except ImportError as err:
        return f"objectrl not importable ({type(err).__name__}: {err})"
    return "ok"


def objectrl_version() -> str | None:
    """The installed ObjectRL distribution version, or ``None``."""
    try:
        from importlib.metadata import version

        return version("objectrl")
    except Exception:  # noqa: BLE001 - metadata is informational only
        return None


_TWIN: dict[str, type] = {}


def clt_twin_class() -> type:
    """ObjectRL's ``CLTLinear`` with a backpropagatable ``relu_moments``.

    ObjectRL computes, for ``alpha = mu / sigma``,

    .. math::
        m = \\mu\\,\\Phi(\\alpha) + \\sigma\\,\\varphi(\\alpha),\\qquad
        v = (\\sigma^2 + \\mu^2)\\,\\Phi(\\alpha) + \\mu\\sigma\\,\\varphi(\\alpha) - m^2,

    then sets ``m = relu(mu)``, ``v = 0`` where ``sigma == 0`` by in-place indexing, which
    breaks autograd. The twin computes the same expressions with ObjectRL's own
    ``normal_cdf`` / ``normal_pdf`` and selects with ``torch.where``. Only ``relu_moments`` is
    replaced (the benchmark networks use ReLU, so ``neg_relu_moments`` is never called).

    Returns:
      The subclass (created once per process; torch is imported here).
    """
    if "clt" not in _TWIN:
        import torch
        from objectrl.nets.layers.bayesian_layers import CLTLinear

        class CLTLinearTwin(CLTLinear):
            """ObjectRL ``CLTLinear`` whose ReLU moments use ``torch.where`` (see
            :func:`clt_twin_class`)."""

            @staticmethod
            def relu_moments(mu: Any, sigma: Any) -> tuple[Any, Any]:
                alpha = mu / sigma
                cdf = CLTLinear.normal_cdf(alpha)
                pdf = CLTLinear.normal_pdf(alpha)
                relu_mean = mu * cdf + sigma * pdf
                relu_var = (sigma.pow(2) + mu.pow(2)) * cdf + mu * sigma * pdf - relu_mean.pow(2)
                zero = sigma.eq(0)
                relu_mean = torch.where(zero, mu * (mu > 0), relu_mean)
                relu_var = torch.where(zero, torch.zeros_like(relu_var), relu_var)
                return relu_mean, relu_var

        _TWIN["clt"] = CLTLinearTwin
    return _TWIN["clt"]


class _Done:
    """What a timed PyTorch call returns: :func:`jax.block_until_ready` calls its
    ``block_until_ready``, which waits for CUDA (CPU PyTorch is synchronous), so the suite's
    timer syncs PyTorch once per repeat, as it does JAX."""

    __slots__ = ("_sync",)

    def __init__(self, sync: Callable[[], None] | None) -> None:
        self._sync = sync

    def block_until_ready(self) -> "_Done":
        if self._sync is not None:
            self._sync()
        return self


class TorchStep:
    """A ready-to-time PyTorch train step.

    Attributes:
      method: ``'dense'``, ``'bbb'``, ``'lr'`` or ``'clt'``.
      impl: ``'eager'`` or ``'compile'``.
      call: zero-argument callable running one train step; returns an object whose
        ``block_until_ready()`` waits for the device.
      first_call_s: wall time of the first call (for ``'compile'``: tracing and compilation).
      loss: the loss of the last call (a Python float), read with :meth:`last_loss`.
    """

    def __init__(self, method: str, impl: str, call: Callable[[], Any], first_call_s: float,
                 last_loss: Callable[[], float]) -> None:
        self.method = method
        self.impl = impl
        self.call = call
        self.first_call_s = first_call_s
        self.last_loss = last_loss


def network(method: str, shape: Shape, device: Any = "cpu") -> Any:
    """The layers of ``method`` at ``shape`` (ObjectRL's layers, or ``nn.Linear``), a
    ``torch.nn.ModuleList`` in float32 on ``device``."""
    import torch
    from objectrl.nets.layers import bayesian_layers as orl

    layers = []
    n = len(shape.layers)
    for index, (n_in, n_out) in enumerate(shape.layers):
        if method == "dense":
            layers.append(torch.nn.Linear(n_in, n_out))
        elif method == "bbb":
            layers.append(orl.BBBLinear(n_in, n_out))
        elif method == "lr":
            layers.append(orl.LRLinear(n_in, n_out))
        elif method == "clt":
            layers.append(clt_twin_class()(n_in, n_out, act="relu", is_input=index == 0,
                                           is_output=index == n - 1))
        else:
            raise ValueError(f"method must be one of {TORCH_METHODS}, got {method!r}")
    return torch.nn.ModuleList(layers).to(device=device, dtype=torch.float32)


def loss_fn(method: str, layers: Any, batch: int) -> Callable[[Any, Any], Any]:
    """``loss(x, y)`` of :func:`network`'s ``layers``: mean Gaussian NLL (noise variance 1;
    the expected NLL for CLT) + KL / ``batch`` (no KL for Dense)."""
    import torch

    half_log_2pi = 0.5 * math.log(2 * math.pi)
    n = len(layers)

    def loss(x: Any, y: Any) -> Any:
        if method == "clt":
            mean, var = x, None
            for layer in layers:
                mean, var = layer(mean, var)
            sq = (y - mean).pow(2) + var
        else:
            h = x
            for index, layer in enumerate(layers):
                h = layer(h)
                if index < n - 1:
                    h = torch.relu(h)
            sq = (y - h).pow(2)
        nll = (half_log_2pi + 0.5 * sq).sum(-1).mean()
        if method == "dense":
            return nll
        kl = sum(layer.KL()[0] for layer in layers)
        return nll + kl / batch

    return loss


def build_train_step(
    method: str,
    shape: Shape,
    *,
    impl: str = "eager",
    device: str = "cpu",
    seed: int = 0,
) -> TorchStep:
    """Builds one PyTorch train step and runs its first call (compiling for ``'compile'``).

    Args:
      method: one of :data:`TORCH_METHODS`.
      shape: the benchmark shape (batch and widths).
      impl: ``'eager'`` or ``'compile'`` (``torch.compile`` of the loss).
      device: ``'cpu'`` or ``'cuda'``.
      seed: seed of the parameters, data and noise.

    Returns:
      A :class:`TorchStep`.

    Raises:
      ValueError: for an unknown ``method`` or ``impl``.
      ImportError: when torch or ObjectRL is missing.
    """
    if method not in TORCH_METHODS:
        raise ValueError(f"method must be one of {TORCH_METHODS}, got {method!r}")
    if impl not in ("eager", "compile"):
        raise ValueError(f"impl must be 'eager' or 'compile', got {impl!r}")
    import torch

    dev = torch.device(device)
    torch.manual_seed(seed)
    layers = network(method, shape, dev)
    gen = torch.Generator(device="cpu").manual_seed(seed)
    x = torch.randn(shape.batch, shape.widths[0], generator=gen).to(dev)
    y = torch.randn(shape.batch, shape.widths[-1], generator=gen).to(dev)
    loss = loss_fn(method, layers, shape.batch)
    if impl == "compile":
        loss = torch.compile(loss, dynamic=False)
    opt = torch.optim.Adam(layers.parameters(), lr=1e-3, fused=True)
    done = _Done(torch.cuda.synchronize if dev.type == "cuda" else None)
    last: list[Any] = [None]

    def call() -> _Done:
        opt.zero_grad(set_to_none=True)
        value = loss(x, y)
        value.backward()
        opt.step()
        last[0] = value
        return done

    start = time.perf_counter()
    call().block_until_ready()
    first = time.perf_counter() - start
    return TorchStep(method, impl, call, first, lambda: float(last[0].detach().cpu()))


def configure_threads(threads: int | None = None) -> int:
    """Sets PyTorch's intra-op threads (default: every CPU, as XLA uses) and returns it."""
    import torch

    threads = threads or os.cpu_count() or 1
    torch.set_num_threads(threads)
    return threads
