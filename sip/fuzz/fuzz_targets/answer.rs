#![no_main]

use std::net::{IpAddr, Ipv4Addr};

use libfuzzer_sys::fuzz_target;
use switchyard_sip::sdp::{self, Local};

const LOCAL: Local = Local {
    address: IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)),
    rtp_port: 30000,
    session_id: 7,
};

fuzz_target!(|data: &[u8]| {
    // The bytes as an INVITE's offer: an answer or an error, never a panic; and the answer is
    // SDP that reads back (as the phone would) to the same codecs and telephone-event.
    let Ok(offer) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok((answer, media)) = sdp::answer(offer, &LOCAL, 1) {
        let read = match sdp::answered(&answer) {
            Ok(read) => read,
            Err(e) => panic!("our answer does not read back ({e}):\n{answer}"),
        };
        assert_eq!(read.codec, media.codec, "{answer}");
        assert_eq!(read.payload_type, media.payload_type, "{answer}");
        assert_eq!(read.also, media.also, "{answer}");
        assert_eq!(read.dtmf_payload_type, media.dtmf_payload_type, "{answer}");
    }
    // And as a callee's answer to our offer.
    let _ = sdp::answered(offer);
});
