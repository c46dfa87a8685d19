//! The command line end to end: the real binary as a child process, with its exit code, standard
//! output and standard error checked as a user would see them.
//!
//! Inputs are small so that every test stays fast; the ingest and export tests talk to a real
//! `sigloop serve` child on its own port and database.

mod common;

use std::collections::BTreeSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

use common::{
    account, assert_exit_code, nps, parse_lines, run, sigloop, stderr_of, stdout_of, ServerProcess,
};
use serde_json::Value;

/// The eight event types of events v1.
const EVENT_TYPES: [&str; 8] = [
    "account.upserted",
    "ticket.opened",
    "ticket.updated",
    "ticket.solved",
    "ticket.reopened",
    "survey.responded",
    "usage.metric",
    "usage.milestone",
];

/// The standard output of a successful `sigloop gen`.
fn gen_output(accounts: usize, events: usize, seed: u64) -> String {
    let output = run(&mut sigloop(&[
        "gen",
        "--accounts",
        &accounts.to_string(),
        "--events",
        &events.to_string(),
        "--seed",
        &seed.to_string(),
    ]));
    assert_exit_code(&output, 0);
    stdout_of(&output)
}

/// Writes `sigloop gen` output for the arguments to `directory/name` and returns the path.
fn gen_file(directory: &Path, name: &str, accounts: usize, events: usize, seed: u64) -> PathBuf {
    let path = directory.join(name);
    std::fs::write(&path, gen_output(accounts, events, seed)).expect("the input file is written");
    path
}

/// `sigloop ingest FILE --url ADDRESS --batch-size N --wait`.
fn ingest_file(file: &Path, address: &str, batch_size: usize) -> Output {
    run(sigloop(&["ingest"]).arg(file).args([
        "--url",
        address,
        "--batch-size",
        &batch_size.to_string(),
        "--wait",
    ]))
}

/// A running `sigloop serve` on a fresh database in `directory`.
async fn healthy_server(directory: &Path) -> (ServerProcess, PathBuf) {
    let db = directory.join("sigloop.db");
    let mut server = ServerProcess::start(&db, &[]);
    server.wait_until_healthy().await;
    (server, db)
}

