# shellcheck shell=bash
# scripts/lib/spire.sh — source it to build and run a real SPIRE server and
# agent on loopback for the identity layer's SPIFFE end-to-end tests.
#
#   . scripts/lib/spire.sh
#   gh_spire_ensure              # build spire-server and spire-agent (cached)
#   gh_spire_start DIR           # start both under DIR, print KEY=VALUE lines
#   gh_spire_stop DIR            # stop them
#
# SPIRE is built from the tools module in test/spire (not the project's own
# go.mod, which must not inherit SPIRE's dependencies): the Go module proxy
# refuses `go install …@version` for SPIRE, so the module records the tools
# with `go get -tool` and `go install` builds them from inside it. The first
# build takes about ten minutes on two cores; the binaries are cached in
# $GATEHOUSE_CACHE/spire/<version>/bin.
#
# gh_spire_start writes a server and an agent configuration under DIR (keep
# DIR short: it holds Unix sockets), starts the server on a free loopback
# port with the join_token node attestor, starts the agent with a fresh
# token, registers SPIFFE IDs for the current Unix user (unix:uid selector)
# and prints:
#   GH_SPIRE_SOCKET=<workload API socket>
#   GH_SPIRE_TRUST_DOMAIN=<trust domain>
#   GH_SPIRE_ID=<SPIFFE ID registered for this uid>
# Processes are recorded in DIR/*.pid; gh_spire_stop ends exactly those.
#
# Environment:
#   GATEHOUSE_CACHE        cache root (default: <repo>/.cache)
#   GH_SPIRE_VERSION       SPIRE version (default 1.13.3; must match test/spire/go.mod)
#   GH_SPIRE_TRUST_DOMAIN  trust domain (default gatehouse.test)

GH_ROOT="${GH_ROOT:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}"
GATEHOUSE_CACHE="${GATEHOUSE_CACHE:-$GH_ROOT/.cache}"
GH_SPIRE_VERSION="${GH_SPIRE_VERSION:-1.13.3}"
GH_SPIRE_TRUST_DOMAIN="${GH_SPIRE_TRUST_DOMAIN:-gatehouse.test}"
GH_SPIRE_BIN="$GATEHOUSE_CACHE/spire/v$GH_SPIRE_VERSION/bin"

gh_log() { printf '%s\n' "$*" >&2; }

gh_lock() {
	mkdir -p "$GATEHOUSE_CACHE/locks"
	exec 9>"$GATEHOUSE_CACHE/locks/$1.lock"
	flock 9
}
gh_unlock() { exec 9>&-; }

gh_spire_built() {
	[[ -x "$GH_SPIRE_BIN/spire-server" && -x "$GH_SPIRE_BIN/spire-agent" ]] &&
		"$GH_SPIRE_BIN/spire-server" --version 2>&1 | grep -q "^$GH_SPIRE_VERSION"
}

# gh_spire_ensure builds SPIRE into the cache unless it is there.
gh_spire_ensure() {
	gh_spire_built && return 0
	gh_lock spire
	if ! gh_spire_built; then
		gh_log "spire.sh: building SPIRE $GH_SPIRE_VERSION (about 10 minutes the first time)"
		mkdir -p "$GH_SPIRE_BIN"
		if ! (cd "$GH_ROOT/test/spire" &&
			GOFLAGS=-buildvcs=false go get -tool "github.com/spiffe/spire/cmd/spire-server@v$GH_SPIRE_VERSION" &&
			GOFLAGS=-buildvcs=false go get -tool "github.com/spiffe/spire/cmd/spire-agent@v$GH_SPIRE_VERSION" &&
			GOFLAGS=-buildvcs=false GOBIN="$GH_SPIRE_BIN" go install github.com/spiffe/spire/cmd/spire-server github.com/spiffe/spire/cmd/spire-agent); then
			gh_log "spire.sh: building SPIRE failed"
			gh_unlock
			return 1
		fi
	fi
	gh_unlock
}

# gh_spire_free_port prints a loopback TCP port nobody listens on.
gh_spire_free_port() {
	local p
	for _ in $(seq 1 50); do
		p=$((20000 + RANDOM % 30000))
		if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
			echo "$p"
			return 0
		fi
	done
	return 1
}

# gh_spire_wait CMD... retries CMD for up to 30 s.
gh_spire_wait() {
	for _ in $(seq 1 150); do
		"$@" >/dev/null 2>&1 && return 0
		sleep 0.2
	done
	return 1
}

