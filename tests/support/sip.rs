//! Phones for the SIP connector's tests: SIPp runs (tests/sip/*.xml), tone pcaps and RTP
//! captures from the Python tools in tests/sip, baresip, and a bare SIP client over UDP for
//! what no tool lets us do (withholding an ACK, offering a codec we lack).

use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::repo;

/// tests/sip/`name`.
pub fn tool(name: &str) -> PathBuf {
    repo().join("tests/sip").join(name)
}

/// A pcap of `seconds` of a `freq` Hz tone in `codec` (`pcmu`, `pcma`) for SIPp to play, at
/// -20 dBov: several such tones mixed stay far from clipping.
pub fn tone_pcap(dir: &Path, codec: &str, freq: u32, seconds: u32) -> PathBuf {
    let out = dir.join(format!("{codec}-{freq}.pcap"));
    let status = Command::new("python3")
        .arg(tool("rtp_tone.py"))
        .args(["--codec", codec, "--freq", &freq.to_string()])
        .args([
            "--seconds",
            &seconds.to_string(),
            "--level-dbov",
            "-20",
            "-o",
        ])
        .arg(&out)
        .status()
        .expect("run rtp_tone.py");
    assert!(status.success(), "rtp_tone.py failed");
    out
}

/// SIPp with a scenario of tests/sip on SIP port `sip_port` and media port `media_port`, on
/// loopback, in a directory of its own (SIPp writes its logs there), output piped.
fn sipp_command(dir: &Path, scenario: &str, sip_port: u16, media_port: u16) -> Command {
    let cwd = dir.join(format!("sipp-{sip_port}"));
    std::fs::create_dir_all(&cwd).expect("sipp dir");
    let mut command = Command::new("sipp");
    command
        .current_dir(&cwd)
        .arg("-sf")
        .arg(tool(scenario))
        .args(["-i", "127.0.0.1", "-p", &sip_port.to_string()])
        .args(["-mi", "127.0.0.1", "-mp", &media_port.to_string()])
        .args(["-m", "1", "-nostdin", "-trace_err"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    command
}

/// One SIPp call of a scenario of tests/sip to the server's SIP port, from SIP port `sip_port`
/// and media port `media_port`, calling `user`, with `extra` arguments.
pub fn sipp(
    dir: &Path,
    scenario: &str,
    user: &str,
    sip_port: u16,
    media_port: u16,
    extra: &[&str],
) -> Child {
    sipp_command(dir, scenario, sip_port, media_port)
        .arg("127.0.0.1:5060")
        .args(["-s", user, "-aa", "-timeout", "90", "-timeout_error"])
        .args(extra)
        .spawn()
        .expect("run sipp (Debian's sip-tester)")
}

/// Waits for a SIPp run and asserts it passed (exit 0), with its output and error log.
pub fn passed(child: Child, dir: &Path, what: &str) {
    let out = child.wait_with_output().expect("sipp");
    if !out.status.success() {
        let errors: String = std::fs::read_dir(dir)
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| e.path().is_dir())
            .flat_map(|d| std::fs::read_dir(d.path()).into_iter().flatten().flatten())
            .filter(|e| e.file_name().to_string_lossy().ends_with("errors.log"))
            .map(|e| std::fs::read_to_string(e.path()).unwrap_or_default())
            .collect();
        panic!(
            "{what}: sipp exited {}:\n{}\n{}\n{errors}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// Starts capturing the RTP sent to loopback port `port` for `seconds` from its first packet,
/// measuring `freqs` in its loudest second; [`captured`] reads its report.
pub fn capture(port: u16, seconds: u32, freqs: &[u32]) -> Child {
    capture_in(port, seconds, freqs, "loudest")
}

/// [`capture`] measuring over the whole capture (tones that come one after another).
pub fn capture_all(port: u16, seconds: u32, freqs: &[u32]) -> Child {
    capture_in(port, seconds, freqs, "all")
}

fn capture_in(port: u16, seconds: u32, freqs: &[u32], window: &str) -> Child {
    let freqs: Vec<String> = freqs.iter().map(u32::to_string).collect();
    let mut child = Command::new("python3")
        .arg(tool("rtp_capture.py"))
        .args([
            "--port",
            &port.to_string(),
            "--seconds",
            &seconds.to_string(),
        ])
        .args(["--wait-first", "30", "--freqs", &freqs.join(",")])
        .args(["--window", window])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run rtp_capture.py");
    // It says "listening" on stderr once its socket is open.
    let stderr = child.stderr.take().expect("stderr");
    let mut lines = std::io::BufRead::lines(std::io::BufReader::new(stderr));
    let ready = lines.next().and_then(Result::ok).unwrap_or_default();
    assert!(ready.contains("listening"), "rtp_capture.py: {ready}");
    child
}

/// A capture's JSON report.
pub fn captured(child: Child) -> serde_json::Value {
    let out: Output = child.wait_with_output().expect("rtp_capture.py");
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "rtp_capture.py: {e}: {}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

/// A tone's level above the capture's floor, in dB.
pub fn tone_db(report: &serde_json::Value, freq: u32) -> f64 {
    report["audio"]["tones"][freq.to_string()]["above_floor_db"]
        .as_f64()
        .unwrap_or(f64::NEG_INFINITY)
}

/// A SIP client over UDP for requests no tool sends the way a test needs.
pub struct BareUa {
    pub socket: UdpSocket,
    pub call_id: String,
    pub tag: String,
    server: SocketAddr,
}

impl BareUa {
    pub fn new(port: u16) -> BareUa {
        let socket = UdpSocket::bind(("127.0.0.1", port)).expect("bind a SIP port");
        socket
            .set_read_timeout(Some(Duration::from_millis(200)))
            .expect("timeout");
        BareUa {
            socket,
            call_id: format!("bare-{port}-{}", std::process::id()),
            tag: format!("t{port}"),
            server: "127.0.0.1:5060".parse().expect("addr"),
        }
    }

    fn local(&self) -> SocketAddr {
        self.socket.local_addr().expect("local")
    }

    /// Sends an INVITE for `user` offering `formats` (an m-line's payload types and their
    /// rtpmap lines) from RTP port `rtp`.
    pub fn invite(&self, user: &str, formats: &str, rtpmaps: &str, rtp: u16) {
        let local = self.local();
        let sdp = format!(
            "v=0\r\no=bare 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
             m=audio {rtp} RTP/AVP {formats}\r\n{rtpmaps}a=sendrecv\r\n"
        );
        let request = format!(
            "INVITE sip:{user}@127.0.0.1:5060 SIP/2.0\r\n\
             Via: SIP/2.0/UDP {local};branch=z9hG4bK-{}-1;rport\r\n\
             From: <sip:bare@{local}>;tag={}\r\nTo: <sip:{user}@127.0.0.1>\r\n\
             Call-ID: {}\r\nCSeq: 1 INVITE\r\nContact: <sip:bare@{local}>\r\n\
             Max-Forwards: 70\r\nContent-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{sdp}",
            self.call_id,
            self.tag,
            self.call_id,
            sdp.len()
        );
        self.send(&request);
    }

    /// ACKs a 2xx whose To tag is `to_tag`.
    pub fn ack(&self, user: &str, to_tag: &str) {
        let local = self.local();
        let request = format!(
            "ACK sip:{user}@127.0.0.1:5060 SIP/2.0\r\n\
             Via: SIP/2.0/UDP {local};branch=z9hG4bK-{}-ack\r\n\
             From: <sip:bare@{local}>;tag={}\r\nTo: <sip:{user}@127.0.0.1>;tag={to_tag}\r\n\
             Call-ID: {}\r\nCSeq: 1 ACK\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n",
            self.call_id, self.tag, self.call_id
        );
        self.send(&request);
    }

    /// Sends an INFO in the dialog (To tag `to_tag`) with a body of `content_type`.
    pub fn info(&self, user: &str, to_tag: &str, cseq: u32, content_type: &str, body: &str) {
        let local = self.local();
        let request = format!(
            "INFO sip:{user}@127.0.0.1:5060 SIP/2.0\r\n\
             Via: SIP/2.0/UDP {local};branch=z9hG4bK-{}-info{cseq}\r\n\
             From: <sip:bare@{local}>;tag={}\r\nTo: <sip:{user}@127.0.0.1>;tag={to_tag}\r\n\
             Call-ID: {}\r\nCSeq: {cseq} INFO\r\nMax-Forwards: 70\r\n\
             Content-Type: {content_type}\r\nContent-Length: {}\r\n\r\n{body}",
            self.call_id,
            self.tag,
            self.call_id,
            body.len()
        );
        self.send(&request);
    }

    pub fn send(&self, text: &str) {
        self.socket
            .send_to(text.as_bytes(), self.server)
            .expect("send SIP");
    }

    /// The messages that arrive within `within`, as (when, first line, whole text).
    pub fn receive(&self, within: Duration) -> Vec<(Instant, String)> {
        let deadline = Instant::now() + within;
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        while Instant::now() < deadline {
            if let Ok((n, _)) = self.socket.recv_from(&mut buf) {
                got.push((
                    Instant::now(),
                    String::from_utf8_lossy(&buf[..n]).into_owned(),
                ));
            }
        }
        got
    }

    /// The first message starting with `start` within `within` (others are passed over).
    pub fn wait_for(&self, start: &str, within: Duration) -> String {
        let deadline = Instant::now() + within;
        let mut buf = [0u8; 4096];
        while Instant::now() < deadline {
            if let Ok((n, _)) = self.socket.recv_from(&mut buf) {
                let text = String::from_utf8_lossy(&buf[..n]).into_owned();
                if text.starts_with(start) {
                    return text;
                }
            }
        }
        panic!("no {start:?} within {within:?}");
    }

    /// Answers a request (a BYE) with 200, echoing its dialog headers.
    pub fn ok(&self, request: &str) {
        let headers = echoed(request, "");
        self.send(&format!(
            "SIP/2.0 200 OK\r\n{headers}Content-Length: 0\r\n\r\n"
        ));
    }

    /// Answers a call to us (`invite`) with 200, our tag and an SDP of PCMU from RTP port `rtp`.
    pub fn answer(&self, invite: &str, rtp: u16) {
        let local = self.local();
        let sdp = format!(
            "v=0\r\no=bare 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
             m=audio {rtp} RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\na=sendrecv\r\n"
        );
        let headers = echoed(invite, &self.tag);
        self.send(&format!(
            "SIP/2.0 200 OK\r\n{headers}Contact: <sip:bare@{local}>\r\n\
             Content-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{sdp}",
            sdp.len()
        ));
    }

    /// Sends an INFO with a body of `content_type` in the dialog of a call to us (`invite`,
    /// answered with [`BareUa::answer`]): its From is our To, to its Contact.
    pub fn info_back(&self, invite: &str, cseq: u32, content_type: &str, body: &str) {
        let local = self.local();
        let header = |name: &str| {
            invite
                .lines()
                .find_map(|l| {
                    let (n, v) = l.split_once(':')?;
                    n.trim().eq_ignore_ascii_case(name).then(|| v.trim())
                })
                .unwrap_or_else(|| panic!("no {name} in {invite}"))
        };
        let contact = header("Contact");
        let target = contact
            .split(['<', '>'])
            .find(|part| part.starts_with("sip"))
            .unwrap_or(contact);
        let call_id = header("Call-ID");
        let request = format!(
            "INFO {target} SIP/2.0\r\n\
             Via: SIP/2.0/UDP {local};branch=z9hG4bK-{call_id}-info{cseq}\r\n\
             From: {};tag={}\r\nTo: {}\r\nCall-ID: {call_id}\r\nCSeq: {cseq} INFO\r\n\
             Max-Forwards: 70\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\r\n{body}",
            header("To"),
            self.tag,
            header("From"),
            body.len()
        );
        self.send(&request);
    }
}

/// A request's Via, From, To, Call-ID and CSeq lines for its response; `tag`, when not empty,
/// is added to To.
fn echoed(request: &str, tag: &str) -> String {
    request
        .lines()
        .filter_map(|l| {
            let lower = l.to_ascii_lowercase();
            if lower.starts_with("to:") && !tag.is_empty() {
                return Some(format!("{l};tag={tag}\r\n"));
            }
            ["via:", "from:", "to:", "call-id:", "cseq:"]
                .iter()
                .any(|h| lower.starts_with(h))
                .then(|| format!("{l}\r\n"))
        })
        .collect()
}

/// The To tag of a response.
pub fn to_tag(message: &str) -> Option<String> {
    let to = message
        .lines()
        .find(|l| l.to_ascii_lowercase().starts_with("to:"))?;
    let at = to.find("tag=")? + 4;
    Some(
        to[at..]
            .split([';', '>', ' '])
            .next()
            .unwrap_or_default()
            .trim()
            .to_string(),
    )
}

/// SIPp as a callee or registrar of tests/sip (a `uas_*.xml` scenario) on SIP port `sip_port`
/// and media port `media_port`, for the server to call or register with, with `extra`
/// arguments; it exits after one call (or registration), 255 after 30 s without one.
pub fn sipp_uas(
    dir: &Path,
    scenario: &str,
    sip_port: u16,
    media_port: u16,
    extra: &[&str],
) -> Child {
    sipp_command(dir, scenario, sip_port, media_port)
        .args(["-timeout", "30", "-timeout_error"])
        .args(extra)
        .spawn()
        .expect("run sipp (Debian's sip-tester)")
}
