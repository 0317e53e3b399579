#!/usr/bin/env bash
# Runs the KVCacheBenchmarks suite (release build) and prints, per operation, nanoseconds per
# operation of the engine and of BaselineBlockManager, their ratio, where measured the same for
# VLLMBlockPool (vLLM v1's block pool algorithm: allocate+free, prefix lookup, trace-replay; and
# a row `sha256 prefix lookup`, the engine against the pool hashing with vLLM's default SHA-256),
# and PASS/FAIL for the targets:
#   allocate+free: at least 10 million block allocate+free pairs per second on one thread
#   append:        under 200 ns per appended token when no new block/page is needed
#   decode-step-scores: observe+compact of one 32k-token decode step at most 2x a plain sum
#                  of the same scores (a ratio, so the ops-per-measurement scale cancels)
#   decode-step-norm: the same with H2O's normalised sums
#   decode-step-head: the same with per-head decisions (256 rows of 32k tokens) against a
#                  plain sum of the same scores into per-head rows
#   decode-step-epi: the same with the episodic policy and a focused episode
#   decode-step-random: decode-step-scores with i.i.d. scores drawn afresh every step (no
#                  persistent heavy hitters: H2O's low-score cache serves few steps)
# and reports (INFO, not judged) decode-step-head against the per-layer plain sum, measured in
# the same rounds (`PerLayer decode-step-head`): that pass updates 8x fewer sums.
# It also reports (INFO, not judged) the speculative-decoding rollback, spec-decode[-contiguous,
# -compacted]: a round of appending 8 drafts and truncating to the 3 accepted against appending
# only the 3 (SpecDecodeBenchmarks.swift), the median of RATIO_ROUNDS same-run rounds.
# And (INFO; in the whole suite a run of its own, below) the index dump that a consumer which
# lost KV events applies, index-dump: one `Engine.indexEvents()` of 65,536 memory and 16,384
# disk blocks (its time is the engine lock's hold) against listing as many (hash, parent)
# pairs from a Dictionary.
#
# With --router it judges the router's targets (issue 4) instead, from a KVRouterBenchmarks run
# and a release replay (bench_ratio.py's router_report prints them):
#   route-dualmap: a DualMap routing decision at 64 instances under 2 us at p99 (the
#                  "Route 64 instances dualmap" benchmark: one decision per measurement, so its
#                  wall-clock p99 is per decision), judged on the median of the p99s of
#                  RATIO_ROUNDS runs of it alone (the main run's when there are none: one run's
#                  p99 ranged 1.05-1.87 us here); the other policies' p50/p99 are INFO, and
#                  so is overlap cost's decision followed by the request's finish
#                  (route-finish-overlap-cost)
#   ring-*:        ring membership changes, merge (add) and compact (remove) against the rebuild
#                  they replaced, INFO: the median of RATIO_ROUNDS same-run rounds of the ring
#                  benchmarks alone, each round's ratio of p50s (PERCENTILE) printed
#   replay:        one policy (dualmap) replaying the bundled Mooncake trace (12,031 requests)
#                  over 16 instances under 10 s: `kvcache-cli replay --policies dualmap
#                  --instances 16 --no-search --plots '' --json`, release build, timed as a
#                  whole command (trace parse and start-up included); REPLAY=0 skips it.
#
# Usage: tools/bench_ratio.sh [--router] [extra `benchmark` options, e.g. --filter 'append']
# Environment: SCRATCH_PATH (default .build-cli), PERCENTILE (default 50.0; one of
# 0.0 50.0 90.0 95.0 99.0 99.9 100.0), RATIO_ROUNDS (default 5).
# Exit status: 0 when every target that was measured passes, 1 otherwise, 2 on a run failure.
#
# A ratio target is judged on the median of RATIO_ROUNDS rounds, each a run of the benchmark
# tool that measures only the engine and its baseline (the main run's pair is in the table but
# not judged, so that no other benchmark runs before it in the same process). One round's ratio
# moves with the machine between the two halves of the run: on this project's 2-core VM,
# quiet, consecutive rounds of decode-step-scores gave anything from 1.06 to 1.98 (and 2.44
# once); the median of same-run ratios does not follow one such round. Every round's ratio is
# printed. The trace replay against vLLM's block pool (not a target) gets the same rounds: its
# halves also run one after the other, and one run's engine/vLLM ratio ranged 0.54 to 1.33.
#
# ns/op comes from the wall clock of the benchmark tool's JMH export: every benchmark runs
# 1000 operations per measurement (`operationsPerMeasurement` in KVCacheBenchmarks.swift), so
# microseconds per measurement equal nanoseconds per operation. The statistic is the median of
# the measurements (PERCENTILE), which resists the noise of a shared machine.
set -euo pipefail
cd "$(dirname "$0")/.."
scratch="${SCRATCH_PATH:-.build-cli}"
percentile="${PERCENTILE:-50.0}"
out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT

