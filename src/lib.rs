//! sigloop: a closed-loop signal router for customer teams.
//!
//! # Layout, in data-flow order
//!
//! - [`domain`]: the domain types every stage shares (events, ids, times in epoch milliseconds).
//! - [`ingest`]: HTTP input (and the demo feeder) into the durable event log; rejected events into
//!   dead letters; `ingest::client` is `sigloop ingest FILE`.
//! - [`decode`]: CloudEvents JSON to domain [`domain::Event`]s, with a fixed set of rejection codes.
//! - [`tag`]: the shared issue taxonomy, compiled once (Aho-Corasick and a RegexSet), with evidence.
//! - [`detect`]: account detectors turning tagged events into signals.
//! - [`route`]: the route tree: one queue, one owner, the path taken.
//! - [`loops`]: loop identity, the explicit state machine, history and evidence rows.
//! - [`pipeline`]: the pure batch core ([`pipeline::core`]) and the async processor around it.
//! - [`storage`]: the one storage boundary (the only module with SQL); SQLite for the embedded mode,
//!   PostgreSQL for the distributed mode.
//! - [`kafka`]: the distributed mode's Kafka edge: the consumer group feeding the processor, the
//!   producer behind `POST /v1/events`, and the outbox relay to the loops and dead-letter topics.
//! - [`kpi`]: loop KPIs per queue and team over a period (pure arithmetic over storage's loop
//!   timings), answered by `GET /v1/kpis` and the `sigloop_loop_*` gauges of `/metrics`.
//! - [`api`]: the HTTP API and its JSON views.
//! - [`app`]: start-up and shutdown; [`cli`]: the commands; [`config`]: typed, validated configuration.
//! - [`gen`]: the deterministic event generator; [`bench`]: the end-to-end benchmark.
//! - [`replay`]: `sigloop replay` (a file through the pipeline on event time, into a fresh database)
//!   and `sigloop diff` (one file under two configurations, loops compared).
//! - [`relay`]: the outbox relay (committed loop events, in order, at least once) to a sink: Kafka
//!   ([`kafka::relay`]) or a webhook ([`relay::webhook`], HMAC-signed, per queue or team).
//! - [`telemetry`]: metrics and logs; [`failpoint`]: crash points for the durability tests.
//!
//! decode, tag, detect, route, loops and kpi are synchronous and pure: no I/O, no wall clock.

pub mod api;
pub mod app;
pub mod bench;
pub mod cli;
pub mod config;
pub mod decode;
pub mod detect;
pub mod domain;
pub mod failpoint;
pub mod gen;
pub mod ingest;
pub mod journey;
pub mod kafka;
pub mod kpi;
pub mod loops;
pub mod pipeline;
pub mod relay;
pub mod replay;
pub mod route;
pub mod storage;
pub mod tag;
pub mod telemetry;
pub mod ui;
