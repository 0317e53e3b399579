#!/usr/bin/env python3
"""One decode step for R running sequences from Python ctypes, as tools/repro/decodestep.c does
from C: append one token to each sequence and re-read its block table, with single calls
(kvc_seq_append + kvc_seq_block_table per sequence; argtypes set, buffers preallocated, the
cheapest ctypes use) and with the batched calls (kvc_seq_append_batch + kvc_seq_block_tables,
KVC_1.3: one of each per step). Prints the median step time of each; the model and sizes are
decodestep.c's (figures in kvcache.h, BATCHES, and README).

    KVC_LIB=/path/to/libkvcache.so python3 tools/repro/decode_step.py [R [STEPS]]
"""
import ctypes as C
import os
import statistics
import sys
import time
from ctypes import POINTER, c_int32, c_size_t, c_uint32, c_uint64, c_void_p

lib = C.CDLL(os.environ.get("KVC_LIB", "libkvcache.so"))
S, E = c_int32, c_void_p


def fn(name, *args):
    f = getattr(lib, name)
    f.restype, f.argtypes = S, list(args)
    return f


PROMPT, ROW = 1024, 512
CONFIG = 168  # sizeof(kvc_config) in this header version
config_init = lib.kvc_config_init_size
config_init.restype, config_init.argtypes = None, [c_void_p, c_size_t]
create = fn("kvc_engine_create", c_void_p, POINTER(c_void_p))
destroy = lib.kvc_engine_destroy
destroy.restype, destroy.argtypes = None, [E]
seq_create = fn("kvc_seq_create", E, c_uint64, POINTER(c_int32), c_size_t, POINTER(c_size_t))
append = fn("kvc_seq_append", E, c_uint64, POINTER(c_int32), c_size_t)
block_table = fn("kvc_seq_block_table", E, c_uint64, POINTER(c_int32), c_size_t, POINTER(c_size_t))
append_batch = fn("kvc_seq_append_batch", E, POINTER(c_uint64), POINTER(c_int32), c_size_t, POINTER(S))
block_tables = fn("kvc_seq_block_tables", E, POINTER(c_uint64), c_size_t, POINTER(c_int32), c_size_t,
                  POINTER(c_size_t), POINTER(S))


def main():
    r = int(sys.argv[1]) if len(sys.argv) > 1 else 256
    steps = int(sys.argv[2]) if len(sys.argv) > 2 else 100
    cfg = (C.c_uint8 * CONFIG)()
    config_init(cfg, CONFIG)
    u32 = C.cast(cfg, POINTER(c_uint32))
    u64 = C.cast(cfg, POINTER(c_uint64))
    u32[1], u32[2], u32[3], u32[5], u32[7], u32[8] = 8, 2, 64, 16, r, 8192  # layers .. max_seq_tokens
    u64[5] = r * (PROMPT + 2 * steps + 64) * 8 * 2 * 256  # memory_bytes (offset 40)
    e = c_void_p()
    assert create(cfg, C.byref(e)) == 0
    cached = c_size_t()
    for s in range(r):
        prompt = (c_int32 * PROMPT)(*[(s * 100003 + i) & 0x7FFFFFFF for i in range(PROMPT)])
        assert seq_create(e, s, prompt, PROMPT, C.byref(cached)) == 0
    seqs = (c_uint64 * r)(*range(r))
    tokens = (c_int32 * r)(*([7] * r))
    tables = (c_int32 * (r * ROW))()
    counts = (c_size_t * r)()
    statuses = (S * r)()
    tok = (c_int32 * 1)(7)
    rows = [C.cast(C.byref(tables, 4 * ROW * s), POINTER(c_int32)) for s in range(r)]
    n, nref = c_size_t(), None
    nref = C.byref(n)
    single, batched = [], []
    for _ in range(steps):
        t0 = time.perf_counter()
        for s in range(r):
            append(e, s, tok, 1)
            block_table(e, s, rows[s], ROW, nref)
        t1 = time.perf_counter()
        st = append_batch(e, seqs, tokens, r, statuses)
        st |= block_tables(e, seqs, r, tables, ROW, counts, statuses)
        t2 = time.perf_counter()
        assert st == 0
        single.append(t1 - t0)
        batched.append(t2 - t1)
    a, b = statistics.median(single), statistics.median(batched)
    print(f"decode_step.py: {r} sequences ({counts[0]} blocks each at the end), median of {steps} steps: "
          f"single ctypes calls {a * 1e3:.3f} ms ({a / (2 * r) * 1e9:.0f} ns per call), "
          f"batched {b * 1e3:.3f} ms ({b / r * 1e9:.0f} ns per sequence), {a / b:.1f}x")
    destroy(e)


if __name__ == "__main__":
    main()
