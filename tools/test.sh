#!/usr/bin/env bash
# The test command: installs what is missing, runs every Swift test (all modules), then the C
# clients against the release libkvcache.so: the ABI client (which also checks that only kvc_*
# symbols are exported and that kvc_hash_tokens agrees across two processes), the
# multi-threaded stress client and the whole-process RSS check; then the C clients against AddressSanitizer and ThreadSanitizer
# builds (tools/run_sanitized.sh: any report fails the run; each sanitized client run counts as
# one test, and so does an abi_stress run; abi_churn's runs are there only); then tools/bench_ratio_test.py, the benchmark
# verdicts' checks on fixture files. Ends with one line
# "tests: N passed, M failed"; exits non-zero when anything fails.
set -uo pipefail
cd "$(dirname "$0")/.."
tools/install-deps.sh || exit 1
log="$(mktemp -d)"
trap 'rm -rf "$log"' EXIT

# What the tests run: the test bundle, and the CLI that the CLI tests start as a process.
# Not `--build-tests`: that also builds the benchmark targets (and the benchmark package),
# which nothing here runs; tools/bench_ratio_test.py checks the verdicts on fixture files.
swift build --product KVCacheEnginePackageTests || exit 1
swift build --product kvcache-cli || exit 1
swift test --skip-build 2>&1 | tee "$log/swift.txt"
swift_status=${PIPESTATUS[0]}
tools/run_abi_client.sh 2>&1 | tee "$log/abi.txt"
abi_status=${PIPESTATUS[0]}

BIN="$(swift build -c release --show-bin-path)"
mkdir -p tools/bin
gcc -std=c11 -O2 -Wall -Wextra -Werror -Iinclude tools/rss_check.c -L"$BIN" -lkvcache -Wl,-rpath,"$BIN" -o tools/bin/rss_check
tools/bin/rss_check 2>&1 | tee "$log/rss.txt"
rss_status=${PIPESTATUS[0]}
tools/run_sanitized.sh 2>&1 | tee "$log/sanitized.txt"
sanitized_status=${PIPESTATUS[0]}
python3 tools/bench_ratio_test.py 2>&1 | tee "$log/bench_ratio.txt"
bench_ratio_status=${PIPESTATUS[0]}

# Totals: Swift Testing's tests from its summary line "Test run with N tests" (a
# parameterized test counts once; per-test lines can interleave under parallel runs, so they
# are not counted), less those that failed, and the C clients' own "name: N passed, M failed"
# lines.
swift_total=$(sed -nE 's/.*Test run with ([0-9]+) tests? .*/\1/p' "$log/swift.txt" | tail -1)
swift_failed=$(grep -oE '✘ Test ("[^"]*"|[^ ]+) (recorded an issue|failed)' "$log/swift.txt" | sed -E 's/ (recorded an issue|failed)$//' | sort -u | wc -l)
swift_passed=$(( ${swift_total:-0} - swift_failed ))
read -r c_passed c_failed < <(cat "$log/abi.txt" "$log/rss.txt" "$log/sanitized.txt" "$log/bench_ratio.txt" | sed -nE 's/^[a-z_]+: ([0-9]+) passed, ([0-9]+) failed$/\1 \2/p' | awk '{p+=$1; f+=$2} END {print p+0, f+0}')
failed=$((swift_failed + c_failed))
[ "$swift_status" -eq 0 ] && [ "$abi_status" -eq 0 ] && [ "$rss_status" -eq 0 ] && [ "$sanitized_status" -eq 0 ] && [ "$bench_ratio_status" -eq 0 ] || failed=$((failed > 0 ? failed : 1))
echo "tests: $((swift_passed + c_passed)) passed, $failed failed"
[ "$failed" -eq 0 ]
