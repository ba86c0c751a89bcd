#!/usr/bin/env python3
"""Turns the outputs of scripts/bench.sh into tables in docs/benchmarks.md and a JSON file.

Usage: bench_report.py OUT_DIR BENCHMARKS_MD BENCHMARKS_JSON

Only the part of BENCHMARKS_MD between the bench:begin and bench:end markers is replaced; the
prose around it stays.
"""
import datetime
import glob
import json
import os
import platform
import subprocess
import sys

BEGIN = "<!-- bench:begin (written by scripts/bench.sh; edit outside these markers) -->"
END = "<!-- bench:end -->"


def last_json(path):
    try:
        with open(path) as f:
            lines = [l for l in f.read().splitlines() if l.strip().startswith("{")]
        return json.loads(lines[-1]) if lines else None
    except (OSError, ValueError):
        return None


def sh(cmd):
    try:
        return subprocess.run(cmd, shell=True, capture_output=True, text=True).stdout.strip()
    except OSError:
        return ""


def machine():
    model = sh("lscpu | sed -n 's/^Model name: *//p'") or platform.processor()
    return {
        "cpu": model,
        "cores": os.cpu_count(),
        "kernel": platform.release(),
        "rustc": sh("rustc --version"),
        "janus": sh("dpkg-query -W -f '${Version}' janus 2>/dev/null"),
        "date": datetime.date.today().isoformat(),
    }


def criterion(root="target/criterion"):
    rows = []
    for est in sorted(glob.glob(f"{root}/**/new/estimates.json", recursive=True)):
        d = os.path.dirname(est)
        try:
            with open(est) as f:
                median = json.load(f)["median"]["point_estimate"]
            with open(os.path.join(d, "benchmark.json")) as f:
                bench = json.load(f)
        except (OSError, ValueError, KeyError):
            continue
        per = None
        thr = bench.get("throughput") or {}
        if "Elements" in thr and thr["Elements"]:
            per = median / thr["Elements"]
        rows.append({"id": bench.get("full_id", d), "median_ns": median, "per_element_ns": per})
    return rows


def verdict(run):
    """The verdict the run printed (its JSON's "valid"), never one judged again here: rules
    copied into this script drifted from the run's (SRTP authentication failures were left
    out). "-" for a report from a generator that gave no verdict."""
    valid = run.get("valid")
    if valid is None:
        return "-"
    return "yes" if valid else "no"


def ns(v):
    if v is None:
        return "-"
    if v >= 1000:
        return f"{v / 1000:.2f} µs"
    return f"{v:.0f} ns"


def f2(v, unit=""):
    return "-" if v is None else f"{v:.2f}{unit}"


