//! The deterministic event generator behind demos, tests and the throughput benchmark.
//!
//! [`generate`] yields CloudEvents 1.0 JSON (structured mode, one compact object per item) in the
//! shape of events v1: first one `account.upserted` per account, then a mix of tickets, usage and
//! surveys. The data is made to exercise the whole product, not just to be valid:
//!
//! - texts come from per-topic templates (`text::TOPICS`) that each hit one leaf of the default
//!   taxonomy, about a tenth say nothing taggable, and now and then one states churn intent;
//! - accounts are picked with a skew (tier, and a few noisy accounts with one recurring pain topic), so
//!   that repeat tickets on one tag within two weeks, detractors and urgent tickets all happen;
//! - ticket updates, solutions and reopenings refer to tickets opened earlier for the same account;
//! - about 1% of events name an account that was never upserted, as real feeds do;
//! - some accounts' usage declines over the run and some onboarding accounts stall before their
//!   first integration, for the usage and milestone detectors.
//!
//! Determinism is the point: the same [`GenOptions`] give byte-identical output on every machine, so a
//! demo, a failing test or a benchmark can be reproduced from its seed. All randomness comes from one
//! `ChaCha8Rng` (a portable, seedable generator: `StdRng` may change between `rand` releases), nothing
//! reads the wall clock, and nothing iterates a hash map.
//!
//! The generator is lazy and keeps bounded state (the accounts and a ring of recent tickets), so ten
//! million events stream in constant memory beyond the accounts. Events are serialized from borrowed
//! structs into reused buffers rather than built as `serde_json::Value` trees, which keeps the cost per
//! event to the output string itself.

mod text;

use std::fmt::Write as _;
use std::io::{self, Write};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

use crate::domain::{format_millis, Millis, MILLIS_PER_DAY};
use text::{Topic, TOPICS};

/// What to generate. `Default` gives a small demo data set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GenOptions {
    /// Accounts upserted before the mixed events.
    pub accounts: usize,
    /// Mixed events after the account upserts.
    pub events: usize,
    pub seed: u64,
    /// Event time of the first event, in milliseconds since the epoch.
    pub start: Millis,
}

/// 2026-01-05T00:00:00Z, a Monday.
const DEFAULT_START: Millis = 1_767_571_200_000;

impl Default for GenOptions {
    fn default() -> Self {
        GenOptions {
            accounts: 100,
            events: 1000,
            seed: 1,
            start: DEFAULT_START,
        }
    }
}

/// Deterministic: same options give byte-identical output. Yields one compact JSON CloudEvent per item
/// (no trailing newline): first `accounts` account.upserted events, then `events` mixed events.
pub fn generate(options: &GenOptions) -> impl Iterator<Item = String> {
    EventGenerator::new(options.clone())
}

/// Writes [`generate`]'s events as NDJSON, one event per line, and returns the bytes written.
pub fn write_ndjson(options: &GenOptions, out: &mut impl Write) -> io::Result<u64> {
    let mut generator = EventGenerator::new(options.clone());
    // Buffered here so that callers may pass a bare file or socket; one line buffer is reused, so
    // writing allocates nothing per event beyond what the generator itself needs.
    let mut writer = io::BufWriter::with_capacity(1 << 16, out);
    let mut line = Vec::with_capacity(1024);
    let mut bytes = 0u64;
    loop {
        line.clear();
        if !generator.write_next(&mut line) {
            break;
        }
        line.push(b'\n');
        writer.write_all(&line)?;
        bytes += line.len() as u64;
    }
    writer.flush()?;
    Ok(bytes)
}

// ------------------------------------------------------------------------------------------------
// Shape of the data

/// Each account sees an event about every 20 minutes on average, whatever the number of accounts, so
/// 1000 events per account span about two weeks (the repeat-ticket window) and the default 100
/// accounts make an event every 12 seconds.
const ACCOUNT_EVENT_INTERVAL: Millis = 20 * 60 * 1000;

/// Sources, one per system a real deployment would hear from.
const TICKET_SOURCE: &str = "zendesk";
const USAGE_SOURCE: &str = "product-analytics";
const SURVEY_SOURCE: &str = "delighted";
const ACCOUNT_SOURCE: &str = "salesforce";

/// The share of each mixed event type, per mille, in the order they are drawn.
const MIX: [(MixedKind, u32); 7] = [
    (MixedKind::TicketOpened, 220),
    (MixedKind::TicketUpdated, 100),
    (MixedKind::TicketSolved, 80),
    (MixedKind::TicketReopened, 20),
    (MixedKind::UsageMetric, 300),
    (MixedKind::UsageMilestone, 60),
    (MixedKind::SurveyResponded, 220),
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum MixedKind {
    TicketOpened,
    TicketUpdated,
    TicketSolved,
    TicketReopened,
    UsageMetric,
    UsageMilestone,
    SurveyResponded,
}

/// Events naming an account that was never upserted, per mille.
const UNKNOWN_ACCOUNT_PER_MILLE: u32 = 10;

/// Recent tickets that updates, solutions and reopenings may refer to. Bounded so that memory does not
/// grow with the run; older tickets simply stop getting follow-ups, as they would in a real desk.
const TICKET_POOL_SIZE: usize = 4096;

/// The onboarding milestones, in the order an account reaches them.
const MILESTONES: [&str; 4] = [
    "onboarding.first_login",
    "onboarding.first_integration",
    "onboarding.first_report",
    "adoption.team_invited",
];

const TIERS: [(Tier, u32); 3] = [
    (Tier::Enterprise, 10),
    (Tier::MidMarket, 30),
    (Tier::Smb, 60),
];
const REGION_WEIGHTS: [u32; 3] = [45, 35, 20];
const LIFECYCLE_STAGES: [(&str, u32); 4] = [
    ("onboarding", 15),
    ("adoption", 40),
    ("renewal", 20),
    ("expansion", 25),
];
const CHANNELS: [(&str, u32); 4] = [("email", 45), ("web", 25), ("chat", 20), ("phone", 10)];
const JOURNEY_STAGES: [(&str, u32); 6] = [
    ("evaluation", 8),
    ("onboarding", 17),
    ("adoption", 30),
    ("support", 25),
    ("billing", 12),
    ("renewal", 8),
];
const TOUCHPOINTS: [(&str, u32); 5] = [
    ("email", 30),
    ("in-app", 30),
    ("web", 20),
    ("chat", 12),
    ("phone", 8),
];
const METRICS: [(&str, u32); 7] = [
    ("active_users", 25),
    ("api_calls", 20),
    ("api_errors", 10),
    ("logins", 20),
    ("reports_created", 10),
    ("feature.dashboards", 8),
    ("feature.exports", 7),
];
const UPDATE_STATUSES: [(&str, u32); 4] = [
    ("open", 35),
    ("pending", 40),
    ("on-hold", 15),
    ("escalated", 10),
];
const SURVEY_KINDS: [(&str, u32); 3] = [("nps", 60), ("csat", 25), ("ces", 15)];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tier {
    Enterprise,
    MidMarket,
    Smb,
}

impl Tier {
    fn as_str(self) -> &'static str {
        match self {
            Tier::Enterprise => "enterprise",
            Tier::MidMarket => "mid-market",
            Tier::Smb => "smb",
        }
    }

    /// How much more often a bigger customer produces events: more users, more tickets.
    fn activity(self) -> u64 {
        match self {
            Tier::Enterprise => 4,
            Tier::MidMarket => 2,
            Tier::Smb => 1,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Priority {
    Low,
    Normal,
    High,
    Urgent,
}

impl Priority {
    fn as_str(self) -> &'static str {
        match self {
            Priority::Low => "low",
            Priority::Normal => "normal",
            Priority::High => "high",
            Priority::Urgent => "urgent",
        }
    }
}

/// How a survey respondent feels; the score and the comment follow from it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mood {
    Unhappy,
    Neutral,
    Happy,
}

// ------------------------------------------------------------------------------------------------
// Generator state

/// Who an event is about: an upserted account (by index) or an account id nobody upserted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Who {
    Known(u32),
    Unknown(u32),
}

