#![no_main]

//! Both stream framers fed the same bytes in arbitrary chunks: no panic, and every frame they
//! hand out lies within what was fed.

use libfuzzer_sys::fuzz_target;
use switchyard_dataplane::turn::framing::Framer;

fuzz_target!(|data: &[u8]| {
    let Some((&step, bytes)) = data.split_first() else { return };
    let step = usize::from(step).max(1);
    for mut framer in [Framer::turn(), Framer::rfc4571()] {
        let mut total = 0usize;
        for chunk in bytes.chunks(step) {
            if framer.feed(chunk, |m| total += m.len()).is_err() {
                break;
            }
        }
        assert!(total <= bytes.len());
        assert!(framer.pending() <= bytes.len());
    }
});
