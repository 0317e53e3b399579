#!/usr/bin/env bash
# Runs the KVCacheBenchmarks suite (release build) and prints, per operation, nanoseconds per
# operation of the engine and of BaselineBlockManager, their ratio, and PASS/FAIL for the
# targets:
#   allocate+free: at least 10 million block allocate+free pairs per second on one thread
#   append:        under 200 ns per appended token when no new block/page is needed
#
# Usage: tools/bench_ratio.sh [extra `benchmark` options, e.g. --filter 'append']
# Environment: SCRATCH_PATH (default .build-cli), PERCENTILE (default 50.0; one of
# 0.0 50.0 90.0 95.0 99.0 99.9 100.0).
# Exit status: 0 when every target that was measured passes, 1 otherwise, 2 on a run failure.
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

if ! swift package --scratch-path "$scratch" --disable-sandbox benchmark \
        --target KVCacheBenchmarks --format jmh --path "$out" --no-progress "$@" >"$out/run.log" 2>&1; then
    cat "$out/run.log" >&2
    echo "bench_ratio: the benchmark run failed (log above)" >&2
    exit 2
fi
shopt -s nullglob
files=("$out"/*.jmh.json)
if [ ${#files[@]} -eq 0 ]; then
    cat "$out/run.log" >&2
    echo "bench_ratio: the benchmark tool wrote no JMH file" >&2
    exit 2
fi

python3 - "$percentile" "${files[@]}" <<'PY'
import json, sys

percentile = sys.argv[1]
OPS_PER_MEASUREMENT = 1000          # BenchmarkScalingFactor.kilo
WALL = "Time (wall clock)"
MALLOC = "Malloc (total)"
ns = {}                             # (impl, operation) -> ns/op
mallocs = {}                        # (impl, operation) -> malloc calls/op
for path in sys.argv[2:]:
    for element in json.load(open(path)):
        name = element["benchmark"].rsplit(".", 1)[-1].replace("_", " ")
        impl, _, operation = name.partition(" ")
        metric = element.get("secondaryMetrics", {}).get(WALL)
        if metric is None or impl not in ("Engine", "Baseline"):
            continue
        us_per_measurement = metric["scorePercentiles"][percentile]
        ns[(impl, operation)] = us_per_measurement * 1000.0 / OPS_PER_MEASUREMENT
        m = element.get("secondaryMetrics", {}).get(MALLOC)
        if m is not None:
            mallocs[(impl, operation)] = m["scorePercentiles"][percentile] / OPS_PER_MEASUREMENT

operations = sorted({op for _, op in ns})
if not operations:
    print("bench_ratio: no Engine/Baseline wall-clock results found", file=sys.stderr)
    sys.exit(2)
print(f"ns per operation (p{percentile.rstrip('0').rstrip('.')} of the measurements)\n")
print(f"{'operation':<16} {'engine ns':>12} {'baseline ns':>12} {'engine/baseline':>16} {'speedup':>9}"
      f" {'engine malloc/op':>17} {'baseline malloc/op':>19}")
for op in operations:
    e, b = ns.get(("Engine", op)), ns.get(("Baseline", op))
    fmt = lambda v, w=12: f"{v:{w}.2f}" if v is not None else f"{'-':>{w}}"
    ratio = f"{e / b:16.3f}" if e and b else f"{'-':>16}"
    speedup = f"{b / e:8.2f}x" if e and b else f"{'-':>9}"
    me, mb = mallocs.get(("Engine", op)), mallocs.get(("Baseline", op))
    print(f"{op:<16} {fmt(e)} {fmt(b)} {ratio} {speedup} {fmt(me, 17)} {fmt(mb, 19)}")

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
sys.exit(1 if failed else 0)
PY
