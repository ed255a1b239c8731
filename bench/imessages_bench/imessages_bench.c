/*-------------------------------------------------------------------------
 *
 * imessages_bench.c
 *	  Benchmark helpers for bench/run.sh: the C path of imessages against
 *	  core's shm_mq, and a bare latch ping-pong as the floor of any wake-up.
 *
 * Each function starts one background worker from this library, connected
 * to nothing, and talks to it: through imessages (the worker opens its
 * mailbox and says READY), through an shm_mq in a DSM segment, or through
 * two latches and two counters in a DSM segment.
 *
 * Copyright (c) 2026, imessages developers
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <time.h>

#include "catalog/pg_type.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "port/atomics.h"
#include "postmaster/bgworker.h"
#include "storage/dsm.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "storage/proc.h"
#include "storage/shm_mq.h"
#include "utils/array.h"
#include "utils/builtins.h"

#include "imessages.h"

PG_MODULE_MAGIC;

PG_FUNCTION_INFO_V1(imsg_bench_c);
PG_FUNCTION_INFO_V1(imsg_bench_latch_pingpong);
PG_FUNCTION_INFO_V1(imsg_bench_c_pingpong);

PGDLLEXPORT void imsg_bench_worker(Datum arg);

#define SHM_MQ_RING		(1024 * 1024)

#define T_READY		1
#define T_DATA		2
#define T_END		3
#define T_DONE		4
#define T_PING		5
#define T_PONG		6

enum
{
	MODE_IMSG_SINK = 1,
	MODE_SHM_MQ_SINK,
	MODE_LATCH_ECHO,
	MODE_IMSG_ECHO
};

/* DSM header shared by launcher and worker (shm_mq and latch modes). */
typedef struct BenchShared
{
	int			launcher_procno;
	int			worker_procno;
	pg_atomic_uint64 request;
	pg_atomic_uint64 ack;
	pg_atomic_uint32 done;
	pg_atomic_uint32 ready;
} BenchShared;

static double
now_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1e6 + ts.tv_nsec / 1e3;
}

static void
start_worker(int mode, dsm_handle handle)
{
	BackgroundWorker w;
	BackgroundWorkerHandle *h;
	pid_t		pid;

	memset(&w, 0, sizeof(w));
	w.bgw_flags = BGWORKER_SHMEM_ACCESS;
	w.bgw_start_time = BgWorkerStart_ConsistentState;
	w.bgw_restart_time = BGW_NEVER_RESTART;
	strlcpy(w.bgw_library_name, "imessages_bench", BGW_MAXLEN);
	strlcpy(w.bgw_function_name, "imsg_bench_worker", BGW_MAXLEN);
	strlcpy(w.bgw_name, "imessages bench worker", BGW_MAXLEN);
	strlcpy(w.bgw_type, "imessages bench worker", BGW_MAXLEN);
	w.bgw_main_arg = Int64GetDatum(((int64) mode << 32) | handle);
	w.bgw_notify_pid = MyProcPid;
	if (!RegisterDynamicBackgroundWorker(&w, &h))
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_RESOURCES),
				 errmsg("could not start the bench worker"),
				 errhint("Raise max_worker_processes.")));
	if (WaitForBackgroundWorkerStartup(h, &pid) != BGWH_STARTED)
		elog(ERROR, "bench worker did not start");
}

/* Wait for a message of one type; returns its sender. */
static int
wait_for_type(int32 type)
{
	ImsgMessage *msg;
	int			sender;

	if (ImsgReceiveMatching(60000, ImsgMatchType, &type, &msg) != IMSG_OK)
		elog(ERROR, "bench: no message of type %d within 60 s", type);
	sender = ImsgMessageSender(msg);
	ImsgConsume(msg);
	return sender;
}

static double
bench_imessages(int n, int size)
{
	char	   *data = palloc0(Max(size, 1));
	int			worker;
	double		t0;
	int			i;

	ImsgOpenMailbox();
	start_worker(MODE_IMSG_SINK, MyProcPid);
	worker = wait_for_type(T_READY);

	/* pipelined, as the shm_mq loop (force_flush = false), then flushed */
	t0 = now_us();
	for (i = 0; i < n; i++)
	{
		if (ImsgSendPipelined(worker, T_DATA, data, size, IMSG_WAIT_FOREVER, NULL) != IMSG_OK)
			elog(ERROR, "bench: send failed");
	}
	if (ImsgSend(worker, T_END, NULL, 0, IMSG_WAIT_FOREVER, NULL) != IMSG_OK)
		elog(ERROR, "bench: send failed");
	(void) wait_for_type(T_DONE);
	return n / ((now_us() - t0) / 1e6);
}

