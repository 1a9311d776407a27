//! The API's one error type and its HTTP form: `{"error": {"code", "message", "field"}}`.
//! 5xx answers never carry internal error text; the cause is logged once, here.

use axum::{
    Json,
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use std::sync::Arc;

use herald_core::{
    domain::FieldError,
    queue::QueueError,
    services::{
        appointments::AppointmentError, dead_letters::ReplayError, groups::GroupError,
        messages::CreateError, tenants::TenantError,
    },
};
use serde::Serialize;
use tracing::{error, warn};

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    pub field: Option<String>,
    /// Seconds for `Retry-After` (429 and 503).
    pub retry_after: Option<u64>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct ErrorDetail {
    /// A stable snake_case code, e.g. `invalid_value`.
    pub code: &'static str,
    /// A sentence a person can act on.
    pub message: String,
    /// The field at fault, when one is.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            field: None,
            retry_after: None,
        }
    }

    pub fn field(mut self, field: impl Into<String>) -> Self {
        self.field = Some(field.into());
        self
    }

    /// 422: a value that fails validation, or JSON of the wrong shape.
    pub fn invalid(
        code: &'static str,
        field: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, code, message).field(field)
    }

    pub fn not_found(what: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("{what} not found"),
        )
    }

    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
    }

    pub fn forbidden(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, code, message)
    }

    pub fn conflict(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, code, message)
    }

    pub fn unavailable(what: &str) -> Self {
        let mut e = Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            format!("{what} is unavailable right now; try again shortly"),
        );
        e.retry_after = Some(5);
        e
    }

    /// 500 with an opaque message; the cause goes to the log only.
    pub fn internal(cause: &dyn std::fmt::Display) -> Self {
        error!(error = %cause, "internal error");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "something went wrong on our side; it has been logged",
        )
    }
}

/// A 422 for a field only a service could check.
impl From<FieldError> for ApiError {
    fn from(e: FieldError) -> Self {
        Self::invalid(e.code, e.field, e.message)
    }
}

/// Something failed that the caller cannot fix: 503 when Postgres or Redis is unreachable
/// (anywhere in the cause chain), else 500. Logged here, once, with the whole chain.
impl From<anyhow::Error> for ApiError {
    fn from(e: anyhow::Error) -> Self {
        let db_down = e.chain().any(|c| {
            c.downcast_ref::<sqlx::Error>()
                .or_else(|| c.downcast_ref::<Arc<sqlx::Error>>().map(|a| &**a))
                .is_some_and(herald_core::store::is_unavailable)
        });
        if db_down {
            warn!(error = format!("{e:#}"), "postgres unavailable");
            return Self::unavailable("the database");
        }
        let redis_down = e.chain().any(|c| {
            matches!(
                c.downcast_ref::<QueueError>(),
                Some(QueueError::Redis(_) | QueueError::Timeout(_))
            )
        });
        if redis_down {
            warn!(error = format!("{e:#}"), "redis unavailable");
            return Self::unavailable("the queue");
        }
        Self::internal(&format!("{e:#}"))
    }
}

impl From<CreateError> for ApiError {
    fn from(e: CreateError) -> Self {
        match e {
            CreateError::IdempotencyConflict => idempotency_key_reused(),
            CreateError::Invalid(e) => e.into(),
            CreateError::Unexpected(e) => e.into(),
        }
    }
}

impl From<GroupError> for ApiError {
    fn from(e: GroupError) -> Self {
        match e {
            GroupError::NotFound => Self::not_found("group"),
            GroupError::IdempotencyConflict => idempotency_key_reused(),
            GroupError::Invalid(e) => e.into(),
            GroupError::Unexpected(e) => e.into(),
        }
    }
}

impl From<AppointmentError> for ApiError {
    fn from(e: AppointmentError) -> Self {
        match e {
            AppointmentError::Invalid(e) => e.into(),
            AppointmentError::Deleted => {
                Self::conflict("appointment_deleted", "this appointment was deleted")
            }
            AppointmentError::Unexpected(e) => e.into(),
        }
    }
}

