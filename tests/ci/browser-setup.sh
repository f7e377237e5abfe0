#!/usr/bin/env bash
# Make Debian's chromium ready for the browser tests (tests/test_ui_browser.py).
#
# Called by .ci/run (as root, on a fresh Debian machine) before the tests, and
# safe to run again at any time: it installs the `chromium` package only when
# /usr/bin/chromium is missing, then says which browser the tests will drive.
# Playwright drives this browser through executable_path; it never downloads
# one (`playwright install` is not used anywhere).
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive NEEDRESTART_SUSPEND=1

CHROMIUM=/usr/bin/chromium

if [[ -x "$CHROMIUM" ]]; then
  echo "browser-setup: $CHROMIUM is already installed"
else
  echo "browser-setup: installing Debian's chromium"
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends chromium fonts-dejavu-core >/dev/null
fi
"$CHROMIUM" --version 2>/dev/null | grep -i chromium || { echo "browser-setup: $CHROMIUM does not run" >&2; exit 1; }
