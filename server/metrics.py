"""Prometheus counters and a latency histogram, per worker process.

Each uvicorn worker keeps its own; Prometheus sums over scrapes of every worker
(label ``pid`` tells them apart).
"""

from __future__ import annotations

import os
import threading
from collections import defaultdict

# Seconds; lookups of a few thousand ids take ~1 ms, so resolution sits there.
BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 1.0)


class Metrics:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.requests: defaultdict[tuple[str, int], int] = defaultdict(int)
        self.ids: defaultdict[str, int] = defaultdict(int)
        self.not_found: defaultdict[str, int] = defaultdict(int)
        self.latency_counts = [0] * (len(BUCKETS) + 1)
        self.latency_sum = 0.0
        self.reloads = 0
        self.reload_errors = 0
        self.updates: defaultdict[str, int] = defaultdict(int)
        self.update_distance: defaultdict[str, float] = defaultdict(float)

    def observe_request(self, route: str, status: int, seconds: float) -> None:
        with self._lock:
            self.requests[(route, status)] += 1
            if route == "/lookup":
                i = next((i for i, b in enumerate(BUCKETS) if seconds <= b), len(BUCKETS))
                self.latency_counts[i] += 1
                self.latency_sum += seconds

    def observe_lookup(self, field: str, ids: int, not_found: int) -> None:
        with self._lock:
            self.ids[field] += ids
            self.not_found[field] += not_found

    def observe_updates(self, field: str, rows: int, distance_sum: float) -> None:
        with self._lock:
            self.updates[field] += rows
            self.update_distance[field] += distance_sum

    def render(self, version: str) -> str:
        pid = os.getpid()
        lines = [
            "# HELP saec_requests_total HTTP requests by route and status.",
            "# TYPE saec_requests_total counter",
        ]
        with self._lock:
            for (route, status), n in sorted(self.requests.items()):
                lines.append(f'saec_requests_total{{route="{route}",status="{status}",pid="{pid}"}} {n}')
            lines += ["# HELP saec_lookup_ids_total Ids looked up by field.", "# TYPE saec_lookup_ids_total counter"]
            for field, n in sorted(self.ids.items()):
                lines.append(f'saec_lookup_ids_total{{field="{field}",pid="{pid}"}} {n}')
            lines += [
                "# HELP saec_lookup_not_found_total Ids not in the snapshot, by field.",
                "# TYPE saec_lookup_not_found_total counter",
            ]
            for field, n in sorted(self.not_found.items()):
                lines.append(f'saec_lookup_not_found_total{{field="{field}",pid="{pid}"}} {n}')
            lines += [
                "# HELP saec_updates_total Updated ids accepted (written to the deltas) by field.",
                "# TYPE saec_updates_total counter",
                *(f'saec_updates_total{{field="{f}",pid="{pid}"}} {n}' for f, n in sorted(self.updates.items())),
                "# HELP saec_update_distance Squared L2 distance of updated vectors to their centroid (drift).",
                "# TYPE saec_update_distance summary",
                *(f'saec_update_distance_sum{{field="{f}",pid="{pid}"}} {d}' for f, d in sorted(self.update_distance.items())),
                *(f'saec_update_distance_count{{field="{f}",pid="{pid}"}} {self.updates[f]}' for f in sorted(self.update_distance)),
            ]
            lines += [
                "# HELP saec_lookup_seconds Time to answer POST /lookup.",
                "# TYPE saec_lookup_seconds histogram",
            ]
            cum = 0
            for b, c in zip(BUCKETS, self.latency_counts, strict=False):
                cum += c
                lines.append(f'saec_lookup_seconds_bucket{{le="{b}",pid="{pid}"}} {cum}')
            cum += self.latency_counts[-1]
            lines.append(f'saec_lookup_seconds_bucket{{le="+Inf",pid="{pid}"}} {cum}')
            lines.append(f'saec_lookup_seconds_sum{{pid="{pid}"}} {self.latency_sum}')
            lines.append(f'saec_lookup_seconds_count{{pid="{pid}"}} {cum}')
            lines += [
                "# HELP saec_snapshot_info The snapshot being served.",
                "# TYPE saec_snapshot_info gauge",
                f'saec_snapshot_info{{version="{version}",pid="{pid}"}} 1',
                "# HELP saec_reloads_total Snapshots swapped in since start.",
                "# TYPE saec_reloads_total counter",
                f'saec_reloads_total{{pid="{pid}"}} {self.reloads}',
                "# HELP saec_reload_errors_total Reload checks that failed (the old snapshot kept serving).",
                "# TYPE saec_reload_errors_total counter",
                f'saec_reload_errors_total{{pid="{pid}"}} {self.reload_errors}',
            ]
        return "\n".join(lines) + "\n"
