# Shared by install_staging.sh and rollback_staging.sh (sourced, not run).
# shellcheck shell=bash

TTA_USER=tta-user
TTA_GROUP=tta-group
UNIT=tta-staging-carbon.service
UV=${UV:-uv}

say() { printf '%s\n' "$*"; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

# git refuses to work in a repository owned by another user ("dubious ownership"). The
# install dir is root's, but one made by an older installer still belongs to tta-user
# until secure_code has run over it.
git_in() { local dir=$1; shift; git -c safe.directory="$dir" -C "$dir" "$@"; }

# Build/refresh the production venv exactly from uv.lock.
# UV_LINK_MODE=copy: uv hard-links from its cache by default; the venv must not share
# inodes with root's cache (a chmod below, or a cache clean, would reach both).
sync_venv() {
  local dir=$1
  (cd "$dir" && UV_LINK_MODE=copy "$UV" sync --frozen --no-dev --compile-bytecode --quiet) \
    || die "uv sync --frozen failed in $dir"
}

# Code, venv and scripts are root's and writable by root only: root runs them (the
# installer, rollback, the health check, `uv run`), so a file the service account could
# change would be a path from tta-user to root. Only what differs is changed, so a
# second run changes nothing (not even ctimes). uv creates .venv/.lock 0666: fixed here.
secure_code() {
  local path=$1
  find "$path" \( ! -uid 0 -o ! -gid 0 \) -exec chown -h 0:0 {} +
  find "$path" ! -type l -perm /022 -exec chmod go-w {} +
}
