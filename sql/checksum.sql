-- imsg_table_checksum(): an order-independent digest to compare nodes.
\set SHOW_CONTEXT never

CREATE TABLE ck_a (id integer PRIMARY KEY, v text, ts timestamptz, f float8, tags text[]);
CREATE TABLE ck_b (LIKE ck_a);
INSERT INTO ck_a SELECT g, 'v' || g, '2026-01-01'::timestamptz + g * interval '1 hour', g / 3.0, ARRAY['x', g::text]
  FROM generate_series(1, 100) g;
-- the same rows, inserted in another order
INSERT INTO ck_b SELECT * FROM ck_a ORDER BY id DESC;

SELECT a.rows, a.digest = b.digest AS same_digest, length(a.digest) AS digest_length
  FROM imsg_table_checksum('ck_a') a, imsg_table_checksum('ck_b') b;

-- neither the physical order (an update moves a row) nor session settings matter
UPDATE ck_b SET v = v WHERE id % 2 = 0;
SET DateStyle = 'SQL, DMY';
SET extra_float_digits = -3;
SET TimeZone = 'Asia/Tokyo';
SELECT (SELECT digest FROM imsg_table_checksum('ck_a')) =
       (SELECT digest FROM imsg_table_checksum('ck_b')) AS same_after_update_and_settings;
RESET DateStyle;
RESET extra_float_digits;
RESET TimeZone;

-- one differing value, a NULL for an empty string, or a missing row changes it
UPDATE ck_b SET f = f + 1e-12 WHERE id = 50;
SELECT (SELECT digest FROM imsg_table_checksum('ck_a')) =
       (SELECT digest FROM imsg_table_checksum('ck_b')) AS same_with_one_value_off;
UPDATE ck_b SET f = (SELECT f FROM ck_a WHERE id = 50) WHERE id = 50;
UPDATE ck_a SET v = '' WHERE id = 7;
UPDATE ck_b SET v = NULL WHERE id = 7;
SELECT (SELECT digest FROM imsg_table_checksum('ck_a')) =
       (SELECT digest FROM imsg_table_checksum('ck_b')) AS same_empty_vs_null;
UPDATE ck_b SET v = '' WHERE id = 7;
DELETE FROM ck_b WHERE id = 100;
SELECT (SELECT rows FROM imsg_table_checksum('ck_b')) AS rows_after_delete,
       (SELECT digest FROM imsg_table_checksum('ck_a')) =
       (SELECT digest FROM imsg_table_checksum('ck_b')) AS same_with_row_missing;
INSERT INTO ck_b SELECT * FROM ck_a WHERE id = 100;

-- two equal rows do not cancel out (a sum, not a XOR)
CREATE TABLE ck_dup (v integer);
CREATE TABLE ck_dup2 (v integer);
INSERT INTO ck_dup VALUES (1), (1);
SELECT (SELECT digest FROM imsg_table_checksum('ck_dup')) =
       (SELECT digest FROM imsg_table_checksum('ck_dup2')) AS dup_same_as_empty;

-- a dropped column is not part of the row
ALTER TABLE ck_b ADD COLUMN extra integer;
ALTER TABLE ck_b DROP COLUMN extra;
SELECT (SELECT digest FROM imsg_table_checksum('ck_a')) =
       (SELECT digest FROM imsg_table_checksum('ck_b')) AS same_after_dropped_column;

-- an empty table
SELECT * FROM imsg_table_checksum('ck_dup2');

-- errors: not a table, no SELECT, row-level security
CREATE VIEW ck_view AS SELECT * FROM ck_a;
CREATE SEQUENCE ck_seq;
SELECT * FROM imsg_table_checksum('ck_view');
SELECT * FROM imsg_table_checksum('ck_seq');
CREATE ROLE regress_imsg_ck;
GRANT EXECUTE ON FUNCTION imsg_table_checksum(regclass) TO regress_imsg_ck;
SET ROLE regress_imsg_ck;
SELECT * FROM imsg_table_checksum('ck_a');
RESET ROLE;
GRANT SELECT ON ck_a TO regress_imsg_ck;
ALTER TABLE ck_a ENABLE ROW LEVEL SECURITY;
CREATE POLICY ck_some ON ck_a USING (id < 10);
SET ROLE regress_imsg_ck;
SELECT * FROM imsg_table_checksum('ck_a');
RESET ROLE;
-- the owner is not subject to its table's policies: allowed
SELECT rows FROM imsg_table_checksum('ck_a');
-- PUBLIC may not run it
SELECT has_function_privilege('public', 'imsg_table_checksum(regclass)', 'EXECUTE') AS public_may_run;

-- imsg_remote_wins() outside an apply lets every write through
SELECT imsg_remote_wins(xmin) AS outside_apply FROM ck_a WHERE id = 1;

DROP POLICY ck_some ON ck_a;
REVOKE ALL ON ck_a FROM regress_imsg_ck;
REVOKE ALL ON FUNCTION imsg_table_checksum(regclass) FROM regress_imsg_ck;
DROP ROLE regress_imsg_ck;
DROP VIEW ck_view;
DROP SEQUENCE ck_seq;
DROP TABLE ck_a, ck_b, ck_dup, ck_dup2;

-- a type created on each node has an OID of its own there: the same rows
-- give the same digest whatever the OIDs of their enum and array types
CREATE TYPE ck_mood AS ENUM ('sad', 'ok', 'happy');
CREATE TABLE ck_e (id integer PRIMARY KEY, m ck_mood, ms ck_mood[]);
INSERT INTO ck_e VALUES (1, 'ok', '{sad,happy}'), (2, NULL, '{}');
CREATE TEMP TABLE ck_e_digest AS SELECT digest FROM imsg_table_checksum('ck_e');
DROP TABLE ck_e;
DROP TYPE ck_mood;
CREATE TYPE ck_mood AS ENUM ('sad', 'ok', 'happy');
CREATE TABLE ck_e (id integer PRIMARY KEY, m ck_mood, ms ck_mood[]);
INSERT INTO ck_e VALUES (1, 'ok', '{sad,happy}'), (2, NULL, '{}');
SELECT digest = (SELECT digest FROM ck_e_digest) AS same_digest_new_oids
  FROM imsg_table_checksum('ck_e');
DROP TABLE ck_e;
DROP TYPE ck_mood;
