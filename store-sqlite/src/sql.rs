//! Every statement of the store, and the schema it runs on.
//!
//! The file is marked as ours by `PRAGMA application_id` and versioned by `PRAGMA user_version`
//! (both in the database header, so they are read without touching a table).

/// `PRAGMA application_id` of a decider database: "dcdr" in ASCII.
pub(crate) const APPLICATION_ID: i32 = 0x6463_6472;

/// The schema version this code writes and reads. A file with a higher `user_version` was
/// written by newer code and is refused.
pub(crate) const SCHEMA_VERSION: u32 = 5;

/// Migrations, in order: `MIGRATIONS[i]` takes the schema from version `i` to `i + 1`.
pub(crate) const MIGRATIONS: [&str; SCHEMA_VERSION as usize] = [
    r#"
CREATE TABLE events (
    -- The global position, gap-free in commit order: SQLite admits one writer at a time and a
    -- rolled-back append gives its numbers back (no AUTOINCREMENT, nothing is ever deleted).
    seq          INTEGER PRIMARY KEY,
    stream_id    TEXT    NOT NULL,
    category     TEXT    NOT NULL,
    revision     INTEGER NOT NULL,
    event_id     BLOB    NOT NULL UNIQUE,
    event_type   TEXT    NOT NULL,
    -- 0: JSON text, 1: opaque bytes.
    content_type INTEGER NOT NULL,
    payload      BLOB    NOT NULL,
    metadata     TEXT    NOT NULL,
    -- Microseconds since the Unix epoch.
    recorded_at  INTEGER NOT NULL,
    -- The first position and the length of the append that wrote the row: an exact repeat
    -- of that append is recognised by them.
    batch_start  INTEGER NOT NULL,
    batch_len    INTEGER NOT NULL,
    UNIQUE (stream_id, revision)
) STRICT;

CREATE TABLE checkpoints (
    projection   TEXT    PRIMARY KEY,
    commit_part  INTEGER NOT NULL,
    prepare_part INTEGER NOT NULL
) STRICT;

CREATE TABLE dead_letters (
    projection   TEXT    NOT NULL,
    event_id     BLOB    NOT NULL,
    stream_id    TEXT    NOT NULL,
    revision     INTEGER NOT NULL,
    commit_part  INTEGER NOT NULL,
    prepare_part INTEGER NOT NULL,
    reason       TEXT    NOT NULL,
    failed_at    INTEGER NOT NULL,
    PRIMARY KEY (projection, event_id)
) STRICT;

CREATE TABLE snapshots (
    stream_id     TEXT    PRIMARY KEY,
    revision      INTEGER NOT NULL,
    state_version INTEGER NOT NULL,
    payload       BLOB    NOT NULL
) STRICT;

CREATE TABLE leases (
    projection TEXT    PRIMARY KEY,
    owner      TEXT    NOT NULL,
    -- Milliseconds since the Unix epoch, by the holder's clock.
    expires_at INTEGER NOT NULL
) STRICT;
"#,
    // 2: the projection control plane (see `control.rs`): runners' reports, operators' requests.
    // Times are microseconds since the Unix epoch.
    r#"
CREATE TABLE projection_runners (
    projection        TEXT    NOT NULL,
    runner            TEXT    NOT NULL,
    state             TEXT    NOT NULL,
    error             TEXT,
    checkpoint_commit INTEGER,
    checkpoint_prepare INTEGER,
    head_commit       INTEGER,
    head_prepare      INTEGER,
    lag               INTEGER,
    events_per_second REAL    NOT NULL,
    interval_ms       INTEGER NOT NULL,
    -- By the runner's clock: reports of one runner are ordered by it.
    reported_at       INTEGER NOT NULL,
    PRIMARY KEY (projection, runner)
) STRICT;

CREATE TABLE projection_requests (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    projection   TEXT    NOT NULL,
    action       TEXT    NOT NULL,
    requested_at INTEGER NOT NULL,
    done_at      INTEGER,
    done_by      TEXT,
    succeeded    INTEGER,
    result       TEXT
) STRICT;
CREATE INDEX projection_requests_pending ON projection_requests (projection, id)
    WHERE done_at IS NULL;
"#,
    // 3: the tags of events, for reads by query and append conditions (see `dcb.rs`): one row
    // per tag of an event, found by tag in log order. Tags also stay in the metadata, which is
    // what reads return; events written before carry none (`$tags` is new with this version).
    r#"
CREATE TABLE event_tags (
    tag        TEXT    NOT NULL,
    seq        INTEGER NOT NULL,
    event_type TEXT    NOT NULL,
    PRIMARY KEY (tag, seq)
) STRICT, WITHOUT ROWID;
"#,
    // 4: the active version of each blue/green read model (see `control.rs`). Reads by
    // partition need no column: `decider_partition` (see `open.rs`) computes a stream's.
    r#"
CREATE TABLE projection_versions (
    grp         TEXT    PRIMARY KEY,
    active      TEXT    NOT NULL,
    switched_at INTEGER NOT NULL
) STRICT;
"#,
    // 5: the partition count of each partitioned projection, recorded by its first runner (see
    // `control.rs`).
    r#"
CREATE TABLE projection_partitions (
    projection  TEXT    PRIMARY KEY,
    count       INTEGER NOT NULL CHECK (count >= 1),
    recorded_at INTEGER NOT NULL
) STRICT;
"#,
];

