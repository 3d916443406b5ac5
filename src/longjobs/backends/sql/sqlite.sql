-- Named queries of the SQLite backend. "-- name: x" starts a query; times are Unix seconds (REAL).

-- name: schema
CREATE TABLE IF NOT EXISTS jobs (
    num INTEGER PRIMARY KEY AUTOINCREMENT,  -- internal, ascending, never reused
    id TEXT NOT NULL UNIQUE,
    tenant TEXT NOT NULL,
    kind TEXT NOT NULL,
    status TEXT NOT NULL,
    priority INTEGER NOT NULL DEFAULT 0,
    input TEXT NOT NULL,
    metadata TEXT NOT NULL DEFAULT '{}',
    attempt INTEGER NOT NULL DEFAULT 0,
    max_attempts INTEGER NOT NULL,
    timeout_seconds REAL,
    result_ttl_seconds REAL,
    progress REAL NOT NULL DEFAULT 0,
    stage TEXT,
    message TEXT,
    eta_seconds REAL,
    error TEXT,
    cancel_requested INTEGER NOT NULL DEFAULT 0,
    input_tokens INTEGER NOT NULL DEFAULT 0,
    output_tokens INTEGER NOT NULL DEFAULT 0,
    checkpoint TEXT,
    idempotency_key TEXT,
    request_hash TEXT,
    result TEXT,              -- a result of up to inline_result_bytes; larger ones are in results
    result_size INTEGER,
    lease_owner TEXT,
    lease_until REAL,
    last_seq INTEGER NOT NULL DEFAULT 0,
    created_at REAL NOT NULL,
    run_at REAL NOT NULL,
    started_at REAL,
    finished_at REAL,
    expires_at REAL,
    updated_at REAL NOT NULL,
    -- Commit order of the last visible change (one writer at a time: a transaction's values
    -- are above every committed one). The tenant-wide change feed reads jobs after a cursor.
    change INTEGER NOT NULL DEFAULT 0,
    webhook_url TEXT  -- the job's own webhook receiver
);
CREATE INDEX IF NOT EXISTS jobs_due ON jobs (priority DESC, run_at, num) WHERE status = 'pending';
CREATE INDEX IF NOT EXISTS jobs_leased ON jobs (lease_owner) WHERE status = 'running';
CREATE INDEX IF NOT EXISTS jobs_listing ON jobs (tenant, num DESC);
CREATE UNIQUE INDEX IF NOT EXISTS jobs_idempotency
    ON jobs (tenant, idempotency_key) WHERE idempotency_key IS NOT NULL;
