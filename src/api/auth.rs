//! Access control: API tokens, their scopes and their team.
//!
//! With `[server] auth = "tokens"` every `/v1` route but the OpenAPI document sits behind
//! [`require`], a route layer that finds the request's token and checks its scope; the handlers then
//! see a [`Caller`] and narrow what they read and act on to the caller's team. With `auth = "open"`
//! every request is [`Caller::Open`], which may do everything, as before tokens existed.
//!
//! A token is `sgl_` and 32 random bytes (base64url). Storage keeps only its SHA-256: secrets this
//! long cannot be guessed, so a slow password hash would buy nothing, and a request's token is found
//! by hashing what it presents and looking that hash up (no comparison of secrets in this process).

use std::sync::Arc;

use axum::extract::{FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use rand::RngCore;
use sha2::{Digest, Sha256};

use super::{ApiError, AppState};
use crate::config::routes::RoutesConfig;
use crate::config::settings::AuthMode;
use crate::domain::Millis;
use crate::storage::TokenRow;

/// What a token may call. `admin` may call everything.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Scope {
    /// `POST /v1/events`.
    Ingest,
    /// Every read: queues, loops, accounts, journeys, KPIs, dead letters, and the dry-run
    /// `POST /v1/explain`.
    Read,
    /// `POST /v1/loops/{id}/actions`.
    Act,
    /// All of the above.
    Admin,
}

impl Scope {
    pub const ALL: [Scope; 4] = [Scope::Ingest, Scope::Read, Scope::Act, Scope::Admin];

    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Ingest => "ingest",
            Scope::Read => "read",
            Scope::Act => "act",
            Scope::Admin => "admin",
        }
    }

    pub fn parse(value: &str) -> Option<Scope> {
        Scope::ALL.into_iter().find(|scope| scope.as_str() == value)
    }

    /// `read,act` (spaces allowed, repeats ignored) in [`Scope::ALL`] order; an unknown name or an
    /// empty list is an error naming the known scopes.
    pub fn parse_list(value: &str) -> Result<Vec<Scope>, String> {
        let mut scopes = Vec::new();
        for name in value
            .split(',')
            .map(str::trim)
            .filter(|name| !name.is_empty())
        {
            let scope = Scope::parse(name)
                .ok_or_else(|| format!("scope `{name}` is not one of ingest, read, act, admin"))?;
            if !scopes.contains(&scope) {
                scopes.push(scope);
            }
        }
        if scopes.is_empty() {
            return Err("a token needs at least one scope: ingest, read, act or admin".to_owned());
        }
        scopes.sort();
        Ok(scopes)
    }
}

/// The prefix of every secret: it makes a leaked token recognisable (secret scanners, logs).
pub const SECRET_PREFIX: &str = "sgl_";

/// A new token's id (`tok_` and 16 hex digits: public, shown by `token list`) and its secret
/// (`sgl_` and 32 random bytes in base64url: shown once). Both come from the operating system's
/// random source.
pub fn generate_token() -> (String, String) {
    use base64::Engine;
    let mut id = [0_u8; 8];
    let mut secret = [0_u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut id);
    rand::rngs::OsRng.fill_bytes(&mut secret);
    (
        format!("tok_{}", hex::encode(id)),
        format!(
            "{SECRET_PREFIX}{}",
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(secret)
        ),
    )
}

/// What storage keeps of a secret: its SHA-256 in hex.
pub fn hash_secret(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

/// `--expires`: a duration from `now` (`30d`, `12h`, `90days`) or an RFC 3339 time; it must lie in
/// the future.
pub fn parse_expiry(value: &str, now: Millis) -> Result<Millis, String> {
    let value = value.trim();
    let at = if let Ok(time) = chrono::DateTime::parse_from_rfc3339(value) {
        time.timestamp_millis()
    } else if let Ok(duration) = humantime::parse_duration(value) {
        let millis = i64::try_from(duration.as_millis())
            .map_err(|_| format!("expiry `{value}` is too far away"))?;
        now.checked_add(millis)
            .ok_or_else(|| format!("expiry `{value}` is too far away"))?
    } else {
        return Err(format!(
            "expiry `{value}` is neither a duration (30d, 12h) nor an RFC 3339 time"
        ));
    };
    if at <= now {
        return Err(format!("expiry `{value}` is not in the future"));
    }
    Ok(at)
}

/// A token's name is the actor of its actions: non-empty, at most 256 bytes, no control characters,
/// and not sigloop's own actor name (its history rows must stay recognisably the system's).
pub fn validate_name(name: &str) -> Result<(), String> {
    if name.trim().is_empty() {
        return Err("a token's name must not be empty".to_owned());
    }
    if name
        .trim()
        .eq_ignore_ascii_case(crate::pipeline::core::SYSTEM_ACTOR)
    {
        return Err(format!(
            "`{}` is the name sigloop records for its own actions; choose another",
            crate::pipeline::core::SYSTEM_ACTOR
        ));
    }
    if name.len() > crate::domain::MAX_ID_BYTES {
        return Err("a token's name must be at most 256 bytes".to_owned());
    }
    if name.chars().any(char::is_control) {
        return Err("a token's name must not contain control characters".to_owned());
    }
    Ok(())
}

/// A valid token, as a request presented it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    pub id: String,
    /// The actor recorded for its actions.
    pub name: String,
    pub scopes: Vec<Scope>,
    pub team: Option<String>,
    pub expires_at: Option<Millis>,
}

