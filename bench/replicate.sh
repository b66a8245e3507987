#!/usr/bin/env bash
# Benchmark: `bkp replicate` of a Parquet cold tier (FILES small files made with
# DuckDB) to S3 on a local SeaweedFS server, next to `rclone copy` of the same tree
# into the same bucket: files/s and MB/s of a first run, and the wall time and
# request count of a second run with nothing changed (counted by a small HTTP
# proxy in front of SeaweedFS). Also: the restore, the stored size with zstd, and
# an S3 → S3 run made of server-side copies.
#
# Prints the figures and writes them to bench/replicate-results.md. Not a test.
#
#   bench/replicate.sh               # 1,000 files
#   FILES=5000 bench/replicate.sh
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../scripts/env.sh"
cd "$BKP_ROOT"
scripts/bootstrap >/dev/null
cargo build -q --example make_parquet
bkp="$CARGO_TARGET_DIR/debug/bkp"
files="${FILES:-1000}"
work="$(mktemp -d "${TMPDIR:-/tmp}/bkp-bench-repl.XXXXXX")"
source "$BKP_ROOT/bench/lib.sh"

echo "==> writing $files Parquet files with DuckDB"
"$CARGO_TARGET_DIR/debug/examples/make_parquet" "$work/cold" "$files"
bytes=$(find "$work/cold" -type f -printf '%s\n' | awk '{s+=$1} END {print s}')
echo "    $bytes bytes"

echo "==> starting SeaweedFS and a request-counting proxy"
key="bench$RANDOM"; secret="$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')"
cat > "$work/s3.json" <<JSON
{"identities":[{"name":"bench","credentials":[{"accessKey":"$key","secretKey":"$secret"}],"actions":["Admin","Read","Write","List","Tagging"]}]}
JSON
p1=$(freeport); p2=$(freeport); p3=$(freeport); p4=$(freeport); pp=$(freeport)
mkdir -p "$work/weed"
weed server -dir="$work/weed" -ip=127.0.0.1 -ip.bind=127.0.0.1 -master.port="$p1" -volume.port="$p2" \
  -filer -filer.port="$p3" -s3 -s3.port="$p4" -s3.config="$work/s3.json" \
  -master.volumeSizeLimitMB=256 -volume.max=200 -s3.port.iceberg=0 -s3.port.lance=0 -master.telemetry=false >"$work/weed.log" 2>&1 &
pids+=($!)
# Forwards every request unchanged (the Host header too, so signatures hold) and
# appends one line per request to the file named by $work/count-to.
cat > "$work/proxy.py" <<'PY'
import http.client, sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
listen, upstream, control = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
class P(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def log_message(self, *a): pass
    def go(self):
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            body = b""
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    break
                body += self.rfile.read(size); self.rfile.readline()
        else:
            n = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(n) if n else None
        c = http.client.HTTPConnection("127.0.0.1", upstream)
        hdrs = {k: v for k, v in self.headers.items() if k.lower() not in ("expect", "transfer-encoding")}
        if body is not None:
            hdrs["Content-Length"] = str(len(body))
        c.request(self.command, self.path, body=body, headers=hdrs)
        r = c.getresponse(); data = r.read()
        self.send_response_only(r.status)
        for k, v in r.getheaders():
            if k.lower() not in ("transfer-encoding", "content-length", "connection"):
                self.send_header(k, v)
        length = r.getheader("Content-Length") if self.command == "HEAD" else str(len(data))
        self.send_header("Content-Length", length or "0"); self.end_headers(); self.wfile.write(data)
        try:
            with open(open(control).read().strip(), "a") as f:
                f.write(f"{self.command} {self.path.split('?')[0][:60]} {r.status}\n")
        except OSError:
            pass
    do_GET = do_PUT = do_POST = do_HEAD = do_DELETE = go
ThreadingHTTPServer(("127.0.0.1", listen), P).serve_forever()
PY
echo /dev/null > "$work/count-to"
python3 "$work/proxy.py" "$pp" "$p4" "$work/count-to" &
pids+=($!)
export AWS_ACCESS_KEY_ID="$key" AWS_SECRET_ACCESS_KEY="$secret" AWS_REGION=us-east-1 AWS_EC2_METADATA_DISABLED=true
export RCLONE_CONFIG=/dev/null RCLONE_CONFIG_S3_TYPE=s3 RCLONE_CONFIG_S3_PROVIDER=SeaweedFS \
  RCLONE_CONFIG_S3_ACCESS_KEY_ID="$key" RCLONE_CONFIG_S3_SECRET_ACCESS_KEY="$secret" \
  RCLONE_CONFIG_S3_ENDPOINT="http://127.0.0.1:$p4" RCLONE_CONFIG_S3_REGION=us-east-1
for _ in $(seq 120); do rclone mkdir s3:bench 2>/dev/null && rclone touch s3:bench/ready 2>/dev/null && break; sleep 0.5; done
rclone mkdir s3:cold

head -c 32 /dev/urandom > "$work/key"; chmod 600 "$work/key"   # bkp refuses a key file others may read
conf() { # file, prefix, [replicate] extra lines
  cat > "$1" <<TOML
work_dir = "work"
[store]
type = "s3"
bucket = "bench"
prefix = "$2"
endpoint = "http://127.0.0.1:$p4"
[encryption]
key_file = "key"
[replicate]
$3
TOML
}
conf "$work/bkp.toml" bkp 'source = "cold"'
conf "$work/zstd.toml" zstd $'source = "cold"\ncompression = "zstd"'
conf "$work/s3s3.toml" s3s3 $'source = "s3://cold/tier"\nendpoint = "http://127.0.0.1:'"$p4"$'"\nencryption = false'
conf "$work/s3s3enc.toml" s3s3enc $'source = "s3://cold/tier"\nendpoint = "http://127.0.0.1:'"$p4"'"'

timed() { # output-file, command... → prints "secs rss"
  local out="$1"; shift
  /usr/bin/time -f "%e %M" -o "$work/time" "$@" >"$out" 2>"$work/err" || { cat "$work/err" >&2; exit 1; }
  cat "$work/time"
}
counted() { # name, command... → prints "secs rss requests"
  local name="$1"; shift
  : > "$work/req-$name"; echo "$work/req-$name" > "$work/count-to"
  local t; t=$(timed "$work/out-$name" "$@")
  echo /dev/null > "$work/count-to"
  echo "$t $(wc -l < "$work/req-$name")"
}
proxied=(env BKP_S3_ENDPOINT="http://127.0.0.1:$pp")
field() { python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])' "$@"; }

