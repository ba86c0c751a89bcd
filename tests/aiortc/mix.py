"""aiortc participants of an MCU mix: each joins with POST /mix/CHANNEL (a sendrecv offer),
sends a solid colour and a sine of its own, and checks what the mixer sends back: every
participant's colour somewhere in the composite picture, the others' tones in the audio and
its own tone absent (mix-minus).

usage: mix.py BASE CHANNEL TOKEN [TOKEN ...] [--seconds N] [--codec VP8|H264] [--publishers K]
              [--mute FROM:TO]

One TOKEN per participant. With --publishers K the first K publish over WHIP instead (SFU
publishers in the same channel, sendonly), and only the others, the MCU participants, check.
With --viewer TOKEN one more client plays the mix over POST /whep/CHANNEL/mix (receive only)
and checks every colour and every tone. With --mute FROM:TO every tone is silence from FROM to TO
seconds after its first frame (a muted microphone: the frames go on, silent). Prints a final JSON line: {"ok": .., "participants": [{"colours":
[seen per participant], "tones_db": [level of each participant's tone above the floor], ...}]}.
"""

import argparse
import array
import asyncio
import fractions
import json
import math
import time

import aioice.ice

# aioice leaves 127.0.0.1 out of host candidates; the tests run where loopback is all there is.
aioice.ice.get_host_addresses = lambda use_ipv4, use_ipv6: ["127.0.0.1"]

import av  # noqa: E402
from aiortc import RTCPeerConnection, RTCRtpSender, RTCSessionDescription  # noqa: E402
from aiortc.mediastreams import AudioStreamTrack, MediaStreamError, VideoStreamTrack  # noqa: E402
from whip_whep import header, http  # noqa: E402  (the same HTTP as the WHIP/WHEP client)

WIDTH, HEIGHT = 320, 180
RATE = 48000
# Saturated colours far apart in YUV, and tones none of which is a harmonic of another.
COLOURS = [(255, 0, 0), (0, 200, 0), (0, 0, 255), (255, 255, 0)]
TONES = [440.0, 620.0, 810.0, 1070.0]
# Where there is no tone (30 Hz or more from each): the noise floor is their median.
FLOOR = [f for f in range(300, 1500, 45) if all(abs(f - t) >= 30 for t in TONES)]


def yuv(rgb):
    r, g, b = rgb
    return (
        round(16 + 0.257 * r + 0.504 * g + 0.098 * b),
        round(128 - 0.148 * r - 0.291 * g + 0.439 * b),
        round(128 + 0.439 * r - 0.368 * g - 0.071 * b),
    )


class Colour(VideoStreamTrack):
    def __init__(self, rgb):
        super().__init__()
        self.y, self.u, self.v = yuv(rgb)

    async def recv(self):
        pts, time_base = await self.next_timestamp()
        frame = av.VideoFrame(width=WIDTH, height=HEIGHT, format="yuv420p")
        for plane, value in zip(frame.planes, (self.y, self.u, self.v)):
            plane.update(bytes([value]) * plane.buffer_size)
        frame.pts, frame.time_base = pts, time_base
        return frame


class Sine(AudioStreamTrack):
    """20 ms frames of a tone at 48 kHz, paced in real time (AudioStreamTrack's own frames are
    8 kHz silence)."""

    def __init__(self, freq, mute=None):
        super().__init__()
        # (from, to) in samples: silence there.
        self.mute = None if mute is None else (int(mute[0] * RATE), int(mute[1] * RATE))
        # One second of the tone, made once: every tone here has a whole number of periods in
        # a second, so the frames are slices of it (cheap, for a slow machine's real time).
        second = array.array("h", (int(8000 * math.sin(2 * math.pi * freq * i / RATE)) for i in range(RATE)))
        self.second = second.tobytes()
        self.n = 0
        self.start = None

    async def recv(self):
        if self.start is None:
            self.start = time.time()
        else:
            wait = self.start + self.n / RATE - time.time()
            if wait > 0:
                await asyncio.sleep(wait)
        samples = 960
        at = 2 * (self.n % RATE)
        frame = av.AudioFrame(format="s16", layout="mono", samples=samples)
        if self.mute and self.mute[0] <= self.n < self.mute[1]:
            frame.planes[0].update(bytes(2 * samples))
        else:
            frame.planes[0].update(self.second[at : at + 2 * samples])
        frame.sample_rate = RATE
        frame.pts, frame.time_base = self.n, fractions.Fraction(1, RATE)
        self.n += samples
        return frame


def goertzel_db(samples, freq):
    """The power of `freq` in `samples` (mono floats), in dB, through a Hann window (so the
    tones next to it do not leak into its bin)."""
    k = 2 * math.cos(2 * math.pi * freq / RATE)
    n = len(samples)
    s1 = s2 = 0.0
    for i, x in enumerate(samples):
        x *= 0.5 - 0.5 * math.cos(2 * math.pi * i / n)
        s1, s2 = x + k * s1 - s2, s1
    power = s1 * s1 + s2 * s2 - k * s1 * s2
    return 10 * math.log10(max(power, 1e-9))


