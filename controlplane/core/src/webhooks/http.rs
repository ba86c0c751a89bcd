//! One webhook POST: a fresh HTTP/1.1 connection per delivery (deliveries are few, and a
//! receiver that went away is reached anew each retry), over TLS for `https` URLs, checked
//! against the Mozilla roots. On hyper and rustls with aws-lc-rs directly rather than reqwest,
//! which this workspace builds without TLS (see the workspace's Cargo.toml).

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::Request;
use hyper::header::{CONTENT_TYPE, HOST, USER_AGENT};
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use url::{Host, Position, Url};

/// The header that carries the body's signature, as LiveSwitch names it.
pub const SIGNATURE: &str = "X-ApplicationSignature";

/// How long one attempt may take, connecting included.
pub const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);

/// Posts webhook bodies.
#[derive(Clone)]
pub struct Client {
    tls: TlsConnector,
}

impl Client {
    /// A client that trusts the Mozilla roots (webpki-roots).
    pub fn new() -> Result<Client, rustls::Error> {
        let roots =
            rustls::RootCertStore::from_iter(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        Client::with_roots(roots)
    }

    /// A client that trusts `roots` only.
    pub fn with_roots(roots: rustls::RootCertStore) -> Result<Client, rustls::Error> {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let mut config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Client {
            tls: TlsConnector::from(Arc::new(config)),
        })
    }

    /// POSTs `body` (JSON) to `url` with its `signature`; the answer's status, or why there
    /// was none. Gives up after [`ATTEMPT_TIMEOUT`].
    pub async fn post(&self, url: &Url, signature: &str, body: Bytes) -> Result<u16, String> {
        tokio::time::timeout(ATTEMPT_TIMEOUT, self.attempt(url, signature, body))
            .await
            .map_err(|_| format!("no answer within {} s", ATTEMPT_TIMEOUT.as_secs()))?
    }

    async fn attempt(&self, url: &Url, signature: &str, body: Bytes) -> Result<u16, String> {
        let host = url.host().ok_or("the URL has no host")?;
        let port = url.port_or_known_default().ok_or("the URL has no port")?;
        let tcp = match &host {
            Host::Domain(name) => TcpStream::connect((*name, port)).await,
            Host::Ipv4(ip) => TcpStream::connect((*ip, port)).await,
            Host::Ipv6(ip) => TcpStream::connect((*ip, port)).await,
        }
        .map_err(|e| format!("cannot connect: {e}"))?;
        // Small requests: no point waiting to fill a segment.
        let _ = tcp.set_nodelay(true);
        let authority = match (url.host_str(), url.port()) {
            (Some(h), Some(p)) => format!("{h}:{p}"),
            (Some(h), None) => h.to_string(),
            (None, _) => String::new(),
        };
        let request = Request::post(&url[Position::BeforePath..Position::AfterQuery])
            .header(HOST, authority)
            .header(CONTENT_TYPE, "application/json")
            .header(
                USER_AGENT,
                concat!("switchyard/", env!("CARGO_PKG_VERSION")),
            )
            .header(SIGNATURE, signature)
            .body(Full::new(body))
            .map_err(|e| format!("cannot make the request: {e}"))?;
        if url.scheme() != "https" {
            return exchange(tcp, request).await;
        }
        let name = match host {
            Host::Domain(name) => {
                ServerName::try_from(name.to_string()).map_err(|e| format!("bad host name: {e}"))?
            }
            Host::Ipv4(ip) => ServerName::IpAddress(IpAddr::V4(ip).into()),
            Host::Ipv6(ip) => ServerName::IpAddress(IpAddr::V6(ip).into()),
        };
        let tls = self
            .tls
            .connect(name, tcp)
            .await
            .map_err(|e| format!("TLS: {e}"))?;
        exchange(tls, request).await
    }
}

/// Sends `request` on `io` and reads the answer's status; the body is not read.
async fn exchange<S>(io: S, request: Request<Full<Bytes>>) -> Result<u16, String>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .map_err(|e| format!("HTTP: {e}"))?;
    // The connection is driven beside the request, and dropped with it once the status is in.
    let driven = tokio::spawn(connection);
    let answer = sender.send_request(request).await;
    driven.abort();
    answer
        .map(|r| r.status().as_u16())
        .map_err(|e| format!("HTTP: {e}"))
}

