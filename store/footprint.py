"""How many bytes a snapshot takes, against the same table uncompressed.

Two accountings of the compression ratio, both reported:

- with keys: uncompressed is a float32 row plus an 8-byte key per feature (what a
  key-value store holds); saec's side counts every array a lookup reads, key index
  included (``serving_bytes``; the optional per-feature counts are reported apart);
- the paper's (section 3.2, its 27.7x): keys excluded on both sides,
  ``features * 4 * dim / (features * mask_bytes + k * 4 * dim)``.
"""

from __future__ import annotations

import os
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from saec.store.snapshot import CODEBOOK_KINDS, Field, Snapshot, chunk_path

KEY_BYTES = 8


@dataclass(frozen=True)
class FieldFootprint:
    name: str
    kind: str
    features: int
    rows: int
    aliased: int
    k: int | None
    dim: int
    codebook_bytes: int
    masks_bytes: int
    vectors_bytes: int
    key_index_bytes: int
    counts_bytes: int
    other_bytes: int
    serving_bytes: int
    total_bytes: int
    uncompressed_bytes: int
    uncompressed_bytes_without_keys: int
    ratio_with_keys: float
    ratio_paper: float
    bytes_per_feature: float
    mapped_bytes: int
    resident_bytes: int | None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def field_footprint(f: Field, resident: dict[str, int] | None = None) -> FieldFootprint:
    sizes = {rel: a.nbytes for rel, a in f.arrays.items()}
    codebook = sizes.get("codebook", 0)
    masks = sizes.get("masks", 0)
    # A quantised field's per-row scale and bias belong with its vectors.
    vectors = sizes.get("vectors", 0) + sizes.get("scale", 0) + sizes.get("bias", 0)
    key_index = sum(v for rel, v in sizes.items() if rel.startswith("index/"))
    counts = sizes.get("counts", 0)
    total = sum(sizes.values())
    # Counts feed the next compression run and fold bits the next fold; a lookup reads neither.
    serving = total - counts - sizes.get("fold_bits", 0)
    other = serving - codebook - masks - vectors - key_index
    raw = f.features * 4 * f.dim
    paper_side = masks + codebook if f.kind in CODEBOOK_KINDS else vectors
    res = None
    if resident is not None:
        res = sum(resident.get(str(chunk_path(Path(a.path), len(a.shape))), 0) for a in f.arrays.values())
    return FieldFootprint(
        name=f.name,
        kind=f.kind,
        features=f.features,
        rows=f.rows,
        aliased=f.aliased,
        k=f.k,
        dim=f.dim,
        codebook_bytes=codebook,
        masks_bytes=masks,
        vectors_bytes=vectors,
        key_index_bytes=key_index,
        counts_bytes=counts,
        other_bytes=other,
        serving_bytes=serving,
        total_bytes=total,
        uncompressed_bytes=raw + KEY_BYTES * f.features,
        uncompressed_bytes_without_keys=raw,
        ratio_with_keys=(raw + KEY_BYTES * f.features) / serving,
        ratio_paper=raw / paper_side,
        bytes_per_feature=serving / f.features,
        mapped_bytes=total,
        resident_bytes=res,
    )


def snapshot_footprint(snapshot: Snapshot, *, measure_resident: bool = True) -> dict[str, Any]:
    """Per field and in total; resident bytes from /proc/self/smaps where it exists."""
    resident = resident_by_file(snapshot.path) if measure_resident else None
    per_field = [field_footprint(f, resident) for f in snapshot]
    keys = [
        "features", "rows", "aliased", "codebook_bytes", "masks_bytes", "vectors_bytes", "key_index_bytes",
        "counts_bytes", "other_bytes", "serving_bytes", "total_bytes", "uncompressed_bytes", "uncompressed_bytes_without_keys", "mapped_bytes",
    ]
    total: dict[str, Any] = {k: sum(getattr(f, k) for f in per_field) for k in keys}
    paper_side = sum(
        (f.masks_bytes + f.codebook_bytes) if f.kind in CODEBOOK_KINDS else f.vectors_bytes for f in per_field
    )
    total["ratio_with_keys"] = total["uncompressed_bytes"] / max(total["serving_bytes"], 1)
    total["bytes_per_feature"] = total["serving_bytes"] / max(total["features"], 1)
    total["ratio_paper"] = total["uncompressed_bytes_without_keys"] / max(paper_side, 1)
    total["resident_bytes"] = None if resident is None else sum(f.resident_bytes or 0 for f in per_field)
    return {
        "version": snapshot.version,
        "fields": {f.name: f.as_dict() for f in per_field},
        "total": total,
        "resident_measured": resident is not None,
    }


_SMAPS_HEADER = re.compile(r"^[0-9a-f]+-[0-9a-f]+ \S+ \S+ \S+ \S+\s+(.*)$")


def resident_by_file(root: Path) -> dict[str, int] | None:
    """Resident bytes of this process's maps of files under ``root``, keyed by path
    relative to ``root``; None where /proc/self/smaps is not available."""
    try:
        text = Path("/proc/self/smaps").read_text()
    except OSError:
        return None
    prefix = os.path.realpath(root) + os.sep
    out: dict[str, int] = {}
    current: str | None = None
    for line in text.splitlines():
        m = _SMAPS_HEADER.match(line)
        if m:
            path = m.group(1)
            current = path[len(prefix) :] if path.startswith(prefix) else None
        elif current is not None and line.startswith("Rss:"):
            out[current] = out.get(current, 0) + int(line.split()[1]) * 1024
    return out
