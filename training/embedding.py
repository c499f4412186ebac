"""Field embeddings: the retrainable compressed field and the ordinary dense one.

Both map int64 feature codes of any shape to float32 vectors of shape ``codes.shape + (dim,)``.
Code 0 is "no feature" (padding, missing, or a feature the table does not hold) and always
reads as the zero vector, which is also what the store's lookup engine returns for an
unknown key with ``default="zeros"``.

Gradient averaging (paper section 2.3): "In backpropagation, each feature gets its own
gradient. Saec then collects the gradients from features in the same cluster according to
their mask and average them." We read "each feature gets its own gradient" as the gradient
an uncompressed embedding row would get, i.e. the sum over that feature's occurrences in the
batch, and average those per-feature gradients over the *distinct* features of the cluster
present in the batch (``"feature"`` mode, the default). Averaging per occurrence instead
(``"occurrence"``) would make the paper's "each feature gets its own gradient" step
meaningless, and a plain sum (``"sum"``, what tied weights give, and the hashing trick's
update) scales a centroid's step with the number of its members in the batch. The two
alternatives are kept for the ablation in the report.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import numpy.typing as npt
import torch
from torch import nn

GradMode = Literal["feature", "occurrence", "sum"]
GRAD_MODES: tuple[str, ...] = ("feature", "occurrence", "sum")


class _CentroidGather(torch.autograd.Function):
    """Forward: ``codebook[masks[codes]]`` (zero where the mask is -1).

    Backward: the codebook gradient collected per centroid according to ``mode``.
    """

    @staticmethod
    def forward(ctx, codebook: torch.Tensor, codes: torch.Tensor, masks: torch.Tensor, mode: str) -> torch.Tensor:
        cent = masks[codes]
        valid = cent >= 0
        # where(), not a product with the mask: 0 * negative is -0.0, and the store's zero
        # default is +0.0, which must match bit for bit.
        out = torch.where(valid.unsqueeze(-1), codebook[cent.clamp(min=0)], torch.zeros((), dtype=codebook.dtype))
        ctx.save_for_backward(codes, masks)
        ctx.mode = mode
        ctx.k = codebook.shape[0]
        return out

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        codes, masks = ctx.saved_tensors
        k, dim = ctx.k, grad_out.shape[-1]
        flat_codes = codes.reshape(-1)
        flat_grad = grad_out.reshape(-1, dim)
        cent = masks[flat_codes]
        valid = cent >= 0
        flat_codes, flat_grad, cent = flat_codes[valid], flat_grad[valid], cent[valid]
        grad = torch.zeros(k, dim, dtype=grad_out.dtype)
        members: torch.Tensor | None
        if ctx.mode == "feature":
            # Each feature's own gradient: the sum over its occurrences, as an embedding row gets.
            uniq, inverse = torch.unique(flat_codes, return_inverse=True)
            per_feature = torch.zeros(len(uniq), dim, dtype=grad_out.dtype).index_add_(0, inverse, flat_grad)
            uniq_cent = masks[uniq]
            grad.index_add_(0, uniq_cent, per_feature)
            members = torch.bincount(uniq_cent, minlength=k)
        else:
            grad.index_add_(0, cent, flat_grad)
            members = torch.bincount(cent, minlength=k) if ctx.mode == "occurrence" else None
        if members is not None:
            grad /= members.clamp(min=1).unsqueeze(1).to(grad.dtype)
        return grad, None, None, None


class CompressedEmbedding(nn.Module):
    """A compressed field: a trainable codebook and a fixed mask per feature.

    Args:
        codebook: float32 ``(k, dim)``; becomes the trainable parameter ``codebook``.
        masks: integer ``(V + 1,)``: centroid of each code, -1 for codes that read as zero.
            Entry 0 (no feature) is forced to -1. Kept as an int64 buffer (uint8/uint16
            masks from :func:`compress.compress_field` are widened because torch indexes
            with int64).
        grad_mode: how a centroid's gradient is formed from its members' (module docstring).
    """

    def __init__(self, codebook: npt.NDArray[np.float32] | torch.Tensor, masks: npt.NDArray[np.integer] | torch.Tensor, grad_mode: GradMode = "feature") -> None:
        super().__init__()
        if grad_mode not in GRAD_MODES:
            raise ValueError(f"grad_mode must be one of {GRAD_MODES}, found {grad_mode!r}")
        cb = torch.as_tensor(np.asarray(codebook, dtype=np.float32)).clone()
        m = torch.as_tensor(np.asarray(masks, dtype=np.int64)).clone()
        if m.ndim != 1 or cb.ndim != 2:
            raise ValueError(f"expected codebook (k, dim) and masks (V + 1,), found {tuple(cb.shape)} and {tuple(m.shape)}")
        if m.numel() and (int(m.max()) >= cb.shape[0] or int(m.min()) < -1):
            raise ValueError(f"masks must lie in [-1, {cb.shape[0] - 1}], found [{int(m.min())}, {int(m.max())}]")
        m[0] = -1
        self.codebook = nn.Parameter(cb)
        self.masks: torch.Tensor
        self.register_buffer("masks", m)
        self.grad_mode = grad_mode

    @property
    def dim(self) -> int:
        return self.codebook.shape[1]

    def forward(self, codes: torch.Tensor) -> torch.Tensor:
        """float32 ``codes.shape + (dim,)`` for int64 ``codes``."""
        return _CentroidGather.apply(self.codebook, codes, self.masks, self.grad_mode)

    def table(self) -> npt.NDArray[np.float32]:
        """float32 ``(V + 1, dim)``: the vector every code reads as (row 0 is zero)."""
        with torch.no_grad():
            return self.forward(torch.arange(len(self.masks))).numpy()


class ProductEmbedding(nn.Module):
    """A product-quantised field: M compressed slices whose vectors are concatenated.

    Slice m is a :class:`CompressedEmbedding` of length ``dim / M`` with its own codebook
    and masks, retrained with the same gradient averaging; a code's vector is its M slices
    side by side, as :meth:`compress.ProductField.vectors` builds it.

    Args:
        codebooks: float32 ``(M, k, dim / M)``.
        masks: integer ``(V + 1, M)``: each code's row in each slice, -1 where it reads as zero.
        grad_mode: as :class:`CompressedEmbedding`.
    """

    def __init__(self, codebooks: npt.NDArray[np.float32], masks: npt.NDArray[np.integer], grad_mode: GradMode = "feature") -> None:
        super().__init__()
        if codebooks.ndim != 3 or masks.ndim != 2 or masks.shape[1] != codebooks.shape[0]:
            raise ValueError(f"expected codebooks (M, k, dim / M) and masks (V + 1, M), found {codebooks.shape} and {masks.shape}")
        self.parts = nn.ModuleList([CompressedEmbedding(codebooks[m], masks[:, m], grad_mode) for m in range(codebooks.shape[0])])
        self.grad_mode = grad_mode

    def slices(self) -> list[CompressedEmbedding]:
        """The M slices, in order."""
        return [p for p in self.parts if isinstance(p, CompressedEmbedding)]

    @property
    def dim(self) -> int:
        return sum(p.dim for p in self.slices())

    def forward(self, codes: torch.Tensor) -> torch.Tensor:
        """float32 ``codes.shape + (dim,)`` for int64 ``codes``."""
        return torch.cat([p(codes) for p in self.slices()], dim=-1)

    def table(self) -> npt.NDArray[np.float32]:
        """float32 ``(V + 1, dim)``: the vector every code reads as (row 0 is zero)."""
        return np.concatenate([p.table() for p in self.slices()], axis=1)


class ResidualEmbedding(nn.Module):
    """A residual-quantised field: S compressed stages whose vectors are added.

    Stage s is a :class:`CompressedEmbedding` over the whole vector with its own codebook
    and masks, retrained with the same gradient averaging (every stage gets the gradient
    of the sum); a code's vector is its S rows added in stage order, in float32, as
    :meth:`compress.ResidualField.vectors` and the store's kernel add them.

    Args:
        codebooks: float32 ``(S, k, dim)``.
        masks: integer ``(V + 1, S)``: each code's row in each stage, -1 where it reads as zero.
        grad_mode: as :class:`CompressedEmbedding`.
        codebook_dtype: how the store keeps the codebooks, "float32" or "float16";
            :meth:`round_to_stored` makes the model read what would be served.
    """

    def __init__(self, codebooks: npt.NDArray[np.float32], masks: npt.NDArray[np.integer], grad_mode: GradMode = "feature",
                 codebook_dtype: str = "float32") -> None:
        super().__init__()
        if codebooks.ndim != 3 or masks.ndim != 2 or masks.shape[1] != codebooks.shape[0]:
            raise ValueError(f"expected codebooks (S, k, dim) and masks (V + 1, S), found {codebooks.shape} and {masks.shape}")
        if codebook_dtype not in ("float32", "float16"):
            raise ValueError(f"codebook_dtype must be 'float32' or 'float16', found {codebook_dtype!r}")
        self.parts = nn.ModuleList([CompressedEmbedding(codebooks[s], masks[:, s], grad_mode) for s in range(codebooks.shape[0])])
        self.grad_mode = grad_mode
        self.codebook_dtype = codebook_dtype

    @torch.no_grad()
    def round_to_stored(self) -> None:
        """Round every stage's codebook to the stored dtype (training runs in float32)."""
        if self.codebook_dtype == "float16":
            for stage in self.stages():
                stage.codebook.copy_(stage.codebook.to(torch.float16).to(torch.float32))

    def stages(self) -> list[CompressedEmbedding]:
        """The S stages, in order."""
        return [p for p in self.parts if isinstance(p, CompressedEmbedding)]

    @property
    def dim(self) -> int:
        return self.stages()[0].dim

    def forward(self, codes: torch.Tensor) -> torch.Tensor:
        """float32 ``codes.shape + (dim,)`` for int64 ``codes``."""
        stages = self.stages()
        out = stages[0](codes)
        for stage in stages[1:]:
            out = out + stage(codes)
        return out

    def table(self) -> npt.NDArray[np.float32]:
        """float32 ``(V + 1, dim)``: the vector every code reads as (row 0 is zero)."""
        with torch.no_grad():
            return self.forward(torch.arange(len(self.stages()[0].masks))).numpy()


