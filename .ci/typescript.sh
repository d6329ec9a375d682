#!/usr/bin/env bash
# CI: issue 14's TypeScript SDK (clients/typescript, npm package loudsync-client): installs
# its dev dependencies from the lockfile (`npm ci`), builds it (tsc to ESM + CJS + d.ts, the
# esbuild bundle), typechecks, runs the unit tests (the state machine on a fake clock), the
# integration tests against a real `loudsync serve` on loopback, the browser test (headless
# Debian chromium via playwright-core; screenshots in clients/typescript/test/browser/out/)
# and prints the bundle's minified + gzipped size. Runs after .ci/browser.sh, which installs
# chromium and builds the release binary; both are done here too if missing (CI runs as
# root; sudo otherwise). About 30 s with both in place (npm ci included).
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TERM_COLOR=never

echo "== typescript SDK"
source .ci/chromium.sh
if [ -z "${LOUDSYNC_BIN:-}" ] && [ ! -x target/release/loudsync ]; then
    cargo build --release --bin loudsync
fi
node --version
cd clients/typescript
npm ci --no-audit --no-fund --loglevel=error
# Each test step is bounded (node --test has no timeout of its own): a hang fails CI.
bounded() { timeout -k 10 "$@"; }
npm run build
npm run typecheck
bounded 120 npm run test:unit
bounded 180 npm run test:integration
bounded 120 npm run test:browser
npm run size
# a short run of the SDK benchmark (npm run bench), so it cannot rot: it fails if a client holds
# more than one timer
bounded 120 npm run bench -- --members 20 --messages 100 --bursts 1 --rounds 5 --frames 5000 --no-rust
