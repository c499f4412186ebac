"""Turning a trained baseline into a smaller model: Saec and the methods it is compared with.

Every variant acts on the same fields, the *large* ones (at least ``min_factor * k``
features seen so far); small fields stay dense float32 in every variant, so differences in
quality and memory come from the large fields alone. The variants:

- ``saec``: :func:`compress.compress_field` per field (k-means++, random or top-k
  initialisation; fast clustering of the ``top_n`` most frequent rows, or full), then a
  :class:`~training.embedding.CompressedEmbedding` whose codebook is retrained with
  gradient averaging. ``weighted`` makes k-means count-weighted; ``subvectors`` > 1 is
  product quantisation (:class:`~training.embedding.ProductEmbedding`, each slice
  retrained like a codebook); ``stages`` > 1 is residual quantisation
  (:class:`~training.embedding.ResidualEmbedding`, each stage retrained like a codebook).
- ``hash``: the hashing trick, ``bucket = hash_ids(raw id, field) % rows``; the buckets start
  as the mean of their members' trained vectors ("re-hashed") and train like a plain
  embedding (summed gradients, which is what a hashed table gets). ``rows`` is either the
  codebook's ``k`` or as many buckets as fit Saec's bytes.
- ``threshold``: the YouTube paper's frequency threshold: the most frequent features keep
  their vectors, every other feature reads as zero; as many kept rows as fit Saec's bytes.

"Saec's bytes" is a budget in one of the two accountings of :mod:`training.memory`: with
keys (a kept feature then costs its row plus its key, a bucket only its row), or the
paper's, keys excluded on every side.
- ``int8``: the store's 8-bit row-wise form (``store.writer.quantise_rowwise_8bit``: uint8
  codes with a float32 scale and bias per row, what ``saec compress --dense-dtype int8``
  writes). The rows retrain in float32 with the rest of the model and are rounded to that
  form after the pass (:meth:`Built.as_stored`), so the model evaluated is the one served.
- ``float16``: the same with the rows rounded to float16 (``--dense-dtype float16``).
- ``retrain``: the uncompressed baseline given the same extra pass, the control that
  separates the effect of compression from the effect of seeing the segment twice.

Each variant starts from the baseline's Adagrad state (a centroid or bucket starts from
the mean of its members' squared-gradient sums), so retraining continues training rather
than restarting it.
"""

from __future__ import annotations

import copy
import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt
import torch
from torch import nn

from saec.compress import CompressedField, ProductField, ResidualField, compress_field, min_rows_to_compress
from saec.store import keyindex
from saec.store.hashing import hash_ids
from saec.training import memory
from saec.training.data import ClickLog
from saec.training.embedding import CompressedEmbedding, GradMode, ProductEmbedding, ResidualEmbedding, StoredRows
from saec.training.model import ModelConfig
from saec.training.trainer import Trainer, adagrad

KINDS = ("saec", "hash", "threshold", "int8", "float16", "retrain")
BUDGETS = ("k", "keyed", "paper")


@dataclass(frozen=True)
class Variant:
    """One way of shrinking the baseline.

    Attributes:
        name: label in reports.
        kind: one of :data:`KINDS`.
        init: Saec's centroid initialisation: "kmeans++", "random" or "topk".
        fast: Saec clusters only the ``top_n`` most frequent rows (paper 2.4) when true.
        grad_mode: how a centroid's gradient is formed (:mod:`training.embedding`).
        budget: how many rows ``hash`` and ``threshold`` get: "k" (as many as Saec's
            centroids), "keyed" (what fits Saec's bytes with keys) or "paper" (what fits
            Saec's bytes with keys excluded).
        retrain: retrain after shrinking (false only for the "compressed, not retrained"
            ablation of the paper's section 2.3).
        lr_scale: the retraining pass runs at ``lr * lr_scale`` (tuned per variant on the
            validation checkpoints).
        k, min_factor, top_n, private_rows: override the data set's
            :class:`CompressSettings` (k sweep, frequency-head sizes).
        only: shrink only these fields (per-field ablation); None = every large field.
        weighted: Saec's k-means weights features by their counts.
        subvectors: Saec: product quantisation into this many slices (1 = one codebook).
            ``hash`` and ``threshold``: size the budget to that product-quantised Saec
            (``subvectors`` masks a feature, ``k`` rows a slice) rather than to one codebook.
        stages: Saec: residual quantisation in this many stages (1 = one codebook);
            ``hash`` and ``threshold``: size the budget to that residual quantiser.
        codebook_dtype: a residual quantiser's codebooks as stored, "float32" or "float16"
            (rounded after retraining, counted at 2 bytes a value); the budget of ``hash``
            and ``threshold`` sized to it follows.
    """

    name: str
    kind: str
    init: str = "kmeans++"
    fast: bool = True
    grad_mode: GradMode = "feature"
    budget: str = "keyed"
    retrain: bool = True
    lr_scale: float = 1.0
    k: int | None = None
    min_factor: int | None = None
    top_n: int | None = None
    private_rows: int | None = None
    only: tuple[str, ...] | None = None
    weighted: bool = False
    subvectors: int = 1
    stages: int = 1
    codebook_dtype: str = "float32"
    per_field: tuple[tuple[str, Variant], ...] | None = None

    def settings(self, base: CompressSettings) -> CompressSettings:
        """The data set's settings with this variant's overrides applied.

        A product- or residual-quantised variant (or one sized to it) with its own k
        compresses the same fields as the data set's Saec: from ``base.min_rows`` features on.
        """
        product = (self.subvectors > 1 or self.stages > 1) and self.min_factor is None
        return dataclasses.replace(
            base,
            k=self.k or base.k,
            min_factor=base.min_factor if self.min_factor is None else self.min_factor,
            compress_from=base.min_rows if product else base.compress_from,
            top_n=self.top_n or base.top_n,
            private_rows=base.private_rows if self.private_rows is None else self.private_rows,
        )


