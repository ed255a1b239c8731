-- Keys that do not collide: imsg_replicate() warns about a key that takes
-- its values from a sequence (each node's copy gives the same values), and
-- imsg_node_sequence() makes this node's copy give only the values
-- congruent to imessages.node_id modulo imessages.node_sequence_stride,
-- above any it gave or its columns hold.
\set SHOW_CONTEXT never

-- try(sql): 'ok', or the SQLSTATE, message and hint of its error
CREATE FUNCTION pg_temp.try(sql text) RETURNS text LANGUAGE plpgsql AS $$
DECLARE
  st text;
  msg text;
  hint text;
BEGIN
  EXECUTE sql;
  RETURN 'ok';
EXCEPTION WHEN OTHERS THEN
  GET STACKED DIAGNOSTICS st = RETURNED_SQLSTATE, msg = MESSAGE_TEXT,
                          hint = PG_EXCEPTION_HINT;
  RETURN st || ': ' || msg || coalesce(' / ' || nullif(hint, ''), '');
END $$;

-- the defaults: no node id, a stride of 16
SELECT current_setting('imessages.node_id') AS node_id,
       current_setting('imessages.node_sequence_stride') AS stride;

CREATE TABLE big (id bigserial PRIMARY KEY, v text);
CREATE TABLE small (id serial PRIMARY KEY, v text);
CREATE TABLE ident (id integer GENERATED ALWAYS AS IDENTITY PRIMARY KEY, v text);
CREATE SEQUENCE shared_seq;
CREATE TABLE by_default (id bigint PRIMARY KEY DEFAULT nextval('shared_seq'), v text);
CREATE TABLE two_keys (a integer, b serial, n serial, PRIMARY KEY (a, b));
CREATE TABLE plain (id integer PRIMARY KEY, n serial);
CREATE TABLE ri (id integer PRIMARY KEY, code serial NOT NULL UNIQUE);
ALTER TABLE ri REPLICA IDENTITY USING INDEX ri_code_key;
CREATE SEQUENCE num_seq;
CREATE TABLE num (id numeric PRIMARY KEY DEFAULT nextval('num_seq'));

-- a key from a sequence: a warning whose hint names the helper
SELECT imsg_replicate('big');
SELECT imsg_replicate('small');
SELECT imsg_replicate('ident');
SELECT imsg_replicate('by_default');
-- only the key column's sequence counts (n is not in the key)
SELECT imsg_replicate('two_keys');
-- no warning: the key takes no value from a sequence
SELECT imsg_replicate('plain');
-- a replica identity column counts as a key
SELECT imsg_replicate('ri');
-- a replicated table is warned about again
SELECT imsg_replicate('big');

-- without a node id the helper refuses
SELECT pg_temp.try($$SELECT imsg_node_sequence('big_id_seq')$$) AS no_node_id;

-- what the table holds before: values the sequence gave, and one above
-- them that another node could have inserted
INSERT INTO big (v) SELECT 'before' FROM generate_series(1, 5);
INSERT INTO big VALUES (40, 'from another node');
SELECT last_value AS last_before FROM big_id_seq;

SET imessages.node_id = 3;
-- in a transaction that rolls back, nothing changes
BEGIN;
SELECT imsg_node_sequence('big_id_seq') AS rolled_back;
ROLLBACK;
SELECT seqincrement, seqstart FROM pg_sequence WHERE seqrelid = 'big_id_seq'::regclass;

-- the first value is above 40 (the largest key) and congruent to 3 mod 16
SELECT imsg_node_sequence('big_id_seq') AS first_value;
SELECT seqincrement, seqstart FROM pg_sequence WHERE seqrelid = 'big_id_seq'::regclass;
INSERT INTO big (v) SELECT 'after' FROM generate_series(1, 5);
SELECT id, id % 16 AS residue FROM big WHERE v = 'after' ORDER BY id;
-- run again it gives no value away: it starts where the sequence was
SELECT imsg_node_sequence('big_id_seq') AS again, nextval('big_id_seq') AS then_nextval;
-- now imsg_replicate() is satisfied
SELECT imsg_replicate('big');

-- integer serial, and the table and column form
SELECT imsg_node_sequence('small', 'id') AS small_first;
INSERT INTO small (v) VALUES ('a'), ('b'), ('c') RETURNING id, id % 16 AS residue;
-- an identity column: its sequence is found with pg_get_serial_sequence()
SELECT imsg_node_sequence('ident', 'id') AS ident_first;
INSERT INTO ident (v) VALUES ('a'), ('b') RETURNING id;
-- a default that calls nextval() on a sequence no column owns
INSERT INTO by_default (v) VALUES ('x');
SELECT imsg_node_sequence('by_default', 'id') AS by_default_first;
SELECT imsg_replicate('small'), imsg_replicate('ident'), imsg_replicate('by_default');
-- a numeric column holding a fraction: the next integer value above it
INSERT INTO num VALUES (40.5);
SELECT imsg_node_sequence('num', 'id') AS num_first;
-- under another node id the sequence is not disjoint any more, and the
-- helper moves it on to that id's values
SET imessages.node_id = 5;
SELECT imsg_replicate('big');
SELECT imsg_node_sequence('big_id_seq') AS node5_first;
SELECT nextval('big_id_seq') % 16 AS node5_residue;

-- the node id equal to the stride: residue 0
SET imessages.node_sequence_stride = 4;
SET imessages.node_id = 4;
CREATE SEQUENCE stride4;
SELECT imsg_node_sequence('stride4') AS stride4_first, nextval('stride4'), nextval('stride4');

-- a sequence that starts below 1 and has been used
CREATE SEQUENCE negative MINVALUE -100 START -100;
SELECT nextval('negative'), nextval('negative');
SET imessages.node_id = 3;
SELECT imsg_node_sequence('negative') AS negative_first, nextval('negative') AS then_nextval;

RESET imessages.node_sequence_stride;
SET imessages.node_id = 3;

-- what it refuses
CREATE SEQUENCE descending INCREMENT BY -1;
CREATE SEQUENCE cycling CYCLE;
CREATE SEQUENCE narrow AS smallint MAXVALUE 10;
CREATE SEQUENCE nearly_full MAXVALUE 100 START 99;
CREATE SEQUENCE bigint_full START 9223372036854775800;
SELECT nextval('nearly_full'), nextval('bigint_full');
SELECT sql, pg_temp.try(sql) AS result FROM (VALUES
  ($$SELECT imsg_node_sequence('descending')$$),
  ($$SELECT imsg_node_sequence('cycling')$$),
  ($$SELECT imsg_node_sequence('narrow')$$),
  ($$SELECT imsg_node_sequence('nearly_full')$$),
  ($$SELECT imsg_node_sequence('bigint_full')$$),
  ($$SELECT imsg_node_sequence('big')$$),
  ($$SELECT imsg_node_sequence(NULL::regclass)$$),
  ($$SELECT imsg_node_sequence(0::oid::regclass)$$),
  ($$SELECT imsg_node_sequence('big', NULL)$$),
  ($$SELECT imsg_node_sequence('big', 'v')$$),
  ($$SELECT imsg_node_sequence('big', 'nope')$$),
  ($$SELECT imsg_node_sequence('plain', 'id')$$),
  ($$SET imessages.node_id = -1$$),
  ($$SET imessages.node_id = 65536$$),
  ($$SET imessages.node_sequence_stride = 1$$)) AS t(sql);
-- the refused sequences are as they were
SELECT seqrelid::regclass, seqincrement, seqstart FROM pg_sequence
 WHERE seqrelid IN ('descending'::regclass, 'cycling'::regclass, 'narrow'::regclass,
                    'nearly_full'::regclass, 'bigint_full'::regclass)
 ORDER BY 1;
-- a node id above the stride
SET imessages.node_id = 17;
SELECT pg_temp.try($$SELECT imsg_node_sequence('big_id_seq')$$) AS above_stride;
-- the stride must fit the sequence's range: 100 values hold a stride of 16
SET imessages.node_id = 3;
CREATE SEQUENCE hundred MAXVALUE 100;
SELECT imsg_node_sequence('hundred') AS hundred_first;

-- the caller must own the sequence; a superuser alone sets the node id
CREATE ROLE regress_imsg_seq_user;
GRANT EXECUTE ON FUNCTION imsg_node_sequence(regclass) TO regress_imsg_seq_user;
SET ROLE regress_imsg_seq_user;
SELECT pg_temp.try($$SELECT imsg_node_sequence('public.hundred')$$) AS not_owner,
       pg_temp.try($$SET imessages.node_id = 2$$) AS set_node_id;
RESET ROLE;
REVOKE EXECUTE ON FUNCTION imsg_node_sequence(regclass) FROM regress_imsg_seq_user;
DROP ROLE regress_imsg_seq_user;

RESET imessages.node_id;
SELECT imsg_unreplicate(t) FROM unnest('{big,small,ident,by_default,two_keys,plain,ri}'::regclass[]) t;
DROP TABLE big, small, ident, by_default, two_keys, plain, ri, num;
DROP SEQUENCE shared_seq, num_seq, stride4, negative, descending, cycling, narrow, nearly_full,
              bigint_full, hundred;
