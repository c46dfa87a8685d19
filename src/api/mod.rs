//! The HTTP API (v1, JSON). Wire types of requests live here and never travel further; handlers call
//! the ingestor, the storage queries and the pure core.

pub mod auth;
mod error;
pub mod views;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::sync::watch;
use tower_http::set_header::SetResponseHeaderLayer;

pub use auth::{Caller, Scope};
pub use error::ApiError;

use crate::config::routes::SignalKind;
use crate::config::settings::ClockMode;
use crate::config::signals::Window;
use crate::config::Config;
use crate::decode::{self, RejectionCode};
use crate::domain::Millis;
use crate::ingest::Ingestor;
use crate::kpi::{self, Ownership};
use crate::loops::{transition, Action, CloseReason, LoopState};
use crate::pipeline::core::{ActionOutcome, ActionRequest, Core, CoreState};
use crate::pipeline::{now_millis, ActionOutcomes};
use crate::storage::{JourneyDimension, JourneyQuery, LoopFilter, Storage};
use crate::telemetry::Metrics;

pub const OPENAPI: &str = include_str!("openapi.json");

#[derive(Clone)]
pub struct AppState {
    pub inner: Arc<Inner>,
}

pub struct Inner {
    pub config: Config,
    pub storage: Arc<dyn Storage>,
    pub ingestor: Ingestor,
    pub metrics: Arc<Metrics>,
    pub core: Arc<Core>,
    pub core_state: Arc<Mutex<CoreState>>,
    /// The processor's committed offset.
    pub committed: watch::Receiver<i64>,
    pub outcomes: ActionOutcomes,
    /// False once the processor task has ended.
    pub processor_running: Arc<std::sync::atomic::AtomicBool>,
    /// True while the processor's commits keep failing.
    pub processor_stalled: Arc<std::sync::atomic::AtomicBool>,
}

/// Every route, behind the HTTP hardening layers. Each `/v1` route sits behind [`auth::require`]
/// with the scope it needs; health, readiness, metrics and the OpenAPI document stay open (so do the
/// web UI's files), for probes, scrapers and clients that have no token yet.
pub fn router(state: AppState) -> Router {
    let server = &state.inner.config.settings.server;
    let guard = |scope: Option<Scope>| {
        axum::middleware::from_fn_with_state((state.clone(), scope), auth::require)
    };
    let ingest = Router::new()
        .route("/v1/events", post(post_events))
        .route_layer(guard(Some(Scope::Ingest)));
    let read = Router::new()
        .route("/v1/queues", get(get_queues))
        .route("/v1/loops", get(get_loops))
        .route("/v1/loops/{id}", get(get_loop))
        .route("/v1/accounts/{id}", get(get_account))
        .route("/v1/journeys", get(get_journeys))
        .route("/v1/kpis", get(get_kpis))
        .route("/v1/explain", post(post_explain))
        .route("/v1/dead-letters", get(get_dead_letters))
        .route_layer(guard(Some(Scope::Read)));
    let act = Router::new()
        .route("/v1/loops/{id}/actions", post(post_action))
        .route_layer(guard(Some(Scope::Act)));
    let any_token = Router::new()
        .route("/v1/whoami", get(get_whoami))
        .route_layer(guard(None));
    let public = Router::new()
        .route("/v1/openapi.json", get(get_openapi))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(get_metrics));
    let request_timeout = Duration::from_secs(server.request_timeout_secs);
    let mut router = Router::new()
        .merge(ingest)
        .merge(read)
        .merge(act)
        .merge(any_token)
        .merge(public)
        .merge(crate::ui::router())
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        // Handlers read bodies themselves, each up to its own limit (events: server.max_body_bytes,
        // explain: 1 MiB, actions: 64 KiB); this bounds any body extractor added later.
        .layer(axum::extract::DefaultBodyLimit::max(server.max_body_bytes))
        // The whole request, body upload included, within server.request_timeout_secs (longer than
        // the waits of ?wait=true and of actions, see Settings::validate): a slow or stalled client
        // cannot hold a connection's handler for ever. The empty 503 becomes JSON just outside.
        .layer(tower_http::timeout::TimeoutLayer::with_status_code(
            StatusCode::SERVICE_UNAVAILABLE,
            request_timeout,
        ))
        .layer(axum::middleware::from_fn_with_state(
            server.request_timeout_secs,
            json_errors,
        ))
        .layer(tower_http::catch_panic::CatchPanicLayer::custom(
            panic_response,
        ))
        // The UI's files may choose their own caching; everything else is never stored.
        .layer(SetResponseHeaderLayer::if_not_present(
            header::CACHE_CONTROL,
            HeaderValue::from_static("no-store"),
        ));
    for (name, value) in SECURITY_HEADERS {
        router = router.layer(SetResponseHeaderLayer::overriding(
            name,
            HeaderValue::from_static(value),
        ));
    }
    router.with_state(state)
}

