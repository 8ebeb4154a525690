"""``abm sweep SWEEP.toml --out DIR`` and ``abm analyze DIR``."""

from __future__ import annotations

import sys
from pathlib import Path


def register(sub) -> None:
    p = sub.add_parser(
        "sweep",
        help="run a parameter sweep (grid, LHS, Sobol, Morris) locally or on Dask",
        description="Run every run of a sweep definition and record design, summaries and failures "
        "in DIR/sweep.sqlite, exported to DIR/sweep.h5 when the sweep stops (see docs/sweeps.md).",
    )
    p.add_argument("sweep", help="sweep definition (TOML), e.g. scenarios/sweeps/il2_dose_response.toml")
    p.add_argument("--out", "-o", required=True, metavar="DIR", help="output directory")
    g = p.add_mutually_exclusive_group()
    g.add_argument(
        "--workers",
        "-j",
        type=int,
        metavar="N",
        help="local worker processes (default: one per core; 0: in this process)",
    )
    g.add_argument("--dask-local", type=int, metavar="N", help="start a Dask LocalCluster of N worker processes")
    g.add_argument("--scheduler", metavar="ADDRESS", help="use a running Dask scheduler, e.g. tcp://HOST:8786")
    p.add_argument(
        "--resume",
        action="store_true",
        help="finish an interrupted sweep in DIR: rerun every run not done (failed too)",
    )
    p.add_argument("--quick", action="store_true", help="the sweep's [quick] size (a few minutes)")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_sweep)

    a = sub.add_parser(
        "analyze",
        help="tables (CSV) and figures (PNG) from a sweep or virtual-trial directory",
        description="Analyse DIR (its sweep.sqlite, else sweep.h5): dose-response, combination grid or sensitivity, "
        "chosen by the sweep's 'analysis' key; for a virtual trial (abm trial) the per-patient and arm tables, the "
        "paired comparisons, the clinical comparison and the waterfall, swimmer, spider and forest plots.",
    )
    a.add_argument("dir", help="sweep or trial output directory (holding sweep.sqlite or sweep.h5)")
    a.add_argument("--out", "-o", metavar="DIR", help="where to write tables and figures (default: DIR/analysis)")
    a.add_argument("--prefix", default="", help="prefix for the figure and table file names")
    a.set_defaults(func=cmd_analyze)


def cmd_sweep(args) -> int:
    from abm.errors import UsageError
    from abm.sweep.design import SweepSpec
    from abm.sweep.runner import run_sweep

    path = Path(args.sweep)
    if not path.is_file():
        raise UsageError(f"{path}: no such sweep file")
    if args.workers is not None and args.workers < 0:
        raise UsageError(f"--workers {args.workers}: allowed range is 0 or more")
    if args.dask_local is not None and args.dask_local < 1:
        raise UsageError(f"--dask-local {args.dask_local}: allowed range is 1 or more")
    spec = SweepSpec.load(path, quick=args.quick)
    res = run_sweep(
        spec,
        args.out,
        workers=args.workers,
        scheduler=args.scheduler,
        dask_local=args.dask_local,
        resume=args.resume,
        progress=not args.quiet,
    )
    print(
        f"wrote {res.path}" + (f" (exported to {res.export_path.name})" if res.export_path else "") + f": "
        f"{res.n_runs} runs, {res.n_done} done now, {res.n_failed} failed, {res.n_skipped} already done, "
        f"{res.n_retried} retried after a worker died, {res.elapsed_s:.1f} s"
    )
    return 0 if res.n_failed == 0 else 1


def cmd_analyze(args) -> int:
    from abm.sweep.analysis import analyze
    from abm.trial.runner import is_trial

    out = Path(args.out) if args.out else Path(args.dir) / "analysis"
    if is_trial(args.dir):  # a virtual trial (abm trial): its tables and the clinic's figures
        from abm.trial.analysis import analyze_trial

        analyze = analyze_trial
    written = analyze(args.dir, out, prefix=args.prefix)
    for w in written:
        print(f"wrote {w}")
    return 0


if __name__ == "__main__":
    from abm.cli import main

    sys.exit(main())
