#!/bin/bash
# baresip_call.sh CODEC TARGET_URI SECONDS
#
# Why: SIPp only replays G.711 pcaps; baresip is a real softphone with real codecs
# (G.711, G.722, Opus), jitter buffer and SDP negotiation, so the SIP connector's tests
# use it to check a call the way a phone makes it, and what the phone hears.
#
# Dials TARGET_URI from sip:baresip@127.0.0.1 (no registration) offering only CODEC
# (pcmu, pcma, g722, opus, "all" for every loaded codec, or a baresip list such as
# "opus/48000/2,PCMU/8000/1"), plus telephone-event. It sends a sine (ausine module) and
# hangs up SECONDS after start (baresip -t). A throw-away config dir holds the
# config; the sndfile module dumps the decoded received audio, which is copied to
# $BARESIP_WAV. Exit status: 0 when the call was established with an audio codec,
# 1 when no call was established, 3 when a call was but with no common audio codec.
#
# Environment (all optional):
#   BARESIP_WAV   where to leave the received audio (default ./baresip_rx.wav; the
#                 rate and channels follow the codec: 8 kHz mono for G.711,
#                 16 kHz for G.722, 48 kHz stereo for Opus); analyse with wav_tone.py
#   BARESIP_SENT_WAV  where to leave the audio it sent, after encoding (default: none)
#   BARESIP_FREQ  frequency of the sine it sends (default 440; ausine's level is
#                 about -10 dBov)
#   BARESIP_LOG   where to leave baresip's output, with the SIP trace (default
#                 $BARESIP_WAV.log)
#
# Prints the m=audio and a=rtpmap lines of the offer (INVITE) and answer on stderr.
# Needs only loopback: run it in the same network namespace as the server, e.g.
#   unshare -n bash -c 'ip link set lo up; ...; BARESIP_WAV=rx.wav \
#       tests/sip/baresip_call.sh pcmu sip:1234@127.0.0.1:5060 6'
set -euo pipefail

if [ $# -ne 3 ]; then
  echo "usage: $0 CODEC TARGET_URI SECONDS" >&2
  exit 2
fi
codec=$1 target=$2 seconds=$3
wav=${BARESIP_WAV:-$PWD/baresip_rx.wav}
log=${BARESIP_LOG:-$wav.log}
freq=${BARESIP_FREQ:-440}

case ${codec,,} in
  # baresip matches name/rate/channels; "G722" alone matches nothing (its rate is
  # 16000), and a list that matches nothing means every codec.
  pcmu) codecs=PCMU/8000/1 ;;
  pcma) codecs=PCMA/8000/1 ;;
  g722) codecs=G722/16000/1 ;;
  opus) codecs=opus/48000/2 ;;
  all) codecs= ;;
  *) codecs=$codec ;;
esac

rm -f "$wav"
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
mkdir "$dir/dump"
# Module names are Debian's baresip-core 1.0 (/usr/lib/baresip/modules). ausine only
# runs at 48 kHz stereo; baresip resamples to the codec. alsa,null discards playback
# (ALSA's null device), but the sndfile filter sits before it and records.
cat >"$dir/config" <<EOF
poll_method		epoll
sip_listen		127.0.0.1:0
net_interface		127.0.0.1
audio_player		alsa,null
audio_alert		alsa,null
audio_source		ausine,$freq
ausrc_srate		48000
ausrc_channels		2
snd_path		$dir/dump
module_path		/usr/lib/baresip/modules
module			g711.so
module			g722.so
module			opus.so
module			ausine.so
module			alsa.so
module			sndfile.so
module_tmp		account.so
module_app		menu.so
EOF
echo "<sip:baresip@127.0.0.1>;regint=0${codecs:+;audio_codecs=$codecs}" >"$dir/accounts"

rc=0
baresip -f "$dir" -s -e "/dial $target" -t "$seconds" >"$log" 2>&1 </dev/null || rc=$?

# The SDP media lines of each message in the SIP trace (INVITE = our offer, 200 = answer).
awk '/^[A-Z]+ sips?:/ { msg = $1 } /^SIP\/2\.0 [0-9]/ { msg = $2 " " $3 }
     /^(m=audio|a=rtpmap)/ && !seen[msg $0]++ { print "sdp " msg ": " $0 }' "$log" >&2 || true

dec=$(ls "$dir"/dump/dump-*-dec.wav 2>/dev/null | head -n 1 || true)
if [ -n "$dec" ]; then cp "$dec" "$wav"; fi
enc=$(ls "$dir"/dump/dump-*-enc.wav 2>/dev/null | head -n 1 || true)
if [ -n "${BARESIP_SENT_WAV:-}" ] && [ -n "$enc" ]; then cp "$enc" "$BARESIP_SENT_WAV"; fi

if [ "$rc" -ne 0 ] || ! grep -q "Call established" "$log"; then
  echo "baresip_call.sh: no call established (baresip exit $rc); log: $log" >&2
  tail -n 20 "$log" | tr -d '\033' >&2
  exit 1
fi
if ! grep -q "Set audio encoder" "$log"; then
  echo "baresip_call.sh: call established but no audio codec agreed (answer not among the offer?); log: $log" >&2
  exit 3
fi
echo "baresip_call.sh: call established, $(grep -o 'Set audio encoder: .*' "$log" | head -n 1 | tr -d '\033'); received audio: ${dec:+$wav}" >&2
