# Shared by bench scripts (sourced): a scratch directory cleaned up on exit, free
# ports, SeaweedFS on loopback, and the cached TigerBeetle data file. Callers set
# `work` (a new directory) first.
#
#   pids+=(PID)            processes stopped on exit (stop_pids)
#   freeport               a port p with p and p + 10000 free
#   start_seaweedfs [CERT KEY]
#                          SeaweedFS with a fresh identity; sets s3_port, the AWS_* and
#                          RCLONE_* variables (remote `s3:`), and creates bucket `bench`;
#                          given a certificate and its key, S3 also answers HTTPS on
#                          s3_https_port (HTTP stays on s3_port)
#   data_file PATH N       a TigerBeetle data file with N transfers at PATH
#                          (DATA_CACHE=DIR keeps one per N there: it takes minutes)

pids=()
# SeaweedFS can take a while to stop on SIGTERM (and a server left running
# outlives its deleted directory): SIGKILL after 10 s.
stop_pids() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do
    for _ in $(seq 100); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$p" 2>/dev/null || true
  done
}
cleanup() { stop_pids; rm -rf "$work"; }
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

start_seaweedfs() {
  local key secret p1 p2 p3 tls=()
  key="bench$RANDOM"; secret="$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')"
  cat > "$work/s3.json" <<JSON
{"identities":[{"name":"bench","credentials":[{"accessKey":"$key","secretKey":"$secret"}],"actions":["Admin","Read","Write","List","Tagging"]}]}
JSON
  p1=$(freeport); p2=$(freeport); p3=$(freeport); s3_port=$(freeport)
  if [ $# -ge 2 ]; then
    s3_https_port=$(freeport)
    tls=(-s3.cert.file="$1" -s3.key.file="$2" -s3.port.https="$s3_https_port")
  fi
  mkdir -p "$work/weed"
  weed server -dir="$work/weed" -ip=127.0.0.1 -ip.bind=127.0.0.1 -master.port="$p1" -volume.port="$p2" \
    -filer -filer.port="$p3" -s3 -s3.port="$s3_port" -s3.config="$work/s3.json" "${tls[@]}" \
    -master.volumeSizeLimitMB=256 -volume.max=400 -s3.port.iceberg=0 -s3.port.lance=0 -master.telemetry=false >"$work/weed.log" 2>&1 &
  pids+=($!)
  export AWS_ACCESS_KEY_ID="$key" AWS_SECRET_ACCESS_KEY="$secret" AWS_REGION=us-east-1 AWS_EC2_METADATA_DISABLED=true
  export RCLONE_CONFIG=/dev/null RCLONE_CONFIG_S3_TYPE=s3 RCLONE_CONFIG_S3_PROVIDER=SeaweedFS \
    RCLONE_CONFIG_S3_ACCESS_KEY_ID="$key" RCLONE_CONFIG_S3_SECRET_ACCESS_KEY="$secret" \
    RCLONE_CONFIG_S3_ENDPOINT="http://127.0.0.1:$s3_port" RCLONE_CONFIG_S3_REGION=us-east-1
  for _ in $(seq 120); do rclone mkdir s3:bench 2>/dev/null && rclone touch s3:bench/ready 2>/dev/null && break; sleep 0.5; done
}

data_file() {
  local path="$1" transfers="$2" cached="${DATA_CACHE:+$DATA_CACHE/tb-$2.tigerbeetle}"
  mkdir -p "$(dirname "$path")"
  if [ -n "$cached" ] && [ -f "$cached" ]; then
    cp "$cached" "$path"
  else
    "$BKP_TOOLS/bin/tigerbeetle" benchmark --file="$path" --account-count=10000 --transfer-count="$transfers" >"$work/tb-bench.log" 2>&1
    if [ -n "$cached" ]; then mkdir -p "$DATA_CACHE"; cp "$path" "$cached"; fi
  fi
}
