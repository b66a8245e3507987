#!/usr/bin/env bash
# Benchmark: bkp side by side with pgBackRest and barman-cloud on one PostgreSQL
# database (pgbench, scale SCALE), all three storing into the same S3 server
# (SeaweedFS on loopback, over HTTPS: pgBackRest speaks nothing else), each with
# compression and encryption on. ROUNDS rounds; in each round every tool in turn
# (the order rotates from round to round) is the server's archive_command and:
#   1. takes a full base backup: wall seconds, peak RSS, CPU, bytes it stored;
#   2. archives WAL while `pgbench -c 4 -j 2 -T LOAD_SECONDS` runs: segments
#      archived per second, whether pg_wal grew (`.ready` files left, pg_wal size
#      before and after), how long archiving needs to catch up afterwards;
#   3. restores its newest base backup into a new directory (wall, peak RSS);
#   4. restores to an instant after the load (point in time): the restore, WAL
#      replay through the tool, until the server answers as a primary.
# The medians over the rounds, and bkp / pgBackRest ratios, are printed and
# written to bench/compare-postgres-results.md. Not a test: figures depend on the
# machine and on what else runs on it.
#
# Settings: pgBackRest compress-type=zst, compress-level=3, repo1-cipher-type=
# aes-256-cbc, archive-async=y, process-max=2; barman-cloud zstd level 3 for WAL,
# gzip (its tarfile's level 9) for base backups, which offer no zstd
# (BARMAN_BACKUP_COMPRESSION=lz4|snappy|bzip2 to change), no encryption of its own;
# bkp its defaults (zstd 3, AES-256-GCM, key file).
#
# Installs what it lacks: pgbackrest from Debian, barman[cloud] from PyPI into a
# virtual environment in $BKP_CACHE/barman-venv. bkp itself is not built here:
# build it first (cargo build), or name a binary with BKP_BIN.
#
#   bench/compare-postgres.sh                       # scale 100 (about 1.5 GB), 3 rounds
#   SCALE=20 ROUNDS=1 LOAD_SECONDS=30 bench/compare-postgres.sh
#   BKP_BIN=/path/to/bkp RESULTS=/tmp/out.md bench/compare-postgres.sh
set -euo pipefail
shopt -s inherit_errexit
# shellcheck source-path=SCRIPTDIR source=../scripts/env.sh
source "$(dirname "${BASH_SOURCE[0]}")/../scripts/env.sh"
cd "$BKP_ROOT"
scale="${SCALE:-100}"
rounds="${ROUNDS:-3}"
load_seconds="${LOAD_SECONDS:-60}"
barman_comp="${BARMAN_BACKUP_COMPRESSION:-gzip}"
results="${RESULTS:-$BKP_ROOT/bench/compare-postgres-results.md}"
bkp_src="${BKP_BIN:-$CARGO_TARGET_DIR/debug/bkp}"

# --- what it needs --------------------------------------------------------------
if [ ! -x "$bkp_src" ]; then
  echo "no bkp binary at $bkp_src: build it first (cargo build), or set BKP_BIN" >&2
  exit 2
fi
for t in weed rclone; do
  command -v "$t" >/dev/null || { echo "no $t on PATH: run scripts/bootstrap --tools first" >&2; exit 2; }
done
pgbin="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)"
[ -x "$pgbin/initdb" ] || { echo "no PostgreSQL server under /usr/lib/postgresql: apt-get install postgresql" >&2; exit 2; }
SUDO=(); [ "$(id -u)" -eq 0 ] || SUDO=(sudo -n)
if ! command -v pgbackrest >/dev/null; then
  echo "installing pgbackrest (Debian)" >&2
  "${SUDO[@]}" apt-get update -qq
  "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq pgbackrest >/dev/null
