//! Every SQL statement of the adapter, in one place. `{schema}` stands for the quoted schema name
//! and is filled in once, when a store is built.

/// Migrations, in order; migration `n` (1-based) is `MIGRATIONS[n - 1]`. Never edit one that has
/// shipped: add the next.
pub(crate) const MIGRATIONS: &[&str] = &[
    // 1: the log, checkpoints, dead letters and the append function.
    r#"
CREATE TABLE {schema}.events (
    global_position bigint GENERATED ALWAYS AS IDENTITY,
    -- The order of the global log is (transaction_id, global_position): identities are handed
    -- out at insert but become visible at commit, so they alone would let a reader skip the
    -- events of a transaction that commits late. See `read_all_page`.
    transaction_id  xid8 NOT NULL DEFAULT pg_current_xact_id(),
    stream_id       text NOT NULL,
    category        text NOT NULL GENERATED ALWAYS AS (split_part(stream_id, '-', 1)) STORED,
    revision        bigint NOT NULL,
    event_id        uuid NOT NULL,
    event_type      text NOT NULL,
    data            jsonb,
    binary_data     bytea,
    metadata        jsonb NOT NULL,
    recorded_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (stream_id, revision),
    UNIQUE (event_id),
    CHECK ((data IS NULL) <> (binary_data IS NULL))
);
CREATE INDEX events_global_order ON {schema}.events (transaction_id, global_position);

CREATE TABLE {schema}.checkpoints (
    projection      text PRIMARY KEY,
    transaction_id  xid8 NOT NULL,
    global_position bigint NOT NULL,
    updated_at      timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE {schema}.dead_letters (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    projection      text NOT NULL,
    event_id        uuid NOT NULL,
    stream_id       text NOT NULL,
    revision        bigint NOT NULL,
    transaction_id  xid8 NOT NULL,
    global_position bigint NOT NULL,
    error           text NOT NULL,
    failed_at       timestamptz NOT NULL DEFAULT now(),
    UNIQUE (projection, event_id)
);

-- Appends a batch to one stream, atomically, in one round trip.
-- p_expected_kind: 0 any, 1 no stream, 2 stream exists, 3 exactly p_expected_revision.
-- Returns one row: outcome 'ok' (written), 'repeat' (the same ids were appended before: the
-- original result), 'conflict' (wrong expected version; next_revision - 1 is the actual last
-- revision, NULL revision: no stream) or 'reused_ids' (some ids exist, not as this batch).
CREATE FUNCTION {schema}.append_events(
    p_stream text,
    p_expected_kind smallint,
    p_expected_revision bigint,
    p_ids uuid[],
    p_types text[],
    p_data jsonb[],
    p_binary_data bytea[],
    p_metadata jsonb[]
) RETURNS TABLE (outcome text, next_revision bigint, transaction_id bigint, global_position bigint)
LANGUAGE plpgsql AS $$
DECLARE
    v_last bigint;
    v_inserted bigint;
    v_transaction bigint;
    v_position bigint;
    v_found bigint;
    v_repeat boolean;
    v_found_first bigint;
    v_found_last bigint;
    v_found_transaction bigint;
    v_found_position bigint;
BEGIN
    -- One caller of this function per stream at a time (and nobody else waits): the lock is
    -- per stream hash, taken for the rest of this transaction. Appends of the fast path
    -- (`FAST_APPEND`) take no lock: if one takes the revision chosen here, the insert below
    -- fails on the primary key and the caller calls again.
    PERFORM pg_advisory_xact_lock(hashtextextended('{schema}' || p_stream, 0));
    -- The stream's version is its last revision, read backwards off the primary key.
    SELECT max(e.revision) INTO v_last FROM {schema}.events e WHERE e.stream_id = p_stream;
    IF (CASE p_expected_kind
        WHEN 0 THEN true
        WHEN 1 THEN v_last IS NULL
        WHEN 2 THEN v_last IS NOT NULL
        ELSE v_last IS NOT DISTINCT FROM p_expected_revision
    END) THEN
        -- The unique index on event_id tells whether an id was appended before, in the same
        -- probe the insert makes anyway: no lookup ahead of the common case.
        WITH inserted AS (
            INSERT INTO {schema}.events
                (stream_id, revision, event_id, event_type, data, binary_data, metadata)
            SELECT p_stream, coalesce(v_last, -1) + b.ord, b.id, b.type, b.data, b.binary_data,
                b.metadata
            FROM unnest(p_ids, p_types, p_data, p_binary_data, p_metadata)
                WITH ORDINALITY AS b(id, type, data, binary_data, metadata, ord)
            ORDER BY b.ord
            ON CONFLICT (event_id) DO NOTHING
            RETURNING events.transaction_id, events.global_position
        )
        SELECT count(*), max(i.transaction_id::text::bigint), max(i.global_position)
        INTO v_inserted, v_transaction, v_position
        FROM inserted i;
        IF v_inserted = cardinality(p_ids) THEN
            RETURN QUERY SELECT 'ok'::text, coalesce(v_last, -1) + cardinality(p_ids) + 1,
                v_transaction, v_position;
            RETURN;
        END IF;
        -- Some ids exist: the batch is a repeat or a mistake, not new events. Take back the
        -- rows just inserted (nobody else has seen them) and answer as below. Only this
        -- transaction's own rows: a fast-path append may have committed rows past `v_last`
        -- since it was read, and those are acknowledged events.
        DELETE FROM {schema}.events e
        WHERE e.stream_id = p_stream AND e.revision > coalesce(v_last, -1)
          AND e.transaction_id = pg_current_xact_id();
    END IF;

    -- The expectation failed, or ids exist. An idempotent retry is recognised whatever the
    -- expectation: after a lost reply the stream has moved past p_expected because of this very
    -- batch. It is a repeat when the ids are exactly one earlier append: all in this stream, at
    -- consecutive revisions in batch order, written by one transaction, with no event of that
    -- transaction just before or after them.
    SELECT count(*),
           count(*) = cardinality(p_ids) AND bool_and(e.stream_id = p_stream)
               AND min(e.revision - b.ord) = max(e.revision - b.ord)
               AND min(e.transaction_id::text::bigint) = max(e.transaction_id::text::bigint),
           min(e.revision), max(e.revision), max(e.transaction_id::text::bigint),
           max(e.global_position)
    INTO v_found, v_repeat, v_found_first, v_found_last, v_found_transaction, v_found_position
    -- LATERAL keeps the lookup on the event_id index: PL/pgSQL caches a generic plan per
    -- connection, and a plain join planned while the table was small stays a hash join over a
    -- sequential scan of every event (22 ms a call at 200k events, measured).
    FROM unnest(p_ids) WITH ORDINALITY AS b(id, ord)
    CROSS JOIN LATERAL (
        SELECT x.stream_id, x.revision, x.transaction_id, x.global_position
        FROM {schema}.events x WHERE x.event_id = b.id
    ) e;
    IF v_repeat THEN
        v_repeat := NOT EXISTS (
            SELECT 1 FROM {schema}.events e
            WHERE e.stream_id = p_stream
              AND e.revision IN (v_found_first - 1, v_found_last + 1)
              AND e.transaction_id::text::bigint = v_found_transaction);
    END IF;
    IF v_found = 0 THEN
        RETURN QUERY SELECT 'conflict'::text, v_last + 1, NULL::bigint, NULL::bigint;
    ELSIF v_repeat THEN
        RETURN QUERY SELECT 'repeat'::text, v_found_last + 1, v_found_transaction,
            v_found_position;
    ELSE
        RETURN QUERY SELECT 'reused_ids'::text, NULL::bigint, NULL::bigint, NULL::bigint;
    END IF;
END;
$$;
"#,
    // 2: the latest snapshot of each stream's state (see `snapshots.rs`).
    r#"
CREATE TABLE {schema}.snapshots (
    stream_id     text PRIMARY KEY,
    -- The last revision folded into the state.
    revision      bigint NOT NULL,
    -- The version of the state's shape; a handler ignores snapshots of another version.
    state_version int NOT NULL,
    state         jsonb NOT NULL,
    taken_at      timestamptz NOT NULL DEFAULT now()
);
"#,
    // 3: the projection control plane (see `control.rs`): runners' reports, operators' requests.
    r#"
CREATE TABLE {schema}.projection_runners (
    projection             text NOT NULL,
    runner                 text NOT NULL,
    state                  text NOT NULL,
    error                  text,
    checkpoint_transaction bigint,
    checkpoint_position    bigint,
    head_transaction       bigint,
    head_position          bigint,
    lag                    bigint,
    events_per_second      double precision NOT NULL,
    interval_ms            bigint NOT NULL,
    -- By the runner's clock: reports of one runner are ordered by it.
    reported_at            timestamptz NOT NULL,
    PRIMARY KEY (projection, runner)
);

CREATE TABLE {schema}.projection_requests (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    projection   text NOT NULL,
    action       text NOT NULL,
    requested_at timestamptz NOT NULL DEFAULT now(),
    done_at      timestamptz,
    done_by      text,
    succeeded    boolean,
    result       text
);
-- What a runner looks for at every status interval: its projection's pending requests.
CREATE INDEX projection_requests_pending ON {schema}.projection_requests (projection, id)
    WHERE done_at IS NULL;
"#,
    // 4: dynamic consistency boundaries (see `dcb.rs`): events' tags, indexed, and the
    // conditional append.
    r#"
-- The event's tags (its metadata's `$tags`), NULL for an untagged event: a NULL column costs
-- an untagged append nothing.
ALTER TABLE {schema}.events ADD COLUMN tags text[];

-- One row per tag of a tagged event. A btree in global order per tag, rather than a GIN index
-- on `events.tags`: a page of a tag's events after a position is one ordered range scan that
-- starts at the position (a GIN index returns every event of the tag, to be sorted, on every
-- page), the condition check is one probe, and the plan cannot drift to a walk of the log.
CREATE TABLE {schema}.event_tags (
    tag             text NOT NULL,
    transaction_id  xid8 NOT NULL,
    global_position bigint NOT NULL,
    PRIMARY KEY (tag, transaction_id, global_position)
);

-- Events appended before this migration with tags in their metadata.
UPDATE {schema}.events
SET tags = ARRAY(SELECT DISTINCT jsonb_array_elements_text(metadata -> '$tags') ORDER BY 1)
WHERE jsonb_typeof(metadata -> '$tags') = 'array' AND metadata -> '$tags' <> '[]'::jsonb;
INSERT INTO {schema}.event_tags (tag, transaction_id, global_position)
SELECT g.tag, e.transaction_id, e.global_position
FROM {schema}.events e CROSS JOIN LATERAL unnest(e.tags) AS g(tag)
WHERE e.tags IS NOT NULL;

-- Appends a batch of tagged events, or any batch on a DCB condition, in one round trip.
-- Arguments as for append_events, and p_items: NULL for an unconditional append, else the
-- condition's query as a JSON array of items {"types": [..], "tags": [..]} (tags sorted), with
-- p_after_transaction/p_after_position the position it was decided after ((0, 0): none).
-- Returns append_events' outcomes, and 'condition_failed' with the first matching event's
-- position, stream and type.
--
-- The locking protocol (ADR 11), all transaction-scoped advisory locks, keyed
-- hashtextextended('decider-dcb:<schema>:<key>', 0), taken in the order of their keys so that
-- two appends never wait for each other in a cycle:
-- - SHARED on 'all', on 'type:<T>' for every type written and 'tag:<t>' for every tag written;
-- - EXCLUSIVE, per item of the condition, on 'tag:<its first tag>' (every event the item
--   matches carries that tag, so its writer holds it shared), else on 'type:<T>' for each of
--   its types, else (an item matching everything) on 'all'; a key wanted both ways is taken
--   exclusive;
-- - EXCLUSIVE on the stream's key of append_events, so that it is taken in the same order.
-- The condition is checked by a later statement than the one that got the locks: at READ
-- COMMITTED each statement of a VOLATILE function takes a new snapshot, so the check sees
-- every event whose writer held a conflicting lock, committed before this append got it.
CREATE FUNCTION {schema}.append_tagged_events(
    p_stream text,
    p_expected_kind smallint,
    p_expected_revision bigint,
    p_ids uuid[],
    p_types text[],
    p_data jsonb[],
    p_binary_data bytea[],
    p_metadata jsonb[],
    p_items jsonb,
    p_after_transaction bigint,
    p_after_position bigint
) RETURNS TABLE (outcome text, next_revision bigint, transaction_id bigint,
    global_position bigint, matched_stream text, matched_type text)
LANGUAGE plpgsql
-- Generic plans: re-planning these statements for each call's values (PostgreSQL keeps doing
-- so when it judges a generic plan dearer) cost 1 ms a call, more than the rest of the append
-- (measured). Every lookup below is written so that its generic plan is an index probe
-- whatever the table's size when it was planned (LATERAL ... LIMIT 1, as in append_events).
SET plan_cache_mode = force_generic_plan
AS $$
DECLARE
    v_prefix constant text := 'decider-dcb:' || btrim('{schema}', '"') || ':';
    v_after xid8 := p_after_transaction::text::xid8;
    v_key bigint;
    v_exclusive boolean;
    v_item jsonb;
    v_types text[];
    v_tags text[];
    v_last bigint;
    v_inserted bigint;
    v_transaction bigint;
    v_position bigint;
    v_match_transaction xid8;
    v_match_position bigint;
    v_match_stream text;
    v_match_type text;
    v_first_transaction xid8;
    v_first_position bigint;
    v_first_stream text;
    v_first_type text;
