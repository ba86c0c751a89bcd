#!/usr/bin/env python3
"""Measure tones in a 16-bit PCM WAV file, the same way rtp_capture.py measures RTP audio.

Why: baresip (baresip_call.sh) leaves the audio it received as a WAV (8, 16 or 48 kHz,
mono or stereo, by codec), and the SIP connector's tests need to know which tones it
holds: for each --freqs frequency, dB above the spectral floor and level in dBov, on
the loudest 1 s window by default (see siptools.analyse). Uses the first channel.

  wav_tone.py rx.wav --freqs 440,1000 [--window loudest|all] [--skip SECONDS]

Prints JSON: file, rate, seconds, rms_dbov, analysis_window, floor_dbov, tones.
"""
import argparse
import json

import siptools


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("wav")
    p.add_argument("--freqs", default="", help="comma-separated frequencies (Hz) to measure")
    p.add_argument("--window", choices=["loudest", "all"], default="loudest")
    p.add_argument("--skip", type=float, default=0.0, help="ignore the first SECONDS (e.g. jitter-buffer start)")
    args = p.parse_args()
    samples, rate = siptools.read_wav(args.wav)
    samples = samples[int(args.skip * rate):]
    res = {"file": args.wav, "rate": rate, "seconds": round(len(samples) / rate, 3)}
    res.update(siptools.analyse(samples, rate, siptools.parse_freqs(args.freqs), args.window) if samples else {})
    print(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
