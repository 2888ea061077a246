#!/usr/bin/env bash
# bench/run.sh — Gatehouse's load benchmark, end to end.
#
#   bench/run.sh                    # the default run (about 3 minutes)
#   bench/run.sh --quick            # a short validation run (about 40 s)
#   bench/run.sh -- -rounds 30      # pass flags to bench/mcpload
#   bench/run.sh --profile 30       # CPU profile of the gateway under load
#   bench/run.sh --layers all       # every layer on (default: --layers core)
#   bench/run.sh --also execution   # a second gateway (target gateway-execution)
#                                   # with those layers, interleaved with the first
#   bench/run.sh --also core --also-bin /tmp/gatehouse-old
#                                   # the second gateway runs another build (A/B
#                                   # of two commits in one run: target gateway-core)
#
# It builds the gateway, the bare reverse proxy and the load generator from
# this tree, builds (or reuses) the go-sdk everything-server, and starts four
# processes on loopback:
#
#   upstream   go-sdk v1.8.0 conformance everything-server, session mode
#   gateway    gatehouse serve, one endpoint, namespace off, with the
#              layers that --layers chooses:
#              core  bearer-token authentication (EdDSA JWT), tool pinning,
#                    durable audit log (write-ahead intent, group commit,
#                    fdatasynced journal, SQLite synchronous=FULL behind it);
#                    semantic layer off, no Cedar
#                    policy. The gateway-core issue's configuration; default
#              execution  core plus the execution layer: Cedar policy (the
#                    default library in policies/ and a permit for the bench
#                    agent; the tool is labelled untrusted_content, so the
#                    library does not challenge it), a rate limit per agent,
#                    a concurrency limit on the server, breakers (on by
#                    default) and the kill switch (always on)
#              all   execution plus the semantic layer (every built-in
#                    detector, default thresholds)
#   revproxy   bench/revproxy: net/http/httputil.ReverseProxy, nothing else
#   mcpload    the load generator (bench/mcpload), 32 sessions per target
#
# mcpload interleaves the targets (direct → gateway → revproxy, rotating)
# and prints the table; the JSON goes to bench/results/<timestamp>.json.
# Nothing is pinned to a CPU. The machine is described in the results.
#
# --profile N runs the gateway under bench/ghprof (the same gateway with a
# pprof listener), offers it 500 calls/s for N+10 seconds, takes an N-second
# CPU profile and an allocation profile into bench/results/, and prints the
# top functions. Profiling slows the gateway: never mix it with measurement.
#
# Environment: GATEHOUSE_CACHE (see scripts/lib/conformance.sh),
# BENCH_KEEP=1 keeps the temporary directory (configs, logs, audit DB).
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
# shellcheck source=scripts/lib/conformance.sh
. scripts/lib/conformance.sh

mode=measure
profile_s=0
layers=core
also=""
also_bin=""
extra=()
while (($#)); do
	case "$1" in
	--quick) mode=quick ;;
	--profile)
		mode=profile
		profile_s="${2:?--profile needs seconds}"
		shift
		;;
	--layers | --also)
		case ${2:-} in
		core | execution | all) ;;
		*)
			echo "run.sh: $1 is core, execution or all, not ${2:-nothing}" >&2
			exit 2
			;;
		esac
		if [[ $1 == --layers ]]; then layers="$2"; else also="$2"; fi
		shift
		;;
	--also-bin)
		also_bin="${2:?--also-bin needs a gatehouse binary}"
		[[ -x $also_bin ]] || {
			echo "run.sh: --also-bin $also_bin is not an executable" >&2
			exit 2
		}
		also_bin="$(cd "$(dirname "$also_bin")" && pwd)/$(basename "$also_bin")"
		shift
		;;
	--)
		shift
		extra=("$@")
		break
		;;
	-h | --help)
		sed -n '2,40p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
		exit 0
		;;
	*)
		echo "run.sh: unknown argument $1 (mcpload flags go after --)" >&2
		exit 2
		;;
	esac
	shift
done