BEGIN
    FOR v_key, v_exclusive IN
        WITH keys (key, exclusive) AS (
            SELECT v_prefix || 'all', false
            UNION ALL
            SELECT v_prefix || 'type:' || t, false FROM unnest(p_types) AS t
            UNION ALL
            SELECT v_prefix || 'tag:' || g, false
            FROM unnest(p_metadata) AS m
            CROSS JOIN LATERAL jsonb_array_elements_text(
                CASE WHEN jsonb_typeof(m -> '$tags') = 'array' THEN m -> '$tags' END) AS g
            UNION ALL
            SELECT v_prefix || CASE
                    WHEN jsonb_array_length(i -> 'tags') > 0 THEN 'tag:' || (i -> 'tags' ->> 0)
                    ELSE 'type:' || t.type
                END, true
            FROM jsonb_array_elements(coalesce(p_items, '[]'::jsonb)) AS i
            LEFT JOIN LATERAL jsonb_array_elements_text(i -> 'types') AS t(type)
                ON jsonb_array_length(i -> 'tags') = 0
            WHERE jsonb_array_length(i -> 'tags') > 0 OR t.type IS NOT NULL
            UNION ALL
            SELECT v_prefix || 'all', true
            FROM jsonb_array_elements(coalesce(p_items, '[]'::jsonb)) AS i
            WHERE jsonb_array_length(i -> 'tags') = 0 AND jsonb_array_length(i -> 'types') = 0
        )
        SELECT hashtextextended(k.key, 0), bool_or(k.exclusive) FROM keys k
        GROUP BY 1
        UNION ALL
        -- The stream lock of append_events (re-entrant: its own call below does not wait).
        SELECT hashtextextended('{schema}' || p_stream, 0), true
        ORDER BY 1
    LOOP
        IF v_exclusive THEN
            PERFORM pg_advisory_xact_lock(v_key);
        ELSE
            PERFORM pg_advisory_xact_lock_shared(v_key);
        END IF;
    END LOOP;

    -- A batch whose ids exist is a repeat (its original result, whatever the condition: its
    -- own events match it now) or a mistake; append_events tells which, writing nothing.
    IF EXISTS (SELECT 1 FROM unnest(p_ids) AS b(id)
               CROSS JOIN LATERAL (
                   SELECT 1 FROM {schema}.events x WHERE x.event_id = b.id LIMIT 1) x) THEN
        RETURN QUERY SELECT a.outcome, a.next_revision, a.transaction_id, a.global_position,
            NULL::text, NULL::text
        FROM {schema}.append_events(p_stream, p_expected_kind, p_expected_revision, p_ids,
            p_types, p_data, p_binary_data, p_metadata) a;
        RETURN;
    END IF;

    SELECT max(e.revision) INTO v_last FROM {schema}.events e WHERE e.stream_id = p_stream;
    IF NOT (CASE p_expected_kind
        WHEN 0 THEN true
        WHEN 1 THEN v_last IS NULL
        WHEN 2 THEN v_last IS NOT NULL
        ELSE v_last IS NOT DISTINCT FROM p_expected_revision
    END) THEN
        RETURN QUERY SELECT 'conflict'::text, v_last + 1, NULL::bigint, NULL::bigint,
            NULL::text, NULL::text;
        RETURN;
    END IF;

    -- The condition: the first event after p_after matching any item. Each item is one probe
    -- in global order: of its first tag's index, or (no tags) of the log from p_after.
    FOR v_item IN SELECT i FROM jsonb_array_elements(coalesce(p_items, '[]'::jsonb)) AS i LOOP
        v_types := ARRAY(SELECT jsonb_array_elements_text(v_item -> 'types'));
        v_tags := ARRAY(SELECT jsonb_array_elements_text(v_item -> 'tags'));
        IF cardinality(v_tags) > 0 THEN
            SELECT e.transaction_id, e.global_position, e.stream_id, e.event_type
            INTO v_match_transaction, v_match_position, v_match_stream, v_match_type
            FROM {schema}.event_tags x
            CROSS JOIN LATERAL (
                SELECT y.transaction_id, y.global_position, y.stream_id, y.event_type, y.tags
                FROM {schema}.events y
                WHERE y.transaction_id = x.transaction_id
                  AND y.global_position = x.global_position
                LIMIT 1) e
            WHERE x.tag = v_tags[1]
              AND (x.transaction_id, x.global_position) > (v_after, p_after_position)
              AND e.tags @> v_tags
              AND (cardinality(v_types) = 0 OR e.event_type = ANY (v_types))
            ORDER BY x.transaction_id, x.global_position
            LIMIT 1;
        ELSE
            SELECT e.transaction_id, e.global_position, e.stream_id, e.event_type
            INTO v_match_transaction, v_match_position, v_match_stream, v_match_type
            FROM {schema}.events e
            WHERE (e.transaction_id, e.global_position) > (v_after, p_after_position)
              AND (cardinality(v_types) = 0 OR e.event_type = ANY (v_types))
            ORDER BY e.transaction_id, e.global_position
            LIMIT 1;
        END IF;
        IF v_match_transaction IS NOT NULL AND (v_first_transaction IS NULL
            OR (v_match_transaction, v_match_position) < (v_first_transaction, v_first_position))
        THEN
            v_first_transaction := v_match_transaction;
            v_first_position := v_match_position;
            v_first_stream := v_match_stream;
            v_first_type := v_match_type;
        END IF;
    END LOOP;
    IF v_first_transaction IS NOT NULL THEN
        RETURN QUERY SELECT 'condition_failed'::text, NULL::bigint,
            v_first_transaction::text::bigint, v_first_position, v_first_stream, v_first_type;
        RETURN;
    END IF;

    WITH inserted AS (
        INSERT INTO {schema}.events
            (stream_id, revision, event_id, event_type, data, binary_data, metadata, tags)
        SELECT p_stream, coalesce(v_last, -1) + b.ord, b.id, b.type, b.data, b.binary_data,
            b.metadata,
            nullif(ARRAY(SELECT DISTINCT g FROM jsonb_array_elements_text(
                CASE WHEN jsonb_typeof(b.metadata -> '$tags') = 'array'
                    THEN b.metadata -> '$tags' END) AS g ORDER BY 1), '{}')
        FROM unnest(p_ids, p_types, p_data, p_binary_data, p_metadata)
            WITH ORDINALITY AS b(id, type, data, binary_data, metadata, ord)
        ORDER BY b.ord
        RETURNING events.transaction_id, events.global_position, events.tags
    ), tagged AS (
        INSERT INTO {schema}.event_tags (tag, transaction_id, global_position)
        SELECT g, i.transaction_id, i.global_position
        FROM inserted i CROSS JOIN LATERAL unnest(i.tags) AS g
    )
    SELECT count(*), max(i.transaction_id::text::bigint), max(i.global_position)
    INTO v_inserted, v_transaction, v_position
    FROM inserted i;
    RETURN QUERY SELECT 'ok'::text, coalesce(v_last, -1) + v_inserted + 1, v_transaction,
        v_position, NULL::text, NULL::text;
