-- The security model (README, "Security"): nothing for PUBLIC, 42501
-- without the documented grants, sending to another process follows the
-- rule of pg_signal_backend, every message shows its sender's role, and the
-- settings that change behaviour for everyone are not for ordinary roles.
-- Sends between backends of different roles are in t/070_security.pl.
\set SHOW_CONTEXT never

-- try(sql): 'ok', or the SQLSTATE, message and detail of its error, with
-- process ids masked
CREATE FUNCTION pg_temp.try(sql text) RETURNS text LANGUAGE plpgsql AS $$
DECLARE
  st text;
  msg text;
  det text;
BEGIN
  EXECUTE sql;
  RETURN 'ok';
EXCEPTION WHEN OTHERS THEN
  GET STACKED DIAGNOSTICS st = RETURNED_SQLSTATE, msg = MESSAGE_TEXT,
                          det = PG_EXCEPTION_DETAIL;
  RETURN st || ': ' || regexp_replace(msg, 'process \d+', 'process N')
         || coalesce(' / ' || nullif(det, ''), '');
END $$;

-- Every function and view of the extension: nothing granted to PUBLIC, and
-- who else (besides the owner) holds a privilege.
SELECT pg_describe_object(d.classid, d.objid, 0) AS object,
       coalesce(string_agg(DISTINCT CASE WHEN a.grantee = 0 THEN 'PUBLIC'
                                    ELSE a.grantee::regrole::text END
                           || ':' || a.privilege_type, ', '), '') AS granted
  FROM pg_depend d
  LEFT JOIN pg_proc p ON d.classid = 'pg_proc'::regclass AND p.oid = d.objid
  LEFT JOIN pg_class c ON d.classid = 'pg_class'::regclass AND c.oid = d.objid
  LEFT JOIN LATERAL aclexplode(coalesce(p.proacl, c.relacl)) a
         ON a.grantee <> coalesce(p.proowner, c.relowner)
 WHERE d.refclassid = 'pg_extension'::regclass
   AND d.refobjid = (SELECT oid FROM pg_extension WHERE extname = 'imessages')
   AND d.deptype = 'e'
 GROUP BY 1 ORDER BY 1;

-- the ACL is explicit on every object (NULL would mean the default: PUBLIC)
SELECT count(*) AS objects_with_default_acl
  FROM pg_depend d
  LEFT JOIN pg_proc p ON d.classid = 'pg_proc'::regclass AND p.oid = d.objid
  LEFT JOIN pg_class c ON d.classid = 'pg_class'::regclass AND c.oid = d.objid
 WHERE d.refobjid = (SELECT oid FROM pg_extension WHERE extname = 'imessages')
   AND d.deptype = 'e'
   AND coalesce(p.proacl, c.relacl) IS NULL;

CREATE ROLE regress_imsg_nogrant;
CREATE ROLE regress_imsg_app;
CREATE ROLE regress_imsg_member IN ROLE regress_imsg_app;
CREATE ROLE regress_imsg_monitor IN ROLE pg_monitor;
CREATE ROLE regress_imsg_stats IN ROLE pg_read_all_stats;

-- A role without grants: 42501 for every function and view.
SET ROLE regress_imsg_nogrant;
SELECT sql, pg_temp.try(sql) AS result FROM (VALUES
  ($$SELECT imsg_send('x')$$),
  ($$SELECT imsg_send('x'::bytea, pg_backend_pid(), 1)$$),
  ($$SELECT * FROM imsg_receive()$$),
  ($$SELECT * FROM imsg_receive_internal(0, NULL)$$),
  ($$SELECT imsg_manager_pid()$$),
  ($$SELECT imsg_ping()$$),
  ($$SELECT * FROM imsg_manager_status()$$),
  ($$SELECT * FROM imsg_helpers()$$),
  ($$SELECT * FROM imsg_area_stats()$$),
  ($$SELECT * FROM imsg_mailbox_stats()$$),
  ($$SELECT * FROM imsg_area$$),
  ($$SELECT * FROM imsg_mailboxes$$),
  ($$SELECT * FROM imsg_replicated_tables$$),
  ($$SELECT imsg_replicate('pg_class')$$),
  ($$SELECT imsg_unreplicate('pg_class')$$),
  ($$SELECT * FROM imsg_changeset_decode('\x00')$$),
  ($$SELECT * FROM imsg_recent_changesets()$$)) AS t(sql);
RESET ROLE;

