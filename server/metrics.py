"""Prometheus metrics through ``prometheus_client``, summed over every worker.

With one worker the metrics live in this process. With more, ``saec serve`` points
``PROMETHEUS_MULTIPROC_DIR`` at a fresh directory (``server.metrics_dir``) before the
workers start; each worker then writes its values to files there and a scrape of any
worker reads them all, so one scrape counts every worker's requests.

The route label is the matched route's template (``/lookup``), never the raw path:
every unknown path shares the label ``unmatched``, so a client cannot add series or
inject lines, and label values are escaped by the library.

Metric names (unchanged from the hand-written exposition): ``saec_requests_total``
{route, status, protocol} (protocol ``http``: route a template, status the HTTP status;
protocol ``grpc``: route the full method name ``/saec.v1.EmbeddingService/Lookup``, status
the gRPC code name such as ``OK`` or ``NOT_FOUND``), ``saec_lookup_ids_total`` {field}, ``saec_lookup_not_found_total``
{field}, ``saec_lookup_seconds`` (histogram, lookups of either protocol), ``saec_snapshot_info`` {version} (per
worker: label ``pid`` with several workers), ``saec_reloads_total``,
``saec_reload_errors_total``; ``saec_delta_damaged_bytes`` and ``saec_delta_unreadable`` (the
delta log's damage, see ``store.deltas``); for incremental updates ``saec_updates_total`` {field} (ids
accepted) and ``saec_update_distance_total`` {field} (their summed squared distance to the
centroid they were given: ``rate(distance) / rate(updates)`` is the mean quantisation error,
the codebook's drift). Drift of the snapshot being served, per compressed field, from
every update applied to it whatever wrote it (``store.drift``): ``saec_drift_updates``
{field}, ``saec_drift_mean_distance`` {field} (the updates' mean squared distance to their
centroid), ``saec_drift_baseline`` {field} (the snapshot's own mean quantisation error)
and ``saec_drift_ratio`` {field} (the two's ratio; NaN while unknown). They are gauges of
the most recent value any live worker set (every worker reads the same frames).
"""

from __future__ import annotations

import math
import os
import threading
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4
from prometheus_client.multiprocess import MultiProcessCollector
from starlette.types import Scope

if TYPE_CHECKING:
    from saec.store.live import LiveEngine

# Seconds; lookups of a few thousand ids take ~1 ms, so resolution sits there.
BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 1.0)
CONTENT_TYPE = CONTENT_TYPE_PLAIN_0_0_4
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
# The route label of every request that matched no route (404s of arbitrary paths).
UNMATCHED = "unmatched"
# The route labels whose requests the lookup latency histogram observes.
LOOKUP_ROUTES = frozenset({"/lookup", "/saec.v1.EmbeddingService/Lookup"})


def route_label(scope: Scope) -> str:
    """The template of the route that handled ``scope`` (set by the router), or UNMATCHED."""
    route = scope.get("route")
    path = getattr(route, "path", None)
    return path if isinstance(path, str) else UNMATCHED


def multiprocess() -> bool:
    """Whether values go to the shared directory (several workers) or stay in memory."""
    return bool(os.environ.get(MULTIPROC_ENV))


