"""``saec compress``: trained tables in, one published snapshot out.

    saec compress emb.npz more.parquet --out STORE [--k 100] [--init kmeans++|random|topk]
                  [--top-n 100000] [--min-factor 100] [--seed 0] [--spec fields.toml]
                  [--stages S [--codebook-dtype float32|float16]]
                  [--hnsw-m auto] [--hnsw-ef-construction 200]
                  [--per-field NAME:KEY=VALUE,...]
                  [--updates-covered-until TIME|none] [--deltas MIRROR]

Each field is read whole (its chunks concatenated), compressed when it has at least
``min_factor * k`` features and stored dense otherwise. ``--per-field`` overrides the
settings of one field (``item:k=256,stages=2,codebook-dtype=float16``; keys: k, top-n,
min-factor, private-rows, weight-by-count, subvectors, stages, codebook-dtype,
dense-dtype), which is how ``saec evaluate`` prints a recommendation whose fields differ.
Any error names the field and
leaves the store as it was: nothing is published unless every field succeeded.

Updates pending on the live snapshot that the checkpoint does not cover are carried into
the new snapshot's deltas, re-assigned to its codebooks (``store.carry``). The checkpoint
covers the updates written until ``--updates-covered-until`` (the time the trainer
exported it: ISO-8601 or Unix seconds; ``none``: no update); by default, only what the
live snapshot's checkpoint covered, so every pending update is carried. A store at a URL
keeps its deltas in a local folder: give it as ``--deltas MIRROR`` to carry them.
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
from contextlib import AbstractContextManager, closing, nullcontext
from dataclasses import dataclass
from typing import Any, TextIO

from saec.cli_support import HelpFormatter, positive_int
from saec.compress import INIT_METHODS, CompressedField, DenseField, ProductField, ResidualField, compress_field
from saec.loaders import open_table, spec_from_flags
from saec.loaders.errors import SpecError
from saec.pipelined import pipelined
from saec.progress import Progress
from saec.store import carry, remote
from saec.store.assign_index import EF_CONSTRUCTION, M_RETRY, HnswParams, M
from saec.store.deltas import DeltaWriter, check_log, deltas_dir
from saec.store.drift import QUANTISATION_ERROR
from saec.store.errors import SnapshotNotFoundError, StoreError
from saec.store.hashing import hash_ids
from saec.store.layout import StoreLayout
from saec.store.writer import DEFAULT_KEEP, SnapshotWriter


@dataclass(frozen=True)
class FieldReport:
    """One row of the closing table."""

    name: str
    kind: str
    features: int
    dim: int
    stored_vectors: int
    ratio: float
    inertia: float | None
    seconds: float
    dense_reason: str = ""


# Fields prepared at once beside the one being written. Reading, hashing, k-means++ and
# the M-step run on one thread each; two fields under way keep both cores of a small
# machine busier (bench.compress_e2e, day-1 size: 38.6 s with 1, 36.1 s with 2). Not every
# CPU by default: each field in flight is held in memory whole.
DEFAULT_WORKERS = 2


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "compress",
        help="compress trained embedding tables into a snapshot",
        description=__doc__,
        formatter_class=HelpFormatter,  # keeps the description's layout, shows defaults
    )
    p.add_argument("inputs", nargs="+", metavar="INPUT", help=".npz, .npy folder, .parquet, or torch state dict")
    p.add_argument("--out", required=True, help="the store to publish into: a folder or an fsspec URL (s3://...)")
    p.add_argument("--k", type=int, default=100, help="codebook rows per compressed field")
    p.add_argument("--init", choices=INIT_METHODS, default="kmeans++", help="how k-means picks its first centroids")
    p.add_argument("--top-n", dest="top_n", type=int, default=100_000,
                   help="cluster only this many most frequent features (0: all, i.e. full clustering)")
    p.add_argument("--min-factor", dest="min_factor", type=int, default=100,
                   help="compress a field only if it has at least min_factor * k features")
    p.add_argument("--private-rows", dest="private_rows", type=int, default=0,
                   help="the N most frequent features of a compressed field keep their own vector "
                        "(codebook of k + N rows; masks uint16 past 256 rows; with --subvectors, k + N rows a slice)")
    p.add_argument("--weight-by-count", dest="weight_by_count", action="store_true",
                   help="k-means weights each feature by its count, so centroids sit where the traffic is (needs counts)")
    p.add_argument("--subvectors", type=int, default=1, metavar="M",
                   help="product quantisation: cut each vector into M slices (M divides dim), a codebook of k rows "
                        "per slice, M mask bytes a feature (snapshot format version 3); 1 is one codebook")
    p.add_argument("--stages", type=int, default=1, metavar="S",
                   help="residual quantisation: S codebooks of k rows over the whole vector, each fitted to what the "
                        "earlier stages left; a feature reads the sum of its S rows, S mask bytes a feature "
                        "(snapshot format version 4); 1 is one codebook")
    p.add_argument("--codebook-dtype", dest="codebook_dtype", choices=["float32", "float16"], default="float32",
                   help="how residual fields (--stages > 1) store their S codebooks: float16 halves their bytes "
                        "(served widened to float32, summed in float32)")
    p.add_argument("--dense-dtype", dest="dense_dtype", action="append", default=[], metavar="[FIELD=]DTYPE",
                   help="how fields left dense are stored: float32 (default), float16, or int8 (8-bit row-wise with a "
                        "scale and bias per row); FIELD=DTYPE for one field; repeatable")
    add_hnsw_flags(p)
    p.add_argument("--per-field", dest="per_field", action="append", default=[], metavar="NAME:KEY=VALUE,...",
                   help="settings of one field over the flags above: k, top-n, min-factor, private-rows, weight-by-count "
                        "(0/1), subvectors, stages, codebook-dtype, dense-dtype; e.g. item:k=256,stages=2,codebook-dtype=float16; "
                        "repeatable")
    p.add_argument("--seed", type=int, default=0, help="seeds k-means")
    p.add_argument("--max-iter", dest="max_iter", type=int, default=50, help="k-means iterations at most")
    p.add_argument("--spec", help="field spec file (.json or .toml); see docs/loaders.md")
    p.add_argument("--field", action="append", default=[], help="NAME or NAME:ids=..,vectors=..,counts=..")
    p.add_argument("--column", action="append", default=[], help="parquet column names: id=.., vector=..")
    p.add_argument("--format", choices=["npz", "npy", "parquet", "torch"], help="input format (default: from each file's name)")
    p.add_argument("--source", default="", help="free text recorded in the snapshot (empty: the inputs)")
    p.add_argument("--keep", type=int, default=DEFAULT_KEEP, help="snapshots to keep in the store")
    p.add_argument("--updates-covered-until", dest="covered_until", default=None, metavar="TIME",
                   help="the checkpoint holds the updates written until TIME (ISO-8601 or Unix seconds; 'none': no "
                        "update); later ones are carried into the new snapshot. Default: what the live snapshot's "
                        "checkpoint covered (every pending update is carried)")
    p.add_argument("--deltas", default="", metavar="MIRROR",
                   help="for --out at a URL: the local folder holding the store's deltas (the cache folder of the "
                        "replica taking updates), whose pending updates are carried; 'none': there are none")
    p.add_argument("--repair", action="store_true",
                   help="rewrite damaged delta logs of the live snapshot with every intact frame before carrying them "
                        "(without it a damaged log is refused, as by saec fold)")
    p.add_argument("--workers", type=positive_int, default=DEFAULT_WORKERS, metavar="N",
                   help="fields read, clustered and assigned at once in this process, beside the one being written "
                        "(holds up to N + 1 fields in memory; fields are read one at a time and written in order, "
                        "so the snapshot does not depend on N)")
    p.add_argument("--dask", metavar="ADDRESS",
                   help="compress on Dask: local:N (a local cluster of N processes) or tcp://HOST:PORT")
    p.add_argument("--dask-split-rows", dest="dask_split_rows", type=int, default=None,
                   help="with --dask, split fields of more rows than this over the cluster (default 4,000,000)")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    if args.spec and (args.field or args.column):
        raise SpecError("give either --spec or --field/--column flags, not both")
    if getattr(args, "codebook_dtype", "float32") != "float32" and getattr(args, "stages", 1) <= 1:
        raise SpecError(
            f"--codebook-dtype {args.codebook_dtype} applies to residual fields (--stages > 1); "
            f"add --stages S or drop --codebook-dtype"
        )
    overrides = per_field_settings(getattr(args, "per_field", []))
    if overrides and args.dask:
        raise SpecError("--per-field is not available with --dask; compress those fields in a run of their own")
    spec = args.spec or spec_from_flags(args.field, args.column, args.format)
    covered = getattr(args, "covered_until", None)
    covered_until = carry.DEFAULT if covered is None else carry.parse_watermark(covered)
    mirror = _mirror(args.out, getattr(args, "deltas", ""), args.keep)
    if mirror is None and "://" not in args.out:
        # Carrying a damaged log would move its intact frames to the new base and leave the
        # damage reported only beside the old one: refused before any work, as saec fold does.
        _check_logs(args.out, repair=getattr(args, "repair", False))
    started = time.perf_counter()
    tables = [open_table(path, spec, format=args.format) for path in args.inputs]
    try:
        plan = [(t, info) for t in tables for info in t.fields()]
        names = [info.name for _, info in plan]
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            raise SpecError(f"expected each field in one input only, found {repeated} in several")
        unknown = sorted(set(overrides) - set(names))
        if unknown:
            raise SpecError(f"--per-field names {unknown}, which no input holds; the inputs' fields: {names}")
        reports = []
        # A URL (s3://...) is written to a local folder first and copied up once published:
        # the folder holding its deltas (--deltas), or a temporary one.
        with Progress() as progress, _staged(args.out, mirror, args.keep) as out, \
                SnapshotWriter(out, source=args.source or " ".join(args.inputs), keep=args.keep,
                               hnsw=hnsw_params(args)) as writer:
            if args.dask:
                reports = _on_dask(writer, plan, args, progress)
            else:
                progress.stage(f"compressing {len(plan)} field(s)", len(plan))
                jobs = [(table, info.name, field_args(args, overrides.get(info.name, {}))) for table, info in plan]
                # The next fields are read and clustered while this one is indexed and written.
                # closing(): on an error the fields under way are let finish before the writer
                # discards the snapshot, and nothing after them is started.
                with closing(pipelined(jobs, _prepare_field, workers=args.workers, read=_read_field)) as fields:
                    for (_, name, field_flags), prepared in fields:
                        report = _write(writer, name, *prepared, field_flags)
                        progress.note(f"{name}: {report.kind}, {report.features:,} x {report.dim}, "
                                      f"done in {report.seconds:.1f} s")
                        progress.step(name)
                        reports.append(report)
            progress.stage("publishing")
            if mirror is None:
                version, carried = carry.publish(writer, covered_until=covered_until)
            else:
                version, carried = carry.publish(writer, covered_until=covered_until, make_current=False,
                                                 switch=lambda v: _switch_remote(mirror, v, args.keep))
    finally:
        for t in tables:
            t.close()
    _print_table(reports, version, time.perf_counter() - started)
    for line in carried.lines():
        print(line)
    return 0


# --per-field keys: (attribute of the parsed flags, type).
PER_FIELD_KEYS = {
    "k": ("k", int), "top-n": ("top_n", int), "min-factor": ("min_factor", int), "private-rows": ("private_rows", int),
    "weight-by-count": ("weight_by_count", bool), "subvectors": ("subvectors", int), "stages": ("stages", int),
    "codebook-dtype": ("codebook_dtype", str), "dense-dtype": ("dense_dtype", str),
}


def per_field_settings(items: list[str]) -> dict[str, dict[str, object]]:
    """``--per-field NAME:KEY=VALUE,...`` values as field name -> {attribute: value} (the last wins per key)."""
    out: dict[str, dict[str, object]] = {}
    for item in items:
        name, sep, body = item.partition(":")
        if not sep or not name or not body:
            raise SpecError(f"--per-field: expected NAME:KEY=VALUE[,KEY=VALUE...], got {item!r}")
        got = out.setdefault(name, {})
        for pair in body.split(","):
            key, eq, value = pair.partition("=")
            if not eq or key not in PER_FIELD_KEYS:
                raise SpecError(f"--per-field {name}: expected KEY=VALUE with KEY one of {sorted(PER_FIELD_KEYS)}, got {pair!r}")
            attr, kind = PER_FIELD_KEYS[key]
            if kind is bool:
                if value not in ("0", "1", "true", "false"):
                    raise SpecError(f"--per-field {name}: {key} expects 0 or 1, got {value!r}")
                got[attr] = value in ("1", "true")
            elif kind is int:
                try:
                    got[attr] = int(value)
                except ValueError:
                    raise SpecError(f"--per-field {name}: {key} expects an integer, got {value!r}") from None
            elif attr == "codebook_dtype" and value not in ("float32", "float16"):
                raise SpecError(f"--per-field {name}: codebook-dtype expects float32 or float16, got {value!r}")
            elif attr == "dense_dtype" and value not in ("float32", "float16", "int8"):
                raise SpecError(f"--per-field {name}: dense-dtype expects float32, float16 or int8, got {value!r}")
            else:
                got[attr] = value
        stages = got.get("stages", 1)
        if got.get("codebook_dtype", "float32") != "float32" and not (isinstance(stages, int) and stages > 1):
            raise SpecError(f"--per-field {name}: codebook-dtype applies to residual fields; add stages=S (S > 1)")
    return out


def field_args(args: argparse.Namespace, override: dict[str, object]) -> argparse.Namespace:
    """The flags one field is compressed with: ``args`` with its ``--per-field`` settings over them.

    ``dense-dtype=D`` stores the field dense in D, never clustered.
    """
    if not override:
        return args
    merged = argparse.Namespace(**vars(args))
    for attr, value in override.items():
        if attr == "dense_dtype":
            merged.dense_only = True
            merged.dense_dtype = [*getattr(args, "dense_dtype", []), str(value)]
        else:
            setattr(merged, attr, value)
    return merged


def _check_logs(out: str, *, repair: bool) -> None:
    """Refuse (or, with ``repair``, repair) damaged delta logs the publish would carry."""
    layout = StoreLayout(out)
    if not layout.root.is_dir():
        return
    try:
        live = layout.current_or_none()
    except StoreError:
        return  # a damaged CURRENT: the publish repairs it and says it cannot find pending updates
    if live is None:
        return
    for base in carry.uncovered_logs(layout, live)[0]:
        directory = deltas_dir(layout.root, base)
        if not directory.is_dir():
            continue
        with DeltaWriter(layout.root, base, check_current=False).lock():
            check_log(directory, repair_it=repair)


def _mirror(out: str, deltas: str, keep: int) -> remote.StoreMirror | None:
    """For ``--out`` at a URL with ``--deltas MIRROR``: the mirror, brought up to the URL's
    live snapshot (None when the URL holds none yet: nothing is pending)."""
    if not remote.is_url(out):
        if deltas:
            raise SpecError(f"expected --deltas only with --out at a URL; {out} keeps its own deltas")
        return None
    if not deltas:
        print(f"warning: {out} keeps no deltas; updates pending in a replica's deltas folder are NOT carried into "
              "this snapshot: give --deltas MIRROR (that folder) to carry them, or --deltas none to say there are "
              "none", file=sys.stderr)
        return None
    if deltas == "none":
        return None
    mirror = remote.StoreMirror(out, deltas, keep=keep)
    try:
        mirror.sync()
    except SnapshotNotFoundError:
        return None
    return mirror


def _staged(out: str, mirror: remote.StoreMirror | None, keep: int) -> AbstractContextManager[str]:
    if mirror is None:
        return remote.staged(out, keep=keep)
    return nullcontext(str(mirror.layout.root))


def _switch_remote(mirror: remote.StoreMirror, version: str, keep: int) -> None:
    """Make ``version`` (published into the mirror folder, not live there) live at the
    URL, then in the folder; called under the folder's deltas lock (store.carry)."""
    base = mirror.layout.current()
    moved = mirror.remote_current()
    if moved != base:
        raise StoreError(f"{mirror.url}: expected the live snapshot to stay {base} while compressing, it is now "
                         f"{moved}; run the compress again (with --deltas {mirror.layout.root})")
    remote.publish_snapshot(mirror.layout.root, version, mirror.url, keep=keep)
    with mirror.layout.locked():
        mirror.layout.write_current(version)


