#!/usr/bin/env bash
# CI: a short run of every fuzz target (fuzz/, issue 9) on its committed corpus, so the
# targets cannot rot and a change that breaks a parser's properties on a known input fails.
# The long runs and their figures are in docs/RELIABILITY.md ("Fuzzing").
#
# Works on stable Rust: cargo-fuzz's AddressSanitizer build needs `-Zsanitizer`, which
# `RUSTC_BOOTSTRAP=1` unlocks for this build only. cargo-fuzz is installed from crates.io if
# missing (a debug build: it only drives the build). Each target replays its whole corpus,
# then fuzzes for FUZZ_SECONDS (default 1) on a scratch corpus seeded with
# fuzz/corpus/<target>, so the committed corpus is read, never written. About 3 minutes on a
# fresh 2-core machine: 40 s to install cargo-fuzz, 2 min to build, 40 s to run.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TERM_COLOR=never

echo "== fuzz: every target briefly on its corpus"
started=$SECONDS
if ! cargo fuzz --version >/dev/null 2>&1; then
    cargo install cargo-fuzz --locked --quiet --debug
fi
seconds=${FUZZ_SECONDS:-1}
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
fuzz() { RUSTC_BOOTSTRAP=1 cargo fuzz "$@"; }
here=$PWD
fuzz build -O
for target in $(cargo fuzz list); do
    dict=()
    case $target in ws_frames | admin_auth) ;; pairing_*) dict=(-dict="$here/fuzz/dict/pairing.dict") ;; *) dict=(-dict="$here/fuzz/dict/protocol.dict") ;; esac
    mkdir -p "$scratch/$target"
    log="$scratch/$target.log"
    if fuzz run -O "$target" "$scratch/$target" "$here/fuzz/corpus/$target" -- \
        -max_total_time="$seconds" "${dict[@]}" >"$log" 2>&1; then
        echo "$target: $(grep -E '^Done' "$log")"
    else
        tail -n 60 "$log"
        echo "fuzz target $target failed; the input is in fuzz/artifacts/$target/"
        exit 1
    fi
done
echo "== fuzz: $((SECONDS - started)) s"
