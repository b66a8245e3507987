#!/usr/bin/env bash
# Benchmark: a point-in-time restore of TigerBeetle costs the snapshot it
# starts from plus the log after it, whatever the history before the snapshot.
# Two ledgers get the same tail (TAIL transfers after the snapshot) behind
# histories of different lengths (SHORT and LONG transfers before it); each is
# restored `--at` the tail's end from its snapshot, and, for contrast, from the
# log alone (`--replicas 3`, which has no base to start from here and replays
# everything).
#
# Prints the figures and writes them to bench/histories-results.md. Not a test.
#
#   bench/histories.sh                          # 100,000 and 1,000,000 before, 100,000 after
#   SHORT=50000 LONG=500000 TAIL=50000 bench/histories.sh
#   PRODUCTION=1 bench/histories.sh             # replicas without --development
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../scripts/env.sh"
cd "$BKP_ROOT"
scripts/bootstrap >/dev/null
bkp="$CARGO_TARGET_DIR/debug/bkp"
tb="$BKP_TOOLS/bin/tigerbeetle"
short="${SHORT:-100000}"
long="${LONG:-1000000}"
tail_count="${TAIL:-100000}"
flags=(--development)
[ -n "${PRODUCTION:-}" ] && flags=()
work="$(mktemp -d "${TMPDIR:-/tmp}/bkp-bench-histories.XXXXXX")"
pid=""
stop() {
  if [ -n "$pid" ]; then kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; fi
  pid=""
}
cleanup() { stop || true; rm -rf "$work"; }
trap cleanup EXIT

start() { # data file, port
  "$tb" start --addresses="127.0.0.1:$2" "${flags[@]}" "$1" >>"$(dirname "$1")/tb.log" 2>&1 &
  pid=$!
  for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$2") 2>/dev/null && return; sleep 0.2; done
  echo "the replica on $1 did not come up" >&2; exit 1
}

timed() { # output file, command... → "seconds"
  local out="$1"; shift
  /usr/bin/time -f "%e" -o "$work/time" "$@" >"$out" 2>"$work/err" || { cat "$work/err" >&2; exit 1; }
  cat "$work/time"
}

replayed() { # restore JSON → "events seconds"
  python3 -c 'import json,sys; r=json.load(open(sys.argv[1]))["replayed"]; print(r["accounts"]+r["transfers"], r["seconds"])' "$1"
}

rows=()
for before in "$short" "$long"; do
  d="$work/h$before"; mkdir -p "$d"
  port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
  "$tb" format --cluster=0 --replica=0 --replica-count=1 "${flags[@]}" "$d/0_0.tigerbeetle" 2>/dev/null
  head -c 32 /dev/urandom > "$d/key"; chmod 600 "$d/key"
  cat > "$d/bkp.toml" <<TOML
work_dir = "work"
[store]
type = "local"
path = "store"
[encryption]
key_file = "key"
[tigerbeetle]
data_file = "0_0.tigerbeetle"
addresses = "127.0.0.1:$port"
binary = "$tb"
replica_args = [$( [ ${#flags[@]} -gt 0 ] && printf '"%s",' "${flags[@]}" | sed 's/,$//')]
TOML
  b=("$bkp" --config "$d/bkp.toml")
  echo "==> history of $before transfers, then the snapshot"
  start "$d/0_0.tigerbeetle" "$port"
  "$tb" benchmark --addresses="127.0.0.1:$port" --account-count=10000 --transfer-count="$before" \
    --transfer-batch-count=250 --account-batch-count=250 >"$d/bench1.log" 2>&1
  "${b[@]}" logs >/dev/null
  sleep 2; stop
  "${b[@]}" snapshot >/dev/null
  echo "==> the same tail: $tail_count transfers"
  start "$d/0_0.tigerbeetle" "$port"
  "$tb" benchmark --addresses="127.0.0.1:$port" --account-count=10000 --transfer-count="$tail_count" \
    --transfer-batch-count=250 --account-batch-count=250 --id-order=tbid >"$d/bench2.log" 2>&1
  "${b[@]}" logs >/dev/null
  sleep 2; stop
  at="$(date -u +%Y-%m-%dT%H:%M:%S.%NZ)"
  echo "==> restore --at the tail's end, from the snapshot and from the log alone"
  s_base=$(timed "$d/base.json" "${b[@]}" --json restore --at "$at" --target "$d/restored")
  read -r e_base r_base < <(replayed "$d/base.json")
  s_log=$(timed "$d/log.json" "${b[@]}" --json restore --at "$at" --replicas 3 --target "$d/restored3")
  read -r e_log r_log < <(replayed "$d/log.json")
  snapshot_mib=$(du -sm "$d/store/tigerbeetle" | cut -f1)
  rm -rf "$d/restored" "$d/restored3"
  rows+=("$(printf '| %s | %s | %.1f | %s | %.1f | %.1f | %s | %.1f |' \
    "$before" "$tail_count" "$s_base" "$e_base" "$r_base" "$s_log" "$e_log" "$r_log")")
  echo "${rows[-1]}"
  rm -rf "$d"
done

{
echo "Point-in-time restore of one TigerBeetle replica (\`${flags[*]:-production defaults}\`) at the end of a tail of $tail_count transfers (and 10,000 accounts) after a snapshot, behind histories of different lengths; $(nproc) cores; $(date -u +%Y-%m-%d)"
echo
echo "| transfers before the snapshot | transfers after | restore from the snapshot (s) | events replayed | replay (s) | from the log alone, 3 replicas (s) | events replayed | replay (s) |"
echo "|---|---|---|---|---|---|---|---|"
printf '%s\n' "${rows[@]}"
echo
echo "From the snapshot, the restore replays the same events (the tail) whatever the history before it; its time still grows with the snapshot it downloads and unpacks, and with TigerBeetle's work per event in a larger ledger. From the log alone, it replays the whole history."
} | tee "$BKP_ROOT/bench/histories-results.md"
