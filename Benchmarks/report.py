#!/usr/bin/env python3
"""The performance report (README "Performance") from one run's JSON.

    Benchmarks/report.py RUN_DIR OUT_DIR [--readme README.md]

RUN_DIR holds what Benchmarks/report.sh wrote: loopback.jsonl and wan.jsonl (`tether bench
--json`, one object per row), compression.jsonl, policy.jsonl, fleet.json and machine.json.
Writes OUT_DIR/report.md (the table), OUT_DIR/throughput.svg and OUT_DIR/command-rtt.svg
(gnuplot), with their data files; with --readme, replaces the README's table between its
`<!-- performance:begin -->` and `<!-- performance:end -->` markers with this run's.
Python's standard library and gnuplot only.
"""
import json
import os
import subprocess
import sys


def rows(path):
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [json.loads(line) for line in f if line.startswith("{")]


def one(rows, **match):
    found = [r for r in rows if all(r.get(k) == v for k, v in match.items())]
    return found[0] if found else None


def verdict(value, aim, at_least=True):
    if value is None:
        return "not measured"
    return "met" if (value >= aim if at_least else value <= aim) else "**not met**"


def mib(row):
    return f"{row['mib_per_s']:.0f} MiB/s" if row else "—"


def ratio(a, b):
    return a / b if a and b else None


def fmt_ratio(value):
    return f"{value:.2f}×" if value is not None else "—"


