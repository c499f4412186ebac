"""Serving the retrained model: the store returns exactly the vectors the model used."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

pytest.importorskip("torch")

from saec.store.engine import LookupEngine
from saec.store.hashing import hash_ids
from saec.store.keyindex import FINGERPRINT_BITS, bucket_bits_for
from saec.store.snapshot import open_current
from saec.training.embedding import CompressedEmbedding, ProductEmbedding
from saec.training.model import ModelConfig
from saec.training.publish import model_vectors, publish_model
from saec.training.trainer import Trainer, live_at
from saec.training.variants import CompressSettings, Variant, build


def _served_code(query: npt.NDArray[np.uint64], keys: npt.NDArray[np.uint64], codes: npt.NDArray[np.int64], counts: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
    """For each query key, the code whose row the store serves (0: not found).

    The store's key index keeps only ``bucket_bits + 16`` bits of a key (``store.keyindex``):
    stored keys agreeing on them are aliased and all read the most frequent one's row (the
    lowest key on a tie), and an absent key agreeing with a stored one reads that row too.

    Args:
        query: uint64 keys looked up.
        keys, codes, counts: the stored features' keys, codes and frequencies.
    """
    shift = np.uint64(64 - bucket_bits_for(len(keys)) - FINGERPRINT_BITS)
    prefix = keys >> shift
    order = np.lexsort((keys, -counts, prefix))
    first = np.ones(len(keys), dtype=bool)
    first[1:] = prefix[order][1:] != prefix[order][:-1]
    winners = order[first]
    pos = np.searchsorted(prefix[winners], query >> shift).clip(max=len(winners) - 1)
    hit = prefix[winners][pos] == query >> shift
    return np.where(hit, codes[winners][pos], 0)


@pytest.mark.parametrize("kind", ["saec", "threshold", "product"])
def test_lookup_engine_returns_the_models_vectors_bitwise(stream, tmp_path: Path, kind: str) -> None:
    cfg = ModelConfig(dim=8, hidden=(16,), lr=0.1, batch=512)
    base = Trainer.new([f.size + 1 for f in stream.fields], cfg, seed=0)
    for s in range(5):
        base.train_segment(stream, s)
    variant = Variant(kind, "saec", subvectors=2) if kind == "product" else Variant(kind, kind)
    built = build(variant, base, stream, 5, CompressSettings(k=16, min_factor=10, top_n=200))
    built.trainer.train_segment(stream, 4)  # retrain: the codebooks move away from k-means
    model = built.trainer.model
    assert isinstance(model.fields[0], ProductEmbedding if kind == "product" else CompressedEmbedding)
    if kind == "product":
        assert open_current_kind(model, stream, tmp_path) == (3, "product")
    live = live_at(stream, 5)
    counts = [stream.counts(f, 5) for f in range(len(stream.fields))]

    version = publish_model(model, stream, live, tmp_path / "store", source="test", counts=counts)
    engine = LookupEngine(open_current(tmp_path / "store"), default="zeros")
    assert engine.version == version

    aliased_total = 0
    for f, fld in enumerate(stream.fields):
        seen = np.arange(1, live[f] + 1)
        unseen = np.arange(live[f] + 1, min(live[f] + 3, fld.size + 1))
        keys = hash_ids(fld.vocab[np.concatenate([seen, unseen])], fld.name)
        result = engine.lookup({fld.name: keys}).fields[fld.name]
        assert result.vectors.dtype == np.float32

        # Features the model reads as zero (dropped by the threshold) are not in the snapshot.
        module = model.fields[f]
        held = seen if not isinstance(module, CompressedEmbedding) else seen[module.masks.numpy()[seen] >= 0]
        served = _served_code(keys, keys[held - 1], held, counts[f][held])
        want = model_vectors(model, f, served)  # code 0 reads as the zero vector, as "zeros" does
        assert result.vectors.tobytes() == want.tobytes(), fld.name
        np.testing.assert_array_equal(result.found, served > 0)
        # Wherever the store holds the key itself, the vector is the model's own, bit for bit.
        queried = np.concatenate([seen, unseen])
        own = served == queried
        assert result.vectors[own].tobytes() == model_vectors(model, f, queried[own]).tobytes()
        assert own[held - 1].sum() == len(held) - engine.field(fld.name).aliased
        aliased_total += int((~own & (served > 0)).sum())
    # Aliases and false matches are rare: about n / 2**17 per key at these sizes.
    assert aliased_total <= 3


def open_current_kind(model, log, tmp_path: Path) -> tuple[int, str]:
    """Format version and the first field's kind of the model published into a scratch store."""
    publish_model(model, log, live_at(log, 5), tmp_path / "scratch")
    snap = open_current(tmp_path / "scratch")
    return snap.format_version, snap.fields[log.fields[0].name].kind
