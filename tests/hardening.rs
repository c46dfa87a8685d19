//! Connection hardening, over raw TCP against the real application: a client that sends part of a
//! request head (or nothing) and then stalls is disconnected after `server.header_timeout_secs`,
//! while keep-alive connections still serve request after request, and a graceful shutdown does not
//! wait on idle connections.

mod common;

use std::time::{Duration, Instant};

use common::TestApp;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const PARTIAL_HEAD: &[u8] = b"GET /healthz HTTP/1.1\r\nHost: x\r\n";
const HEALTHZ: &[u8] = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n";

async fn spawn_with_header_timeout(seconds: &str) -> TestApp {
    TestApp::spawn_with(&[("SIGLOOP__SERVER__HEADER_TIMEOUT_SECS", seconds)]).await
}

async fn connect(app: &TestApp) -> TcpStream {
    let address = app
        .address
        .strip_prefix("http://")
        .expect("the address is http://host:port");
    TcpStream::connect(address)
        .await
        .expect("the server accepts")
}

/// Reads until the server closes the connection (end of stream or reset), failing after `limit`;
/// returns what it sent before closing and how long that took.
async fn read_until_closed(stream: &mut TcpStream, limit: Duration) -> (Vec<u8>, Duration) {
    let started = Instant::now();
    let mut received = Vec::new();
    let mut buffer = [0u8; 1024];
    loop {
        match tokio::time::timeout_at(
            tokio::time::Instant::from_std(started + limit),
            stream.read(&mut buffer),
        )
        .await
        {
            Err(_) => panic!(
                "the server kept the connection open for {limit:?} (received {:?})",
                String::from_utf8_lossy(&received)
            ),
            Ok(Ok(0)) | Ok(Err(_)) => return (received, started.elapsed()),
            Ok(Ok(read)) => received.extend_from_slice(&buffer[..read]),
        }
    }
}

/// Reads until the server closes `stream`: it must have waited out a header timeout of 1 s and
/// served nothing (at most a 408). `why` says why nothing should have been served.
async fn assert_closed_unserved_at_a_1_s_header_timeout(stream: &mut TcpStream, why: &str) {
    let (received, elapsed) = read_until_closed(stream, Duration::from_secs(5)).await;
    assert!(
        elapsed >= Duration::from_millis(900),
        "closed after {elapsed:?}, before the 1 s header timeout"
    );
    let received = String::from_utf8_lossy(&received);
    assert!(
        received.is_empty() || received.starts_with("HTTP/1.1 408"),
        "{why}: {received:?}"
    );
}

/// One HTTP/1.1 response read off the stream: its status line and body (sized by Content-Length).
async fn read_response(stream: &mut TcpStream) -> (String, String) {
    let mut received = Vec::new();
    let mut buffer = [0u8; 1024];
    let head_end = loop {
        if let Some(position) = received.windows(4).position(|window| window == b"\r\n\r\n") {
            break position + 4;
        }
        let read = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buffer))
            .await
            .expect("the response comes within 5 s")
            .expect("the connection is readable");
        assert!(
            read > 0,
            "the server closed the connection mid-response: {:?}",
            String::from_utf8_lossy(&received)
        );
        received.extend_from_slice(&buffer[..read]);
    };
    let head = String::from_utf8(received[..head_end].to_vec()).expect("the head is text");
    let length: usize = head
        .lines()
        .find_map(|line| {
            let (name, value) = line.split_once(':')?;
            name.eq_ignore_ascii_case("content-length")
                .then(|| value.trim().parse().expect("Content-Length is a number"))
        })
        .unwrap_or_else(|| panic!("the response has a Content-Length: {head}"));
    let mut body = received[head_end..].to_vec();
    while body.len() < length {
        let read = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buffer))
            .await
            .expect("the body comes within 5 s")
            .expect("the connection is readable");
        assert!(read > 0, "the server closed the connection mid-body");
        body.extend_from_slice(&buffer[..read]);
    }
    assert_eq!(body.len(), length, "nothing follows the body unasked");
    let status = head.lines().next().unwrap_or_default().to_owned();
    (status, String::from_utf8(body).expect("the body is text"))
}

#[tokio::test]
async fn a_client_that_sends_part_of_a_request_head_and_stalls_is_disconnected_after_the_header_timeout(
) {
    let app = spawn_with_header_timeout("1").await;
    let mut stream = connect(&app).await;
    stream.write_all(PARTIAL_HEAD).await.expect("sent");

    assert_closed_unserved_at_a_1_s_header_timeout(
        &mut stream,
        "the stalled request was not served",
    )
    .await;
    // The server still serves everyone else.
    let (status, body) = app.get("/healthz").await;
    assert_eq!(status, 200, "{body}");
}

#[tokio::test]
async fn a_client_that_connects_and_sends_nothing_is_disconnected_after_the_header_timeout() {
    let app = spawn_with_header_timeout("1").await;
    let mut stream = connect(&app).await;

    assert_closed_unserved_at_a_1_s_header_timeout(&mut stream, "nothing was asked").await;
}

