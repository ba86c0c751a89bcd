#!/bin/bash
# selftest.sh: checks the SIP test tools against each other, without the server.
#
# Why: the SIP connector's tests trust these scenarios and analysers; this runs each
# UAC scenario against a SIPp UAS, each UAS scenario against a SIPp UAC (or baresip),
# and baresip_call.sh against uas_answer.xml, and checks what rtp_capture.py and
# wav_tone.py report. It re-runs itself in a private network namespace (unshare -n;
# needs root, as SIPp's pcap playback and rtp_capture.py need raw sockets), so only
# loopback carries the traffic. Needs sipp (sip-tester), baresip, python3.
#
#   tests/sip/selftest.sh      # PASS/FAIL per check; exit 0 when all pass (~2.5 min)
#
# Work files stay in the printed /tmp/sip-selftest.* directory when a check fails.
set -uo pipefail
if [ "${SIPTOOLS_IN_NS:-}" != 1 ]; then
  exec env SIPTOOLS_IN_NS=1 unshare -n "$0" "$@"
fi
ip link set lo up
S=$(cd "$(dirname "$0")" && pwd)
W=$(mktemp -d /tmp/sip-selftest.XXXXXX)
cd "$W" || exit 1
echo "work dir: $W"
fails=0
pass() { echo "PASS $*"; }
fail() { echo "FAIL $*"; fails=$((fails + 1)); }
# jcheck NAME FILE EXPR: EXPR is a Python expression on d, the JSON in FILE.
jcheck() {
  if python3 -c "import json, sys; d = json.load(open('$2')); sys.exit(0 if ($3) else 1)" 2>/dev/null; then
    pass "$1"
  else
    fail "$1: not ($3) in $2: $(tr -d ' \n' <"$2" | head -c 700)"
  fi
}
# rc NAME EXPECTED ACTUAL
rc() { if [ "$2" = "$3" ]; then pass "$1 (exit $3)"; else fail "$1: exit $3, expected $2"; fi; }
# capture NAME PORT SECONDS FREQS [more rtp_capture.py options]: starts in the
# background (CAP pid) and returns once it listens.
capture() {
  local name=$1 port=$2 secs=$3 freqs=$4
  shift 4
  python3 "$S/rtp_capture.py" --port "$port" --seconds "$secs" --wait-first 8 --freqs "$freqs" "$@" \
    >"$name.json" 2>"$name.cap.err" &
  CAP=$!
  for _ in $(seq 50); do grep -q listening "$name.cap.err" 2>/dev/null && return; sleep 0.1; done
}
UAS="-i 127.0.0.1 -p 5060 -mi 127.0.0.1 -mp 6100 -m 1 -nostdin -trace_err -timeout 30 -timeout_error"
UAC="127.0.0.1:5060 -i 127.0.0.1 -p 5070 -mi 127.0.0.1 -mp 6000 -s 1234 -m 1 -aa -nostdin -trace_err -trace_msg -timeout 30 -timeout_error"

echo "== analysis and pcaps (offline)"
python3 "$S/rtp_capture.py" --self-test >selftest.json
rc "rtp_capture.py --self-test" 0 $?
python3 "$S/rtp_tone.py" --codec pcmu --freq 440 --seconds 4 -o tone440.pcap 2>/dev/null
python3 "$S/rtp_tone.py" --codec pcma --freq 1000 --seconds 3 --level-dbov -20 -o tone1000a.pcap 2>/dev/null
python3 "$S/rtp_tone.py" --codec pcmu --freq 440 --seconds 2 -o hold1.pcap 2>/dev/null
python3 "$S/rtp_tone.py" --codec pcmu --freq 440 --seconds 2 --after hold1.pcap -o hold2.pcap 2>/dev/null
python3 "$S/rtp_tone.py" --dtmf '0123456789*#' -o digits.pcap 2>/dev/null
python3 "$S/rtp_capture.py" --pcap-in tone1000a.pcap --freqs 440,1000 >off1000.json
jcheck "rtp_tone.py pcma 1000 Hz -20 dBov decodes back" off1000.json \
  'd["packets"] == 150 and d["payload_types"] == {"8": 150} and abs(d["audio"]["tones"]["1000"]["level_dbov"] + 20) < 0.5 and d["audio"]["tones"]["440"]["above_floor_db"] < 10'
