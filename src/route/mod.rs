//! Routing: a pure walk of the route tree from a signal (and the account directory) to one queue and
//! one owner, with the path taken and how the owner was found recorded for the trace.
//!
//! The round-robin cursor is committed state: `route` reads it and returns the advanced cursor in the
//! decision, and the caller applies it only when a new loop is opened, so dry runs change nothing.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::config::routes::{Inherited, OwnerRule, RouteConfig, RoutesConfig, SignalKind, UNOWNED};
use crate::config::signals::Severity;
use crate::config::TaxonomyConfig;
use crate::detect::tag_has_prefix;
use crate::domain::AccountUpserted;

/// The account directory's view of one account: the merge of its `account.upserted` events.
pub type Account = AccountUpserted;

/// What routing looks at.
#[derive(Debug, Clone, Copy)]
pub struct RouteInput<'a> {
    pub kind: SignalKind,
    /// The loop key's tag.
    pub tag: &'a str,
    pub severity: Severity,
    pub detector: &'a str,
    pub account: Option<&'a Account>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RouteDecision {
    /// Route names from the root to the route that won (just `root` when nothing below matched).
    pub path: Vec<String>,
    pub queue: String,
    pub owner: String,
    pub owner_rule: Option<OwnerRule>,
    /// How the owner was found, as a sentence.
    pub owner_resolution: String,
    pub sla_policy: Option<String>,
    pub watchers: Vec<String>,
    /// The team whose round-robin cursor advances, and the cursor's next value.
    #[serde(skip)]
    pub round_robin_advance: Option<(String, u64)>,
}

/// Round-robin cursors per team, part of the committed state.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RouterState {
    pub round_robin: BTreeMap<String, u64>,
}

impl RouterState {
    pub fn apply(&mut self, decision: &RouteDecision) {
        if let Some((team, cursor)) = &decision.round_robin_advance {
            self.round_robin.insert(team.clone(), *cursor);
        }
    }
}

#[derive(Debug, Clone)]
pub struct Router {
    routes: RoutesConfig,
    taxonomy: TaxonomyConfig,
}

struct Matched<'a> {
    path: Vec<&'a str>,
    options: Inherited<'a>,
}

impl Router {
    pub fn new(routes: &RoutesConfig, taxonomy: &TaxonomyConfig) -> Router {
        Router {
            routes: routes.clone(),
            taxonomy: taxonomy.clone(),
        }
    }

    pub fn config(&self) -> &RoutesConfig {
        &self.routes
    }

    pub fn route(&self, input: &RouteInput<'_>, state: &RouterState) -> RouteDecision {
        let root = &self.routes.route;
        let root_options = Inherited::default().with(root);
        let mut watchers: Vec<String> = Vec::new();
        let matched = self
            .first_match_below(
                root,
                vec![root.name.as_str()],
                &root_options,
                input,
                &mut watchers,
            )
            .unwrap_or(Matched {
                path: vec![root.name.as_str()],
                options: root_options,
            });
        let path: Vec<String> = matched.path.iter().map(|name| (*name).to_owned()).collect();
        for watcher in &matched.options.watchers {
            push_unique(&mut watchers, watcher);
        }
        let Some(queue) = matched.options.queue else {
            return self.unowned(
                path,
                watchers,
                matched.options.sla,
                "no route with a queue matched",
            );
        };
        let (owner, resolution, advance) = self.resolve_owner(&matched.options, input, state);
        match owner {
            Some(owner) => RouteDecision {
                path,
                queue: queue.to_owned(),
                owner,
                owner_rule: matched.options.owner,
                owner_resolution: resolution,
                sla_policy: matched.options.sla.map(str::to_owned),
                watchers: watchers
                    .into_iter()
                    .filter(|watcher| watcher != queue)
                    .collect(),
                round_robin_advance: advance,
            },
            None => self.unowned(
                path,
                watchers,
                matched.options.sla,
                &format!("{resolution}, and route has no default_owner"),
            ),
        }
    }