static double
bench_shm_mq(int n, int size)
{
	dsm_segment *seg = dsm_create(MAXALIGN(sizeof(BenchShared)) + SHM_MQ_RING, 0);
	BenchShared *shared = dsm_segment_address(seg);
	shm_mq	   *mq;
	shm_mq_handle *mqh;
	char	   *data = palloc0(Max(size, 1));
	double		t0;
	int			i;

	memset(shared, 0, sizeof(BenchShared));
	shared->launcher_procno = MyProc->pgprocno;
	pg_atomic_init_u32(&shared->done, 0);
	mq = shm_mq_create((char *) shared + MAXALIGN(sizeof(BenchShared)), SHM_MQ_RING);
	shm_mq_set_sender(mq, MyProc);
	mqh = shm_mq_attach(mq, seg, NULL);
	start_worker(MODE_SHM_MQ_SINK, dsm_segment_handle(seg));
	if (shm_mq_wait_for_attach(mqh) != SHM_MQ_SUCCESS)
		elog(ERROR, "bench: worker did not attach");

	t0 = now_us();
	for (i = 0; i < n; i++)
		if (shm_mq_send(mqh, size, data, false, false) != SHM_MQ_SUCCESS)
			elog(ERROR, "bench: shm_mq_send failed");
	/* a zero-length message ends the stream, and flushes it */
	if (shm_mq_send(mqh, 0, data, false, true) != SHM_MQ_SUCCESS)
		elog(ERROR, "bench: shm_mq_send failed");
	while (pg_atomic_read_u32(&shared->done) == 0)
	{
		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_EXIT_ON_PM_DEATH, -1, PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
		CHECK_FOR_INTERRUPTS();
	}
	t0 = n / ((now_us() - t0) / 1e6);
	shm_mq_detach(mqh);
	dsm_detach(seg);
	return t0;
}

Datum
imsg_bench_c(PG_FUNCTION_ARGS)
{
	char	   *transport = text_to_cstring(PG_GETARG_TEXT_PP(0));
	int			n = PG_GETARG_INT32(1);
	int			size = PG_GETARG_INT32(2);

	if (strcmp(transport, "imessages") == 0)
		PG_RETURN_FLOAT8(bench_imessages(n, size));
	if (strcmp(transport, "shm_mq") == 0)
		PG_RETURN_FLOAT8(bench_shm_mq(n, size));
	elog(ERROR, "unknown transport \"%s\"", transport);
	PG_RETURN_NULL();
}

static int
cmp_double(const void *a, const void *b)
{
	double		x = *(const double *) a;
	double		y = *(const double *) b;

	return (x > y) - (x < y);
}

static Datum
stats_array(double *v, int k)
{
	Datum		d[3];

	qsort(v, k, sizeof(double), cmp_double);
	d[0] = Float8GetDatum(v[k / 2]);
	d[1] = Float8GetDatum(v[0]);
	d[2] = Float8GetDatum(v[k - 1]);
	return PointerGetDatum(construct_array(d, 3, FLOAT8OID, 8, FLOAT8PASSBYVAL, 'd'));
}

Datum
imsg_bench_latch_pingpong(PG_FUNCTION_ARGS)
{
	int			k = Max(PG_GETARG_INT32(0), 1);
	dsm_segment *seg = dsm_create(sizeof(BenchShared), 0);
	BenchShared *shared = dsm_segment_address(seg);
	double	   *v = palloc(sizeof(double) * k);
	int			i;
	Datum		result;

	memset(shared, 0, sizeof(BenchShared));
	shared->launcher_procno = MyProc->pgprocno;
	pg_atomic_init_u64(&shared->request, 0);
	pg_atomic_init_u64(&shared->ack, 0);
	pg_atomic_init_u32(&shared->done, 0);
	pg_atomic_init_u32(&shared->ready, 0);
	start_worker(MODE_LATCH_ECHO, dsm_segment_handle(seg));
	while (pg_atomic_read_u32(&shared->ready) == 0)
	{
		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH, 10, PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
		CHECK_FOR_INTERRUPTS();
	}

	for (i = -20; i < k; i++)
	{
		uint64		want;
		double		t0 = now_us();

		want = pg_atomic_add_fetch_u64(&shared->request, 1);
		SetLatch(&GetPGProcByNumber(shared->worker_procno)->procLatch);
		for (;;)
		{
			ResetLatch(MyLatch);
			if (pg_atomic_read_u64(&shared->ack) == want)
				break;
			(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_EXIT_ON_PM_DEATH, -1, PG_WAIT_EXTENSION);
			CHECK_FOR_INTERRUPTS();
		}
		if (i >= 0)
			v[i] = now_us() - t0;
	}
	pg_atomic_write_u32(&shared->done, 1);
	SetLatch(&GetPGProcByNumber(shared->worker_procno)->procLatch);
	result = stats_array(v, k);
	dsm_detach(seg);
	PG_RETURN_DATUM(result);
}