fi
# Debian's Python when there is one: the server's user runs barman's commands, and
# an interpreter under a home directory (pyenv) may be closed to it.
venv="$BKP_CACHE/barman-venv"
if ! "$venv/bin/python" -c 'import barman.clients.cloud_backup, boto3, zstandard, lz4' 2>/dev/null; then
  echo "installing barman[cloud] (PyPI) into $venv" >&2
  py=python3; [ ! -x /usr/bin/python3 ] || py=/usr/bin/python3
  "$py" -m venv "$venv"
  "$venv/bin/pip" install -q --disable-pip-version-check 'barman[cloud,zstandard,lz4]'
fi

# --- scratch space, servers, cleanup ----------------------------------------------
work="$(mktemp -d "${TMPDIR:-/tmp}/bkp-compare-pg.XXXXXX")"
chmod 755 "$work"
# shellcheck source=lib.sh
source "$BKP_ROOT/bench/lib.sh"
u="$work/u"   # everything the server's user reads or writes
mkdir -p "$u/sock" "$u/rsock" "$u/home" "$u/bin" "$u/bkp" "$u/pgbackrest/spool" "$u/pgbackrest/lock" \
  "$u/pgbackrest/log" "$u/barman" "$u/restore"
as_pg=()
if [ "$(id -u)" -eq 0 ]; then
  as_pg=(setpriv --reuid=postgres --regid=postgres --init-groups env HOME="$u/home")
fi
pg_dirs=()   # data directories of servers that may be running
stop_pg() { "${as_pg[@]}" "$pgbin/pg_ctl" -D "$1" -m immediate stop >/dev/null 2>&1 || true; }
cleanup() {
  for d in "${pg_dirs[@]}"; do stop_pg "$d"; done
  stop_pids
  rm -rf "$work"
}
trap 'exit 130' INT
trap 'exit 143' TERM

echo "==> a private CA and a certificate for localhost (pgBackRest reaches S3 over HTTPS only)" >&2
mkdir -p "$work/tls"
(
  cd "$work/tls"
  printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\n' >ext
  openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.pem -days 2 -subj "/CN=bkp bench CA" 2>/dev/null
  openssl req -newkey rsa:2048 -nodes -keyout srv.key -out srv.csr -subj "/CN=localhost" 2>/dev/null
  openssl x509 -req -in srv.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out srv.pem -days 2 -extfile ext 2>/dev/null
  chmod 644 ca.pem
)
export AWS_CA_BUNDLE="$work/tls/ca.pem"   # boto3 (barman-cloud)

echo "==> starting SeaweedFS" >&2
start_seaweedfs "$work/tls/srv.pem" "$work/tls/srv.key"
kill -0 "${pids[-1]}" 2>/dev/null || { tail -n 5 "$work/weed.log" >&2; echo "SeaweedFS exited" >&2; exit 1; }
endpoint="https://localhost:$s3_https_port"

# The server's user runs each tool as archive_command and restore_command: it must
# reach the binaries. Copies under $work when it cannot (a home directory 0700).
bkp="$bkp_src"
if ! "${as_pg[@]}" test -x "$bkp"; then cp "$bkp_src" "$u/bin/bkp"; bkp="$u/bin/bkp"; fi
bvenv="$venv"
if ! "${as_pg[@]}" "$bvenv/bin/python" -c 'import barman' 2>/dev/null; then
  cp -a "$venv" "$u/barman-venv"; bvenv="$u/barman-venv"
  [ "$(id -u)" -ne 0 ] || chown -R postgres: "$bvenv"
  "${as_pg[@]}" "$bvenv/bin/python" -c 'import barman' || {
    echo "the postgres user cannot run $venv's Python: remove $venv and run again (it is made with /usr/bin/python3)" >&2
    exit 2
  }
fi
bpy="$bvenv/bin/python"
# barman's scripts are run by its venv's interpreter, so a copied venv works too.
barman_opts="--endpoint-url $endpoint --addressing-style path"

