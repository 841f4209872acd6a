#!/usr/bin/env bash
# Install (or update) the carbon daemon for staging: the deployment guide's
# sections 1-3 as one idempotent script. Run as root.
#
# usage: [UV_PYTHON=/path/to/python3.12] scripts/install_staging.sh [--root DIR] [--src REPO] [--no-sync]
#   --root DIR   install into DIR instead of / (also: DESTDIR=DIR); DIR/etc/passwd and
#                DIR/etc/group must exist (users are added there with useradd --prefix).
#                The venv is built in place, so it only runs once DIR is the root (image,
#                chroot, container); systemctl is never called for a --root install.
#   --src REPO   git checkout to deploy (default: the checkout holding this script, e.g.
#                /usr/local/src/tta-staging-carbon at the release tag; docs/deployment.md).
#                Its committed HEAD is deployed; uncommitted changes are not.
#   --no-sync    skip `uv sync` (file layout only).
#   UV_PYTHON    the Python 3.12 to build the venv with (uv's own variable), e.g.
#                /usr/bin/python3.12 (Ubuntu) or /opt/python3.12/bin/python3.12 (Debian 12,
#                built from source). Refused under /root, /home, /tmp or /var/tmp: the
#                unit's sandbox hides those (203/EXEC). An existing venv built with another
#                interpreter is rebuilt. Unset: uv's choice (.python-version), kept on upgrades.
#
# What it does, each step only when needed (a second run reports "unchanged"):
#   1. system group tta-group and user tta-user (no login shell, no home);
#   2. /var/log/tta/staging/codecarbon, /var/lib/tta/staging (tta-user's),
#      /opt/tta/staging (root's), /etc/tta/staging (root:tta-group 0750);
#   3. /opt/tta/staging = git clone of REPO at its HEAD (kept as a git checkout so
#      rollback_staging.sh can `git checkout` an earlier commit), then
#      `uv sync --frozen --no-dev --compile-bytecode`. Code and venv are root's and
#      writable by root only (tta-user runs the code, root runs it too);
#   4. config/staging.yaml -> /etc/tta/staging/config.yaml and config/environment ->
#      /etc/tta/staging/environment only if absent; an edited copy is kept and the
#      shipped one written beside it as *.dist;
#   5. the systemd unit (+ RAPL drop-in), the retention timer (tta-staging-carbon-prune
#      .service/.timer) and the logrotate file; daemon-reload when systemd runs and a unit
#      file changed. It never starts or enables anything.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=staging-common.sh
. "$here/staging-common.sh"

root=${DESTDIR:-/}
src=$(cd "$here/.." && pwd)
do_sync=1
while [ $# -gt 0 ]; do
  case "$1" in
    --root) root=$2; shift 2 ;;
    --src) src=$2; shift 2 ;;
    --no-sync) do_sync=0; shift ;;
    -h|--help) sed -n '2,33p' "$0"; exit 0 ;;
    *) die "unknown argument: $1 (see --help)" ;;
  esac
done
[ "$(id -u)" = 0 ] || die "run as root (creates users, chowns directories)"
# Before anything changes: an interpreter the service could not run is refused here.
check_uv_python
# Files created below (clone, venv) are then not group/world-writable to begin with.
umask 022
root=$(cd "$root" && pwd) || die "--root $root does not exist"
P() { if [ "$root" = / ]; then printf '%s' "$1"; else printf '%s%s' "$root" "$1"; fi; }
src=$(cd "$src" && pwd)
git -C "$src" rev-parse --git-dir >/dev/null 2>&1 || die "$src is not a git checkout"

changed_units=0

# -- 1. group and user --------------------------------------------------------------
if [ "$root" = / ]; then
  has_group() { getent group "$1" >/dev/null; }
  has_user() { getent passwd "$1" >/dev/null; }
  prefix=()
else
  [ -f "$root/etc/passwd" ] && [ -f "$root/etc/group" ] || die "$root/etc/passwd and $root/etc/group must exist"
  has_group() { grep -q "^$1:" "$root/etc/group"; }
  has_user() { grep -q "^$1:" "$root/etc/passwd"; }
  prefix=(--prefix "$root")
