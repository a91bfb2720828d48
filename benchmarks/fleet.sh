#!/usr/bin/env bash
# A fleet run's wall time at concurrency 1 against 2, in the same run, on two throwaway servers.
#
#   benchmarks/fleet.sh BINARY [TARGETS] [ROWS] [ROUNDS]
#
# Starts two clusters (initdb/pg_ctl, as user postgres when run as root, durability the server's
# default: fsync on), creates TARGETS databases (default 8) spread over them in turn, each with
# `items` of ROWS rows (default 250,000; a 192-character payload), then times
# `backfill run fill.yaml --targets targets.yaml` with `concurrency: 1` and `concurrency: 2`,
# alternating, ROUNDS times each (default 3). Every run starts from the same state (the column reset,
# vacuumed, the store dropped). Prints each run and the medians as Markdown on stdout.
#
#   swift build -c release --product backfill
#   benchmarks/fleet.sh .build/release/backfill 8 250000 3 > benchmarks/results/fleet.md
set -euo pipefail

bin=$(realpath "$1")
targets=${2:-8}; rows=${3:-250000}; rounds=${4:-3}
bindir=$(pg_config --bindir 2>/dev/null || ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
work=$(mktemp -d /tmp/fleet-bench.XXXXXX)
chmod 755 "$work"
as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
[ "$(id -u)" = 0 ] && chown postgres "$work"
base=$(( 20000 + RANDOM % 20000 ))
ports=("$base" "$((base + 1))")
cleanup() {
  for s in 0 1; do as_pg "$bindir/pg_ctl" -D "$work/data$s" -m immediate stop >/dev/null 2>&1 || true; done
  rm -rf "$work"
}
trap cleanup EXIT

for s in 0 1; do
  as_pg "$bindir/initdb" -D "$work/data$s" -U postgres -A trust >/dev/null
  as_pg "$bindir/pg_ctl" -D "$work/data$s" -l "$work/log$s" -w \
    -o "-p ${ports[$s]} -k $work -c listen_addresses='' -c shared_buffers=128MB -c max_wal_size=1GB" start >/dev/null
done
url() { echo "postgresql://postgres@/$2?host=$work&port=${ports[$1]}"; }
psql() { PGOPTIONS="-c client_min_messages=warning" "$bindir/psql" -X -q -v ON_ERROR_STOP=1 "$@"; }

for i in $(seq 1 "$targets"); do
  s=$(( (i - 1) % 2 ))
  psql "$(url "$s" postgres)" -c "CREATE DATABASE shard_$i"
  psql "$(url "$s" "shard_$i")" \
    -c "CREATE TABLE items (id bigint PRIMARY KEY, payload text NOT NULL, v integer)" \
    -c "INSERT INTO items SELECT g, repeat(md5(g::text), 6), NULL FROM generate_series(1, $rows) g" \
    -c "VACUUM ANALYZE items"
done

cat > "$work/fill.yaml" <<JOB
name: fleet-fill
table: items
key: [id]
where: v IS NULL
set:
  v: "1"
JOB

targets_file() {  # targets_file CONCURRENCY
  {
    echo "targets:"
    for i in $(seq 1 "$targets"); do
      s=$(( (i - 1) % 2 ))
      echo "  - name: shard-$i"
      echo "    database: \"$(url "$s" "shard_$i")\""
    done
    echo "concurrency: $1"
  } > "$work/targets-$1.yaml"
}
targets_file 1
targets_file 2

reset() {
  for i in $(seq 1 "$targets"); do
    s=$(( (i - 1) % 2 ))
    psql "$(url "$s" "shard_$i")" -c "UPDATE items SET v = NULL" -c "VACUUM items" -c "DROP SCHEMA IF EXISTS backfill CASCADE" -c "CHECKPOINT"
  done
}

# run CONCURRENCY: prints the wall seconds of one fleet run.
run() {
  reset
  local start end
  start=$(date +%s.%N)
  "$bin" run "$work/fill.yaml" --targets "$work/targets-$1.yaml" --progress never >"$work/run-$1.out" 2>&1 \
    || { cat "$work/run-$1.out" >&2; exit 1; }
  end=$(date +%s.%N)
  echo "$end - $start" | bc
}

median() { sort -g | awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR+1)/2] : (a[NR/2] + a[NR/2+1]) / 2}'; }

one=(); two=()
echo "# A fleet of $targets targets on two servers, $rows rows each: concurrency 1 against 2, $rounds rounds each, alternating"
echo
echo "$(nproc) cores, $("$bindir/postgres" --version), $("$bin" --version); \`benchmarks/fleet.sh $1 $targets $rows $rounds\`"
echo
echo "| round | concurrency 1 (s) | concurrency 2 (s) |"
echo "| --- | --- | --- |"
for r in $(seq 1 "$rounds"); do
  if (( r % 2 )); then a=$(run 1); b=$(run 2); else b=$(run 2); a=$(run 1); fi
  one+=("$a"); two+=("$b")
  printf '| %d | %.2f | %.2f |\n' "$r" "$a" "$b"
done
m1=$(printf '%s\n' "${one[@]}" | median); m2=$(printf '%s\n' "${two[@]}" | median)
printf '| median | %.2f | %.2f |\n\n' "$m1" "$m2"
total=$(( targets * rows ))
printf 'Rows: %d targets x %d = %d. Median rows/s: concurrency 1 %.0f, concurrency 2 %.0f (%.2fx).\n' \
  "$targets" "$rows" "$total" "$(echo "$total / $m1" | bc -l)" "$(echo "$total / $m2" | bc -l)" "$(echo "$m1 / $m2" | bc -l)"
echo
echo "Last run's summary (concurrency 2):"
echo
echo '```'
grep -E '^summary:' "$work/run-2.out" | sed "s|$work|WORK|g"
echo '```'
