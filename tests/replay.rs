//! `sigloop replay` and `sigloop diff` end to end: the real binary as a child process, on files that
//! `sigloop gen` writes, with configuration directories copied from the shipped `config/`.

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use common::{assert_exit_code, parse_lines, run, sigloop, stderr_of, stdout_of, ServerProcess};
use serde_json::{json, Value};

/// Writes `sigloop gen` output for the arguments to `directory/name` and returns the path.
fn gen_file(directory: &Path, name: &str, accounts: usize, events: usize, seed: u64) -> PathBuf {
    let path = directory.join(name);
    let output = run(sigloop(&[
        "gen",
        "--accounts",
        &accounts.to_string(),
        "--events",
        &events.to_string(),
        "--seed",
        &seed.to_string(),
        "--out",
    ])
    .arg(&path));
    assert_exit_code(&output, 0);
    path
}

/// The standard output of a successful `sigloop replay --events FILE EXTRA...`.
fn replay_output(events: &Path, extra: &[&str]) -> String {
    let output = run(sigloop(&["replay", "--events"]).arg(events).args(extra));
    assert_exit_code(&output, 0);
    stdout_of(&output)
}

/// Copies the shipped configuration files into `directory/name` and returns that directory.
fn copy_of_the_shipped_config(directory: &Path, name: &str) -> PathBuf {
    let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("config");
    let copy = directory.join(name);
    std::fs::create_dir(&copy).expect("the config directory is created");
    for file in [
        "sigloop.toml",
        "taxonomy.toml",
        "signals.toml",
        "routes.toml",
    ] {
        std::fs::copy(shipped.join(file), copy.join(file)).expect("the config file is copied");
    }
    copy
}

fn millis_of(time: &Value) -> i64 {
    chrono::DateTime::parse_from_rfc3339(time.as_str().expect("a time string"))
        .expect("an RFC 3339 time")
        .timestamp_millis()
}

// ---- replay ----

#[test]
fn replaying_one_event_file_twice_gives_byte_identical_output() {
    let directory = tempfile::tempdir().unwrap();
    let events = gen_file(directory.path(), "events.ndjson", 30, 800, 4);

    let first = replay_output(&events, &[]);
    let second = replay_output(&events, &[]);
    assert!(
        parse_lines(&first).len() > 5,
        "the workload opens loops:\n{first}"
    );
    assert_eq!(first, second);

    // --out and a kept --db change nothing in the bytes, and `export` of that database agrees.
    let out = directory.path().join("loops.ndjson");
    let db = directory.path().join("replay.db");
    let output = run(sigloop(&["replay", "--events"])
        .arg(&events)
        .arg("--out")
        .arg(&out)
        .arg("--db")
        .arg(&db));
    assert_exit_code(&output, 0);
    assert!(
        output.stdout.is_empty(),
        "--out leaves standard output empty"
    );
    assert_eq!(std::fs::read_to_string(&out).unwrap(), first);
    assert_eq!(common::export(&db), first);
}

#[tokio::test]
async fn replay_gives_the_same_bytes_as_a_server_on_event_time_fed_the_same_file() {
    let directory = tempfile::tempdir().unwrap();
    let events = gen_file(directory.path(), "events.ndjson", 20, 500, 11);
    let db = directory.path().join("served.db");
    let mut server = ServerProcess::start(&db, &[("SIGLOOP__CLOCK__MODE", "event_time")]);
    server.wait_until_healthy().await;
    let ingested = run(sigloop(&["ingest"]).arg(&events).args([
        "--url",
        &server.address,
        "--batch-size",
        "70",
        "--wait",
    ]));
    assert_exit_code(&ingested, 0);
    server.terminate();

    assert_eq!(replay_output(&events, &[]), common::export(&db));
}

#[test]
fn replay_refuses_to_write_into_an_existing_database() {
    let directory = tempfile::tempdir().unwrap();
    let events = gen_file(directory.path(), "events.ndjson", 3, 20, 1);
    let db = directory.path().join("existing.db");
    std::fs::write(&db, b"not to be touched").unwrap();
    let output = run(sigloop(&["replay", "--events"])
        .arg(&events)
        .arg("--db")
        .arg(&db));
    assert!(!output.status.success(), "replay into an existing file");
    assert!(
        stderr_of(&output).contains("already exists"),
        "{}",
        stderr_of(&output)
    );
    assert_eq!(std::fs::read(&db).unwrap(), b"not to be touched");
}

