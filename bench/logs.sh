#!/usr/bin/env bash
# Benchmark: `bkp logs` capture rate, the cost of a run with nothing new, and the
# replay rate of `bkp restore --at` (from the log alone) into one replica and into a
# private cluster of REPLICAS (default 3), against a TigerBeetle replica filled by
# `tigerbeetle benchmark` (through the client). The replay's own rate (events per
# second from its first segment read to its last check) is reported beside the
# whole restore's (which adds formatting and starting the replicas).
#
# Prints the figures and writes them to bench/logs-results.md. Not a test.
#
#   bench/logs.sh                  # 1,000,000 transfers
#   TRANSFERS=200000 bench/logs.sh
#   LIMIT_REQUEST=1MiB bench/logs.sh   # production's request size (8189 events a batch)
#   PRODUCTION=1 bench/logs.sh     # replicas without --development (1 MiB requests, caches)
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../scripts/env.sh"
cd "$BKP_ROOT"
scripts/bootstrap >/dev/null
bkp="$CARGO_TARGET_DIR/debug/bkp"
tb="$BKP_TOOLS/bin/tigerbeetle"
transfers="${TRANSFERS:-1000000}"
# Replica flags for the cluster and bkp's private replica alike.
replicas="${REPLICAS:-3}"
flags=(--development)
[ -n "${PRODUCTION:-}" ] && flags=()
[ -n "${LIMIT_REQUEST:-}" ] && flags+=(--experimental "--limit-request=$LIMIT_REQUEST")
work="$(mktemp -d "${TMPDIR:-/tmp}/bkp-bench-logs.XXXXXX")"
pid=""
anchor_pids=()
cleanup() { kill $pid "${anchor_pids[@]}" 2>/dev/null; sleep 1; rm -rf "$work"; }
trap cleanup EXIT

port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
format_flags=(--development); [ -n "${PRODUCTION:-}" ] && format_flags=()
"$tb" format --cluster=0 --replica=0 --replica-count=1 "${format_flags[@]}" "$work/0_0.tigerbeetle" 2>/dev/null
"$tb" start --addresses="127.0.0.1:$port" "${flags[@]}" "$work/0_0.tigerbeetle" >"$work/tb.log" 2>&1 &
pid=$!
for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break; sleep 0.2; done
echo "==> $transfers transfers through the client (tigerbeetle benchmark)"
"$tb" benchmark --addresses="127.0.0.1:$port" --account-count=10000 --transfer-count="$transfers" \
  --transfer-batch-count=250 --account-batch-count=250 >"$work/bench.log" 2>&1

