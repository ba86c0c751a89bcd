#!/usr/bin/env python3
"""SIP calls per core: how many phone calls one server core carries, and call set-up time.

Why: the SIP connector's cost is per call (SIP, two RTP legs, G.711 <-> Opus at 8 kHz both
ways, SRTP, the channel's mixer); this ramps concurrent calls on a server pinned to one core
until that core is full or the calls' audio falls behind, as the issue's benchmark asks.

Run inside a private network namespace (scripts/sip_bench.sh does that):
  sip_bench.py BINARY [--steps 25,50,100,...] [--server-core 0] [--sipp-core 1]

Each step: a fresh all-in-one (`--workers 1 --mcu-workers 1`, pinned to --server-core), the
load generator (`switchyard loadtest peers`, pinned to --sipp-core) holding one browserless
MCU participant in each of channels bench1..benchN, sending an Opus tone and receiving the mix,
and SIPp (tests/sip/uac_bench.xml, pinned to --sipp-core) holding N calls, call k into channel
benchk, each playing a G.711 tone (50 packets/s in) and receiving the mix (50 packets/s out):
the caller hears the participant and the participant hears the caller (--peers silent: the
participant sends silence; --peers none: no participant, the phone alone in its channel).
Once all N are up, the server's CPU and the packets it sends to the phones are measured over
--window seconds. A step holds while every call is up, the phones get at least 97% of their
50 packets/s, and the server used under 95% of its core. Set-up time is INVITE to 200 OK
(SIPp's response time), its median and p99 over the step's calls. One JSON line per step.
"""
import argparse
import csv
import glob
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TICKS = os.sysconf("SC_CLK_TCK")


def metrics():
    text = urllib.request.urlopen("http://127.0.0.1:8080/metrics", timeout=5).read().decode()
    out = {}
    for line in text.splitlines():
        if line.startswith("switchyard_") and " " in line:
            name, value = line.rsplit(" ", 1)
            try:
                out[name] = float(value)
            except ValueError:
                pass
    return out


def cpu_seconds(pid):
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def step(binary, n, args, work):
    data = tempfile.mkdtemp(dir=work)
    env = dict(os.environ, SIP__RTPTIMEOUT="120", SIP__CALLSPERSECOND="1000", RUST_LOG="warn")
    server = subprocess.Popen(
        ["taskset", "-c", str(args.server_core), binary, "all-in-one", "--data-dir", data,
         "--workers", "1", "--mcu-workers", "1"],
        stdout=subprocess.DEVNULL, stderr=open(os.path.join(data, "server.log"), "w"), env=env)
    try:
        for _ in range(100):
            try:
                metrics()
                break
            except OSError:
                time.sleep(0.1)
        peers = None
        if args.peers != "none":
            talking = ["--talking"] if args.peers == "talking" else []
            peers = subprocess.Popen(
                [binary, "loadtest", "peers", "--url", "http://127.0.0.1:8080", "--data-dir", data,
                 "--prefix", "bench", "--count", str(n), *talking,
                 "--generator-core", str(args.sipp_core)],
                stdout=subprocess.PIPE, stderr=open(os.path.join(data, "peers.log"), "w"), text=True)
            line = peers.stdout.readline().strip()
            if line != "peers: all receiving":
                raise SystemExit(f"{n} participants: {line or 'the load generator ended'} (see {data}/peers.log)")
        rate = 20
        hold_ms = int((n / rate + args.window + 15) * 1000)
        sipp_dir = tempfile.mkdtemp(dir=work)
        sipp = subprocess.Popen(
            ["taskset", "-c", str(args.sipp_core), "sipp", "-sf",
             os.path.join(REPO, "tests/sip/uac_bench.xml"), "127.0.0.1:5060",
             "-i", "127.0.0.1", "-p", "5070", "-mi", "127.0.0.1", "-mp", "6000",
             "-s", "bench", "-key", "pcap", args.pcap, "-d", str(hold_ms),
             "-r", str(rate), "-l", str(n), "-m", str(n), "-aa", "-nostdin",
             "-trace_rtt", "-rtt_freq", "1", "-timeout", str(hold_ms // 1000 + 60), "-timeout_error"],
            cwd=sipp_dir, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + n / rate + 30
        active = 0
        while time.time() < deadline:
            active = metrics().get("switchyard_sip_calls_active", 0)
            if active >= n:
                break
            time.sleep(0.5)
        time.sleep(2)
        m0, c0, t0 = metrics(), cpu_seconds(server.pid), time.time()
        time.sleep(args.window)
        m1, c1, t1 = metrics(), cpu_seconds(server.pid), time.time()
        sipp.wait()
        if peers:
            peers.terminate()
            peers.wait()
        rtts = []
        for path in glob.glob(os.path.join(sipp_dir, "*_rtt.csv")):
            with open(path) as f:
                for row in csv.reader(f, delimiter=";"):
                    try:
                        rtts.append(float(row[1]))
                    except (IndexError, ValueError):
                        pass
        rtts.sort()
        elapsed = t1 - t0
        cores = (c1 - c0) / elapsed
        sent = m1.get("switchyard_sip_packets_to_phones_total", 0) - m0.get(
            "switchyard_sip_packets_to_phones_total", 0)
        pps = sent / elapsed / max(n, 1)
        result = {
            "calls": n,
            "calls_up": int(m1.get("switchyard_sip_calls_active", 0)),
            "server_cores": round(cores, 3),
            "cpu_percent_per_call": round(100 * cores / max(n, 1), 3),
            "packets_per_second_per_phone": round(pps, 1),
            "setup_ms_median": round(rtts[len(rtts) // 2], 1) if rtts else None,
            "setup_ms_p99": round(rtts[min(len(rtts) - 1, int(len(rtts) * 0.99))], 1) if rtts else None,
            "sipp_exit": sipp.returncode,
        }
        result["held"] = (result["calls_up"] >= n and pps >= 50 * 0.97 and cores < 0.95)
        return result
    finally:
        server.terminate()
        server.wait()


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("binary")
    p.add_argument("--steps", default="25,50,100,150,200,300")
    p.add_argument("--window", type=float, default=10.0)
    p.add_argument("--server-core", type=int, default=0)
    p.add_argument("--sipp-core", type=int, default=1)
    p.add_argument("--peers", choices=["talking", "silent", "none"], default="talking",
                   help="the participant in each call's channel: sending a tone, silence, or none")
    args = p.parse_args()
    work = tempfile.mkdtemp(prefix="sip-bench-")
    args.pcap = os.path.join(work, "tone.pcap")
    subprocess.run([sys.executable, os.path.join(REPO, "tests/sip/rtp_tone.py"), "--codec", "pcmu",
                    "--freq", "1000", "--seconds", "60", "--level-dbov", "-20", "-o", args.pcap],
                   check=True, stdout=subprocess.DEVNULL)
    best = None
    for n in (int(s) for s in args.steps.split(",")):
        r = step(args.binary, n, args, work)
        print(json.dumps(r), flush=True)
        if not r["held"]:
            break
        best = r
    print(json.dumps({"calls_per_core": best["calls"] if best else 0,
                      "cpu_percent_per_call": best["cpu_percent_per_call"] if best else None,
                      "setup_ms_p99": best["setup_ms_p99"] if best else None}), flush=True)


if __name__ == "__main__":
    main()
