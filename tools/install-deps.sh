#!/usr/bin/env bash
# Installs the Debian packages the build and tests need, when they are missing:
# liburing-dev and libnuma-dev (linked by CKVMemory), gcc (the C clients), fio and jq
# (tools/fio_compare.sh), python3 (tools/bench_ratio_test.py, the benchmark reports).
set -euo pipefail
need=()
for pkg in liburing-dev libnuma-dev gcc fio jq python3; do
    dpkg -s "$pkg" >/dev/null 2>&1 || need+=("$pkg")
done
if [ ${#need[@]} -gt 0 ]; then
    echo "install-deps: installing ${need[*]}" >&2
    sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${need[@]}" >/dev/null
fi
