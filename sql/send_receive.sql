-- Sending to oneself and receiving, in FIFO order.
SELECT count(*) AS nothing_yet FROM imsg_receive();

SELECT imsg_send('first', pg_backend_pid()) AS id1 \gset
SELECT imsg_send('\x00ff'::bytea, pg_backend_pid(), 42) AS id2 \gset
SELECT imsg_send('third', pg_backend_pid(), 7) AS id3 \gset
SELECT :id1 < :id2 AND :id2 < :id3 AS ids_increase;

SELECT queued_messages, queued_bytes > 0 AS has_bytes, oldest_sent_at IS NOT NULL AS has_oldest,
       sent, received
  FROM imsg_mailboxes WHERE pid = pg_backend_pid();

-- LIMIT 1 takes out one message only; the others stay queued
SELECT msg_id = :id1 AS is_first, sender_pid = pg_backend_pid() AS from_me,
       msgtype, payload, sent_at <= now() + interval '1 minute' AS sent_at_ok
  FROM imsg_receive() LIMIT 1;
SELECT queued_messages FROM imsg_mailboxes WHERE pid = pg_backend_pid();

-- max_messages bounds what is taken out
SELECT msg_id = :id2 AS is_second, msgtype, payload FROM imsg_receive(0, 1);
SELECT msg_id = :id3 AS is_third, msgtype, convert_from(payload, 'UTF8') FROM imsg_receive();
SELECT queued_messages, queued_bytes, oldest_sent_at, sent, received
  FROM imsg_mailboxes WHERE pid = pg_backend_pid();

-- max_messages => 0 takes nothing
SELECT imsg_send('zero', pg_backend_pid()) IS NOT NULL AS sent;
SELECT count(*) FROM imsg_receive(0, 0);
SELECT convert_from(payload, 'UTF8') FROM imsg_receive();

-- a timeout with nothing queued returns no rows after waiting
SELECT count(*) FROM imsg_receive(50);

-- receiving is transactional: an abort puts messages back, in order
SELECT count(imsg_send('m' || i, pg_backend_pid(), i)) FROM generate_series(1, 4) i;
BEGIN;
SELECT msgtype FROM imsg_receive(0, 2);
ROLLBACK;
SELECT queued_messages FROM imsg_mailboxes WHERE pid = pg_backend_pid();

-- a rolled-back savepoint returns only what it received
BEGIN;
SELECT msgtype FROM imsg_receive(0, 1);
SAVEPOINT s1;
SELECT msgtype FROM imsg_receive(0, 2);
ROLLBACK TO s1;
SELECT msgtype FROM imsg_receive(0, 1);
SAVEPOINT s2;
SELECT msgtype FROM imsg_receive(0, 1);
RELEASE s2;
COMMIT;
SELECT msgtype FROM imsg_receive();
SELECT queued_messages, queued_bytes FROM imsg_mailboxes WHERE pid = pg_backend_pid();

-- receiving in more nested subtransactions than imessages can track is an
-- error, not a silent loss: the messages stay queued
CREATE FUNCTION receive_nested(depth integer) RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE n integer;
BEGIN
  IF depth = 0 THEN
    RETURN 0;
  END IF;
  BEGIN
    SELECT count(*) INTO n FROM imsg_receive(0, 1);
    RETURN n + receive_nested(depth - 1);
  EXCEPTION WHEN division_by_zero THEN
    RETURN -1;
  END;
END $$;
SELECT count(imsg_send('n' || i, pg_backend_pid())) FROM generate_series(1, 70) i;
\set VERBOSITY terse
SELECT receive_nested(70);
\set VERBOSITY default
\echo :LAST_ERROR_SQLSTATE
SELECT queued_messages FROM imsg_mailboxes WHERE pid = pg_backend_pid();
SELECT receive_nested(10) AS received_nested;
SELECT count(*) FROM imsg_receive();
DROP FUNCTION receive_nested(integer);

-- an error after receiving aborts the transaction: the message comes back
SELECT imsg_send('again', pg_backend_pid(), 99) IS NOT NULL AS sent;
BEGIN;
SELECT msgtype FROM imsg_receive();
SELECT 1 / 0;
ROLLBACK;
SELECT msgtype, convert_from(payload, 'UTF8') FROM imsg_receive();

-- a transaction that received messages cannot be prepared: its outcome
-- would be decided in another session; the messages stay queued
SELECT imsg_send('prepared?', pg_backend_pid()) IS NOT NULL AS sent;
BEGIN;
SELECT convert_from(payload, 'UTF8') FROM imsg_receive();
PREPARE TRANSACTION 'imsg_p1';
SELECT convert_from(payload, 'UTF8') FROM imsg_receive();

-- the same message is never handed out twice within a transaction
SELECT count(imsg_send('x' || i, pg_backend_pid())) FROM generate_series(1, 3) i;
BEGIN;
SELECT convert_from(payload, 'UTF8') FROM imsg_receive(0, 1);
SELECT convert_from(payload, 'UTF8') FROM imsg_receive();
COMMIT;

-- many messages, spanning several segments, keep their order (more than
-- the default quota of our mailbox, a quarter of the area: lift it)
SET imessages.mailbox_quota = 0;
SELECT count(imsg_send(repeat('y', 1000) || i, pg_backend_pid(), i))
  FROM generate_series(1, 500) i;
SELECT count(*) AS n, bool_and(msgtype = ord) AS in_order,
       bool_and(payload = convert_to(repeat('y', 1000) || ord, 'UTF8')) AS intact
  FROM (SELECT msgtype, payload, row_number() OVER () AS ord FROM imsg_receive()) r;
RESET imessages.mailbox_quota;
SELECT used_bytes, queued_messages FROM imsg_area;

-- messages to the manager are taken out by it
SELECT received AS manager_before FROM imsg_mailboxes
 WHERE pid = imsg_manager_pid() \gset
SELECT count(imsg_send('to manager ' || i)) FROM generate_series(1, 100) i;
DO $$
BEGIN
  FOR i IN 1..500 LOOP
    EXIT WHEN (SELECT queued_messages FROM imsg_mailboxes
                WHERE pid = imsg_manager_pid()) = 0;
    PERFORM pg_sleep(0.01);
  END LOOP;
END $$;
SELECT received - :manager_before AS manager_took, queued_messages
  FROM imsg_mailboxes WHERE pid = imsg_manager_pid();
SELECT backend_type FROM imsg_mailboxes WHERE pid = imsg_manager_pid();

-- area-wide counters add up
SELECT sent_total >= 600 AS sent_ok, received_total >= 600 AS received_ok,
       peak_bytes >= allocated_bytes AS peak_ok, used_bytes, queued_messages
  FROM imsg_area;