#[derive(Debug)]
struct Account {
    number: u32,
    tier: Tier,
    /// Mail domain of the company, for requester addresses.
    domain: String,
    users: u32,
    /// The topic this account keeps coming back to.
    pain_topic: usize,
    /// A few accounts write far more, mostly about their pain topic, and are unhappier.
    noisy: bool,
    /// Usage of these accounts falls over the run, for the usage-drop detector.
    declining: bool,
    /// Onboarding accounts that never get past their first login.
    stalled: bool,
    /// How many of [`MILESTONES`] the account has reached.
    milestones_reached: usize,
}

#[derive(Debug, Clone, Copy)]
struct OpenedTicket {
    number: u64,
    who: Who,
    /// `None` for small talk.
    topic: Option<usize>,
    solved: bool,
}

struct EventGenerator {
    options: GenOptions,
    rng: ChaCha8Rng,
    /// Items yielded so far, account upserts included.
    emitted: usize,
    time: Millis,
    mean_gap: Millis,
    accounts: Vec<Account>,
    /// Cumulative activity weights of `accounts`, for skewed picking; built after the last upsert.
    account_weights: Vec<u64>,
    /// Cumulative weights of [`TOPICS`].
    topic_weights: Vec<u32>,
    /// Indexes of the delivery topics in [`TOPICS`].
    delivery_topics: Vec<usize>,
    tickets: Vec<OpenedTicket>,
    /// Where the next ticket goes once `tickets` is full: the oldest slot.
    ticket_slot: usize,
    next_ticket: u64,
    next_response: u64,
    /// First number of the never-upserted accounts: above every real one, so they cannot collide.
    unknown_base: u32,
    buffers: Buffers,
}

/// Strings rebuilt for every event; kept to reuse their allocations.
#[derive(Default)]
struct Buffers {
    event_id: String,
    account_id: String,
    reference: String,
    text: String,
    person: String,
}

impl EventGenerator {
    fn new(options: GenOptions) -> EventGenerator {
        let accounts = u32::try_from(options.accounts).unwrap_or(u32::MAX);
        let topic_weights = TOPICS
            .iter()
            .scan(0, |total, topic| {
                *total += topic.weight;
                Some(*total)
            })
            .collect();
        EventGenerator {
            rng: ChaCha8Rng::seed_from_u64(options.seed),
            emitted: 0,
            time: options.start,
            mean_gap: (ACCOUNT_EVENT_INTERVAL / Millis::from(accounts.max(1))).max(1),
            accounts: Vec::with_capacity(options.accounts.min(1 << 20)),
            account_weights: Vec::new(),
            topic_weights,
            delivery_topics: (0..TOPICS.len())
                .filter(|index| TOPICS[*index].tag.starts_with("delivery."))
                .collect(),
            tickets: Vec::new(),
            ticket_slot: 0,
            next_ticket: 1,
            next_response: 1,
            unknown_base: accounts.max(90_000).saturating_add(1),
            buffers: Buffers::default(),
            options,
        }
    }

    fn total(&self) -> usize {
        self.options.accounts.saturating_add(self.options.events)
    }

    /// Serializes the next event into `out`; false once every event has been written.
    fn write_next(&mut self, out: &mut Vec<u8>) -> bool {
        if self.emitted >= self.total() {
            return false;
        }
        self.emitted += 1;
        self.buffers.event_id.clear();
        let _ = write!(self.buffers.event_id, "evt-{}", self.emitted);
        if self.emitted <= self.options.accounts {
            // Upserts come first and close together, as a CRM sync would deliver them.
            self.time += self.rng.gen_range(0..=100);
            self.account_upserted(out);
        } else {
            if self.account_weights.is_empty() && !self.accounts.is_empty() {
                self.build_account_weights();
            }
            self.time += self.rng.gen_range(0..=2 * self.mean_gap);
            self.mixed_event(out);
        }
        true
    }

    fn build_account_weights(&mut self) {
        let mut total = 0u64;
        self.account_weights = self
            .accounts
            .iter()
            .map(|account| {
                total += account.tier.activity() * if account.noisy { 8 } else { 1 };
                total
            })
            .collect();
    }

    fn emit<D: Serialize>(&self, out: &mut Vec<u8>, source: &str, event_type: &str, data: &D) {
        let envelope = CloudEvent {
            specversion: "1.0",
            id: &self.buffers.event_id,
            source,
            event_type,
            time: &format_millis(self.time),
            data,
        };
        serde_json::to_writer(out, &envelope)
            .expect("serializing plain structs to memory cannot fail");
    }

    // --------------------------------------------------------------------------------------------
    // Accounts

    fn account_upserted(&mut self, out: &mut Vec<u8>) {
        let number = u32::try_from(self.accounts.len() + 1).unwrap_or(u32::MAX);
        let rng = &mut self.rng;
        let tier = pick_weighted(rng, &TIERS);
        let region = pick_index_weighted(rng, &REGION_WEIGHTS);
        let segment = rng.gen_range(0..text::SEGMENTS.len());
        let (region_name, legal_forms) = text::REGIONS[region];
        let (segment_name, nouns) = text::SEGMENTS[segment];
        let stem = pick(rng, text::NAME_STEMS);
        let noun = pick(rng, nouns);
        let name = format!("{stem} {noun} {}", pick(rng, legal_forms));
        let domain = format!(
            "{}{}.example",
            stem.to_ascii_lowercase(),
            noun.to_ascii_lowercase()
        );
        // Key accounts always have a CSM; a few small ones are still waiting for one (about 5%).
        let csm = match tier {
            Tier::Enterprise => Some(pick(rng, text::ENTERPRISE_CSMS)),
            Tier::MidMarket => Some(pick(rng, text::MID_MARKET_CSMS)),
            Tier::Smb if rng.gen_range(0..100) < 8 => None,
            Tier::Smb => Some(pick(rng, text::SMB_CSMS)),
        };
        let lifecycle_stage = pick_weighted(rng, &LIFECYCLE_STAGES);
        let days_ago = match lifecycle_stage {
            "onboarding" => rng.gen_range(3..60),
            "adoption" => rng.gen_range(60..365),
            "renewal" => rng.gen_range(330..1100),
            _ => rng.gen_range(180..1500),
        };
        let started_at =
            self.options.start - days_ago * MILLIS_PER_DAY - rng.gen_range(0..MILLIS_PER_DAY);
        let (arr, users) = match tier {
            Tier::Enterprise => (rng.gen_range(1_500..12_000) * 100, rng.gen_range(200..2000)),
            Tier::MidMarket => (rng.gen_range(300..1_500) * 100, rng.gen_range(40..300)),
            Tier::Smb => (rng.gen_range(30..300) * 100, rng.gen_range(3..40)),
        };
        let noisy = rng.gen_range(0..100) < 8;
        let declining = rng.gen_range(0..100) < 10;
        let onboarding = lifecycle_stage == "onboarding";
        let stalled = onboarding && rng.gen_range(0..100) < 40;
        // Ecommerce customers ship goods, so their recurring pain is often a delivery problem.
        let pain_topic = if segment_name == "ecommerce" && rng.gen_bool(0.4) {
            pick(rng, &self.delivery_topics)
        } else {
            weighted_topic(rng, &self.topic_weights)
        };
        self.accounts.push(Account {
            number,
            tier,
            domain,
            users,
            pain_topic,
            noisy,
            declining,
            stalled,
            milestones_reached: if onboarding { 0 } else { MILESTONES.len() },
        });

        format_account_id(&mut self.buffers.account_id, number);
        let started_at = format_millis(started_at);
        let data = AccountUpsertedData {
            account_id: &self.buffers.account_id,
            name: &name,
            tier: tier.as_str(),
            arr,
            region: region_name,
            segment: segment_name,
            csm,
            lifecycle_stage,
            started_at: &started_at,
        };
        self.emit(out, ACCOUNT_SOURCE, "account.upserted", &data);
    }

