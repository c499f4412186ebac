"""Targeted runs of the ways to close Saec's AUC gap, at equal bytes, without the full report.

    python -m bench.candidates --pq 2x64,2x128,4x32 --weighted --equal-bytes
    python -m bench.candidates --per-field item=128,user=16,zip_code=16 --reassign
    python -m bench.candidates --data stream --seeds 0,1,2 --pq 2x256,u2x256 --equal-bytes

Each run follows the report's protocol (``training.protocol``) on the reported checkpoints
with the baseline configuration and retraining scales ``python -m saec.training.evaluate``
tuned (bench/results/evaluate/report.md), so one candidate costs minutes instead of the
report's 50. Every ΔAUC is paired with "baseline + retraining pass" of the same seed and
checkpoint, averaged over checkpoints per seed, then mean ± standard deviation over seeds.

Candidates:

- ``--weighted``: Saec with count-weighted k-means (``compress_field(weight_by_count=True)``).
- ``--pq MxK[,..]``: product quantisation, M slices of K rows (``subvectors=M``); a ``u``
  prefix turns count weighting off, ``+H`` adds a frequency head of H private rows
  (``2x200+56``: 200 shared and 56 private rows a slice, still one byte a mask), ``@N`` sets top_n. ``--equal-bytes`` adds the hashing
  trick and the frequency threshold sized to each product quantiser's bytes with keys.
- ``--per-field F=K[+H],..``: a k (and a frequency head of H private rows) per field instead
  of one k for all, e.g. more rows where the loss concentrates.
- ``--rq SxK[,..]``: residual quantisation (``compress_field(stages=S)``), S count-weighted
  codebooks of K rows over the whole vector, each fitted to what the earlier stages left;
  a feature reads the sum of its S rows, S mask bytes; ``SxK/f16`` keeps the codebooks in
  float16 (rounded after retraining, counted at 2 bytes a value). ``--equal-bytes`` sizes
  the hashing trick and the frequency threshold to it too.
- ``--only F[,..]``: every candidate compresses only these fields, to see where a loss comes from.
- ``--reassign``: after Saec's retraining pass, each feature moves to the retrained centroid
  nearest its own trained vector (the uncompressed model's row after the same pass, which
  the protocol trains anyway), then once more with a second retraining pass, against a
  control given two passes too. Serving memory is Saec's; training holds the full table.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import os
import time
from collections import defaultdict
from collections.abc import Callable, Sequence

import numpy as np
import torch

from saec.compress import CompressedField, compress_field, nearest_centroid
from saec.training import memory
from saec.training.data import ClickLog
from saec.training.embedding import CompressedEmbedding
from saec.training.model import ModelConfig
from saec.training.trainer import Trainer, adagrad, live_at
from saec.training.variants import (
    Built,
    CompressSettings,
    FieldOutcome,
    Footprint,
    Variant,
    _group_mean,
    build,
    index_bytes,
)


@dataclasses.dataclass(frozen=True)
class Setup:
    log: Callable[[], ClickLog]
    config: ModelConfig
    settings: CompressSettings
    checkpoints: tuple[int, ...]
    scale: float  # Saec's and the control's retraining scale
    threshold_scale: float
    hash_scale: float


def _movielens() -> Setup:
    from saec.training.movielens import load_movielens_100k

    return Setup(load_movielens_100k, ModelConfig(dim=8, lr=0.03, passes=2, batch=256), CompressSettings(k=32, min_factor=8, top_n=512),
                 tuple(range(10, 20)), 0.1, 0.1, 0.3)


def _stream() -> Setup:
    from saec.training.stream import StreamSpec, generate_stream

    return Setup(lambda: generate_stream(StreamSpec()), ModelConfig(dim=16, lr=0.1, passes=1, batch=1024),
                 CompressSettings(k=100, min_factor=100, top_n=20_000, private_rows=156), tuple(range(12, 24)), 0.03, 0.1, 1.0)


def per_field_build(alloc: dict[str, tuple[int, int]], base: Trainer, log: ClickLog, end: int, settings: CompressSettings,
                    lr_scale: float) -> Built:
    """Saec with k and private rows chosen per field (``alloc``: name -> (k, private rows)).

    Fields not named keep the data set's settings; the size rule is the data set's.
    """
    model = copy.deepcopy(base.model)
    params = list(model.mlp.parameters())
    sums = [base.state_sum(p) for p in base.model.mlp.parameters()]
    outcomes = []
    dim = base.model.config.dim
    for f, fld in enumerate(log.fields):
        n = int(log.live(f)[end])
        old = base.model.fields[f]
        assert isinstance(old, torch.nn.Embedding)
        before = memory.uncompressed(n, dim)
        if n < settings.min_rows:
            params.append(model.fields[f].weight)
            sums.append(base.state_sum(old.weight))
            outcomes.append(FieldOutcome(fld.name, n, n, before, before, False))
            continue
        k, head = alloc.get(fld.name, (settings.k, settings.private_rows))
        table = np.ascontiguousarray(old.weight.detach().numpy()[1 : n + 1])
        acc = base.state_sum(old.weight).numpy()[1 : n + 1]
        result = compress_field(table, log.counts(f, end)[1 : n + 1], k=k, top_n=max(k, settings.top_n * k // settings.k),
                                min_factor=0, seed=settings.seed, private_rows=head, field=fld.name)
        assert isinstance(result, CompressedField)
        masks = np.full(len(fld.vocab), -1, dtype=np.int64)
        labels = result.masks.astype(np.int64)
        masks[1 : n + 1] = labels
        rows = len(result.codebook)
        module = CompressedEmbedding(result.codebook, masks)
        model.fields[f] = module
        params.append(module.codebook)
        # A centroid starts from the mean Adagrad sum of its members, as in training.variants.
        sums.append(torch.from_numpy(_group_mean(acc, labels, rows)))
        after = memory.codebook(n, rows, dim, index_bytes(fld.name, fld.vocab[1 : n + 1]))
        outcomes.append(FieldOutcome(fld.name, n, rows, before, after, True))
    trainer = Trainer(model, adagrad(params, base.model.config.lr * lr_scale, sums), settings.seed)
    trainer.rng = copy.deepcopy(base.rng)
    return Built(trainer, Footprint(outcomes))


def reassign(saec: Built, control: Built, live: Sequence[int]) -> int:
    """Move each compressed feature to the retrained centroid nearest its own trained vector.

    Returns how many features moved. A feature moves only when the new centroid is strictly
    nearer its own vector, so no reassigned feature's quantisation error grows.
    """
    moved = 0
    for f, module in enumerate(saec.trainer.model.fields):
        if not isinstance(module, CompressedEmbedding):
            continue
        n = live[f]
        own = np.ascontiguousarray(control.trainer.model.fields[f].weight.detach().numpy()[1 : n + 1])
        codebook = np.ascontiguousarray(module.codebook.detach().numpy())
        old = module.masks.numpy()[1 : n + 1].copy()
        held = old >= 0
        new, _ = nearest_centroid(own, codebook)
        new = new.astype(np.int64)
        d_old = np.square(own - codebook[old.clip(min=0)]).sum(axis=1)
        d_new = np.square(own - codebook[new]).sum(axis=1)
        better = held & (d_new < d_old)
        moved += int(better.sum())
        with torch.no_grad():
            module.masks[1 : n + 1] = torch.from_numpy(np.where(better, new, old))
    return moved


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", choices=["ml-100k", "stream"], default="ml-100k")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--weighted", action="store_true")
    ap.add_argument("--pq", default="")
    ap.add_argument("--pq-scales", dest="pq_scales", default="",
                    help="retraining scales to try for each product quantiser (default: the data set's Saec scale)")
    ap.add_argument("--equal-bytes", dest="equal_bytes", action="store_true")
    ap.add_argument("--per-field", dest="per_field", action="append", default=[])
    ap.add_argument("--reassign", action="store_true")
    ap.add_argument("--rq", default="", help="residual quantisers SxK: S stages of K rows, summed (training only)")
    ap.add_argument("--only", default="", help="compress only these fields (comma-separated): one field's share of the loss")
    a = ap.parse_args(argv)
    torch.set_num_threads(1)
    setup = _movielens() if a.data == "ml-100k" else _stream()
    log = setup.log()
    sc = setup.scale
    scales = [float(x) for x in a.pq_scales.split(",")] if a.pq_scales else [sc]
    variants = [Variant("baseline + retraining pass", "retrain", lr_scale=sc), Variant("Saec", "saec", lr_scale=sc)]
    if a.weighted:
        variants.append(Variant("Saec, count-weighted", "saec", weighted=True, lr_scale=sc))
    for spec in filter(None, a.pq.split(",")):
        body, _, top = spec.partition("@")
        weighted = not body.startswith("u")
        m_text, _, kh = body.lstrip("u").partition("x")
        k_text, _, h_text = kh.partition("+")
        m, k, h = int(m_text), int(k_text), int(h_text or 0)
        top_n = int(top) if top else (setup.settings.top_n * k // setup.settings.k if a.data == "ml-100k" else None)
        head = f" + {h} private" if h else ""
        label = f"product {m}x{k}{head}{'' if weighted else ' unweighted'}{f' top_n {top}' if top else ''}"
        for pq_scale in scales:
            named = label if pq_scale == sc else f"{label}, retraining scale {pq_scale:g}"
            variants.append(Variant(named, "saec", subvectors=m, k=k, private_rows=h, weighted=weighted, top_n=top_n, lr_scale=pq_scale))
        if a.equal_bytes:
            variants += [Variant(f"threshold at {label}'s bytes", "threshold", subvectors=m, k=k, private_rows=h, lr_scale=setup.threshold_scale),
                         Variant(f"hash at {label}'s bytes", "hash", subvectors=m, k=k, private_rows=h, lr_scale=setup.hash_scale)]
    allocs = {}
    for spec in a.per_field:
        alloc = {}
        for item in spec.split(","):
            name, _, kh = item.partition("=")
            k, _, h = kh.partition("+")
            alloc[name] = (int(k), int(h or 0))
        allocs[f"per-field {spec}"] = alloc
    for spec in filter(None, a.rq.split(",")):
        body, _, dtype = spec.partition("/")
        stages, k = map(int, body.split("x"))
        dtype = {"": "float32", "f16": "float16"}[dtype]
        top_n = setup.settings.top_n * k // setup.settings.k if a.data == "ml-100k" else None
        label = f"residual {stages}x{k}{', float16 codebooks' if dtype == 'float16' else ''}"
        variants.append(Variant(label, "saec", stages=stages, k=k, weighted=True, top_n=top_n, codebook_dtype=dtype, lr_scale=sc))
        if a.equal_bytes:
            variants += [Variant(f"threshold at {label}'s bytes", "threshold", stages=stages, k=k, codebook_dtype=dtype,
                                 lr_scale=setup.threshold_scale),
                         Variant(f"hash at {label}'s bytes", "hash", stages=stages, k=k, codebook_dtype=dtype, lr_scale=setup.hash_scale)]
    if a.only:
        only = tuple(a.only.split(","))
        variants = [dataclasses.replace(v, only=only) if v.kind != "retrain" else v for v in variants]
    seeds = [int(s) for s in a.seeds.split(",")]
    auc: dict[str, dict[tuple[int, int], float]] = defaultdict(dict)
    ratio: dict[str, tuple[float, float, float]] = {}
    started = time.time()
    for seed in seeds:
        settings = dataclasses.replace(setup.settings, seed=seed)
        base = Trainer.new([f.size + 1 for f in log.fields], setup.config, seed)
        for s in range(max(setup.checkpoints)):
            base.train_segment(log, s)
            c = s + 1
            if c not in setup.checkpoints:
                continue
            live = live_at(log, c)
            built: dict[str, Built] = {}
            for v in variants:
                b = build(v, base, log, c, settings)
                b.trainer.train_segment(log, s)
                b.as_stored()
                auc[v.name][(seed, c)] = b.trainer.evaluate(log, c, live).auc
                built[v.name] = b
            for name, alloc in allocs.items():
                b = per_field_build(alloc, base, log, c, settings, sc)
                b.trainer.train_segment(log, s)
                auc[name][(seed, c)] = b.trainer.evaluate(log, c, live).auc
                built[name] = b
            if a.reassign:
                saec, control = built["Saec"], built["baseline + retraining pass"]
                auc["moved (features)"][(seed, c)] = float(reassign(saec, control, live))
                auc["Saec, re-assigned"][(seed, c)] = saec.trainer.evaluate(log, c, live).auc
                saec.trainer.train_segment(log, s)
                control.trainer.train_segment(log, s)
                auc["Saec, re-assigned and retrained again"][(seed, c)] = saec.trainer.evaluate(log, c, live).auc
                auc["baseline + two retraining passes"][(seed, c)] = control.trainer.evaluate(log, c, live).auc
            if c == max(setup.checkpoints) and seed == seeds[0]:
                for name, b in built.items():
                    fp = b.footprint
                    ratio[name] = (fp.before.paper / fp.after.paper, fp.before.keyed / fp.after.keyed, fp.after.keyed / 1024)
        print(f"seed {seed} done in {time.time() - started:.0f} s, load average {os.getloadavg()}", flush=True)
    print(f"data {a.data}, seeds {seeds}, checkpoints {setup.checkpoints[0]}-{setup.checkpoints[-1]}; load average at end {os.getloadavg()}")
    print("| method | ΔAUC vs baseline + pass (± over seeds) | per seed | ratio, paper | ratio, keys counted | KiB with keys |")
    print("|---|---|---|---|---|---|")
    for name, by in auc.items():
        if name == "moved (features)":
            print(f"| features re-assigned per checkpoint | {np.mean(list(by.values())):.0f} | | | | |")
            continue
        ref = auc["baseline + two retraining passes"] if name == "Saec, re-assigned and retrained again" else auc["baseline + retraining pass"]
        per = [float(np.mean([v - ref[sc_] for sc_, v in by.items() if sc_[0] == seed])) for seed in seeds]
        spread = f" ± {np.std(per, ddof=1):.4f}" if len(per) > 1 else ""
        r = ratio.get(name)
        rs = f"{r[0]:.1f}x | {r[1]:.1f}x | {r[2]:.1f}" if r else "| |"
        print(f"| {name} | {np.mean(per):+.4f}{spread} | {' '.join(f'{p:+.4f}' for p in per)} | {rs} |")


if __name__ == "__main__":
    main()
