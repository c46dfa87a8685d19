-- Detectors that need time: their pending timers (an onboarding milestone's absence, inactivity, a
-- metric window's close), the metric series they judge, and the milestones reached. Loop deadlines
-- (SLA, verification) need no table: they are fields of the loop records.
CREATE TABLE account_timers (
    key TEXT PRIMARY KEY,
    due INTEGER NOT NULL,
    record TEXT NOT NULL
) WITHOUT ROWID;

CREATE TABLE metric_series (
    key TEXT PRIMARY KEY,
    record TEXT NOT NULL
) WITHOUT ROWID;

CREATE TABLE account_milestones (
    account_id TEXT NOT NULL,
    milestone TEXT NOT NULL,
    at INTEGER NOT NULL,
    PRIMARY KEY (account_id, milestone)
) WITHOUT ROWID;
