//! Access control and HTTP hardening, over HTTP against the real application: API tokens (401 without
//! a valid one, 403 without the scope), team isolation (a team's token neither sees nor acts on
//! another team's loops, even by a guessed id), the actor of an action, the refusal to run open on an
//! address other machines reach, security headers, the request timeout and JSON error bodies.
//!
//! Tokens are made the way `sigloop token create` makes them (an id, a secret, its hash) and stored
//! through the storage trait on the application's own database file; the CLI itself is tested in
//! `tests/cli.rs`.

mod common;

use std::time::Duration;

use common::{account, config_with, nps, ticket, TestApp};
use reqwest::header::HeaderMap;
use serde_json::{json, Value};
use sigloop::api::auth::{generate_token, hash_secret};
use sigloop::app::Application;
use sigloop::config::settings::Synchronous;
use sigloop::storage::{NewToken, SqliteStorage, Storage};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const TOKENS: (&str, &str) = ("SIGLOOP__SERVER__AUTH", "tokens");

/// A token stored in the application's database, as `sigloop token create` stores it.
struct Token {
    id: String,
    secret: String,
}

struct TokenSpec<'a> {
    scopes: &'a [&'a str],
    team: Option<&'a str>,
    name: Option<&'a str>,
    expires_at: Option<i64>,
}

impl Default for TokenSpec<'_> {
    fn default() -> Self {
        TokenSpec {
            scopes: &["admin"],
            team: None,
            name: None,
            expires_at: None,
        }
    }
}

async fn store(app: &TestApp) -> SqliteStorage {
    SqliteStorage::open(&app.db_path, Synchronous::Full)
        .await
        .expect("the application's database opens beside it")
}

async fn create_token(app: &TestApp, spec: TokenSpec<'_>) -> Token {
    let (id, secret) = generate_token();
    let storage = store(app).await;
    storage
        .create_token(&NewToken {
            id: id.clone(),
            secret_hash: hash_secret(&secret),
            name: spec.name.map_or_else(|| id.clone(), str::to_owned),
            scopes: spec
                .scopes
                .iter()
                .map(|scope| (*scope).to_owned())
                .collect(),
            team: spec.team.map(str::to_owned),
            created_at: now(),
            expires_at: spec.expires_at,
        })
        .await
        .expect("the token is stored");
    storage.close().await;
    Token { id, secret }
}

async fn token_with(app: &TestApp, scopes: &'static [&'static str]) -> Token {
    create_token(
        app,
        TokenSpec {
            scopes,
            ..TokenSpec::default()
        },
    )
    .await
}

async fn team_token(app: &TestApp, team: &str, name: &str) -> Token {
    create_token(
        app,
        TokenSpec {
            scopes: &["read", "act"],
            team: Some(team),
            name: Some(name),
            ..TokenSpec::default()
        },
    )
    .await
}

fn now() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// Status, headers and JSON body of a request with an optional bearer secret.
async fn call(
    app: &TestApp,
    method: &str,
    path: &str,
    secret: Option<&str>,
    body: Option<&Value>,
) -> (u16, HeaderMap, Value) {
    let url = format!("{}{path}", app.address);
    let mut request = match method {
        "GET" => app.client.get(url),
        "POST" => app.client.post(url),
        other => app.client.request(other.parse().unwrap(), url),
    };
    if let Some(secret) = secret {
        request = request.bearer_auth(secret);
    }
    if let Some(body) = body {
        request = request.json(body);
    }
    let response = request.send().await.expect("request is sent");
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    (
        status,
        headers,
        response.json().await.unwrap_or(Value::Null),
    )
}

async fn get_as(app: &TestApp, secret: &str, path: &str) -> (u16, Value) {
    let (status, _, body) = call(app, "GET", path, Some(secret), None).await;
    (status, body)
}

async fn post_as(app: &TestApp, secret: &str, path: &str, body: &Value) -> (u16, Value) {
    let (status, _, body) = call(app, "POST", path, Some(secret), Some(body)).await;
    (status, body)
}

/// Posts events with `secret` and waits until they are processed.
async fn ingest_as(app: &TestApp, secret: &str, events: &[Value]) {
    let (status, body) = post_as(app, secret, "/v1/events?wait=true", &json!(events)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["processed"], true, "{body}");
}

/// One loop on a cs-enterprise queue (team cs-enterprise) and one on cs-mid-market (team
/// cs-growth); returns (enterprise loop, mid-market loop) as an unrestricted token lists them.
async fn two_teams_loops(app: &TestApp, admin: &str) -> (Value, Value) {
    ingest_as(
        app,
        admin,
        &[
            account("acct-ent", "enterprise", Some("ana.lima")),
            account("acct-mm", "mid-market", Some("dev.patel")),
            nps("det-ent", "acct-ent", 2, 10, Some("Onboarding was slow")),
            nps("det-mm", "acct-mm", 1, 20, Some("Onboarding was slow")),
        ],
    )
    .await;
    let loop_on = |queue: &'static str| async move {
        let (status, body) = get_as(app, admin, &format!("/v1/loops?queue={queue}")).await;
        assert_eq!(status, 200, "{body}");
        let loops = body["loops"].as_array().expect("loops").clone();
        assert_eq!(loops.len(), 1, "{queue}: {loops:?}");
        loops[0].clone()
    };
    (
        loop_on("cs-enterprise").await,
        loop_on("cs-mid-market").await,
    )
}

