#!/usr/bin/env bash
# One command that sets zippy-fs up on a fresh Debian 12 machine (run as root, or with sudo
# available): installs the Debian packages it needs (only those missing), the npm packages
# (npm ci), builds the native addons (the patched FUSE binding, CRC-32) and the TypeScript, and
# links the commands.
set -euo pipefail
cd "$(dirname "$0")"

packages=(fuse libfuse2 libfuse-dev pkg-config g++ make python3 rsync zip unzip openssh-server openssh-client rclone sqlite3 attr git)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
if [ "${#missing[@]}" -gt 0 ]; then
  echo "setup: installing Debian packages: ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi

npm ci --no-audit --no-fund
npm run build:native
npm run build
# Put zippy-fs, zippy-sync, zippy-fsck, zippy-export and zippy-key on the PATH.
$SUDO npm link --no-audit --no-fund >/dev/null 2>&1 || echo "setup: npm link failed; use ./bin/zippy-fs.js etc. directly"
echo "setup: done"
