use super::*;
use crate::config::Config;
use crate::domain::{SurveyResponded, TicketOpened, MILLIS_PER_DAY};

/// Monday 2026-11-23 00:00 UTC.
const MONDAY: Millis = 1_795_392_000_000;

fn account(id: &str) -> AccountId {
    AccountId::parse(id).unwrap()
}

fn nps(id: &str, account_id: &str, score: u8, time: Millis) -> Event {
    Event {
        source: "test".to_owned(),
        id: id.to_owned(),
        time,
        data: EventData::SurveyResponded(SurveyResponded {
            response_id: id.to_owned(),
            account_id: account(account_id),
            kind: SurveyKind::Nps,
            score,
            comment: None,
            journey_stage: Some("onboarding".to_owned()),
            touchpoint: Some("in-app".to_owned()),
            user_id: None,
        }),
    }
}

fn ticket(id: &str, account_id: &str, time: Millis) -> Event {
    Event {
        source: "test".to_owned(),
        id: id.to_owned(),
        time,
        data: EventData::TicketOpened(TicketOpened {
            ticket_id: id.to_owned(),
            account_id: account(account_id),
            subject: None,
            body: None,
            priority: None,
            channel: Some("email".to_owned()),
            requester: None,
            product_area: None,
            journey_stage: Some("onboarding".to_owned()),
        }),
    }
}

/// Runs events through detection and observation as the core does, under `tag`; returns the
/// signals in order.
fn run(
    detectors: &JourneyDetectors,
    state: &mut JourneyState,
    events: &[(Event, &str)],
) -> Vec<Signal> {
    let mut signals = Vec::new();
    for (event, tag) in events {
        let observation = Observation::new(event, tag, None);
        let (raised, fired) = detectors.detect(state, &observation);
        detectors.observe(state, &observation, &fired);
        signals.extend(raised);
    }
    signals
}

fn detectors_from(toml_text: &str) -> JourneyDetectors {
    let mut sources = crate::config::ConfigSources::embedded();
    let start = sources.signals.find("\n[[journey]]").unwrap() + 1;
    sources.signals.truncate(start);
    sources.signals.push_str(toml_text);
    let config =
        Config::parse(&sources, std::iter::empty()).unwrap_or_else(|error| panic!("{error}"));
    JourneyDetectors::new(&config.signals)
}

#[test]
fn figures_are_rounded_to_two_decimals_with_halves_away_from_zero() {
    assert_eq!(round2(1, 3), 0.33);
    assert_eq!(round2(2, 3), 0.67);
    assert_eq!(round2(-100, 3), -33.33);
    assert_eq!(round2(-200, 3), -66.67);
    assert_eq!(round2(1, 8), 0.13);
    assert_eq!(round2(-1, 8), -0.13);
    assert_eq!(round2(700, 7), 100.0);
}

#[test]
fn nps_classes_split_at_six_seven_and_eight_nine() {
    let class = |score: u8| {
        let figures = Figures::of(&nps("r", "a", score, MONDAY).data);
        (figures.promoters, figures.passives, figures.detractors)
    };
    assert_eq!(class(0), (0, 0, 1));
    assert_eq!(class(6), (0, 0, 1));
    assert_eq!(class(7), (0, 1, 0));
    assert_eq!(class(8), (0, 1, 0));
    assert_eq!(class(9), (1, 0, 0));
    assert_eq!(class(10), (1, 0, 0));
}

#[test]
fn nps_is_null_without_responses_and_exact_with_them() {
    let mut figures = Figures::default();
    assert_eq!(figures.nps(), None);
    assert_eq!(figures.csat_avg(), None);
    for score in [10, 6, 3] {
        figures.add(&Figures::of(&nps("r", "a", score, MONDAY).data));
    }
    assert_eq!(figures.nps(), Some(-33.33));
    assert_eq!(figures.events, 3);
}

