"""Which ``saec compress`` command keeps a model within a loss target at the most compression.

The rule, run on the *validation* checkpoints only (the test checkpoints are never looked
at while choosing):

1. Every field is tried alone with every way saec can store it (:func:`candidates`: one
   codebook, a codebook with a frequency head, product and residual quantisers, float16
   and int8 rows, and float32 as it is), the other fields left as they are. Each try is
   retrained like every compressed model and paired with "baseline + retraining pass" of
   the same seed and checkpoint.
2. A try's *loss* is what it costs at the upper end of one standard error: ``max(0,
   -(mean ΔAUC) + standard error)`` over its (seed, checkpoint) pairs, so a try that looks
   free only by luck is still charged for its noise.
3. Per field one try is chosen so that the losses add up to at most the budget and the
   bytes (keys counted, at the last validation checkpoint) are fewest: a knapsack solved
   exactly by dynamic programming over the budget in steps of 1e-6 AUC (:func:`choose`).
4. The chosen combination is run whole on the validation checkpoints. It is accepted when
   its own mean ΔAUC minus one standard error stays within the target; otherwise the budget
   is halved and steps 3-4 run again, at most :data:`MAX_ROUNDS` times.

The accepted combination is then reported on the test checkpoints (by the runner) beside
its validation figure, with the hashing trick and the frequency threshold at the same
bytes, and printed as one ``saec compress`` command (:func:`command`).
"""

from __future__ import annotations

import math
import shlex
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from saec.training.data import ClickLog
from saec.training.methods import CONTROL
from saec.training.model import ModelConfig
from saec.training.protocol import Outcome, Progress, RunPlan, run
from saec.training.variants import CompressSettings, Variant

# Fields below this many features are only offered float16 and int8 rows.
MATTERS = 256
# A compressed candidate is applied once a field holds min_factor * k features, and fast
# clustering runs on the 16 * k most frequent (top_n), as the report's Saec does.
MIN_FACTOR = 2
TOP_N_PER_ROW = 16
# Verification rounds of the rule (step 4) before it gives up.
MAX_ROUNDS = 3
# The budget is solved in steps of this much AUC.
UNIT = 1e-6


@dataclass(frozen=True)
class Candidate:
    """One way to store one field.

    Attributes:
        method: "float32" (as trained), "float16" or "int8" rows, "codebook" (one codebook,
            optionally with a frequency head), "product" or "residual".
        k: codebook rows (rows a slice or stage).
        private_rows: frequency head: the most frequent features keep a private row.
        subvectors: product quantisation's slices.
        stages: residual quantisation's stages (codebooks stored in float16).
    """

    method: str
    k: int = 0
    private_rows: int = 0
    subvectors: int = 1
    stages: int = 1

    @property
    def label(self) -> str:
        head = f" + {self.private_rows} private" if self.private_rows else ""
        if self.method == "codebook":
            return f"codebook {self.k}{head}"
        if self.method == "product":
            return f"product {self.subvectors} x {self.k}{head}"
        if self.method == "residual":
            return f"residual {self.stages} x {self.k} (float16)"
        return f"{self.method} rows"

    @property
    def weighted(self) -> bool:
        """Product and residual quantisers run count-weighted k-means (the report's measured choice)."""
        return self.method in ("product", "residual")

    def variant(self, kind: str = "saec", lr_scale: float = 1.0) -> Variant | None:
        """The variant storing a field this way (``kind`` "hash" or "threshold": sized to its bytes);
        None for float32 (the field stays as it is)."""
        if self.method == "float32":
            return None
        if self.method in ("float16", "int8"):
            # Rows need no size rule: min_factor 0 stores any field this way.
            return Variant(self.label, self.method, min_factor=0, lr_scale=lr_scale)
        return Variant(self.label, kind, k=self.k, min_factor=MIN_FACTOR, top_n=TOP_N_PER_ROW * self.k,
                       private_rows=self.private_rows, weighted=self.weighted if kind == "saec" else False,
                       subvectors=self.subvectors, stages=self.stages,
                       codebook_dtype="float16" if self.method == "residual" else "float32", lr_scale=lr_scale)

    def flags(self, complete: bool = False) -> dict[str, str]:
        """The ``saec compress`` settings of this way, as ``--per-field`` keys and values.

        ``complete`` also names the settings left at their defaults, so that a
        ``--per-field`` entry overrides every global flag that would otherwise apply.
        """
        if self.method == "float32":
            return {"dense-dtype": "float32"}
        if self.method in ("float16", "int8"):
            return {"dense-dtype": self.method}
        out = {"k": str(self.k), "top-n": str(TOP_N_PER_ROW * self.k), "min-factor": str(MIN_FACTOR)}
        if self.private_rows or complete:
            out["private-rows"] = str(self.private_rows)
        if self.subvectors > 1 or complete:
            out["subvectors"] = str(self.subvectors)
        if self.stages > 1 or complete:
            out["stages"] = str(self.stages)
            out["codebook-dtype"] = "float16" if self.stages > 1 else "float32"
        if self.weighted or complete:
            out["weight-by-count"] = "1" if self.weighted else "0"
        return out


