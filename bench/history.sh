#!/usr/bin/env bash
# Benchmark: runs whose cost does not grow with history. A year of TigerBeetle
# manifests (a snapshot every 6 h, a log segment every 15 min: 36,500) in S3 on a
# local SeaweedFS; each command timed and its S3 requests counted (from the AWS
# SDK's debug output, one line per request attempt):
# the first `bkp list` builds the catalog from every manifest, every later run
# reads the catalog and the manifests of its last two days.
#
# Prints the figures and writes them to bench/history-results.md. Not a test.
#
#   bench/history.sh               # 365 days
#   DAYS=30 bench/history.sh
#   KEEP=1 bench/history.sh        # leave the store and its servers running
#   DAYS=3650 RESULTS=bench/history-3650d-results.md bench/history.sh   # ten years, 365,000
#   STORE=local DAYS=1460 RESULTS=bench/history-local-1460d-results.md bench/history.sh
#                                  # a local store (no S3 server; no request
#                                  # counts), and a real `cleanup` as the last run
#   RUNS=cleanup bench/history.sh  # only the first `list` (it writes the catalog)
#                                  # and the cleanup runs
#   KEEP=1 RUNS=setup bench/history.sh  # only the store and its catalog, kept
#                                  # for runs by hand (BKP_NOW as printed)
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../scripts/env.sh"
cd "$BKP_ROOT"
scripts/bootstrap >/dev/null
bkp="${BKP_BIN:-$CARGO_TARGET_DIR/debug/bkp}"
tb="$BKP_TOOLS/bin/tigerbeetle"
days="${DAYS:-365}"
store="${STORE:-s3}"
case "$store" in s3|local) ;; *) echo "STORE is s3 or local, not $store" >&2; exit 2 ;; esac
work="$(mktemp -d "${TMPDIR:-/tmp}/bkp-bench-history.XXXXXX")"
source "$BKP_ROOT/bench/lib.sh"
cleanup() {
  [ -n "${KEEP:-}" ] && { echo "kept $work (servers running: ${pids[*]})"; return; }
  stop_pids; rm -rf "$work"
}
venv="$BKP_TOOLS/venv/bin/python"
load="$(cut -d' ' -f1-3 /proc/loadavg)"