#[test]
fn weeks_start_on_monday_and_days_at_midnight_utc() {
    let thursday_noon = MONDAY + 3 * MILLIS_PER_DAY + MILLIS_PER_DAY / 2;
    assert_eq!(Window::Week.start(thursday_noon), MONDAY);
    assert_eq!(Window::Week.start(MONDAY), MONDAY);
    assert_eq!(Window::Week.start(MONDAY - 1), MONDAY - 7 * MILLIS_PER_DAY);
    assert_eq!(
        Window::Day.start(thursday_noon),
        MONDAY + 3 * MILLIS_PER_DAY
    );
    assert_eq!(Window::Day.ceiling(MONDAY + 1), MONDAY + MILLIS_PER_DAY);
    assert_eq!(Window::Day.ceiling(MONDAY), MONDAY);
    assert_eq!(format_millis(MONDAY), "2026-11-23T00:00:00.000Z");
}

#[test]
fn the_stage_comes_from_the_event_then_the_account_then_unknown() {
    let mut directory = Account {
        account_id: account("a"),
        name: None,
        tier: None,
        arr: None,
        region: None,
        segment: None,
        csm: None,
        lifecycle_stage: Some("renewal".to_owned()),
        started_at: None,
    };
    let survey = nps("r", "a", 5, MONDAY);
    assert_eq!(
        stage_of(&survey.data, Some(&directory)),
        ("onboarding", StageSource::Event)
    );
    let usage = Event {
        data: EventData::UsageMilestone(crate::domain::UsageMilestone {
            account_id: account("a"),
            milestone: "first".to_owned(),
            user_id: None,
        }),
        ..survey.clone()
    };
    assert_eq!(
        stage_of(&usage.data, Some(&directory)),
        ("renewal", StageSource::Account)
    );
    directory.lifecycle_stage = None;
    assert_eq!(
        stage_of(&usage.data, Some(&directory)),
        (UNKNOWN, StageSource::Unknown)
    );
    assert_eq!(touchpoint_of(&usage.data), UNKNOWN);
    assert_eq!(touchpoint_of(&survey.data), "in-app");
}

#[test]
fn affected_accounts_fires_at_the_threshold_once_per_window() {
    let detectors = detectors_from(
        "[[journey]]\nname = \"affected\"\nkind = \"affected_accounts\"\nseverity = \"high\"\nwindow = \"week\"\nmin_accounts = 3\n",
    );
    let mut state = JourneyState::default();
    // Two accounts, one of them twice: below the threshold.
    let below = run(
        &detectors,
        &mut state,
        &[
            (ticket("t1", "a1", MONDAY), "onboarding.setup"),
            (ticket("t2", "a2", MONDAY + 1), "onboarding.setup"),
            (ticket("t3", "a2", MONDAY + 2), "onboarding.setup"),
        ],
    );
    assert!(below.is_empty(), "{below:?}");
    let above = run(
        &detectors,
        &mut state,
        &[
            (ticket("t4", "a3", MONDAY + 3), "onboarding.setup"),
            (ticket("t5", "a4", MONDAY + 4), "onboarding.setup"),
        ],
    );
    assert_eq!(above.len(), 1, "fires once per window: {above:?}");
    let signal = &above[0];
    assert_eq!(signal.loop_key(), "journey:onboarding:onboarding.setup");
    assert_eq!(signal.kind, SignalKind::Journey);
    let figures = signal.journey.as_ref().unwrap();
    assert_eq!(figures.current.accounts, 3);
    assert_eq!(figures.current.tickets, 4);
    // The next week starts counting again.
    let next_week = MONDAY + 7 * MILLIS_PER_DAY;
    let again = run(
        &detectors,
        &mut state,
        &[
            (ticket("t6", "a1", next_week), "onboarding.setup"),
            (ticket("t7", "a2", next_week), "onboarding.setup"),
            (ticket("t8", "a3", next_week), "onboarding.setup"),
        ],
    );
    assert_eq!(again.len(), 1);
}

