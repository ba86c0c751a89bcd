"""An independent WebRTC stack (aiortc) against switchyard: publish over WHIP, play over WHEP.

usage: whip_whep.py BASE CHANNEL PUBLISH_TOKEN PLAY_TOKEN [--seconds N] [--codec VP8|H264]
                    [--relay udp|tcp --turn-secret SECRET] [--play-base URL [--delete-crossed]]

--play-base plays over WHEP from another base (a second gateway of a cluster); with
--delete-crossed each session's resource is then DELETEd through the other base than the one
that made it (the WHIP session's through --play-base, the WHEP one's through BASE).

Prints a JSON line per second while playing ({"t": .., "video_frames": .., "audio_frames": ..})
and a final JSON line with the totals and the HTTP statuses.

--relay makes both clients relay-only (iceTransportPolicy "relay") through the server's TURN over
the given transport, and the final line then says which candidate pairs ICE selected. A relay-only
client has no candidate without TURN, so it needs the ICE servers before its offer, while WHIP
hands them out as Link headers of the answer (RFC 9725 section 4.6). So the script asks with an
OPTIONS request first, as some WHIP clients do, and uses its Link headers when there are any;
otherwise it mints a TURN REST credential (username "expiry:user", password
base64(HMAC-SHA1(secret, username))) with --turn-secret for the BASE host, as an application
backend that shares the server's TURN secret would. The answer's Link headers are reported too.
"""

import argparse
import asyncio
import base64
import hashlib
import hmac
import json
import re
import time
import urllib.error
import urllib.parse
import urllib.request

import aioice.ice

# aioice leaves 127.0.0.1 out of host candidates; the tests run where loopback is all there is.
aioice.ice.get_host_addresses = lambda use_ipv4, use_ipv6: ["127.0.0.1"]

import av  # noqa: E402
from aiortc import (  # noqa: E402
    RTCConfiguration,
    RTCIceServer,
    RTCPeerConnection,
    RTCRtpSender,
    RTCSessionDescription,
)
from aiortc.rtcconfiguration import RTCIceTransportPolicy  # noqa: E402
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
    """Status, body and headers (a list of pairs: Link comes once per ICE server URL)."""
    headers = {"Authorization": f"Bearer {token}"}
    if body is not None:
        headers["Content-Type"] = "application/sdp"
    req = urllib.request.Request(url, data=body.encode() if body else None, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=20) as r:
            return r.status, r.read().decode(), r.headers.items()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode(), e.headers.items()


def header(headers, name):
    return next((v for k, v in headers if k.lower() == name), None)


LINK = re.compile(r'<([^>]*)>\s*((?:;\s*[\w-]+\s*=\s*(?:"(?:[^"\\]|\\.)*"|[^;,]*)\s*)*)')
PARAM = re.compile(r';\s*([\w-]+)\s*=\s*("(?:[^"\\]|\\.)*"|[^;,]*)')


def ice_servers_from_links(headers):
    """The rel="ice-server" Link headers as [{"urls": [url], "username": .., "credential": ..}]."""
    servers = []
    for name, value in headers:
        if name.lower() != "link":
            continue
        for m in LINK.finditer(value):
            params = {}
            for key, raw in PARAM.findall(m.group(2)):
                raw = raw.strip()
                if raw.startswith('"'):
                    raw = re.sub(r"\\(.)", r"\1", raw[1:-1])
                params[key.lower()] = raw
            if params.get("rel") == "ice-server":
                servers.append({"urls": [m.group(1)], "username": params.get("username"), "credential": params.get("credential")})
    return servers


def minted_ice_servers(base, secret, user, transport):
    """A TURN REST credential for `user`, valid for an hour, for the TURN server on BASE's host."""
    host = urllib.parse.urlsplit(base).hostname
    username = f"{int(time.time()) + 3600}:{user}"
    password = base64.b64encode(hmac.new(secret.encode(), username.encode(), hashlib.sha1).digest()).decode()
    return [{"urls": [f"turn:{host}:3478?transport={transport}"], "username": username, "credential": password}]


def relay_configuration(servers, transport):
    """Relay only, through the one TURN URL of `transport` (aiortc uses a single TURN server)."""
    wanted = [
        RTCIceServer(urls=url, username=s["username"], credential=s["credential"])
        for s in servers
        for url in s["urls"]
        if url.startswith("turn:") and url.endswith(f"?transport={transport}")
    ]
    if not wanted:
        raise RuntimeError(f"no turn: URL with transport={transport} in {servers}")
    return RTCConfiguration(iceServers=wanted[:1], iceTransportPolicy=RTCIceTransportPolicy.RELAY)


