#!/usr/bin/env bash
# The main job: installs what is missing, builds the CLI in release mode and runs
# `kvcache-cli load` on the bundled Mooncake conversation trace (its first 2000 requests) with the
# default engine configuration, in a 4-layer model shape: Mooncake prompts average 12k tokens,
# which at the default 32 layers would take 1.5 GiB of K/V each. `tools/run.sh main OPTIONS...`
# runs the main job with more `load` options (for example `--layout contiguous --reserve`).
# With other arguments, runs `kvcache-cli ARGS...` instead.
set -euo pipefail
cd "$(dirname "$0")/.."
tools/install-deps.sh
swift build -c release --product kvcache-cli >&2
BIN="$(swift build -c release --show-bin-path)"
if [ $# -eq 0 ] || [ "$1" = main ]; then
    [ $# -eq 0 ] || shift
    set -- load --trace traces/mooncake_conversation_trace.jsonl --requests 2000 --layers 4 \
        --memory 4GiB --max-prompt-tokens 16384 --output-max 256 "$@"
fi
exec "$BIN/kvcache-cli" "$@"