@dataclass(frozen=True)
class CompressSettings:
    """Saec's settings for one data set.

    Attributes:
        k: centroids per compressed field.
        min_factor: a field is compressed once it holds at least ``min_factor * k`` features.
        top_n: rows fast clustering runs on.
        seed: seeds k-means.
        private_rows: the frequency head: the most frequent features of a compressed
            field that keep a private codebook row (:func:`compress.compress_field`).
    """

    k: int
    min_factor: int
    top_n: int
    seed: int = 0
    private_rows: int = 0
    compress_from: int | None = None

    def rows(self, n: int) -> int:
        """Codebook rows of a compressed field of ``n`` features: k plus its private rows."""
        return self.k + min(self.private_rows, n - self.k)

    @property
    def min_rows(self) -> int:
        """Features a field needs to be compressed: ``compress_from`` if set, else ``min_factor * k``."""
        if self.compress_from is not None:
            return self.compress_from
        return min_rows_to_compress(self.k, self.min_factor)


@dataclass
class FieldOutcome:
    """What a variant did to one field.

    Attributes:
        name: field name.
        features: features seen so far (``n``).
        rows: vectors stored afterwards (k, buckets, kept rows, or n when left as is).
        before: bytes uncompressed.
        after: bytes afterwards.
        compressed: whether the variant changed the field.
        seconds: clustering time (Saec only).
        inertia: k-means inertia over all rows (Saec only).
    """

    name: str
    features: int
    rows: int
    before: memory.Bytes
    after: memory.Bytes
    compressed: bool
    seconds: float = 0.0
    inertia: float = 0.0


@dataclass
class Footprint:
    """What a model stores, field by field, against the uncompressed tables."""

    fields: list[FieldOutcome] = field(default_factory=list)

    @property
    def before(self) -> memory.Bytes:
        return sum((f.before for f in self.fields), memory.ZERO)

    @property
    def after(self) -> memory.Bytes:
        return sum((f.after for f in self.fields), memory.ZERO)

    @property
    def vectors_before(self) -> int:
        return sum(f.features for f in self.fields)

    @property
    def vectors_after(self) -> int:
        return sum(f.rows for f in self.fields)

    @property
    def clustering_seconds(self) -> float:
        return sum(f.seconds for f in self.fields)


@dataclass
class Built:
    """A variant's trainer, ready to retrain, and what it stores."""

    trainer: Trainer
    footprint: Footprint

    def as_stored(self) -> None:
        """Round what the store keeps in less than float32 (a residual quantiser's float16
        codebooks, float16 and int8 rows), so that the model evaluated is the one that would
        be served. Call it after retraining."""
        for module in self.trainer.model.fields:
            if isinstance(module, (ResidualEmbedding, StoredRows)):
                module.round_to_stored()


def uncompressed(log: ClickLog, end: int, dim: int) -> Footprint:
    """The footprint of the uncompressed tables after segments ``< end``."""
    return Footprint([_unchanged(log, f, end, dim) for f in range(len(log.fields))])


