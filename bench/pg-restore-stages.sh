#!/usr/bin/env bash
# Profile: where a restore of a PostgreSQL base backup spends its time. One
# pgbench database (scale SCALE), one `bkp snapshot --kind postgres` into a local
# directory store, then `bkp -v restore latest --kind postgres` ROUNDS times into a
# new directory each, with bkp's own timings of its stages (read, decrypt and
# unpack; pg_verifybackup; fsync of the restored tree) and, beside them, the same
# work done by the tools alone on the restored tree: `pg_verifybackup` again (files
# in the page cache), and `tar` of the tree into a new directory then `sync`.
# Each round also runs `bkp -v restore latest --kind postgres --at T`, T after
# `pgbench -c 4 -j 2 -T LOAD` (60 s) archived by `bkp wal push`: the base restore's
# stages again, the WAL fetch (beside the replay since it overlaps it),
# PostgreSQL's replay to T and its shutdown, and the fsync of the result. With
# BASELINE=/path/to/another/bkp, that binary restores too, interleaved, for a
# before-and-after on the same database and WAL.
# Prints the figures and writes them to bench/pg-restore-stages-results.md. Not a
# test.
#
#   bench/pg-restore-stages.sh                 # scale 100 (about 1.5 GB), 3 rounds
#   SCALE=20 ROUNDS=1 LOAD=20 bench/pg-restore-stages.sh
#   BASELINE=/tmp/bkp-before ROUNDS=2 bench/pg-restore-stages.sh
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../scripts/env.sh"
cd "$BKP_ROOT"
scale="${SCALE:-100}"
rounds="${ROUNDS:-3}"
load="${LOAD:-60}"
results="${RESULTS:-$BKP_ROOT/bench/pg-restore-stages-results.md}"
bkp_src="${BKP_BIN:-$CARGO_TARGET_DIR/debug/bkp}"
[ -x "$bkp_src" ] || { echo "no bkp binary at $bkp_src: build it first (cargo build), or set BKP_BIN" >&2; exit 2; }
pgbin="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)"
[ -x "$pgbin/initdb" ] || { echo "no PostgreSQL server under /usr/lib/postgresql: apt-get install postgresql" >&2; exit 2; }

work="$(mktemp -d "${TMPDIR:-/tmp}/bkp-pg-stages.XXXXXX")"
chmod 755 "$work"
# shellcheck source=lib.sh
source "$BKP_ROOT/bench/lib.sh"   # freeport; its cleanup is replaced below
u="$work/u"
mkdir -p "$u/sock" "$u/home" "$u/bkp" "$u/pg" "$u/restore"
as_pg=()
if [ "$(id -u)" -eq 0 ]; then
  as_pg=(setpriv --reuid=postgres --regid=postgres --init-groups env HOME="$u/home")
  chown -R postgres: "$u"
fi
data="$u/pg/data"
cleanup() { "${as_pg[@]}" "$pgbin/pg_ctl" -D "$data" -m immediate stop >/dev/null 2>&1 || true; [ -n "${KEEP:-}" ] && echo "kept $work" >&2 || rm -rf "$work"; }
trap cleanup EXIT
bkp="$u/bin-bkp"; cp "$bkp_src" "$bkp"; chmod 755 "$bkp"
port="$(freeport)"

echo "==> PostgreSQL: pgbench scale $scale" >&2
"${as_pg[@]}" "$pgbin/initdb" -D "$data" -U postgres --auth=trust -E UTF8 --locale=C.UTF-8 >/dev/null
"${as_pg[@]}" "$pgbin/pg_ctl" -D "$data" -l "$u/pg/log" -w -t 120 \
  -o "-p $port -k $u/sock -c listen_addresses='' -c shared_buffers=256MB -c max_wal_size=1GB -c archive_mode=on" start >/dev/null
