"""Memory measurements, reported apart from the timings.

Two views:

* :func:`compiled_memory`: what XLA's buffer assignment says one compiled function needs
  (arguments, outputs, temporaries; ``Compiled.memory_analysis()``). Available on every
  backend and specific to one method and shape.
* :func:`process_peak`: the process's high-water mark. On an accelerator the device
  allocator's ``peak_bytes_in_use`` (``device.memory_stats()``); on CPU, where there are no
  device memory stats, the resident set size high-water mark (``resource.getrusage``
  ``ru_maxrss``). Both are monotone over the run, so the suite records them after each shape.
"""

from __future__ import annotations

import resource
import sys
from typing import Any

import jax

__all__ = ["compiled_memory", "process_peak"]


def compiled_memory(compiled: Any) -> dict[str, int] | None:
    """Bytes XLA assigned to one compiled function, or ``None`` if the backend has no analysis.

    Returns:
      ``{'argument_bytes', 'output_bytes', 'temp_bytes', 'alias_bytes', 'total_bytes'}`` where
      ``total = argument + output + temp - alias`` (donated inputs aliased to outputs are
      counted once).
    """
    try:
        stats = compiled.memory_analysis()
    except (NotImplementedError, RuntimeError, AttributeError):
        return None
    if stats is None:
        return None
    arg = int(stats.argument_size_in_bytes)
    out = int(stats.output_size_in_bytes)
    temp = int(stats.temp_size_in_bytes)
    alias = int(stats.alias_size_in_bytes)
    return {
        "argument_bytes": arg,
        "output_bytes": out,
        "temp_bytes": temp,
        "alias_bytes": alias,
        "total_bytes": arg + out + temp - alias,
    }


def process_peak(device: jax.Device | None = None) -> dict[str, Any]:
    """The process's peak memory so far.

    Args:
      device: the device to ask; defaults to ``jax.devices()[0]``.

    Returns:
      ``{'kind': 'device_peak_bytes_in_use' | 'host_max_rss', 'bytes': int}``.
    """
    device = jax.devices()[0] if device is None else device
    stats = None
    if device.platform != "cpu":
        try:
            stats = device.memory_stats()
        except (NotImplementedError, RuntimeError):
            stats = None
    if stats and "peak_bytes_in_use" in stats:
        return {"kind": "device_peak_bytes_in_use", "bytes": int(stats["peak_bytes_in_use"])}
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # Linux reports kilobytes, macOS bytes.
    scale = 1 if sys.platform == "darwin" else 1024
    return {"kind": "host_max_rss", "bytes": int(rss) * scale}
