# shellcheck shell=bash
# scripts/lib/conformance.sh — source it to get the MCP conformance tooling.
#
#   . scripts/lib/conformance.sh
#   gh_conformance_ensure        # exports GH_CONFORMANCE (the CLI)
#   gh_everything_server_ensure  # exports GH_EVERYTHING_SERVER (the binary)
#   gh_tsclient_ensure           # installs test/tsclient/node_modules
#
# Everything lands in $GATEHOUSE_CACHE (default <repo>/.cache) except the
# TypeScript client's node_modules, which live beside its package.json so that
# `node test/tsclient/client.mjs` resolves them. Every function is idempotent
# and returns at once when its stamp matches, so tests may call it freely;
# installs are serialised with flock, so parallel callers are safe.
#
# Pins:
#   - @modelcontextprotocol/conformance: test/conformance/package.json and
#     its package-lock.json (installed with `npm ci` under Node 22).
#   - everything-server: github.com/modelcontextprotocol/go-sdk at
#     GH_GOSDK_VERSION, built with `go install pkg@version`, which leaves the
#     project's go.mod alone.

# shellcheck source=scripts/lib/node.sh
. "$(dirname "${BASH_SOURCE[0]}")/node.sh"

GH_GOSDK_VERSION="${GH_GOSDK_VERSION:-v1.8.0}"
GH_EVERYTHING_SERVER_PKG=github.com/modelcontextprotocol/go-sdk/conformance/everything-server

# gh_npm_ci_cached SRC_DIR DEST_DIR LOCKNAME installs the package.json and
# package-lock.json of SRC_DIR into DEST_DIR/node_modules with `npm ci`,
# unless the stamp already records the same lockfile and Node version.
# The stamp lives inside node_modules (ignored by git), so nothing but
# node_modules appears beside a committed package.json.
gh_npm_ci_cached() {
	local src="$1" dest="$2" lockname="$3" want stamp
	stamp="$dest/node_modules/.gatehouse-stamp"
	want="$(cat "$src/package.json" "$src/package-lock.json" | sha256sum | cut -d' ' -f1) node-$GH_NODE_VERSION"
	if [[ -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then
		return 0
	fi
	gh_lock "$lockname"
	if [[ -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then
		gh_unlock
		return 0
	fi
	gh_log "conformance.sh: npm ci in $dest (from $src)"
	mkdir -p "$dest"
	if [[ "$(cd "$src" && pwd)" != "$(cd "$dest" && pwd)" ]]; then
		cp "$src/package.json" "$src/package-lock.json" "$dest/"
	fi
	if ! (cd "$dest" && npm ci --no-audit --no-fund --loglevel=error >&2); then
		gh_log "conformance.sh: npm ci failed in $dest"
		gh_unlock
		return 1
	fi
	printf '%s\n' "$want" >"$stamp"
	gh_unlock
}

# gh_conformance_ensure installs the pinned conformance suite and exports
# GH_CONFORMANCE (path of its CLI) and GH_CONFORMANCE_VERSION.
gh_conformance_ensure() {
	gh_node_ensure || return 1
	local dest="$GATEHOUSE_CACHE/conformance"
	gh_npm_ci_cached "$GH_ROOT/test/conformance" "$dest" conformance || return 1
	export GH_CONFORMANCE="$dest/node_modules/@modelcontextprotocol/conformance/dist/index.js"
	GH_CONFORMANCE_VERSION="$(node -p 'require(process.argv[1]).version' "$dest/node_modules/@modelcontextprotocol/conformance/package.json")"
	export GH_CONFORMANCE_VERSION
	[[ -f "$GH_CONFORMANCE" ]] || { gh_log "conformance.sh: $GH_CONFORMANCE missing"; return 1; }
}

# gh_everything_server_ensure builds the go-sdk conformance server at
# GH_GOSDK_VERSION into $GATEHOUSE_CACHE/bin and exports GH_EVERYTHING_SERVER.
gh_everything_server_ensure() {
	local bindir="$GATEHOUSE_CACHE/bin"
	local bin="$bindir/everything-server"
	local want="$GH_EVERYTHING_SERVER_PKG@$GH_GOSDK_VERSION $(go env GOVERSION 2>/dev/null)"
	export GH_EVERYTHING_SERVER="$bin"
	if [[ -x "$bin" && -f "$bin.stamp" && "$(cat "$bin.stamp")" == "$want" ]]; then
		return 0
	fi
	gh_lock bin
	if [[ -x "$bin" && -f "$bin.stamp" && "$(cat "$bin.stamp")" == "$want" ]]; then
		gh_unlock
		return 0
	fi
	gh_log "conformance.sh: go install $GH_EVERYTHING_SERVER_PKG@$GH_GOSDK_VERSION"
	# Run outside the project (cd /) with GOFLAGS and GOWORK cleared: a
	# `go install pkg@version` resolves its own module graph and never
	# touches our go.mod, whatever the environment says.
	if ! (cd / && GOBIN="$bindir" GOFLAGS= GOWORK=off go install "$GH_EVERYTHING_SERVER_PKG@$GH_GOSDK_VERSION"); then
		gh_log "conformance.sh: building everything-server failed"
		gh_unlock
		return 1
	fi
	printf '%s\n' "$want" >"$bin.stamp"
	gh_unlock
}

# gh_tsclient_ensure installs the TypeScript SDK test client's dependencies
# into test/tsclient/node_modules and exports GH_TSCLIENT (its entry point).
gh_tsclient_ensure() {
	gh_node_ensure || return 1
	local dir="$GH_ROOT/test/tsclient"
	gh_npm_ci_cached "$dir" "$dir" tsclient || return 1
	export GH_TSCLIENT="$dir/client.mjs"
}

# gh_free_port prints a TCP port on 127.0.0.1 that was free a moment ago.
gh_free_port() {
	node -e 'const s=require("net").createServer();s.listen(0,"127.0.0.1",()=>{console.log(s.address().port);s.close()})'
}

# gh_wait_http URL TIMEOUT_SECONDS [PID] waits until URL answers any HTTP
# status. It fails early when PID (the server being waited for) has exited.
gh_wait_http() {
	local url="$1" timeout="${2:-30}" pid="${3:-}" deadline
	deadline=$((SECONDS + timeout))
	while ((SECONDS < deadline)); do
		if curl -s -o /dev/null --max-time 2 "$url"; then
			return 0
		fi
		if [[ -n "$pid" ]] && ! kill -0 "$pid" 2>/dev/null; then
			gh_log "conformance.sh: process $pid exited before $url answered"
			return 1
		fi
		sleep 0.2
	done
	gh_log "conformance.sh: $url did not answer within ${timeout}s"
	return 1
}
