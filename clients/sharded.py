"""Clients for fields sharded across replicas: one lookup, split by field, merged back.

When one replica cannot hold every field, each serves a share (``saec serve --fields
a,b``) and the client routes by field::

    shards = {"user": "http://10.0.0.1:8000", "item": "http://10.0.0.2:8000",
              "country": ["http://10.0.0.1:8000", "http://10.0.0.2:8000"]}
    with ShardedSaecClient(shards) as c:
        res = c.lookup({"user": [17, 42], "item": [3], "country": ["fr"]})
        res["user"].vectors      # as from SaecClient.lookup
        res.versions             # more than one: replicas answered from different snapshots

A field served by several replicas is looked up on them in turn (round robin), on the
next one when a replica cannot be reached (after its own retries), and updated on all. The per-replica requests go out concurrently (threads for
:class:`ShardedSaecClient`, asyncio for :class:`AsyncShardedSaecClient`) through the
ordinary :class:`SaecClient` / :class:`AsyncSaecClient`, so batching to each replica's
limit, retries and errors are theirs.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from saec.clients.client import AsyncSaecClient, Ids, Lookup, SaecClient
from saec.clients.errors import ConnectError, UnknownFieldError


class ShardMap:
    """field -> the base URLs of the replicas that serve it.

    Args:
        shards: field -> one base URL, or several (replicas of the same share).
    """

    def __init__(self, shards: Mapping[str, str | Sequence[str]]) -> None:
        self.routes: dict[str, tuple[str, ...]] = {}
        for field, urls in shards.items():
            chosen = (urls,) if isinstance(urls, str) else tuple(urls)
            if not chosen:
                raise ValueError(f"field {field!r}: expected at least one base URL in the shard map, got none")
            self.routes[field] = tuple(u.rstrip("/") for u in chosen)
        self._turns = {field: itertools.cycle(urls) for field, urls in self.routes.items()}

    @property
    def urls(self) -> list[str]:
        """Every replica, once, in order of first mention."""
        return list(dict.fromkeys(u for urls in self.routes.values() for u in urls))

    def _urls_of(self, field: str) -> tuple[str, ...]:
        try:
            return self.routes[field]
        except KeyError:
            known = ", ".join(sorted(self.routes)) or "none"
            raise UnknownFieldError(f"unknown field {field!r}: the shard map routes {known}") from None

    def split_lookup(self, fields: Mapping[str, Ids]) -> dict[str, dict[str, Ids]]:
        """base URL -> the fields to look up there; each field goes to one of its replicas."""
        plan: dict[str, dict[str, Ids]] = {}
        for field, ids in fields.items():
            self._urls_of(field)
            plan.setdefault(next(self._turns[field]), {})[field] = ids
        return plan

    def reroute(self, fields: Mapping[str, Ids], down: set[str]) -> dict[str, dict[str, Ids]] | None:
        """Like :meth:`split_lookup`, avoiding the replicas in ``down``; None if a field has no other."""
        plan: dict[str, dict[str, Ids]] = {}
        for field, ids in fields.items():
            alive = [u for u in self._urls_of(field) if u not in down]
            if not alive:
                return None
            plan.setdefault(alive[0], {})[field] = ids
        return plan

    def split_update(self, fields: Mapping[str, Any], *, shared_log: bool = False) -> dict[str, dict[str, Any]]:
        """base URL -> the fields to update there; each field goes to every replica serving
        it, or with ``shared_log`` (replicas sharing an update log) to the first one only."""
        plan: dict[str, dict[str, Any]] = {}
        for field, rows in fields.items():
            urls = self._urls_of(field)
            for url in urls[:1] if shared_log else urls:
                plan.setdefault(url, {})[field] = rows
        return plan


def merge(parts: Sequence[Lookup], order: Sequence[str]) -> Lookup:
    """One :class:`Lookup` from the replicas' answers, fields in request order.

    ``versions`` lists every snapshot version that answered, once each.
    """
    fields = {}
    for part in parts:
        fields.update(part.fields)
    versions = tuple(dict.fromkeys(v for part in parts for v in part.versions))
    return Lookup(fields={name: fields[name] for name in order}, versions=versions)


class ShardedSaecClient:
    """A blocking client over replicas that each serve a share of the fields.

    Args:
        shards: field -> base URL (or several).
        connect: builds the client of one replica from its base URL (default
            :class:`SaecClient` with ``client_options``).
        client_options: passed to :class:`SaecClient` (protocol, timeout, retry, ...).
    """

    def __init__(self, shards: Mapping[str, str | Sequence[str]], *,
                 connect: Callable[[str], Any] | None = None, **client_options: Any) -> None:
        self.map = ShardMap(shards)
        build = connect or (lambda url: SaecClient(url, **client_options))
        self.replicas: dict[str, Any] = {url: build(url) for url in self.map.urls}
        self._pool = ThreadPoolExecutor(max_workers=max(1, len(self.replicas)), thread_name_prefix="saec-shard")

    def __enter__(self) -> ShardedSaecClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._pool.shutdown()
        for client in self.replicas.values():
            client.close()

    def _each(self, plan: Mapping[str, Any], call: Callable[[str, Any], Any]) -> Iterator[tuple[str, Any]]:
        if len(plan) == 1:  # no thread hop for a lookup one replica answers
            ((url, part),) = plan.items()
            yield url, call(url, part)
            return
        futures = {url: self._pool.submit(call, url, part) for url, part in plan.items()}
        for url, future in futures.items():
            yield url, future.result()

    def lookup(self, fields: Mapping[str, Ids], *, hashed: bool = False) -> Lookup:
        """Vectors of ids per field, from the replicas serving them; see :meth:`SaecClient.lookup`.

        Returns:
            Per field float32 (n, dim) vectors and bool (n,) found flags, in request order;
            ``versions`` holds one version per snapshot that answered.
        Raises:
            UnknownFieldError: a field the shard map does not route; else as SaecClient.
        """
        plan = self.map.split_lookup(fields)
        parts = [r for _, r in self._each(plan, lambda url, part: self._lookup_failing_over(url, part, hashed))]
        return merge([p for group in parts for p in group], list(fields))

    def _lookup_failing_over(self, url: str, part: dict[str, Ids], hashed: bool) -> list[Lookup]:
        """One replica's share; if it cannot be reached, the same fields on their other replicas."""
        down: set[str] = set()
        pending = {url: part}
        answers = []
        while pending:
            url, part = pending.popitem()
            try:
                answers.append(self.replicas[url].lookup(part, hashed=hashed))
            except ConnectError:
                down.add(url)
                rerouted = self.map.reroute(part, down)
                if rerouted is None:
                    raise
                pending.update(rerouted)
        return answers

    def update(self, fields: Mapping[str, Any], *, hashed: bool = False, token: str | None = None,
               shared_log: bool = False) -> dict[str, Any]:
        """Send each field's new rows to every replica that serves it.

        Each replica checks and applies its share whole or not at all; the shares are
        independent, so a replica that refuses leaves the others' applied.

        Args:
            fields: field -> (ids, vectors), as :meth:`SaecClient.update` takes them.
            token: the replicas' admin token (default: ``SAEC_ADMIN_TOKEN`` from the environment).
            shared_log: the replicas share an update log (``saec serve --update-log``): send
                each field to the first replica listed for it, which puts it on the log that
                every replica applies (docs/scaling.md), rather than once per replica.
        Returns:
            base URL -> that replica's answer.
        """
        plan = self.map.split_update(fields, shared_log=shared_log)
        return dict(self._each(plan, lambda url, part: self.replicas[url].update(part, hashed=hashed, token=token)))

    def snapshot(self) -> dict[str, dict[str, Any]]:
        """base URL -> that replica's GET /snapshot."""
        return dict(self._each({u: None for u in self.replicas}, lambda url, _: self.replicas[url].snapshot()))

    def memory(self) -> dict[str, dict[str, Any]]:
        """base URL -> that replica's GET /memory."""
        return dict(self._each({u: None for u in self.replicas}, lambda url, _: self.replicas[url].memory()))


