#!/usr/bin/env bash
# CI: issue 12's browser test (tests/browser/): headless Chromium opens our own controller and
# responder pages served by `loudsync serve --pairing-pages`, they pair over SSE + HTTP and
# exchange events; screenshots land in tests/browser/out/. Installs Debian's chromium if
# /usr/bin/chromium is missing (CI runs as root; sudo otherwise), playwright-core with `npm ci`,
# and builds the release binary the later benchmark step reuses. About 1 minute with chromium
# installed and the release build done.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TERM_COLOR=never

echo "== browser: pairing pages in headless Chromium"
source .ci/chromium.sh
/usr/bin/chromium --version 2>/dev/null
(cd tests/browser && npm ci --no-audit --no-fund --loglevel=error)
cargo build --release --bin loudsync
node --test tests/browser/pairing.test.mjs