# --- the configurations -----------------------------------------------------------
port="$(freeport)"
rport="$(freeport)"
data="$u/pg/data"
head -c 32 /dev/urandom >"$u/bkp/key"; chmod 600 "$u/bkp/key"   # bkp refuses a key file others may read
cat >"$u/bkp.toml" <<TOML
work_dir = "$u/bkp/work"
[store]
type = "s3"
bucket = "bench"
prefix = "bkp"
endpoint = "$endpoint"
path_style = true
ca_file = "$work/tls/ca.pem"
[compression]
algorithm = "zstd"
level = 3
[encryption]
key_file = "$u/bkp/key"
[postgres]
database = "bench"
host = "$u/sock"
port = $port
user = "postgres"
bin_dir = "$pgbin"
checkpoint = "fast"
TOML
cat >"$u/pgbackrest.conf" <<CONF
[global]
repo1-type=s3
repo1-path=/pgbackrest
repo1-s3-bucket=bench
repo1-s3-endpoint=localhost
repo1-storage-port=$s3_https_port
repo1-storage-ca-file=$work/tls/ca.pem
repo1-s3-uri-style=path
repo1-s3-region=us-east-1
repo1-s3-key=$AWS_ACCESS_KEY_ID
repo1-s3-key-secret=$AWS_SECRET_ACCESS_KEY
repo1-cipher-type=aes-256-cbc
repo1-cipher-pass=$(head -c 24 /dev/urandom | base64)
repo1-retention-full=9999
compress-type=zst
compress-level=3
process-max=2
archive-async=y
start-fast=y
spool-path=$u/pgbackrest/spool
lock-path=$u/pgbackrest/lock
log-path=$u/pgbackrest/log
log-level-console=warn
log-level-file=info

[bench]
pg1-path=$data
pg1-port=$port
pg1-socket-path=$u/sock
pg1-user=postgres
CONF
chmod 600 "$u/pgbackrest.conf"
[ "$(id -u)" -ne 0 ] || chown -R postgres: "$u"

# TOOLS="bkp pgbackrest" runs a subset (a quicker before-and-after of bkp alone).
read -r -a tools <<<"${TOOLS:-bkp pgbackrest barman}"
declare -A name=([bkp]="bkp" [pgbackrest]="pgBackRest" [barman]="barman-cloud")
declare -A archive_command=(
  [bkp]="$bkp -q --config $u/bkp.toml wal push %p"
  [pgbackrest]="pgbackrest --config=$u/pgbackrest.conf --stanza=bench archive-push %p"
  [barman]="$bpy $bvenv/bin/barman-cloud-wal-archive $barman_opts --zstd --compression-level 3 s3://bench/barman bench %p"
)
# Where each tool keeps its WAL in the bucket, and everything it stores.
declare -A wal_prefix=([bkp]="bkp/wal" [pgbackrest]="pgbackrest/archive" [barman]="barman/bench/wals")
declare -A repo_prefix=([bkp]="bkp" [pgbackrest]="pgbackrest" [barman]="barman")

# --- the database -----------------------------------------------------------------
echo "==> PostgreSQL: pgbench scale $scale" >&2
mkdir -p "$u/pg"; [ "$(id -u)" -ne 0 ] || chown postgres: "$u/pg"
"${as_pg[@]}" "$pgbin/initdb" -D "$data" -U postgres --auth=trust -E UTF8 --locale=C.UTF-8 >/dev/null
server_opts="-c listen_addresses='' -c shared_buffers=256MB -c max_wal_size=1GB"
pg_dirs+=("$data")
"${as_pg[@]}" "$pgbin/pg_ctl" -D "$data" -l "$u/pg/log" -w -t 120 \
  -o "-p $port -k $u/sock $server_opts -c archive_mode=on" start >/dev/null
