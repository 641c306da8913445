//! HTTP basic authentication against the broker's users, and what each management tag
//! may see (RabbitMQ's management plugin): `management` sees the vhosts it has
//! permissions in; `policymaker` also manages policies there; `monitoring` sees every
//! vhost, connection and node; `administrator` does everything, users included.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use warren_broker::access::{Grant, User};

use crate::error::{ApiError, ApiResult};
use crate::AppState;

/// An authenticated management user.
#[derive(Debug, Clone)]
pub struct Caller {
    /// The user.
    pub user: User,
    state: AppState,
}

const MANAGEMENT_TAGS: [&str; 4] = ["management", "policymaker", "monitoring", "administrator"];

impl Caller {
    /// The user name.
    pub fn name(&self) -> &str {
        &self.user.name
    }

    /// Tagged administrator.
    pub fn is_admin(&self) -> bool {
        self.user.has_tag("administrator")
    }

    /// Tagged monitoring (or administrator): sees everything.
    pub fn is_monitor(&self) -> bool {
        self.is_admin() || self.user.has_tag("monitoring")
    }

    /// Tagged policymaker (or administrator).
    pub fn is_policymaker(&self) -> bool {
        self.is_admin() || self.user.has_tag("policymaker")
    }

    /// Requires the administrator tag.
    ///
    /// # Errors
    /// 401 `not_authorised`.
    pub fn require_admin(&self) -> ApiResult<()> {
        if self.is_admin() {
            Ok(())
        } else {
            Err(ApiError::not_authorised("Not administrator user"))
        }
    }

    /// Requires the monitoring tag (or administrator).
    ///
    /// # Errors
    /// 401 `not_authorised`.
    pub fn require_monitor(&self) -> ApiResult<()> {
        if self.is_monitor() {
            Ok(())
        } else {
            Err(ApiError::not_authorised("Not monitor user"))
        }
    }

    /// Whether the user may see `vhost` (monitors see all; others need permissions).
    pub fn sees_vhost(&self, vhost: &str) -> bool {
        self.is_monitor() || self.grant(vhost).is_some()
    }

    /// The user's permissions in `vhost`. As in RabbitMQ (whose management plugin acts
    /// through a connection of the user), administrators need permissions for resource
    /// operations too.
    pub fn grant(&self, vhost: &str) -> Option<Grant> {
        self.state
            .admin
            .access()
            .grant(&self.user.name, vhost, None)
    }

    /// Requires access to `vhost` for resource operations (declare, delete, publish,
    /// get): the user's permissions there.
    ///
    /// # Errors
    /// 404 for a missing vhost, 401 `not_authorised` without permissions.
    pub fn vhost_grant(&self, vhost: &str) -> ApiResult<Grant> {
        if self.state.admin.broker().vhost(vhost).is_none() {
            return Err(ApiError::vhost_not_found());
        }
        self.grant(vhost)
            .ok_or_else(|| ApiError::not_authorised("Access refused."))
    }
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let header = parts
            .headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .ok_or_else(ApiError::login_failed)?;
        let encoded = header
            .strip_prefix("Basic ")
            .or_else(|| header.strip_prefix("basic "))
            .ok_or_else(ApiError::login_failed)?;
        let decoded = STANDARD
            .decode(encoded.trim())
            .ok()
            .and_then(|b| String::from_utf8(b).ok())
            .ok_or_else(ApiError::login_failed)?;
        let (name, password) = decoded.split_once(':').ok_or_else(ApiError::login_failed)?;
        let user = match state.admin.access().check_password(name, password) {
            Ok(u) => u,
            Err(why) => {
                tracing::warn!(user = %name, reason = why.reason(), "HTTP API login refused");
                return Err(ApiError::login_failed());
            }
        };
        if state
            .admin
            .config()
            .auth
            .loopback_users
            .contains(&user.name)
        {
            let local = parts
                .extensions
                .get::<axum::extract::ConnectInfo<crate::PeerAddr>>()
                .map(|c| warren_server::auth::is_loopback(c.0 .0.ip()))
                .unwrap_or(false);
            if !local {
                return Err(ApiError::login_failed());
            }
        }
        if !MANAGEMENT_TAGS.iter().any(|t| user.has_tag(t)) {
            return Err(ApiError::not_management_user());
        }
        Ok(Caller {
            user,
            state: state.clone(),
        })
    }
}
