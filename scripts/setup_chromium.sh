#!/usr/bin/env bash
# Install Debian's chromium for the dashboard's browser tests (tests/e2e, driven by playwright
# with executable_path=/usr/bin/chromium, so playwright never downloads a browser).
#
# Best effort by default, like WordNet: a machine without apt or root gets a warning. With
# --require (what .ci/run passes) a missing browser is an error, because the e2e tests fail
# without it.
set -euo pipefail

CHROMIUM="${SEC_E2E_CHROMIUM:-/usr/bin/chromium}"
require=false
[[ "${1:-}" == "--require" ]] && require=true

give_up() {
    if $require; then
        echo "error: $1" >&2
        exit 1
    fi
    echo "warning: $1; the browser tests (tests/e2e) will fail" >&2
    exit 0
}

if [[ -x "$CHROMIUM" ]]; then
    echo "chromium present: $("$CHROMIUM" --version 2>/dev/null || echo "$CHROMIUM")"
    exit 0
fi
if ! command -v apt-get >/dev/null || [[ "$(id -u)" != 0 ]]; then
    give_up "$CHROMIUM is missing and apt-get (as root) is unavailable"
fi
export DEBIAN_FRONTEND=noninteractive
apt-get install -y --no-install-recommends chromium >/dev/null \
    || { apt-get update >/dev/null && apt-get install -y --no-install-recommends chromium >/dev/null; } \
    || give_up "could not install chromium with apt"
[[ -x "$CHROMIUM" ]] || give_up "chromium installed but $CHROMIUM is not there"
echo "chromium installed: $("$CHROMIUM" --version 2>/dev/null)"
