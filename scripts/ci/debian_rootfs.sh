#!/usr/bin/env bash
# A pristine Debian 12 (bookworm) root file system for tests/system/test_debian_boot.py,
# built once with mmdebstrap and cached outside any checkout, keyed by this script's hash
# (the package list below is part of it): a change to the recipe builds a new one.
#
# usage: scripts/ci/debian_rootfs.sh        prints the cached rootfs directory (builds it if absent)
#   TTA_CI_CACHE   cache directory (default /var/cache/tta-staging-carbon-ci)
#
# Uses the host's apt sources (mmdebstrap's default for the same suite), so the image
# holds everything the deployment guide's commands install: there is no network inside
# the booted container (systemd-nspawn --private-network). Needs root and mmdebstrap.
set -euo pipefail

PACKAGES=(
  # systemd as PID 1
  systemd systemd-sysv dbus
  # docs/deployment.md: dependencies and the runbook's tools; sudo: the guide's commands use it
  git curl jq logrotate ca-certificates procps iproute2 sudo
  # "uv, on every OS": python3 -m venv /opt/uv (python3-venv brings ensurepip's pip)
  python3-venv
  # "Prometheus and Alertmanager"
  prometheus prometheus-alertmanager
  # shared libraries of the Python 3.12 placed under /opt/python3.12 (what python.org's
  # build links against with the guide's -dev packages)
  libssl3 libsqlite3-0 libffi8 libbz2-1.0 liblzma5 zlib1g libreadline8 libncursesw6
  libtinfo6 libexpat1 libuuid1 libgdbm6 libgdbm-compat4 libtirpc3 libnsl2 libcrypt1
)

cache=${TTA_CI_CACHE:-/var/cache/tta-staging-carbon-ci}
key=$(sha256sum "${BASH_SOURCE[0]}" | cut -c1-16)
dest=$cache/rootfs-bookworm-$key

[ "$(id -u)" = 0 ] || { echo "error: needs root (mmdebstrap, chown in the image)" >&2; exit 1; }
command -v mmdebstrap >/dev/null || { echo "error: mmdebstrap not installed (apt-get install mmdebstrap)" >&2; exit 1; }
mkdir -p "$cache"
exec 9>"$cache/.rootfs.lock"
flock 9   # one build at a time; a second caller waits and then finds it built
if [ ! -f "$dest/.complete" ]; then
  rm -rf -- "$dest.tmp"
  echo "debian_rootfs: building $dest (mmdebstrap bookworm)" >&2
  mmdebstrap --quiet --variant=important --include="$(IFS=,; echo "${PACKAGES[*]}")" \
    --customize-hook='rm -f "$1"/etc/machine-id "$1"/var/lib/dbus/machine-id' \
    --customize-hook='echo tta-boot > "$1"/etc/hostname' \
    bookworm "$dest.tmp" >&2
  touch "$dest.tmp/.complete"
  # Older recipes' images are no longer used: keep the cache to one image.
  for old in "$cache"/rootfs-bookworm-*; do
    [ "$old" = "$dest.tmp" ] || [ ! -d "$old" ] || rm -rf -- "$old"
  done
  mv "$dest.tmp" "$dest"
fi
printf '%s\n' "$dest"
