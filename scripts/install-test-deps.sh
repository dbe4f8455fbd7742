#!/usr/bin/env bash
# Debian packages the test suite runs for real (idempotent; a no-op once installed):
#   prometheus              - tests/integration/test_alerts_prometheus.py queries a live server.
#   prometheus-alertmanager - tests/e2e/test_policy_extras.py reads its silences.
set -euo pipefail

sudo_if_needed() {
    if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

missing=()
command -v prometheus >/dev/null 2>&1 || missing+=(prometheus)
command -v prometheus-alertmanager >/dev/null 2>&1 || missing+=(prometheus-alertmanager)

if [ "${#missing[@]}" -gt 0 ]; then
    sudo_if_needed apt-get update -qq
    sudo_if_needed env DEBIAN_FRONTEND=noninteractive \
        apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
