#!/usr/bin/env python3
"""Capture the RTP sent to one UDP port on loopback and report what it carried, as JSON.

Why: in the SIP connector's tests the port belongs to SIPp (its [media_port]), so
this tool cannot bind it; it sniffs `lo` with an AF_PACKET raw socket instead (needs
root, or CAP_NET_RAW, e.g. root inside `unshare -n`). It reports packets, payload
types, SSRCs, sequence gaps, the tones in G.711 audio (PT 0/8) and RFC 4733 digits.

  rtp_capture.py --port 6000 --seconds 5 [--wait-first 10] [--src-port N]
                 [--freqs 440,1000] [--dtmf-pt 101] [--pcm-out rx.wav] [--window loudest|all]
  rtp_capture.py --pcap-in tone.pcap --freqs 440      (analyse a pcap file instead)
  rtp_capture.py --self-test                          (offline check of the analysis; exit 0 = OK)

Capture starts when "listening" is printed on stderr; it lasts --seconds from the
first matching packet, or ends after --wait-first seconds if none comes (then
"packets" is 0). The exit status is 0 whenever the capture ran; judge the JSON.
Tone levels: see siptools.analyse (an FFT of the loudest 1 s window by default;
--window all averages every 1 s block).

JSON: packets, payload_types {"0": count}, ssrcs ["0x..."], first_packet_s (after
start), duration_s (first to last packet), lost (all streams), streams [{ssrc,
packets, expected, lost, duplicates, gaps [[seq before the gap, packets missing]]}],
audio (null without PT 0/8) {codecs, seconds, rms_dbov, analysis_window, floor_dbov,
tones {"440": {above_floor_db, level_dbov}}}, telephone_events ["1", "#"] (each event
once) and dtmf (the same as one string).
"""
import argparse
import json
import select
import socket
import struct
import sys
import time

import siptools

ETH_P_ALL, PACKET_OUTGOING = 0x0003, 4


def parse_frame(data, port, src_port=None):
    """Ethernet/IPv4/UDP frame -> RTP bytes if it goes to `port` (and from `src_port`)."""
    if len(data) < 42 or data[12:14] != b"\x08\x00" or data[23] != 17:
        return None
    if struct.unpack("!H", data[20:22])[0] & 0x3FFF:  # a fragment
        return None
    ihl = (data[14] & 0x0F) * 4
    sport, dport, length = struct.unpack("!HHH", data[14 + ihl:20 + ihl])
    if dport != port or (src_port is not None and sport != src_port):
        return None
    rtp = data[22 + ihl:14 + ihl + length]
    return rtp if len(rtp) >= 12 and rtp[0] >> 6 == 2 else None


def capture_live(args):
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
    sock.bind((args.iface, 0))
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    print("rtp_capture: listening on %s for UDP to port %d" % (args.iface, args.port), file=sys.stderr, flush=True)
    packets, start = [], time.monotonic()
    deadline = start + args.wait_first
    while True:
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([sock], [], [], left)[0]:
            break
        data, addr = sock.recvfrom(65535)
        if addr[2] == PACKET_OUTGOING:  # lo shows each packet twice: going out and coming in
            continue
        rtp = parse_frame(data, args.port, args.src_port)
        if rtp is None:
            continue
        now = time.monotonic()
        if not packets:
            deadline = now + args.seconds
        packets.append((now - start, rtp))
    return packets


def read_pcap(path, port=None):
    """(time, rtp) of the UDP packets of an Ethernet pcap (all ports unless `port`)."""
    data = open(path, "rb").read()
    if struct.unpack("<I", data[:4])[0] != 0xA1B2C3D4 or struct.unpack("<I", data[20:24])[0] != 1:
        sys.exit("%s: only little-endian classic pcap with Ethernet framing is supported" % path)
    out, off = [], 24
    while off + 16 <= len(data):
        sec, usec, incl, _ = struct.unpack("<IIII", data[off:off + 16])
        frame = data[off + 16:off + 16 + incl]
        off += 16 + incl
        dport = struct.unpack("!H", frame[36:38])[0] if len(frame) >= 38 else None
        rtp = parse_frame(frame, port if port is not None else dport)
        if rtp is not None:
            out.append((sec + usec / 1e6, rtp))
    return [(t - out[0][0], rtp) for t, rtp in out]


