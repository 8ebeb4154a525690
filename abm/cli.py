"""The ``abm`` command.

Sub-commands live in their own modules and register themselves through ``register(subparsers)``: each adds a
parser whose ``func(args) -> int`` does the work. User errors raise :class:`abm.params.ParameterError` (or
:class:`UsageError`) and leave with exit code 2 and a message naming the file and key; a failed run leaves with 1;
no traceback unless ``--debug``.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import signal
import sys
from pathlib import Path

from abm.errors import ParameterError, UsageError

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2

# modules that add sub-commands; each imports only core dependencies at module level, so a failure to import one
# is a real error, reported as such
PLUGINS = ("abm.sweep.cli", "abm.viz.cli", "abm.trial.cli", "abm.validate.cli")


# optional packages and the extra of pyproject.toml that installs each (from a clone: python -m pip install -e ".[X]")
OPTIONAL_MODULES = {
    "SALib": "sweep",
    "pandas": "sweep",
    "dask": "dist",
    "distributed": "dist",
    "dask_jobqueue": "dist",
    "xarray": "xarray",
    "h5netcdf": "xarray",
    "imageio": "viz",
    "imageio_ffmpeg": "viz",
    "PIL": "viz",
    "solara": "viz",
}


def _add_scenario_options(p, days: bool = True) -> None:
    p.add_argument("--seed", type=int, help="random seed (default: the scenario's run.seed)")
    if days:
        p.add_argument("--days", type=float, help="simulated days (default: the scenario's run.days)")
    p.add_argument(
        "--set",
        dest="sets",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a parameter, e.g. --set ctl.kill_prob=0.1 (repeatable)",
    )
    p.add_argument("--snapshot-every", type=float, metavar="MIN", help="minutes between lattice/field snapshots")


def _add_run(sub) -> None:
    p = sub.add_parser(
        "run",
        help="run a scenario and write its trajectory to HDF5",
        description="Run a scenario (a shipped name or a TOML path) and write the trajectory. An interrupted run "
        "(Ctrl-C, SIGTERM) leaves its state in OUT.ckpt.h5: `abm run --resume OUT.ckpt.h5` continues it.",
    )
    p.add_argument("scenario", nargs="?", help="shipped scenario name (see `abm scenarios`) or path to a scenario TOML")
    p.add_argument("--out", "-o", help="output HDF5 file (default: SCENARIO.h5 in the current directory)")
    _add_scenario_options(p)
    p.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bar and no summary")
    p.add_argument(
        "--checkpoint-every",
        type=float,
        metavar="HOURS",
        help="write the whole state to OUT.ckpt.h5 every HOURS of simulated time and at the end (kept); without "
        "it a checkpoint is written only at an interruption (and removed when the run completes)",
    )
    p.add_argument(
        "--resume",
        metavar="CHECKPOINT",
        help="continue an interrupted run from its checkpoint (OUT.ckpt.h5, or the output or partial file); takes "
        "no scenario or overrides",
    )
    p.add_argument(
        "--from-checkpoint",
        metavar="CHECKPOINT",
        help="start SCENARIO from another run's checkpoint (e.g. grown untreated to day N) with SCENARIO's regimen "
        "and run settings; every other parameter must equal the checkpoint's",
    )
    _add_threads(p)
    p.set_defaults(func=cmd_run)


def _add_threads(p) -> None:
    p.add_argument(
        "--threads",
        type=int,
        metavar="N",
        help="Numba threads (default: the CPUs this process may use; small lattices run their parallel loops on one "
        "thread anyway). Results are bit-identical for any N; only the wall time changes",
    )


def _add_resume(sub) -> None:
    p = sub.add_parser("resume", help="continue an interrupted run from its checkpoint (= abm run --resume)")
    p.add_argument("checkpoint", help="the checkpoint (OUT.ckpt.h5), or the run's output or partial file")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bar and no summary")
    p.add_argument("--checkpoint-every", type=float, metavar="HOURS", help="checkpoint interval from here on")
    _add_threads(p)
    p.set_defaults(func=cmd_resume)


def _add_check(sub) -> None:
    p = sub.add_parser(
        "check",
        help="validate a scenario and estimate its run (memory, steps, doses) without running it",
        description="Load and validate a scenario with its overrides, estimate the memory the run needs and "
        "check it against this machine: exit 0 when `abm run` would start, 2 (naming the file and key) when not.",
    )
    p.add_argument("scenario", help="shipped scenario name or path to a scenario TOML")
    _add_scenario_options(p)
    p.add_argument("--quiet", "-q", action="store_true", help="print nothing when the scenario is fine")
    p.set_defaults(func=cmd_check)


def _cli_layers(args) -> list:
    """--seed, --days and --snapshot-every as layers that name themselves, validated with the scenario."""
    from abm.params.core import set_layer

    out = []
    if getattr(args, "seed", None) is not None:
        out.append(set_layer("run.seed", args.seed, f"--seed {args.seed}"))
    if getattr(args, "days", None) is not None:
        out.append(set_layer("run.days", float(args.days), f"--days {args.days:g}"))
    if getattr(args, "snapshot_every", None) is not None:
        out.append(
            set_layer("run.snapshot_every_min", float(args.snapshot_every), f"--snapshot-every {args.snapshot_every:g}")
        )
    return out


def _load(args):
    """The scenario of a command line, validated (keys, values, bounds) with its overrides."""
    import abm

    return abm.Scenario.load(args.scenario, sets=args.sets, layers=_cli_layers(args))


def _hours_to_min(args) -> float | None:
    h = getattr(args, "checkpoint_every", None)
    if h is None:
        return None
    if not (h > 0 and h <= 3650 * 24):
        raise UsageError(f"--checkpoint-every {h:g}: give the interval in simulated hours, in (0, 87600]")
    return float(h) * 60.0


def _threads(args) -> None:
    if getattr(args, "threads", None) is not None:
        from abm.threads import set_threads

        set_threads(args.threads)


def cmd_run(args) -> int:
    _threads(args)
    import abm
    from abm import checkpoint
    from abm.io import OutputPathError, check_output_path
    from abm.simulation import RunInterrupted, resume

    every = _hours_to_min(args)
    if args.resume is not None:
        given = [
            flag
            for flag, v in (
                ("SCENARIO", args.scenario),
                ("--out", args.out),
                ("--seed", args.seed),
                ("--days", args.days),
                ("--set", args.sets),
                ("--snapshot-every", args.snapshot_every),
                ("--from-checkpoint", args.from_checkpoint),
                ("--overwrite", args.overwrite),
            )
            if v
        ]
        if given:
            raise UsageError(f"--resume continues the checkpointed run as it was: it takes no {', '.join(given)}")
        return _resumed(args, resume, every)
    if args.scenario is None:
        raise UsageError("give a SCENARIO (a shipped name or a TOML path), or --resume CHECKPOINT")
    sc = _load(args)
    out = Path(args.out) if args.out else Path(f"{Path(sc.name).name}.h5")
    try:  # refuse a bad output path (exists, a directory or device, no parent, locked) before any work
        out = check_output_path(out, args.overwrite)
    except OutputPathError as e:
        raise UsageError(str(e)) from None
    ck_path = checkpoint.checkpoint_path(out)
    if args.from_checkpoint is not None and Path(args.from_checkpoint).resolve() == ck_path.resolve():
        raise UsageError(f"--from-checkpoint {args.from_checkpoint}: is the checkpoint this run would write; copy it")
    try:  # abm.run checks memory and initial placement (abm.limits) before the model is built
        res = abm.run(
            sc,
            out=out,
            seed=args.seed,
            progress=None if not args.quiet else False,
            overwrite=args.overwrite,
            checkpoint_every_min=every,
            checkpoint=ck_path,
            from_checkpoint=args.from_checkpoint,
        )
    except RunInterrupted as e:
        print(f"abm run: {e}", file=sys.stderr)
        return EXIT_FAILED
    except OutputPathError as e:  # another writer claimed the file between the check and the start
        raise UsageError(str(e)) from None
    _print_result(args, res, sc.name)
    return EXIT_OK


def _resumed(args, resume, every) -> int:
    from abm.io import OutputPathError
    from abm.simulation import RunInterrupted

    try:
        res = resume(args.resume, progress=None if not args.quiet else False, checkpoint_every_min=every)
    except RunInterrupted as e:
        print(f"abm {args.command}: {e}", file=sys.stderr)
        return EXIT_FAILED
    except OutputPathError as e:
        raise UsageError(str(e)) from None
    _print_result(args, res, res.model.scenario.name)
    return EXIT_OK


def cmd_resume(args) -> int:
    _threads(args)
    from abm.simulation import resume

    args.resume = args.checkpoint
    return _resumed(args, resume, _hours_to_min(args))


def _print_result(args, res, name: str) -> None:
    if args.quiet:
        return
    s = res.summary
    print(f"wrote {res.path}" + (f" (checkpoint {res.checkpoint})" if res.checkpoint else ""))
    print(
        f"  scenario {name}, seed {res.model.seed}, {s['days']:.1f} days: response {s['response']} "
        f"(best {s['best_response']}), tumour cells {s['tumour_cells_initial']:.0f} -> "
        f"{s['tumour_cells_final']:.0f}, doses given {s['doses_given']}, held {s['doses_held']}"
    )


def cmd_check(args) -> int:
    from abm import limits

    sc = _load(args)
    est = limits.check_run(sc)
    if args.quiet:
        return EXIT_OK
    p = sc.params
    la = p.lattice
    avail = limits.available_memory()
    steps = limits.n_steps(sc.run.days, p.time.dt_min)
    doses = sum(limits.block_doses(b) for b in sc.regimen.doses)
    shape = f"{la.nx} x {la.ny}" + (f" x {la.nz}" if la.nz > 1 else "")
    print(f"{sc.source}: valid")
    print(f"  scenario   {sc.name}: {sc.meta.description}")
    print(
        f"  lattice    {shape} = {limits.n_sites(la):,} sites, {len(p.species_names)} species, "
        f"cell capacity {limits.capacity(p):,}"
    )
    print(f"  run        {sc.run.days:g} days = {steps:,} steps of {p.time.dt_min:g} min, seed {sc.run.seed}")
    print(f"  regimen    {sc.regimen.description}: {doses:,} doses enumerated, {len(sc.regimen.transfers)} transfers")
    print(
        f"  memory     about {limits.fmt_bytes(est.total)} ({est.describe()}); available "
        f"{limits.fmt_bytes(avail) if avail is not None else 'unknown'}"
    )
    return EXIT_OK


def _add_info(sub) -> None:
    p = sub.add_parser("info", help="describe a run file: scenario, seed, outcome, sizes")
    p.add_argument("file")
    p.set_defaults(func=cmd_info)


def cmd_info(args) -> int:
    import abm
    from abm.io import partial_path

    path = Path(args.file)
    if not path.exists() and not partial_path(path).exists():
        raise UsageError(f"{path}: no such file")
    try:
        r = abm.load(path)
    except (OSError, ValueError) as e:
        raise UsageError(f"{path}: not an abm trajectory ({e})") from None
    a = r.attrs
    nx, ny, nz = r.shape_xyz
    print(f"file        {r.path}  ({os.path.getsize(r.path) / 1e6:.1f} MB)")
    print(f"complete    {r.complete}  ({r.status})")
    print(f"scenario    {a.get('scenario_name', '?')}: {a.get('scenario_description', '')}")
    print(f"seed        {a.get('seed', '?')}    abm {a.get('abm_version', '?')}  git {a.get('git_hash') or '-'}")
    overrides = a.get("overrides")
    if overrides is None:
        print(f"overrides   (not recorded by format {r.format_version})")
    else:
        print(f"overrides   {', '.join(overrides) if len(overrides) else 'none'}")
    # the run's real length: the scenario's description may name the full schedule ("8 weeks") of a shorter run
    t = r.time_min
    simulated = t[-1] / 1440.0 if len(t) else 0.0
    planned = a.get("days")
    length = f"length      {simulated:.2f} days simulated"
    if isinstance(planned, int | float):
        length += f" of run.days = {planned:g}"
        if overrides is not None and any(str(o).startswith(("run.days=", "--days ")) for o in overrides):
            length += " (set by --days or --set; the scenario description may describe a longer schedule)"
    print(length)
    print(
        f"lattice     {nx} x {ny}" + (f" x {nz}" if nz > 1 else "") + f" sites of {r.spacing_um:g} um, "
        f"dt {r.dt_min:g} min"
    )
    tables = f" with per-cell tables ({r.n_cell_frames})" if r.has_cells else ""
    print(f"time        {len(t)} observation rows; {r.n_snapshots} snapshots{tables}; {len(r.events)} events")
    versions = a.get("versions")
    if isinstance(versions, str) and versions:
        try:
            vs = json.loads(versions)
            print("versions    " + ", ".join(f"{k} {v}" for k, v in sorted(vs.items())))
        except ValueError:
            print(f"versions    {versions}")
    if r.summary:
        s = r.summary
        keys = (
            "response",
            "best_response",
            "max_shrinkage",
            "time_to_regression_day",
            "time_to_eradication_day",
            "tumour_cells_initial",
            "tumour_cells_final",
            "doses_given",
            "doses_held",
            "doses_cancelled",
            "dose_limiting_toxicity",
        )
        for k in keys:
            if k in s:
                unit = r.summary_units.get(k, "")
                print(f"  {k:26s} {s[k]}" + (f" {unit}" if unit not in ("", "1") else ""))
    return EXIT_OK


def _add_scenarios(sub) -> None:
    p = sub.add_parser("scenarios", help="list the shipped scenarios")
    p.set_defaults(func=cmd_scenarios)


def cmd_scenarios(args) -> int:
    from abm.scenario import Scenario, search_path

    for d in search_path():
        if not d.is_dir():
            continue
        for f in sorted(d.glob("*.toml")):
            try:
                sc = Scenario.load(f)
                desc = sc.meta.description
            except Exception as e:  # list every file, even a broken one, and say why
                desc = f"(invalid: {str(e).splitlines()[0]})"
            print(f"{f.stem:18s} {desc}")
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    from abm import __version__

    parser = argparse.ArgumentParser(
        prog="abm", description="Lattice simulations of tumour-immune dynamics under IL-2 and IFN-alpha therapy."
    )
    parser.add_argument("--version", action="version", version=f"abm {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for add in (_add_run, _add_resume, _add_check, _add_info, _add_scenarios):
        add(sub)
    for mod in PLUGINS:
        importlib.import_module(mod).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    try:  # Ctrl-C while the command line and its plugins load (before a run installs its own handler)
        parser = build_parser()
        args = parser.parse_args(argv)
    except KeyboardInterrupt:
        print("abm: interrupted", file=sys.stderr)
        return EXIT_FAILED
    if not getattr(args, "func", None):
        parser.print_help()
        return EXIT_USAGE
    try:
        return int(args.func(args) or 0)
    except (ParameterError, UsageError) as e:
        if args.debug:
            raise
        print(f"abm {args.command}: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print(f"abm {args.command}: interrupted", file=sys.stderr)
        return EXIT_FAILED
    except BrokenPipeError:  # `abm scenarios | head`: the reader left; say nothing more (Python's own advice)
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_FAILED
    except ModuleNotFoundError as e:  # an optional dependency: say which extra brings it
        if args.debug:
            raise
        top = (e.name or "").split(".")[0]
        extra = OPTIONAL_MODULES.get(top)
        if extra is None:
            print(f"abm {args.command}: failed: {e}", file=sys.stderr)
            return EXIT_FAILED
        print(
            f"abm {args.command}: error: this needs the optional package '{top}' (the extra '{extra}'): in the abm "
            f'clone, python -m pip install -e ".[{extra}]"',
            file=sys.stderr,
        )
        return EXIT_USAGE
    except Exception as e:  # a run that failed: say what, without a traceback unless asked
        if args.debug:
            raise
        print(
            f"abm {args.command}: failed: {type(e).__name__}: {e}\n(run with --debug for the traceback)",
            file=sys.stderr,
        )
        return EXIT_FAILED


def entry(argv: list[str] | None = None) -> int:
    """The ``abm`` console script: :func:`main`, then a quiet exit.

    A SIGINT that lands after ``main`` returned (the run complete, its files closed) would otherwise raise
    KeyboardInterrupt inside the interpreter's atexit handlers and print a traceback; from here on it is ignored,
    since there is nothing left to stop."""
    try:
        rc = main(argv)
    except KeyboardInterrupt:
        print("abm: interrupted", file=sys.stderr)
        rc = EXIT_FAILED
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    return rc


if __name__ == "__main__":
    sys.exit(entry())
