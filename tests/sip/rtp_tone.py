#!/usr/bin/env python3
"""Write a pcap of G.711 RTP packets carrying a sine tone (or RFC 4733 digits), for SIPp.

Why: SIPp sends media only by replaying a pcap (`<exec play_pcap_audio="[pcap]"/>`),
and the SIP connector's tests need a known tone at a known level (and, for DTMF, all
sixteen events in one continuous stream) to detect in the channel's mix.

The pcap is classic libpcap, link type Ethernet, one IPv4/UDP/RTP packet per frame,
like /usr/share/sip-tester/g711a.pcap. SIPp keeps the RTP header (SSRC, sequence
numbers, timestamps) and the pcap's timing, and rewrites only the addresses and ports.

  rtp_tone.py --codec pcmu --freq 440 --seconds 5 -o tone.pcap
  rtp_tone.py --codec pcma --freq 1000 --seconds 3 --after tone.pcap -o more.pcap
      (continues tone.pcap's SSRC, sequence numbers and timestamps: a second play
       in the same call, as uac_hold.xml does, looks like one stream)
  rtp_tone.py --dtmf '0123456789*#' -o digits.pcap   (PT --dtmf-pt, default 101)
"""
import argparse
import struct
import sys

from siptools import G711, sine

SRC_PORT, DST_PORT = 5000, 6000  # SIPp replaces both (it keeps only their difference)


def ip_checksum(header):
    total = sum(struct.unpack("!10H", header))
    total = (total & 0xFFFF) + (total >> 16)
    return ~((total & 0xFFFF) + (total >> 16)) & 0xFFFF


def frame(rtp, ident):
    udp = struct.pack("!HHHH", SRC_PORT, DST_PORT, 8 + len(rtp), 0) + rtp  # 0: no checksum
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), ident & 0xFFFF, 0x4000, 64, 17, 0,
                     bytes([127, 0, 0, 1]), bytes([127, 0, 0, 1]))
    ip = ip[:10] + struct.pack("!H", ip_checksum(ip)) + ip[12:]
    eth = bytes(6) + bytes(6) + b"\x08\x00"
    return eth + ip + udp


def rtp_packet(pt, marker, seq, ts, ssrc, payload):
    return struct.pack("!BBHII", 0x80, (0x80 if marker else 0) | pt, seq & 0xFFFF, ts & 0xFFFFFFFF, ssrc) + payload


def write_pcap(path, packets):
    """packets: list of (time in seconds from start, rtp bytes)."""
    start = 1_700_000_000
    with open(path, "wb") as f:
        f.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1))  # 1 = Ethernet
        for i, (t, rtp) in enumerate(packets):
            data = frame(rtp, i)
            usec = int(round(t * 1e6))
            f.write(struct.pack("<IIII", start + usec // 1_000_000, usec % 1_000_000, len(data), len(data)))
            f.write(data)


def last_rtp_state(path):
    """(ssrc, next seq, next timestamp) after the last RTP packet of a pcap we wrote."""
    data = open(path, "rb").read()
    off, last = 24, None
    while off + 16 <= len(data):
        sec, usec, incl, _ = struct.unpack("<IIII", data[off:off + 16])
        last = (sec + usec / 1e6, data[off + 16 + 42:off + 16 + incl])
        off += 16 + incl
    if last is None:
        sys.exit("%s has no packets" % path)
    _, rtp = last
    _, _, seq, ts, ssrc = struct.unpack("!BBHII", rtp[:12])
    return ssrc, seq + 1, ts + len(rtp) - 12


def tone_packets(args, ssrc, seq, ts):
    pt = {"pcmu": 0, "pcma": 8}[args.codec]
    encode = G711[pt][1]
    per = 8 * args.ptime  # samples per packet at 8 kHz
    samples = sine(args.freq, args.seconds, 8000, args.level_dbov)
    packets = []
    for i in range(len(samples) // per):
        payload = bytes(encode(x) for x in samples[i * per:(i + 1) * per])
        packets.append((i * args.ptime / 1000, rtp_packet(pt, i == 0, seq + i, ts + i * per, ssrc, payload)))
    return packets


def dtmf_packets(args, ssrc, seq, ts):
    """Each digit: 200 ms of event packets every 20 ms, 3 end packets, then 200 ms of nothing."""
    packets, t = [], 0.0
    for digit in args.dtmf:
        code = "0123456789*#ABCD".index(digit.upper())
        for i in range(10):  # duration 160, 320, ..., 1600 (8 kHz clock)
            body = struct.pack("!BBH", code, 10, (i + 1) * 160)
            packets.append((t + i * 0.02, rtp_packet(args.dtmf_pt, i == 0, seq, ts, ssrc, body)))
            seq += 1
        for _ in range(3):  # the end packet, sent three times with one sequence number each
            body = struct.pack("!BBH", code, 0x80 | 10, 1600)
            packets.append((t + 0.2, rtp_packet(args.dtmf_pt, False, seq, ts, ssrc, body)))
            seq += 1
        t += 0.4
        ts += 3200
    return packets


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--codec", choices=["pcmu", "pcma"], default="pcmu")
    p.add_argument("--freq", type=float, default=440.0)
    p.add_argument("--seconds", type=float, default=5.0)
    p.add_argument("--ptime", type=int, default=20, help="milliseconds per packet")
    p.add_argument("--level-dbov", type=float, default=-12.0, help="0 dBov = full-scale square wave")
    p.add_argument("--ssrc", type=lambda s: int(s, 0), default=0x5157A1D0)
    p.add_argument("--seq", type=int, default=1000, help="first sequence number")
    p.add_argument("--ts", type=int, default=0, help="first RTP timestamp")
    p.add_argument("--after", metavar="PCAP", help="continue SSRC/seq/timestamp of this pcap")
    p.add_argument("--dtmf", metavar="DIGITS", help="write RFC 4733 events instead of a tone")
    p.add_argument("--dtmf-pt", type=int, default=101)
    p.add_argument("-o", "--output", required=True)
    args = p.parse_args()
    ssrc, seq, ts = args.ssrc, args.seq, args.ts
    if args.after:
        ssrc, seq, ts = last_rtp_state(args.after)
        ts += 8000  # as if a second passed: receivers see a new talkspurt, not a time warp
    packets = dtmf_packets(args, ssrc, seq, ts) if args.dtmf else tone_packets(args, ssrc, seq, ts)
    write_pcap(args.output, packets)
    print("%s: %d packets, %.2f s" % (args.output, len(packets), packets[-1][0] if packets else 0), file=sys.stderr)


if __name__ == "__main__":
    main()