END;
$$;
"#,
    // 5: partitions and blue/green versions. `stream_hash` is `decider_core::projection::
    // stream_hash` (the first four bytes of the MD5 of the stream id), computed by PostgreSQL
    // on insert, so that a partition's reads filter in the query (with an index per partition
    // count, created when a runner first reads by that count). Adding the column rewrites the
    // table once.
    r#"
ALTER TABLE {schema}.events ADD COLUMN stream_hash bigint NOT NULL
    GENERATED ALWAYS AS (('x' || substr(md5(stream_id), 1, 8))::bit(32)::bigint) STORED;

CREATE TABLE {schema}.projection_versions (
    grp         text PRIMARY KEY,
    active      text NOT NULL,
    switched_at timestamptz NOT NULL DEFAULT now()
);
"#,
    // 6: the partition count of each partitioned projection, recorded by its first runner, so
    // that runners of another count refuse to run and readers know a version's count.
    r#"
CREATE TABLE {schema}.projection_partitions (
    projection  text PRIMARY KEY,
    count       integer NOT NULL CHECK (count >= 1),
    recorded_at timestamptz NOT NULL DEFAULT now()
);
"#,
];

/// Creates the schema and the table recording applied migrations.
pub(crate) const PREPARE_MIGRATIONS: &str = r#"
CREATE SCHEMA IF NOT EXISTS {schema};
CREATE TABLE IF NOT EXISTS {schema}.schema_migrations (
    version    int PRIMARY KEY,
    applied_at timestamptz NOT NULL DEFAULT now()
)"#;

