//! The operator's console, `/admin` on the admin listener: one static page (HTML, CSS and a
//! script, compiled into the binary like the demo page) that reads and acts only through the
//! admin API with the key the operator types in. The page holds no data, so it is served
//! without the key, but only to `ADMIN:IPADDRESSES` like the API: nobody else learns that a
//! console is there.

use std::sync::Arc;

use axum::Router;
use axum::http::header;
use axum::middleware;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use switchyard_controlplane::allowlist::{Guarded, guard};

const PAGE: &str = include_str!("../../../../web/console/index.html");
const SCRIPT: &str = include_str!("../../../../web/console/console.js");
const STYLE: &str = include_str!("../../../../web/console/console.css");

/// Scripts and styles from this origin only (no inline code, so injected markup cannot run),
/// API calls to this origin only, and never inside a frame (no clickjacking of the drain and
/// kick buttons).
const POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'";

fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "no-cache"),
            (header::CONTENT_SECURITY_POLICY, POLICY),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::REFERRER_POLICY, "no-referrer"),
        ],
        body,
    )
        .into_response()
}

async fn page() -> Response {
    asset("text/html; charset=utf-8", PAGE)
}

async fn script() -> Response {
    asset("text/javascript; charset=utf-8", SCRIPT)
}

async fn style() -> Response {
    asset("text/css; charset=utf-8", STYLE)
}

/// `/admin` (and `/admin/`) and its two files, for callers `allowed` lets in.
pub fn routes(allowed: Arc<Guarded>) -> Router {
    Router::new()
        .route("/admin", get(page))
        .route("/admin/", get(page))
        .route("/admin/console.js", get(script))
        .route("/admin/console.css", get(style))
        .route_layer(middleware::from_fn_with_state(allowed, guard))
}

// ok: every unwrap() below is in this test-only module, on values the tests built
#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use axum::body::Body;
    use axum::extract::ConnectInfo;
    use axum::http::{Request, StatusCode};
    use switchyard_controlplane::allowlist::AllowList;
    use tower::ServiceExt;

    use super::*;

    async fn get(path: &str, from: &str) -> Response {
        let allowed = Arc::new(Guarded {
            api: "the admin API",
            setting: "ADMIN:IPADDRESSES",
            allow: AllowList::parse("127.0.0.1/32").unwrap(),
        });
        let mut request = Request::new(Body::empty());
        *request.uri_mut() = path.parse().unwrap();
        let from: SocketAddr = from.parse().unwrap();
        request.extensions_mut().insert(ConnectInfo(from));
        routes(allowed).oneshot(request).await.unwrap()
    }

    #[tokio::test]
    async fn served_without_a_key_to_the_admin_addresses_only() {
        for (path, kind) in [
            ("/admin", "text/html"),
            ("/admin/", "text/html"),
            ("/admin/console.js", "text/javascript"),
            ("/admin/console.css", "text/css"),
        ] {
            let r = get(path, "127.0.0.1:5000").await;
            assert_eq!(r.status(), StatusCode::OK, "{path}");
            let header = |h| r.headers().get(h).unwrap().to_str().unwrap();
            assert!(header(header::CONTENT_TYPE).starts_with(kind), "{path}");
            assert!(header(header::CONTENT_SECURITY_POLICY).contains("frame-ancestors 'none'"));
            assert_eq!(
                get(path, "192.0.2.1:5000").await.status(),
                StatusCode::FORBIDDEN,
                "{path}"
            );
        }
    }

    #[test]
    fn the_page_loads_its_files_by_absolute_path() {
        // `/admin` and `/admin/` are the same page: a relative URL would resolve differently.
        assert!(PAGE.contains(r#"src="/admin/console.js""#));
        assert!(PAGE.contains(r#"href="/admin/console.css""#));
        // The policy allows no inline script or style, so the page must have none.
        assert!(!PAGE.contains("<script>") && !PAGE.contains("style="));
    }
}
