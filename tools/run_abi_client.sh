#!/usr/bin/env bash
# Builds libkvcache.so (release), checks that it exports exactly the kvc_* functions of
# include/kvcache.h, checks that block hashes agree across processes, and runs tools/abi_client.c
# against the library the way an inference server links it, tools/abi_dlopen.c (a host that
# loads and unloads it as a plugin), tools/abi_signals.c (a host's signal dispositions),
# tools/cffi_check.py (cffi parses the header), then tools/abi_stress.c (several
# server threads on one engine) and tools/abi_model.c (random calls checked against a model);
# then builds and briefly runs the docs' reproducers (tools/repro/build.sh).
#
#   tools/run_abi_client.sh
#
# Environment: KVC_SCRATCH_PATH overrides SwiftPM's scratch path (default: .build, as CI uses);
# CC overrides the C compiler (default gcc).
set -euo pipefail
cd "$(dirname "$0")/.."

scratch=()
if [[ -n "${KVC_SCRATCH_PATH:-}" ]]; then scratch=(--scratch-path "$KVC_SCRATCH_PATH"); fi
fail() { echo "run_abi_client: FAILED: $*" >&2; exit 1; }

echo "run_abi_client: building libkvcache.so (release)"
swift build -c release "${scratch[@]}" --product kvcache
BIN=$(swift build -c release "${scratch[@]}" --show-bin-path)
LIB="$BIN/libkvcache.so"
[[ -f "$LIB" ]] || fail "$LIB was not built"

# Exports: every global defined dynamic symbol is a kvc_* function in version node KVC_1.0, or
# in a later node (KVC_1.1 .. KVC_1.4) exactly when include/kvcache.map lists it there, besides the
# nodes' own absolute symbols, and every function the header declares is exported. (gold also
# lists a few LOCAL-binding entries in .dynsym for GOT relocations against Swift type metadata;
# they are not exported: nothing can bind them.)
nodes=(KVC_1.0 KVC_1.1 KVC_1.2 KVC_1.3 KVC_1.4)
later=("${nodes[@]:1}")
versioned=$(nm -D --defined-only --extern-only --with-symbol-versions "$LIB" | awk '{print $NF}' | grep -vxE 'KVC_1\.[0-4]' | sort)
unversioned=$(grep -vE '@@KVC_1\.[0-4]$' <<<"$versioned" || true)
[[ -z "$unversioned" ]] || fail "libkvcache.so exports symbols outside version nodes ${nodes[*]}: $unversioned"
for node in "${later[@]}"; do
    listed=$(sed -n "/^${node//./\\.} {/,/}/p" include/kvcache.map | grep -oE '\bkvc_[a-z_0-9]+' | sort)
    held=$(grep "@@${node//./\\.}\$" <<<"$versioned" | sed "s/@@${node//./\\.}\$//" | sort || true)
    [[ -n "$listed" && "$listed" == "$held" ]] ||
        fail "version node $node holds [$held], include/kvcache.map lists [$listed]"
done
exported=$(sed -E 's/@@KVC_1\.[0-4]$//' <<<"$versioned" | sort)
others=$(grep -v '^kvc_' <<<"$exported" || true)
[[ -z "$others" ]] || fail "libkvcache.so exports symbols other than kvc_*: $others"
declared=$(grep -oE '\bkvc_[a-z_0-9]+\(' include/kvcache.h | tr -d '(' | sort -u)
missing=$(comm -23 <(echo "$declared") <(echo "$exported"))
[[ -z "$missing" ]] || fail "declared in include/kvcache.h but not exported: $missing"
extra=$(comm -13 <(echo "$declared") <(echo "$exported"))
[[ -z "$extra" ]] || fail "exported but not declared in include/kvcache.h: $extra"
echo "run_abi_client: exports OK: $(wc -l <<<"$exported") kvc_* functions, nothing else"

mkdir -p tools/bin
${CC:-gcc} -std=c11 -Wall -Wextra -Werror -O2 -I include tools/abi_client.c \
    -L"$BIN" -lkvcache -Wl,-rpath,"$BIN" -o tools/bin/abi_client
# A client records the version node of what it calls, so that an older library without it is
# refused when the client starts, not at its first call of a missing function.
for node in "${nodes[@]}"; do
    readelf -V tools/bin/abi_client | grep -q "Name: ${node//./\\.}" ||
        fail "tools/bin/abi_client does not record libkvcache.so's version node $node"
done
echo "run_abi_client: abi_client requires version nodes ${nodes[*]}"

