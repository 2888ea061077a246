# shellcheck shell=bash
# scripts/lib/chromium.sh — source it to get Debian's headless Chromium for
# the browser tests (internal/assess renders its HTML report in it).
#
#   . scripts/lib/chromium.sh && gh_chromium_ensure
#
# Chromium comes from Debian's own package (apt is the only place this
# project may install a browser from; a browser build downloaded by a test
# tool would not be reachable). The install runs as root, once: a second
# call finds /usr/bin/chromium, checks that it starts, and returns at once.
# On this kind of machine the install (apt-get update plus about 25
# packages) takes under a minute.
#
# It exports GATEHOUSE_CHROMIUM (the binary) and GATEHOUSE_REQUIRE_BROWSER=1,
# so that the browser tests fail instead of skipping when it is missing.
#
# Environment:
#   GATEHOUSE_CACHE      cache root for the lock and the apt-update stamp
#                        (default: <repo>/.cache)
#   GH_CHROMIUM          the binary to use (default /usr/bin/chromium)

GH_ROOT="${GH_ROOT:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}"
GATEHOUSE_CACHE="${GATEHOUSE_CACHE:-$GH_ROOT/.cache}"
GH_CHROMIUM="${GH_CHROMIUM:-/usr/bin/chromium}"

gh_log() { printf '%s\n' "$*" >&2; }

# gh_chromium_ensure installs Debian's chromium if it is not there yet
# and exports GATEHOUSE_CHROMIUM and GATEHOUSE_REQUIRE_BROWSER.
gh_chromium_ensure() {
	if [[ ! -x "$GH_CHROMIUM" ]]; then
		mkdir -p "$GATEHOUSE_CACHE/locks"
		(
			flock 9
			[[ -x "$GH_CHROMIUM" ]] || gh_chromium_install
		) 9>"$GATEHOUSE_CACHE/locks/chromium.lock" || return 1
	fi
	if ! "$GH_CHROMIUM" --version >/dev/null 2>&1; then
		gh_log "chromium.sh: $GH_CHROMIUM does not start"
		return 1
	fi
	export GATEHOUSE_CHROMIUM="$GH_CHROMIUM"
	export GATEHOUSE_REQUIRE_BROWSER=1
}

gh_chromium_install() {
	local sudo=()
	if [[ "$(id -u)" != 0 ]]; then
		command -v sudo >/dev/null || { gh_log "chromium.sh: installing chromium needs root (apt-get)"; return 1; }
		sudo=(sudo)
	fi
	command -v apt-get >/dev/null || { gh_log "chromium.sh: apt-get not found; install Debian's chromium package by hand"; return 1; }
	gh_log "chromium.sh: installing Debian's chromium with apt-get"
	local start=$SECONDS
	# Refresh the package lists once a day at most; an install from stale
	# lists fails when the archive has moved on.
	local stamp="$GATEHOUSE_CACHE/apt-update.stamp"
	if [[ -z "$(find "$stamp" -mmin -1440 2>/dev/null)" ]]; then
		"${sudo[@]}" apt-get update -qq || { gh_log "chromium.sh: apt-get update failed"; return 1; }
		touch "$stamp"
	fi
	DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq --no-install-recommends chromium >/dev/null ||
		{ gh_log "chromium.sh: apt-get install chromium failed"; return 1; }
	gh_log "chromium.sh: installed $("$GH_CHROMIUM" --version 2>/dev/null) in $((SECONDS - start))s"
}
