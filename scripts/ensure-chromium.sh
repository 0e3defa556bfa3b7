#!/usr/bin/env bash
# Make sure Debian's Chromium is installed (/usr/bin/chromium): the page tests drive it with
# Playwright, which is told to use it (no browser download). As root the package is installed
# when missing; otherwise the command says what to install.
set -euo pipefail
if [ -x /usr/bin/chromium ]; then
  echo "chromium: $(/usr/bin/chromium --version 2>/dev/null || echo installed)"
  exit 0
fi
if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
  echo "chromium: installing Debian's chromium package"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
  exit 0
fi
echo "chromium: /usr/bin/chromium is missing. Install it with:" >&2
echo "    sudo apt-get install chromium" >&2
exit 1
