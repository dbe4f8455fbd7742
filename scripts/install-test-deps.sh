#!/usr/bin/env bash
# Debian packages the test suite runs for real (idempotent; a no-op once installed):
#   prometheus - tests/integration/test_alerts_prometheus.py queries a live server.
set -euo pipefail

sudo_if_needed() {
    if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

if ! command -v prometheus >/dev/null 2>&1; then
    sudo_if_needed apt-get update -qq
    sudo_if_needed env DEBIAN_FRONTEND=noninteractive \
        apt-get install -y -qq --no-install-recommends prometheus >/dev/null
fi
