"""Step-to-step statistics of KVATTN01 attention traces (Sources/KVEval/AttentionTrace.swift),
to compare a synthetic trace with a real one (smollm2_trace.py) on policy-independent terms:

- |d log p|: how much a key's attention probability changes from one decode step to the next
  (per row, less the row's median change, which is the softmax normaliser's), over the keys in
  the previous step's top 20% (positions older than the last 64, so locality does not count);
  quantiles q50 / q90 / q99 / q999 of every 16th step.
- next-step mass on the previous step's top 20%, and on the step's own top 20% (an oracle):
  how well one query predicts the next (TOVA's premise), against how concentrated attention is.
- persistence: the correlation of a key's log attention at decode step t with its log attention
  at step t + lag (lags 1, 16, 256; keys older than the last 64 positions at step t, sinks
  excluded; every 37th step t): flat when a key's importance is fixed (accumulating its history
  estimates it best, H2O's premise), falling when importance drifts (the latest query is the
  better guide, TOVA's).

    python3 tools/real_attention/attention_stats.py TRACE...   (numpy)
"""
import struct, sys

import numpy as np


def steps(path):
    """Yields (n_tokens, n_queries, rows[layer][head][n_tokens]) per step."""
    with open(path, "rb") as f:
        assert f.read(8) == b"KVATTN01", f"{path} is not a KVATTN01 trace"
        layers, heads, dim, segments, n_steps, _, _ = struct.unpack("<7I", f.read(28))
        for _ in range(segments):
            f.read(12 + 4 * dim)
        for _ in range(n_steps):
            n, q, has_query = struct.unpack("<3I", f.read(12))
            if has_query:
                f.read(4 * dim)
            yield n, q, np.frombuffer(f.read(4 * layers * heads * n), dtype="<f4").reshape(layers, heads, n)


LAGS = (1, 16, 256)


def persistence(decode):
    """Mean correlation of log attention at steps t and t + lag, per lag, over rows."""
    result = []
    for lag in LAGS:
        corr = []
        for t in sorted(decode)[::37]:
            if t + lag not in decode:
                continue
            a, b = decode[t], decode[t + lag]
            old = a.shape[2] - 64
            if old < 100:
                continue
            x = np.log(np.maximum(a[:, :, 4:old], 1e-12)).reshape(-1, old - 4)
            y = np.log(np.maximum(b[:, :, 4:old], 1e-12)).reshape(-1, old - 4)
            corr += [np.corrcoef(x[r], y[r])[0, 1] for r in range(x.shape[0])]
        result.append(np.mean(corr))
    return result


def statistics(path):
    prev, changes, on_prev, on_own, decode = None, [], [], [], {}
    for index, (n, q, rows) in enumerate(steps(path)):
        if q != 1:
            prev = None
            continue
        decode[index] = rows
        if prev is not None:
            old = prev.shape[2] - 64
            k = int(0.2 * prev.shape[2])
            d = np.log(np.maximum(rows[:, :, :old], 1e-12)) - np.log(np.maximum(prev[:, :, :old], 1e-12))
            d -= np.median(d, axis=2, keepdims=True)
            for l in range(rows.shape[0]):
                for h in range(rows.shape[1]):
                    top_prev = np.argpartition(-prev[l, h], k)[:k]
                    top_own = np.argpartition(-rows[l, h, : prev.shape[2]], k)[:k]
                    on_prev.append(rows[l, h, top_prev].sum())
                    on_own.append(rows[l, h, top_own].sum())
                    if index % 16 == 0:
                        top_old = np.argpartition(-prev[l, h, :old], int(0.2 * old))[: int(0.2 * old)]
                        changes.append(np.abs(d[l, h, top_old]))
        prev = rows
    qs = np.quantile(np.concatenate(changes), [0.5, 0.9, 0.99, 0.999])
    print(f"{path}: |d log p| on the previous top 20%: q50 {qs[0]:.2f} q90 {qs[1]:.2f} q99 {qs[2]:.2f} q999 {qs[3]:.2f}; "
          f"next-step mass on the previous top 20% {np.mean(on_prev):.3f}, on its own top 20% {np.mean(on_own):.3f}; "
          + "persistence " + " ".join(f"lag {lag} {c:.3f}" for lag, c in zip(LAGS, persistence(decode))))


for trace in sys.argv[1:]:
    statistics(trace)