/// Serialises migrations of one schema across processes, for the migrating transaction.
pub(crate) const LOCK_MIGRATIONS: &str =
    "SELECT pg_advisory_xact_lock(hashtextextended('decider-migrate:' || $1, 0))";

pub(crate) const APPLIED_MIGRATIONS: &str =
    "SELECT coalesce(max(version), 0) FROM {schema}.schema_migrations";

pub(crate) const RECORD_MIGRATION: &str =
    "INSERT INTO {schema}.schema_migrations (version) VALUES ($1)";

/// The fast path of `Exact` and `NoStream` appends: one plain statement, no PL/pgSQL, no lock.
/// `$2` is the first new revision (0 for a new stream). The primary key `(stream_id, revision)`
/// admits one writer per revision, and the guard requires the revision before `$2` to exist;
/// no row back (the guard failed) or a unique violation (another writer won, or the ids were
/// appended before) sends the append to `append_events`, which tells which it was.
pub(crate) const FAST_APPEND: &str = "INSERT INTO {schema}.events \
     (stream_id, revision, event_id, event_type, data, binary_data, metadata) \
     SELECT $1, $2 + b.ord - 1, b.id, b.type, b.data, b.binary_data, b.metadata \
     FROM unnest($3::uuid[], $4::text[], $5::jsonb[], $6::bytea[], $7::jsonb[]) \
         WITH ORDINALITY AS b(id, type, data, binary_data, metadata, ord) \
     WHERE $2 = 0 OR EXISTS (SELECT 1 FROM {schema}.events e \
         WHERE e.stream_id = $1 AND e.revision = $2 - 1) \
     ORDER BY b.ord \
     RETURNING transaction_id::text::bigint AS transaction_number, global_position";

