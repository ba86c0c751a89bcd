#![no_main]

use libfuzzer_sys::fuzz_target;
use switchyard_dataplane::{demux, ice, stun};

fuzz_target!(|data: &[u8]| {
    let _ = demux::classify(data);
    let Ok(m) = stun::Message::parse(data) else { return };
    let _ = (m.method(), m.class(), m.transaction_id(), m.priority(), m.use_candidate());
    let _ = (m.ice_controlling(), m.ice_controlled(), m.xor_mapped_address(), m.error_code());
    let _ = (m.fingerprint_ok(), m.integrity_ok(b"fuzz-password"), m.attributes().count());
    if let Some(u) = m.username() {
        let _ = ice::local_ufrag(u);
    }
});
