//! Account detectors: pure functions from a tagged event (and committed detector state) to signals.
//!
//! Detection never mutates state itself: it returns the state update beside the signals, and the
//! caller applies it. That keeps `explain` (a dry run over the same state) and the processor on one
//! code path.

pub mod time;

use std::collections::HashMap;

use serde::Serialize;

use crate::config::routes::SignalKind;
use crate::config::signals::{AccountDetectorConfig, AccountDetectorKind, Severity, SignalsConfig};
use crate::config::taxonomy::UNCATEGORIZED;
use crate::domain::{AccountId, Event, EventData, Millis, SurveyKind, MILLIS_PER_DAY};
use crate::tag::Tagging;

/// Something a human should act on, derived from one event by one detector.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Signal {
    pub kind: SignalKind,
    pub detector: String,
    pub detector_kind: &'static str,
    pub severity: Severity,
    /// The account of an account signal; journey signals concern many.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub account_id: Option<AccountId>,
    /// The journey stage of a journey signal.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stage: Option<String>,
    /// The event's primary tag (`uncategorized` when nothing matched).
    pub primary_tag: String,
    /// The tag of the loop key: the primary tag, else the detector's own tag.
    pub key_tag: String,
    /// Event time.
    #[serde(serialize_with = "crate::domain::serialize_millis")]
    pub time: Millis,
    /// Why the detector fired, as a sentence with the figures.
    pub reason: String,
    /// The figures that crossed a journey detector's threshold.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub journey: Option<Box<crate::journey::JourneyFigures>>,
}

impl Signal {
    /// `account:{account_id}:{tag}` or `journey:{stage}:{tag}`.
    pub fn loop_key(&self) -> String {
        match self.kind {
            SignalKind::Account => format!(
                "account:{}:{}",
                self.account_id.as_ref().map_or("", AccountId::as_str),
                self.key_tag
            ),
            SignalKind::Journey => format!(
                "journey:{}:{}",
                self.stage.as_deref().unwrap_or(crate::journey::UNKNOWN),
                self.key_tag
            ),
        }
    }
}

/// The key of a repeat-ticket window: one account and one (primary) tag.
pub type RepeatKey = (AccountId, String);

/// Detector state that lives in the committed state, so replays see the same windows.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DetectorState {
    /// Event times of recent tickets per account and tag, ascending: the repeat-ticket windows.
    pub repeat_tickets: HashMap<RepeatKey, Vec<Millis>>,
}

/// The change one event makes to the detector state.
#[derive(Debug, Clone, PartialEq)]
pub struct RepeatUpdate {
    pub key: RepeatKey,
    pub times: Vec<Millis>,
}

impl DetectorState {
    pub fn apply(&mut self, update: RepeatUpdate) {
        if update.times.is_empty() {
            self.repeat_tickets.remove(&update.key);
        } else {
            self.repeat_tickets.insert(update.key, update.times);
        }
    }
}

#[derive(Debug, Default, PartialEq)]
pub struct Detection {
    pub signals: Vec<Signal>,
    pub repeat_update: Option<RepeatUpdate>,
}

/// The configured account detectors, in evaluation order.
#[derive(Debug, Clone)]
pub struct Detectors {
    detectors: Vec<AccountDetectorConfig>,
    /// The longest repeat-ticket window: older ticket times can never count again and are dropped.
    longest_repeat_window: Millis,
}

impl Detectors {
    pub fn new(config: &SignalsConfig) -> Detectors {
        let longest_repeat_window = config
            .account_detectors
            .iter()
            .filter(|detector| detector.kind == AccountDetectorKind::RepeatTickets)
            .filter_map(|detector| detector.window_days)
            .map(|days| Millis::from(days) * MILLIS_PER_DAY)
            .max()
            .unwrap_or(0);
        Detectors {
            detectors: config.account_detectors.clone(),
            longest_repeat_window,
        }
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.detectors.iter().map(|detector| detector.name.as_str())
    }