def main():
    out, md_path, json_path = sys.argv[1:4]
    caps = {n: last_json(os.path.join(out, f"capacity-{n}.json")) for n in ("uring", "mmsg")}
    scale = {w: last_json(os.path.join(out, f"capacity-scale-{w}.json")) for w in (1, 2, 4, 8)}
    scale = {w: c for w, c in scale.items() if c}
    runs = {n: last_json(os.path.join(out, f"run-{n}.json")) for n in ("livestream", "meeting", "audio-room")}
    crit = criterion()
    m = machine()
    janus = (caps.get("mmsg") or {}).get("janus")

    lines = [BEGIN, ""]
    lines.append(f"Machine: {m['cpu']}, {m['cores']} cores, Linux {m['kernel']}, {m['rustc']}"
                 + (f", Janus {m['janus']}" if m['janus'] else "") + f". Run on {m['date']}.")
    lines.append("")
    lines.append("Command: `scripts/bench.sh` (everything below, in one run).")
    lines.append("")
    lines.append("### Capacity per core (`switchyard loadtest capacity`)")
    lines.append("")
    lines.append("One 720p VP8 (~1.5 Mbps, 30 fps) + Opus publisher; subscribers added 50 at a time on a "
                 "server pinned to core 0, generator on the other core; a step holds while loss ≤ 1% and "
                 "latency p99 ≤ 50 ms.")
    lines.append("")
    lines.append("| server | backend | subscribers per core | forwarded packets/s per core | µs CPU per forwarded packet | loss | p99 latency | stopped because | generator saturated |")
    lines.append("|---|---|---|---|---|---|---|---|---|")
    rows = [("Switchyard", caps.get("mmsg")), ("Switchyard", caps.get("uring")), ("Janus", janus)]
    for name, c in rows:
        if not c:
            continue
        lines.append(
            f"| {name} | {c.get('io_backend') or '-'} | {c['subscribers_per_core']} | "
            f"{c['forwarded_pps_per_core']:.0f} | {f2(c.get('cpu_us_per_forwarded_packet'))} | "
            f"{c['loss'] * 100:.2f}% | {f2(c.get('p99_latency_ms'), ' ms')} | {c['stopped_because']} | "
            f"{'yes' if c['generator_saturated'] else 'no'} |")
    lines.append("")
    if janus and caps.get("mmsg"):
        r = caps["mmsg"].get("ratios") or {}
        lines.append(f"Switchyard/Janus, same run: {f2(r.get('cpu_per_packet'))}x less CPU per forwarded packet "
                     f"(both at {r.get('at_subscribers')} subscribers), {f2(r.get('subscribers'))}x the subscribers per core"
                     + (" (Janus held no step: a lower bound)" if janus['subscribers_per_core'] == 0 else "") + ".")
        lines.append("")
    for name, c in (("Switchyard, recvmmsg/sendmmsg", caps.get("mmsg")), ("Switchyard, io_uring", caps.get("uring")), ("Janus", janus)):
        if not c:
            continue
        lines.append(f"Ramp, {name}:")
        lines.append("")
        lines.append("| subscribers | forwarded pps | loss | p99 | server CPU | µs/packet | generator net thread CPU |")
        lines.append("|---|---|---|---|---|---|---|")
        for s in c["steps"]:
            lines.append(f"| {s['subscribers']} | {s['forwarded_pps']:.0f} | {s['loss'] * 100:.2f}% | "
                         f"{f2(s.get('p99_latency_ms'), ' ms')} | {f2(s.get('server_cpu_cores'))} | "
                         f"{f2(s.get('cpu_us_per_forwarded_packet'))} | {s['generator_net_cpu']:.2f} |")
        lines.append("")

    if scale:
        lines.append("### One channel over 1 to 8 workers (`capacity --server-workers W --generator-threads W`)")
        lines.append("")
        lines.append("The same ramp, 50 × W subscribers per step; the server's W workers on cores 0 to W-1, "
                     "the generator's W net threads on the last W cores.")
        lines.append("")
        lines.append("| workers | subscribers | × one worker | per core | µs CPU per forwarded packet | p99 latency | stopped because |")
        lines.append("|---|---|---|---|---|---|---|")
        one = (scale.get(1) or {}).get("subscribers") or 0
        for w, c in scale.items():
            held = c.get("subscribers") or 0
            lines.append(
                f"| {w} | {held} | {f2(held / one if one else None, 'x')} | {c.get('subscribers_per_core')} | "
                f"{f2(c.get('cpu_us_per_forwarded_packet'))} | {f2(c.get('p99_latency_ms'), ' ms')} | "
                f"{c['stopped_because']} |")
        lines.append("")

    lines.append("### Scenarios (`switchyard loadtest run`)")
    lines.append("")
    lines.append("| scenario | backend | publishers | subscribers | transports | packets/s in | loss | jitter | latency p50 / p99 | join p50 / p99 | server CPU | µs/packet | valid |")
    lines.append("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    invalid = []
    for name, r in runs.items():
        if not r:
            continue
        valid = verdict(r)
        if valid == "no":
            invalid.append(f"- {name}: " + "; ".join(x["message"] for x in r["invalid_because"]) + ".")
        lines.append(
            f"| {name} | {r.get('io_backend') or '-'} | {r['publishers']} | {r['subscribers']} | {r['transports']} | "
            f"{r['packets_in_per_s']:.0f} | {r['loss'] * 100:.2f}% | {r['jitter_ms']:.2f} ms | "
            f"{f2(r.get('latency_p50_ms'))} / {f2(r.get('latency_p99_ms'), ' ms')} | "
            f"{f2(r.get('join_p50_ms'))} / {f2(r.get('join_p99_ms'), ' ms')} | {f2(r.get('server_cpu_cores'))} | "
            f"{f2(r.get('cpu_us_per_forwarded_packet'))} | {valid} |")
    lines.append("")
    if invalid:
        lines.append("Invalid runs, as each run judged itself:")
        lines.append("")
        lines.extend(invalid)
        lines.append("")

    if crit:
        lines.append("### Micro-benchmarks (criterion, `cargo bench -p switchyard-benches`)")
        lines.append("")
        lines.append("| benchmark | median | per element |")
        lines.append("|---|---|---|")
        for c in crit:
            lines.append(f"| {c['id']} | {ns(c['median_ns'])} | {ns(c['per_element_ns'])} |")
        lines.append("")
    lines.append(END)
    block = "\n".join(lines)

    try:
        with open(md_path) as f:
            md = f.read()
    except OSError:
        md = "# Benchmarks\n\n"
    if BEGIN in md and END in md:
        md = md[: md.index(BEGIN)] + block + md[md.index(END) + len(END):]
    else:
        md = md.rstrip() + "\n\n## Latest run\n\n" + block + "\n"
    with open(md_path, "w") as f:
        f.write(md)
    with open(json_path, "w") as f:
        json.dump({"machine": m, "capacity": caps, "scaling": scale, "scenarios": runs, "criterion": crit}, f, indent=1)
        f.write("\n")


if __name__ == "__main__":
    main()
