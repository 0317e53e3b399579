#!/usr/bin/env bash
# Runs the KVCacheBenchmarks suite (release build) and prints, per operation, nanoseconds per
# operation of the engine and of BaselineBlockManager, their ratio, and PASS/FAIL for the
# targets:
#   allocate+free: at least 10 million block allocate+free pairs per second on one thread
#   append:        under 200 ns per appended token when no new block/page is needed
#   decode-step-scores: observe+compact of one 32k-token decode step at most 2x a plain sum
#                  of the same scores (a ratio, so the ops-per-measurement scale cancels)
#
# Usage: tools/bench_ratio.sh [extra `benchmark` options, e.g. --filter 'append']
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
# printed.
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

# run DIR [benchmark options...]: one run of the suite, its JMH file(s) into DIR.
run() {
    local dir="$1"
    shift
    mkdir -p "$dir"
    if ! swift package --scratch-path "$scratch" --disable-sandbox benchmark \
            --target KVCacheBenchmarks --format jmh --path "$dir" --no-progress "$@" >"$dir/run.log" 2>&1; then
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

run "$out/main" "$@"
# The rounds of each ratio target's pair that the main run measured.
for op in decode-step-scores; do
    grep -q "Engine_$op\|Engine $op" "$out"/main/*.jmh.json || continue
    for r in $(seq 1 "$rounds"); do run "$out/round$r" --filter ".*$op"; done
done

python3 - "$percentile" "$out" <<'PY'
import glob, json, os, statistics, sys

percentile, out = sys.argv[1], sys.argv[2]
OPS_PER_MEASUREMENT = 1000          # BenchmarkScalingFactor.kilo
OPS_OVERRIDES = {"decode-step-scores": 1, "unshare": 1}  # Compaction/UnshareBenchmarks.swift: one step (copy) per measurement
WALL = "Time (wall clock)"
MALLOC = "Malloc (total)"


def load(directory):
    """(impl, operation) -> ns/op and malloc calls/op of one round's JMH files."""
    ns, mallocs = {}, {}
    for path in sorted(glob.glob(os.path.join(directory, "*.jmh.json"))):
        for element in json.load(open(path)):
            name = element["benchmark"].rsplit(".", 1)[-1].replace("_", " ")
            impl, _, operation = name.partition(" ")
            metric = element.get("secondaryMetrics", {}).get(WALL)
            if metric is None or impl not in ("Engine", "Baseline"):
                continue
            ops = OPS_OVERRIDES.get(operation, OPS_PER_MEASUREMENT)
            ns[(impl, operation)] = metric["scorePercentiles"][percentile] * 1000.0 / ops
            m = element.get("secondaryMetrics", {}).get(MALLOC)
            if m is not None:
                mallocs[(impl, operation)] = m["scorePercentiles"][percentile] / ops
    return ns, mallocs


ns, mallocs = load(os.path.join(out, "main"))  # the table: the main run
rounds = [load(d)[0] for d in sorted(glob.glob(os.path.join(out, "round*")), key=lambda d: int(d.rsplit("round", 1)[1]))]

operations = sorted({op for _, op in ns})
if not operations:
    print("bench_ratio: no Engine/Baseline wall-clock results found", file=sys.stderr)
    sys.exit(2)
print(f"ns per operation (p{percentile.rstrip('0').rstrip('.')} of the measurements)\n")
print(f"{'operation':<18} {'engine ns':>12} {'baseline ns':>12} {'engine/baseline':>16} {'speedup':>9}"
      f" {'engine malloc/op':>17} {'baseline malloc/op':>19}")
for op in operations:
    e, b = ns.get(("Engine", op)), ns.get(("Baseline", op))
    fmt = lambda v, w=12: f"{v:{w}.2f}" if v is not None else f"{'-':>{w}}"
    ratio = f"{e / b:16.3f}" if e and b else f"{'-':>16}"
    speedup = f"{b / e:8.2f}x" if e and b else f"{'-':>9}"
    me, mb = mallocs.get(("Engine", op)), mallocs.get(("Baseline", op))
    print(f"{op:<18} {fmt(e)} {fmt(b)} {ratio} {speedup} {fmt(me, 17)} {fmt(mb, 19)}")

# Targets from the issue.
targets = [
    ("allocate+free", lambda v: 1e9 / v >= 10e6, lambda v: f"{1e9 / v / 1e6:.1f} M pairs/s (target >= 10 M pairs/s)"),
    ("append", lambda v: v < 200, lambda v: f"{v:.1f} ns/token (target < 200 ns/token, no new block)"),
]
print()
failed = False
for op, ok, text in targets:
    v = ns.get(("Engine", op))
    if v is None:
        print(f"SKIP {op}: not measured")
        continue
    passed = ok(v)
    failed |= not passed
    print(f"{'PASS' if passed else 'FAIL'} {op}: {text(v)}")
# Ratio targets: engine / baseline in the same run.
ratio_targets = [("decode-step-scores", 2.0, "observe+compact of one decode step (32k tokens, 32 layers x 8 heads) vs a plain sum of the same scores")]
for op, limit, what in ratio_targets:
    ratios = [r[("Engine", op)] / r[("Baseline", op)] for r in rounds if ("Engine", op) in r and ("Baseline", op) in r]
    if not ratios:
        print(f"SKIP {op}: not measured")
        continue
    ratio = statistics.median(ratios)
    passed = ratio <= limit
    failed |= not passed
    each = ", ".join(f"{x:.2f}" for x in ratios)
    print(f"{'PASS' if passed else 'FAIL'} {op}: {ratio:.2f}x {what} (target <= {limit}x; median of {len(ratios)} same-run rounds: {each})")
sys.exit(1 if failed else 0)
PY
