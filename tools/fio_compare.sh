#!/usr/bin/env bash
# Runs fio (io_uring engine, O_DIRECT, random block-aligned offsets, registered buffers and
# files) beside `kvcache-cli io-bench` on the same file, block size and queue depth, cell by cell
# (A-B-B-A order, each number the mean of two runs), and prints the throughput ratios, plus
# io-bench's queue against its own synchronous pread/pwrite baseline.
#
#   tools/fio_compare.sh [DIR] [SECONDS_PER_CELL]      (defaults: the repository, 3)
#   CELLS="2MiB:32 64KiB:32" tools/fio_compare.sh       (block:depth pairs to compare)
#
# Then the same comparison for the disk tier through the engine (io-bench --tier: swap-out and
# swap-in of a sequence, slots of 64 KiB and 2 MiB payload plus a 4 KiB header, depth 32)
# against fio at depth 32 with the same block size.
#
# Needs fio (tools/install-deps.sh installs it) and jq. Builds kvcache-cli in release mode
# unless CLI names a binary (as tools/io_ratio.sh).
set -euo pipefail
usage() {
    echo "usage: tools/fio_compare.sh [DIR] [SECONDS_PER_CELL]   (defaults: the repository, 3;" >&2
    echo "       env CELLS, FILE_SIZE, CLI)${1:+: $1}" >&2
    exit 2
}
case "${1:-}" in -h|--help) usage ;; esac
[ $# -le 2 ] || usage "at most two arguments"
seconds="${2:-3}"
[[ "$seconds" =~ ^[0-9]*\.?[0-9]+$ ]] || usage "SECONDS_PER_CELL '$seconds' is not a number"
case "${CLI:-}" in ""|/*) ;; *) CLI="$PWD/$CLI" ;; esac  # a relative CLI is the caller's
cd "$(dirname "$0")/.."
[ -d "${1:-.}" ] || usage "DIR '${1}' is not a directory"
tools/install-deps.sh
dir="$(cd "${1:-.}" && pwd)"
cells="${CELLS:-64KiB:1 64KiB:32 2MiB:1 2MiB:32}"
file_size="${FILE_SIZE:-2GiB}"
if [ -z "${CLI:-}" ]; then
    swift build -c release --product kvcache-cli >/dev/null
    CLI="$(swift build -c release --show-bin-path)/kvcache-cli"
fi
cli="$CLI"
file="$dir/kvcache-io-bench.dat"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"; rm -f "$file"' EXIT

bytes() { # 64KiB -> 65536
    local n="${1%%[KkMmGg]*}" u="${1#"${1%%[KkMmGg]*}"}"
    case "$u" in KiB|K|k) echo $((n << 10)) ;; MiB|M|m) echo $((n << 20)) ;; GiB|G|g) echo $((n << 30)) ;; *) echo "$n" ;; esac
}

echo "writing the $file_size test file in $dir ..." >&2
"$cli" io-bench --dir "$dir" --file-size "$file_size" --block-sizes 64KiB --depths 1 --ops read --seconds 0.1 \
    --no-baseline --keep-file --json >/dev/null

declare -A fio_bw
printf '%-7s %5s %-5s %14s %14s %9s %14s %12s\n' block depth op "io-bench MiB/s" "fio MiB/s" "ratio" "sync MiB/s" "queue/sync"
for cell in $cells; do
    bs="${cell%%:*}" depth="${cell##*:}" bsb="$(bytes "$bs")"
    for op in write read; do
        # A-B-B-A: io-bench, fio, fio, io-bench, each number the mean of its two runs, so that
        # neither tool profits from running second (host caches, device state, drift).
        bench() {
            "$cli" io-bench --dir "$dir" --file-size "$file_size" --block-sizes "$bs" --depths "$depth" --ops "$op" \
                --seconds "$seconds" --skip-fill --keep-file --json >"$tmp/bench$1.json"
        }
        runfio() {
            fio --name=kvcache --filename="$file" --size="$(bytes "$file_size")" --ioengine=io_uring --direct=1 \
                --rw="rand$op" --bs="$bsb" --iodepth="$depth" --runtime="$seconds" --time_based --norandommap \
                --randrepeat=0 --fixedbufs --registerfiles --output-format=json >"$tmp/fio$1.json"
        }
        bench 1; runfio 1; runfio 2; bench 2
        ours="$(jq -rs --arg op "$op" 'map(.cells[] | select(.engine == "queue" and .op == $op) | .mib_per_s) | add / length' "$tmp/bench1.json" "$tmp/bench2.json")"
        sync="$(jq -rs --arg op "$op" 'map(.cells[] | select(.engine == "sync" and .op == $op) | .mib_per_s) | add / length' "$tmp/bench1.json" "$tmp/bench2.json")"
        theirs="$(jq -rs --arg op "$op" 'map(.jobs[0][$op].bw_bytes / 1048576) | add / length' "$tmp/fio1.json" "$tmp/fio2.json")"
        fio_bw["$bs:$depth:$op"]="$theirs"
        awk -v bs="$bs" -v d="$depth" -v op="$op" -v a="$ours" -v b="$theirs" -v s="$sync" 'BEGIN {
            printf "%-7s %5d %-5s %14.1f %14.1f %8.2fx %14.1f %11.2fx\n", bs, d, op, a, b, (b > 0 ? a / b : 0), s, (s > 0 ? a / s : 0) }'
    done
done

echo
echo "disk tier through the engine vs fio at depth 32 (same run)"
printf '%-7s %-5s %16s %14s %9s\n' block op "engine MiB/s" "fio MiB/s" ratio
"$cli" io-bench --dir "$dir" --block-sizes 64KiB,2MiB --depths 1 --ops read --seconds "$seconds" --file-size 256MiB \
    --no-baseline --tier --json >"$tmp/tier.json"
for bs in 64KiB 2MiB; do
    for op in write read; do
        if [ -z "${fio_bw["$bs:32:$op"]:-}" ]; then
            printf '%-7s %-5s %16s\n' "$bs" "$op" "(no $bs:32 cell in CELLS: no fio number to compare with)"
            continue
        fi
        ours="$(jq -r --arg op "$op" --argjson b "$(bytes "$bs")" '.cells[] | select(.engine == "tier" and .op == $op and .block_bytes == $b) | .mib_per_s' "$tmp/tier.json")"
        theirs="${fio_bw["$bs:32:$op"]}"
        awk -v bs="$bs" -v op="$op" -v a="$ours" -v b="$theirs" 'BEGIN {
            printf "%-7s %-5s %16.1f %14.1f %8.2fx\n", bs, op, a, b, (b > 0 ? a / b : 0) }'
    done
done
