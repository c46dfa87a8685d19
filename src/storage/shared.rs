//! What the SQLite and PostgreSQL backends share: error constructors, the journey figures' column
//! values, the row readers that only need text and integer columns, the link view, and the assembly
//! of an export.

use std::collections::HashMap;

use sqlx::{ColumnIndex, Decode, Row, Type};

use super::{
    JourneyDimension, JourneyQuery, LinkedLoop, LoopDetail, NewToken, StorageError, TokenRow,
};
use crate::domain::Millis;
use crate::journey::{BucketKey, Figures};
use crate::loops::{EvidenceRow, HistoryRow, LoopRecord};
use crate::pipeline::core::OffsetAdvance;

pub(super) fn corrupt(what: &str, error: impl std::fmt::Display) -> StorageError {
    StorageError::Corrupt(format!("{what}: {error}"))
}

/// The error of an offset advance whose `from` is not the stored position: another instance owns
/// the partition now (or a batch was committed twice).
pub(super) fn fenced_offset(advance: &OffsetAdvance) -> StorageError {
    let expected = advance.from.map_or_else(
        || "no stored offset".to_owned(),
        |from| format!("offset {from}"),
    );
    StorageError::Fenced(format!(
        "partition {} of topic {} is no longer at {expected}",
        advance.partition, advance.topic
    ))
}

pub(super) fn fenced_lease(sink: &str, holder: &str) -> StorageError {
    StorageError::Fenced(format!(
        "{holder} does not hold the lease of outbox sink {sink}"
    ))
}

/// The additive figures in the order of the backends' `FIGURE_COLUMNS`.
pub(super) fn figure_values(figures: &Figures) -> [i64; 10] {
    [
        figures.events,
        figures.tickets,
        figures.nps_responses,
        figures.promoters,
        figures.passives,
        figures.detractors,
        figures.csat_responses,
        figures.csat_sum,
        figures.ces_responses,
        figures.ces_sum,
    ]
    .map(|value| value as i64)
}

/// The figures from their values in `figure_values` order: the inverse of `figure_values`.
pub(super) fn figures_from_values(values: [u64; 10]) -> Figures {
    let [events, tickets, nps_responses, promoters, passives, detractors, csat_responses, csat_sum, ces_responses, ces_sum] =
        values;
    Figures {
        events,
        tickets,
        nps_responses,
        promoters,
        passives,
        detractors,
        csat_responses,
        csat_sum,
        ces_responses,
        ces_sum,
    }
}

/// Reads a bucket's key columns from a row of either backend.
pub(super) fn bucket_from_row<R>(row: &R) -> Result<BucketKey, StorageError>
where
    R: Row,
    for<'a> &'a str: ColumnIndex<R>,
    for<'r> String: Decode<'r, R::Database> + Type<R::Database>,
    for<'r> i64: Decode<'r, R::Database> + Type<R::Database>,
{
    Ok(BucketKey {
        start: row.try_get("start")?,
        stage: row.try_get("stage")?,
        tag: row.try_get("tag")?,
        touchpoint: row.try_get("touchpoint")?,
    })
}

/// The key of a journey group: (stage, tag, touchpoint, window start), `None` where not grouped.
pub(super) type GroupKey = (
    Option<String>,
    Option<String>,
    Option<String>,
    Option<Millis>,
);

pub(super) fn group_key<R>(row: &R, query: &JourneyQuery) -> Result<GroupKey, StorageError>
where
    R: Row,
    for<'a> &'a str: ColumnIndex<R>,
    for<'r> String: Decode<'r, R::Database> + Type<R::Database>,
    for<'r> i64: Decode<'r, R::Database> + Type<R::Database>,
{
    let mut key: GroupKey = (None, None, None, None);
    for dimension in &query.group_by {
        match dimension {
            JourneyDimension::Stage => key.0 = Some(row.try_get("stage")?),
            JourneyDimension::Tag => key.1 = Some(row.try_get("tag")?),
            JourneyDimension::Touchpoint => key.2 = Some(row.try_get("touchpoint")?),
            JourneyDimension::Window => key.3 = Some(row.try_get("window_start")?),
        }
    }
    Ok(key)
}

/// The other end of a link, as `GET /v1/loops/{id}` shows it.
pub(super) fn linked(record: &LoopRecord, at: Millis) -> LinkedLoop {
    LinkedLoop {
        loop_id: record.id.clone(),
        key: record.key.clone(),
        kind: record.kind,
        account_id: record.account_id.clone(),
        state: record.state,
        queue: record.queue.clone(),
        owner: record.owner.clone(),
        linked_at: at,
    }
}

