\echo Use "CREATE EXTENSION imessages_bench" to load this file. \quit

-- n messages of size bytes from this backend to a background worker, in a
-- C loop, pipelined; returns messages per second.  transport: 'imessages'
-- or 'shm_mq' (a 1 MB ring in a DSM segment).
CREATE FUNCTION imsg_bench_c(transport text, n integer, size integer)
RETURNS float8 AS 'MODULE_PATHNAME' LANGUAGE C STRICT;

-- k round trips of a bare latch ping-pong with a background worker:
-- {p50, min, max} in microseconds, the physical floor of any wake-up.
CREATE FUNCTION imsg_bench_latch_pingpong(k integer)
RETURNS float8[] AS 'MODULE_PATHNAME' LANGUAGE C STRICT;

-- k round trips through imessages from C: this backend to a worker and back
CREATE FUNCTION imsg_bench_c_pingpong(k integer)
RETURNS float8[] AS 'MODULE_PATHNAME' LANGUAGE C STRICT;