/// Headers on every response, API and UI alike: no MIME sniffing, no framing (clickjacking), no
/// referrer to other sites, and a content security policy for a same-origin UI that loads nothing
/// from elsewhere. (`Cache-Control: no-store` is added where a route set no caching of its own.)
const SECURITY_HEADERS: [(header::HeaderName, &str); 4] = [
    (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
    (header::X_FRAME_OPTIONS, "DENY"),
    (header::REFERRER_POLICY, "no-referrer"),
    (header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY),
];

/// Scripts, styles, images, fonts and fetches from sigloop's own origin only (images also as
/// `data:` URIs); no plugins, no `<base>`, forms only to sigloop, and no framing by any page.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; img-src 'self' data:; \
     object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/// The web UI's paths (`/` and `/ui/...`): their responses are not the API's, so their errors keep
/// whatever form the UI gives them.
fn is_ui_path(path: &str) -> bool {
    path == "/" || path == "/ui" || path.starts_with("/ui/")
}

/// Every error the API answers is `{"error": {"code", "message"}}`: an error response that is not
/// JSON (the timeout's empty 503, a plain-text rejection of axum's extractors) is replaced by the
/// JSON error of its status, which names nothing inside sigloop.
async fn json_errors(
    State(request_timeout_secs): State<u64>,
    request: Request,
    next: axum::middleware::Next,
) -> Response {
    let ui = is_ui_path(request.uri().path());
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let response = next.run(request).await;
    let status = response.status();
    if ui || !(status.is_client_error() || status.is_server_error()) {
        return response;
    }
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.starts_with("application/json"));
    if is_json {
        return response;
    }
    if status == StatusCode::SERVICE_UNAVAILABLE {
        tracing::warn!(%method, %path, timeout_secs = request_timeout_secs, "A request was not answered in time; it got 503.");
    }
    let mut replaced = error::error_for_status(status, request_timeout_secs);
    // Keep what the response said about the connection or a challenge; drop the rest with the body.
    for name in [header::WWW_AUTHENTICATE, header::ALLOW, header::CONNECTION] {
        if let Some(value) = response.headers().get(&name) {
            replaced.headers_mut().insert(name, value.clone());
        }
    }
    replaced
}

fn panic_response(_: Box<dyn std::any::Any + Send + 'static>) -> Response {
    tracing::error!("A request handler panicked.");
    (
        StatusCode::INTERNAL_SERVER_ERROR,
        Json(
            json!({"error": {"code": "internal", "message": "the request failed inside sigloop"}}),
        ),
    )
        .into_response()
}

async fn not_found() -> ApiError {
    ApiError::NotFound("no such route".to_owned())
}

async fn method_not_allowed() -> Response {
    (
        StatusCode::METHOD_NOT_ALLOWED,
        Json(json!({"error": {"code": "method_not_allowed", "message": "this route does not take that method"}})),
    )
        .into_response()
}

/// `Query` whose parse failures answer with the API's JSON error instead of axum's plain text.
pub struct ApiQuery<T>(pub T);

impl<T, S> axum::extract::FromRequestParts<S> for ApiQuery<T>
where
    T: serde::de::DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &S,
    ) -> Result<Self, Self::Rejection> {
        match Query::<T>::from_request_parts(parts, state).await {
            Ok(Query(value)) => Ok(ApiQuery(value)),
            Err(rejection) => Err(ApiError::bad_request(
                "invalid_parameter",
                rejection.body_text(),
            )),
        }
    }
}

/// Reads the body up to `limit` bytes; more is `too_large`.
async fn read_body(body: Body, limit: usize) -> Result<Bytes, ApiError> {
    axum::body::to_bytes(body, limit)
        .await
        .map_err(|_| ApiError::TooLarge(format!("the request body is larger than {limit} bytes")))
}

#[derive(Debug, Deserialize)]
struct EventsQuery {
    #[serde(default)]
    wait: bool,
    /// Seconds.
    timeout: Option<f64>,
}

async fn post_events(
    State(state): State<AppState>,
    ApiQuery(query): ApiQuery<EventsQuery>,
    headers: HeaderMap,
    request: Request,
) -> Result<Response, ApiError> {
    let settings = &state.inner.config.settings.server;
    let body = match read_body(request.into_body(), settings.max_body_bytes).await {
        Ok(body) => body,
        Err(error) => {
            state
                .inner
                .metrics
                .events_rejected
                .with_label_values(&["too_large"])
                .inc();
            return Err(error);
        }
    };
    let ndjson = headers
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| {
            value.starts_with("application/x-ndjson") || value.starts_with("application/ndjson")
        });
    let items = match decode::split_body(&body, ndjson, settings.max_events_per_request) {
        Ok(items) => items,
        Err(rejection) => {
            state
                .inner
                .metrics
                .events_rejected
                .with_label_values(&[rejection.code.as_str()])
                .inc();
            // The whole request is unreadable: keep it as one dead letter so nothing vanishes.
            let dead_letter = crate::storage::NewDeadLetter {
                origin: "http".to_owned(),
                request_index: None,
                event_source: None,
                event_id: None,
                code: rejection.code.as_str().to_owned(),
                message: rejection.message.clone(),
                payload: String::from_utf8_lossy(&body).into_owned(),
            };
            state
                .inner
                .storage
                .append(&[], &[dead_letter], now_millis())
                .await?;
            return Err(match rejection.code {
                RejectionCode::TooLarge => ApiError::TooLarge(rejection.message),
                code => ApiError::bad_request(code.as_str(), rejection.message),
            });
        }
    };
    let report = state
        .inner
        .ingestor
        .ingest(&items, "http", now_millis())
        .await?;
    let mut answer = json!({
        "accepted": report.accepted,
        "duplicates": report.duplicates,
        "rejected": report.rejected,
        "last_seq": report.last_seq,
    });
    if query.wait {
        let limit = settings.wait_timeout_secs as f64;
        let timeout = query
            .timeout
            .filter(|seconds| seconds.is_finite() && *seconds >= 0.0)
            .unwrap_or(limit)
            .min(limit);
        let timeout = Duration::from_secs_f64(timeout);
        let processed = if state.inner.ingestor.producer.is_some() {
            wait_for_partitions(&state, &report.placed, timeout).await?
        } else {
            // Duplicates count too: wait for everything logged so far, which includes their
            // originals.
            let target = match report.last_seq {
                Some(seq) => seq,
                None => state.inner.storage.log_head().await?,
            };
            wait_for_offset(&state, target, timeout).await
        };
        answer["processed"] = Value::Bool(processed);
    }
    let status = if report.accepted == 0 && report.duplicates == 0 && !report.rejected.is_empty() {
        answer["error"] = json!({
            "code": report.rejected[0].code,
            "message": "every event in the request was rejected; see `rejected`",
        });
        StatusCode::BAD_REQUEST
    } else {
        StatusCode::OK
    };
    Ok((status, Json(answer)).into_response())
}

