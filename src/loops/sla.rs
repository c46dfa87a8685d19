//! SLA policies as the core applies them: deadlines counted in business time where the policy has
//! business hours, and what a breach does.
//!
//! Pure: a deadline is a function of the start, the allowance and the policy, so a replay computes the
//! same deadlines.

use chrono::{Datelike, NaiveDate, NaiveTime, TimeZone, Weekday};
// chrono-tz: the IANA time zone database for chrono, so business hours follow local time and its
// daylight-saving changes.
use chrono_tz::Tz;

use crate::config::routes::{OnBreach, SlaPolicyConfig};
use crate::domain::{Millis, SurveyKind};

/// Days scanned for business time before a deadline is declared unreachable (it cannot be: validation
/// requires at least one business day and a non-empty daily span; this bounds the loop regardless).
const MAX_DAYS_SCANNED: u32 = 3_700;

/// A compiled SLA policy.
#[derive(Debug, Clone, PartialEq)]
pub struct SlaPolicy {
    pub name: String,
    pub ack_within: Millis,
    pub resolve_within: Millis,
    /// How long a resolved loop waits in `verifying`; `None`: the configured default.
    pub verify_for: Option<Millis>,
    pub business_hours: Option<BusinessHours>,
    pub on_breach: OnBreach,
    pub escalation_queue: Option<String>,
    /// A survey (kind, minimum score) the account must answer before the loop is verified.
    pub verify_survey: Option<(SurveyKind, u8)>,
    /// The configured text, for traces.
    pub config: SlaPolicyConfig,
}

/// Working hours in a time zone: the SLA clock runs only inside them.
#[derive(Debug, Clone, PartialEq)]
pub struct BusinessHours {
    /// Monday first.
    pub days: [bool; 7],
    pub start: NaiveTime,
    pub end: NaiveTime,
    pub time_zone: Tz,
}

impl SlaPolicy {
    /// Compiles a validated policy; `Err` names what is wrong.
    pub fn compile(name: &str, config: &SlaPolicyConfig) -> Result<SlaPolicy, String> {
        let duration = |field: &str, text: &str| {
            humantime::parse_duration(text)
                .map(|duration| duration.as_millis() as Millis)
                .map_err(|error| format!("routes: sla `{name}` {field} is not a duration: {error}"))
        };
        let verify_survey = match (config.verify_survey, config.verify_min_score) {
            (None, None) => None,
            (Some(SurveyKind::Ces), _) => {
                return Err(format!(
                "routes: sla `{name}` verify_survey must be nps or csat (a high CES is bad news)"
            ))
            }
            (Some(kind), Some(score)) => {
                let (low, high) = kind.score_range();
                if !(low..=high).contains(&score) {
                    return Err(format!(
                        "routes: sla `{name}` verify_min_score {score} is outside {low}..={high} for {}",
                        kind.as_str()
                    ));
                }
                Some((kind, score))
            }
            _ => {
                return Err(format!(
                    "routes: sla `{name}` needs verify_survey and verify_min_score together"
                ))
            }
        };
        let business_hours = match &config.business_hours {
            None => None,
            Some(hours) => Some(BusinessHours::compile(name, hours)?),
        };
        Ok(SlaPolicy {
            name: name.to_owned(),
            ack_within: duration("ack_within", &config.ack_within)?,
            resolve_within: duration("resolve_within", &config.resolve_within)?,
            verify_for: config
                .verify_for
                .as_deref()
                .map(|text| duration("verify_for", text))
                .transpose()?,
            business_hours,
            on_breach: config.on_breach,
            escalation_queue: config.escalation_queue.clone(),
            verify_survey,
            config: config.clone(),
        })
    }

    /// The deadline `within` after `start`: plain time, or business time when the policy has hours.
    pub fn deadline(&self, start: Millis, within: Millis) -> Millis {
        match &self.business_hours {
            None => start + within,
            Some(hours) => hours.add(start, within),
        }
    }
}

impl BusinessHours {
    fn compile(
        policy: &str,
        config: &crate::config::routes::BusinessHoursConfig,
    ) -> Result<BusinessHours, String> {
        let problem = |what: String| format!("routes: sla `{policy}` business_hours: {what}");
        let time = |text: &str| {
            NaiveTime::parse_from_str(text, "%H:%M")
                .map_err(|_| problem(format!("`{text}` is not a time of day (HH:MM)")))
        };
        let mut days = [false; 7];
        for day in &config.days {
            let weekday: Weekday = day
                .parse()
                .map_err(|_| problem(format!("`{day}` is not a day of the week")))?;
            days[weekday.num_days_from_monday() as usize] = true;
        }
        if !days.contains(&true) {
            return Err(problem("days names no day".to_owned()));
        }
        let (start, end) = (time(&config.start)?, time(&config.end)?);
        if start >= end {
            return Err(problem(format!(
                "start {} is not before end {}",
                config.start, config.end
            )));
        }
        let time_zone: Tz = config
            .time_zone
            .parse()
            .map_err(|_| problem(format!("`{}` is not a time zone", config.time_zone)))?;
        Ok(BusinessHours {
            days,
            start,
            end,
            time_zone,
        })
    }