def build(variant: Variant, base: Trainer, log: ClickLog, end: int, settings: CompressSettings,
          per_field: Mapping[str, Variant] | None = None) -> Built:
    """Shrink ``base`` (trained on segments ``< end``) the way ``variant`` says.

    Args:
        per_field: a variant per field name instead of ``variant`` for every field (a field
            not named stays as it is); ``variant`` then gives only the retraining scale.

    Returns a new :class:`Built`; ``base`` is left untouched.
    """
    if variant.kind not in KINDS:
        raise ValueError(f"variant kind must be one of {KINDS}, found {variant.kind!r}")
    if variant.kind == "retrain":
        return Built(base.copy().scale_lr(variant.lr_scale), uncompressed(log, end, base.model.config.dim))

    cfg = base.model.config
    if per_field is None and variant.per_field is not None:
        per_field = dict(variant.per_field)
    base_settings = settings
    settings = variant.settings(settings)
    model = copy.deepcopy(base.model)
    params: list[torch.Tensor] = []
    sums: list[torch.Tensor] = []
    for new_p, old_p in zip(model.mlp.parameters(), base.model.mlp.parameters(), strict=True):
        params.append(new_p)
        sums.append(base.state_sum(old_p))
    outcomes: list[FieldOutcome] = []
    for f, fld in enumerate(log.fields):
        n = int(log.live(f)[end])
        old = base.model.fields[f]
        assert isinstance(old, nn.Embedding)  # the baseline is uncompressed
        table = old.weight.detach().numpy()[1 : n + 1]
        acc = base.state_sum(old.weight).numpy()[1 : n + 1]
        counts = log.counts(f, end)[1 : n + 1]
        module, outcome, acc_new = None, None, None
        mine = variant if per_field is None else per_field.get(fld.name)
        if mine is not None and (variant.only is None or fld.name in variant.only):
            here = settings if per_field is None else mine.settings(base_settings)
            module, outcome, acc_new = _shrink(mine, fld.name, fld.vocab[1 : n + 1], len(fld.vocab), table, acc, counts, cfg.dim, here)
        if module is None or outcome is None:
            outcome = _unchanged(log, f, end, cfg.dim)
            kept = model.fields[f]
            assert isinstance(kept, nn.Embedding)
            params.append(kept.weight)
            sums.append(base.state_sum(old.weight))
        else:
            model.fields[f] = module
            if acc_new is not None and isinstance(module, StoredRows):
                params.append(module.weight)
                sums.append(torch.from_numpy(acc_new))
            elif acc_new is not None and isinstance(module, CompressedEmbedding):
                params.append(module.codebook)
                sums.append(torch.from_numpy(acc_new))
            elif acc_new is not None and isinstance(module, (ProductEmbedding, ResidualEmbedding)):
                # acc_new holds the parts' sums stacked part by part: (M * k, dim / M) for
                # a product quantiser's slices, (S * k, dim) for a residual one's stages.
                for part, acc_part in zip(module.parts, np.split(acc_new, len(module.parts)), strict=True):
                    assert isinstance(part, CompressedEmbedding)
                    params.append(part.codebook)
                    sums.append(torch.from_numpy(np.ascontiguousarray(acc_part)))
        outcomes.append(outcome)
    trainer = Trainer(model, adagrad(params, cfg.lr * variant.lr_scale, sums), settings.seed)
    trainer.rng = copy.deepcopy(base.rng)
    return Built(trainer, Footprint(outcomes))


def hashed_from_scratch(log: ClickLog, config: ModelConfig, settings: CompressSettings, seed: int) -> Trainer:
    """A model trained with the hashing trick from the first segment on.

    Fields whose final size reaches ``min_factor * k`` are hashed into ``k`` buckets from
    the start (the decision uses the log's final field sizes, as an operator sizing a
    hashed table up front would); the others are ordinary embeddings.
    """
    trainer = Trainer.new([f.size + 1 for f in log.fields], config, seed)
    model = trainer.model
    for f, fld in enumerate(log.fields):
        if fld.size >= settings.min_rows:
            buckets = _buckets(fld.name, fld.vocab[1:], settings.k)
            gen = torch.Generator().manual_seed(seed * 1009 + f)
            init = torch.randn(settings.k, config.dim, generator=gen) * 0.05
            model.fields[f] = CompressedEmbedding(init, np.concatenate([[-1], buckets]), grad_mode="sum")
    trainer.optimizer = adagrad([p for p in model.parameters() if p.requires_grad], config.lr)
    return trainer


