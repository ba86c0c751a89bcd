//! Why a request failed, in one type for every way a request arrives: signalling answers with
//! it over the WebSocket, and every HTTP API (WHIP/WHEP, the admin API, the cluster API on the
//! gateway and on the media server) answers with it as one JSON body, `{"error": "<why>"}`,
//! whose status says the kind. A gateway reads a media server's error back from that body and
//! status (`switchyard_cluster::api::error_from_status`), so both ends use [`ErrorBody`].

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use switchyard_dataplane::spec;
use switchyard_store::StoreError;

use crate::token::TokenError;

/// Why a request failed; the message is shown to the caller.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    BadRequest(String),
    /// A client token that is missing, malformed, expired or does not grant the request.
    #[error("{0}")]
    Unauthorized(#[from] TokenError),
    /// The admin API's `X-API-Key` is missing or wrong.
    #[error("{0}")]
    BadApiKey(&'static str),
    /// The caller's address is not allowed to use the API it called.
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    NotFound(String),
    /// What the request was about went away while it was being done.
    #[error("{0}")]
    Gone(String),
    /// A WHIP/WHEP offer that is not `application/sdp`.
    #[error("{0}")]
    UnsupportedMediaType(&'static str),
    #[error("media server: {0}")]
    Media(#[from] spec::Error),
    /// No media server can take the request now (none registered, or one did not answer), or
    /// Redis is unreachable.
    #[error("{0}")]
    Unavailable(String),
    /// The configuration store refused a change or could not be reached.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl Error {
    pub fn status(&self) -> StatusCode {
        match self {
            Error::BadRequest(_) => StatusCode::BAD_REQUEST,
            Error::Unauthorized(TokenError::Signing(_)) => StatusCode::INTERNAL_SERVER_ERROR,
            Error::Unauthorized(_) | Error::BadApiKey(_) => StatusCode::UNAUTHORIZED,
            Error::Forbidden(_) => StatusCode::FORBIDDEN,
            Error::NotFound(_) => StatusCode::NOT_FOUND,
            Error::Gone(_) => StatusCode::CONFLICT,
            Error::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Error::Media(spec::Error::Busy(_)) => StatusCode::SERVICE_UNAVAILABLE,
            Error::Media(_) => StatusCode::INTERNAL_SERVER_ERROR,
            Error::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            Error::Store(StoreError::Invalid(_)) => StatusCode::BAD_REQUEST,
            Error::Store(StoreError::NotFound { .. }) => StatusCode::NOT_FOUND,
            Error::Store(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// The label counted in `switchyard_signalling_errors_total`.
    pub fn metric(&self) -> &'static str {
        match self {
            Error::BadRequest(_) | Error::UnsupportedMediaType(_) => "bad_request",
            Error::Unauthorized(_) | Error::BadApiKey(_) => "unauthorized",
            Error::Forbidden(_) => "forbidden",
            Error::NotFound(_) => "not_found",
            Error::Gone(_) => "gone",
            Error::Media(_) => "media",
            Error::Unavailable(_) => "unavailable",
            Error::Store(_) => "store",
        }
    }

    /// The same answer as text/plain, for the two endpoints whose clients show the body as it
    /// is: WHIP/WHEP (encoders and players log it; RFC 9725 leaves the format open, and ours
    /// has always been text) and `/api/dev-token` (the demo page prints it).
    pub fn into_text_response(self) -> Response {
        let response = (
            self.status(),
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            format!("{self}\n"),
        )
            .into_response();
        self.with_headers(response)
    }

    /// A refused token asks for a bearer token (RFC 6750), whatever the body.
    fn with_headers(&self, mut response: Response) -> Response {
        if let Error::Unauthorized(_) = self
            && response.status() == StatusCode::UNAUTHORIZED
        {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}

/// The body of every JSON error response.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: String,
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: self.to_string(),
        };
        let response = (self.status(), Json(body)).into_response();
        self.with_headers(response)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn body(response: Response) -> String {
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 16)
            .await
            .unwrap();
        String::from_utf8(bytes.to_vec()).unwrap()
    }

    #[tokio::test]
    async fn one_json_body_with_the_status_of_the_kind() {
        for (e, status) in [
            (Error::BadRequest("bad offer: x".into()), 400),
            (Error::Unauthorized(TokenError::Expired), 401),
            (Error::BadApiKey("the X-API-Key is not valid"), 401),
            (Error::Forbidden("10.0.0.1 may not".into()), 403),
            (Error::NotFound("no such".into()), 404),
            (Error::Gone("gone".into()), 409),
            (Error::UnsupportedMediaType("expected SDP"), 415),
            (Error::Media(spec::Error::Busy(0)), 503),
            (Error::Media(spec::Error::Stopped), 500),
            (Error::Unavailable("no media server".into()), 503),
            (
                Error::Store(StoreError::NotFound {
                    kind: "application",
                    id: "a".into(),
                }),
                404,
            ),
        ] {
            let message = e.to_string();
            let response = e.into_response();
            assert_eq!(response.status().as_u16(), status, "{message}");
            assert_eq!(
                response.headers()[header::CONTENT_TYPE],
                "application/json",
                "{message}"
            );
            let parsed: ErrorBody = serde_json::from_str(&body(response).await).unwrap();
            assert_eq!(parsed.error, message);
        }
    }

    #[tokio::test]
    async fn text_for_clients_that_print_it_and_bearer_for_tokens() {
        let response = Error::BadRequest("bad offer: no m-line".into()).into_text_response();
        assert_eq!(response.status(), StatusCode::BAD_REQUEST);
        assert!(!response.headers().contains_key(header::WWW_AUTHENTICATE));
        assert_eq!(body(response).await, "bad offer: no m-line\n");

        let response = Error::Unauthorized(TokenError::BadSignature).into_text_response();
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(response.headers()[header::WWW_AUTHENTICATE], "Bearer");
        let json = Error::Unauthorized(TokenError::Expired).into_response();
        assert_eq!(json.headers()[header::WWW_AUTHENTICATE], "Bearer");
        let signing = Error::Unauthorized(TokenError::Signing("x".into())).into_response();
        assert_eq!(signing.status(), StatusCode::INTERNAL_SERVER_ERROR);
        assert!(!signing.headers().contains_key(header::WWW_AUTHENTICATE));
    }
}
