-- Named queries of the PostgreSQL backend. "-- name: x" starts a query; times are Unix seconds
-- (double precision) on the database's clock: longjobs_now() is the transaction's start time.
-- Event data, inputs and results are JSON text, kept as written (jsonb would reorder keys).

-- name: migration_1
CREATE SEQUENCE job_changes;
CREATE FUNCTION longjobs_now() RETURNS double precision
    LANGUAGE sql STABLE PARALLEL SAFE
    AS 'SELECT extract(epoch FROM now())::double precision';
CREATE TABLE jobs (
    num bigserial PRIMARY KEY,
    id text NOT NULL UNIQUE,
    tenant text NOT NULL,
    kind text NOT NULL,
    status text NOT NULL,
    priority integer NOT NULL DEFAULT 0,
    input text NOT NULL,
    metadata text NOT NULL DEFAULT '{}',
    attempt integer NOT NULL DEFAULT 0,
    max_attempts integer NOT NULL,
    timeout_seconds double precision,
    result_ttl_seconds double precision,
    progress double precision NOT NULL DEFAULT 0,
    stage text,
    message text,
    eta_seconds double precision,
    error text,
    cancel_requested boolean NOT NULL DEFAULT false,
    input_tokens bigint NOT NULL DEFAULT 0,
    output_tokens bigint NOT NULL DEFAULT 0,
    checkpoint text,
    idempotency_key text,
    request_hash text,
    result text,
    result_size bigint,
    lease_owner text,
    lease_until double precision,
    last_seq bigint NOT NULL DEFAULT 0,
    created_at double precision NOT NULL,
    run_at double precision NOT NULL,
    started_at double precision,
    finished_at double precision,
    expires_at double precision,
    updated_at double precision NOT NULL,
    -- The last change: the id of the transaction that made it, then its place in the sequence.
    -- Read only below the oldest transaction still running, (change_xid, change_seq) is an
    -- order in which no later commit ever lands behind a reader's cursor.
    change_xid xid8 NOT NULL DEFAULT pg_current_xact_id(),
    change_seq bigint NOT NULL DEFAULT nextval('job_changes')
);
CREATE INDEX jobs_due ON jobs (priority DESC, run_at, num) WHERE status = 'pending';
CREATE INDEX jobs_leased ON jobs (lease_owner) WHERE status = 'running';
CREATE INDEX jobs_lease_expiry ON jobs (lease_until) WHERE status = 'running';
CREATE INDEX jobs_listing ON jobs (tenant, num DESC);
CREATE UNIQUE INDEX jobs_idempotency ON jobs (tenant, idempotency_key)
    WHERE idempotency_key IS NOT NULL;
CREATE INDEX jobs_changes ON jobs (tenant, change_xid, change_seq);
CREATE INDEX jobs_result_expiry ON jobs (expires_at) WHERE result_size IS NOT NULL;
CREATE TABLE events (
    job_num bigint NOT NULL,
    seq bigint NOT NULL,
    type text NOT NULL,
    at double precision NOT NULL,
    data text NOT NULL,
    PRIMARY KEY (job_num, seq)
);
CREATE TABLE results (
    job_num bigint PRIMARY KEY,
    content_type text NOT NULL,
    body bytea NOT NULL
);
CREATE TABLE api_keys (
    id text PRIMARY KEY,
    tenant text NOT NULL,
    name text,
    key_hash text NOT NULL UNIQUE,
    created_at double precision NOT NULL,
    revoked_at double precision
);

-- name: migration_2
-- Webhooks (backends/outbox.py). An endpoint's id is unique per tenant: "default" is the
-- tenant's signer for the webhook URLs of single jobs.
ALTER TABLE jobs ADD COLUMN webhook_url text;
CREATE TABLE webhook_endpoints (
    tenant text NOT NULL,
    id text NOT NULL,
    url text NOT NULL,
    secret text NOT NULL,
    previous_secret text,
    previous_secret_until double precision,
    event_types text NOT NULL DEFAULT '[]',
    description text,
    created_at double precision NOT NULL,
    disabled_at double precision,
    disabled_reason text,
    PRIMARY KEY (tenant, id)
);
CREATE TABLE webhook_outbox (
    num bigserial PRIMARY KEY,
    event_id text NOT NULL,
    tenant text NOT NULL,
    job_id text NOT NULL,
    job_num bigint NOT NULL,
    kind text NOT NULL,
    status text NOT NULL,
    type text,
    webhook_url text,
    created_at double precision NOT NULL
);
CREATE TABLE webhook_deliveries (
    id text PRIMARY KEY,
    event_id text NOT NULL,
    tenant text NOT NULL,
    job_id text NOT NULL,
    endpoint_id text NOT NULL,
    url text,
    type text NOT NULL,
    created_at double precision NOT NULL,
    status text NOT NULL DEFAULT 'pending',
    tries integer NOT NULL DEFAULT 0,
    next_attempt_at double precision,
    lease_owner text,
    lease_until double precision,
    attempts text NOT NULL DEFAULT '[]',
    updated_at double precision NOT NULL
);
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (next_attempt_at)
    WHERE status = 'pending';
