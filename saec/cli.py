"""The ``saec`` command: demo, serve, compress, snapshots, rollback, verify, evaluate."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from saec.errors import SaecError
from saec.settings import Settings


def _cmd_demo(args: argparse.Namespace) -> int:
    from saec.demo import build_demo

    print(f"building the demo snapshot in {args.store} ...", file=sys.stderr)
    version = build_demo(args.store, seed=args.seed, k=args.k, scale=args.scale)
    print(version)
    return 0


def _cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from saec.server.metrics_dir import shared_metrics_dir

    settings = Settings.from_mapping(
        {
            **Settings.from_env().__dict__,
            **{k: v for k, v in vars(args).items() if k in Settings.__dataclass_fields__ and v is not None},
        }
    )
    # Workers are separate processes: they read their settings from the environment.
    os.environ.update(settings.to_env())
    with shared_metrics_dir(settings.workers):  # one /metrics scrape counts every worker
        uvicorn.run(
            "saec.server.app:create_app_from_env",
            factory=True,
            host=settings.host,
            port=settings.port,
            workers=settings.workers,
            log_level=args.log_level,
            access_log=False,
        )
    return 0


def _cmd_snapshots(args: argparse.Namespace) -> int:
    from saec.store.layout import StoreLayout
    from saec.store.snapshot import open_snapshot

    layout = StoreLayout(args.store)
    live = layout.current_or_none()
    for v in layout.versions():
        snap = open_snapshot(layout.snapshot_path(v))
        mark = "*" if v == live else " "
        print(f"{mark} {v}  {len(snap.fields)} fields  {snap.source}")
    return 0


def _cmd_rollback(args: argparse.Namespace) -> int:
    from saec.store.layout import StoreLayout

    version = StoreLayout(args.store).rollback(args.to)
    print(f"CURRENT -> {version}")
    return 0


def _cmd_verify(args: argparse.Namespace) -> int:
    from saec.store.layout import StoreLayout
    from saec.store.snapshot import open_snapshot

    layout = StoreLayout(args.store)
    version = args.version or layout.current()
    open_snapshot(layout.snapshot_path(version)).verify()
    print(f"{version}: every array matches its checksum")
    return 0


def build_parser() -> argparse.ArgumentParser:
    defaults = Settings.from_env()
    parser = argparse.ArgumentParser(prog="saec", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("demo", help="build a demo snapshot from generated data")
    p.add_argument("--store", default=defaults.store)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--k", type=int, default=100)
    p.add_argument("--scale", type=float, default=1.0, help="multiply every field's size")
    p.set_defaults(run=_cmd_demo)

    p = sub.add_parser("serve", help="serve the store's live snapshot over HTTP")
    p.add_argument("--store")
    p.add_argument("--host")
    p.add_argument("--port", type=int)
    p.add_argument("--workers", type=int)
    p.add_argument("--max-ids", dest="max_ids", type=int)
    p.add_argument("--default-vector", dest="default_vector", choices=["zeros", "mean"])
    p.add_argument("--reload-interval", dest="reload_interval", type=float)
    p.add_argument("--log-level", default="info")
    p.set_defaults(run=_cmd_serve)

    p = sub.add_parser("snapshots", help="list published snapshots (* = live)")
    p.add_argument("--store", default=defaults.store)
    p.set_defaults(run=_cmd_snapshots)

    p = sub.add_parser("rollback", help="make an older snapshot live again")
    p.add_argument("--store", default=defaults.store)
    p.add_argument("--to", help="version (default: the one before the live one)")
    p.set_defaults(run=_cmd_rollback)

    p = sub.add_parser("verify", help="check a snapshot's arrays against their checksums")
    p.add_argument("--store", default=defaults.store)
    p.add_argument("--version")
    p.set_defaults(run=_cmd_verify)

    from saec import compress_cmd

    compress_cmd.add_parser(sub)
    _add_optional(sub, "saec.training.cli")
    return parser


def _add_optional(sub: argparse._SubParsersAction, module: str) -> None:
    """Subcommands whose packages need extras register themselves if importable."""
    import importlib

    try:
        mod = importlib.import_module(module)
    except ImportError:
        return
    mod.add_parser(sub)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.run(args) or 0)
    except SaecError as exc:
        print(f"saec {args.command}: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
