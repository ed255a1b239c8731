/*
 * pgclient.c - libpq client for benchmarking PostgreSQL LISTEN/NOTIFY.
 *
 * This is the baseline that the imessages extension is compared against:
 * it measures plain LISTEN/NOTIFY delivery with nothing but libpq.
 *
 * Usage:
 *   pgclient notify-batch CONNINFO CHANNEL N
 *       LISTEN on CHANNEL, print "READY", then wait for N notifications on
 *       that channel.  Prints "LAST_US <t> COUNT <n>", where t is the
 *       wall-clock time (gettimeofday, microseconds since the Unix epoch)
 *       at which the N-th notification was received.
 *
 *   pgclient notify-pingpong CONNINFO K PAYLOAD_BYTES
 *       Two connections, A (LISTEN pong) and B (LISTEN ping).  After 20
 *       warm-up round trips, time K round trips of
 *       A: pg_notify('ping', payload) -> B receives -> B: pg_notify('pong',
 *       payload) -> A receives.  Prints
 *       "P50_US <p50> MIN_US <min> MAX_US <max> N <K>".
 *
 * Results go to stdout as one line, exit status 0.  On any error a message
 * goes to stderr and the exit status is 1.  Waiting more than 120 s without
 * progress is an error.
 *
 * Build: make -f bench/pgclient.mk   (from the repository root)
 */

#include <errno.h>
#include <limits.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>

#include <libpq-fe.h>

#define TIMEOUT_MS       120000 /* max wait without progress */
#define WARMUP_ROUNDS    20     /* unmeasured ping-pong round trips */

/* Print an error message to stderr and exit 1. */
static void
die(const char *fmt, ...)
{
    va_list ap;

    fputs("pgclient: ", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    exit(1);
}

/* Parse a non-negative decimal integer argument, or die. */
static long
parse_count(const char *what, const char *s, long min)
{
    char   *end;
    long    v;

    errno = 0;
    v = strtol(s, &end, 10);
    if (errno != 0 || end == s || *end != '\0' || v < min || v > INT_MAX)
        die("invalid %s: \"%s\" (expected an integer >= %ld)", what, s, min);
    return v;
}

/* Monotonic clock in microseconds. */
static double
mono_us(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double) ts.tv_sec * 1e6 + (double) ts.tv_nsec / 1e3;
}

/* Wall-clock time in microseconds since the Unix epoch. */
static long long
wall_us(void)
{
    struct timeval tv;

    gettimeofday(&tv, NULL);
    return (long long) tv.tv_sec * 1000000LL + tv.tv_usec;
}

/* Open a connection, or die. */
static PGconn *
connect_db(const char *conninfo)
{
    PGconn *conn = PQconnectdb(conninfo);

    if (conn == NULL)
        die("out of memory while connecting");
    if (PQstatus(conn) != CONNECTION_OK)
        die("connection failed: %s", PQerrorMessage(conn));
    return conn;
}

/* Run a command that returns no rows, or die. */
static void
exec_command(PGconn *conn, const char *sql)
{
    PGresult *res = PQexec(conn, sql);

    if (PQresultStatus(res) != PGRES_COMMAND_OK)
        die("\"%s\" failed: %s", sql, PQerrorMessage(conn));
    PQclear(res);
}

/* LISTEN on a channel; the name is quoted as an identifier. */
static void
listen_on(PGconn *conn, const char *channel)
{
    char   *ident = PQescapeIdentifier(conn, channel, strlen(channel));
    char   *sql;

    if (ident == NULL)
        die("cannot quote channel name: %s", PQerrorMessage(conn));
    sql = malloc(strlen(ident) + sizeof("LISTEN "));
    if (sql == NULL)
        die("out of memory");
    strcpy(sql, "LISTEN ");
    strcat(sql, ident);
    exec_command(conn, sql);
    free(sql);
    PQfreemem(ident);
}

/*
 * Block until the connection's socket is readable, then read what is
 * available into libpq's buffer.  *last_progress (monotonic us) is reset
 * whenever data arrives; dies after TIMEOUT_MS without any.
 */
static void
wait_input(PGconn *conn, double *last_progress)
{
    struct pollfd pfd;
    int     remaining;
    int     rc;

    pfd.fd = PQsocket(conn);
    if (pfd.fd < 0)
        die("connection has no socket: %s", PQerrorMessage(conn));
    pfd.events = POLLIN;
    pfd.revents = 0;

    remaining = TIMEOUT_MS - (int) ((mono_us() - *last_progress) / 1000.0);
    if (remaining <= 0)
        die("timed out after %d s without progress", TIMEOUT_MS / 1000);

    rc = poll(&pfd, 1, remaining);
    if (rc < 0)
    {
        if (errno == EINTR)
            return;
        die("poll failed: %s", strerror(errno));
    }
    if (rc == 0)
        die("timed out after %d s without progress", TIMEOUT_MS / 1000);

    if (!PQconsumeInput(conn))
        die("connection lost: %s", PQerrorMessage(conn));
    *last_progress = mono_us();
}

