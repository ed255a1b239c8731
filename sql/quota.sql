-- Per-mailbox quotas: the settings imessages.mailbox_quota and
-- imessages.manager_mailbox_quota, the quota_bytes column of imsg_mailboxes,
-- and a mailbox (our own) that reaches its quota.  (imessages.conf:
-- buffer_size 1MB.)  Senders waiting for another process's quota, and sends
-- to other mailboxes meanwhile: mailbox_quota_wait.spec and
-- t/150_mailbox_quota.pl.
\set SHOW_CONTEXT never

-- try(sql): 'ok', or the SQLSTATE, message, detail and hint of its error,
-- with process ids masked
CREATE FUNCTION pg_temp.try(sql text) RETURNS text LANGUAGE plpgsql AS $$
DECLARE
  st text;
  msg text;
  det text;
  hnt text;
BEGIN
  EXECUTE sql;
  RETURN 'ok';
EXCEPTION WHEN OTHERS THEN
  GET STACKED DIAGNOSTICS st = RETURNED_SQLSTATE, msg = MESSAGE_TEXT,
                          det = PG_EXCEPTION_DETAIL, hnt = PG_EXCEPTION_HINT;
  RETURN st || ': ' || regexp_replace(msg, 'process \d+', 'process N')
         || coalesce(E'\n' || nullif(det, ''), '')
         || coalesce(E'\n' || nullif(hnt, ''), '');
END $$;

-- -1 (the default): a quarter of the area for a process, half of it for
-- the manager
SELECT name, setting, unit, context, boot_val, min_val
  FROM pg_settings
 WHERE name IN ('imessages.mailbox_quota', 'imessages.manager_mailbox_quota')
 ORDER BY 1;
SELECT count(*) FROM imsg_receive();	-- opens our mailbox
SELECT quota_bytes = (SELECT size_bytes / 4 FROM imsg_area) AS quarter_of_area
  FROM imsg_mailboxes WHERE pid = pg_backend_pid();
SELECT quota_bytes = (SELECT size_bytes / 2 FROM imsg_area) AS half_of_area
  FROM imsg_mailboxes WHERE pid = imsg_manager_pid();

-- a SET shows in our mailbox at once; 0 (no quota) shows as NULL; SET
-- LOCAL ends with its transaction
SET imessages.mailbox_quota = '100kB';
SHOW imessages.mailbox_quota;
SELECT quota_bytes FROM imsg_mailboxes WHERE pid = pg_backend_pid();
SET imessages.mailbox_quota = 0;
SELECT quota_bytes FROM imsg_mailboxes WHERE pid = pg_backend_pid();
BEGIN;
SET LOCAL imessages.mailbox_quota = '8kB';
SELECT quota_bytes FROM imsg_mailboxes WHERE pid = pg_backend_pid();
COMMIT;
SELECT quota_bytes FROM imsg_mailboxes WHERE pid = pg_backend_pid();
SELECT pg_temp.try($$SET imessages.mailbox_quota = -2$$) AS below_minus_one;

-- only superusers set it; the manager's only in the configuration
CREATE ROLE regress_imsg_quota;
SET ROLE regress_imsg_quota;
SELECT pg_temp.try($$SET imessages.mailbox_quota = 0$$) AS set_by_app,
       pg_temp.try($$SET imessages.manager_mailbox_quota = 0$$) AS manager_by_app;
RESET ROLE;
DROP ROLE regress_imsg_quota;
SELECT pg_temp.try($$SET imessages.manager_mailbox_quota = 0$$) AS manager_by_superuser;

-- Our mailbox at a 10 kB quota: 1000-byte messages (1048 bytes with their
-- header) go in while they fit; the next fails at once with send_timeout 0,
-- with the numbers in DETAIL.  What was queued is intact.
SET imessages.mailbox_quota = '10kB';
SET imessages.send_timeout = 0;
SELECT count(imsg_send(repeat('q', 1000), pg_backend_pid(), i))
  FROM generate_series(1, 9) i;
SELECT queued_messages, queued_bytes, quota_bytes
  FROM imsg_mailboxes WHERE pid = pg_backend_pid();
SELECT pg_temp.try($$SELECT imsg_send(repeat('q', 1000), pg_backend_pid(), 10)$$)
  AS over_quota;
-- a smaller message that still fits goes in
SELECT imsg_send(repeat('s', 700), pg_backend_pid(), 11) > 0 AS small_one_fits;
-- with a timeout the sender waits it out, then fails the same way
SET imessages.send_timeout = '100ms';
SELECT pg_temp.try($$SELECT imsg_send(repeat('q', 1000), pg_backend_pid(), 12)$$)
  AS after_timeout;
SELECT count(*) AS n, array_agg(msgtype ORDER BY msg_id) AS types,
       bool_and(payload = convert_to(repeat(CASE WHEN msgtype = 11 THEN 's' ELSE 'q' END,
                                            CASE WHEN msgtype = 11 THEN 700 ELSE 1000 END),
                                     'UTF8')) AS intact
  FROM imsg_receive();
-- once read (committed), there is room again
SELECT imsg_send(repeat('q', 1000), pg_backend_pid(), 13) > 0 AS room_again;
SELECT count(*) FROM imsg_receive();

-- an empty mailbox takes one message larger than its quota, and no more
SET imessages.send_timeout = 0;
SET imessages.mailbox_quota = '1kB';
SELECT imsg_send(repeat('b', 4000), pg_backend_pid(), 14) > 0 AS big_into_empty;
SELECT pg_temp.try($$SELECT imsg_send('x', pg_backend_pid(), 15)$$) AS then_full;
SELECT count(*) FROM imsg_receive();

-- 0: no quota
SET imessages.mailbox_quota = 0;
SELECT count(imsg_send(repeat('z', 1000), pg_backend_pid(), i))
  FROM generate_series(1, 300) i;
SELECT queued_bytes > (SELECT size_bytes / 4 FROM imsg_area) AS beyond_a_quarter
  FROM imsg_mailboxes WHERE pid = pg_backend_pid();
SELECT count(*) FROM imsg_receive();

RESET imessages.mailbox_quota;
RESET imessages.send_timeout;
SELECT quota_bytes = (SELECT size_bytes / 4 FROM imsg_area) AS default_again
  FROM imsg_mailboxes WHERE pid = pg_backend_pid();
SELECT used_bytes, queued_messages FROM imsg_area;