impl From<TenantError> for ApiError {
    fn from(e: TenantError) -> Self {
        match e {
            TenantError::SmsFromTaken => Self::conflict(
                "sms_from_taken",
                "another tenant already sends from this number; inbound texts must name one tenant",
            )
            .field("sms_from"),
            TenantError::Unexpected(e) => e.into(),
        }
    }
}

impl From<ReplayError> for ApiError {
    fn from(e: ReplayError) -> Self {
        match e {
            ReplayError::Unexpected(e) => e.into(),
        }
    }
}

fn idempotency_key_reused() -> ApiError {
    ApiError::conflict(
        "idempotency_key_reused",
        "this Idempotency-Key was already used with a different request body",
    )
    .field("Idempotency-Key")
}

impl From<sqlx::Error> for ApiError {
    fn from(e: sqlx::Error) -> Self {
        if herald_core::store::is_unavailable(&e) {
            tracing::warn!(error = %e, "postgres unavailable");
            Self::unavailable("the database")
        } else {
            Self::internal(&e)
        }
    }
}

impl From<std::sync::Arc<sqlx::Error>> for ApiError {
    fn from(e: std::sync::Arc<sqlx::Error>) -> Self {
        if herald_core::store::is_unavailable(&e) {
            tracing::warn!(error = %e, "postgres unavailable");
            Self::unavailable("the database")
        } else {
            Self::internal(&e)
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: ErrorDetail {
                code: self.code,
                message: self.message,
                field: self.field,
            },
        };
        let mut response = (self.status, Json(body)).into_response();
        if let Some(secs) = self.retry_after
            && let Ok(v) = HeaderValue::from_str(&secs.to_string())
        {
            response.headers_mut().insert(header::RETRY_AFTER, v);
        }
        response
    }
}

pub type ApiResult<T> = Result<T, ApiError>;

#[cfg(test)]
mod tests {
    use anyhow::Context;

    use super::*;

    #[test]
    fn an_unexpected_error_is_503_when_a_dependency_is_down_anywhere_in_its_chain_else_500() {
        let db_down: anyhow::Result<()> =
            Err(sqlx::Error::PoolTimedOut).context("inserting the message");
        let e = ApiError::from(db_down.unwrap_err());
        assert_eq!(e.status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(e.retry_after, Some(5));

        let batched: anyhow::Result<()> =
            Err(Arc::new(sqlx::Error::PoolClosed)).context("a batched insert");
        assert_eq!(
            ApiError::from(batched.unwrap_err()).status,
            StatusCode::SERVICE_UNAVAILABLE
        );

        let redis: anyhow::Result<()> = Err(QueueError::Timeout(std::time::Duration::from_secs(1)))
            .context("queueing the reminders");
        let e = ApiError::from(redis.unwrap_err());
        assert_eq!(e.status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(e.message.contains("queue"), "{}", e.message);

        let bug: anyhow::Result<()> = Err(sqlx::Error::RowNotFound).context("reading a row");
        let e = ApiError::from(bug.unwrap_err());
        assert_eq!(e.status, StatusCode::INTERNAL_SERVER_ERROR);
        assert!(
            !e.message.contains("row"),
            "a 500 never carries internal text"
        );
    }

    #[test]
    fn service_errors_keep_the_contracts_codes() {
        let e = ApiError::from(CreateError::IdempotencyConflict);
        assert_eq!(
            (e.status, e.code),
            (StatusCode::CONFLICT, "idempotency_key_reused")
        );
        assert_eq!(e.field.as_deref(), Some("Idempotency-Key"));
        let e = ApiError::from(GroupError::Invalid(FieldError::new(
            "channel",
            "sms_from_not_configured",
            "no sender",
        )));
        assert_eq!(e.status, StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(e.field.as_deref(), Some("channel"));
        assert_eq!(
            ApiError::from(GroupError::NotFound).status,
            StatusCode::NOT_FOUND
        );
        let e = ApiError::from(TenantError::SmsFromTaken);
        assert_eq!((e.status, e.code), (StatusCode::CONFLICT, "sms_from_taken"));
        let e = ApiError::from(AppointmentError::Deleted);
        assert_eq!(e.code, "appointment_deleted");
    }
}