export PGHOST="$u/sock" PGPORT="$port" PGUSER=postgres
sql() { # database, statement: the answer, unaligned
  "$pgbin/psql" -X -q -At -v ON_ERROR_STOP=1 -d "$1" -c "$2"
}
# archive_command through ALTER SYSTEM (a reload switches tools); nothing to archive
# while the tables are filled.
sql postgres "ALTER SYSTEM SET archive_command = '/bin/true'" >/dev/null
sql postgres "SELECT pg_reload_conf()" >/dev/null
sql postgres "CREATE DATABASE bench"
"$pgbin/pgbench" -i -q -s "$scale" bench 2>"$work/pgbench-init.log" || { tail -n 5 "$work/pgbench-init.log" >&2; exit 1; }
sql bench "CREATE TABLE marker (tag text PRIMARY KEY, at timestamptz DEFAULT now())"
sql postgres "CHECKPOINT"
db_size="$(sql bench "SELECT pg_database_size('bench')")"
pg_version="$("$pgbin/postgres" --version | awk '{print $3}')"
echo "    database $((db_size / 1048576)) MiB" >&2
"${as_pg[@]}" pgbackrest --config="$u/pgbackrest.conf" --stanza=bench stanza-create >"$work/out" 2>&1 ||
  { cat "$work/out" >&2; exit 1; }

# --- measuring ----------------------------------------------------------------------
timed() { # command...: prints "wall rss_mib cpu_s" (CPU: user + system, children included)
  local secs rss user sys
  if ! /usr/bin/time -f '%e %M %U %S' -o "$work/time" "$@" >"$work/out" 2>"$work/err"; then
    { echo "failed: $*"; tail -n 30 "$work/err"; } >&2
    return 1
  fi
  read -r secs rss user sys <"$work/time"
  echo "$secs $((rss / 1024)) $(python3 -c "print(round($user + $sys, 2))")"
}
now() { date +%s.%N; }
since() { python3 -c "print(f'{$(now) - $1:.2f}')"; }
bytes_under() { # prefix: bytes stored under it (0 for none)
  local j
  j="$(rclone size --json "s3:bench/$1")" || { echo "rclone size s3:bench/$1 failed" >&2; return 1; }
  python3 -c 'import json,sys; print(json.loads(sys.argv[1])["bytes"])' "$j"
}
base_bytes() { # tool: bytes stored outside its WAL archive
  local all wal
  all=$(bytes_under "${repo_prefix[$1]}"); wal=$(bytes_under "${wal_prefix[$1]}")
  echo $((all - wal))
}
ready_count() { sql postgres "SELECT count(*) FROM pg_ls_archive_statusdir() WHERE name LIKE '%.ready'"; }
wal_mib() { sql postgres "SELECT round(sum(size) / 1048576.0) FROM pg_ls_waldir()"; }
archiver() { sql postgres "SELECT archived_count || ' ' || failed_count FROM pg_stat_archiver"; }
# Waits until every finished segment up to WAL file $1 (default: none) is archived.
drain() {
  local upto="${1:-}" t0 s0=$SECONDS last
  t0=$(now)
  while :; do
    last="$(sql postgres "SELECT coalesce(last_archived_wal, '') FROM pg_stat_archiver")"
    if [ "$(ready_count)" -eq 0 ] && { [ -z "$upto" ] || [[ ! "$last" < "$upto" ]]; }; then break; fi
    if [ $((SECONDS - s0)) -gt 1800 ]; then
      echo "archiving did not catch up in 30 minutes: $(sql postgres 'SELECT * FROM pg_stat_archiver')" >&2
      exit 1
    fi
    sleep 0.5
  done
  since "$t0"
}
use_archiver() { # tool
  drain >/dev/null
  sql postgres "ALTER SYSTEM SET archive_command = '${archive_command[$1]}'" >/dev/null
  sql postgres "SELECT pg_reload_conf()" >/dev/null
}
# Starts PostgreSQL on a restored directory and waits until it answers as a
# primary (recovery over, promoted): prints the seconds that took. Run in a
# subshell: the caller adds the directory to pg_dirs.
open_restored() { # dir
  local dir="$1" t0 s0=$SECONDS pid
  t0=$(now)
  "${as_pg[@]}" "$pgbin/pg_ctl" -D "$dir" -l "$dir.log" -W \
    -o "-p $rport -k $u/rsock $server_opts -c archive_mode=off" start >/dev/null
  while [ "$(PGHOST="$u/rsock" PGPORT="$rport" sql postgres "SELECT pg_is_in_recovery()" 2>/dev/null)" != f ]; do
    pid="$(head -n 1 "$dir/postmaster.pid" 2>/dev/null || true)"
    if [ -z "$pid" ] && [ $((SECONDS - s0)) -gt 10 ]; then
      { echo "PostgreSQL on $dir did not start:"; tail -n 20 "$dir.log"; } >&2
      exit 1
    fi
    if [ $((SECONDS - s0)) -gt 3600 ]; then
      echo "PostgreSQL on $dir did not open within an hour" >&2; exit 1
    fi
    sleep 0.1
  done
  since "$t0"
}
close_restored() { # dir
  stop_pg "$1"
  rm -rf "$1" "$1.log"
}

