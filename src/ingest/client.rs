//! `sigloop ingest FILE|-`: sends an NDJSON file to a running sigloop in batches over HTTP.
//!
//! reqwest is the HTTP client (plain HTTP; put TLS in front with a proxy if the server is remote).

use std::io::BufRead;
use std::time::Duration;

use anyhow::{bail, Context};
use serde::Deserialize;

#[derive(Debug, Default, Clone, Copy)]
pub struct IngestTotals {
    pub accepted: u64,
    pub duplicates: u64,
    pub rejected: u64,
    pub requests: u64,
}

#[derive(Debug, Deserialize)]
struct EventsResponse {
    accepted: u64,
    duplicates: u64,
    rejected: Vec<serde_json::Value>,
}

/// Sends `reader`'s lines to `base_url` in NDJSON requests of `batch_size` events. With `wait`, each
/// request answers only once its events are processed. Rejections are printed to stderr with their
/// line numbers. `token` is sent as `Authorization: Bearer` (a server with `auth = "tokens"` needs
/// one with the `ingest` scope).
pub async fn send_ndjson(
    reader: impl BufRead,
    base_url: &str,
    batch_size: usize,
    wait: bool,
    token: Option<&str>,
) -> anyhow::Result<IngestTotals> {
    let mut headers = reqwest::header::HeaderMap::new();
    if let Some(token) = token {
        let mut value = reqwest::header::HeaderValue::from_str(&format!("Bearer {}", token.trim()))
            .context("The token is not something an HTTP header can carry")?;
        value.set_sensitive(true);
        headers.insert(reqwest::header::AUTHORIZATION, value);
    }
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(120))
        .default_headers(headers)
        .build()
        .context("Failed to build the HTTP client")?;
    let url = format!(
        "{}/v1/events{}",
        base_url.trim_end_matches('/'),
        if wait { "?wait=true" } else { "" }
    );
    let mut totals = IngestTotals::default();
    let mut batch: Vec<u8> = Vec::new();
    // The file line of each event in the batch: blank lines are not sent, so the server's indexes
    // count only events.
    let mut batch_lines: Vec<usize> = Vec::with_capacity(batch_size);
    // Lines are bytes, not text: a line that is not UTF-8 is sent as it is, for the server to reject
    // with its line number, instead of ending the whole run.
    for (index, line) in reader.split(b'\n').enumerate() {
        let line = line.context("Failed to read the input")?;
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        batch.extend_from_slice(&line);
        batch.push(b'\n');
        batch_lines.push(index + 1);
        if batch_lines.len() >= batch_size {
            send(&client, &url, &batch, &batch_lines, &mut totals).await?;
            batch.clear();
            batch_lines.clear();
        }
    }
    if !batch_lines.is_empty() {
        send(&client, &url, &batch, &batch_lines, &mut totals).await?;
    }
    Ok(totals)
}

async fn send(
    client: &reqwest::Client,
    url: &str,
    body: &[u8],
    line_numbers: &[usize],
    totals: &mut IngestTotals,
) -> anyhow::Result<()> {
    let mut attempt = 0;
    let response = loop {
        attempt += 1;
        let result = client
            .post(url)
            .header("content-type", "application/x-ndjson")
            .body(body.to_vec())
            .send()
            .await;
        match result {
            Ok(response) if response.status().is_server_error() && attempt < 5 => {}
            Ok(response) => break response,
            Err(error) if attempt < 5 && (error.is_connect() || error.is_timeout()) => {
                eprintln!("sigloop ingest: {error}; retrying");
            }
            Err(error) => return Err(error).context(format!("Failed to send events to {url}")),
        }
        tokio::time::sleep(Duration::from_millis(200 * attempt)).await;
    };
    let status = response.status();
    let text = response
        .text()
        .await
        .context("Failed to read the response")?;
    let parsed: EventsResponse = match serde_json::from_str(&text) {
        Ok(parsed) => parsed,
        Err(_) => bail!("{url} answered {status}: {text}"),
    };
    totals.requests += 1;
    totals.accepted += parsed.accepted;
    totals.duplicates += parsed.duplicates;
    totals.rejected += parsed.rejected.len() as u64;
    for rejected in parsed.rejected {
        let index = rejected["index"].as_u64().unwrap_or(0) as usize;
        eprintln!(
            "line {}: {} {}",
            line_numbers.get(index).copied().unwrap_or(0),
            rejected["code"].as_str().unwrap_or("?"),
            rejected["message"].as_str().unwrap_or("")
        );
    }
    Ok(())
}