export PGHOST="$u/sock" PGPORT="$port" PGUSER=postgres
"$pgbin/psql" -X -q -c "CREATE DATABASE bench" postgres
"$pgbin/pgbench" -i -q -s "$scale" bench 2>"$work/pgbench-init.log" || { tail -n 5 "$work/pgbench-init.log" >&2; exit 1; }
db_mib="$(( $("$pgbin/psql" -X -At -c "SELECT pg_database_size('bench')" bench) / 1048576 ))"

head -c 32 /dev/urandom >"$u/bkp/key"; chmod 600 "$u/bkp/key"
cat >"$u/bkp.toml" <<TOML
work_dir = "$u/bkp/work"
[store]
type = "local"
path = "$u/bkp/store"
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
[ "$(id -u)" -ne 0 ] || chown -R postgres: "$u/bkp" "$u/bkp.toml"
sql() { "$pgbin/psql" -X -At -v ON_ERROR_STOP=1 -c "$2" "$1"; }
sql postgres "ALTER SYSTEM SET archive_command = '$bkp -q --config $u/bkp.toml wal push %p'" >/dev/null
sql postgres "SELECT pg_reload_conf()" >/dev/null
echo "==> bkp snapshot --kind postgres" >&2
"${as_pg[@]}" "$bkp" -q --config "$u/bkp.toml" snapshot --kind postgres

echo "==> pgbench -c 4 -j 2 -T $load, archived by bkp wal push" >&2
sql bench "CREATE TABLE marker (tag text)" >/dev/null
"$pgbin/pgbench" -n -c 4 -j 2 -T "$load" bench >"$work/pgbench.log" 2>&1 || { tail -n 5 "$work/pgbench.log" >&2; exit 1; }
sql bench "INSERT INTO marker VALUES ('before')" >/dev/null
sleep 1.2; at="$(date -u +%Y-%m-%dT%H:%M:%SZ)"; sleep 1.2
sql bench "INSERT INTO marker VALUES ('after')" >/dev/null
upto="$(sql postgres "SELECT pg_walfile_name(pg_switch_wal())")"
s0=$SECONDS
until [[ ! "$(sql postgres "SELECT coalesce(last_archived_wal, '') FROM pg_stat_archiver")" < "$upto" ]]; do
  [ $((SECONDS - s0)) -lt 1800 ] || { echo "archiving did not catch up in 30 minutes" >&2; exit 1; }
  sleep 0.5
done

# A stage's seconds from bkp's -v line "… in 1.2s".
stage() { grep -o "$1 in [0-9.]*s" "$2" | tail -n 1 | grep -o '[0-9.]*s$' | tr -d s; }
secs() { python3 -c "print(f'{$(date +%s.%N) - $1:.2f}')"; }
# The binaries restoring, interleaved: this build, and BASELINE (another bkp
# binary, say the previous release) when set.
bins=("$bkp"); names=("bkp")
if [ -n "${BASELINE:-}" ]; then
  cp "$BASELINE" "$u/bin-baseline"; chmod 755 "$u/bin-baseline"
  bins+=("$u/bin-baseline"); names+=("baseline")