impl Grant {
    fn from_row(row: TokenRow) -> Grant {
        let token = row.token;
        Grant {
            // A scope name this version does not know grants nothing.
            scopes: token
                .scopes
                .iter()
                .filter_map(|name| Scope::parse(name))
                .collect(),
            id: token.id,
            name: token.name,
            team: token.team,
            expires_at: token.expires_at,
        }
    }

    pub fn allows(&self, scope: Scope) -> bool {
        self.scopes.contains(&scope) || self.scopes.contains(&Scope::Admin)
    }
}

/// Who is calling: anyone (`auth = "open"`), or the holder of a valid token.
#[derive(Debug, Clone)]
pub enum Caller {
    Open,
    Token(Arc<Grant>),
}

impl Caller {
    /// The team this caller is restricted to; `None`: every team.
    pub fn team(&self) -> Option<&str> {
        match self {
            Caller::Open => None,
            Caller::Token(grant) => grant.team.as_deref(),
        }
    }

    /// Whether the caller sees the loops of `queue`: always without a team; with one, only its
    /// team's queues (`unowned` belongs to `[unowned] team`; a queue no longer configured to
    /// nobody).
    pub fn sees_queue(&self, routes: &RoutesConfig, queue: &str) -> bool {
        match self.team() {
            None => true,
            Some(team) => routes.queue_team(queue) == Some(team),
        }
    }

    /// The queues the caller may see, for a storage filter: `None` for every queue.
    pub fn visible_queues(&self, routes: &RoutesConfig) -> Option<Vec<String>> {
        self.team().map(|_| {
            routes
                .queue_names()
                .into_iter()
                .filter(|queue| self.sees_queue(routes, queue))
                .map(str::to_owned)
                .collect()
        })
    }