/// Whether the file holds any schema object (someone else's tables, say).
pub(crate) const HAS_OBJECTS: &str = "SELECT EXISTS (SELECT 1 FROM sqlite_schema)";

pub(crate) const FIND_EVENT_ID: &str =
    "SELECT seq, stream_id, revision, batch_start, batch_len FROM events WHERE event_id = ?1";

pub(crate) const BATCH_IDS: &str =
    "SELECT event_id FROM events WHERE seq >= ?1 AND seq < ?1 + ?2 ORDER BY seq";

pub(crate) const LAST_REVISION: &str = "SELECT MAX(revision) FROM events WHERE stream_id = ?1";

/// The first row of an append. Its position is the one after the log's last (`MAX(seq)` is one
/// seek at the end of the table, inside the write lock) and starts the batch; it is read back
/// with `last_insert_rowid()`. (As `VALUES`, not `INSERT … SELECT`: SQLite would copy a
/// `SELECT` from the table it inserts into through a temporary table first.)
pub(crate) const INSERT_FIRST_EVENT: &str = "INSERT INTO events (seq, stream_id, category, \
     revision, event_id, event_type, content_type, payload, metadata, recorded_at, batch_start, \
     batch_len) VALUES ((SELECT COALESCE(MAX(seq), 0) + 1 FROM events), ?1, ?2, ?3, ?4, ?5, ?6, \
     ?7, ?8, ?9, (SELECT COALESCE(MAX(seq), 0) + 1 FROM events), ?10)";

/// One tag of the event at position `?2`.
pub(crate) const INSERT_TAG: &str =
    "INSERT INTO event_tags (tag, seq, event_type) VALUES (?1, ?2, ?3)";

/// The rows of an append after its first, at the positions and revisions that follow it.
pub(crate) const INSERT_EVENT: &str = "INSERT INTO events (seq, stream_id, category, revision, \
     event_id, event_type, content_type, payload, metadata, recorded_at, batch_start, batch_len) \
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)";

/// The `metadata` of an event that carries none (most events), as the writer serialises it: the
/// readers decode it without a parse.
pub(crate) const NO_METADATA: &str = "{}";

/// The columns [`crate::reads`] turns into a `RecordedEvent`, in its order.
pub(crate) const EVENT_COLUMNS: &str =
    "seq, stream_id, revision, event_id, event_type, content_type, payload, metadata, recorded_at";

