"""``abm validate --out DIR [--quick] [--patterns P1,P3] [--seeds N] [--days D] [--size N] [--workers N]``."""

from __future__ import annotations

import shlex
import sys
import time
from pathlib import Path

SIZE_RANGE = (40, 2000)
"""Lattice side, sites: the default 300-um lesion (30 sites across) needs room; above 2000 one run needs GBs."""
DAYS_RANGE = (1.0, 365.0)
SEEDS_RANGE = (2, 1000)
"""At least 2 seeds: an interval needs two values."""


def register(sub) -> None:
    p = sub.add_parser(
        "validate",
        help="measure the clinical patterns P1-P6 on the default patient (table with 95%% CIs, a figure each)",
        description="Run each clinical pattern's experiment (shipped scenarios with documented overrides) on "
        "several seeds and write DIR/table.md, table.csv, arms.csv, results.json and one figure per pattern: "
        "every comparison with its effect, 95% interval and verdict (emerges / does not emerge). "
        "See docs/validation.md.",
    )
    p.add_argument("--out", "-o", required=True, metavar="DIR", help="output directory (created; files replaced)")
    p.add_argument(
        "--quick",
        action="store_true",
        help="a pipeline check in minutes: 60 x 60 sites, 14 days, 3 seeds (not a result)",
    )
    p.add_argument("--patterns", metavar="P1,P3", help="only these patterns (comma-separated; default: all)")
    p.add_argument("--seeds", type=int, metavar="N", help="seeds 1..N per arm (default 6; quick 3)")
    p.add_argument("--days", type=float, metavar="D", help="simulated days (default 28; quick 14)")
    p.add_argument("--size", type=int, metavar="N", help="lattice of N x N sites (default 150; quick 60)")
    p.add_argument(
        "--workers",
        "-j",
        type=int,
        metavar="N",
        help="worker processes (default: one per core; 0: in this process)",
    )
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_validate)


def _in(name: str, v: float | None, lo: float, hi: float) -> None:
    from abm.errors import UsageError

    if v is not None and not (lo <= v <= hi):
        raise UsageError(f"--{name} {v:g}: allowed range is {lo:g} to {hi:g}")


def command_line(args) -> str:
    """The ``abm validate`` command that reproduces ``args``."""
    out = ["abm", "validate", "--out", args.out]
    if args.quick:
        out.append("--quick")
    for opt in ("patterns", "seeds", "days", "size", "workers"):
        v = getattr(args, opt)
        if v is not None:
            out += [f"--{opt}", f"{v:g}" if isinstance(v, float) else str(v)]
    return shlex.join(out)


def cmd_validate(args) -> int:
    from abm.errors import UsageError
    from abm.provenance import abm_version, git_hash
    from abm.validate.experiments import select
    from abm.validate.report import write_report
    from abm.validate.runner import FULL, QUICK, Size, run_suite

    try:
        patterns = select(args.patterns)
    except ValueError as e:
        raise UsageError(f"--patterns {args.patterns}: {e}") from None
    _in("size", args.size, *SIZE_RANGE)
    _in("days", args.days, *DAYS_RANGE)
    _in("seeds", args.seeds, *SEEDS_RANGE)
    if args.workers is not None and args.workers < 0:
        raise UsageError(f"--workers {args.workers}: allowed range is 0 or more")
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out}: exists and is not a directory")
    base = QUICK if args.quick else FULL
    size = Size(
        args.size if args.size is not None else base.size,
        args.days if args.days is not None else base.days,
        args.seeds if args.seeds is not None else base.seeds,
    )
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UsageError(f"--out {out}: cannot create the directory ({e.strerror or e})") from None
    meta = {
        "command": command_line(args),
        "abm_version": abm_version(),
        "git_hash": git_hash(),
        "started": time.strftime("%Y-%m-%d %H:%M:%S %z"),
        "lattice": f"{size.size} x {size.size}",
        "size": size.size,
        "days": size.days,
        "seeds": size.seed_list,
        "quick": bool(args.quick),
    }
    suite = run_suite(patterns, size, workers=args.workers, log_dir=out / "logs", progress=not args.quiet)
    res, paths = write_report(patterns, suite, meta, out)
    for path in paths:
        print(f"wrote {path}")
    print(
        f"{len(res['runs_done'])} runs in {res['wall_s'] / 60:.1f} min: "
        + "; ".join(f"{p['key']} {p['verdict']}" for p in res["patterns"])
    )
    if suite.failures:
        print(f"abm validate: {len(suite.failures)} runs failed (listed in {out / 'table.md'})", file=sys.stderr)
        return 1
    return 0