    /// An account for the next event: skewed towards big and noisy accounts, now and then unknown.
    fn pick_account(&mut self) -> Who {
        if self.accounts.is_empty() || self.rng.gen_range(0..1000) < UNKNOWN_ACCOUNT_PER_MILLE {
            return Who::Unknown(
                self.unknown_base
                    .saturating_add(self.rng.gen_range(0..1000)),
            );
        }
        let total = *self.account_weights.last().unwrap_or(&1);
        let point = self.rng.gen_range(0..total);
        let index = self
            .account_weights
            .partition_point(|cumulative| *cumulative <= point);
        Who::Known(index as u32)
    }

    fn account(&self, who: Who) -> Option<&Account> {
        match who {
            Who::Known(index) => self.accounts.get(index as usize),
            Who::Unknown(_) => None,
        }
    }

    fn set_account_id(&mut self, who: Who) {
        let number = match who {
            Who::Known(index) => self.accounts[index as usize].number,
            Who::Unknown(number) => number,
        };
        format_account_id(&mut self.buffers.account_id, number);
    }

    /// A user id of the account, such as `user-00042-0007`.
    fn set_user_id(&mut self, who: Who) {
        let (number, users) = match (who, self.account(who)) {
            (_, Some(account)) => (account.number, account.users),
            (Who::Unknown(number) | Who::Known(number), None) => (number, 20),
        };
        let user = self.rng.gen_range(1..=users);
        self.buffers.person.clear();
        let _ = write!(self.buffers.person, "user-{number:05}-{user:04}");
    }

    // --------------------------------------------------------------------------------------------
    // Mixed events

    fn mixed_event(&mut self, out: &mut Vec<u8>) {
        let kind = pick_weighted(&mut self.rng, &MIX);
        // Follow-ups need an earlier ticket in the right state; early in a run there may be none,
        // and then the customer opens a new one instead.
        let handled = match kind {
            MixedKind::TicketUpdated => self.ticket_updated(out),
            MixedKind::TicketSolved => self.ticket_solved(out),
            MixedKind::TicketReopened => self.ticket_reopened(out),
            MixedKind::TicketOpened => false,
            MixedKind::UsageMetric => {
                self.usage_metric(out);
                true
            }
            MixedKind::UsageMilestone => {
                self.usage_milestone(out);
                true
            }
            MixedKind::SurveyResponded => {
                self.survey_responded(out);
                true
            }
        };
        if !handled {
            self.ticket_opened(out);
        }
    }

    /// The topic of a new ticket, or `None` for small talk.
    fn ticket_topic(&mut self, who: Who) -> Option<usize> {
        if self.rng.gen_range(0..100) < 9 {
            return None;
        }
        if let Some(account) = self.account(who) {
            let pain_share = if account.noisy { 55 } else { 12 };
            let pain_topic = account.pain_topic;
            if self.rng.gen_range(0..100) < pain_share {
                return Some(pain_topic);
            }
        }
        Some(weighted_topic(&mut self.rng, &self.topic_weights))
    }

    fn ticket_opened(&mut self, out: &mut Vec<u8>) {
        let who = self.pick_account();
        let topic_index = self.ticket_topic(who);
        let topic = topic_index.map(|index| &TOPICS[index]);
        let repeating = self
            .account(who)
            .is_some_and(|account| account.noisy && Some(account.pain_topic) == topic_index);
        let rng = &mut self.rng;

        let priority = {
            let severe = topic.is_some_and(|topic| topic.severe);
            let roll = rng.gen_range(0..100);
            let (urgent, high, normal) = if severe { (20, 50, 95) } else { (2, 11, 87) };
            match roll {
                _ if roll < urgent => Priority::Urgent,
                _ if roll < high => Priority::High,
                _ if roll < normal => Priority::Normal,
                _ => Priority::Low,
            }
        };

        let body = &mut self.buffers.text;
        body.clear();
        let subject = match topic {
            Some(topic) => {
                if rng.gen_bool(0.6) {
                    push_paragraph(body, pick(rng, text::GREETINGS));
                }
                let first = rng.gen_range(0..topic.problems.len());
                push_sentence(body, topic.problems[first]);
                if rng.gen_bool(0.4) {
                    let second =
                        (first + rng.gen_range(1..topic.problems.len())) % topic.problems.len();
                    push_sentence(body, topic.problems[second]);
                }
                if rng.gen_bool(0.5) {
                    push_sentence(body, pick(rng, text::CONTEXT));
                }
                if repeating && rng.gen_bool(0.5) {
                    push_sentence(body, pick(rng, text::REPEATS));
                }
                if priority == Priority::Urgent && rng.gen_bool(0.7) {
                    push_sentence(body, pick(rng, text::URGENCY));
                }
                if rng.gen_range(0..100) < 2 {
                    push_sentence(body, pick(rng, text::CHURN_INTENT));
                }
                if rng.gen_bool(0.7) {
                    push_paragraph(body, pick(rng, text::CLOSERS));
                }
                pick(rng, topic.subjects)
            }
            None => {
                push_sentence(body, pick(rng, text::SMALL_TALK));
                if rng.gen_bool(0.5) {
                    push_paragraph(body, pick(rng, text::CLOSERS));
                }
                pick(rng, text::SMALL_TALK_SUBJECTS)
            }
        };
        let channel = pick_weighted(rng, &CHANNELS);
        // Forms are not always filled in: some tickets carry no product area or journey stage.
        let product_area = topic
            .filter(|_| rng.gen_range(0..100) < 88)
            .map(|topic| topic.product_area);
        let journey_stage = topic
            .filter(|_| rng.gen_range(0..100) < 40)
            .map(|topic| topic.journey_stage);
        let first_name = pick(rng, text::FIRST_NAMES);
        self.buffers.person.clear();
        // Field by field rather than through `self.account()`, so that the buffer may be written
        // while the account is borrowed.
        let account = match who {
            Who::Known(index) => self.accounts.get(index as usize),
            Who::Unknown(_) => None,
        };
        match account {
            Some(account) => {
                let _ = write!(self.buffers.person, "{first_name}@{}", account.domain);
            }
            None => {
                let _ = write!(self.buffers.person, "{first_name}@unknown-customer.example");
            }
        }

        let number = self.next_ticket;
        self.next_ticket += 1;
        self.remember_ticket(OpenedTicket {
            number,
            who,
            topic: topic_index,
            solved: false,
        });
        self.set_account_id(who);
        format_ticket_id(&mut self.buffers.reference, number);
        let data = TicketOpenedData {
            ticket_id: &self.buffers.reference,
            account_id: &self.buffers.account_id,
            subject,
            body: &self.buffers.text,
            priority: priority.as_str(),
            channel,
            requester: &self.buffers.person,
            product_area,
            journey_stage,
        };
        self.emit(out, TICKET_SOURCE, "ticket.opened", &data);
    }

    fn remember_ticket(&mut self, ticket: OpenedTicket) {
        if self.tickets.len() < TICKET_POOL_SIZE {
            self.tickets.push(ticket);
        } else {
            self.tickets[self.ticket_slot] = ticket;
            self.ticket_slot = (self.ticket_slot + 1) % TICKET_POOL_SIZE;
        }
    }

    /// A recent ticket that is solved (or not), found by a few random probes so that the cost stays
    /// constant; `None` sends the caller back to opening a new ticket.
    fn find_ticket(&mut self, solved: bool) -> Option<usize> {
        if self.tickets.is_empty() {
            return None;
        }
        for _ in 0..8 {
            let slot = self.rng.gen_range(0..self.tickets.len());
            if self.tickets[slot].solved == solved {
                return Some(slot);
            }
        }
        None
    }