class AsyncShardedSaecClient:
    """:class:`ShardedSaecClient` for asyncio: the replicas' requests are gathered."""

    def __init__(self, shards: Mapping[str, str | Sequence[str]], *,
                 connect: Callable[[str], Any] | None = None, **client_options: Any) -> None:
        self.map = ShardMap(shards)
        build = connect or (lambda url: AsyncSaecClient(url, **client_options))
        self.replicas: dict[str, Any] = {url: build(url) for url in self.map.urls}

    async def __aenter__(self) -> AsyncShardedSaecClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await asyncio.gather(*(c.aclose() for c in self.replicas.values()))

    async def lookup(self, fields: Mapping[str, Ids], *, hashed: bool = False) -> Lookup:
        """See :meth:`ShardedSaecClient.lookup`."""
        plan = self.map.split_lookup(fields)
        parts = await asyncio.gather(*(self._lookup_failing_over(url, part, hashed) for url, part in plan.items()))
        return merge([p for group in parts for p in group], list(fields))

    async def _lookup_failing_over(self, url: str, part: dict[str, Ids], hashed: bool) -> list[Lookup]:
        """See :meth:`ShardedSaecClient._lookup_failing_over`."""
        down: set[str] = set()
        pending = {url: part}
        answers = []
        while pending:
            url, part = pending.popitem()
            try:
                answers.append(await self.replicas[url].lookup(part, hashed=hashed))
            except ConnectError:
                down.add(url)
                rerouted = self.map.reroute(part, down)
                if rerouted is None:
                    raise
                pending.update(rerouted)
        return answers

    async def update(self, fields: Mapping[str, Any], *, hashed: bool = False, token: str | None = None,
                     shared_log: bool = False) -> dict[str, Any]:
        """See :meth:`ShardedSaecClient.update`."""
        plan = self.map.split_update(fields, shared_log=shared_log)
        answers = await asyncio.gather(
            *(self.replicas[url].update(part, hashed=hashed, token=token) for url, part in plan.items())
        )
        return dict(zip(plan, answers, strict=True))

    async def snapshot(self) -> dict[str, dict[str, Any]]:
        answers = await asyncio.gather(*(c.snapshot() for c in self.replicas.values()))
        return dict(zip(self.replicas, answers, strict=True))