# The block hash must not depend on the process (no per-process seed): two runs agree.
first=$(tools/bin/abi_client hashes)
second=$(tools/bin/abi_client hashes)
[[ -n "$first" ]] || fail "abi_client hashes printed nothing"
[[ "$first" == "$second" ]] || fail "block hashes differ between two processes"
echo "run_abi_client: hashes agree across processes ($(wc -l <<<"$first") lines: a chain, then the same tokens salted)"

# ...and with tools/block_hash.py, written from the header's documentation for clients that do
# not link the library. The tokens are those of print_hashes() in tools/abi_client.c.
if command -v python3 >/dev/null && [[ -f tools/block_hash.py ]]; then
    python_hashes=$(python3 - <<'PY'
import sys
sys.path.insert(0, "tools")
from block_hash import chain
tokens = [-i * 31 if i % 3 == 0 else i * 7919 for i in range(1000)]
print("\n".join("%016x" % h for h in chain(tokens, 16)))
print("salt 0x5a17")
print("\n".join("%016x" % h for h in chain(tokens, 16, 0x5A17)))
PY
)
    [[ "$first" == "$python_hashes" ]] || fail "kvc_hash_tokens differs from tools/block_hash.py"
    echo "run_abi_client: hashes agree with tools/block_hash.py"
    # Its command line prints the same salted chain (decimal), and refuses a bad block size
    # with a usage error (exit 2), not a traceback.
    tokens=$(python3 -c 'print(" ".join(str(-i * 31 if i % 3 == 0 else i * 7919) for i in range(1000)))')
    # shellcheck disable=SC2086  # one argument per token
    cli_hashes=$(python3 tools/block_hash.py --salt 0x5a17 16 $tokens |
        python3 -c 'import sys; print("\n".join("%016x" % int(line) for line in sys.stdin))')
    [[ "$cli_hashes" == "$(sed -n '/^salt 0x5a17$/,$p' <<<"$first" | tail -n +2)" ]] ||
        fail "tools/block_hash.py's command line differs from kvc_hash_tokens_salted"
    set +e
    python3 tools/block_hash.py 0 1 2>/dev/null
    status=$?
    set -e
    [[ $status -eq 2 ]] || fail "tools/block_hash.py 0 1 exited $status, not 2 (usage error)"
    echo "run_abi_client: tools/block_hash.py's command line agrees and refuses a block size of 0"
fi

tools/bin/abi_client

# A host that loads the library as a plugin, 1100 times over (tools/abi_dlopen.c).
${CC:-gcc} -std=c11 -Wall -Wextra -Werror -O2 -I include tools/abi_dlopen.c -ldl -pthread -o tools/bin/abi_dlopen
tools/bin/abi_dlopen "$LIB"

# A host's fatal-signal dispositions survive loading the library (the Swift runtime's crash
# handler is undone), and SWIFT_BACKTRACE keeps the runtime's handlers (tools/abi_signals.c).
${CC:-gcc} -std=c11 -Wall -Wextra -Werror -O2 -I include tools/abi_signals.c -ldl -o tools/bin/abi_signals
tools/bin/abi_signals "$LIB"
SWIFT_BACKTRACE=enable=yes tools/bin/abi_signals "$LIB" backtrace

# cffi's ABI mode parses the preprocessed header whole and sees the status codes
# (tools/cffi_check.py; skipped when cffi is not installed).
if command -v python3 >/dev/null; then
    set +e
    python3 tools/cffi_check.py "$LIB"
    status=$?
    set -e
    [[ $status -eq 0 || $status -eq 77 ]] || fail "tools/cffi_check.py exited $status"
    [[ $status -eq 77 ]] && echo "run_abi_client: cffi not installed: tools/cffi_check.py skipped"
fi

# Several server threads on one engine at once, every byte checked (tools/abi_stress.c).
${CC:-gcc} -std=c11 -Wall -Wextra -Werror -O2 -pthread -I include tools/abi_stress.c \
    -L"$BIN" -lkvcache -Wl,-rpath,"$BIN" -o tools/bin/abi_stress
tools/bin/abi_stress

# Thousands of random calls checked against a model of what the engine must hold (tools/abi_model.c).
${CC:-gcc} -std=c11 -Wall -Wextra -Werror -O2 -I include tools/abi_model.c \
    -L"$BIN" -lkvcache -Wl,-rpath,"$BIN" -o tools/bin/abi_model
tools/bin/abi_model

# The reproducers the docs cite (tools/repro/*.c), built with -Wall -Wextra -Werror and run
# once each at a small size, so that none rots.
tools/repro/build.sh "$BIN" --run
