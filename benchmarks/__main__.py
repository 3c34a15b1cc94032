"""Command line: ``python -m benchmarks [--smoke | --preset gpu-quick] [--shapes rl,mid,wide] [--out DIR]``.

``python -m benchmarks uq [--quick] ...`` runs the real-data uncertainty benchmark instead
(:mod:`benchmarks.uq`; ``python -m benchmarks uq --help``).

Runs the suite on whatever device JAX sees, prints the device, library versions, progress and
the result tables, and writes ``<device>_<date>.json`` and ``.md`` into ``--out``: by default
``benchmarks/results/`` for measurements, and for ``--smoke`` (numbers that are not
measurements) :data:`SMOKE_OUT`, a folder in the system's temporary directory, so a smoke run
never touches the tracked results.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile

from benchmarks.flops import METHODS, SHAPES
from benchmarks.report import markdown_report, write_results
from benchmarks.rl_update import CRITICS
from benchmarks.suite import Config, run_suite
from benchmarks.torch_compare import TORCH_METHODS

__all__ = ["PRESETS", "SMOKE_OUT", "main", "parse_args"]

_DEFAULT_OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
#: Default output folder of ``--smoke``.
SMOKE_OUT = os.path.join(tempfile.gettempdir(), "bayeslayers_jax_benchmarks_smoke")

#: Named settings. ``gpu-quick`` fits about 10 minutes of a GPU machine, compilation
#: included (``benchmarks/run_on_gpu.sh``): the RL and wide shapes, ObjectRL eager for BBB,
#: LR and CLT and ``torch.compile`` for CLT only (the GPU goals), ensembles of 10 Dense and
#: CLT networks against one, the SAC update with 2 and 10 critics 256 wide, and a soft limit
#: of 7 minutes after which remaining work is skipped and reported as skipped.
PRESETS: dict[str, dict] = {
    "gpu-quick": dict(
        shapes=("rl", "wide"), budget_s=0.5, torch_compile_methods=("clt",),
        ensemble_methods=("dense", "clt"), rl_members=(2, 10), rl_widths=(256,),
        max_minutes=7.0,
    ),
}


def _csv(value: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in value.split(",") if part.strip())


def _ints(value: str) -> tuple[int, ...]:
    try:
        return tuple(int(v) for v in _csv(value))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {value!r}") from None


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Parses the command line (see ``python -m benchmarks --help``)."""
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description="Benchmark the Bayesian layers (MAP, BBB, LR, CLT, CLTDet) against a "
        "flax.linen.Dense network of the same shapes on the default JAX device, against "
        "ObjectRL's PyTorch layers (eager and torch.compile) when torch and objectrl import, "
        "ensembles vmapped against separate calls, and a SAC update with ensembles of critics.",
    )
    parser.add_argument("--smoke", action="store_true",
                        help="quick check that every code path runs (one repeat, no "
                        "torch.compile; RL shape unless --shapes is given); the numbers are "
                        f"not measurements; written to {SMOKE_OUT} unless --out is given")
    parser.add_argument("--preset", choices=sorted(PRESETS), default=None,
                        help="named settings (gpu-quick: about 10 minutes on a GPU machine, "
                        "used by benchmarks/run_on_gpu.sh); other options override it")
    parser.add_argument("--shapes", type=_csv, default=None,
                        help=f"comma-separated shapes out of {','.join(SHAPES)} (default: all; "
                        "rl for --smoke)")
    parser.add_argument("--methods", type=_csv, default=None,
                        help=f"comma-separated methods out of {','.join(METHODS)} "
                        "(default: all; dense always runs as the baseline)")
    parser.add_argument("--out", default=None,
                        help=f"output directory for the JSON and Markdown (default: {_DEFAULT_OUT}; "
                        f"{SMOKE_OUT} for --smoke)")
    parser.add_argument("--budget", type=float, default=None,
                        help="timing budget per measurement in seconds (default: 1)")
    parser.add_argument("--min-repeats", type=int, default=None,
                        help="minimum timed repeats per measurement (default: 3)")
    parser.add_argument("--ensemble-size", type=int, default=None,
                        help="members of the ensemble scenario (default: 10)")
    parser.add_argument("--ensemble-methods", type=_csv, default=None,
                        help="methods whose ensemble is timed (default: dense,lr,clt; "
                        "dense,clt for --smoke)")
    parser.add_argument("--rl-members", type=_ints, default=None,
                        help="numbers of critics in the SAC update (default: 2,10; 2 for --smoke)")
    parser.add_argument("--rl-widths", type=_ints, default=None,
                        help="hidden widths of the SAC critics (default: 128,256; 128 for --smoke)")
    parser.add_argument("--rl-critics", type=_csv, default=None,
                        help=f"SAC critic types out of {','.join(CRITICS)} (default: all)")
    parser.add_argument("--no-rl-update", action="store_true", help="skip the SAC update scenario")
    parser.add_argument("--no-torch", action="store_true",
                        help="skip the PyTorch comparison even if torch and objectrl import")
    parser.add_argument("--no-torch-compile", action="store_true",
                        help="skip torch.compile in the PyTorch comparison")
    parser.add_argument("--torch-compile-methods", type=_csv, default=None,
                        help=f"methods timed under torch.compile, out of {','.join(TORCH_METHODS)} "
                        "(default: bbb,lr,clt)")
    parser.add_argument("--max-minutes", type=float, default=None,
                        help="soft wall-time limit: work that would start later is skipped and "
                        "reported as skipped (default: none)")
    parser.add_argument("--note", default=None,
                        help="a note written into the results (e.g. the machine was shared)")
    return parser.parse_args(argv)


def _config(args: argparse.Namespace) -> Config:
    settings: dict = dict(PRESETS[args.preset]) if args.preset else {}
    given = {
        "shapes": args.shapes, "methods": args.methods, "budget_s": args.budget,
        "min_repeats": args.min_repeats, "ensemble_size": args.ensemble_size,
        "ensemble_methods": args.ensemble_methods, "rl_members": args.rl_members,
        "rl_widths": args.rl_widths, "rl_critics": args.rl_critics,
        "torch_compile_methods": args.torch_compile_methods, "max_minutes": args.max_minutes,
    }
    settings.update({k: v for k, v in given.items() if v is not None})
    if args.no_torch:
        settings["torch"] = "off"
    if args.no_rl_update:
        settings["rl_update"] = False
    if args.smoke:
        for name in ("budget_s", "min_repeats"):
            settings.pop(name, None)
        return Config.smoke_config(shapes=settings.pop("shapes", ("rl",)), **settings)
    if args.no_torch_compile:
        settings["torch_compile"] = False
    return Config(**settings)


def main(argv: list[str] | None = None) -> int:
    """Runs the suite (or ``uq ...``: :func:`benchmarks.uq.main`); returns the exit status."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["uq"]:
        from benchmarks.uq import main as uq_main

        return uq_main(argv[1:])
    args = parse_args(argv)
    try:
        cfg = _config(args)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    results = run_suite(cfg)
    results["meta"]["note"] = args.note
    print(markdown_report(results))
    out = args.out or (SMOKE_OUT if args.smoke else _DEFAULT_OUT)
    json_path, md_path = write_results(results, out)
    print(f"\nwrote {json_path}\nwrote {md_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
