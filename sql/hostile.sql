-- Hostile input to every SQL function: NULLs, out-of-range numbers,
-- processes that are not PostgreSQL's, oversized payloads, and random,
-- truncated or corrupted change sets.  Every case must end in a clean ERROR
-- with the right SQLSTATE (or succeed), and the server must stay up.
\set SHOW_CONTEXT never
SET imessages.max_message_size = '256kB';

-- try(sql): 'ok', or the SQLSTATE, message, detail and hint of its error,
-- with process ids masked
CREATE FUNCTION pg_temp.try(sql text) RETURNS text LANGUAGE plpgsql AS $$
DECLARE
  st text;
  msg text;
  det text;
  hint text;
BEGIN
  EXECUTE sql;
  RETURN 'ok';
EXCEPTION WHEN OTHERS THEN
  GET STACKED DIAGNOSTICS st = RETURNED_SQLSTATE, msg = MESSAGE_TEXT,
                          det = PG_EXCEPTION_DETAIL, hint = PG_EXCEPTION_HINT;
  RETURN st || ': ' || regexp_replace(msg, 'process \d+', 'process N')
         || coalesce(' / ' || nullif(det, ''), '')
         || coalesce(' / ' || nullif(hint, ''), '');
END $$;

SELECT count(*) AS drained FROM imsg_receive();

-- NULL in every argument
SELECT sql, pg_temp.try(sql) AS result FROM (VALUES
  ($$SELECT imsg_send(NULL::bytea)$$),
  ($$SELECT imsg_send(NULL::text)$$),
  ($$SELECT imsg_send(NULL::bytea, NULL, NULL)$$),
  ($$SELECT imsg_send('x'::bytea, NULL, NULL)$$),
  ($$SELECT imsg_send('x'::text, pg_backend_pid(), NULL)$$),
  ($$SELECT * FROM imsg_receive(NULL)$$),
  ($$SELECT * FROM imsg_receive(NULL, NULL)$$),
  ($$SELECT * FROM imsg_receive(0, NULL)$$),
  ($$SELECT * FROM imsg_receive_internal(NULL, NULL)$$),
  ($$SELECT * FROM imsg_receive_internal(NULL, 1)$$),
  ($$SELECT imsg_ping(NULL)$$),
  ($$SELECT imsg_ping('manager', NULL)$$),
  ($$SELECT imsg_ping(NULL, NULL)$$),
  ($$SELECT imsg_replicate(NULL)$$),
  ($$SELECT imsg_unreplicate(NULL)$$),
  ($$SELECT * FROM imsg_changeset_decode(NULL)$$)) AS t(sql);
-- (imsg_changeset_decode is STRICT: NULL in, no rows out)

-- numbers out of range: negative, the extremes of integer, beyond integer
SELECT sql, pg_temp.try(sql) AS result FROM (VALUES
  ($$SELECT imsg_send('x', pg_backend_pid(), -1)$$),
  ($$SELECT imsg_send('x', pg_backend_pid(), -2147483648)$$),
  ($$SELECT imsg_send('x', pg_backend_pid(), 2147483648)$$),
  ($$SELECT imsg_send('x', pg_backend_pid(), 2147483648::integer)$$),
  ($$SELECT imsg_send('x', 2147483648)$$),
  ($$SELECT * FROM imsg_receive(-1)$$),
  ($$SELECT * FROM imsg_receive(-2147483648)$$),
  ($$SELECT * FROM imsg_receive(0, -1)$$),
  ($$SELECT * FROM imsg_receive(0, -2147483648)$$),
  ($$SELECT * FROM imsg_receive(2147483648)$$),
  ($$SELECT * FROM imsg_receive_internal(-1, NULL)$$),
  ($$SELECT * FROM imsg_receive_internal(0, -1)$$),
  ($$SELECT imsg_ping('manager', -1)$$),
  ($$SELECT imsg_ping('manager', -2147483648)$$),
  ($$SELECT imsg_ping('nobody')$$),
  ($$SELECT imsg_ping('')$$),
  ($$SELECT imsg_ping('Manager')$$),
  ($$SELECT * FROM imsg_recent_changesets(-1)$$),
  ($$SELECT * FROM imsg_recent_changesets(-2147483648)$$),
  ($$SELECT imsg_replicate(0::oid::regclass)$$),
  ($$SELECT imsg_replicate(4294967295::oid::regclass)$$),
  ($$SELECT imsg_unreplicate(0::oid::regclass)$$),
  ($$SELECT imsg_replicate('pg_class_oid_index')$$),
  ($$SELECT imsg_replicate('no_such_table')$$)) AS t(sql);
-- the timeout settings out of range
SELECT sql, pg_temp.try(sql) AS result FROM (VALUES
  ($$SET imessages.send_timeout = -1$$),
  ($$SET imessages.send_timeout = '25d'$$),
  ($$SET imessages.commit_timeout = 0$$),
  ($$SET imessages.commit_timeout = -2147483648$$),
  ($$SET imessages.commit_mode = 'maybe'$$),
  ($$SET imessages.max_message_size = -1$$)) AS t(sql);