fi
rows=(); pitr_rows=()
for r in $(seq "$rounds"); do
  for i in "${!bins[@]}"; do
    b="${bins[$i]}"; n="${names[$i]}"
    sync; echo 3 >/proc/sys/vm/drop_caches 2>/dev/null || true
    target="$u/restore/r$r"
    start=$(date +%s.%N)
    "${as_pg[@]}" "$b" -v --config "$u/bkp.toml" restore latest --kind postgres --target "$target" \
      >"$work/out" 2>"$work/err" || { cat "$work/err" >&2; exit 1; }
    wall="$(secs "$start")"
    unpack="$(stage "unpacked base backup [0-9a-f-]*" "$work/err")"
    verify="$(stage "pg_verifybackup checked its files" "$work/err")"
    durable="$(stage "made the restore durable" "$work/err")"
    verify_alone=-; copy_alone=-
    if [ "$i" -eq 0 ]; then
      # The tools alone, on the tree just restored.
      t0=$(date +%s.%N)
      # (bkp set the backup's postgresql.auto.conf aside after its own check.)
      "${as_pg[@]}" "$pgbin/pg_verifybackup" -n -q -i postgresql.auto.conf -i postgresql.auto.conf.from-backup "$target" >/dev/null
      verify_alone="$(secs "$t0")"
      t0=$(date +%s.%N)
      mkdir "$work/copy"; tar -C "$target" -cf - . | tar -C "$work/copy" -xf -; sync
      copy_alone="$(secs "$t0")"
      rm -rf "$work/copy"
    fi
    rm -rf "$target"
    printf 'round %s, %s: restore %ss (unpack %ss, pg_verifybackup %ss, durable %ss); alone: pg_verifybackup %ss, tar | tar && sync %ss\n' \
      "$r" "$n" "$wall" "$unpack" "$verify" "$durable" "$verify_alone" "$copy_alone"
    rows+=("| $r | $n | $wall | $unpack | $verify | $durable | $verify_alone | $copy_alone |")

    sync; echo 3 >/proc/sys/vm/drop_caches 2>/dev/null || true
    target="$u/restore/p$r"
    start=$(date +%s.%N)
    "${as_pg[@]}" "$b" -v --config "$u/bkp.toml" restore latest --kind postgres --at "$at" --target "$target" \
      >"$work/out" 2>"$work/err" || { cat "$work/err" >&2; exit 1; }
    wall="$(secs "$start")"
    unpack="$(stage "unpacked base backup [0-9a-f-]*" "$work/err")"
    verify="$(stage "pg_verifybackup checked its files" "$work/err")"
    files="$(grep -o 'fetching [0-9]* archived WAL files' "$work/err" | grep -o '[0-9]*' | head -n 1)"
    fetch="$(stage "fetched and verified them" "$work/err")"
    replay="$(stage "replayed the archive and opened" "$work/err")"
    down="$(stage "PostgreSQL shut down" "$work/err")"
    durable="$(stage "made the restore durable" "$work/err")"
    rm -rf "$target"
    printf 'point in time, round %s, %s: restore %ss (unpack %ss, pg_verifybackup %ss, fetch %s files %ss, replay %ss, shutdown %ss, durable %ss)\n' \
      "$r" "$n" "$wall" "$unpack" "$verify" "$files" "$fetch" "$replay" "$down" "$durable"
    pitr_rows+=("| $r | $n | $wall | $unpack | $verify | $files | $fetch | $replay | $down | $durable |")
  done
done

{
echo "PostgreSQL base backup restore, stage by stage: pgbench scale $scale ($db_mib MiB database), local directory store, $(nproc) cores, $(date -u +%Y-%m-%d); page cache dropped before each restore where allowed."
echo
echo "Binaries: bkp is $("$bkp" --version)${BASELINE:+; baseline is $("$u/bin-baseline" --version) ($BASELINE)}, interleaved in each round."
echo
echo "| round | binary | bkp restore, wall (s) | read, decrypt, unpack (s) | pg_verifybackup (s) | fsync of the tree (s) | pg_verifybackup alone, warm (s) | tar \\| tar, then sync (s) |"
echo "|---|---|---|---|---|---|---|---|"
printf '%s\n' "${rows[@]}"
echo
echo "Point-in-time restore to an instant after \`pgbench -c 4 -j 2 -T $load\` (archived by \`bkp wal push\`), stage by stage. Where the WAL is fetched beside the replay, the replay's time includes the fetch's; where it is fetched first, they add up:"
echo
echo "| round | binary | bkp restore --at, wall (s) | read, decrypt, unpack (s) | pg_verifybackup (s) | WAL files | fetch and verify them (s) | PostgreSQL replay to T and open (s) | its shutdown (s) | fsync of the tree (s) |"
echo "|---|---|---|---|---|---|---|---|---|---|"
printf '%s\n' "${pitr_rows[@]}"
} | tee "$results"
