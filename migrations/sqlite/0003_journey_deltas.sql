-- Journey figures written as an append-only log of per-batch deltas, folded into journey_buckets from
-- time to time. Upserting every batch's buckets in place rewrote most of the day's bucket pages on every
-- commit (each bucket row is touched again and again); appending writes only the new rows, and the fold
-- rewrites each bucket once per few dozen batches. A figure is the SUM over both tables
-- (journey_bucket_rows).
CREATE TABLE journey_bucket_deltas (
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
    ces_sum INTEGER NOT NULL
);

-- Every partial row of every bucket, folded or not: what the journey figures are summed over.
CREATE VIEW journey_bucket_rows AS
    SELECT start, stage, tag, touchpoint, contributor, events, tickets, nps_responses, promoters,
           passives, detractors, csat_responses, csat_sum, ces_responses, ces_sum
    FROM journey_buckets
    UNION ALL
    SELECT start, stage, tag, touchpoint, contributor, events, tickets, nps_responses, promoters,
           passives, detractors, csat_responses, csat_sum, ces_responses, ces_sum
    FROM journey_bucket_deltas;
