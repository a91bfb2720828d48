#!/usr/bin/env bash
# What `journal: true` costs: a fill's wall time, rows/s and WAL with and without the journal, in
# the same run, on one throwaway server.
#
#   benchmarks/journal.sh BINARY [ROWS] [ROUNDS]
#
# Starts a cluster (initdb/pg_ctl, as user postgres when run as root, durability the server's
# default: fsync on), creates `items` of ROWS rows (default 1,000,000; a 192-character payload, a
# tenth with a value before the job), then runs the same fill with `journal: false` and
# `journal: true`, alternating, ROUNDS times each (default 3). Every run starts from the same state
# (the column reset, vacuumed, the store's jobs and journal dropped, a checkpoint). WAL is
# `pg_current_wal_lsn()` before and after the run. Prints each run and the medians as Markdown.
#
#   swift build -c release --product backfill
#   benchmarks/journal.sh .build/release/backfill 1000000 3 > benchmarks/results/journal.md
set -euo pipefail

bin=$(realpath "$1")
rows=${2:-1000000}; rounds=${3:-3}
bindir=$(pg_config --bindir 2>/dev/null || ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
work=$(mktemp -d /tmp/journal-bench.XXXXXX)
chmod 755 "$work"
as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
[ "$(id -u)" = 0 ] && chown postgres "$work"
port=$(( 20000 + RANDOM % 20000 ))
cleanup() {
  as_pg "$bindir/pg_ctl" -D "$work/data" -m immediate stop >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT

as_pg "$bindir/initdb" -D "$work/data" -U postgres -A trust >/dev/null
as_pg "$bindir/pg_ctl" -D "$work/data" -l "$work/log" -w \
  -o "-p $port -k $work -c listen_addresses='' -c shared_buffers=128MB -c max_wal_size=2GB" start >/dev/null
url="postgresql://postgres@/postgres?host=$work&port=$port"
psql() { PGOPTIONS="-c client_min_messages=warning" "$bindir/psql" -X -q -At -v ON_ERROR_STOP=1 "$url" "$@"; }

psql -c "CREATE TABLE items (id bigint PRIMARY KEY, payload text NOT NULL, v integer)" \
     -c "INSERT INTO items SELECT g, repeat(md5(g::text), 6), CASE WHEN g % 10 = 0 THEN 7 END FROM generate_series(1, $rows) g" \
     -c "VACUUM ANALYZE items"

for journal in false true; do
  cat > "$work/fill-$journal.yaml" <<JOB
name: journal-bench-$journal
table: items
key: [id]
set:
  v: "coalesce(v, 0) + 1"
journal: $journal
JOB
done

reset() {
  psql -c "UPDATE items SET v = CASE WHEN id % 10 = 0 THEN 7 END" \
       -c "DROP SCHEMA IF EXISTS backfill CASCADE" -c "VACUUM ANALYZE items" -c "CHECKPOINT"
}

echo "# journal: true against false, $rows rows, $rounds rounds each, alternating"
echo
echo "$(nproc) cores, $("$bindir/postgres" --version), $("$bin" --version)"
echo
echo "| round | journal | seconds | rows/s | WAL MB |"
echo "| --- | --- | --- | --- | --- |"
declare -A secs wal
for round in $(seq 1 "$rounds"); do
  for journal in false true; do
    reset
    before=$(psql -c "SELECT pg_current_wal_lsn() - '0/0'::pg_lsn")
    start=$(date +%s.%N)
    "$bin" run "$work/fill-$journal.yaml" --database "$url" --progress never >/dev/null 2>"$work/run.log" || { cat "$work/run.log" >&2; exit 1; }
    end=$(date +%s.%N)
    after=$(psql -c "SELECT pg_current_wal_lsn() - '0/0'::pg_lsn")
    s=$(echo "$end - $start" | bc -l); mb=$(echo "($after - $before) / 1048576" | bc -l)
    secs[$journal]+="$s "; wal[$journal]+="$mb "
    printf "| %d | %s | %.2f | %.0f | %.0f |\n" "$round" "$journal" "$s" "$(echo "$rows / $s" | bc -l)" "$mb"
  done
done
median() { tr ' ' '\n' | grep . | sort -g | awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR+1)/2] : (a[NR/2] + a[NR/2+1]) / 2}'; }
echo
echo "| journal | median seconds | median rows/s | median WAL MB |"
echo "| --- | --- | --- | --- |"
for journal in false true; do
  s=$(echo "${secs[$journal]}" | median); mb=$(echo "${wal[$journal]}" | median)
  printf "| %s | %.2f | %.0f | %.0f |\n" "$journal" "$s" "$(echo "$rows / $s" | bc -l)" "$mb"
done