port() { "$venv" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
ports=(); while [ ${#ports[@]} -lt 5 ]; do p="$(port)"; [ "$p" -lt 55000 ] && ports+=("$p"); done
echo "==> starting a TigerBeetle replica with one account"
"$tb" format --cluster=0 --replica=0 --replica-count=1 --development "$work/0_0.tigerbeetle" 2>/dev/null
"$tb" start --addresses="127.0.0.1:${ports[4]}" --development "$work/0_0.tigerbeetle" >"$work/tb.log" 2>&1 &
pids+=($!)
for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/${ports[4]}") 2>/dev/null && break; sleep 0.2; done
tbrepl() { "$tb" repl --cluster=0 --addresses="127.0.0.1:${ports[4]}" --command="$1"; }
tbrepl "create_accounts id=1 code=10 ledger=700;" >/dev/null
# The history ends at the cluster's newest row, as a real chain would (a chain
# ahead of its cluster is refused).
newest="$(tbrepl "lookup_accounts id=1;" | grep -o '"timestamp": *"[0-9]*"' | grep -o '[0-9][0-9]*')"
[ -n "$newest" ] || { echo "could not read the account's timestamp" >&2; exit 1; }

echo "==> writing $days days of manifests"
end="$("$venv" - "$work/store/manifests/tigerbeetle" "$days" "$newest" <<'PY'
import json, os, sys, time, random
out, days, newest = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
os.makedirs(out)
end = int(time.time()) - 60
start = end - days * 86400
def uuid7(ms):
    r = random.getrandbits(80)
    b = ms.to_bytes(6, "big") + r.to_bytes(10, "big")
    b = bytearray(b); b[6] = 0x70 | (b[6] & 0x0F); b[8] = 0x80 | (b[8] & 0x3F)
    h = b.hex(); return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"
def iso(t): return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))
# Each segment holds the rows up to its start, in the cluster's nanoseconds:
# the last ends at the cluster's newest row.
def row_at(t): return newest - (end - 900 - t) * 10**9
prev, until = None, row_at(start) - 900 * 10**9
for t in range(start, end, 900):
    ops = ["snapshot", "logs"] if (t - start) % 21600 == 0 else ["logs"]
    for op in ops:
        i = uuid7(t * 1000 + (1 if op == "logs" else 0))
        m = {"schema": "bkp.manifest/1.0", "id": i, "kind": "tigerbeetle",
             "scope": "full" if op == "snapshot" else "incremental", "operation": op,
             "status": "completed", "started_at": iso(t), "finished_at": iso(t + 5),
             "host": "bench", "bkp_version": "0.1.0", "retention_days": 400,
             "compression": {"algorithm": "zstd", "level": 3, "threads": 2},
             "encryption": None, "objects": [], "files": [], "parent": None,
             "source": {"cluster_id": "0", "data_file": "/var/lib/tigerbeetle/0_0.tigerbeetle"}}
        if op == "logs":
            m["parent"] = prev
            m["source"].update({"after": str(until), "until": str(row_at(t)),
                                "accounts": 0, "transfers": 0, "expiries": 0})
            prev, until = i, row_at(t)
        # As a real backup, one object (its key, sizes and SHA-256s) and, for
        # a snapshot, its file; not stored, so the last day, whose backups
        # `verify --since 1d` reads, names none.
        if t < end - 86400:
            ext = ".tar.zst" if op == "snapshot" else ".tblog.zst"
            m["objects"] = [{"key": time.strftime(f"tigerbeetle/%Y/%m/%d/tigerbeetle-{op}-{i}{ext}", time.gmtime(t)),
                             "size": 4096, "sha256": random.randbytes(32).hex(),
                             "content_bytes": 16384, "content_sha256": random.randbytes(32).hex()}]
            if op == "snapshot":
                m["files"] = [{"name": "0_0.tigerbeetle", "size": 16384, "sha256": random.randbytes(32).hex()}]
        with open(f"{out}/{i}.json", "w") as f: json.dump(m, f)
print(end)
PY
)"
count="$(find "$work/store/manifests" -name '*.json' | wc -l)"
# "Now" as the history ends, so that the S3 copy's duration does not age it.
# (Ten years take minutes to write: "now" is the newest manifest's time.)
export BKP_NOW="$(date -u -d "@$(( end + 30 ))" +%Y-%m-%dT%H:%M:%SZ)"

rclone="$BKP_TOOLS/bin/rclone"
if [ "$store" = s3 ]; then
echo "==> starting SeaweedFS; copying $count manifests into S3"
weed="$BKP_TOOLS/bin/weed"; rclone="$BKP_TOOLS/bin/rclone"
ak="AKBENCH$RANDOM"; sk="$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')"
echo "{\"identities\":[{\"name\":\"b\",\"credentials\":[{\"accessKey\":\"$ak\",\"secretKey\":\"$sk\"}],\"actions\":[\"Admin\",\"Read\",\"Write\",\"List\"]}]}" > "$work/ids.json"
mkdir "$work/weed"
HOME="$work/weed" WEED_MASTER_VOLUME_GROWTH_COPY_1=1 "$weed" server -dir="$work/weed" -ip=127.0.0.1 -ip.bind=127.0.0.1 \
  -master.port="${ports[0]}" -volume.port="${ports[1]}" -filer -filer.port="${ports[2]}" -s3 -s3.port="${ports[3]}" \
  -s3.config="$work/ids.json" -master.volumeSizeLimitMB=256 -volume.max=200 -s3.port.iceberg=0 -s3.port.lance=0 \
  -master.telemetry=false >"$work/weed.log" 2>&1 &
pids+=($!)
export RCLONE_CONFIG=/dev/null RCLONE_CONFIG_S3_TYPE=s3 RCLONE_CONFIG_S3_PROVIDER=SeaweedFS \
  RCLONE_CONFIG_S3_ACCESS_KEY_ID="$ak" RCLONE_CONFIG_S3_SECRET_ACCESS_KEY="$sk" \
  RCLONE_CONFIG_S3_ENDPOINT="http://127.0.0.1:${ports[3]}" RCLONE_CONFIG_S3_REGION=us-east-1 RCLONE_CONFIG_S3_FORCE_PATH_STYLE=true
