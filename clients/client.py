"""Python clients for the saec service: :class:`SaecClient` (sync) and :class:`AsyncSaecClient`.

Both speak the binary protocol by default, hash raw ids locally with saec-hash-v1
(so only uint64 keys cross the wire), split a lookup that exceeds the server's
``max_ids`` into several requests, retry with exponential backoff on connection
errors and on 502/503/504 (a lookup is idempotent), and raise typed errors that
carry the server's problem detail.

Requests to a plain ``http://host:port`` go through ``clients._http`` (pooled keep-alive
connections, one vectored write a request, bodies read into one buffer and decoded
without a copy), which costs a fraction of httpx's CPU (``bench/client.py``); any other
URL, or an explicit httpx ``transport``, goes through httpx.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import random
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import httpx
import numpy as np
import numpy.typing as npt
import orjson

from saec.clients._http import AsyncPool, Buffer, Response, SyncPool, pool_args
from saec.clients.errors import ConnectError, InvalidResponseError, TransportError, from_response
from saec.store.hashing import hash_ids
from saec.wire import (
    IDS_MEDIA_TYPE,
    UPDATES_MEDIA_TYPE,
    VECTORS_MEDIA_TYPE,
    decode_vectors,
    encode_ids_parts,
    encode_updates,
)

Protocol = Literal["binary", "json"]
Ids = Sequence[Any] | npt.NDArray[Any]
RETRY_STATUSES = frozenset({502, 503, 504})
# What one attempt can fail with below HTTP, through either transport.
TRANSPORT_ERRORS = (httpx.TransportError, TransportError)
Body = bytes | Sequence[Buffer]


@dataclass(frozen=True)
class FieldVectors:
    """One field's answer: float32 (n, dim) vectors and bool (n,) found flags."""

    vectors: npt.NDArray[np.float32]
    found: npt.NDArray[np.bool_]


@dataclass(frozen=True)
class Lookup:
    """A lookup's answer. ``versions`` holds more than one version only if the
    server swapped snapshots between the requests of a split lookup."""

    fields: dict[str, FieldVectors]
    versions: tuple[str, ...]

    @property
    def version(self) -> str:
        return self.versions[-1]

    def __getitem__(self, field: str) -> FieldVectors:
        return self.fields[field]


@dataclass(frozen=True)
class Retry:
    """Backoff policy: ``attempts`` tries in all, sleeping ``base * 2**i`` (+-25%) up to ``cap``."""

    attempts: int = 4
    base: float = 0.05
    cap: float = 2.0

    def delays(self) -> Iterator[float]:
        for i in range(self.attempts - 1):
            yield min(self.cap, self.base * 2**i) * random.uniform(0.75, 1.25)

    def after_error(self, delays: Iterator[float], method: str, path: str, exc: Exception) -> float:
        """Seconds to wait after a transport error; ConnectError once the attempts are spent."""
        delay = next(delays, None)
        if delay is None:
            raise ConnectError(f"{method} {path}: {exc!r} after {self.attempts} attempts") from exc
        return delay

    def after_response(self, delays: Iterator[float], response: httpx.Response | Response) -> float | None:
        """Seconds to wait before retrying this response, or None to hand it back as it is."""
        if response.status_code not in RETRY_STATUSES:
            return None
        return next(delays, None)