def _shrink(
    variant: Variant,
    name: str,
    raw_ids: npt.NDArray,
    codes: int,
    table: npt.NDArray[np.float32],
    acc: npt.NDArray[np.float32],
    counts: npt.NDArray[np.int64],
    dim: int,
    settings: CompressSettings,
) -> tuple[nn.Module | None, FieldOutcome | None, npt.NDArray[np.float32] | None]:
    """The new module of one field, what was done, and its codebook's Adagrad sums.

    Args:
        raw_ids: ``(n,)`` raw ids of codes ``1..n``.
        codes: ``V + 1``, the size of the mask array (codes not seen yet read as zero).
        table: float32 ``(n, dim)`` trained rows of codes ``1..n``.
        acc: float32 ``(n, dim)`` their Adagrad squared-gradient sums.
        counts: int64 ``(n,)`` their frequencies so far.

    Returns ``(None, None, None)`` when the field is left as it is.
    """
    n = len(table)
    if n < settings.min_rows:
        return None, None, None
    if variant.budget not in BUDGETS:
        raise ValueError(f"variant budget must be one of {BUDGETS}, found {variant.budget!r}")
    before = memory.uncompressed(n, dim)
    index = index_bytes(name, raw_ids)
    masks = np.full(codes, -1, dtype=np.int64)
    if variant.kind == "saec":
        # min_factor=0: the size rule was applied above (settings.min_rows).
        result = compress_field(
            np.ascontiguousarray(table), counts, k=settings.k, init=variant.init,
            top_n=settings.top_n if variant.fast else None, min_factor=0,
            seed=settings.seed, private_rows=_private_rows(variant, settings),
            weight_by_count=variant.weighted, subvectors=variant.subvectors, stages=variant.stages, field=name,
        )
        if isinstance(result, ResidualField):
            s, k = result.stages, settings.k
            rmasks = np.full((codes, s), -1, dtype=np.int64)
            rmasks[1 : n + 1] = result.masks
            rmodule = ResidualEmbedding(result.codebooks, rmasks, grad_mode=variant.grad_mode, codebook_dtype=variant.codebook_dtype)
            # Every stage's rows start from the mean Adagrad sum of their members, as a centroid does.
            acc_new = np.concatenate([_group_mean(acc, result.masks[:, j].astype(np.int64), k) for j in range(s)])
            after = memory.residual(n, s, k, dim, index, _value_bytes(variant))
            return rmodule, FieldOutcome(name, n, s * k, before, after, True, result.seconds, result.inertia), acc_new
        if isinstance(result, ProductField):
            m, k = result.subvectors, settings.k + result.private_rows
            pmasks = np.full((codes, m), -1, dtype=np.int64)
            pmasks[1 : n + 1] = result.masks
            pmodule = ProductEmbedding(result.codebooks, pmasks, grad_mode=variant.grad_mode)
            width = dim // m
            acc_new = np.concatenate([
                _group_mean(np.ascontiguousarray(acc[:, j * width : (j + 1) * width]), result.masks[:, j].astype(np.int64), k)
                for j in range(m)
            ])
            after = memory.product(n, m, k, dim, index)
            return pmodule, FieldOutcome(name, n, m * k, before, after, True, result.seconds, result.inertia), acc_new
        if not isinstance(result, CompressedField):
            return None, None, None
        masks[1 : n + 1] = result.masks
        k = len(result.codebook)
        module = CompressedEmbedding(result.codebook, masks, grad_mode=variant.grad_mode)
        outcome = FieldOutcome(name, n, k, before, memory.codebook(n, k, dim, index), True, result.seconds, result.inertia)
        return module, outcome, _group_mean(acc, result.masks.astype(np.int64), k)
    if variant.stages > 1:
        saec_bytes = memory.residual(n, variant.stages, settings.k, dim, index, _value_bytes(variant))
    elif variant.subvectors > 1:
        saec_bytes = memory.product(n, variant.subvectors, settings.k + min(_private_rows(variant, settings), n - settings.k), dim, index)
    else:
        saec_bytes = memory.codebook(n, settings.rows(n), dim, index)
    if variant.kind == "hash":
        budget = saec_bytes.keyed if variant.budget == "keyed" else saec_bytes.paper
        rows = settings.k if variant.budget == "k" else memory.hashed_rows_for(budget, dim)
        buckets = _buckets(name, raw_ids, rows)
        masks[1 : n + 1] = buckets
        module = CompressedEmbedding(_group_mean(table, buckets, rows), masks, grad_mode="sum")
        return module, FieldOutcome(name, n, rows, before, memory.hashed(rows, dim), True), _group_mean(acc, buckets, rows)
    if variant.kind == "threshold":
        # Most frequent first; among equal counts the earlier-seen feature (lower code) wins.
        order = np.argsort(-counts, kind="stable")
        rows, kept_index = _threshold_rows(variant.budget, name, raw_ids[order], saec_bytes, settings.k, dim)
        kept = order[:rows]
        masks[1 + kept] = np.arange(rows)
        module = CompressedEmbedding(table[kept], masks, grad_mode="sum")
        return module, FieldOutcome(name, n, rows, before, memory.threshold(rows, dim, kept_index), True), acc[kept]
    if variant.kind in ("int8", "float16"):
        # The rows go on training in float32 and are rounded after the pass (Built.as_stored).
        full = np.zeros((codes, dim), dtype=np.float32)
        full[1 : n + 1] = table
        acc_full = np.zeros((codes, dim), dtype=np.float32)
        acc_full[1 : n + 1] = acc
        after = memory.int8(n, dim, index) if variant.kind == "int8" else memory.float16(n, dim, index)
        rows_module = StoredRows(torch.from_numpy(full), variant.kind)
        return rows_module, FieldOutcome(name, n, n, before, after, True), acc_full
    raise ValueError(f"variant kind must be one of {KINDS}, found {variant.kind!r}")


