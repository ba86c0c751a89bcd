"""Shared helpers for the SIP test tools: G.711, tone analysis, WAV files.

Why: the SIP connector's end-to-end tests need to send a known tone over RTP and to
check which tones (and RFC 4733 digits) come back, on any machine with a plain
python3 (stdlib only, no numpy), so everything here is small and pure Python.

Levels are in dBov as ITU-T G.100.1 defines it: 0 dBov is the RMS of a full-scale
square wave, so a full-scale sine (peak 32767) is -3 dBov.
"""
import cmath
import math
import struct
import wave  # for writing only

# ---- G.711 (the classic Sun/CCITT reference algorithms, 16-bit linear in and out) ----


_ULAW_SEG_END = (0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF, 0x1FFF)


def ulaw_encode(s):
    pcm = max(-32768, min(32767, int(s))) >> 2
    if pcm < 0:
        pcm, mask = -pcm, 0x7F
    else:
        mask = 0xFF
    pcm = min(pcm, 8159) + 0x21
    seg = next((i for i, end in enumerate(_ULAW_SEG_END) if pcm <= end), 8)
    if seg >= 8:
        return 0x7F ^ mask
    return ((seg << 4) | (pcm >> (seg + 1)) & 0x0F) ^ mask


def ulaw_decode(u):
    u = ~u & 0xFF
    t = (((u & 0x0F) << 3) + 0x84) << ((u & 0x70) >> 4)
    return 0x84 - t if u & 0x80 else t - 0x84


_ALAW_SEG_END = (0x1F, 0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF)


def alaw_encode(s):
    pcm = max(-32768, min(32767, int(s))) >> 3
    if pcm >= 0:
        mask = 0xD5
    else:
        mask, pcm = 0x55, -pcm - 1
    seg = next((i for i, end in enumerate(_ALAW_SEG_END) if pcm <= end), 8)
    if seg >= 8:
        return 0x7F ^ mask
    return ((seg << 4) | ((pcm >> 1) if seg < 2 else (pcm >> seg)) & 0x0F) ^ mask


def alaw_decode(a):
    a ^= 0x55
    t, seg = (a & 0x0F) << 4, (a & 0x70) >> 4
    t = t + 8 if seg == 0 else (t + 0x108) << max(seg - 1, 0)
    return t if a & 0x80 else -t


ULAW_TABLE = [ulaw_decode(i) for i in range(256)]
ALAW_TABLE = [alaw_decode(i) for i in range(256)]
G711 = {0: ("pcmu", ulaw_encode, ULAW_TABLE), 8: ("pcma", alaw_encode, ALAW_TABLE)}


def g711_decode(pt, payload):
    table = G711[pt][2]
    return [table[b] for b in payload]


# ---- Tones ----


def amplitude_for_dbov(dbov):
    """Peak amplitude of a sine whose level is `dbov` (0 dBov = full-scale square wave RMS)."""
    return 32768.0 * math.sqrt(2.0) * 10.0 ** (dbov / 20.0)


def sine(freq, seconds, rate=8000, dbov=-12.0):
    amp = min(amplitude_for_dbov(dbov), 32767.0)
    return [amp * math.sin(2 * math.pi * freq * n / rate) for n in range(int(seconds * rate))]


# ---- Tone analysis ----
# The analysis runs on ONE window: by default the loudest 1 s of the signal (RMS over
# 1 s windows stepped by 0.25 s), so that a tone present for only part of a capture
# (a participant joining late, a call put on hold) is still measured at full strength;
# `window="all"` averages the power spectra of consecutive 1 s blocks over the whole
# signal instead (Welch-style). Each block is Hann-windowed and zero-padded into an FFT.
# A tone's power is the power within +-5 Hz of its frequency (wider for blocks under
# 0.6 s). The floor is the median, over 100 Hz bands from 100 Hz to
# min(3900 Hz, rate/2), of each band's power scaled to that same width, so a few tones
# cannot raise it, and a noise-free synthetic tone's distortion products (a line
# spectrum, not noise) still count as floor; it never goes below a -100 dBov sine.
# Reported per frequency: dB above that floor, and the level in dBov.
# (A Goertzel filter per frequency would do for the tones, but the floor needs the
# whole spectrum, and an FFT in pure Python takes ~50 ms for 1 s at 8 kHz.)


def fft(a):
    """In-place iterative radix-2 FFT of a list of complex numbers (length a power of 2)."""
    n, j = len(a), 0
    for i in range(1, n):
        bit = n >> 1
        while j & bit:
            j, bit = j ^ bit, bit >> 1
        j |= bit
        if i < j:
            a[i], a[j] = a[j], a[i]
    size = 2
    while size <= n:
        half = size // 2
        tw = [cmath.exp(-2j * math.pi * k / size) for k in range(half)]
        for start in range(0, n, size):
            for k in range(half):
                u, v = a[start + k], a[start + k + half] * tw[k]
                a[start + k], a[start + k + half] = u + v, u - v
        size *= 2
    return a