class _Core:
    """What the sync and async clients share: encoding, splitting, decoding."""

    def __init__(self, protocol: Protocol, max_ids: int | None) -> None:
        if protocol not in ("binary", "json"):
            raise ValueError(f"expected protocol 'binary' or 'json', got {protocol!r}")
        self.protocol = protocol
        self.max_ids = max_ids
        # How JSON answers carry vectors: "base64" rows (see request) or "float" text.
        self.json_encoding = "base64"

    def keys(self, fields: Mapping[str, Ids], hashed: bool) -> dict[str, npt.NDArray[np.uint64]]:
        return {name: hash_ids(ids, name, hashed=hashed) for name, ids in fields.items()}

    def batches(self, keys: Mapping[str, npt.NDArray[np.uint64]], limit: int) -> Iterator[dict[str, npt.NDArray[np.uint64]]]:
        """Split a multi-field lookup into requests of at most ``limit`` ids in all."""
        batch: dict[str, npt.NDArray[np.uint64]] = {}
        room = limit
        for name, k in keys.items():
            if k.shape[0] == 0:
                batch[name] = k
                continue
            # Fields are consumed in order, so a field appears at most once per batch.
            start = 0
            while start < k.shape[0]:
                take = min(room, k.shape[0] - start)
                batch[name] = k[start : start + take]
                start += take
                room -= take
                if room == 0:
                    yield batch
                    batch, room = {}, limit
        if batch:
            yield batch

    def request(self, keys: Mapping[str, npt.NDArray[np.uint64]]) -> tuple[list[Buffer], dict[str, str]]:
        """The body of one lookup request as buffers (the ids are views, not copies) and its headers."""
        if self.protocol == "binary":
            return encode_ids_parts(keys, hashed=True), {"content-type": IDS_MEDIA_TYPE, "accept": VECTORS_MEDIA_TYPE}
        # Vectors as base64 rows: JSON framing without float text, which costs the client
        # ~25x the CPU to parse (bench/results/client.md); the float32 values are the same.
        doc = {"fields": dict(keys), "hashed": True, "encoding": self.json_encoding}
        body = orjson.dumps(doc, option=orjson.OPT_SERIALIZE_NUMPY)  # uint64 arrays as JSON integers, no tolist()
        return [body], {"content-type": "application/json", "accept": "application/json"}

    @staticmethod
    def update_request(
        fields: Mapping[str, tuple[Ids, npt.ArrayLike]], hashed: bool, token: str | None
    ) -> tuple[bytes, dict[str, str]]:
        """Binary body and headers of POST /admin/updates; ids are hashed here, as for a lookup."""
        token = token if token is not None else os.environ.get("SAEC_ADMIN_TOKEN", "")
        body = encode_updates(
            {n: (hash_ids(ids, n, hashed=hashed), np.asarray(v, dtype=np.float32)) for n, (ids, v) in fields.items()},
            hashed=True,
        )
        return body, {"content-type": UPDATES_MEDIA_TYPE, "accept": "application/json", "authorization": f"Bearer {token}"}

    @staticmethod
    def parse_update(response: httpx.Response | Response) -> dict[str, Any]:
        if response.status_code != 200:
            raise from_response(response)
        return orjson.loads(response.content)

    @staticmethod
    def parse(response: httpx.Response | Response) -> tuple[str, dict[str, FieldVectors]]:
        if response.status_code != 200:
            raise from_response(response)
        if response.headers.get("content-type", "").startswith(VECTORS_MEDIA_TYPE):
            msg = decode_vectors(response.content)
            return msg.version, {n: FieldVectors(v, f) for n, (v, f) in msg.fields.items()}
        doc = orjson.loads(response.content)
        base64 = doc.get("encoding") == "base64"
        out = {}
        for name, f in doc["fields"].items():
            n, dim = len(f["found"]), f["dim"]
            if base64:
                vectors = _from_base64(f["vectors"], n, dim)
            else:
                # fromiter over the flattened rows: ~3x faster than np.asarray on nested lists.
                flat = itertools.chain.from_iterable(f["vectors"])
                vectors = np.fromiter(flat, dtype=np.float32, count=n * dim).reshape(n, dim)
            out[name] = FieldVectors(vectors, np.fromiter(f["found"], dtype=bool, count=n))
        return doc["version"], out

    @staticmethod
    def merge(parts: list[tuple[str, dict[str, FieldVectors]]], order: Sequence[str]) -> Lookup:
        versions = tuple(dict.fromkeys(v for v, _ in parts))
        fields = {}
        for name in order:
            pieces = [p[name] for _, p in parts if name in p]
            if len(pieces) == 1:
                fields[name] = pieces[0]
            else:
                fields[name] = FieldVectors(
                    np.concatenate([p.vectors for p in pieces]), np.concatenate([p.found for p in pieces])
                )
        return Lookup(fields=fields, versions=versions)


