"""The schema as an ordered list of migrations, one definition for SQLite and PostgreSQL.

Statements are written in SQLite's words; :func:`storage.dialect.to_postgres`
translates the types (and adds the ``rowid`` SQLite has implicitly) for PostgreSQL.

Each migration is applied in one transaction together with the row that records
it in ``schema_version``; a database is never left half-migrated. Columns may be
added by later migrations, never renamed (other programs read these tables).
"""

from __future__ import annotations

from storage.dialect import POSTGRES_TXID


class PostgresOnly(str):
    """A migration statement for PostgreSQL alone: the step it takes has nothing to do on
    SQLite (e.g. giving a typed column to what SQLite's typeless ``BLOB`` column already
    holds). SQLite's :meth:`storage.db.Store.migrate` skips it; the version is recorded on both."""

    __slots__ = ()


class SqliteOnly(str):
    """A migration statement for SQLite alone: a storage layout PostgreSQL does not have
    (e.g. a clustered ``WITHOUT ROWID`` table). :meth:`storage.postgres.PostgresStore.migrate`
    skips it; the version is recorded on both."""

    __slots__ = ()


MIGRATIONS: list[tuple[int, str, list[str]]] = [
    (
        1,
        "initial schema",
        [
            """CREATE TABLE IF NOT EXISTS windows (
                id TEXT PRIMARY KEY,
                model TEXT NOT NULL,
                version TEXT NOT NULL,
                segment TEXT NOT NULL,
                start TEXT NOT NULL,
                "end" TEXT NOT NULL,
                rows INTEGER NOT NULL,
                status TEXT NOT NULL,
                computed_at TEXT NOT NULL,
                late_rows INTEGER NOT NULL DEFAULT 0,
                reference TEXT NOT NULL DEFAULT ''
            )""",
            "CREATE INDEX IF NOT EXISTS windows_model_end ON windows (model, \"end\")",
            """CREATE TABLE IF NOT EXISTS metrics (
                window_id TEXT NOT NULL,
                model TEXT NOT NULL,
                "column" TEXT NOT NULL,
                metric TEXT NOT NULL,
                value REAL,
                p_value REAL,
                threshold REAL,
                drifted INTEGER,
                test TEXT,
                PRIMARY KEY (window_id, "column", metric)
            )""",
            "CREATE INDEX IF NOT EXISTS metrics_model_metric ON metrics (model, metric)",
            """CREATE TABLE IF NOT EXISTS alerts (
                id TEXT PRIMARY KEY,
                rule TEXT NOT NULL,
                model TEXT NOT NULL,
                labels TEXT NOT NULL DEFAULT '{}',
                state TEXT NOT NULL,
                value REAL,
                threshold REAL,
                severity TEXT NOT NULL DEFAULT 'warning',
                started_at TEXT,
                fired_at TEXT,
                resolved_at TEXT,
                last_window_id TEXT,
                breaches INTEGER NOT NULL DEFAULT 0,
                clears INTEGER NOT NULL DEFAULT 0,
                last_notified_at TEXT,
                updated_at TEXT
            )""",
            "CREATE INDEX IF NOT EXISTS alerts_state ON alerts (state)",
            """CREATE TABLE IF NOT EXISTS deliveries (
                id TEXT PRIMARY KEY,
                alert_id TEXT,
                notifier TEXT NOT NULL,
                kind TEXT NOT NULL,
                status TEXT NOT NULL,
                attempts INTEGER NOT NULL DEFAULT 0,
                next_attempt_at TEXT,
                last_error TEXT,
                delivered_at TEXT,
                created_at TEXT NOT NULL,
                payload TEXT NOT NULL DEFAULT '{}'
            )""",
            "CREATE INDEX IF NOT EXISTS deliveries_due ON deliveries (status, next_attempt_at)",
            """CREATE TABLE IF NOT EXISTS silences (
                id TEXT PRIMARY KEY,
                model TEXT,
                rule TEXT,
                starts_at TEXT NOT NULL,
                ends_at TEXT NOT NULL,
                created_by TEXT NOT NULL DEFAULT '',
                comment TEXT NOT NULL DEFAULT '',
                created_at TEXT NOT NULL
            )""",
            """CREATE TABLE IF NOT EXISTS dead_letters (
                id INTEGER PRIMARY KEY,
                topic TEXT NOT NULL,
                partition INTEGER NOT NULL,
                "offset" INTEGER NOT NULL,
                reason TEXT NOT NULL,
                payload BLOB,
                received_at TEXT NOT NULL,
                UNIQUE (topic, partition, "offset")
            )""",
            """CREATE TABLE IF NOT EXISTS "references" (
                model TEXT NOT NULL,
                version TEXT NOT NULL,
                source TEXT NOT NULL,
                sha256 TEXT NOT NULL,
                rows INTEGER NOT NULL,
                registered_at TEXT NOT NULL,
                path TEXT NOT NULL DEFAULT '',
                PRIMARY KEY (model, version)
            )""",
            """CREATE TABLE IF NOT EXISTS stream_state (
                name TEXT PRIMARY KEY,
                state TEXT NOT NULL,
                updated_at TEXT NOT NULL
            )""",
        ],
    ),
    (
        2,
        "alerts: instance columns, episodes; deliveries: grouping, threads, retraining cooldown",
        [
            "ALTER TABLE alerts ADD COLUMN metric TEXT NOT NULL DEFAULT ''",
            """ALTER TABLE alerts ADD COLUMN "column" TEXT NOT NULL DEFAULT ''""",
            "ALTER TABLE alerts ADD COLUMN segment TEXT NOT NULL DEFAULT ''",
            "ALTER TABLE alerts ADD COLUMN version TEXT NOT NULL DEFAULT ''",
            "ALTER TABLE alerts ADD COLUMN episode INTEGER NOT NULL DEFAULT 0",
            "ALTER TABLE alerts ADD COLUMN window_start TEXT",
            "ALTER TABLE alerts ADD COLUMN window_end TEXT",
            "CREATE INDEX IF NOT EXISTS alerts_model ON alerts (model, state)",
            "ALTER TABLE deliveries ADD COLUMN model TEXT NOT NULL DEFAULT ''",
            "ALTER TABLE deliveries ADD COLUMN group_key TEXT NOT NULL DEFAULT ''",
            "ALTER TABLE deliveries ADD COLUMN alert_ids TEXT NOT NULL DEFAULT '[]'",
            "ALTER TABLE deliveries ADD COLUMN parent_id TEXT",
            "ALTER TABLE deliveries ADD COLUMN response TEXT",
            "ALTER TABLE deliveries ADD COLUMN updated_at TEXT",
            "CREATE INDEX IF NOT EXISTS deliveries_cooldown ON deliveries (notifier, kind, model, created_at)",
        ],
    ),
    (
        3,
        "windows: why a window's figures could not be computed (status error)",
        [
            "ALTER TABLE windows ADD COLUMN error TEXT NOT NULL DEFAULT ''",
        ],
    ),
    (
        4,
        "retention: indexes for the prune; dead-letter volume cap: payload_size, volume, totals",
        [
            "CREATE INDEX IF NOT EXISTS windows_computed ON windows (computed_at)",
            "CREATE INDEX IF NOT EXISTS windows_reference ON windows (reference)",
            "CREATE INDEX IF NOT EXISTS alerts_updated ON alerts (updated_at)",
            "CREATE INDEX IF NOT EXISTS deliveries_created ON deliveries (created_at)",
            "CREATE INDEX IF NOT EXISTS silences_ends ON silences (ends_at)",
            "CREATE INDEX IF NOT EXISTS dead_letters_received ON dead_letters (received_at)",
            # the original size of the message value (payload keeps at most its first bytes)
            "ALTER TABLE dead_letters ADD COLUMN payload_size INTEGER",
            # per (reason code, minute received, topic, partition): what was stored, stored
            # without payload, or not stored; drop_first/drop_last bound the offsets of the
            # letters not stored (to find them in Kafka, and to recognise them when re-read)
            """CREATE TABLE IF NOT EXISTS dead_letter_volume (
                reason TEXT NOT NULL,
                minute TEXT NOT NULL,
                topic TEXT NOT NULL,
                partition INTEGER NOT NULL,
                stored INTEGER NOT NULL DEFAULT 0,
                payloads INTEGER NOT NULL DEFAULT 0,
                payloads_dropped INTEGER NOT NULL DEFAULT 0,
                dropped INTEGER NOT NULL DEFAULT 0,
                drop_first INTEGER,
                drop_last INTEGER,
                PRIMARY KEY (reason, minute, topic, partition)
            )""",
            "CREATE INDEX IF NOT EXISTS dead_letter_volume_minute ON dead_letter_volume (minute)",
            "CREATE INDEX IF NOT EXISTS dead_letter_volume_drops"
            " ON dead_letter_volume (topic, partition, drop_last)",
            # cumulative since the database was created (never pruned): Prometheus counters
            """CREATE TABLE IF NOT EXISTS dead_letter_totals (
                reason TEXT PRIMARY KEY,
                payloads_dropped INTEGER NOT NULL DEFAULT 0,
                dropped INTEGER NOT NULL DEFAULT 0
            )""",
        ],
    ),
    (
        5,
        "detection: rule change-detector state; rolling/seasonal reference members",
        [
            """CREATE TABLE IF NOT EXISTS rule_detectors (
                alert_id TEXT PRIMARY KEY,
                rule TEXT NOT NULL,
                model TEXT NOT NULL,
                state TEXT NOT NULL,
                last_window_id TEXT NOT NULL,
                window_end TEXT NOT NULL,
                updated_at TEXT NOT NULL
            )""",
            """CREATE TABLE IF NOT EXISTS reference_members (
                model TEXT NOT NULL,
                version TEXT NOT NULL,
                segment TEXT NOT NULL,
                window_id TEXT NOT NULL,
                start TEXT NOT NULL,
                "end" TEXT NOT NULL,
                rows INTEGER NOT NULL,
                drifted INTEGER NOT NULL,
                payload BLOB NOT NULL,
                PRIMARY KEY (model, version, segment, window_id)
            )""",
            'CREATE INDEX IF NOT EXISTS reference_members_end ON reference_members (model, version, segment, "end")',
        ],
    ),
    (
        6,
        "reports: a bounded sample of each recent window's rows; newest window per version",
        [
            # the rows of window_id (cut to reports.sample_rows, chosen at random with a seed
            # from the id), kept for the newest reports.sample_windows windows per model
            """CREATE TABLE IF NOT EXISTS window_samples (
                window_id TEXT PRIMARY KEY,
                model TEXT NOT NULL,
                "end" TEXT NOT NULL,
                rows INTEGER NOT NULL,
                sample_rows INTEGER NOT NULL,
                payload BLOB NOT NULL,
                created_at TEXT NOT NULL
            )""",
            'CREATE INDEX IF NOT EXISTS window_samples_model_end ON window_samples (model, "end")',
            # /metrics: the newest window of each (model, segment, version)
            'CREATE INDEX IF NOT EXISTS windows_latest ON windows (model, segment, version, "end")',
            # the newest windows of every model (`driftwarden windows`, the API)
            'CREATE INDEX IF NOT EXISTS windows_end ON windows ("end")',
        ],
    ),
    (
        7,
        "labels: predictions awaiting labels, early labels, join counters, performance slots;"
        " metrics: family, confidence interval",
        [
            # which computation wrote a figure: "data" when the window closed, "performance"
            # when its labels matured (recomputing one family never touches the other)
            "ALTER TABLE metrics ADD COLUMN family TEXT NOT NULL DEFAULT 'data'",
            "ALTER TABLE metrics ADD COLUMN ci_low REAL",
            "ALTER TABLE metrics ADD COLUMN ci_high REAL",
            # one row per prediction of a model with performance enabled, until ttl:
            # only what the join and the performance windows need, clustered by event
            # time (a window's rows are one range). ts: event time (ms); segments: the
            # segment values joined by U+001F (U+FFFF = absent; U+0000 in SQLite rows written
            # before that, see monitor/labels/figures.py); label_ts/label_pos: event
            # time and (partition << 40 | offset) of the label that won (the latest ts;
            # ties: the later record)
            """CREATE TABLE IF NOT EXISTS label_predictions (
                model TEXT NOT NULL,
                ts INTEGER NOT NULL,
                event_id TEXT NOT NULL,
                version TEXT NOT NULL,
                segments TEXT NOT NULL DEFAULT '',
                prediction BLOB,
                label BLOB,
                label_ts INTEGER,
                label_pos INTEGER,
                PRIMARY KEY (model, ts, event_id)
            ) WITHOUT ROWID""",
            "CREATE UNIQUE INDEX IF NOT EXISTS label_predictions_id ON label_predictions (model, event_id)",
            # labels that came before their prediction, until early_ttl
            """CREATE TABLE IF NOT EXISTS label_early (
                model TEXT NOT NULL,
                event_id TEXT NOT NULL,
                label BLOB,
                ts INTEGER NOT NULL,
                pos INTEGER NOT NULL,
                PRIMARY KEY (model, event_id)
            ) WITHOUT ROWID""",
            "CREATE INDEX IF NOT EXISTS label_early_ts ON label_early (model, ts)",
            # durable counters of the join per model (joined, duplicate, expired, ...)
            """CREATE TABLE IF NOT EXISTS label_counters (
                model TEXT NOT NULL,
                name TEXT NOT NULL,
                value INTEGER NOT NULL DEFAULT 0,
                PRIMARY KEY (model, name)
            ) WITHOUT ROWID""",
            # one row per time window (all versions and segments) of a model with labels:
            # predictions and labelled predictions in it, and whether its performance
            # figures are computed (computed_at) or need recomputing (dirty)
            """CREATE TABLE IF NOT EXISTS label_slots (
                model TEXT NOT NULL,
                start INTEGER NOT NULL,
                "end" INTEGER NOT NULL,
                rows INTEGER NOT NULL DEFAULT 0,
                labelled INTEGER NOT NULL DEFAULT 0,
                computed_at TEXT,
                dirty INTEGER NOT NULL DEFAULT 0,
                PRIMARY KEY (model, start, "end")
            ) WITHOUT ROWID""",
        ],
    ),
    (
        8,
        "scale-out: per-partition stream state with fencing; outbox claims; activity per model",
        [
            # the durable stream state of one partition of the predictions topic: its
            # consumed offset and the state of the models whose rows it carries. ``owner``
            # (an instance id) and ``epoch`` (bumped by every claim) fence the writer: an
            # instance writes only rows it holds the current epoch of, in the same
            # transaction as the figures. ``generation`` is the Kafka group generation of
            # the claim: an older generation cannot claim over a newer one.
            """CREATE TABLE IF NOT EXISTS stream_partitions (
                topic TEXT NOT NULL,
                partition INTEGER NOT NULL,
                owner TEXT NOT NULL DEFAULT '',
                generation INTEGER NOT NULL DEFAULT -1,
                epoch INTEGER NOT NULL DEFAULT 0,
                "offset" INTEGER,
                state TEXT NOT NULL DEFAULT '{}',
                updated_at TEXT NOT NULL,
                PRIMARY KEY (topic, partition)
            )""",
            # which instance is sending a delivery, until when (a lease: another
            # instance takes it over after it passes, so retries survive an instance dying)
            "ALTER TABLE deliveries ADD COLUMN claimed_by TEXT",
            "ALTER TABLE deliveries ADD COLUMN claimed_until TEXT",
            # no-data rules read the newest window of each model, whoever stored it
            "CREATE INDEX IF NOT EXISTS windows_model_computed ON windows (model, computed_at)",
            # on a shared store, the content of each reference registered through the API,
            # so every instance can judge with it (files live on the instance that received it)
            """CREATE TABLE IF NOT EXISTS reference_files (
                sha256 TEXT PRIMARY KEY,
                name TEXT NOT NULL,
                content BLOB NOT NULL,
                stored_at TEXT NOT NULL
            )""",
        ],
    ),
    (
        9,
        "labels on PostgreSQL: predictions and labels keep their type (jsonb); the join tables"
        " lose the emulated rowid (clustered by their key on SQLite, they have none there)",
        [
            # SQLite keeps each value's type in a BLOB column (a float score, a class name);
            # PostgreSQL's bytea holds bytes only. jsonb holds numbers and strings and gives
            # them back as they were (Python float/int and str). The join refused to run on
            # PostgreSQL before this version, so the tables are empty; text is kept anyway.
            PostgresOnly(
                "ALTER TABLE label_predictions"
                " ALTER COLUMN prediction TYPE jsonb USING to_jsonb(convert_from(prediction, 'UTF8')),"
                " ALTER COLUMN label TYPE jsonb USING to_jsonb(convert_from(label, 'UTF8'))"
            ),
            PostgresOnly(
                "ALTER TABLE label_early ALTER COLUMN label TYPE jsonb USING to_jsonb(convert_from(label, 'UTF8'))"
            ),
            # one insert per prediction: an identity column and its index would cost every one
            PostgresOnly("ALTER TABLE label_predictions DROP COLUMN IF EXISTS rowid"),
            PostgresOnly("ALTER TABLE label_early DROP COLUMN IF EXISTS rowid"),
            PostgresOnly("ALTER TABLE label_counters DROP COLUMN IF EXISTS rowid"),
            PostgresOnly("ALTER TABLE label_slots DROP COLUMN IF EXISTS rowid"),
        ],
    ),
    (
        10,
        "metrics: only the key's index (every query finds figures by window id); each closed"
        " window writes ~80 rows, and the unused (model, metric) index was half of their cost",
        [
            "DROP INDEX IF EXISTS metrics_model_metric",
            # nothing reads the emulated row id of a figure (retention deletes by window id)
            PostgresOnly("ALTER TABLE metrics DROP COLUMN IF EXISTS rowid"),
        ],
    ),
    (
        11,
        "dead letters: the id of the transaction that stored each one (the dead-letter topic"
        " reads them in commit order)",
        [
            # rows stored before this version are all committed (this statement waits for
            # every transaction writing the table): 0, read first. On SQLite it stays 0 (one
            # writer: rows commit in id order); on PostgreSQL new rows get their transaction's
            # id (storage.dialect, item 13)
            "ALTER TABLE dead_letters ADD COLUMN txid INTEGER NOT NULL DEFAULT 0",
            PostgresOnly(f"ALTER TABLE dead_letters ALTER COLUMN txid SET DEFAULT {POSTGRES_TXID}"),
            "CREATE INDEX IF NOT EXISTS dead_letters_feed ON dead_letters (txid, id)",
        ],
    ),
    (
        12,
        "metrics: one clustered (WITHOUT ROWID) table on SQLite, each figure stored once in its"
        " key's order instead of in the table and again in the key's index (inserts ~20 %"
        " cheaper, the table ~40 % smaller)",
        [
            # same columns in the same order; every query reads figures by their key (window id)
            SqliteOnly(
                """CREATE TABLE metrics_clustered (
                window_id TEXT NOT NULL,
                model TEXT NOT NULL,
                "column" TEXT NOT NULL,
                metric TEXT NOT NULL,
                value REAL,
                p_value REAL,
                threshold REAL,
                drifted INTEGER,
                test TEXT,
                family TEXT NOT NULL DEFAULT 'data',
                ci_low REAL,
                ci_high REAL,
                PRIMARY KEY (window_id, "column", metric)
            ) WITHOUT ROWID"""
            ),
            SqliteOnly(
                'INSERT INTO metrics_clustered (window_id, model, "column", metric, value, p_value, threshold,'
                ' drifted, test, family, ci_low, ci_high) SELECT window_id, model, "column", metric, value,'
                " p_value, threshold, drifted, test, family, ci_low, ci_high FROM metrics"
            ),
            SqliteOnly("DROP TABLE metrics"),
            SqliteOnly("ALTER TABLE metrics_clustered RENAME TO metrics"),
        ],
    ),
    (
        13,
        "label join: no index by prediction id (the join finds ids in memory and confirms each by"
        " the key); with random ids the index rewrote one page per prediction at every flush",
        [
            # versions before this one kept ids unique through that index alone: on a shared
            # store an instance of one of them would now store a repeated id twice. A session
            # that does not say it knows this schema (WRITER_SETTING, set on every connection
            # of a PostgresStore) can no longer insert predictions, so such an instance fails
            # its flushes (and retries them) instead (SQLite: one instance per file)
            PostgresOnly(
                """CREATE OR REPLACE FUNCTION driftwarden_refuse_older_writer() RETURNS trigger
                LANGUAGE plpgsql AS $$
                BEGIN
                    IF coalesce(nullif(current_setting('driftwarden.schema', true), ''), '0')::int
                            < TG_ARGV[0]::int THEN
                        RAISE EXCEPTION 'driftwarden: % is written by a version older than schema %'
                            ' (this session''s driftwarden.schema is unset or lower): stop every instance'
                            ' of an earlier driftwarden version and upgrade it', TG_TABLE_NAME, TG_ARGV[0]
                            USING ERRCODE = 'object_not_in_prerequisite_state';
                    END IF;
                    RETURN NULL;
                END $$"""
            ),
            PostgresOnly(
                "CREATE TRIGGER label_predictions_older_writer BEFORE INSERT ON label_predictions"
                " FOR EACH STATEMENT EXECUTE FUNCTION driftwarden_refuse_older_writer('13')"
            ),
            "DROP INDEX IF EXISTS label_predictions_id",
        ],
    ),
    (
        14,
        "deliveries: the pending ones by notifier and alert group, in the order they were made"
        " (the outbox sends a group's messages in order: the read of the earlier pending one"
        " scanned every pending delivery, 2.5 ms a send with 20,000 pending)",
        [
            "CREATE INDEX IF NOT EXISTS deliveries_pending_group ON deliveries (notifier, group_key, created_at)"
            " WHERE status = 'pending'",
        ],
    ),
    (
        15,
        "deliveries: the pending ones by notifier and when they were last scheduled (the outbox"
        " checks, at every dispatch, for deliveries a wall clock since stepped back scheduled:"
        " the read scanned every pending delivery, each dispatch, during a long outage)",
        [
            "CREATE INDEX IF NOT EXISTS deliveries_pending_updated ON deliveries (notifier, updated_at)"
            " WHERE status = 'pending'",
        ],
    ),
]

#: the newest schema version this code knows; it refuses to write a store migrated past it
LATEST_VERSION = MIGRATIONS[-1][0]

#: the PostgreSQL session setting each connection of this code sets to
#: :data:`LATEST_VERSION`; a table an older version's writes would corrupt has a trigger
#: (``driftwarden_refuse_older_writer``) refusing sessions that set it lower or not at all
WRITER_SETTING = "driftwarden.schema"
