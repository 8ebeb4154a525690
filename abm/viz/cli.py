"""``abm plot``, ``abm compare``, ``abm animate`` and ``abm serve`` (registered by :mod:`abm.cli`)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

FIGURE_SUFFIXES = (".png", ".pdf", ".svg")
KINDS = ("dashboard", "snapshot", "fields")
FIGURE_DPI = 150
DEFAULT_PORT = 8765
DEFAULT_HOST = "127.0.0.1"
LOOPBACK = ("127.0.0.1", "localhost", "::1")
STOP_GRACE_S = 10.0  # after SIGTERM, how long the page server has to exit before it is killed


def register(sub) -> None:
    p = sub.add_parser(
        "plot",
        help="plot a run file: dashboard, lattice snapshot or field panels",
        description="Plot a run written by `abm run`. With no options, writes the dashboard as "
        "FILE_dashboard.png next to FILE.",
    )
    p.add_argument("file")
    p.add_argument("--kind", choices=KINDS, default="dashboard", help="what to draw (default: dashboard)")
    p.add_argument("--time", type=float, metavar="DAYS", help="snapshot time in days (default: the last)")
    p.add_argument("--field", help="field overlay: il2, ifna, drug or cxcl10 (snapshot default: none; dashboard: il2)")
    p.add_argument("--log", action="store_true", help="logarithmic colour scale for fields")
    p.add_argument("--shared", action="store_true", help="fields: one colour scale for panels of equal units")
    p.add_argument("--units", choices=("mm", "um"), default="mm", help="axis length units")
    p.add_argument("--out", "-o", help="image file: .png, .pdf or .svg (default: FILE_KIND.png next to FILE)")
    p.set_defaults(func=cmd_plot)

    p = sub.add_parser(
        "compare",
        help="compare several runs side by side on aligned time",
        description="Lattices at one time with a shared field colour scale, and tumour size, "
        "plasma IL-2 and toxicity over time, one line per run.",
    )
    p.add_argument("files", nargs="+", metavar="FILE")
    p.add_argument("--out", "-o", required=True, help="image file: .png, .pdf or .svg")
    p.add_argument("--labels", help="comma-separated labels, one per file (default: the scenario names)")
    p.add_argument("--field", default="il2", help="field on the lattices: il2, ifna, drug, cxcl10, none (default il2)")
    p.add_argument("--time", type=float, metavar="DAYS", help="lattice time (default: the last common snapshot)")
    p.set_defaults(func=cmd_compare)

    p = sub.add_parser(
        "animate",
        help="animate a run's snapshots to MP4 or GIF",
        description="One frame per lattice snapshot: the lattice (optionally a field) and counts.",
    )
    p.add_argument("file")
    p.add_argument("--out", "-o", required=True, help="movie file: .mp4 (imageio-ffmpeg) or .gif (Pillow)")
    p.add_argument("--field", help="field overlay: il2, ifna, drug or cxcl10")
    p.add_argument("--fps", type=float, default=10.0, help="frames per second (default 10)")
    p.add_argument("--max-frames", type=int, help="at most this many frames, evenly spaced")
    p.add_argument("--linear", action="store_true", help="linear field colour scale (default: log)")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_animate)

    p = sub.add_parser(
        "serve",
        help="an interactive page of a live model (Solara)",
        description="Serve a page with the lattice and a field, play/pause/step/reset, simulated hours per frame, "
        "jump to a day, the IL-2 dose, IFN-alpha on/off and the seed, and live plots against days. "
        "SIGTERM or Ctrl-C stops the page server with it.",
    )
    p.add_argument("scenario", nargs="?", default=None, help="shipped scenario name or TOML path (default il2_ifna)")
    p.add_argument(
        "--set",
        dest="sets",
        action="append",
        default=None,
        metavar="KEY=VALUE",
        help="parameter override (repeatable; default: a 60 x 60 lattice)",
    )
    p.add_argument("--host", default=DEFAULT_HOST, help=f"address to listen on (default {DEFAULT_HOST}, local only)")
    p.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"port (default {DEFAULT_PORT})")
    p.add_argument("--open", action="store_true", help="open a browser")
    p.set_defaults(func=cmd_serve)


def _usage(msg: str):
    from abm.errors import UsageError

    return UsageError(msg)


def _load(path: str):
    import abm
    from abm.io import partial_path

    p = Path(path)
    if not p.exists() and not partial_path(p).exists():
        raise _usage(f"{p}: no such file")
    try:
        return abm.load(p)
    except (OSError, ValueError) as e:
        raise _usage(f"{p}: not an abm trajectory ({e})") from None


def _check_out(out: Path, allowed: tuple[str, ...]) -> None:
    if out.suffix.lower() not in allowed:
        raise _usage(f"{out}: --out must end in {', '.join(allowed)}")
    if not out.parent.exists():
        raise _usage(f"{out}: the directory {out.parent} does not exist")


def _field_arg(value: str | None) -> str | None:
    return None if value in (None, "none") else value


def cmd_plot(args) -> int:
    from . import figures

    run = _load(args.file)
    path = Path(args.file)
    out = Path(args.out) if args.out else path.with_name(f"{path.stem}_{args.kind}.png")
    _check_out(out, FIGURE_SUFFIXES)
    field = _field_arg(args.field)
    try:
        if args.kind == "dashboard":
            fig = figures.dashboard_figure(run, field=field if args.field else "il2", time_day=args.time)
        elif args.kind == "snapshot":
            fig = figures.snapshot_figure(run, args.time, field=field, log=args.log, units=args.units)
        else:
            fig = figures.fields_figure(run, args.time, shared=args.shared, log=args.log, units=args.units)
    except ValueError as e:
        raise _usage(str(e)) from None
    fig.savefig(out, dpi=FIGURE_DPI)
    print(f"wrote {out}")
    return 0


def cmd_compare(args) -> int:
    from .figures import compare_figure

    runs = [_load(f) for f in args.files]
    out = Path(args.out)
    _check_out(out, FIGURE_SUFFIXES)
    labels = [s.strip() for s in args.labels.split(",")] if args.labels else None
    try:
        fig = compare_figure(runs, labels, field=_field_arg(args.field), time_day=args.time)
    except ValueError as e:
        raise _usage(str(e)) from None
    fig.savefig(out, dpi=FIGURE_DPI)
    print(f"wrote {out}")
    return 0


def cmd_animate(args) -> int:
    import time

    from .animate import FORMATS, animate

    run = _load(args.file)
    out = Path(args.out)
    _check_out(out, FORMATS)
    if args.max_frames is not None and args.max_frames < 1:
        raise _usage(f"--max-frames {args.max_frames}: allowed range >= 1")
    t0 = time.perf_counter()
    try:
        animate(
            run,
            out,
            field=_field_arg(args.field),
            fps=args.fps,
            log=not args.linear,
            progress=not args.quiet,
            max_frames=args.max_frames,
        )
    except ValueError as e:
        raise _usage(str(e)) from None
    if not args.quiet:
        print(f"wrote {out} in {time.perf_counter() - t0:.1f} s")
    return 0


def serve_command(scenario: str | None, sets: list[str] | None, host: str, port: int, open_browser: bool = False):
    """The solara command line and environment that serve :mod:`abm.viz.app`."""
    from .app import DEFAULT_SCENARIO, SERVE_SETS

    env = dict(os.environ)
    env["ABM_SERVE_LOOPBACK"] = "1" if host in LOOPBACK else "0"
    env["ABM_SERVE_SCENARIO"] = scenario or DEFAULT_SCENARIO
    env["ABM_SERVE_SETS"] = json.dumps(list(sets) if sets is not None else list(SERVE_SETS))
    app = Path(__file__).with_name("serve_page.py")
    cmd = [
        sys.executable,
        "-m",
        "solara",
        "run",
        str(app),
        "--host",
        host,
        "--port",
        str(port),
        "--production",
        "--open" if open_browser else "--no-open",
    ]
    return cmd, env


def cmd_serve(args) -> int:
    try:
        import solara  # noqa: F401
    except ImportError:
        raise _usage('abm serve needs solara: in the abm clone, python -m pip install -e ".[viz]"') from None
    from abm.scenario import Scenario

    from .app import SERVE_SETS

    sets = args.sets if args.sets is not None else list(SERVE_SETS)
    Scenario.load(args.scenario or "il2_ifna", sets=sets)  # fail here, with a clear message, on a bad scenario
    if not 0 < args.port < 65536:
        raise _usage(f"--port {args.port}: allowed range 1-65535")
    cmd, env = serve_command(args.scenario, sets, args.host, args.port, args.open)
    print(f"serving {args.scenario or 'il2_ifna'} on http://{args.host}:{args.port} (Ctrl-C to stop)", flush=True)
    return run_server(cmd, env)


def run_server(cmd: list[str], env: dict[str, str]) -> int:
    """Run the page server as a child in its own process group and take it down with us: SIGTERM, SIGINT or
    SIGHUP to ``abm serve`` stops the server's whole process tree (SIGTERM, then SIGKILL after
    :data:`STOP_GRACE_S`), so no solara process is left serving on the port."""
    import signal

    child = subprocess.Popen(cmd, env=env, start_new_session=True)
    stopping = []

    def stop(signum, _frame):
        stopping.append(signum)
        _kill_group(child, signal.SIGTERM)

    old = {s: signal.signal(s, stop) for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)}
    try:
        while True:
            try:
                rc = child.wait(timeout=STOP_GRACE_S if stopping else None)
                break
            except subprocess.TimeoutExpired:
                _kill_group(child, signal.SIGKILL)
    finally:
        _kill_group(child, signal.SIGKILL)  # anything of the tree still alive (the leader may be gone already)
        for s, h in old.items():
            signal.signal(s, h)
    if stopping:
        return 128 + int(stopping[0]) if stopping[0] != signal.SIGINT else 130
    return rc


def _kill_group(child: subprocess.Popen, sig) -> None:
    try:
        os.killpg(child.pid, sig)
    except (ProcessLookupError, PermissionError):
        pass
