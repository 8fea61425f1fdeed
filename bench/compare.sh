#!/usr/bin/env bash
# Nexus against a bare actix-web + sqlx server (bench/baseline) reading the
# same rows of the same PostgreSQL database, in the same run, with wrk: the
# rate, latency and CPU time per request of each.
# Usage: bench/compare.sh [products=20000] [duration=15s] [connections=64]
# Env: COMPARE_PG (server URL without database, default
#   postgres://root@127.0.0.1:5432), COMPARE_PG_PARAMS (the connection's
#   parameters, the same for both servers, default sslmode=disable; with
#   sslmode=require both speak TLS to PostgreSQL), NEXUS_REDIS_URL (default
#   redis://127.0.0.1:6379), CARGO_TARGET_DIR (where Nexus is built),
#   COMPARE_ALSO (another Nexus binary, e.g. a build of an earlier commit:
#   each pair then also measures it, on the same database, right after this
#   one, each binary restarted before its turn).
# Needs: PostgreSQL, Redis, wrk (apt-get install wrk), psql, curl, python3.
# Builds both release binaries. A scratch database is created and dropped.
set -euo pipefail
cd "$(dirname "$0")/.."
size=${1:-20000}
duration=${2:-15s}
connections=${3:-64}
pg=${COMPARE_PG:-postgres://root@127.0.0.1:5432}
params=${COMPARE_PG_PARAMS-sslmode=disable}
redis=${NEXUS_REDIS_URL:-redis://127.0.0.1:6379}
db="nexus_compare_$$"
prefix="nexus-compare-$$:"
nexus_port=18401
base_port=18402
nexus="http://127.0.0.1:$nexus_port"
base="http://127.0.0.1:$base_port"
work=$(mktemp -d)
nexus_bin="${CARGO_TARGET_DIR:-target}/release/nexus"
base_bin=bench/baseline/target/release/nexus-baseline

nice -n 19 cargo build --release --quiet
nice -n 19 cargo build --release --quiet --manifest-path bench/baseline/Cargo.toml --target-dir bench/baseline/target

sql() { psql -q -v ON_ERROR_STOP=1 -At "$pg/$db" "$@"; }
servers=()
cleanup() {
  for pid in "${servers[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  psql -q "$pg/postgres" -c "DROP DATABASE IF EXISTS $db WITH (FORCE)" || true
  redis-cli -u "$redis" --scan --pattern "$prefix*" | xargs -r redis-cli -u "$redis" del >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT
psql -q -v ON_ERROR_STOP=1 "$pg/postgres" -c "CREATE DATABASE $db"

# Start Nexus (the binary $1) on the database; sets $nexus_pid.
start_nexus() {
  NEXUS_BIND=127.0.0.1:$nexus_port NEXUS_DATA_DIR="$work" NEXUS_DATABASE_URL="$pg/$db?$params" NEXUS_REDIS_URL="$redis" \
    NEXUS_REDIS_KEY_PREFIX="$prefix" RUST_LOG=warn "$1" serve >"$work/nexus.log" 2>&1 &
  servers+=($!)
  nexus_pid=$!
  for _ in $(seq 1 100); do curl -sf "$nexus/health" >/dev/null && break; sleep 0.2; done
  curl -sf "$nexus/health" >/dev/null || { cat "$work/nexus.log"; exit 1; }
}
# Nexus's peak RSS (VmHWM, kB) over every process of $nexus_bin; stop_nexus
# counts the stopped one's.
peak=0
hwm() { awk '/VmHWM/ {print $2}' "/proc/$nexus_pid/status"; }
stop_nexus() {
  [ "$(ps -o args= -p "$nexus_pid" | cut -d' ' -f1)" = "$nexus_bin" ] && peak=$(( $(hwm) > peak ? $(hwm) : peak ))
  kill "$nexus_pid"; wait "$nexus_pid" 2>/dev/null || true
}
start_nexus "$nexus_bin"

json() { python3 -c "import json,sys; print(json.load(sys.stdin)$1)"; }
token=$(curl -sf -X POST "$nexus/api/v1/auth/register" -H 'content-type: application/json' \
  -d '{"tenant_name":"Bench","tenant_slug":"bench","name":"Bench","email":"bench@example.com","password":"correct horse 42"}' \
  | json '["data"]["token"]["token"]')
auth="Authorization: Bearer $token"
# Unlimited tier, so the per-user rate limit does not turn this into a 429 benchmark.
tenant=$(curl -sf "$nexus/api/v1/license" -H "$auth" | json '["data"]["tenant_id"]')
license_key=$(NEXUS_LICENSE_SIGNING_KEY=oPNF7XY9c6XmzMWnRJrPSPerqnlS3kMt1iNZZ7Aw5Dk= "$nexus_bin" license sign --tenant "$tenant" --tier enterprise)
curl -sf -o /dev/null -X POST "$nexus/api/v1/license/key" -H "$auth" -H 'content-type: application/json' \
  -d "{\"key\":\"$license_key\"}"

# The tenant's products, and a quarter as many of three other tenants,
# interleaved in time (one a minute, the others' between them).
echo "== seeding $size products of the tenant and about $((size / 4)) of three others"
sql -v tenant="$tenant" -v n="$size" <<'SQL'
INSERT INTO tenants (id, name, slug, created_at, updated_at)
SELECT gen_random_uuid(), 'Other ' || t, 'other-' || t, now(), now() FROM generate_series(1, 3) AS t;
INSERT INTO products (id, tenant_id, sku, name, barcode, unit_price, currency, attributes, active,
                      preferred_vendor_id, version, created_at, updated_at)
SELECT gen_random_uuid(), :'tenant', 'SKU-' || lpad(i::text, 7, '0'), 'Product ' || i,
       CASE WHEN i % 3 = 0 THEN (4000000000000 + i)::text END,
       (i * 137) % 100000, CASE WHEN i % 5 = 0 THEN 'USD' ELSE 'EUR' END,
       json_build_object('color', (ARRAY['red', 'green', 'blue'])[i % 3 + 1], 'size', i % 50),
       i % 10 <> 0, NULL, 1, now() - make_interval(mins => i), now() - make_interval(mins => i)
FROM generate_series(1, :n) AS i;
INSERT INTO products (id, tenant_id, sku, name, barcode, unit_price, currency, attributes, active,
                      preferred_vendor_id, version, created_at, updated_at)
SELECT gen_random_uuid(), o.id, 'SKU-' || lpad(i::text, 7, '0'), 'Other product ' || i, NULL,
       (i * 71) % 100000, 'EUR', '{}'::json, true, NULL, 1,
       now() - make_interval(mins => i * 4, secs => 30), now()
FROM (SELECT id FROM tenants WHERE slug LIKE 'other-%') AS o, generate_series(1, :n / 12) AS i;
VACUUM ANALYZE;
SQL
echo "products: $(sql -c "SELECT count(*) FROM products") in all, $(sql -c "SELECT count(*) FROM products WHERE tenant_id = '$tenant'") of the tenant"
product=$(sql -c "SELECT id FROM products WHERE tenant_id = '$tenant' ORDER BY created_at DESC OFFSET $((size / 2)) LIMIT 1")
# What the database alone spends on the queries of a page (third run, warm):
# plan nodes and execution time.
plan() {
  for _ in 1 2; do sql -c "EXPLAIN ANALYZE $2" >/dev/null; done
  echo "$1: $(sql -c "EXPLAIN ANALYZE $2" | sed -nE 's/^ *(-> +)?([A-Za-z][^(]*[^ (]) +\(cost.*/\2/p; s/^Execution Time: (.*)/= \1/p' | paste -sd'<' | sed 's/<=/ =/; s/</ < /g')"
}
plan "page of 25 " "SELECT * FROM products WHERE tenant_id = '$tenant' ORDER BY created_at DESC, id DESC LIMIT 25"
plan "include=total" "SELECT COUNT(*) FROM products WHERE tenant_id = '$tenant'"
plan "one product" "SELECT * FROM products WHERE tenant_id = '$tenant' AND id = '$product'"

DATABASE_URL="$pg/$db?$params" TENANT_ID="$tenant" BIND=127.0.0.1:$base_port "$base_bin" >"$work/baseline.log" 2>&1 &
servers+=($!)
base_pid=$!
for _ in $(seq 1 50); do curl -sf "$base/json" >/dev/null && break; sleep 0.1; done

# Both answer the same rows: the same 25 products in the same order, the same
# product. (Nexus's lists are newest first by default; the sort is spelled out.)
same() {
  python3 - "$1" "$2" <<'PY'
import json, sys
a, b = (json.load(open(p))["data"] for p in sys.argv[1:])
if a != b:
    pairs = zip(a, b) if isinstance(a, list) else [(a, b)]
    print("Nexus:   ", next(x for x, y in pairs if x != y) if len(a) == len(b) else len(a), file=sys.stderr)
    print("baseline:", b[0] if isinstance(b, list) else b, file=sys.stderr)
    sys.exit(1)
PY
}
for _ in 1 2; do # the second, warm, answer is compared and its Server-Timing shown
  curl -sf "$nexus/api/v1/products?limit=25&sort=-created_at" -H "$auth" -D "$work/list.h" -o "$work/n-list.json"
  curl -sf "$nexus/api/v1/products/$product" -H "$auth" -D "$work/one.h" -o "$work/n-one.json"
done
curl -sf "$base/products" -o "$work/b-list.json"
curl -sf "$base/products/$product" -o "$work/b-one.json"
same "$work/n-list.json" "$work/b-list.json" || { echo "the pages differ"; exit 1; }
same "$work/n-one.json" "$work/b-one.json" || { echo "the products differ"; exit 1; }
echo "same data from both: yes (page of 25, and product $product)"
echo "Nexus list:    $(grep -i '^server-timing' "$work/list.h" | tr -d '\r')"
echo "Nexus product: $(grep -i '^server-timing' "$work/one.h" | tr -d '\r')"

# The CPU time (user + system, in clock ticks) process $1 has used.
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
# One measured wrk run against the server of pid $1 after a 3 s warm-up;
# prints "req/s p50_ms p99_ms non-2xx cpu_us_per_request". The CPU time the
# server spent per request answered varies less from run to run than the
# rate does: on two shared cores the rate also depends on what wrk and
# PostgreSQL got.
measure() {
  local pid=$1 before out spent
  shift
  wrk -t1 -c"$connections" -d3s "$@" >/dev/null
  before=$(ticks "$pid")
  out=$(wrk -t1 -c"$connections" -d"$duration" --latency "$@")
  spent=$(( $(ticks "$pid") - before ))
  echo "$out" >>"$work/wrk.txt"
  echo "$out" | CPU_TICKS=$spent TICK_HZ=$(getconf CLK_TCK) python3 -c '
import os, re, sys
text = sys.stdin.read()
def ms(v):
    n, unit = re.fullmatch(r"([\d.]+)(us|ms|s|m)", v).groups()
    return float(n) * {"us": 0.001, "ms": 1, "s": 1000, "m": 60000}[unit]
rps = float(re.search(r"Requests/sec:\s+([\d.]+)", text).group(1))
p50 = ms(re.search(r"^\s+50%\s+(\S+)", text, re.M).group(1))
p99 = ms(re.search(r"^\s+99%\s+(\S+)", text, re.M).group(1))
bad = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", text)
errors = re.search(r"Socket errors:.*", text)
if errors:
    print("   " + errors.group(0), file=sys.stderr)
answered = int(re.search(r"(\d+) requests in", text).group(1))
cpu = int(os.environ["CPU_TICKS"]) / int(os.environ["TICK_HZ"]) * 1e6 / max(answered, 1)
print(rps, p50, p99, int(bad.group(1)) if bad else 0, round(cpu, 1))
'
}
rows=()
pair() {
  local name=$1 base_url=$2 nexus_url=$3
  echo "== $name" >&2
  local b n a=""
  b=$(measure "$base_pid" "$base_url")
  n=$(measure "$nexus_pid" -H "$auth" "$nexus_url")
  echo "   baseline: $b" >&2
  echo "   Nexus:    $n" >&2
  if [ -n "${COMPARE_ALSO:-}" ]; then
    stop_nexus; start_nexus "$COMPARE_ALSO"
    a=$(measure "$nexus_pid" -H "$auth" "$nexus_url")
    echo "   also:     $a" >&2
    stop_nexus; start_nexus "$nexus_bin"
  fi
  rows+=("$name|$b|$n|$a")
}
pair "\`GET /api/v1/products?limit=25&sort=-created_at\` vs \`/products\`" "$base/products" "$nexus/api/v1/products?limit=25&sort=-created_at"
pair "\`GET /api/v1/products/{id}\` vs \`/products/{id}\`" "$base/products/$product" "$nexus/api/v1/products/$product"
pair "\`GET /health\` vs \`/json\`" "$base/json" "$nexus/health"

echo
echo "$size products of the tenant, about $((size / 4)) of others; wrk -t1 -c$connections -d$duration after a 3 s warm-up; $(date -u +%F)"
echo
printf '%s\n' "${rows[@]}" | python3 -c '
import sys
rows = [line.rstrip("\n").split("|") for line in sys.stdin]
also = any(a for *_, a in rows)
print("| request (Nexus vs baseline) | baseline req/s | p50 | p99 | Nexus req/s | p50 | p99 | Nexus / baseline | CPU per request: baseline, Nexus |"
      + (" `COMPARE_ALSO` req/s | p99 | / baseline | CPU per request |" if also else ""))
print("|---|---:|---:|---:|---:|---:|---:|---:|---:|" + ("---:|---:|---:|---:|" if also else ""))
for name, b, n, a in rows:
    (br, b50, b99, bbad, bcpu), (nr, n50, n99, nbad, ncpu) = (list(map(float, x.split())) for x in (b, n))
    note = f" ({int(nbad)} Nexus non-2xx)" if nbad else ""
    note += f" ({int(bbad)} baseline non-2xx)" if bbad else ""
    line = (f"| {name} | {br:,.0f} | {b50:.2f} ms | {b99:.2f} ms | {nr:,.0f} | {n50:.2f} ms | {n99:.2f} ms"
            f" | {nr / br:.2f}x{note} | {bcpu:.0f} us, {ncpu:.0f} us ({ncpu / bcpu:.2f}x) |")
    if also:
        ar, _, a99, abad, acpu = map(float, a.split())
        bad = f" ({int(abad)} non-2xx)" if abad else ""
        line += f" {ar:,.0f} | {a99:.2f} ms | {ar / br:.2f}x{bad} | {acpu:.0f} us ({acpu / bcpu:.2f}x) |"
    print(line)
'
echo
echo "peak RSS (VmHWM): Nexus $(( $(hwm) > peak ? $(hwm) : peak )) kB, baseline $(awk '/VmHWM/ {print $2, $3}' "/proc/$base_pid/status")"
