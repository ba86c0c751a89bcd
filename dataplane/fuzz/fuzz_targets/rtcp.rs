#![no_main]

use libfuzzer_sys::fuzz_target;
use switchyard_dataplane::rtcp::{self, Packet};

fuzz_target!(|data: &[u8]| {
    for p in rtcp::packets(data) {
        match p {
            Ok(Packet::SenderReport { reports, .. }) | Ok(Packet::ReceiverReport { reports, .. }) => {
                let _ = reports.count();
            }
            Ok(Packet::Nack(n)) => {
                let _ = n.lost().count();
            }
            Ok(Packet::Fir { entries, .. }) => {
                let _ = entries.count();
            }
            Ok(Packet::Remb { ssrcs, .. }) => {
                let _ = ssrcs.count();
            }
            Ok(Packet::TransportCc { feedback, .. }) => {
                let _ = feedback.results().count();
            }
            _ => {}
        }
    }
});