/// Waits for a child that is expected to exit by itself, killing it after `limit` so that a command
/// that wrongly keeps running fails the test instead of hanging it.
fn wait_with_limit(mut child: std::process::Child, limit: Duration) -> Output {
    let started = Instant::now();
    loop {
        if child.try_wait().expect("wait works").is_some() {
            return child.wait_with_output().expect("the output is collected");
        }
        if started.elapsed() > limit {
            let _ = child.kill();
            let output = child.wait_with_output().expect("the output is collected");
            panic!(
                "the command was still running after {limit:?}\nstderr:\n{}",
                stderr_of(&output)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

// ---- gen ----

#[test]
fn gen_with_the_same_seed_twice_gives_byte_identical_output() {
    let first = gen_output(5, 200, 9);
    let second = gen_output(5, 200, 9);
    assert!(!first.is_empty());
    assert_eq!(first, second);
}

#[test]
fn gen_with_a_different_seed_gives_different_output() {
    assert_ne!(gen_output(5, 200, 9), gen_output(5, 200, 10));
}

#[test]
fn gen_writes_the_accounts_first_then_the_events_one_json_cloudevent_per_line() {
    let output = gen_output(5, 200, 9);
    assert!(output.ends_with('\n'), "the last line is terminated");
    let events = parse_lines(&output);
    assert_eq!(events.len(), 5 + 200, "accounts plus events");
    let mut account_ids = BTreeSet::new();
    for event in &events[..5] {
        assert_eq!(event["type"], "account.upserted", "{event}");
        account_ids.insert(event["data"]["account_id"].as_str().unwrap().to_owned());
    }
    assert_eq!(account_ids.len(), 5, "one upsert per account");
    for event in &events {
        assert_eq!(event["specversion"], "1.0", "{event}");
        assert!(event["id"].is_string(), "{event}");
        assert!(event["source"].is_string(), "{event}");
        assert!(event["time"].is_string(), "{event}");
        assert!(event["data"].is_object(), "{event}");
        let event_type = event["type"].as_str().expect("a type");
        assert!(EVENT_TYPES.contains(&event_type), "{event_type}");
    }
    let ids: BTreeSet<&str> = events.iter().map(|e| e["id"].as_str().unwrap()).collect();
    assert_eq!(ids.len(), events.len(), "event ids are unique");
}

#[test]
fn gen_of_a_larger_run_contains_all_eight_event_types() {
    let output = gen_output(30, 2000, 9);
    let seen: BTreeSet<String> = parse_lines(&output)
        .iter()
        .map(|event| event["type"].as_str().unwrap().to_owned())
        .collect();
    let expected: BTreeSet<String> = EVENT_TYPES.iter().map(|t| (*t).to_owned()).collect();
    assert_eq!(seen, expected);
}

#[test]
fn gen_with_out_writes_the_same_bytes_as_standard_output() {
    let directory = tempfile::tempdir().unwrap();
    let path = directory.path().join("events.ndjson");
    let output = run(sigloop(&[
        "gen",
        "--accounts",
        "5",
        "--events",
        "200",
        "--seed",
        "9",
        "--out",
    ])
    .arg(&path));
    assert_exit_code(&output, 0);
    assert!(
        output.stdout.is_empty(),
        "nothing goes to stdout with --out"
    );
    let written = std::fs::read(&path).expect("the --out file exists");
    assert_eq!(written, gen_output(5, 200, 9).into_bytes());
}

// ---- ingest ----

#[tokio::test]
async fn ingest_sends_every_line_and_a_second_run_reports_them_all_as_duplicates() {
    let directory = tempfile::tempdir().unwrap();
    let file = gen_file(directory.path(), "events.ndjson", 5, 200, 9);
    let (server, _db) = healthy_server(directory.path()).await;

    let first = ingest_file(&file, &server.address, 50);
    assert_exit_code(&first, 0);
    let summary = stderr_of(&first);
    assert!(
        summary.contains("205 accepted, 0 duplicates, 0 rejected in 5 requests"),
        "{summary}"
    );

    let second = ingest_file(&file, &server.address, 50);
    assert_exit_code(&second, 0);
    let summary = stderr_of(&second);
    assert!(
        summary.contains("0 accepted, 205 duplicates, 0 rejected"),
        "{summary}"
    );
    server.terminate();
}

#[tokio::test]
async fn ingest_of_a_file_with_one_malformed_line_exits_2_names_the_line_and_accepts_the_rest() {
    let directory = tempfile::tempdir().unwrap();
    let mut lines: Vec<String> = gen_output(2, 2, 4).lines().map(str::to_owned).collect();
    assert_eq!(lines.len(), 4);
    // Line 5 sits alone in the third request of two events, so that request is all rejections (a
    // 400 answer) and the line number has to carry over from the earlier requests.
    lines.push("{\"specversion\": \"1.0\", not json".to_owned());
    let file = directory.path().join("events.ndjson");
    std::fs::write(&file, lines.join("\n") + "\n").unwrap();
    let (server, _db) = healthy_server(directory.path()).await;

    let output = ingest_file(&file, &server.address, 2);
    assert_exit_code(&output, 2);
    let stderr = stderr_of(&output);
    assert!(stderr.contains("line 5: invalid_json"), "{stderr}");
    assert!(
        stderr.contains("4 accepted, 0 duplicates, 1 rejected in 3 requests"),
        "{stderr}"
    );

    // The good lines are stored: sending them again finds every one a duplicate.
    let good = directory.path().join("good.ndjson");
    std::fs::write(&good, lines[..4].join("\n") + "\n").unwrap();
    let again = ingest_file(&good, &server.address, 50);
    assert_exit_code(&again, 0);
    let stderr = stderr_of(&again);
    assert!(
        stderr.contains("0 accepted, 4 duplicates, 0 rejected"),
        "{stderr}"
    );
    server.terminate();
}

#[tokio::test]
async fn ingest_reports_a_rejection_after_a_blank_line_with_its_own_line_number_in_the_file() {
    let directory = tempfile::tempdir().unwrap();
    let good = serde_json::to_string(&account("acct-blank", "smb", None)).unwrap();
    // Line 1 an account, line 2 blank, line 3 an event of an unknown type; one request carries both.
    // The server numbers the events of a request without the blank lines the client skipped, so
    // the client has to map each index back to the line it read it from.
    let bad = good
        .replace("account.upserted", "account.deleted")
        .replace("account-acct-blank", "deleted-acct-blank");
    let file = directory.path().join("events.ndjson");
    std::fs::write(&file, format!("{good}\n\n{bad}\n")).unwrap();
    let (server, _db) = healthy_server(directory.path()).await;

    let output = ingest_file(&file, &server.address, 50);
    assert_exit_code(&output, 2);
    let stderr = stderr_of(&output);
    assert!(
        stderr.contains("1 accepted, 0 duplicates, 1 rejected"),
        "{stderr}"
    );
    assert!(stderr.contains("line 3: unknown_type"), "{stderr}");
    server.terminate();
}

#[tokio::test]
async fn ingest_of_dash_reads_standard_input() {
    let directory = tempfile::tempdir().unwrap();
    let input = gen_output(3, 40, 2);
    let (server, _db) = healthy_server(directory.path()).await;

    let mut child = sigloop(&[
        "ingest",
        "-",
        "--url",
        &server.address,
        "--batch-size",
        "50",
        "--wait",
    ])
    .stdin(Stdio::piped())
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .expect("ingest starts");
    // The input is small and ingest reads it all before it writes anything, so writing it whole
    // before reading the output cannot deadlock.
    child
        .stdin
        .take()
        .expect("stdin is piped")
        .write_all(input.as_bytes())
        .expect("stdin is written");
    let output = wait_with_limit(child, Duration::from_secs(60));
    assert_exit_code(&output, 0);
    let stderr = stderr_of(&output);
    assert!(
        stderr.contains("43 accepted, 0 duplicates, 0 rejected in 1 requests"),
        "{stderr}"
    );
    server.terminate();
}

// ---- explain ----

/// Runs `sigloop explain ARGS` in `working_directory`.
fn explain_in(working_directory: &Path, args: &[&str]) -> Output {
    let mut command = sigloop(&["explain"]);
    command.args(args).current_dir(working_directory);
    run(&mut command)
}

#[test]
fn explain_prints_one_json_object_per_non_blank_line_and_exits_2_when_a_line_is_rejected() {
    let inputs = tempfile::tempdir().unwrap();
    let working_directory = tempfile::tempdir().unwrap();
    let mut lines: Vec<String> = gen_output(3, 20, 5).lines().map(str::to_owned).collect();
    lines.insert(4, String::new());
    lines.insert(8, "   ".to_owned());
    lines.push("{\"specversion\":\"1.0\",\"id\":\"x\",\"source\":\"s\",\"type\":\"nope\",\"time\":\"2026-03-02T09:00:00Z\",\"data\":{}}".to_owned());
    let file = inputs.path().join("events.ndjson");
    std::fs::write(&file, lines.join("\n") + "\n").unwrap();

    let output = explain_in(working_directory.path(), &[file.to_str().unwrap()]);
    assert_exit_code(&output, 2);
    let answers = parse_lines(&stdout_of(&output));
    let expected_lines: Vec<u64> = lines
        .iter()
        .enumerate()
        .filter(|(_, line)| !line.trim().is_empty())
        .map(|(index, _)| index as u64 + 1)
        .collect();
    let printed_lines: Vec<u64> = answers
        .iter()
        .map(|answer| answer["line"].as_u64().expect("a line number"))
        .collect();
    assert_eq!(
        printed_lines, expected_lines,
        "one answer per non-blank line"
    );

    for answer in &answers[..answers.len() - 1] {
        let explanation = &answer["explanation"];
        assert!(explanation.is_object(), "{answer}");
        assert!(answer.get("rejected").is_none(), "{answer}");
        assert!(explanation["tags"]["primary"].is_string(), "{answer}");
        assert!(explanation["signals"].is_array(), "{answer}");
    }
    let last = answers.last().unwrap();
    assert_eq!(last["line"], lines.len() as u64);
    assert!(last.get("explanation").is_none(), "{last}");
    assert_eq!(last["rejected"]["code"], "unknown_type", "{last}");
}

#[test]
fn explain_of_a_file_with_no_rejection_exits_0() {
    let inputs = tempfile::tempdir().unwrap();
    let working_directory = tempfile::tempdir().unwrap();
    let file = gen_file(inputs.path(), "events.ndjson", 3, 20, 5);
    let output = explain_in(working_directory.path(), &[file.to_str().unwrap()]);
    assert_exit_code(&output, 0);
    assert_eq!(parse_lines(&stdout_of(&output)).len(), 23);
}

#[test]
fn explain_shows_a_detractor_after_its_account_opening_a_loop_routed_from_the_root() {
    let inputs = tempfile::tempdir().unwrap();
    let working_directory = tempfile::tempdir().unwrap();
    let lines = [
        account("acct-explain", "enterprise", Some("ana.lima")),
        nps(
            "nps-1",
            "acct-explain",
            2,
            30,
            Some("The invoice is wrong again"),
        ),
    ]
    .map(|event| event.to_string());
    let file = inputs.path().join("events.ndjson");
    std::fs::write(&file, lines.join("\n") + "\n").unwrap();

    let output = explain_in(working_directory.path(), &[file.to_str().unwrap()]);
    assert_exit_code(&output, 0);
    let answers = parse_lines(&stdout_of(&output));
    assert_eq!(answers.len(), 2);
    let signals = answers[1]["explanation"]["signals"]
        .as_array()
        .expect("signals");
    let detractor = signals
        .iter()
        .find(|signal| signal["signal"]["detector"] == "detractor")
        .unwrap_or_else(|| panic!("no detractor signal: {}", answers[1]));
    assert_eq!(detractor["outcome"], "open", "{detractor}");
    let path = detractor["route"]["path"].as_array().expect("a route path");
    assert_eq!(path.first(), Some(&Value::from("root")), "{detractor}");
    assert_eq!(
        detractor["signal"]["account_id"], "acct-explain",
        "{detractor}"
    );
}

#[test]
fn explain_of_dash_reads_standard_input() {
    let working_directory = tempfile::tempdir().unwrap();
    let input = gen_output(2, 5, 3);
    let mut child = sigloop(&["explain", "-"])
        .current_dir(working_directory.path())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("explain starts");
    // A few kilobytes in and out fit in the pipe buffers, so writing first cannot deadlock.
    child
        .stdin
        .take()
        .expect("stdin is piped")
        .write_all(input.as_bytes())
        .expect("stdin is written");
    let output = wait_with_limit(child, Duration::from_secs(60));
    assert_exit_code(&output, 0);
    assert_eq!(parse_lines(&stdout_of(&output)).len(), 7);
}

#[test]
fn explain_stores_nothing_in_its_working_directory() {
    let inputs = tempfile::tempdir().unwrap();
    let working_directory = tempfile::tempdir().unwrap();
    let file = gen_file(inputs.path(), "events.ndjson", 3, 30, 6);
    let output = explain_in(working_directory.path(), &[file.to_str().unwrap()]);
    assert_exit_code(&output, 0);
    let created: Vec<PathBuf> = std::fs::read_dir(working_directory.path())
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .collect();
    assert!(created.is_empty(), "explain created {created:?}");
}

// ---- export ----

#[tokio::test]
async fn export_of_a_served_database_is_ndjson_sorted_by_key_and_generation_with_full_details() {
    let directory = tempfile::tempdir().unwrap();
    let file = gen_file(directory.path(), "events.ndjson", 10, 300, 7);
    let (server, db) = healthy_server(directory.path()).await;
    let ingested = ingest_file(&file, &server.address, 100);
    assert_exit_code(&ingested, 0);
    server.terminate();

    let exported = common::export(&db);
    assert!(exported.ends_with('\n'), "the last line is terminated");
    let loops = parse_lines(&exported);
    assert!(loops.len() > 3, "the workload opens loops: {}", loops.len());
    let order: Vec<(String, u64)> = loops
        .iter()
        .map(|record| {
            (
                record["key"].as_str().expect("a key").to_owned(),
                record["generation"].as_u64().expect("a generation"),
            )
        })
        .collect();
    let mut sorted = order.clone();
    sorted.sort();
    assert_eq!(order, sorted, "sorted by (key, generation)");
    for record in &loops {
        assert!(
            record["trace"].is_object(),
            "a trace on every loop: {record}"
        );
        let history = record["history"].as_array().expect("a history array");
        assert!(!history.is_empty(), "a history on every loop: {record}");
        let evidence = record["evidence"].as_array().expect("an evidence array");
        assert!(!evidence.is_empty(), "evidence on every loop: {record}");
    }

    // --out writes the same bytes.
    let out = directory.path().join("export.ndjson");
    let output = run(sigloop(&["export", "--db"]).arg(&db).arg("--out").arg(&out));
    assert_exit_code(&output, 0);
    assert_eq!(std::fs::read_to_string(&out).unwrap(), exported);
}

#[test]
fn export_of_a_missing_database_fails_with_a_clear_message() {
    let working_directory = tempfile::tempdir().unwrap();
    let output =
        run(sigloop(&["export", "--db", "/nonexistent"]).current_dir(working_directory.path()));
    assert!(!output.status.success(), "export of nothing succeeded");
    assert!(output.stdout.is_empty());
    let stderr = stderr_of(&output);
    assert!(stderr.contains("no database at /nonexistent"), "{stderr}");
    assert!(
        !Path::new("/nonexistent").exists(),
        "export created the database it was asked to read"
    );
}

// ---- serve ----

#[test]
fn serve_with_an_invalid_configuration_directory_exits_non_zero_listing_every_problem() {
    let config = tempfile::tempdir().unwrap();
    let routes = r#"
[[team]]
name = "cs-ops"
members = ["kai.nakamura"]

[[queue]]
name = "support"
team = "ghost-team"

[route]
queue = "support"
owner = "fixed"
fixed_owner = "kai.nakamura"
"#;
    std::fs::write(config.path().join("routes.toml"), routes).unwrap();
    let settings = sigloop::config::DEFAULT_SETTINGS.replacen(
        "[processor]\n",
        "[processor]\nbatch_sise = 10\n",
        1,
    );
    assert_ne!(settings, sigloop::config::DEFAULT_SETTINGS);
    std::fs::write(config.path().join("sigloop.toml"), settings).unwrap();

    let data = tempfile::tempdir().unwrap();
    let child = sigloop(&["serve", "--listen", "127.0.0.1:0", "--config"])
        .arg(config.path())
        .arg("--db")
        .arg(data.path().join("sigloop.db"))
        .current_dir(data.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("serve starts");
    let output = wait_with_limit(child, Duration::from_secs(30));
    assert!(!output.status.success(), "serve accepted a broken config");
    let stderr = stderr_of(&output);
    assert!(stderr.contains("invalid configuration"), "{stderr}");
    assert!(stderr.contains("ghost-team"), "the unknown team: {stderr}");
    assert!(stderr.contains("batch_sise"), "the unknown key: {stderr}");
    assert!(
        !data.path().join("sigloop.db").exists(),
        "no database is created for a configuration that fails"
    );
}

#[tokio::test]
async fn demo_fills_the_queues_with_loops_within_seconds() {
    let directory = tempfile::tempdir().unwrap();
    let port = common::free_port();
    let mut child = sigloop(&["demo", "--listen", &format!("127.0.0.1:{port}"), "--db"])
        .arg(directory.path().join("demo.db"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("the demo starts");
    let client = reqwest::Client::new();
    let started = Instant::now();
    let mut open_loops = 0;
    while started.elapsed() < Duration::from_secs(20) && open_loops == 0 {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let Ok(response) = client
            .get(format!("http://127.0.0.1:{port}/v1/queues"))
            .send()
            .await
        else {
            continue;
        };
        let queues: Value = response.json().await.unwrap();
        open_loops = queues["queues"]
            .as_array()
            .unwrap()
            .iter()
            .map(|queue| queue["counts"]["open"].as_u64().unwrap())
            .sum();
    }
    let _ = child.kill();
    let _ = child.wait();
    assert!(open_loops > 0, "the demo opened no loop within 20 s");
}

// ---- token ----

/// `sigloop token ARGS --db DB`.
fn token_command(db: &Path, args: &[&str]) -> Output {
    run(sigloop(&["token"]).args(args).arg("--db").arg(db))
}

/// `sigloop token create ARGS --db DB`: the secret (standard output) and the id (named on standard
/// error).
fn create_token(db: &Path, args: &[&str]) -> (String, String) {
    let output = token_command(db, &[&["create"], args].concat());
    assert_exit_code(&output, 0);
    let stdout = stdout_of(&output);
    let secret = stdout.trim().to_owned();
    assert_eq!(stdout.lines().count(), 1, "the secret alone: {stdout}");
    let stderr = stderr_of(&output);
    let id = stderr
        .split_whitespace()
        .find(|word| word.starts_with("tok_"))
        .unwrap_or_else(|| panic!("the id is named: {stderr}"))
        .to_owned();
    (secret, id)
}

#[test]
fn token_create_prints_the_secret_once_and_list_shows_the_token_but_never_a_secret_or_hash() {
    let directory = tempfile::tempdir().unwrap();
    let db = directory.path().join("sigloop.db");
    let (secret, id) = create_token(
        &db,
        &[
            "--scope",
            "act,read",
            "--team",
            "cs-enterprise",
            "--expires",
            "30d",
            "--name",
            "ana.lima",
        ],
    );
    assert!(secret.starts_with("sgl_") && secret.len() == 47, "{secret}");
    let (other_secret, other_id) = create_token(&db, &["--scope", "ingest"]);
    assert_ne!(other_secret, secret);
    let hash = sigloop::api::auth::hash_secret(&secret);

    let output = token_command(&db, &["list"]);
    assert_exit_code(&output, 0);
    let table = stdout_of(&output);
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 3, "a header and two tokens: {table}");
    assert!(
        lines[0].starts_with("ID") && lines[0].contains("STATUS"),
        "{table}"
    );
    for expected in [
        id.as_str(),
        "ana.lima",
        "read,act",
        "cs-enterprise",
        "active",
    ] {
        assert!(lines[1].contains(expected), "{expected}: {table}");
    }
    // Without --name, the token's name is its id; without --team, any team.
    assert!(
        lines[2].contains(&format!("{other_id}  {other_id}")),
        "{table}"
    );
    for hidden in [secret.as_str(), &secret[4..], &hash, &other_secret[4..]] {
        assert!(
            !table.contains(hidden),
            "the list shows a secret or hash: {table}"
        );
    }

    let output = token_command(&db, &["list", "--json"]);
    assert_exit_code(&output, 0);
    let rows = parse_lines(&stdout_of(&output));
    assert_eq!(rows[0]["id"], id.as_str());
    assert_eq!(rows[0]["name"], "ana.lima");
    assert_eq!(rows[0]["scopes"], serde_json::json!(["read", "act"]));
    assert_eq!(rows[0]["team"], "cs-enterprise");
    assert_eq!(rows[0]["status"], "active");
    assert!(rows[0]["expires_at"].is_string());
    assert_eq!(rows[1]["team"], Value::Null);
    assert_eq!(rows[1]["expires_at"], Value::Null);
    let text = stdout_of(&output);
    assert!(
        !text.contains(&secret[4..]) && !text.contains(&hash),
        "{text}"
    );
}

#[test]
fn token_create_refuses_unknown_scopes_and_teams_bad_names_and_expiries_in_the_past() {
    let directory = tempfile::tempdir().unwrap();
    let db = directory.path().join("sigloop.db");
    for (args, said) in [
        (vec!["--scope", "read,write"], "`write`"),
        (vec!["--scope", ""], "at least one scope"),
        (
            vec!["--scope", "read", "--team", "ghost-team"],
            "ghost-team",
        ),
        (
            vec!["--scope", "read", "--expires", "2020-01-01T00:00:00Z"],
            "not in the future",
        ),
        (vec!["--scope", "read", "--expires", "later"], "later"),
        (vec!["--scope", "read", "--name", "  "], "name"),
    ] {
        let output = token_command(&db, &[&["create"], args.as_slice()].concat());
        assert_exit_code(&output, 1);
        assert!(
            stdout_of(&output).is_empty(),
            "no secret for a refused token"
        );
        assert!(
            stderr_of(&output).contains(said),
            "{said}: {}",
            stderr_of(&output)
        );
    }
    let output = token_command(&db, &["list", "--json"]);
    assert_exit_code(&output, 0);
    assert!(stdout_of(&output).is_empty(), "nothing was stored");
}

#[test]
fn token_revoke_marks_a_token_revoked_once_and_fails_for_an_unknown_id() {
    let directory = tempfile::tempdir().unwrap();
    let db = directory.path().join("sigloop.db");
    let (_, id) = create_token(&db, &["--scope", "read", "--name", "ci-bot"]);
    let output = token_command(&db, &["revoke", &id]);
    assert_exit_code(&output, 0);
    assert!(
        stderr_of(&output).contains(&format!("revoked {id} (ci-bot)")),
        "{}",
        stderr_of(&output)
    );
    let output = token_command(&db, &["revoke", &id]);
    assert_exit_code(&output, 0);
    assert!(
        stderr_of(&output).contains("already revoked"),
        "{}",
        stderr_of(&output)
    );
    let output = token_command(&db, &["list", "--json"]);
    let rows = parse_lines(&stdout_of(&output));
    assert_eq!(rows[0]["status"], "revoked");
    assert!(rows[0]["revoked_at"].is_string());
    let output = token_command(&db, &["revoke", "tok_0000000000000000"]);
    assert_exit_code(&output, 1);
    assert!(stderr_of(&output).contains("no token with id tok_0000000000000000"));
}

#[tokio::test]
async fn tokens_made_and_revoked_on_the_command_line_open_and_close_a_running_servers_api() {
    let directory = tempfile::tempdir().unwrap();
    let db = directory.path().join("sigloop.db");
    let mut server = ServerProcess::start(&db, &[("SIGLOOP__SERVER__AUTH", "tokens")]);
    server.wait_until_healthy().await;
    let client = reqwest::Client::new();
    let queues = |secret: Option<String>| {
        let mut request = client.get(format!("{}/v1/queues", server.address));
        if let Some(secret) = secret {
            request = request.bearer_auth(secret);
        }
        async move { request.send().await.unwrap().status().as_u16() }
    };
    assert_eq!(queues(None).await, 401);
    let (reader, reader_id) = create_token(&db, &["--scope", "read", "--name", "dashboard"]);
    assert_eq!(
        queues(Some(reader.clone())).await,
        200,
        "a new token works at once"
    );

    // `sigloop ingest` sends its token; without one the server refuses the events.
    let (ingester, _) = create_token(&db, &["--scope", "ingest", "--name", "importer"]);
    let file = gen_file(directory.path(), "events.ndjson", 3, 10, 7);
    let output = ingest_file(&file, &server.address, 100);
    assert_exit_code(&output, 1);
    assert!(stderr_of(&output).contains("401"), "{}", stderr_of(&output));
    let output = run(sigloop(&["ingest"]).arg(&file).args([
        "--url",
        &server.address,
        "--wait",
        "--token",
        &ingester,
    ]));
    assert_exit_code(&output, 0);
    assert!(
        stderr_of(&output).contains("13 accepted"),
        "{}",
        stderr_of(&output)
    );

    let output = token_command(&db, &["revoke", &reader_id]);
    assert_exit_code(&output, 0);
    assert_eq!(
        queues(Some(reader)).await,
        401,
        "a revoked token stops at once"
    );
    server.terminate();
}

#[tokio::test]
async fn token_commands_work_on_the_configured_postgres_storage() {
    use sigloop::storage::Storage;
    let url = common::fresh_postgres_url().await;
    let with_postgres = |args: &[&str]| {
        let mut command = sigloop(&["token"]);
        command
            .args(args)
            .env("SIGLOOP__STORAGE__BACKEND", "postgres")
            .env("SIGLOOP__STORAGE__URL", &url)
            .env("SIGLOOP__STORAGE__POOL_SIZE", "2");
        run(&mut command)
    };
    let output = with_postgres(&["create", "--scope", "admin", "--name", "ops"]);
    assert_exit_code(&output, 0);
    let secret = stdout_of(&output).trim().to_owned();
    let output = with_postgres(&["list", "--json"]);
    assert_exit_code(&output, 0);
    let rows = parse_lines(&stdout_of(&output));
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0]["name"], "ops");
    assert_eq!(rows[0]["scopes"], serde_json::json!(["admin"]));
    let id = rows[0]["id"].as_str().unwrap().to_owned();
    // The SQLite default was not touched.
    let storage = sigloop::storage::PostgresStorage::connect(&url, 1)
        .await
        .unwrap();
    let found = storage
        .token_by_hash(&sigloop::api::auth::hash_secret(&secret))
        .await
        .unwrap()
        .expect("the token is in PostgreSQL");
    assert_eq!(found.token.id, id);
    storage.close().await;
    let output = with_postgres(&["revoke", &id]);
    assert_exit_code(&output, 0);
}

#[test]
fn serve_refuses_to_run_open_on_every_address_and_names_the_settings_that_allow_it() {
    let data = tempfile::tempdir().unwrap();
    let port = common::free_port();
    let child = sigloop(&["serve", "--listen", &format!("0.0.0.0:{port}"), "--db"])
        .arg(data.path().join("sigloop.db"))
        .current_dir(data.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("serve starts");
    let output = wait_with_limit(child, Duration::from_secs(30));
    assert!(!output.status.success(), "an open API on 0.0.0.0 started");
    let stderr = stderr_of(&output);
    assert!(stderr.contains("server.auth"), "{stderr}");
    assert!(stderr.contains("server.allow_open"), "{stderr}");
    assert!(stderr.contains("SIGLOOP__SERVER__AUTH"), "{stderr}");
}
