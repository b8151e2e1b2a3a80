#!/usr/bin/env bash
# What only the test suite needs beyond .ci/install-env.sh (make test runs it; make train does not): Debian's
# Chromium, which the web UI's browser tests drive through Playwright (no browser download), and a CJK font,
# so that the Chinese page (and its README screenshot) shows characters rather than empty boxes.
# Never fails the caller: another apt-get or dpkg holding the lock is waited for (APT_LOCK_WAIT seconds,
# default 120), then the extras are skipped with a message; the browser tests skip without Chromium.
set -uo pipefail
WAIT="${APT_LOCK_WAIT:-120}"

need=()
[ -x "${LAUNCHER_CHROMIUM:-/usr/bin/chromium}" ] || need+=(chromium)
if ! fc-list :lang=zh 2>/dev/null | grep -q .; then need+=(fonts-wqy-microhei); fi
[ "${#need[@]}" -eq 0 ] && exit 0
if [ "$(id -u)" != "0" ] || ! command -v apt-get >/dev/null 2>&1; then
  echo "[test extras] skipped: ${need[*]} (needs root and apt-get); the web UI's browser tests will skip"
  exit 0
fi
# DPkg::Lock::Timeout makes apt-get wait for the dpkg lock instead of failing at once (apt >= 1.9.11).
apt_get() { DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout="$WAIT" "$@"; }
echo "[test extras] installing ${need[*]} for the web UI's browser tests (waiting up to ${WAIT}s for a busy apt)"
if apt_get update -qq && apt_get install -y -qq "${need[@]}" >/dev/null; then
  exit 0
fi
echo "[test extras] skipped: apt-get could not install ${need[*]} (the package manager busy for more than" \
     "${WAIT}s, or offline); the web UI's browser tests will skip. Rerun make test when apt is free."
exit 0
