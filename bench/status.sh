#!/usr/bin/env bash
# Benchmark: `bkp status` over a year of TigerBeetle history (a snapshot every 6 h, a
# log segment every 15 min: 36,500 manifests) in a local store and in S3 on a local
# SeaweedFS, next to `bkp list`, which reads every manifest. Shows that status reads
# only the newest manifests it needs.
#
# Prints the figures and writes them to bench/status-results.md. Not a test.
#
#   bench/status.sh                # 365 days
#   DAYS=30 bench/status.sh
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../scripts/env.sh"
cd "$BKP_ROOT"
scripts/bootstrap >/dev/null
bkp="$CARGO_TARGET_DIR/debug/bkp"
days="${DAYS:-365}"
work="$(mktemp -d "${TMPDIR:-/tmp}/bkp-bench-status.XXXXXX")"
pid=""
cleanup() { [ -n "$pid" ] && kill "$pid" 2>/dev/null; sleep 3; rm -rf "$work"; }
trap cleanup EXIT
venv="$BKP_TOOLS/venv/bin/python"

echo "==> writing $days days of manifests"
"$venv" - "$work/store/manifests/tigerbeetle" "$days" <<'PY'
import json, os, sys, time, random
out, days = sys.argv[1], int(sys.argv[2])
os.makedirs(out)
end = int(time.time()) - 60
start = end - days * 86400
def uuid7(ms):
    r = random.getrandbits(80)
    b = ms.to_bytes(6, "big") + r.to_bytes(10, "big")
    b = bytearray(b); b[6] = 0x70 | (b[6] & 0x0F); b[8] = 0x80 | (b[8] & 0x3F)
    h = b.hex(); return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"
def iso(t): return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))
prev, until, n = None, 0, 0
for t in range(start, end, 900):
    ops = ["snapshot", "logs"] if (t - start) % 21600 == 0 else ["logs"]
    for op in ops:
        i = uuid7(t * 1000 + (1 if op == "logs" else 0))
        m = {"schema": "bkp.manifest/1.0", "id": i, "kind": "tigerbeetle",
             "scope": "full" if op == "snapshot" else "incremental", "operation": op,
             "status": "completed", "started_at": iso(t), "finished_at": iso(t + 5),
             "host": "bench", "bkp_version": "0.1.0", "retention_days": 365,
             "compression": {"algorithm": "zstd", "level": 3, "threads": 2},
             "encryption": None, "objects": [], "files": [], "parent": None, "source": {}}
        if op == "logs":
            m["parent"] = prev; m["source"] = {"after": str(until), "until": str(until + 1000)}
            prev, until = i, until + 1000
        with open(f"{out}/{i}.json", "w") as f: json.dump(m, f)
        n += 1
print(n)
PY
# "Now" as the history ends, so that the S3 copy's duration does not age it.
export BKP_NOW="$(date -u -d "@$(( $(date +%s) - 30 ))" +%Y-%m-%dT%H:%M:%SZ)"
count="$(ls "$work/store/manifests/tigerbeetle" | wc -l)"

cat > "$work/local.toml" <<TOML
work_dir = "work"
[store]
type = "local"
path = "store"
[encryption]
enabled = false
[tigerbeetle]
data_file = "/nonexistent/0_0.tigerbeetle"
addresses = "127.0.0.1:1"
TOML

run() { # command...; sets secs and rss
  /usr/bin/time -f "%e %M" -o "$work/time" "$@" >"$work/out" 2>"$work/err" || { cat "$work/err" "$work/out" >&2; exit 1; }
  read -r secs rss < "$work/time"
}
reads() { "$venv" -c 'import json,sys; d=json.load(open(sys.argv[1])); print(d["manifests_read"])' "$work/out"; }

run "$bkp" --config "$work/local.toml" --json status; ls1=$secs lr1=$rss lread="$(reads)"
run "$bkp" --config "$work/local.toml" --json list; ll1=$secs llr1=$rss