-- The grants of the README, for an application role.
GRANT EXECUTE ON FUNCTION imsg_send(bytea, integer, integer),
                          imsg_send(text, integer, integer),
                          imsg_receive(integer, integer),
                          imsg_receive_internal(integer, integer),
                          imsg_manager_pid()
  TO regress_imsg_app;
GRANT EXECUTE ON FUNCTION imsg_replicate(regclass), imsg_unreplicate(regclass),
                          imsg_capture(), imsg_refuse_truncate()
  TO regress_imsg_app;
GRANT CREATE ON SCHEMA public TO regress_imsg_app;

-- Messages record the role the sender ran as (current_user), shown by
-- imsg_receive; the mailbox belongs to the session, whatever its role.
SELECT count(*) AS drained FROM imsg_receive();
SELECT imsg_send('from the superuser', pg_backend_pid(), 1) > 0 AS sent;
SET ROLE regress_imsg_app;
SELECT imsg_send('from app', pg_backend_pid(), 2) > 0 AS sent;
SELECT imsg_send('from app to the manager') > 0 AS to_manager;
SELECT imsg_send('from app to the manager, by pid', imsg_manager_pid()) > 0 AS to_manager_pid;
SET ROLE regress_imsg_member;
SELECT imsg_send('from a member of app', pg_backend_pid(), 3) > 0 AS sent;
RESET ROLE;
-- a security definer function sends as its owner
CREATE FUNCTION pg_temp.send_as_app(text) RETURNS bigint LANGUAGE sql
  SECURITY DEFINER AS $$ SELECT imsg_send($1, pg_backend_pid(), 4) $$;
ALTER FUNCTION pg_temp.send_as_app(text) OWNER TO regress_imsg_app;
SET ROLE regress_imsg_nogrant;
SELECT pg_temp.send_as_app('through a security definer function') > 0 AS sent;
SET ROLE regress_imsg_app;
SELECT msgtype,
       CASE WHEN sender_role = session_user::regrole THEN 'the superuser'
            ELSE sender_role::text END AS sender_role,
       sender_pid = pg_backend_pid() AS self, convert_from(payload, 'UTF8') AS payload
  FROM imsg_receive();
RESET ROLE;

-- Sending to another process: anyone to the manager (above), only a
-- superuser to a process without a role: the helpers
SELECT pid AS helper_pid FROM imsg_helpers() WHERE pid IS NOT NULL LIMIT 1 \gset
SET ROLE regress_imsg_app;
SELECT pg_temp.try(format($$SELECT imsg_send('x', %s)$$, :helper_pid)) AS app_to_helper;
SET ROLE regress_imsg_member;
SELECT pg_temp.try(format($$SELECT imsg_send('x', %s)$$, :helper_pid)) AS member_to_helper;
RESET ROLE;
SELECT pg_temp.try(format($$SELECT imsg_send('x', %s, -1)$$, :helper_pid)) AS reserved_type_first;
-- SET SESSION AUTHORIZATION: the same rules
SET SESSION AUTHORIZATION regress_imsg_app;
SELECT current_setting('is_superuser') AS is_superuser,
       pg_temp.try(format($$SELECT imsg_send('x', %s)$$, :helper_pid)) AS to_helper,
       pg_temp.try($$SELECT imsg_send('x', pg_backend_pid())$$) AS to_self;
RESET SESSION AUTHORIZATION;
SELECT count(*) AS self_message FROM imsg_receive();
-- a process without a mailbox, or no process at all: 42704 as for anyone
SELECT pid AS checkpointer_pid FROM pg_stat_activity WHERE backend_type = 'checkpointer' \gset
SET ROLE regress_imsg_app;
SELECT pg_temp.try(format($$SELECT imsg_send('x', %s)$$, :checkpointer_pid)) AS to_checkpointer,
       pg_temp.try($$SELECT imsg_send('x', 2147483647)$$) AS to_nobody;
-- the README's grants are not the monitoring ones
SELECT pg_temp.try('SELECT * FROM imsg_area') AS area,
       pg_temp.try('SELECT * FROM imsg_recent_changesets()') AS recent;
RESET ROLE;