def table(run):
    loop = rows(os.path.join(run, "loopback.jsonl"))
    wan = rows(os.path.join(run, "wan.jsonl"))
    compression = rows(os.path.join(run, "compression.jsonl"))
    policy = one(rows(os.path.join(run, "policy.jsonl")), bench="policy")
    fleet_rows = rows(os.path.join(run, "fleet.json"))
    fleet = fleet_rows[0] if fleet_rows else None
    lines = ["| figure | Tether | against | ratio | aim | |", "|---|---|---|---|---|---|"]

    def add(figure, tether, against="—", value=None, aim="—", met=""):
        lines.append(f"| {figure} | {tether} | {against} | {fmt_ratio(value)} | {aim} | {met} |")

    raw_tcp, raw_tls = one(loop, scenario="raw-tcp"), one(loop, scenario="raw-tls")
    add("raw TCP, 1 connection (baseline)", mib(raw_tcp))
    add("raw TLS 1.3 through our TLS handler (baseline)", mib(raw_tls), "raw TCP", ratio(raw_tls and raw_tls["mib_per_s"], raw_tcp and raw_tcp["mib_per_s"]))
    for row in [r for r in loop if r["scenario"] == "tunnel-tls"]:
        add(f"tunnel, {row['streams']} BULK stream(s), 1 connection", mib(row), "raw TLS", row.get("ratio_to_baseline"))
    for row in [r for r in loop if r["scenario"] == "relays-processes"]:
        count = row["streams"]
        ssh = one(loop, scenario="peer-ssh-L", streams=count)
        stunnel = one(loop, scenario="peer-stunnel", streams=count)
        vs_ssh = ratio(row["mib_per_s"], ssh and ssh["mib_per_s"])
        aim, met = ("≥ 1.3× ssh -L", verdict(vs_ssh, 1.3)) if count == 64 else ("—", "")
        add(f"relay path (edge → hub processes), {count} connection(s)", mib(row), f"`ssh -L`, {count} channel(s): {mib(ssh)}", vs_ssh, aim, met)
        if stunnel:
            vs_stunnel = ratio(row["mib_per_s"], stunnel["mib_per_s"])
            aim, met = ("≥ 1.0× stunnel", verdict(vs_stunnel, 1.0)) if count == 1 else ("—", "")
            add(f"relay path, {count} connection(s)", mib(row), f"stunnel, {count} TLS connection(s): {mib(stunnel)}", vs_stunnel, aim, met)
    for name in ["stream-opens-on-loop", "stream-opens"]:
        row = one(loop, scenario=name)
        if row:
            add(f"stream opens/s, 1 connection (`{name}`)", f"{row['opens_per_s']:,.0f}", "", None, "≥ 50,000", verdict(row["opens_per_s"], 50_000))
    idle = one(loop, scenario="idle-streams")
    if idle:
        add(f"memory per idle stream ({idle['streams']:,} on 1 connection)", f"{idle['server_bytes_per_stream']:.0f} B far end, {idle['client_bytes_per_stream']:.0f} B opener")
    rtt_idle = one(loop, scenario="command-rtt-idle-tls")
    rtt_bulk = one(loop, scenario="command-rtt-under-bulk-tls")
    if rtt_idle:
        add("command round trip, idle (64 octets)", f"p50 {rtt_idle['p50_us']:.0f} µs, p99 {rtt_idle['p99_us']:.0f} µs")
    if rtt_bulk:
        add("command round trip, 4 BULK streams saturating", f"p50 {rtt_bulk['p50_us']:.0f} µs, p99 {rtt_bulk['p99_us']:.0f} µs",
            f"bulk alone {rtt_bulk['bulk_alone_mib_per_s']:.0f} MiB/s, with commands {rtt_bulk['mib_per_s']:.0f}")
    tuned, fixed, wan_raw = one(wan, scenario="wan-tunnel-autotuned"), one(wan, scenario="wan-tunnel-fixed-256KiB"), one(wan, scenario=f"wan-raw-tls")
    if tuned:
        add(f"WAN {tuned['link']}: 1 stream, windows auto-tuned", mib(tuned), f"raw TLS {mib(wan_raw)}", tuned.get("ratio_to_baseline"))
    if fixed:
        add(f"WAN {fixed['link']}: 1 stream, window fixed at 256 KiB", mib(fixed), f"raw TLS {mib(wan_raw)}", fixed.get("ratio_to_baseline"))
    bound = one(wan, scenario="wan-command-rtt-under-bulk")
    if bound:
        add(f"WAN {bound['link']}: command p99 under bulk", f"{bound['p99_us'] / 1000:.1f} ms (idle {bound['idle_p99_us'] / 1000:.1f} ms)",
            f"allowed {bound['p99_budget_us'] / 1000:.1f} ms", None, "≤ idle p99 + queue + 2 ms", verdict(bound["p99_us"], bound["p99_budget_us"], at_least=False))
    for row in [r for r in compression if r.get("bench") == "compression"]:
        add(f"log compression, level {row['level']}, framed as LOGS", f"{row['framed_mb_per_s']:.0f} MB/s, ratio {row['framed_ratio']:.2f}",
            f"one-shot zlib {row['one_shot_mb_per_s']:.0f} MB/s, ratio {row['one_shot_ratio']:.2f}", ratio(row["framed_mb_per_s"], row["one_shot_mb_per_s"]))
    if policy:
        add("metadata filter, 14-pattern allowlist (1 core)", f"{policy['allowlist_mb_per_s']:.0f} MB/s",
            f"Foundation JSON parse {policy['foundation_parse_mb_per_s']:.0f} MB/s", ratio(policy["allowlist_mb_per_s"], policy["foundation_parse_mb_per_s"]))
    if fleet:
        n = fleet["edges"]
        add(f"fleet: hub memory per idle edge ({n:,} edges)", f"{fleet['hub_kib_per_edge']:.1f} KiB", "", None, "≤ 24 KiB", verdict(fleet["hub_kib_per_edge"], 24, at_least=False))
        add("fleet: mutual-TLS handshakes/s while connecting", f"{fleet['handshakes_per_second']:.0f} (peak {fleet['handshakes_per_second_peak']:.0f})", "", None, "≥ 2,500", verdict(fleet["handshakes_per_second"], 2_500))
        add(f"fleet: hub CPU while {n:,} edges idle", f"{fleet['hub_idle_cpu_percent']:.1f} % of a core", "", None, "< 1 %", verdict(fleet["hub_idle_cpu_percent"], 1, at_least=False))
        back = fleet.get("storm_seconds_to_all_back")
        if back is not None or fleet.get("storm_edges_not_back") is not None:
            add("fleet: hub killed and restarted, all edges back", f"{back:.0f} s" if back is not None else f"{fleet['storm_edges_not_back']} not back",
                "", None, "≤ 60 s", verdict(back, 60, at_least=False) if back is not None else "**not met**")
            p99, before = fleet.get("storm_ping_p99_us"), fleet.get("ping_p99_us_before")
            storm_ratio = ratio(p99, before)
            add("fleet: command p99 on edges back, during the storm", f"{p99 / 1000:.1f} ms" if p99 else "—", f"before the kill {before / 1000:.1f} ms" if before else "—",
                storm_ratio, "≤ 2×", verdict(storm_ratio, 2, at_least=False))
    return "\n".join(lines)