    /// `start` plus `within` of business time: the clock runs only inside each business day's span.
    pub fn add(&self, start: Millis, within: Millis) -> Millis {
        let Some(begin) = self.time_zone.timestamp_millis_opt(start).single() else {
            return start + within;
        };
        let mut remaining = within;
        let mut cursor = start;
        let mut date = begin.date_naive();
        for _ in 0..MAX_DAYS_SCANNED {
            if self.days[date.weekday().num_days_from_monday() as usize] {
                if let (Some(open), Some(close)) =
                    (self.instant(date, self.start), self.instant(date, self.end))
                {
                    let from = cursor.max(open);
                    if from < close {
                        let available = close - from;
                        if remaining <= available {
                            return from + remaining;
                        }
                        remaining -= available;
                        cursor = close;
                    }
                }
            }
            date = match date.succ_opt() {
                Some(next) => next,
                None => break,
            };
        }
        start + within
    }

    /// The UTC instant of a local date and time; a time skipped by a daylight-saving jump counts from
    /// the first instant after the jump.
    fn instant(&self, date: NaiveDate, time: NaiveTime) -> Option<Millis> {
        let local = date.and_time(time);
        let resolved = self
            .time_zone
            .from_local_datetime(&local)
            .earliest()
            .or_else(|| {
                self.time_zone
                    .from_local_datetime(&(local + chrono::Duration::hours(1)))
                    .earliest()
            })?;
        Some(resolved.timestamp_millis())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::routes::BusinessHoursConfig;

    const HOUR: Millis = 3_600_000;

    fn millis(text: &str) -> Millis {
        chrono::DateTime::parse_from_rfc3339(text)
            .unwrap()
            .timestamp_millis()
    }

    fn policy(hours: Option<BusinessHoursConfig>) -> SlaPolicy {
        SlaPolicy::compile(
            "test",
            &SlaPolicyConfig {
                ack_within: "8h".to_owned(),
                resolve_within: "2days".to_owned(),
                verify_for: None,
                business_hours: hours,
                on_breach: OnBreach::RaisePriority,
                escalation_queue: None,
                verify_survey: None,
                verify_min_score: None,
            },
        )
        .unwrap()
    }

    fn weekdays(time_zone: &str) -> BusinessHoursConfig {
        BusinessHoursConfig {
            days: ["mon", "tue", "wed", "thu", "fri"]
                .map(str::to_owned)
                .to_vec(),
            start: "09:00".to_owned(),
            end: "17:00".to_owned(),
            time_zone: time_zone.to_owned(),
        }
    }

    #[test]
    fn without_business_hours_a_deadline_is_plain_time() {
        let start = millis("2026-03-06T16:00:00Z");
        assert_eq!(policy(None).deadline(start, 8 * HOUR), start + 8 * HOUR);
    }

    #[test]
    fn business_hours_skip_the_night_and_the_weekend() {
        let policy = policy(Some(weekdays("UTC")));
        // Friday 16:00: one business hour left on Friday, seven more from Monday 09:00.
        let friday = millis("2026-03-06T16:00:00Z");
        assert_eq!(
            policy.deadline(friday, 8 * HOUR),
            millis("2026-03-09T16:00:00Z")
        );
        // Saturday counts from Monday's opening.
        let saturday = millis("2026-03-07T11:00:00Z");
        assert_eq!(
            policy.deadline(saturday, 2 * HOUR),
            millis("2026-03-09T11:00:00Z")
        );
        // Inside one business day.
        let tuesday = millis("2026-03-03T10:00:00Z");
        assert_eq!(
            policy.deadline(tuesday, 3 * HOUR),
            millis("2026-03-03T13:00:00Z")
        );
        // Exactly at closing time, the deadline is that instant.
        assert_eq!(
            policy.deadline(tuesday, 7 * HOUR),
            millis("2026-03-03T17:00:00Z")
        );
    }

    #[test]
    fn business_hours_are_local_to_their_time_zone() {
        let policy = policy(Some(weekdays("America/New_York")));
        // 2026-03-06 is a Friday; New York is UTC-5 then: business hours 14:00-22:00 UTC.
        let start = millis("2026-03-06T21:00:00Z");
        // One hour left on Friday; Monday 2026-03-09 is after the DST change (UTC-4): opens 13:00 UTC.
        assert_eq!(
            policy.deadline(start, 2 * HOUR),
            millis("2026-03-09T14:00:00Z")
        );
    }

    #[test]
    fn bad_business_hours_are_refused_with_the_reason() {
        let mut hours = weekdays("Mars/Olympus");
        let error = SlaPolicy::compile(
            "x",
            &SlaPolicyConfig {
                business_hours: Some(hours.clone()),
                ..policy(None).config
            },
        )
        .unwrap_err();
        assert!(error.contains("not a time zone"), "{error}");
        hours.time_zone = "UTC".to_owned();
        hours.end = "08:00".to_owned();
        let error = SlaPolicy::compile(
            "x",
            &SlaPolicyConfig {
                business_hours: Some(hours),
                ..policy(None).config
            },
        )
        .unwrap_err();
        assert!(error.contains("is not before end"), "{error}");
    }
}
