//! Any bytes as a connection's JSON log, as the monitor reads it (from its directory, or from
//! object storage in a cluster, where a media server put it): finished and open recordings,
//! never a panic; and whatever it finds stays inside the channel's directory.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use switchyard_recording::monitor::read_log;

fuzz_target!(|data: &[u8]| {
    let dir = Path::new("/recordings/room");
    let read = read_log(&String::from_utf8_lossy(data), dir);
    for (recorded, _) in &read.finished {
        let _ = recorded.file.strip_prefix(dir);
    }
    let _ = read.open.len();
});
