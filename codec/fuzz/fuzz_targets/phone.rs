#![no_main]

use libfuzzer_sys::fuzz_target;
use switchyard_codec::audio::dtmf::{self, DtmfReceiver};
use switchyard_codec::audio::{PhoneCodec, PhoneDecoder, PhoneEncoder, parse_dtmf_relay};

const CODECS: [PhoneCodec; 4] = [
    PhoneCodec::Pcmu,
    PhoneCodec::Pcma,
    PhoneCodec::G722,
    PhoneCodec::Opus,
];

const RATES: [u32; 3] = [8_000, 16_000, 48_000];

fuzz_target!(|data: &[u8]| {
    // The bytes as one RTP payload of each codec, into room for 120 ms: samples or an error,
    // never a panic, and never more samples than the room.
    let mut pcm = [0i16; 5760];
    // At a rate picked by the last byte: the connector's 8 and 16 kHz, or the mixer's 48.
    let rate = RATES[usize::from(data.last().copied().unwrap_or(0)) % RATES.len()];
    for codec in CODECS {
        let Ok(mut decoder) = PhoneDecoder::new(codec, rate) else {
            continue;
        };
        if let Ok(n) = decoder.decode(data, &mut pcm) {
            assert!(n <= pcm.len());
        }
        // And as a stream of payloads (each a length byte and its bytes) into the same decoder,
        // some into too little room.
        let mut rest = data;
        while let Some((&len, tail)) = rest.split_first() {
            let (payload, tail) = tail.split_at(usize::from(len).min(tail.len()));
            rest = tail;
            let room = if len & 1 == 0 {
                pcm.len()
            } else {
                usize::from(len) * 3
            };
            let _ = decoder.decode(payload, &mut pcm[..room]);
        }
    }

    // The bytes as samples at that rate, encoded in frames of a ptime picked by the first byte.
    if let Some((&head, tail)) = data.split_first() {
        let ptime = u32::from(head % 7) * 10;
        let samples: Vec<i16> = tail
            .chunks_exact(2)
            .map(|b| i16::from_le_bytes([b[0], b[1]]))
            .collect();
        let mut out = [0u8; 1275];
        for codec in CODECS {
            let Ok(mut encoder) = PhoneEncoder::new(codec, ptime, rate) else {
                continue;
            };
            for frame in samples.chunks(encoder.frame_samples()) {
                if let Ok(len) = encoder.encode(frame, &mut out) {
                    assert!(len <= out.len());
                }
            }
        }
    }

    // The bytes as telephone-event payloads and packets: a 4-byte timestamp head, a length
    // byte, then the payload. A digit comes only from a readable payload.
    let _ = dtmf::parse(data);
    let mut receiver = DtmfReceiver::new();
    let mut rest = data;
    while let [a, b, c, d, len, tail @ ..] = rest {
        let (payload, tail) = tail.split_at(usize::from(*len % 8).min(tail.len()));
        rest = tail;
        if receiver
            .receive(u32::from_be_bytes([*a, *b, *c, *d]), payload)
            .is_some()
        {
            assert!(dtmf::parse(payload).is_some());
        }
    }

    // The bytes as a SIP INFO body.
    if let Some(digit) = parse_dtmf_relay(&String::from_utf8_lossy(data)) {
        assert!(dtmf::event_code(digit).is_some());
    }
});