// ok: every unwrap()/expect() below is in this test-only module, on values the tests built
#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    /// Reads one request (headers and a Content-Length body), answers `status`; returns the
    /// request's head and body.
    async fn answer_one<S: AsyncRead + AsyncWrite + Unpin>(
        mut s: S,
        status: u16,
    ) -> (String, Vec<u8>) {
        let mut raw = Vec::new();
        let mut buf = [0u8; 4096];
        let head_end = loop {
            let n = s.read(&mut buf).await.unwrap();
            assert!(n > 0, "closed before the request's end");
            raw.extend_from_slice(&buf[..n]);
            if let Some(i) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
        };
        let head = String::from_utf8_lossy(&raw[..head_end]).into_owned();
        let length: usize = head
            .lines()
            .find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.eq_ignore_ascii_case("content-length")
                    .then(|| v.trim().parse().unwrap())
            })
            .unwrap();
        while raw.len() < head_end + length {
            let n = s.read(&mut buf).await.unwrap();
            raw.extend_from_slice(&buf[..n]);
        }
        let answer =
            format!("HTTP/1.1 {status} X\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
        s.write_all(answer.as_bytes()).await.unwrap();
        s.shutdown().await.unwrap();
        (head, raw[head_end..].to_vec())
    }

    #[tokio::test]
    async fn posts_json_with_its_signature() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = tokio::spawn(async move {
            let (s, _) = listener.accept().await.unwrap();
            answer_one(s, 204).await
        });
        let url = Url::parse(&format!("http://127.0.0.1:{port}/hook?x=1")).unwrap();
        let client = Client::new().unwrap();
        let status = client
            .post(&url, "c2lnbmF0dXJl", Bytes::from_static(b"{\"a\":1}"))
            .await
            .unwrap();
        assert_eq!(status, 204);
        let (head, body) = server.await.unwrap();
        assert!(head.starts_with("POST /hook?x=1 HTTP/1.1\r\n"), "{head}");
        let header = |name: &str| {
            head.lines().find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.eq_ignore_ascii_case(name).then(|| v.trim().to_string())
            })
        };
        assert_eq!(header("content-type").as_deref(), Some("application/json"));
        assert_eq!(header(SIGNATURE).as_deref(), Some("c2lnbmF0dXJl"));
        assert_eq!(header("host"), Some(format!("127.0.0.1:{port}")));
        assert_eq!(body, b"{\"a\":1}");
    }

    #[tokio::test]
    async fn nobody_listening_is_an_error_not_a_hang() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        drop(listener);
        let url = Url::parse(&format!("http://127.0.0.1:{port}/")).unwrap();
        let e = Client::new()
            .unwrap()
            .post(&url, "s", Bytes::new())
            .await
            .unwrap_err();
        assert!(e.starts_with("cannot connect"), "{e}");
    }

    #[tokio::test]
    async fn https_checks_the_receivers_certificate() {
        let cert = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
        let der = cert.cert.der().clone();
        let key =
            rustls::pki_types::PrivateKeyDer::try_from(cert.signing_key.serialize_der()).unwrap();
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let server_config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![der.clone()], key)
            .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server_config));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = tokio::spawn(async move {
            // The first client does not trust the certificate and gives up in the handshake.
            let (s, _) = listener.accept().await.unwrap();
            assert!(acceptor.accept(s).await.is_err());
            let (s, _) = listener.accept().await.unwrap();
            let tls = acceptor.accept(s).await.unwrap();
            answer_one(tls, 200).await
        });
        let url = Url::parse(&format!("https://localhost:{port}/secure")).unwrap();
        let e = Client::new()
            .unwrap()
            .post(&url, "s", Bytes::from_static(b"{}"))
            .await
            .unwrap_err();
        assert!(e.starts_with("TLS"), "{e}");
        let mut roots = rustls::RootCertStore::empty();
        roots.add(der).unwrap();
        let trusting = Client::with_roots(roots).unwrap();
        let status = trusting
            .post(&url, "s", Bytes::from_static(b"{}"))
            .await
            .unwrap();
        assert_eq!(status, 200);
        let (head, _) = server.await.unwrap();
        assert!(head.starts_with("POST /secure HTTP/1.1"), "{head}");
    }
}