class StoredRows(nn.Embedding):
    """A dense field the store keeps as float16 or int8 rows.

    It trains in float32 like any embedding (sparse gradients, row 0 the zero "no
    feature" row); :meth:`round_to_stored` then rounds every row to what the store serves:
    float16, or the store's 8-bit row-wise form (``store.writer.quantise_rowwise_8bit``).

    Args:
        weight: float32 ``(V + 1, dim)`` initial rows.
        stored: "float16" or "int8".
    """

    def __init__(self, weight: torch.Tensor, stored: str) -> None:
        if stored not in ("float16", "int8"):
            raise ValueError(f"stored must be 'float16' or 'int8', found {stored!r}")
        super().__init__(weight.shape[0], weight.shape[1], padding_idx=0, sparse=True, _weight=weight)
        self.stored = stored

    @torch.no_grad()
    def round_to_stored(self) -> None:
        """Round every row to the stored form (call after retraining)."""
        from saec.store.writer import dequantise_rowwise_8bit, quantise_rowwise_8bit

        w = self.weight.numpy()
        if self.stored == "float16":
            rounded = w.astype(np.float16).astype(np.float32)
        else:
            rounded = dequantise_rowwise_8bit(*quantise_rowwise_8bit(np.ascontiguousarray(w)))
        rounded[0] = 0.0
        self.weight.copy_(torch.from_numpy(rounded))


