"""Device-agnostic benchmark suite of bayeslayers_jax: ``python -m benchmarks``.

Modules, one concept each:

* :mod:`benchmarks.flops`: the benchmark shapes and the explicit matmul FLOP model.
* :mod:`benchmarks.timing`: ahead-of-time compilation and the median-of-repeats timer.
* :mod:`benchmarks.memory`: compiled-function memory and the process peak.
* :mod:`benchmarks.models`: the Dense baseline and the Bayesian networks with their forward,
  loss, train step, Monte Carlo and ensemble functions.
* :mod:`benchmarks.torch_compare`: the optional PyTorch implementation (imported lazily).
* :mod:`benchmarks.suite`: the run itself and the performance targets.
* :mod:`benchmarks.report`: Markdown and JSON output.
* :mod:`benchmarks.pallas_clt`: the fused Pallas CLT + ReLU kernel against the XLA path
  (``python -m benchmarks.pallas_clt``, GPU only; run first by ``run_on_gpu.sh``).
* :mod:`benchmarks.uq`: the real-data uncertainty benchmark (``python -m benchmarks uq``), with
  its hand-written MC dropout baseline in :mod:`benchmarks.uq_baselines`.
"""

__all__: list[str] = []