    /// The actor recorded for an action: the token's name; `None` in open mode (the request's
    /// `actor` field is used).
    pub fn actor(&self) -> Option<&str> {
        match self {
            Caller::Open => None,
            Caller::Token(grant) => Some(grant.name.as_str()),
        }
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Caller, ApiError> {
        // Put there by `require`, which every /v1 route that takes a `Caller` sits behind; its
        // absence is a wiring mistake, never a reason to let the request through.
        parts.extensions.get::<Caller>().cloned().ok_or_else(|| {
            tracing::error!("A handler that needs a caller was reached without the auth layer.");
            ApiError::Internal
        })
    }
}

/// The route layer in front of the `/v1` routes: finds the caller and checks that it holds `scope`
/// (`None`: any valid token will do), then hands it to the handler as a request extension.
pub async fn require(
    State((state, scope)): State<(AppState, Option<Scope>)>,
    mut request: Request,
    next: Next,
) -> Response {
    match authenticate(&state, request.headers(), scope).await {
        Ok(caller) => {
            request.extensions_mut().insert(caller);
            next.run(request).await
        }
        Err(error) => error.into_response(),
    }
}

async fn authenticate(
    state: &AppState,
    headers: &HeaderMap,
    scope: Option<Scope>,
) -> Result<Caller, ApiError> {
    if state.inner.config.settings.server.auth == AuthMode::Open {
        return Ok(Caller::Open);
    }
    let secret = bearer_secret(headers)?;
    let Some(row) = state
        .inner
        .storage
        .token_by_hash(&hash_secret(secret))
        .await?
    else {
        tracing::info!("A request presented an unknown API token.");
        return Err(ApiError::unauthorized("the token is not known"));
    };
    if let Some(revoked_at) = row.revoked_at {
        tracing::info!(token = %row.token.id, "A request presented a revoked API token.");
        return Err(ApiError::unauthorized(format!(
            "the token was revoked at {}",
            crate::domain::format_millis(revoked_at)
        )));
    }
    if let Some(expires_at) = row.token.expires_at {
        if expires_at <= crate::pipeline::now_millis() {
            tracing::info!(token = %row.token.id, "A request presented an expired API token.");
            return Err(ApiError::unauthorized(format!(
                "the token expired at {}",
                crate::domain::format_millis(expires_at)
            )));
        }
    }
    let grant = Grant::from_row(row);
    if let Some(scope) = scope {
        if !grant.allows(scope) {
            return Err(ApiError::Forbidden {
                message: format!(
                    "this token's scopes ({}) do not include `{}`, which this route needs",
                    grant
                        .scopes
                        .iter()
                        .map(|scope| scope.as_str())
                        .collect::<Vec<_>>()
                        .join(", "),
                    scope.as_str()
                ),
                missing_scope: Some(scope.as_str()),
            });
        }
    }
    Ok(Caller::Token(Arc::new(grant)))
}

/// The secret of `Authorization: Bearer <secret>` (the scheme in any case).
fn bearer_secret(headers: &HeaderMap) -> Result<&str, ApiError> {
    let mut values = headers.get_all(header::AUTHORIZATION).iter();
    let Some(value) = values.next() else {
        return Err(ApiError::Unauthorized {
            message: "this request needs an API token: send `Authorization: Bearer <token>`"
                .to_owned(),
            invalid_token: false,
        });
    };
    // Two credentials are one too many: which would be meant is a guess, and a proxy that adds
    // its own header must not decide who the caller is by order.
    if values.next().is_some() {
        return Err(ApiError::unauthorized(
            "the request has more than one Authorization header; send exactly one",
        ));
    }
    let value = value
        .to_str()
        .map_err(|_| ApiError::unauthorized("the Authorization header is not `Bearer <token>`"))?;
    match value.split_once(' ') {
        Some((scheme, secret))
            if scheme.eq_ignore_ascii_case("bearer") && !secret.trim().is_empty() =>
        {
            Ok(secret.trim())
        }
        _ => Err(ApiError::unauthorized(
            "the Authorization header is not `Bearer <token>`",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_generated_secret_is_the_prefix_and_43_base64url_characters_and_differs_each_time() {
        let (id, secret) = generate_token();
        let (other_id, other_secret) = generate_token();
        assert!(id.starts_with("tok_") && id.len() == 20, "{id}");
        assert!(secret.starts_with(SECRET_PREFIX), "{secret}");
        let body = &secret[SECRET_PREFIX.len()..];
        assert_eq!(body.len(), 43, "{secret}");
        assert!(body
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'));
        assert_ne!(secret, other_secret);
        assert_ne!(id, other_id);
    }

    #[test]
    fn the_stored_hash_is_the_hex_sha256_of_the_secret_and_not_the_secret() {
        let hash = hash_secret("sgl_example");
        assert_eq!(hash.len(), 64);
        assert_eq!(hash, hash_secret("sgl_example"));
        assert_ne!(hash, hash_secret("sgl_example2"));
        assert!(!hash.contains("sgl_"));
    }

    #[test]
    fn scope_lists_parse_in_a_fixed_order_and_refuse_unknown_or_empty_lists() {
        assert_eq!(
            Scope::parse_list("act, read,act").unwrap(),
            vec![Scope::Read, Scope::Act]
        );
        assert!(Scope::parse_list("read,write")
            .unwrap_err()
            .contains("`write`"));
        assert!(Scope::parse_list(" , ").is_err());
    }

    #[test]
    fn an_expiry_is_a_duration_from_now_or_an_rfc3339_time_in_the_future() {
        let now = 1_000_000;
        assert_eq!(parse_expiry("30d", now).unwrap(), now + 30 * 86_400_000);
        assert_eq!(parse_expiry("12h", now).unwrap(), now + 12 * 3_600_000);
        assert_eq!(
            parse_expiry("2030-01-01T00:00:00Z", now).unwrap(),
            1_893_456_000_000
        );
        assert!(parse_expiry("1970-01-01T00:00:00Z", now).is_err());
        assert!(parse_expiry("soon", now).is_err());
    }

    #[test]
    fn admin_allows_every_scope_and_other_scopes_only_themselves() {
        let grant = |scopes: Vec<Scope>| Grant {
            id: "tok_1".to_owned(),
            name: "ana".to_owned(),
            scopes,
            team: None,
            expires_at: None,
        };
        let admin = grant(vec![Scope::Admin]);
        assert!(Scope::ALL.iter().all(|scope| admin.allows(*scope)));
        let reader = grant(vec![Scope::Read]);
        assert!(reader.allows(Scope::Read));
        assert!(!reader.allows(Scope::Act));
        assert!(!reader.allows(Scope::Ingest));
    }
}