def _read_field(job: tuple[Any, str, argparse.Namespace]) -> tuple[Any, str, argparse.Namespace, float]:
    """One field read from its input (one field at a time, in plan order): its chunk, name,
    flags and the time it started, for :func:`_prepare_field`."""
    table, name, args = job
    t0 = time.perf_counter()
    return table.read_field(name), name, args, t0


def _prepare_field(read: tuple[Any, str, argparse.Namespace, float]) -> tuple[Any, Any, int, Any, float]:
    """One field hashed and compressed (on a :func:`saec.pipelined.pipelined` worker): its
    keys, counts, dim, compressed result and start time, for :func:`_write`."""
    chunk, name, args, t0 = read
    keys = hash_ids(chunk.ids, name)
    dim = chunk.vectors.shape[1]
    if getattr(args, "dense_only", False):
        return keys, chunk.counts, dim, DenseField(vectors=chunk.vectors, reason="--per-field dense-dtype"), t0
    result = compress_field(
        chunk.vectors, chunk.counts, k=args.k, init=args.init, top_n=args.top_n or None,
        min_factor=args.min_factor, seed=args.seed, max_iter=args.max_iter,
        private_rows=getattr(args, "private_rows", 0), weight_by_count=getattr(args, "weight_by_count", False),
        subvectors=getattr(args, "subvectors", 1), stages=getattr(args, "stages", 1), field=name,
    )
    return keys, chunk.counts, dim, result, t0