/* Wait until one notification on `channel` has arrived on `conn`. */
static void
wait_notify(PGconn *conn, const char *channel)
{
    double  last_progress = mono_us();

    for (;;)
    {
        PGnotify *n;

        /* Drain what libpq already has; it may have arrived during a query. */
        while ((n = PQnotifies(conn)) != NULL)
        {
            int     match = strcmp(n->relname, channel) == 0;

            PQfreemem(n);
            if (match)
                return;
        }
        wait_input(conn, &last_progress);
    }
}

/* Execute SELECT pg_notify(channel, payload) with payload as parameter. */
static void
send_notify(PGconn *conn, const char *sql, const char *payload)
{
    const char *params[1] = {payload};
    PGresult   *res;

    res = PQexecParams(conn, sql, 1, NULL, params, NULL, NULL, 0);
    if (PQresultStatus(res) != PGRES_TUPLES_OK)
        die("\"%s\" failed: %s", sql, PQerrorMessage(conn));
    PQclear(res);
}

/* notify-batch: count N notifications on CHANNEL, report time of the last. */
static void
cmd_notify_batch(const char *conninfo, const char *channel, long target)
{
    PGconn     *conn = connect_db(conninfo);
    long        count = 0;
    long long   last_us = 0;
    double      last_progress;

    listen_on(conn, channel);
    printf("READY\n");
    fflush(stdout);

    last_progress = mono_us();
    while (count < target)
    {
        PGnotify *n;

        while (count < target && (n = PQnotifies(conn)) != NULL)
        {
            if (strcmp(n->relname, channel) == 0 && ++count == target)
                last_us = wall_us();
            PQfreemem(n);
        }
        if (count < target)
            wait_input(conn, &last_progress);
    }

    printf("LAST_US %lld COUNT %ld\n", last_us, count);
    PQfinish(conn);
}

/* qsort comparator for doubles. */
static int
cmp_double(const void *a, const void *b)
{
    double  x = *(const double *) a;
    double  y = *(const double *) b;

    return (x > y) - (x < y);
}

/* notify-pingpong: time K ping/pong round trips between two connections. */
static void
cmd_notify_pingpong(const char *conninfo, long rounds, long payload_bytes)
{
    static const char ping_sql[] = "SELECT pg_notify('ping', $1)";
    static const char pong_sql[] = "SELECT pg_notify('pong', $1)";
    PGconn     *a = connect_db(conninfo);
    PGconn     *b = connect_db(conninfo);
    char       *payload;
    double     *samples;
    double      p50;
    long        i;

    listen_on(a, "pong");
    listen_on(b, "ping");

    payload = malloc((size_t) payload_bytes + 1);
    samples = malloc((size_t) rounds * sizeof(double));
    if (payload == NULL || samples == NULL)
        die("out of memory");
    memset(payload, 'x', (size_t) payload_bytes);
    payload[payload_bytes] = '\0';

    for (i = -WARMUP_ROUNDS; i < rounds; i++)
    {
        double  t0 = mono_us();

        send_notify(a, ping_sql, payload);
        wait_notify(b, "ping");
        send_notify(b, pong_sql, payload);
        wait_notify(a, "pong");

        if (i >= 0)
            samples[i] = mono_us() - t0;
    }

    /* Median (mean of the two middle samples when K is even). */
    qsort(samples, (size_t) rounds, sizeof(double), cmp_double);
    if (rounds % 2)
        p50 = samples[rounds / 2];
    else
        p50 = (samples[rounds / 2 - 1] + samples[rounds / 2]) / 2.0;

    printf("P50_US %.1f MIN_US %.1f MAX_US %.1f N %ld\n",
           p50, samples[0], samples[rounds - 1], rounds);

    free(samples);
    free(payload);
    PQfinish(a);
    PQfinish(b);
}

static void
usage(void)
{
    fprintf(stderr,
            "usage: pgclient notify-batch CONNINFO CHANNEL N\n"
            "       pgclient notify-pingpong CONNINFO K PAYLOAD_BYTES\n");
    exit(1);
}

int
main(int argc, char **argv)
{
    if (argc == 5 && strcmp(argv[1], "notify-batch") == 0)
        cmd_notify_batch(argv[2], argv[3], parse_count("N", argv[4], 1));
    else if (argc == 5 && strcmp(argv[1], "notify-pingpong") == 0)
        cmd_notify_pingpong(argv[2], parse_count("K", argv[3], 1),
                            parse_count("PAYLOAD_BYTES", argv[4], 0));
    else
        usage();

    if (fflush(stdout) != 0 || ferror(stdout))
        die("error writing to stdout");
    return 0;
}
