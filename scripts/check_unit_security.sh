#!/usr/bin/env bash
# Check the shipped unit: exposure score from `systemd-analyze security --offline=true`
# (fail above the threshold, default 2.0) and, when run as root, `systemd-analyze verify`.
#
# usage: scripts/check_unit_security.sh [UNIT_FILE] [--threshold 2.0] [--no-verify]
# exit:  0 ok; 1 score above threshold or verify reported problems; 2 usage/tool error.
set -euo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
unit="$here/deploy/systemd/tta-staging-carbon.service"
threshold=2.0
verify=1
while [ $# -gt 0 ]; do
  case "$1" in
    --threshold) threshold=$2; shift 2 ;;
    --no-verify) verify=0; shift ;;
    -h|--help) sed -n '2,6p' "$0"; exit 0 ;;
    -*) echo "unknown option: $1" >&2; exit 2 ;;
    *) unit=$1; shift ;;
  esac
done
[ -f "$unit" ] || { echo "no such unit file: $unit" >&2; exit 2; }
command -v systemd-analyze >/dev/null || { echo "systemd-analyze not found" >&2; exit 2; }

# --offline=true reads the file itself: no running manager, no installed user needed.
out=$(systemd-analyze security --offline=true --no-pager "$unit" 2>&1) || true
score=$(printf '%s\n' "$out" | sed -n 's/.*Overall exposure level for [^:]*: \([0-9.]*\).*/\1/p' | tail -n1)
if [ -z "$score" ]; then
  printf '%s\n' "$out" >&2
  echo "could not read the exposure score" >&2
  exit 2
fi
# Show what still costs points, so a failing CI log says what to fix.
printf '%s\n' "$out" | grep '✗' || true
status=0
if awk -v s="$score" -v t="$threshold" 'BEGIN { exit !(s > t) }'; then
  echo "FAIL: exposure $score > $threshold for $(basename "$unit")"
  status=1
else
  echo "OK: exposure $score <= $threshold for $(basename "$unit")"
fi

if [ "$verify" = 1 ]; then
  if [ "$(id -u)" != 0 ] || ! command -v unshare >/dev/null; then
    echo "verify: skipped (needs root and unshare to stage the ExecStart path privately)"
  else
    # verify checks that ExecStart= exists and is executable. Stage a stand-in at the
    # real path inside a private mount namespace so nothing on this machine changes.
    exe=$(sed -n 's/^ExecStart=[-+!@:]*\([^ ]*\).*/\1/p' "$unit" | head -n1)
    verify_out=$(unshare --mount --propagation private /bin/sh -ec '
      exe=$1; unit=$2
      top=/$(echo "$exe" | cut -d/ -f2)
      if [ ! -x "$exe" ]; then
        mount -t tmpfs -o mode=755 tmpfs "$top"
        mkdir -p "$(dirname "$exe")"
        printf "#!/bin/sh\nexit 0\n" > "$exe"
        chmod 755 "$exe"
      fi
      systemd-analyze verify --no-pager "$unit" 2>&1
    ' sh "$exe" "$unit") || verify_rc=$?
    if [ -n "$verify_out" ] || [ "${verify_rc:-0}" != 0 ]; then
      printf '%s\n' "$verify_out"
      echo "FAIL: systemd-analyze verify reported problems"
      status=1
    else
      echo "OK: systemd-analyze verify is clean"
    fi
  fi
fi
exit $status
