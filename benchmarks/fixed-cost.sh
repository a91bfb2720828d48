#!/usr/bin/env bash
# Per-batch fixed cost of two `backfill` binaries, side by side on one throwaway cluster.
#
#   benchmarks/fixed-cost.sh NEW_BINARY OLD_BINARY [ROWS] [ROUNDS]
#
# Fills `items.v` of ROWS rows (default 200,000, each with a 192-character payload) three ways per binary:
# batches of exactly 100 keys, of exactly 1,000, and of 10,000 keys (batch.size = min = max, so
# the sizer cannot change them). The 10,000-key run gives the cost of a row; a batch's fixed cost
# is then (wall time / batches) - (keys per batch x cost of a row): the round trips, the claim,
# the checkpoint and the commit. Each run starts from the same state (v reset, vacuumed, a fresh
# store). The rounds alternate the binaries; the median of each is reported. Durability is the
# server's default (fsync on). Writes benchmarks/results/fixed-cost.md.
#
# Build the binaries first, e.g. the current tree and the first milestone's:
#   swift build -c release --product backfill
#   git worktree add /tmp/old 3ef2ac2 && (cd /tmp/old && swift build -c release --product backfill)
set -euo pipefail

new=$(realpath "$1"); old=$(realpath "$2")
rows=${3:-200000}; rounds=${4:-3}
here=$(cd "$(dirname "$0")" && pwd)
bindir=$(pg_config --bindir 2>/dev/null || ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
work=$(mktemp -d /tmp/fixed-cost.XXXXXX)
chmod 755 "$work"
as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
[ "$(id -u)" = 0 ] && chown postgres "$work"
port=$(( 20000 + RANDOM % 20000 ))
cleanup() { as_pg "$bindir/pg_ctl" -D "$work/data" -m immediate stop >/dev/null 2>&1 || true; rm -rf "$work"; }
trap cleanup EXIT

as_pg "$bindir/initdb" -D "$work/data" -U postgres -A trust >/dev/null
as_pg "$bindir/pg_ctl" -D "$work/data" -l "$work/log" -w \
  -o "-p $port -k $work -c listen_addresses='' -c shared_buffers=128MB -c max_wal_size=1GB" start >/dev/null
url="postgresql://postgres@/postgres?host=$work&port=$port"
psql() { "$bindir/psql" -X -q -v ON_ERROR_STOP=1 "$url" "$@"; }

psql -c "CREATE TABLE items (id bigint PRIMARY KEY, payload text NOT NULL, v integer)" \
     -c "INSERT INTO items SELECT g, repeat(md5(g::text), 6), NULL FROM generate_series(1, $rows) g" \
     -c "VACUUM ANALYZE items"

job() {  # job NAME BATCH
  cat > "$work/$1.yaml" <<EOF
name: $1
table: items
key: [id]
where: v IS NULL
set:
  v: "1"
batch: {size: $2, min: $2, max: $2, pause_ms: 0}
EOF
}

# run BINARY LABEL BATCH: prints the wall seconds of one full run.
run() {
  psql -c "UPDATE items SET v = NULL" -c "VACUUM items" -c "DROP SCHEMA IF EXISTS bf CASCADE" \
       -c "CHECKPOINT"
  job "fixed-$3" "$3"
  local start end
  start=$(date +%s.%N)
  "$1" run "$work/fixed-$3.yaml" --database "$url" --schema bf --progress never >"$work/$2-$3.out" 2>&1 \
    || { cat "$work/$2-$3.out" >&2; exit 1; }
  end=$(date +%s.%N)
  [ "$(psql -tA -c "SELECT count(*) FROM items WHERE v IS NULL")" = 0 ] || { echo "$2: rows left unfilled" >&2; exit 1; }
  echo "$end - $start" | bc -l
}

median() { sort -g | awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2}'; }

declare -A times
for round in $(seq "$rounds"); do
  for binary in new old; do
    path=$new; [ $binary = old ] && path=$old
    for batch in 100 1000 10000; do
      t=$(run "$path" "$binary" "$batch")
      times[$binary-$batch]+="$t "
      echo "round $round $binary batch $batch: ${t}s" >&2
    done
  done
done

out="$here/results/fixed-cost.md"
{
  echo "# Per-batch fixed cost"
  echo
  echo "Written by \`benchmarks/fixed-cost.sh\`; never edited by hand."
  echo
  echo "- date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo "- command: \`benchmarks/fixed-cost.sh $1 $2 $rows $rounds\`"
  echo "- new: \`$("$new" --version 2>/dev/null | head -1)\`; old: \`$("$old" --version 2>/dev/null | head -1)\`"
  echo "- server: $(psql -tA -c 'SELECT version()' | cut -d, -f1), fsync $(psql -tA -c 'SHOW fsync'), synchronous_commit $(psql -tA -c 'SHOW synchronous_commit') (the server's; the new binary sets it off in its batch transactions)"
  echo "- table: $rows rows, $(psql -tA -c "SELECT pg_size_pretty(pg_total_relation_size('items'))"); median of $rounds rounds, binaries alternating"
  echo
  echo "| binary | s at 100 keys | s at 1,000 | s at 10,000 | ms a row | ms a batch at 100 | fixed ms a batch (100) | fixed ms a batch (1,000) |"
  echo "|---|---:|---:|---:|---:|---:|---:|---:|"
  for binary in new old; do
    s100=$(echo "${times[$binary-100]}" | tr ' ' '\n' | grep . | median)
    s1k=$(echo "${times[$binary-1000]}" | tr ' ' '\n' | grep . | median)
    s10k=$(echo "${times[$binary-10000]}" | tr ' ' '\n' | grep . | median)
    awk -v b=$binary -v s100="$s100" -v s1k="$s1k" -v s10k="$s10k" -v rows="$rows" 'BEGIN {
      row = s10k * 1000 / rows
      per100 = s100 * 1000 / (rows / 100)
      fixed100 = per100 - 100 * row
      fixed1k = s1k * 1000 / (rows / 1000) - 1000 * row
      printf "| %s | %.2f | %.2f | %.2f | %.4f | %.3f | %.3f | %.3f |\n", b, s100, s1k, s10k, row, per100, fixed100, fixed1k
    }'
  done
} > "$out"
cat "$out"
