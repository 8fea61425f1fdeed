#!/usr/bin/env python3
"""A webhook receiver for bench/webhooks.sh: answers 204 at once and, for
every delivery, records how long after the event occurred it arrived (the
body's `timestamp`). Prints throughput and latency percentiles when it has
seen the expected count, then exits.

Usage: receiver.py PORT EXPECTED
"""
import json, sys, threading, time
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

port, expected = int(sys.argv[1]), int(sys.argv[2])
lock = threading.Lock()
latencies, arrivals, seen = [], [], set()
done = threading.Event()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("content-length", 0)))
        now = time.time()
        self.send_response(204)
        self.send_header("content-length", "0")
        self.end_headers()
        event = json.loads(body)
        occurred = datetime.fromisoformat(event["timestamp"].replace("Z", "+00:00")).timestamp()
        with lock:
            if self.headers["webhook-id"] in seen:
                return  # at-least-once: count each message once
            seen.add(self.headers["webhook-id"])
            latencies.append((now - occurred) * 1000)
            arrivals.append(now)
            if len(seen) >= expected:
                done.set()

    def log_message(self, *args):
        pass


server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
threading.Thread(target=server.serve_forever, daemon=True).start()
print("ready", flush=True)
if not done.wait(timeout=600):
    print(f"timed out with {len(seen)} of {expected}", flush=True)
    sys.exit(1)
lat = sorted(latencies)
pct = lambda p: lat[min(len(lat) - 1, int(len(lat) * p / 100))]
span = arrivals[-1] - min(arrivals)
print(f"deliveries: {len(lat)}  first-to-last: {span:.2f} s  rate: {len(lat) / span if span else 0:.0f}/s")
print(f"event-to-delivery latency ms: p50 {pct(50):.1f}  p90 {pct(90):.1f}  p99 {pct(99):.1f}  max {lat[-1]:.1f}")