#[test]
fn replay_with_action_lines_applies_them_in_file_order_and_shows_state_and_history() {
    let directory = tempfile::tempdir().unwrap();
    let events = gen_file(directory.path(), "events.ndjson", 20, 500, 5);
    let before = parse_lines(&replay_output(&events, &[]));
    let target = before
        .iter()
        .find(|record| record["state"] == "open")
        .expect("the workload leaves an open loop");
    let loop_id = target["id"].as_str().unwrap();
    let history_before = target["history"].as_array().unwrap().len();
    let time = millis_of(&target["opened_at"]);

    let mut text = std::fs::read_to_string(&events).unwrap();
    for action in [
        json!({"loop_id": loop_id, "action": "acknowledge", "actor": "ana.lima", "note": "on it", "time": time}),
        json!({"loop_id": loop_id, "action": "close", "reason": "duplicate", "actor": "ana.lima", "note": null, "time": time}),
    ] {
        text.push_str(&action.to_string());
        text.push('\n');
    }
    let with_actions = directory.path().join("with-actions.ndjson");
    std::fs::write(&with_actions, text).unwrap();

    let output = run(sigloop(&["replay", "--strict", "--events"]).arg(&with_actions));
    assert_exit_code(&output, 0);
    assert!(
        stderr_of(&output).contains("2 actions applied, 0 refused"),
        "{}",
        stderr_of(&output)
    );
    let after = parse_lines(&stdout_of(&output));
    assert_eq!(after.len(), before.len(), "actions open no loop");
    let record = after
        .iter()
        .find(|record| record["id"] == loop_id)
        .expect("the loop is still exported");
    assert_eq!(record["state"], "closed", "{record}");
    assert_eq!(record["close_reason"], "duplicate", "{record}");
    let history = record["history"].as_array().unwrap();
    assert_eq!(history.len(), history_before + 2, "{record}");
    let acknowledged = &history[history_before];
    assert_eq!(acknowledged["actor"], "ana.lima");
    assert_eq!(acknowledged["action"], "acknowledge");
    assert_eq!(acknowledged["from_state"], "open");
    assert_eq!(acknowledged["to_state"], "acknowledged");
    assert_eq!(acknowledged["reason"], "on it");
    let closed = &history[history_before + 1];
    assert_eq!(closed["action"], "close");
    assert_eq!(closed["from_state"], "acknowledged");
    assert_eq!(closed["to_state"], "closed");
    assert_eq!(closed["reason"], "closed as duplicate");
    // Every other loop is untouched.
    let others = |records: &[Value]| -> Vec<Value> {
        records
            .iter()
            .filter(|record| record["id"] != loop_id)
            .cloned()
            .collect()
    };
    assert_eq!(others(&after), others(&before));
}

#[test]
fn rejected_lines_and_refused_actions_are_reported_by_line_and_fail_the_run_only_with_strict() {
    let directory = tempfile::tempdir().unwrap();
    let events = gen_file(directory.path(), "events.ndjson", 3, 20, 2);
    let mut text = std::fs::read_to_string(&events).unwrap();
    let lines = text.lines().count();
    text.push_str("{not json\n");
    text.push_str(
        &json!({"loop_id": "no-such-loop", "action": "acknowledge", "actor": "ana", "note": null, "time": 0})
            .to_string(),
    );
    text.push('\n');
    text.push_str(
        &json!({"loop_id": "no-such-loop", "action": "acknowledge", "actor": "", "note": null, "time": 0})
            .to_string(),
    );
    text.push('\n');
    let file = directory.path().join("mixed.ndjson");
    std::fs::write(&file, text).unwrap();

    let lenient = run(sigloop(&["replay", "--events"]).arg(&file));
    assert_exit_code(&lenient, 0);
    let stderr = stderr_of(&lenient);
    assert!(
        stderr.contains(&format!("line {}: invalid_json", lines + 1)),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!("line {}: loop_not_found", lines + 2)),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!("line {}: missing_field", lines + 3)),
        "{stderr}"
    );
    assert!(
        stderr.contains("2 rejected lines; 0 actions applied, 1 refused"),
        "{stderr}"
    );

    let strict = run(sigloop(&["replay", "--strict", "--events"]).arg(&file));
    assert_exit_code(&strict, 2);
    assert_eq!(
        strict.stdout, lenient.stdout,
        "--strict changes the exit status only"
    );
}

// ---- diff ----

