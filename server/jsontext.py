"""JSON text of lookup answers, without formatting a float per id.

A compressed field has only ``k`` distinct vectors, so the JSON text of each codebook row
(and of the field's default vector) is rendered once per snapshot and a response's
``"vectors"`` is those texts joined in id order by one compiled loop: a copy of bytes, not
65,536 float-to-text conversions for 4096 ids of dim 16. Dense fields have a distinct
vector per stored row: those of up to ``DENSE_ROWS_CACHED`` rows (the usual dense
field, too small to compress) are rendered once per row the same way, larger ones per
request by orjson, which writes float32 values in their shortest form that reads back
as the same float32.

The float text of a row is orjson's (``OPT_SERIALIZE_NUMPY``: the shortest decimal that
rounds to the same float32), checked when the cache is built by reading every row back;
a value that would not read back exactly (none in the tests' 20 million random float32)
is written as the float64 repr of the float32 value, which always does. So the JSON
answer equals the binary one bit for bit, for readers that parse float64 and round to
float32 as well as for float32 parsers.

``"encoding": "base64"`` (the embedding-API convention) writes each vector as the base64
of its little-endian float32 bytes; codebook rows again come from the cache, dense rows
are encoded per request (``saec.base64rows``).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Literal

import numba
import numpy as np
import numpy.typing as npt
import orjson

from saec.base64rows import encode_rows
from saec.store.engine import FieldResult, LookupEngine, LookupResult

Encoding = Literal["float", "base64"]
ENCODINGS: tuple[Encoding, ...] = ("float", "base64")
_NUMPY = orjson.OPT_SERIALIZE_NUMPY
# Snapshots whose row texts are kept: the one being served and the one before it, for
# requests still in flight across a reload.
_VERSIONS_KEPT = 2
# Dense fields up to this many rows keep the text of every row (about 11 bytes a float:
# 12 MB at dim 16); larger ones are formatted per request. 4096 ids of dim 16 (process
# CPU, load average 4.7): joined texts 0.16 ms against 2.8 ms for orjson per request;
# building the texts of 20,000 rows took 109 ms, once per snapshot.
DENSE_ROWS_CACHED = 65_536


@dataclass(frozen=True)
class RowTexts:
    """The JSON text of each of ``m`` rows, end to end.

    Attributes:
        blob: uint8 (total,): row 0's text, then row 1's, ...
        offsets: int64 (m + 1,): row i is ``blob[offsets[i]:offsets[i + 1]]``.
    """

    blob: npt.NDArray[np.uint8]
    offsets: npt.NDArray[np.int64]

    @classmethod
    def of(cls, texts: list[bytes]) -> RowTexts:
        offsets = np.zeros(len(texts) + 1, dtype=np.int64)
        offsets[1:] = np.cumsum([len(t) for t in texts])
        return cls(np.frombuffer(b"".join(texts), dtype=np.uint8), offsets)

    def row(self, i: int) -> bytes:
        return self.blob[self.offsets[i] : self.offsets[i + 1]].tobytes()


@numba.njit(cache=True, nogil=True, boundscheck=False)
def _join(blob, offsets, codes):  # pragma: no cover
    """uint8: "[" + text of row codes[0] + "," + text of row codes[1] + ... + "]".

    Indices are unsigned on purpose: with signed ones numba checks each access for a
    negative (wrap-around) index, and the copy measured 10x slower (400 us against 36 us
    for 4096 rows of ~85 bytes).
    """
    n = codes.shape[0]
    total = 2 + max(n - 1, 0)
    for i in range(n):
        c = codes[i]
        total += offsets[c + 1] - offsets[c]
    out = np.empty(total, dtype=np.uint8)
    one = np.uint64(1)
    out[0] = 91  # "["
    o = np.uint64(1)
    for i in range(n):
        if i:
            out[o] = 44  # ","
            o += one
        c = codes[i]
        s = np.uint64(offsets[c])
        e = np.uint64(offsets[c + 1])
        while s < e:
            out[o] = blob[s]
            o += one
            s += one
    out[o] = 93  # "]"
    return out


def float_texts(rows: npt.NDArray[np.float32]) -> list[bytes]:
    """JSON text of each float32 (m, dim) row that reads back as the same float32 values.

    Raises:
        AssertionError: a finite value whose text reads back differently even as float64 repr
            (impossible: float64 holds every float32 exactly).
    """
    texts = [orjson.dumps(r, option=_NUMPY) for r in rows]
    if not texts:
        return texts
    back = np.asarray(orjson.loads(b"[" + b",".join(texts) + b"]"), dtype=np.float64)
    with np.errstate(invalid="ignore"):
        differ = (back.astype(np.float32).view(np.uint32) != rows.view(np.uint32)).any(axis=1)
    finite = np.isfinite(rows).all(axis=1)
    for i in np.flatnonzero(differ & finite):
        # float64 holds every float32 exactly, and its repr reads back as that float64.
        texts[int(i)] = orjson.dumps(rows[int(i)].astype(np.float64), option=_NUMPY)
    return texts


def base64_texts(rows: npt.NDArray[np.float32]) -> list[bytes]:
    """JSON string (quotes included) of the base64 of each float32 (m, dim) row's little-endian bytes."""
    text = _quoted_base64(rows)
    return [bytes(t) for t in text]