    pub fn detect(&self, event: &Event, tagging: &Tagging, state: &DetectorState) -> Detection {
        let mut detection = Detection::default();
        if matches!(event.data, EventData::AccountUpserted(_)) {
            return detection;
        }
        let repeat_window = self.repeat_window(event, tagging, state);
        for detector in &self.detectors {
            let reason = match detector.kind {
                AccountDetectorKind::Detractor => {
                    survey_at_most(event, SurveyKind::Nps, detector.max_score)
                }
                AccountDetectorKind::LowCsat => {
                    survey_at_most(event, SurveyKind::Csat, detector.max_score)
                }
                AccountDetectorKind::HighEffort => match (&event.data, detector.min_score) {
                    (EventData::SurveyResponded(survey), Some(min_score))
                        if survey.kind == SurveyKind::Ces && survey.score >= min_score =>
                    {
                        Some(format!(
                            "CES score {} is at least {min_score}",
                            survey.score
                        ))
                    }
                    _ => None,
                },
                AccountDetectorKind::UrgentTicket => {
                    let priority = match &event.data {
                        EventData::TicketOpened(ticket) => ticket.priority,
                        EventData::TicketUpdated(ticket) => ticket.priority,
                        _ => None,
                    };
                    priority
                        .filter(|priority| detector.priorities.contains(priority))
                        .map(|priority| format!("ticket priority is {}", priority.as_str()))
                }
                AccountDetectorKind::ChurnIntent => detector
                    .tag_prefixes
                    .iter()
                    .find(|prefix| tag_has_prefix(&tagging.primary, prefix))
                    .map(|prefix| {
                        format!(
                            "primary tag {} is a churn-intent tag ({prefix})",
                            tagging.primary
                        )
                    }),
                AccountDetectorKind::TicketReopened => match &event.data {
                    EventData::TicketReopened(ticket) => {
                        Some(format!("ticket {} was reopened", ticket.ticket_id))
                    }
                    _ => None,
                },
                AccountDetectorKind::RepeatTickets => {
                    match (&repeat_window, detector.min_tickets, detector.window_days) {
                        (Some(update), Some(min_tickets), Some(window_days)) => {
                            let since = event.time - Millis::from(window_days) * MILLIS_PER_DAY;
                            let count = update
                                .times
                                .iter()
                                .filter(|time| **time >= since && **time <= event.time)
                                .count();
                            (count >= min_tickets as usize).then(|| {
                            format!(
                                "{count} tickets on {} within {window_days} days (threshold {min_tickets})",
                                tagging.primary
                            )
                        })
                        }
                        _ => None,
                    }
                }
                // Detectors that need time act from the core's timers (`time`), not on an event.
                AccountDetectorKind::MilestoneMissing
                | AccountDetectorKind::Inactive
                | AccountDetectorKind::UsageDrop
                | AccountDetectorKind::ErrorSpike => None,
            };
            if let Some(reason) = reason {
                detection
                    .signals
                    .push(self.signal(detector, event, tagging, reason));
            }
        }
        detection.repeat_update = repeat_window;
        detection
    }

    /// The repeat-ticket window after this event: only ticket.opened events with a real tag count.
    fn repeat_window(
        &self,
        event: &Event,
        tagging: &Tagging,
        state: &DetectorState,
    ) -> Option<RepeatUpdate> {
        if self.longest_repeat_window == 0
            || !matches!(event.data, EventData::TicketOpened(_))
            || tagging.primary == UNCATEGORIZED
        {
            return None;
        }
        let key = (event.account_id().clone(), tagging.primary.clone());
        let mut times = state.repeat_tickets.get(&key).cloned().unwrap_or_default();
        let position = times.partition_point(|time| *time <= event.time);
        times.insert(position, event.time);
        let newest = *times.last().expect("just inserted");
        times.retain(|time| *time >= newest - self.longest_repeat_window);
        Some(RepeatUpdate { key, times })
    }

    fn signal(
        &self,
        detector: &AccountDetectorConfig,
        event: &Event,
        tagging: &Tagging,
        reason: String,
    ) -> Signal {
        let key_tag = if tagging.primary == UNCATEGORIZED {
            detector.tag.clone()
        } else {
            tagging.primary.clone()
        };
        Signal {
            kind: SignalKind::Account,
            detector: detector.name.clone(),
            detector_kind: detector.kind.as_str(),
            severity: detector.severity,
            account_id: Some(event.account_id().clone()),
            stage: None,
            primary_tag: tagging.primary.clone(),
            key_tag,
            time: event.time,
            reason,
            journey: None,
        }
    }
}

fn survey_at_most(event: &Event, kind: SurveyKind, max_score: Option<u8>) -> Option<String> {
    match (&event.data, max_score) {
        (EventData::SurveyResponded(survey), Some(max_score))
            if survey.kind == kind && survey.score <= max_score =>
        {
            Some(format!(
                "{} score {} is at most {max_score}",
                kind.as_str().to_uppercase(),
                survey.score
            ))
        }
        _ => None,
    }
}