# SeaweedFS grows volumes on the first writes to a bucket: warm it up so that the
# first timed run does not pay for that.
rclone copy "$work/cold" s3:bench/warmup && rclone purge s3:bench/warmup
sync
echo "==> runs"
# Wall times are measured directly; request counts come from repeat runs through the
# proxy (into other prefixes), since the proxy itself slows every request down.
read -r b1 r1 < <(timed "$work/out-bkp1" "$bkp" --config "$work/bkp.toml" --json replicate)
copied1=$(field "$work/out-bkp1" copied); stored1=$(field "$work/out-bkp1" stored_bytes)
read -r b2 r2 < <(timed "$work/out-bkp2" "$bkp" --config "$work/bkp.toml" --json replicate)
copied2=$(field "$work/out-bkp2" copied); stored2=$(field "$work/out-bkp2" stored_bytes)
read -r _ _ q2 < <(counted bkp3 "${proxied[@]}" "$bkp" --config "$work/bkp.toml" --json replicate)
read -r _ _ q1 < <(counted bkpc "${proxied[@]}" BKP_S3_PREFIX=counted "$bkp" --config "$work/bkp.toml" --json replicate)
manifest_bytes=$(rclone lsjson -R s3:bench/bkp/manifests | python3 -c 'import json,sys; print(max(o["Size"] for o in json.load(sys.stdin) if not o["IsDir"]))')
read -r c1 cr1 < <(timed "$work/out-rc1" rclone copy "$work/cold" s3:bench/rclone)
read -r c2 cr2 < <(timed "$work/out-rc2" rclone copy "$work/cold" s3:bench/rclone)
rc_proxied=(env RCLONE_CONFIG_S3_ENDPOINT="http://127.0.0.1:$pp")
read -r _ _ cq1 < <(counted rcc1 "${rc_proxied[@]}" rclone copy "$work/cold" s3:bench/rclone-counted)
read -r _ _ cq2 < <(counted rcc2 "${rc_proxied[@]}" rclone copy "$work/cold" s3:bench/rclone-counted)
read -r rs rr < <(timed "$work/out-restore" "$bkp" --config "$work/bkp.toml" restore latest --kind parquet --target "$work/restored")
diff -r "$work/cold" "$work/restored" >/dev/null && identical="yes" || identical="NO"
read -r z1 zr1 < <(timed "$work/out-zstd" "$bkp" --config "$work/zstd.toml" --json replicate)
storedz=$(field "$work/out-zstd" stored_bytes)
"$CARGO_TARGET_DIR/debug/examples/make_parquet" "$work/snappy" "$files" 2000 snappy
bytes_snappy=$(find "$work/snappy" -type f -printf '%s\n' | awk '{s+=$1} END {print s}')
BKP_REPLICATE_SOURCE="$work/snappy" BKP_S3_PREFIX=zs "$bkp" --config "$work/zstd.toml" --json replicate >"$work/out-zs" 2>"$work/err"
storedzs=$(field "$work/out-zs" stored_bytes)
rclone copy "$work/cold" s3:cold/tier
read -r s1 sr1 < <(timed "$work/out-s3s3" "$bkp" --config "$work/s3s3.toml" --json replicate)
ssc=$(field "$work/out-s3s3" server_side_copies)
"$CARGO_TARGET_DIR/debug/examples/make_parquet" "$work/big" 4 1000000
rclone copy "$work/big" s3:cold/big
bytes_big=$(find "$work/big" -type f -printf '%s\n' | awk '{s+=$1} END {print s}')
read -r sb sbr < <(timed "$work/out-big" env BKP_REPLICATE_SOURCE="s3://cold/big" BKP_S3_PREFIX=big "$bkp" --config "$work/s3s3.toml" --json replicate)
sscb=$(field "$work/out-big" server_side_copies)
read -r eb ebr < <(timed "$work/out-bige" env BKP_REPLICATE_SOURCE="s3://cold/big" BKP_S3_PREFIX=bige "$bkp" --config "$work/s3s3enc.toml" --json replicate)

