#!/usr/bin/env bash
# CI: issue 15's operator dashboard (dashboard/, served at /dashboard by `loudsync serve`):
# installs its dev dependencies from the lockfile (`npm ci`), typechecks and builds it, checks
# that the committed assets in crates/server/assets/dashboard/ (which the server embeds with
# include_bytes!) are exactly what a fresh build writes, then runs the Playwright tests
# (dashboard/test/, headless Debian chromium via playwright-core, a real `loudsync serve` on
# loopback, members from the TypeScript SDK; screenshots in dashboard/test/out/). Installs
# chromium if missing (CI runs as root; sudo otherwise), brings the release binary up to date
# (a no-op after .ci/browser.sh) and builds the TypeScript SDK if it has no dist/ (.ci/typescript.sh,
# which runs before it, leaves one). About 1 minute with those in place.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TERM_COLOR=never

echo "== dashboard"
source .ci/chromium.sh
/usr/bin/chromium --version 2>/dev/null
node --version

(
    cd dashboard
    npm ci --no-audit --no-fund --loglevel=error
    npm run typecheck
    npm run build
)
if ! git diff --exit-code --stat -- crates/server/assets/dashboard; then
    echo "dashboard: the committed assets in crates/server/assets/dashboard/ differ from a fresh" >&2
    echo "'npm run build' in dashboard/ (above). Run it and commit the three files with the sources." >&2
    exit 1
fi
if [ -n "$(git status --porcelain -- crates/server/assets/dashboard)" ]; then
    echo "dashboard: 'npm run build' wrote files under crates/server/assets/dashboard/ that are not committed:" >&2
    git status --porcelain -- crates/server/assets/dashboard >&2
    exit 1
fi

# always: a no-op when it is up to date, and a stale binary would test old code
if [ -z "${LOUDSYNC_BIN:-}" ]; then
    cargo build --release --bin loudsync
fi
if [ ! -f clients/typescript/dist/esm/index.js ]; then
    (cd clients/typescript && npm ci --no-audit --no-fund --loglevel=error && npm run build)
fi
# node --test has no timeout of its own: a hang fails CI.
timeout -k 10 180 node --test --test-concurrency=1 dashboard/test/