    fn ticket_updated(&mut self, out: &mut Vec<u8>) -> bool {
        let Some(slot) = self.find_ticket(false) else {
            return false;
        };
        let ticket = self.tickets[slot];
        let rng = &mut self.rng;
        let status = pick_weighted(rng, &UPDATE_STATUSES);
        let priority = if status == "escalated" {
            Some(if rng.gen_bool(0.5) {
                Priority::Urgent
            } else {
                Priority::High
            })
        } else if rng.gen_range(0..100) < 15 {
            Some(if rng.gen_bool(0.3) {
                Priority::High
            } else {
                Priority::Normal
            })
        } else {
            None
        };
        let roll = rng.gen_range(0..100);
        let comment = match (roll, ticket.topic) {
            (0..25, _) => None,
            (25..60, Some(topic)) => Some(pick(rng, TOPICS[topic].comments)),
            (25..85, _) => Some(pick(rng, text::FOLLOW_UPS)),
            _ => Some(pick(rng, text::SUPPORT_COMPLAINTS)),
        };
        self.set_account_id(ticket.who);
        format_ticket_id(&mut self.buffers.reference, ticket.number);
        let data = TicketUpdatedData {
            ticket_id: &self.buffers.reference,
            account_id: &self.buffers.account_id,
            status,
            priority: priority.map(Priority::as_str),
            comment,
        };
        self.emit(out, TICKET_SOURCE, "ticket.updated", &data);
        true
    }

    fn ticket_solved(&mut self, out: &mut Vec<u8>) -> bool {
        let Some(slot) = self.find_ticket(false) else {
            return false;
        };
        self.tickets[slot].solved = true;
        let ticket = self.tickets[slot];
        let rng = &mut self.rng;
        let roll = rng.gen_range(0..100);
        let resolution = match (roll, ticket.topic) {
            (0..10, _) => None,
            (10..85, Some(topic)) => Some(pick(rng, TOPICS[topic].resolutions)),
            _ => Some(pick(rng, text::GENERIC_RESOLUTIONS)),
        };
        self.set_account_id(ticket.who);
        format_ticket_id(&mut self.buffers.reference, ticket.number);
        let data = TicketSolvedData {
            ticket_id: &self.buffers.reference,
            account_id: &self.buffers.account_id,
            resolution,
        };
        self.emit(out, TICKET_SOURCE, "ticket.solved", &data);
        true
    }

    fn ticket_reopened(&mut self, out: &mut Vec<u8>) -> bool {
        let Some(slot) = self.find_ticket(true) else {
            return false;
        };
        self.tickets[slot].solved = false;
        let ticket = self.tickets[slot];
        self.set_account_id(ticket.who);
        format_ticket_id(&mut self.buffers.reference, ticket.number);
        let data = TicketReopenedData {
            ticket_id: &self.buffers.reference,
            account_id: &self.buffers.account_id,
        };
        self.emit(out, TICKET_SOURCE, "ticket.reopened", &data);
        true
    }

    fn usage_metric(&mut self, out: &mut Vec<u8>) {
        let who = self.pick_account();
        let (users, noisy, declining) = match self.account(who) {
            Some(account) => (account.users, account.noisy, account.declining),
            None => (20, false, false),
        };
        let progress =
            (self.emitted - self.options.accounts) as f64 / self.options.events.max(1) as f64;
        let rng = &mut self.rng;
        let metric = pick_weighted(rng, &METRICS);
        // A declining account ends the run at about a third of its starting usage.
        let trend = if declining {
            1.0 - 0.65 * progress
        } else {
            1.0
        };
        let level = f64::from(users) * trend * rng.gen_range(0.8..1.2);
        let per_user = match metric {
            "active_users" => 0.6,
            "api_calls" => 40.0,
            "api_errors" => {
                // Errors run at about half a percent of calls, with spikes, mostly at noisy accounts.
                let spike_chance = if noisy { 0.15 } else { 0.02 };
                if rng.gen_bool(spike_chance) {
                    6.0
                } else {
                    0.2
                }
            }
            "logins" => 0.8,
            "reports_created" => 0.05,
            "feature.dashboards" => 0.3,
            _ => 0.1,
        };
        let value = (level * per_user).round() as u64;
        let with_user = matches!(
            metric,
            "logins" | "reports_created" | "feature.dashboards" | "feature.exports"
        ) && rng.gen_bool(0.5);
        if with_user {
            self.set_user_id(who);
        }
        self.set_account_id(who);
        let data = UsageMetricData {
            account_id: &self.buffers.account_id,
            metric,
            value,
            user_id: with_user.then_some(self.buffers.person.as_str()),
        };
        self.emit(out, USAGE_SOURCE, "usage.metric", &data);
    }

    fn usage_milestone(&mut self, out: &mut Vec<u8>) {
        let who = self.pick_account();
        let next = self.account(who).and_then(|account| {
            let blocked = account.stalled && account.milestones_reached >= 1;
            (account.milestones_reached < MILESTONES.len() && !blocked)
                .then_some(account.milestones_reached)
        });
        let milestone = match (next, who) {
            (Some(reached), Who::Known(index)) => {
                self.accounts[index as usize].milestones_reached = reached + 1;
                MILESTONES[reached]
            }
            // An account past its milestones still reports them, per new user.
            _ => {
                if self.rng.gen_bool(0.7) {
                    MILESTONES[0]
                } else {
                    MILESTONES[3]
                }
            }
        };
        self.set_user_id(who);
        self.set_account_id(who);
        let data = UsageMilestoneData {
            account_id: &self.buffers.account_id,
            milestone,
            user_id: &self.buffers.person,
        };
        self.emit(out, USAGE_SOURCE, "usage.milestone", &data);
    }