/// The columns of `api_tokens`, in the order both backends select them.
pub(super) const TOKEN_COLUMNS: &str =
    "id, secret_hash, name, scopes, team, created_at, expires_at, revoked_at";

/// A token's scopes as stored: comma-separated, in the order given.
pub(super) fn scopes_text(scopes: &[String]) -> String {
    scopes.join(",")
}

/// Reads a row of `api_tokens` (selected as [`TOKEN_COLUMNS`]) from either backend.
pub(super) fn token_from_row<R>(row: &R) -> Result<TokenRow, StorageError>
where
    R: Row,
    for<'a> &'a str: ColumnIndex<R>,
    for<'r> String: Decode<'r, R::Database> + Type<R::Database>,
    for<'r> i64: Decode<'r, R::Database> + Type<R::Database>,
{
    let scopes: String = row.try_get("scopes")?;
    Ok(TokenRow {
        token: NewToken {
            id: row.try_get("id")?,
            secret_hash: row.try_get("secret_hash")?,
            name: row.try_get("name")?,
            scopes: scopes
                .split(',')
                .filter(|scope| !scope.is_empty())
                .map(str::to_owned)
                .collect(),
            team: row.try_get("team")?,
            created_at: row.try_get("created_at")?,
            expires_at: row.try_get("expires_at")?,
        },
        revoked_at: row.try_get("revoked_at")?,
    })
}

/// A stored trace as the API shows it: its `journey` expanded from the compact stored form
/// (`journey::stored_feed`).
pub(super) fn trace_from_stored(text: &str) -> Result<serde_json::Value, StorageError> {
    let mut trace: serde_json::Value =
        serde_json::from_str(text).map_err(|error| corrupt("trace", error))?;
    if let Some(journey) = trace.get_mut("journey") {
        *journey = crate::journey::stored_feed::expand(journey.take())
            .map_err(|error| corrupt("trace journey", error))?;
    }
    Ok(trace)
}

/// Every link row, in the order an export lists each loop's links.
pub(super) const EXPORT_LINKS: &str =
    "SELECT journey_loop, account_loop, at FROM loop_links ORDER BY at, journey_loop, account_loop";

/// A row of [`EXPORT_LINKS`]: (journey loop, account loop, linked at).
pub(super) fn export_link_from_row<R>(row: &R) -> Result<(String, String, Millis), StorageError>
where
    R: Row,
    for<'a> &'a str: ColumnIndex<R>,
    for<'r> String: Decode<'r, R::Database> + Type<R::Database>,
    for<'r> i64: Decode<'r, R::Database> + Type<R::Database>,
{
    Ok((
        row.try_get("journey_loop")?,
        row.try_get("account_loop")?,
        row.try_get("at")?,
    ))
}

/// Export's last step, shared by both backends: each loop with its trace, history, evidence and links.
/// `links` are the stored (journey loop, account loop, linked at) rows in export order; each side of
/// a link is described from the loop records already read, so no record is parsed twice. A link whose
/// loop is missing is left out, as an inner join would.
pub(super) fn export_details(
    loops: Vec<(LoopRecord, Option<serde_json::Value>)>,
    mut history: HashMap<String, Vec<HistoryRow>>,
    mut evidence: HashMap<String, Vec<EvidenceRow>>,
    links: Vec<(String, String, Millis)>,
) -> Vec<LoopDetail> {
    let by_id: HashMap<&str, &LoopRecord> = loops
        .iter()
        .map(|(record, _)| (record.id.as_str(), record))
        .collect();
    let mut linked_loops: HashMap<String, Vec<LinkedLoop>> = HashMap::new();
    for (journey_loop, account_loop, at) in &links {
        let (Some(journey), Some(account)) = (
            by_id.get(journey_loop.as_str()),
            by_id.get(account_loop.as_str()),
        ) else {
            continue;
        };
        linked_loops
            .entry(journey_loop.clone())
            .or_default()
            .push(linked(account, *at));
        linked_loops
            .entry(account_loop.clone())
            .or_default()
            .push(linked(journey, *at));
    }
    loops
        .into_iter()
        .map(|(record, trace)| LoopDetail {
            history: history.remove(&record.id).unwrap_or_default(),
            evidence: evidence.remove(&record.id).unwrap_or_default(),
            links: linked_loops.remove(&record.id).unwrap_or_default(),
            record,
            trace,
        })
        .collect()
}