#[test]
fn nps_drop_fires_at_the_threshold_and_not_just_below_it() {
    let detectors = detectors_from(
        "[[journey]]\nname = \"drop\"\nkind = \"nps_drop\"\nseverity = \"high\"\ntag = \"sentiment.detractor\"\nwindow = \"week\"\nmin_drop = 20\nmin_responses = 5\n",
    );
    let week = 7 * MILLIS_PER_DAY;
    let responses = |offset: Millis, prefix: &str, scores: &[u8]| -> Vec<(Event, &'static str)> {
        scores
            .iter()
            .enumerate()
            .map(|(index, score)| {
                (
                    nps(
                        &format!("{prefix}-{index}"),
                        &format!("a{index}"),
                        *score,
                        MONDAY + offset + index as Millis,
                    ),
                    UNCATEGORIZED,
                )
            })
            .collect()
    };
    // Previous week: 3 promoters and 2 passives -> NPS 60.
    let previous = responses(0, "p", &[10, 10, 9, 8, 7]);

    // Exactly 20 down (2 promoters of 5 -> 40): fires.
    let mut state = JourneyState::default();
    assert!(run(&detectors, &mut state, &previous).is_empty());
    let signals = run(
        &detectors,
        &mut state,
        &responses(week, "c", &[10, 9, 8, 8, 7]),
    );
    assert_eq!(signals.len(), 1, "{signals:?}");
    assert_eq!(signals[0].key_tag, "sentiment.detractor");
    assert_eq!(
        signals[0].loop_key(),
        "journey:onboarding:sentiment.detractor"
    );
    let figures = signals[0].journey.as_ref().unwrap();
    assert_eq!(figures.current.nps, Some(40.0));
    assert_eq!(figures.previous.as_ref().unwrap().nps, Some(60.0));

    // 9 promoters of 22 -> 40.91, 19.09 down: nothing. The 23rd response, a passive, makes it
    // 39.13, 20.87 down: fires.
    let mut state = JourneyState::default();
    run(&detectors, &mut state, &previous);
    let mut scores = vec![9u8; 9];
    scores.extend([8u8; 13]);
    assert!(run(&detectors, &mut state, &responses(week, "c", &scores)).is_empty());
    let signals = run(&detectors, &mut state, &responses(week + 100, "d", &[7]));
    assert_eq!(signals.len(), 1, "{signals:?}");
    assert_eq!(
        signals[0].journey.as_ref().unwrap().current.nps,
        Some(39.13)
    );
    assert!(
        signals[0].reason.contains("fell 20.87 points"),
        "{}",
        signals[0].reason
    );
}

#[test]
fn nps_drop_needs_enough_responses_in_both_windows() {
    let detectors = detectors_from(
        "[[journey]]\nname = \"drop\"\nkind = \"nps_drop\"\nseverity = \"high\"\ntag = \"sentiment.detractor\"\nwindow = \"week\"\nmin_drop = 20\nmin_responses = 3\n",
    );
    let week = 7 * MILLIS_PER_DAY;
    let mut state = JourneyState::default();
    // Two promoters last week (too few), three detractors now: no comparison.
    let events = [
        (nps("p1", "a1", 10, MONDAY), UNCATEGORIZED),
        (nps("p2", "a2", 10, MONDAY + 1), UNCATEGORIZED),
        (nps("c1", "a1", 0, MONDAY + week), UNCATEGORIZED),
        (nps("c2", "a2", 0, MONDAY + week + 1), UNCATEGORIZED),
        (nps("c3", "a3", 0, MONDAY + week + 2), UNCATEGORIZED),
    ];
    assert!(run(&detectors, &mut state, &events).is_empty());
}

#[test]
fn ticket_surge_fires_at_the_percentage_and_not_below() {
    let detectors = detectors_from(
        "[[journey]]\nname = \"surge\"\nkind = \"ticket_surge\"\nseverity = \"medium\"\nwindow = \"week\"\nmin_increase_percent = 50\nmin_tickets = 3\n",
    );
    let week = 7 * MILLIS_PER_DAY;
    let tickets = |offset: Millis, prefix: &str, count: usize| -> Vec<(Event, &'static str)> {
        (0..count)
            .map(|index| {
                (
                    ticket(
                        &format!("{prefix}-{index}"),
                        &format!("a{index}"),
                        MONDAY + offset + index as Millis,
                    ),
                    "billing.invoice-error",
                )
            })
            .collect()
    };
    // 4 last week, 5 now: +25%, no signal. 4 then 6: +50%, one signal (at the sixth ticket).
    let mut state = JourneyState::default();
    let first_week = run(&detectors, &mut state, &tickets(0, "p", 4));
    assert_eq!(
        first_week.len(),
        1,
        "4 tickets against none: {first_week:?}"
    );
    assert!(run(&detectors, &mut state, &tickets(week, "c", 5)).is_empty());
    let surge = run(&detectors, &mut state, &tickets(week + 10, "d", 1));
    assert_eq!(surge.len(), 1, "{surge:?}");
    let figures = surge[0].journey.as_ref().unwrap();
    assert_eq!(figures.current.tickets, 6);
    assert_eq!(figures.previous.as_ref().unwrap().tickets, 4);
    assert!(surge[0].reason.contains("up 50%"), "{}", surge[0].reason);
}

