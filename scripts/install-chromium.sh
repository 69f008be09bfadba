#!/usr/bin/env bash
# Install headless Chromium and its matching chromedriver (Debian packages) for the UI tests
# (facepipe_tests/test_ui.py). Idempotent: does nothing when both binaries are already there.
set -euo pipefail

CHROMIUM=/usr/bin/chromium
CHROMEDRIVER=/usr/bin/chromedriver

if [[ -x "$CHROMIUM" && -x "$CHROMEDRIVER" ]]; then
    echo "install-chromium: $("$CHROMIUM" --version 2>/dev/null || echo chromium) and chromedriver already installed"
    exit 0
fi

if [[ "$(id -u)" -ne 0 ]]; then
    if command -v sudo >/dev/null 2>&1; then
        exec sudo --preserve-env=DEBIAN_FRONTEND bash "$0" "$@"
    fi
    echo "install-chromium: must run as root (or with sudo) to apt-get install chromium chromium-driver" >&2
    exit 1
fi

export DEBIAN_FRONTEND=noninteractive
apt-get update
apt-get install -y chromium chromium-driver

"$CHROMIUM" --version
"$CHROMEDRIVER" --version