rounds="${RATIO_ROUNDS:-5}"
target=KVCacheBenchmarks
if [ "${1:-}" = --router ]; then
    target=KVRouterBenchmarks
    shift
fi

# run DIR [benchmark options...]: one run of the suite, its JMH file(s) into DIR.
run() {
    local dir="$1"
    shift
    mkdir -p "$dir"
    if ! swift package --scratch-path "$scratch" --disable-sandbox benchmark \
            --target "$target" --format jmh --path "$dir" --no-progress "$@" >"$dir/run.log" 2>&1; then
        cat "$dir/run.log" >&2
        echo "bench_ratio: the benchmark run failed (log above)" >&2
        exit 2
    fi
    if ! compgen -G "$dir/*.jmh.json" >/dev/null; then
        cat "$dir/run.log" >&2
        echo "bench_ratio: the benchmark tool wrote no JMH file" >&2
        exit 2
    fi
}

if [ "$target" = KVCacheBenchmarks ] && ! printf '%s\n' "$@" | grep -q -- '^--filter'; then
    # The whole suite: the index-dump pair runs in a process of its own (main-dump/). With it in
    # the same process, the append benchmark's engines, created after it, measured 55-76 ns per
    # token instead of 45-47 (either half of the pair skipped: 45; 2026-11-22): its 2 MiB dumps
    # and Dictionary leave the allocator in a state that moves later benchmarks' arrays.
    run "$out/main" --skip '.*index-dump' "$@"
    run "$out/main-dump" --filter '.*index-dump' "$@"
else
    run "$out/main" "$@"
fi
if [ "$target" = KVRouterBenchmarks ]; then
    # The ring pairs' rounds: each round runs every ring benchmark alone, rebuild beside merge/compact.
    if grep -q 'Ring_' "$out"/main/*.jmh.json; then
        for r in $(seq 1 "$rounds"); do run "$out/round-ring-$r" --filter 'Ring .*'; done
    fi
    # DualMap's decision alone, RATIO_ROUNDS times: its p99 is judged on the median of the rounds.
    if grep -q 'Route_64_instances_dualmap' "$out"/main/*.jmh.json; then
        for r in $(seq 1 "$rounds"); do run "$out/round-route-$r" --filter 'Route 64 instances dualmap'; done
    fi
    if [ "${REPLAY:-1}" != 0 ]; then
        swift build -c release --scratch-path "$scratch" --product kvcache-cli >"$out/build.log" 2>&1 \
            || { cat "$out/build.log" >&2; echo "bench_ratio: the CLI build failed" >&2; exit 2; }
        cli="$(swift build -c release --scratch-path "$scratch" --show-bin-path)/kvcache-cli"
        mkdir -p "$out/replay"
        started=$(date +%s%N)
        "$cli" replay --policies dualmap --instances 16 --no-search --plots '' --json >"$out/replay/replay.json" \
            || { echo "bench_ratio: the replay failed" >&2; exit 2; }
        echo "$(( $(date +%s%N) - started ))" | awk '{ printf "%.3f\n", $1 / 1e9 }' >"$out/replay/wall_s"
    fi
    python3 tools/bench_ratio.py --router "$percentile" "$out"
    exit
fi
# The rounds of each ratio target's pair, and of the vLLM comparison's trace replay, that the
# main run measured: round-OP-N holds the N-th run of OP alone.
for op in decode-step-scores decode-step-norm decode-step-head decode-step-epi decode-step-random trace-replay spec-decode spec-decode-contiguous spec-decode-compacted; do
    grep -q "Engine_$op\|Engine $op" "$out"/main/*.jmh.json || continue
    for r in $(seq 1 "$rounds"); do run "$out/round-$op-$r" --filter ".*$op"; done
done

python3 tools/bench_ratio.py "$percentile" "$out"
