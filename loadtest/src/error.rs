//! Why `loadtest run` or `loadtest capacity` could not measure at all. A run that measured but
//! does not count is not an error: its report says why (`report::Reason`).

use std::io;
use std::path::PathBuf;

use switchyard_dataplane::dtls;

use crate::{janus, server};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Janus at {url}: {source}")]
    JanusUnreachable { url: String, source: janus::Error },
    #[error("Janus videoroom: {0}")]
    JanusVideoroom(#[source] janus::Error),
    #[error("Janus room: {0}")]
    JanusRoom(#[source] janus::Error),
    /// With `--url` but no `--application`/`--secret`: tokens are signed with the dev
    /// application's secret from the server's data directory.
    #[error("dev application in {}: {source}", dir.display())]
    DevApplication { dir: PathBuf, source: io::Error },
    /// The generator starts the server from its own binary.
    #[error("own binary: {0}")]
    OwnBinary(#[source] io::Error),
    #[error(transparent)]
    Server(#[from] server::Error),
    #[error("net thread: {0}")]
    NetThread(#[source] io::Error),
    /// The generator's DTLS certificate.
    #[error("certificate: {0}")]
    Certificate(#[source] dtls::Error),
    #[error(
        "WHEP subscribes to one publication: use --signalling sync for more than one publisher"
    )]
    WhepOnePublication,
    /// Subscribers ask for their layers with `/sync`'s `preferences`, which WHEP and the
    /// generator's Janus clients lack.
    #[error(
        "--simulcast needs Switchyard with /sync signalling (not WHIP/WHEP, Janus or --compare-janus)"
    )]
    SimulcastNeedsSync,
    #[error("the publisher did not connect")]
    PublisherNotConnected,
    /// Janus's mixer is AudioBridge: the comparison is audio only.
    #[error("--mode mcu --compare-janus needs --audio-only (Janus's AudioBridge mixes audio)")]
    JanusMixIsAudio,
    #[error("encoding the MCU participants' clip: {0}")]
    Clip(#[source] crate::clip::Error),
    /// `peers` waits for SIGTERM.
    #[error("signal handler: {0}")]
    Signal(#[source] io::Error),
}