backup() { # tool
  case "$1" in
    bkp) timed "${as_pg[@]}" "$bkp" -q --config "$u/bkp.toml" snapshot --kind postgres ;;
    pgbackrest) timed "${as_pg[@]}" pgbackrest --config="$u/pgbackrest.conf" --stanza=bench --type=full backup ;;
    barman)
      # shellcheck disable=SC2086  # barman_opts is a list of words
      timed "${as_pg[@]}" "$bpy" "$bvenv/bin/barman-cloud-backup" $barman_opts "--$barman_comp" \
        --immediate-checkpoint -h "$u/sock" -p "$port" -U postgres s3://bench/barman bench ;;
  esac
}
restore() { # tool, dir: the newest base backup, as it is
  case "$1" in
    bkp) timed "${as_pg[@]}" "$bkp" -q --config "$u/bkp.toml" restore latest --kind postgres --target "$2" ;;
    pgbackrest)
      "${as_pg[@]}" mkdir -m 700 "$2"
      timed "${as_pg[@]}" pgbackrest --config="$u/pgbackrest.conf" --stanza=bench --pg1-path="$2" \
        --type=immediate restore ;;
    barman)
      "${as_pg[@]}" mkdir -m 700 "$2"
      # shellcheck disable=SC2086
      timed "${as_pg[@]}" "$bpy" "$bvenv/bin/barman-cloud-restore" $barman_opts s3://bench/barman bench latest "$2" ;;
  esac
}
restore_at() { # tool, dir, time (RFC 3339, UTC): files, and each tool's recovery set-up
  local tpg="${3/T/ }"; tpg="${tpg%Z}+00"
  case "$1" in
    # bkp replays the WAL itself, proves where it stopped, and shuts the server down.
    bkp) timed "${as_pg[@]}" "$bkp" -q --config "$u/bkp.toml" restore latest --kind postgres --at "$3" --target "$2" ;;
    pgbackrest)
      "${as_pg[@]}" mkdir -m 700 "$2"
      timed "${as_pg[@]}" pgbackrest --config="$u/pgbackrest.conf" --stanza=bench --pg1-path="$2" \
        --type=time --target="$tpg" --target-action=promote restore ;;
    barman)
      "${as_pg[@]}" mkdir -m 700 "$2"
      # shellcheck disable=SC2086
      timed "${as_pg[@]}" "$bpy" "$bvenv/bin/barman-cloud-restore" $barman_opts --target-time "$tpg" \
        s3://bench/barman bench auto "$2"
      # barman-cloud-restore writes no recovery settings: these are barman's documented ones.
      "${as_pg[@]}" mkdir -p "$u/barman/spool"
      "${as_pg[@]}" tee -a "$2/postgresql.auto.conf" >/dev/null <<CONF
