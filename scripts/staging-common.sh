# Shared by install_staging.sh and rollback_staging.sh (sourced, not run).
# shellcheck shell=bash

TTA_USER=tta-user
TTA_GROUP=tta-group
UNIT=tta-staging-carbon.service
UV=${UV:-uv}

say() { printf '%s\n' "$*"; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

# git refuses to work in a repository owned by another user ("dubious ownership");
# /opt/tta/staging belongs to tta-user while these scripts run as root.
git_in() { local dir=$1; shift; git -c safe.directory="$dir" -C "$dir" "$@"; }

# Build/refresh the production venv exactly from uv.lock.
# UV_LINK_MODE=copy: uv hard-links from its cache by default, and the chown that
# follows would then hand root's cache files to tta-user.
sync_venv() {
  local dir=$1
  (cd "$dir" && UV_LINK_MODE=copy "$UV" sync --frozen --no-dev --compile-bytecode --quiet) \
    || die "uv sync --frozen failed in $dir"
}

# chown only what differs, so a second run changes nothing (not even ctimes).
fix_owner() {
  local path=$1 uid=$2 gid=$3
  find "$path" \( ! -uid "$uid" -o ! -gid "$gid" \) -exec chown -h "$uid:$gid" {} +
}
