"""Service settings: one frozen object, read from ``SAEC_*`` environment variables.

Tests build it from a plain mapping (``Settings.from_mapping({...})``); the CLI's
flags default to it, and ``saec serve`` passes flags on to worker processes through
the same variables.

Each setting is declared once, as a field of ``Settings`` made by :func:`setting`: its
default, its rule (what values it takes: :func:`tcp_port`, :func:`count`, :func:`interval`,
:func:`choice`, :func:`switch`, :func:`text`), its help line, and whether ``saec serve``
has a flag for it. Everything else reads that one declaration: parsing and checking
(``from_mapping``/``from_env``, so a bad value is refused before anything starts, in one
line naming the variable or flag the value came from), the flags and help of ``saec
serve`` (``saec.cli``), and the test that walks every setting with bad values
(``tests/cli/test_settings.py``, which takes them from the rule). A new setting is one line:

    metrics_port: int = setting(0, tcp_port(zero="no listener of its own"), "port of a /metrics listener")

and becomes ``SAEC_METRICS_PORT`` and ``saec serve --metrics-port``, listed in ``--help``.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from saec.errors import SaecError

PREFIX = "SAEC_"


class SettingsError(SaecError, ValueError):
    """A setting that cannot be parsed or is out of its range."""


@dataclass(frozen=True)
class Rule:
    """What values a setting takes.

    kind: int, float, bool or str.
    low, high: the inclusive range of a number (None: unbounded).
    zero: where 0 is allowed below ``low``, what it means ("any free port"); "" where not.
    choices: the allowed strings of a str setting (empty: any text).
    """

    kind: type
    low: float | None = None
    high: float | None = None
    zero: str = ""
    choices: tuple[str, ...] = ()

    def expected(self) -> str:
        """What the rule takes, as a refusal says it."""
        if self.kind is bool:
            return "true or false (1/0, yes/no, on/off)"
        if self.choices:
            return " or ".join(repr(c) for c in self.choices)
        if self.kind is str:
            return "text"
        what = "an integer" if self.kind is int else "a finite number"
        if self.low is not None and self.high is not None:
            what += f" {_num(self.low)}-{_num(self.high)}"
        elif self.low is not None:
            # Integers count from low; numbers of seconds are > low, or >= 0 where 0 means something.
            inclusive = self.kind is int or (self.zero and self.low == 0)
            what += f" {'>=' if inclusive else '>'} {_num(self.low)}"
        return what + (f" (0: {self.zero})" if self.zero else "")

    def parse(self, name: str, raw: Any) -> Any:
        """``raw`` (a string from the environment or a flag, or a value) as the setting's type, checked.

        Raises:
            SettingsError: one line, ``"{name}: expected {what}, got {raw!r}"``.
        """
        value = self._convert(name, raw)
        if self.kind in (int, float):
            bad = not math.isfinite(value)
            if value == 0 and self.zero:
                bad = False
            elif self.low is not None and (value < self.low if self.kind is int else value <= self.low):
                bad = True
            if self.high is not None and value > self.high:
                bad = True
            if bad:
                raise SettingsError(f"{name}: expected {self.expected()}, got {raw!r}")
        if self.choices and value not in self.choices:
            raise SettingsError(f"{name}: expected {self.expected()}, got {raw!r}")
        return value

    def _convert(self, name: str, raw: Any) -> Any:
        if not isinstance(raw, str):
            if self.kind is float and isinstance(raw, int) and not isinstance(raw, bool):
                return float(raw)
            if isinstance(raw, self.kind) and not (self.kind is int and isinstance(raw, bool)):
                return raw
            raise SettingsError(f"{name}: expected {self.expected()}, got {raw!r}")
        try:
            if self.kind is int:
                return int(raw.strip())
            if self.kind is float:
                return float(raw.strip())
        except ValueError:
            raise SettingsError(f"{name}: expected {self.expected()}, got {raw!r}") from None
        if self.kind is bool:
            low = raw.strip().lower()
            if low in ("1", "true", "yes", "on"):
                return True
            if low in ("0", "false", "no", "off"):
                return False
            raise SettingsError(f"{name}: expected {self.expected()}, got {raw!r}")
        return raw


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else str(x)


def tcp_port(*, zero: str = "") -> Rule:
    """A TCP port, 1-65535; with ``zero``, 0 too, meaning that."""
    return Rule(int, 1, 65535, zero=zero)


def count(low: int = 1) -> Rule:
    """A number of things or bytes: an integer >= ``low``."""
    return Rule(int, low)


def interval(*, zero: str = "") -> Rule:
    """Seconds: finite and > 0; with ``zero``, 0 too, meaning that."""
    return Rule(float, 0, zero=zero)


def choice(*options: str) -> Rule:
    return Rule(str, choices=options)


def switch() -> Rule:
    return Rule(bool)


def text() -> Rule:
    return Rule(str)


@dataclass(frozen=True)
class Spec:
    """A setting's declaration, kept in its dataclass field's metadata."""

    rule: Rule
    help: str
    flag: bool  # `saec serve --NAME` exists (else: environment only)


def setting(default: Any, rule: Rule, help: str, *, flag: bool = True, secret: bool = False) -> Any:
    """A field of ``Settings``: ``SAEC_<NAME>``, and ``saec serve --<name>`` when ``flag``."""
    return field(default=default, repr=not secret, metadata={"saec": Spec(rule, help, flag)})


@dataclass(frozen=True)
class Settings:
    """Every setting of the service; see each field's help line, or ``saec serve --help``."""

    store: str = setting("./saec-store", text(), "the store folder, or an fsspec URL (s3://...)")
    host: str = setting("127.0.0.1", text(), "address to listen on")
    port: int = setting(8000, tcp_port(zero="any free port"), "port to listen on")
    workers: int = setting(1, count(), "worker processes; they share the mapped snapshot pages")
    max_ids: int = setting(262_144, count(), "ids per lookup, summed over fields; 413 above")
    max_body_bytes: int = setting(16 * 1024 * 1024, count(), "request body limit in bytes; 413 above")
    default_vector: str = setting("zeros", choice("zeros", "mean"), "the vector of an id not in the snapshot")
    reload_interval: float = setting(
        5.0, interval(zero="never"), "seconds between checks for a newly published snapshot"
    )
    verify_on_open: bool = setting(True, switch(), "check every array's SHA-256 before serving a snapshot")
    fields: str = setting("", text(), "serve only these fields (a,b; empty: all): one shard of a sharded deployment")
    # Not SAEC_CACHE, which names the download cache of `saec evaluate`'s data sets.
    store_cache: str = setting(
        "", text(), "local folder for the copy of a store given as a URL (empty: one under the temporary directory)"
    )
    assign_search: str = setting(
        "auto", choice("auto", "hnsw", "exact"), "nearest-centroid search of updates: auto (the snapshot's HNSW index "
        "where it qualifies, store.assign_index), hnsw (the stored index wherever there is one) or exact",
    )  # fmt: skip
    hnsw_ef: int = setting(0, Rule(int, 1, zero="the ef stored with each field's index"), "HNSW query ef")
    drift_warn_ratio: float = setting(
        4.0, Rule(float, 0), "warn once per field and snapshot when updates lie this many times farther from "
        "their centroid than the snapshot's own rows (store.drift)",
    )  # fmt: skip
    drift_min_updates: int = setting(
        1000, count(0), "updates of a field applied before its drift is judged (SAEC_DRIFT_WARN_RATIO)", flag=False
    )
    grpc_port: int = setting(0, tcp_port(zero="no gRPC"), "also serve gRPC (saec.v1, docs/grpc.md) on this port from every worker")
    # Kept out of reprs and logs: the URL may hold the log server's password.
    update_log: str = setting(
        "", text(), "the store's shared update log, which every replica of a fleet appends updates to and applies "
        "(redis://host:6379/0?stream=NAME, see docs/scaling.md); empty: this replica's own delta log only",
        secret=True,
    )  # fmt: skip
    # A secret: kept out of reprs, logs and the command line (environment only).
    admin_token: str = setting(
        "", text(), "bearer token of the admin routes (POST /admin/updates); empty: they answer 404",
        flag=False, secret=True,
    )  # fmt: skip

    def __post_init__(self) -> None:
        # Settings(...) built in code is held to the same rules as the environment.
        for f in fields(self):
            value = spec(f.name).rule.parse(var(f.name), getattr(self, f.name))
            object.__setattr__(self, f.name, value)

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> Settings:
        """Build from ``{"max_ids": "100"}``, ``{"SAEC_MAX_IDS": "100"}`` or ``{"--max-ids": "100"}``.

        A refusal names the key as given: the variable, or the flag. Unknown keys are errors.
        """
        known = {f.name for f in fields(cls)}
        kwargs: dict[str, Any] = {}
        for key, raw in values.items():
            if key.startswith(PREFIX):
                name, shown = key[len(PREFIX) :].lower(), key
            elif key.startswith("--"):
                name, shown = key[2:].replace("-", "_"), key
            else:
                name, shown = key, var(key)
            if name not in known:
                raise SettingsError(f"unknown setting {key!r}; expected one of {sorted(known)}")
            kwargs[name] = spec(name).rule.parse(shown, raw)
        return cls(**kwargs)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        environ = os.environ if environ is None else environ
        known = {var(f.name) for f in fields(cls)}
        return cls.from_mapping({k: v for k, v in environ.items() if k in known})

    def to_env(self) -> dict[str, str]:
        return {var(f.name): str(getattr(self, f.name)) for f in fields(self)}


def var(name: str) -> str:
    """The environment variable of setting ``name``."""
    return PREFIX + name.upper()


def flag(name: str) -> str:
    """The ``saec serve`` flag of setting ``name``."""
    return "--" + name.replace("_", "-")


_KINDS: dict[str, type] = {"int": int, "float": float, "bool": bool, "str": str}


def spec(name: str) -> Spec:
    """The declaration of setting ``name``.

    A field declared without :func:`setting` is parsed by its annotation only (no range,
    no flag, no help); tests/cli/test_settings.py fails until it is declared.
    """
    f = Settings.__dataclass_fields__[name]
    if "saec" in f.metadata:
        return f.metadata["saec"]
    return Spec(Rule(_KINDS.get(str(getattr(f.type, "__name__", f.type)), str)), "", flag=False)


def declared(name: str) -> bool:
    """Whether setting ``name`` was declared with :func:`setting`."""
    return "saec" in Settings.__dataclass_fields__[name].metadata


def names() -> list[str]:
    """Every setting, in declaration order."""
    return [f.name for f in fields(Settings)]
