"""The update log in ``/metrics``: lag gauges and the consumer's counters.

``saec_update_log_lag_entries`` and ``saec_update_log_lag_seconds`` (how far this replica's
delta log is behind the shared log; the age of the oldest entry not applied yet),
``saec_update_log_reachable`` (1 or 0) and ``saec_update_log_unreachable_seconds`` (since
the log last answered; the lag gauges then hold the lag as last known) are set at each
scrape from one query of the log (:meth:`store.replicate.Fleet.status`); with several
workers the most recent value of a live worker is exposed (they share one delta log, so
they agree). ``saec_update_log_applied_total`` (entries appended to the local delta log),
``saec_update_log_duplicates_total`` (entries found already applied and skipped),
``saec_update_log_gap_total`` (entries trimmed from the log before this replica read them) and
``saec_update_log_dropped_total`` {field} (rows dropped on purpose: a field this snapshot
cannot take) are counted by the process that runs the consumer, after each step.
"""

from __future__ import annotations

import threading
from typing import Final

from prometheus_client import CollectorRegistry, Counter, Gauge

from saec.store.replicate import FleetStatus, Replicator


class FleetMetrics:
    """The update log's metrics, registered in ``registry`` (the app's ``Metrics.registry``)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        mode: Final = "livemostrecent"
        self._entries = Gauge("saec_update_log_lag_entries", "Log entries not yet applied here.",
                              registry=registry, multiprocess_mode=mode)
        self._seconds = Gauge("saec_update_log_lag_seconds", "Age of the oldest log entry not yet applied here.",
                              registry=registry, multiprocess_mode=mode)
        self._unreachable = Gauge("saec_update_log_unreachable_seconds",
                                  "Seconds since the update log last answered (0 while it answers).",
                                  registry=registry, multiprocess_mode=mode)
        self._reachable = Gauge("saec_update_log_reachable", "1 when the update log answered the last query.",
                                registry=registry, multiprocess_mode=mode)
        self._applied = Counter("saec_update_log_applied", "Log entries appended to the local delta log.",
                                registry=registry)
        self._duplicates = Counter("saec_update_log_duplicates", "Log entries found already applied, skipped.",
                                   registry=registry)
        self._gaps = Counter("saec_update_log_gap", "Log entries trimmed before this replica read them.",
                             registry=registry)
        self._dropped = Counter("saec_update_log_dropped", "Rows of log entries dropped on purpose, by field.",
                                ["field"], registry=registry)
        self._lock = threading.Lock()
        self._seen = (0, 0, 0)
        self._seen_dropped: dict[str, int] = {}

    def observe(self, status: FleetStatus) -> None:
        """Set the gauges from one status; the lag as last known while the log does not answer
        (-1 before it ever answered)."""
        self._reachable.set(1 if status.reachable else 0)
        self._unreachable.set(status.unreachable_seconds or 0.0)
        lag = status.lag
        self._entries.set(-1 if lag is None else lag.entries)
        self._seconds.set(-1 if lag is None else lag.seconds)

    def count(self, replicator: Replicator) -> None:
        """Add what the consumer did since the last call (called from its thread)."""
        with self._lock:
            now = (replicator.applied, replicator.duplicates, replicator.gaps)
            for counter, seen, value in zip((self._applied, self._duplicates, self._gaps), self._seen, now, strict=True):
                if value > seen:
                    counter.inc(value - seen)
            self._seen = now
            for name, rows in list(replicator.dropped.items()):
                seen = self._seen_dropped.get(name, 0)
                if rows > seen:
                    self._dropped.labels(field=name).inc(rows - seen)
                    self._seen_dropped[name] = rows
