-- What the distributed mode adds, kept in the embedded schema too so that both backends implement the
-- whole storage trait: Kafka consumer positions, the outbox of loop events and its sinks' cursors.

-- The next offset to read of each partition, moved by compare-and-set in the transaction of the
-- batch that read up to it.
CREATE TABLE source_offsets (
    topic TEXT NOT NULL,
    partition INTEGER NOT NULL,
    next_offset INTEGER NOT NULL,
    PRIMARY KEY (topic, partition)
) WITHOUT ROWID;

-- Loop events to relay, numbered in commit order (SQLite has one writer, so AUTOINCREMENT order is
-- commit order; AUTOINCREMENT also keeps ids from repeating after purges, so a sink's cursor never
-- skips a new row).
CREATE TABLE outbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    created_at INTEGER NOT NULL,
    loop_id TEXT NOT NULL,
    loop_key TEXT NOT NULL,
    account_id TEXT,
    event TEXT NOT NULL,
    at INTEGER NOT NULL,
    payload TEXT NOT NULL
);

-- Each sink's cursor (every event up to `delivered` is out) and the lease of the one process that
-- relays it.
CREATE TABLE outbox_sinks (
    sink TEXT PRIMARY KEY,
    delivered INTEGER NOT NULL,
    holder TEXT NOT NULL,
    lease_until INTEGER NOT NULL
) WITHOUT ROWID;

-- The (source, id) of every event the distributed mode processed, for the retention period: Kafka can
-- deliver an id twice (a client re-sending after an error), and a repeat must change nothing.
CREATE TABLE seen_events (
    source TEXT NOT NULL,
    id TEXT NOT NULL,
    seen_at INTEGER NOT NULL,
    PRIMARY KEY (source, id)
) WITHOUT ROWID;
CREATE INDEX seen_events_seen_at ON seen_events (seen_at);