    fn survey_responded(&mut self, out: &mut Vec<u8>) {
        let who = self.pick_account();
        let (noisy, pain_topic) = match self.account(who) {
            Some(account) => (account.noisy, Some(account.pain_topic)),
            None => (false, None),
        };
        let rng = &mut self.rng;
        let kind = pick_weighted(rng, &SURVEY_KINDS);
        let roll = rng.gen_range(0..100);
        let mood = match (noisy, roll) {
            (true, 0..45) | (false, 0..18) => Mood::Unhappy,
            (true, 45..70) | (false, 18..48) => Mood::Neutral,
            _ => Mood::Happy,
        };
        // NPS 0-10 (detractor at most 6), CSAT 1-5 (low at most 2), CES 1-7 (high effort from 5).
        let score: u8 = match (kind, mood) {
            ("nps", Mood::Unhappy) => rng.gen_range(0..=6),
            ("nps", Mood::Neutral) => rng.gen_range(7..=8),
            ("nps", Mood::Happy) => rng.gen_range(9..=10),
            ("csat", Mood::Unhappy) => rng.gen_range(1..=2),
            ("csat", Mood::Neutral) => 3,
            ("csat", Mood::Happy) => rng.gen_range(4..=5),
            (_, Mood::Unhappy) => rng.gen_range(5..=7),
            (_, Mood::Neutral) => rng.gen_range(3..=4),
            (_, Mood::Happy) => rng.gen_range(1..=2),
        };

        // About 30% of respondents leave no comment; the rest talk about a topic or about nothing.
        let mut topic: Option<&Topic> = None;
        let comment_text = &mut self.buffers.text;
        comment_text.clear();
        if rng.gen_range(0..100) >= 30 {
            let roll = rng.gen_range(0..100);
            match mood {
                Mood::Unhappy if roll < 65 => {
                    let index = match pain_topic {
                        Some(pain) if rng.gen_bool(0.5) => pain,
                        _ => weighted_topic(rng, &self.topic_weights),
                    };
                    topic = Some(&TOPICS[index]);
                    push_sentence(comment_text, pick(rng, TOPICS[index].comments));
                }
                Mood::Unhappy => {
                    let feelings = match kind {
                        "nps" => text::DETRACTOR_COMMENTS,
                        "csat" => text::LOW_CSAT_COMMENTS,
                        _ => text::HIGH_EFFORT_COMMENTS,
                    };
                    push_sentence(comment_text, pick(rng, feelings));
                }
                Mood::Neutral if roll < 50 => {
                    let index = weighted_topic(rng, &self.topic_weights);
                    topic = Some(&TOPICS[index]);
                    push_sentence(comment_text, pick(rng, TOPICS[index].comments));
                }
                // Happy people mostly say what they like; a quarter say nothing specific.
                Mood::Neutral if roll < 85 => {
                    push_sentence(comment_text, pick(rng, text::AREA_PRAISE))
                }
                Mood::Happy if roll < 75 => {
                    push_sentence(comment_text, pick(rng, text::AREA_PRAISE))
                }
                Mood::Neutral | Mood::Happy if roll < 90 => {
                    push_sentence(comment_text, pick(rng, text::PRAISE))
                }
                Mood::Neutral | Mood::Happy => {
                    push_sentence(comment_text, pick(rng, text::SMALL_TALK))
                }
            }
            if mood == Mood::Unhappy && rng.gen_range(0..100) < 10 {
                push_sentence(comment_text, pick(rng, text::CHURN_INTENT));
            }
        }
        let has_comment = !comment_text.is_empty();
        let journey_stage = if rng.gen_range(0..100) < 90 {
            Some(match topic {
                Some(topic) if rng.gen_bool(0.6) => topic.journey_stage,
                _ => pick_weighted(rng, &JOURNEY_STAGES),
            })
        } else {
            None
        };
        let touchpoint = (rng.gen_range(0..100) < 90).then(|| pick_weighted(rng, &TOUCHPOINTS));
        let with_user = rng.gen_range(0..100) < 80;
        if with_user {
            self.set_user_id(who);
        }
        self.set_account_id(who);
        self.buffers.reference.clear();
        let _ = write!(self.buffers.reference, "resp-{}", self.next_response);
        self.next_response += 1;
        let data = SurveyRespondedData {
            response_id: &self.buffers.reference,
            account_id: &self.buffers.account_id,
            kind,
            score,
            comment: has_comment.then_some(self.buffers.text.as_str()),
            journey_stage,
            touchpoint,
            user_id: with_user.then_some(self.buffers.person.as_str()),
        };
        self.emit(out, SURVEY_SOURCE, "survey.responded", &data);
    }
}

impl Iterator for EventGenerator {
    type Item = String;

    fn next(&mut self) -> Option<String> {
        let mut out = Vec::with_capacity(768);
        if !self.write_next(&mut out) {
            return None;
        }
        Some(String::from_utf8(out).expect("serde_json writes UTF-8"))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let remaining = self.total() - self.emitted;
        (remaining, Some(remaining))
    }
}

// ------------------------------------------------------------------------------------------------
// Wire shapes: CloudEvents 1.0 structured mode, with the data fields of events v1. Optional fields
// that an event does not carry are left out rather than written as null.

#[derive(Serialize)]
struct CloudEvent<'a, D> {
    specversion: &'static str,
    id: &'a str,
    source: &'a str,
    #[serde(rename = "type")]
    event_type: &'a str,
    time: &'a str,
    data: &'a D,
}

#[derive(Serialize)]
struct AccountUpsertedData<'a> {
    account_id: &'a str,
    name: &'a str,
    tier: &'static str,
    arr: u64,
    region: &'static str,
    segment: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    csm: Option<&'static str>,
    lifecycle_stage: &'static str,
    /// RFC 3339 UTC, like the CloudEvents `time`.
    started_at: &'a str,
}

#[derive(Serialize)]
struct TicketOpenedData<'a> {
    ticket_id: &'a str,
    account_id: &'a str,
    subject: &'static str,
    body: &'a str,
    priority: &'static str,
    channel: &'static str,
    requester: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    product_area: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    journey_stage: Option<&'static str>,
}

#[derive(Serialize)]
struct TicketUpdatedData<'a> {
    ticket_id: &'a str,
    account_id: &'a str,
    status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    priority: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    comment: Option<&'static str>,
}

#[derive(Serialize)]
struct TicketSolvedData<'a> {
    ticket_id: &'a str,
    account_id: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    resolution: Option<&'static str>,
}

#[derive(Serialize)]
struct TicketReopenedData<'a> {
    ticket_id: &'a str,
    account_id: &'a str,
}

#[derive(Serialize)]
struct UsageMetricData<'a> {
    account_id: &'a str,
    metric: &'static str,
    value: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    user_id: Option<&'a str>,
}

#[derive(Serialize)]
struct UsageMilestoneData<'a> {
    account_id: &'a str,
    milestone: &'static str,
    user_id: &'a str,
}

#[derive(Serialize)]
struct SurveyRespondedData<'a> {
    response_id: &'a str,
    account_id: &'a str,
    kind: &'static str,
    score: u8,
    #[serde(skip_serializing_if = "Option::is_none")]
    comment: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    journey_stage: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    touchpoint: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    user_id: Option<&'a str>,
}

// ------------------------------------------------------------------------------------------------
// Small helpers

fn format_account_id(buffer: &mut String, number: u32) {
    buffer.clear();
    let _ = write!(buffer, "acct-{number:05}");
}

fn format_ticket_id(buffer: &mut String, number: u64) {
    buffer.clear();
    let _ = write!(buffer, "tkt-{number:06}");
}

/// Appends a sentence, with a space after the previous one.
fn push_sentence(buffer: &mut String, sentence: &str) {
    if !buffer.is_empty() && !buffer.ends_with('\n') {
        buffer.push(' ');
    }
    buffer.push_str(sentence);
}

/// Appends a line of its own (a greeting or a sign-off), with a blank line between it and the
/// sentences, as people write e-mail. The taxonomy's regex gaps stop at line ends, so a greeting
/// never joins a sentence.
fn push_paragraph(buffer: &mut String, line: &str) {
    if !buffer.is_empty() {
        buffer.push_str("\n\n");
    }
    buffer.push_str(line);
    if line.ends_with(',') {
        buffer.push_str("\n\n");
    }
}

fn pick<T: Copy>(rng: &mut ChaCha8Rng, items: &[T]) -> T {
    items[rng.gen_range(0..items.len())]
}

/// Picks from a short list of `(item, weight)` pairs; a linear scan beats a table at these sizes.
fn pick_weighted<T: Copy>(rng: &mut ChaCha8Rng, items: &[(T, u32)]) -> T {
    let total: u32 = items.iter().map(|(_, weight)| weight).sum();
    let mut point = rng.gen_range(0..total);
    for (item, weight) in items {
        if point < *weight {
            return *item;
        }
        point -= weight;
    }
    items[items.len() - 1].0
}

fn pick_index_weighted(rng: &mut ChaCha8Rng, weights: &[u32]) -> usize {
    let total: u32 = weights.iter().sum();
    let mut point = rng.gen_range(0..total);
    for (index, weight) in weights.iter().enumerate() {
        if point < *weight {
            return index;
        }
        point -= weight;
    }
    weights.len() - 1
}

/// A topic index, by the topics' relative weights (`cumulative` is their running sum).
fn weighted_topic(rng: &mut ChaCha8Rng, cumulative: &[u32]) -> usize {
    let total = *cumulative.last().expect("there are topics");
    let point = rng.gen_range(0..total);
    cumulative.partition_point(|running| *running <= point)
}

#[cfg(test)]
mod tests {
    use std::collections::{HashMap, HashSet};

    use serde_json::Value;

    use super::*;
    use crate::config::taxonomy::{TaxonomyConfig, UNCATEGORIZED};
    use crate::config::DEFAULT_TAXONOMY;
    use crate::domain::{
        AccountId, EventData, SurveyKind, SurveyResponded, TicketOpened, TicketSolved,
    };
    use crate::tag::Tagger;