def _on_dask(writer: SnapshotWriter, plan: list, args: argparse.Namespace, stages: Progress) -> list[FieldReport]:
    """Compress the fields on a Dask cluster (saec.dask_compress) and write them in plan order."""
    from saec import dask_compress

    params = dask_compress.Params(k=args.k, init=args.init, top_n=args.top_n or None, min_factor=args.min_factor,
                                  seed=args.seed, max_iter=args.max_iter, private_rows=getattr(args, "private_rows", 0),
                                  weight_by_count=getattr(args, "weight_by_count", False),
                                  subvectors=getattr(args, "subvectors", 1), stages=getattr(args, "stages", 1))
    split = args.dask_split_rows or dask_compress.DEFAULT_SPLIT_ROWS
    reports = []
    with dask_compress.connect(args.dask) as client:
        stages.stage(f"compressing on Dask ({args.dask})", total=len(plan))
        for done in dask_compress.compress_plan(client, plan, params, split_rows=split, progress=stages):
            reports.append(_write(writer, done.name, done.keys, done.counts, done.dim, done.result,
                                  time.perf_counter() - done.seconds, args))
    return reports


def _write(writer: SnapshotWriter, name: str, keys, counts, dim: int, result, t0: float,
           args: argparse.Namespace) -> FieldReport:
    n = keys.shape[0]
    if isinstance(result, CompressedField):
        k = result.codebook.shape[0]
        writer.add_compressed_field(
            name, keys, result.codebook, result.masks, counts,
            attrs={"init": result.init, "inertia": result.inertia, "clustered": result.clustered,
                   "n_iter": result.n_iter, "seed": args.seed, "private_rows": result.private_rows,
                   QUANTISATION_ERROR: result.inertia / n if n else 0.0},
        )
        report = FieldReport(name, f"k={k}", n, dim, k, n * 4 * dim / (n * result.masks.itemsize + k * 4 * dim),
                             result.inertia, time.perf_counter() - t0)
    elif isinstance(result, ProductField):
        m, k = result.subvectors, result.codebooks.shape[1]
        writer.add_product_field(
            name, keys, result.codebooks, result.masks, counts,
            attrs={"init": result.init, "inertia": result.inertia, "clustered": result.clustered,
                   "n_iter": result.n_iter, "seed": args.seed, "weight_by_count": getattr(args, "weight_by_count", False),
                   "private_rows": result.private_rows},
        )
        report = FieldReport(name, f"{m} x k={k}", n, dim, m * k, n * 4 * dim / (n * result.masks.itemsize * m + k * 4 * dim),
                             result.inertia, time.perf_counter() - t0)
    elif isinstance(result, ResidualField):
        s, k = result.stages, result.codebooks.shape[1]
        codebook_dtype = getattr(args, "codebook_dtype", "float32")
        writer.add_residual_field(
            name, keys, result.codebooks, result.masks, counts,
            attrs={"init": result.init, "inertia": result.inertia, "clustered": result.clustered,
                   "n_iter": result.n_iter, "seed": args.seed, "weight_by_count": getattr(args, "weight_by_count", False)},
            codebook_dtype=codebook_dtype,
        )
        # S codebooks of k rows, each the whole vector long, at their stored bytes.
        value_bytes = 2 if codebook_dtype == "float16" else 4
        report = FieldReport(name, f"{s} stages x k={k}" + (" float16" if value_bytes == 2 else ""), n, dim, s * k,
                             n * 4 * dim / (n * result.masks.itemsize * s + s * k * value_bytes * dim),
                             result.inertia, time.perf_counter() - t0)
    else:
        dtype = dense_dtype(getattr(args, "dense_dtype", []), name)
        if dtype == "float32":
            writer.add_dense_field(name, keys, result.vectors, counts, attrs={"reason": result.reason})
        else:
            writer.add_quantised_field(name, keys, result.vectors, dtype, counts, attrs={"reason": result.reason})
        ratio = 4 * dim / (2 * dim if dtype == "float16" else dim + 8) if dtype != "float32" else 1.0
        report = FieldReport(name, "dense" if dtype == "float32" else f"dense {dtype}", n, dim, n, ratio, None,
                             time.perf_counter() - t0, result.reason)
    return report


