-- Journey account sets ride on the bucket deltas and are stored packed. A batch of about a thousand
-- events wrote about 900 (bucket, account) rows, each repeating its bucket's key and adding an entry
-- to the index on `start`. Now each batch's delta row carries the accounts first seen in its bucket
-- as a JSON array (`accounts`, NULL when none), and the fold that adds the deltas to
-- `journey_buckets` also packs their accounts into one `journey_account_sets` row per bucket.
-- The `journey_accounts` view unpacks both, so every read still sees (bucket, account) pairs and the
-- distinct counts are unchanged.
ALTER TABLE journey_bucket_deltas ADD COLUMN accounts TEXT;
CREATE TABLE journey_account_sets (
    start INTEGER NOT NULL,
    stage TEXT NOT NULL,
    tag TEXT NOT NULL,
    touchpoint TEXT NOT NULL,
    accounts TEXT NOT NULL
);
INSERT INTO journey_account_sets (start, stage, tag, touchpoint, accounts)
SELECT start, stage, tag, touchpoint, json_group_array(DISTINCT account_id)
FROM journey_accounts
GROUP BY start, stage, tag, touchpoint;
DROP TABLE journey_accounts;
CREATE INDEX journey_account_sets_start ON journey_account_sets (start);
CREATE VIEW journey_accounts AS
    SELECT sets.start AS start, sets.stage AS stage, sets.tag AS tag,
           sets.touchpoint AS touchpoint, accounts.value AS account_id
    FROM journey_account_sets AS sets, json_each(sets.accounts) AS accounts
    UNION ALL
    SELECT deltas.start AS start, deltas.stage AS stage, deltas.tag AS tag,
           deltas.touchpoint AS touchpoint, accounts.value AS account_id
    FROM journey_bucket_deltas AS deltas, json_each(deltas.accounts) AS accounts;