pub(crate) const APPEND: &str = "SELECT outcome, next_revision, transaction_id, global_position \
     FROM {schema}.append_events($1, $2, $3, $4, $5, $6, $7, $8)";

/// A tagged or conditional append (migration 4): `append_events`' arguments, then the
/// condition's items as JSON (NULL: unconditional) and the position it was decided after.
pub(crate) const APPEND_TAGGED: &str = "SELECT outcome, next_revision, transaction_id, \
     global_position, matched_stream, matched_type \
     FROM {schema}.append_tagged_events($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)";

/// The columns every read returns, in the order `row_to_event` expects. The transaction id is
/// renamed: an output column called `transaction_id` would be what `ORDER BY transaction_id`
/// sorts by — a bigint no index covers — instead of the indexed xid8 column.
const EVENT_COLUMNS: &str = "stream_id, revision, transaction_id::text::bigint AS transaction_number, global_position, \
     event_id, event_type, data, binary_data, metadata, recorded_at";

pub(crate) fn read_stream_forward() -> String {
    format!(
        "SELECT {EVENT_COLUMNS} FROM {{schema}}.events \
         WHERE stream_id = $1 AND revision >= $2 ORDER BY revision LIMIT $3"
    )
}

pub(crate) fn read_stream_backward() -> String {
    format!(
        "SELECT {EVENT_COLUMNS} FROM {{schema}}.events \
         WHERE stream_id = $1 AND revision <= $2 ORDER BY revision DESC LIMIT $3"
    )
}

/// One page of the global log after `($1, $2)`, optionally filtered by types ($4) and
/// categories ($5) (an empty array passes all).
///
/// Only rows of transactions older than every transaction still running are returned
/// (`transaction_id < pg_snapshot_xmin(pg_current_snapshot())`): every such transaction has
/// finished, so no event can later appear before the last one returned. Without this rule a
/// reader that moved past a position would skip the events of a transaction that took an
/// earlier transaction id but committed later.
pub(crate) fn read_all_page() -> String {
    format!(
        "SELECT {EVENT_COLUMNS} FROM {{schema}}.events \
         WHERE (transaction_id, global_position) > ($1::bigint::text::xid8, $2) \
           AND transaction_id < pg_snapshot_xmin(pg_current_snapshot()) \
           AND (cardinality($4::text[]) = 0 OR event_type = ANY ($4)) \
           AND (cardinality($5::text[]) = 0 OR category = ANY ($5)) \
         ORDER BY transaction_id, global_position LIMIT $3"
    )
}

