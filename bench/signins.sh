#!/usr/bin/env bash
# Memory and CPU under a burst of sign-ins: the server's resident memory
# idle (7 s after start), then wrk signing in to one account with the
# right password, every answer counted by status, and the peak after.
# With THROTTLE=off the sign-in throttle is lifted for the run, so every
# request hashes the password: what bounds the burst is then the hashing
# slots (one per core, 503 after 5 s waiting), not the 429s.
# Usage: bench/signins.sh [duration=10s] [connections=64]
# Env: NEXUS_DATABASE_URL / NEXUS_REDIS_URL to measure on PostgreSQL / Redis.
# Needs: wrk, curl. Builds the release binary.
set -euo pipefail
cd "$(dirname "$0")/.."
duration=${1:-10s}
connections=${2:-64}
port=18396
base="http://127.0.0.1:$port"
data=$(mktemp -d)

cargo build --release --quiet
if [ "${THROTTLE:-on}" = off ]; then
  export NEXUS_AUTH__ATTEMPTS_PER_MINUTE_PER_ADDRESS=100000000 NEXUS_AUTH__ATTEMPTS_PER_MINUTE_PER_ACCOUNT=100000000
fi
NEXUS_BIND=127.0.0.1:$port NEXUS_DATA_DIR="$data" RUST_LOG=warn ./target/release/nexus serve >"$data/server.log" 2>&1 &
server=$!
trap 'kill $server 2>/dev/null; rm -rf "$data"' EXIT
for _ in $(seq 1 50); do curl -sf "$base/health" >/dev/null && break; sleep 0.1; done
sleep 7
echo "idle, 7 s after start: $(grep VmRSS /proc/$server/status)"

slug="bench-$RANDOM$RANDOM"
curl -sf -o /dev/null -X POST "$base/api/v1/auth/register" -H 'content-type: application/json' \
  -d "{\"tenant_name\":\"Bench\",\"tenant_slug\":\"$slug\",\"name\":\"Bench\",\"email\":\"bench@example.com\",\"password\":\"correct horse 42\"}"
echo "== POST /api/v1/auth/login, $connections connections, $duration (throttle ${THROTTLE:-on})"
SLUG=$slug wrk -t1 -c"$connections" -d"$duration" --latency -s bench/signin.lua "$base/api/v1/auth/login" \
  | grep -E '^ +(50|99)%|Requests/sec|^status'
echo "== server memory"
grep -E 'VmHWM|VmRSS' "/proc/$server/status"
