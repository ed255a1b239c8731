-- Change-set capture: triggers, transactions, commit modes, decoding.
\set SHOW_CONTEXT never

CREATE TABLE acct (id integer PRIMARY KEY, owner text, balance numeric(10,2),
                   active boolean, tags text[], note varchar(20));
CREATE TABLE other (k text PRIMARY KEY, v integer);
CREATE TABLE nopk (x integer);
CREATE TABLE deferred_pk (x integer PRIMARY KEY DEFERRABLE INITIALLY DEFERRED);
CREATE SEQUENCE not_a_table;

-- wait until the manager has delivered n more change sets than noted
CREATE FUNCTION wait_delivered(n integer) RETURNS boolean LANGUAGE plpgsql AS $$
BEGIN
  FOR i IN 1..1000 LOOP
    IF (SELECT change_sets_delivered FROM imsg_manager_status())
       >= current_setting('cs_test.base')::bigint + n THEN
      RETURN true;
    END IF;
    PERFORM pg_sleep(0.01);
  END LOOP;
  RETURN false;
END $$;
CREATE FUNCTION note_delivered() RETURNS void LANGUAGE sql AS $$
  SELECT set_config('cs_test.base',
                    (SELECT change_sets_delivered FROM imsg_manager_status())::text, false);
$$;
CREATE FUNCTION last_changes(n integer)
RETURNS TABLE(cs integer, ord integer, relation text, op text, key jsonb, new_row jsonb)
LANGUAGE sql AS $$
  SELECT dense_rank() OVER (ORDER BY r.seq)::integer, d.*
    FROM imsg_recent_changesets(n) r, imsg_changeset_decode(r.payload) d
   WHERE r.origin_pid = pg_backend_pid()
   ORDER BY r.seq, d.ord;
$$;

-- only tables with an immediate primary key can be replicated
SELECT imsg_replicate('acct'), imsg_replicate('other');
SELECT imsg_replicate('nopk');
\echo :LAST_ERROR_SQLSTATE
SELECT imsg_replicate('deferred_pk');
\echo :LAST_ERROR_SQLSTATE
SELECT imsg_replicate('pg_class');
\echo :LAST_ERROR_SQLSTATE
SELECT imsg_replicate('not_a_table');
\echo :LAST_ERROR_SQLSTATE
SELECT imsg_replicate('acct');   -- twice is fine
SELECT relation, schema_name, table_name FROM imsg_replicated_tables ORDER BY 1;

-- INSERT, UPDATE, DELETE in one transaction: one change set
SELECT note_delivered();
BEGIN;
INSERT INTO acct VALUES (1, 'ann', 10.50, true, '{a,b}', 'x'), (2, 'bob', 0, false, NULL, NULL);
UPDATE acct SET balance = balance + 1, tags = tags || '{c}' WHERE id = 1;
UPDATE acct SET id = 3 WHERE id = 2;
DELETE FROM acct WHERE id = 3;
INSERT INTO other VALUES ('k1', 7);
COMMIT;
SELECT wait_delivered(1);
SELECT * FROM last_changes(1);
SELECT changes, bytes > 0 AS has_bytes, xid IS NOT NULL AS has_xid
  FROM imsg_recent_changesets(1);

-- each top-level transaction is one change set, in commit order
SELECT note_delivered();
INSERT INTO other VALUES ('k2', 1);
INSERT INTO other VALUES ('k3', 2);
UPDATE other SET v = v * 10 WHERE k IN ('k2', 'k3');
SELECT wait_delivered(3);
SELECT cs, op, key, new_row FROM last_changes(3);

-- a rolled-back transaction sends nothing
SELECT note_delivered();
BEGIN;
INSERT INTO other VALUES ('gone', 0);
ROLLBACK;
INSERT INTO other VALUES ('marker', 0);
SELECT wait_delivered(1);
SELECT cs, op, key FROM last_changes(1);
SELECT change_sets_delivered - current_setting('cs_test.base')::bigint AS delivered
  FROM imsg_manager_status();

-- a rolled-back savepoint drops only its own changes
SELECT note_delivered();
BEGIN;
INSERT INTO other VALUES ('s0', 0);
SAVEPOINT a;
INSERT INTO other VALUES ('s1', 1);
SAVEPOINT b;
INSERT INTO other VALUES ('s2', 2);
ROLLBACK TO b;
INSERT INTO other VALUES ('s3', 3);
RELEASE a;
SAVEPOINT c;
INSERT INTO acct VALUES (9, 'first described here', 0, true, NULL, NULL);
ROLLBACK TO c;
INSERT INTO acct VALUES (10, 'described again', 0, true, NULL, NULL);
COMMIT;
SELECT wait_delivered(1);
SELECT cs, ord, relation, op, key FROM last_changes(1);