    /// The deepest first match under `route` (which already matched), collecting the queues of
    /// `continue` siblings that also matched as watchers.
    fn first_match_below<'a>(
        &'a self,
        route: &'a RouteConfig,
        path: Vec<&'a str>,
        options: &Inherited<'a>,
        input: &RouteInput<'_>,
        watchers: &mut Vec<String>,
    ) -> Option<Matched<'a>> {
        let mut winner: Option<Matched<'a>> = None;
        for child in &route.routes {
            if !matches(child, input) {
                continue;
            }
            let child_options = options.with(child);
            let mut child_path = path.clone();
            child_path.push(child.name.as_str());
            let found = self
                .first_match_below(child, child_path.clone(), &child_options, input, watchers)
                .unwrap_or(Matched {
                    path: child_path,
                    options: child_options,
                });
            match &winner {
                None => winner = Some(found),
                Some(_) => {
                    if let Some(queue) = found.options.queue {
                        push_unique(watchers, queue);
                    }
                }
            }
            if !child.continue_matching {
                break;
            }
        }
        winner
    }

    fn resolve_owner(
        &self,
        options: &Inherited<'_>,
        input: &RouteInput<'_>,
        state: &RouterState,
    ) -> (Option<String>, String, Option<(String, u64)>) {
        let fallback = |reason: String| match options.default_owner {
            Some(default_owner) => (
                Some(default_owner.to_owned()),
                format!("{reason}; fell back to the route's default owner {default_owner}"),
                None,
            ),
            None => (None, reason, None),
        };
        match options.owner {
            Some(OwnerRule::Csm) => match input.account {
                None => fallback("account is not in the directory yet".to_owned()),
                Some(account) => match account.csm.as_deref().filter(|csm| !csm.is_empty()) {
                    Some(csm) => (
                        Some(csm.to_owned()),
                        format!(
                            "CSM of account {} from the account directory",
                            account.account_id
                        ),
                        None,
                    ),
                    None => fallback(format!("account {} has no CSM", account.account_id)),
                },
            },
            Some(OwnerRule::Fixed) => match options.fixed_owner {
                Some(owner) => (
                    Some(owner.to_owned()),
                    "fixed owner of the route".to_owned(),
                    None,
                ),
                None => fallback("route has no fixed_owner".to_owned()),
            },
            Some(OwnerRule::RoundRobin) => {
                let team_name = options.team.unwrap_or_default();
                let members = self
                    .routes
                    .team(team_name)
                    .map(|team| team.members.as_slice())
                    .unwrap_or_default();
                if members.is_empty() {
                    return fallback(format!("team {team_name} has no members"));
                }
                let cursor = state.round_robin.get(team_name).copied().unwrap_or(0);
                let index = (cursor % members.len() as u64) as usize;
                (
                    Some(members[index].clone()),
                    format!(
                        "round-robin over team {team_name}: member {} of {}",
                        index + 1,
                        members.len()
                    ),
                    Some((team_name.to_owned(), cursor + 1)),
                )
            }
            Some(OwnerRule::CxOwner) => match self.taxonomy.cx_owner(input.tag) {
                Some(owner) => (
                    Some(owner.to_owned()),
                    format!("CX owner of tag {} in the taxonomy", input.tag),
                    None,
                ),
                None => fallback(format!("tag {} has no CX owner in the taxonomy", input.tag)),
            },
            None => fallback("route has no owner rule".to_owned()),
        }
    }

    fn unowned(
        &self,
        path: Vec<String>,
        watchers: Vec<String>,
        sla: Option<&str>,
        why: &str,
    ) -> RouteDecision {
        RouteDecision {
            path,
            queue: UNOWNED.to_owned(),
            owner: self.routes.unowned.owner.clone(),
            owner_rule: None,
            owner_resolution: format!("{why}: sent to the unowned queue"),
            sla_policy: sla.map(str::to_owned),
            watchers,
            round_robin_advance: None,
        }
    }
}

fn push_unique(list: &mut Vec<String>, value: &str) {
    if !list.iter().any(|present| present == value) {
        list.push(value.to_owned());
    }
}