restore_command = '$bpy $bvenv/bin/barman-cloud-wal-restore $barman_opts --parallel 2 --spool-dir $u/barman/spool s3://bench/barman bench %f %p'
recovery_target_time = '$tpg'
recovery_target_action = 'promote'
CONF
      "${as_pg[@]}" touch "$2/recovery.signal" ;;
  esac
}

rows="$work/rows"; : >"$rows"
row() { # tool, measure, round, value
  printf '%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$4" >>"$rows"
}
load0="$(cut -d' ' -f1-3 /proc/loadavg)"
for r in $(seq "$rounds"); do
  # The order rotates: each tool goes first in some round.
  order=("${tools[@]:$(((r - 1) % ${#tools[@]}))}" "${tools[@]:0:$(((r - 1) % ${#tools[@]}))}")
  for t in "${order[@]}"; do
    echo "==> round $r of $rounds: ${name[$t]}" >&2
    use_archiver "$t"

    # 1. Full base backup.
    b0=$(base_bytes "$t")
    read -r w rss cpu < <(backup "$t")
    b1=$(base_bytes "$t")
    row "$t" backup_wall "$r" "$w"; row "$t" backup_rss "$r" "$rss"; row "$t" backup_cpu "$r" "$cpu"
    row "$t" backup_mib "$r" "$(python3 -c "print(round(($b1 - $b0) / 1048576, 1))")"
    echo "    base backup: $w s, $rss MiB RSS, $(( (b1 - b0) / 1048576 )) MiB stored" >&2

    # 2. WAL archiving under load.
    drain >/dev/null
    read -r a0 f0 < <(archiver)
    lsn0="$(sql postgres "SELECT pg_current_wal_lsn()")"
    walb0=$(bytes_under "${wal_prefix[$t]}")
    wal0=$(wal_mib)
    "$pgbin/pgbench" -c 4 -j 2 -T "$load_seconds" bench >"$work/pgbench.log" 2>&1 ||
      { tail -n 5 "$work/pgbench.log" >&2; exit 1; }
    read -r a1 f1 < <(archiver)
    ready=$(ready_count); wal1=$(wal_mib)
    segs="$(sql postgres "SELECT round(pg_wal_lsn_diff(pg_current_wal_lsn(), '$lsn0') / 16777216.0, 1)")"
    catchup=$(drain)
    read -r a2 _ < <(archiver)
    walb1=$(bytes_under "${wal_prefix[$t]}")
    tps="$(sed -n 's/^tps = \([0-9.]*\).*/\1/p' "$work/pgbench.log" | head -n 1)"
    row "$t" wal_rate "$r" "$(python3 -c "print(round(($a1 - $a0) / $load_seconds, 2))")"
    row "$t" wal_generated "$r" "$segs"
    row "$t" wal_ready "$r" "$ready"
    row "$t" wal_before "$r" "$wal0"; row "$t" wal_after "$r" "$wal1"
    row "$t" wal_catchup "$r" "$catchup"
    row "$t" wal_failed "$r" "$((f1 - f0))"
    row "$t" wal_stored "$r" "$(python3 -c "n = $a2 - $a0; print(round(($walb1 - $walb0) / 1048576 / n, 2) if n else '')")"
    row "$t" tps "$r" "$tps"
    echo "    WAL: $((a1 - a0)) of $segs segments archived during the load, $ready .ready at its end," \
      "pg_wal $wal0 -> $wal1 MiB, caught up in $catchup s; pgbench $tps tps" >&2

    # The instant to restore to: after the load, with a commit on either side of it
    # (recovery to a time ends at the first commit after it, which must be archived).
    sql bench "INSERT INTO marker (tag) VALUES ('before $r $t')"
    sleep 1.2
    at="$(date -u +%Y-%m-%dT%H:%M:%SZ)"
    sleep 1.2
    sql bench "INSERT INTO marker (tag) VALUES ('after $r $t')"
    upto="$(sql postgres "SELECT pg_walfile_name(pg_switch_wal())")"
    drain "$upto" >/dev/null

    # 3. Restore of the newest base backup.
    dir="$u/restore/$t-$r"
    read -r w rss cpu < <(restore "$t" "$dir")
    row "$t" restore_wall "$r" "$w"; row "$t" restore_rss "$r" "$rss"
    echo "    restore: $w s, $rss MiB RSS" >&2
    close_restored "$dir"

    # 4. Point in time: restore, replay, open.
    dir="$u/restore/$t-$r-pitr"
    read -r w rss cpu < <(restore_at "$t" "$dir" "$at")
    pg_dirs+=("$dir")
    o=$(open_restored "$dir")
    got="$(PGHOST="$u/rsock" PGPORT="$rport" sql bench "SELECT string_agg(tag, ',') FROM marker WHERE tag LIKE '% $r $t'")"
    if [ "$got" != "before $r $t" ]; then
      echo "${name[$t]}'s point-in-time restore to $at holds '$got', not 'before $r $t'" >&2
      exit 1
    fi
    row "$t" pitr_wall "$r" "$(python3 -c "print(round($w + $o, 2))")"
    row "$t" pitr_restore "$r" "$w"; row "$t" pitr_open "$r" "$o"; row "$t" pitr_rss "$r" "$rss"
    echo "    point in time ($at): restore $w s + replay and open $o s, $rss MiB RSS" >&2
    close_restored "$dir"
  done