/// [`read_all_page`] of the partition `$6` of `count`: the same rules, through the index of
/// [`partition_index`] (the count is written into the text, not passed, so that the planner
/// matches the index's expression).
pub(crate) fn read_partition_page(count: u32) -> String {
    format!(
        "SELECT {EVENT_COLUMNS} FROM {{schema}}.events \
         WHERE ((stream_hash * {count}) >> 32) = $6 \
           AND (transaction_id, global_position) > ($1::bigint::text::xid8, $2) \
           AND transaction_id < pg_snapshot_xmin(pg_current_snapshot()) \
           AND (cardinality($4::text[]) = 0 OR event_type = ANY ($4)) \
           AND (cardinality($5::text[]) = 0 OR category = ANY ($5)) \
         ORDER BY transaction_id, global_position LIMIT $3"
    )
}

/// The index that serves [`read_partition_page`] for `count` partitions: by partition, then in
/// global order, so that a page is a range of it. Built concurrently, so appends go on.
pub(crate) fn partition_index(count: u32) -> String {
    format!(
        "CREATE INDEX CONCURRENTLY IF NOT EXISTS events_partitions_{count} \
         ON {{schema}}.events (((stream_hash * {count}) >> 32), transaction_id, global_position)"
    )
}

/// Takes the lock of building the partition indexes of schema $1, if free: one process builds
/// at a time (concurrent builds of one index deadlock, and the loser leaves it invalid). A
/// session lock, not a waiting one: a builder's `CREATE INDEX CONCURRENTLY` waits for every
/// running statement, so a process waiting on this lock would deadlock with the builder.
pub(crate) const TRY_LOCK_PARTITION_INDEX: &str =
    "SELECT pg_try_advisory_lock(hashtextextended('decider-partition-index:' || $1, 0))";

/// Gives the lock of [`TRY_LOCK_PARTITION_INDEX`] back.
pub(crate) const UNLOCK_PARTITION_INDEX: &str =
    "SELECT pg_advisory_unlock(hashtextextended('decider-partition-index:' || $1, 0))";

/// Drops the index of `count` partitions (an interrupted build's, left invalid).
pub(crate) fn drop_partition_index(count: u32) -> String {
    format!("DROP INDEX CONCURRENTLY IF EXISTS {{schema}}.events_partitions_{count}")
}

/// Whether the index of `count` partitions ($2, `events_partitions_<count>`) of schema $1 is
/// valid: an interrupted concurrent build leaves an invalid one behind.
pub(crate) const PARTITION_INDEX_VALID: &str = "SELECT i.indisvalid FROM pg_index i \
     JOIN pg_class c ON c.oid = i.indexrelid JOIN pg_namespace n ON n.oid = c.relnamespace \
     WHERE n.nspname = $1 AND c.relname = $2";

/// Records a projection's partition count ($2) unless one is recorded: the first runner's.
pub(crate) const RECORD_PARTITION_COUNT: &str = "INSERT INTO {schema}.projection_partitions \
     (projection, count) VALUES ($1, $2) ON CONFLICT (projection) DO NOTHING";

/// The recorded partition count of a projection. (A statement of its own after the insert: in
/// one statement, a row another transaction committed meanwhile would not be seen.)
pub(crate) const PARTITION_COUNT: &str =
    "SELECT count FROM {schema}.projection_partitions WHERE projection = $1";

/// Reads the active version of a read-model group.
pub(crate) const ACTIVE_VERSION: &str =
    "SELECT active FROM {schema}.projection_versions WHERE grp = $1";

/// Switches a group from no version yet to `$2`.
pub(crate) const FIRST_SWITCH: &str = "INSERT INTO {schema}.projection_versions (grp, active) \
     VALUES ($1, $2) ON CONFLICT (grp) DO NOTHING RETURNING grp";

/// Switches a group from `$3` to `$2`.
pub(crate) const SWITCH_VERSION: &str = "UPDATE {schema}.projection_versions \
     SET active = $2, switched_at = now() WHERE grp = $1 AND active = $3 RETURNING grp";

/// How one item of a DCB query is found, with the numbers of its parameters.
#[derive(Debug, Clone, Copy)]
pub(crate) enum ItemScan {
    /// A range of the `event_tags` index: `$tag` (the item's first tag), and, when the item
    /// asks for more, `$all_tags` (all its tags) and `$types` checked on the event.
    Tag {
        tag: usize,
        all_tags: Option<usize>,
        types: Option<usize>,
    },
    /// No tag: the log in global order, filtered by type (no index on the type: it would cost
    /// every append).
    Types { types: usize },
}

