"""An independent WebRTC stack (aiortc) against switchyard: publish over WHIP, play over WHEP.

usage: whip_whep.py BASE CHANNEL PUBLISH_TOKEN PLAY_TOKEN [--seconds N] [--codec VP8|H264]

Prints a JSON line per second while playing ({"t": .., "video_frames": .., "audio_frames": ..})
and a final JSON line with the totals and the HTTP statuses.
"""

import argparse
import asyncio
import json
import time
import urllib.error
import urllib.request

import aioice.ice

# aioice leaves 127.0.0.1 out of host candidates; the tests run where loopback is all there is.
aioice.ice.get_host_addresses = lambda use_ipv4, use_ipv6: ["127.0.0.1"]

import av  # noqa: E402
from aiortc import RTCConfiguration, RTCPeerConnection, RTCRtpSender, RTCSessionDescription  # noqa: E402
from aiortc.mediastreams import AudioStreamTrack, MediaStreamError, VideoStreamTrack  # noqa: E402

WIDTH, HEIGHT = 320, 240


class MovingVideo(VideoStreamTrack):
    """Frames whose content changes every time, so the encoder sends real data."""

    def __init__(self):
        super().__init__()
        self.n = 0

    async def recv(self):
        pts, time_base = await self.next_timestamp()
        frame = av.VideoFrame(width=WIDTH, height=HEIGHT, format="yuv420p")
        row = bytes((x + 4 * self.n) & 0xFF for x in range(WIDTH))
        frame.planes[0].update(row * HEIGHT)
        frame.planes[1].update(bytes([(self.n * 3) & 0xFF]) * (WIDTH // 2 * HEIGHT // 2))
        frame.planes[2].update(bytes([128]) * (WIDTH // 2 * HEIGHT // 2))
        frame.pts, frame.time_base = pts, time_base
        self.n += 1
        return frame


def http(method, url, token, body=None):
    headers = {"Authorization": f"Bearer {token}"}
    if body is not None:
        headers["Content-Type"] = "application/sdp"
    req = urllib.request.Request(url, data=body.encode() if body else None, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=20) as r:
            return r.status, r.read().decode(), dict(r.headers)
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode(), dict(e.headers)


async def negotiate(pc, url, token):
    offer = await pc.createOffer()
    await pc.setLocalDescription(offer)
    status, answer, headers = await asyncio.to_thread(http, "POST", url, token, pc.localDescription.sdp)
    if status != 201:
        raise RuntimeError(f"POST {url}: {status} {answer.strip()}")
    await pc.setRemoteDescription(RTCSessionDescription(sdp=answer, type="answer"))
    return headers.get("Location") or headers.get("location")


async def main():
    p = argparse.ArgumentParser()
    p.add_argument("base")
    p.add_argument("channel")
    p.add_argument("publish_token")
    p.add_argument("play_token")
    p.add_argument("--seconds", type=float, default=10)
    p.add_argument("--codec", default="VP8")
    args = p.parse_args()

    result = {"ok": False, "codec": args.codec}
    config = RTCConfiguration(iceServers=[])
    publisher, player = RTCPeerConnection(config), RTCPeerConnection(config)
    counts = {"video": 0, "audio": 0}

    try:
        video = publisher.addTransceiver(MovingVideo(), direction="sendonly")
        publisher.addTransceiver(AudioStreamTrack(), direction="sendonly")
        caps = RTCRtpSender.getCapabilities("video").codecs
        video.setCodecPreferences([c for c in caps if c.mimeType.lower() == f"video/{args.codec.lower()}"])
        whip_location = await negotiate(publisher, f"{args.base}/whip/{args.channel}", args.publish_token)
        result["whip_location"] = whip_location

        async def consume(track):
            while True:
                try:
                    await track.recv()
                except MediaStreamError:
                    return
                counts[track.kind] += 1

        @player.on("track")
        def on_track(track):
            asyncio.ensure_future(consume(track))

        player.addTransceiver("video", direction="recvonly")
        player.addTransceiver("audio", direction="recvonly")
        whep_location = await negotiate(player, f"{args.base}/whep/{args.channel}", args.play_token)
        result["whep_location"] = whep_location

        start = time.monotonic()
        while time.monotonic() - start < args.seconds:
            await asyncio.sleep(1)
            line = {"t": round(time.monotonic() - start, 1), "video_frames": counts["video"], "audio_frames": counts["audio"]}
            print(json.dumps(line), flush=True)

        result["video_frames"] = counts["video"]
        result["audio_frames"] = counts["audio"]
        result["whep_delete"] = (await asyncio.to_thread(http, "DELETE", args.base + whep_location, args.play_token))[0]
        result["whip_delete"] = (await asyncio.to_thread(http, "DELETE", args.base + whip_location, args.publish_token))[0]
        result["ok"] = True
    except Exception as e:  # noqa: BLE001 - report anything to the Rust test
        result["error"] = repr(e)
    finally:
        await publisher.close()
        await player.close()
    print(json.dumps(result), flush=True)


asyncio.run(main())
