//! Loop KPIs per queue and per team: time to acknowledge and to close, SLA attainment, closed-loop and
//! reopen rates, over the loops opened in a period.
//!
//! Pure arithmetic over [`LoopTiming`]s, which storage reads; `GET /v1/kpis` and the `sigloop_loop_*`
//! gauges of `/metrics` both answer from [`compute`]. A team's figures are computed over the union of
//! its queues' loops (percentiles of the pooled durations), never by averaging queue figures.

use std::collections::{BTreeMap, BTreeSet};

use crate::config::routes::RoutesConfig;
use crate::domain::Millis;
use crate::loops::CloseReason;

/// What the KPIs need of one loop, as storage reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoopTiming {
    pub queue: String,
    pub opened_at: Millis,
    pub acknowledged_at: Option<Millis>,
    /// Set while the loop is closed (a reopen clears it).
    pub closed_at: Option<Millis>,
    pub close_reason: Option<CloseReason>,
    pub breached: bool,
    /// The loop has an SLA policy.
    pub has_sla: bool,
    /// How many times the loop was reopened.
    pub recurrence: u32,
}

/// The median and 90th percentile of a list of durations, in seconds; `None` for an empty list.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct DurationQuantiles {
    pub median_seconds: Option<f64>,
    pub p90_seconds: Option<f64>,
}

/// The KPIs of one group of loops (a queue, or a team's queues together).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct LoopKpis {
    pub loops: u64,
    /// Loops with `acknowledged_at` set.
    pub acknowledged: u64,
    /// Loops closed now (a reopened loop is not closed).
    pub closed: u64,
    /// Closed loops whose close reason is `verified`.
    pub closed_verified: u64,
    pub breached: u64,
    /// Loops reopened at least once (`recurrence > 0`).
    pub reopened: u64,
    /// Loops with an SLA policy: the denominator of `sla_attainment`.
    pub with_sla: u64,
    /// `acknowledged_at - opened_at` over the acknowledged loops.
    pub time_to_acknowledge: DurationQuantiles,
    /// `closed_at - opened_at` over the closed loops.
    pub time_to_close: DurationQuantiles,
    /// Share of the loops with an SLA policy that are not breached; `None` without such loops.
    pub sla_attainment: Option<f64>,
    /// Share of the closed loops that closed as verified; `None` without closed loops.
    pub closed_loop_rate: Option<f64>,
    /// Share of the loops that were reopened; `None` without loops.
    pub reopen_rate: Option<f64>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct QueueKpis {
    pub queue: String,
    /// `None` for a queue that has loops but is no longer in the configuration.
    pub team: Option<String>,
    pub kpis: LoopKpis,
}

#[derive(Debug, Clone, PartialEq)]
pub struct TeamKpis {
    pub team: String,
    /// The team's queues, by name.
    pub queues: Vec<String>,
    pub kpis: LoopKpis,
}

/// Every configured queue and team (with or without loops), and every other queue that has loops;
/// each list sorted by name.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct KpiReport {
    pub queues: Vec<QueueKpis>,
    pub teams: Vec<TeamKpis>,
}

/// Which team watches which queue.
#[derive(Debug, Clone, Default)]
pub struct Ownership {
    /// Queue name to team name.
    pub queue_teams: BTreeMap<String, String>,
    /// Every team, including those that watch no queue.
    pub teams: BTreeSet<String>,
}

impl Ownership {
    /// The configured queues (`unowned` belongs to `unowned.team`) and teams.
    pub fn from_routes(routes: &RoutesConfig) -> Ownership {
        let queue_teams: BTreeMap<String, String> = routes
            .queue_names()
            .into_iter()
            .filter_map(|queue| {
                routes
                    .queue_team(queue)
                    .map(|team| (queue.to_owned(), team.to_owned()))
            })
            .collect();
        let teams = routes
            .teams
            .iter()
            .map(|team| team.name.clone())
            .chain(queue_teams.values().cloned())
            .collect();
        Ownership { queue_teams, teams }
    }
}

/// The nearest-rank percentile of an ascending list: the value at 1-based rank
/// `ceil(percent / 100 x n)` (at least 1), that is the smallest listed value with at least `percent`
/// percent of the values at or below it. It is always one of the values (no interpolation), so the
/// median of an even count is the lower of the two middle values. `None` for an empty list.
pub fn nearest_rank(sorted: &[Millis], percent: u32) -> Option<Millis> {
    debug_assert!((1..=100).contains(&percent), "a percentile is 1..=100");
    debug_assert!(sorted.is_sorted(), "nearest_rank takes a sorted list");
    if sorted.is_empty() {
        return None;
    }
    let rank = (percent as usize * sorted.len()).div_ceil(100).max(1);
    Some(sorted[rank - 1])
}