def _from_base64(rows: list[str], n: int, dim: int) -> npt.NDArray[np.float32]:
    """float32 (n, dim) from the base64 of each row's little-endian float32 bytes."""
    from saec.base64rows import decode_rows, encoded_width

    width = encoded_width(4 * dim)
    text = "".join(rows).encode("ascii")
    if len(rows) != n or len(text) != n * width:
        raise InvalidResponseError(
            f"expected {n} base64 vectors of {width} characters, got {len(rows)} ({len(text)} characters)"
        )
    raw = decode_rows(np.frombuffer(text, dtype=np.uint8).reshape(n, width), 4 * dim)
    return raw.view("<f4").reshape(n, dim)


def _body(content: Body | None, json: Any, headers: Mapping[str, str] | None) -> tuple[list[Buffer], dict[str, str]]:
    """A request body as buffers, and its headers (a JSON document gets its Content-Type)."""
    out = dict(headers or {})
    if json is not None:
        out.setdefault("content-type", "application/json")
        return [orjson.dumps(json)], out
    if content is None:
        return [], out
    if isinstance(content, bytes | bytearray | memoryview):
        return [content], out
    return list(content), out


def _joined(parts: list[Buffer]) -> bytes:
    return parts[0] if len(parts) == 1 and isinstance(parts[0], bytes) else b"".join(parts)