def _quoted_base64(vectors: npt.NDArray[np.float32]) -> npt.NDArray[np.uint8]:
    """uint8 (n, width + 2): '"' + base64 of each row + '"'."""
    n, dim = vectors.shape
    raw = np.ascontiguousarray(vectors, dtype="<f4").view(np.uint8).reshape(n, 4 * dim)
    b64 = encode_rows(raw)
    out = np.empty((n, b64.shape[1] + 2), dtype=np.uint8)
    out[:, 0] = out[:, -1] = ord('"')
    out[:, 1:-1] = b64
    return out


def _dense_base64(vectors: npt.NDArray[np.float32]) -> bytes:
    """JSON array of the quoted base64 of each row, from fixed-width rows (vectorised)."""
    n = vectors.shape[0]
    if n == 0:
        return b"[]"
    quoted = _quoted_base64(vectors)
    framed = np.empty((n, quoted.shape[1] + 1), dtype=np.uint8)
    framed[:, :-1] = quoted
    framed[:, -1] = ord(",")
    return b"[" + framed.tobytes()[:-1] + b"]"


class RowTextCache:
    """Row texts of every compressed field, per snapshot version, built on first use."""

    def __init__(self) -> None:
        self._by_version: OrderedDict[str, dict[tuple[str, str, str], RowTexts]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, engine: LookupEngine, name: str, encoding: Encoding) -> RowTexts:
        """The texts of field ``name``'s codebook rows 0..k-1 (a dense field: its stored rows),
        then of its default vector (the last row)."""
        key = (name, encoding, engine.default)
        with self._lock:
            fields = self._by_version.get(engine.version)
            if fields is not None:
                self._by_version.move_to_end(engine.version)
                texts = fields.get(key)
                if texts is not None:
                    return texts
        f = engine.field(name)
        table = f.codebook if f.kind == "compressed" else f.vectors
        assert table is not None
        rows = np.vstack([np.asarray(table, dtype=np.float32), engine.default_vector(name)[None, :]])
        texts = RowTexts.of(float_texts(rows) if encoding == "float" else base64_texts(rows))
        with self._lock:
            self._by_version.setdefault(engine.version, {})[key] = texts
            self._by_version.move_to_end(engine.version)
            while len(self._by_version) > _VERSIONS_KEPT:
                self._by_version.popitem(last=False)
        return texts


CACHE = RowTextCache()


def vectors_text(engine: LookupEngine, name: str, r: FieldResult, encoding: Encoding) -> bytes | memoryview:
    """The JSON array of one field's vectors, as the binary answer holds them."""
    f = engine.field(name)
    if f.kind == "compressed" and r.rows is not None and f.masks is not None and f.k:
        texts = CACHE.get(engine, name, encoding)
        if f.rows:
            # rows is -1 where not found; masks[-1] is read there and then replaced.
            codes = np.minimum(np.asarray(f.masks)[r.rows].astype(np.int64), f.k - 1)
            codes[~r.found] = f.k
        else:
            codes = np.full(r.found.shape[0], f.k, dtype=np.int64)
        return memoryview(_join(texts.blob, texts.offsets, codes))
    if f.kind == "dense" and r.rows is not None and f.rows <= DENSE_ROWS_CACHED:
        # Small dense fields (the usual kind: too few features to compress) are rendered
        # once per row like a codebook; the row after the stored ones is the default.
        texts = CACHE.get(engine, name, encoding)
        codes = np.where(r.found, r.rows, f.rows)
        return memoryview(_join(texts.blob, texts.offsets, codes))
    if encoding == "base64":
        return _dense_base64(r.vectors)
    return orjson.dumps(r.vectors, option=_NUMPY)


def render_json(result: LookupResult, engine: LookupEngine, encoding: Encoding = "float") -> bytes:
    """The JSON answer: ``{"version": ..., ["encoding": "base64",] "fields": {name: {"dim":
    ..., "vectors": [...], "found": [...]}}}``; with float encoding, byte for byte what
    ``orjson.dumps`` of that document writes."""
    parts: list[bytes | memoryview] = [b'{"version":', orjson.dumps(result.version)]
    if encoding == "base64":
        parts.append(b',"encoding":"base64"')
    parts.append(b',"fields":{')
    for i, (name, r) in enumerate(result.fields.items()):
        parts += [
            b"," if i else b"",
            orjson.dumps(name),
            b':{"dim":%d,"vectors":' % r.vectors.shape[1],
            vectors_text(engine, name, r, encoding),
            b',"found":',
            orjson.dumps(r.found, option=_NUMPY),
            b"}",
        ]
    parts.append(b"}}")
    return b"".join(parts)


def warm_kernels() -> None:
    """Compile (or load from numba's cache) the join and base64 kernels, so that the first
    JSON answer after start-up does not wait for them."""
    texts = RowTexts.of([b"[0.5]", b"[1]"])
    _join(texts.blob, texts.offsets, np.zeros(1, dtype=np.int64))
    rows = np.zeros((1, 2), dtype=np.float32)
    _dense_base64(rows)
    from saec.base64rows import decode_rows

    decode_rows(encode_rows(rows.view(np.uint8)), 8)
    from saec.server.jsonids import read_int_request

    read_int_request(b'{"fields": {"f": [1, -2]}}')