/// The positions of the events an item matches after `($1, $2)`, on the side `horizon` of the
/// read horizon (`<` or `>=`), followed by `tail`.
fn item_positions(item: ItemScan, horizon: &str, tail: &str) -> String {
    let xmin = "pg_snapshot_xmin(pg_current_snapshot())";
    match item {
        ItemScan::Tag {
            tag,
            all_tags,
            types,
        } => {
            // LATERAL ... LIMIT 1: an index probe per entry in any plan, generic ones included.
            let join = if all_tags.is_some() || types.is_some() {
                " CROSS JOIN LATERAL (SELECT y.tags, y.event_type FROM {schema}.events y \
                 WHERE y.transaction_id = x.transaction_id \
                   AND y.global_position = x.global_position LIMIT 1) e"
            } else {
                ""
            };
            let mut checks = String::new();
            if let Some(all_tags) = all_tags {
                checks.push_str(&format!(" AND e.tags @> ${all_tags}::text[]"));
            }
            if let Some(types) = types {
                checks.push_str(&format!(" AND e.event_type = ANY (${types}::text[])"));
            }
            format!(
                "SELECT x.transaction_id, x.global_position FROM {{schema}}.event_tags x{join} \
                 WHERE x.tag = ${tag}::text \
                   AND (x.transaction_id, x.global_position) > ($1::bigint::text::xid8, $2) \
                   AND x.transaction_id {horizon} {xmin}{checks}{tail}"
            )
        }
        ItemScan::Types { types } => format!(
            "SELECT e.transaction_id, e.global_position FROM {{schema}}.events e \
             WHERE (e.transaction_id, e.global_position) > ($1::bigint::text::xid8, $2) \
               AND e.transaction_id {horizon} {xmin} \
               AND e.event_type = ANY (${types}::text[]){tail}"
        ),
    }
}

/// One page of the events matching a DCB query's `items` after `($1, $2)`, below the read
/// horizon as in [`read_all_page`], at most `$limit`, each row followed by the newest
/// transaction holding back matching events (as [`newest_held_back`] finds it), taken in the
/// same snapshot: a short page with no transaction held back is the end of the read, without
/// another query. An empty page is one row of NULL event columns. Each item is an ordered
/// index range cut at the page size; the union of the cut ranges holds the page.
pub(crate) fn query_page(items: &[ItemScan], limit: usize) -> String {
    let tail = format!(" ORDER BY 1, 2 LIMIT ${limit}");
    let positions = match items {
        [item] => item_positions(*item, "<", &tail),
        items => {
            let union = items
                .iter()
                .map(|item| format!("({})", item_positions(*item, "<", &tail)))
                .collect::<Vec<_>>()
                .join(" UNION ");
            format!("SELECT m.transaction_id, m.global_position FROM ({union}) m{tail}")
        }
    };
    let held_back = items
        .iter()
        .map(|item| format!("({})", item_positions(*item, ">=", "")))
        .collect::<Vec<_>>()
        .join(" UNION ALL ");
    format!(
        "WITH held AS (SELECT max(h.transaction_id::text::bigint) AS newest FROM ({held_back}) h), \
         page AS (SELECT e.* FROM ({positions}) p CROSS JOIN LATERAL \
             (SELECT {EVENT_COLUMNS} FROM {{schema}}.events \
              WHERE transaction_id = p.transaction_id AND global_position = p.global_position \
              LIMIT 1) e) \
         SELECT page.*, held.newest FROM held LEFT JOIN page ON true \
         ORDER BY page.transaction_number, page.global_position"
    )
}

/// The newest transaction whose committed events after `($1, $2)` (passing the filter) are held
/// back by an older transaction still running; NULL when none are.
pub(crate) fn newest_held_back() -> String {
    "SELECT max(transaction_id::text::bigint) FROM {schema}.events \
       WHERE (transaction_id, global_position) > ($1::bigint::text::xid8, $2) \
         AND transaction_id >= pg_snapshot_xmin(pg_current_snapshot()) \
         AND (cardinality($3::text[]) = 0 OR event_type = ANY ($3)) \
         AND (cardinality($4::text[]) = 0 OR category = ANY ($4))"
        .to_owned()
}

/// Whether every transaction up to `$1` has finished, so its events are no longer held back.
pub(crate) const RELEASED: &str =
    "SELECT pg_snapshot_xmin(pg_current_snapshot())::text::bigint > $1";

/// The newest position a global read would return now.
pub(crate) const HEAD_POSITION: &str = "SELECT transaction_id::text::bigint AS transaction_number, global_position \
     FROM {schema}.events \
     WHERE transaction_id < pg_snapshot_xmin(pg_current_snapshot()) \
     ORDER BY transaction_id DESC, global_position DESC LIMIT 1";

pub(crate) const LOAD_CHECKPOINT: &str = "SELECT transaction_id::text::bigint, global_position \
     FROM {schema}.checkpoints WHERE projection = $1";

/// Creates a projection's first checkpoint; changes nothing if another runner created it.
pub(crate) const CREATE_CHECKPOINT: &str = "INSERT INTO {schema}.checkpoints \
     (projection, transaction_id, global_position) VALUES ($1, $2::bigint::text::xid8, $3) \
     ON CONFLICT (projection) DO NOTHING";

/// Compare-and-set: moves a checkpoint only from where the runner left it, and only forward.
pub(crate) const MOVE_CHECKPOINT: &str = "UPDATE {schema}.checkpoints \
     SET transaction_id = $4::bigint::text::xid8, global_position = $5, updated_at = now() \
     WHERE projection = $1 \
       AND transaction_id = $2::bigint::text::xid8 AND global_position = $3 \
       AND ($4::bigint::text::xid8, $5) > (transaction_id, global_position)";