class SaecClient:
    """Blocking client.

    Args:
        base_url: e.g. ``http://127.0.0.1:8000``.
        protocol: "binary" (default) or "json".
        max_ids: ids per request; default: the server's limit, read from /snapshot once.
        retry: backoff policy for connection errors and 502/503/504.
        timeout: seconds per request.
    """

    def __init__(
        self,
        base_url: str = "http://127.0.0.1:8000",
        *,
        protocol: Protocol = "binary",
        max_ids: int | None = None,
        retry: Retry = Retry(),
        timeout: float = 10.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self._core = _Core(protocol, max_ids)
        self.retry = retry
        plain = pool_args(base_url) if transport is None else None
        self._pool = SyncPool(timeout=timeout, **plain) if plain else None
        self._http = None if plain else httpx.Client(base_url=base_url, timeout=timeout, transport=transport)

    def __enter__(self) -> SaecClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._pool is not None:
            self._pool.close()
        if self._http is not None:
            self._http.close()

    def _send(
        self,
        method: str,
        path: str,
        *,
        content: Body | None = None,
        headers: Mapping[str, str] | None = None,
        json: Any = None,
    ) -> httpx.Response | Response:
        """Send one request (retried on transport errors and 502/503/504) and return the
        response, whatever its status. ``content`` is bytes or a sequence of buffers written
        one after another; ``json`` is encoded with orjson."""
        parts, hdrs = _body(content, json, headers)
        delays = self.retry.delays()
        while True:
            try:
                if self._pool is not None:
                    response: httpx.Response | Response = self._pool.request(method, path, parts, hdrs)
                else:
                    assert self._http is not None
                    response = self._http.request(method, path, content=_joined(parts) if parts else None, headers=hdrs)
            except TRANSPORT_ERRORS as exc:
                time.sleep(self.retry.after_error(delays, method, path, exc))
                continue
            delay = self.retry.after_response(delays, response)
            if delay is None:
                return response
            time.sleep(delay)

    def _json(self, path: str) -> Any:
        response = self._send("GET", path)
        if response.status_code != 200:
            raise from_response(response)
        return orjson.loads(response.content)

    def snapshot(self) -> dict[str, Any]:
        """GET /snapshot: version, fields, limits."""
        return self._json("/snapshot")

    def memory(self) -> dict[str, Any]:
        """GET /memory: bytes per field against uncompressed."""
        return self._json("/memory")

    def _limit(self) -> int:
        if self._core.max_ids is None:
            self._core.max_ids = int(self.snapshot()["limits"]["max_ids"])
        return self._core.max_ids

    def lookup(self, fields: Mapping[str, Ids], *, hashed: bool = False) -> Lookup:
        """Vectors of ids per field.

        Args:
            fields: field -> raw ids (integers or strings), or saec-hash-v1 keys with ``hashed=True``.
        Returns:
            Per field float32 (n, dim) vectors and bool (n,) found flags, in request order.
        Raises:
            SaecClientError subclasses carrying the server's problem detail.
        """
        keys = self._core.keys(fields, hashed)
        parts = []
        for batch in self._core.batches(keys, self._limit()):
            body, headers = self._core.request(batch)
            parts.append(self._core.parse(self._send("POST", "/lookup", content=body, headers=headers)))
        return self._core.merge(parts, list(keys))

    def update(
        self, fields: Mapping[str, tuple[Ids, npt.ArrayLike]], *, hashed: bool = False, token: str | None = None
    ) -> dict[str, Any]:
        """POST /admin/updates: new or changed vectors, durable on the server when this returns.

        Args:
            fields: field -> (ids (n,), float32 vectors (n, dim)); ids raw, or saec-hash-v1
                keys with ``hashed=True``. One request, refused whole if any row is bad.
            token: the server's admin token (default: ``SAEC_ADMIN_TOKEN`` from the environment).
        Returns:
            The server's answer: ``{"base", "sequence", "fields": {name: {"accepted", "new",
            "reassigned", "distance": {"mean", "p99"}}}}``.
        """
        body, headers = self._core.update_request(fields, hashed, token)
        return self._core.parse_update(self._send("POST", "/admin/updates", content=body, headers=headers))


class AsyncSaecClient:
    """The same as :class:`SaecClient`, for asyncio; split requests go out concurrently."""

    def __init__(
        self,
        base_url: str = "http://127.0.0.1:8000",
        *,
        protocol: Protocol = "binary",
        max_ids: int | None = None,
        retry: Retry = Retry(),
        timeout: float = 10.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self._core = _Core(protocol, max_ids)
        self.retry = retry
        plain = pool_args(base_url) if transport is None else None
        self._pool = AsyncPool(timeout=timeout, **plain) if plain else None
        self._http = None if plain else httpx.AsyncClient(base_url=base_url, timeout=timeout, transport=transport)

    async def __aenter__(self) -> AsyncSaecClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        if self._pool is not None:
            await self._pool.aclose()
        if self._http is not None:
            await self._http.aclose()

    async def _send(
        self,
        method: str,
        path: str,
        *,
        content: Body | None = None,
        headers: Mapping[str, str] | None = None,
        json: Any = None,
    ) -> httpx.Response | Response:
        """See :meth:`SaecClient._send`."""
        parts, hdrs = _body(content, json, headers)
        delays = self.retry.delays()
        while True:
            try:
                if self._pool is not None:
                    response: httpx.Response | Response = await self._pool.request(method, path, parts, hdrs)
                else:
                    assert self._http is not None
                    response = await self._http.request(
                        method, path, content=_joined(parts) if parts else None, headers=hdrs
                    )
            except TRANSPORT_ERRORS as exc:
                await asyncio.sleep(self.retry.after_error(delays, method, path, exc))
                continue
            delay = self.retry.after_response(delays, response)
            if delay is None:
                return response
            await asyncio.sleep(delay)

    async def _json(self, path: str) -> Any:
        response = await self._send("GET", path)
        if response.status_code != 200:
            raise from_response(response)
        return orjson.loads(response.content)

    async def snapshot(self) -> dict[str, Any]:
        return await self._json("/snapshot")

    async def memory(self) -> dict[str, Any]:
        return await self._json("/memory")

    async def lookup(self, fields: Mapping[str, Ids], *, hashed: bool = False) -> Lookup:
        """See :meth:`SaecClient.lookup`."""
        if self._core.max_ids is None:
            self._core.max_ids = int((await self.snapshot())["limits"]["max_ids"])
        keys = self._core.keys(fields, hashed)

        async def one(batch: dict[str, npt.NDArray[np.uint64]]) -> tuple[str, dict[str, FieldVectors]]:
            body, headers = self._core.request(batch)
            return self._core.parse(await self._send("POST", "/lookup", content=body, headers=headers))

        batches = list(self._core.batches(keys, self._core.max_ids))
        if len(batches) == 1:
            # Most lookups fit one request: no task to create and gather.
            return self._core.merge([await one(batches[0])], list(keys))
        parts = await asyncio.gather(*(one(b) for b in batches))
        return self._core.merge(list(parts), list(keys))

    async def update(
        self, fields: Mapping[str, tuple[Ids, npt.ArrayLike]], *, hashed: bool = False, token: str | None = None
    ) -> dict[str, Any]:
        """See :meth:`SaecClient.update`."""
        body, headers = self._core.update_request(fields, hashed, token)
        return self._core.parse_update(await self._send("POST", "/admin/updates", content=body, headers=headers))
