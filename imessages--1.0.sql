/* imessages--1.0.sql */

-- complain if script is sourced in psql, rather than via CREATE EXTENSION
\echo Use "CREATE EXTENSION imessages" to load this file. \quit

--
-- Sending
--
CREATE FUNCTION imsg_send(payload bytea, recipient integer DEFAULT NULL,
                          msgtype integer DEFAULT 0)
RETURNS bigint
AS 'MODULE_PATHNAME', 'imsg_send'
LANGUAGE C VOLATILE PARALLEL UNSAFE;

CREATE FUNCTION imsg_send(payload text, recipient integer DEFAULT NULL,
                          msgtype integer DEFAULT 0)
RETURNS bigint
AS 'MODULE_PATHNAME', 'imsg_send'
LANGUAGE C VOLATILE PARALLEL UNSAFE;

--
-- Receiving.  imsg_receive_internal takes out one message per call; the SQL
-- wrapper is inlined into the calling query (it is not volatile, strict or
-- security definer), which puts the C function in a target list where it is
-- called once per row the query asks for: a LIMIT stops it.
--
CREATE FUNCTION imsg_receive_internal(timeout_ms integer, max_messages integer,
    OUT msg_id bigint, OUT sender_pid integer, OUT sender_role regrole,
    OUT msgtype integer, OUT payload bytea, OUT sent_at timestamptz)
RETURNS SETOF record
AS 'MODULE_PATHNAME', 'imsg_receive_internal'
LANGUAGE C VOLATILE PARALLEL UNSAFE ROWS 10;

CREATE FUNCTION imsg_receive(timeout_ms integer DEFAULT 0,
                             max_messages integer DEFAULT NULL)
RETURNS TABLE(msg_id bigint, sender_pid integer, sender_role regrole,
              msgtype integer, payload bytea, sent_at timestamptz)
LANGUAGE sql STABLE PARALLEL UNSAFE ROWS 10
AS $$
  SELECT (m).msg_id, (m).sender_pid, (m).sender_role, (m).msgtype, (m).payload,
         (m).sent_at
  FROM (SELECT @extschema@.imsg_receive_internal(timeout_ms, max_messages) AS m
        OFFSET 0) AS s
$$;

--
-- Monitoring
--
CREATE FUNCTION imsg_manager_pid()
RETURNS integer
AS 'MODULE_PATHNAME', 'imsg_manager_pid'
LANGUAGE C VOLATILE PARALLEL SAFE;

CREATE FUNCTION imsg_area_stats(
    OUT size_bytes bigint, OUT used_bytes bigint, OUT peak_bytes bigint,
    OUT queued_messages bigint, OUT sent_total bigint, OUT received_total bigint,
    OUT send_waits bigint, OUT send_failures bigint, OUT allocated_bytes bigint,
    OUT segments_allocated bigint)
RETURNS record
AS 'MODULE_PATHNAME', 'imsg_area_stats'
LANGUAGE C VOLATILE PARALLEL SAFE;

CREATE FUNCTION imsg_mailbox_stats(
    OUT pid integer, OUT backend_type text, OUT queued_messages bigint,
    OUT queued_bytes bigint, OUT quota_bytes bigint,
    OUT oldest_sent_at timestamptz, OUT sent bigint, OUT received bigint)
RETURNS SETOF record
AS 'MODULE_PATHNAME', 'imsg_mailbox_stats'
LANGUAGE C VOLATILE PARALLEL SAFE;

--
-- The replication manager and its helpers
--
CREATE FUNCTION imsg_manager_status()
RETURNS TABLE(pid integer, gcs text, group_members integer,
              messages_received bigint, messages_delivered bigint,
              helpers_running integer, helpers_started bigint,
              helpers_exited bigint, helpers_crashed bigint,
              last_error text, started_at timestamptz,
              change_sets_delivered bigint, change_set_bytes bigint,
              change_sets_discarded bigint,
              remote_change_sets_applied bigint, apply_errors bigint,
              change_sets_conflicted bigint, group_quorate boolean,
              certification_rows bigint, change_sets_to_apply bigint,
              remote_writes_skipped bigint, local_writes bigint,
              manager_memory_bytes bigint, messages_in_assembly bigint,
              state text, group_id uuid, applied_position bigint,
              group_position bigint, lag bigint,
              gcs_messages_sent bigint, gcs_packets_sent bigint,
              applying_now integer, applying_max integer,
              flow_control_active boolean, flow_control_paused_ms bigint,
              flow_control_sent bigint, ddl_applied bigint, ddl_errors bigint)
AS 'MODULE_PATHNAME', 'imsg_manager_status'
LANGUAGE C VOLATILE PARALLEL SAFE ROWS 1;

CREATE FUNCTION imsg_helpers()
RETURNS TABLE(pid integer, state text, started_at timestamptz, jobs_done bigint,
              applying bigint, change_sets_applied bigint)
AS 'MODULE_PATHNAME', 'imsg_helpers'
LANGUAGE C VOLATILE PARALLEL SAFE ROWS 4;

CREATE FUNCTION imsg_group_members()
RETURNS TABLE(node text, gcs_nodeid bigint, pid integer, joined_at timestamptz,
              is_local boolean)
AS 'MODULE_PATHNAME', 'imsg_group_members'
LANGUAGE C VOLATILE PARALLEL SAFE ROWS 3;

