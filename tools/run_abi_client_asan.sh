#!/usr/bin/env bash
# Runs tools/abi_client.c against a libkvcache.so built with AddressSanitizer (Swift and the C
# memory module instrumented, LeakSanitizer on), so every out-of-bounds access, use after free
# and leak on the C ABI's paths (both layouts, the disk tier, the router) fails the run.
#
#   tools/run_abi_client_asan.sh
#
# Environment: KVC_ASAN_SCRATCH_PATH overrides the scratch path (default .build-asan, apart from
# the release build so neither invalidates the other). The client is compiled with the Swift
# toolchain's clang: its ASan runtime must be the one the library was built against.
# (Swift's own test runner is not run under ASan: the uninstrumented Swift runtime trips
# ASan's free checks in swift-testing's type-name lookup before any test runs.)
set -euo pipefail
cd "$(dirname "$0")/.."

scratch="${KVC_ASAN_SCRATCH_PATH:-.build-asan}"
echo "run_abi_client_asan: building libkvcache.so (debug, -sanitize=address)"
swift build --scratch-path "$scratch" --sanitize=address --product kvcache
BIN=$(swift build --scratch-path "$scratch" --sanitize=address --show-bin-path)
[[ -f "$BIN/libkvcache.so" ]] || { echo "run_abi_client_asan: FAILED: $BIN/libkvcache.so was not built" >&2; exit 1; }

mkdir -p tools/bin
CC_ASAN="$(dirname "$(command -v swift)")/clang"
rm -f tools/bin/abi_client_asan
# (gold warns once per ASan symbol that it cannot export a local one: harmless, filtered.)
"$CC_ASAN" -std=c11 -g -O1 -fsanitize=address -fno-omit-frame-pointer -Wall -Wextra -Werror -I include \
    tools/abi_client.c -L"$BIN" -lkvcache -Wl,-rpath,"$BIN" -o tools/bin/abi_client_asan 2>&1 | grep -v "Cannot export local symbol" || true
[[ -x tools/bin/abi_client_asan ]] || { echo "run_abi_client_asan: FAILED: the client did not compile" >&2; exit 1; }

# abi_client prints "abi_client: N passed, M failed"; renamed so the totals do not count the
# same checks twice. ASan exits non-zero (and prints its report) on the first error or a leak.
set +e
ASAN_OPTIONS="detect_leaks=1:abort_on_error=0:exitcode=23" tools/bin/abi_client_asan 2>&1 | sed 's/^abi_client: \([0-9]* passed\)/abi_client_asan: \1/'
status=${PIPESTATUS[0]}
set -e
[[ $status -eq 0 ]] || { echo "run_abi_client_asan: FAILED (exit $status)" >&2; exit 1; }
echo "run_abi_client_asan: no AddressSanitizer or LeakSanitizer report"