pub(crate) fn read_stream_forward() -> String {
    format!(
        "SELECT {EVENT_COLUMNS} FROM events WHERE stream_id = ?1 AND revision >= ?2 \
         ORDER BY revision LIMIT ?3"
    )
}

pub(crate) fn read_stream_backward() -> String {
    format!(
        "SELECT {EVENT_COLUMNS} FROM events WHERE stream_id = ?1 AND revision <= ?2 \
         ORDER BY revision DESC LIMIT ?3"
    )
}

/// A page of the global log after `?1`; `?2` and `?3` are JSON arrays of the event types and
/// categories to pass, or NULL for all; `?6` is the partition of `?5` to pass, or `?5` NULL for
/// all (the log is read in order either way; the other partitions' rows are not decoded).
pub(crate) fn read_all_page() -> String {
    format!(
        "SELECT {EVENT_COLUMNS} FROM events WHERE seq > ?1 \
         AND (?2 IS NULL OR event_type IN (SELECT value FROM json_each(?2))) \
         AND (?3 IS NULL OR category IN (SELECT value FROM json_each(?3))) \
         AND (?5 IS NULL OR decider_partition(stream_id, ?5) = ?6) \
         ORDER BY seq LIMIT ?4"
    )
}

pub(crate) const RECORD_PARTITION_COUNT: &str = "INSERT INTO projection_partitions \
     (projection, count, recorded_at) VALUES (?1, ?2, ?3) ON CONFLICT (projection) DO NOTHING";

pub(crate) const PARTITION_COUNT: &str =
    "SELECT count FROM projection_partitions WHERE projection = ?1";

pub(crate) const ACTIVE_VERSION: &str = "SELECT active FROM projection_versions WHERE grp = ?1";

pub(crate) const FIRST_SWITCH: &str = "INSERT INTO projection_versions (grp, active, \
     switched_at) VALUES (?1, ?2, ?3) ON CONFLICT (grp) DO NOTHING";

pub(crate) const SWITCH_VERSION: &str = "UPDATE projection_versions SET active = ?2, \
     switched_at = ?3 WHERE grp = ?1 AND active = ?4";

pub(crate) const HEAD_POSITION: &str = "SELECT MAX(seq) FROM events";

pub(crate) const SAVE_SNAPSHOT: &str = "INSERT INTO snapshots (stream_id, revision, \
     state_version, payload) VALUES (?1, ?2, ?3, ?4) ON CONFLICT (stream_id) DO UPDATE SET \
     revision = excluded.revision, state_version = excluded.state_version, \
     payload = excluded.payload WHERE excluded.revision > snapshots.revision";

pub(crate) const LOAD_SNAPSHOT: &str =
    "SELECT revision, state_version, payload FROM snapshots WHERE stream_id = ?1";

pub(crate) const LOAD_CHECKPOINT: &str =
    "SELECT commit_part, prepare_part FROM checkpoints WHERE projection = ?1";

/// Creates a checkpoint that does not exist yet (the compare-and-set from "none").
pub(crate) const CREATE_CHECKPOINT: &str = "INSERT INTO checkpoints (projection, commit_part, \
     prepare_part) VALUES (?1, ?2, ?3) ON CONFLICT (projection) DO NOTHING";

/// Moves a checkpoint only from where the writer left it.
pub(crate) const MOVE_CHECKPOINT: &str = "UPDATE checkpoints SET commit_part = ?4, \
     prepare_part = ?5 WHERE projection = ?1 AND commit_part = ?2 AND prepare_part = ?3";

pub(crate) const DELETE_CHECKPOINT: &str = "DELETE FROM checkpoints WHERE projection = ?1";

pub(crate) const RECORD_DEAD_LETTER: &str = "INSERT INTO dead_letters (projection, event_id, \
     stream_id, revision, commit_part, prepare_part, reason, failed_at) \
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8) ON CONFLICT (projection, event_id) DO NOTHING";

