#!/usr/bin/env bash
# The performance report (README "Performance"): every figure of the README's table from one
# run on this machine, the pictures made from the same run's JSON.
#
#   Benchmarks/report.sh [--readme] [OUT]     (OUT: docs/performance)
#
# Runs, in order (≈ 15 minutes on 2 cores): `tether bench` over loopback with `ssh -L` and
# stunnel beside the relays (Benchmarks/peers.sh), the WAN rows, log compression, the metadata
# filter, and the fleet (TETHER_REPORT_EDGES edges, 10,000 by default, which needs root for the
# descriptor limit; 0 leaves the fleet out). --readme also writes the table into README.md. Needs openssh-server, stunnel4 and gnuplot-nox (apt-get install).
set -euo pipefail
cd "$(dirname "$0")/.."
readme=()
if [ "${1:-}" = "--readme" ]; then readme=(--readme README.md); shift; fi
out=${1:-docs/performance}
edges=${TETHER_REPORT_EDGES:-10000}
for tool in gnuplot python3 stunnel4 /usr/sbin/sshd; do
    command -v "$tool" >/dev/null || { echo "$0: $tool is missing (apt-get install gnuplot-nox openssh-server stunnel4)" >&2; exit 2; }
done

swift build -c release --product tether
tether=.build/release/tether
run=$(mktemp -d /tmp/tether-report.XXXXXX)
echo "raw output: $run" >&2

python3 - "$run/machine.json" <<PY
import json, subprocess, sys, os
def out(*command):
    result = subprocess.run(command, capture_output=True, text=True)
    return (result.stdout + result.stderr).strip().splitlines()[0]  # ssh -V writes to stderr
cpu = next(l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name"))
memory = int(next(l.split()[1] for l in open("/proc/meminfo") if l.startswith("MemTotal"))) / 1048576
changed = subprocess.run(["git", "diff", "--quiet", "HEAD", "--", "Sources", "Package.swift"]).returncode != 0
commit = out("git", "rev-parse", "--short", "HEAD") + (" with local changes" if changed else "")
json.dump({"date": out("date", "-u", "+%Y-%m-%d"), "commit": commit, "cpus": os.cpu_count(), "cpu": cpu,
           "memory": f"{memory:.0f} GiB", "kernel": os.uname().release, "openssl": " ".join(out("openssl", "version").split()[:2]),
           "ssh": out("ssh", "-V").split(",")[0], "stunnel": next(" ".join(l.split()[:2]) for l in subprocess.run(["stunnel4", "-version"], capture_output=True, text=True).stderr.splitlines() if l.startswith("stunnel "))},
          open(sys.argv[1], "w"))
PY

echo "1/5 loopback: tunnel, relays, ssh -L, stunnel, latency" >&2
Benchmarks/peers.sh "$tether" bench --json --streams 1,8,64 --bytes 1G > "$run/loopback.jsonl"
echo "2/5 WAN rows" >&2
"$tether" bench --json --link-rtt 50ms --link-rate 500mbit --seconds 10 > "$run/wan.jsonl"
echo "3/5 compression" >&2
"$tether" bench compression --json > "$run/compression.jsonl"
echo "4/5 metadata filter" >&2
"$tether" bench policy --json > "$run/policy.jsonl"
if [ "$edges" -gt 0 ]; then
    echo "5/5 fleet of $edges edges" >&2
    "$tether" bench fleet --json --edges "$edges" > "$run/fleet.json"
fi

python3 Benchmarks/report.py "$run" "$out" "${readme[@]}"