-- an error in a plpgsql block (a subtransaction) drops its changes too
SELECT note_delivered();
DO $$
BEGIN
  INSERT INTO other VALUES ('kept', 1);
  BEGIN
    INSERT INTO other VALUES ('lost', 2);
    PERFORM 1 / 0;
  EXCEPTION WHEN division_by_zero THEN NULL;
  END;
END $$;
SELECT wait_delivered(1);
SELECT cs, op, key FROM last_changes(1);

-- both commit modes deliver; sync has waited for the ordering already
SELECT note_delivered();
SET imessages.commit_mode = 'sync';
INSERT INTO other VALUES ('sync1', 1);
BEGIN;
SET LOCAL imessages.commit_mode = 'async';
INSERT INTO other VALUES ('async-in-sync-session', 2);
COMMIT;
RESET imessages.commit_mode;
SHOW imessages.commit_mode;
INSERT INTO other VALUES ('async1', 3);
SELECT wait_delivered(3);
SELECT cs, op, key FROM last_changes(3);
SET imessages.commit_mode = 'sometimes';
\echo :LAST_ERROR_SQLSTATE

-- the description of a table is cached per session: an ALTER TABLE between
-- transactions, or inside one, describes it anew
SELECT note_delivered();
INSERT INTO acct VALUES (20, 'before', 1, true, NULL, NULL);
ALTER TABLE acct ADD COLUMN extra integer DEFAULT 7;
INSERT INTO acct VALUES (21, 'after', 1, true, NULL, NULL, 8);
BEGIN;
INSERT INTO acct VALUES (22, 'in tx before', 1, true, NULL, NULL, 9);
ALTER TABLE acct DROP COLUMN note;
INSERT INTO acct VALUES (23, 'in tx after', 1, true, NULL, 10);
COMMIT;
-- (the ALTER outside a transaction is a change set of its own: a DDL
-- statement travels with its transaction, op DDL, at its place)
SELECT wait_delivered(4);
SELECT cs, ord, key, new_row FROM last_changes(4);

-- a transaction without changes to replicated tables sends nothing
SELECT note_delivered();
CREATE TEMP TABLE scratch (x integer);
INSERT INTO scratch VALUES (1);
INSERT INTO nopk VALUES (1);
SELECT pg_sleep(0.2);
SELECT change_sets_delivered - current_setting('cs_test.base')::bigint AS delivered
  FROM imsg_manager_status();

-- TRUNCATE of a replicated table is refused
TRUNCATE other;
\echo :LAST_ERROR_SQLSTATE
SELECT count(*) > 0 AS rows_kept FROM other;

-- PREPARE TRANSACTION is refused once replicated tables changed
BEGIN;
INSERT INTO other VALUES ('prepared', 1);
PREPARE TRANSACTION 'cs_p1';
\echo :LAST_ERROR_SQLSTATE

-- unreplicate stops capture
SELECT imsg_unreplicate('other');
SELECT relation FROM imsg_replicated_tables ORDER BY 1;
SELECT note_delivered();
INSERT INTO other VALUES ('not captured', 1);
TRUNCATE other;
SELECT pg_sleep(0.2);
SELECT change_sets_delivered - current_setting('cs_test.base')::bigint AS delivered
  FROM imsg_manager_status();
SELECT imsg_unreplicate('other');
\echo :LAST_ERROR_SQLSTATE

-- decoding what is not a change set
SELECT * FROM imsg_changeset_decode('\x00');
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM imsg_changeset_decode('\x4943533101520000000000000001700000000161');
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM imsg_recent_changesets(-1);
\echo :LAST_ERROR_SQLSTATE

-- the manager's totals
SELECT change_sets_delivered >= 10 AS delivered, change_set_bytes > 0 AS bytes
  FROM imsg_manager_status();

SELECT imsg_unreplicate('acct');
DROP TABLE acct, other, nopk, deferred_pk;
DROP SEQUENCE not_a_table;
DROP FUNCTION wait_delivered(integer), note_delivered(), last_changes(integer);