def _blocks(samples, rate, window):
    n = rate  # 1 s blocks
    if len(samples) <= n:
        return [samples], "whole signal (%.2f s, shorter than 1 s)" % (len(samples) / rate)
    if window == "all":
        return [samples[i:i + n] for i in range(0, len(samples) - n + 1, n)], "all 1 s blocks, spectra averaged"
    prefix = [0.0]
    for x in samples:
        prefix.append(prefix[-1] + x * x)
    step = rate // 4
    start = max(range(0, len(samples) - n + 1, step), key=lambda i: prefix[i + n] - prefix[i])
    return [samples[start:start + n]], "loudest 1 s window, starting at %.2f s" % (start / rate)


def analyse(samples, rate, freqs, window="loudest"):
    """Returns a dict: rms_dbov, analysis_window, floor_dbov, tones {freq: {above_floor_db, level_dbov}}."""
    blocks, how = _blocks(samples, rate, window)
    n = max(len(blocks[0]), 2)
    size = 1 << (n - 1).bit_length()
    weights = [0.5 - 0.5 * math.cos(2 * math.pi * i / n) for i in range(n)]
    spectrum = [0.0] * (size // 2)
    for block in blocks:
        x = fft([complex(s * w) for s, w in zip(block, weights)] + [0j] * (size - len(block)))
        for k in range(size // 2):
            spectrum[k] += abs(x[k]) ** 2 / len(blocks)
    hz = rate / size  # per bin
    half_width = max(5.0, 3.0 * rate / n)  # Hz; the Hann main lobe is +-2 bins of rate/n
    width_bins = 2 * int(half_width / hz) + 1

    def band(lo, hi):
        return sum(spectrum[max(int(lo / hz), 0):min(int(hi / hz), size // 2)])

    # Parseval: a sine of peak A puts N * A^2/4 * sum(w^2) into the positive half.
    norm = size * sum(w * w for w in weights)

    def dbov(power):
        amp = math.sqrt(4.0 * max(power, 0.0) / norm)
        return round(20 * math.log10(max(amp / math.sqrt(2) / 32768.0, 1e-10)), 1)

    edges = range(100, int(min(3900, rate / 2)) - 99, 100)
    bands = sorted(band(lo, lo + 100) * width_bins / (100 / hz) for lo in edges)
    least = norm * amplitude_for_dbov(-100.0) ** 2 / 4.0
    floor = max(bands[len(bands) // 2] if bands else 0.0, least)
    tones = {}
    for f in freqs:
        k = int(round(f / hz))
        power = sum(spectrum[max(k - width_bins // 2, 0):k + width_bins // 2 + 1])
        tones[str(f)] = {"above_floor_db": round(10 * math.log10(max(power, least) / floor), 1),
                         "level_dbov": dbov(power)}
    total = sum(x * x for x in samples) / max(len(samples), 1)
    rms = round(20 * math.log10(max(math.sqrt(total) / 32768.0, 1e-10)), 1)
    return {"rms_dbov": rms, "analysis_window": how, "floor_dbov": dbov(floor), "tones": tones}


# ---- Files ----


def write_wav(path, samples, rate=8000):
    with wave.open(path, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(b"".join(struct.pack("<h", max(-32768, min(32767, int(x)))) for x in samples))


def read_wav(path):
    """16-bit PCM WAV (plain or WAVE_FORMAT_EXTENSIBLE) -> (first channel's samples, rate).

    Parsed by hand: Python 3.11's wave module rejects the extensible format (sox writes
    it for stereo), and a writer killed early may leave a data size of 0.
    """
    data = open(path, "rb").read()
    if data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        raise ValueError("%s is not a WAV file" % path)
    off, fmt = 12, None
    while off + 8 <= len(data):
        cid, size = data[off:off + 4], struct.unpack("<I", data[off + 4:off + 8])[0]
        body = data[off + 8:off + 8 + size] if size else data[off + 8:]
        if cid == b"fmt ":
            fmt = struct.unpack("<HHIIHH", body[:16])
        elif cid == b"data":
            if fmt is None or fmt[0] not in (1, 0xFFFE) or fmt[5] != 16:
                raise ValueError("%s: only 16-bit PCM WAV is supported" % path)
            ch = fmt[1]
            samples = struct.unpack("<%dh" % (len(body) // 2), body[: len(body) // 2 * 2])
            return list(samples[::ch]), fmt[2]
        off += 8 + size + (size & 1)
    raise ValueError("%s has no data chunk" % path)


def parse_freqs(text):
    return [int(f) for f in text.split(",") if f.strip()] if text else []


DTMF_NAMES = "0123456789*#ABCD"


def event_name(code):
    return DTMF_NAMES[code] if code < len(DTMF_NAMES) else "event%d" % code