fn error_code(body: &Value) -> &str {
    body["error"]["code"].as_str().unwrap_or_default()
}

/// Every /v1 route that needs a token, with a body where it takes one.
fn protected_routes() -> Vec<(&'static str, &'static str, Option<Value>)> {
    let action = json!({"action": "acknowledge", "actor": "x"});
    vec![
        ("POST", "/v1/events", Some(json!([]))),
        ("GET", "/v1/queues", None),
        ("GET", "/v1/loops", None),
        ("GET", "/v1/loops/lp_0123", None),
        ("POST", "/v1/loops/lp_0123/actions", Some(action)),
        ("GET", "/v1/accounts/acct-1", None),
        ("GET", "/v1/journeys", None),
        ("GET", "/v1/kpis", None),
        ("POST", "/v1/explain", Some(json!({}))),
        ("GET", "/v1/dead-letters", None),
        ("GET", "/v1/whoami", None),
    ]
}

#[tokio::test]
async fn without_a_token_every_v1_route_answers_401_unauthorized_with_a_bearer_challenge() {
    let app = TestApp::spawn_with(&[TOKENS]).await;
    for (method, path, body) in protected_routes() {
        let (status, headers, answer) = call(&app, method, path, None, body.as_ref()).await;
        assert_eq!(status, 401, "{method} {path}: {answer}");
        assert_eq!(error_code(&answer), "unauthorized", "{method} {path}");
        let challenge = headers["www-authenticate"].to_str().unwrap();
        assert!(
            challenge.starts_with("Bearer"),
            "{method} {path}: {challenge}"
        );
    }
}

#[tokio::test]
async fn an_unknown_an_expired_a_revoked_or_a_malformed_token_answers_401() {
    let app = TestApp::spawn_with(&[TOKENS]).await;
    let expired = create_token(
        &app,
        TokenSpec {
            expires_at: Some(now() - 1_000),
            ..TokenSpec::default()
        },
    )
    .await;
    let revoked = token_with(&app, &["admin"]).await;
    let valid = token_with(&app, &["admin"]).await;
    let (status, _) = get_as(&app, &revoked.secret, "/v1/queues").await;
    assert_eq!(status, 200, "the token works before it is revoked");
    let storage = store(&app).await;
    storage
        .revoke_token(&revoked.id, now())
        .await
        .unwrap()
        .expect("the token exists");
    storage.close().await;
    let (unknown, _) = generate_token();
    for (case, secret, said) in [
        ("unknown", unknown.as_str(), "not known"),
        ("expired", expired.secret.as_str(), "expired"),
        ("revoked", revoked.secret.as_str(), "revoked"),
        // The hash of a valid token is not a token.
        ("its hash", &hash_secret(&valid.secret), "not known"),
    ] {
        let (status, headers, body) = call(&app, "GET", "/v1/queues", Some(secret), None).await;
        assert_eq!(status, 401, "{case}: {body}");
        assert_eq!(error_code(&body), "unauthorized", "{case}");
        assert!(
            body["error"]["message"].as_str().unwrap().contains(said),
            "{case}: {body}"
        );
        assert_eq!(
            headers["www-authenticate"], r#"Bearer realm="sigloop", error="invalid_token""#,
            "{case}"
        );
    }
    let response = app
        .client
        .get(format!("{}/v1/queues", app.address))
        .header("authorization", format!("Basic {}", valid.secret))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 401, "another scheme is refused");
    // Two Authorization headers, the valid one first or last: refused either way.
    for pair in [
        [format!("Bearer {}", valid.secret), "Bearer junk".to_owned()],
        ["Bearer junk".to_owned(), format!("Bearer {}", valid.secret)],
    ] {
        let response = app
            .client
            .get(format!("{}/v1/queues", app.address))
            .header("authorization", &pair[0])
            .header("authorization", &pair[1])
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), 401, "two headers: {pair:?}");
    }
    let (status, _) = get_as(&app, &valid.secret, "/v1/queues").await;
    assert_eq!(status, 200, "the valid token still works");
}

