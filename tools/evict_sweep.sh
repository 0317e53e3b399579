#!/usr/bin/env bash
# Reproduces the eviction numbers in README.md ("`kvcache-cli evict-eval` results") and the
# sensitivity sweep in docs/token-eviction.md: the default evaluation
# (both synthetic traces, every policy, budgets 10/20/50%, with JSON and SVG in
# docs/eviction/), then two sensitivity sweeps at a 20% budget:
#   long-decode:  per-query logit noise 1, 2, 3 x H2O recent window 50% or 10% of the budget,
#                 noise 1 with windows of 25, 5 and 0%, and the per-query noise fitted to
#                 SmolLM2-135M (tools/real_attention/) with windows of 50, 25, 10 and 5%
#   topic-return: seeds 1..5 x Gaussian noise of norm 0 (default), 0.5 and 1 added to the
#                 (unit) sentence embeddings
#   topic-return: seeds 1..5 with per-head kept sets (--per-head; episodic-offload too)
# Usage: tools/evict_sweep.sh   (builds kvcache-cli in release first unless CLI names a binary;
#                               about 3 minutes)
set -euo pipefail
if [ $# -gt 0 ]; then
    # It takes no argument: one given (--help) must not rebuild and overwrite docs/eviction/.
    echo "usage: tools/evict_sweep.sh   (no arguments; env CLI names a kvcache-cli binary, else it builds one;" >&2
    echo "       rewrites docs/eviction/results.json and recall.svg)" >&2
    exit 2
fi
case "${CLI:-}" in ""|/*) ;; *) CLI="$PWD/$CLI" ;; esac  # a relative CLI is the caller's
cd "$(dirname "$0")/.."
if [ -z "${CLI:-}" ]; then
    swift build -c release --product kvcache-cli >/dev/null
    CLI="$(swift build -c release --show-bin-path)/kvcache-cli"
fi
cli="$CLI"
mkdir -p docs/eviction

echo "## default: $cli evict-eval --json docs/eviction/results.json --plot docs/eviction/recall.svg"
"$cli" evict-eval --json docs/eviction/results.json --plot docs/eviction/recall.svg 2>/dev/null

echo
echo "## long-decode at 20%: query noise x recent window"
echo "| query noise | recent window | streaming | tova | h2o | h2o-norm | oracle |"
echo "|---|---|---|---|---|---|---|"
# One row: query noise label, recent window, then the noise options.
sensitivity_row() {
    local label=$1 recent=$2
    shift 2
    row=$("$cli" evict-eval --synthetic long-decode --budgets 0.2 --policies streaming,tova,h2o,h2o-norm,oracle \
          --recent-ratio "$recent" "$@" 2>/dev/null | awk -F'|' '/^\| long-decode/ {gsub(/ /, "", $5); printf " %s |", $5}')
    echo "| $label | $recent |$row"
}
for noise in 1 2 3; do
    for recent in 0.5 0.1; do sensitivity_row "$noise" "$recent" --query-noise "$noise"; done
done
for recent in 0.25 0.05 0; do sensitivity_row 1 "$recent" --query-noise 1; done
# The per-query noise fitted to SmolLM2-135M: N(0, 0.6^2), 5% spikes N(0, 4^2).
for recent in 0.5 0.25 0.1 0.05; do
    sensitivity_row fitted "$recent" --query-noise 0.6 --spike-probability 0.05 --spike-noise 4
done

echo
echo "## topic-return at 20%: recall over the return turn, per seed and embedding noise"
echo "| embedding noise | seed | streaming | tova | h2o | h2o-norm | episodic | episodic-offload |"
echo "|---|---|---|---|---|---|---|---|"
for emb in 0 0.5 1; do
    for seed in 1 2 3 4 5; do
        row=$("$cli" evict-eval --synthetic topic-return --budgets 0.2 --policies streaming,tova,h2o,h2o-norm,episodic,episodic-offload \
              --seed "$seed" --embedding-noise "$emb" 2>/dev/null | awk -F'|' '/^\| topic-return/ {gsub(/ /, "", $7); printf " %s |", $7}')
        echo "| $emb | $seed |$row"
    done
done

echo
echo "## topic-return at 20%, per-head kept sets: recall over the return turn, per seed"
echo "| seed | streaming | tova | h2o | h2o-norm | episodic | episodic-offload |"
echo "|---|---|---|---|---|---|---|"
for seed in 1 2 3 4 5; do
    row=$("$cli" evict-eval --synthetic topic-return --budgets 0.2 --policies streaming,tova,h2o,h2o-norm,episodic,episodic-offload \
          --seed "$seed" --per-head 2>/dev/null | awk -F'|' '/^\| topic-return/ {gsub(/ /, "", $7); printf " %s |", $7}')
    echo "| $seed |$row"
done