def _value_bytes(variant: Variant) -> int:
    """Bytes a stored codebook value of ``variant`` takes."""
    if variant.codebook_dtype not in ("float32", "float16"):
        raise ValueError(f"variant codebook_dtype must be 'float32' or 'float16', found {variant.codebook_dtype!r}")
    return 2 if variant.codebook_dtype == "float16" else memory.FLOAT_BYTES


def _private_rows(variant: Variant, settings: CompressSettings) -> int:
    """The frequency head of ``variant``: a product or residual quantiser's own (none unless it says),
    a one-codebook Saec's from the data set's settings."""
    if variant.subvectors > 1 or variant.stages > 1:
        return variant.private_rows or 0
    return settings.private_rows


def index_bytes(name: str, raw_ids: npt.NDArray) -> int:
    """Bytes of the store's key index over ``raw_ids`` of field ``name`` (built, not estimated)."""
    if len(raw_ids) == 0:
        return 0
    return keyindex.build(hash_ids(raw_ids, name)).index.nbytes


def _threshold_rows(budget: str, name: str, by_count: npt.NDArray, saec: memory.Bytes, k: int, dim: int) -> tuple[int, int]:
    """How many of the most frequent features a threshold keeps, and their key index's bytes.

    Args:
        budget: "k", "keyed" (rows plus key index within Saec's keyed bytes) or "paper"
            (rows within Saec's bytes with keys excluded).
        by_count: ``(n,)`` raw ids, most frequent first.
    """
    n, row = len(by_count), memory.FLOAT_BYTES * dim
    if budget == "k":
        rows = min(n, k)
    elif budget == "paper":
        rows = min(n, max(1, saec.paper // row))
    else:
        # An index costs at least its 2-byte fingerprint a key: start above the answer and
        # step down by the overshoot until rows plus index fit.
        rows = min(n, max(1, saec.keyed // (row + 2)))
        while rows > 1:
            over = index_bytes(name, by_count[:rows]) + rows * row - saec.keyed
            if over <= 0:
                break
            rows = max(1, rows - math.ceil(over / (row + 2)))
    return rows, index_bytes(name, by_count[:rows])


def _buckets(name: str, raw_ids: npt.NDArray, rows: int) -> npt.NDArray[np.int64]:
    """int64 ``(n,)`` bucket of each raw id: the serving key modulo ``rows``."""
    return (hash_ids(raw_ids, name) % np.uint64(rows)).astype(np.int64)


def _group_mean(values: npt.NDArray[np.float32], groups: npt.NDArray[np.int64], k: int) -> npt.NDArray[np.float32]:
    """float32 ``(k, dim)``: mean of ``values`` rows per group; 0 for an empty group."""
    v = torch.from_numpy(np.ascontiguousarray(values, dtype=np.float32))
    g = torch.from_numpy(np.ascontiguousarray(groups, dtype=np.int64))
    total = torch.zeros(k, v.shape[1]).index_add_(0, g, v)
    n = torch.bincount(g, minlength=k).clamp(min=1).unsqueeze(1)
    return (total / n).numpy()


def _unchanged(log: ClickLog, f: int, end: int, dim: int) -> FieldOutcome:
    n = int(log.live(f)[end])
    b = memory.uncompressed(n, dim)
    return FieldOutcome(log.fields[f].name, n, n, b, b, False)

