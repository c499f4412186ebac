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
from saec.store._kernels import copy_bytes
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
_FOUND = np.frombuffer(b'],"found":[', dtype=np.uint8)
_TRUE_FALSE = np.frombuffer(b"truefalse", dtype=np.uint8)


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
def _field_json(prefix, blob, offsets, rows, default_row, found, suffix):  # pragma: no cover
    """uint8: prefix + "[" + text of row rows[0] + "," + ... + "]" + ',"found":[' +
    "true"/"false" per id + "]" + suffix, in one buffer (no join of parts afterwards).

    Args:
        prefix, suffix: uint8 bytes around the field's answer.
        blob, offsets: the row texts (:class:`RowTexts`).
        rows: int64 (n,): the row each id was answered from, -1 where not found (then
            ``default_row``, the default vector's text, is written).
        found: bool (n,).

    Indices are unsigned on purpose: with signed ones numba checks each access for a
    negative (wrap-around) index, and the copy measured 10x slower. Rows are clamped to
    the texts there are, so a bad row id writes some row's text, never reads outside.
    """
    n = rows.shape[0]
    last = offsets.shape[0] - 2
    total = prefix.shape[0] + 2 + max(n - 1, 0) + 11 + max(n - 1, 0) + suffix.shape[0]
    for i in range(n):
        c = min(rows[i] if rows[i] >= 0 else default_row, last)
        total += offsets[c + 1] - offsets[c] + (4 if found[i] else 5)
    out = np.empty(total, dtype=np.uint8)
    one = np.uint64(1)
    o = np.uint64(0)
    copy_bytes(out, o, prefix, np.uint64(0), np.uint64(prefix.shape[0]))
    o += np.uint64(prefix.shape[0])
    out[o] = 91  # "["
    o += one
    for i in range(n):
        if i:
            out[o] = 44  # ","
            o += one
        c = min(rows[i] if rows[i] >= 0 else default_row, last)
        s = np.uint64(offsets[c])
        size = np.uint64(offsets[c + 1]) - s
        copy_bytes(out, o, blob, s, size)
        o += size
    copy_bytes(out, o, _FOUND, np.uint64(0), np.uint64(11))  # ],"found":[
    o += np.uint64(11)
    for i in range(n):
        if i:
            out[o] = 44
            o += one
        if found[i]:
            copy_bytes(out, o, _TRUE_FALSE, np.uint64(0), np.uint64(4))
            o += np.uint64(4)
        else:
            copy_bytes(out, o, _TRUE_FALSE, np.uint64(4), np.uint64(5))
            o += np.uint64(5)
    out[o] = 93  # "]"
    o += one
    copy_bytes(out, o, suffix, np.uint64(0), np.uint64(suffix.shape[0]))
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


def field_json(
    engine: LookupEngine, name: str, r: FieldResult, encoding: Encoding, prefix: bytes, suffix: bytes
) -> bytes | memoryview:
    """``prefix`` + one field's ``"vectors": [...]`` array (as the binary answer holds
    them) + ``,"found": [...]`` + ``suffix``."""
    f = engine.field(name)
    cached = r.rows is not None and (
        (f.kind == "compressed" and f.k > 0) or (f.kind == "dense" and f.rows <= DENSE_ROWS_CACHED)
    )
    if cached:
        assert r.rows is not None
        texts = CACHE.get(engine, name, encoding)
        # Rows are codebook rows (compressed) or stored rows (dense); the text after
        # them is the default vector's.
        default_row = f.k if f.kind == "compressed" else f.rows
        return memoryview(
            _field_json(_u8(prefix), texts.blob, texts.offsets, r.rows, default_row, r.found, _u8(suffix))
        )
    if encoding == "base64":
        vectors: bytes = _dense_base64(r.vectors)
    else:
        vectors = orjson.dumps(r.vectors, option=_NUMPY)
    return b"".join([prefix, vectors, b',"found":', orjson.dumps(r.found, option=_NUMPY), suffix])


def _u8(b: bytes) -> npt.NDArray[np.uint8]:
    return np.frombuffer(b, dtype=np.uint8)


def render_json(result: LookupResult, engine: LookupEngine, encoding: Encoding = "float") -> bytes | memoryview:
    """The JSON answer: ``{"version": ..., ["encoding": "base64",] "fields": {name: {"dim":
    ..., "vectors": [...], "found": [...]}}}``; with float encoding, byte for byte what
    ``orjson.dumps`` of that document writes. One field's answer (the usual request) is
    written into one buffer; several are joined."""
    head = b'{"version":' + orjson.dumps(result.version)
    if encoding == "base64":
        head += b',"encoding":"base64"'
    head += b',"fields":{'
    parts: list[bytes | memoryview] = []
    last = len(result.fields) - 1
    for i, (name, r) in enumerate(result.fields.items()):
        prefix = (head if i == 0 else b",") + orjson.dumps(name) + b':{"dim":%d,"vectors":' % r.vectors.shape[1]
        parts.append(field_json(engine, name, r, encoding, prefix, b"}}}" if i == last else b"}"))
    if not parts:
        return head + b"}}"
    return parts[0] if len(parts) == 1 else b"".join(parts)


def warm_kernels() -> None:
    """Compile (or load from numba's cache) the join and base64 kernels, so that the first
    JSON answer after start-up does not wait for them."""
    texts = RowTexts.of([b"[0.5]", b"[1]"])
    _field_json(_u8(b"{"), texts.blob, texts.offsets, np.zeros(1, dtype=np.int64), 1, np.ones(1, np.bool_), _u8(b"}"))
    rows = np.zeros((1, 2), dtype=np.float32)
    _dense_base64(rows)
    from saec.base64rows import decode_rows

    decode_rows(encode_rows(rows.view(np.uint8)), 8)
    from saec.server.jsonids import read_int_request

    read_int_request(b'{"fields": {"f": [1, -2]}}')