mbs() { python3 -c "print(f'{$1/1e6/$2:.1f}')"; }
fps() { python3 -c "print(f'{$1/$2:.0f}')"; }
{
echo "$files Parquet files (ZSTD pages, as bkp's exports write) made by DuckDB, $bytes bytes in all (about $((bytes / files / 1000)) kB each); SeaweedFS S3 on 127.0.0.1; $(nproc) cores; $(date -u +%Y-%m-%d)"
echo
echo "| run | wall (s) | files/s | MB/s | S3 requests | peak RSS (MiB) |"
echo "|---|---|---|---|---|---|"
echo "| bkp replicate, first run (Parquet check, SHA-256, AES-256-GCM, 4 in flight) | $b1 | $(fps "$copied1" "$b1") | $(mbs "$bytes" "$b1") | $q1 | $((r1 / 1024)) |"
echo "| rclone copy, first run (no check, no encryption, 4 transfers) | $c1 | $(fps "$files" "$c1") | $(mbs "$bytes" "$c1") | $cq1 | $((cr1 / 1024)) |"
echo "| bkp replicate, nothing changed | $b2 | - | - | $q2 | $((r2 / 1024)) |"
echo "| rclone copy, nothing changed | $c2 | - | - | $cq2 | $((cr2 / 1024)) |"
echo "| bkp restore latest --kind parquet (verify, decrypt, write) | $rs | $(fps "$files" "$rs") | $(mbs "$bytes" "$rs") | - | $((rr / 1024)) |"
echo "| bkp replicate, zstd 3 on top (first run) | $z1 | $(fps "$files" "$z1") | $(mbs "$bytes" "$z1") | - | $((zr1 / 1024)) |"
echo "| bkp replicate, S3 → S3 on one server, unencrypted (small files: one GET, one PUT) | $s1 | $(fps "$files" "$s1") | $(mbs "$bytes" "$s1") | - | $((sr1 / 1024)) |"
echo "| bkp replicate, 4 larger files S3 → S3, unencrypted ($sscb of them over 8 MiB: copied server-side) | $sb | - | $(mbs "$bytes_big" "$sb") | - | $((sbr / 1024)) |"
echo "| bkp replicate, the same 4 files S3 → S3, encrypted (streamed through bkp) | $eb | - | $(mbs "$bytes_big" "$eb") | - | $((ebr / 1024)) |"
echo
echo "First run: $copied1 files copied, $stored1 bytes stored. Second run: $copied2 files copied, $stored2 bytes stored. Requests of a run with nothing changed:"
echo
echo '```'
sort "$work/req-bkp3" | sed -E 's#/[0-9a-f-]{20,}#/{id}#' | uniq -c
echo '```'
echo
echo "The newest manifest (the whole set of $files files) is $manifest_bytes bytes."
echo "Compression: zstd 3 stores the ZSTD-compressed files in $storedz bytes against $stored1 without ($(python3 -c "print(f'{100*$storedz/$stored1:.1f}')")%);"
echo "the same data written with DuckDB's default Snappy ($bytes_snappy bytes) is stored by zstd 3 in $storedzs bytes ($(python3 -c "print(f'{100*$storedzs/$bytes_snappy:.1f}')")%)."
echo "The large files: $bytes_big bytes in 4 files. Restored tree identical to the source: $identical."
} | tee "$work/results.md"
cp "$work/results.md" "$BKP_ROOT/bench/replicate-results.md"