def plots(run, out):
    loop = rows(os.path.join(run, "loopback.jsonl"))
    series = ["tunnel-tls", "relays-processes", "peer-ssh-L", "peer-stunnel"]
    with open(os.path.join(out, "throughput.dat"), "w") as f:
        f.write("# streams " + " ".join(series) + "  (MiB/s; - where not run)\n")
        for count in sorted({r["streams"] for r in loop if r["scenario"] in series}):
            values = [one(loop, scenario=s, streams=count) for s in series]
            f.write(f"{count} " + " ".join(f"{v['mib_per_s']:.1f}" if v else "-" for v in values) + "\n")
    raw_tcp, raw_tls = one(loop, scenario="raw-tcp"), one(loop, scenario="raw-tls")
    with open(os.path.join(out, "command-rtt.dat"), "w") as f:
        for name in ["command-rtt-idle-tls", "command-rtt-under-bulk-tls"]:
            row = one(loop, scenario=name)
            f.write(f"# {name}: percent µs\n")
            for percent, micros in (row or {}).get("quantiles_us", []):
                f.write(f"{percent} {micros}\n")
            f.write("\n\n")
    script = f"""
set terminal svg size 720,520 font 'DejaVu Sans,12' background rgb 'white'
set datafile missing '-'
set output '{out}/throughput.svg'
set title 'Throughput over loopback, one run (2 shared cores)'
set logscale x 2
set xlabel 'streams (tunnel) / connections (relay path and peers)'
set ylabel 'MiB/s'
set yrange [0:*]
set key below
set grid
plot '{out}/throughput.dat' using 1:2 with linespoints lw 2 lc rgb '#1f77b4' title 'tunnel (1 TLS connection)', \\
     '' using 1:3 with linespoints lw 3 lc rgb '#d62728' title 'relay path: edge → hub processes', \\
     '' using 1:4 with linespoints lw 2 lc rgb '#2ca02c' title 'ssh -L (1 SSH connection)', \\
     '' using 1:5 with linespoints lw 2 lc rgb '#ff7f0e' title 'stunnel (TLS per connection)', \\
     {raw_tls['mib_per_s'] if raw_tls else 0} with lines dt 2 lw 2 lc rgb '#555555' title 'raw TLS, 1 connection', \\
     {raw_tcp['mib_per_s'] if raw_tcp else 0} with lines dt 3 lw 2 lc rgb '#000000' title 'raw TCP, 1 connection'
set output '{out}/command-rtt.svg'
set title '64-octet command round trip over loopback (distribution)'
unset logscale
set logscale x 10
set xlabel 'round trip (µs)'
set ylabel 'percent of commands at or below'
set yrange [0:100]
set xrange [*:*]
plot '{out}/command-rtt.dat' index 0 using 2:1 with lines lw 2 lc rgb '#1f77b4' title 'idle', \\
     '' index 1 using 2:1 with lines lw 2 lc rgb '#d62728' title 'while 4 BULK streams saturate'
"""
    subprocess.run(["gnuplot"], input=script, text=True, check=True)


def main():
    args = sys.argv[1:]
    readme = None
    if "--readme" in args:
        index = args.index("--readme")
        readme = args[index + 1]
        del args[index:index + 2]
    if len(args) != 2:
        sys.exit(__doc__)
    run, out = args
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(run, "machine.json")) as f:
        machine = json.load(f)
    heading = (f"One run of `Benchmarks/report.sh` on {machine['date']} at commit {machine['commit']}: "
               f"{machine['cpus']} CPUs ({machine['cpu']}), {machine['memory']}, Linux {machine['kernel']}, "
               f"{machine['openssl']}, {machine['ssh']}, {machine['stunnel']}. Both ends on this machine, over loopback.")
    report = heading + "\n\n" + table(run) + "\n"
    with open(os.path.join(out, "report.md"), "w") as f:
        f.write(report)
    plots(run, out)
    if readme:
        with open(readme) as f:
            text = f.read()
        begin, end = "<!-- performance:begin -->", "<!-- performance:end -->"
        if begin not in text or end not in text:
            sys.exit(f"{readme}: no {begin} … {end} markers")
        head, rest = text.split(begin, 1)
        _, tail = rest.split(end, 1)
        with open(readme, "w") as f:
            f.write(head + begin + "\n" + report + end + tail)
    print(report)


if __name__ == "__main__":
    main()