ROWS = (Candidate("float16"), Candidate("int8"))


def candidates(n: int, dim: int) -> list[Candidate]:
    """The ways offered to a field of ``n`` features (at the last validation checkpoint) and rows of ``dim`` values.

    float32, float16 and int8 rows for every field; for a field of at least
    :data:`MATTERS` features also one codebook of 32 or 256 rows, 32 rows with a frequency
    head of 32, product quantisers of 2 and 4 slices (256 rows a slice, and 2 x 128 with a
    head of 32), and residual quantisers of 2, 3 and 4 stages of 256 rows and 2 of 64 (float16
    codebooks), each only where its codebook is at most half the field.
    """
    out = [Candidate("float32"), *ROWS]
    if n < MATTERS:
        return out
    grid = [Candidate("codebook", 32), Candidate("codebook", 256), Candidate("codebook", 32, private_rows=32),
            Candidate("product", 256, subvectors=2), Candidate("product", 256, subvectors=4),
            Candidate("product", 128, private_rows=32, subvectors=2),
            Candidate("residual", 64, stages=2), Candidate("residual", 256, stages=2),
            Candidate("residual", 256, stages=3), Candidate("residual", 256, stages=4)]
    return out + [c for c in grid if MIN_FACTOR * (c.k + c.private_rows) <= n and dim % c.subvectors == 0]


@dataclass
class Tried:
    """One field stored one way, measured on the validation checkpoints."""

    field: str
    candidate: Candidate
    d_auc: float
    se: float
    pairs: int
    bytes_keyed: int
    chosen: bool = False

    @property
    def loss(self) -> float:
        """The rule's charge: ``max(0, -mean + standard error)``."""
        return max(0.0, -self.d_auc + self.se)


@dataclass
class Round:
    """One verification of a chosen combination on the validation checkpoints."""

    budget: float
    recipe: dict[str, Candidate]
    d_auc: float
    se: float
    accepted: bool


@dataclass
class Recommendation:
    """What the rule chose for one data set, and why.

    Attributes:
        target: the largest ΔAUC loss allowed (``--max-auc-loss``).
        tried: every (field, way) measured alone on validation.
        rounds: the verifications of step 4, in order.
        recipe: the accepted (or, when none was, the last) combination: field -> way.
        accepted: the recipe met the target on validation.
        command: the ``saec compress`` command line.
        name: the recipe's method name in the outcomes (test runs), with its hash and threshold rivals.
        curve: loss budgets -> method names of the combinations chosen for them (the ΔAUC-ratio curve).
    """

    target: float
    tried: list[Tried]
    rounds: list[Round]
    recipe: dict[str, Candidate]
    accepted: bool
    command: str
    name: str
    curve: dict[float, str] = field(default_factory=dict)