#[tokio::test]
async fn a_keep_alive_connection_serves_request_after_request_for_longer_than_the_header_timeout() {
    let app = spawn_with_header_timeout("2").await;
    let mut stream = connect(&app).await;
    let started = Instant::now();

    for request in 0..4 {
        if request > 0 {
            // Idle for well under the timeout between requests, longer than it in all.
            tokio::time::sleep(Duration::from_millis(800)).await;
        }
        stream.write_all(HEALTHZ).await.expect("sent");
        let (status, body) = read_response(&mut stream).await;
        assert_eq!(status, "HTTP/1.1 200 OK", "request {request}: {body}");
        assert_eq!(body, r#"{"status":"ok"}"#, "request {request}");
    }

    assert!(
        started.elapsed() > Duration::from_secs(2),
        "the connection lived longer than one header timeout"
    );
}

#[tokio::test]
async fn a_request_head_sent_in_pieces_within_the_header_timeout_is_answered() {
    let app = spawn_with_header_timeout("2").await;
    let mut stream = connect(&app).await;

    stream.write_all(PARTIAL_HEAD).await.expect("sent");
    tokio::time::sleep(Duration::from_millis(500)).await;
    stream.write_all(b"\r\n").await.expect("sent");

    let (status, body) = read_response(&mut stream).await;
    assert_eq!(status, "HTTP/1.1 200 OK", "{body}");
}

#[tokio::test]
async fn shutting_down_does_not_wait_for_idle_keep_alive_connections() {
    // A header timeout far longer than the test: the shutdown must close the idle connection itself.
    let app = spawn_with_header_timeout("600").await;
    let mut stream = connect(&app).await;
    stream.write_all(HEALTHZ).await.expect("sent");
    let (status, _) = read_response(&mut stream).await;
    assert_eq!(status, "HTTP/1.1 200 OK");

    let started = Instant::now();
    tokio::time::timeout(Duration::from_secs(10), app.stop())
        .await
        .expect("the application stops while a keep-alive connection is idle");
    assert!(started.elapsed() < Duration::from_secs(10));

    let (received, _) = read_until_closed(&mut stream, Duration::from_secs(1)).await;
    assert!(
        received.is_empty(),
        "{:?}",
        String::from_utf8_lossy(&received)
    );
}

#[tokio::test]
async fn shutting_down_stops_accepting_and_answers_the_request_in_flight_with_its_events_processed()
{
    let app = spawn_with_header_timeout("10").await;
    let address = app.address.trim_start_matches("http://").to_owned();
    let body = serde_json::to_vec(&serde_json::json!([common::ticket(
        "e1",
        "acme",
        0,
        "Export fails",
        "high"
    )]))
    .expect("JSON");
    let (first, rest) = body.split_at(body.len() / 2);
    let mut stream = connect(&app).await;
    let head = format!(
        "POST /v1/events?wait=true HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await.expect("sent");
    stream.write_all(first).await.expect("sent");
    tokio::time::sleep(Duration::from_millis(100)).await;

    let stopping = tokio::spawn(app.stop());
    // The listener closes first: new connections are refused while the request is in flight.
    let started = Instant::now();
    while TcpStream::connect(&address).await.is_ok() {
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "the server kept accepting connections after the shutdown began"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(
        !stopping.is_finished(),
        "the shutdown waits for the request in flight"
    );
    stream.write_all(rest).await.expect("sent");

    let (status, body) = read_response(&mut stream).await;
    assert_eq!(status, "HTTP/1.1 200 OK", "{body}");
    let body: serde_json::Value = serde_json::from_str(&body).expect("a JSON answer");
    assert_eq!(body["processed"], true, "{body}");
    tokio::time::timeout(Duration::from_secs(10), stopping)
        .await
        .expect("the application stops once the request is answered")
        .expect("the stop task joins");
}

#[test]
fn a_header_timeout_of_zero_is_refused() {
    let sources = sigloop::config::ConfigSources::embedded();
    let env = [(
        "SIGLOOP__SERVER__HEADER_TIMEOUT_SECS".to_owned(),
        "0".to_owned(),
    )];
    let error = sigloop::config::Config::parse(&sources, env.into_iter())
        .expect_err("a zero header timeout is invalid");
    assert!(
        error
            .problems
            .iter()
            .any(|problem| problem.contains("server.header_timeout_secs")),
        "{:?}",
        error.problems
    );
}

#[test]
fn the_shipped_configuration_sets_a_ten_second_header_timeout() {
    let sources = sigloop::config::ConfigSources::embedded();
    let config = sigloop::config::Config::parse(&sources, std::iter::empty())
        .expect("the shipped configuration is valid");
    assert_eq!(config.settings.server.header_timeout_secs, 10);
}
