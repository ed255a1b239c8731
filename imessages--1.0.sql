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
    OUT msg_id bigint, OUT sender_pid integer, OUT msgtype integer,
    OUT payload bytea, OUT sent_at timestamptz)
RETURNS SETOF record
AS 'MODULE_PATHNAME', 'imsg_receive_internal'
LANGUAGE C VOLATILE PARALLEL UNSAFE ROWS 10;

CREATE FUNCTION imsg_receive(timeout_ms integer DEFAULT 0,
                             max_messages integer DEFAULT NULL)
RETURNS TABLE(msg_id bigint, sender_pid integer, msgtype integer,
              payload bytea, sent_at timestamptz)
LANGUAGE sql STABLE PARALLEL UNSAFE ROWS 10
AS $$
  SELECT (m).msg_id, (m).sender_pid, (m).msgtype, (m).payload, (m).sent_at
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
    OUT queued_bytes bigint, OUT oldest_sent_at timestamptz,
    OUT sent bigint, OUT received bigint)
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
              last_error text, started_at timestamptz)
AS 'MODULE_PATHNAME', 'imsg_manager_status'
LANGUAGE C VOLATILE PARALLEL SAFE ROWS 1;

CREATE FUNCTION imsg_helpers()
RETURNS TABLE(pid integer, state text, started_at timestamptz, jobs_done bigint)
AS 'MODULE_PATHNAME', 'imsg_helpers'
LANGUAGE C VOLATILE PARALLEL SAFE ROWS 4;

CREATE FUNCTION imsg_ping(target text DEFAULT 'manager', timeout_ms integer DEFAULT 1000)
RETURNS interval
AS 'MODULE_PATHNAME', 'imsg_ping'
LANGUAGE C VOLATILE PARALLEL UNSAFE;

CREATE VIEW imsg_area AS
  SELECT * FROM @extschema@.imsg_area_stats();

CREATE VIEW imsg_mailboxes AS
  SELECT * FROM @extschema@.imsg_mailbox_stats();

--
-- Nothing is executable by PUBLIC: the README shows the grants.
--
REVOKE ALL ON FUNCTION imsg_send(bytea, integer, integer) FROM PUBLIC;
REVOKE ALL ON FUNCTION imsg_send(text, integer, integer) FROM PUBLIC;
REVOKE ALL ON FUNCTION imsg_receive_internal(integer, integer) FROM PUBLIC;
REVOKE ALL ON FUNCTION imsg_receive(integer, integer) FROM PUBLIC;
REVOKE ALL ON FUNCTION imsg_manager_pid() FROM PUBLIC;
REVOKE ALL ON FUNCTION imsg_area_stats() FROM PUBLIC;
REVOKE ALL ON FUNCTION imsg_mailbox_stats() FROM PUBLIC;
REVOKE ALL ON FUNCTION imsg_manager_status() FROM PUBLIC;
REVOKE ALL ON FUNCTION imsg_helpers() FROM PUBLIC;
REVOKE ALL ON FUNCTION imsg_ping(text, integer) FROM PUBLIC;
REVOKE ALL ON imsg_area FROM PUBLIC;
REVOKE ALL ON imsg_mailboxes FROM PUBLIC;
