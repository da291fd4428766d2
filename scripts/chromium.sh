#!/usr/bin/env bash
# Installs Debian's headless Chromium for the dashboard's browser tests (Playwright drives it with
# executable_path=/usr/bin/chromium; nothing is downloaded by Playwright itself). Idempotent.
set -euo pipefail
if [ -x /usr/bin/chromium ]; then
  exit 0
fi
export DEBIAN_FRONTEND=noninteractive
sudo_() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }
echo "installing Debian packages: chromium chromium-driver"
sudo_ apt-get update -q
sudo_ apt-get install -y -q chromium chromium-driver
/usr/bin/chromium --version
