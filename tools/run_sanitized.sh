#!/usr/bin/env bash
# Runs the C clients against sanitizer builds of libkvcache.so (Swift and the C memory module
# instrumented):
#   - AddressSanitizer (leaks checked too): tools/abi_client.c (every ABI call, both layouts,
#     the disk tier, the router), tools/abi_stress.c, tools/abi_churn.c and tools/abi_model.c
#     (random calls);
#   - ThreadSanitizer: tools/abi_stress.c (four server threads and a housekeeping thread on one
#     engine with a disk tier, memory far below the working set) and tools/abi_churn.c (salted
#     servers with scheduled prefill, aborts while swapping, a speculative decoder truncating
#     while the engine trims, reserve and sync, an event consumer rebuilding from
#     kvc_engine_index_events, a router whose instances churn; about 10 s, two phases of 5 s),
#     each on io_uring and again on the disk tier's thread-pool backend
#     (KVCACHE_OFFLOAD_BACKEND=threads), whose I/O threads complete requests concurrently with
#     the engine.
# Any report fails the run. Both catch what they should: an injected one-past-the-end write in
# page_pool.c fails the ASan run, an unlocked kvc_engine_stats fails abi_stress's TSan run, and an
# unlocked kvc_engine_index_events fails abi_churn's (abi_stress never calls it); every run
# checks that a race on K/V bytes is seen (tools/tsan_control.c must be reported: the clients
# write K/V byte by byte, since this toolchain's ThreadSanitizer reports no race through
# memcpy or memset).
#
#   tools/run_sanitized.sh
#
# Environment: KVC_SANITIZER_SCRATCH_PATH overrides the scratch-path prefix (default .build;
# the builds go to PREFIX-asan and PREFIX-tsan, apart from the release build so no build
# invalidates another). The clients are compiled with the Swift toolchain's clang: their
# sanitizer runtime must be the one the library was built against (TSan's also needs the
# toolchain's libdispatch and BlocksRuntime). Swift's own test runner is not run under
# sanitizers: the uninstrumented Swift runtime trips them in swift-testing's type-name lookup
# before any test runs.
set -euo pipefail
cd "$(dirname "$0")/.."

prefix="${KVC_SANITIZER_SCRATCH_PATH:-.build}"
CC_SAN="$(dirname "$(command -v swift)")/clang"
SWIFT_LIB="$(dirname "$(command -v swift)")/../lib/swift/linux"
mkdir -p tools/bin
passed=0
fail() {
    echo "run_sanitized: FAILED: $*" >&2
    echo "run_sanitized: $passed passed, 1 failed"
    exit 1
}

# build SANITIZER: builds libkvcache.so with it; prints the directory holding the library.
build() {
    echo "run_sanitized: building libkvcache.so (debug, -sanitize=$1)" >&2
    swift build --scratch-path "$prefix-$2" --sanitize="$1" --product kvcache >&2
    local bin
    bin=$(swift build --scratch-path "$prefix-$2" --sanitize="$1" --show-bin-path)
    [[ -f "$bin/libkvcache.so" ]] || fail "$bin/libkvcache.so was not built"
    echo "$bin"
}

# client NAME SANITIZER BIN EXTRA...: compiles tools/NAME.c against the library in BIN into
# tools/bin/NAME_SANITIZER. (gold warns once per sanitizer symbol that it cannot export a
# local one: harmless, filtered.)
client() {
    local name=$1 sanitizer=$2 bin=$3 out="tools/bin/$1_$2"
    shift 3
    rm -f "$out"
    "$CC_SAN" -std=c11 -g -O1 -fsanitize="$sanitizer" -fno-omit-frame-pointer -pthread -Wall -Wextra -Werror -I include \
        "tools/$name.c" -L"$bin" -lkvcache -Wl,-rpath,"$bin" "$@" -o "$out" 2>&1 | grep -v "Cannot export local symbol" || true
    [[ -x "$out" ]] || fail "tools/$name.c did not compile with -fsanitize=$sanitizer"
}

# run NAME SANITIZER [LABEL]: runs the client, one test in tools/test.sh's count; its
# "NAME: ..." lines become "NAME (LABEL): ..." (default: the sanitizer) so that the count does
# not take its checks twice.
run() {
    local name=$1 sanitizer=$2 label=${3:-$2} status
    set +e
    ASAN_OPTIONS="detect_leaks=1:exitcode=23" TSAN_OPTIONS="halt_on_error=1:exitcode=66" "tools/bin/$1_$2" 2>&1 |
        sed "s/^$name: /$name ($label): /"
    status=${PIPESTATUS[0]}
    set -e
    [[ $status -eq 0 ]] || fail "$name under -fsanitize=$sanitizer, $label (exit $status)"
    passed=$((passed + 1))
}

bin=$(build address asan)
client abi_client address "$bin"
client abi_stress address "$bin"
client abi_churn address "$bin"
client abi_model address "$bin"
run abi_client address
run abi_stress address
run abi_churn address
run abi_model address

bin=$(build thread tsan)
# The control first: tools/tsan_control.c races on K/V bytes on purpose; unreported, the runs
# below could not see such a race either.
client tsan_control thread "$bin" -L"$SWIFT_LIB" -ldispatch -lBlocksRuntime -Wl,-rpath,"$SWIFT_LIB"
control_dir=$(mktemp -d)
set +e
TSAN_OPTIONS="halt_on_error=1:exitcode=66" tools/bin/tsan_control_thread "$control_dir" >/dev/null 2>&1
status=$?
set -e
rm -rf "$control_dir"
[[ $status -eq 66 ]] || fail "tools/tsan_control.c's planted race on K/V bytes went unreported (exit $status)"
echo "tsan_control: ThreadSanitizer reported the planted race on K/V bytes"
passed=$((passed + 1))
for name in abi_stress abi_churn; do
    client "$name" thread "$bin" -L"$SWIFT_LIB" -ldispatch -lBlocksRuntime -Wl,-rpath,"$SWIFT_LIB"
    run "$name" thread
    KVCACHE_OFFLOAD_BACKEND=threads run "$name" thread "thread, thread-pool backend"
done

echo "run_sanitized: no AddressSanitizer, LeakSanitizer or ThreadSanitizer report"
echo "run_sanitized: $passed passed, 0 failed"