def dense_embedding(vectors: npt.NDArray[np.float32] | int, dim: int | None = None) -> nn.Embedding:
    """An ordinary embedding whose row 0 is the fixed zero "no feature" vector.

    Args:
        vectors: float32 ``(V + 1, dim)`` initial rows (row 0 is zeroed), or ``V + 1`` to
            initialise ``N(0, 0.05^2)``; 0.05 keeps the first layer's input small enough that
            Adagrad's first large steps do not saturate the ReLUs.
        dim: embedding length when ``vectors`` is a row count.

    Sparse gradients: Adagrad then touches only the rows in the batch, which is what makes a
    pass over a table of 10^5-10^6 rows cost milliseconds instead of a full-table update.
    """
    if isinstance(vectors, int):
        if dim is None:
            raise ValueError("dim is required when vectors is a row count")
        emb = nn.Embedding(vectors, dim, padding_idx=0, sparse=True)
        with torch.no_grad():
            emb.weight.normal_(0.0, 0.05)
            emb.weight[0] = 0.0
        return emb
    w = torch.as_tensor(np.asarray(vectors, dtype=np.float32)).clone()
    w[0] = 0.0
    return nn.Embedding.from_pretrained(w, freeze=False, padding_idx=0, sparse=True)


def field_table(module: nn.Module) -> npt.NDArray[np.float32]:
    """float32 ``(V + 1, dim)``: the vector each code of a field module reads as."""
    if isinstance(module, (CompressedEmbedding, ProductEmbedding, ResidualEmbedding)):
        return module.table()
    if isinstance(module, nn.Embedding):
        return module.weight.detach().numpy().copy()
    raise TypeError(f"expected CompressedEmbedding, ProductEmbedding, ResidualEmbedding or nn.Embedding, found {type(module).__name__}")
