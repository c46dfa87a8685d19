-- The distributed mode's schema, shared by every sigloop instance. Times are milliseconds since the
-- Unix epoch (UTC) in BIGINT; JSON is kept as TEXT, because storage only ever hands it to serde whole
-- (JSONB would reparse every record on every write, and refuses the escape \u0000); the few fields
-- that SQL filters or sums have columns of their own.
--
-- Identifier columns that are ordered or compared by range use the "C" collation, so that ORDER BY
-- and the tag-prefix ranges compare bytes, as SQLite does, whatever the database's locale.

-- The event log: events and operator actions in append order. Identity values are never reused, so
-- sequence numbers do not repeat after purges. Appends take an advisory lock before inserting, so
-- that sequence numbers are also allocated in commit order (see `append`).
CREATE TABLE event_log (
    seq BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    kind TEXT NOT NULL,
    source TEXT COLLATE "C" NOT NULL,
    id TEXT COLLATE "C" NOT NULL,
    event_type TEXT NOT NULL,
    event_time BIGINT NOT NULL,
    received_at BIGINT NOT NULL,
    payload TEXT NOT NULL,
    UNIQUE (source, id)
);
CREATE INDEX event_log_received_at ON event_log (received_at);

-- The processor's committed position in the log and its clock, updated with every batch's effects.
CREATE TABLE processor_state (
    name TEXT PRIMARY KEY,
    offset_seq BIGINT NOT NULL,
    clock BIGINT NOT NULL
);

CREATE TABLE accounts (
    account_id TEXT COLLATE "C" PRIMARY KEY,
    record TEXT NOT NULL
);

-- One row per loop generation. The indexed columns serve the API's filters, the KPI columns
-- (acknowledged_at to recurrence) serve `loop_timings` without parsing records; `record` holds the
-- whole row as the core keeps it. `ordinal` numbers loops in creation order for paging (an upsert
-- that updates a row keeps it).
CREATE TABLE loops (
    id TEXT COLLATE "C" PRIMARY KEY,
    ordinal BIGINT GENERATED ALWAYS AS IDENTITY UNIQUE,
    key TEXT COLLATE "C" NOT NULL,
    generation BIGINT NOT NULL,
    kind TEXT COLLATE "C" NOT NULL,
    account_id TEXT COLLATE "C",
    tag TEXT COLLATE "C" NOT NULL,
    queue TEXT COLLATE "C" NOT NULL,
    owner TEXT NOT NULL,
    state TEXT COLLATE "C" NOT NULL,
    priority BIGINT NOT NULL,
    breached BOOLEAN NOT NULL,
    opened_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    acknowledged_at BIGINT,
    closed_at BIGINT,
    close_reason TEXT,
    has_sla BOOLEAN NOT NULL,
    recurrence BIGINT NOT NULL,
    record TEXT NOT NULL,
    UNIQUE (key, generation)
);
CREATE INDEX loops_queue_state ON loops (queue, state);
CREATE INDEX loops_account ON loops (account_id);
CREATE INDEX loops_tag ON loops (tag);
CREATE INDEX loops_opened_at ON loops (opened_at);

-- The decision trace, written once when the loop opens; kept apart so that the frequent updates of a
-- loop row do not copy it.
CREATE TABLE loop_traces (
    loop_id TEXT COLLATE "C" PRIMARY KEY,
    trace TEXT NOT NULL
);

CREATE TABLE loop_history (
    loop_id TEXT COLLATE "C" NOT NULL,
    seq BIGINT NOT NULL,
    at BIGINT NOT NULL,
    actor TEXT NOT NULL,
    action TEXT NOT NULL,
    from_state TEXT,
    to_state TEXT NOT NULL,
    reason TEXT,
    PRIMARY KEY (loop_id, seq)
);

CREATE TABLE loop_evidence (
    ordinal BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    loop_id TEXT COLLATE "C" NOT NULL,
    record TEXT NOT NULL
);
CREATE INDEX loop_evidence_loop ON loop_evidence (loop_id, ordinal);

-- Account signals; `tag` and `stage` are columns for the account's journey.
CREATE TABLE signals (
    ordinal BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    account_id TEXT COLLATE "C" NOT NULL,
    time BIGINT NOT NULL,
    stage TEXT COLLATE "C" NOT NULL,
    tag TEXT COLLATE "C" NOT NULL,
    record TEXT NOT NULL
);
CREATE INDEX signals_account_time ON signals (account_id, time);

-- Detector and router state, so that replays and restarts see the same windows and cursors.
CREATE TABLE repeat_windows (
    account_id TEXT COLLATE "C" NOT NULL,
    tag TEXT COLLATE "C" NOT NULL,
    times TEXT NOT NULL,
    PRIMARY KEY (account_id, tag)
);

CREATE TABLE round_robin (
    team TEXT COLLATE "C" PRIMARY KEY,
    cursor BIGINT NOT NULL
);

-- Rejected events, with a code from the fixed set and the raw input (cut at 64 KiB).
CREATE TABLE dead_letters (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    received_at BIGINT NOT NULL,
    origin TEXT NOT NULL,
    request_index BIGINT,
    event_source TEXT,
    event_id TEXT,
    code TEXT NOT NULL,
    message TEXT NOT NULL,
    payload TEXT NOT NULL
);
CREATE INDEX dead_letters_received_at ON dead_letters (received_at);