SELECT current_setting('imessages.send_timeout') AS send_timeout,
       current_setting('imessages.commit_timeout') AS commit_timeout;
-- the largest values are accepted: a wait of 24 days that ends at once
-- because max_messages is 0, or because a message is there
SELECT count(*) AS none FROM imsg_receive(2147483647, 0);
SELECT imsg_send('t', pg_backend_pid(), 2147483647) > 0 AS largest_type;
SELECT msgtype, payload FROM imsg_receive(2147483647, 2147483647);
SELECT count(*) AS none FROM imsg_recent_changesets(2147483647) WHERE false;
-- an empty payload is a message
SELECT imsg_send(''::bytea, pg_backend_pid()) > 0 AS empty_sent;
SELECT length(payload) AS empty_length FROM imsg_receive();

-- recipients: 0 and negative numbers are never processes; a number that is
-- not a PostgreSQL process (pid 1, the postmaster, no such process) or a
-- process without a mailbox (the checkpointer) has no mailbox
SELECT split_part(pg_read_file('postmaster.pid'), E'\n', 1)::integer AS postmaster_pid \gset
SELECT label, pg_temp.try(format('SELECT imsg_send(%L, %s)', 'x', pid)) AS result FROM (VALUES
  ('zero', 0),
  ('minus one', -1),
  ('smallest integer', -2147483648),
  ('largest integer', 2147483647),
  ('pid 1', 1),
  ('postmaster', :postmaster_pid),
  ('checkpointer', (SELECT pid FROM pg_stat_activity WHERE backend_type = 'checkpointer')))
  AS t(label, pid);
SELECT 1 AS server_up;

-- payloads over imessages.max_message_size: 54000, the limit in DETAIL
SELECT pg_temp.try($$SELECT imsg_send(repeat('a', 256 * 1024 + 1)::bytea, pg_backend_pid())$$) AS bytea_over;
SELECT pg_temp.try($$SELECT imsg_send(repeat('a', 256 * 1024 + 1), pg_backend_pid())$$) AS text_over;
SELECT pg_temp.try($$SELECT imsg_send(repeat('é', 128 * 1024 + 1), pg_backend_pid())$$) AS two_byte_chars_over;
SELECT pg_temp.try($$SELECT imsg_send(repeat('a', 64 * 1024 * 1024)::bytea)$$) AS to_manager_64mb;
SET imessages.max_message_size = 0;
SELECT pg_temp.try($$SELECT imsg_send('a', pg_backend_pid())$$) AS limit_zero,
       pg_temp.try($$SELECT imsg_send('', pg_backend_pid())$$) AS empty_at_limit_zero;
-- with max_message_size as large as the area, what fits in the area is the
-- limit
SET imessages.max_message_size = '1MB';
SELECT regexp_replace(pg_temp.try($$SELECT imsg_send(repeat('a', 1024 * 1024)::bytea, pg_backend_pid())$$),
                      'the limit is \d+ bytes', 'the limit is L bytes') AS area_limit;
SELECT substring(pg_temp.try($$SELECT imsg_send(repeat('a', 1024 * 1024)::bytea, pg_backend_pid())$$)
                 FROM 'the limit is (\d+) bytes')::integer
       BETWEEN 900 * 1024 AND 1024 * 1024 - 1 AS limit_below_area;
SET imessages.max_message_size = '256kB';
SELECT count(*) AS left_over FROM imsg_receive();
SELECT used_bytes, queued_messages FROM imsg_area;

-- Change sets that are not valid.  outcome(p): 'decoded' or the SQLSTATE.
CREATE FUNCTION pg_temp.outcome(p bytea) RETURNS text LANGUAGE plpgsql AS $$
BEGIN
  PERFORM count(*) FROM imsg_changeset_decode(p);
  RETURN 'decoded';
EXCEPTION WHEN OTHERS THEN
  RETURN SQLSTATE;
END $$;
-- n deterministic pseudo-random bytes from a seed
CREATE FUNCTION pg_temp.rbytes(seed integer, n integer) RETURNS bytea
LANGUAGE sql IMMUTABLE AS $$
  SELECT substring(coalesce(string_agg(decode(md5(seed || '/' || i), 'hex'), ''::bytea ORDER BY i),
                            ''::bytea) FROM 1 FOR n)
    FROM generate_series(0, n / 16) i
$$;
-- the header: int32 magic "ICS1", int8 version 1
\set hdr '\'\\x4943533101\'::bytea'

