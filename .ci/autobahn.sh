#!/usr/bin/env bash
# Autobahn|Testsuite (crossbario's wstest, fuzzingclient mode) against the server's own
# WebSocket framing: crates/server/examples/ws_echo.rs, on 127.0.0.1. Sections 1-7, 9 and 10
# (12 and 13 are permessage-deflate, which we do not offer). Fails, listing the cases, unless
# every case is OK or INFORMATIONAL (NON-STRICT fails too).
#
# wstest is Python 2.7 only. Python 2.7 comes from Debian bullseye packages unpacked into a
# private folder (a private apt state and cache; the system's apt configuration is untouched
# and nothing is installed system-wide), then pip, and the suite with every dependency pinned,
# from PyPI. All of it is cached under $AUTOBAHN_HOME (default ~/.cache/loudsync-autobahn), so
# a rerun only builds the echo binary and runs the cases.
#
# Settings: AUTOBAHN_HOME (cache), AUTOBAHN_REPORT (report folder, default
# target/autobahn), AUTOBAHN_CASES (space-separated case patterns, for a partial local run).
# Needs: bash, apt-get, dpkg, a C compiler (the Rust toolchain's linker), cargo; amd64.
set -euo pipefail
cd "$(dirname "$0")/.."
started=$SECONDS

AH="${AUTOBAHN_HOME:-${HOME:-/tmp}/.cache/loudsync-autobahn}"
REPORT="${AUTOBAHN_REPORT:-$PWD/target/autobahn}"
CASES="${AUTOBAHN_CASES:-1.* 2.* 3.* 4.* 5.* 6.* 7.* 9.* 10.*}"
SUITE_VERSION=25.10.1

# Debian bullseye (main, frozen since its last point release) packages for Python 2.7, and
# the two libraries bookworm no longer has (OpenSSL 1.1 for ssl, libffi 7 for ctypes). Not
# bullseye-security: its python-pip-whl (deb11u2) carries a patch in Python 3 syntax, which
# breaks pip on Python 2.7.
DEBS="python2.7=2.7.18-8+deb11u1 python2.7-minimal=2.7.18-8+deb11u1
libpython2.7-minimal=2.7.18-8+deb11u1 libpython2.7-stdlib=2.7.18-8+deb11u1
libpython2.7-dev=2.7.18-8+deb11u1 python2.7-dev=2.7.18-8+deb11u1
libssl1.1=1.1.1w-0+deb11u1 libffi7=3.3-6 python-pip-whl=20.3.4-4+deb11u1"
# pip itself and the build tools, then the suite's dependencies: autobahntestsuite's own pins
# (setup.py in its sdist lost them: they are in its wheel's metadata) and what they pull in,
# every one pinned to the last release that supports Python 2.7.
BOOTSTRAP="pip==20.3.4 setuptools==44.0.0 wheel==0.37.1 Cython==3.0.12"
SUITE="autobahn==0.10.9 txaio==2.1.0 wsaccel==0.6.6 ujson==2.0.3
Twisted==19.10.0 zope.interface==4.6.0 incremental==16.10.1 constantly==15.1.0
Automat==22.10.0 attrs==21.4.0 hyperlink==21.0.0 idna==2.10 typing==3.10.0.0
PyHamcrest==1.10.1 pyOpenSSL==19.1.0 cryptography==3.3.2 cffi==1.15.1 pycparser==2.21
enum34==1.1.10 ipaddress==1.0.23 service-identity==18.1.0 pyasn1==0.5.1
pyasn1-modules==0.3.0 Jinja2==2.11.3 MarkupSafe==1.1.1 Werkzeug==1.0.1 klein==17.10.0
unittest2==1.1.0 argparse==1.4.0 traceback2==1.4.0 linecache2==1.0.0 six==1.16.0"

echo "== autobahn: Autobahn|Testsuite $SUITE_VERSION fuzzingclient against the ws_echo example"