class Metrics:
    """The service's metrics.

    Args:
        live: the live engine whose snapshot version and reload count are reported;
            they are read when a request is observed and when the metrics are rendered.
    """

    def __init__(self, live: LiveEngine | None = None) -> None:
        self.live = live
        # A registry per app: tests build many apps in one process.
        self.registry = CollectorRegistry(auto_describe=True)
        reg = self.registry
        self._requests = Counter(
            "saec_requests", "Requests by route, status and protocol (http, grpc).", ["route", "status", "protocol"],
            registry=reg,
        )
        self._ids = Counter("saec_lookup_ids", "Ids looked up by field.", ["field"], registry=reg)
        self._not_found = Counter(
            "saec_lookup_not_found", "Ids not in the snapshot, by field.", ["field"], registry=reg
        )
        self._latency = Histogram("saec_lookup_seconds", "Time to answer a lookup (HTTP or gRPC).", buckets=BUCKETS, registry=reg)
        self._snapshot = Gauge(
            "saec_snapshot_info", "The snapshot being served.", ["version"], registry=reg, multiprocess_mode="liveall"
        )
        self._reloads = Counter("saec_reloads", "Snapshots swapped in since start.", registry=reg)
        self._reload_errors = Counter(
            "saec_reload_errors", "Reload checks that failed (the old snapshot kept serving).", registry=reg
        )
        self._updates = Counter(
            "saec_updates", "Updated ids accepted (written to the deltas) by field.", ["field"], registry=reg
        )
        self._update_distance = Counter(
            "saec_update_distance",
            "Summed squared L2 distance of updated vectors to their centroid, by field (drift).",
            ["field"],
            registry=reg,
        )
        self._delta_damage = Gauge(
            "saec_delta_damaged_bytes",
            "Bytes of the served snapshot's delta log that are damaged and skipped (0: intact).",
            registry=reg, multiprocess_mode="max",
        )
        self._delta_unreadable = Gauge(
            "saec_delta_unreadable",
            "1 while a segment of the served snapshot's delta log cannot be read (an odd file).",
            registry=reg, multiprocess_mode="max",
        )
        self._delta_seen: tuple[int, bool] = (0, False)
        # Every worker reads the same frames: the most recent value of any live worker is the truth.
        self._drift = {
            key: Gauge(name, doc, ["field"], registry=reg, multiprocess_mode="livemostrecent")
            for key, name, doc in (
                ("updates", "saec_drift_updates", "Updates applied to the served snapshot, by field."),
                ("mean_distance", "saec_drift_mean_distance",
                 "Mean squared L2 distance of the served snapshot's updates to their centroid, by field."),
                ("baseline", "saec_drift_baseline", "The served snapshot's own mean quantisation error, by field."),
                ("ratio", "saec_drift_ratio",
                 "saec_drift_mean_distance / saec_drift_baseline (codebook drift; NaN while unknown), by field."),
            )
        }
        # Labelled children by label values: labels() validates and locks on every call,
        # ~7% of a binary lookup's server CPU for the three a lookup counts.
        self._request_children: dict[tuple[str, int | str, str], Any] = {}
        self._field_children: dict[str, tuple[Any, Any]] = {}
        self._lock = threading.Lock()
        self._reloads_seen = 0
        self._reload_errors_seen = 0
        self._version: str | None = None

    @property
    def reloads(self) -> int:
        """Reloads counted so far by this process; assigning a larger value counts the difference."""
        return self._reloads_seen

    @reloads.setter
    def reloads(self, total: int) -> None:
        with self._lock:
            if total > self._reloads_seen:
                self._reloads.inc(total - self._reloads_seen)
                self._reloads_seen = total

    @property
    def reload_errors(self) -> int:
        """Failed reload checks counted so far by this process; assigning a larger value counts the difference."""
        return self._reload_errors_seen

    @reload_errors.setter
    def reload_errors(self, total: int) -> None:
        with self._lock:
            if total > self._reload_errors_seen:
                self._reload_errors.inc(total - self._reload_errors_seen)
                self._reload_errors_seen = total

    def observe_updates(self, field: str, rows: int, distance_sum: float) -> None:
        """Count ``rows`` accepted updates of ``field`` and their summed squared distance."""
        self._updates.labels(field=field).inc(rows)
        self._update_distance.labels(field=field).inc(distance_sum)

    def observe_drift(self, report: Mapping[str, Mapping[str, Any]]) -> None:
        """Set the drift gauges from ``store.drift.Drift.report()`` (unknown values as NaN)."""
        for name, r in report.items():
            for key, gauge in self._drift.items():
                value = r.get(key)
                gauge.labels(field=name).set(math.nan if value is None else float(value))

    def observe_request(self, route: str, status: int | str, seconds: float, protocol: str = "http") -> None:
        """Count one request; ``route`` must be a route template (see :func:`route_label`) or
        a gRPC method name, ``status`` an HTTP status or a gRPC code name."""
        key = (route, status, protocol)
        child = self._request_children.get(key)
        if child is None:
            child = self._request_children[key] = self._requests.labels(
                route=route, status=str(status), protocol=protocol
            )
        child.inc()
        if route in LOOKUP_ROUTES:
            self._latency.observe(seconds)
        self._sync()

    def observe_lookup(self, field: str, ids: int, not_found: int) -> None:
        children = self._field_children.get(field)
        if children is None:
            children = self._field_children[field] = (self._ids.labels(field=field), self._not_found.labels(field=field))
        children[0].inc(ids)
        children[1].inc(not_found)

    def set_version(self, version: str) -> None:
        """Report ``version`` as the snapshot this process serves ("" for none)."""
        with self._lock:
            if version == self._version:
                return
            if self._version:
                # Set to 0 rather than removed: removal does not reach the shared files.
                self._snapshot.labels(version=self._version).set(0)
            if version:
                self._snapshot.labels(version=version).set(1)
            self._version = version

    def render(self, version: str | None = None) -> bytes:
        """The exposition text of every worker (or of this process, with one worker)."""
        if version is not None:
            self.set_version(version)
        self._sync()
        if multiprocess():
            registry = CollectorRegistry()
            MultiProcessCollector(registry)
            return generate_latest(registry)
        return generate_latest(self.registry)

    def _sync(self) -> None:
        # The reload thread knows nothing of metrics; each worker reports its own
        # engine's state whenever it handles a request.
        # Compared before any lock is taken: nearly every request finds nothing changed.
        live = self.live
        if live is not None:
            if live.reloads != self._reloads_seen:
                self.reloads = live.reloads
            if live.errors != self._reload_errors_seen:
                self.reload_errors = live.errors
            current = live.engine
            version = current.version if current is not None else ""
            if version != self._version:
                self.set_version(version)
            overlay = current.overlay if current is not None else None
            if overlay is not None:
                reader = overlay.reader
                seen = (reader.damaged_bytes() if reader.damage else 0, reader.refused is not None)
                if seen != self._delta_seen:
                    self._delta_damage.set(seen[0])
                    self._delta_unreadable.set(int(seen[1]))
                    self._delta_seen = seen
