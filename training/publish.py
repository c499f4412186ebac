"""Publishing a retrained model's embeddings as a store snapshot, for serving.

A compressed field goes in as its retrained codebook and masks, a product-quantised one
as its retrained sub-codebooks and masks (format version 3), a residual-quantised one as
its retrained stage codebooks and masks (format version 4), a dense field as its rows; the keys are ``store.hashing.hash_ids(raw ids, field)``, so a ranking service that
hashes the same raw ids reads, through ``store.engine.LookupEngine``, exactly the float32
vectors the model used. Features the model reads as zero (not seen, or dropped by a
frequency threshold) are left out of the snapshot, and the engine's ``default="zeros"``
gives them the same zero vector.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt
import torch

from saec.store.hashing import hash_ids
from saec.store.writer import SnapshotWriter
from saec.training.data import ClickLog
from saec.training.embedding import CompressedEmbedding, ProductEmbedding, ResidualEmbedding, field_table
from saec.training.model import CTRModel


def publish_model(model: CTRModel, log: ClickLog, live: Sequence[int], store: str | os.PathLike[str], source: str = "", counts: Sequence[npt.NDArray[np.int64]] | None = None) -> str:
    """Write every field of ``model`` into a new snapshot of ``store`` and make it current.

    Args:
        model: a trained model whose field ``f`` holds codes ``1..V_f`` of ``log.fields[f]``.
        log: the click log the codes come from (for the raw ids).
        live: per field, the features the model has seen (codes ``1..live[f]``).
        store: the store directory.
        source: a note kept in the manifest.
        counts: per field, int64 ``(V + 1,)`` frequencies (index = code), kept for the next
            compression run; None leaves them out.

    Returns:
        The published snapshot version.
    """
    with SnapshotWriter(store, source=source) as writer:
        for f, (fld, module) in enumerate(zip(log.fields, model.fields, strict=True)):
            n = int(live[f])
            keys = hash_ids(fld.vocab[1 : n + 1], fld.name)
            c = None if counts is None else counts[f][1 : n + 1]
            if isinstance(module, CompressedEmbedding):
                masks = module.masks[1 : n + 1].numpy()
                held = masks >= 0
                codebook = module.codebook.detach().numpy()
                writer.add_compressed_field(
                    fld.name, keys[held], codebook, masks[held], None if c is None else c[held],
                    attrs={"grad_mode": module.grad_mode, "features_seen": n},
                )
            elif isinstance(module, (ProductEmbedding, ResidualEmbedding)):
                # M slices or S stages: one mask column and one codebook a part.
                parts = module.slices() if isinstance(module, ProductEmbedding) else module.stages()
                pmasks = np.stack([p.masks[1 : n + 1].numpy() for p in parts], axis=1)
                held = (pmasks >= 0).all(axis=1)
                codebooks = np.stack([p.codebook.detach().numpy() for p in parts])
                args = (fld.name, keys[held], codebooks, pmasks[held], None if c is None else c[held])
                attrs = {"grad_mode": module.grad_mode, "features_seen": n}
                if isinstance(module, ProductEmbedding):
                    writer.add_product_field(*args, attrs=attrs)
                else:
                    writer.add_residual_field(*args, attrs=attrs, codebook_dtype=module.codebook_dtype)
            else:
                writer.add_dense_field(fld.name, keys, field_table(module)[1 : n + 1], c, attrs={"features_seen": n})
        return writer.publish()


@torch.no_grad()
def model_vectors(model: CTRModel, f: int, codes: npt.NDArray[np.int64]) -> npt.NDArray[np.float32]:
    """float32 ``(len(codes), dim)``: the vectors field ``f`` of ``model`` reads for int64 ``codes``."""
    return model.fields[f](torch.from_numpy(np.asarray(codes, dtype=np.int64))).numpy()