-- Journey figures at the grain (the shortest configured window): one row per bucket, to which every
-- instance adds its batches' figures with an upsert (figures are sums, so additions commute). Rows
-- are updated in place again and again: free space on each page lets PostgreSQL keep the new versions
-- on the same page (HOT updates, no index writes).
CREATE TABLE journey_buckets (
    start BIGINT NOT NULL,
    stage TEXT COLLATE "C" NOT NULL,
    tag TEXT COLLATE "C" NOT NULL,
    touchpoint TEXT COLLATE "C" NOT NULL,
    events BIGINT NOT NULL,
    tickets BIGINT NOT NULL,
    nps_responses BIGINT NOT NULL,
    promoters BIGINT NOT NULL,
    passives BIGINT NOT NULL,
    detractors BIGINT NOT NULL,
    csat_responses BIGINT NOT NULL,
    csat_sum BIGINT NOT NULL,
    ces_responses BIGINT NOT NULL,
    ces_sum BIGINT NOT NULL,
    PRIMARY KEY (start, stage, tag, touchpoint)
) WITH (fillfactor = 70);

-- The accounts seen in each bucket: distinct counts do not add, so they are counted over the union of
-- the groups' sets. Unique, inserted with ON CONFLICT DO NOTHING: any instance may write a pair, and
-- a pair written twice is stored once.
CREATE TABLE journey_accounts (
    start BIGINT NOT NULL,
    stage TEXT COLLATE "C" NOT NULL,
    tag TEXT COLLATE "C" NOT NULL,
    touchpoint TEXT COLLATE "C" NOT NULL,
    account_id TEXT COLLATE "C" NOT NULL,
    PRIMARY KEY (start, stage, tag, touchpoint, account_id)
);

-- A journey detector fired for a window, stage and tag: it fires there at most once, restarts
-- included. (`window` is a reserved word in PostgreSQL, hence `window_name`.)
CREATE TABLE journey_fired (
    window_name TEXT NOT NULL,
    start BIGINT NOT NULL,
    stage TEXT COLLATE "C" NOT NULL,
    tag TEXT COLLATE "C" NOT NULL,
    detector TEXT NOT NULL,
    PRIMARY KEY (window_name, start, stage, tag, detector)
);
CREATE INDEX journey_fired_start ON journey_fired (start);

CREATE TABLE loop_links (
    journey_loop TEXT COLLATE "C" NOT NULL,
    account_loop TEXT COLLATE "C" NOT NULL,
    at BIGINT NOT NULL,
    PRIMARY KEY (journey_loop, account_loop)
);
CREATE INDEX loop_links_account ON loop_links (account_loop);

-- Detectors that need time: their pending timers, the metric series they judge, the milestones
-- reached. Loop deadlines need no table: they are fields of the loop records.
CREATE TABLE account_timers (
    key TEXT COLLATE "C" PRIMARY KEY,
    due BIGINT NOT NULL,
    record TEXT NOT NULL
);

CREATE TABLE metric_series (
    key TEXT COLLATE "C" PRIMARY KEY,
    record TEXT NOT NULL
);

CREATE TABLE account_milestones (
    account_id TEXT COLLATE "C" NOT NULL,
    milestone TEXT COLLATE "C" NOT NULL,
    at BIGINT NOT NULL,
    PRIMARY KEY (account_id, milestone)
);

-- Kafka consumer positions: the next offset to read of each partition, moved by compare-and-set in
-- the transaction of the batch that read up to it.
CREATE TABLE source_offsets (
    topic TEXT COLLATE "C" NOT NULL,
    partition INTEGER NOT NULL,
    next_offset BIGINT NOT NULL,
    PRIMARY KEY (topic, partition)
);

-- Loop events to relay (Kafka's loops topic, webhooks), numbered in commit order: batches take an
-- advisory lock before inserting, so a relay reading `id > cursor` never skips a row committed late.
CREATE TABLE outbox (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    created_at BIGINT NOT NULL,
    loop_id TEXT NOT NULL,
    loop_key TEXT NOT NULL,
    account_id TEXT,
    event TEXT NOT NULL,
    at BIGINT NOT NULL,
    payload TEXT NOT NULL
);

-- Each sink's cursor (every event up to `delivered` is out) and the lease of the one instance that
-- relays it.
CREATE TABLE outbox_sinks (
    sink TEXT PRIMARY KEY,
    delivered BIGINT NOT NULL,
    holder TEXT NOT NULL,
    lease_until BIGINT NOT NULL
);

-- The (source, id) of every event the distributed mode processed, for the retention period: Kafka can
-- deliver an id twice (a client re-sending after an error), and a repeat must change nothing.
CREATE TABLE seen_events (
    source TEXT COLLATE "C" NOT NULL,
    id TEXT COLLATE "C" NOT NULL,
    seen_at BIGINT NOT NULL,
    PRIMARY KEY (source, id)
);
CREATE INDEX seen_events_seen_at ON seen_events (seen_at);