python3 "$S/rtp_capture.py" --pcap-in /usr/share/sip-tester/g711a.pcap --freqs 440 --pcm-out g711a.wav >offg711a.json
python3 "$S/wav_tone.py" g711a.wav --freqs 440 >g711a_wav.json
jcheck "rtp_capture.py and wav_tone.py agree on SIPp's g711a.pcap" g711a_wav.json \
  "abs(d['rms_dbov'] - json.load(open('offg711a.json'))['audio']['rms_dbov']) < 0.2"

echo "== uac_tone.xml against sipp -sn uas"
sipp -sn uas $UAS >uas1.out 2>&1 & U=$!
capture tone 6100 6 440,1000
sipp -sf "$S/uac_tone.xml" $UAC -key pcap "$W/tone440.pcap" -d 4000 >uac1.out 2>&1
rc "uac_tone.xml" 0 $?
wait $U; rc "sipp -sn uas for uac_tone.xml" 0 $?
wait $CAP
jcheck "uac_tone.xml sends the 440 Hz tone, no loss" tone.json \
  'd["packets"] == 200 and d["lost"] == 0 and d["audio"]["tones"]["440"]["above_floor_db"] > 40 and abs(d["audio"]["tones"]["440"]["level_dbov"] + 12) < 0.5 and d["audio"]["tones"]["1000"]["above_floor_db"] < 10'

echo "== uac_dtmf.xml against sipp -sn uas"
sipp -sn uas $UAS >uas2.out 2>&1 & U=$!
capture dtmf 6100 7 ""
sipp -sf "$S/uac_dtmf.xml" $UAC >uac2.out 2>&1
rc "uac_dtmf.xml" 0 $?
wait $U; wait $CAP
jcheck "uac_dtmf.xml sends 0123456789*# (stock pcaps)" dtmf.json 'd["dtmf"] == "0123456789*#"'

echo "== uac_tone.xml playing rtp_tone.py --dtmf"
sipp -sn uas $UAS >uas3.out 2>&1 & U=$!
capture dtmf2 6100 6 ""
sipp -sf "$S/uac_tone.xml" $UAC -key pcap "$W/digits.pcap" -d 5000 >uac3.out 2>&1
rc "uac_tone.xml with digits.pcap" 0 $?
wait $U; wait $CAP
jcheck "rtp_tone.py --dtmf: 0123456789*# in one clean stream" dtmf2.json \
  'd["dtmf"] == "0123456789*#" and d["lost"] == 0 and len(d["ssrcs"]) == 1'

echo "== uac_hold.xml against selftest/uas_hold_peer.xml"
for answers in "recvonly sendrecv 0" "sendrecv sendrecv 1" "recvonly recvonly 1"; do
  set -- $answers
  sipp -sf "$S/selftest/uas_hold_peer.xml" $UAS -key hold_answer "$1" -key resume_answer "$2" >uas4.out 2>&1 & U=$!
  capture "hold-$1-$2" 6100 6 440
  sipp -sf "$S/uac_hold.xml" $UAC -key pcap "$W/hold1.pcap" -key pcap2 "$W/hold2.pcap" -d 2000 >"uac4-$1-$2.out" 2>&1
  rc "uac_hold.xml, hold answered $1, resume answered $2" "$3" $?
  wait $U; wait $CAP
done
jcheck "uac_hold.xml: 440 Hz in one stream, sequence continues after resume" hold-recvonly-sendrecv.json \
  'd["packets"] == 200 and d["lost"] == 0 and len(d["ssrcs"]) == 1 and d["audio"]["tones"]["440"]["above_floor_db"] > 40'