head -c 32 /dev/urandom > "$work/key"; chmod 600 "$work/key"   # bkp refuses a key file others may read
cat > "$work/bkp.toml" <<TOML
work_dir = "work"
[store]
type = "local"
path = "store"
[encryption]
key_file = "key"
[tigerbeetle]
addresses = "127.0.0.1:$port"
binary = "$tb"
replica_args = [$( [ ${#flags[@]} -gt 0 ] && printf '"%s",' "${flags[@]}" | sed 's/,$//')]
TOML

run() { # label, output-file, command...
  local label="$1" out="$2"; shift 2
  /usr/bin/time -f "%e %M" -o "$work/time" "$@" >"$out" 2>"$work/err" || { cat "$work/err"; exit 1; }
  read -r secs rss < "$work/time"
  echo "$label $secs $rss"
}
read -r _ s1 r1 < <(run capture "$work/first.json" "$bkp" --config "$work/bkp.toml" --json logs)
read -r _ s2 r2 < <(run idle "$work/idle.json" "$bkp" --config "$work/bkp.toml" --json logs)
requests_first=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["manifest"]["source"]["requests"])' "$work/first.json")
at="$(date -u +%Y-%m-%dT%H:%M:%S.%NZ)"
read -r _ s3 r3 < <(run replay "$work/restore.json" "$bkp" --config "$work/bkp.toml" --json restore --at "$at" --target "$work/restored")
rm -rf "$work/restored"
read -r _ s4 r4 < <(run cluster "$work/cluster.json" "$bkp" --config "$work/bkp.toml" --json restore --at "$at" --replicas "$replicas" --target "$work/restored$replicas")
# What TigerBeetle itself accepts: its own benchmark client (one session, as
# replay uses) into a fresh cluster of as many replicas with the same flags,
# transfers in requests of the size replay sends. (`tigerbeetle benchmark
# --imported`, which would send imported rows as replay does, stops at its first
# transfer batch in 0.16.78 with imported_event_timestamp_must_not_regress.)
mkdir -p "$work/anchor"
addrs=""
for r in $(seq 0 $((replicas - 1))); do
  p="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
  addrs="${addrs:+$addrs,}127.0.0.1:$p"
  "$tb" format --cluster=0 --replica="$r" --replica-count="$replicas" "${format_flags[@]}" "$work/anchor/$r.tigerbeetle" 2>/dev/null
done
for r in $(seq 0 $((replicas - 1))); do
  "$tb" start --addresses="$addrs" "${flags[@]}" "$work/anchor/$r.tigerbeetle" >>"$work/anchor.log" 2>&1 &
  anchor_pids+=($!)
done
batch=$(python3 -c 'import json,sys; r=json.load(open(sys.argv[1]))["replayed"]; print(-(-(r["accounts"]+r["transfers"])//r["batches"]))' "$work/cluster.json")
"$tb" benchmark --addresses="$addrs" --account-count=10000 --transfer-count="$transfers" \
  --transfer-batch-count="$batch" --account-batch-count="$batch" >"$work/anchor-bench.log" 2>&1
accepted=$(sed -n 's/^load accepted = \([0-9]*\) tx\/s.*/\1/p' "$work/anchor-bench.log")
kill "${anchor_pids[@]}" 2>/dev/null; anchor_pids=()

replayed() { python3 -c 'import json,sys; r=json.load(open(sys.argv[1]))["replayed"]; print(r["accounts"]+r["transfers"], r["seconds"], r["batches"], "%.2f" % r["in_flight_seconds"], "%.2f" % r["checked_seconds"])' "$1"; }
read -r e3 rs3 b3 w3 c3 < <(replayed "$work/restore.json")
read -r e4 rs4 b4 w4 c4 < <(replayed "$work/cluster.json")
{
echo "$transfers transfers and 10,000 accounts in one replica started with \`${flags[*]:-(production defaults)}\`, replayed by bkp into private replicas with the same flags; $(nproc) cores; $(date -u +%Y-%m-%d)"
echo
echo "| run | wall (s) | rate | peak RSS (MiB) |"
echo "|---|---|---|---|"
printf '| bkp logs, first run (capture, zstd, encrypt, store) | %.2f | %.0f transfers/s | %d |\n' "$s1" "$(python3 -c "print($transfers/$s1)")" "$((r1/1024))"
printf '| bkp logs, nothing new (3 cluster requests) | %.2f | - | %d |\n' "$s2" "$((r2/1024))"
printf '| bkp restore --at now, log alone, 1 replica (format, start, replay) | %.2f | %.0f events/s | %d |\n' "$s3" "$(python3 -c "print($e3/$s3)")" "$((r3/1024))"
printf '| the replay alone, 1 replica (%s events in %s requests; %s s of it with a request at the cluster, %s s checking after the last answer) | %.2f | %.0f events/s | - |\n' "$e3" "$b3" "$w3" "$c3" "$rs3" "$(python3 -c "print($e3/$rs3)")"
printf '| bkp restore --at now --replicas %s, log alone (format, start, replay) | %.2f | %.0f events/s | %d |\n' "$replicas" "$s4" "$(python3 -c "print($e4/$s4)")" "$((r4/1024))"
printf '| the replay alone, %s replicas (%s events in %s requests; %s s of it with a request at the cluster, %s s checking after the last answer) | %.2f | %.0f events/s | - |\n' "$replicas" "$e4" "$b4" "$w4" "$c4" "$rs4" "$(python3 -c "print($e4/$rs4)")"
printf '| tigerbeetle benchmark, %s replicas, one session, plain transfers in requests of %s | - | %s transfers/s | - |\n' "$replicas" "$batch" "$accepted"
echo
echo "Cluster requests of the first capture: $requests_first."
} | tee "$BKP_ROOT/bench/logs-results.md"
