"""The ``saec`` command: demo, serve, compress, update, fold, snapshots, rollback, verify, warmup, evaluate."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from saec import __version__
from saec.cli_support import HelpFormatter, add_lazy, check_listen, check_store, missing_extra
from saec.errors import SaecError
from saec.settings import Settings, SettingsError, flag, spec, var
from saec.settings import names as settings_names


def _cmd_demo(args: argparse.Namespace) -> int:
    args.store = _store(args, create=True)
    from saec.demo import build_demo

    print(f"building the demo snapshot in {args.store} ...", file=sys.stderr)
    version = build_demo(args.store, seed=args.seed, k=args.k, scale=args.scale)
    print(version)
    return 0


def _cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from saec.server.metrics_dir import shared_metrics_dir

    # Flags over variables; a refusal names the one the value came from (--port or SAEC_PORT).
    given = {flag(k): v for k, v in vars(args).items() if k in settings_names() and v is not None}
    settings = Settings.from_mapping({**_env_settings(), **given})
    check_store(settings.store, wait=args.wait, origin=_origin("store", given))
    check_listen(settings.host, settings.port, host_from=_origin("host", given), port_from=_origin("port", given))
    if settings.grpc_port:
        check_listen(settings.host, settings.grpc_port, host_from=_origin("host", given),
                     port_from=_origin("grpc_port", given), zero="no gRPC")
    if settings.update_log:
        from saec.store.updatelog import open_update_log

        open_update_log(settings.update_log).close()  # a URL it cannot use is refused here, in one line
    # Workers are separate processes: they read their settings from the environment.
    os.environ.update(settings.to_env())
    with shared_metrics_dir(settings.workers):  # one /metrics scrape counts every worker
        uvicorn.run(
            "saec.server.supervision:create_worker_app",
            factory=True,
            host=settings.host,
            port=settings.port,
            workers=settings.workers,
            log_level=args.log_level,
            access_log=False,
        )
    return 0


def _store(args: argparse.Namespace, *, create: bool = False) -> str:
    """The store of a command with ``--store``: the flag, else SAEC_STORE, else the default; checked."""
    given = {"--store": args.store} if args.store is not None else {}
    store = Settings.from_mapping({**{k: v for k, v in _env_settings().items() if k == var("store")}, **given}).store
    check_store(store, create=create, origin=_origin("store", given))
    return store


def _env_settings() -> dict[str, str]:
    known = {var(n) for n in settings_names()}
    return {k: v for k, v in os.environ.items() if k in known}


def _origin(name: str, given: dict[str, object]) -> str:
    """How the user set setting ``name``: its flag, its variable, or (neither) its flag."""
    if flag(name) in given:
        return flag(name)
    return var(name) if var(name) in os.environ else flag(name)


def _cmd_snapshots(args: argparse.Namespace) -> int:
    args.store = _store(args)
    from saec.store.layout import StoreLayout
    from saec.store.snapshot import open_snapshot

    layout = StoreLayout(args.store)
    live = layout.current_or_none()
    for v in layout.versions():
        mark = "*" if v == live else " "
        try:
            snap = open_snapshot(layout.snapshot_dir(v))
        except SaecError as exc:  # listed, not fatal: the others are still worth seeing
            print(f"{mark} {v}  DAMAGED: {exc}")
            continue
        print(f"{mark} {v}  {len(snap.fields)} fields  {snap.source}")
    return 0


def _cmd_rollback(args: argparse.Namespace) -> int:
    args.store = _store(args)
    from saec.store.layout import StoreLayout

    layout = StoreLayout(args.store)
    try:
        was: str | None = layout.read_current()
    except SaecError:
        was = None
    version = layout.rollback(args.to)
    print(f"rolled back: CURRENT -> {version} (was {was}); publishes of newer snapshots go live again as usual")
    return 0


def _cmd_verify(args: argparse.Namespace) -> int:
    args.store = _store(args)
    from saec.store.layout import StoreLayout
    from saec.store.snapshot import open_snapshot

    layout = StoreLayout(args.store)
    version = args.version or layout.current()
    # Opening checks field and array names; verify() checksums and symlinks.
    open_snapshot(layout.snapshot_dir(version)).verify()
    print(f"{version}: every array matches its checksum; names are plain and no symlink leads outside")
    return 0


def _cmd_warmup(args: argparse.Namespace) -> int:
    from saec.store.warmup import warm_cache

    seconds = warm_cache()
    print(f"compiled every lookup kernel into the numba cache in {seconds:.1f} s")
    return 0


def build_parser(argv: Sequence[str] = ()) -> argparse.ArgumentParser:
    """The ``saec`` parser; subcommands with heavy imports load only if ``argv`` asks for them."""
    defaults = _defaults()
    parser = argparse.ArgumentParser(prog="saec", description=__doc__, formatter_class=HelpFormatter)
    parser.add_argument("--version", action="version", version=f"saec {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name: str, help: str) -> argparse.ArgumentParser:
        return sub.add_parser(name, help=help, description=help, formatter_class=HelpFormatter)

    store_help = f"the store folder (SAEC_STORE; default: {defaults.store})"
    p = add("demo", "build a demo snapshot from generated data (raw ids 0..n-1 in every field)")
    p.add_argument("--store", help=store_help + "; created if missing")
    p.add_argument("--seed", type=int, default=0, help="seeds the generated data and k-means")
    p.add_argument("--k", type=int, default=100, help="codebook size of each compressed field")
    p.add_argument("--scale", type=float, default=1.0, help="multiply every field's size")
    p.set_defaults(run=_cmd_demo)

    p = add("serve", "serve the store's live snapshot over HTTP")
    p.epilog = _serve_epilog()
    p.add_argument("--wait", action="store_true", help="start even if the store has no snapshot yet, and serve the first one published")
    for name in settings_names():
        s = spec(name)
        if not s.flag:
            continue
        shown = getattr(defaults, name)
        if not Settings.__dataclass_fields__[name].repr:  # a secret (a password in a URL): not in --help
            shown = "set" if shown else ""
        what = "" if s.rule.kind is str and not s.rule.choices else f": {s.rule.expected()}"
        text = f"{s.help}{what} ({var(name)}; default: {shown if shown != '' else 'empty'})"
        if s.rule.kind is bool:
            p.add_argument(flag(name), dest=name, action=argparse.BooleanOptionalAction, default=None, help=text)
        else:
            # No argparse type: Settings parses the text, so a refusal is one line naming the flag.
            p.add_argument(flag(name), dest=name, default=None, metavar=name.upper(), help=text)
    p.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"], help="uvicorn's log level")
    p.set_defaults(run=_cmd_serve)

    p = add("snapshots", "list published snapshots (* = live)")
    p.add_argument("--store", help=store_help)
    p.set_defaults(run=_cmd_snapshots)

    p = add("rollback", "make an older snapshot live again")
    p.add_argument("--store", help=store_help)
    p.add_argument("--to", help="version to make live (default: the one before the live one)")
    p.set_defaults(run=_cmd_rollback)

    p = add("verify", "check a snapshot's arrays against their checksums")
    p.add_argument("--store", help=store_help)
    p.add_argument("--version", help="version to check (default: the live one)")
    p.set_defaults(run=_cmd_verify)

    p = add("warmup", "compile every lookup kernel into the compile cache (image builds)")
    p.set_defaults(run=_cmd_warmup)

    add_lazy(sub, "compress", "saec.compress_cmd", "compress trained embedding tables into a published snapshot", argv)
    add_lazy(sub, "update", "saec.update_cmd", "append new or changed vectors to the live snapshot's deltas", argv)
    add_lazy(sub, "fold", "saec.fold_cmd", "publish the live snapshot plus its deltas as a new snapshot", argv)
    add_lazy(sub, "trim-log", "saec.trimlog_cmd", "drop the update log's entries that no kept snapshot needs", argv)
    add_lazy(sub, "evaluate", "saec.training.cli", "reproduce the paper's AUC / log-loss tables (training extra)", argv)
    return parser


def _serve_epilog() -> str:
    only = [n for n in settings_names() if not spec(n).flag]
    lines = ["Each flag reads its variable when not given. In the environment only:"]
    lines += [f"  {var(n)}: {spec(n).help}" for n in only]
    lines += ["A bad value stops the command before it starts: one line naming the flag or variable, exit status 2."]
    return "\n".join(lines)


def _defaults() -> Settings:
    # Bad SAEC_* values must not break --help or --version; main() reports them otherwise.
    try:
        return Settings.from_env()
    except SettingsError:
        return Settings()


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``saec``; every mistake is one line on stderr and exit status 2, never a traceback."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser(argv).parse_args(argv)  # --help and --version exit here
    try:
        Settings.from_env()  # a bad SAEC_* variable is reported before any work
        return int(args.run(args) or 0)
    except SaecError as exc:
        print(f"saec {args.command}: {exc}", file=sys.stderr)
    except ModuleNotFoundError as exc:
        print(f"saec {args.command}: {missing_extra(exc)}", file=sys.stderr)
    except OSError as exc:
        what = f"{exc.strerror}: {exc.filename}" if exc.strerror and exc.filename else str(exc)
        print(f"saec {args.command}: {what}", file=sys.stderr)
    except KeyboardInterrupt:
        return 130
    return 2


if __name__ == "__main__":
    sys.exit(main())