-- Change sets: the README's grants suffice to replicate one's own table;
-- a role that may write to it needs no imessages grant (the trigger
-- function's EXECUTE privilege is checked when the trigger is created)
SET ROLE regress_imsg_app;
CREATE TABLE regress_imsg_t (id integer PRIMARY KEY, v text);
SELECT imsg_replicate('regress_imsg_t');
GRANT INSERT ON regress_imsg_t TO regress_imsg_nogrant;
SELECT pg_temp.try($$SELECT imsg_replicate('pg_class')$$) AS not_owner;
RESET ROLE;
CREATE TEMP TABLE delivered0 AS SELECT change_sets_delivered AS n FROM imsg_manager_status();
SET ROLE regress_imsg_nogrant;
INSERT INTO regress_imsg_t VALUES (1, 'written by a role without grants');
RESET ROLE;
DO $$
BEGIN
  FOR i IN 1..500 LOOP
    EXIT WHEN (SELECT change_sets_delivered FROM imsg_manager_status())
              > (SELECT n FROM delivered0);
    PERFORM pg_sleep(0.01);
  END LOOP;
END $$;
SELECT d.relation, d.op, d.new_row
  FROM imsg_recent_changesets(1) r, imsg_changeset_decode(r.payload) d;
SET ROLE regress_imsg_app;
SELECT imsg_unreplicate('regress_imsg_t');
DROP TABLE regress_imsg_t;
RESET ROLE;

-- Monitoring: members of pg_read_all_stats read the views and the
-- status functions; members of pg_monitor may also ping.  Neither may send
-- or see change sets.
SET ROLE regress_imsg_stats;
SELECT pg_temp.try('SELECT * FROM imsg_area') AS area,
       pg_temp.try('SELECT * FROM imsg_mailboxes') AS mailboxes,
       pg_temp.try('SELECT * FROM imsg_replicated_tables') AS replicated,
       pg_temp.try('SELECT * FROM imsg_manager_status()') AS status,
       pg_temp.try('SELECT * FROM imsg_helpers()') AS helpers,
       pg_temp.try('SELECT imsg_manager_pid()') AS manager_pid,
       pg_temp.try('SELECT imsg_ping()') AS ping;
SET ROLE regress_imsg_monitor;
SELECT pg_temp.try('SELECT * FROM imsg_area') AS area,
       pg_temp.try('SELECT * FROM imsg_mailboxes') AS mailboxes,
       pg_temp.try('SELECT imsg_ping()') AS ping,
       pg_temp.try($$SELECT imsg_send('x')$$) AS send,
       pg_temp.try('SELECT * FROM imsg_recent_changesets()') AS recent;
RESET ROLE;

-- Settings: what changes behaviour for everyone is superuser-only (or
-- needs a reload or restart); a session's own waits are its own.
SELECT name, context FROM pg_settings WHERE name LIKE 'imessages.%' ORDER BY 1;
SET ROLE regress_imsg_app;
SELECT name, pg_temp.try(format('SET %s = %L', name, setting)) AS set_by_app
  FROM pg_settings WHERE name LIKE 'imessages.%' ORDER BY 1;
SELECT pg_temp.try($$SET LOCAL imessages.max_message_size = '1kB'$$) AS set_local,
       pg_temp.try($$SELECT set_config('imessages.max_message_size', '1kB', false)$$) AS set_config;
ALTER SYSTEM SET imessages.max_message_size = '1kB';
\echo :LAST_ERROR_SQLSTATE
ALTER SYSTEM SET imessages.send_timeout = '1s';
\echo :LAST_ERROR_SQLSTATE
RESET ROLE;
-- PostgreSQL 15 lets a superuser delegate one: GRANT SET ON PARAMETER
GRANT SET ON PARAMETER imessages.max_message_size TO regress_imsg_app;
SET ROLE regress_imsg_app;
SELECT pg_temp.try($$SET imessages.max_message_size = '1kB'$$) AS after_grant_set;
RESET imessages.max_message_size;
RESET ROLE;
REVOKE SET ON PARAMETER imessages.max_message_size FROM regress_imsg_app;

-- clean up
REVOKE CREATE ON SCHEMA public FROM regress_imsg_app;
REVOKE ALL ON FUNCTION imsg_send(bytea, integer, integer),
                       imsg_send(text, integer, integer),
                       imsg_receive(integer, integer),
                       imsg_receive_internal(integer, integer), imsg_manager_pid(),
                       imsg_replicate(regclass), imsg_unreplicate(regclass),
                       imsg_capture(), imsg_refuse_truncate()
  FROM regress_imsg_app;
DROP FUNCTION pg_temp.send_as_app(text);
DROP TABLE delivered0;
DROP ROLE regress_imsg_nogrant, regress_imsg_member, regress_imsg_app,
          regress_imsg_monitor, regress_imsg_stats;