def report(packets, freqs, dtmf_pt=101, pcm_out=None, window="loudest"):
    res = {"packets": len(packets), "payload_types": {}, "ssrcs": [], "first_packet_s": None,
           "duration_s": 0.0, "streams": [], "audio": None, "telephone_events": [], "dtmf": ""}
    if not packets:
        return res
    res["first_packet_s"] = round(packets[0][0], 3)
    res["duration_s"] = round(packets[-1][0] - packets[0][0], 3)
    seqs, seen, audio, codecs, events = {}, set(), [], set(), set()
    for _, rtp in packets:
        pt, seq, ts, ssrc = rtp[1] & 0x7F, *struct.unpack("!HII", rtp[2:12])
        res["payload_types"][str(pt)] = res["payload_types"].get(str(pt), 0) + 1
        ext = seqs.setdefault(ssrc, [])
        ext.append(seq if not ext else ext[-1] + ((seq - ext[-1] + 32768) & 0xFFFF) - 32768)
        if (ssrc, ext[-1]) in seen:
            continue  # a duplicate
        seen.add((ssrc, ext[-1]))
        header = 12 + 4 * (rtp[0] & 0x0F)
        if rtp[0] & 0x10 and len(rtp) >= header + 4:  # header extension
            header += 4 + 4 * struct.unpack("!H", rtp[header + 2:header + 4])[0]
        payload = rtp[header:len(rtp) - (rtp[-1] if rtp[0] & 0x20 else 0)]
        if pt in siptools.G711:
            codecs.add(siptools.G711[pt][0])
            audio.extend(siptools.g711_decode(pt, payload))
        elif pt == dtmf_pt and len(payload) >= 4 and (ssrc, ts, payload[0]) not in events:
            events.add((ssrc, ts, payload[0]))  # one event = one (SSRC, timestamp, code)
            res["telephone_events"].append(siptools.event_name(payload[0]))
    res["dtmf"] = "".join(res["telephone_events"])
    for ssrc, ext in seqs.items():
        uniq = sorted(set(ext))
        gaps = [[a & 0xFFFF, b - a - 1] for a, b in zip(uniq, uniq[1:]) if b - a > 1]
        res["ssrcs"].append("0x%08x" % ssrc)
        res["streams"].append({"ssrc": "0x%08x" % ssrc, "packets": len(ext),
                               "expected": uniq[-1] - uniq[0] + 1, "lost": uniq[-1] - uniq[0] + 1 - len(uniq),
                               "duplicates": len(ext) - len(uniq), "gaps": gaps[:20]})
    res["lost"] = sum(s["lost"] for s in res["streams"])
    if audio:
        res["audio"] = {"codecs": sorted(codecs), "seconds": round(len(audio) / 8000, 3),
                        **siptools.analyse(audio, 8000, freqs, window)}
        if pcm_out:
            siptools.write_wav(pcm_out, audio, 8000)
    return res


def self_test():
    """Builds a 1004 Hz PCMA tone and the digits 1 5 9 # in memory (sequence numbers
    wrapping past 65535, one packet lost) and checks the report."""
    import rtp_tone
    ok = siptools.ulaw_encode(0) == 0xFF and siptools.alaw_encode(0) == 0xD5
    opts = argparse.Namespace(codec="pcma", freq=1004.0, seconds=3.0, ptime=20, level_dbov=-12.0,
                              dtmf="159#", dtmf_pt=101)
    dtmf = [(3.0 + t, rtp) for t, rtp in rtp_tone.dtmf_packets(opts, 0x1234, 65650, 24000)]
    pkts = rtp_tone.tone_packets(opts, 0x1234, 65500, 0) + dtmf
    frames = [parse_frame(rtp_tone.frame(rtp, i), rtp_tone.DST_PORT) for i, (_, rtp) in enumerate(pkts)]
    frames = [(t, r) for (t, _), r in zip(pkts, frames) if r is not None]
    del frames[10]  # one lost packet
    res = report(frames, [440, 1004])
    tones = res["audio"]["tones"]
    ok = ok and res["packets"] == len(pkts) - 1 and res["lost"] == 1 and res["dtmf"] == "159#"
    ok = ok and tones["1004"]["above_floor_db"] > 30 and tones["440"]["above_floor_db"] < 10
    ok = ok and abs(tones["1004"]["level_dbov"] + 12) < 1.0
    res["self_test"] = "ok" if ok else "FAILED"
    return res, ok


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--port", type=int, help="UDP destination port to capture")
    p.add_argument("--src-port", type=int, help="only packets from this UDP source port")
    p.add_argument("--seconds", type=float, default=5.0, help="capture length after the first packet")
    p.add_argument("--wait-first", type=float, default=10.0, help="give up if no packet comes in this time")
    p.add_argument("--iface", default="lo")
    p.add_argument("--freqs", default="", help="comma-separated frequencies (Hz) to measure")
    p.add_argument("--dtmf-pt", type=int, default=101)
    p.add_argument("--window", choices=["loudest", "all"], default="loudest")
    p.add_argument("--pcm-out", metavar="WAV", help="save the decoded G.711 audio (8 kHz mono)")
    p.add_argument("--pcap-in", metavar="PCAP", help="read packets from a pcap file instead of lo")
    p.add_argument("--self-test", action="store_true")
    args = p.parse_args()
    if args.self_test:
        res, ok = self_test()
        print(json.dumps(res, indent=1))
        sys.exit(0 if ok else 1)
    if args.pcap_in:
        packets = read_pcap(args.pcap_in, args.port)
    elif args.port is None:
        p.error("--port is required")
    else:
        packets = capture_live(args)
    print(json.dumps(report(packets, siptools.parse_freqs(args.freqs), args.dtmf_pt, args.pcm_out, args.window), indent=1))


if __name__ == "__main__":
    main()
