//! Data channels in publish and subscribe offers: which m-lines become data channels, and the
//! data plane's [`DataSpec`] from the answer. A publication's data channels are one data
//! producer; a subscription to a publication that has one receives it (the media server opens
//! the publisher's channels toward the subscriber, see `switchyard_dataplane::data_routes`).

use switchyard_dataplane::sdp::{MediaRole, Negotiated, Offer};
use switchyard_dataplane::spec::{DataSpec, ProducerId};

use crate::protocol::TrackInfo;

/// The `kind` under which a publication's data channels are listed among its tracks, so
/// subscribers know to offer an `m=application` line.
pub const DATA_KIND: &str = "data";
/// The `codec` listed with it.
pub const DATA_CODEC: &str = "webrtc-datachannel";

/// `roles` with every declined data channel m-line of `offer` accepted as [`MediaRole::Data`]
/// when `accept` (the first one only: one association per transport).
pub fn with_data_roles(offer: &Offer, mut roles: Vec<MediaRole>, accept: bool) -> Vec<MediaRole> {
    if !accept {
        return roles;
    }
    let data_line = offer
        .description
        .media
        .iter()
        .zip(&roles)
        .position(|(m, role)| *role == MediaRole::Reject && m.port != 0 && m.is_data_channel());
    if let Some(role) = data_line.and_then(|i| roles.get_mut(i)) {
        *role = MediaRole::Data;
    }
    roles
}

/// The data plane's spec for the data channels the answer accepted, if it accepted any:
/// publishing as `producer`, or receiving `consumes`.
pub fn data_spec(
    answer: &[Negotiated],
    producer: Option<ProducerId>,
    consumes: Vec<ProducerId>,
) -> Option<DataSpec> {
    answer.iter().find_map(|n| match n {
        Negotiated::Data {
            max_message_size, ..
        } => Some(DataSpec {
            producer,
            consumes: consumes.clone(),
            remote_max_message_size: *max_message_size,
        }),
        _ => None,
    })
}

/// How a publication's data channels are listed among its tracks.
pub fn track_info() -> TrackInfo {
    TrackInfo {
        kind: DATA_KIND.into(),
        codec: DATA_CODEC.into(),
    }
}

// ok: every unwrap()/expect() below is in this test-only module, on values the tests built
#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use switchyard_dataplane::dtls::Fingerprint;
    use switchyard_dataplane::ice::Credentials;
    use switchyard_dataplane::media::Codec;
    use switchyard_dataplane::sdp::{self, LocalParams};

    use super::*;

    const FP: &str = "sha-256 3B:36:0D:9C:7F:95:3B:48:1D:0B:46:8A:9C:A4:5F:1D:1D:39:9F:B5:45:29:93:84:63:52:8A:09:AB:43:60:B1";

    /// Chrome's offer for a publication with audio and a data channel, abridged, and one with
    /// a data channel alone (`audio` false).
    fn offer(audio: bool) -> String {
        let mut s = String::from("v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n");
        s += if audio {
            "a=group:BUNDLE 0 1\r\n"
        } else {
            "a=group:BUNDLE 0\r\n"
        };
        let transport = format!(
            "c=IN IP4 0.0.0.0\r\na=ice-ufrag:aBcD\r\na=ice-pwd:0123456789abcdefghijklmn\r\na=fingerprint:{FP}\r\na=setup:actpass\r\n"
        );
        let mut mid = 0;
        if audio {
            s += "m=audio 9 UDP/TLS/RTP/SAVPF 111\r\n";
            s += &transport;
            s += "a=mid:0\r\na=sendonly\r\na=rtcp-mux\r\na=rtpmap:111 opus/48000/2\r\n";
            mid = 1;
        }
        s += "m=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\n";
        s += &transport;
        s += &format!("a=mid:{mid}\r\na=sctp-port:5000\r\na=max-message-size:262144\r\n");
        s
    }

    fn answer(offer: &Offer, roles: Vec<MediaRole>) -> sdp::Answer {
        let ice = Credentials {
            ufrag: "srvU".into(),
            pwd: "serverpasswordserverpass".into(),
        };
        let fp: Fingerprint = FP.parse().unwrap();
        let candidates: Vec<SocketAddr> = vec!["127.0.0.1:49152".parse().unwrap()];
        let local = LocalParams {
            ice: &ice,
            fingerprint: &fp,
            candidates: &candidates,
            tcp: false,
            allowed_codecs: &[Codec::Opus],
            session_id: 1,
        };
        sdp::answer(offer, &local, &roles).unwrap()
    }

    #[test]
    fn a_data_channel_line_is_accepted_bundled_with_media() {
        let offer = Offer::parse(&offer(true)).unwrap();
        let roles = with_data_roles(&offer, vec![MediaRole::Receive, MediaRole::Reject], true);
        assert_eq!(roles, vec![MediaRole::Receive, MediaRole::Data]);
        let a = answer(&offer, roles);
        assert!(a.sdp.contains("a=group:BUNDLE 0 1\r\n"), "{}", a.sdp);
        assert!(
            a.sdp
                .contains("m=application 49152 UDP/DTLS/SCTP webrtc-datachannel\r\n"),
            "{}",
            a.sdp
        );
        assert!(a.sdp.contains("a=sctp-port:5000\r\n"));
        assert!(a.sdp.contains("a=max-message-size:262144\r\n"));
        assert!(a.sdp.contains("a=mid:1\r\n"));
        let spec = data_spec(&a.media, Some(ProducerId(9)), Vec::new()).unwrap();
        assert_eq!(
            spec,
            DataSpec {
                producer: Some(ProducerId(9)),
                consumes: Vec::new(),
                remote_max_message_size: Some(262_144),
            }
        );
        // The answer parses back, with the data line whole.
        let parsed = sdp::SessionDescription::parse(&a.sdp).unwrap();
        assert!(parsed.media[1].is_data_channel());
        assert_eq!(parsed.media[1].max_message_size(), Some(262_144));
    }

    #[test]
    fn a_data_only_offer_and_a_declined_one() {
        let offer = Offer::parse(&offer(false)).unwrap();
        let a = answer(
            &offer,
            with_data_roles(&offer, vec![MediaRole::Reject], true),
        );
        assert!(
            matches!(a.media[0], Negotiated::Data { .. }),
            "{:?}",
            a.media
        );
        assert!(data_spec(&a.media, None, vec![ProducerId(3)]).is_some());

        // A subscription to a publication without data channels declines the line.
        let a = answer(
            &offer,
            with_data_roles(&offer, vec![MediaRole::Reject], false),
        );
        assert!(matches!(a.media[0], Negotiated::Rejected { .. }));
        assert!(a.sdp.contains("m=application 0 "), "{}", a.sdp);
        assert!(data_spec(&a.media, None, Vec::new()).is_none());
    }

    #[test]
    fn data_role_on_a_media_line_is_declined() {
        let offer = Offer::parse(&offer(true)).unwrap();
        let a = answer(&offer, vec![MediaRole::Data, MediaRole::Data]);
        assert!(
            matches!(&a.media[0], Negotiated::Rejected { reason, .. } if reason.contains("not a data channel")),
            "{:?}",
            a.media
        );
    }
}
