#!/usr/bin/env bash
# Installs headless Chromium and its WebDriver from Debian's packages, once (idempotent).
# The browser test uses /usr/bin/chromium and /usr/bin/chromedriver; nothing is downloaded
# from outside the distribution's package archive.
set -euo pipefail

if [ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ]; then
  exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  SUDO="sudo"
fi

export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends chromium chromium-driver fonts-dejavu-core