#[test]
fn uncategorized_buckets_are_left_alone_by_a_detector_without_a_tag() {
    let detectors = detectors_from(
        "[[journey]]\nname = \"affected\"\nkind = \"affected_accounts\"\nseverity = \"high\"\nwindow = \"day\"\nmin_accounts = 1\nexclude_tag_prefixes = [\"sentiment\"]\n",
    );
    let mut state = JourneyState::default();
    let signals = run(
        &detectors,
        &mut state,
        &[
            (ticket("t1", "a1", MONDAY), UNCATEGORIZED),
            (ticket("t2", "a1", MONDAY), "sentiment.detractor"),
        ],
    );
    assert!(signals.is_empty(), "{signals:?}");
    let signals = run(
        &detectors,
        &mut state,
        &[(ticket("t3", "a1", MONDAY), "billing")],
    );
    assert_eq!(signals.len(), 1);
}

#[test]
fn the_state_rebuilt_from_stored_rows_equals_the_observed_state() {
    let detectors = detectors_from(
        "[[journey]]\nname = \"affected\"\nkind = \"affected_accounts\"\nseverity = \"high\"\nwindow = \"week\"\nmin_accounts = 2\n",
    );
    let week = 7 * MILLIS_PER_DAY;
    let mut state = JourneyState::default();
    let mut snapshot = JourneySnapshot::default();
    let events: Vec<(Event, &str)> = (0..40)
        .map(|index| {
            (
                ticket(
                    &format!("t{index}"),
                    &format!("a{}", index % 5),
                    MONDAY + (index as Millis) * week / 4,
                ),
                if index % 2 == 0 {
                    "billing"
                } else {
                    "onboarding"
                },
            )
        })
        .collect();
    for (event, tag) in &events {
        let observation = Observation::new(event, tag, None);
        let (_, fired) = detectors.detect(&state, &observation);
        detectors.observe(&mut state, &observation, &fired);
        let bucket = observation.dims.bucket(detectors.grain(), event.time);
        snapshot.buckets.push((bucket.clone(), observation.delta));
        snapshot.accounts.push((bucket, event.account_id().clone()));
        snapshot.fired.extend(fired);
    }
    let restored = detectors.restore(&snapshot);
    assert_eq!(restored, state);
    // Only the newest three weeks are kept.
    let kept: Vec<Millis> = state.series[&Window::Week]
        .by_start
        .keys()
        .copied()
        .collect();
    assert_eq!(kept.len(), 3, "{kept:?}");
}