/// Distributed mode: waits until the offsets committed in the database (by whichever instances own
/// the partitions) are past every placed event; false on timeout.
async fn wait_for_partitions(
    state: &AppState,
    placed: &[crate::kafka::producer::Placed],
    timeout: Duration,
) -> Result<bool, ApiError> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let stored = state.inner.storage.source_offsets().await?;
        let done = placed.iter().all(|event| {
            stored.iter().any(|offset| {
                offset.topic == event.topic
                    && offset.partition == event.partition
                    && offset.next_offset > event.offset
            })
        });
        if done {
            return Ok(true);
        }
        if tokio::time::Instant::now() >= deadline {
            return Ok(false);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until loop `id` has more than `history_len` history rows (an action was applied to it);
/// false on timeout.
async fn wait_for_history(
    state: &AppState,
    id: &str,
    history_len: u32,
    timeout: Duration,
) -> Result<bool, ApiError> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let record = state.inner.storage.loop_record(id).await?;
        if record.is_some_and(|record| record.history_len > history_len) {
            return Ok(true);
        }
        if tokio::time::Instant::now() >= deadline {
            return Ok(false);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until the processor has committed `target`; false on timeout.
async fn wait_for_offset(state: &AppState, target: i64, timeout: Duration) -> bool {
    let mut committed = state.inner.committed.clone();
    let reached = async move { committed.wait_for(|offset| *offset >= target).await.is_ok() };
    matches!(tokio::time::timeout(timeout, reached).await, Ok(true))
}

async fn get_queues(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<Value>, ApiError> {
    let summaries = state.inner.storage.queues().await?;
    let routes = &state.inner.config.routes;
    let mut names: Vec<String> = routes
        .queue_names()
        .into_iter()
        .map(str::to_owned)
        .collect();
    for summary in &summaries {
        if !names.contains(&summary.name) {
            names.push(summary.name.clone());
        }
    }
    // A team's token sees its team's queues only.
    names.retain(|name| caller.sees_queue(routes, name));
    let now = now_millis();
    let queues: Vec<Value> = names
        .iter()
        .map(|name| {
            let summary = summaries.iter().find(|summary| &summary.name == name);
            let mut counts = BTreeMap::new();
            for loop_state in LoopState::ALL {
                let count = summary
                    .and_then(|summary| summary.counts.get(loop_state.as_str()))
                    .copied()
                    .unwrap_or(0);
                counts.insert(loop_state.as_str(), count);
            }
            let oldest = summary.and_then(|summary| summary.oldest_open_at);
            json!({
                "name": name,
                "team": routes.queue_team(name),
                "counts": counts,
                "total": counts.values().sum::<u64>(),
                "breached": summary.map_or(0, |summary| summary.breached),
                "oldest_open_at": oldest.map(crate::domain::format_millis),
                "oldest_open_age_seconds": oldest.map(|opened| ((now - opened).max(0)) / 1000),
            })
        })
        .collect();
    Ok(Json(json!({ "queues": queues })))
}

#[derive(Debug, Deserialize)]
struct LoopsQuery {
    queue: Option<String>,
    state: Option<String>,
    kind: Option<String>,
    account_id: Option<String>,
    tag: Option<String>,
    limit: Option<u32>,
    cursor: Option<String>,
}

async fn get_loops(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(query): ApiQuery<LoopsQuery>,
) -> Result<Json<Value>, ApiError> {
    let routes = &state.inner.config.routes;
    if let (Some(team), Some(queue)) = (caller.team(), query.queue.as_deref()) {
        // Another team's queue is refused outright rather than answered with an empty page, which
        // would look like a quiet queue. Queue names are configuration, not data: saying whose a
        // queue is leaks nothing.
        if let Some(owner) = routes.queue_team(queue).filter(|owner| *owner != team) {
            return Err(ApiError::forbidden(format!(
                "queue `{queue}` belongs to team `{owner}`; this token sees team `{team}` only"
            )));
        }
    }
    if let Some(value) = &query.state {
        if LoopState::parse(value).is_none() {
            return Err(ApiError::bad_request(
                "invalid_parameter",
                format!("state `{value}` is not one of open, acknowledged, in_progress, resolved, verifying, closed, reopened"),
            ));
        }
    }
    if let Some(value) = &query.kind {
        if SignalKind::parse(value).is_none() {
            return Err(ApiError::bad_request(
                "invalid_parameter",
                format!("kind `{value}` is not account or journey"),
            ));
        }
    }
    // The cursor is the id of the last loop of the previous page: one the caller may see, else it
    // is refused like any cursor this API never returned.
    let before = match &query.cursor {
        None => None,
        Some(cursor) => {
            let known = state
                .inner
                .storage
                .loop_record(cursor)
                .await?
                .is_some_and(|record| caller.sees_queue(routes, &record.queue));
            if !known {
                return Err(ApiError::bad_request(
                    "invalid_parameter",
                    "cursor is not one this API returned",
                ));
            }
            Some(cursor.clone())
        }
    };
    let limit = query.limit.unwrap_or(50);
    if !(1..=500).contains(&limit) {
        return Err(ApiError::bad_request(
            "invalid_parameter",
            "limit must be between 1 and 500",
        ));
    }
    let page = state
        .inner
        .storage
        .list_loops(&LoopFilter {
            queue: query.queue,
            state: query.state,
            kind: query.kind,
            account_id: query.account_id,
            tag: query.tag,
            limit,
            before,
            queues: caller.visible_queues(routes),
        })
        .await?;
    let mut loops: Vec<Value> = page.loops.iter().map(views::loop_view).collect();
    for view in &mut loops {
        hide_foreign_predecessor(&state, &caller, view).await?;
    }
    Ok(Json(json!({
        "loops": loops,
        "next_cursor": page.next,
    })))
}

/// Blanks a loop view's `predecessor` when the caller may not see that generation (it was routed
/// to another team's queue): its id is that team's.
async fn hide_foreign_predecessor(
    state: &AppState,
    caller: &Caller,
    view: &mut Value,
) -> Result<(), ApiError> {
    if caller.team().is_none() {
        return Ok(());
    }
    let Some(predecessor) = view["predecessor"].as_str().map(str::to_owned) else {
        return Ok(());
    };
    let visible = state
        .inner
        .storage
        .loop_record(&predecessor)
        .await?
        .is_some_and(|record| caller.sees_queue(&state.inner.config.routes, &record.queue));
    if !visible {
        view["predecessor"] = Value::Null;
    }
    Ok(())
}

/// The answer for a loop the caller may not see: the very same as for an id that does not exist, so
/// that a guessed id (ids are derived from loop keys) tells nothing.
fn no_such_loop(id: &str) -> ApiError {
    ApiError::NotFound(format!("no loop with id {id}"))
}

async fn loop_with_links(state: &AppState, id: &str, caller: &Caller) -> Result<Value, ApiError> {
    let routes = &state.inner.config.routes;
    let detail = state
        .inner
        .storage
        .loop_detail(id)
        .await?
        .filter(|detail| caller.sees_queue(routes, &detail.record.queue))
        .ok_or_else(|| no_such_loop(id))?;
    let mut view = views::loop_detail_view(&detail);
    hide_foreign_predecessor(state, caller, &mut view).await?;
    let mut links: Vec<Value> = Vec::new();
    if let Some(predecessor) = &detail.record.predecessor {
        if let Some(record) = state.inner.storage.loop_record(predecessor).await? {
            if caller.sees_queue(routes, &record.queue) {
                links.push(json!({"relation": "predecessor", "id": record.id, "state": record.state, "key": record.key, "generation": record.generation}));
            }
        }
    }
    let successor_id = crate::loops::loop_id(&detail.record.key, detail.record.generation + 1);
    if let Some(record) = state.inner.storage.loop_record(&successor_id).await? {
        if caller.sees_queue(routes, &record.queue) {
            links.push(json!({"relation": "successor", "id": record.id, "state": record.state, "key": record.key, "generation": record.generation}));
        }
    }
    if let Value::Array(journey_links) = view["links"].take() {
        // A journey loop's linked account loops sit on many teams' queues: a team sees its own.
        // An account loop's link to the journey loop that explains it is shown to whoever sees the
        // account loop (its id, key, state and queue, not its page): that link is how a fix on
        // the CX side reaches the account's owner, and the loop already names it (`journey_loop`).
        links.extend(journey_links.into_iter().filter(|link| {
            link["relation"] == "journey"
                || link["queue"]
                    .as_str()
                    .is_none_or(|queue| caller.sees_queue(routes, queue))
        }));
    }
    view["links"] = Value::Array(links);
    Ok(view)
}

async fn get_loop(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(loop_with_links(&state, &id, &caller).await?))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ActionBody {
    action: String,
    actor: Option<String>,
    note: Option<String>,
    owner: Option<String>,
    /// For `close`: verified, duplicate or wont_fix.
    reason: Option<String>,
}

fn parse_action(body: &ActionBody) -> Result<Action, ApiError> {
    let action = match body.action.as_str() {
        "acknowledge" => Action::Acknowledge,
        "start" => Action::Start,
        "resolve" => Action::Resolve,
        "reopen" => Action::Reopen,
        "comment" => Action::Comment,
        "close" => {
            let reason = body.reason.as_deref().ok_or_else(|| {
                ApiError::bad_request("missing_field", "close needs a reason: verified, duplicate or wont_fix")
            })?;
            let reason = CloseReason::parse(reason).ok_or_else(|| {
                ApiError::bad_request("invalid_field", format!("reason `{reason}` is not verified, duplicate or wont_fix"))
            })?;
            Action::Close { reason }
        }
        "assign" => {
            let owner = body
                .owner
                .as_deref()
                .filter(|owner| !owner.trim().is_empty())
                .ok_or_else(|| ApiError::bad_request("missing_field", "assign needs an owner"))?;
            Action::Assign { owner: owner.to_owned() }
        }
        other => {
            return Err(ApiError::bad_request(
                "invalid_field",
                format!("action `{other}` is not one of acknowledge, start, resolve, close, reopen, assign, comment"),
            ))
        }
    };
    if matches!(action, Action::Comment)
        && body
            .note
            .as_deref()
            .is_none_or(|note| note.trim().is_empty())
    {
        return Err(ApiError::bad_request(
            "missing_field",
            "comment needs a note",
        ));
    }
    Ok(action)
}

async fn post_action(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    request: Request,
) -> Result<Response, ApiError> {
    let body = read_body(request.into_body(), 64 * 1024).await?;
    let body: ActionBody = serde_json::from_slice(&body).map_err(|error| {
        // serde names the wire type it expected ("struct ActionBody"): say "object" instead.
        let message = error
            .to_string()
            .replace("struct ActionBody", "a JSON object");
        ApiError::bad_request(
            "invalid_json",
            format!("the action body is not valid: {message}"),
        )
    })?;
    let action = parse_action(&body)?;
    // With tokens the actor is the token's name, whatever the body says: history shows who really
    // acted. Open, the body names the actor, as it always did.
    let actor = match caller.actor() {
        Some(name) => name,
        None => body
            .actor
            .as_deref()
            .map(str::trim)
            .filter(|actor| !actor.is_empty())
            .ok_or_else(|| {
                ApiError::bad_request("missing_field", "actor is required: who is acting")
            })?,
    };
    if actor.len() > crate::domain::MAX_ID_BYTES {
        return Err(ApiError::bad_request(
            "too_large",
            "actor must be at most 256 bytes",
        ));
    }
    if body
        .note
        .as_ref()
        .is_some_and(|note| note.len() > decode::MAX_TEXT_BYTES)
    {
        return Err(ApiError::bad_request(
            "too_large",
            "note must be at most 64 KiB",
        ));
    }
    // Refuse what is illegal now without logging it; the processor checks again in log order. A
    // loop on another team's queue is refused exactly as an unknown id is.
    let record = state
        .inner
        .storage
        .loop_record(&id)
        .await?
        .filter(|record| caller.sees_queue(&state.inner.config.routes, &record.queue))
        .ok_or_else(|| no_such_loop(&id))?;
    if let Err(error) = transition(record.state, &action) {
        return Err(ApiError::Conflict(error.to_string()));
    }
    // A superseded generation is read-only: one live loop per key, and actions go to the newest.
    if let Some(conflict) = superseded(&state, &record, &caller).await? {
        return Err(conflict);
    }
    // On the event-time clock only events move time: an action happens at the clock's reading (the
    // largest event time processed), not at the wall clock, which would fire every pending deadline.
    let time = match state.inner.config.settings.clock.mode {
        ClockMode::Live => now_millis(),
        ClockMode::EventTime => {
            state
                .inner
                .core_state
                .lock()
                .expect("core state lock")
                .clock
        }
    };
    let request = ActionRequest {
        loop_id: id.clone(),
        action,
        actor: actor.to_owned(),
        note: body.note.clone(),
        time,
    };
    let timeout = Duration::from_secs(state.inner.config.settings.server.wait_timeout_secs);
    if let Some(producer) = &state.inner.ingestor.producer {
        // Distributed mode: whichever instance owns the loop's partition applies the action; its
        // history row is how this one learns that it was applied.
        let key = record.account_id.as_deref().unwrap_or(&record.key);
        state
            .inner
            .ingestor
            .produce_action(producer, &request, key)
            .await?;
        if !wait_for_history(&state, &id, record.history_len, timeout).await? {
            return Ok((
                StatusCode::ACCEPTED,
                Json(json!({"processed": false, "message": "the action is on the actions topic and will be applied; it was not processed in time"})),
            )
                .into_response());
        }
        return Ok(Json(loop_with_links(&state, &id, &caller).await?).into_response());
    }
    let seq = state
        .inner
        .ingestor
        .append_action(&request, now_millis())
        .await?;
    if !wait_for_offset(&state, seq, timeout).await {
        return Ok((
            StatusCode::ACCEPTED,
            Json(json!({"processed": false, "message": "the action is logged and will be applied; it was not processed in time"})),
        )
            .into_response());
    }
    let outcome = state
        .inner
        .outcomes
        .lock()
        .expect("outcomes lock")
        .remove(&seq);
    match outcome {
        Some(ActionOutcome::Illegal { message }) => Err(ApiError::Conflict(message)),
        Some(ActionOutcome::NotFound) => match superseded(&state, &record, &caller).await? {
            // A newer generation opened between the check above and the processor's turn.
            Some(conflict) => Err(conflict),
            None => Err(no_such_loop(&id)),
        },
        Some(ActionOutcome::Applied { .. }) | None => {
            Ok(Json(loop_with_links(&state, &id, &caller).await?).into_response())
        }
    }
}

/// 409 when the loop has a newer generation. The newer one is named only when the caller may see
/// it: a generation that moved to another team's queue stays that team's.
async fn superseded(
    state: &AppState,
    record: &crate::loops::LoopRecord,
    caller: &Caller,
) -> Result<Option<ApiError>, ApiError> {
    let successor = crate::loops::loop_id(&record.key, record.generation + 1);
    let routes = &state.inner.config.routes;
    Ok(state
        .inner
        .storage
        .loop_record(&successor)
        .await?
        .map(|newer| {
            if caller.sees_queue(routes, &newer.queue) {
                ApiError::Conflict(format!(
                    "this loop has a newer generation {successor}; act on that one"
                ))
            } else {
                ApiError::Conflict("this loop has a newer generation and is read-only".to_owned())
            }
        }))
}

/// Signals of an account shown on its page.
const ACCOUNT_SIGNALS: u32 = 50;

/// How many of an account's newest signals a team's view is drawn from (its journey summary
/// counts these; an account rarely has more).
const TEAM_ACCOUNT_SIGNAL_SCAN: u32 = 10_000;

async fn get_account(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let unknown = || {
        ApiError::NotFound(format!(
            "no account {id} in the directory and no signals for it"
        ))
    };
    let view = match caller.team() {
        None => {
            state
                .inner
                .storage
                .account_view(&id, ACCOUNT_SIGNALS)
                .await?
        }
        Some(_) => team_account_view(&state, &caller, &id)
            .await?
            .ok_or_else(unknown)?,
    };
    if view.account.is_none() && view.open_loops.is_empty() && view.recent_signals.is_empty() {
        return Err(unknown());
    }
    let mut open_loops: Vec<Value> = view.open_loops.iter().map(views::loop_view).collect();
    for loop_view in &mut open_loops {
        hide_foreign_predecessor(&state, &caller, loop_view).await?;
    }
    Ok(Json(json!({
        "account_id": id,
        "profile": view.account.as_ref().map(views::account_view),
        "open_loops": open_loops,
        "recent_signals": view.recent_signals.iter().map(views::signal_view).collect::<Vec<_>>(),
        "journey": view.journey.iter().map(views::stage_signals_view).collect::<Vec<_>>(),
    })))
}

/// An account as a team's token sees it: only when the account has a loop (of any state) on the
/// team's queues (else `None`, answered as an unknown account); its open loops on those queues, the
/// signals that went to those loops, and the journey summary of those signals.
async fn team_account_view(
    state: &AppState,
    caller: &Caller,
    id: &str,
) -> Result<Option<crate::storage::AccountView>, ApiError> {
    let routes = &state.inner.config.routes;
    let mut team_loops = std::collections::HashSet::new();
    let mut before = None;
    loop {
        let page = state
            .inner
            .storage
            .list_loops(&LoopFilter {
                account_id: Some(id.to_owned()),
                queues: caller.visible_queues(routes),
                limit: 500,
                before,
                ..LoopFilter::default()
            })
            .await?;
        team_loops.extend(page.loops.into_iter().map(|record| record.id));
        match page.next {
            Some(next) => before = Some(next),
            None => break,
        }
    }
    if team_loops.is_empty() {
        return Ok(None);
    }
    let mut view = state
        .inner
        .storage
        .account_view(id, TEAM_ACCOUNT_SIGNAL_SCAN)
        .await?;
    view.open_loops
        .retain(|record| caller.sees_queue(routes, &record.queue));
    view.recent_signals
        .retain(|signal| team_loops.contains(&signal.loop_id));
    view.journey = stage_signals(&view.recent_signals);
    view.recent_signals.truncate(ACCOUNT_SIGNALS as usize);
    Ok(Some(view))
}

/// Signals by journey stage, as storage's account view counts them: per stage the signals, per tag
/// within it, the first and last signal time; stages in order of their first signal.
fn stage_signals(
    signals: &[crate::pipeline::core::SignalRow],
) -> Vec<crate::storage::StageSignals> {
    let mut stages: BTreeMap<&str, crate::storage::StageSignals> = BTreeMap::new();
    for signal in signals {
        let entry =
            stages
                .entry(signal.stage.as_str())
                .or_insert_with(|| crate::storage::StageSignals {
                    stage: signal.stage.clone(),
                    signals: 0,
                    tags: BTreeMap::new(),
                    first_signal_at: signal.time,
                    last_signal_at: signal.time,
                });
        entry.signals += 1;
        *entry.tags.entry(signal.tag.clone()).or_default() += 1;
        entry.first_signal_at = entry.first_signal_at.min(signal.time);
        entry.last_signal_at = entry.last_signal_at.max(signal.time);
    }
    let mut journey: Vec<_> = stages.into_values().collect();
    journey.sort_by(|a, b| (a.first_signal_at, &a.stage).cmp(&(b.first_signal_at, &b.stage)));
    journey
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct JourneysQuery {
    group_by: Option<String>,
    from: Option<String>,
    to: Option<String>,
    kind: Option<String>,
    stage: Option<String>,
    tag: Option<String>,
    touchpoint: Option<String>,
}

/// An RFC 3339 time or a `YYYY-MM-DD` date (midnight UTC).
fn parse_instant(name: &str, value: &str) -> Result<Millis, ApiError> {
    if let Ok(time) = chrono::DateTime::parse_from_rfc3339(value) {
        return Ok(time.timestamp_millis());
    }
    if let Ok(date) = chrono::NaiveDate::parse_from_str(value, "%Y-%m-%d") {
        return Ok(date
            .and_hms_opt(0, 0, 0)
            .expect("midnight exists")
            .and_utc()
            .timestamp_millis());
    }
    Err(ApiError::bad_request(
        "invalid_parameter",
        format!("{name} `{value}` is not an RFC 3339 time or a YYYY-MM-DD date"),
    ))
}

async fn get_journeys(
    State(state): State<AppState>,
    ApiQuery(query): ApiQuery<JourneysQuery>,
) -> Result<Json<Value>, ApiError> {
    let policy = &state.inner.config.signals.journeys;
    let window = match query.kind.as_deref() {
        None if policy.windows.contains(&Window::Day) => Window::Day,
        None => policy.grain(),
        Some(value) => Window::parse(value)
            .filter(|window| policy.windows.contains(window))
            .ok_or_else(|| {
                let known: Vec<&str> = policy
                    .windows
                    .iter()
                    .map(|window| window.as_str())
                    .collect();
                ApiError::bad_request(
                    "invalid_parameter",
                    format!(
                        "kind `{value}` is not a configured journey window ({})",
                        known.join(", ")
                    ),
                )
            })?,
    };
    let mut group_by = Vec::new();
    for name in query.group_by.as_deref().unwrap_or("stage").split(',') {
        let name = name.trim();
        let dimension = JourneyDimension::parse(name).ok_or_else(|| {
            ApiError::bad_request(
                "invalid_parameter",
                format!("group_by `{name}` is not one of stage, tag, touchpoint, window"),
            )
        })?;
        if group_by.contains(&dimension) {
            return Err(ApiError::bad_request(
                "invalid_parameter",
                format!("group_by names `{name}` twice"),
            ));
        }
        group_by.push(dimension);
    }
    // `from` and `to` round out to whole windows of `kind`.
    let from = query
        .from
        .as_deref()
        .map(|value| parse_instant("from", value))
        .transpose()?
        .map(|from| window.start(from));
    let to = query
        .to
        .as_deref()
        .map(|value| parse_instant("to", value))
        .transpose()?
        .map(|to| window.ceiling(to));
    if let (Some(from), Some(to)) = (from, to) {
        if from >= to {
            return Err(ApiError::bad_request(
                "invalid_parameter",
                "from must be before to",
            ));
        }
    }
    let groups = state
        .inner
        .storage
        .journeys(&JourneyQuery {
            window,
            from,
            to,
            group_by: group_by.clone(),
            stage: query.stage,
            tag: query.tag,
            touchpoint: query.touchpoint,
        })
        .await?;
    Ok(Json(json!({
        "kind": window.as_str(),
        "from": from.map(crate::domain::format_millis),
        "to": to.map(crate::domain::format_millis),
        "group_by": group_by.iter().map(|dimension| dimension.as_str()).collect::<Vec<_>>(),
        "groups": groups.iter().map(|group| views::journey_group_view(group, window)).collect::<Vec<_>>(),
    })))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct KpisQuery {
    from: Option<String>,
    to: Option<String>,
    queue: Option<String>,
    team: Option<String>,
}

/// Loop KPIs of the loops opened in [`from`, `to`) (exact instants, not rounded to any window), per
/// queue and per team. `queue` keeps that queue and the team that watches it; `team` keeps that team
/// and its queues. A team's figures are always over all of its queues.
async fn get_kpis(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(query): ApiQuery<KpisQuery>,
) -> Result<Json<Value>, ApiError> {
    // A team's token gets its team's queues and its team's figures; naming another team or another
    // team's queue is refused (as for GET /v1/loops?queue=).
    if let Some(team) = caller.team() {
        if let Some(other) = query.team.as_deref().filter(|other| *other != team) {
            return Err(ApiError::forbidden(format!(
                "this token sees team `{team}` only, not `{other}`"
            )));
        }
        // Any queue but the team's own is refused the same way, a queue no longer configured
        // included: whether it still has loops in some period is nobody's team's business.
        if let Some(queue) = query.queue.as_deref() {
            if state.inner.config.routes.queue_team(queue) != Some(team) {
                return Err(ApiError::forbidden(format!(
                    "queue `{queue}` is not one of team `{team}`'s queues; this token sees team `{team}` only"
                )));
            }
        }
    }
    let from = query
        .from
        .as_deref()
        .map(|value| parse_instant("from", value))
        .transpose()?;
    let to = query
        .to
        .as_deref()
        .map(|value| parse_instant("to", value))
        .transpose()?;
    if let (Some(from), Some(to)) = (from, to) {
        if from >= to {
            return Err(ApiError::bad_request(
                "invalid_parameter",
                "from must be before to",
            ));
        }
    }
    let timings = state.inner.storage.loop_timings(from, to).await?;
    let mut report = kpi::compute(
        &timings,
        &Ownership::from_routes(&state.inner.config.routes),
    );
    // Every configured queue and team is in the report, so a name that is not is a mistake (a queue
    // no longer configured is known while it has loops in the period).
    if let Some(queue) = query.queue.as_deref() {
        if !report
            .queues
            .iter()
            .any(|candidate| candidate.queue == queue)
        {
            return Err(ApiError::bad_request(
                "invalid_parameter",
                format!("queue `{queue}` is not a configured queue and has no loops in the period"),
            ));
        }
    }
    if let Some(team) = query.team.as_deref() {
        if !report.teams.iter().any(|candidate| candidate.team == team) {
            return Err(ApiError::bad_request(
                "invalid_parameter",
                format!("team `{team}` is not a configured team"),
            ));
        }
    }
    if let Some(queue) = query.queue.as_deref() {
        let owner = report
            .queues
            .iter()
            .find(|candidate| candidate.queue == queue)
            .and_then(|found| found.team.clone());
        report.queues.retain(|candidate| candidate.queue == queue);
        report
            .teams
            .retain(|candidate| owner.as_deref() == Some(candidate.team.as_str()));
    }
    if let Some(team) = query.team.as_deref().or(caller.team()) {
        report
            .queues
            .retain(|candidate| candidate.team.as_deref() == Some(team));
        report.teams.retain(|candidate| candidate.team == team);
    }
    Ok(Json(views::kpi_report_view(&report, from, to)))
}

async fn post_explain(
    State(state): State<AppState>,
    caller: Caller,
    request: Request,
) -> Result<Json<Value>, ApiError> {
    let body = read_body(request.into_body(), 1024 * 1024).await?;
    let event = decode::decode_event(&body).map_err(|rejection| ApiError::BadRequest {
        code: rejection.code.as_str(),
        message: rejection.message,
    })?;
    // A team's token gets the dry run as on a fresh instance: the configuration only (taxonomy,
    // detectors, routes), none of the committed state. Against that state its answer would tell
    // which accounts are in the directory with what tier and CSM, and whether some other team
    // already has a loop for a key (`join` or `open`), whatever account the event names.
    let fresh = caller.team().is_some();
    // The processor holds the state's lock for a whole batch: wait for it off the async workers.
    let inner = Arc::clone(&state.inner);
    let explanation = tokio::task::spawn_blocking(move || {
        let live = matches!(
            inner.config.settings.clock.mode,
            crate::config::settings::ClockMode::Live
        );
        if fresh {
            let now = if live { now_millis() } else { event.time };
            return inner.core.explain(&CoreState::default(), &event, now);
        }
        let core_state = inner.core_state.lock().expect("core state lock");
        let now = if live {
            now_millis().max(core_state.clock)
        } else {
            event.time.max(core_state.clock)
        };
        inner.core.explain(&core_state, &event, now)
    })
    .await
    .map_err(|_| ApiError::Unavailable("the explanation could not be computed".to_owned()))?;
    let mut answer = serde_json::to_value(&explanation).expect("explanations serialize");
    answer["basis"] = json!(if fresh { "configuration" } else { "state" });
    Ok(Json(answer))
}

#[derive(Debug, Deserialize)]
struct DeadLettersQuery {
    limit: Option<u32>,
    cursor: Option<i64>,
}

async fn get_dead_letters(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(query): ApiQuery<DeadLettersQuery>,
) -> Result<Json<Value>, ApiError> {
    // A rejected event never reached a queue, so it belongs to no team, and its raw payload may be
    // any account's: only tokens without a team read dead letters.
    if let Some(team) = caller.team() {
        return Err(ApiError::forbidden(format!(
            "dead letters belong to no team; this token is restricted to team `{team}`"
        )));
    }
    let limit = query.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::bad_request(
            "invalid_parameter",
            "limit must be between 1 and 1000",
        ));
    }
    let rows = state
        .inner
        .storage
        .dead_letters(limit, query.cursor)
        .await?;
    let next = if rows.len() == limit as usize {
        rows.last().map(|row| row.id)
    } else {
        None
    };
    Ok(Json(json!({
        "dead_letters": rows.iter().map(views::dead_letter_view).collect::<Vec<_>>(),
        "next_cursor": next,
    })))
}

/// Who the request's token is (for the web UI's sign-in): in open mode, only that the API is open.
async fn get_whoami(State(state): State<AppState>, caller: Caller) -> Json<Value> {
    let auth = state.inner.config.settings.server.auth.as_str();
    match caller {
        Caller::Open => Json(json!({"auth": auth, "token": null})),
        Caller::Token(grant) => Json(json!({
            "auth": auth,
            "token": {
                "id": grant.id,
                "name": grant.name,
                "scopes": grant.scopes.iter().map(|scope| scope.as_str()).collect::<Vec<_>>(),
                "team": grant.team,
                "expires_at": grant.expires_at.map(crate::domain::format_millis),
            },
        })),
    }
}

async fn get_openapi() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI)
}

async fn healthz() -> Json<Value> {
    Json(json!({"status": "ok"}))
}

async fn readyz(State(state): State<AppState>) -> Response {
    if !state
        .inner
        .processor_running
        .load(std::sync::atomic::Ordering::Relaxed)
    {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"status": "not_ready", "processor": "stopped"})),
        )
            .into_response();
    }
    match state.inner.storage.ping().await {
        Ok(()) => Json(json!({"status": "ready", "storage": "ok", "processor": "running", "processed_offset": *state.inner.committed.borrow()}))
            .into_response(),
        Err(error) => {
            tracing::warn!(error = %error, "Readiness check failed: storage is not answering.");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                Json(json!({"status": "not_ready", "storage": "unavailable"})),
            )
                .into_response()
        }
    }
}

async fn get_metrics(State(state): State<AppState>) -> Response {
    if let Ok(head) = state.inner.storage.log_head().await {
        let committed = *state.inner.committed.borrow();
        state
            .inner
            .metrics
            .consumer_lag
            .set((head - committed).max(0));
    }
    // The loop KPI gauges are computed from storage on each scrape, over all loops.
    let report = match state.inner.storage.loop_timings(None, None).await {
        Ok(timings) => Some(kpi::compute(
            &timings,
            &Ownership::from_routes(&state.inner.config.routes),
        )),
        Err(error) => {
            tracing::warn!(error = %error, "Loop KPIs could not be read; this scrape leaves their gauges out.");
            None
        }
    };
    let text = state
        .inner
        .metrics
        .render_with_loop_kpis(report.as_ref().map(|report| report.queues.as_slice()));
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response()
}
