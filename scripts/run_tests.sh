#!/usr/bin/env bash
# The whole test suite, on a fresh Debian 12 machine (root): installs what the
# tests use for real (uv, Prometheus + promtool, Alertmanager, VictoriaMetrics + vmalert, logrotate, wrk, strace, curl, jq,
# ipmitool, headless Chromium,
# systemd-nspawn + mmdebstrap),
# then checks the import contracts and runs pytest. README's test command; .ci/run calls exactly this.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
for tool in promtool:prometheus prometheus:prometheus logrotate:logrotate wrk:wrk strace:strace curl:curl jq:jq \
            amtool:prometheus-alertmanager prometheus-node-exporter:prometheus-node-exporter hyperfine:hyperfine \
            faketime:faketime openssl:openssl victoria-metrics:victoria-metrics vmalert:victoria-metrics \
            ipmitool:ipmitool chromium:chromium; do
  command -v "${tool%%:*}" >/dev/null 2>&1 || need_apt+=("${tool##*:}")
done
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "== installing Debian packages: ${need_apt[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
fi
# tests/system/test_debian_boot.py boots a Debian 12 image (mmdebstrap) with systemd-nspawn.
# systemd-container pinned to the installed systemd's version: the newer candidate would
# upgrade the host's own systemd packages along with it.
if ! command -v systemd-nspawn >/dev/null 2>&1 || ! command -v mmdebstrap >/dev/null 2>&1; then
  sd_version=$(dpkg-query -W -f='${Version}' systemd)
  echo "== installing systemd-container=$sd_version mmdebstrap"
  export DEBIAN_FRONTEND=noninteractive
  [ ${#need_apt[@]} -gt 0 ] || apt-get update -qq
  apt-get install -y -qq --no-install-recommends "systemd-container=$sd_version" mmdebstrap >/dev/null
fi
if ! command -v uv >/dev/null 2>&1; then
  echo "== installing uv"
  python3 -m pip install -q uv
fi

echo "== uv sync --frozen"
uv sync --frozen -q

if [ -x scripts/check_unit_security.sh ]; then
  echo "== systemd unit exposure score"
  bash scripts/check_unit_security.sh
fi

echo "== import contracts (pyproject.toml [tool.importlinter])"
uv run --frozen lint-imports --no-cache

echo "== pytest"
# Everything above is installed, so a missing Prometheus-side binary is a failure here, not a skip.
export TTA_REQUIRE_PROMETHEUS=1
exec uv run --frozen pytest -q "$@"