def stats(diffs: Sequence[float]) -> tuple[float, float]:
    """Mean and standard error of paired differences (standard error 0 for one pair)."""
    d = np.asarray(diffs, dtype=np.float64)
    if len(d) == 0:
        return 0.0, 0.0
    se = float(d.std(ddof=1) / math.sqrt(len(d))) if len(d) > 1 else 0.0
    return float(d.mean()), se


def choose(tried: Sequence[Tried], fields: Sequence[str], budget: float) -> dict[str, Candidate]:
    """Per field one try, losses summing to at most ``budget``, fewest bytes (step 3).

    Exact over the budget in steps of :data:`UNIT` (losses rounded up). A field with no
    try keeps float32. Ties in bytes go to the smaller loss.
    """
    steps = int(round(budget / UNIT))
    by_field: dict[str, list[Tried]] = defaultdict(list)
    for t in tried:
        by_field[t.field].append(t)
    best = np.zeros(steps + 1)  # fewest bytes of the fields so far within b steps
    picks: list[list[Tried]] = []
    back: list[np.ndarray] = []
    for f in fields:
        options = [t for t in by_field.get(f, []) if t.candidate.method != "float32"]
        dense = next((t for t in by_field.get(f, []) if t.candidate.method == "float32"), None)
        options = ([dense] if dense is not None else []) + options
        if not options:
            continue
        cost = np.array([math.ceil(t.loss / UNIT - 1e-9) for t in options])
        size = np.array([t.bytes_keyed for t in options], dtype=np.float64)
        new = np.full(steps + 1, np.inf)
        arg = np.full(steps + 1, -1)
        for j in np.argsort(cost, kind="stable"):
            if cost[j] > steps:
                continue
            shifted = np.full(steps + 1, np.inf)
            shifted[cost[j]:] = best[: steps + 1 - cost[j]] + size[j]
            better = shifted < new
            new[better], arg[better] = shifted[better], j
        best = new
        picks.append(options)
        back.append(arg)
    chosen: dict[str, Candidate] = {f: Candidate("float32") for f in fields}
    b = steps
    if not np.isfinite(best[b]):
        return chosen
    for options, arg in zip(reversed(picks), reversed(back), strict=True):
        t = options[int(arg[b])]
        chosen[t.field] = t.candidate
        b -= math.ceil(t.loss / UNIT - 1e-9)
    return chosen


def recipe_variants(recipe: Mapping[str, Candidate], kind: str = "saec") -> tuple[tuple[str, Variant], ...]:
    """The recipe as (field, variant) pairs for :func:`training.variants.build` (float32 fields left out).

    ``kind`` "hash" or "threshold" sizes each compressed field's rival to that field's way;
    rows (float16, int8) stay rows in every kind.
    """
    out = []
    for name, c in recipe.items():
        v = c.variant(kind if c.method not in ("float16", "int8") else "saec")
        if v is not None:
            out.append((name, v))
    return tuple(out)


def describe(recipe: Mapping[str, Candidate]) -> str:
    """One line: each field that is not float32, and how it is stored."""
    kept = [f"{f}: {c.label}" for f, c in recipe.items() if c.method != "float32"]
    return "; ".join(kept) if kept else "every field float32 (nothing met the budget)"


def command(recipe: Mapping[str, Candidate], tables: str = "TABLES.npz", store: str = "STORE") -> str:
    """The ``saec compress`` command storing every field as ``recipe`` says.

    The way most fields share goes into the global flags; every other field gets a
    ``--per-field`` setting, so that no field is left to the flags' defaults.
    """
    compressed = [c for c in recipe.values() if c.method in ("codebook", "product", "residual")]
    common = Counter(compressed).most_common(1)[0][0] if compressed else None
    parts = ["saec", "compress", tables, "--out", store]
    if common is not None:
        for key, value in common.flags().items():
            parts += [f"--{key}"] if key == "weight-by-count" else [f"--{key}", value]
    for name, c in recipe.items():
        if c == common:
            continue
        parts += ["--per-field", f"{name}:" + ",".join(f"{k}={v}" for k, v in c.flags(complete=common is not None).items())]
    return " ".join(shlex.quote(p) for p in parts)