#[test]
fn the_fleet_judges_merged_figures_once_per_window_only_for_the_keys_it_owns() {
    let detectors = detectors_from(
        "[[journey]]\nname = \"affected\"\nkind = \"affected_accounts\"\nseverity = \"high\"\nwindow = \"week\"\nmin_accounts = 3\n\n\
         [[journey]]\nname = \"surge\"\nkind = \"ticket_surge\"\nseverity = \"medium\"\nwindow = \"week\"\nmin_increase_percent = 50\nmin_tickets = 3\n",
    );
    let week = 7 * MILLIS_PER_DAY;
    let group = |start: Millis, tag: &str, tickets: u64, accounts: u64| FleetGroup {
        window: Window::Week,
        start,
        stage: "onboarding".to_owned(),
        tag: tag.to_owned(),
        figures: Figures {
            events: tickets,
            tickets,
            ..Figures::default()
        },
        accounts,
    };
    let mut fleet = FleetFigures {
        groups: vec![
            // Three weeks back: only the previous window of the oldest judged one, never judged
            // itself (9 accounts, 9 tickets against none).
            group(MONDAY - 3 * week, "billing", 9, 9),
            group(MONDAY - 2 * week, "billing", 3, 2),
            // The newest week: 3 accounts (no instance need have seen them all) and 3 tickets
            // against 2; billing, 4 tickets against none.
            group(MONDAY, "onboarding.setup", 3, 3),
            group(MONDAY - week, "onboarding.setup", 2, 2),
            group(MONDAY, "billing", 4, 2),
        ],
        ..FleetFigures::default()
    };
    let judged = |fleet: &FleetFigures, owns: &dyn Fn(&str) -> bool| -> Vec<(String, String)> {
        detectors
            .judge_fleet(fleet, owns, MONDAY + 5)
            .into_iter()
            .map(|(signal, row)| {
                assert_eq!(row.detector, signal.detector);
                assert_eq!(signal.time, MONDAY + 5);
                (signal.loop_key(), signal.detector)
            })
            .collect()
    };
    let everything = judged(&fleet, &|_| true);
    assert_eq!(
        everything,
        vec![
            ("journey:onboarding:billing".to_owned(), "surge".to_owned()),
            (
                "journey:onboarding:onboarding.setup".to_owned(),
                "affected".to_owned()
            ),
            (
                "journey:onboarding:onboarding.setup".to_owned(),
                "surge".to_owned()
            ),
        ],
        "billing two weeks back: 3 tickets against 9 is no surge, and three weeks back is only a \
         previous window"
    );
    let found = detectors.judge_fleet(&fleet, |_| true, MONDAY + 5);
    let figures = found[1].0.journey.as_ref().unwrap();
    assert_eq!(figures.current.accounts, 3);
    assert_eq!(figures.previous.as_ref().unwrap().accounts, 2);
    assert_eq!(figures.threshold, "at least 3 accounts");

    // Another instance owns the setup key: this one judges only billing.
    let billing_only = judged(&fleet, &|key: &str| key.ends_with(":billing"));
    assert_eq!(
        billing_only,
        vec![("journey:onboarding:billing".to_owned(), "surge".to_owned())]
    );

    // Fired markers (stored by whichever instance fired) keep a detector from firing again.
    fleet.fired = found.into_iter().map(|(_, row)| row).collect();
    assert!(judged(&fleet, &|_| true).is_empty());
}

fn a_feed() -> Feed {
    Feed {
        stage: "onboarding".to_owned(),
        stage_from: StageSource::Account,
        tag: "billing.invoice-error".to_owned(),
        touchpoint: "in-app".to_owned(),
        windows: vec![
            FeedWindow {
                window: Window::Day,
                start: MONDAY + 2 * MILLIS_PER_DAY,
            },
            FeedWindow {
                window: Window::Week,
                start: MONDAY,
            },
        ],
    }
}

/// What an evidence row keeps of its feed.
#[derive(Debug, PartialEq, Serialize, Deserialize)]
struct Stored {
    #[serde(default, with = "stored_feed")]
    journey: Option<Feed>,
}

#[test]
fn a_feed_is_stored_as_a_compact_array_and_reads_back_whole() {
    let stored = serde_json::to_value(Stored {
        journey: Some(a_feed()),
    })
    .unwrap();
    assert_eq!(
        stored["journey"],
        serde_json::json!([
            "onboarding",
            "account",
            "billing.invoice-error",
            "in-app",
            [["day", MONDAY + 2 * MILLIS_PER_DAY], ["week", MONDAY]],
        ])
    );
    let read: Stored = serde_json::from_value(stored).unwrap();
    assert_eq!(read.journey, Some(a_feed()));
}

#[test]
fn a_feed_stored_in_the_earlier_object_form_still_reads() {
    let earlier = serde_json::json!({"journey": serde_json::to_value(a_feed()).unwrap()});
    assert_eq!(
        earlier["journey"]["windows"][1]["start"], "2026-11-23T00:00:00.000Z",
        "the object form has RFC 3339 starts"
    );
    let read: Stored = serde_json::from_value(earlier).unwrap();
    assert_eq!(read.journey, Some(a_feed()));
    let absent: Stored = serde_json::from_str("{}").unwrap();
    assert_eq!(absent.journey, None);
}

#[test]
fn a_stored_feed_expands_to_the_object_form_the_api_shows() {
    let object = serde_json::to_value(a_feed()).unwrap();
    let compact = serde_json::to_value(Stored {
        journey: Some(a_feed()),
    })
    .unwrap()["journey"]
        .take();
    assert_eq!(stored_feed::expand(compact).unwrap(), object);
    assert_eq!(stored_feed::expand(object.clone()).unwrap(), object);
    assert!(
        stored_feed::expand(serde_json::json!(["onboarding", "account"])).is_err(),
        "a malformed stored feed is an error, not a silent null"
    );
}
