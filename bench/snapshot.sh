#!/usr/bin/env bash
# Benchmark: `bkp snapshot`, `bkp restore` and `bkp verify` of a TigerBeetle data file with real
# contents, to S3 on a local SeaweedFS server, next to the baseline
# `tar | zstd -T0 | rclone rcat` of the same file into the same bucket.
#
# Prints MB/s, wall time and peak RSS for each, and writes them to
# bench/snapshot-results.md. Not a test: figures depend on the machine.
#
#   bench/snapshot.sh                 # 2,000,000 transfers
#   TRANSFERS=10000000 bench/snapshot.sh
#   DATA_CACHE=/var/tmp/bkp-bench BKP_BIN=/path/to/bkp bench/snapshot.sh
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../scripts/env.sh"
cd "$BKP_ROOT"
scripts/bootstrap >/dev/null
bkp="${BKP_BIN:-$CARGO_TARGET_DIR/debug/bkp}"
tb="$BKP_TOOLS/bin/tigerbeetle"
transfers="${TRANSFERS:-2000000}"
work="$(mktemp -d "${TMPDIR:-/tmp}/bkp-bench.XXXXXX")"
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; sleep 1; rm -rf "$work"; }
trap cleanup EXIT

freeport() { python3 - "$@" <<'PY'
import random, socket, sys
while True:
    p = random.randint(20000, 40000)
    try:
        for q in (p, p + 10000):
            s = socket.socket(); s.bind(("127.0.0.1", q)); s.close()
        print(p); break
    except OSError:
        pass
PY
}

echo "==> building a data file with $transfers transfers (tigerbeetle benchmark, through the client)"
data="$work/data/0_0.tigerbeetle"
mkdir -p "$work/data"
# DATA_CACHE=DIR keeps the generated file there for the next run (it takes minutes).
cached="${DATA_CACHE:+$DATA_CACHE/tb-$transfers.tigerbeetle}"
if [ -n "$cached" ] && [ -f "$cached" ]; then
  cp "$cached" "$data"
else
  "$tb" benchmark --file="$data" --account-count=10000 --transfer-count="$transfers" >"$work/tb-bench.log" 2>&1
  if [ -n "$cached" ]; then mkdir -p "$DATA_CACHE"; cp "$data" "$cached"; fi
fi
size=$(stat -c %s "$data")
echo "    data file: $size bytes"

echo "==> starting SeaweedFS"
key="bench$RANDOM"; secret="$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')"
cat > "$work/s3.json" <<JSON
{"identities":[{"name":"bench","credentials":[{"accessKey":"$key","secretKey":"$secret"}],"actions":["Admin","Read","Write","List","Tagging"]}]}
JSON
p1=$(freeport); p2=$(freeport); p3=$(freeport); p4=$(freeport)
mkdir -p "$work/weed"
weed server -dir="$work/weed" -ip=127.0.0.1 -ip.bind=127.0.0.1 -master.port="$p1" -volume.port="$p2" \
  -filer -filer.port="$p3" -s3 -s3.port="$p4" -s3.config="$work/s3.json" \
  -master.volumeSizeLimitMB=256 -volume.max=200 -s3.port.iceberg=0 -s3.port.lance=0 -master.telemetry=false >"$work/weed.log" 2>&1 &
pids+=($!)
export AWS_ACCESS_KEY_ID="$key" AWS_SECRET_ACCESS_KEY="$secret" AWS_REGION=us-east-1 AWS_EC2_METADATA_DISABLED=true
export RCLONE_CONFIG=/dev/null RCLONE_CONFIG_S3_TYPE=s3 RCLONE_CONFIG_S3_PROVIDER=SeaweedFS \
  RCLONE_CONFIG_S3_ACCESS_KEY_ID="$key" RCLONE_CONFIG_S3_SECRET_ACCESS_KEY="$secret" \
  RCLONE_CONFIG_S3_ENDPOINT="http://127.0.0.1:$p4" RCLONE_CONFIG_S3_REGION=us-east-1
for _ in $(seq 120); do rclone mkdir s3:bench 2>/dev/null && rclone touch s3:bench/ready 2>/dev/null && break; sleep 0.5; done

head -c 32 /dev/urandom > "$work/key"
cat > "$work/bkp.toml" <<TOML
work_dir = "work"
[store]
type = "s3"
bucket = "bench"
prefix = "bkp"
endpoint = "http://127.0.0.1:$p4"
path_style = true
[encryption]
key_file = "key"
[tigerbeetle]
data_file = "data/0_0.tigerbeetle"
TOML

measure() { # label, command...
  local label="$1"; shift
  /usr/bin/time -f "%e %M" -o "$work/time" "$@" >"$work/out" 2>"$work/err" || { cat "$work/err"; exit 1; }
  read -r secs rss < "$work/time"
  printf '| %-44s | %8.1f | %8.1f | %8d |\n' "$label" "$secs" "$(python3 -c "print($size/1e6/$secs)")" "$((rss / 1024))"
}

sync; echo 3 > /proc/sys/vm/drop_caches 2>/dev/null || true
{
echo "Data file: $size bytes ($transfers transfers, 10,000 accounts); $(nproc) cores; $(date -u +%Y-%m-%d); load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
echo
echo "| run                                          | wall (s) | MB/s     | RSS (MiB)|"
echo "|----------------------------------------------|----------|----------|----------|"
measure "bkp snapshot (zstd 3, AES-256-GCM, S3)" "$bkp" --config "$work/bkp.toml" snapshot
stored=$(rclone lsjson -R s3:bench/bkp/tigerbeetle | python3 -c 'import json,sys; print(sum(o["Size"] for o in json.load(sys.stdin) if not o["IsDir"]))')
measure "tar | zstd -T0 -3 | rclone rcat (no encryption)" bash -c "tar -C '$work/data' -cf - 0_0.tigerbeetle | zstd -q -T0 -3 | rclone rcat s3:bench/baseline.tar.zst"
base=$(rclone lsjson s3:bench/baseline.tar.zst | python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["Size"])')
measure "bkp restore (S3, verify, decrypt, unpack)" "$bkp" --config "$work/bkp.toml" restore latest --target "$work/restored"
sed 's/^path_style = true$/path_style = true\nconcurrency = 1/' "$work/bkp.toml" > "$work/bkp-1.toml"
measure "bkp restore, one GET stream (concurrency 1)" "$bkp" --config "$work/bkp-1.toml" restore latest --target "$work/restored-1"
rm -rf "$work/restored-1"
measure "bkp verify (S3: SHA-256, authenticate, decompress)" "$bkp" --config "$work/bkp.toml" verify
measure "rclone cat | zstd -d | tar -x" bash -c "mkdir -p '$work/base-restored' && rclone cat s3:bench/baseline.tar.zst | zstd -q -d | tar -C '$work/base-restored' -xf -"
echo
echo "Stored: bkp $stored bytes ($(python3 -c "print(round(100*$stored/$size,2))")% of the data file), baseline $base bytes."
cmp -s "$data" "$work/restored/0_0.tigerbeetle" && echo "Restored file is byte-identical."
} | tee "$work/results.md"
cp "$work/results.md" "$BKP_ROOT/bench/snapshot-results.md"