echo "== uac_vanish.xml against sipp -sn uas"
sipp -sn uas -i 127.0.0.1 -p 5060 -mi 127.0.0.1 -mp 6100 -m 1 -nostdin -timeout 8 -timeout_error >uas5.out 2>&1 & U=$!
capture vanish 6100 5 1000
sipp -sf "$S/uac_vanish.xml" $UAC -key pcap "$W/tone1000a.pcap" -d 3000 >uac5.out 2>&1
rc "uac_vanish.xml" 0 $?
wait $CAP
if grep -q '^BYE' uac_vanish_*_messages.log; then fail "uac_vanish.xml sent a BYE"; else pass "uac_vanish.xml sent no BYE"; fi
wait $U
jcheck "uac_vanish.xml: 3 s of 1000 Hz, then nothing" vanish.json \
  'd["packets"] == 150 and d["duration_s"] < 3.2 and d["audio"]["tones"]["1000"]["above_floor_db"] > 40'

echo "== uas_answer.xml against sipp -sn uac"
sipp -sf "$S/uas_answer.xml" -i 127.0.0.1 -p 5080 -mi 127.0.0.1 -mp 6200 -key pcap "$W/tone440.pcap" \
  -m 1 -nostdin -trace_err -timeout 30 -timeout_error >uas6.out 2>&1 & U=$!
capture answer 6000 5 440
sipp -sn uac 127.0.0.1:5080 -i 127.0.0.1 -p 5070 -mi 127.0.0.1 -mp 6000 -d 4000 -m 1 -nostdin -timeout 30 -timeout_error >uac6.out 2>&1
rc "sipp -sn uac for uas_answer.xml" 0 $?
wait $U; rc "uas_answer.xml" 0 $?
wait $CAP
jcheck "uas_answer.xml plays the 440 Hz tone to the caller" answer.json \
  'd["lost"] == 0 and d["audio"]["tones"]["440"]["above_floor_db"] > 40'

echo "== uas_auth.xml against selftest/uac_auth_peer.xml"
sed '/\[authentication\]/d' "$S/selftest/uac_auth_peer.xml" >uac_noauth_peer.xml
for case in "secret $S/selftest/uac_auth_peer.xml 0" "wrong $S/selftest/uac_auth_peer.xml 255" "secret $W/uac_noauth_peer.xml 255"; do
  set -- $case
  sipp -sf "$S/uas_auth.xml" -i 127.0.0.1 -p 5080 -mi 127.0.0.1 -mp 6200 -key user alice -key password secret \
    -key pcap "$W/tone440.pcap" -m 1 -nostdin -trace_err -timeout 30 -timeout_error >uas7.out 2>&1 & U=$!
  sipp -sf "$2" 127.0.0.1:5080 -i 127.0.0.1 -p 5070 -mi 127.0.0.1 -mp 6000 -s 1234 -au alice -ap "$1" \
    -d 1000 -m 1 -nostdin -timeout 30 -timeout_error >uac7.out 2>&1
  wait $U; r=$?  # (before the $(...) below, which would reset $?)
  rc "uas_auth.xml with $(basename "$2") and password $1" "$3" $r
done

echo "== uas_register.xml against baresip (regint=3600)"
mkdir -p reg
printf '%s\n' "sip_listen 127.0.0.1:0" "net_interface 127.0.0.1" "audio_player alsa,null" \
  "audio_source alsa,null" "module_path /usr/lib/baresip/modules" "module g711.so" "module alsa.so" \
  "module_tmp account.so" "module_app menu.so" >reg/config
echo '<sip:alice@127.0.0.1:5090>;regint=3600' >reg/accounts
sipp -sf "$S/uas_register.xml" -i 127.0.0.1 -p 5090 -m 1 -nostdin -trace_err -timeout 20 -timeout_error >uas8.out 2>&1 & U=$!
baresip -f reg -t 13 >reg.out 2>&1 </dev/null
wait $U; rc "uas_register.xml saw a REGISTER and its refresh" 0 $?

