-- The embedded mode's schema. Times are milliseconds since the Unix epoch (UTC).

-- The durable event log: events and operator actions in append order. `seq` never repeats, even
-- after purges, because of AUTOINCREMENT. (source, id) is unique: the duplicate-detection window is
-- the retention of this table.
CREATE TABLE event_log (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    kind TEXT NOT NULL,
    source TEXT NOT NULL,
    id TEXT NOT NULL,
    event_type TEXT NOT NULL,
    event_time INTEGER NOT NULL,
    received_at INTEGER NOT NULL,
    payload TEXT NOT NULL,
    UNIQUE (source, id)
);
CREATE INDEX event_log_received_at ON event_log (received_at);

-- The processor's committed position in the log and its clock, updated with every batch's effects.
CREATE TABLE processor_state (
    name TEXT PRIMARY KEY,
    offset_seq INTEGER NOT NULL,
    clock INTEGER NOT NULL
);

CREATE TABLE accounts (
    account_id TEXT PRIMARY KEY,
    record TEXT NOT NULL
);

-- One row per loop generation. The indexed columns serve the API's filters; `record` holds the whole
-- row as the core keeps it.
CREATE TABLE loops (
    id TEXT PRIMARY KEY,
    key TEXT NOT NULL,
    generation INTEGER NOT NULL,
    kind TEXT NOT NULL,
    account_id TEXT,
    tag TEXT NOT NULL,
    queue TEXT NOT NULL,
    owner TEXT NOT NULL,
    state TEXT NOT NULL,
    priority INTEGER NOT NULL,
    breached INTEGER NOT NULL,
    opened_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    record TEXT NOT NULL,
    UNIQUE (key, generation)
);
CREATE INDEX loops_queue_state ON loops (queue, state);
CREATE INDEX loops_account ON loops (account_id);
CREATE INDEX loops_tag ON loops (tag);

-- The decision trace, written once when the loop opens; kept apart so that the frequent updates of a
-- loop row do not rewrite it.
CREATE TABLE loop_traces (
    loop_id TEXT PRIMARY KEY,
    trace TEXT NOT NULL
);

CREATE TABLE loop_history (
    loop_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    at INTEGER NOT NULL,
    actor TEXT NOT NULL,
    action TEXT NOT NULL,
    from_state TEXT,
    to_state TEXT NOT NULL,
    reason TEXT,
    PRIMARY KEY (loop_id, seq)
);

CREATE TABLE loop_evidence (
    ordinal INTEGER PRIMARY KEY AUTOINCREMENT,
    loop_id TEXT NOT NULL,
    record TEXT NOT NULL
);
CREATE INDEX loop_evidence_loop ON loop_evidence (loop_id, ordinal);

CREATE TABLE signals (
    ordinal INTEGER PRIMARY KEY AUTOINCREMENT,
    account_id TEXT NOT NULL,
    time INTEGER NOT NULL,
    record TEXT NOT NULL
);
CREATE INDEX signals_account_time ON signals (account_id, time);

-- Detector and router state, so that replays and restarts see the same windows and cursors.
CREATE TABLE repeat_windows (
    account_id TEXT NOT NULL,
    tag TEXT NOT NULL,
    times TEXT NOT NULL,
    PRIMARY KEY (account_id, tag)
);

CREATE TABLE round_robin (
    team TEXT PRIMARY KEY,
    cursor INTEGER NOT NULL
);

-- Rejected events, with a code from the fixed set and the raw input (cut at 64 KiB).
CREATE TABLE dead_letters (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    received_at INTEGER NOT NULL,
    origin TEXT NOT NULL,
    request_index INTEGER,
    event_source TEXT,
    event_id TEXT,
    code TEXT NOT NULL,
    message TEXT NOT NULL,
    payload TEXT NOT NULL
);
CREATE INDEX dead_letters_received_at ON dead_letters (received_at);