fi
if has_group "$TTA_GROUP"; then say "group $TTA_GROUP: unchanged"; else
  groupadd "${prefix[@]}" --system "$TTA_GROUP"; say "group $TTA_GROUP: created"; fi
if has_user "$TTA_USER"; then say "user $TTA_USER: unchanged"; else
  useradd "${prefix[@]}" --system --gid "$TTA_GROUP" --no-create-home --home-dir /nonexistent \
    --shell /usr/sbin/nologin --comment "TTA staging carbon daemon" "$TTA_USER"
  say "user $TTA_USER: created"
fi
# Numeric ids from the target's own files: with --root the names do not exist on this host.
uid=$(awk -F: -v u="$TTA_USER" '$1 == u { print $3 }' "$(P /etc/passwd)")
gid=$(awk -F: -v g="$TTA_GROUP" '$1 == g { print $3 }' "$(P /etc/group)")
[ -n "$uid" ] && [ -n "$gid" ] || die "cannot resolve $TTA_USER/$TTA_GROUP ids"

# -- 2. directories (guide section 1) -------------------------------------------------
ensure_dir() { # path owner group mode
  local path; path=$(P "$1")
  if [ -d "$path" ]; then local state=unchanged; else mkdir -p "$path"; local state=created; fi
  if [ "$(stat -c '%u:%g %a' "$path")" != "$2:$3 $4" ]; then
    chown "$2:$3" "$path"; chmod "$4" "$path"
    [ "$state" = created ] || state="fixed owner/mode"
  fi
  say "dir $1: $state"
}
ensure_dir /var/log/tta/staging "$uid" "$gid" 755
ensure_dir /var/log/tta/staging/codecarbon "$uid" "$gid" 755
ensure_dir /var/lib/tta/staging "$uid" "$gid" 750
# The code is root's: tta-user only needs to read it (the guide chowned it to tta-user).
ensure_dir /opt/tta/staging 0 0 755
# Config may hold a token (CARBON_ELECTRICITYMAPS_TOKEN): root writes it, the daemon's group reads it.
ensure_dir /etc/tta/staging 0 "$gid" 750

# -- 3. code and venv (guide section 3) -------------------------------------------------
dest=$(P /opt/tta/staging)
if [ "$(realpath "$src")" = "$(realpath "$dest")" ]; then
  say "code: running from $dest, left as is"
else
  want=$(git -C "$src" rev-parse HEAD)
  [ -z "$(git -C "$src" status --porcelain --untracked-files=no)" ] \
    || say "warning: $src has uncommitted changes; deploying its HEAD $want only"
  if [ ! -e "$dest/.git" ]; then
    # --no-hardlinks: the chmod/chown below must not reach the source's object files.
    git clone --quiet --no-hardlinks "$src" "$dest" || die "$dest must be empty or a git checkout"
    git_in "$dest" checkout --quiet --detach "$want"
    say "code: cloned $src at ${want:0:12}"
  elif [ "$(git_in "$dest" rev-parse HEAD)" = "$want" ]; then
    say "code: unchanged (${want:0:12})"
  else
    git_in "$dest" fetch --quiet "$src" "$want"
    git_in "$dest" checkout --quiet --detach "$want"
    say "code: updated to ${want:0:12}"
  fi
