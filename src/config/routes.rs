//! `routes.toml`: teams, queues, SLA policies and the routing tree, in the manner of Alertmanager.

use std::collections::{BTreeMap, HashSet};

use serde::Deserialize;

use super::signals::Severity;

/// The queue (and owner) of every loop that no route, or no owner rule, could place.
pub const UNOWNED: &str = "unowned";

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoutesConfig {
    #[serde(rename = "team", default)]
    pub teams: Vec<TeamConfig>,
    #[serde(rename = "queue", default)]
    pub queues: Vec<QueueConfig>,
    #[serde(default)]
    pub sla: BTreeMap<String, SlaPolicyConfig>,
    #[serde(default)]
    pub unowned: UnownedConfig,
    /// The root route: its options are the defaults every route inherits. It matches every signal; when it
    /// has no queue, a signal that no child route matches goes to the `unowned` queue.
    pub route: RouteConfig,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TeamConfig {
    pub name: String,
    /// People, in round-robin order.
    #[serde(default)]
    pub members: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueueConfig {
    pub name: String,
    /// The one team that watches this queue.
    pub team: String,
}

/// Who watches the `unowned` queue.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UnownedConfig {
    pub team: String,
    pub owner: String,
}

impl Default for UnownedConfig {
    fn default() -> Self {
        UnownedConfig {
            team: "cs-ops".to_owned(),
            owner: UNOWNED.to_owned(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SlaPolicyConfig {
    /// Human durations such as `4h` or `3d`; business time when `business_hours` is set.
    pub ack_within: String,
    pub resolve_within: String,
    /// How long a resolved loop waits in `verifying` before it closes as verified; default
    /// `signals.toml` `[loops] verify_for`.
    #[serde(default)]
    pub verify_for: Option<String>,
    /// The SLA clock runs only inside these hours.
    #[serde(default)]
    pub business_hours: Option<BusinessHoursConfig>,
    /// What a breach does besides marking the loop: raise its priority one level (the default), or
    /// move it to `escalation_queue`.
    #[serde(default)]
    pub on_breach: OnBreach,
    #[serde(default)]
    pub escalation_queue: Option<String>,
    /// Where set, a verifying loop closes as verified only once the account answered a survey of this
    /// kind (nps or csat) with at least `verify_min_score` after the loop was resolved.
    #[serde(default)]
    pub verify_survey: Option<crate::domain::SurveyKind>,
    #[serde(default)]
    pub verify_min_score: Option<u8>,
}

/// `{ days = ["mon", ...], start = "09:00", end = "17:00", time_zone = "Europe/Berlin" }`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BusinessHoursConfig {
    pub days: Vec<String>,
    pub start: String,
    pub end: String,
    /// An IANA time zone name.
    pub time_zone: String,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum OnBreach {
    #[default]
    RaisePriority,
    Escalate,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum OwnerRule {
    /// The account's CSM from the account directory.
    Csm,
    /// `fixed_owner`.
    Fixed,
    /// The next member of `team`, in turn; the cursor is committed state.
    RoundRobin,
    /// The CX owner of the loop's tag in the taxonomy.
    CxOwner,
}

impl OwnerRule {
    pub fn as_str(self) -> &'static str {
        match self {
            OwnerRule::Csm => "csm",
            OwnerRule::Fixed => "fixed",
            OwnerRule::RoundRobin => "round_robin",
            OwnerRule::CxOwner => "cx_owner",
        }
    }
}

#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Deserialize, serde::Serialize,
)]
#[serde(rename_all = "snake_case")]
pub enum SignalKind {
    Account,
    Journey,
}

impl SignalKind {
    pub fn as_str(self) -> &'static str {
        match self {
            SignalKind::Account => "account",
            SignalKind::Journey => "journey",
        }
    }

    pub fn parse(value: &str) -> Option<SignalKind> {
        match value {
            "account" => Some(SignalKind::Account),
            "journey" => Some(SignalKind::Journey),
            _ => None,
        }
    }
}

/// Every listed matcher must hold (a list matches when it contains the value); empty lists match all.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MatchersConfig {
    #[serde(default)]
    pub kind: Vec<SignalKind>,
    /// Tag ids or dotted prefixes: `billing` matches `billing` and `billing.invoice-error`.
    #[serde(default)]
    pub tag_prefix: Vec<String>,
    #[serde(default)]
    pub tier: Vec<String>,
    #[serde(default)]
    pub segment: Vec<String>,
    #[serde(default)]
    pub region: Vec<String>,
    #[serde(default)]
    pub severity: Vec<Severity>,
    #[serde(default)]
    pub detector: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    #[serde(default = "root_name")]
    pub name: String,
    #[serde(rename = "match", default)]
    pub matchers: MatchersConfig,
    /// Options below are inherited from the parent route when absent.
    #[serde(default)]
    pub queue: Option<String>,
    #[serde(default)]
    pub owner: Option<OwnerRule>,
    #[serde(default)]
    pub fixed_owner: Option<String>,
    #[serde(default)]
    pub team: Option<String>,
    /// Used when the owner rule finds nobody (no CSM, account not in the directory, no CX owner).
    #[serde(default)]
    pub default_owner: Option<String>,
    #[serde(default)]
    pub sla: Option<String>,
    /// Queues or people told about the loop through loop events; never a second loop.
    #[serde(default)]
    pub watchers: Vec<String>,
    /// After this route matched, keep testing its siblings; their queues become watchers.
    #[serde(rename = "continue", default)]
    pub continue_matching: bool,
    #[serde(default)]
    pub routes: Vec<RouteConfig>,
}

fn root_name() -> String {
    "root".to_owned()
}

impl RoutesConfig {
    /// Every problem at once: unknown queues, teams and SLA policies, duplicate names, bad durations.
    pub fn validate(&self) -> Vec<String> {
        let mut problems = Vec::new();
        let mut team_names = HashSet::new();
        for team in &self.teams {
            if !team_names.insert(team.name.as_str()) {
                problems.push(format!("routes: team `{}` is defined twice", team.name));
            }
        }
        if !team_names.contains(self.unowned.team.as_str()) {
            problems.push(format!(
                "routes: unowned.team `{}` is not a defined team",
                self.unowned.team
            ));
        }
        let mut queue_names = HashSet::new();
        for queue in &self.queues {
            if queue.name == UNOWNED {
                problems.push(format!("routes: queue name `{UNOWNED}` is reserved"));
            }
            if !queue_names.insert(queue.name.as_str()) {
                problems.push(format!("routes: queue `{}` is defined twice", queue.name));
            }
            if !team_names.contains(queue.team.as_str()) {
                problems.push(format!(
                    "routes: queue `{}` belongs to unknown team `{}`",
                    queue.name, queue.team
                ));
            }
        }
        for (name, policy) in &self.sla {
            if let Err(error) = crate::loops::sla::SlaPolicy::compile(name, policy) {
                problems.push(error);
            }
            match (&policy.on_breach, policy.escalation_queue.as_deref()) {
                (OnBreach::Escalate, None) => problems.push(format!(
                    "routes: sla `{name}` escalates on breach but names no escalation_queue"
                )),
                (_, Some(queue)) if queue != UNOWNED && !queue_names.contains(queue) => problems
                    .push(format!(
                        "routes: sla `{name}` escalation_queue `{queue}` is not a defined queue"
                    )),
                _ => {}
            }
        }
        let mut route_names = HashSet::new();
        self.validate_route(
            &self.route,
            &Inherited::default(),
            &team_names,
            &queue_names,
            &mut route_names,
            &mut problems,
        );
        problems
    }

    fn validate_route<'a>(
        &'a self,
        route: &'a RouteConfig,
        parent: &Inherited<'a>,
        team_names: &HashSet<&str>,
        queue_names: &HashSet<&str>,
        route_names: &mut HashSet<&'a str>,
        problems: &mut Vec<String>,
    ) {
        let name = format!("routes: route `{}`", route.name);
        if !route_names.insert(route.name.as_str()) {
            problems.push(format!(
                "{name} is defined twice (route names must be unique)"
            ));
        }
        let options = parent.with(route);
        if let Some(queue) = route.queue.as_deref() {
            if queue != UNOWNED && !queue_names.contains(queue) {
                problems.push(format!("{name} sends to unknown queue `{queue}`"));
            }
        }
        if let Some(sla) = route.sla.as_deref() {
            if !self.sla.contains_key(sla) {
                problems.push(format!("{name} names unknown sla policy `{sla}`"));
            }
        }
        if let Some(team) = route.team.as_deref() {
            if !team_names.contains(team) {
                problems.push(format!("{name} names unknown team `{team}`"));
            }
        }
        match options.owner {
            Some(OwnerRule::Fixed) if options.fixed_owner.is_none() => {
                problems.push(format!("{name} has owner rule fixed but no fixed_owner"))
            }
            Some(OwnerRule::RoundRobin) => match options.team {
                None => problems.push(format!("{name} has owner rule round_robin but no team")),
                Some(team) => {
                    let members = self
                        .teams
                        .iter()
                        .find(|candidate| candidate.name == team)
                        .map_or(0, |team| team.members.len());
                    if members == 0 && team_names.contains(team) {
                        problems.push(format!(
                            "{name} round-robins over team `{team}`, which has no members"
                        ));
                    }
                }
            },
            _ => {}
        }
        if route.queue.is_some() && options.owner.is_none() {
            problems.push(format!(
                "{name} has a queue but no owner rule (set `owner`)"
            ));
        }
        for child in &route.routes {
            self.validate_route(
                child,
                &options,
                team_names,
                queue_names,
                route_names,
                problems,
            );
        }
    }

    pub fn team(&self, name: &str) -> Option<&TeamConfig> {
        self.teams.iter().find(|team| team.name == name)
    }

    /// The team of a queue (`unowned` belongs to `unowned.team`).
    pub fn queue_team(&self, queue: &str) -> Option<&str> {
        if queue == UNOWNED {
            return Some(self.unowned.team.as_str());
        }
        self.queues
            .iter()
            .find(|candidate| candidate.name == queue)
            .map(|queue| queue.team.as_str())
    }

    /// Every queue name, `unowned` last.
    pub fn queue_names(&self) -> Vec<&str> {
        let mut names: Vec<&str> = self
            .queues
            .iter()
            .map(|queue| queue.name.as_str())
            .collect();
        names.push(UNOWNED);
        names
    }
}

/// Route options after inheritance from the ancestors.
#[derive(Debug, Clone, Default)]
pub struct Inherited<'a> {
    pub queue: Option<&'a str>,
    pub owner: Option<OwnerRule>,
    pub fixed_owner: Option<&'a str>,
    pub team: Option<&'a str>,
    pub default_owner: Option<&'a str>,
    pub sla: Option<&'a str>,
    pub watchers: Vec<&'a str>,
}

impl<'a> Inherited<'a> {
    pub fn with(&self, route: &'a RouteConfig) -> Inherited<'a> {
        let mut watchers = self.watchers.clone();
        for watcher in &route.watchers {
            if !watchers.contains(&watcher.as_str()) {
                watchers.push(watcher.as_str());
            }
        }
        Inherited {
            queue: route.queue.as_deref().or(self.queue),
            owner: route.owner.or(self.owner),
            fixed_owner: route.fixed_owner.as_deref().or(self.fixed_owner),
            team: route.team.as_deref().or(self.team),
            default_owner: route.default_owner.as_deref().or(self.default_owner),
            sla: route.sla.as_deref().or(self.sla),
            watchers,
        }
    }
}