-- hand-made: short header, wrong magic or version, unknown record, a
-- change to an undeclared relation, relation ids and lengths out of range,
-- lengths that claim more bytes than there are
SELECT label, pg_temp.outcome(p) AS outcome FROM (VALUES
  ('empty', ''::bytea),
  ('short magic', '\x494353'::bytea),
  ('magic only', '\x49435331'::bytea),
  ('wrong magic', '\x4943533201'::bytea),
  ('version 0', '\x4943533100'::bytea),
  ('version 255', '\x49435331ff'::bytea),
  ('unknown record', :hdr || '\x5a'::bytea),
  ('insert, undeclared relation', :hdr || '\x49000000070001'::bytea),
  ('delete, undeclared relation', :hdr || '\x44000000000001'::bytea),
  ('relation id -1', :hdr || '\x52ffffffff'::bytea),
  ('relation id 2^31-1', :hdr || '\x527fffffff'::bytea),
  ('relation id 65536', :hdr || '\x5200010000'::bytea),
  ('schema length 2^32-1', :hdr || '\x5200000001ffffffff616263'::bytea),
  ('schema length 2^31-1', :hdr || '\x52000000017fffffff616263'::bytea),
  ('schema with a zero byte', :hdr || '\x520000000100000002610000000001620000'::bytea),
  ('ncols -1', :hdr || '\x520000000100000001610000000162ffff'::bytea),
  ('ncols 32767, no columns', :hdr || '\x5200000001000000016100000001627fff'::bytea),
  ('truncated column', :hdr || '\x52000000010000000161000000016200010000000169'::bytea),
  ('column type length 2^32-1', :hdr || '\x52000000010000000161000000016200010000000169ffffffff'::bytea))
  AS t(label, p);
SELECT 1 AS server_up;

-- pseudo-random bytes, with and without a valid header, of 0 to 4 kB
SELECT 'random' AS input, count(*) AS cases,
       count(*) FILTER (WHERE o IN ('decoded', '22P03')) AS clean
  FROM (SELECT pg_temp.outcome(pg_temp.rbytes(s, (s * 37) % 4096)) o
          FROM generate_series(1, 300) s) r
UNION ALL
SELECT 'header + random', count(*),
       count(*) FILTER (WHERE o IN ('decoded', '22P03'))
  FROM (SELECT pg_temp.outcome(:hdr || pg_temp.rbytes(s, (s * 37) % 4096)) o
          FROM generate_series(1, 300) s) r
UNION ALL
SELECT 'header + record tag + random', count(*),
       count(*) FILTER (WHERE o IN ('decoded', '22P03'))
  FROM (SELECT pg_temp.outcome(:hdr || substring('\x52494455'::bytea FROM 1 + s % 4 FOR 1)
                               || pg_temp.rbytes(s, (s * 13) % 64)) o
          FROM generate_series(1, 400) s) r;
SELECT 1 AS server_up;

-- a real change set, cut short at every length and with each byte changed
CREATE TABLE hostile_t (id integer PRIMARY KEY, n bigint, f float8, b boolean, d numeric);
SELECT imsg_replicate('hostile_t');
CREATE TEMP TABLE delivered0 AS SELECT change_sets_delivered AS n FROM imsg_manager_status();
BEGIN;
INSERT INTO hostile_t VALUES (1, 10, 1.5, true, 12.34), (2, NULL, -0.25, false, -1);
UPDATE hostile_t SET n = n + 1 WHERE id = 1;
DELETE FROM hostile_t WHERE id = 2;
COMMIT;
DO $$
BEGIN
  FOR i IN 1..500 LOOP
    EXIT WHEN (SELECT change_sets_delivered FROM imsg_manager_status())
              > (SELECT n FROM delivered0);
    PERFORM pg_sleep(0.01);
  END LOOP;
END $$;
CREATE TEMP TABLE valid AS SELECT payload AS p FROM imsg_recent_changesets(1);
SELECT length(p) AS bytes FROM valid;
SELECT ord, op, key, new_row FROM valid, imsg_changeset_decode(p);
-- Every flaw is reported as 22P03, including those only a lookup finds: a
-- changed byte in a column's type name, a value its type cannot read, a
-- name that is not valid in the database encoding.
CREATE TEMP TABLE mutated AS
  SELECT 'cut short' AS input, substring(p FROM 1 FOR len) AS m
    FROM valid, generate_series(0, length(p) - 1) len
  UNION ALL
  SELECT 'one byte changed', set_byte(p, pos, (get_byte(p, pos) + delta) % 256)
    FROM valid, generate_series(0, length(p) - 1) pos, (VALUES (1), (128), (255)) d(delta)
  UNION ALL
  SELECT 'random tail', substring(p FROM 1 FOR (s * 7) % length(p)) || pg_temp.rbytes(s, s % 40)
    FROM valid, generate_series(1, 300) s;
SELECT input, count(*) AS cases,
       count(*) FILTER (WHERE o IN ('decoded', '22P03')) AS clean
  FROM (SELECT input, pg_temp.outcome(m) o FROM mutated) r
 GROUP BY 1 ORDER BY 1;
SELECT 1 AS server_up;
SELECT imsg_unreplicate('hostile_t');
DROP TABLE hostile_t, delivered0, valid, mutated;
RESET imessages.max_message_size;