pub(crate) const DELETE_CHECKPOINT: &str = "DELETE FROM {schema}.checkpoints WHERE projection = $1";

pub(crate) const RECORD_DEAD_LETTER: &str = "INSERT INTO {schema}.dead_letters \
     (projection, event_id, stream_id, revision, transaction_id, global_position, error) \
     VALUES ($1, $2, $3, $4, $5::bigint::text::xid8, $6, $7) \
     ON CONFLICT (projection, event_id) DO UPDATE SET error = excluded.error, failed_at = now()";

pub(crate) const LIST_DEAD_LETTERS: &str = "SELECT event_id, stream_id, revision, \
     transaction_id::text::bigint AS transaction_number, global_position, error, failed_at \
     FROM {schema}.dead_letters WHERE projection = $1 ORDER BY transaction_id, global_position";

pub(crate) const DELETE_DEAD_LETTER: &str =
    "DELETE FROM {schema}.dead_letters WHERE projection = $1 AND event_id = $2";

/// A runner's report, replacing its previous one; reports of the same projection's runners
/// that have not reported for a week (processes long gone) are forgotten on the way.
pub(crate) const REPORT: &str = "WITH gone AS (DELETE FROM {schema}.projection_runners \
         WHERE projection = $1 AND runner <> $2 AND reported_at < $12::timestamptz - interval '7 days') \
     INSERT INTO {schema}.projection_runners AS r (projection, runner, state, error, \
         checkpoint_transaction, checkpoint_position, head_transaction, head_position, lag, \
         events_per_second, interval_ms, reported_at) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) \
     ON CONFLICT (projection, runner) DO UPDATE SET state = excluded.state, \
         error = excluded.error, checkpoint_transaction = excluded.checkpoint_transaction, \
         checkpoint_position = excluded.checkpoint_position, \
         head_transaction = excluded.head_transaction, head_position = excluded.head_position, \
         lag = excluded.lag, events_per_second = excluded.events_per_second, \
         interval_ms = excluded.interval_ms, reported_at = excluded.reported_at";

pub(crate) const REPORTS: &str = "SELECT projection, runner, state, error, \
     checkpoint_transaction, checkpoint_position, head_transaction, head_position, lag, \
     events_per_second, interval_ms, reported_at \
     FROM {schema}.projection_runners ORDER BY projection, runner";

pub(crate) const REQUEST: &str = "INSERT INTO {schema}.projection_requests (projection, action) \
     VALUES ($1, $2) RETURNING id";

const REQUEST_COLUMNS: &str =
    "id, projection, action, requested_at, done_at, done_by, succeeded, result";

pub(crate) fn pending_requests() -> String {
    format!(
        "SELECT {REQUEST_COLUMNS} FROM {{schema}}.projection_requests \
         WHERE projection = $1 AND done_at IS NULL ORDER BY id"
    )
}

pub(crate) fn request_status() -> String {
    format!("SELECT {REQUEST_COLUMNS} FROM {{schema}}.projection_requests WHERE id = $1")
}

/// Marks a request done, unless it is already: the first completion stands.
pub(crate) const COMPLETE_REQUEST: &str = "UPDATE {schema}.projection_requests \
     SET done_at = now(), done_by = $2, succeeded = $3, result = $4 \
     WHERE id = $1 AND done_at IS NULL";

/// How long one wait for a lease lasts before it is started again (see `PgLeases::acquire`).
pub(crate) const LEASE_WAIT: &str = "SET lock_timeout = '1s'";

/// Blocks until this session holds the lease `$1` (`<schema>:<projection>`), or `LEASE_WAIT`
/// has passed (`lock_not_available`).
pub(crate) const ACQUIRE_LEASE: &str =
    "SELECT pg_advisory_lock(hashtextextended('decider-lease:' || $1, 0))";

/// Takes the lease `$1` if it is free; says whether it did.
pub(crate) const TRY_ACQUIRE_LEASE: &str =
    "SELECT pg_try_advisory_lock(hashtextextended('decider-lease:' || $1, 0))";

/// Keeps a snapshot unless the stream's stored one is as new or newer, so that writers finishing
/// out of order never move it backwards.
pub(crate) const SAVE_SNAPSHOT: &str = "INSERT INTO {schema}.snapshots AS s \
     (stream_id, revision, state_version, state) VALUES ($1, $2, $3, $4) \
     ON CONFLICT (stream_id) DO UPDATE SET revision = excluded.revision, \
       state_version = excluded.state_version, state = excluded.state, taken_at = now() \
     WHERE s.revision < excluded.revision";

pub(crate) const LOAD_SNAPSHOT: &str =
    "SELECT revision, state_version, state FROM {schema}.snapshots WHERE stream_id = $1";

/// The channel appends notify and live subscriptions listen on.
pub(crate) const NOTIFY: &str = "SELECT pg_notify($1, $2)";

/// Fills in the schema name.
pub(crate) fn in_schema(sql: &str, quoted_schema: &str) -> String {
    sql.replace("{schema}", quoted_schema)
}