def add_hnsw_flags(p: argparse.ArgumentParser) -> None:
    """The flags of the HNSW index stored with each compressed field (compress, fold)."""
    p.add_argument("--hnsw-m", dest="hnsw_m", type=_hnsw_m, default=None, metavar="{auto,M}",
                   help=f"M of the HNSW index over each compressed field's codebook, stored in the snapshot for "
                        f"assigning updates; auto (default): {M}, or {M_RETRY} where that needs a smaller query ef "
                        f"(docs/updates.md); 0: store none (updates then use the exact search)")
    p.add_argument("--hnsw-ef-construction", dest="hnsw_ef_construction", type=int, default=EF_CONSTRUCTION,
                   help="ef_construction of that index (its query ef is chosen at build time: docs/updates.md)")


def _hnsw_m(text: str) -> int | None:
    """--hnsw-m: ``auto`` (None) or an integer."""
    if text.strip().lower() == "auto":
        return None
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected 'auto' or an integer, got {text!r}") from None


def hnsw_params(args: argparse.Namespace) -> HnswParams | None:
    """The writer's index parameters from :func:`add_hnsw_flags`' flags; None: no index."""
    m = getattr(args, "hnsw_m", None)
    if m == 0:
        return None
    try:
        return HnswParams(m=m, ef_construction=getattr(args, "hnsw_ef_construction", EF_CONSTRUCTION))
    except ValueError as exc:
        raise SpecError(f"--hnsw-m / --hnsw-ef-construction: {exc} (--hnsw-m 0 stores no index)") from None