pub(crate) const LIST_DEAD_LETTERS: &str = "SELECT event_id, stream_id, revision, commit_part, \
     prepare_part, reason, failed_at FROM dead_letters WHERE projection = ?1 \
     ORDER BY commit_part, prepare_part";

pub(crate) const DELETE_DEAD_LETTER: &str =
    "DELETE FROM dead_letters WHERE projection = ?1 AND event_id = ?2";

/// Takes a lease that is free, expired, or already this owner's.
pub(crate) const TAKE_LEASE: &str = "INSERT INTO leases (projection, owner, expires_at) \
     VALUES (?1, ?2, ?3) ON CONFLICT (projection) DO UPDATE SET owner = excluded.owner, \
     expires_at = excluded.expires_at WHERE leases.expires_at < ?4 OR leases.owner = excluded.owner";

/// The owner of a lease, to see whether it is a process that died.
pub(crate) const LEASE_OWNER: &str = "SELECT owner FROM leases WHERE projection = ?1";

/// Takes a lease from the owner `?2`, proven dead, unless someone took it meanwhile.
pub(crate) const TAKE_LEASE_FROM: &str =
    "UPDATE leases SET owner = ?3, expires_at = ?4 WHERE projection = ?1 AND owner = ?2";

/// Extends a lease this owner still holds.
pub(crate) const RENEW_LEASE: &str =
    "UPDATE leases SET expires_at = ?3 WHERE projection = ?1 AND owner = ?2";

pub(crate) const RELEASE_LEASE: &str = "DELETE FROM leases WHERE projection = ?1 AND owner = ?2";

/// A runner's report, replacing its previous one; reports of the same projection's runners that
/// have not reported for a week are forgotten (a second statement, in the same transaction).
pub(crate) const REPORT: &str = "INSERT INTO projection_runners (projection, runner, state, \
     error, checkpoint_commit, checkpoint_prepare, head_commit, head_prepare, lag, \
     events_per_second, interval_ms, reported_at) \
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12) \
     ON CONFLICT (projection, runner) DO UPDATE SET state = excluded.state, \
     error = excluded.error, checkpoint_commit = excluded.checkpoint_commit, \
     checkpoint_prepare = excluded.checkpoint_prepare, head_commit = excluded.head_commit, \
     head_prepare = excluded.head_prepare, lag = excluded.lag, \
     events_per_second = excluded.events_per_second, interval_ms = excluded.interval_ms, \
     reported_at = excluded.reported_at";

pub(crate) const FORGET_GONE_RUNNERS: &str = "DELETE FROM projection_runners \
     WHERE projection = ?1 AND runner <> ?2 AND reported_at < ?3";

pub(crate) const REPORTS: &str = "SELECT projection, runner, state, error, checkpoint_commit, \
     checkpoint_prepare, head_commit, head_prepare, lag, events_per_second, interval_ms, \
     reported_at FROM projection_runners ORDER BY projection, runner";

pub(crate) const REQUEST: &str = "INSERT INTO projection_requests (projection, action, \
     requested_at) VALUES (?1, ?2, ?3)";

const REQUEST_COLUMNS: &str =
    "id, projection, action, requested_at, done_at, done_by, succeeded, result";

pub(crate) fn pending_requests() -> String {
    format!(
        "SELECT {REQUEST_COLUMNS} FROM projection_requests \
         WHERE projection = ?1 AND done_at IS NULL ORDER BY id"
    )
}

pub(crate) fn request_status() -> String {
    format!("SELECT {REQUEST_COLUMNS} FROM projection_requests WHERE id = ?1")
}

/// Marks a request done, unless it is already: the first completion stands.
pub(crate) const COMPLETE_REQUEST: &str = "UPDATE projection_requests SET done_at = ?2, \
     done_by = ?3, succeeded = ?4, result = ?5 WHERE id = ?1 AND done_at IS NULL";