Datum
imsg_bench_c_pingpong(PG_FUNCTION_ARGS)
{
	int			k = Max(PG_GETARG_INT32(0), 1);
	double	   *v = palloc(sizeof(double) * k);
	int			worker;
	int			i;

	ImsgOpenMailbox();
	start_worker(MODE_IMSG_ECHO, MyProcPid);
	worker = wait_for_type(T_READY);
	for (i = -20; i < k; i++)
	{
		double		t0 = now_us();

		if (ImsgSend(worker, T_PING, "x", 1, IMSG_WAIT_FOREVER, NULL) != IMSG_OK)
			elog(ERROR, "bench: send failed");
		(void) wait_for_type(T_PONG);
		if (i >= 0)
			v[i] = now_us() - t0;
	}
	(void) ImsgSend(worker, T_END, NULL, 0, IMSG_WAIT_FOREVER, NULL);
	PG_RETURN_DATUM(stats_array(v, k));
}

/* ------------------------------------------------------------------ */

static void
worker_imessages(int launcher, bool echo)
{
	ImsgMessage *msg;

	if (ImsgSend(launcher, T_READY, NULL, 0, IMSG_WAIT_FOREVER, NULL) != IMSG_OK)
		proc_exit(0);
	for (;;)
	{
		int32		type;

		if (ImsgReceive(IMSG_WAIT_FOREVER, &msg) != IMSG_OK)
			proc_exit(1);
		type = ImsgMessageType(msg);
		ImsgRelease(msg);
		if (type == T_END)
			break;
		if (echo && type == T_PING)
			(void) ImsgSend(launcher, T_PONG, "x", 1, IMSG_WAIT_FOREVER, NULL);
	}
	if (!echo)
		(void) ImsgSend(launcher, T_DONE, NULL, 0, IMSG_WAIT_FOREVER, NULL);
}

static void
worker_shm_mq(dsm_segment *seg)
{
	BenchShared *shared = dsm_segment_address(seg);
	shm_mq	   *mq = (shm_mq *) ((char *) shared + MAXALIGN(sizeof(BenchShared)));
	shm_mq_handle *mqh;

	shm_mq_set_receiver(mq, MyProc);
	mqh = shm_mq_attach(mq, seg, NULL);
	for (;;)
	{
		Size		nbytes;
		void	   *data;

		if (shm_mq_receive(mqh, &nbytes, &data, false) != SHM_MQ_SUCCESS)
			break;
		if (nbytes == 0)
			break;
	}
	pg_atomic_write_u32(&shared->done, 1);
	SetLatch(&GetPGProcByNumber(shared->launcher_procno)->procLatch);
}

static void
worker_latch(dsm_segment *seg)
{
	BenchShared *shared = dsm_segment_address(seg);
	PGPROC	   *launcher = GetPGProcByNumber(shared->launcher_procno);

	shared->worker_procno = MyProc->pgprocno;
	pg_write_barrier();
	pg_atomic_write_u32(&shared->ready, 1);
	SetLatch(&launcher->procLatch);
	while (pg_atomic_read_u32(&shared->done) == 0)
	{
		uint64		req;

		ResetLatch(MyLatch);
		req = pg_atomic_read_u64(&shared->request);
		if (req != pg_atomic_read_u64(&shared->ack))
		{
			pg_atomic_write_u64(&shared->ack, req);
			SetLatch(&launcher->procLatch);
			continue;
		}
		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_EXIT_ON_PM_DEATH, -1, PG_WAIT_EXTENSION);
	}
}

void
imsg_bench_worker(Datum arg)
{
	int64		a = DatumGetInt64(arg);
	int			mode = (int) (a >> 32);
	uint32		param = (uint32) (a & 0xFFFFFFFF);
	dsm_segment *seg = NULL;

	BackgroundWorkerUnblockSignals();
	if (mode == MODE_SHM_MQ_SINK || mode == MODE_LATCH_ECHO)
	{
		seg = dsm_attach(param);
		if (seg == NULL)
			proc_exit(1);
	}
	switch (mode)
	{
		case MODE_IMSG_SINK:
			worker_imessages((int) param, false);
			break;
		case MODE_IMSG_ECHO:
			worker_imessages((int) param, true);
			break;
		case MODE_SHM_MQ_SINK:
			worker_shm_mq(seg);
			break;
		case MODE_LATCH_ECHO:
			worker_latch(seg);
			break;
	}
	proc_exit(0);
}
