//! Any bytes as a recorded file: the reader the muxer and the orphan closer use gives its
//! header or an error, then frames until the bytes stop making sense; never a panic, and
//! never an allocation larger than the reader's element limit.
#![no_main]

use libfuzzer_sys::fuzz_target;
use switchyard_recording::read::Reader;

fuzz_target!(|data: &[u8]| {
    if let Ok(mut reader) = Reader::new(data) {
        let mut frames = 0u32;
        while reader.next_frame().is_some() {
            frames += 1;
            if frames > 100_000 {
                break;
            }
        }
    }
});