CREATE INDEX webhook_deliveries_of_job ON webhook_deliveries (job_id);
CREATE INDEX webhook_deliveries_finished ON webhook_deliveries (updated_at)
    WHERE status <> 'pending';

-- name: migration_3
-- Workers alive: each one registers until a few heartbeats from now.
CREATE TABLE workers (
    id text PRIMARY KEY,
    expires_at double precision NOT NULL
);

-- name: now
SELECT longjobs_now()

-- name: insert_job
INSERT INTO jobs (id, tenant, kind, status, priority, input, metadata, max_attempts,
                  timeout_seconds, result_ttl_seconds, idempotency_key, request_hash,
                  webhook_url, created_at, run_at, updated_at)
VALUES ($1, $2, $3, 'pending', $4, $5, $6, $7, $8, $9, $10, $11, $13,
        longjobs_now(), longjobs_now() + $12, longjobs_now())
ON CONFLICT (tenant, idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING
RETURNING num, created_at

-- name: find_idempotent
SELECT $job_columns, request_hash FROM jobs WHERE tenant = $1 AND idempotency_key = $2

-- name: insert_event
INSERT INTO events (job_num, seq, type, at, data) VALUES ($1, $2, $3, longjobs_now(), $4)

-- name: insert_events
INSERT INTO events (job_num, seq, type, at, data)
SELECT n, s, t, longjobs_now(), d FROM unnest($1::bigint[], $2::bigint[], $3::text[], $4::text[])
    AS e(n, s, t, d)

-- name: claim_jobs
WITH picked AS (
    SELECT num FROM jobs
    WHERE status = 'pending' AND run_at <= longjobs_now() AND kind = ANY($2::text[])
    ORDER BY priority DESC, run_at, num
    LIMIT $3
    FOR UPDATE SKIP LOCKED
), claimed AS (
    UPDATE jobs SET status = 'running', attempt = attempt + 1, lease_owner = $1,
        lease_until = longjobs_now() + $4, started_at = longjobs_now(),
        last_seq = last_seq + 1, updated_at = longjobs_now(),
        change_xid = pg_current_xact_id(), change_seq = nextval('job_changes')
    FROM picked WHERE jobs.num = picked.num
    RETURNING $job_columns_of_jobs
), running AS (
    INSERT INTO events (job_num, seq, type, at, data)
    SELECT num, last_seq, 'status', longjobs_now(),
           '{"status":"running","attempt":' || attempt || '}'
    FROM claimed
)
SELECT * FROM claimed ORDER BY priority DESC, run_at, num

-- Every statement that locks several running jobs takes their row locks in id order (a plain
-- UPDATE locks in whatever order its plan visits them): a worker's heartbeat, flush and finish
-- on different connections then never deadlock.
-- name: extend_leases
WITH held AS (
    SELECT num FROM jobs
    WHERE lease_owner = $1 AND status = 'running' AND id = ANY($3::text[])
    ORDER BY id FOR UPDATE
)
UPDATE jobs SET lease_until = longjobs_now() + $2
FROM held WHERE jobs.num = held.num
RETURNING id, cancel_requested

-- name: cancel_requested_for
SELECT id FROM jobs WHERE lease_owner = $1 AND status = 'running' AND cancel_requested

-- Many fenced updates in one statement; at most one per job (the caller makes rounds).
-- name: report_progress
WITH u AS (
    SELECT * FROM unnest($2::text[], $3::int[], $4::int[], $5::float8[], $6::text[], $7::text[],
                         $8::float8[], $9::bigint[], $10::bigint[], $11::bool[], $12::text[])
        AS u(id, attempt, n, progress, stage, message, eta_seconds, input_tokens,
             output_tokens, has_checkpoint, checkpoint)
), held AS (
    SELECT jobs.num FROM jobs JOIN u ON jobs.id = u.id
    WHERE jobs.attempt = u.attempt AND jobs.lease_owner = $1 AND jobs.status = 'running'
    ORDER BY jobs.id FOR UPDATE OF jobs
)
UPDATE jobs
SET last_seq = jobs.last_seq + u.n,
    progress = coalesce(u.progress, jobs.progress),
    stage = CASE WHEN u.progress IS NULL THEN jobs.stage ELSE u.stage END,
    message = CASE WHEN u.progress IS NULL THEN jobs.message ELSE u.message END,
    eta_seconds = CASE WHEN u.progress IS NULL THEN jobs.eta_seconds ELSE u.eta_seconds END,
    input_tokens = coalesce(u.input_tokens, jobs.input_tokens),
    output_tokens = coalesce(u.output_tokens, jobs.output_tokens),
    checkpoint = CASE WHEN u.has_checkpoint THEN u.checkpoint ELSE jobs.checkpoint END,
    updated_at = longjobs_now(),
    change_xid = pg_current_xact_id(), change_seq = nextval('job_changes')
FROM u, held
WHERE jobs.num = held.num AND jobs.id = u.id
RETURNING jobs.id, jobs.num, jobs.last_seq, jobs.progress

-- name: held_for_finish
SELECT num, id, kind, attempt, last_seq, cancel_requested, progress, run_at, result_ttl_seconds
FROM jobs
WHERE lease_owner = $1 AND status = 'running' AND id = ANY($2::text[])
ORDER BY id FOR UPDATE

-- name: settle_jobs
UPDATE jobs
SET status = s.status, error = s.error, progress = s.progress, eta_seconds = s.eta_seconds,
    result = s.result, result_size = s.result_size, expires_at = s.expires_at,
    finished_at = s.finished_at, run_at = s.run_at, lease_owner = NULL, lease_until = NULL,
    last_seq = s.last_seq, updated_at = longjobs_now(),
    change_xid = pg_current_xact_id(), change_seq = nextval('job_changes')
FROM unnest($1::text[], $2::text[], $3::float8[], $4::float8[], $5::text[], $6::bigint[],
            $7::float8[], $8::float8[], $9::float8[], $10::bigint[], $11::bigint[])
    AS s(status, error, progress, eta_seconds, result, result_size, expires_at, finished_at,
         run_at, last_seq, num)
WHERE jobs.num = s.num

-- name: insert_result
INSERT INTO results (job_num, content_type, body) VALUES ($1, $2, $3)
ON CONFLICT (job_num) DO UPDATE SET content_type = excluded.content_type, body = excluded.body

-- A released or reclaimed job keeps its run_at: it goes back to its place in the queue.
-- name: release_job
UPDATE jobs
SET status = CASE WHEN cancel_requested THEN 'cancelled' ELSE 'pending' END,
    finished_at = CASE WHEN cancel_requested THEN longjobs_now() END,
    attempt = attempt - 1, lease_owner = NULL,
    lease_until = NULL, last_seq = last_seq + 1, updated_at = longjobs_now(),
    change_xid = pg_current_xact_id(), change_seq = nextval('job_changes')
WHERE id = $1 AND lease_owner = $2 AND status = 'running'
RETURNING num, last_seq, attempt, status

-- A cancel first waits for whatever else holds the job (a finish, a sweep, a release), then
-- decides on the status it finds: it cannot fall between "running" and "pending again".
-- name: lock_job
SELECT status FROM jobs WHERE id = $1 AND tenant = $2 FOR UPDATE

-- name: cancel_pending
UPDATE jobs
SET status = 'cancelled', cancel_requested = true, finished_at = longjobs_now(),
    last_seq = last_seq + 1, updated_at = longjobs_now(),
    change_xid = pg_current_xact_id(), change_seq = nextval('job_changes')
WHERE id = $1 AND tenant = $2 AND status = 'pending'
RETURNING num, last_seq, attempt

-- name: cancel_running
UPDATE jobs SET cancel_requested = true, last_seq = last_seq + 1, updated_at = longjobs_now(),
    change_xid = pg_current_xact_id(), change_seq = nextval('job_changes')
WHERE id = $1 AND tenant = $2 AND status = 'running' AND NOT cancel_requested
RETURNING num, last_seq, attempt, lease_owner

-- name: expired_leases
SELECT num, id, attempt, max_attempts, cancel_requested, lease_owner FROM jobs
WHERE status = 'running' AND lease_until < longjobs_now()
LIMIT 1000
FOR UPDATE SKIP LOCKED

-- name: end_expired_lease
UPDATE jobs
SET status = $1, error = $2, finished_at = $3, eta_seconds = NULL,
    lease_owner = NULL, lease_until = NULL, last_seq = last_seq + 1, updated_at = longjobs_now(),
    change_xid = pg_current_xact_id(), change_seq = nextval('job_changes')
WHERE id = $4 AND attempt = $5 AND status = 'running' AND lease_until < longjobs_now()
RETURNING num, last_seq

-- name: expire_results
WITH gone AS (
    UPDATE jobs SET result = NULL, result_size = NULL
    WHERE num IN (SELECT num FROM jobs
                  WHERE result_size IS NOT NULL AND expires_at <= longjobs_now()
                  LIMIT 1000 FOR UPDATE SKIP LOCKED)
    RETURNING num
), removed AS (
    DELETE FROM results WHERE job_num IN (SELECT num FROM gone)
)
SELECT count(*) FROM gone

-- name: delete_job
WITH job AS (
    DELETE FROM jobs WHERE id = $1 AND tenant = $2 RETURNING num
), gone_events AS (
    DELETE FROM events WHERE job_num IN (SELECT num FROM job)
), gone_result AS (
    DELETE FROM results WHERE job_num IN (SELECT num FROM job)
)
SELECT num FROM job

-- name: get_job
SELECT $job_columns FROM jobs WHERE id = $1 AND tenant = $2

-- name: get_result
SELECT coalesce(convert_to(jobs.result, 'UTF8'), results.body) AS body,
       coalesce(results.content_type, 'application/json') AS content_type
FROM jobs LEFT JOIN results ON results.job_num = jobs.num
WHERE jobs.id = $1 AND jobs.tenant = $2 AND jobs.status = 'completed'
      AND jobs.result_size IS NOT NULL
      AND (jobs.expires_at IS NULL OR jobs.expires_at > longjobs_now())

-- name: locate_result
SELECT jobs.result AS inline, results.job_num AS num, results.content_type AS content_type,
       jobs.result_size AS size
FROM jobs LEFT JOIN results ON results.job_num = jobs.num
WHERE jobs.id = $1 AND jobs.tenant = $2 AND jobs.status = 'completed'
      AND jobs.result_size IS NOT NULL
      AND (jobs.expires_at IS NULL OR jobs.expires_at > longjobs_now())

-- name: result_chunk
SELECT substring(body FROM $2 FOR $3) FROM results WHERE job_num = $1

-- name: list_events
SELECT events.seq, events.type, events.at, events.data
FROM jobs JOIN events ON events.job_num = jobs.num
WHERE jobs.id = $1 AND jobs.tenant = $2 AND events.seq > $3
ORDER BY events.seq LIMIT $4

-- name: job_exists
SELECT 1 FROM jobs WHERE id = $1 AND tenant = $2

-- Only below the oldest running transaction: nothing can commit there later.
-- name: changed_jobs
SELECT $job_columns, change_xid::text::bigint, change_seq FROM jobs
WHERE tenant = $1 AND (change_xid, change_seq) > ($2::text::xid8, $3)
      AND change_xid < pg_snapshot_xmin(pg_current_snapshot())
ORDER BY change_xid, change_seq
LIMIT $4

-- name: changes_held_back
SELECT EXISTS (
    SELECT 1 FROM jobs
    WHERE tenant = $1 AND (change_xid, change_seq) > ($2::text::xid8, $3)
          AND change_xid >= pg_snapshot_xmin(pg_current_snapshot())
)

-- name: change_horizon
SELECT pg_snapshot_xmin(pg_current_snapshot())::text::bigint

-- name: job_counts
SELECT status, kind, count(*) AS n FROM jobs GROUP BY status, kind

-- name: usage_by_kind
SELECT kind, count(*) AS n, sum(input_tokens) AS i, sum(output_tokens) AS o FROM jobs
WHERE tenant = $1 AND (input_tokens > 0 OR output_tokens > 0) GROUP BY kind

-- name: count_pending
SELECT count(*) FROM (SELECT 1 FROM jobs WHERE status = 'pending' AND tenant = $1 LIMIT $2) AS p

-- name: has_due_work
SELECT EXISTS (
    SELECT 1 FROM jobs
    WHERE status = 'pending' AND run_at <= longjobs_now() AND kind = ANY($1::text[])
)

-- The registrations that ran out go in the same statement, each taken by one process alone
-- (SKIP LOCKED: two workers never wait for each other here).
-- name: worker_seen
WITH gone AS (
    DELETE FROM workers WHERE id IN (
        SELECT id FROM workers WHERE expires_at <= longjobs_now() AND id <> $1
        FOR UPDATE SKIP LOCKED
    )
)
INSERT INTO workers (id, expires_at) VALUES ($1, longjobs_now() + $2::double precision)
ON CONFLICT (id) DO UPDATE SET expires_at = excluded.expires_at

-- name: worker_gone
DELETE FROM workers WHERE id = $1

-- A tenant's stats in one statement, so one snapshot (rows: see backends/stats.py). Both parts
-- that read jobs find the tenant's rows by an index on tenant and read them all: no index on
-- finished_at or started_at slows every claim and finish for the sake of this read.
-- name: queue_stats
WITH recent AS MATERIALIZED (
    SELECT status, started_at, finished_at, greatest(0, started_at - run_at) AS wait FROM jobs
    WHERE tenant = $1 AND (finished_at >= $2 OR started_at >= $2)
)
SELECT 'jobs' AS part, status, kind, NULL::bigint AS minute, count(*) AS n,
       NULL::double precision AS wait_avg, NULL::double precision AS wait_max
FROM jobs WHERE tenant = $1 GROUP BY status, kind
UNION ALL
SELECT 'finished', status, NULL, floor(finished_at / 60)::bigint, count(*), NULL, NULL
FROM recent WHERE finished_at >= $2 GROUP BY 2, 4
UNION ALL
SELECT 'started', NULL, NULL, floor(started_at / 60)::bigint, count(*), avg(wait), max(wait)
FROM recent WHERE started_at >= $2 GROUP BY 4
UNION ALL
SELECT 'workers', NULL, NULL, NULL, count(*), NULL, NULL FROM workers WHERE expires_at > $3

-- name: insert_api_key
INSERT INTO api_keys (id, tenant, name, key_hash, created_at) VALUES ($1, $2, $3, $4, $5)

-- name: revoke_api_key
UPDATE api_keys SET revoked_at = longjobs_now() WHERE id = $1 AND revoked_at IS NULL

-- name: list_api_keys
SELECT id, tenant, name, created_at, revoked_at FROM api_keys ORDER BY created_at, id

-- name: authenticate
SELECT tenant FROM api_keys WHERE key_hash = $1 AND revoked_at IS NULL

-- name: has_api_keys
SELECT EXISTS (SELECT 1 FROM api_keys)

-- One notification per payload: the sender's token, then one key per line.
-- name: notify
SELECT pg_notify('longjobs', payload) FROM unnest($1::text[]) AS payload

-- Jobs that just ended get an outbox event when they have a webhook URL or their tenant has
-- endpoints, in the transaction that ends them (a job's move to a terminal status happens once).
-- name: record_outbox
INSERT INTO webhook_outbox (event_id, tenant, job_id, job_num, kind, status, type,
                            webhook_url, created_at)
SELECT 'evt_' || replace(gen_random_uuid()::text, '-', ''), tenant, id, num, kind, status,
       $2::jsonb ->> num::text, webhook_url, longjobs_now()
FROM jobs
WHERE num = ANY($1::bigint[])
  AND status IN ('completed', 'failed', 'cancelled')
  AND (webhook_url IS NOT NULL
       OR EXISTS (SELECT 1 FROM webhook_endpoints AS e
                  WHERE e.tenant = jobs.tenant AND e.id <> 'default'))

-- name: insert_webhook
INSERT INTO webhook_endpoints (tenant, id, url, secret, previous_secret, previous_secret_until,
    event_types, description, created_at, disabled_at, disabled_reason)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
ON CONFLICT (tenant, id) DO NOTHING

-- name: get_webhook
SELECT * FROM webhook_endpoints WHERE tenant = $1 AND id = $2

-- name: list_webhooks
SELECT * FROM webhook_endpoints WHERE tenant = $1 AND id <> 'default' ORDER BY created_at, id

-- name: endpoints_of_tenant
SELECT * FROM webhook_endpoints WHERE tenant = $1

-- name: update_webhook
-- One statement: concurrent changes, rotations and a disabling after a 410 never undo each other
-- (the right-hand sides all read the row as it was).
UPDATE webhook_endpoints
SET url = coalesce($3::text, url),
    event_types = coalesce($4::text, event_types),
    description = CASE WHEN $5::boolean THEN $6::text ELSE description END,
    disabled_at = CASE $7::integer WHEN 1 THEN NULL WHEN 0 THEN coalesce(disabled_at, longjobs_now())
                  ELSE disabled_at END,
    disabled_reason = CASE $7::integer WHEN 1 THEN NULL
                      WHEN 0 THEN coalesce(disabled_reason, 'disabled by request')
                      ELSE disabled_reason END,
    previous_secret = CASE WHEN $8::text IS NULL THEN previous_secret ELSE secret END,
    previous_secret_until = CASE WHEN $8::text IS NULL THEN previous_secret_until
                            ELSE $9::double precision END,
    secret = coalesce($8::text, secret)
WHERE tenant = $1 AND id = $2
RETURNING *

-- name: delete_webhook
DELETE FROM webhook_endpoints WHERE tenant = $1 AND id = $2 AND id <> 'default'

-- name: disable_webhook
UPDATE webhook_endpoints SET disabled_at = longjobs_now(), disabled_reason = $1
FROM webhook_deliveries AS d
WHERE d.id = $2 AND webhook_endpoints.tenant = d.tenant AND webhook_endpoints.id = d.endpoint_id
      AND webhook_endpoints.id <> 'default' AND webhook_endpoints.disabled_at IS NULL

-- name: outbox_events
SELECT num, event_id, tenant, job_id, kind, status, type, webhook_url, created_at
FROM webhook_outbox
ORDER BY num
LIMIT $1
FOR UPDATE SKIP LOCKED

-- name: delete_outbox_events
DELETE FROM webhook_outbox WHERE num = ANY($1::bigint[])

-- name: insert_delivery
INSERT INTO webhook_deliveries (id, event_id, tenant, job_id, endpoint_id, url, type,
                                created_at, next_attempt_at, updated_at)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)

-- Read first: claiming is a write, and most looks find nothing to do.
-- name: deliveries_due
SELECT EXISTS(SELECT 1 FROM webhook_outbox)
       OR EXISTS(SELECT 1 FROM webhook_deliveries
                 WHERE status = 'pending' AND next_attempt_at <= longjobs_now())

-- A leased delivery comes due again when its lease runs out.
-- name: claim_deliveries
UPDATE webhook_deliveries
SET lease_owner = $1, lease_until = longjobs_now() + $2, next_attempt_at = longjobs_now() + $2,
    updated_at = longjobs_now()
WHERE id IN (SELECT id FROM webhook_deliveries
             WHERE status = 'pending' AND next_attempt_at <= longjobs_now()
             ORDER BY next_attempt_at LIMIT $3
             FOR UPDATE SKIP LOCKED)
RETURNING *

-- name: leased_attempts
SELECT attempts FROM webhook_deliveries
WHERE id = $1 AND lease_owner = $2 AND status = 'pending'
FOR UPDATE

-- name: record_delivery
UPDATE webhook_deliveries
SET status = $3, tries = tries + $4, next_attempt_at = longjobs_now() + $5, attempts = $6,
    lease_owner = NULL, lease_until = NULL, updated_at = longjobs_now()
WHERE id = $1 AND lease_owner = $2

-- name: deliveries_of_job
SELECT d.*, coalesce(d.url, e.url) AS shown_url
FROM webhook_deliveries AS d
LEFT JOIN webhook_endpoints AS e ON e.tenant = d.tenant AND e.id = d.endpoint_id
WHERE d.job_id = $1 AND d.tenant = $2
ORDER BY d.created_at, d.id

-- A delivery being sent right now is left to its attempt (whose outcome is then recorded).
-- name: replay_delivery
UPDATE webhook_deliveries
SET status = 'pending', tries = 0, next_attempt_at = longjobs_now(), lease_owner = NULL,
    lease_until = NULL, updated_at = longjobs_now()
WHERE id = $1 AND tenant = $2 AND job_id = $3
      AND (lease_until IS NULL OR lease_until < longjobs_now())

-- name: expire_deliveries
DELETE FROM webhook_deliveries
WHERE id IN (SELECT id FROM webhook_deliveries
             WHERE status <> 'pending' AND updated_at < longjobs_now() - $1 LIMIT 1000)
