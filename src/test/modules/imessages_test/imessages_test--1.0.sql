\echo Use "CREATE EXTENSION imessages_test" to load this file. \quit

CREATE FUNCTION imsg_test_build_in_place(recipient integer, n integer, label text)
RETURNS bigint AS 'MODULE_PATHNAME' LANGUAGE C STRICT;

CREATE FUNCTION imsg_test_reserve_cancel(recipient integer)
RETURNS text AS 'MODULE_PATHNAME' LANGUAGE C STRICT;

CREATE FUNCTION imsg_test_reserve_then_error(recipient integer)
RETURNS void AS 'MODULE_PATHNAME' LANGUAGE C STRICT;

CREATE FUNCTION imsg_test_overfill(recipient integer)
RETURNS void AS 'MODULE_PATHNAME' LANGUAGE C STRICT;

CREATE FUNCTION imsg_test_decode(payload bytea)
RETURNS text AS 'MODULE_PATHNAME' LANGUAGE C STRICT;

CREATE FUNCTION imsg_test_receive_all(timeout_ms integer)
RETURNS TABLE(msg_id bigint, sender integer, recipient integer, msgtype integer,
              len integer, role regrole, decoded text)
AS 'MODULE_PATHNAME' LANGUAGE C STRICT;

CREATE FUNCTION imsg_test_send_result(recipient integer, len integer, timeout_ms integer)
RETURNS text AS 'MODULE_PATHNAME' LANGUAGE C STRICT;

CREATE FUNCTION imsg_test_send_raw(recipient integer, msgtype integer, payload bytea)
RETURNS text AS 'MODULE_PATHNAME' LANGUAGE C STRICT;

CREATE FUNCTION imsg_test_send_pipelined(recipient integer, n integer)
RETURNS text AS 'MODULE_PATHNAME' LANGUAGE C STRICT;

CREATE FUNCTION imsg_test_send_pipelined_sizes(recipient integer, sizes integer[])
RETURNS text AS 'MODULE_PATHNAME' LANGUAGE C STRICT;

CREATE FUNCTION imsg_test_send_pipelined_roles(recipient integer, role regrole)
RETURNS text AS 'MODULE_PATHNAME' LANGUAGE C STRICT;

CREATE FUNCTION imsg_test_send_pipelined_noflush(recipient integer, n integer)
RETURNS text AS 'MODULE_PATHNAME' LANGUAGE C STRICT;

CREATE FUNCTION imsg_test_reserve_hold(recipient integer, ms integer)
RETURNS text AS 'MODULE_PATHNAME' LANGUAGE C STRICT;

CREATE FUNCTION imsg_test_send_pipelined_timeout(recipient integer, n integer,
                                                 len integer, timeout_ms integer)
RETURNS text AS 'MODULE_PATHNAME' LANGUAGE C STRICT;