CREATE FUNCTION imsg_node_id_clash()
RETURNS text
AS 'MODULE_PATHNAME', 'imsg_node_id_clash'
LANGUAGE C VOLATILE PARALLEL SAFE;

CREATE FUNCTION imsg_ping(target text DEFAULT 'manager', timeout_ms integer DEFAULT 1000)
RETURNS interval
AS 'MODULE_PATHNAME', 'imsg_ping'
LANGUAGE C VOLATILE PARALLEL UNSAFE;

--
-- Change sets: capture of row changes, sent to the manager at commit
--
CREATE FUNCTION imsg_capture()
RETURNS trigger
AS 'MODULE_PATHNAME', 'imsg_capture'
LANGUAGE C;

CREATE FUNCTION imsg_refuse_truncate()
RETURNS trigger
AS 'MODULE_PATHNAME', 'imsg_refuse_truncate'
LANGUAGE C;

CREATE FUNCTION imsg_capture_replicate(tbl regclass, op text)
RETURNS boolean
AS 'MODULE_PATHNAME', 'imsg_capture_replicate'
LANGUAGE C;

-- The sequences a table's columns take their values from: an identity
-- column's, or those its default calls nextval() on.
CREATE FUNCTION imsg_table_sequences(tbl regclass)
RETURNS TABLE(attnum smallint, attname name, seq regclass, is_identity boolean)
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
  SELECT a.attnum, a.attname, s.seq, a.attidentity <> ''
    FROM pg_attribute a
   CROSS JOIN LATERAL (
         SELECT pg_get_serial_sequence(tbl::text, a.attname)::regclass AS seq
          WHERE a.attidentity <> ''
         UNION
         SELECT d.refobjid::regclass
           FROM pg_attrdef ad
           JOIN pg_depend d ON d.classid = 'pg_attrdef'::regclass AND d.objid = ad.oid
                           AND d.refclassid = 'pg_class'::regclass
           JOIN pg_class c ON c.oid = d.refobjid AND c.relkind = 'S'
          WHERE ad.adrelid = tbl AND ad.adnum = a.attnum AND a.attidentity = '') s
   WHERE a.attrelid = tbl AND a.attnum > 0 AND NOT a.attisdropped AND s.seq IS NOT NULL
   ORDER BY a.attnum, s.seq::text
$$;

-- For each column of 'tbl' that takes values from a sequence, the highest
-- value it gave here or the column holds: a node that creates the table
-- from imsg_replicate() starts its own copy of the sequence above it.
CREATE FUNCTION imsg_table_sequence_floors(tbl regclass)
RETURNS jsonb
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  s record;
  seq_last numeric;
  top numeric;
  floors jsonb := '{}';
BEGIN
  FOR s IN SELECT q.attname, q.seq, format_type(a.atttypid, NULL) AS typ
             FROM @extschema@.imsg_table_sequences(tbl) q
             JOIN pg_attribute a ON a.attrelid = tbl AND a.attnum = q.attnum
  LOOP
    EXECUTE format('SELECT CASE WHEN is_called THEN last_value END FROM %s', s.seq) INTO seq_last;
    top := NULL;
    IF s.typ IN ('smallint', 'integer', 'bigint', 'numeric') THEN
      EXECUTE format('SELECT floor(max(%I))::numeric FROM %s', s.attname, tbl) INTO top;
    END IF;
    IF greatest(seq_last, top) >= 1 THEN
      floors := floors || jsonb_build_object(s.attname, greatest(seq_last, top));
    END IF;
  END LOOP;
  RETURN floors;
END $$;

-- The statements that create table 'tbl' as it is on this node, for a
-- node that does not have it (imsg_replicate() sends them): its schema,
-- the sequences its defaults use (with their default options: each node
-- spreads its own, see imsg_node_sequence()), the table with its columns,
-- defaults, identity, generated columns and NOT NULLs, its constraints
-- (foreign keys last), its other indexes and its owner where that role
-- exists.  Names are schema-qualified (search_path is pg_catalog here).
-- Privileges, comments, triggers and statistics settings are not copied.
CREATE FUNCTION imsg_table_definition(tbl regclass)
RETURNS text[]
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  t record;
  col record;
  qname text;
  cols text[] := '{}';
  stmts text[] := '{}';
