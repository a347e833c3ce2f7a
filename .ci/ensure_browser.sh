#!/usr/bin/env bash
# Installs Debian's chromium + chromium-driver for the browser tests when they are missing.
# Never downloads a browser build of its own; the tests skip with a reason if this fails.
set -u
if command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1; then
  exit 0
fi
if [ "$(id -u)" != "0" ] || ! command -v apt-get >/dev/null 2>&1; then
  echo "ensure_browser: chromium/chromedriver missing and cannot apt-get here; browser tests will skip" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq >/dev/null 2>&1 || true
apt-get install -y -qq chromium chromium-driver >/dev/null 2>&1 \
  || { echo "ensure_browser: apt-get install chromium chromium-driver failed; browser tests will skip" >&2; exit 1; }
