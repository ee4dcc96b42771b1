#!/usr/bin/env bash
# Installs what `make dev` and `make test` need on a fresh Debian machine: uv (from PyPI) and, when run
# as root, the Debian packages for PostgreSQL, Redis, RabbitMQ and Chromium if they are missing. Services that
# are installed but stopped are started by the local infrastructure runner itself.
set -euo pipefail
uv_version="${1:-0.13.8}"

if ! command -v uv >/dev/null 2>&1 && ! python3 -m uv --version >/dev/null 2>&1; then
  echo "bootstrap: installing uv ${uv_version} from PyPI" >&2
  python3 -m pip install --quiet --user "uv==${uv_version}" 2>/dev/null \
    || python3 -m pip install --quiet "uv==${uv_version}" \
    || { echo "bootstrap: could not install uv; install it (pip install uv==${uv_version}) and retry" >&2; exit 1; }
fi

missing=()
command -v psql >/dev/null 2>&1 || [ -d /usr/lib/postgresql ] || missing+=(postgresql)
command -v redis-server >/dev/null 2>&1 || (exec 3<>/dev/tcp/127.0.0.1/6379) 2>/dev/null || missing+=(redis-server)
command -v rabbitmq-server >/dev/null 2>&1 || (exec 3<>/dev/tcp/127.0.0.1/5672) 2>/dev/null || missing+=(rabbitmq-server)
# the browser tests drive Debian's Chromium (playwright cannot download browsers here)
[ -x /usr/bin/chromium ] || missing+=(chromium)
# the benchmarks' load generator (the harness smoke test runs in `make test`)
command -v wrk >/dev/null 2>&1 || missing+=(wrk)
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "bootstrap: installing ${missing[*]}" >&2
    DEBIAN_FRONTEND=noninteractive apt-get update -q >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}" >/dev/null
  else
    echo "bootstrap: missing ${missing[*]} — install them (e.g. sudo apt-get install ${missing[*]}) and retry" >&2
    exit 1
  fi
fi