    fn options(accounts: usize, events: usize, seed: u64) -> GenOptions {
        GenOptions {
            accounts,
            events,
            seed,
            ..GenOptions::default()
        }
    }

    fn parsed(options: &GenOptions) -> Vec<Value> {
        generate(options)
            .map(|line| serde_json::from_str(&line).expect("every event is valid JSON"))
            .collect()
    }

    fn of_type<'a>(events: &'a [Value], event_type: &str) -> Vec<&'a Value> {
        events
            .iter()
            .filter(|event| event["type"] == event_type)
            .collect()
    }

    fn millis(event: &Value) -> Millis {
        let time = event["time"].as_str().expect("time is a string");
        chrono::DateTime::parse_from_rfc3339(time)
            .expect("time is RFC 3339")
            .timestamp_millis()
    }

    fn share(count: usize, total: usize) -> f64 {
        count as f64 / total as f64
    }

    #[test]
    fn the_default_options_are_a_small_demo_starting_on_monday_5_january_2026() {
        let defaults = GenOptions::default();
        assert_eq!(
            (defaults.accounts, defaults.events, defaults.seed),
            (100, 1000, 1)
        );
        assert_eq!(format_millis(defaults.start), "2026-01-05T00:00:00.000Z");
        assert_eq!(generate(&defaults).count(), 1100);
    }

    #[test]
    fn the_same_seed_gives_byte_identical_output() {
        let first: Vec<String> = generate(&options(50, 2000, 7)).collect();
        let second: Vec<String> = generate(&options(50, 2000, 7)).collect();
        assert_eq!(first, second);
        let other_seed: Vec<String> = generate(&options(50, 2000, 8)).collect();
        assert_ne!(first, other_seed);
    }

    #[test]
    fn events_are_compact_json_without_a_trailing_newline() {
        for line in generate(&options(5, 200, 1)) {
            assert!(!line.contains('\n'), "{line}");
            assert!(line.starts_with(r#"{"specversion":"1.0","id":""#), "{line}");
        }
    }

    #[test]
    fn accounts_come_first_and_every_event_type_appears() {
        let events = parsed(&options(100, 1000, 1));
        assert_eq!(events.len(), 1100);
        for (index, event) in events.iter().enumerate() {
            let is_account = event["type"] == "account.upserted";
            assert_eq!(is_account, index < 100, "event {index}: {event}");
        }
        let upserted: Vec<&str> = events[..100]
            .iter()
            .map(|event| event["data"]["account_id"].as_str().unwrap())
            .collect();
        assert_eq!(upserted[0], "acct-00001");
        assert_eq!(upserted[99], "acct-00100");
        let types: HashSet<&str> = events
            .iter()
            .map(|event| event["type"].as_str().unwrap())
            .collect();
        for event_type in crate::domain::EventType::ALL {
            assert!(
                types.contains(event_type.as_str()),
                "no {}",
                event_type.as_str()
            );
        }
    }

    #[test]
    fn every_event_is_a_cloudevent_with_the_required_data_of_its_type() {
        let events = parsed(&options(30, 5000, 3));
        let mut ids_by_source: HashMap<String, HashSet<String>> = HashMap::new();
        for event in &events {
            assert_eq!(event["specversion"], "1.0");
            let source = event["source"].as_str().unwrap().to_owned();
            let id = event["id"].as_str().unwrap().to_owned();
            assert!(
                ids_by_source.entry(source.clone()).or_default().insert(id),
                "duplicate id: {event}"
            );
            assert!(
                event["time"].as_str().unwrap().ends_with('Z'),
                "time is UTC: {event}"
            );
            millis(event);

            let data = event["data"].as_object().expect("data is an object");
            assert!(
                data.values().all(|value| !value.is_null()),
                "absent fields are omitted, not null: {event}"
            );
            let event_type = event["type"].as_str().unwrap();
            let (expected_source, required): (&str, &[&str]) = match event_type {
                "ticket.opened" | "ticket.updated" | "ticket.solved" | "ticket.reopened" => {
                    ("zendesk", &["ticket_id", "account_id"])
                }
                "usage.metric" => ("product-analytics", &["account_id", "metric", "value"]),
                "usage.milestone" => ("product-analytics", &["account_id", "milestone"]),
                "survey.responded" => {
                    ("delighted", &["response_id", "account_id", "kind", "score"])
                }
                "account.upserted" => ("salesforce", &["account_id"]),
                other => panic!("unknown type {other}"),
            };
            assert_eq!(source, expected_source);
            for field in required {
                assert!(
                    data.contains_key(*field),
                    "{event_type} lacks {field}: {event}"
                );
            }
            assert!(AccountId::parse(data["account_id"].as_str().unwrap()).is_ok());
            if let Some(priority) = data.get("priority") {
                let priority = priority.as_str().unwrap();
                assert!(
                    crate::domain::TicketPriority::parse(priority).is_some(),
                    "{priority}"
                );
            }
            match event_type {
                "survey.responded" => {
                    let kind =
                        SurveyKind::parse(data["kind"].as_str().unwrap()).expect("known kind");
                    let (low, high) = kind.score_range();
                    let score = data["score"].as_u64().unwrap();
                    assert!(
                        (u64::from(low)..=u64::from(high)).contains(&score),
                        "{event}"
                    );
                }
                "usage.metric" => assert!(data["value"].is_number()),
                "ticket.opened" => {
                    for field in ["subject", "body", "priority", "channel", "requester"] {
                        assert!(
                            data.contains_key(field),
                            "ticket.opened lacks {field}: {event}"
                        );
                    }
                }
                "account.upserted" => {
                    for field in [
                        "name",
                        "tier",
                        "arr",
                        "region",
                        "segment",
                        "lifecycle_stage",
                        "started_at",
                    ] {
                        assert!(
                            data.contains_key(field),
                            "account.upserted lacks {field}: {event}"
                        );
                    }
                    let started_at = data["started_at"].as_str().unwrap();
                    assert!(
                        chrono::DateTime::parse_from_rfc3339(started_at).is_ok(),
                        "{started_at}"
                    );
                }
                _ => {}
            }
        }
    }

    #[test]
    fn event_times_start_at_the_start_and_never_decrease() {
        let generated = options(100, 3000, 5);
        let times: Vec<Millis> = parsed(&generated).iter().map(millis).collect();
        assert!(times[0] >= generated.start && times[0] - generated.start <= 100);
        assert!(times.windows(2).all(|pair| pair[0] <= pair[1]));
        // 30 events per account at one every ~20 minutes per account: about ten hours.
        let span = times[times.len() - 1] - times[0];
        assert!(
            (6 * 3_600_000..16 * 3_600_000).contains(&span),
            "span {span} ms"
        );
    }

    #[test]
    fn a_thousand_events_per_account_span_about_two_weeks() {
        let generated = options(10, 10_000, 2);
        let times: Vec<Millis> = parsed(&generated).iter().map(millis).collect();
        let days = (times[times.len() - 1] - generated.start) as f64 / MILLIS_PER_DAY as f64;
        assert!((11.0..17.0).contains(&days), "{days} days");
    }

    #[test]
    fn the_event_mix_is_close_to_the_intended_shares() {
        let events = parsed(&options(200, 40_000, 11));
        let mixed = &events[200..];
        let expected = [
            ("ticket.opened", 0.22),
            ("ticket.updated", 0.10),
            ("ticket.solved", 0.08),
            ("ticket.reopened", 0.02),
            ("usage.metric", 0.30),
            ("usage.milestone", 0.06),
            ("survey.responded", 0.22),
        ];
        for (event_type, wanted) in expected {
            let actual = share(of_type(mixed, event_type).len(), mixed.len());
            assert!(
                (actual - wanted).abs() < 0.02,
                "{event_type}: {actual:.3} against {wanted}"
            );
        }

        let surveys = of_type(mixed, "survey.responded");
        for (kind, wanted) in [("nps", 0.60), ("csat", 0.25), ("ces", 0.15)] {
            let count = surveys
                .iter()
                .filter(|event| event["data"]["kind"] == kind)
                .count();
            let actual = share(count, surveys.len());
            assert!((actual - wanted).abs() < 0.03, "{kind}: {actual:.3}");
        }
        let without_comment = surveys
            .iter()
            .filter(|event| event["data"].get("comment").is_none())
            .count();
        let actual = share(without_comment, surveys.len());
        assert!(
            (0.25..0.35).contains(&actual),
            "surveys without comment: {actual:.3}"
        );

        let opened = of_type(mixed, "ticket.opened");
        let priority_share = |priority: &str| {
            share(
                opened
                    .iter()
                    .filter(|event| event["data"]["priority"] == priority)
                    .count(),
                opened.len(),
            )
        };
        assert!(
            (0.07..0.14).contains(&priority_share("high")),
            "high {}",
            priority_share("high")
        );
        assert!(
            (0.015..0.05).contains(&priority_share("urgent")),
            "urgent {}",
            priority_share("urgent")
        );
        assert!(priority_share("normal") > 0.7);
    }

    #[test]
    fn about_one_percent_of_events_name_an_account_that_was_never_upserted() {
        let events = parsed(&options(300, 20_000, 4));
        let upserted: HashSet<&str> = of_type(&events, "account.upserted")
            .iter()
            .map(|event| event["data"]["account_id"].as_str().unwrap())
            .collect();
        let mixed = &events[300..];
        let unknown: Vec<&str> = mixed
            .iter()
            .map(|event| event["data"]["account_id"].as_str().unwrap())
            .filter(|account_id| !upserted.contains(account_id))
            .collect();
        let actual = share(unknown.len(), mixed.len());
        assert!((0.005..0.02).contains(&actual), "{actual:.4}");
        assert!(unknown
            .iter()
            .all(|account_id| account_id.starts_with("acct-9")));
    }

    #[test]
    fn ticket_follow_ups_refer_to_earlier_tickets_of_the_same_account() {
        let events = parsed(&options(50, 20_000, 9));
        let mut opened: HashMap<&str, &str> = HashMap::new();
        let mut solved: HashSet<&str> = HashSet::new();
        let mut follow_ups = 0;
        for event in &events {
            let data = &event["data"];
            let event_type = event["type"].as_str().unwrap();
            if !event_type.starts_with("ticket.") {
                continue;
            }
            let ticket_id = data["ticket_id"].as_str().unwrap();
            let account_id = data["account_id"].as_str().unwrap();
            if event_type == "ticket.opened" {
                assert!(
                    opened.insert(ticket_id, account_id).is_none(),
                    "ticket {ticket_id} opened twice"
                );
                continue;
            }
            follow_ups += 1;
            assert_eq!(opened.get(ticket_id), Some(&account_id), "{event}");
            match event_type {
                "ticket.solved" => {
                    assert!(solved.insert(ticket_id), "solved while solved: {event}")
                }
                "ticket.reopened" => {
                    assert!(solved.remove(ticket_id), "reopened while open: {event}")
                }
                _ => assert!(!solved.contains(ticket_id), "updated while solved: {event}"),
            }
        }
        assert!(follow_ups > 3000);
    }

    /// The topic tag a ticket subject was written for.
    fn topic_of_subject(subject: &str) -> Option<&'static str> {
        TOPICS
            .iter()
            .find(|topic| topic.subjects.contains(&subject))
            .map(|topic| topic.tag)
    }

    #[test]
    fn the_default_run_gives_every_account_detector_something_to_find() {
        let events = parsed(&GenOptions::default());
        let surveys = of_type(&events, "survey.responded");
        let score_of = |kind: &str, accept: &dyn Fn(u64) -> bool| {
            surveys
                .iter()
                .filter(|event| {
                    event["data"]["kind"] == kind
                        && accept(event["data"]["score"].as_u64().unwrap())
                })
                .count()
        };
        assert!(score_of("nps", &|score| score <= 6) >= 5, "detractors");
        assert!(score_of("csat", &|score| score <= 2) >= 2, "low CSAT");
        assert!(score_of("ces", &|score| score >= 5) >= 2, "high effort");

        let opened = of_type(&events, "ticket.opened");
        assert!(opened
            .iter()
            .any(|event| event["data"]["priority"] == "urgent"));
        assert!(!of_type(&events, "ticket.reopened").is_empty());

        // Repeat tickets: one account opens at least three tickets on one topic within two weeks.
        let mut times: HashMap<(&str, &str), Vec<Millis>> = HashMap::new();
        for event in &opened {
            if let Some(tag) = topic_of_subject(event["data"]["subject"].as_str().unwrap()) {
                let account_id = event["data"]["account_id"].as_str().unwrap();
                times
                    .entry((account_id, tag))
                    .or_default()
                    .push(millis(event));
            }
        }
        let repeats = times
            .values()
            .filter(|times| {
                times
                    .windows(3)
                    .any(|three| three[2] - three[0] <= 14 * MILLIS_PER_DAY)
            })
            .count();
        assert!(repeats >= 1, "no account repeats a topic");

        let churn_intent = events.iter().any(|event| {
            let data = &event["data"];
            let text = [data["body"].as_str(), data["comment"].as_str()];
            text.iter()
                .flatten()
                .any(|text| text::CHURN_INTENT.iter().any(|churn| text.contains(churn)))
        });
        assert!(churn_intent, "no churn-intent sentence");
    }

    #[test]
    fn accounts_have_the_intended_tiers_stages_and_a_few_have_no_csm() {
        let events = parsed(&options(2000, 0, 6));
        assert_eq!(events.len(), 2000);
        let data: Vec<&Value> = events.iter().map(|event| &event["data"]).collect();
        let tier_share = |tier: &str| {
            share(
                data.iter()
                    .filter(|account| account["tier"] == tier)
                    .count(),
                data.len(),
            )
        };
        assert!((0.07..0.13).contains(&tier_share("enterprise")));
        assert!((0.26..0.34).contains(&tier_share("mid-market")));
        assert!((0.55..0.65).contains(&tier_share("smb")));
        let without_csm = share(
            data.iter()
                .filter(|account| account.get("csm").is_none())
                .count(),
            data.len(),
        );
        assert!((0.02..0.08).contains(&without_csm), "{without_csm}");
        let names: HashSet<&str> = data
            .iter()
            .map(|account| account["name"].as_str().unwrap())
            .collect();
        assert!(names.len() > 1000, "names are varied: {}", names.len());
        let csms: HashSet<&str> = data
            .iter()
            .filter_map(|account| account["csm"].as_str())
            .collect();
        assert_eq!(csms.len(), 12, "{csms:?}");
        for account in &data {
            let pool = match account["tier"].as_str().unwrap() {
                "enterprise" => text::ENTERPRISE_CSMS,
                "mid-market" => text::MID_MARKET_CSMS,
                _ => text::SMB_CSMS,
            };
            if let Some(csm) = account["csm"].as_str() {
                assert!(pool.contains(&csm), "{account}");
            }
            assert!(["amer", "emea", "apac"].contains(&account["region"].as_str().unwrap()));
            assert!(["onboarding", "adoption", "renewal", "expansion"]
                .contains(&account["lifecycle_stage"].as_str().unwrap()));
            assert!(account["arr"].as_u64().unwrap() > 0);
        }
    }

    #[test]
    fn write_ndjson_writes_the_same_events_one_per_line_and_counts_the_bytes() {
        let generated = options(20, 500, 12);
        let mut out = Vec::new();
        let bytes = write_ndjson(&generated, &mut out).unwrap();
        assert_eq!(bytes, out.len() as u64);
        let expected: String = generate(&generated).map(|line| line + "\n").collect();
        assert_eq!(String::from_utf8(out).unwrap(), expected);
    }

    #[test]
    fn the_generator_is_lazy_and_knows_how_many_events_remain() {
        // Asking for more events than fit in memory works, because nothing is produced ahead.
        let mut endless = generate(&options(3, usize::MAX, 1));
        assert_eq!(endless.size_hint(), (usize::MAX, Some(usize::MAX)));
        assert_eq!(endless.by_ref().take(10).count(), 10);

        let mut small = generate(&options(2, 3, 1));
        assert_eq!(small.size_hint(), (5, Some(5)));
        small.next();
        assert_eq!(small.size_hint(), (4, Some(4)));
    }

    #[test]
    fn without_accounts_every_event_names_an_unknown_account() {
        let events = parsed(&options(0, 300, 1));
        assert_eq!(events.len(), 300);
        assert!(events.iter().all(|event| event["data"]["account_id"]
            .as_str()
            .unwrap()
            .starts_with("acct-9")));
    }

    fn default_tagger() -> Tagger {
        let taxonomy: TaxonomyConfig =
            toml::from_str(DEFAULT_TAXONOMY).expect("the default taxonomy parses");
        Tagger::compile(&taxonomy).expect("the default taxonomy compiles")
    }

    fn ticket(subject: &str, body: &str, product_area: Option<&str>) -> EventData {
        EventData::TicketOpened(TicketOpened {
            ticket_id: "tkt-000001".to_owned(),
            account_id: AccountId::parse("acct-00001").unwrap(),
            subject: Some(subject.to_owned()),
            body: Some(body.to_owned()),
            priority: None,
            channel: None,
            requester: None,
            product_area: product_area.map(str::to_owned),
            journey_stage: None,
        })
    }

    fn comment(text: &str) -> EventData {
        EventData::SurveyResponded(SurveyResponded {
            response_id: "resp-1".to_owned(),
            account_id: AccountId::parse("acct-00001").unwrap(),
            kind: SurveyKind::Nps,
            score: 5,
            comment: Some(text.to_owned()),
            journey_stage: Some("support".to_owned()),
            touchpoint: Some("email".to_owned()),
            user_id: None,
        })
    }

    fn resolution(text: &str) -> EventData {
        EventData::TicketSolved(TicketSolved {
            ticket_id: "tkt-000001".to_owned(),
            account_id: AccountId::parse("acct-00001").unwrap(),
            resolution: Some(text.to_owned()),
        })
    }

    #[test]
    fn every_template_is_tagged_with_its_topic_by_the_default_taxonomy() {
        let tagger = default_tagger();
        let mut wrong = Vec::new();
        let mut check = |expected: &str, data: EventData, what: &str| {
            let primary = tagger.tag(&data).primary;
            if primary != expected {
                wrong.push(format!("{what}: {primary}, not {expected}"));
            }
        };
        for topic in TOPICS {
            assert!(
                tagger.contains(topic.tag),
                "{} is not in the taxonomy",
                topic.tag
            );
            for subject in topic.subjects {
                for problem in topic.problems {
                    let with_area = ticket(subject, problem, Some(topic.product_area));
                    check(topic.tag, with_area, &format!("{subject} / {problem}"));
                    check(
                        topic.tag,
                        ticket(subject, problem, None),
                        &format!("{subject} / {problem} (no area)"),
                    );
                }
            }
            for text in topic.comments {
                check(topic.tag, comment(text), text);
            }
            for text in topic.resolutions {
                check(topic.tag, resolution(text), text);
            }
        }
        assert!(
            wrong.is_empty(),
            "{} templates are tagged elsewhere:\n{}",
            wrong.len(),
            wrong.join("\n")
        );
    }

    #[test]
    fn the_sentences_that_name_no_topic_are_tagged_as_intended() {
        let tagger = default_tagger();
        let expectations: [(&[&str], &str); 15] = [
            (text::GREETINGS, UNCATEGORIZED),
            (text::CONTEXT, UNCATEGORIZED),
            (text::CLOSERS, UNCATEGORIZED),
            (text::SMALL_TALK_SUBJECTS, UNCATEGORIZED),
            (text::SMALL_TALK, UNCATEGORIZED),
            (text::PRAISE, UNCATEGORIZED),
            (text::FOLLOW_UPS, UNCATEGORIZED),
            (text::GENERIC_RESOLUTIONS, UNCATEGORIZED),
            (text::URGENCY, "support.urgent-ticket"),
            (text::REPEATS, "support.repeat-tickets"),
            (text::DETRACTOR_COMMENTS, "sentiment.detractor"),
            (text::LOW_CSAT_COMMENTS, "sentiment.low-csat"),
            (text::HIGH_EFFORT_COMMENTS, "sentiment.high-effort"),
            (&text::SUPPORT_COMPLAINTS[..2], "support.slow-response"),
            (&text::SUPPORT_COMPLAINTS[2..], "support.unhelpful"),
        ];
        let mut wrong = Vec::new();
        for (sentences, expected) in expectations {
            for sentence in sentences {
                let primary = tagger.tag(&comment(sentence)).primary;
                if primary != expected {
                    wrong.push(format!("{sentence}: {primary}, not {expected}"));
                }
            }
        }
        for sentence in text::AREA_PRAISE {
            let primary = tagger.tag(&comment(sentence)).primary;
            if primary.contains('.') || primary == UNCATEGORIZED {
                wrong.push(format!("{sentence}: {primary}, not a top-level area"));
            }
        }
        for sentence in text::CHURN_INTENT {
            let primary = tagger.tag(&comment(sentence)).primary;
            if !primary.starts_with("churn.") {
                wrong.push(format!("{sentence}: {primary}, not a churn tag"));
            }
        }
        assert!(wrong.is_empty(), "\n{}", wrong.join("\n"));
    }

    #[test]
    fn churn_intent_outranks_the_topic_it_is_added_to() {
        let tagger = default_tagger();
        for topic in TOPICS {
            for churn in text::CHURN_INTENT {
                let body = format!("{} {churn}", topic.problems[0]);
                let primary = tagger
                    .tag(&ticket(topic.subjects[0], &body, Some(topic.product_area)))
                    .primary;
                assert!(primary.starts_with("churn."), "{body}: {primary}");
            }
        }
    }

    #[test]
    fn the_topics_cover_every_area_of_the_default_taxonomy() {
        let taxonomy: TaxonomyConfig = toml::from_str(DEFAULT_TAXONOMY).unwrap();
        let covered: HashSet<&str> = TOPICS
            .iter()
            .map(|topic| topic.tag.split('.').next().unwrap())
            // Sentiment is reached through survey scores and the feeling-only comments.
            .chain(["sentiment"])
            .collect();
        for tag in &taxonomy.tags {
            let area = tag.id.split('.').next().unwrap();
            assert!(covered.contains(area), "no topic for {}", tag.id);
        }
    }

    #[test]
    fn about_a_tenth_of_the_generated_texts_match_no_rule() {
        let tagger = default_tagger();
        let mut texts = 0;
        let mut uncategorized = 0;
        for event in parsed(&options(100, 10_000, 13)) {
            let data = &event["data"];
            let tagged = match event["type"].as_str().unwrap() {
                "ticket.opened" => ticket(
                    data["subject"].as_str().unwrap(),
                    data["body"].as_str().unwrap(),
                    data["product_area"].as_str(),
                ),
                "survey.responded" => match data["comment"].as_str() {
                    Some(text) => comment(text),
                    None => continue,
                },
                _ => continue,
            };
            texts += 1;
            if tagger.tag(&tagged).primary == UNCATEGORIZED {
                uncategorized += 1;
            }
        }
        let actual = share(uncategorized, texts);
        assert!((0.05..0.25).contains(&actual), "{actual:.3} of {texts}");
    }
}
