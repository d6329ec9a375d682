# CI helper, sourced by .ci/browser.sh, .ci/typescript.sh and .ci/dashboard.sh: installs
# Debian's chromium if /usr/bin/chromium is missing (CI runs as root; sudo otherwise). The
# browser tests drive it with playwright-core; no test tool downloads a browser of its own.
if [ ! -x /usr/bin/chromium ]; then
    sudo=()
    if [ "$(id -u)" != 0 ]; then sudo=(sudo); fi
    "${sudo[@]}" apt-get update -qq
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium >/dev/null
fi
