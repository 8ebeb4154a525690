"""``abm trial TRIAL.toml --out DIR`` and ``abm calibrate TRIAL.toml --out DIR`` (``abm analyze DIR`` reads both)."""

from __future__ import annotations

import sys


def _executors(p) -> None:
    g = p.add_mutually_exclusive_group()
    g.add_argument(
        "--workers", "-j", type=int, metavar="N", help="local worker processes (default: one per core; 0: this process)"
    )
    g.add_argument("--dask-local", type=int, metavar="N", help="start a Dask LocalCluster of N worker processes")
    g.add_argument("--scheduler", metavar="ADDRESS", help="use a running Dask scheduler, e.g. tcp://HOST:8786")
    p.add_argument("--resume", action="store_true", help="finish an interrupted run in DIR (failed patients too)")
    p.add_argument("--quick", action="store_true", help="the trial's [quick] size (a pipeline check in minutes)")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bar")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a parameter of every arm, appended to trial.sets (repeatable), e.g. lattice.nx=150",
    )


def register(sub) -> None:
    p = sub.add_parser(
        "trial",
        help="run a virtual clinical trial (a cohort through one or more arms; RECIST 1.1 at visits)",
        description="Run every patient of every arm of a trial definition and record them in DIR/sweep.sqlite; "
        "`abm analyze DIR` makes the tables and the clinic's figures (see docs/trials.md).",
    )
    p.add_argument("trial", help="trial definition (TOML), e.g. scenarios/trials/atkins1999_hd_il2.toml")
    p.add_argument("--out", "-o", required=True, metavar="DIR", help="output directory")
    p.add_argument("--patients", type=int, metavar="N", help="patients per arm (default: the trial's)")
    p.add_argument(
        "--cohort",
        metavar="TOML",
        help="the cohort to draw patients from instead of the trial's trial.cohort, e.g. a fitted cohort written "
        "by abm calibrate (a path, or a shipped name under scenarios/trials/cohorts)",
    )
    _executors(p)
    p.set_defaults(func=cmd_trial)

    c = sub.add_parser(
        "calibrate",
        help="fit the cohort's distribution to a trial's read-outs (plausible patients, then selection)",
        description="Simulate a pool of plausible patients on the trial's calibration arm, fit the cohort's "
        "distribution parameters named in its [calibration] table to the clinic's figures by importance "
        "weights, and write the fitted cohort (TOML), the fit with bootstrap intervals (JSON, Markdown) and a "
        "figure into DIR (see docs/trials.md).",
    )
    c.add_argument("trial", help="trial definition with a [calibration] table")
    c.add_argument("--out", "-o", required=True, metavar="DIR", help="output directory")
    c.add_argument("--pool", type=int, metavar="N", help="pool size (default: calibration.pool)")
    c.add_argument(
        "--cohort-out", metavar="TOML", help="where to write the fitted cohort (default: DIR/fitted_cohort.toml)"
    )
    _executors(c)
    c.set_defaults(func=cmd_calibrate)


def _check(args) -> None:
    from abm.errors import UsageError

    if args.workers is not None and args.workers < 0:
        raise UsageError(f"--workers {args.workers}: allowed range is 0 or more")
    if args.dask_local is not None and args.dask_local < 1:
        raise UsageError(f"--dask-local {args.dask_local}: allowed range is 1 or more")


def _argv(args) -> list[str]:
    """The command line that reproduces ``args`` (recorded in the fitted cohort)."""
    out = [args.command, args.trial, "--out", args.out]
    for opt in ("workers", "dask_local", "scheduler", "pool", "patients", "cohort", "cohort_out"):
        v = getattr(args, opt, None)
        if v is not None:
            out += [f"--{opt.replace('_', '-')}", str(v)]
    out += [f"--{f}" for f in ("quick", "resume") if getattr(args, f, False)]
    for s in getattr(args, "set", None) or []:
        out += ["--set", s]
    return out


def _load(args, values: dict | None):
    """The trial, with ``--set`` overrides appended to its ``trial.sets`` (after any ``[quick]`` ones)."""
    from abm.trial.spec import TrialSpec

    spec = TrialSpec.load(args.trial, quick=args.quick, values=values)
    if not args.set:
        return spec
    sets = [*spec.doc.trial.sets, *args.set]
    return TrialSpec.load(args.trial, quick=args.quick, values={**(values or {}), "trial.sets": sets})


def cmd_trial(args) -> int:
    from abm.trial.runner import run_trial

    _check(args)
    values: dict = {}
    if args.patients is not None:
        values["trial.patients"] = args.patients
    if args.cohort is not None:
        from pathlib import Path

        p = Path(args.cohort)  # a path from the command line is relative to the working directory
        values["trial.cohort"] = str(p.resolve()) if p.exists() else args.cohort
    spec = _load(args, values or None)
    res = run_trial(
        spec,
        args.out,
        workers=args.workers,
        scheduler=args.scheduler,
        dask_local=args.dask_local,
        resume=args.resume,
        progress=not args.quiet,
    )
    n_arms = len(spec.arms)
    print(
        f"wrote {res.path}: {spec.name}, {len(spec.arms)} arm{'s' * (n_arms > 1)} x {spec.doc.trial.patients} "
        f"patients = {res.n_runs} runs; {res.n_done} done now, {res.n_failed} failed, {res.n_skipped} already done, "
        f"{res.n_retried} retried after a worker died; {res.elapsed_s:.1f} s. Next: abm analyze {args.out}"
    )
    return 0 if res.n_failed == 0 else 1


def cmd_calibrate(args) -> int:
    from abm.trial.calibrate import calibrate, command_line

    _check(args)
    values = {"calibration.pool": args.pool} if args.pool is not None else None
    spec = _load(args, values)
    fit = calibrate(
        spec,
        args.out,
        resume=args.resume,
        workers=args.workers,
        scheduler=args.scheduler,
        dask_local=args.dask_local,
        progress=not args.quiet,
        cohort_out=args.cohort_out,
        command=command_line(_argv(args)),
    )
    th = ", ".join(
        f"{k} = {v:.3g}" + (f" [{fit['theta_ci'][k][0]:.3g}, {fit['theta_ci'][k][1]:.3g}]" if "theta_ci" in fit else "")
        for k, v in fit["theta"].items()
    )
    r = fit["rates"]
    print(
        f"fitted {th}; ORR {100 * r['orr']:.1f}%, CR {100 * r['cr_rate']:.1f}% (ESS {r['ess']:.1f} of "
        f"{fit['pool_n']} pool patients)"
    )
    for v in fit["paths"].values():
        print(f"wrote {v}")
    return 0


if __name__ == "__main__":
    from abm.cli import main

    sys.exit(main())
