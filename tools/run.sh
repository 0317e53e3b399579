#!/usr/bin/env bash
# The main job: installs what is missing, builds the CLI in release mode and runs
# `kvcache load` on the bundled Mooncake conversation trace with the default configuration.
# With arguments, runs `kvcache ARGS...` instead.
set -euo pipefail
cd "$(dirname "$0")/.."
tools/install-deps.sh
swift build -c release --product kvcache-cli >&2
BIN="$(swift build -c release --show-bin-path)"
if [ $# -eq 0 ]; then
    set -- load --trace traces/mooncake_conversation_trace.jsonl
fi
exec "$BIN/kvcache-cli" "$@"