class Participant:
    def __init__(self, index, base, channel, token, codec, publisher=False, viewer=False, mute=None):
        self.index, self.base, self.channel, self.token = index, base, channel, token
        self.mute = mute
        self.publisher = publisher
        self.viewer = viewer
        self.pc = RTCPeerConnection()
        self.codec = codec
        self.location = None
        self.picture = None  # the latest decoded composite
        self.frames = 0
        self.audio = []  # mono floats of the last seconds
        self.first_frame_after = None

    async def join(self, started):
        if self.viewer:
            video = self.pc.addTransceiver("video", direction="recvonly")
            self.pc.addTransceiver("audio", direction="recvonly")
        else:
            direction = "sendonly" if self.publisher else "sendrecv"
            video = self.pc.addTransceiver(Colour(COLOURS[self.index]), direction=direction)
            self.pc.addTransceiver(Sine(TONES[self.index], self.mute), direction=direction)
        codecs = RTCRtpSender.getCapabilities("video").codecs
        video.setCodecPreferences([c for c in codecs if c.mimeType == f"video/{self.codec}"])

        @self.pc.on("track")
        def on_track(track):
            reader = self.read_video if track.kind == "video" else self.read_audio
            asyncio.ensure_future(reader(track, started))

        await self.pc.setLocalDescription(await self.pc.createOffer())
        path = f"whep/{self.channel}/mix" if self.viewer else f"{'whip' if self.publisher else 'mix'}/{self.channel}"
        url = f"{self.base}/{path}"
        status, answer, headers = await asyncio.to_thread(http, "POST", url, self.token, self.pc.localDescription.sdp)
        if status != 201:
            raise RuntimeError(f"POST {url}: {status} {answer.strip()}")
        self.location = header(headers, "location")
        await self.pc.setRemoteDescription(RTCSessionDescription(sdp=answer, type="answer"))

    async def read_video(self, track, started):
        loop = asyncio.get_running_loop()
        while True:
            try:
                frame = await track.recv()
            except MediaStreamError:
                return
            if self.first_frame_after is None:
                self.first_frame_after = loop.time() - started
            self.frames += 1
            self.picture = frame.reformat(format="yuv420p")

    async def read_audio(self, track, started):
        while True:
            try:
                frame = await track.recv()
            except MediaStreamError:
                return
            # s16 interleaved; keep the first channel (array, not numpy, which may be absent).
            samples = array.array("h")
            samples.frombytes(bytes(frame.planes[0])[: 2 * frame.samples * len(frame.layout.channels)])
            self.audio.extend(samples[:: len(frame.layout.channels)])
            if len(self.audio) > RATE * 2:
                del self.audio[: len(self.audio) - RATE * 2]

    def colours_seen(self):
        """Which participants' colours appear in the composite (sampled on a coarse grid)."""
        if self.picture is None:
            return [False] * len(COLOURS)
        p = self.picture
        y, u, v = (bytes(pl) for pl in p.planes)
        ys, us = p.planes[0].line_size, p.planes[1].line_size
        seen = []
        for rgb in COLOURS:
            want = yuv(rgb)
            hit = False
            for gy in range(4, p.height - 4, max(2, p.height // 24)):
                for gx in range(4, p.width - 4, max(2, p.width // 32)):
                    got = (y[gy * ys + gx], u[(gy // 2) * us + gx // 2], v[(gy // 2) * us + gx // 2])
                    if all(abs(a - b) <= 24 for a, b in zip(got, want)):
                        hit = True
                        break
                if hit:
                    break
            seen.append(hit)
        return seen

    def tones_db(self, n):
        """Each participant's tone's level above the floor in the last second of audio."""
        last = self.audio[-RATE // 2 :]
        if len(last) < RATE // 2:
            return [None] * n
        floor = sorted(goertzel_db(last, f) for f in FLOOR)[len(FLOOR) // 2]
        return [round(goertzel_db(last, TONES[i]) - floor, 1) for i in range(n)]


async def main():
    p = argparse.ArgumentParser()
    p.add_argument("base")
    p.add_argument("channel")
    p.add_argument("tokens", nargs="+")
    p.add_argument("--seconds", type=float, default=8)
    p.add_argument("--codec", default="VP8")
    p.add_argument("--publishers", type=int, default=0)
    p.add_argument("--viewer", help="a token for a client that plays the mix over WHEP")
    p.add_argument(
        "--stagger",
        type=float,
        default=0,
        help="seconds between the publishers' joining (first) and the others'",
    )
    p.add_argument("--mute", help="FROM:TO seconds of silence in every tone")
    args = p.parse_args()
    mute = tuple(float(x) for x in args.mute.split(":")) if args.mute else None
    n = len(args.tokens)
    if n > len(COLOURS):
        raise SystemExit(f"at most {len(COLOURS)} participants")
    loop = asyncio.get_running_loop()
    people = [
        Participant(i, args.base, args.channel, t, args.codec, publisher=i < args.publishers, mute=mute)
        for i, t in enumerate(args.tokens)
    ]
    if args.viewer:
        people.append(Participant(n, args.base, args.channel, args.viewer, args.codec, viewer=True))
    result = {"ok": False, "codec": args.codec}
    try:
        for person in people:
            if args.stagger and not person.publisher and person.index == args.publishers:
                await asyncio.sleep(args.stagger)
            await person.join(loop.time())
        for second in range(int(args.seconds)):
            await asyncio.sleep(1)
            print(json.dumps({"t": second + 1, "frames": [x.frames for x in people], "audio": [len(x.audio) for x in people]}), flush=True)
        result["participants"] = [
            {
                "publisher": x.publisher,
                "viewer": x.viewer,
                "frames": x.frames,
                "first_frame_s": x.first_frame_after,
                "colours": x.colours_seen(),
                "tones_db": x.tones_db(n),
                "size": [x.picture.width, x.picture.height] if x.picture else None,
            }
            for x in people
        ]
        statuses = []
        for x in people:
            status, _, _ = await asyncio.to_thread(http, "DELETE", f"{args.base}{x.location}", x.token)
            statuses.append(status)
        result["deletes"] = statuses
        result["ok"] = True
    except Exception as e:  # the test reads the reason from the JSON line
        result["error"] = f"{type(e).__name__}: {e}"
    finally:
        for x in people:
            await x.pc.close()
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    asyncio.run(main())
