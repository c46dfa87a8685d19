-- A batch's journey deltas are written as one journal row instead of one row per bucket. A batch of
-- a thousand events fed a few hundred buckets, so each commit inserted a few hundred rows of sixteen
-- bound columns, and the fold read them all again. Now a commit appends one row holding the batch's
-- deltas as a JSON array of flat arrays:
--   [start, stage, tag, touchpoint, events, tickets, nps_responses, promoters, passives, detractors,
--    csat_responses, csat_sum, ces_responses, ces_sum, [account_id, ...]]
-- From time to time a commit (and every purge) folds the journal: sigloop adds up its deltas by
-- bucket, upserts one row per bucket into journey_buckets and one account-set row per bucket with
-- accounts into journey_account_sets, and empties the journal, all in that one transaction. The views unpack the journal, so every read
-- still sees every partial row and every (bucket, account) pair.

-- What the earlier layout had not folded yet is folded here, as its last fold would have.
INSERT INTO journey_buckets (start, stage, tag, touchpoint, contributor, events, tickets,
                             nps_responses, promoters, passives, detractors, csat_responses, csat_sum,
                             ces_responses, ces_sum)
SELECT start, stage, tag, touchpoint, contributor, SUM(events), SUM(tickets), SUM(nps_responses),
       SUM(promoters), SUM(passives), SUM(detractors), SUM(csat_responses), SUM(csat_sum),
       SUM(ces_responses), SUM(ces_sum)
FROM journey_bucket_deltas
GROUP BY start, stage, tag, touchpoint, contributor
ORDER BY start, stage, tag, touchpoint, contributor
ON CONFLICT (start, stage, tag, touchpoint, contributor) DO UPDATE SET
    events = events + excluded.events,
    tickets = tickets + excluded.tickets,
    nps_responses = nps_responses + excluded.nps_responses,
    promoters = promoters + excluded.promoters,
    passives = passives + excluded.passives,
    detractors = detractors + excluded.detractors,
    csat_responses = csat_responses + excluded.csat_responses,
    csat_sum = csat_sum + excluded.csat_sum,
    ces_responses = ces_responses + excluded.ces_responses,
    ces_sum = ces_sum + excluded.ces_sum;
INSERT INTO journey_account_sets (start, stage, tag, touchpoint, accounts)
SELECT deltas.start, deltas.stage, deltas.tag, deltas.touchpoint,
       json_group_array(DISTINCT accounts.value)
FROM journey_bucket_deltas AS deltas, json_each(deltas.accounts) AS accounts
GROUP BY deltas.start, deltas.stage, deltas.tag, deltas.touchpoint;

DROP VIEW journey_bucket_rows;
DROP VIEW journey_accounts;
DROP TABLE journey_bucket_deltas;

CREATE TABLE journey_journal (
    seq INTEGER PRIMARY KEY,
    deltas TEXT NOT NULL
);

-- Every partial row of every bucket, folded or not: what the journey figures are summed over. The
-- embedded mode has one contributor, the processor.
CREATE VIEW journey_bucket_rows AS
    SELECT start, stage, tag, touchpoint, contributor, events, tickets, nps_responses, promoters,
           passives, detractors, csat_responses, csat_sum, ces_responses, ces_sum
    FROM journey_buckets
    UNION ALL
    SELECT delta.value ->> 0, delta.value ->> 1, delta.value ->> 2, delta.value ->> 3, 'processor',
           delta.value ->> 4, delta.value ->> 5, delta.value ->> 6, delta.value ->> 7,
           delta.value ->> 8, delta.value ->> 9, delta.value ->> 10, delta.value ->> 11,
           delta.value ->> 12, delta.value ->> 13
    FROM journey_journal AS journal, json_each(journal.deltas) AS delta;

CREATE VIEW journey_accounts AS
    SELECT sets.start AS start, sets.stage AS stage, sets.tag AS tag,
           sets.touchpoint AS touchpoint, accounts.value AS account_id
    FROM journey_account_sets AS sets, json_each(sets.accounts) AS accounts
    UNION ALL
    SELECT delta.value ->> 0, delta.value ->> 1, delta.value ->> 2, delta.value ->> 3,
           accounts.value
    FROM journey_journal AS journal, json_each(journal.deltas) AS delta,
         json_each(delta.value, '$[14]') AS accounts;
