#!/usr/bin/env bash
# Roll the staging carbon daemon back to an earlier commit (the deployment guide's
# rollback procedure, made safe to run unattended). Run as root.
#
# usage: scripts/rollback_staging.sh <commit> [--dir /opt/tta/staging] [--health-timeout 30]
#
#   1. checks <commit> exists and the checkout has no local edits (before stopping anything)
#   2. systemctl stop tta-staging-carbon
#   3. git checkout <commit> in the install dir
#   4. uv sync --frozen --no-dev --compile-bytecode (the lock file of <commit>); code and
#      venv left root's and writable by root only
#   5. systemctl start tta-staging-carbon (Type=notify: returns once the daemon is READY)
#   6. health check: uv run --no-sync python scripts/health_check_carbon.py, retried
#      until it passes with a first measurement recorded, or --health-timeout seconds pass
# exit: 0 rolled back and healthy; 1 any step failed (the message says how to go back).
set -euo pipefail

# Everything runs from main(), parsed in full before it starts: step 3 rewrites this
# very file when it is run from the install dir.
main() {
  local here dir=/opt/tta/staging commit="" health_timeout=30
  here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
  # shellcheck source=staging-common.sh
  . "$here/staging-common.sh"
  while [ $# -gt 0 ]; do
    case "$1" in
      --dir) dir=$2; shift 2 ;;
      --health-timeout) health_timeout=$2; shift 2 ;;
      -h|--help) sed -n '2,16p' "$0"; exit 0 ;;
      -*) die "unknown option: $1" ;;
      *) [ -z "$commit" ] || die "one commit only"; commit=$1; shift ;;
    esac
  done
  [ -n "$commit" ] || die "usage: $0 <commit> (see --help)"
  [ "$(id -u)" = 0 ] || die "run as root (systemctl, chown)"
  umask 022
  [ -e "$dir/.git" ] || die "$dir is not a git checkout (install with scripts/install_staging.sh)"

  local target prev
  target=$(git_in "$dir" rev-parse --verify --quiet "$commit^{commit}") \
    || die "$commit is not a commit in $dir (git -C $dir fetch first?)"
  prev=$(git_in "$dir" rev-parse HEAD)
  [ -z "$(git_in "$dir" status --porcelain --untracked-files=no)" ] \
    || die "$dir has local modifications; refusing to stop the service (git -C $dir status)"
  say "rollback: ${prev:0:12} -> ${target:0:12} in $dir"
  # From here on the service may be down: say how to get back on any failure.
  # (an EXIT trap, not ERR: die() exits without raising ERR)
  trap 'rc=$?; [ $rc = 0 ] || say "rollback FAILED; to return to the previous version: $0 $prev --dir $dir" >&2' EXIT

  systemctl stop "$UNIT"
  say "stopped $UNIT"
  git_in "$dir" checkout --quiet --detach "$target"
  say "checked out ${target:0:12}"
  sync_venv "$dir"
  # Root's, writable by root only, as the installer leaves it (an older install's
  # tta-user-owned tree included): root runs this code in the health check below.
  secure_code "$dir"
  say "venv synced from uv.lock"
  systemctl start "$UNIT"
  say "started $UNIT ($(systemctl show -p MainPID --value "$UNIT"))"

  # --no-sync: never let a health check install dev dependencies into the production venv.
  local deadline=$((SECONDS + health_timeout)) out
  while :; do
    # Healthy is not enough: right after a start there is no measurement yet, and the check
    # (rightly) only warns. The rolled-back code has proved itself once it has measured.
    if out=$(cd "$dir" && "$UV" run --no-sync python scripts/health_check_carbon.py 2>&1) \
        && grep -q '^✅ Last measurement:' <<<"$out"; then
      printf '%s\n' "$out"
      say "rollback to ${target:0:12} done; health check OK and a measurement was recorded"
      return 0
    fi
    if [ $SECONDS -ge $deadline ]; then
      printf '%s\n' "$out"
      die "health check still failing after ${health_timeout}s"
    fi
    sleep 2
  done
}

main "$@"