/// `numerator / denominator` to four decimals, halves rounded up (both are counts), computed in
/// integers; `None` when the denominator is zero.
pub fn ratio(numerator: u64, denominator: u64) -> Option<f64> {
    if denominator == 0 {
        return None;
    }
    let scaled = u128::from(numerator) * 10_000;
    let denominator = u128::from(denominator);
    let mut quotient = scaled / denominator;
    if 2 * (scaled % denominator) >= denominator {
        quotient += 1;
    }
    Some(quotient as f64 / 10_000.0)
}

fn quantiles(mut durations: Vec<Millis>) -> DurationQuantiles {
    durations.sort_unstable();
    let seconds = |millis: Millis| millis as f64 / 1000.0;
    DurationQuantiles {
        median_seconds: nearest_rank(&durations, 50).map(seconds),
        p90_seconds: nearest_rank(&durations, 90).map(seconds),
    }
}

/// Counts and durations of a group, added to one loop at a time.
#[derive(Debug, Default)]
struct Tally {
    loops: u64,
    closed_verified: u64,
    breached: u64,
    reopened: u64,
    with_sla: u64,
    with_sla_met: u64,
    to_acknowledge: Vec<Millis>,
    to_close: Vec<Millis>,
}

impl Tally {
    fn add(&mut self, timing: &LoopTiming) {
        self.loops += 1;
        if let Some(acknowledged_at) = timing.acknowledged_at {
            self.to_acknowledge.push(acknowledged_at - timing.opened_at);
        }
        if let Some(closed_at) = timing.closed_at {
            self.to_close.push(closed_at - timing.opened_at);
            if timing.close_reason == Some(CloseReason::Verified) {
                self.closed_verified += 1;
            }
        }
        if timing.breached {
            self.breached += 1;
        }
        if timing.recurrence > 0 {
            self.reopened += 1;
        }
        if timing.has_sla {
            self.with_sla += 1;
            if !timing.breached {
                self.with_sla_met += 1;
            }
        }
    }

    fn finish(self) -> LoopKpis {
        let acknowledged = self.to_acknowledge.len() as u64;
        let closed = self.to_close.len() as u64;
        LoopKpis {
            loops: self.loops,
            acknowledged,
            closed,
            closed_verified: self.closed_verified,
            breached: self.breached,
            reopened: self.reopened,
            with_sla: self.with_sla,
            time_to_acknowledge: quantiles(self.to_acknowledge),
            time_to_close: quantiles(self.to_close),
            sla_attainment: ratio(self.with_sla_met, self.with_sla),
            closed_loop_rate: ratio(self.closed_verified, closed),
            reopen_rate: ratio(self.reopened, self.loops),
        }
    }
}

