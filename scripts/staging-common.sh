# Shared by install_staging.sh and rollback_staging.sh (sourced, not run).
# shellcheck shell=bash

TTA_USER=tta-user
TTA_GROUP=tta-group
UNIT=tta-staging-carbon.service
PRUNE_UNIT=tta-staging-carbon-prune.service
PRUNE_TIMER=tta-staging-carbon-prune.timer
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
# UV_PYTHON_DOWNLOADS=never: an interpreter uv downloads lands under /root, which the
# unit's ProtectHome= hides (203/EXEC); fail instead (docs/deployment.md, Python 3.12).
sync_venv() {
  local dir=$1
  (cd "$dir" && UV_LINK_MODE=copy UV_PYTHON_DOWNLOADS=${UV_PYTHON_DOWNLOADS:-never} \
      "$UV" sync --frozen --no-dev --compile-bytecode --quiet) \
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

# Where the sandbox of tta-staging-carbon.service cannot see: ProtectHome= hides /root
# and /home, PrivateTmp= gives it its own /tmp and /var/tmp. Prints the hidden top dir.
hidden_dir() {
  case "$1" in
    /root|/root/*) echo /root ;;
    /home|/home/*) echo /home ;;
    /tmp|/tmp/*) echo /tmp ;;
    /var/tmp|/var/tmp/*) echo /var/tmp ;;
    *) return 1 ;;
  esac
}

# UV_PYTHON as a path: refuse (one line, before anything changes) one the service could
# not run. A version request such as "3.12" is left to uv and checked after the sync.
check_uv_python() {
  local given=${UV_PYTHON:-} real top why=
  case "$given" in */*) ;; *) return 0 ;; esac
  if top=$(hidden_dir "$given"); then why="is under $top"
  elif ! real=$(realpath -e -- "$given" 2>/dev/null) || [ ! -x "$real" ]; then
    die "UV_PYTHON=$given: no such executable (docs/deployment.md, Python 3.12)"
  elif top=$(hidden_dir "$real"); then why="resolves to $real, under $top"
  fi
  [ -z "$why" ] || die "UV_PYTHON=$given $why, which the service's sandbox hides (ProtectHome=/PrivateTmp=: status 203/EXEC); use a Python 3.12 under /usr or /opt (docs/deployment.md, Python 3.12)"
}