fi
# Secure the checkout before syncing: uv records the source tree's timestamps, and a
# chown/chmod afterwards (ctime change) would make the next run's sync reinstall the project.
# (An install made by an older version of this script belonged to tta-user: fixed here.)
secure_code "$dest"
if [ "$do_sync" = 1 ]; then
  venv_py=$(realpath -e "$dest/.venv/bin/python" 2>/dev/null || true)
  case "${UV_PYTHON:-}" in
    */*) want_py=$(realpath -e "$UV_PYTHON") ;;
    *) want_py= ;;
  esac
  if [ -n "$venv_py" ] && [ -n "$want_py" ] && [ "$venv_py" != "$want_py" ]; then
    # uv keeps an existing venv whose Python merely has the right version.
    rm -rf -- "$dest/.venv"
    sync_venv "$dest"
    say "venv: rebuilt with $UV_PYTHON (was $venv_py)"
  elif [ -n "$venv_py" ] && (cd "$dest" && "$UV" sync --frozen --no-dev --check --quiet >/dev/null 2>&1); then
    say "venv: unchanged"
  else
    sync_venv "$dest"
    say "venv: synced (uv sync --frozen --no-dev --compile-bytecode)"
  fi
  py=$(realpath "$dest/.venv/bin/python" 2>/dev/null || true)
  if top=$(hidden_dir "$py"); then
    say "warning: the venv's interpreter $py is under $top; the unit's ProtectHome=/PrivateTmp= hide it (status 203/EXEC)."
    say "         Rebuild it with a Python 3.12 under /usr or /opt: UV_PYTHON=... $0 (docs/deployment.md, Python 3.12)."
  fi
fi
secure_code "$dest"

# -- 4. configuration (guide section 2 and 3) -------------------------------------------
# Shipped files come from the deployed checkout, so config, unit and code always
# belong to the same commit (also after rollback_staging.sh).
install_config() { # shipped installed
  local shipped=$dest/$1 target; target=$(P "$2")
  [ -f "$shipped" ] || die "$shipped missing in the deployed checkout"
  if [ ! -e "$target" ]; then
    install -m 640 -o 0 -g "$gid" "$shipped" "$target"; say "config $2: created"
  elif cmp -s "$shipped" "$target"; then
    say "config $2: unchanged"
  else
    if ! cmp -s "$shipped" "$target.dist"; then install -m 640 -o 0 -g "$gid" "$shipped" "$target.dist"; fi
    say "config $2: kept your edited file; the shipped version is in $2.dist (diff them to review)"
  fi
}
install_config config/staging.yaml /etc/tta/staging/config.yaml
install_config config/environment /etc/tta/staging/environment

# -- 5. unit, drop-in, logrotate ----------------------------------------------------------
install_ours() { # shipped installed is_unit
  local shipped=$dest/$1 target; target=$(P "$2")
  if [ ! -f "$shipped" ]; then say "skipped $2: $1 is not in this checkout"; return; fi
  if cmp -s "$shipped" "$target"; then say "file $2: unchanged"; return; fi
  local state=updated; [ -e "$target" ] || state=created
  mkdir -p "$(dirname "$target")"
  # 0644 root: logrotate ignores group/world-writable configs; units must be root's.
  install -m 644 -o 0 -g 0 "$shipped" "$target"
  say "file $2: $state"
  [ "$3" = unit ] && changed_units=1
  return 0
}
install_ours "deploy/systemd/$UNIT" "/etc/systemd/system/$UNIT" unit
install_ours "deploy/systemd/$UNIT.d/10-rapl-read.conf" "/etc/systemd/system/$UNIT.d/10-rapl-read.conf" unit
install_ours "deploy/systemd/$PRUNE_UNIT" "/etc/systemd/system/$PRUNE_UNIT" unit
install_ours "deploy/systemd/$PRUNE_TIMER" "/etc/systemd/system/$PRUNE_TIMER" unit
install_ours deploy/logrotate/tta-staging /etc/logrotate.d/tta-staging file

if [ "$root" = / ] && [ -d /run/systemd/system ] && [ "$changed_units" = 1 ]; then
  systemctl daemon-reload
  say "systemd: daemon-reload done"
fi
if [ "$root" = / ] && [ -f "/etc/systemd/system/$PRUNE_TIMER" ] && ! systemctl is-enabled --quiet "$PRUNE_TIMER" 2>/dev/null; then
  say "  retention (daily, 90 days): systemctl enable --now $PRUNE_TIMER (docs/operations.md#retention)"
fi
if [ "$root" = / ] && [ -d /run/systemd/system ] && systemctl is-active --quiet "$UNIT"; then
  # Running already: new code, venv or unit only take effect when the process is replaced.
  say "done. The service is running the previous version; apply with: systemctl restart ${UNIT%.service}"
else
  say "done. Start with: systemctl enable --now ${UNIT%.service}"
fi
