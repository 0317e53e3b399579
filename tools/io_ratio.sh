#!/usr/bin/env bash
# Repeats `kvcache-cli io-bench` and prints, per operation and depth, the median over the runs of
# the queue's throughput, the synchronous baseline's (one pread/pwrite at a time, same file,
# same run) and their ratio (each run's own ratio, then the median), plus the minimum and
# maximum ratio. On a shared or virtualised machine single runs move a lot; the median of
# same-run ratios is the number to quote.
#
#   tools/io_ratio.sh [DIR] [RUNS] [SECONDS_PER_CELL]     (defaults: the repository, 5, 2)
#   BLOCK=64KiB DEPTHS=1,8,32,64 CLI=path/to/kvcache-cli tools/io_ratio.sh /mnt/ssd 7
#
# Needs jq. Builds kvcache-cli in release mode unless CLI names a binary.
set -euo pipefail
usage() {
    echo "usage: tools/io_ratio.sh [DIR] [RUNS] [SECONDS_PER_CELL]   (defaults: the repository, 5, 2;" >&2
    echo "       RUNS a whole number >= 1; env BLOCK, DEPTHS, FILE_SIZE, CLI)${1:+: $1}" >&2
    exit 2
}
case "${1:-}" in -h|--help) usage ;; esac
[ $# -le 3 ] || usage "at most three arguments"
runs="${2:-5}"
seconds="${3:-2}"
[[ "$runs" =~ ^[1-9][0-9]*$ ]] || usage "RUNS '$runs' is not a whole number >= 1"
[[ "$seconds" =~ ^[0-9]*\.?[0-9]+$ ]] || usage "SECONDS_PER_CELL '$seconds' is not a number"
case "${CLI:-}" in ""|/*) ;; *) CLI="$PWD/$CLI" ;; esac  # a relative CLI is the caller's
cd "$(dirname "$0")/.."
[ -d "${1:-.}" ] || usage "DIR '${1}' is not a directory"
dir="$(cd "${1:-.}" && pwd)"
block="${BLOCK:-64KiB}"
depths="${DEPTHS:-1,8,32,64}"
file_size="${FILE_SIZE:-2GiB}"
if [ -z "${CLI:-}" ]; then
    swift build -c release --product kvcache-cli >/dev/null
    CLI="$(swift build -c release --show-bin-path)/kvcache-cli"
fi
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"; rm -f "$dir/kvcache-io-bench.dat"' EXIT

"$CLI" io-bench --dir "$dir" --file-size "$file_size" --block-sizes "$block" --depths 1 --ops read --seconds 0.1 \
    --no-baseline --keep-file --json >/dev/null
for r in $(seq 1 "$runs"); do
    echo "run $r/$runs ..." >&2
    "$CLI" io-bench --dir "$dir" --file-size "$file_size" --block-sizes "$block" --depths "$depths" \
        --seconds "$seconds" --skip-fill --keep-file --json >"$tmp/run$r.json"
done

echo "io-bench $block, $runs runs of ${seconds}s per cell, $dir (MiB/s, medians; ratio = median of each run's queue/sync)"
printf '%-6s %5s %10s %10s %8s %8s %8s\n' op depth queue sync ratio min max
for op in write read; do
    for d in ${depths//,/ }; do
        jq -rs --arg op "$op" --argjson d "$d" '
            def median: sort | if length % 2 == 1 then .[length / 2 | floor] else (.[length / 2 - 1] + .[length / 2]) / 2 end;
            map({q: (.cells[] | select(.engine == "queue" and .op == $op and .depth == $d) | .mib_per_s),
                 s: (.cells[] | select(.engine == "sync" and .op == $op) | .mib_per_s)})
            | [(map(.q) | median), (map(.s) | median), (map(.q / .s) | median), (map(.q / .s) | min), (map(.q / .s) | max)]
            | @tsv' "$tmp"/run*.json |
            awk -v op="$op" -v d="$d" '{ printf "%-6s %5d %10.0f %10.0f %7.2fx %7.2fx %7.2fx\n", op, d, $1, $2, $3, $4, $5 }'
    done
done