#[test]
fn diff_with_a_route_sending_churn_loops_to_another_queue_reports_exactly_those_loops_as_rerouted()
{
    let directory = tempfile::tempdir().unwrap();
    let events = gen_file(directory.path(), "events.ndjson", 50, 1200, 5);
    let config_a = copy_of_the_shipped_config(directory.path(), "a");
    let config_b = copy_of_the_shipped_config(directory.path(), "b");
    // B: the churn-risk route (tag prefix `churn`) sends its loops to cs-mid-market instead of
    // cs-retention. Its owner rule is unchanged, so owners must not move.
    let routes = std::fs::read_to_string(config_b.join("routes.toml")).unwrap();
    assert_eq!(routes.matches("queue = \"cs-retention\"").count(), 1);
    std::fs::write(
        config_b.join("routes.toml"),
        routes.replace("queue = \"cs-retention\"", "queue = \"cs-mid-market\""),
    )
    .unwrap();

    // Churn loops that end up in cs-retention under A are the ones B must move. (Those that an SLA
    // breach escalated sit in the escalation queue under either configuration.)
    let under_a = parse_lines(&replay_output(
        &events,
        &["--config", config_a.to_str().unwrap()],
    ));
    let expected: BTreeSet<(String, u64)> = under_a
        .iter()
        .filter(|record| record["queue"] == "cs-retention")
        .map(|record| {
            (
                record["key"].as_str().unwrap().to_owned(),
                record["generation"].as_u64().unwrap(),
            )
        })
        .collect();
    assert!(
        !expected.is_empty(),
        "the workload leaves churn loops in cs-retention"
    );

    let output = run(sigloop(&["diff", "--json", "--events"])
        .arg(&events)
        .arg("--config")
        .arg(&config_a)
        .arg("--config")
        .arg(&config_b));
    assert_exit_code(&output, 0);
    let diff: Value = serde_json::from_str(&stdout_of(&output)).expect("one JSON object");
    let rerouted: BTreeSet<(String, u64)> = diff["rerouted"]
        .as_array()
        .expect("a rerouted list")
        .iter()
        .map(|change| {
            assert_eq!(change["a"], "cs-retention", "{change}");
            assert_eq!(change["b"], "cs-mid-market", "{change}");
            (
                change["key"].as_str().unwrap().to_owned(),
                change["generation"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(rerouted, expected);
    for unchanged in [
        "opened_only_by_b",
        "opened_only_by_a",
        "closed_differently",
        "reowned",
    ] {
        assert_eq!(diff[unchanged], json!([]), "{unchanged}: {diff}");
    }
    assert_eq!(diff["summary"]["rerouted"], expected.len());
    assert_eq!(diff["a"]["loops"], under_a.len());
    assert_eq!(diff["b"]["loops"], under_a.len());
    assert_ne!(diff["a"]["config_version"], diff["b"]["config_version"]);

    // The same, as lines sorted by key, then the summary.
    let output = run(sigloop(&["diff", "--events"])
        .arg(&events)
        .arg("--config")
        .arg(&config_a)
        .arg("--config")
        .arg(&config_b));
    assert_exit_code(&output, 0);
    let expected_lines: Vec<String> = expected
        .iter()
        .map(|(key, generation)| {
            format!("{key} #{generation} re-routed: cs-retention -> cs-mid-market")
        })
        .chain([format!(
            "summary: 0 opened only by B, 0 opened only by A, 0 closed differently, {} re-routed, \
             0 re-owned ({} loops under A, {} under B)",
            expected.len(),
            under_a.len(),
            under_a.len()
        )])
        .collect();
    assert_eq!(
        stdout_of(&output).lines().collect::<Vec<_>>(),
        expected_lines
    );
}

#[test]
fn diff_of_a_configuration_with_itself_finds_nothing_and_exits_zero() {
    let directory = tempfile::tempdir().unwrap();
    let events = gen_file(directory.path(), "events.ndjson", 10, 300, 6);
    let config = copy_of_the_shipped_config(directory.path(), "same");
    let output = run(sigloop(&["diff", "--events"])
        .arg(&events)
        .arg("--config")
        .arg(&config)
        .arg("--config")
        .arg(&config));
    assert_exit_code(&output, 0);
    let stdout = stdout_of(&output);
    assert_eq!(stdout.lines().count(), 1, "{stdout}");
    assert!(
        stdout.starts_with(
            "summary: 0 opened only by B, 0 opened only by A, 0 closed differently, 0 re-routed, 0 re-owned"
        ),
        "{stdout}"
    );
}

#[test]
fn diff_needs_exactly_two_configurations() {
    let directory = tempfile::tempdir().unwrap();
    let events = gen_file(directory.path(), "events.ndjson", 3, 20, 1);
    let config = copy_of_the_shipped_config(directory.path(), "only");
    let output = run(sigloop(&["diff", "--events"])
        .arg(&events)
        .arg("--config")
        .arg(&config));
    assert!(!output.status.success(), "diff with one configuration");
    assert!(
        stderr_of(&output).contains("exactly two --config directories"),
        "{}",
        stderr_of(&output)
    );
}