echo "== baresip_call.sh against uas_answer.xml"
for codec in pcmu pcma g722 opus; do
  # uas_answer.xml answers PCMU; for the other codecs, a copy that answers that codec
  # (SIPp still plays the PCMU pcap: only baresip's sending side is checked then).
  case $codec in
    pcmu) m="0"; map="0 PCMU/8000"; pt=0 ;;
    pcma) m="8"; map="8 PCMA/8000"; pt=8 ;;
    g722) m="9"; map="9 G722/8000"; pt=9 ;;
    opus) m="96"; map="96 opus/48000/2"; pt=96 ;;
  esac
  sed -e "s|RTP/AVP 0\$|RTP/AVP $m|" -e "s|a=rtpmap:0 PCMU/8000|a=rtpmap:$map|" "$S/uas_answer.xml" >"uas_answer_$codec.xml"
  sipp -sf "uas_answer_$codec.xml" -i 127.0.0.1 -p 5080 -mi 127.0.0.1 -mp 6200 -key pcap "$W/tone440.pcap" \
    -m 1 -nostdin -trace_err -timeout 30 -timeout_error >"uas9-$codec.out" 2>&1 & U=$!
  capture "baresip-$codec" 6200 3 440
  BARESIP_WAV="$W/rx-$codec.wav" "$S/baresip_call.sh" "$codec" sip:1234@127.0.0.1:5080 5 2>"call-$codec.err"
  rc "baresip_call.sh $codec" 0 $?
  sed 's/^/    /' "call-$codec.err"
  wait $U; rc "uas_answer.xml ($codec) hung up by baresip" 0 $?
  wait $CAP
  jcheck "baresip sends $codec (PT $pt)" "baresip-$codec.json" "list(d['payload_types']) == ['$pt']"
done
jcheck "baresip's PCMU tone reaches SIPp" baresip-pcmu.json 'd["audio"]["tones"]["440"]["above_floor_db"] > 40'
jcheck "baresip's PCMA tone reaches SIPp" baresip-pcma.json 'd["audio"]["tones"]["440"]["above_floor_db"] > 40'
python3 "$S/wav_tone.py" rx-pcmu.wav --freqs 440,1000 >rx-pcmu.json
jcheck "baresip's received audio (PCMU WAV) holds SIPp's 440 Hz" rx-pcmu.json \
  'd["rate"] == 8000 and d["tones"]["440"]["above_floor_db"] > 40 and d["tones"]["1000"]["above_floor_db"] < 10'

echo "== baresip_call.sh against a baresip that answers with a 1000 Hz sine"
for codec in g722 opus; do
  mkdir -p "peer-$codec"
  case $codec in g722) c=G722/16000/1 ;; opus) c=opus/48000/2 ;; esac
  printf '%s\n' "sip_listen 127.0.0.1:5062" "net_interface 127.0.0.1" "audio_player alsa,null" \
    "audio_alert alsa,null" "audio_source ausine,1000" "ausrc_srate 48000" "ausrc_channels 2" \
    "module_path /usr/lib/baresip/modules" "module g722.so" "module opus.so" "module ausine.so" \
    "module alsa.so" "module_tmp account.so" "module_app menu.so" >"peer-$codec/config"
  echo "<sip:peer@127.0.0.1:5062>;regint=0;answermode=auto;audio_codecs=$c" >"peer-$codec/accounts"
  baresip -f "peer-$codec" -t 9 >"peer-$codec.out" 2>&1 </dev/null & P=$!
  sleep 1
  BARESIP_WAV="$W/rx2-$codec.wav" "$S/baresip_call.sh" "$codec" sip:peer@127.0.0.1:5062 5 2>"call2-$codec.err"
  rc "baresip_call.sh $codec to a baresip" 0 $?
  wait $P
  python3 "$S/wav_tone.py" "rx2-$codec.wav" --freqs 440,1000 >"rx2-$codec.json"
  jcheck "received $codec WAV holds 1000 Hz, not 440 Hz" "rx2-$codec.json" \
    'd["tones"]["1000"]["above_floor_db"] > 30 and d["tones"]["440"]["above_floor_db"] < 10'
done

if [ "$fails" -eq 0 ]; then
  echo "all checks passed"
  rm -rf "$W"
else
  echo "$fails check(s) failed; files in $W"
  exit 1
fi
