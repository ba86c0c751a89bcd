#![no_main]

use libfuzzer_sys::fuzz_target;
use switchyard_dataplane::twcc::{self, Feedback};

fuzz_target!(|data: &[u8]| {
    // Any bytes as feedback: decoded to the end or an error, never a panic.
    if let Ok(f) = Feedback::parse(data) {
        let _ = f.results().count();
    }
    // Any arrivals (two bytes each: lost when the first is odd, else a time) written and read
    // back give the same packets at the same 250 µs ticks.
    let arrivals: Vec<Option<i64>> = data
        .chunks_exact(2)
        .map(|c| (c[0] % 2 == 0).then(|| i64::from(u16::from_be_bytes([c[0], c[1]])) * 250))
        .collect();
    let mut buf = vec![0u8; 16 + 4 * arrivals.len()];
    if let Ok(n) = twcc::write(&mut buf, 7, 0, 1, &arrivals) {
        let f = Feedback::parse(&buf[..n]).expect("our own feedback parses");
        let read: Vec<Option<i64>> = f
            .results()
            .map(|r| r.expect("our own feedback decodes").1)
            .collect();
        assert_eq!(read, arrivals);
    }
});
