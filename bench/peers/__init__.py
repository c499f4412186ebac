"""saec against a real Redis embedding store, side by side in one run.

One table (generated, heavy-tailed and clustered: ``saec.synthetic``) is

- loaded into a fresh ``redis-server`` on 127.0.0.1 (8-byte saec-hash-v1 keys, float32
  rows as values, pipelined MSET) and read with MGET from redis-py + hiredis;
- compressed (``compress.compress_field``) and served by ``saec serve`` (uvicorn) on
  127.0.0.1, read with ``AsyncSaecClient``, binary and JSON;
- served dense by ``saec serve`` from a second store (``add_dense_field``), to separate
  the effect of compression from that of the service.

At every client concurrency it measures ids/s, p50 and p99, then p99 under a
rate-limited load at half of saec's peak, bytes per feature on each side, and writes
``bench/results/peers.md`` and ``peers.png``. ``--smoke`` runs a small table for a few
seconds and checks that every system answers the same vectors for the same ids.

    python -m bench.peers              # the full run (several minutes)
    python -m bench.peers --smoke      # CI: equal answers, every code path once

One concern a module: ``table`` (the data, both stores, Redis loading), ``servers``
(``saec serve`` subprocesses), ``load``/``drivers``/``cpu`` (the Python load generator and
CPU accounting), ``loadgen`` (the compiled load generators), ``run`` (the measurement),
``profile`` (py-spy), ``headline``/``analysis``/``report``/``plot`` (the results), ``cli``.
"""
