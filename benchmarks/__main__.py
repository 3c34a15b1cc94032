"""Command line: ``python -m benchmarks [--smoke] [--shapes rl,wide] [--out DIR]``.

Runs the suite on whatever device JAX sees, prints the device, library versions, progress and
the result tables, and writes ``<device>_<date>.json`` and ``.md`` into ``--out``
(default: ``benchmarks/results/``).
"""

from __future__ import annotations

import argparse
import os
import sys

from benchmarks.flops import METHODS, SHAPES
from benchmarks.report import markdown_report, write_results
from benchmarks.suite import Config, run_suite

__all__ = ["main", "parse_args"]

_DEFAULT_OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")


def _csv(value: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in value.split(",") if part.strip())


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Parses the command line (see ``python -m benchmarks --help``)."""
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description="Benchmark the Bayesian layers (MAP, BBB, LR, CLT, CLTDet) against a "
        "flax.linen.Dense network of the same shapes on the default JAX device.",
    )
    parser.add_argument("--smoke", action="store_true",
                        help="quick check that every code path runs (one repeat; RL shape "
                        "unless --shapes is given); the numbers are not measurements")
    parser.add_argument("--shapes", type=_csv, default=None,
                        help=f"comma-separated shapes out of {','.join(SHAPES)} (default: all; "
                        "rl for --smoke)")
    parser.add_argument("--methods", type=_csv, default=METHODS,
                        help=f"comma-separated methods out of {','.join(METHODS)} "
                        "(dense always runs as the baseline)")
    parser.add_argument("--out", default=_DEFAULT_OUT,
                        help="output directory for the JSON and Markdown (default: %(default)s)")
    parser.add_argument("--budget", type=float, default=1.0,
                        help="timing budget per measurement in seconds (default: %(default)s)")
    parser.add_argument("--min-repeats", type=int, default=3,
                        help="minimum timed repeats per measurement (default: %(default)s)")
    parser.add_argument("--ensemble-size", type=int, default=10,
                        help="networks in the ensemble benchmark (default: %(default)s)")
    parser.add_argument("--ensemble-methods", type=_csv, default=None,
                        help="methods whose ensemble is timed (default: dense,clt; "
                        "dense for --smoke)")
    parser.add_argument("--ensemble-max-forward", type=float, default=0.25,
                        help="skip an ensemble when one forward pass takes longer than this "
                        "many seconds (default: %(default)s)")
    parser.add_argument("--no-torch", action="store_true",
                        help="skip the PyTorch comparison even if torch is installed")
    parser.add_argument("--no-torch-compile", action="store_true",
                        help="skip torch.compile in the PyTorch comparison")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Runs the suite and writes the results; returns the exit status."""
    args = parse_args(argv)
    common: dict = dict(
        methods=args.methods,
        ensemble_size=args.ensemble_size,
        ensemble_max_forward_s=args.ensemble_max_forward,
        torch="off" if args.no_torch else "auto",
    )
    if args.ensemble_methods is not None:
        common["ensemble_methods"] = args.ensemble_methods
    try:
        if args.smoke:
            cfg = Config.smoke_config(shapes=args.shapes or ("rl",), **common)
        else:
            cfg = Config(
                shapes=args.shapes or tuple(SHAPES),
                budget_s=args.budget,
                min_repeats=args.min_repeats,
                torch_compile=not args.no_torch_compile,
                **common,
            )
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    results = run_suite(cfg)
    print(markdown_report(results))
    json_path, md_path = write_results(results, args.out)
    print(f"\nwrote {json_path}\nwrote {md_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