async def ice_servers_before_offer(url, token, args, user):
    """From an OPTIONS request's Link headers when the server sends any, else minted."""
    status, _, headers = await asyncio.to_thread(http, "OPTIONS", url, token)
    servers = ice_servers_from_links(headers)
    if servers:
        return servers, f"OPTIONS {status}"
    if not args.turn_secret:
        raise RuntimeError(f"OPTIONS {url} ({status}) named no ICE server and there is no --turn-secret")
    return minted_ice_servers(args.base, args.turn_secret, user, args.relay), "minted"


def selected_pairs(pc):
    """The candidate pair ICE nominated on each of the connection's transports."""
    pairs = []
    seen = set()
    for t in pc.getTransceivers():
        transport = t.sender.transport
        if transport is None or id(transport) in seen:
            continue
        seen.add(id(transport))
        connection = transport.transport._connection
        for pair in connection._nominated.values():
            local, remote = pair.local_candidate, pair.remote_candidate
            pairs.append(
                {
                    "local": {"type": local.type, "host": local.host, "port": local.port},
                    "remote": {"type": remote.type, "host": remote.host, "port": remote.port},
                    "turn_transport": connection.turn_transport if connection.turn_server else None,
                }
            )
    return pairs


async def negotiate(pc, url, token):
    """POSTs the offer; the Location and the answer's headers."""
    offer = await pc.createOffer()
    await pc.setLocalDescription(offer)
    status, answer, headers = await asyncio.to_thread(http, "POST", url, token, pc.localDescription.sdp)
    if status != 201:
        raise RuntimeError(f"POST {url}: {status} {answer.strip()}")
    await pc.setRemoteDescription(RTCSessionDescription(sdp=answer, type="answer"))
    return header(headers, "location"), headers


async def main():
    p = argparse.ArgumentParser()
    p.add_argument("base")
    p.add_argument("channel")
    p.add_argument("publish_token")
    p.add_argument("play_token")
    p.add_argument("--seconds", type=float, default=10)
    p.add_argument("--codec", default="VP8")
    p.add_argument("--relay", choices=["udp", "tcp"], help="relay only, through TURN over this transport")
    p.add_argument("--turn-secret", help="the server's TURN secret, to mint credentials (see above)")
    p.add_argument("--play-base", help="play over WHEP from this base (see above)")
    p.add_argument("--delete-crossed", action="store_true", help="DELETE through the other base (see above)")
    args = p.parse_args()
    play_base = args.play_base or args.base
    whip_delete_base, whep_delete_base = args.base, play_base
    if args.delete_crossed:
        whip_delete_base, whep_delete_base = play_base, args.base

    result = {"ok": False, "codec": args.codec}
    whip, whep = f"{args.base}/whip/{args.channel}", f"{play_base}/whep/{args.channel}"
    publisher = player = None
    counts = {"video": 0, "audio": 0}

    try:
        configs = []
        for url, token, user in [(whip, args.publish_token, "encoder"), (whep, args.play_token, "viewer")]:
            if args.relay:
                servers, source = await ice_servers_before_offer(url, token, args, user)
                result.setdefault("ice_servers_from", []).append(source)
                configs.append(relay_configuration(servers, args.relay))
            else:
                configs.append(RTCConfiguration(iceServers=[]))
        publisher, player = RTCPeerConnection(configs[0]), RTCPeerConnection(configs[1])
        video = publisher.addTransceiver(MovingVideo(), direction="sendonly")
        publisher.addTransceiver(AudioStreamTrack(), direction="sendonly")
        caps = RTCRtpSender.getCapabilities("video").codecs
        video.setCodecPreferences([c for c in caps if c.mimeType.lower() == f"video/{args.codec.lower()}"])
        whip_location, whip_headers = await negotiate(publisher, whip, args.publish_token)
        result["whip_location"] = whip_location
        result["whip_links"] = ice_servers_from_links(whip_headers)

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
        whep_location, whep_headers = await negotiate(player, whep, args.play_token)
        result["whep_location"] = whep_location
        result["whep_links"] = ice_servers_from_links(whep_headers)

        start = time.monotonic()
        while time.monotonic() - start < args.seconds:
            await asyncio.sleep(1)
            line = {"t": round(time.monotonic() - start, 1), "video_frames": counts["video"], "audio_frames": counts["audio"]}
            print(json.dumps(line), flush=True)

        result["video_frames"] = counts["video"]
        result["audio_frames"] = counts["audio"]
        result["publisher_pairs"] = selected_pairs(publisher)
        result["player_pairs"] = selected_pairs(player)
        result["whep_delete"] = (await asyncio.to_thread(http, "DELETE", whep_delete_base + whep_location, args.play_token))[0]
        result["whip_delete"] = (await asyncio.to_thread(http, "DELETE", whip_delete_base + whip_location, args.publish_token))[0]
        result["ok"] = True
    except Exception as e:  # noqa: BLE001 - report anything to the Rust test
        result["error"] = repr(e)
    finally:
        for pc in (publisher, player):
            if pc is not None:
                await pc.close()
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    asyncio.run(main())
