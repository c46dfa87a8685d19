//! `ApiError` owns the mapping to HTTP status codes and hides internals: storage errors are logged
//! with their detail and answered with a generic message.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use crate::storage::StorageError;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{message}")]
    BadRequest { code: &'static str, message: String },
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    TooLarge(String),
    #[error("{0}")]
    Unavailable(String),
    /// 401: no token, or one that is unknown, expired or revoked. `invalid_token`: a token was
    /// presented (RFC 6750's `error="invalid_token"` in the challenge).
    #[error("{message}")]
    Unauthorized {
        message: String,
        invalid_token: bool,
    },
    /// 403: a valid token that may not do this (a scope it lacks, or another team's data).
    #[error("{message}")]
    Forbidden {
        message: String,
        /// The scope the route needs, when that is what is missing.
        missing_scope: Option<&'static str>,
    },
    #[error("storage failed")]
    Storage(#[from] StorageError),
    /// A failure inside sigloop whose detail is logged where it happens.
    #[error("internal error")]
    Internal,
}

impl From<crate::ingest::IngestError> for ApiError {
    fn from(error: crate::ingest::IngestError) -> ApiError {
        match error {
            crate::ingest::IngestError::Storage(error) => ApiError::Storage(error),
            crate::ingest::IngestError::Kafka(error) => {
                tracing::error!(error = %error, "The broker did not acknowledge a request's events.");
                ApiError::Unavailable(
                    "the event broker did not acknowledge the events; retry the request".to_owned(),
                )
            }
        }
    }
}

impl ApiError {
    /// 401 for a token that was presented but is not valid.
    pub fn unauthorized(message: impl Into<String>) -> ApiError {
        ApiError::Unauthorized {
            message: message.into(),
            invalid_token: true,
        }
    }

    /// 403 for a token that may not see or do this, whatever its scopes.
    pub fn forbidden(message: impl Into<String>) -> ApiError {
        ApiError::Forbidden {
            message: message.into(),
            missing_scope: None,
        }
    }

    pub fn bad_request(code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError::BadRequest {
            code,
            message: message.into(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code, message) = match &self {
            ApiError::BadRequest { code, message } => {
                (StatusCode::BAD_REQUEST, *code, message.clone())
            }
            ApiError::NotFound(message) => (StatusCode::NOT_FOUND, "not_found", message.clone()),
            ApiError::Conflict(message) => {
                (StatusCode::CONFLICT, "illegal_transition", message.clone())
            }
            ApiError::TooLarge(message) => {
                (StatusCode::PAYLOAD_TOO_LARGE, "too_large", message.clone())
            }
            ApiError::Unavailable(message) => (
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                message.clone(),
            ),
            ApiError::Storage(error) => {
                tracing::error!(error = %error, "A request failed in storage.");
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal",
                    "the request failed inside sigloop; nothing of it was stored".to_owned(),
                )
            }
            ApiError::Internal => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "the request failed inside sigloop".to_owned(),
            ),
            ApiError::Unauthorized { message, .. } => {
                (StatusCode::UNAUTHORIZED, "unauthorized", message.clone())
            }
            ApiError::Forbidden { message, .. } => {
                (StatusCode::FORBIDDEN, "forbidden", message.clone())
            }
        };
        let mut response = (
            status,
            Json(json!({"error": {"code": code, "message": message}})),
        )
            .into_response();
        // RFC 6750: a 401 names the scheme it wants, and says when the token presented was bad; a
        // 403 for a missing scope names it.
        let challenge = match &self {
            ApiError::Unauthorized {
                invalid_token: false,
                ..
            } => Some(r#"Bearer realm="sigloop""#.to_owned()),
            ApiError::Unauthorized {
                invalid_token: true,
                ..
            } => Some(r#"Bearer realm="sigloop", error="invalid_token""#.to_owned()),
            ApiError::Forbidden {
                missing_scope: Some(scope),
                ..
            } => Some(format!(
                r#"Bearer realm="sigloop", error="insufficient_scope", scope="{scope}""#
            )),
            _ => None,
        };
        if let Some(challenge) = challenge.and_then(|text| HeaderValue::from_str(&text).ok()) {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, challenge);
        }
        response
    }
}

/// The JSON error shape for a response that something other than a handler produced (the timeout
/// layer's empty 503, axum's plain-text rejections): the code from the status, a message that says
/// nothing of sigloop's insides.
pub fn error_for_status(status: StatusCode, request_timeout_secs: u64) -> Response {
    let (code, message) = match status {
        StatusCode::SERVICE_UNAVAILABLE | StatusCode::REQUEST_TIMEOUT => (
            "timeout",
            format!(
                "sigloop did not answer within {request_timeout_secs} s (server.request_timeout_secs); \
                 the request may or may not have taken effect (a repeated POST /v1/events is \
                 deduplicated by event id)"
            ),
        ),
        StatusCode::PAYLOAD_TOO_LARGE => ("too_large", "the request body is too large".to_owned()),
        StatusCode::NOT_FOUND => ("not_found", "no such route".to_owned()),
        StatusCode::METHOD_NOT_ALLOWED => (
            "method_not_allowed",
            "this route does not take that method".to_owned(),
        ),
        StatusCode::UNSUPPORTED_MEDIA_TYPE => (
            "unsupported_media_type",
            "the request's content type is not one this route takes".to_owned(),
        ),
        status if status.is_client_error() => (
            "bad_request",
            format!(
                "the request was refused: {}",
                status.canonical_reason().unwrap_or("bad request")
            ),
        ),
        _ => ("internal", "the request failed inside sigloop".to_owned()),
    };
    (
        status,
        Json(json!({"error": {"code": code, "message": message}})),
    )
        .into_response()
}
