#!/usr/bin/env bash
# Webhook pipeline benchmark: events committed through the API, dispatched
# from the outbox and delivered to a local receiver (bench/baseline/src/bin/receiver.rs).
# Reports deliveries per second under a burst and event-to-delivery latency
# (p50/p90/p99) at a steady rate, for all its events and again for those
# after its first 2 s (the steady state: by then the pools have opened the
# connections the rate needs). First, the delivery rate alone: a backlog
# of events committed while no worker runs, drained by the restarted server.
# Usage: bench/webhooks.sh [burst_events=2000] [steady_events=320] [steady_rate_per_s=30] [backlog_events=0]
# (event counts are rounded down to a multiple of 8, the number of senders)
# Env: NEXUS_DATABASE_URL / NEXUS_REDIS_URL to measure on PostgreSQL / Redis.
# Needs: curl, python3 (and psql for the breakdown on PostgreSQL). Builds the
# release binaries (Nexus; the receiver and the senders from bench/baseline).
set -euo pipefail
cd "$(dirname "$0")/.."
burst=$(( ${1:-2000} / 8 * 8 ))
steady=$(( ${2:-320} / 8 * 8 ))
rate=${3:-30}
backlog=$(( ${4:-0} / 8 * 8 ))
port=18398
base="http://127.0.0.1:$port"
data=$(mktemp -d)

cargo build --release --quiet
nice -n 19 cargo build --release --quiet --manifest-path bench/baseline/Cargo.toml --target-dir bench/baseline/target --bin receiver --bin sender
server=""
receiver=""
trap 'kill $server $receiver 2>/dev/null; rm -rf "$data"' EXIT
# Start the server; $1 says whether it runs the job workers.
start() {
  NEXUS_BIND=127.0.0.1:$port NEXUS_DATA_DIR="$data" RUST_LOG=warn NEXUS_JOBS__RUN_IN_SERVER="$1" \
  NEXUS_WEBHOOKS__ALLOW_NETWORKS='["127.0.0.0/8"]' ./target/release/nexus serve >>"$data/server.log" 2>&1 &
  server=$!
  for _ in $(seq 1 50); do curl -sf "$base/health" >/dev/null && break; sleep 0.1; done
}
if [ "$backlog" -gt 0 ]; then start false; else start true; fi

json() { python3 -c "import json,sys; print(json.load(sys.stdin)$1)"; }
token=$(curl -sf -X POST "$base/api/v1/auth/register" -H 'content-type: application/json' \
  -d '{"tenant_name":"Bench","tenant_slug":"bench","name":"Bench","email":"bench@example.com","password":"correct horse 42"}' \
  | json '["data"]["token"]["token"]')
# Measure the request path, not the rate limiter: put the tenant on the
# enterprise tier (unlimited) with a key signed by the development key.
tenant_id=$(curl -sf "$base/api/v1/license" -H "Authorization: Bearer $token" | json '["data"]["tenant_id"]')
license_key=$(NEXUS_LICENSE_SIGNING_KEY=oPNF7XY9c6XmzMWnRJrPSPerqnlS3kMt1iNZZ7Aw5Dk= ./target/release/nexus license sign --tenant "$tenant_id" --tier enterprise)
curl -sf -o /dev/null -X POST "$base/api/v1/license/key" -H "Authorization: Bearer $token" -H 'content-type: application/json' \
  -d "{\"key\":\"$license_key\"}"
users=()
for i in $(seq 1 8); do
  users+=("$(curl -sf -X POST "$base/api/v1/users" -H "Authorization: Bearer $token" -H 'content-type: application/json' \
    -d "{\"name\":\"User $i\",\"email\":\"user$i@example.com\",\"password\":\"correct horse 42\"}" | json '["data"]["id"]')")
done

# Fire $1 role changes (one event each) from 8 threads at $2 per second in all (0: as fast as
# possible), with bench/baseline/src/bin/sender.rs.
# Each user's role is assigned and removed in turn, carried over from phase to phase
# ($fired per user so far): assigning a role a user already holds changes nothing.
fired=0
fire() {
  bench/baseline/target/release/sender "$base" "$token" "$1" "$2" "$fired" "${users[@]}"
}

# On PostgreSQL (and with psql), where the phase's deliveries spent their
# time, from their own rows: event to delivery row (the API's commit, the
# dispatch job's claim and run), delivery row to attempt (the delivery job's
# claim, its read and slot), attempt to answer (the attempt's insert, the
# HTTP request), percentiles in ms.
breakdown() {
  case "${NEXUS_DATABASE_URL:-}" in postgres*) command -v psql >/dev/null || return 0 ;; *) return 0 ;; esac
  psql "$NEXUS_DATABASE_URL" -q -v ep="$1" <<'SQL'
with d as (
  select extract(epoch from (dl.created_at - e.occurred_at)) * 1000 as to_dispatch,
         extract(epoch from (a.created_at - dl.created_at)) * 1000 as to_attempt,
         extract(epoch from (dl.succeeded_at - a.created_at)) * 1000 as to_answer
  from webhook_deliveries dl join events e on e.id = dl.event_id
  join webhook_attempts a on a.delivery_id = dl.id and a.attempt = 1
  where dl.endpoint_id = :'ep'),
s(n, step, ms) as (select 1, 'event to delivery', to_dispatch from d union all
  select 2, 'delivery to attempt', to_attempt from d union all select 3, 'attempt to answer', to_answer from d)
select step, round(percentile_cont(0.5) within group (order by ms)::numeric, 1) as p50,
  round(percentile_cont(0.9) within group (order by ms)::numeric, 1) as p90,
  round(percentile_cont(0.99) within group (order by ms)::numeric, 1) as p99
from s group by n, step order by n;
SQL
}

phase() {
  local name=$1 events=$2 per_second=$3 rport=$4 settle=${5:-0}
  echo "== $name"
  bench/baseline/target/release/receiver "$rport" "$events" "$settle" > "$data/receiver-$rport.out" &
  receiver=$!
  sleep 0.5
  local endpoint
  endpoint=$(curl -sf -X POST "$base/api/v1/webhooks" -H "Authorization: Bearer $token" -H 'content-type: application/json' \
    -d "{\"url\":\"http://127.0.0.1:$rport/hook\",\"event_types\":[\"user.role_assigned\",\"user.role_removed\"]}" | json '["data"]["id"]') || true
  fire "$events" "${per_second/backlog/0}"
  fired=$(( fired + events / 8 ))
  if [ "$per_second" = backlog ]; then
    # Committed with no worker running: the restarted server drains them.
    kill $server; wait $server 2>/dev/null || true
    start true
  fi
  wait $receiver
  grep -v ready "$data/receiver-$rport.out"
  breakdown "$endpoint"
  curl -sf -X DELETE "$base/api/v1/webhooks/$endpoint" -H "Authorization: Bearer $token" >/dev/null
}
if [ "$backlog" -gt 0 ]; then
  phase "backlog: $backlog events committed with no worker running, then delivered (latency counts the wait)" "$backlog" backlog 18400
fi
phase "burst: $burst events as fast as the API takes them" "$burst" 0 18401
phase "steady: $steady events at $rate/s" "$steady" "$rate" 18402 2
echo "== server memory"
grep -E 'VmHWM|VmRSS' "/proc/$server/status"