done
load1="$(cut -d' ' -f1-3 /proc/loadavg)"

# --- the report ---------------------------------------------------------------------
pgbr_version="$(pgbackrest version | awk '{print $2}')"
barman_version="$("$bpy" "$bvenv/bin/barman-cloud-backup" --version 2>&1 | awk '{print $NF}')"
bkp_version="$("$bkp" --version | cut -d' ' -f2-)"
case "$bkp_src" in */debug/bkp) bkp_version="$bkp_version, debug build" ;; esac
python3 - "$rows" <<PY | tee "$work/results.md"
import collections, statistics, sys
vals = collections.defaultdict(list)
for line in open(sys.argv[1]):
    tool, measure, rnd, v = line.rstrip("\n").split("\t")
    vals[(tool, measure)].append(float(v) if v else float("nan"))
tools = "${tools[*]}".split()
def med(t, m):
    v = [x for x in vals.get((t, m), []) if x == x]
    return statistics.median(v) if v else None
def fmt(x):
    if x is None or x != x: return "-"
    if abs(x) >= 100 or x == int(x): return f"{x:.0f}"
    return f"{x:.2f}".rstrip("0").rstrip(".")
measures = [  # label, key, whether bkp / pgBackRest means something
    ("base backup: wall s", "backup_wall", 1),
    ("base backup: peak RSS MiB", "backup_rss", 1),
    ("base backup: CPU s (user + system)", "backup_cpu", 1),
    ("base backup: MiB stored", "backup_mib", 1),
    ("WAL under load: segments archived per s", "wal_rate", 1),
    ("WAL under load: segments written (16 MiB)", "wal_generated", 0),
    ("WAL under load: .ready files at the end", "wal_ready", 0),
    ("WAL under load: pg_wal MiB before", "wal_before", 0),
    ("WAL under load: pg_wal MiB after", "wal_after", 0),
    ("WAL: s to catch up after the load", "wal_catchup", 0),
    ("WAL: failed archive_command runs", "wal_failed", 0),
    ("WAL: MiB stored per segment", "wal_stored", 1),
    ("pgbench tps during the load", "tps", 1),
    ("restore of the base backup: wall s", "restore_wall", 1),
    ("restore of the base backup: peak RSS MiB", "restore_rss", 1),
    ("point in time: wall s (restore + replay + open)", "pitr_wall", 1),
    ("point in time: the restore command, s", "pitr_restore", 1),
    ("point in time: server start to open primary, s", "pitr_open", 1),
    ("point in time: peak RSS MiB (restore command)", "pitr_rss", 1),
]
print("# bench/compare-postgres.sh")
print()
print("$(date -u +%Y-%m-%dT%H:%MZ), $(nproc) cores, PostgreSQL $pg_version, pgbench scale $scale "
      "(database $((db_size / 1048576)) MiB), $rounds round(s), tools in turn (the order rotates each round), "
      "load \`pgbench -c 4 -j 2 -T $load_seconds\`; S3: SeaweedFS on loopback over HTTPS, shared by the three; "
      "load average at start $load0, at end $load1.")
