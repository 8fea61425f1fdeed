#!/usr/bin/env bash
# Load test of the request path with wrk from a second process.
# Usage: bench/load.sh [duration=10s] [connections=32]
# Env: NEXUS_DATABASE_URL / NEXUS_REDIS_URL to measure on PostgreSQL / Redis.
# Needs: wrk (apt-get install wrk), curl, python3. Builds the release binary.
set -euo pipefail
cd "$(dirname "$0")/.."
duration=${1:-10s}
connections=${2:-32}
port=18399
base="http://127.0.0.1:$port"
data=$(mktemp -d)

cargo build --release --quiet
NEXUS_BIND=127.0.0.1:$port NEXUS_DATA_DIR="$data" RUST_LOG=warn ./target/release/nexus serve >"$data/server.log" 2>&1 &
server=$!
trap 'kill $server 2>/dev/null; rm -rf "$data"' EXIT
for _ in $(seq 1 50); do curl -sf "$base/health" >/dev/null && break; sleep 0.1; done

slug="bench-$RANDOM$RANDOM"
token=$(curl -sf -X POST "$base/api/v1/auth/register" -H 'content-type: application/json' \
  -d "{\"tenant_name\":\"Bench\",\"tenant_slug\":\"$slug\",\"name\":\"Bench\",\"email\":\"bench@example.com\",\"password\":\"correct horse 42\"}" \
  | python3 -c 'import json,sys; print(json.load(sys.stdin)["data"]["token"]["token"])')
json() { python3 -c "import json,sys; print(json.load(sys.stdin)$1)"; }
# Measure the request path, not the rate limiter: put the tenant on the
# enterprise tier (unlimited) with a key signed by the development key.
tenant_id=$(curl -sf "$base/api/v1/license" -H "Authorization: Bearer $token" | json '["data"]["tenant_id"]')
license_key=$(NEXUS_LICENSE_SIGNING_KEY=oPNF7XY9c6XmzMWnRJrPSPerqnlS3kMt1iNZZ7Aw5Dk= ./target/release/nexus license sign --tenant "$tenant_id" --tier enterprise)
curl -sf -o /dev/null -X POST "$base/api/v1/license/key" -H "Authorization: Bearer $token" -H 'content-type: application/json' \
  -d "{\"key\":\"$license_key\"}"
for i in $(seq 1 24); do
  curl -sf -o /dev/null -X POST "$base/api/v1/users" -H "Authorization: Bearer $token" -H 'content-type: application/json' \
    -d "{\"name\":\"User $i\",\"email\":\"user$i@example.com\",\"password\":\"correct horse 42\"}"
done

run() {
  local name=$1; shift
  echo "== $name"
  wrk -t2 -c"$connections" -d"$duration" --latency "$@" | grep -E 'Requests/sec|^ +(50|90|99)%|Non-2xx|Socket errors'
}
run "GET /health (no auth: request context only)" "$base/health"
run "GET /api/v1/auth/me (token verify + token/user/roles lookups)" -H "Authorization: Bearer $token" "$base/api/v1/auth/me"
run "GET /api/v1/users?limit=25&sort=-created_at (auth + RBAC + page + roles)" -H "Authorization: Bearer $token" "$base/api/v1/users?limit=25&sort=-created_at"
echo "== server memory"
grep -E 'VmHWM|VmRSS' "/proc/$server/status"