echo "==> starting SeaweedFS and copying $count manifests into it"
weed="$BKP_TOOLS/bin/weed"; rclone="$BKP_TOOLS/bin/rclone"
port() { "$venv" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
ak="AKBENCH$RANDOM"; sk="$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')"
echo "{\"identities\":[{\"name\":\"b\",\"credentials\":[{\"accessKey\":\"$ak\",\"secretKey\":\"$sk\"}],\"actions\":[\"Admin\",\"Read\",\"Write\",\"List\"]}]}" > "$work/ids.json"
ports=(); while [ ${#ports[@]} -lt 4 ]; do p="$(port)"; [ "$p" -lt 55000 ] && ports+=("$p"); done
mkdir "$work/weed"
HOME="$work/weed" WEED_MASTER_VOLUME_GROWTH_COPY_1=1 "$weed" server -dir="$work/weed" -ip=127.0.0.1 -ip.bind=127.0.0.1 \
  -master.port="${ports[0]}" -volume.port="${ports[1]}" -filer -filer.port="${ports[2]}" -s3 -s3.port="${ports[3]}" \
  -s3.config="$work/ids.json" -master.volumeSizeLimitMB=256 -volume.max=200 -s3.port.iceberg=0 -s3.port.lance=0 \
  -master.telemetry=false >"$work/weed.log" 2>&1 &
pid=$!
export RCLONE_CONFIG=/dev/null RCLONE_CONFIG_S3_TYPE=s3 RCLONE_CONFIG_S3_PROVIDER=SeaweedFS \
  RCLONE_CONFIG_S3_ACCESS_KEY_ID="$ak" RCLONE_CONFIG_S3_SECRET_ACCESS_KEY="$sk" \
  RCLONE_CONFIG_S3_ENDPOINT="http://127.0.0.1:${ports[3]}" RCLONE_CONFIG_S3_REGION=us-east-1 RCLONE_CONFIG_S3_FORCE_PATH_STYLE=true
for _ in $(seq 120); do "$rclone" mkdir s3:bench 2>/dev/null && echo ok | "$rclone" rcat s3:bench/probe 2>/dev/null && break; sleep 0.5; done
"$rclone" deletefile s3:bench/probe
"$rclone" copy --transfers=32 --checkers=32 "$work/store/manifests" s3:bench/p/manifests
sed -e 's|type = "local"|type = "s3"|' -e "s|path = \"store\"|bucket = \"bench\"\nprefix = \"p\"\nendpoint = \"http://127.0.0.1:${ports[3]}\"|" "$work/local.toml" > "$work/s3.toml"
export AWS_ACCESS_KEY_ID="$ak" AWS_SECRET_ACCESS_KEY="$sk" AWS_EC2_METADATA_DISABLED=true AWS_CONFIG_FILE=/dev/null AWS_SHARED_CREDENTIALS_FILE=/dev/null
run "$bkp" --config "$work/s3.toml" --json status; ss1=$secs sr1=$rss sread="$(reads)"
run "$bkp" --config "$work/s3.toml" --json list; sl1=$secs slr1=$rss

{
echo "$count TigerBeetle manifests ($days days: a snapshot every 6 h, a log segment every 15 min); $(nproc) cores; $(date -u +%Y-%m-%d)"
echo
echo "| store | command | manifests read | wall (s) | peak RSS (MiB) |"
echo "|---|---|---|---|---|"
printf '| local | bkp status | %s | %.2f | %d |\n' "$lread" "$ls1" "$((lr1/1024))"
printf '| local | bkp list (reads all) | %s | %.2f | %d |\n' "$count" "$ll1" "$((llr1/1024))"
printf '| S3 (SeaweedFS, loopback) | bkp status | %s | %.2f | %d |\n' "$sread" "$ss1" "$((sr1/1024))"
printf '| S3 (SeaweedFS, loopback) | bkp list (reads all) | %s | %.2f | %d |\n' "$count" "$sl1" "$((slr1/1024))"
} | tee "$BKP_ROOT/bench/status-results.md"