print()
print("bkp $bkp_version, pgBackRest $pgbr_version, barman-cloud $barman_version.")
print()
print("| median over rounds | bkp | pgBackRest | barman-cloud | bkp / pgBackRest |")
print("|---|---|---|---|---|")
for label, m, r in measures:
    b, p, c = (med(t, m) for t in ("bkp", "pgbackrest", "barman"))
    ratio = f"{b / p:.2f}x" if r and b is not None and p and b == b and p == p else "-"
    print(f"| {label} | {fmt(b)} | {fmt(p)} | {fmt(c)} | {ratio} |")
print()
print("Ratios below 1 favour bkp, except for segments archived per second and tps (above 1 does).")
print()
print("Every round:")
print()
print("| measure | tool | " + " | ".join(f"round {i + 1}" for i in range($rounds)) + " |")
print("|---|---|" + "---|" * $rounds)
names = {"bkp": "bkp", "pgbackrest": "pgBackRest", "barman": "barman-cloud"}
for label, m, _ in measures:
    for t in tools:
        print(f"| {label} | {names[t]} | " + " | ".join(fmt(v) for v in vals.get((t, m), [])) + " |")
PY
cat >>"$work/results.md" <<EOF

How each tool ran:

- bkp: \`bkp snapshot --kind postgres\` (pg_basebackup, \`checkpoint = "fast"\`); \`bkp wal push %p\`
  as archive_command, one process per segment; \`bkp restore latest --kind postgres\` (which also
  checks every file with pg_verifybackup); \`bkp restore --at\`, which replays the WAL itself,
  proves where recovery stopped and shuts the server down, then the server is started on the
  directory. zstd level 3, AES-256-GCM with a key file.
- pgBackRest: \`backup --type=full\` with \`start-fast=y\`, \`archive-push\` with
  \`archive-async=y\`, \`process-max=2\` (backup, restore and the asynchronous archive-push and
  archive-get); \`restore --type=immediate\`, and \`restore --type=time --target-action=promote\`
  then the server started with the restore_command pgBackRest wrote. \`compress-type=zst\`,
  \`compress-level=3\`, \`repo1-cipher-type=aes-256-cbc\` with a passphrase.
- barman-cloud: \`barman-cloud-backup --$barman_comp --immediate-checkpoint\` (2 upload jobs, its
  default); its base backups offer gzip, bzip2, snappy or lz4, no zstd (gzip is Python's tarfile
  at level 9). \`barman-cloud-wal-archive --zstd --compression-level 3\` as archive_command;
  \`barman-cloud-restore\`, then for a point in time restore_command
  \`barman-cloud-wal-restore --parallel 2\`, recovery_target_time, recovery_target_action =
  'promote' and recovery.signal, written by hand as barman's documentation shows. barman-cloud
  encrypts nothing itself: only S3 server-side encryption (\`-e AES256|aws:kms\`), which this S3
  server was not asked for, so its objects are stored in clear.

Peak RSS is /usr/bin/time's: the largest single process of the command (for pgBackRest with
process-max=2, one of its processes, not their sum). "Point in time" restores to an instant
after the load, between two marked commits; each restored server is checked to hold the one
before and not the one after. The S3 server and PostgreSQL share the machine's cores with the
tool measured.
EOF
cp "$work/results.md" "$results"
echo "==> written to $results" >&2
