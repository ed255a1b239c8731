-- Every error path of the SQL API, with its SQLSTATE.
\set SHOW_CONTEXT never
-- the tests assume this limit; the area may be of any size from 1MB up
SET imessages.max_message_size = '256kB';

-- null and out-of-range arguments
SELECT imsg_send(NULL::bytea, pg_backend_pid());
\echo :LAST_ERROR_SQLSTATE
SELECT imsg_send('x', pg_backend_pid(), NULL);
\echo :LAST_ERROR_SQLSTATE
SELECT imsg_send('x', pg_backend_pid(), -1);
\echo :LAST_ERROR_SQLSTATE
SELECT imsg_send('x', 0);
\echo :LAST_ERROR_SQLSTATE
SELECT imsg_send('x', -42);
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM imsg_receive(-1);
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM imsg_receive(NULL);
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM imsg_receive(0, -1);
\echo :LAST_ERROR_SQLSTATE

-- recipients that do not exist, or have no mailbox
SELECT imsg_send('x', 2147483647);
\echo :LAST_ERROR_SQLSTATE
DO $$
BEGIN
  PERFORM imsg_send('x', (SELECT pid FROM pg_stat_activity
                           WHERE backend_type = 'checkpointer'));
EXCEPTION WHEN undefined_object THEN
  RAISE NOTICE 'checkpointer has no mailbox: %', SQLSTATE;
END $$;

-- a message over imessages.max_message_size (256kB here)
SELECT imsg_send(repeat('a', 256 * 1024)::bytea, pg_backend_pid()) > 0 AS at_limit_ok;
SELECT imsg_send(repeat('a', 256 * 1024 + 1)::bytea, pg_backend_pid());
\echo :LAST_ERROR_SQLSTATE
SELECT length(payload) FROM imsg_receive();

-- max_message_size cannot exceed the area
\set VERBOSITY terse
SET imessages.max_message_size = '2147483647B';
\set VERBOSITY default
\echo :LAST_ERROR_SQLSTATE

-- a full area: fail at once with send_timeout = 0, after waiting otherwise;
-- either way the queued messages stay intact.  (Our mailbox alone fills
-- the area: no quota for it; quotas are tested in sql/quota.sql.)
SET imessages.mailbox_quota = 0;
SET imessages.send_timeout = 0;
SELECT send_waits AS waits0, send_failures AS failures0 FROM imsg_area \gset
CREATE TEMP TABLE full_area (sent integer, sqlstate text, detail_ok boolean);
DO $$
DECLARE
  n integer := 0;
  state text;
  detail text;
BEGIN
  LOOP
    PERFORM imsg_send(repeat(chr(65 + n % 26), 200 * 1024), pg_backend_pid(), n);
    n := n + 1;
  END LOOP;
EXCEPTION WHEN OTHERS THEN
  GET STACKED DIAGNOSTICS state = RETURNED_SQLSTATE, detail = PG_EXCEPTION_DETAIL;
  INSERT INTO full_area
  VALUES (n, state, detail ~ ('^\d+ of ' || (SELECT size_bytes FROM imsg_area)
                              || ' bytes are in use; waited 0 ms for space\.$'));
END $$;
SELECT sent >= 3 AS filled, sqlstate, detail_ok FROM full_area;
-- with a timeout the sender waits, then fails the same way
SET imessages.send_timeout = '100ms';
\set VERBOSITY terse
SELECT imsg_send(repeat('z', 200 * 1024), pg_backend_pid(), 100);
\set VERBOSITY default
\echo :LAST_ERROR_SQLSTATE
SELECT send_waits - :waits0 >= 1 AS waited, send_failures - :failures0 >= 2 AS failed
  FROM imsg_area;
-- every message accepted before the failures is intact, in order
SELECT count(*) = (SELECT sent FROM full_area) AS all_there,
       bool_and(msgtype = ord - 1) AS in_order,
       bool_and(payload = convert_to(repeat(chr(65 + msgtype % 26), 200 * 1024), 'UTF8')) AS intact
  FROM (SELECT msgtype, payload, row_number() OVER () AS ord FROM imsg_receive()) r;
SELECT used_bytes, queued_messages FROM imsg_area;
RESET imessages.send_timeout;
RESET imessages.mailbox_quota;
