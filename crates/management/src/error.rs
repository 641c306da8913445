//! RabbitMQ's error replies: a status and `{"error": ..., "reason": ...}`.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;
use warren_broker::access::AdminError;

/// An error reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// `error` field.
    pub error: String,
    /// `reason` field.
    pub reason: String,
}

impl ApiError {
    /// 400 `bad_request` with a reason.
    pub fn bad_request(reason: impl Into<String>) -> Self {
        ApiError {
            status: StatusCode::BAD_REQUEST,
            error: "bad_request".into(),
            reason: reason.into(),
        }
    }

    /// 404 as RabbitMQ answers a missing object.
    pub fn not_found() -> Self {
        ApiError {
            status: StatusCode::NOT_FOUND,
            error: "Object Not Found".into(),
            reason: "Not Found".into(),
        }
    }

    /// 404 for a missing vhost in a write (RabbitMQ: `not_found` / `vhost_not_found`).
    pub fn vhost_not_found() -> Self {
        ApiError {
            status: StatusCode::NOT_FOUND,
            error: "not_found".into(),
            reason: "vhost_not_found".into(),
        }
    }

    /// 401 for missing or wrong credentials.
    pub fn login_failed() -> Self {
        ApiError {
            status: StatusCode::UNAUTHORIZED,
            error: "not_authorized".into(),
            reason: "Login failed".into(),
        }
    }

    /// 401 for a user without a management tag (RabbitMQ says 401 here too).
    pub fn not_management_user() -> Self {
        ApiError {
            status: StatusCode::UNAUTHORIZED,
            error: "not_authorised".into(),
            reason: "Not management user".into(),
        }
    }

    /// 401 for a user whose tags do not allow this operation.
    pub fn not_authorised(reason: impl Into<String>) -> Self {
        ApiError {
            status: StatusCode::UNAUTHORIZED,
            error: "not_authorised".into(),
            reason: reason.into(),
        }
    }

    /// 500 for an engine failure.
    pub fn internal(reason: impl Into<String>) -> Self {
        ApiError {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            error: "internal_server_error".into(),
            reason: reason.into(),
        }
    }

    /// An engine error, as the management plugin reports it.
    pub fn engine(e: warren_broker::Error) -> Self {
        use warren_broker::Error as E;
        match &e {
            E::QueueNotFound { .. } | E::ExchangeNotFound { .. } => ApiError::not_found(),
            E::AccessRefused { .. } | E::TopicAccessRefused { .. } => ApiError {
                status: StatusCode::UNAUTHORIZED,
                error: "not_authorised".into(),
                reason: e.to_string(),
            },
            E::Storage(_) => ApiError::internal(e.to_string()),
            _ => ApiError::bad_request(e.to_string()),
        }
    }

    /// An administrative error.
    pub fn admin(e: AdminError) -> Self {
        match &e {
            AdminError::NoSuchUser(_) | AdminError::NoSuchVHost(_) | AdminError::NotFound(_) => {
                ApiError::not_found()
            }
            AdminError::Storage(_) => ApiError::internal(e.to_string()),
            _ => ApiError::bad_request(e.to_string()),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut r = (
            self.status,
            axum::Json(json!({"error": self.error, "reason": self.reason})),
        )
            .into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            r.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"RabbitMQ Management\""),
            );
        }
        r
    }
}

/// A handler's result.
pub type ApiResult<T> = Result<T, ApiError>;