# --- Python 2.7 in $AH/py27 -------------------------------------------------------------
ROOT="$AH/py27"
PY="$ROOT/usr/bin/python2.7"
if [ "$(cat "$ROOT/.installed" 2>/dev/null)" != "$DEBS" ]; then
  echo "-- Python 2.7 from Debian bullseye into $ROOT"
  rm -rf "$ROOT" "$AH/apt" "$AH/suite"
  apt_dir="$AH/apt"
  mkdir -p "$apt_dir"/etc/sources.list.d "$apt_dir"/etc/preferences.d "$apt_dir"/state/lists/partial \
    "$apt_dir"/cache/archives/partial "$apt_dir"/debs
  echo "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian bullseye main" \
    >"$apt_dir/etc/sources.list"
  : >"$apt_dir/state/status"
  # The system's apt settings are read (a proxy would apply), its files are not used: every
  # list, cache and status file is in $apt_dir.
  apt_opts=(
    -o "Dir::Etc::SourceList=$apt_dir/etc/sources.list"
    -o "Dir::Etc::SourceParts=$apt_dir/etc/sources.list.d"
    -o "Dir::Etc::Preferences=$apt_dir/etc/preferences"
    -o "Dir::Etc::PreferencesParts=$apt_dir/etc/preferences.d"
    -o "Dir::State=$apt_dir/state" -o "Dir::State::status=$apt_dir/state/status"
    -o "Dir::Cache=$apt_dir/cache" -o "Dir::Log=$apt_dir/log"
    -o "APT::Sandbox::User=$(id -un)"
    -o "Acquire::Languages=none"
    -o "Acquire::IndexTargets::deb::DEP-11::DefaultEnabled=false"
    -o "Acquire::IndexTargets::deb::DEP-11-icons::DefaultEnabled=false"
    -o "Acquire::IndexTargets::deb::DEP-11-icons-small::DefaultEnabled=false"
    -o "Acquire::IndexTargets::deb::Contents-deb::DefaultEnabled=false"
  )
  apt-get "${apt_opts[@]}" -qq update
  # shellcheck disable=SC2086 # one package per word
  (cd "$apt_dir/debs" && apt-get "${apt_opts[@]}" -qq download $DEBS)
  mkdir -p "$ROOT"
  for deb in "$apt_dir"/debs/*.deb; do dpkg-deb -x "$deb" "$ROOT"; done
  printf '%s' "$DEBS" >"$ROOT/.installed"
fi

libdir=$(echo "$ROOT"/usr/lib/*-linux-gnu)
SITE="$ROOT/usr/lib/python2.7/dist-packages"
# The interpreter from the private folder, with its private libraries, and nothing of the
# user's Python settings.
py_cmd=(env -u PYTHONSTARTUP -u PYTHONUSERBASE -u PYTHONPATH PYTHONHOME="$ROOT/usr"
  LD_LIBRARY_PATH="$libdir" OPENSSL_CONF=/dev/null PYTHONNOUSERSITE=1
  PYTHONDONTWRITEBYTECODE=1 PIP_DISABLE_PIP_VERSION_CHECK=1
  PIP_NO_PYTHON_VERSION_WARNING=1 PIP_CACHE_DIR="$AH/pip-cache" "$PY")
py() { "${py_cmd[@]}" "$@"; }
# pip verifies PyPI with the system's CA bundle where there is one (as Debian's pip does).
if [ -z "${PIP_CERT:-}" ] && [ -f /etc/ssl/certs/ca-certificates.crt ]; then
  export PIP_CERT=/etc/ssl/certs/ca-certificates.crt
fi

# --- pip, then the suite, in $AH/suite ----------------------------------------------------
want="$BOOTSTRAP $SUITE autobahntestsuite==$SUITE_VERSION"
if [ "$(cat "$AH/suite/.installed" 2>/dev/null)" != "$want" ]; then
  echo "-- pip and autobahntestsuite $SUITE_VERSION into $AH/suite"
  rm -rf "$AH/suite" "$SITE"
  mkdir -p "$SITE"
  # Debian's pip wheel runs pip without installing it, to install pip (vendored) from PyPI.
  pip_wheel=$(echo "$ROOT"/usr/share/python-wheels/pip-*.whl)
  # shellcheck disable=SC2086
  py "$pip_wheel/pip" install -q --target "$SITE" $BOOTSTRAP
  # The suite's folder is a site folder (its .pth files, for the zope namespace, are read).
  echo "import site; site.addsitedir('$AH/suite')" >"$SITE/loudsync-autobahn.pth"
  # Compiled parts (wsaccel) build against the unpacked headers.
  export CC="${CC:-cc}"
  export LDSHARED="$CC -pthread -shared"
  export CFLAGS="-I$ROOT/usr/include/python2.7 -I$ROOT/usr/include"
  # Every dependency is pinned above, so no resolving (--no-deps), and builds use the pinned
  # tools (--no-build-isolation); the suite itself from its sdist.
  # shellcheck disable=SC2086
  py -m pip install -q --target "$AH/suite" --no-deps --no-build-isolation \
    --no-binary autobahntestsuite $SUITE "autobahntestsuite==$SUITE_VERSION"
  py -m pip check
  printf '%s' "$want" >"$AH/suite/.installed"
fi
py -c 'import wsaccel, autobahntestsuite.wstest' # the suite imports, with its C helpers

# --- the echo server ------------------------------------------------------------------------
cargo build --release -q -p loudsync-server --example ws_echo
rm -rf "$REPORT"
mkdir -p "$REPORT"
./target/release/examples/ws_echo 0 >"$REPORT/ws_echo.log" 2>&1 &
echo_pid=$!
trap 'kill "$echo_pid" 2>/dev/null || true' EXIT
url=""
for _ in $(seq 100); do
  url=$(sed -n 's/^ws_echo listening on \(ws:[^ ]*\)$/\1/p' "$REPORT/ws_echo.log")
  [ -n "$url" ] && break
  kill -0 "$echo_pid" 2>/dev/null || { cat "$REPORT/ws_echo.log"; exit 1; }
  sleep 0.1
done
[ -n "$url" ] || { echo "ws_echo did not start"; exit 1; }

# --- the cases ------------------------------------------------------------------------------
# run_cases NAME PATTERN...: the fuzzingclient on those cases, its report in $REPORT/NAME.
run_cases() {
  local dir="$REPORT/$1" patterns
  shift
  patterns=$(printf '"%s",' "$@")
  mkdir -p "$dir"
  cat >"$dir/fuzzingclient.json" <<EOF
{
  "outdir": "$dir/reports",
  "servers": [{"agent": "loudsync-ws", "url": "$url"}],
  "cases": [${patterns%,}],
  "exclude-cases": [],
  "exclude-agent-cases": {}
}
EOF
  # Bounded: a server that stops answering must not hang CI (a whole run takes under 1 min).
  (cd "$dir" && timeout 600 "${py_cmd[@]}" -m autobahntestsuite.wstest -m fuzzingclient \
    -s fuzzingclient.json >wstest.log 2>&1) || {
    tail -30 "$dir/wstest.log"
    echo "autobahn: wstest failed or timed out (log: $dir/wstest.log)"
    exit 1
  }
}

# verdict SECONDS INDEX [RETRY_INDEX]: the counts per section and the failing cases (also
# written to $REPORT/failed.txt); exit status 1 if any. A case not OK in INDEX counts as what
# it did in RETRY_INDEX, and is listed as retried.
verdict() {
  py - "$REPORT/failed.txt" "$@" <<'EOF'
import json, sys
from collections import OrderedDict
failed_txt, seconds, index = sys.argv[1], sys.argv[2], sys.argv[3]
cases = json.load(open(index))["loudsync-ws"]
retry = json.load(open(sys.argv[4]))["loudsync-ws"] if len(sys.argv) > 4 else {}
PASS = ("OK", "INFORMATIONAL")
def key(case):
    return [int(p) for p in case.split(".")]
sections = OrderedDict()
failed, retried = [], []
for case in sorted(cases, key=key):
    behavior = cases[case]["behavior"]
    if behavior not in PASS and case in retry:
        retried.append("%s (%s, then %s)" % (case, behavior, retry[case]["behavior"]))
        behavior = retry[case]["behavior"]
    section = sections.setdefault(case.split(".")[0], {})
    section[behavior] = section.get(behavior, 0) + 1
    if behavior not in PASS:
        failed.append(case)
        print("FAILED case %s: %s (close: %s)" % (
            case, behavior, (retry.get(case) or cases[case]).get("behaviorClose")))
for name, counts in sections.items():
    print("   %-3s %s" % (name, ", ".join("%s %d" % kv for kv in sorted(counts.items()))))
if retried:
    print("   retried once, alone: " + ", ".join(retried))
open(failed_txt, "w").write(" ".join(failed) + "\n")
total = sum(sum(c.values()) for c in sections.values())
ok = sum(c.get("OK", 0) for c in sections.values())
info = sum(c.get("INFORMATIONAL", 0) for c in sections.values())
print("autobahn: %d cases, %d OK, %d INFORMATIONAL, %d not OK (%d retried), in %s s" % (
    total, ok, info, len(failed), len(retried), seconds))
sys.exit(1 if failed or total == 0 else 0)
EOF
}

echo "-- cases $CASES against $url (reports: $REPORT)"
set -f # the patterns are not file names
# shellcheck disable=SC2086
run_cases all $CASES
set +f
if verdict "$((SECONDS - started))" "$REPORT/all/reports/index.json" >"$REPORT/verdict.txt"; then
  cat "$REPORT/verdict.txt"
  exit 0
fi
read -r -a failed <"$REPORT/failed.txt"
if [ "${#failed[@]}" -eq 0 ] || [ "${#failed[@]}" -gt 3 ]; then
  cat "$REPORT/verdict.txt"
  exit 1
fi
# Some cases give the server one second to answer, which a loaded machine can miss: up to
# three cases not OK run once more, alone. A real failure (failing late, a wrong close code)
# fails again.
echo "-- not OK: ${failed[*]}; once more, alone"
run_cases retry "${failed[@]}"
verdict "$((SECONDS - started))" "$REPORT/all/reports/index.json" "$REPORT/retry/reports/index.json"
