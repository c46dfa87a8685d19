-- Journey account sets stored packed: one row per bucket and batch, holding the accounts the batch
-- saw first in that bucket as an array, instead of one row per (bucket, account) pair under a
-- primary key. A batch of 5,000 events wrote about 2,800 pairs, each a unique-index insert scattered
-- over the day's keys. The rows now are appended with no uniqueness: a pair written twice (by two
-- instances, or after a restart) changes no COUNT(DISTINCT). The `journey_accounts` view unpacks the
-- arrays, so every read still sees (bucket, account) pairs.
CREATE TABLE journey_account_sets (
    start BIGINT NOT NULL,
    stage TEXT COLLATE "C" NOT NULL,
    tag TEXT COLLATE "C" NOT NULL,
    touchpoint TEXT COLLATE "C" NOT NULL,
    accounts TEXT[] COLLATE "C" NOT NULL
);
INSERT INTO journey_account_sets (start, stage, tag, touchpoint, accounts)
SELECT start, stage, tag, touchpoint, array_agg(account_id ORDER BY account_id)
FROM journey_accounts
GROUP BY start, stage, tag, touchpoint;
DROP TABLE journey_accounts;
CREATE INDEX journey_account_sets_start ON journey_account_sets (start);
CREATE VIEW journey_accounts AS
    SELECT sets.start, sets.stage, sets.tag, sets.touchpoint, account.account_id
    FROM journey_account_sets AS sets
    CROSS JOIN LATERAL unnest(sets.accounts) AS account (account_id);