def dense_dtype(choices: list[str], name: str) -> str:
    """The storage of dense field ``name`` under ``--dense-dtype`` values ([FIELD=]DTYPE, last wins)."""
    chosen = "float32"
    for item in choices:
        field, sep, dtype = item.rpartition("=")
        if dtype not in ("float32", "float16", "int8"):
            raise SpecError(f"--dense-dtype: expected float32, float16 or int8 (optionally FIELD=...), got {item!r}")
        if not sep or field == name:
            chosen = dtype
    return chosen


def _print_table(reports: list[FieldReport], version: str, seconds: float, out: TextIO | None = None) -> None:
    out = out or sys.stdout
    rows = [("field", "kind", "features", "dim", "vectors after", "ratio (paper)", "inertia", "seconds")]
    for r in reports:
        rows.append((r.name, r.kind, f"{r.features:,}", str(r.dim), f"{r.stored_vectors:,}", f"{r.ratio:.1f}x",
                     "-" if r.inertia is None else f"{r.inertia:.4g}", f"{r.seconds:.2f}"))
    before = sum(r.features for r in reports)
    after = sum(r.stored_vectors for r in reports)
    raw = sum(r.features * 4 * r.dim for r in reports)
    kept = sum(r.features * 4 * r.dim / r.ratio for r in reports)
    rows.append(("total", "", f"{before:,}", "", f"{after:,}", f"{raw / kept:.1f}x", "", f"{seconds:.2f}"))
    widths = [max(len(row[c]) for row in rows) for c in range(len(rows[0]))]
    for j, row in enumerate(rows):
        print("  ".join(cell.rjust(w) if c >= 2 else cell.ljust(w) for c, (cell, w) in enumerate(zip(row, widths, strict=True))),
              file=out)
        if j == 0:
            print("  ".join("-" * w for w in widths), file=out)
    for r in reports:
        if r.dense_reason:
            print(f"{r.name} stayed dense: {r.dense_reason}", file=out)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"published {version}  ({seconds:.1f} s, peak RSS {peak:,.0f} MiB)", file=out)
