#!/usr/bin/env bash
# Follow throughput of a node's log through `tether edge` and `tether hub` (README "Logs"):
# one follow, then 50 at once, of a file of real log text read from its beginning through the
# hub's logs endpoint, with curl; prints lines/s, MiB/s and the compression ratio on the tunnel
# (the file's octets over the LOGS DATA octets the hub received); then how long a line appended
# to the file takes to reach a following consumer (100 lines, one every 100 ms).
#
#   Benchmarks/logs-follow.sh [MiB]      (default 64; T=path/to/tether to use another build)
set -euo pipefail
size_mib=${1:-64}
T=${T:-$(swift build -c release --show-bin-path)/tether}
[ -x "$T" ] || swift build -c release --product tether >&2
dir=$(mktemp -d)
pids=()
cleanup() { for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done; rm -rf "$dir"; }
trap cleanup EXIT
cd "$dir"

# Real log text: this machine's package and system logs, repeated to the size asked (each copy is
# longer than deflate's 32 KiB window, so the repetition does not flatter the ratio).
cat /var/log/dpkg.log /var/log/apt/history.log /var/log/alternatives.log 2>/dev/null > sample.log || true
[ -s sample.log ] || journalctl --no-pager -n 20000 > sample.log
while [ "$(stat -c %s node.log 2>/dev/null || echo 0)" -lt $((size_mib << 20)) ]; do cat sample.log >> node.log; done
lines=$(wc -l < node.log)
octets=$(stat -c %s node.log)

port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
hub_port=$(port)
admin_port=$(port)
token=$(openssl rand -hex 24)
"$T" certs --out "$dir" --hub-ip 127.0.0.1 --edge acme/node-1 > /dev/null
cat > policy.yaml <<YAML
version: 1
fromPlane:
  - {service: node-logs, class: [logs], opaque: true}
YAML
cat > hub.yaml <<YAML
role: hub
listen: 127.0.0.1:$hub_port
tls: {certificate: hub.pem, key: hub.key, ca: ca.pem}
admin: {listen: 127.0.0.1:$admin_port, operators: [{id: bench, sha256: $(printf %s "$token" | sha256sum | cut -c1-64)}]}
log: {level: warning}
YAML
cat > edge.yaml <<YAML
role: edge
hubs: [127.0.0.1:$hub_port]
tls: {certificate: edge-acme-node-1.pem, key: edge-acme-node-1.key, ca: ca.pem}
policy: policy.yaml
logs:
  - {name: node-logs, path: $dir/node.log}
log: {level: warning}
YAML
"$T" hub --config hub.yaml > hub.out 2> hub.err & pids+=($!)
"$T" edge --config edge.yaml > edge.out 2> edge.err & pids+=($!)
admin() { curl -sf -H "Authorization: Bearer $token" "http://127.0.0.1:$admin_port$1"; }
for _ in $(seq 100); do admin /v1/agents 2>/dev/null | grep -q node-1 && break; sleep 0.1; done
logs_in() { admin /metrics | awk '/^tether_stream_octets_total\{/ && /class="logs"/ && /direction="in"/ { print $2 }'; }

follow() {
  curl -sf -H "Authorization: Bearer $token" -o "follow-$1.ndjson" "http://127.0.0.1:$admin_port/v1/agents/acme/node-1/logs/node-logs"
}
seconds() { python3 -c "import sys; print(f'{float(sys.argv[2]) - float(sys.argv[1]):.3f}')" "$@"; }

echo "log: $lines lines, $((octets >> 20)) MiB of real log text ($(wc -c < sample.log) octets repeated)"
start=$(date +%s.%N); follow 0; end=$(date +%s.%N)
took=$(seconds "$start" "$end")
received=$(python3 -c 'import json,sys; print(sum(len(json.loads(l).get("lines", [])) for l in open(sys.argv[1])))' follow-0.ndjson)
[ "$received" -eq "$lines" ] || { echo "one follow received $received lines of $lines" >&2; exit 1; }
sleep 6  # the hub's traffic counters are published every 5 seconds
wire=$(logs_in)
python3 - "$lines" "$octets" "$took" "$wire" <<'PY'
import sys
lines, octets, took, wire = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4])
print(f"1 follow:   {lines / took:12,.0f} lines/s  {octets / took / 2**20:8.1f} MiB/s  ({took:.2f} s)")
print(f"compression on the tunnel: {octets / wire:.2f}x ({octets:,} octets of log in {wire:,.0f} LOGS DATA octets)")
PY

start=$(date +%s.%N)
for n in $(seq 1 50); do follow "$n" & done
wait $(jobs -p | grep -v -e "${pids[0]}" -e "${pids[1]}") 2>/dev/null || true
end=$(date +%s.%N)
took=$(seconds "$start" "$end")
for n in $(seq 1 50); do
  got=$(python3 -c 'import json,sys; print(sum(len(json.loads(l).get("lines", [])) for l in open(sys.argv[1])))' "follow-$n.ndjson")
  [ "$got" -eq "$lines" ] || { echo "follow $n received $got lines of $lines" >&2; exit 1; }
done
python3 - "$lines" "$octets" "$took" <<'PY'
import sys
lines, octets, took = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
print(f"50 follows: {50 * lines / took:12,.0f} lines/s  {50 * octets / took / 2**20:8.1f} MiB/s  ({took:.2f} s, all 50 complete)")
PY

# Latency: a consumer follows the end of the file; each appended line carries its write time.
python3 - "$admin_port" "$token" "$dir/node.log" <<'PY'
import json, subprocess, sys, threading, time
port, token, path = sys.argv[1], sys.argv[2], sys.argv[3]
cursor = None
with open("follow-0.ndjson") as answer:
    for line in answer:
        cursor = json.loads(line)["cursor"]
url = f"http://127.0.0.1:{port}/v1/agents/acme/node-1/logs/node-logs?follow=true&cursor={cursor}"
curl = subprocess.Popen(["curl", "-sN", "-H", f"Authorization: Bearer {token}", url], stdout=subprocess.PIPE, text=True)
delays = []
def read():
    for line in curl.stdout:
        for entry in json.loads(line).get("lines", []):
            if entry.startswith("latency "):
                delays.append(time.time() - float(entry.split()[1]))
reader = threading.Thread(target=read, daemon=True)
reader.start()
time.sleep(1)
with open(path, "a", buffering=1) as log:
    for _ in range(100):
        log.write(f"latency {time.time():.6f}\n")
        time.sleep(0.1)
time.sleep(1)
curl.terminate()
delays.sort()
if len(delays) != 100:
    sys.exit(f"latency: {len(delays)} of 100 lines arrived")
print(f"line latency (append to consumer, 100 lines): p50 {delays[49] * 1000:.0f} ms, p99 {delays[98] * 1000:.0f} ms, max {delays[99] * 1000:.0f} ms")
PY
