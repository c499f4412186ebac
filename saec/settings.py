"""Service settings: one frozen object, read from ``SAEC_*`` environment variables.

Tests build it from a plain mapping (``Settings.from_mapping({...})``); the CLI's
flags default to it, and ``saec serve`` passes flags on to worker processes through
the same variables.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from saec.errors import SaecError

PREFIX = "SAEC_"


class SettingsError(SaecError, ValueError):
    """A setting that cannot be parsed."""


@dataclass(frozen=True)
class Settings:
    """Attributes (environment variable ``SAEC_<NAME>``):

    store: the store folder.
    host, port: where ``saec serve`` listens.
    workers: uvicorn worker processes; they share the mapped snapshot pages.
    max_ids: ids allowed in one lookup, summed over fields (413 above it).
    max_body_bytes: request body limit (413 above it).
    default_vector: "zeros" or "mean": the vector of an id not in the snapshot.
    reload_interval: seconds between checks for a newly published snapshot (0: never).
    verify_on_open: check every array's SHA-256 before serving a snapshot.
    fields: comma-separated fields this replica serves (empty: all), for sharding by field.
    store_cache: local folder for the copy of a store given as a URL (``s3://...``; empty:
        a folder per URL under the temporary directory). Not ``SAEC_CACHE``, which names
        the download cache of ``saec evaluate``'s data sets.
    admin_token: bearer token of the admin routes (POST /admin/updates); empty: the
        admin routes are not mounted and answer 404.
    update_log: the store's shared update log, which every replica of a fleet appends
        updates to and applies (``redis://host:6379/0?stream=NAME``, see docs/scaling.md);
        empty: updates go to this replica's own delta log only.
    drift_warn_ratio: log one warning per field and snapshot once its updates' mean squared
        distance to their centroid exceeds this many times the snapshot's own (store.drift).
    drift_min_updates: ... and at least this many updates of the field were applied.
    grpc_port: where every worker also serves gRPC (saec.v1, docs/grpc.md) on ``host``;
        0: no gRPC.
    """

    store: str = "./saec-store"
    host: str = "127.0.0.1"
    port: int = 8000
    workers: int = 1
    max_ids: int = 262_144
    max_body_bytes: int = 16 * 1024 * 1024
    default_vector: str = "zeros"
    reload_interval: float = 5.0
    verify_on_open: bool = True
    fields: str = ""
    store_cache: str = ""
    admin_token: str = field(default="", repr=False)  # a secret: kept out of reprs and logs
    update_log: str = field(default="", repr=False)  # may hold the log server's password
    drift_warn_ratio: float = 4.0
    drift_min_updates: int = 1000
    grpc_port: int = 0

    def __post_init__(self) -> None:
        if self.default_vector not in ("zeros", "mean"):
            raise SettingsError(f"{_var('default_vector')}: expected 'zeros' or 'mean', got {self.default_vector!r}")
        if not self.drift_warn_ratio > 0 or self.drift_warn_ratio == float("inf"):
            raise SettingsError(f"{_var('drift_warn_ratio')}: expected a finite number > 0, got {self.drift_warn_ratio}")
        if self.drift_min_updates < 0:
            raise SettingsError(f"{_var('drift_min_updates')}: expected an integer >= 0, got {self.drift_min_updates}")
        for name in ("port", "workers", "max_ids", "max_body_bytes"):
            low = 0 if name == "port" else 1
            if getattr(self, name) < low:
                raise SettingsError(f"{_var(name)}: expected an integer >= {low}, got {getattr(self, name)}")

        if not 0 <= self.grpc_port <= 65535:
            raise SettingsError(f"{_var('grpc_port')}: expected a port 1-65535, or 0 for no gRPC, got {self.grpc_port}")

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> Settings:
        """Build from ``{"max_ids": "100", ...}`` or ``{"SAEC_MAX_IDS": "100"}``; unknown keys are errors."""
        known = {f.name: f for f in fields(cls)}
        kwargs: dict[str, Any] = {}
        for key, raw in values.items():
            name = key[len(PREFIX) :].lower() if key.startswith(PREFIX) else key
            if name not in known:
                raise SettingsError(f"unknown setting {key!r}; expected one of {sorted(known)}")
            kwargs[name] = _parse(key if key.startswith(PREFIX) else _var(name), known[name].type, raw)
        return cls(**kwargs)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        environ = os.environ if environ is None else environ
        known = {PREFIX + f.name.upper() for f in fields(cls)}
        return cls.from_mapping({k: v for k, v in environ.items() if k in known})

    def to_env(self) -> dict[str, str]:
        return {PREFIX + f.name.upper(): str(getattr(self, f.name)) for f in fields(self)}


def _var(name: str) -> str:
    """How a setting is named in messages: its environment variable (also a serve flag)."""
    return PREFIX + name.upper()


_EXPECTED = {"int": "an integer", "float": "a number", "bool": "true or false (1/0, yes/no, on/off)"}


def _parse(name: str, typ: Any, raw: Any) -> Any:
    if not isinstance(raw, str):
        return raw
    try:
        if typ in ("int", int):
            return int(raw)
        if typ in ("float", float):
            return float(raw)
        if typ in ("bool", bool):
            low = raw.strip().lower()
            if low in ("1", "true", "yes", "on"):
                return True
            if low in ("0", "false", "no", "off"):
                return False
            raise ValueError(raw)
    except ValueError:
        expected = _EXPECTED.get(getattr(typ, "__name__", typ), str(typ))
        raise SettingsError(f"{name}: expected {expected}, got {raw!r}") from None
    return raw