gh_spire_start() {
	local dir="$1" port hport token td="$GH_SPIRE_TRUST_DOMAIN" uid
	[[ -n "$dir" ]] || { gh_log "usage: gh_spire_start DIR"; return 2; }
	gh_spire_built || { gh_log "spire.sh: SPIRE is not built; run gh_spire_ensure"; return 1; }
	mkdir -p "$dir/server/data" "$dir/agent/data" "$dir/agent/public"
	port="$(gh_spire_free_port)" && hport="$(gh_spire_free_port)" || return 1
	cat >"$dir/server.conf" <<EOF
server {
  bind_address = "127.0.0.1"
  bind_port = "$port"
  socket_path = "$dir/server/api.sock"
  trust_domain = "$td"
  data_dir = "$dir/server/data"
  log_level = "WARN"
  ca_ttl = "24h"
  default_x509_svid_ttl = "1h"
  default_jwt_svid_ttl = "5m"
}
plugins {
  DataStore "sql" {
    plugin_data {
      database_type = "sqlite3"
      connection_string = "$dir/server/data/datastore.sqlite3"
    }
  }
  KeyManager "memory" {
    plugin_data {}
  }
  NodeAttestor "join_token" {
    plugin_data {}
  }
}
health_checks {
  listener_enabled = true
  bind_address = "127.0.0.1"
  bind_port = "$hport"
  live_path = "/live"
  ready_path = "/ready"
}
EOF
	cat >"$dir/agent.conf" <<EOF
agent {
  data_dir = "$dir/agent/data"
  log_level = "WARN"
  server_address = "127.0.0.1"
  server_port = "$port"
  socket_path = "$dir/agent/public/api.sock"
  trust_domain = "$td"
  insecure_bootstrap = true
}
plugins {
  NodeAttestor "join_token" {
    plugin_data {}
  }
  KeyManager "memory" {
    plugin_data {}
  }
  WorkloadAttestor "unix" {
    plugin_data {}
  }
}
EOF
	"$GH_SPIRE_BIN/spire-server" run -config "$dir/server.conf" >"$dir/server.log" 2>&1 &
	echo $! >"$dir/server.pid"
	if ! gh_spire_wait "$GH_SPIRE_BIN/spire-server" healthcheck -socketPath "$dir/server/api.sock"; then
		gh_log "spire.sh: the server did not become healthy:"; tail -20 "$dir/server.log" >&2
		gh_spire_stop "$dir"; return 1
	fi
	token="$("$GH_SPIRE_BIN/spire-server" token generate -socketPath "$dir/server/api.sock" -spiffeID "spiffe://$td/node/test" | awk '/^Token:/ {print $2}')"
	[[ -n "$token" ]] || { gh_log "spire.sh: no join token"; gh_spire_stop "$dir"; return 1; }
	"$GH_SPIRE_BIN/spire-agent" run -config "$dir/agent.conf" -joinToken "$token" >"$dir/agent.log" 2>&1 &
	echo $! >"$dir/agent.pid"
	if ! gh_spire_wait "$GH_SPIRE_BIN/spire-agent" healthcheck -socketPath "$dir/agent/public/api.sock"; then
		gh_log "spire.sh: the agent did not become healthy:"; tail -20 "$dir/agent.log" >&2
		gh_spire_stop "$dir"; return 1
	fi
	uid="$(id -u)"
	if ! "$GH_SPIRE_BIN/spire-server" entry create -socketPath "$dir/server/api.sock" \
		-parentID "spiffe://$td/node/test" -spiffeID "spiffe://$td/agent/billing-bot" \
		-selector "unix:uid:$uid" -x509SVIDTTL 3600 -jwtSVIDTTL 300 >"$dir/entry.log" 2>&1; then
		gh_log "spire.sh: creating the registration entry failed:"; cat "$dir/entry.log" >&2
		gh_spire_stop "$dir"; return 1
	fi
	echo "GH_SPIRE_SOCKET=$dir/agent/public/api.sock"
	echo "GH_SPIRE_TRUST_DOMAIN=$td"
	echo "GH_SPIRE_ID=spiffe://$td/agent/billing-bot"
}

gh_spire_stop() {
	local dir="$1" f pid
	for f in "$dir/agent.pid" "$dir/server.pid"; do
		[[ -f "$f" ]] || continue
		pid="$(cat "$f")"
		kill "$pid" 2>/dev/null
		for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
		kill -9 "$pid" 2>/dev/null
		rm -f "$f"
	done
	return 0
}

# Run as a script: scripts/lib/spire.sh ensure|start DIR|stop DIR
if [[ "${BASH_SOURCE[0]}" == "$0" ]]; then
	set -u
	case "${1:-}" in
	ensure) gh_spire_ensure ;;
	start) gh_spire_start "${2:?DIR}" ;;
	stop) gh_spire_stop "${2:?DIR}" ;;
	*) echo "usage: $0 ensure | start DIR | stop DIR" >&2; exit 2 ;;
	esac
fi