CREATE INDEX IF NOT EXISTS jobs_change ON jobs (change);
CREATE INDEX IF NOT EXISTS jobs_result_expiry ON jobs (expires_at) WHERE result_size IS NOT NULL;
CREATE TABLE IF NOT EXISTS events (
    job_num INTEGER NOT NULL,
    seq INTEGER NOT NULL,
    type TEXT NOT NULL,
    at REAL NOT NULL,
    data TEXT NOT NULL,
    PRIMARY KEY (job_num, seq)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS api_keys (
    id TEXT PRIMARY KEY,
    tenant TEXT NOT NULL,
    name TEXT,
    key_hash TEXT NOT NULL UNIQUE,
    created_at REAL NOT NULL,
    revoked_at REAL
);
-- The highest change number ever given to a job that was then deleted: new change numbers are
-- above it, so deleting the job changed last never lets a number be given twice.
CREATE TABLE IF NOT EXISTS feed_floor (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    value INTEGER NOT NULL
);
INSERT OR IGNORE INTO feed_floor (id, value) VALUES (1, 0);
CREATE TABLE IF NOT EXISTS results (
    job_num INTEGER PRIMARY KEY,
    content_type TEXT NOT NULL,
    body BLOB NOT NULL
);
-- Webhooks (backends/outbox.py). An endpoint's id is unique per tenant: "default" is the
-- tenant's signer for the webhook URLs of single jobs.
CREATE TABLE IF NOT EXISTS webhook_endpoints (
    tenant TEXT NOT NULL,
    id TEXT NOT NULL,
    url TEXT NOT NULL,
    secret TEXT NOT NULL,
    previous_secret TEXT,
    previous_secret_until REAL,
    event_types TEXT NOT NULL DEFAULT '[]',
    description TEXT,
    created_at REAL NOT NULL,
    disabled_at REAL,
    disabled_reason TEXT,
    PRIMARY KEY (tenant, id)
) WITHOUT ROWID;
-- The outbox: one event per job that ended, written in the transaction that ends it.
CREATE TABLE IF NOT EXISTS webhook_outbox (
    num INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id TEXT NOT NULL,
    tenant TEXT NOT NULL,
    job_id TEXT NOT NULL,
    job_num INTEGER NOT NULL,
    kind TEXT NOT NULL,
    status TEXT NOT NULL,
    type TEXT,                -- decided when the job ended; NULL: from kind and status
    webhook_url TEXT,
    created_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS webhook_deliveries (
    id TEXT PRIMARY KEY,
    event_id TEXT NOT NULL,
    tenant TEXT NOT NULL,
    job_id TEXT NOT NULL,
    endpoint_id TEXT NOT NULL,
    url TEXT,                 -- the job's own URL; NULL: the endpoint's URL at each attempt
    type TEXT NOT NULL,
    created_at REAL NOT NULL,
    status TEXT NOT NULL DEFAULT 'pending',
    tries INTEGER NOT NULL DEFAULT 0,
    next_attempt_at REAL,
    lease_owner TEXT,
    lease_until REAL,
    attempts TEXT NOT NULL DEFAULT '[]',
    updated_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS webhook_deliveries_due
    ON webhook_deliveries (next_attempt_at) WHERE status = 'pending';
CREATE INDEX IF NOT EXISTS webhook_deliveries_of_job ON webhook_deliveries (job_id);
CREATE INDEX IF NOT EXISTS webhook_deliveries_finished
    ON webhook_deliveries (updated_at) WHERE status <> 'pending';
-- The outbox is written by record_outbox, in the transaction that ends the job (a trigger
-- did it once, at a fifth of the finish throughput).
DROP TRIGGER IF EXISTS jobs_webhook_outbox;
-- Workers alive (version 5): each one registers until a few heartbeats from now.
CREATE TABLE IF NOT EXISTS workers (
    id TEXT PRIMARY KEY,
    expires_at REAL NOT NULL
) WITHOUT ROWID;

-- name: insert_job
INSERT INTO jobs (id, tenant, kind, status, priority, input, metadata, max_attempts,
                  timeout_seconds, result_ttl_seconds, idempotency_key, request_hash,
                  webhook_url, created_at, run_at, updated_at, change)
VALUES (:id, :tenant, :kind, 'pending', :priority, :input, :metadata, :max_attempts,
        :timeout_seconds, :result_ttl_seconds, :idempotency_key, :request_hash,
        :webhook_url, :now, :run_at, :now, (SELECT max(coalesce(max(change), 0), (SELECT value FROM feed_floor)) + 1 FROM jobs))
RETURNING num

-- name: changed_jobs
-- By the change index, in commit order, then filtered by tenant ("+tenant": not by the listing
-- index, which would read all of a tenant's jobs to sort them).
SELECT $job_columns, change FROM jobs
WHERE +tenant = :tenant AND change >= :change AND (change, num) > (:change, :num)
      AND change <= :head
ORDER BY change, num
LIMIT :limit

-- name: change_head
SELECT max(coalesce(max(change), 0), (SELECT value FROM feed_floor)) FROM jobs

-- What another process may have changed: the feed floor moves when a job is deleted.
-- name: change_marks
SELECT (SELECT value FROM feed_floor), (SELECT coalesce(max(change), 0) FROM jobs)

-- name: changed_since
SELECT id, last_seq, status FROM jobs WHERE change > ? AND change <= ? ORDER BY change LIMIT ?

-- The events of several jobs in one read: [[job id, after, up to], ...].
-- name: events_between
SELECT json_extract(w.value, '$[0]') AS id, e.seq, e.type, e.at, e.data
FROM json_each(?) AS w
JOIN jobs AS j ON j.id = json_extract(w.value, '$[0]')
JOIN events AS e ON e.job_num = j.num
     AND e.seq > json_extract(w.value, '$[1]') AND e.seq <= json_extract(w.value, '$[2]')
ORDER BY w.key, e.seq

-- name: raise_feed_floor
UPDATE feed_floor SET value = max(value, (SELECT coalesce(max(change), 0) FROM jobs))

-- name: job_counts
SELECT status, kind, count(*) AS n FROM jobs GROUP BY status, kind

-- name: usage_by_kind
SELECT kind, count(*) AS n, sum(input_tokens) AS i, sum(output_tokens) AS o FROM jobs
WHERE tenant = ? AND (input_tokens > 0 OR output_tokens > 0) GROUP BY kind

-- name: count_pending
SELECT count(*) FROM (SELECT 1 FROM jobs WHERE status = 'pending' AND tenant = ? LIMIT ?)

-- name: drop_expired_workers
DELETE FROM workers WHERE expires_at <= ?

-- name: worker_seen
INSERT INTO workers (id, expires_at) VALUES (?, ?)
ON CONFLICT (id) DO UPDATE SET expires_at = excluded.expires_at

-- name: worker_gone
DELETE FROM workers WHERE id = ?

-- A tenant's stats in one statement, so one snapshot (rows: see backends/stats.py). Both parts
-- that read jobs find the tenant's rows by the listing index and read them all: no index on
-- finished_at or started_at slows every claim and finish for the sake of this read.
-- name: queue_stats
WITH recent AS MATERIALIZED (
    SELECT status, started_at, finished_at, max(0, started_at - run_at) AS wait FROM jobs
    WHERE tenant = :tenant AND (finished_at >= :since OR started_at >= :since)
)
SELECT 'jobs' AS part, status, kind, NULL AS minute, count(*) AS n, NULL AS wait_avg,
       NULL AS wait_max
FROM jobs WHERE tenant = :tenant GROUP BY status, kind
UNION ALL
SELECT 'finished', status, NULL, CAST(finished_at / 60 AS INTEGER) AS minute, count(*), NULL,
       NULL
FROM recent WHERE finished_at >= :since GROUP BY status, minute
UNION ALL
SELECT 'started', NULL, NULL, CAST(started_at / 60 AS INTEGER) AS minute, count(*), avg(wait),
       max(wait)
FROM recent WHERE started_at >= :since GROUP BY minute
UNION ALL
SELECT 'workers', NULL, NULL, NULL, count(*), NULL, NULL FROM workers WHERE expires_at > :now

-- name: insert_api_key
INSERT INTO api_keys (id, tenant, name, key_hash, created_at) VALUES (?, ?, ?, ?, ?)

-- name: revoke_api_key
UPDATE api_keys SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL

-- name: list_api_keys
SELECT id, tenant, name, created_at, revoked_at FROM api_keys ORDER BY created_at, id

-- name: authenticate
SELECT tenant FROM api_keys WHERE key_hash = ? AND revoked_at IS NULL

-- name: has_api_keys
SELECT EXISTS (SELECT 1 FROM api_keys)

-- name: insert_event
INSERT INTO events (job_num, seq, type, at, data) VALUES (?, ?, ?, ?, ?)

-- name: find_idempotent
SELECT $job_columns FROM jobs WHERE tenant = ? AND idempotency_key = ?

-- name: request_hash
SELECT kind, request_hash FROM jobs WHERE num = ?

-- name: claim_jobs
UPDATE jobs
SET status = 'running', attempt = attempt + 1, lease_owner = :worker,
    lease_until = :now + :lease, started_at = :now, last_seq = last_seq + 1, updated_at = :now,
    change = (SELECT max(coalesce(max(change), 0), (SELECT value FROM feed_floor)) + 1 FROM jobs)
WHERE id IN (
    SELECT id FROM jobs
    WHERE status = 'pending' AND run_at <= :now AND kind IN (SELECT value FROM json_each(:kinds))
    ORDER BY priority DESC, run_at, num
    LIMIT :limit
)
RETURNING $job_columns

-- name: extend_leases
UPDATE jobs SET lease_until = :now + :lease
WHERE lease_owner = :worker AND status = 'running'
      AND id IN (SELECT value FROM json_each(:ids))
RETURNING id, cancel_requested

-- name: cancel_requested_for
SELECT id FROM jobs WHERE lease_owner = ? AND status = 'running' AND cancel_requested = 1

-- Many fenced updates in one statement: the rows of temp.job_updates (created by the writer).
-- "+" keeps the planner from scanning the worker's leases: each update finds its job by id.
-- name: create_job_updates
CREATE TEMP TABLE IF NOT EXISTS job_updates (
    id TEXT NOT NULL, attempt INTEGER NOT NULL, n INTEGER NOT NULL, progress REAL, stage TEXT,
    message TEXT, eta_seconds REAL, input_tokens INTEGER, output_tokens INTEGER,
    has_checkpoint INTEGER NOT NULL, checkpoint TEXT
)

-- name: clear_job_updates
DELETE FROM temp.job_updates

-- name: insert_job_update
INSERT INTO temp.job_updates VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)

-- name: report_progress_batch
UPDATE jobs
SET last_seq = jobs.last_seq + u.n,
    progress = coalesce(u.progress, jobs.progress),
    stage = CASE WHEN u.progress IS NULL THEN jobs.stage ELSE u.stage END,
    message = CASE WHEN u.progress IS NULL THEN jobs.message ELSE u.message END,
    eta_seconds = CASE WHEN u.progress IS NULL THEN jobs.eta_seconds ELSE u.eta_seconds END,
    input_tokens = coalesce(u.input_tokens, jobs.input_tokens),
    output_tokens = coalesce(u.output_tokens, jobs.output_tokens),
    checkpoint = CASE WHEN u.has_checkpoint THEN u.checkpoint ELSE jobs.checkpoint END,
    updated_at = :now,
    change = (SELECT max(coalesce(max(change), 0), (SELECT value FROM feed_floor)) + 1 FROM jobs)
FROM temp.job_updates AS u
WHERE jobs.id = u.id AND jobs.attempt = u.attempt AND +jobs.lease_owner = :worker
      AND +jobs.status = 'running'
RETURNING jobs.id, jobs.num, jobs.last_seq, jobs.progress

-- name: held_for_finish
SELECT num, id, kind, attempt, last_seq, cancel_requested, progress, run_at, result_ttl_seconds
FROM jobs
WHERE lease_owner = ? AND status = 'running' AND id IN (SELECT value FROM json_each(?))

-- name: settle_job
UPDATE jobs
SET status = ?, error = ?, progress = ?, eta_seconds = ?, result = ?, result_size = ?,
    expires_at = ?, finished_at = ?, run_at = ?, lease_owner = NULL, lease_until = NULL,
    last_seq = ?, updated_at = ?,
    change = (SELECT max(coalesce(max(change), 0), (SELECT value FROM feed_floor)) + 1 FROM jobs)
WHERE num = ?

-- name: insert_result
INSERT OR REPLACE INTO results (job_num, content_type, body) VALUES (?, ?, ?)

-- A released or reclaimed job keeps its run_at: it goes back to its place in the queue.
-- name: release_job
UPDATE jobs
SET status = CASE WHEN cancel_requested THEN 'cancelled' ELSE 'pending' END,
    finished_at = CASE WHEN cancel_requested THEN :now END,
    attempt = attempt - 1, lease_owner = NULL,
    lease_until = NULL, last_seq = last_seq + 1, updated_at = :now,
    change = (SELECT max(coalesce(max(change), 0), (SELECT value FROM feed_floor)) + 1 FROM jobs)
WHERE id = :id AND lease_owner = :worker AND status = 'running'
RETURNING num, last_seq, attempt, status

-- name: cancel_pending
UPDATE jobs
SET status = 'cancelled', cancel_requested = 1, finished_at = :now, last_seq = last_seq + 1,
    updated_at = :now,
    change = (SELECT max(coalesce(max(change), 0), (SELECT value FROM feed_floor)) + 1 FROM jobs)
WHERE id = :id AND tenant = :tenant AND status = 'pending'
RETURNING num, last_seq, attempt

-- name: cancel_running
UPDATE jobs SET cancel_requested = 1, last_seq = last_seq + 1, updated_at = :now,
    change = (SELECT max(coalesce(max(change), 0), (SELECT value FROM feed_floor)) + 1 FROM jobs)
WHERE id = :id AND tenant = :tenant AND status = 'running' AND cancel_requested = 0
RETURNING num, last_seq, attempt, lease_owner

-- name: expired_leases
SELECT num, id, attempt, max_attempts, cancel_requested, lease_owner FROM jobs
WHERE status = 'running' AND lease_until < ?
LIMIT 1000

-- name: end_expired_lease
UPDATE jobs
SET status = :status, error = :error, finished_at = :finished_at, eta_seconds = NULL,
    lease_owner = NULL, lease_until = NULL, last_seq = last_seq + 1, updated_at = :now,
    change = (SELECT max(coalesce(max(change), 0), (SELECT value FROM feed_floor)) + 1 FROM jobs)
WHERE id = :id AND attempt = :attempt AND status = 'running' AND lease_until < :now
RETURNING num, last_seq

-- name: expire_results
DELETE FROM results WHERE job_num IN (
    SELECT num FROM jobs WHERE result_size IS NOT NULL AND expires_at <= ? LIMIT 1000
)

-- name: mark_results_expired
UPDATE jobs SET result = NULL, result_size = NULL
WHERE num IN (SELECT num FROM jobs WHERE result_size IS NOT NULL AND expires_at <= ? LIMIT 1000)

-- name: delete_job
DELETE FROM jobs WHERE id = ? AND tenant = ? RETURNING num

-- name: delete_events
DELETE FROM events WHERE job_num = ?

-- name: delete_result
DELETE FROM results WHERE job_num = ?

-- name: get_job
SELECT $job_columns FROM jobs WHERE id = ? AND tenant = ?

-- name: get_result
SELECT coalesce(jobs.result, results.body) AS body,
       coalesce(results.content_type, 'application/json') AS content_type
FROM jobs LEFT JOIN results ON results.job_num = jobs.num
WHERE jobs.id = ? AND jobs.tenant = ? AND jobs.status = 'completed'
      AND jobs.result_size IS NOT NULL AND (jobs.expires_at IS NULL OR jobs.expires_at > ?)

-- name: locate_result
SELECT jobs.result AS inline, results.job_num AS num, results.content_type AS content_type,
       jobs.result_size AS size
FROM jobs LEFT JOIN results ON results.job_num = jobs.num
WHERE jobs.id = ? AND jobs.tenant = ? AND jobs.status = 'completed'
      AND jobs.result_size IS NOT NULL AND (jobs.expires_at IS NULL OR jobs.expires_at > ?)

-- name: job_exists
SELECT 1 FROM jobs WHERE id = ? AND tenant = ?

-- One statement, one snapshot: the job's number and its events cannot come from different jobs.
-- name: list_events
SELECT events.seq, events.type, events.at, events.data
FROM jobs JOIN events ON events.job_num = jobs.num
WHERE jobs.id = ? AND jobs.tenant = ? AND events.seq > ?
ORDER BY events.seq LIMIT ?

-- name: has_due_work
SELECT 1 FROM jobs
WHERE status = 'pending' AND run_at <= ? AND kind IN (SELECT value FROM json_each(?))
LIMIT 1

-- Jobs that just ended get an outbox event when they have a webhook URL or their tenant has
-- endpoints (a job's move to a terminal status happens once: no event is written twice).
-- name: record_outbox
INSERT INTO webhook_outbox (event_id, tenant, job_id, job_num, kind, status, type,
                            webhook_url, created_at)
SELECT 'evt_' || lower(hex(randomblob(16))), tenant, id, num, kind, status,
       (SELECT t.value FROM json_each(:types) AS t WHERE t.key = CAST(jobs.num AS TEXT)),
       webhook_url, :now
FROM jobs
WHERE num IN (SELECT value FROM json_each(:nums))
  AND status IN ('completed', 'failed', 'cancelled')
  AND (webhook_url IS NOT NULL
       OR EXISTS (SELECT 1 FROM webhook_endpoints AS e
                  WHERE e.tenant = jobs.tenant AND e.id <> 'default'))

-- name: insert_webhook
INSERT OR IGNORE INTO webhook_endpoints (tenant, id, url, secret, previous_secret,
    previous_secret_until, event_types, description, created_at, disabled_at, disabled_reason)
VALUES (:tenant, :id, :url, :secret, :previous_secret, :previous_secret_until, :event_types,
        :description, :created_at, :disabled_at, :disabled_reason)

-- name: get_webhook
SELECT * FROM webhook_endpoints WHERE tenant = ? AND id = ?

-- name: list_webhooks
SELECT * FROM webhook_endpoints WHERE tenant = ? AND id <> 'default' ORDER BY created_at, id

-- name: update_webhook
-- One statement: concurrent changes, rotations and a disabling after a 410 never undo each other
-- (the right-hand sides all read the row as it was).
UPDATE webhook_endpoints
SET url = coalesce(:url, url),
    event_types = coalesce(:event_types, event_types),
    description = CASE WHEN :set_description THEN :description ELSE description END,
    disabled_at = CASE :enabled WHEN 1 THEN NULL WHEN 0 THEN coalesce(disabled_at, :now)
                  ELSE disabled_at END,
    disabled_reason = CASE :enabled WHEN 1 THEN NULL
                      WHEN 0 THEN coalesce(disabled_reason, 'disabled by request')
                      ELSE disabled_reason END,
    previous_secret = CASE WHEN :new_secret IS NULL THEN previous_secret ELSE secret END,
    previous_secret_until = CASE WHEN :new_secret IS NULL THEN previous_secret_until
                            ELSE :previous_secret_until END,
    secret = coalesce(:new_secret, secret)
WHERE tenant = :tenant AND id = :id
RETURNING *

-- name: endpoints_of_tenant
SELECT * FROM webhook_endpoints WHERE tenant = ?

-- name: endpoint_of
SELECT tenant, endpoint_id FROM webhook_deliveries WHERE id = ?

-- name: delete_webhook
DELETE FROM webhook_endpoints WHERE tenant = ? AND id = ? AND id <> 'default'

-- name: disable_webhook
UPDATE webhook_endpoints SET disabled_at = ?, disabled_reason = ?
WHERE tenant = ? AND id = ? AND id <> 'default' AND disabled_at IS NULL

-- name: outbox_events
SELECT num, event_id, tenant, job_id, kind, status, type, webhook_url, created_at
FROM webhook_outbox
ORDER BY num
LIMIT ?

-- name: delete_outbox_event
DELETE FROM webhook_outbox WHERE num = ?

-- name: insert_delivery
INSERT INTO webhook_deliveries (id, event_id, tenant, job_id, endpoint_id, url, type,
                                created_at, next_attempt_at, updated_at)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)

-- Read first: claiming is a write, and most looks find nothing to do.
-- name: deliveries_due
SELECT EXISTS(SELECT 1 FROM webhook_outbox)
       OR EXISTS(SELECT 1 FROM webhook_deliveries
                 WHERE status = 'pending' AND next_attempt_at <= ?)

-- A leased delivery comes due again when its lease runs out.
-- name: claim_deliveries
UPDATE webhook_deliveries
SET lease_owner = :owner, lease_until = :now + :lease, next_attempt_at = :now + :lease,
    updated_at = :now
WHERE id IN (SELECT id FROM webhook_deliveries
             WHERE status = 'pending' AND next_attempt_at <= :now
             ORDER BY next_attempt_at LIMIT :limit)
RETURNING *

-- name: leased_attempts
SELECT attempts FROM webhook_deliveries WHERE id = ? AND lease_owner = ? AND status = 'pending'

-- name: record_delivery
UPDATE webhook_deliveries
SET status = :status, tries = tries + :tried, next_attempt_at = :next_attempt_at,
    attempts = :attempts, lease_owner = NULL, lease_until = NULL, updated_at = :now
WHERE id = :id AND lease_owner = :owner

-- name: deliveries_of_job
SELECT d.*, coalesce(d.url, e.url) AS shown_url
FROM webhook_deliveries AS d
LEFT JOIN webhook_endpoints AS e ON e.tenant = d.tenant AND e.id = d.endpoint_id
WHERE d.job_id = ? AND d.tenant = ?
ORDER BY d.created_at, d.id

-- A delivery being sent right now is left to its attempt (whose outcome is then recorded).
-- name: replay_delivery
UPDATE webhook_deliveries
SET status = 'pending', tries = 0, next_attempt_at = :now, lease_owner = NULL,
    lease_until = NULL, updated_at = :now
WHERE id = :id AND tenant = :tenant AND job_id = :job_id
      AND (lease_until IS NULL OR lease_until < :now)

-- name: expire_deliveries
DELETE FROM webhook_deliveries
WHERE id IN (SELECT id FROM webhook_deliveries
             WHERE status <> 'pending' AND updated_at < ? LIMIT 1000)
