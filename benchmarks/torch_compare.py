"""Optional PyTorch comparison: an eager PyTorch implementation of the same math.

PyTorch is never a dependency: it is imported lazily inside :func:`run_torch`, and when it is
missing the suite reports ``"not installed"``. The implementation below is written for this
benchmark (it is not ObjectRL's code, which cannot backpropagate through its CLT layers): the
same layer math as the JAX package, the same initial parameter scales, the same loss (data
term + KL / batch), ``torch.optim.Adam``, float32, on the same device as JAX (CUDA when JAX
runs on a GPU and torch sees one, else CPU). Float32 matmuls use
``torch.set_float32_matmul_precision('high')`` (TF32 on GPUs), matching XLA's default
precision on GPUs.

``torch.compile`` is tried for the Dense baseline and the CLT network (the loss function is
compiled, so AOTAutograd also compiles its backward; the Adam step stays eager). Any failure
is caught and reported as text, never raised.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

from benchmarks.flops import Shape
from benchmarks.timing import time_call

__all__ = ["COMPILE_METHODS", "run_torch", "torch_version"]

#: Methods for which ``torch.compile`` is attempted (compilation is slow).
COMPILE_METHODS = ("dense", "clt")


def torch_version() -> str:
    """The installed torch version, or ``'not installed'``."""
    try:
        import torch
    except ImportError:
        return "not installed"
    return str(torch.__version__)


def _build(torch: Any, method: str, shape: Shape, device: Any, seed: int) -> Any:
    """Parameters and the loss / forward closures of one method, in eager PyTorch."""
    gen = torch.Generator(device="cpu").manual_seed(seed)
    layers = []
    for n_in, n_out in shape.layers:
        bound = 1.0 / math.sqrt(n_in)

        def uniform(*size: int, b: float = bound) -> Any:
            return ((torch.rand(*size, generator=gen) * 2 - 1) * b).to(device).requires_grad_()

        layer = {"w_mu": uniform(n_in, n_out), "b_mu": uniform(n_out)}
        if method not in ("dense", "cltdet"):
            layer["w_rho"] = torch.full((n_in, n_out), -4.6, device=device, requires_grad=True)
            layer["b_rho"] = torch.full((n_out,), -4.6, device=device, requires_grad=True)
        layers.append(layer)
    params = [p for layer in layers for p in layer.values()]
    n_layers = len(layers)

    def relu_moments(mu: Any, var: Any) -> tuple[Any, Any]:
        sigma = torch.sqrt(torch.clamp(var, min=1e-12))
        a = mu / sigma
        pdf = torch.exp(-0.5 * a * a) / math.sqrt(2 * math.pi)
        cdf = torch.special.ndtr(a)
        mean = sigma * pdf + mu * cdf
        second = (mu * mu + var) * cdf + mu * sigma * pdf
        return mean, torch.clamp(second - mean * mean, min=0.0)

    def forward(x: Any) -> Any:
        if method in ("dense", "map", "bbb", "lr"):
            h = x
            for i, layer in enumerate(layers):
                if method == "bbb":
                    w = layer["w_mu"] + torch.exp(layer["w_rho"]) * torch.randn_like(layer["w_mu"])
                    b = layer["b_mu"] + torch.exp(layer["b_rho"]) * torch.randn_like(layer["b_mu"])
                    h = h @ w + b
                elif method == "lr":
                    m = h @ layer["w_mu"] + layer["b_mu"]
                    v = (h * h) @ torch.exp(2 * layer["w_rho"]) + torch.exp(2 * layer["b_rho"])
                    h = m + torch.sqrt(v) * torch.randn_like(m)
                else:
                    h = h @ layer["w_mu"] + layer["b_mu"]
                if i < n_layers - 1:
                    h = torch.relu(h)
            return h
        mu, var = x, None
        for i, layer in enumerate(layers):
            w_mu = layer["w_mu"]
            m = mu @ w_mu + layer["b_mu"]
            if method == "clt":
                w_var = torch.exp(2 * layer["w_rho"])
                b_var = torch.exp(2 * layer["b_rho"])
                if var is None:
                    v = (mu * mu) @ w_var + b_var
                else:
                    v = (var + mu * mu) @ w_var + var @ (w_mu * w_mu) + b_var
            else:
                v = torch.zeros_like(m) if var is None else var @ (w_mu * w_mu)
            mu, var = m, v
            if i < n_layers - 1:
                mu, var = relu_moments(mu, var)
        return mu, var

    def kl() -> Any:
        total = 0.0
        for layer in layers:
            for name in ("w", "b"):
                if f"{name}_rho" not in layer:
                    continue
                mu_q = layer[f"{name}_mu"]
                log_std = layer[f"{name}_rho"]
                # KL(N(mu_q, std_q^2) || N(0, 1)), std_q = exp(rho).
                total = total + torch.sum(
                    -log_std + 0.5 * (torch.exp(2 * log_std) + mu_q * mu_q) - 0.5
                )
        return total

    def loss(x: Any, y: Any) -> Any:
        out = forward(x)
        if isinstance(out, tuple):
            mean, var = out
            data = torch.mean((mean - y) ** 2) + torch.mean(var)
        else:
            data = torch.mean((out - y) ** 2)
        if method in ("dense", "map", "cltdet"):
            return data
        return data + kl() / shape.batch

    return params, forward, loss


def _sync(torch: Any, device: Any) -> Callable[[Any], None]:
    if device.type == "cuda":
        return lambda _out: torch.cuda.synchronize()
    return lambda _out: None


def run_torch(
    shapes: list[Shape],
    methods: list[str],
    *,
    use_cuda: bool,
    budget_s: float,
    min_repeats: int,
    max_repeats: int,
    compile_methods: tuple[str, ...] = COMPILE_METHODS,
    progress: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Times eager (and compiled) PyTorch forward passes and train steps.

    Args:
      shapes: benchmark shapes.
      methods: methods to time (as in :data:`benchmarks.flops.METHODS`).
      use_cuda: run on CUDA (only honoured when ``torch.cuda.is_available()``).
      budget_s: timing budget per measurement.
      min_repeats: minimum timed repeats.
      max_repeats: maximum timed repeats.
      compile_methods: methods for which ``torch.compile`` is attempted; empty to skip.
      progress: callable receiving progress lines.

    Returns:
      ``{'status': 'not installed'}`` or ``{'status': 'ok', 'version', 'device', 'records'}``
      where each record has ``shape``, ``method``, ``mode`` (``forward``/``train``), ``impl``
      (``eager``/``compile``) and either ``median_s`` (with ``timing``) or ``error``.
    """
    try:
        import torch
    except ImportError:
        return {"status": "not installed"}
    device = torch.device("cuda" if use_cuda and torch.cuda.is_available() else "cpu")
    torch.set_float32_matmul_precision("high")
    sync = _sync(torch, device)
    records: list[dict[str, Any]] = []

    def timed(call: Callable[[], Any]) -> Any:
        return time_call(
            call,
            budget_s=budget_s,
            min_repeats=min_repeats,
            max_repeats=max_repeats,
            sync=sync,
        )

    for shape in shapes:
        gen = torch.Generator(device="cpu").manual_seed(0)
        x = torch.randn(shape.batch, shape.widths[0], generator=gen).to(device)
        y = torch.randn(shape.batch, shape.widths[-1], generator=gen).to(device)
        for method in methods:
            impls = ["eager"] + (["compile"] if method in compile_methods else [])
            for impl in impls:
                params, forward, loss = _build(torch, method, shape, device, seed=0)
                opt = torch.optim.Adam(params, lr=1e-3)
                fwd_fn, loss_fn = forward, loss
                compile_s = None
                if impl == "compile":
                    try:
                        fwd_fn = torch.compile(forward)
                        loss_fn = torch.compile(loss)
                        start = time.perf_counter()
                        with torch.no_grad():
                            fwd_fn(x)
                        loss_fn(x, y).backward()
                        opt.zero_grad(set_to_none=True)
                        sync(None)
                        compile_s = time.perf_counter() - start
                    except Exception as err:  # noqa: BLE001 - report any compile failure
                        message = f"{type(err).__name__}: {str(err).splitlines()[0][:200]}"
                        for mode in ("forward", "train"):
                            records.append(
                                {"shape": shape.name, "method": method, "mode": mode,
                                 "impl": impl, "error": message}
                            )
                        progress(f"torch {shape.name:<5} {method:<7} compile failed: {message}")
                        continue

                def fwd_call(f: Any = fwd_fn) -> Any:
                    with torch.no_grad():
                        return f(x)

                def train_call(f: Any = loss_fn, o: Any = opt) -> Any:
                    o.zero_grad(set_to_none=True)
                    value = f(x, y)
                    value.backward()
                    o.step()
                    return value

                for mode, call in (("forward", fwd_call), ("train", train_call)):
                    try:
                        timing = timed(call)
                    except Exception as err:  # noqa: BLE001 - report, do not abort the suite
                        message = f"{type(err).__name__}: {str(err).splitlines()[0][:200]}"
                        records.append(
                            {"shape": shape.name, "method": method, "mode": mode,
                             "impl": impl, "error": message}
                        )
                        progress(f"torch {shape.name:<5} {method:<7} {mode:<7} {impl}: {message}")
                        continue
                    records.append(
                        {"shape": shape.name, "method": method, "mode": mode, "impl": impl,
                         "median_s": timing.median_s, "timing": timing.as_dict(),
                         "compile_s": compile_s}
                    )
                    progress(
                        f"torch {shape.name:<5} {method:<7} {mode:<7} {impl:<7} "
                        f"{timing.median_s * 1e3:10.3f} ms"
                    )
    return {
        "status": "ok",
        "version": str(torch.__version__),
        "device": str(device),
        "records": records,
    }
