#![no_main]

use libfuzzer_sys::fuzz_target;
use switchyard_dataplane::sdp::{self, MediaRole, Offer, SessionDescription};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    if let Ok(sd) = SessionDescription::parse(&text) {
        let again = SessionDescription::parse(&sd.to_string()).expect("our own output parses");
        assert_eq!(sd, again);
    }
    if let Ok(offer) = Offer::parse(&text) {
        let ice = switchyard_dataplane::ice::Credentials { ufrag: "fuzz".into(), pwd: "fuzzfuzzfuzzfuzzfuzzfuzz".into() };
        let candidates = ["127.0.0.1:50000".parse().unwrap()];
        let local = sdp::LocalParams {
            ice: &ice,
            fingerprint: &offer.fingerprint,
            candidates: &candidates,
            tcp: true,
            allowed_codecs: &[switchyard_dataplane::media::Codec::Opus, switchyard_dataplane::media::Codec::Vp8],
            session_id: 1,
        };
        let roles = vec![MediaRole::Receive; offer.media.len()];
        if let Ok(answer) = sdp::answer(&offer, &local, &roles) {
            SessionDescription::parse(&answer.sdp).expect("our answer parses");
        }
    }
});