#[tokio::test]
async fn a_loop_whose_next_generation_moved_to_another_team_does_not_name_it_to_the_first_team() {
    let app = TestApp::spawn_with(&[TOKENS]).await;
    let admin = token_with(&app, &["admin"]).await;
    let (_, loop_mm) = two_teams_loops(&app, &admin.secret).await;
    let first = loop_mm["id"].as_str().unwrap();
    let (status, body) = post_as(
        &app,
        &admin.secret,
        &format!("/v1/loops/{first}/actions"),
        &json!({"action": "close", "reason": "wont_fix"}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    // The account becomes enterprise: its next detractor opens generation 2 on cs-enterprise.
    let mut upgrade = account("acct-mm", "enterprise", Some("ana.lima"));
    upgrade["id"] = json!("account-acct-mm-upgrade");
    ingest_as(
        &app,
        &admin.secret,
        &[
            upgrade,
            nps("det-mm-3", "acct-mm", 1, 30, Some("Onboarding was slow")),
        ],
    )
    .await;
    let (_, listed) = get_as(&app, &admin.secret, "/v1/loops?account_id=acct-mm").await;
    let second = listed["loops"]
        .as_array()
        .unwrap()
        .iter()
        .find(|record| record["generation"] == 2)
        .unwrap_or_else(|| panic!("a second generation: {listed}"));
    assert_eq!(second["queue"], "cs-enterprise", "{second}");
    let second = second["id"].as_str().unwrap().to_owned();

    let growth = team_token(&app, "cs-growth", "dev.patel").await;
    let (status, body) = post_as(
        &app,
        &growth.secret,
        &format!("/v1/loops/{first}/actions"),
        &json!({"action": "comment", "note": "still there?"}),
    )
    .await;
    assert_eq!(status, 409, "{body}");
    assert!(!body.to_string().contains(&second), "{body}");
    let (_, body) = get_as(&app, &growth.secret, &format!("/v1/loops/{first}")).await;
    assert!(!body.to_string().contains(&second), "{body}");

    // The other way round: cs-enterprise sees generation 2 but not its predecessor's id.
    let enterprise = team_token(&app, "cs-enterprise", "ana.lima").await;
    let (status, body) = get_as(&app, &enterprise.secret, &format!("/v1/loops/{second}")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["predecessor"], Value::Null, "{body}");
    assert!(!body.to_string().contains(first), "{body}");
    let (_, body) = get_as(&app, &enterprise.secret, "/v1/loops?account_id=acct-mm").await;
    assert!(!body.to_string().contains(first), "{body}");
    // An unrestricted token sees both and the link between them.
    let (_, body) = get_as(&app, &admin.secret, &format!("/v1/loops/{second}")).await;
    assert_eq!(body["predecessor"], first, "{body}");
    let (status, body) = post_as(
        &app,
        &admin.secret,
        &format!("/v1/loops/{first}/actions"),
        &json!({"action": "comment", "note": "still there?"}),
    )
    .await;
    assert_eq!(status, 409, "{body}");
    assert!(body.to_string().contains(&second), "{body}");
}

#[tokio::test]
async fn health_readiness_metrics_and_the_openapi_document_need_no_token() {
    let app = TestApp::spawn_with(&[TOKENS]).await;
    for path in ["/healthz", "/readyz", "/metrics", "/v1/openapi.json"] {
        let (status, text) = app.get_text(path).await;
        assert_eq!(status, 200, "{path}: {text}");
    }
}

#[tokio::test]
async fn each_scope_reaches_its_own_routes_and_gets_403_forbidden_elsewhere() {
    let app = TestApp::spawn_with(&[TOKENS]).await;
    let admin = token_with(&app, &["admin"]).await;
    let (_, loop_mm) = two_teams_loops(&app, &admin.secret).await;
    let loop_id = loop_mm["id"].as_str().unwrap();
    let ingest = token_with(&app, &["ingest"]).await;
    let read = token_with(&app, &["read"]).await;
    let act = token_with(&app, &["act"]).await;
    let reads = [
        "/v1/queues",
        "/v1/loops",
        &format!("/v1/loops/{loop_id}"),
        "/v1/accounts/acct-mm",
        "/v1/journeys",
        "/v1/kpis",
        "/v1/dead-letters",
    ];
    let event = ticket("t-scope", "acct-mm", 30, "Where is my invoice?", "normal");
    let action_path = format!("/v1/loops/{loop_id}/actions");
    let comment = json!({"action": "comment", "note": "looked at it", "actor": "x"});

    // ingest: events only.
    let (status, body) = post_as(&app, &ingest.secret, "/v1/events", &json!([event])).await;
    assert_eq!(status, 200, "{body}");
    for path in &reads {
        let (status, headers, body) = call(&app, "GET", path, Some(&ingest.secret), None).await;
        assert_eq!(status, 403, "ingest GET {path}: {body}");
        assert_eq!(error_code(&body), "forbidden");
        assert!(headers["www-authenticate"]
            .to_str()
            .unwrap()
            .contains(r#"scope="read""#));
    }
    let (status, _) = post_as(&app, &ingest.secret, &action_path, &comment).await;
    assert_eq!(status, 403);

    // read: every read and the dry run, no events, no actions.
    for path in &reads {
        let (status, body) = get_as(&app, &read.secret, path).await;
        assert_eq!(status, 200, "read GET {path}: {body}");
    }
    let (status, body) = post_as(&app, &read.secret, "/v1/explain", &event).await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = post_as(&app, &read.secret, "/v1/events", &json!([event])).await;
    assert_eq!((status, error_code(&body)), (403, "forbidden"), "{body}");
    let (status, body) = post_as(&app, &read.secret, &action_path, &comment).await;
    assert_eq!((status, error_code(&body)), (403, "forbidden"), "{body}");

    // act: actions only.
    let (status, body) = post_as(&app, &act.secret, &action_path, &comment).await;
    assert_eq!(status, 200, "{body}");
    for path in &reads {
        let (status, _) = get_as(&app, &act.secret, path).await;
        assert_eq!(status, 403, "act GET {path}");
    }
    let (status, _) = post_as(&app, &act.secret, "/v1/events", &json!([event])).await;
    assert_eq!(status, 403);

    // admin: everything.
    for path in &reads {
        let (status, _) = get_as(&app, &admin.secret, path).await;
        assert_eq!(status, 200, "admin GET {path}");
    }
    let (status, _) = post_as(&app, &admin.secret, &action_path, &comment).await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn a_team_token_lists_only_its_teams_queues_and_the_loops_on_them() {
    let app = TestApp::spawn_with(&[TOKENS]).await;
    let admin = token_with(&app, &["admin"]).await;
    let (loop_ent, loop_mm) = two_teams_loops(&app, &admin.secret).await;
    let enterprise = team_token(&app, "cs-enterprise", "ana.lima").await;

    let (status, body) = get_as(&app, &enterprise.secret, "/v1/queues").await;
    assert_eq!(status, 200, "{body}");
    let names: Vec<&str> = body["queues"]
        .as_array()
        .unwrap()
        .iter()
        .map(|queue| queue["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, vec!["cs-enterprise", "cs-retention"]);
    let (_, everything) = get_as(&app, &admin.secret, "/v1/queues").await;
    assert!(everything["queues"].as_array().unwrap().len() > names.len());

    let (status, body) = get_as(&app, &enterprise.secret, "/v1/loops").await;
    assert_eq!(status, 200, "{body}");
    let ids: Vec<&Value> = body["loops"]
        .as_array()
        .unwrap()
        .iter()
        .map(|record| &record["id"])
        .collect();
    assert_eq!(ids, vec![&loop_ent["id"]], "only the enterprise loop");
    // Filters narrow within the team, never beyond it.
    let (_, body) = get_as(&app, &enterprise.secret, "/v1/loops?account_id=acct-mm").await;
    assert_eq!(body["loops"], json!([]), "{body}");
    let (_, body) = get_as(&app, &enterprise.secret, "/v1/loops?queue=cs-enterprise").await;
    assert_eq!(body["loops"].as_array().unwrap().len(), 1, "{body}");
    let (_, body) = get_as(&app, &admin.secret, "/v1/loops").await;
    let all: Vec<&Value> = body["loops"]
        .as_array()
        .unwrap()
        .iter()
        .map(|record| &record["id"])
        .collect();
    assert!(all.contains(&&loop_mm["id"]) && all.contains(&&loop_ent["id"]));
}

#[tokio::test]
async fn a_team_token_naming_another_teams_queue_or_team_gets_403() {
    let app = TestApp::spawn_with(&[TOKENS]).await;
    let admin = token_with(&app, &["admin"]).await;
    two_teams_loops(&app, &admin.secret).await;
    let enterprise = team_token(&app, "cs-enterprise", "ana.lima").await;
    for path in [
        "/v1/loops?queue=cs-mid-market",
        "/v1/kpis?queue=cs-mid-market",
        "/v1/kpis?team=cs-growth",
    ] {
        let (status, body) = get_as(&app, &enterprise.secret, path).await;
        assert_eq!(status, 403, "{path}: {body}");
        assert_eq!(error_code(&body), "forbidden");
        assert!(
            body["error"]["message"]
                .as_str()
                .unwrap()
                .contains("cs-enterprise"),
            "{body}"
        );
    }
    // A queue nobody configured is no other team's: an empty page.
    let (status, body) = get_as(&app, &enterprise.secret, "/v1/loops?queue=nowhere").await;
    assert_eq!((status, body["loops"].clone()), (200, json!([])), "{body}");
}

#[tokio::test]
async fn a_team_token_gets_404_for_another_teams_loop_by_a_guessed_id_exactly_as_for_an_unknown_id()
{
    let app = TestApp::spawn_with(&[TOKENS]).await;
    let admin = token_with(&app, &["admin"]).await;
    let (loop_ent, loop_mm) = two_teams_loops(&app, &admin.secret).await;
    let enterprise = team_token(&app, "cs-enterprise", "ana.lima").await;
    // Loop ids are derived from the loop key and generation, so they can be guessed.
    let guessed = sigloop::loops::loop_id(loop_mm["key"].as_str().unwrap(), 1);
    assert_eq!(guessed, loop_mm["id"].as_str().unwrap());
    let unknown = sigloop::loops::loop_id("account:acct-none:sentiment.detractor", 1);

    let (own_status, _) = get_as(
        &app,
        &enterprise.secret,
        &format!("/v1/loops/{}", loop_ent["id"].as_str().unwrap()),
    )
    .await;
    assert_eq!(own_status, 200);
    let (status, hidden) = get_as(&app, &enterprise.secret, &format!("/v1/loops/{guessed}")).await;
    let (unknown_status, missing) =
        get_as(&app, &enterprise.secret, &format!("/v1/loops/{unknown}")).await;
    assert_eq!((status, unknown_status), (404, 404), "{hidden} {missing}");
    assert_eq!(
        hidden,
        json!({"error": {"code": "not_found", "message": format!("no loop with id {guessed}")}})
    );
    assert_eq!(
        missing,
        json!({"error": {"code": "not_found", "message": format!("no loop with id {unknown}")}})
    );

    for action in [
        json!({"action": "acknowledge"}),
        json!({"action": "comment", "note": "mine now"}),
        json!({"action": "assign", "owner": "ana.lima"}),
    ] {
        let (status, hidden) = post_as(
            &app,
            &enterprise.secret,
            &format!("/v1/loops/{guessed}/actions"),
            &action,
        )
        .await;
        let (unknown_status, missing) = post_as(
            &app,
            &enterprise.secret,
            &format!("/v1/loops/{unknown}/actions"),
            &action,
        )
        .await;
        assert_eq!(
            (status, unknown_status),
            (404, 404),
            "{action}: {hidden} {missing}"
        );
        assert_eq!(hidden["error"]["code"], missing["error"]["code"]);
        assert_eq!(
            hidden["error"]["message"],
            format!("no loop with id {guessed}")
        );
    }
    // Nothing happened to the other team's loop.
    let (_, detail) = get_as(&app, &admin.secret, &format!("/v1/loops/{guessed}")).await;
    assert_eq!(detail["state"], "open", "{detail}");
    assert_eq!(detail["owner"], "dev.patel");
    assert_eq!(detail["history"].as_array().unwrap().len(), 1, "{detail}");
}

#[tokio::test]
async fn a_team_token_sees_an_account_only_through_its_teams_loops() {
    let app = TestApp::spawn_with(&[TOKENS]).await;
    let admin = token_with(&app, &["admin"]).await;
    let (loop_ent, _) = two_teams_loops(&app, &admin.secret).await;
    let growth = team_token(&app, "cs-growth", "dev.patel").await;
    let (status, body) = get_as(&app, &growth.secret, "/v1/accounts/acct-mm").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["open_loops"].as_array().unwrap().len(), 1, "{body}");
    assert_eq!(body["open_loops"][0]["queue"], "cs-mid-market");
    assert_eq!(
        body["recent_signals"].as_array().unwrap().len(),
        1,
        "{body}"
    );
    assert_eq!(body["journey"].as_array().unwrap().len(), 1, "{body}");
    // The enterprise account has no cs-growth loop: it answers as an unknown account does.
    let (status, hidden) = get_as(&app, &growth.secret, "/v1/accounts/acct-ent").await;
    let (unknown_status, missing) = get_as(&app, &growth.secret, "/v1/accounts/acct-none").await;
    assert_eq!((status, unknown_status), (404, 404), "{hidden} {missing}");
    assert_eq!(hidden["error"]["code"], "not_found");
    assert_eq!(
        hidden["error"]["message"],
        "no account acct-ent in the directory and no signals for it"
    );
    let (status, body) = get_as(&app, &admin.secret, "/v1/accounts/acct-ent").await;
    assert_eq!(status, 200);
    assert_eq!(body["open_loops"][0]["id"], loop_ent["id"]);
}

#[tokio::test]
async fn dead_letters_are_for_tokens_without_a_team_and_kpis_and_explain_keep_to_the_team() {
    let app = TestApp::spawn_with(&[TOKENS]).await;
    let admin = token_with(&app, &["admin"]).await;
    two_teams_loops(&app, &admin.secret).await;
    let (status, _) = app
        .client
        .post(format!("{}/v1/events", app.address))
        .bearer_auth(&admin.secret)
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .map(|response| (response.status().as_u16(), ()))
        .unwrap();
    assert_eq!(status, 400);
    let enterprise = team_token(&app, "cs-enterprise", "ana.lima").await;
    let reader = token_with(&app, &["read"]).await;

    let (status, body) = get_as(&app, &enterprise.secret, "/v1/dead-letters").await;
    assert_eq!((status, error_code(&body)), (403, "forbidden"), "{body}");
    let (status, body) = get_as(&app, &reader.secret, "/v1/dead-letters").await;
    assert_eq!(status, 200);
    assert_eq!(body["dead_letters"].as_array().unwrap().len(), 1, "{body}");

    let (status, body) = get_as(&app, &enterprise.secret, "/v1/kpis").await;
    assert_eq!(status, 200, "{body}");
    let queues: Vec<&str> = body["queues"]
        .as_array()
        .unwrap()
        .iter()
        .map(|queue| queue["queue"].as_str().unwrap())
        .collect();
    assert_eq!(queues, vec!["cs-enterprise", "cs-retention"], "{body}");
    let teams: Vec<&str> = body["teams"]
        .as_array()
        .unwrap()
        .iter()
        .map(|team| team["team"].as_str().unwrap())
        .collect();
    assert_eq!(teams, vec!["cs-enterprise"]);
    // A queue that is not the team's, configured or not, is refused alike.
    for queue in ["cs-mid-market", "no-such-queue"] {
        let (status, body) =
            get_as(&app, &enterprise.secret, &format!("/v1/kpis?queue={queue}")).await;
        assert_eq!(
            (status, error_code(&body)),
            (403, "forbidden"),
            "{queue}: {body}"
        );
    }

    // The dry run of a detractor at the mid-market account would join cs-growth's loop. The
    // enterprise token gets the dry run as on a fresh instance: it cannot tell that cs-growth has
    // a loop for that key, nor the account's tier and CSM from the directory.
    let detractor = nps("det-mm-2", "acct-mm", 0, 40, Some("Onboarding was slow"));
    let (status, body) = post_as(&app, &enterprise.secret, "/v1/explain", &detractor).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["basis"], "configuration", "{body}");
    assert_eq!(body["signals"][0]["outcome"], "open", "{body}");
    assert_ne!(body["signals"][0]["queue"], "cs-mid-market", "{body}");
    assert!(body.get("hidden_signals").is_none(), "{body}");
    let (_, body) = post_as(&app, &admin.secret, "/v1/explain", &detractor).await;
    assert_eq!(body["basis"], "state", "{body}");
    assert_eq!(body["signals"][0]["queue"], "cs-mid-market", "{body}");
    assert_eq!(body["signals"][0]["outcome"], "join", "{body}");
}

#[tokio::test]
async fn an_action_records_the_tokens_name_as_its_actor_whatever_the_body_says() {
    let app = TestApp::spawn_with(&[TOKENS]).await;
    let admin = token_with(&app, &["admin"]).await;
    let (loop_ent, _) = two_teams_loops(&app, &admin.secret).await;
    let id = loop_ent["id"].as_str().unwrap();
    let ana = team_token(&app, "cs-enterprise", "ana.lima").await;
    let (status, body) = post_as(
        &app,
        &ana.secret,
        &format!("/v1/loops/{id}/actions"),
        &json!({"action": "acknowledge"}),
    )
    .await;
    assert_eq!(status, 200, "no actor in the body is fine: {body}");
    let (status, body) = post_as(
        &app,
        &ana.secret,
        &format!("/v1/loops/{id}/actions"),
        &json!({"action": "comment", "note": "called them", "actor": "somebody.else"}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let actors: Vec<(&str, &str)> = body["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|row| {
            (
                row["action"].as_str().unwrap(),
                row["actor"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        actors,
        vec![
            ("open", "sigloop"),
            ("acknowledge", "ana.lima"),
            ("comment", "ana.lima")
        ]
    );
}

#[tokio::test]
async fn whoami_names_the_token_its_scopes_and_team_and_says_when_the_api_is_open() {
    let app = TestApp::spawn_with(&[TOKENS]).await;
    let token = create_token(
        &app,
        TokenSpec {
            scopes: &["read", "act"],
            team: Some("cs-growth"),
            name: Some("dev.patel"),
            expires_at: Some(now() + 86_400_000),
        },
    )
    .await;
    let (status, body) = get_as(&app, &token.secret, "/v1/whoami").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["auth"], "tokens");
    assert_eq!(body["token"]["id"], token.id.as_str());
    assert_eq!(body["token"]["name"], "dev.patel");
    assert_eq!(body["token"]["scopes"], json!(["read", "act"]));
    assert_eq!(body["token"]["team"], "cs-growth");
    assert!(body["token"]["expires_at"].is_string(), "{body}");
    assert!(body["token"].get("secret").is_none() && body["token"].get("secret_hash").is_none());

    let open = TestApp::spawn().await;
    let (status, body) = open.get("/v1/whoami").await;
    assert_eq!(status, 200);
    assert_eq!(body, json!({"auth": "open", "token": null}));
}

#[tokio::test]
async fn open_mode_needs_no_token_and_records_the_actor_from_the_body() {
    let app = TestApp::spawn().await;
    app.ingest(&[
        account("acct-open", "enterprise", Some("ana.lima")),
        nps("d-open", "acct-open", 1, 0, None),
    ])
    .await;
    let id = app.loops("account_id=acct-open").await[0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let (status, body) = app
        .action(&id, json!({"action": "acknowledge", "actor": "ben.okafor"}))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["history"][1]["actor"], "ben.okafor");
    let (status, body) = app.action(&id, json!({"action": "start"})).await;
    assert_eq!(
        (status, error_code(&body)),
        (400, "missing_field"),
        "{body}"
    );
}

#[tokio::test]
async fn open_mode_on_an_address_other_machines_reach_refuses_to_start_naming_both_settings() {
    let directory = tempfile::tempdir().unwrap();
    for listen in [
        "0.0.0.0:0",
        "[::]:0",
        "192.0.2.1:8080",
        "sigloop.example.com:8080",
    ] {
        let mut config = config_with(&directory.path().join("sigloop.db"), &[]);
        config.settings.server.listen = listen.to_owned();
        let error = match Application::build(config).await {
            Ok(_) => panic!("{listen}: an open API on every address must not start"),
            Err(error) => format!("{error:#}"),
        };
        assert!(error.contains(listen), "{error}");
        assert!(error.contains("server.auth"), "{error}");
        assert!(error.contains("server.allow_open"), "{error}");
    }
    assert!(
        !directory.path().join("sigloop.db").exists(),
        "the refusal comes before the database is touched"
    );
}

#[tokio::test]
async fn allow_open_or_tokens_let_the_server_listen_on_every_address() {
    for (overrides, expected) in [
        ([("SIGLOOP__SERVER__ALLOW_OPEN", "true")], 200),
        ([TOKENS], 401),
    ] {
        let directory = tempfile::tempdir().unwrap();
        let mut config = config_with(&directory.path().join("sigloop.db"), &overrides);
        config.settings.server.listen = "0.0.0.0:0".to_owned();
        let application = Application::build(config)
            .await
            .unwrap_or_else(|error| panic!("{overrides:?}: {error:#}"));
        let address = format!("http://127.0.0.1:{}", application.port());
        let shutdown = tokio_util::sync::CancellationToken::new();
        let server = tokio::spawn(application.run_until_stopped(shutdown.clone()));
        let client = reqwest::Client::new();
        let health = client
            .get(format!("{address}/healthz"))
            .send()
            .await
            .unwrap();
        assert_eq!(health.status().as_u16(), 200, "{overrides:?}");
        let queues = client
            .get(format!("{address}/v1/queues"))
            .send()
            .await
            .unwrap();
        assert_eq!(queues.status().as_u16(), expected, "{overrides:?}");
        shutdown.cancel();
        server.await.unwrap().expect("the server stops cleanly");
    }
}

#[tokio::test]
async fn every_response_carries_the_security_headers_and_v1_answers_are_not_stored() {
    let app = TestApp::spawn_with(&[TOKENS]).await;
    let admin = token_with(&app, &["admin"]).await;
    for (path, secret, expected) in [
        ("/v1/queues", Some(admin.secret.as_str()), 200),
        ("/v1/queues", None, 401),
        ("/v1/loops/lp_missing", Some(admin.secret.as_str()), 404),
        ("/v1/no-such-route", None, 404),
        ("/healthz", None, 200),
        ("/metrics", None, 200),
        ("/v1/openapi.json", None, 200),
    ] {
        let (status, headers, _) = call(&app, "GET", path, secret, None).await;
        assert_eq!(status, expected, "{path}");
        for (name, value) in [
            ("x-content-type-options", "nosniff"),
            ("x-frame-options", "DENY"),
            ("referrer-policy", "no-referrer"),
            ("cache-control", "no-store"),
        ] {
            assert_eq!(headers[name], value, "{path}: {name}");
        }
        let policy = headers["content-security-policy"].to_str().unwrap();
        assert!(policy.starts_with("default-src 'self'"), "{path}: {policy}");
        assert!(
            policy.contains("frame-ancestors 'none'"),
            "{path}: {policy}"
        );
    }
}

/// A raw HTTP/1.1 exchange: writes `request`, then reads until the server closes the connection or
/// `limit` passes; returns what was read.
async fn raw_exchange(address: &str, request: &[u8], limit: Duration) -> String {
    let host = address.trim_start_matches("http://");
    let mut stream = tokio::net::TcpStream::connect(host).await.unwrap();
    stream.write_all(request).await.unwrap();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(limit, stream.read_to_end(&mut answer)).await;
    String::from_utf8_lossy(&answer).into_owned()
}

#[tokio::test]
async fn a_request_still_unanswered_at_the_request_timeout_gets_503_timeout_in_json() {
    let app = TestApp::spawn_with(&[
        ("SIGLOOP__SERVER__REQUEST_TIMEOUT_SECS", "2"),
        ("SIGLOOP__SERVER__WAIT_TIMEOUT_SECS", "1"),
    ])
    .await;
    // A client that announces 100 bytes of events and sends 10, then stalls.
    let started = std::time::Instant::now();
    let answer = raw_exchange(
        &app.address,
        b"POST /v1/events HTTP/1.1\r\nhost: sigloop\r\ncontent-type: application/json\r\n\
          content-length: 100\r\nconnection: close\r\n\r\n[{\"id\": 1",
        Duration::from_secs(10),
    )
    .await;
    let elapsed = started.elapsed();
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    assert!(
        elapsed >= Duration::from_millis(1_900) && elapsed < Duration::from_secs(8),
        "answered after {elapsed:?}"
    );
    let lower = answer.to_ascii_lowercase();
    assert!(lower.contains("content-type: application/json"), "{answer}");
    assert!(
        lower.contains("x-content-type-options: nosniff"),
        "{answer}"
    );
    let body = &answer[answer.find("\r\n\r\n").unwrap() + 4..];
    let body: Value = serde_json::from_str(body.trim()).unwrap_or_else(|_| {
        // A chunked body: the JSON sits between the chunk sizes.
        let start = body.find('{').unwrap();
        let end = body.rfind('}').unwrap();
        serde_json::from_str(&body[start..=end]).unwrap()
    });
    assert_eq!(body["error"]["code"], "timeout", "{body}");
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("server.request_timeout_secs"));
    // A request within the time is answered as usual.
    let (status, _) = app.get("/v1/queues").await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn a_request_timeout_not_longer_than_the_wait_timeout_is_a_configuration_error() {
    let sources = sigloop::config::ConfigSources::embedded();
    let env = [
        ("SIGLOOP__SERVER__REQUEST_TIMEOUT_SECS", "30"),
        ("SIGLOOP__SERVER__WAIT_TIMEOUT_SECS", "30"),
    ]
    .map(|(key, value)| (key.to_owned(), value.to_owned()));
    let error = sigloop::config::Config::parse(&sources, env.into_iter()).unwrap_err();
    let text = error.to_string();
    assert!(text.contains("server.request_timeout_secs"), "{text}");
    assert!(text.contains("server.wait_timeout_secs"), "{text}");
}

#[tokio::test]
async fn every_route_that_reads_a_body_refuses_one_over_its_limit_with_413_in_json() {
    let app = TestApp::spawn_with(&[("SIGLOOP__SERVER__MAX_BODY_BYTES", "4096")]).await;
    app.ingest(&[
        account("acct-big", "enterprise", Some("ana.lima")),
        nps("d-big", "acct-big", 1, 0, None),
    ])
    .await;
    let id = app.loops("account_id=acct-big").await[0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let events = format!("[{}]", " ".repeat(5_000));
    let explain = format!("{{\"data\": \"{}\"}}", "x".repeat(1024 * 1024 + 10));
    let action = format!(
        "{{\"action\": \"comment\", \"actor\": \"a\", \"note\": \"{}\"}}",
        "x".repeat(64 * 1024 + 10)
    );
    for (path, body) in [
        ("/v1/events".to_owned(), events),
        ("/v1/explain".to_owned(), explain),
        (format!("/v1/loops/{id}/actions"), action),
    ] {
        let (status, answer) = app.post_raw(&path, "application/json", body).await;
        assert_eq!(status, 413, "{path}: {answer}");
        assert_eq!(error_code(&answer), "too_large", "{path}");
    }
}

#[tokio::test]
async fn error_bodies_are_json_and_name_nothing_inside_sigloop() {
    let app = TestApp::spawn().await;
    // A body of the wrong JSON type: serde's message would name the wire type.
    let (status, body) = app
        .post_raw(
            "/v1/loops/lp_x/actions",
            "application/json",
            "\"acknowledge\"",
        )
        .await;
    assert_eq!((status, error_code(&body)), (400, "invalid_json"), "{body}");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(!message.contains("ActionBody"), "{message}");
    assert!(message.contains("JSON object"), "{message}");
    // Wrong method and unknown route: JSON too.
    let (status, headers, body) = call(&app, "DELETE", "/v1/queues", None, None).await;
    assert_eq!(
        (status, error_code(&body)),
        (405, "method_not_allowed"),
        "{body}"
    );
    assert_eq!(headers["content-type"], "application/json");
    let (status, _, body) = call(&app, "GET", "/v1/nothing/here", None, None).await;
    assert_eq!((status, error_code(&body)), (404, "not_found"), "{body}");
    // A query of the wrong type is described by what the client sent, in JSON.
    let (status, body) = app.get("/v1/loops?limit=many").await;
    assert_eq!(
        (status, error_code(&body)),
        (400, "invalid_parameter"),
        "{body}"
    );
    assert!(!body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("LoopsQuery"));
}

#[tokio::test]
async fn a_team_sees_the_journey_loop_its_account_loop_links_to_but_cx_sees_only_its_own_side() {
    let app = TestApp::spawn_with(&[TOKENS]).await;
    let admin = token_with(&app, &["admin"]).await;
    // Forty accounts complain about onboarding in one week: the journey loop opens on cx-journeys
    // and gathers their account loops, one of them on cs-enterprise.
    let mut events = vec![account("acct-ent", "enterprise", Some("ana.lima"))];
    for index in 0..39 {
        events.push(account(
            &format!("acct-mm-{index:02}"),
            "mid-market",
            Some("dev.patel"),
        ));
    }
    events.push(nps(
        "det-ent",
        "acct-ent",
        2,
        10,
        Some("Onboarding was slow"),
    ));
    for index in 0..39 {
        events.push(nps(
            &format!("det-mm-{index:02}"),
            &format!("acct-mm-{index:02}"),
            1,
            20 + index,
            Some("Onboarding was slow"),
        ));
    }
    ingest_as(&app, &admin.secret, &events).await;
    let (_, journeys) = get_as(&app, &admin.secret, "/v1/loops?kind=journey").await;
    let journey = journeys["loops"][0]["id"]
        .as_str()
        .unwrap_or_else(|| panic!("a journey loop: {journeys}"))
        .to_owned();
    let (_, enterprise_loops) = get_as(&app, &admin.secret, "/v1/loops?queue=cs-enterprise").await;
    let account_loop = enterprise_loops["loops"][0]["id"]
        .as_str()
        .unwrap()
        .to_owned();

    // The enterprise team sees which journey loop explains its loop (not the journey loop's page).
    let enterprise = team_token(&app, "cs-enterprise", "ana.lima").await;
    let (status, body) = get_as(
        &app,
        &enterprise.secret,
        &format!("/v1/loops/{account_loop}"),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let links = body["links"].as_array().unwrap();
    assert_eq!(links.len(), 1, "{body}");
    assert_eq!(links[0]["relation"], "journey", "{body}");
    assert_eq!(links[0]["id"], journey.as_str(), "{body}");
    let (status, _) = get_as(&app, &enterprise.secret, &format!("/v1/loops/{journey}")).await;
    assert_eq!(status, 404);

    // The CX team sees its journey loop, and none of the account loops on CS teams' queues.
    let cx = team_token(&app, "cx", "cx-lead").await;
    let (status, body) = get_as(&app, &cx.secret, &format!("/v1/loops/{journey}")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["links"], json!([]), "{body}");
    let (_, body) = get_as(&app, &admin.secret, &format!("/v1/loops/{journey}")).await;
    assert_eq!(body["links"].as_array().unwrap().len(), 40, "{body}");
}
