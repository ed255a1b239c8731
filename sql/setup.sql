-- Install the extension and wait for the manager to be up.
CREATE EXTENSION imessages;

DO $$
BEGIN
  FOR i IN 1..300 LOOP
    EXIT WHEN imsg_manager_pid() IS NOT NULL;
    PERFORM pg_sleep(0.01);
  END LOOP;
END $$;

SELECT imsg_manager_pid() IS NOT NULL AS manager_running,
       imsg_manager_pid() = (SELECT pid FROM pg_stat_activity
                              WHERE backend_type = 'imessages manager') AS same_pid;

-- the area has the configured size and starts empty
SELECT size_bytes = pg_size_bytes(current_setting('imessages.buffer_size')) AS size_ok,
       used_bytes, queued_messages FROM imsg_area;

-- everything is revoked from PUBLIC
SELECT p.proname, has_function_privilege('public', p.oid, 'EXECUTE') AS public_exec
  FROM pg_proc p JOIN pg_depend d ON d.objid = p.oid
 WHERE d.refobjid = (SELECT oid FROM pg_extension WHERE extname = 'imessages')
 ORDER BY 1, 2;
SELECT c.relname, has_table_privilege('public', c.oid, 'SELECT') AS public_select
  FROM pg_class c WHERE c.relname IN ('imsg_area', 'imsg_mailboxes') ORDER BY 1;
