#!/usr/bin/env bash
# Headless Chromium + chromedriver for tests/test_browser.py, from the distribution's packages.
# Used by `make browser-deps` (a prerequisite of `make test`) and by the test itself as a fallback.
# Exit 0 when both are present afterwards, 1 otherwise (with the reason on stderr).
set -u
have() { command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1; }
if have && command -v chromedriver >/dev/null 2>&1; then
  exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "browser_deps: no apt-get here; install Chromium and chromedriver yourself" >&2
  exit 1
fi
SUDO=""
if [ "$(id -u)" != "0" ]; then
  if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then SUDO="sudo -n"; else
    echo "browser_deps: not root and no password-less sudo; run: sudo apt-get install -y chromium chromium-driver" >&2
    exit 1
  fi
fi
export DEBIAN_FRONTEND=noninteractive
# Debian names them chromium / chromium-driver; Ubuntu's chromium is a snap stub, so try the list in order
if ! $SUDO apt-get install -y -q chromium chromium-driver >/tmp/maskpipe-browser-deps.log 2>&1; then
  $SUDO apt-get update -q >>/tmp/maskpipe-browser-deps.log 2>&1
  $SUDO apt-get install -y -q chromium chromium-driver >>/tmp/maskpipe-browser-deps.log 2>&1 || \
    $SUDO apt-get install -y -q chromium-browser chromium-chromedriver >>/tmp/maskpipe-browser-deps.log 2>&1
fi
if have && command -v chromedriver >/dev/null 2>&1; then
  echo "browser_deps: installed $(chromium --version 2>/dev/null || chromium-browser --version)"
  exit 0
fi
echo "browser_deps: Chromium could not be installed (log: /tmp/maskpipe-browser-deps.log):" >&2
tail -5 /tmp/maskpipe-browser-deps.log >&2
exit 1