/// `billing` is a prefix of `billing` and `billing.invoice-error`, not of `billingual`.
pub fn tag_has_prefix(tag: &str, prefix: &str) -> bool {
    tag == prefix
        || (tag.len() > prefix.len()
            && tag.starts_with(prefix)
            && tag.as_bytes()[prefix.len()] == b'.')
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::domain::{SurveyResponded, TicketOpened, TicketPriority};
    use crate::tag::TagMatch;

    fn detectors() -> Detectors {
        Detectors::new(&Config::embedded().signals)
    }

    fn tagging(primary: &str) -> Tagging {
        Tagging {
            primary: primary.to_owned(),
            matches: if primary == UNCATEGORIZED {
                Vec::new()
            } else {
                vec![TagMatch {
                    tag: primary.to_owned(),
                    score: 1,
                    evidence: Vec::new(),
                }]
            },
        }
    }

    fn survey(kind: SurveyKind, score: u8) -> Event {
        Event {
            source: "test".to_owned(),
            id: format!("survey-{score}"),
            time: 1_000,
            data: EventData::SurveyResponded(SurveyResponded {
                response_id: "r1".to_owned(),
                account_id: AccountId::parse("acct-1").unwrap(),
                kind,
                score,
                comment: None,
                journey_stage: None,
                touchpoint: None,
                user_id: None,
            }),
        }
    }

    fn ticket(id: &str, time: Millis, priority: Option<TicketPriority>) -> Event {
        Event {
            source: "test".to_owned(),
            id: id.to_owned(),
            time,
            data: EventData::TicketOpened(TicketOpened {
                ticket_id: id.to_owned(),
                account_id: AccountId::parse("acct-1").unwrap(),
                subject: None,
                body: None,
                priority,
                channel: None,
                requester: None,
                product_area: None,
                journey_stage: None,
            }),
        }
    }

    #[test]
    fn an_nps_of_six_is_a_detractor_and_seven_is_not() {
        let detectors = detectors();
        let state = DetectorState::default();
        let six = detectors.detect(&survey(SurveyKind::Nps, 6), &tagging(UNCATEGORIZED), &state);
        assert_eq!(six.signals.len(), 1);
        assert_eq!(six.signals[0].detector, "detractor");
        assert_eq!(six.signals[0].key_tag, "sentiment.detractor");
        assert_eq!(
            six.signals[0].loop_key(),
            "account:acct-1:sentiment.detractor"
        );
        let seven = detectors.detect(&survey(SurveyKind::Nps, 7), &tagging(UNCATEGORIZED), &state);
        assert!(seven.signals.is_empty());
    }

    #[test]
    fn a_tagged_detractor_uses_the_primary_tag_for_its_key() {
        let detection = detectors().detect(
            &survey(SurveyKind::Nps, 2),
            &tagging("billing.invoice-error"),
            &DetectorState::default(),
        );
        assert_eq!(detection.signals[0].key_tag, "billing.invoice-error");
    }

    #[test]
    fn low_csat_and_high_effort_use_their_thresholds() {
        let detectors = detectors();
        let state = DetectorState::default();
        let none = tagging(UNCATEGORIZED);
        assert_eq!(
            detectors
                .detect(&survey(SurveyKind::Csat, 2), &none, &state)
                .signals[0]
                .detector,
            "low-csat"
        );
        assert!(detectors
            .detect(&survey(SurveyKind::Csat, 3), &none, &state)
            .signals
            .is_empty());
        assert_eq!(
            detectors
                .detect(&survey(SurveyKind::Ces, 5), &none, &state)
                .signals[0]
                .detector,
            "high-effort"
        );
        assert!(detectors
            .detect(&survey(SurveyKind::Ces, 4), &none, &state)
            .signals
            .is_empty());
    }

    #[test]
    fn urgent_and_high_tickets_signal_but_normal_ones_do_not() {
        let detectors = detectors();
        let state = DetectorState::default();
        let none = tagging(UNCATEGORIZED);
        let urgent = detectors.detect(
            &ticket("t1", 0, Some(TicketPriority::Urgent)),
            &none,
            &state,
        );
        assert_eq!(urgent.signals[0].detector, "urgent-ticket");
        let normal = detectors.detect(
            &ticket("t2", 0, Some(TicketPriority::Normal)),
            &none,
            &state,
        );
        assert!(normal.signals.is_empty());
    }

    #[test]
    fn churn_tags_signal_churn_intent() {
        let detection = detectors().detect(
            &ticket("t1", 0, None),
            &tagging("churn.cancellation"),
            &DetectorState::default(),
        );
        assert_eq!(detection.signals[0].detector, "churn-intent");
        assert_eq!(detection.signals[0].key_tag, "churn.cancellation");
    }

    #[test]
    fn the_third_ticket_on_one_tag_within_the_window_is_a_repeat() {
        let detectors = detectors();
        let mut state = DetectorState::default();
        let tag = tagging("billing.invoice-error");
        let mut fired = Vec::new();
        for (index, day) in [0, 20, 25, 30].into_iter().enumerate() {
            let event = ticket(&format!("t{index}"), day * MILLIS_PER_DAY, None);
            let detection = detectors.detect(&event, &tag, &state);
            fired.push(
                detection
                    .signals
                    .iter()
                    .any(|signal| signal.detector == "repeat-tickets"),
            );
            state.apply(detection.repeat_update.unwrap());
        }
        // Day 0 falls out of the 14-day window: days 20, 25 and 30 make three.
        assert_eq!(fired, vec![false, false, false, true]);
        let times = &state.repeat_tickets[&(
            AccountId::parse("acct-1").unwrap(),
            "billing.invoice-error".to_owned(),
        )];
        assert_eq!(
            times,
            &vec![
                20 * MILLIS_PER_DAY,
                25 * MILLIS_PER_DAY,
                30 * MILLIS_PER_DAY
            ]
        );
    }

    #[test]
    fn tag_prefixes_stop_at_dots() {
        assert!(tag_has_prefix("billing", "billing"));
        assert!(tag_has_prefix("billing.invoice-error", "billing"));
        assert!(!tag_has_prefix("billingual", "billing"));
        assert!(!tag_has_prefix("bill", "billing"));
    }
}