ts="$(date -u +%Y%m%dT%H%M%SZ)"
results="$root/bench/results"
mkdir -p "$results"
work="$(mktemp -d "${TMPDIR:-/tmp}/gatehouse-bench.XXXXXX")"
pids=()
cleanup() {
	local rc=$?
	for pid in "${pids[@]}"; do
		kill "$pid" 2>/dev/null || true
	done
	for pid in "${pids[@]}"; do
		wait "$pid" 2>/dev/null || true
	done
	if [[ "${BENCH_KEEP:-}" == 1 || $rc -ne 0 ]]; then
		echo "run.sh: logs and configs kept in $work" >&2
	else
		rm -rf "$work"
	fi
	exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# free_port VAR sets VAR to a loopback TCP port that nobody listened on a
# moment ago and that no earlier call chose.
taken=" "
free_port() {
	local p
	for _ in $(seq 200); do
		p=$((20000 + RANDOM % 30000))
		[[ $taken == *" $p "* ]] && continue
		if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
			taken+="$p "
			printf -v "$1" '%s' "$p"
			return 0
		fi
	done
	echo "run.sh: no free port found" >&2
	return 1
}

echo "run.sh: building into $work" >&2
go build -o "$work/gatehouse" ./cmd/gatehouse
go build -o "$work/revproxy" ./bench/revproxy
go build -o "$work/mcpload" ./bench/mcpload
if [[ $mode == profile ]]; then
	go build -o "$work/ghprof" ./bench/ghprof
fi
gh_everything_server_ensure

free_port up_port
free_port gw_port
free_port admin_port
free_port px_port
free_port pprof_port
free_port gw2_port
free_port admin2_port

"$GH_EVERYTHING_SERVER" -http "127.0.0.1:$up_port" -stateless=false >"$work/upstream.log" 2>&1 &
up_pid=$!
pids+=("$up_pid")
gh_wait_http "http://127.0.0.1:$up_port/mcp" 30 "$up_pid"

# write_config LAYERS DIR PORT ADMIN_PORT writes DIR/gatehouse.yaml: one
# upstream, the bench agent, and the layers chosen.
write_config() {
	local layers="$1" dir="$2" port="$3" admin="$4" layer_config tool_config limits_config
	mkdir -p "$dir"
	case $layers in
	core)
		layer_config="semantic:
  disabled: true"
		tool_config=""
		;;
	execution | all)
		mkdir -p "$dir/policies"
		cp policies/*.cedar "$dir/policies/"
		cat >"$dir/policies/bench.cedar" <<'EOF'
// Generated by bench/run.sh: the bench agent may use its server.
@id("bench")
permit (principal == Gatehouse::Agent::"bench", action, resource in Gatehouse::Server::"everything");
EOF
		layer_config="policy:
  dir: $dir/policies"
		if [[ $layers == execution ]]; then
			layer_config+="
semantic:
  disabled: true"
		fi
		tool_config="    tools:
      test_simple_text:
        labels: [untrusted_content]"
		;;
	esac
	limits_config="limits:
  max_body_bytes: 1048576"
	if [[ $layers != core ]]; then
		limits_config+="
  rates:
    - {name: per-agent, per: [agent], rate: 100000/s}
  concurrency:
    - {server: everything, max: 1024}"
	fi
	cat >"$dir/gatehouse.yaml" <<EOF
# Generated by bench/run.sh (layers $layers): one upstream.
listen: 127.0.0.1:$port
data_dir: $dir/data
admin:
  listen: 127.0.0.1:$admin
identity:
  max_token_ttl: 24h
agents:
  - id: bench
    name: load benchmark
    owner: bench@gatehouse.invalid
    servers: [everything]
servers:
  - id: everything
    url: http://127.0.0.1:$up_port/mcp
$tool_config
endpoints:
  - path: /mcp
    servers: [everything]
    namespace: false
$limits_config
$layer_config
EOF
}

write_config "$layers" "$work" "$gw_port" "$admin_port"
if [[ $mode == profile ]]; then
	"$work/ghprof" -config "$work/gatehouse.yaml" -pprof "127.0.0.1:$pprof_port" >"$work/gateway.log" 2>&1 &
else
	"$work/gatehouse" serve --config "$work/gatehouse.yaml" >"$work/gateway.log" 2>&1 &
fi
gw_pid=$!
pids+=("$gw_pid")
gh_wait_http "http://127.0.0.1:$gw_port/healthz" 30 "$gw_pid"
if [[ -n $also ]]; then
	write_config "$also" "$work/also" "$gw2_port" "$admin2_port"
	"${also_bin:-$work/gatehouse}" serve --config "$work/also/gatehouse.yaml" >"$work/also/gateway.log" 2>&1 &
	gw2_pid=$!
	pids+=("$gw2_pid")
	gh_wait_http "http://127.0.0.1:$gw2_port/healthz" 30 "$gw2_pid"
fi
(umask 077 && "$work/gatehouse" token mint --config "$work/gatehouse.yaml" --agent bench --ttl 24h >"$work/token" 2>/dev/null)

"$work/revproxy" -listen "127.0.0.1:$px_port" -upstream "http://127.0.0.1:$up_port" >"$work/revproxy.log" 2>&1 &
px_pid=$!
pids+=("$px_pid")
gh_wait_http "http://127.0.0.1:$px_port/mcp" 30 "$px_pid"

commit="$(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
if [[ -n "$(git status --porcelain -- cmd internal go.mod go.sum 2>/dev/null)" ]]; then
	commit="$commit+dirty"
fi
layer_desc() {
	case $1 in
	core) echo "identity (bearer token), pinning, durable audit; semantic off, no Cedar policy" ;;
	execution) echo "identity (bearer token), pinning, durable audit, Cedar policy (default library and a permit), rate and concurrency limits, breakers, kill switch; semantic off" ;;
	all) echo "identity (bearer token), pinning, durable audit, Cedar policy (default library and a permit), rate and concurrency limits, breakers, kill switch, semantic (all detectors)" ;;
	esac
}
notes="commit $commit; upstream everything-server $GH_GOSDK_VERSION session mode; gateway layers $layers: $(layer_desc "$layers")"
if [[ -n $also ]]; then notes+="; gateway-$also layers: $(layer_desc "$also")"; fi
if [[ -n $also_bin ]]; then notes+="; gateway-$also runs the build $also_bin"; fi

direct="name=direct,url=http://127.0.0.1:$up_port/mcp"
gateway="name=gateway,url=http://127.0.0.1:$gw_port/mcp,pid=$gw_pid,token-file=$work/token"
revproxy="name=revproxy,url=http://127.0.0.1:$px_port/mcp,pid=$px_pid"

case $mode in
measure | quick)
	args=(-target "$direct" -target "$gateway" -target "$revproxy")
	if [[ -n $also ]]; then
		(umask 077 && "$work/gatehouse" token mint --config "$work/also/gatehouse.yaml" --agent bench --ttl 24h >"$work/also/token" 2>/dev/null)
		args+=(-target "name=gateway-$also,url=http://127.0.0.1:$gw2_port/mcp,pid=$gw2_pid,token-file=$work/also/token")
	fi
	args+=(-upstream-pid "$up_pid"
		-fsync-dir "$work/data" -out "$results/$ts.json" -layers "$layers" -notes "$notes")
	if [[ $mode == quick ]]; then
		args+=(-rounds 2 -slice 1s -max-rounds 1 -max-slice 2s -warmup 1s)
	fi
	"$work/mcpload" "${args[@]}" "${extra[@]}"
	;;
profile)
	"$work/mcpload" -target "$gateway" -upstream-pid "$up_pid" -rates 500 -rounds 1 \
		-slice "$((profile_s + 10))s" -max-rounds 0 -warmup 2s -layers "$layers" -notes "profiling run: $notes" "${extra[@]}" &
	load_pid=$!
	sleep 5
	curl -sf -o "$results/$ts-gateway.cpu.pprof" "http://127.0.0.1:$pprof_port/debug/pprof/profile?seconds=$profile_s"
	curl -sf -o "$results/$ts-gateway.allocs.pprof" "http://127.0.0.1:$pprof_port/debug/pprof/allocs"
	wait "$load_pid"
	echo
	echo "CPU profile: $results/$ts-gateway.cpu.pprof (go tool pprof -http=: $work/ghprof $results/$ts-gateway.cpu.pprof)"
	cp "$work/ghprof" "$results/$ts-ghprof"
	go tool pprof -top -nodecount=40 "$results/$ts-ghprof" "$results/$ts-gateway.cpu.pprof" 2>/dev/null | head -50
	;;
esac