/// Every listed matcher must hold. Account matchers fail for an account not in the directory.
fn matches(route: &RouteConfig, input: &RouteInput<'_>) -> bool {
    let matchers = &route.matchers;
    let account_field = |values: &[String], field: fn(&Account) -> Option<&String>| {
        values.is_empty()
            || input
                .account
                .and_then(field)
                .is_some_and(|value| values.iter().any(|wanted| wanted == value))
    };
    (matchers.kind.is_empty() || matchers.kind.contains(&input.kind))
        && (matchers.tag_prefix.is_empty()
            || matchers
                .tag_prefix
                .iter()
                .any(|prefix| tag_has_prefix(input.tag, prefix)))
        && (matchers.severity.is_empty() || matchers.severity.contains(&input.severity))
        && (matchers.detector.is_empty()
            || matchers.detector.iter().any(|name| name == input.detector))
        && account_field(&matchers.tier, |account| account.tier.as_ref())
        && account_field(&matchers.segment, |account| account.segment.as_ref())
        && account_field(&matchers.region, |account| account.region.as_ref())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::domain::AccountId;

    fn router() -> Router {
        let config = Config::embedded();
        Router::new(&config.routes, &config.taxonomy)
    }

    fn account(tier: &str, csm: Option<&str>) -> Account {
        Account {
            account_id: AccountId::parse("acct-1").unwrap(),
            name: Some("Acme".to_owned()),
            tier: Some(tier.to_owned()),
            arr: None,
            region: Some("emea".to_owned()),
            segment: None,
            csm: csm.map(str::to_owned),
            lifecycle_stage: None,
            started_at: None,
        }
    }

    fn input<'a>(tag: &'a str, severity: Severity, account: Option<&'a Account>) -> RouteInput<'a> {
        RouteInput {
            kind: SignalKind::Account,
            tag,
            severity,
            detector: "detractor",
            account,
        }
    }

    #[test]
    fn an_enterprise_signal_goes_to_its_csm_on_the_enterprise_queue() {
        let account = account("enterprise", Some("ana.lima"));
        let decision = router().route(
            &input("billing.invoice-error", Severity::Medium, Some(&account)),
            &RouterState::default(),
        );
        assert_eq!(decision.path, vec!["root", "enterprise"]);
        assert_eq!(decision.queue, "cs-enterprise");
        assert_eq!(decision.owner, "ana.lima");
        assert_eq!(decision.sla_policy.as_deref(), Some("standard"));
    }

    #[test]
    fn the_deepest_matching_route_wins_and_inherits_its_parents_queue() {
        let account = account("enterprise", Some("ana.lima"));
        let decision = router().route(
            &input("billing.invoice-error", Severity::High, Some(&account)),
            &RouterState::default(),
        );
        assert_eq!(
            decision.path,
            vec!["root", "enterprise", "enterprise-critical"]
        );
        assert_eq!(decision.queue, "cs-enterprise");
        assert_eq!(decision.sla_policy.as_deref(), Some("urgent"));
        assert_eq!(decision.watchers, vec!["cs-enterprise-lead"]);
    }

    #[test]
    fn continue_makes_later_matching_queues_watchers() {
        let account = account("enterprise", Some("ana.lima"));
        let decision = router().route(
            &input("churn.cancellation", Severity::Critical, Some(&account)),
            &RouterState::default(),
        );
        assert_eq!(decision.queue, "cs-retention");
        assert!(
            decision.watchers.contains(&"cs-enterprise".to_owned()),
            "{decision:?}"
        );
    }

    #[test]
    fn round_robin_takes_team_members_in_turn_through_committed_state() {
        let router = router();
        let account = account("smb", None);
        let mut state = RouterState::default();
        let mut owners = Vec::new();
        for _ in 0..4 {
            let decision = router.route(
                &input("performance.slow", Severity::Medium, Some(&account)),
                &state,
            );
            owners.push(decision.owner.clone());
            state.apply(&decision);
        }
        assert_eq!(
            owners,
            vec!["hugo.silva", "ines.moreau", "jonas.berg", "hugo.silva"]
        );
    }

    #[test]
    fn an_unknown_account_matches_no_tier_route_and_lands_in_unowned() {
        let decision = router().route(
            &input("performance.slow", Severity::Medium, None),
            &RouterState::default(),
        );
        assert_eq!(decision.queue, UNOWNED);
        assert_eq!(decision.path, vec!["root"]);
        assert!(decision.owner_resolution.contains("unowned"));
    }

    #[test]
    fn a_missing_csm_falls_back_to_the_default_owner() {
        let account = account("mid-market", None);
        let decision = router().route(
            &input("performance.slow", Severity::Medium, Some(&account)),
            &RouterState::default(),
        );
        assert_eq!(decision.queue, "cs-mid-market");
        assert_eq!(decision.owner, "cs-growth-lead");
        assert!(decision.owner_resolution.contains("no CSM"));
    }

    #[test]
    fn a_churn_signal_for_an_unknown_account_still_routes_with_the_default_owner() {
        let decision = router().route(
            &input("churn.competitor", Severity::Critical, None),
            &RouterState::default(),
        );
        assert_eq!(decision.queue, "cs-retention");
        assert_eq!(decision.owner, "cs-retention-lead");
        assert!(decision.owner_resolution.contains("not in the directory"));
    }
}