for _ in $(seq 120); do "$rclone" mkdir s3:bench 2>/dev/null && echo ok | "$rclone" rcat s3:bench/probe 2>/dev/null && break; sleep 0.5; done
"$rclone" deletefile s3:bench/probe
"$rclone" copy --transfers=32 --checkers=32 "$work/store/manifests" s3:bench/p/manifests

store_toml="$(printf 'type = "s3"\nbucket = "bench"\nprefix = "p"\nendpoint = "http://127.0.0.1:%s"' "${ports[3]}")"
export AWS_ACCESS_KEY_ID="$ak" AWS_SECRET_ACCESS_KEY="$sk" AWS_EC2_METADATA_DISABLED=true AWS_CONFIG_FILE=/dev/null AWS_SHARED_CREDENTIALS_FILE=/dev/null
else
# The manifests were written where a local store keeps them.
store_toml="$(printf 'type = "local"\npath = "%s"' "$work/store")"
fi
cat > "$work/bkp.toml" <<TOML
work_dir = "work"
[store]
$store_toml
[encryption]
enabled = false
[tigerbeetle]
data_file = "/nonexistent/0_0.tigerbeetle"
addresses = "127.0.0.1:${ports[4]}"
binary = "$tb"
replica_args = ["--development"]
TOML
# The same with the audit ledger on the cluster, as production runs it.
cp "$work/bkp.toml" "$work/bkp-ledger.toml"
printf '[ledger]\ncluster_id = 0\naddresses = "127.0.0.1:%s"\nledger = 12\n' "${ports[4]}" >> "$work/bkp-ledger.toml"

rows=()
requests_of=()
run() { # label, bkp arguments... (CONFIG: another config file)
  local label="$1"; shift
  BKP_LOG=aws_smithy_runtime::client::orchestrator=trace /usr/bin/time -f "%e %M" -o "$work/time" \
    "$bkp" --config "${CONFIG:-$work/bkp.toml}" "$@" >"$work/out" 2>"$work/err" || { cat "$work/err" "$work/out" >&2; exit 1; }
  read -r secs rss < "$work/time"
  requests="$(grep -c 'beginning attempt #' "$work/err" || true)"
  [ "$store" = local ] && requests=-
  # Each request as "METHOD key-or-listing", for the runs that must stay few
  # (S3 only: a local store's reads are not requests).
  case "$store:$label" in s3:*"nothing new"*)
    sed -n 's/.*transmitting request.*as_string: "http:[/][/][^/]*[/]bench[/]\([^"]*\)".*method: \([A-Z]*\).*/\2 \1/p' "$work/err" \
      | sed 's/?x-id=[A-Za-z]*$//; s/?list-type=2&prefix=/LIST /; s/%2F/\//g' \
      | awk '$2 == "LIST" { print "LIST " $3; next } { print }' > "$work/req"
    requests_of+=("- $label: $(paste -sd';' "$work/req" | sed 's/;/; /g')") ;;
  esac
  printf '%-58s %6.2f s %6s requests %5d MiB\n' "$label" "$secs" "$requests" "$((rss/1024))"
  rows+=("$(printf '| %s | %.2f | %s | %d |' "$label" "$secs" "$requests" "$((rss/1024))")")
}
run "bkp list (no catalog yet: reads every manifest, writes it)" --json list
if [ "${RUNS:-all}" = all ]; then
run "bkp list (through the catalog)" --json list
run "bkp list --last 20" list --last 20
run "bkp status" --json status
run "bkp restore latest --dry-run (selection)" restore latest --dry-run --target "$work/restored"
run "bkp logs, first run (stores the cluster's one account as a segment)" --json logs
run "bkp logs, nothing new" --json logs
run "bkp logs, nothing new (again)" --json logs
# Steady state: twenty more idle runs, as the 15-minute timer makes them; the
# row is the slowest run and the most requests any of them made, and the
# requests of that run are listed.
most=0; slowest=0
for i in $(seq 20); do
  run "bkp logs, nothing new, run $i of 20" --json logs > /dev/null
  unset 'rows[-1]'
  [ "$store" = local ] && most=-
  if [ "$store" = s3 ]; then
    unset 'requests_of[-1]'
    [ "$requests" -gt "$most" ] && { most=$requests; cp "$work/req" "$work/req-most"; }
  fi
  slowest=$(python3 -c "print(max($slowest, $secs))")