def bound(fields_bytes: Mapping[str, int], recipe: Mapping[str, Candidate]) -> str:
    """What bounds the ratio: the field holding the largest share of the compressed model's bytes."""
    total = sum(fields_bytes.values())
    if not total:
        return ""
    name, most = max(fields_bytes.items(), key=lambda kv: kv[1])
    how = recipe.get(name, Candidate("float32")).label
    return f"{name} ({how}) holds {100 * most / total:.0f}% of the compressed model's bytes"


def select_on_validation(log: ClickLog, config: ModelConfig, settings: CompressSettings, val: Sequence[int], seeds: Sequence[int],
                         saec_scale: float, control_scale: float, target: float, curve: Sequence[float] = (),
                         progress: Progress | None = None) -> tuple[list[Tried], list[Round], dict[float, dict[str, Candidate]]]:
    """Steps 1-4 of the rule (module docstring) on the validation checkpoints ``val``.

    Returns every try, the verification rounds (the accepted one last, if any) and the
    combination the knapsack of step 3 gives for each budget of ``curve`` (unverified).
    """
    end = max(val)
    fields = [f.name for f in log.fields]
    sizes = {f.name: int(log.live(i)[end]) for i, f in enumerate(log.fields)}
    control = Variant(CONTROL, "retrain", lr_scale=control_scale)
    tries: dict[str, tuple[str, Candidate]] = {}
    variants = [control]
    for name in fields:
        for cand in candidates(sizes[name], config.dim):
            v = cand.variant(lr_scale=saec_scale)
            if v is not None:
                tries[f"try {name}: {cand.label}"] = (name, cand)
                variants.append(Variant(f"try {name}: {cand.label}", "saec", lr_scale=saec_scale, per_field=((name, v),)))
    outs: list[Outcome] = []
    for seed in seeds:
        outs += run(log, RunPlan(config, settings, tuple(val), tuple(variants)), seed, progress)
    ctrl = {(o.seed, o.checkpoint): o.metrics.auc for o in outs if o.method == CONTROL}
    first = min(seeds)
    dense = next(o for o in outs if o.method == "baseline" and o.checkpoint == end and o.seed == first)
    tried = [Tried(fo.name, Candidate("float32"), 0.0, 0.0, len(ctrl), fo.before.keyed) for fo in dense.fields]
    for vname, (name, cand) in tries.items():
        mine = [o for o in outs if o.method == vname]
        mean, se = stats([o.metrics.auc - ctrl[(o.seed, o.checkpoint)] for o in mine])
        last = next(o for o in mine if o.checkpoint == end and o.seed == first)
        tried.append(Tried(name, cand, mean, se, len(mine), next(fo.after.keyed for fo in last.fields if fo.name == name)))
    # Step 4 for the halved budgets at once: one pass over the validation checkpoints
    # verifies them all; the largest budget that passes wins, as if tried one after another.
    budgets = [target / 2**i for i in range(MAX_ROUNDS)]
    recipes = {b: choose(tried, fields, b) for b in (*budgets, *curve)}
    checks = [Variant(f"verify {b:g}", "saec", lr_scale=saec_scale, per_field=recipe_variants(recipes[b])) for b in budgets]
    outs = []
    for seed in seeds:
        outs += run(log, RunPlan(config, settings, tuple(val), (control, *checks)), seed, progress)
    ctrl = {(o.seed, o.checkpoint): o.metrics.auc for o in outs if o.method == CONTROL}
    rounds = []
    for b, v in zip(budgets, checks, strict=True):
        mean, se = stats([o.metrics.auc - ctrl[(o.seed, o.checkpoint)] for o in outs if o.method == v.name])
        rounds.append(Round(b, recipes[b], mean, se, mean - se >= -target))
        if rounds[-1].accepted:
            break
    for t in tried:
        t.chosen = rounds[-1].recipe.get(t.field) == t.candidate
    return tried, rounds, {b: recipes[b] for b in curve}