BEGIN
  SELECT n.nspname, c.relname, c.relpersistence, pg_get_userbyid(c.relowner) AS owner,
         pg_get_userbyid(n.nspowner) AS schema_owner
    INTO t
    FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
   WHERE c.oid = tbl;
  IF NOT FOUND THEN
    RAISE EXCEPTION 'relation with OID % does not exist', tbl::oid
      USING ERRCODE = 'undefined_table';
  END IF;
  qname := format('%I.%I', t.nspname, t.relname);
  -- (a schema created here gets the origin's owner, if that role exists)
  stmts := stmts || format('DO %L',
    format('BEGIN IF NOT EXISTS (SELECT FROM pg_catalog.pg_namespace WHERE nspname = %L) THEN '
           'IF EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = %L) THEN '
           'CREATE SCHEMA %I AUTHORIZATION %I; ELSE CREATE SCHEMA %I; END IF; END IF; END',
           t.nspname, t.schema_owner, t.nspname, t.schema_owner, t.nspname));
  FOR col IN
    SELECT DISTINCT n.nspname, c.relname, format_type(q.seqtypid, NULL) AS typ
      FROM (SELECT s.seq FROM @extschema@.imsg_table_sequences(tbl) s WHERE NOT s.is_identity
            UNION
            SELECT d.objid::regclass FROM pg_depend d
             WHERE d.classid = 'pg_class'::regclass AND d.refclassid = 'pg_class'::regclass
               AND d.refobjid = tbl AND d.deptype = 'a') s
      JOIN pg_class c ON c.oid = s.seq AND c.relkind = 'S'
      JOIN pg_namespace n ON n.oid = c.relnamespace
      JOIN pg_sequence q ON q.seqrelid = s.seq
     ORDER BY 1, 2
  LOOP
    stmts := stmts || format('CREATE SCHEMA IF NOT EXISTS %I', col.nspname)
                   || format('CREATE SEQUENCE IF NOT EXISTS %I.%I AS %s', col.nspname, col.relname, col.typ);
  END LOOP;
  FOR col IN
    SELECT a.attname, format_type(a.atttypid, a.atttypmod) AS typ, a.attnotnull,
           a.attidentity, a.attgenerated, pg_get_expr(ad.adbin, ad.adrelid) AS def,
           (SELECT format('%I.%I', cn.nspname, co.collname)
              FROM pg_collation co JOIN pg_namespace cn ON cn.oid = co.collnamespace
             WHERE co.oid = a.attcollation AND a.attcollation <> ty.typcollation) AS coll
      FROM pg_attribute a
      JOIN pg_type ty ON ty.oid = a.atttypid
      LEFT JOIN pg_attrdef ad ON ad.adrelid = a.attrelid AND ad.adnum = a.attnum
     WHERE a.attrelid = tbl AND a.attnum > 0 AND NOT a.attisdropped
     ORDER BY a.attnum
  LOOP
    cols := cols || (format('%I %s', col.attname, col.typ)
                     || coalesce(' COLLATE ' || col.coll, '')
                     || CASE WHEN col.attgenerated = 's' THEN format(' GENERATED ALWAYS AS (%s) STORED', col.def)
                             WHEN col.attidentity = 'a' THEN ' GENERATED ALWAYS AS IDENTITY'
                             WHEN col.attidentity = 'd' THEN ' GENERATED BY DEFAULT AS IDENTITY'
                             WHEN col.def IS NOT NULL THEN ' DEFAULT ' || col.def
                             ELSE '' END
                     || CASE WHEN col.attnotnull THEN ' NOT NULL' ELSE '' END);
  END LOOP;
  stmts := stmts || format('CREATE %sTABLE %s (%s)',
                           CASE WHEN t.relpersistence = 'u' THEN 'UNLOGGED ' ELSE '' END,
                           qname, array_to_string(cols, ', '));
  FOR col IN
    SELECT n.nspname, c.relname, a.attname
      FROM pg_depend d
      JOIN pg_class c ON c.oid = d.objid AND c.relkind = 'S'
      JOIN pg_namespace n ON n.oid = c.relnamespace
      JOIN pg_attribute a ON a.attrelid = d.refobjid AND a.attnum = d.refobjsubid
     WHERE d.classid = 'pg_class'::regclass AND d.refclassid = 'pg_class'::regclass
       AND d.refobjid = tbl AND d.deptype = 'a'
  LOOP
    stmts := stmts || format('ALTER SEQUENCE %I.%I OWNED BY %s.%I', col.nspname, col.relname, qname, col.attname);
  END LOOP;
  FOR col IN
    SELECT conname, pg_get_constraintdef(oid) AS def
      FROM pg_constraint
     WHERE conrelid = tbl AND contype IN ('p', 'u', 'c', 'x', 'f')
     ORDER BY contype = 'f', conname
  LOOP
    stmts := stmts || format('ALTER TABLE %s ADD CONSTRAINT %I %s', qname, col.conname, col.def);
  END LOOP;
  FOR col IN
    SELECT pg_get_indexdef(i.indexrelid) AS def
      FROM pg_index i
     WHERE i.indrelid = tbl
       AND NOT EXISTS (SELECT 1 FROM pg_constraint k WHERE k.conindid = i.indexrelid AND k.conrelid = tbl)
     ORDER BY i.indexrelid::regclass::text
  LOOP
    stmts := stmts || col.def;
  END LOOP;
  stmts := stmts || format('DO %L',
    format('BEGIN IF EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = %L) THEN '
           'ALTER TABLE %s OWNER TO %I; END IF; END', t.owner, qname, t.owner));
  RETURN stmts;
END $$;

CREATE FUNCTION imsg_replicate(tbl regclass)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  kind "char";
  stride bigint;
  node bigint;
  key record;
BEGIN
  IF tbl IS NULL THEN
    RAISE EXCEPTION 'the table to replicate must not be null'
      USING ERRCODE = 'null_value_not_allowed';
  END IF;
  SELECT relkind INTO kind FROM pg_class WHERE oid = tbl;
  IF NOT FOUND THEN
    RAISE EXCEPTION 'relation with OID % does not exist', tbl::oid
      USING ERRCODE = 'undefined_table';
  END IF;
  IF kind NOT IN ('r', 'p') THEN
    RAISE EXCEPTION 'cannot replicate "%": not a table', tbl
      USING ERRCODE = 'wrong_object_type';
  END IF;
  IF NOT EXISTS (SELECT 1 FROM pg_index
                  WHERE indrelid = tbl AND indisprimary AND indimmediate) THEN
    RAISE EXCEPTION 'table "%" has no primary key', tbl
      USING ERRCODE = 'object_not_in_prerequisite_state',
            HINT = 'imessages identifies rows by an immediate (not deferrable) primary key; add one.';
  END IF;
  -- a key column whose values come from a sequence: every node's copy of
  -- the sequence gives the same values unless imsg_node_sequence() made
  -- them disjoint (its increment is the stride, its start congruent to
  -- this node's id)
  stride := coalesce(current_setting('imessages.node_sequence_stride', true), '0')::bigint;
  node := coalesce(current_setting('imessages.node_id', true), '0')::bigint;
  FOR key IN
    SELECT s.attname, s.seq
      FROM @extschema@.imsg_table_sequences(tbl) s
      JOIN pg_sequence q ON q.seqrelid = s.seq
     WHERE EXISTS (SELECT 1 FROM pg_index i
                    WHERE i.indrelid = tbl AND (i.indisprimary OR i.indisreplident)
                      AND s.attnum = ANY (i.indkey))
       AND NOT coalesce(node BETWEEN 1 AND stride AND q.seqincrement = stride
                        AND (q.seqstart % nullif(stride, 0) + stride) % nullif(stride, 0)
                            = node % nullif(stride, 0), false)
     ORDER BY s.attnum, s.seq::text
  LOOP
    RAISE WARNING 'key column "%" of table "%" takes its values from sequence "%", which gives the same values on every node',
                  key.attname, tbl, key.seq
      USING DETAIL = 'Rows inserted at once on two nodes then get the same key: one transaction fails with 40001 in commit_mode sync, one row overwrites the other in async.',
            HINT = format('Run SELECT imsg_node_sequence(%L); on every node, each with its own imessages.node_id.', key.seq);
  END LOOP;
  IF EXISTS (SELECT 1 FROM pg_trigger WHERE tgrelid = tbl AND tgname = 'imsg_capture') THEN
    RETURN;
  END IF;
  EXECUTE format('CREATE TRIGGER imsg_capture AFTER INSERT OR UPDATE OR DELETE ON %s '
                 'FOR EACH ROW EXECUTE FUNCTION @extschema@.imsg_capture()', tbl);
  EXECUTE format('CREATE TRIGGER imsg_refuse_truncate BEFORE TRUNCATE ON %s '
                 'FOR EACH STATEMENT EXECUTE FUNCTION @extschema@.imsg_refuse_truncate()', tbl);
  -- in a group, the table travels: every other node creates it if it has
  -- none, takes this node's rows in place of its own and replicates it
  -- (imsg_apply_replicate(), at this change set's place in the order)
  IF @extschema@.imsg_capture_replicate(tbl, NULL) THEN
    IF (SELECT relpersistence FROM pg_class WHERE oid = tbl) = 't' THEN
      RAISE EXCEPTION 'cannot replicate temporary table "%"', tbl
        USING ERRCODE = 'feature_not_supported';
    END IF;
    IF kind = 'p' OR EXISTS (SELECT 1 FROM pg_inherits WHERE inhrelid = tbl OR inhparent = tbl) THEN
      RAISE EXCEPTION 'cannot replicate "%" through the group: it is partitioned or inherits', tbl
        USING ERRCODE = 'feature_not_supported',
              HINT = 'Create it on every node, and call imsg_replicate() on each with session_replication_role = replica.';
    END IF;
    PERFORM @extschema@.imsg_capture_replicate(tbl, 'replicate');
  END IF;
END $$;

CREATE FUNCTION imsg_unreplicate(tbl regclass)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
  IF tbl IS NULL THEN
    RAISE EXCEPTION 'the table to unreplicate must not be null'
      USING ERRCODE = 'null_value_not_allowed';
  END IF;
  IF NOT EXISTS (SELECT 1 FROM pg_class WHERE oid = tbl) THEN
    RAISE EXCEPTION 'relation with OID % does not exist', tbl::oid
      USING ERRCODE = 'undefined_table';
  END IF;
  IF NOT EXISTS (SELECT 1 FROM pg_trigger WHERE tgrelid = tbl AND tgname = 'imsg_capture') THEN
    RAISE EXCEPTION 'table "%" is not replicated', tbl
      USING ERRCODE = 'undefined_object';
  END IF;
  EXECUTE format('DROP TRIGGER imsg_capture ON %s', tbl);
  EXECUTE format('DROP TRIGGER IF EXISTS imsg_refuse_truncate ON %s', tbl);
  IF @extschema@.imsg_capture_replicate(tbl, NULL) THEN
    PERFORM @extschema@.imsg_capture_replicate(tbl, 'unreplicate');
  END IF;
END $$;

-- A remote imsg_replicate() or imsg_unreplicate(), run by a helper at its
-- change set's place in the order (apply.c).  replicate: create the table
-- if this node has none (and spread its new sequences if imessages.node_id
-- is set), drop the rows it has here that a later local write does not
-- win (the origin's rows follow in the change set), replicate it.
CREATE FUNCTION imsg_apply_replicate(doc jsonb)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  rel regclass := to_regclass(format('%I.%I', doc->>'schema', doc->>'table'));
  stmt text;
  s record;
  existing oid[];
BEGIN
  IF doc->>'op' = 'unreplicate' THEN
    IF rel IS NOT NULL AND EXISTS (SELECT 1 FROM pg_trigger WHERE tgrelid = rel AND tgname = 'imsg_capture') THEN
      PERFORM @extschema@.imsg_unreplicate(rel);
    END IF;
    RETURN;
  END IF;
  IF doc->>'op' IS DISTINCT FROM 'replicate' THEN
    RAISE EXCEPTION 'unknown replicated operation "%"', doc->>'op'
      USING ERRCODE = 'invalid_parameter_value';
  END IF;
  IF rel IS NULL THEN
    SELECT array_agg(oid) INTO existing FROM pg_class WHERE relkind = 'S';
    FOR stmt IN SELECT jsonb_array_elements_text(doc->'definition')
    LOOP
      EXECUTE stmt;
    END LOOP;
    rel := format('%I.%I', doc->>'schema', doc->>'table')::regclass;
    -- the sequences created here start above the values the origin gave
    -- (the rows that follow hold them), on this node's own values if it
    -- has an id; a sequence that was here already is left as it is
    FOR s IN SELECT q.seq, (doc->'sequences'->>q.attname::text)::numeric AS floor, sq.seqmax
               FROM @extschema@.imsg_table_sequences(rel) q
               JOIN pg_sequence sq ON sq.seqrelid = q.seq
              WHERE q.seq::oid <> ALL (coalesce(existing, '{}'))
    LOOP
      IF s.floor IS NOT NULL THEN
        PERFORM setval(s.seq, least(s.floor, s.seqmax)::bigint);
      END IF;
      IF coalesce(current_setting('imessages.node_id', true), '0')::bigint > 0 THEN
        BEGIN
          PERFORM @extschema@.imsg_node_sequence(s.seq);
        EXCEPTION WHEN object_not_in_prerequisite_state OR invalid_parameter_value
                       OR sequence_generator_limit_exceeded OR feature_not_supported THEN
          RAISE WARNING 'sequence "%" of replicated table "%" was not spread: %', s.seq, rel, SQLERRM;
        END;
      END IF;
    END LOOP;
  ELSE
    -- the table's owner here must be the origin's, unless a superuser sent it
    IF NOT (doc->>'superuser')::boolean
       AND pg_get_userbyid((SELECT relowner FROM pg_class WHERE oid = rel)) IS DISTINCT FROM doc->>'owner' THEN
      RAISE EXCEPTION 'table "%" is owned by "%" here, not by "%" as on node "%"', rel,
                      pg_get_userbyid((SELECT relowner FROM pg_class WHERE oid = rel)), doc->>'owner', doc->>'node'
        USING ERRCODE = 'insufficient_privilege',
              HINT = 'Change its owner here, or drop it, then restart the manager.';
    END IF;
    -- no local write in between: the rows are replaced wholly
    EXECUTE format('LOCK TABLE %s IN SHARE ROW EXCLUSIVE MODE', rel);
    EXECUTE format('DELETE FROM %s AS imsg_target WHERE @extschema@.imsg_remote_wins(imsg_target.xmin)', rel);
  END IF;
  PERFORM @extschema@.imsg_replicate(rel);
END $$;

--
-- Keys that do not collide.  Sequences are not replicated: each node has
-- its own copy of a serial or identity column's sequence, and all copies
-- give the same values.  imsg_node_sequence() makes this node's copy give
-- only the values congruent to imessages.node_id modulo
-- imessages.node_sequence_stride (Galera's auto_increment_offset and
-- auto_increment_increment), above any it gave or its columns hold here.
-- Run it on every node.  It returns the next value the sequence gives.
--
CREATE FUNCTION imsg_node_sequence(seq regclass)
RETURNS bigint
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  stride_setting text := current_setting('imessages.node_sequence_stride', true);
  node_setting text := current_setting('imessages.node_id', true);
  stride bigint;
  node bigint;
  residue bigint;
  kind "char";
  seq_min bigint;
  seq_max bigint;
  seq_increment bigint;
  seq_cycle boolean;
  seq_last numeric;
  seq_called boolean;
  lowest numeric;             -- the smallest value that may be given
  top numeric;
  restart_at numeric;
  col record;
BEGIN
  IF seq IS NULL THEN
    RAISE EXCEPTION 'the sequence must not be null'
      USING ERRCODE = 'null_value_not_allowed';
  END IF;
  SELECT relkind INTO kind FROM pg_class WHERE oid = seq;
  IF NOT FOUND THEN
    RAISE EXCEPTION 'relation with OID % does not exist', seq::oid
      USING ERRCODE = 'undefined_table';
  END IF;
  IF kind <> 'S' THEN
    RAISE EXCEPTION '"%" is not a sequence', seq
      USING ERRCODE = 'wrong_object_type';
  END IF;
  IF stride_setting IS NULL OR node_setting IS NULL THEN
    RAISE EXCEPTION 'imessages must be loaded via shared_preload_libraries'
      USING ERRCODE = 'object_not_in_prerequisite_state';
  END IF;
  stride := stride_setting::bigint;
  node := node_setting::bigint;
  IF node = 0 THEN
    RAISE EXCEPTION 'this node has no imessages.node_id'
      USING ERRCODE = 'object_not_in_prerequisite_state',
            HINT = format('Set imessages.node_id to a number from 1 to imessages.node_sequence_stride (%s), a different one on each node of the group.', stride);
  END IF;
  IF node > stride THEN
    RAISE EXCEPTION 'imessages.node_id (%) exceeds imessages.node_sequence_stride (%)', node, stride
      USING ERRCODE = 'invalid_parameter_value',
            HINT = 'Give the nodes numbers from 1 to the stride, or raise imessages.node_sequence_stride on every node.';
  END IF;
  residue := node % stride;
  IF @extschema@.imsg_node_id_clash() IS NOT NULL THEN
    RAISE EXCEPTION 'imessages.node_id % of this node is also that of node % of its group', node, @extschema@.imsg_node_id_clash()
      USING ERRCODE = 'object_not_in_prerequisite_state',
            DETAIL = 'Both nodes would give the same values.',
            HINT = 'Give every node of the group its own imessages.node_id (a restart), then run imsg_node_sequence() again.';
  END IF;

  SELECT seqmin, seqmax, seqincrement, seqcycle
    INTO seq_min, seq_max, seq_increment, seq_cycle
    FROM pg_sequence WHERE seqrelid = seq;
  IF seq_increment < 0 THEN
    RAISE EXCEPTION 'sequence "%" is descending', seq
      USING ERRCODE = 'feature_not_supported',
            HINT = 'imsg_node_sequence() handles ascending sequences only.';
  END IF;
  IF seq_cycle THEN
    RAISE EXCEPTION 'sequence "%" cycles', seq
      USING ERRCODE = 'feature_not_supported',
            DETAIL = 'Once it wraps around it would give values that other nodes give or that are in use.',
            HINT = format('ALTER SEQUENCE %s NO CYCLE first.', seq);
  END IF;
  IF seq_max::numeric - seq_min < stride THEN
    RAISE EXCEPTION 'the range of sequence "%" cannot hold a stride of %', seq, stride
      USING ERRCODE = 'invalid_parameter_value',
            DETAIL = format('It goes from %s to %s.', seq_min, seq_max),
            HINT = format('Widen its range (ALTER SEQUENCE %s MAXVALUE ..., AS bigint if need be), or lower imessages.node_sequence_stride on every node.', seq);
  END IF;

  -- The new increment first: ALTER SEQUENCE locks the sequence until the
  -- end of the transaction, so no nextval() here gives a value between the
  -- reading below and the restart.
  EXECUTE format('ALTER SEQUENCE %s INCREMENT BY %s', seq, stride);
  EXECUTE format('SELECT last_value, is_called FROM %s', seq) INTO seq_last, seq_called;
  lowest := CASE WHEN seq_called THEN seq_last + 1 ELSE seq_last END;
  -- above what the columns drawing from it hold here too: rows other nodes
  -- inserted with the same sequence are here, and this node's copy never
  -- gave their keys
  FOR col IN
    SELECT ad.adrelid::regclass AS tbl, a.attname
      FROM pg_depend d
      JOIN pg_attrdef ad ON d.classid = 'pg_attrdef'::regclass AND ad.oid = d.objid
      JOIN pg_attribute a ON a.attrelid = ad.adrelid AND a.attnum = ad.adnum
     WHERE d.refclassid = 'pg_class'::regclass AND d.refobjid = seq
    UNION
    SELECT d.refobjid::regclass, a.attname
      FROM pg_depend d
      JOIN pg_attribute a ON a.attrelid = d.refobjid AND a.attnum = d.refobjsubid
     WHERE d.classid = 'pg_class'::regclass AND d.objid = seq
       AND d.refclassid = 'pg_class'::regclass AND d.deptype = 'i'
  LOOP
    IF EXISTS (SELECT 1 FROM pg_class c JOIN pg_attribute a ON a.attrelid = c.oid
                WHERE c.oid = col.tbl AND c.relkind IN ('r', 'p') AND a.attname = col.attname
                  AND NOT a.attisdropped
                  AND a.atttypid IN ('smallint'::regtype, 'integer'::regtype,
                                     'bigint'::regtype, 'numeric'::regtype)) THEN
      EXECUTE format('SELECT max(%I)::numeric FROM %s', col.attname, col.tbl) INTO top;
      IF top >= lowest THEN
        lowest := floor(top) + 1;
      END IF;
    END IF;
  END LOOP;
  lowest := greatest(lowest, seq_min);
  restart_at := lowest + ((residue - lowest) % stride + stride) % stride;
  IF restart_at > seq_max THEN
    RAISE EXCEPTION 'sequence "%" has no value left for node %', seq, node
      USING ERRCODE = 'sequence_generator_limit_exceeded',
            DETAIL = format('Its next value would be %s, congruent to %s modulo %s, above its maximum %s.',
                            restart_at, residue, stride, seq_max),
            HINT = format('Raise its maximum if it can be raised (ALTER SEQUENCE %s MAXVALUE ..., AS bigint if need be).', seq);
  END IF;
  -- START too, so that a later RESTART without a value stays on this
  -- node's values, and so that imsg_replicate() can tell it was done
  EXECUTE format('ALTER SEQUENCE %s START WITH %s RESTART WITH %s', seq, restart_at, restart_at);
  RETURN restart_at;
END $$;

-- The same for the sequence a column of a table takes its values from:
-- its identity sequence, or the one its default calls nextval() on.
CREATE FUNCTION imsg_node_sequence(tbl regclass, col name)
RETURNS bigint
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  num smallint;
  identity "char";
  seqs regclass[];
BEGIN
  IF tbl IS NULL OR col IS NULL THEN
    RAISE EXCEPTION 'the table and the column must not be null'
      USING ERRCODE = 'null_value_not_allowed';
  END IF;
  IF NOT EXISTS (SELECT 1 FROM pg_class WHERE oid = tbl) THEN
    RAISE EXCEPTION 'relation with OID % does not exist', tbl::oid
      USING ERRCODE = 'undefined_table';
  END IF;
  SELECT attnum, attidentity INTO num, identity FROM pg_attribute
   WHERE attrelid = tbl AND attname = col AND attnum > 0 AND NOT attisdropped;
  IF NOT FOUND THEN
    RAISE EXCEPTION 'column "%" of relation "%" does not exist', col, tbl
      USING ERRCODE = 'undefined_column';
  END IF;
  IF identity <> '' THEN
    seqs := ARRAY[pg_get_serial_sequence(tbl::text, col)::regclass];
  ELSE
    SELECT array_agg(DISTINCT d.refobjid::regclass) INTO seqs
      FROM pg_attrdef ad
      JOIN pg_depend d ON d.classid = 'pg_attrdef'::regclass AND d.objid = ad.oid
                      AND d.refclassid = 'pg_class'::regclass
      JOIN pg_class c ON c.oid = d.refobjid AND c.relkind = 'S'
     WHERE ad.adrelid = tbl AND ad.adnum = num;
  END IF;
  IF coalesce(cardinality(seqs), 0) = 0 THEN
    RAISE EXCEPTION 'column "%" of relation "%" takes no value from a sequence', col, tbl
      USING ERRCODE = 'undefined_object',
            HINT = 'It needs to be an identity column, or have a default that calls nextval().';
  END IF;
  IF cardinality(seqs) > 1 THEN
    RAISE EXCEPTION 'the default of column "%" of relation "%" uses more than one sequence', col, tbl
      USING ERRCODE = 'invalid_parameter_value',
            HINT = 'Call imsg_node_sequence() on each sequence.';
  END IF;
  RETURN @extschema@.imsg_node_sequence(seqs[1]);
END $$;

CREATE VIEW imsg_replicated_tables AS
  SELECT c.oid::regclass AS relation, n.nspname AS schema_name, c.relname AS table_name
    FROM pg_catalog.pg_trigger t
    JOIN pg_catalog.pg_class c ON c.oid = t.tgrelid
    JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
   WHERE t.tgname = 'imsg_capture'
     AND t.tgfoid = '@extschema@.imsg_capture()'::pg_catalog.regprocedure;

CREATE FUNCTION imsg_changeset_decode(payload bytea)
RETURNS TABLE(ord integer, relation text, op text, key jsonb, new_row jsonb)
AS 'MODULE_PATHNAME', 'imsg_changeset_decode'
LANGUAGE C STRICT STABLE PARALLEL SAFE;

CREATE FUNCTION imsg_table_checksum(tbl regclass, OUT rows bigint, OUT digest text)
AS 'MODULE_PATHNAME', 'imsg_table_checksum'
LANGUAGE C STRICT STABLE PARALLEL SAFE;

-- Used by the helpers' apply statements (see src/local_writes.c): may the
-- change set being applied overwrite a row version written by this
-- transaction?  True outside an apply.  Costly on purpose: the planner
-- then checks the key before it, so it is called only on the row sought.
CREATE FUNCTION imsg_remote_wins(xmin xid) RETURNS boolean
AS 'MODULE_PATHNAME', 'imsg_remote_wins'
LANGUAGE C STRICT VOLATILE PARALLEL RESTRICTED COST 100;

CREATE FUNCTION imsg_recent_changesets(n integer DEFAULT 10)
RETURNS TABLE(seq bigint, origin_pid integer, xid xid8, changes integer,
              bytes integer, delivered_at timestamptz, payload bytea)
AS 'MODULE_PATHNAME', 'imsg_recent_changesets'
LANGUAGE C VOLATILE PARALLEL SAFE;

--
-- Node recovery: the durable state of this node in its group, and the
-- change-set log a node that missed change sets fetches them from
--
-- One row: the group this node belongs to, and the position in the
-- group's total order up to which every change set is applied here.
-- Written by the helpers (in the transaction that applies a change set);
-- not replicated, and not to be edited.
CREATE TABLE imsg_state (
  only_row boolean PRIMARY KEY DEFAULT true CHECK (only_row),
  group_id uuid,
  applied_position bigint NOT NULL DEFAULT 0
);
INSERT INTO imsg_state DEFAULT VALUES;

CREATE FUNCTION imsg_changeset_log(from_position bigint, max_records integer DEFAULT 1000)
RETURNS TABLE("position" bigint, origin text, origin_pid integer, counter bigint,
              xid bigint, flags integer, data bytea)
AS 'MODULE_PATHNAME', 'imsg_changeset_log'
LANGUAGE C STRICT VOLATILE PARALLEL SAFE;

CREATE FUNCTION imsg_changeset_log_range()
RETURNS TABLE(first_position bigint, last_position bigint, bytes bigint, segments integer)
AS 'MODULE_PATHNAME', 'imsg_changeset_log_range'
LANGUAGE C STRICT VOLATILE PARALLEL SAFE ROWS 1;

-- A donor's part of a full state transfer (see recovery.c)
CREATE FUNCTION imsg_pause_apply(timeout_ms integer DEFAULT 10000)
RETURNS bigint
AS 'MODULE_PATHNAME', 'imsg_pause_apply'
LANGUAGE C STRICT VOLATILE PARALLEL UNSAFE;

CREATE FUNCTION imsg_resume_apply()
RETURNS void
AS 'MODULE_PATHNAME', 'imsg_resume_apply'
LANGUAGE C STRICT VOLATILE PARALLEL UNSAFE;

CREATE VIEW imsg_area AS
  SELECT * FROM @extschema@.imsg_area_stats();

CREATE VIEW imsg_mailboxes AS
  SELECT * FROM @extschema@.imsg_mailbox_stats();

--
-- Nothing is executable by PUBLIC: the README ("Security") shows the grants
-- a role needs.  Every function and view of this script must be listed
-- here (the regression test "security" checks that none is left to
-- PUBLIC).
--
REVOKE ALL ON FUNCTION imsg_send(bytea, integer, integer) FROM PUBLIC;
REVOKE ALL ON FUNCTION imsg_send(text, integer, integer) FROM PUBLIC;
REVOKE ALL ON FUNCTION imsg_receive_internal(integer, integer) FROM PUBLIC;
REVOKE ALL ON FUNCTION imsg_receive(integer, integer) FROM PUBLIC;
REVOKE ALL ON FUNCTION imsg_manager_pid() FROM PUBLIC;
REVOKE ALL ON FUNCTION imsg_area_stats() FROM PUBLIC;
REVOKE ALL ON FUNCTION imsg_mailbox_stats() FROM PUBLIC;
REVOKE ALL ON FUNCTION imsg_manager_status() FROM PUBLIC;
REVOKE ALL ON TABLE imsg_state FROM PUBLIC;
REVOKE ALL ON FUNCTION imsg_changeset_log(bigint, integer) FROM PUBLIC;
REVOKE ALL ON FUNCTION imsg_changeset_log_range() FROM PUBLIC;
REVOKE ALL ON FUNCTION imsg_pause_apply(integer) FROM PUBLIC;
REVOKE ALL ON FUNCTION imsg_resume_apply() FROM PUBLIC;
REVOKE ALL ON FUNCTION imsg_helpers() FROM PUBLIC;
REVOKE ALL ON FUNCTION imsg_group_members() FROM PUBLIC;
REVOKE ALL ON FUNCTION imsg_ping(text, integer) FROM PUBLIC;
REVOKE ALL ON FUNCTION imsg_capture() FROM PUBLIC;
REVOKE ALL ON FUNCTION imsg_refuse_truncate() FROM PUBLIC;
REVOKE ALL ON FUNCTION imsg_replicate(regclass) FROM PUBLIC;
REVOKE ALL ON FUNCTION imsg_unreplicate(regclass) FROM PUBLIC;
-- (it checks itself that its caller owns the table and may call
-- imsg_replicate() or imsg_unreplicate(); the three read the catalogs)
GRANT EXECUTE ON FUNCTION imsg_capture_replicate(regclass, text) TO PUBLIC;
REVOKE ALL ON FUNCTION imsg_apply_replicate(jsonb) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION imsg_table_definition(regclass) TO PUBLIC;
GRANT EXECUTE ON FUNCTION imsg_table_sequence_floors(regclass) TO PUBLIC;
GRANT EXECUTE ON FUNCTION imsg_table_sequences(regclass) TO PUBLIC;
GRANT EXECUTE ON FUNCTION imsg_node_id_clash() TO PUBLIC;
REVOKE ALL ON FUNCTION imsg_node_sequence(regclass) FROM PUBLIC;
REVOKE ALL ON FUNCTION imsg_node_sequence(regclass, name) FROM PUBLIC;
REVOKE ALL ON FUNCTION imsg_changeset_decode(bytea) FROM PUBLIC;
REVOKE ALL ON FUNCTION imsg_recent_changesets(integer) FROM PUBLIC;
REVOKE ALL ON FUNCTION imsg_table_checksum(regclass) FROM PUBLIC;
REVOKE ALL ON FUNCTION imsg_remote_wins(xid) FROM PUBLIC;
REVOKE ALL ON imsg_replicated_tables FROM PUBLIC;
REVOKE ALL ON imsg_area FROM PUBLIC;
REVOKE ALL ON imsg_mailboxes FROM PUBLIC;

--
-- Monitoring, for the predefined roles that exist for it (as
-- pg_buffercache does): members of pg_read_all_stats, and so of
-- pg_monitor, read the statistics; members of pg_monitor may also run the
-- health check.  They show pids, backend types, queue lengths and counters,
-- never payloads.  imsg_recent_changesets() shows row data and is not
-- granted.  A function called in a view is checked against the user who
-- queries the view, hence the grants on both.
--
GRANT EXECUTE ON FUNCTION imsg_area_stats(), imsg_mailbox_stats(),
                          imsg_manager_status(), imsg_helpers(),
                          imsg_group_members(), imsg_manager_pid()
                          TO pg_read_all_stats;
GRANT SELECT ON imsg_area, imsg_mailboxes, imsg_replicated_tables TO pg_read_all_stats;
GRANT EXECUTE ON FUNCTION imsg_ping(text, integer) TO pg_monitor;
