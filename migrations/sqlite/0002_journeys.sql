-- Journeys for CX: additive figures per bucket, the accounts of each bucket, the journey detectors'
-- fired markers, and the links between journey loops and account loops.

-- Additive partial rows at the grain (the shortest configured window). `contributor` names the
-- processor that wrote the row, so several instances can each add their own row to one bucket; a
-- figure is the SUM over contributors (and over grain rows, for longer windows).
CREATE TABLE journey_buckets (
    start INTEGER NOT NULL,
    stage TEXT NOT NULL,
    tag TEXT NOT NULL,
    touchpoint TEXT NOT NULL,
    contributor TEXT NOT NULL,
    events INTEGER NOT NULL,
    tickets INTEGER NOT NULL,
    nps_responses INTEGER NOT NULL,
    promoters INTEGER NOT NULL,
    passives INTEGER NOT NULL,
    detractors INTEGER NOT NULL,
    csat_responses INTEGER NOT NULL,
    csat_sum INTEGER NOT NULL,
    ces_responses INTEGER NOT NULL,
    ces_sum INTEGER NOT NULL,
    PRIMARY KEY (start, stage, tag, touchpoint, contributor)
) WITHOUT ROWID;

-- The accounts seen in each bucket: distinct counts do not add, so they are counted over the union of
-- the groups' sets (COUNT(DISTINCT account_id)). Append-only with no uniqueness: a unique key would
-- scatter every batch's inserts over the whole day's B-tree, while appends touch a few pages. A pair
-- written twice (after a restart, or once the core's recent-pairs cache has let it go) changes no
-- distinct count.
CREATE TABLE journey_accounts (
    start INTEGER NOT NULL,
    stage TEXT NOT NULL,
    tag TEXT NOT NULL,
    touchpoint TEXT NOT NULL,
    account_id TEXT NOT NULL
);
CREATE INDEX journey_accounts_start ON journey_accounts (start);

-- A journey detector fired for a window, stage and tag: it fires there at most once, restarts included.
CREATE TABLE journey_fired (
    window TEXT NOT NULL,
    start INTEGER NOT NULL,
    stage TEXT NOT NULL,
    tag TEXT NOT NULL,
    detector TEXT NOT NULL,
    PRIMARY KEY (window, start, stage, tag, detector)
) WITHOUT ROWID;

CREATE TABLE loop_links (
    journey_loop TEXT NOT NULL,
    account_loop TEXT NOT NULL,
    at INTEGER NOT NULL,
    PRIMARY KEY (journey_loop, account_loop)
) WITHOUT ROWID;
CREATE INDEX loop_links_account ON loop_links (account_loop);

-- The journey stage of each account signal, for the account's journey.
ALTER TABLE signals ADD COLUMN stage TEXT NOT NULL DEFAULT 'unknown';