done
printf '%-58s %6.2f s %6s requests\n' "bkp logs, nothing new, 20 runs in a row (worst)" "$slowest" "$most"
rows+=("$(printf '| %s | %.2f | %s | - |' "bkp logs, nothing new, 20 more runs in a row (the slowest; the most requests)" "$slowest" "$most")")
if [ "$store" = s3 ]; then
  requests_of+=("- the 20 more runs, the one with the most requests: $(paste -sd';' "$work/req-most" | sed 's/;/; /g')")
fi
# The last logs run: its own audit transfer is news to the next run, which captures it.
CONFIG="$work/bkp-ledger.toml" run "bkp logs, nothing new, [ledger] on the same cluster" --json logs
run "bkp verify --since 1d (lists every manifest key)" verify --since 1d
fi
[ "${RUNS:-all}" = setup ] && { echo "kept $work: the store and its catalog, BKP_NOW=$BKP_NOW"; exit 0; }
run "bkp cleanup --dry-run (lists every manifest key)" cleanup --dry-run
run "bkp cleanup --dry-run --json (the plan as one document)" --json cleanup --dry-run
if [ "$store" = local ]; then
  run "bkp cleanup (deletes what no retention rule keeps)" cleanup
  deleted=$(( count - $(find "$work/store/manifests" -name '*.json' | wc -l) ))
fi
# The cluster's own floor for `logs`: TigerBeetle's repl registering a session
# and sending one query (a `logs` run with nothing new sends three, through one
# session opened as it starts).
# (Account 1 exists, so the query finds a row and exits 0.)
/usr/bin/time -f "%e %M" -o "$work/time" "$tb" repl --cluster=0 --addresses="127.0.0.1:${ports[4]}" \
  --command="query_accounts limit=1;" >"$work/repl.out" 2>&1 \
  || { echo "tigerbeetle repl failed:"; cat "$work/repl.out"; exit 1; } >&2
read -r secs rss < <(tail -1 "$work/time")
printf '%-58s %6.2f s %6s requests %5d MiB\n' "tigerbeetle repl: a session and one query" "$secs" "-" "$((rss/1024))"
rows+=("$(printf '| %s | %.2f | - | %d |' "tigerbeetle repl: a session and one query (the cluster alone)" "$secs" "$((rss/1024))")")
if [ "$store" = s3 ]; then
  catalog="$("$rclone" lsl s3:bench/p/catalog | awk '{s+=$1; n++} END {printf "%d objects, %.1f MiB", n, s/1048576}')"
  where="in S3 (SeaweedFS on loopback)"
else
  catalog="$(find "$work/store/catalog" -type f -printf '%s\n' | awk '{s+=$1; n++} END {printf "%d objects, %.1f MiB", n, s/1048576}')"
  where="in a local store (no request counts); the real cleanup deleted $deleted backups no retention rule keeps"
fi

{
echo "$count TigerBeetle manifests ($days days: a snapshot every 6 h, a log segment every 15 min; each names its object, as a real one does) $where; $(nproc) cores; load average at start $load; $(date -u +%Y-%m-%d)"
echo
echo "| command | wall (s) | S3 requests | peak RSS (MiB) |"
echo "|---|---|---|---|"
printf '%s\n' "${rows[@]}"
echo
echo "Catalog after the runs: $catalog."
if [ ${#requests_of[@]} -gt 0 ]; then
echo
echo "Requests of the runs with nothing new (method and key under the store's prefix):"
echo
printf '%s\n' "${requests_of[@]}"
fi
} | tee "${RESULTS:-$BKP_ROOT/bench/history-results.md}"