/// The KPIs of every queue and team over `timings` (already narrowed to the period).
pub fn compute(timings: &[LoopTiming], ownership: &Ownership) -> KpiReport {
    let mut queues: BTreeMap<&str, Tally> = ownership
        .queue_teams
        .keys()
        .map(|queue| (queue.as_str(), Tally::default()))
        .collect();
    let mut teams: BTreeMap<&str, Tally> = ownership
        .teams
        .iter()
        .map(|team| (team.as_str(), Tally::default()))
        .collect();
    for timing in timings {
        queues.entry(timing.queue.as_str()).or_default().add(timing);
        if let Some(team) = ownership.queue_teams.get(&timing.queue) {
            teams.entry(team.as_str()).or_default().add(timing);
        }
    }
    KpiReport {
        queues: queues
            .into_iter()
            .map(|(queue, tally)| QueueKpis {
                queue: queue.to_owned(),
                team: ownership.queue_teams.get(queue).cloned(),
                kpis: tally.finish(),
            })
            .collect(),
        teams: teams
            .into_iter()
            .map(|(team, tally)| TeamKpis {
                team: team.to_owned(),
                queues: ownership
                    .queue_teams
                    .iter()
                    .filter(|(_, owner)| owner.as_str() == team)
                    .map(|(queue, _)| queue.clone())
                    .collect(),
                kpis: tally.finish(),
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECOND: Millis = 1000;

    fn opened(queue: &str, opened_at: Millis) -> LoopTiming {
        LoopTiming {
            queue: queue.to_owned(),
            opened_at,
            acknowledged_at: None,
            closed_at: None,
            close_reason: None,
            breached: false,
            has_sla: false,
            recurrence: 0,
        }
    }

    fn acknowledged_after(queue: &str, seconds: Millis) -> LoopTiming {
        LoopTiming {
            acknowledged_at: Some(1_000_000 + seconds * SECOND),
            ..opened(queue, 1_000_000)
        }
    }

    fn closed_after(queue: &str, seconds: Millis, reason: CloseReason) -> LoopTiming {
        LoopTiming {
            closed_at: Some(1_000_000 + seconds * SECOND),
            close_reason: Some(reason),
            ..opened(queue, 1_000_000)
        }
    }

    fn ownership(pairs: &[(&str, &str)]) -> Ownership {
        let queue_teams: BTreeMap<String, String> = pairs
            .iter()
            .map(|(queue, team)| ((*queue).to_owned(), (*team).to_owned()))
            .collect();
        let teams = queue_teams.values().cloned().collect();
        Ownership { queue_teams, teams }
    }

    #[test]
    fn nearest_rank_takes_the_value_at_rank_ceil_p_times_n_over_100() {
        let values = [15, 20, 35, 40, 50];
        // Median: rank ceil(2.5) = 3; p90: rank ceil(4.5) = 5.
        assert_eq!(nearest_rank(&values, 50), Some(35));
        assert_eq!(nearest_rank(&values, 90), Some(50));
        // Ten values: median rank 5 (the lower middle value), p90 rank 9.
        let ten: Vec<Millis> = (1..=10).map(|value| value * 10).collect();
        assert_eq!(nearest_rank(&ten, 50), Some(50));
        assert_eq!(nearest_rank(&ten, 90), Some(90));
        // Eleven values: p90 rank ceil(9.9) = 10.
        let eleven: Vec<Millis> = (1..=11).collect();
        assert_eq!(nearest_rank(&eleven, 90), Some(10));
        assert_eq!(nearest_rank(&eleven, 50), Some(6));
    }

    #[test]
    fn nearest_rank_of_one_value_is_that_value_and_of_none_is_none() {
        assert_eq!(nearest_rank(&[7], 50), Some(7));
        assert_eq!(nearest_rank(&[7], 90), Some(7));
        assert_eq!(nearest_rank(&[7], 1), Some(7));
        assert_eq!(nearest_rank(&[], 50), None);
        assert_eq!(nearest_rank(&[3, 4], 50), Some(3));
        assert_eq!(nearest_rank(&[3, 4], 90), Some(4));
    }

    #[test]
    fn ratios_have_four_decimals_with_halves_rounded_up_and_none_over_zero() {
        assert_eq!(ratio(1, 3), Some(0.3333));
        assert_eq!(ratio(2, 3), Some(0.6667));
        assert_eq!(ratio(1, 8), Some(0.125));
        // 1 / 20000 = 0.00005: exactly half of the last digit, rounded up.
        assert_eq!(ratio(1, 20_000), Some(0.0001));
        assert_eq!(ratio(0, 5), Some(0.0));
        assert_eq!(ratio(5, 5), Some(1.0));
        assert_eq!(ratio(0, 0), None);
    }

    #[test]
    fn a_queue_gets_its_counts_rates_and_duration_percentiles_in_seconds() {
        let mut timings = vec![
            acknowledged_after("q", 60),
            acknowledged_after("q", 10),
            acknowledged_after("q", 30),
            closed_after("q", 600, CloseReason::Verified),
            closed_after("q", 300, CloseReason::Duplicate),
            closed_after("q", 900, CloseReason::Verified),
            opened("q", 5),
        ];
        timings[0].has_sla = true;
        timings[1].has_sla = true;
        timings[1].breached = true;
        timings[2].has_sla = true;
        timings[3].recurrence = 2;
        let report = compute(&timings, &ownership(&[("q", "t")]));
        let kpis = &report.queues[0].kpis;
        assert_eq!(report.queues[0].queue, "q");
        assert_eq!(report.queues[0].team.as_deref(), Some("t"));
        assert_eq!(
            (
                kpis.loops,
                kpis.acknowledged,
                kpis.closed,
                kpis.closed_verified,
                kpis.breached,
                kpis.reopened,
                kpis.with_sla,
            ),
            (7, 3, 3, 2, 1, 1, 3)
        );
        // Acknowledged after 10, 30, 60 s: median rank 2, p90 rank 3.
        assert_eq!(
            kpis.time_to_acknowledge,
            DurationQuantiles {
                median_seconds: Some(30.0),
                p90_seconds: Some(60.0)
            }
        );
        // Closed after 300, 600, 900 s.
        assert_eq!(
            kpis.time_to_close,
            DurationQuantiles {
                median_seconds: Some(600.0),
                p90_seconds: Some(900.0)
            }
        );
        assert_eq!(kpis.sla_attainment, Some(0.6667));
        assert_eq!(kpis.closed_loop_rate, Some(0.6667));
        assert_eq!(kpis.reopen_rate, Some(0.1429));
    }

    #[test]
    fn durations_keep_their_milliseconds() {
        let mut timing = opened("q", 1_000);
        timing.acknowledged_at = Some(2_500);
        let report = compute(&[timing], &ownership(&[("q", "t")]));
        assert_eq!(
            report.queues[0].kpis.time_to_acknowledge.median_seconds,
            Some(1.5)
        );
    }

    #[test]
    fn a_group_without_qualifying_loops_has_null_figures_and_zero_counts() {
        let report = compute(
            &[opened("busy", 0)],
            &ownership(&[("busy", "t"), ("idle", "t")]),
        );
        let idle = &report.queues[1];
        assert_eq!(idle.queue, "idle");
        assert_eq!(idle.kpis, LoopKpis::default());
        assert_eq!(idle.kpis.reopen_rate, None);
        let busy = &report.queues[0].kpis;
        assert_eq!(busy.loops, 1);
        assert_eq!(busy.reopen_rate, Some(0.0));
        assert_eq!(busy.time_to_acknowledge, DurationQuantiles::default());
        assert_eq!(busy.time_to_close, DurationQuantiles::default());
        assert_eq!(busy.sla_attainment, None, "no loop has an SLA policy");
        assert_eq!(busy.closed_loop_rate, None, "no loop is closed");
    }

    #[test]
    fn team_percentiles_are_over_the_union_of_its_queues_not_an_average_of_queue_figures() {
        let timings = vec![
            acknowledged_after("a", 10),
            acknowledged_after("a", 20),
            acknowledged_after("a", 30),
            acknowledged_after("b", 1000),
            acknowledged_after("c", 5),
        ];
        let report = compute(&timings, &ownership(&[("a", "t"), ("b", "t"), ("c", "u")]));
        assert_eq!(report.teams.len(), 2);
        let team = &report.teams[0];
        assert_eq!(team.team, "t");
        assert_eq!(team.queues, ["a", "b"]);
        assert_eq!(team.kpis.loops, 4);
        // Pooled 10, 20, 30, 1000 s: median rank 2 = 20 s (queue medians 20 and 1000 would average
        // to 510), p90 rank 4 = 1000 s.
        assert_eq!(
            team.kpis.time_to_acknowledge,
            DurationQuantiles {
                median_seconds: Some(20.0),
                p90_seconds: Some(1000.0)
            }
        );
        assert_eq!(report.teams[1].team, "u");
        assert_eq!(report.teams[1].kpis.loops, 1);
    }

    #[test]
    fn loops_of_an_unconfigured_queue_are_listed_without_a_team_and_counted_in_no_team() {
        let report = compute(&[opened("gone", 0)], &ownership(&[("q", "t")]));
        let names: Vec<&str> = report
            .queues
            .iter()
            .map(|queue| queue.queue.as_str())
            .collect();
        assert_eq!(names, ["gone", "q"]);
        assert_eq!(report.queues[0].team, None);
        assert_eq!(report.queues[0].kpis.loops, 1);
        assert_eq!(report.teams[0].kpis.loops, 0);
    }

    #[test]
    fn a_reopened_loop_that_is_open_again_counts_as_reopened_not_closed() {
        let mut timing = opened("q", 0);
        timing.recurrence = 1;
        timing.acknowledged_at = Some(4_000);
        let report = compute(&[timing], &ownership(&[("q", "t")]));
        let kpis = &report.queues[0].kpis;
        assert_eq!((kpis.reopened, kpis.closed), (1, 0));
        assert_eq!(kpis.reopen_rate, Some(1.0));
        assert_eq!(kpis.closed_loop_rate, None);
    }
}
