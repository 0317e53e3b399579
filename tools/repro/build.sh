#!/usr/bin/env bash
# Builds the reproducers the docs cite (tools/repro/*.c: each file's header says what it
# measures and which figure) against the release libkvcache.so in BIN, with -Wall -Wextra
# -Werror, into tools/bin/repro/; with --run, runs each once at a small size, so that a
# reproducer that no longer builds or runs against the library fails the check
# (tools/run_abi_client.sh calls it so). The docs' sizes are in each file's header.
#
#   tools/repro/build.sh BIN [--run]
#
# Environment: CC overrides the C compiler (default gcc).
set -euo pipefail
cd "$(dirname "$0")/../.."
if [[ $# -lt 1 || $# -gt 2 || ( $# -eq 2 && "$2" != --run ) ]]; then
    echo "usage: tools/repro/build.sh BIN [--run]  (BIN: the directory of the release libkvcache.so)" >&2
    exit 2
fi
BIN=$1
out=tools/bin/repro
mkdir -p "$out"
for src in tools/repro/*.c; do
    ${CC:-gcc} -std=c11 -Wall -Wextra -Werror -O2 -I include "$src" \
        -L"$BIN" -lkvcache -Wl,-rpath,"$BIN" -o "$out/$(basename "$src" .c)"
done
echo "repro: built $(ls tools/repro/*.c | wc -l) reproducers into $out"
[[ "${2:-}" == --run ]] || exit 0

dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
"$out/hot" 2000 dualmap
"$out/hot" 2000 overlap-cost
"$out/routerview" 40000 3
"$out/routerscale" 2000 10 800
"$out/chainwalk" 1024 "$dir"
"$out/pss" contiguous
"$out/decodestep" 16 4
mkdir "$dir/tier"
"$out/disk_restart" fill "$dir/tier" 4096 50 destroy
"$out/disk_restart" open "$dir/tier" 4096 25
echo "repro: each ran"
