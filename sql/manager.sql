-- The replication manager, its helpers, and imsg_ping.
\set SHOW_CONTEXT never

SELECT pid = imsg_manager_pid() AS pid_ok, gcs, group_members,
       last_error IS NULL AS no_error, started_at <= now() AS started_ok
  FROM imsg_manager_status();

-- imessages.min_helpers = 1: one helper comes up and says it is ready
DO $$
BEGIN
  FOR i IN 1..1000 LOOP
    EXIT WHEN (SELECT count(*) FROM imsg_helpers() WHERE state = 'idle') >= 1;
    PERFORM pg_sleep(0.01);
  END LOOP;
END $$;
SELECT count(*) AS helpers, bool_and(pid IS NOT NULL) AS have_pids,
       bool_and(started_at <= now()) AS started_ok
  FROM imsg_helpers() WHERE state = 'idle';
SELECT helpers_running >= 1 AS running, helpers_started >= 1 AS started
  FROM imsg_manager_status();
SELECT backend_type FROM pg_stat_activity
 WHERE pid IN (SELECT pid FROM imsg_helpers()) LIMIT 1;

-- a round trip to the manager, and through it to a helper
SELECT imsg_ping() > interval '0' AS manager_ping;
SELECT imsg_ping('manager', 5000) > interval '0' AS manager_ping_5s;
SELECT sum(jobs_done) AS jobs_before FROM imsg_helpers() \gset
SELECT imsg_ping('helper') > interval '0' AS helper_ping;
SELECT imsg_ping('helper', 5000) > interval '0' AS helper_ping_5s;
SELECT sum(jobs_done) - :jobs_before AS jobs_done FROM imsg_helpers();

-- pings leave the caller's own messages where they are
SELECT imsg_send('mine', pg_backend_pid()) > 0 AS sent;
SELECT imsg_ping() > interval '0' AS ping_with_queued_message;
SELECT convert_from(payload, 'UTF8') FROM imsg_receive();

-- user messages to the manager go through the group (local: one member)
SELECT messages_delivered AS delivered0, messages_received AS received0
  FROM imsg_manager_status() \gset
SELECT set_config('imsg_test.delivered0', :'delivered0', false) IS NOT NULL AS noted;
SELECT count(imsg_send('change ' || i)) FROM generate_series(1, 50) i;
DO $$
DECLARE d0 bigint := current_setting('imsg_test.delivered0')::bigint;
BEGIN
  FOR i IN 1..1000 LOOP
    EXIT WHEN (SELECT messages_delivered FROM imsg_manager_status()) >= d0 + 50;
    PERFORM pg_sleep(0.01);
  END LOOP;
END $$;
SELECT messages_delivered - :delivered0 AS delivered,
       messages_received - :received0 >= 50 AS received
  FROM imsg_manager_status();

-- bad arguments
SELECT imsg_ping('nowhere');
\echo :LAST_ERROR_SQLSTATE
SELECT imsg_ping('manager', -1);
\echo :LAST_ERROR_SQLSTATE
SELECT imsg_ping(NULL);
\echo :LAST_ERROR_SQLSTATE

-- helpers that cannot start (their database is missing) are counted as
-- crashed and restarted with a back-off; meanwhile a ping to a helper
-- times out with a clear error
SELECT helpers_crashed AS crashed0, helpers_exited AS exited0
  FROM imsg_manager_status() \gset
ALTER SYSTEM SET imessages.database = 'imsg_no_such_database';
SELECT pg_reload_conf();
SELECT pg_sleep(0.2);
SELECT count(pg_terminate_backend(pid)) > 0 AS terminated
  FROM imsg_helpers() WHERE pid IS NOT NULL;
DO $$
DECLARE c0 bigint := (SELECT helpers_crashed FROM imsg_manager_status());
BEGIN
  FOR i IN 1..1000 LOOP
    EXIT WHEN (SELECT helpers_crashed FROM imsg_manager_status()) > c0;
    PERFORM pg_sleep(0.01);
  END LOOP;
END $$;
SELECT helpers_exited > :exited0 AS exited_counted,
       helpers_crashed > :crashed0 AS crash_counted
  FROM imsg_manager_status();
SELECT imsg_ping('helper', 300);
\echo :LAST_ERROR_SQLSTATE
-- the manager itself still answers
SELECT imsg_ping('manager') > interval '0' AS manager_still_answers;
ALTER SYSTEM RESET imessages.database;
SELECT pg_reload_conf();
DO $$
BEGIN
  FOR i IN 1..6000 LOOP
    EXIT WHEN (SELECT count(*) FROM imsg_helpers() WHERE state = 'idle') >= 1;
    PERFORM pg_sleep(0.01);
  END LOOP;
END $$;
SELECT imsg_ping('helper', 5000) > interval '0' AS helper_back;
-- the late answer to the ping that timed out is not handed to imsg_receive
SELECT count(*) AS user_messages FROM imsg_receive(100);
SELECT imsg_ping() > interval '0' AS ping_again;
SELECT queued_messages FROM imsg_mailboxes WHERE pid = pg_backend_pid();
