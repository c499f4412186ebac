"""A generated click stream whose feature set grows over time, like the paper's Figure 1.

Each field has a universe of ids that grows geometrically from ``initial`` to ``final``
over the stream (new users, items, tokens appear every segment). Every id gets a Zipf-like
popularity ``rank^-zipf`` from a random rank, so a few ids are frequent and most are rare
(the paper's Figure 4(b)), and a new id is as likely to be popular as an old one.

The planted click model gives the data a structure Saec can use and a signal a model can
learn. Every id belongs to one of its field's latent ``groups``; a group has a bias and a
latent vector, and an id adds a small individual bias of its own:

    logit = b0 + sum_f (bias[f, group] + own[f, id]) + sum_{(f, g) in pairs} <z[f, group_f], z[g, group_g]>

Ids of one group are interchangeable up to their individual bias, which is exactly the
similarity that clustering can exploit, while the individual part is what clustering
must give up.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from saec.training.data import ClickLog, encode_values, make_click_log


@dataclass(frozen=True)
class FieldSpec:
    """One generated field.

    Attributes:
        name: field name.
        initial: ids alive in the first segment.
        final: ids alive in the last segment.
        zipf: popularity exponent (larger = more concentrated on few ids).
        groups: latent groups of interchangeable ids.
        own: standard deviation of each id's individual bias.
    """

    name: str
    initial: int
    final: int
    zipf: float
    groups: int
    own: float = 0.3


DEFAULT_FIELDS: tuple[FieldSpec, ...] = (
    FieldSpec("user", 30_000, 600_000, 1.05, 48),
    FieldSpec("item", 8_000, 120_000, 1.15, 48),
    FieldSpec("query_token", 3_000, 40_000, 1.1, 32),
    FieldSpec("publisher", 800, 12_000, 1.1, 24),
    FieldSpec("region", 300, 300, 1.0, 12, 0.1),
    FieldSpec("device", 24, 24, 0.8, 6, 0.1),
)
# Field pairs whose latent vectors interact in the click model.
DEFAULT_PAIRS: tuple[tuple[str, str], ...] = (("user", "item"), ("user", "publisher"), ("query_token", "item"), ("region", "item"), ("device", "publisher"))


@dataclass(frozen=True)
class StreamSpec:
    """Size and shape of a generated stream.

    Attributes:
        rows: events in the whole stream.
        segments: segments ("hours") it is cut into.
        fields: the fields.
        pairs: interacting field pairs.
        latent: length of the groups' latent vectors.
        strength: scale of the interaction terms.
        base_rate: click rate the intercept is set to aim at.
        seed: seeds every draw.
    """

    rows: int = 2_400_000
    segments: int = 24
    fields: tuple[FieldSpec, ...] = DEFAULT_FIELDS
    pairs: tuple[tuple[str, str], ...] = DEFAULT_PAIRS
    latent: int = 4
    strength: float = 0.7
    base_rate: float = 0.25
    seed: int = 0


def generate_stream(spec: StreamSpec = StreamSpec()) -> ClickLog:
    """Draw the stream: rows in time order, equal-count segments, labels from the planted model."""
    rng = np.random.default_rng(spec.seed)
    bounds = np.linspace(0, spec.rows, spec.segments + 1).round().astype(np.int64)
    ids: dict[str, npt.NDArray[np.int64]] = {}
    logit = np.zeros(spec.rows)
    groups: dict[str, npt.NDArray[np.int64]] = {}
    for f in spec.fields:
        drawn = _draw_ids(rng, f, bounds)
        group_of = rng.integers(0, f.groups, size=f.final)
        bias = rng.normal(0.0, 0.5, size=f.groups)
        own = rng.normal(0.0, f.own, size=f.final)
        logit += bias[group_of[drawn]] + own[drawn]
        ids[f.name] = drawn
        groups[f.name] = group_of[drawn]
    vectors = {f.name: rng.normal(0.0, 1.0, size=(f.groups, spec.latent)) for f in spec.fields}
    for a, b in spec.pairs:
        za, zb = vectors[a][groups[a]], vectors[b][groups[b]]
        logit += spec.strength * np.einsum("ij,ij->i", za, zb) / np.sqrt(spec.latent)
    # Shift so the mean click probability is about base_rate (bisection on the intercept).
    lo, hi = -20.0, 20.0
    for _ in range(50):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if _sigmoid(logit + mid).mean() < spec.base_rate else (lo, mid)
    labels = (rng.random(spec.rows) < _sigmoid(logit + lo)).astype(np.float32)
    fields = [encode_values(f.name, ids[f.name]) for f in spec.fields]
    return make_click_log(
        "generated stream",
        fields,
        labels,
        spec.segments,
        notes=f"{spec.rows:,} generated events, seed {spec.seed}, planted latent-group click model, ids growing over time",
    )


def features_over_time(log: ClickLog) -> npt.NDArray[np.int64]:
    """int64 ``(segments + 1,)``: distinct features of all fields seen before each segment bound."""
    return np.sum([log.live(f) for f in range(len(log.fields))], axis=0)


def _draw_ids(rng: np.random.Generator, f: FieldSpec, bounds: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
    """int64 ``(rows,)`` ids of one field, segment by segment, among the ids alive then."""
    segments = len(bounds) - 1
    weight = rng.permutation(f.final).astype(np.float64) + 1.0
    weight **= -f.zipf
    cum = np.cumsum(weight)
    out = np.empty(bounds[-1], dtype=np.int64)
    for s in range(segments):
        frac = s / max(segments - 1, 1)
        alive = int(round(f.initial * (f.final / f.initial) ** frac))
        u = rng.random(bounds[s + 1] - bounds[s]) * cum[alive - 1]
        out[bounds[s] : bounds[s + 1]] = np.searchsorted(cum[:alive], u, side="right").clip(max=alive - 1)
    return out


def _sigmoid(x: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    return 1.0 / (1.0 + np.exp(-x))


def small_stream(rows: int = 60_000, segments: int = 12, seed: int = 0, fields: Sequence[FieldSpec] | None = None) -> ClickLog:
    """A small stream for tests and quick runs: the same model, fields scaled down 20x."""
    scaled = tuple(
        FieldSpec(f.name, max(2, f.initial // 20), max(2, f.final // 20), f.zipf, max(2, f.groups // 2), f.own)
        for f in (fields or DEFAULT_FIELDS)
    )
    return generate_stream(StreamSpec(rows=rows, segments=segments, fields=scaled, seed=seed))
