/*-------------------------------------------------------------------------
 *
 * helpers.c
 *	  Helper backends: a pool of dynamic background workers run by the
 *	  manager, and the helpers' own main loop.
 *
 * The seed's manager asked the postmaster for helper backends through
 * imessages and so made the postmaster touch shared memory.  Here the
 * manager registers each helper with RegisterDynamicBackgroundWorker and
 * bgw_notify_pid = its own pid: the postmaster signals it when a helper
 * starts or exits, which sets its latch, and GetBackgroundWorkerPid tells
 * which.  The exit status comes from the helper itself: its on_shmem_exit
 * callback records proc_exit's code in its slot (a helper killed by a
 * signal makes the postmaster reinitialize everything anyway).  A helper
 * that exits with 0 (SIGTERM, or told to stop) has "exited"; anything else
 * has "crashed", and is replaced after a back-off that doubles with each
 * consecutive crash.
 *
 * The pool is kept between imessages.min_helpers and imessages.max_helpers,
 * and never beyond what max_worker_processes leaves besides the manager.
 * Manager and helpers talk only through imessages: jobs go to a helper's
 * mailbox, results come back to the manager's.
 *
 * Copyright (c) 2026, imessages developers
 *
 * IDENTIFICATION
 *	  src/helpers.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/transam.h"
#include "access/xact.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "lib/stringinfo.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "storage/proc.h"
#include "utils/array.h"
#include "utils/fmgrprotos.h"
#include "utils/guc.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"

#include "replication_int.h"
#include "changeset_int.h"
#include "mailbox_large.h"

#define HELPER_RESTART_DELAY_MS		100		/* after a clean exit */
#define HELPER_BACKOFF_MIN_MS		1000	/* after the first crash */
#define HELPER_BACKOFF_MAX_MS		30000
#define HELPER_REFUSED_RETRY_MS		5000
#define HELPER_STABLE_MS			10000	/* running this long resets back-off */
#define IMSG_APPLY_ATTEMPTS			5	/* of a change set that lost a deadlock */

/* The manager's private view of each slot. */
typedef struct HelperLocal
{
	BackgroundWorkerHandle *handle; /* NULL: slot not ours */
	bool		started;		/* postmaster reported it running */
	bool		ready;			/* sent IMSG_T_HELPER_READY */
	bool		applying;		/* has a remote change set (manager_apply.c) */
	int			pid;
	TimestampTz registered_at;
} HelperLocal;

static HelperLocal *helpers = NULL;
static int	num_slots = 0;
static int	consecutive_crashes = 0;
static TimestampTz next_start_at = 0;
static bool refusal_logged = false;
static int	logged_min_helpers = -1;
static int	next_pick = 0;

static inline ImsgHelperSlot *
helper_slot(int i)
{
	return &ImsgManagerState->helpers[i];
}

/* How many helpers may run: imessages.max_helpers, if the workers exist. */
static int
helpers_allowed(void)
{
	return Max(0, Min(Min(imsg_max_helpers, max_worker_processes - 1), num_slots));
}

static int
helpers_active(void)
{
	int			n = 0;
	int			i;

	for (i = 0; i < num_slots; i++)
		if (helpers[i].handle != NULL)
			n++;
	return n;
}

/*
 * Called once by the manager.  Helpers of a previous manager are disowned:
 * bumping their slot's generation makes them exit.
 */
void
imsg_helpers_init(void)
{
	int			i;

	num_slots = ImsgManagerState->num_helper_slots;
	helpers = MemoryContextAllocZero(TopMemoryContext, num_slots * sizeof(HelperLocal));
	for (i = 0; i < num_slots; i++)
	{
		ImsgHelperSlot *slot = helper_slot(i);

		SpinLockAcquire(&slot->mutex);
		slot->generation++;
		slot->state = IMSG_HELPER_FREE;
		slot->pid = 0;
		slot->applying = 0;
		SpinLockRelease(&slot->mutex);
	}
}

static long
backoff_ms(int crashes)
{
	long		ms = HELPER_BACKOFF_MIN_MS;

	while (--crashes > 0 && ms < HELPER_BACKOFF_MAX_MS)
		ms *= 2;
	return Min(ms, HELPER_BACKOFF_MAX_MS);
}

/* Register one helper with the postmaster. */
static void
start_helper(void)
{
	BackgroundWorker worker;
	BackgroundWorkerHandle *handle;
	ImsgHelperSlot *slot;
	uint32		generation;
	MemoryContext old_context;
	bool		registered;
	int			i;

	for (i = 0; i < num_slots; i++)
		if (helpers[i].handle == NULL)
			break;
	if (i == num_slots)
		return;
	slot = helper_slot(i);

	SpinLockAcquire(&slot->mutex);
	generation = ++slot->generation;
	slot->state = IMSG_HELPER_STARTING;
	slot->pid = 0;
	slot->applying = 0;
	slot->started_at = 0;
	slot->jobs_done = 0;
	slot->exit_recorded = false;
	slot->exit_code = 0;
	SpinLockRelease(&slot->mutex);

	memset(&worker, 0, sizeof(worker));
	worker.bgw_flags = BGWORKER_SHMEM_ACCESS | BGWORKER_BACKEND_DATABASE_CONNECTION;
	worker.bgw_start_time = BgWorkerStart_RecoveryFinished;
	worker.bgw_restart_time = BGW_NEVER_RESTART;
	strlcpy(worker.bgw_library_name, "imessages", BGW_MAXLEN);
	strlcpy(worker.bgw_function_name, "imsg_helper_main", BGW_MAXLEN);
	snprintf(worker.bgw_name, BGW_MAXLEN, "imessages helper %d", i);
	strlcpy(worker.bgw_type, "imessages helper", BGW_MAXLEN);
	worker.bgw_main_arg = Int64GetDatum(((int64) generation << 32) | i);
	worker.bgw_notify_pid = MyProcPid;

	/*
	 * The handle is palloc'd in the current context, and the manager's loop
	 * runs in one that is reset every iteration: keep it in TopMemoryContext.
	 */
	old_context = MemoryContextSwitchTo(TopMemoryContext);
	registered = RegisterDynamicBackgroundWorker(&worker, &handle);
	MemoryContextSwitchTo(old_context);
	if (!registered)
	{
		SpinLockAcquire(&slot->mutex);
		slot->state = IMSG_HELPER_FREE;
		SpinLockRelease(&slot->mutex);
		if (!refusal_logged)
			ereport(LOG,
					(errmsg("imessages manager could not start a helper: no background worker slot is free"),
					 errdetail("%d helpers are running; imessages.min_helpers is %d.",
							   helpers_active(), imsg_min_helpers),
					 errhint("Raise max_worker_processes (now %d), or lower imessages.min_helpers.",
							 max_worker_processes)));
		refusal_logged = true;
		next_start_at = TimestampTzPlusMilliseconds(GetCurrentTimestamp(),
													HELPER_REFUSED_RETRY_MS);
		return;
	}
	refusal_logged = false;
	helpers[i].handle = handle;
	helpers[i].started = false;
	helpers[i].ready = false;
	helpers[i].applying = false;
	helpers[i].pid = 0;
	helpers[i].registered_at = GetCurrentTimestamp();
}

/* The postmaster says helper i is gone: count it, log it, free the slot. */
static void
reap_helper(int i)
{
	ImsgHelperSlot *slot = helper_slot(i);
	HelperLocal *h = &helpers[i];
	bool		recorded;
	int			code;
	int			pid;
	TimestampTz now = GetCurrentTimestamp();
	bool		crashed;

	SpinLockAcquire(&slot->mutex);
	recorded = slot->exit_recorded;
	code = slot->exit_code;
	pid = slot->pid ? slot->pid : h->pid;
	slot->generation++;
	slot->state = IMSG_HELPER_FREE;
	slot->pid = 0;
	slot->applying = 0;
	SpinLockRelease(&slot->mutex);

	crashed = !(recorded && code == 0);
	SpinLockAcquire(&ImsgManagerState->mutex);
	if (crashed)
		ImsgManagerState->helpers_crashed++;
	else
		ImsgManagerState->helpers_exited++;
	SpinLockRelease(&ImsgManagerState->mutex);

	if (!crashed)
	{
		ereport(LOG,
				(errmsg("imessages helper (PID %d) exited", pid)));
		next_start_at = TimestampTzPlusMilliseconds(now, HELPER_RESTART_DELAY_MS);
	}
	else
	{
		if (h->started && TimestampDifferenceExceeds(h->registered_at, now, HELPER_STABLE_MS))
			consecutive_crashes = 0;
		consecutive_crashes++;
		if (recorded)
			ereport(LOG,
					(errmsg("imessages helper (PID %d) crashed with exit status %d", pid, code),
					 errdetail("Restarting it in %ld ms.", backoff_ms(consecutive_crashes))));
		else
			ereport(LOG,
					(errmsg("imessages helper (PID %d) exited without reporting a status", pid),
					 errdetail("Restarting it in %ld ms.", backoff_ms(consecutive_crashes))));
		next_start_at = TimestampTzPlusMilliseconds(now, backoff_ms(consecutive_crashes));
	}

	pfree(h->handle);
	memset(h, 0, sizeof(HelperLocal));
}

/*
 * Look at every helper (the postmaster's notification set our latch, or
 * the timeout passed), then start or stop helpers to keep the pool within
 * bounds.  Called once per iteration of the manager's loop.
 */
void
imsg_helpers_check(void)
{
	int			allowed = helpers_allowed();
	int			active;
	int			i;

	for (i = 0; i < num_slots; i++)
	{
		HelperLocal *h = &helpers[i];
		pid_t		pid;

		if (h->handle == NULL)
			continue;
		switch (GetBackgroundWorkerPid(h->handle, &pid))
		{
			case BGWH_STARTED:
				if (!h->started)
				{
					h->started = true;
					h->pid = pid;
					SpinLockAcquire(&ImsgManagerState->mutex);
					ImsgManagerState->helpers_started++;
					SpinLockRelease(&ImsgManagerState->mutex);
				}
				break;
			case BGWH_NOT_YET_STARTED:
				break;
			case BGWH_STOPPED:
				reap_helper(i);
				break;
			case BGWH_POSTMASTER_DIED:
				proc_exit(1);
				break;
		}
	}

	if (imsg_min_helpers > allowed && imsg_min_helpers != logged_min_helpers)
	{
		ereport(LOG,
				(errmsg("imessages.min_helpers (%d) is more than the %d helpers allowed",
						imsg_min_helpers, allowed),
				 errhint("Raise imessages.max_helpers and max_worker_processes (now %d, and the manager needs one).",
						 max_worker_processes)));
		logged_min_helpers = imsg_min_helpers;
	}

	/* too many (max_helpers was lowered): stop the extra ones */
	active = 0;
	for (i = 0; i < num_slots; i++)
		if (helpers[i].ready)
			active++;
	for (i = num_slots - 1; i >= 0 && active > allowed; i--)
	{
		if (!helpers[i].ready)
			continue;
		TerminateBackgroundWorker(helpers[i].handle);
		helpers[i].ready = false;	/* no more jobs; reaped when it exits */
		active--;
	}

	/* too few: start one at a time, paced by next_start_at */
	if (helpers_active() < Min(imsg_min_helpers, allowed) &&
		GetCurrentTimestamp() >= next_start_at)
		start_helper();
}

/* Milliseconds until imsg_helpers_check has something to do; -1: never. */
long
imsg_helpers_next_timeout(void)
{
	long		ms;

	if (helpers_active() >= Min(imsg_min_helpers, helpers_allowed()))
		return -1;
	ms = TimestampDifferenceMilliseconds(GetCurrentTimestamp(), next_start_at);
	return Max(ms, 0) + 1;
}

/*
 * A ready helper, round robin (one that applies no change set, unless
 * 'applying_too'): its slot, and its pid and generation (if asked); -1 if
 * none.
 */
static int
pick(int *pid, uint32 *generation, bool applying_too)
{
	int			i;

	for (i = 0; i < num_slots; i++)
	{
		int			k = (next_pick + i) % num_slots;

		if (helpers[k].handle != NULL && helpers[k].ready &&
			(applying_too || !helpers[k].applying))
		{
			ImsgHelperSlot *hs = helper_slot(k);

			next_pick = k + 1;
			SpinLockAcquire(&hs->mutex);
			*pid = hs->pid;
			if (generation)
				*generation = hs->generation;
			SpinLockRelease(&hs->mutex);
			return k;
		}
	}
	return -1;
}

/*
 * A helper for a job: one that applies no change set if there is one (a
 * job queued behind a change set waits for it), else any; -1 if none is
 * ready yet (one is started if more may run).
 */
int
imsg_helper_pick(int *pid, uint32 *generation)
{
	int			k = pick(pid, generation, false);

	if (k < 0)
		k = pick(pid, generation, true);
	if (k < 0 && helpers_active() < helpers_allowed() &&
		GetCurrentTimestamp() >= next_start_at)
		start_helper();
	return k;
}

/*
 * A helper to apply a remote change set: one that applies none now (the
 * manager hands out several at once: manager_apply.c), starting another
 * if more may run; -1 if none is free.
 */
int
imsg_helper_pick_for_apply(int *pid)
{
	int			k = pick(pid, NULL, false);

	if (k < 0 && helpers_active() < helpers_allowed() &&
		GetCurrentTimestamp() >= next_start_at)
		start_helper();
	return k;
}

/* The manager handed helper 'slot' a change set, or it is done with it. */
void
imsg_helper_set_applying(int slot, bool applying)
{
	if (slot >= 0 && slot < num_slots)
		helpers[slot].applying = applying;
}

/* Helper 'slot' has opened its mailbox and takes jobs. */
void
imsg_helper_ready(int slot, int pid)
{
	if (slot < 0 || slot >= num_slots || helpers[slot].handle == NULL)
		return;
	helpers[slot].ready = true;
	helpers[slot].pid = pid;
}

void
imsg_helper_job_done(int slot)
{
	if (slot >= 0 && slot < num_slots && helpers[slot].handle != NULL &&
		helpers[slot].started)
		consecutive_crashes = 0;
}

/* Ask the postmaster to stop every helper (manager exit). */
void
imsg_helpers_stop_all(void)
{
	int			i;

	for (i = 0; i < num_slots && helpers != NULL; i++)
		if (helpers[i].handle != NULL)
			TerminateBackgroundWorker(helpers[i].handle);
}

/* Helpers running now, for imsg_manager_status(). */
int
imsg_helpers_running(void)
{
	int			n = 0;
	int			i;

	for (i = 0; i < ImsgManagerState->num_helper_slots; i++)
	{
		ImsgHelperSlot *slot = helper_slot(i);

		SpinLockAcquire(&slot->mutex);
		if (slot->state == IMSG_HELPER_IDLE || slot->state == IMSG_HELPER_BUSY)
			n++;
		SpinLockRelease(&slot->mutex);
	}
	return n;
}

/* ---------------------------------------------------------------------
 * The helper process
 * ---------------------------------------------------------------------
 */

static int	my_slot = -1;
static ImsgAssembler assembler;	/* remote change sets, from the manager */
static uint32 my_generation = 0;

/* Is our slot still ours (the manager did not give up on us)? */
static bool
helper_slot_is_mine(void)
{
	ImsgHelperSlot *slot = helper_slot(my_slot);
	bool		mine;

	SpinLockAcquire(&slot->mutex);
	mine = slot->generation == my_generation;
	SpinLockRelease(&slot->mutex);
	return mine;
}

static void
helper_set_state(ImsgHelperState state, bool job_done)
{
	ImsgHelperSlot *slot = helper_slot(my_slot);

	SpinLockAcquire(&slot->mutex);
	if (slot->generation == my_generation)
	{
		slot->state = state;
		if (job_done)
			slot->jobs_done++;
	}
	SpinLockRelease(&slot->mutex);
}

/* on_shmem_exit: tell the manager how we ended. */
static void
helper_record_exit(int code, Datum arg)
{
	ImsgHelperSlot *slot = helper_slot(my_slot);

	SpinLockAcquire(&slot->mutex);
	if (slot->generation == my_generation)
	{
		slot->exit_recorded = true;
		slot->exit_code = code;
		slot->applying = 0;
	}
	SpinLockRelease(&slot->mutex);
}

typedef void (*HelperJob) (ImsgWhole *msg);

static void
job_ping(ImsgWhole *msg)
{
	ImsgBuffer	in;
	ImsgBuffer	out;
	char		data[16];
	int32		origin;
	int64		ping_id;

	ImsgBufferInitReader(&in, msg->data, msg->len);
	origin = ImsgBufferGetInt32(&in);
	ping_id = ImsgBufferGetInt64(&in);

	ImsgBufferInitWriter(&out, data, sizeof(data));
	ImsgBufferPutInt32(&out, my_slot);
	ImsgBufferPutInt32(&out, origin);
	ImsgBufferPutInt64(&out, ping_id);
	(void) ImsgSend(IMSG_MANAGER, IMSG_T_JOB_DONE, out.data, out.len, 0, NULL);
}

/*
 * Note a remote change set as applied, for certification (certify.c): after
 * its rows are written and locked, just before its transaction commits.  A
 * local transaction that changed one of those rows first holds the row
 * lock, so we cannot get here before it ends; one that changes them later
 * sees our version.
 */
static void
note_applied(const char *origin, int32 origin_pid, uint64 counter)
{
	ImsgManagerShared *st = ImsgManagerState;
	int			i;

	/*
	 * One entry per origin incarnation (node and manager pid): the rows an
	 * earlier manager of that node wrote keep their applied counter.  When
	 * the table is full, a new incarnation takes the place of an older one
	 * of the same node.
	 */
	SpinLockAcquire(&st->mutex);
	for (i = 0; i < st->num_seen; i++)
		if (strcmp(st->seen[i].node, origin) == 0 && st->seen[i].pid == origin_pid)
			break;
	if (i == st->num_seen && i == IMSG_MAX_GROUP_MEMBERS)
		for (i = 0; i < st->num_seen; i++)
			if (strcmp(st->seen[i].node, origin) == 0)
				break;
	if (i == st->num_seen && i < IMSG_MAX_GROUP_MEMBERS)
		st->num_seen++;
	if (i < IMSG_MAX_GROUP_MEMBERS)
	{
		strlcpy(st->seen[i].node, origin, NAMEDATALEN);
		st->seen[i].pid = origin_pid;
		st->seen[i].counter = counter;
	}
	SpinLockRelease(&st->mutex);
}
/*
 * May the change set at 'seq' be applied, in the current transaction?
 * imsg_state's applied position moves to it, under the row's lock, unless
 * it is there already: then the change set was applied before (a catch-up
 * after a crash reads it again) and must not be applied twice.  The row
 * commits with the change set's rows, so a crash never loses nor repeats
 * one.
 */
/* Is position 'seq' in imsg_state's applied position already? */
static bool
position_applied(uint64 seq)
{
	static SPIPlanPtr plan = NULL;
	bool		isnull;
	Datum		d;

	if (plan == NULL)
	{
		plan = SPI_prepare(psprintf("SELECT applied_position FROM %s", imsg_state_table()), 0, NULL);
		if (plan == NULL)
			elog(ERROR, "imessages: could not prepare the read of imsg_state: %s",
				 SPI_result_code_string(SPI_result));
		SPI_keepplan(plan);
	}
	if (SPI_execute_plan(plan, NULL, NULL, true, 1) != SPI_OK_SELECT || SPI_processed != 1)
		ereport(ERROR,
				(errcode(ERRCODE_DATA_CORRUPTED),
				 errmsg("table %s must have exactly one row", imsg_state_table())));
	d = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);
	return !isnull && (uint64) DatumGetInt64(d) >= seq;
}

static bool
claim_position(uint64 seq)
{
	static SPIPlanPtr plan = NULL;
	Datum		arg = Int64GetDatum((int64) seq);
	int			rc;

	if (plan == NULL)
	{
		char	   *sql = psprintf("UPDATE %s SET applied_position = $1 WHERE applied_position < $1",
								   imsg_state_table());
		Oid			argtype = INT8OID;

		plan = SPI_prepare(sql, 1, &argtype);
		if (plan == NULL)
			elog(ERROR, "imessages: could not prepare the update of imsg_state: %s",
				 SPI_result_code_string(SPI_result));
		SPI_keepplan(plan);
	}
	rc = SPI_execute_plan(plan, &arg, NULL, false, 0);
	if (rc != SPI_OK_UPDATE)
		elog(ERROR, "imessages: could not update imsg_state: %s", SPI_result_code_string(rc));
	return SPI_processed == 1;
}

/*
 * Did this node's own transaction 'full_xid' commit here?  A change set of
 * ours comes to a helper only in a catch-up (the change-set log holds
 * everything the group delivered) or when its transaction failed after it
 * was ordered: applied only if it did not commit here.  An xid this server
 * never assigned (another incarnation of the node) did not; one older than
 * the commit log did, long ago.
 */
bool
imsg_own_transaction_committed(uint64 full_xid)
{
	FullTransactionId fxid = FullTransactionIdFromU64(full_xid);
	TransactionId xid = XidFromFullTransactionId(fxid);

	if (!FullTransactionIdPrecedes(fxid, ReadNextFullTransactionId()))
		return false;
	if (TransactionIdPrecedes(xid, ShmemVariableCache->oldestClogXid))
		return true;
	return TransactionIdDidCommit(xid);
}

/*
 * Apply a change set delivered at position 'seq' in a transaction of our
 * own, recording 'seq' in imsg_state in the same transaction.  An error is
 * logged with the position and returned (false): the caller reports it,
 * never skips it silently.  *changes is what was applied, -1 if it was
 * applied before (or is ours and committed here).
 */
/*
 * Does process 'waiter' wait, directly or through others that wait, for a
 * lock this backend holds?  A walk of pg_blocking_pids() from it (which
 * takes every lock partition: for rare checks only), at most
 * IMSG_BLOCKER_WALK processes.
 */
#define IMSG_BLOCKER_WALK	64

bool
imsg_waits_for_me(int waiter)
{
	int			seen[IMSG_BLOCKER_WALK];
	int			nseen = 0;
	int			next = 0;

	seen[nseen++] = waiter;
	while (next < nseen)
	{
		ArrayType  *blockers;
		int32	   *pids;
		int			n;
		int			k;

		blockers = DatumGetArrayTypeP(DirectFunctionCall1(pg_blocking_pids,
														  Int32GetDatum(seen[next++])));
		pids = (int32 *) ARR_DATA_PTR(blockers);
		n = ArrayGetNItems(ARR_NDIM(blockers), ARR_DIMS(blockers));
		for (k = 0; k < n; k++)
		{
			int			j;

			if (pids[k] == MyProcPid)
				return true;
			for (j = 0; j < nseen && seen[j] != pids[k]; j++)
				;
			if (j == nseen && nseen < IMSG_BLOCKER_WALK)
				seen[nseen++] = pids[k];
		}
		pfree(blockers);
	}
	return false;
}

/*
 * Does a helper applying a position before 'seq' (other than this one)
 * wait for a lock we hold, directly or through a local transaction that
 * waits for us?  Asked by a helper waiting for its turn to commit (an
 * earlier one may need a unique index entry it holds, or a local
 * transaction may stand between them) and by a backend paused by flow
 * control (seq PG_UINT64_MAX: any helper): PostgreSQL's deadlock detector
 * does not see either wait, which is not a lock.  Only helpers whose wait
 * event says "lock" are looked at.
 */
bool
imsg_helper_waits_for_me(uint64 seq)
{
	int			i;

	for (i = 0; i < ImsgManagerState->num_helper_slots; i++)
	{
		ImsgHelperSlot *hs = helper_slot(i);
		uint64		applying;
		int			procno;
		int			pid;

		if (i == my_slot)
			continue;
		SpinLockAcquire(&hs->mutex);
		applying = hs->applying;
		procno = hs->procno;
		pid = hs->pid;
		SpinLockRelease(&hs->mutex);
		if (applying != 0 && applying < seq && pid != 0 &&
			(GetPGProcByNumber(procno)->wait_event_info & 0xFF000000) == PG_WAIT_LOCK &&
			imsg_waits_for_me(pid))
			return true;
	}
	return false;
}

/* set when wait_for_turn gives up: not an attempt that counts */
static bool turn_given_up = false;

/*
 * Wait until every position before 'seq' is done here (commit_horizon, see
 * manager_apply.c), so that change sets applied by several helpers at once
 * commit in position order.  If an earlier one has not moved for
 * IMSG_TURN_PATIENCE_MS while the helper applying it waits for a lock of
 * ours, ERROR
 * (40P01, turn_given_up set): the caller starts again, after waiting for
 * its turn without holding anything.
 */
#define IMSG_TURN_PATIENCE_MS	1000

static void
wait_for_turn(uint64 seq, bool may_give_up)
{
	uint64		horizon = pg_atomic_read_u64(&ImsgManagerState->commit_horizon);
	TimestampTz since = 0;

	while (horizon + 1 < seq)
	{
		uint64		now;

		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
						 100, PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
		CHECK_FOR_INTERRUPTS();
		if (ShutdownRequestPending)
			ereport(FATAL,
					(errcode(ERRCODE_ADMIN_SHUTDOWN),
					 errmsg("imessages helper stops before it commits change set %llu",
							(unsigned long long) seq)));
		now = pg_atomic_read_u64(&ImsgManagerState->commit_horizon);
		if (now != horizon || since == 0)
		{
			horizon = now;
			since = GetCurrentTimestamp();
			continue;
		}
		if (may_give_up &&
			TimestampDifferenceExceeds(since, GetCurrentTimestamp(), IMSG_TURN_PATIENCE_MS) &&
			imsg_helper_waits_for_me(seq))
		{
			turn_given_up = true;
			ereport(ERROR,
					(errcode(ERRCODE_T_R_DEADLOCK_DETECTED),
					 errmsg("change set %llu waits for position %llu, whose helper waits for a lock",
							(unsigned long long) seq, (unsigned long long) (horizon + 1))));
		}
	}
}

/*
 * We committed positions 'first' to 'seq' in our turn (the horizon was
 * first - 1): move the horizon to seq and wake the helper that applies
 * seq + 1, if one does, without waiting for the manager to take our
 * report.  (For a run, moving it from seq - 1 never matched: the next
 * run's helper then waited for the manager's report handling.)
 */
static void
pass_the_turn(uint64 first, uint64 seq)
{
	uint64		expected = first - 1;
	int			i;

	/* (only from first - 1: a reset may have taken it elsewhere meanwhile) */
	if (!pg_atomic_compare_exchange_u64(&ImsgManagerState->commit_horizon, &expected, seq))
		return;
	for (i = 0; i < ImsgManagerState->num_helper_slots; i++)
	{
		ImsgHelperSlot *hs = helper_slot(i);
		int			procno = -1;

		SpinLockAcquire(&hs->mutex);
		if (hs->applying == seq + 1 && hs->pid != 0)
			procno = hs->procno;
		SpinLockRelease(&hs->mutex);
		if (procno >= 0)
		{
			SetLatch(&GetPGProcByNumber(procno)->procLatch);
			break;
		}
	}
}

/* What this helper applies now (0: nothing), for the others and imsg_helpers(). */
static void
set_applying(uint64 seq, int applied)
{
	ImsgHelperSlot *slot = helper_slot(my_slot);

	SpinLockAcquire(&slot->mutex);
	slot->applying = seq;
	slot->change_sets_applied += applied;
	SpinLockRelease(&slot->mutex);
}

/* Rows of applied change sets that a later local write kept, for the status. */
static void
count_rows_kept(int64 kept)
{
	if (kept <= 0)
		return;
	SpinLockAcquire(&ImsgManagerState->mutex);
	ImsgManagerState->remote_writes_skipped += kept;
	SpinLockRelease(&ImsgManagerState->mutex);
}

/*
 * In an apply's PG_CATCH: the error (caller frees), the transaction rolled
 * back, and nothing left marked as being applied.
 */
static ErrorData *
abort_apply(MemoryContext oldcxt)
{
	ErrorData  *edata;

	MemoryContextSwitchTo(oldcxt);
	edata = CopyErrorData();
	FlushErrorState();
	imsg_local_writes_applying(0);
	AbortCurrentTransaction();
	return edata;
}

bool
imsg_helper_apply(uint64 seq, const char *origin, int32 origin_pid, uint64 counter,
				  bool overwrite, uint64 xid, const char *cs, Size cslen,
				  bool in_turn, int64 *changes)
{
	bool		ok = false;
	volatile int attempts = 0;
	volatile bool retrying = false;
	MemoryContext oldcxt = CurrentMemoryContext;
	bool		mine = strcmp(origin, imsg_my_node_name()) == 0;

	*changes = 0;
	set_applying(seq, 0);

	/*
	 * A local transaction that writes rows in another order than the
	 * change set can deadlock with it.  The change set is the one to keep
	 * (it is delivered, and every other node applies it): the helper waits
	 * longer than anybody else before it checks for a deadlock (see
	 * helper_main), so the local transaction in the cycle is the one that
	 * fails; should the helper lose anyway (a cycle of helpers' own
	 * waits), the whole change set is applied again from the start.
	 */
retry:
	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	PushActiveSnapshot(GetTransactionSnapshot());
	PG_TRY();
	{
		bool		applied_before;

		if (SPI_connect() != SPI_OK_CONNECT)
			elog(ERROR, "SPI_connect failed");
		applied_before = position_applied(seq);
		if (applied_before || (mine && imsg_own_transaction_committed(xid)))
			*changes = -1;
		else
			*changes = imsg_apply_changeset(cs, cslen, overwrite, seq);

		/*
		 * The position last, just before the commit and in position order
		 * (in_turn: other helpers apply other change sets meanwhile), so
		 * that imsg_state's row is not locked while we apply.
		 */
		if (!applied_before)
		{
			if (in_turn)
				wait_for_turn(seq, true);
			if (!claim_position(seq))
				elog(ERROR, "imessages: position %llu was recorded as applied while its change set was being applied",
					 (unsigned long long) seq);
		}
		SPI_finish();
		PopActiveSnapshot();
		if (!mine && *changes >= 0)
			note_applied(origin, origin_pid, counter);
		CommitTransactionCommand();
		ok = true;
		if (in_turn && !applied_before)
			pass_the_turn(seq, seq);
		count_rows_kept(imsg_apply_rows_kept());
	}
	PG_CATCH();
	{
		ErrorData  *edata = abort_apply(oldcxt);

		if (turn_given_up)
		{
			/* (not an attempt: start again once it is our turn) */
			turn_given_up = false;
			ereport(DEBUG1,
					(errmsg("imessages helper applies change set %llu again: %s",
							(unsigned long long) seq, edata->message)));
			FreeErrorData(edata);
			wait_for_turn(seq, false);
			retrying = true;
		}
		else if ((edata->sqlerrcode == ERRCODE_T_R_DEADLOCK_DETECTED ||
				  edata->sqlerrcode == ERRCODE_T_R_SERIALIZATION_FAILURE) &&
				 ++attempts < IMSG_APPLY_ATTEMPTS)
		{
			ereport(LOG,
					(errmsg("imessages helper applies change set %llu again: %s",
							(unsigned long long) seq, edata->message)));
			FreeErrorData(edata);
			retrying = true;
		}
		else
		{
			ereport(LOG,
					(errmsg("imessages helper could not apply change set %llu (transaction %llu of node \"%s\"): %s",
							(unsigned long long) seq, (unsigned long long) xid, origin,
							edata->message),
					 edata->detail ? errdetail_internal("%s", edata->detail) : 0,
					 edata->hint ? errhint("%s", edata->hint) : 0));
			FreeErrorData(edata);
		}
	}
	PG_END_TRY();
	MemoryContextSwitchTo(oldcxt);
	if (retrying)
	{
		retrying = false;
		CHECK_FOR_INTERRUPTS();
		goto retry;
	}
	set_applying(0, ok && *changes >= 0 ? 1 : 0);
	if (ok)
		ereport(DEBUG1,
				(errmsg("imessages helper applied change set %llu from node \"%s\": " INT64_FORMAT " changes",
						(unsigned long long) seq, origin, *changes)));
	return ok;
}

/* A change set of a run (pointers into the job's message). */
typedef struct RunEntry
{
	uint64		seq;
	char		origin[NAMEDATALEN];
	int32		origin_pid;
	uint64		counter;
	bool		overwrite;
	uint64		xid;
	const char *cs;
	Size		cslen;
	bool		ok;
} RunEntry;

/*
 * Apply a run of change sets at consecutive positions, in order, in one
 * transaction that records the last position and commits in the first's
 * turn.  False, with nothing applied, on any error (logged at DEBUG1): the
 * caller then applies them one by one, which reports each one's error.
 */
static bool
apply_run(RunEntry *e, int n)
{
	volatile bool ok = false;
	MemoryContext oldcxt = CurrentMemoryContext;
	const char *me = imsg_my_node_name();
	int64		kept = 0;
	int64	   *changes = palloc(sizeof(int64) * n);

	set_applying(e[0].seq, 0);
	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	PushActiveSnapshot(GetTransactionSnapshot());
	PG_TRY();
	{
		int			i;

		if (SPI_connect() != SPI_OK_CONNECT)
			elog(ERROR, "SPI_connect failed");
		if (position_applied(e[0].seq))
			elog(ERROR, "position %llu was applied before", (unsigned long long) e[0].seq);
		for (i = 0; i < n; i++)
		{
			bool		mine = strcmp(e[i].origin, me) == 0;

			if (mine && imsg_own_transaction_committed(e[i].xid))
				changes[i] = -1;
			else
			{
				changes[i] = imsg_apply_changeset(e[i].cs, e[i].cslen, e[i].overwrite, e[i].seq);
				kept += imsg_apply_rows_kept();
			}
			CHECK_FOR_INTERRUPTS();
		}
		wait_for_turn(e[0].seq, true);
		if (!claim_position(e[n - 1].seq))
			elog(ERROR, "position %llu was recorded as applied meanwhile", (unsigned long long) e[n - 1].seq);
		SPI_finish();
		PopActiveSnapshot();
		for (i = 0; i < n; i++)
			if (changes[i] >= 0 && strcmp(e[i].origin, me) != 0)
				note_applied(e[i].origin, e[i].origin_pid, e[i].counter);
		CommitTransactionCommand();
		ok = true;
		pass_the_turn(e[0].seq, e[n - 1].seq);
	}
	PG_CATCH();
	{
		ErrorData  *edata = abort_apply(oldcxt);

		turn_given_up = false;
		ereport(DEBUG1,
				(errmsg("imessages helper applies the run of change sets %llu to %llu one by one: %s",
						(unsigned long long) e[0].seq, (unsigned long long) e[n - 1].seq,
						edata->message)));
		FreeErrorData(edata);
	}
	PG_END_TRY();
	MemoryContextSwitchTo(oldcxt);
	if (ok)
	{
		int			i;
		int			done = 0;

		for (i = 0; i < n; i++)
			if (changes[i] >= 0)
				done++;
		set_applying(0, done);
		count_rows_kept(kept);
	}
	pfree(changes);
	return ok;
}

/*
 * A run of change sets other nodes committed (see imsg_mgr_apply_run in
 * manager_apply.c; a large message is assembled by the main loop): int32
 * count, then each one's position, origin, origin pid, counter,
 * overwrite, xid and bytes.  Reported as IMSG_T_CS_APPLIED: int32 slot,
 * int32 count, then each one's int64 position and int8 ok.
 */
static void
job_cs_apply(ImsgWhole *msg)
{
	ImsgBuffer	in;
	int32		n;
	int32		i;
	RunEntry   *e;
	char	   *reply;
	ImsgBuffer	out;

	ImsgBufferInitReader(&in, msg->data, msg->len);
	n = ImsgBufferGetInt32(&in);
	if (n <= 0 || n > 65536)
		elog(ERROR, "imessages helper: a run of %d change sets", n);
	e = palloc0(sizeof(RunEntry) * n);
	for (i = 0; i < n; i++)
	{
		uint32		len;
		const char *p;

		e[i].seq = (uint64) ImsgBufferGetInt64(&in);
		p = ImsgBufferGetString(&in, &len);
		imsg_copy_name(e[i].origin, p, len);
		e[i].origin_pid = ImsgBufferGetInt32(&in);
		e[i].counter = (uint64) ImsgBufferGetInt64(&in);
		e[i].overwrite = ImsgBufferGetInt8(&in) != 0;
		e[i].xid = (uint64) ImsgBufferGetInt64(&in);
		e[i].cs = ImsgBufferGetString(&in, &len);
		e[i].cslen = len;
	}

	if (n > 1 && apply_run(e, n))
	{
		for (i = 0; i < n; i++)
			e[i].ok = true;
	}
	else
	{
		for (i = 0; i < n; i++)
		{
			int64		changes;

			e[i].ok = imsg_helper_apply(e[i].seq, e[i].origin, e[i].origin_pid, e[i].counter,
										e[i].overwrite, e[i].xid, e[i].cs, e[i].cslen,
										true, &changes);
		}
	}

	reply = palloc(8 + 9 * n);
	ImsgBufferInitWriter(&out, reply, 8 + 9 * n);
	ImsgBufferPutInt32(&out, my_slot);
	ImsgBufferPutInt32(&out, n);
	for (i = 0; i < n; i++)
	{
		ImsgBufferPutInt64(&out, (int64) e[i].seq);
		ImsgBufferPutInt8(&out, e[i].ok ? 1 : 0);
	}
	(void) ImsgSend(IMSG_MANAGER, IMSG_T_CS_APPLIED, out.data, out.len, 1000, NULL);
	pfree(reply);
	pfree(e);
}

int
imsg_helper_my_slot(void)
{
	return my_slot;
}

/* Job type -> handler; a new kind of job is one line here. */
static const struct
{
	int32		msgtype;
	HelperJob	run;
}			helper_jobs[] =
{
	{IMSG_T_JOB_PING, job_ping},
	{IMSG_T_CS_APPLY, job_cs_apply},
	{IMSG_T_STATE_READ, imsg_job_state_read},
	{IMSG_T_STATE_SAVE, imsg_job_state_save},
	{IMSG_T_CATCH_UP, imsg_job_catch_up},
	{IMSG_T_TRANSFER, imsg_job_transfer},
};

void
imsg_helper_main(Datum main_arg)
{
	int64		arg = DatumGetInt64(main_arg);
	int			manager_pid;
	char		data[4];
	ImsgBuffer	buf;

	my_slot = (int) (arg & 0xFFFFFFFF);
	my_generation = (uint32) (arg >> 32);

	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	pqsignal(SIGTERM, SignalHandlerForShutdownRequest);
	/* registered first, so that a FATAL while connecting is recorded too */
	on_shmem_exit(helper_record_exit, (Datum) 0);
	BackgroundWorkerUnblockSignals();

	BackgroundWorkerInitializeConnection(imsg_database, NULL, 0);

	/* what helpers apply is not captured again (ordinary triggers stay off) */
	SetConfigOption("session_replication_role", "replica", PGC_SUSET, PGC_S_OVERRIDE);
	/* lose no deadlock to a local transaction (see job_cs_apply) */
	SetConfigOption("deadlock_timeout", "10s", PGC_SUSET, PGC_S_OVERRIDE);

	/*
	 * Commits do not wait for their WAL flush, as PostgreSQL's logical
	 * replication apply workers by default: the applied position commits
	 * with the rows, so a crash loses at most the last change sets applied
	 * (and their position), which the node then applies again from its log
	 * or a donor's.  Any later commit here that waits for its flush
	 * (a local transaction that read those rows, say) flushes them first:
	 * WAL is flushed in order.  Helpers commit in position order, one
	 * after the other, and a flush each would make them wait in a line.
	 */
	SetConfigOption("synchronous_commit", "off", PGC_SUSET, PGC_S_OVERRIDE);

	if (!helper_slot_is_mine())
		proc_exit(0);
	SpinLockAcquire(&helper_slot(my_slot)->mutex);
	helper_slot(my_slot)->pid = MyProcPid;
	helper_slot(my_slot)->procno = MyProc->pgprocno;
	helper_slot(my_slot)->applying = 0;
	helper_slot(my_slot)->started_at = GetCurrentTimestamp();
	helper_slot(my_slot)->state = IMSG_HELPER_IDLE;
	SpinLockRelease(&helper_slot(my_slot)->mutex);

	/* our sends to the manager ignore its quota (mailbox.c, "Quotas") */
	imsg_mailbox_set_internal(false);
	ImsgOpenMailbox();
	imsg_assembler_init(&assembler, "imessages helper assembly", NULL);
	manager_pid = ImsgManagerPid();
	ImsgBufferInitWriter(&buf, data, sizeof(data));
	ImsgBufferPutInt32(&buf, my_slot);
	if (ImsgSend(IMSG_MANAGER, IMSG_T_HELPER_READY, buf.data, buf.len, 0, NULL) != IMSG_OK)
		proc_exit(0);

	while (!ShutdownRequestPending)
	{
		ImsgMessage *msg;
		ImsgWhole	whole;
		int			i;

		/* wake up once a second to notice a manager that went away */
		if (ImsgReceive(1000, &msg) != IMSG_OK)
			(void) imsg_assembler_sweep(&assembler);
		else if (imsg_assemble(&assembler, msg, &whole))
		{
			helper_set_state(IMSG_HELPER_BUSY, false);
			for (i = 0; i < lengthof(helper_jobs); i++)
				if (helper_jobs[i].msgtype == whole.msgtype)
					helper_jobs[i].run(&whole);
			imsg_whole_done(&whole);
			ImsgRelease(msg);
			helper_set_state(IMSG_HELPER_IDLE, true);
		}
		else
			ImsgRelease(msg);	/* a part, kept by the assembler */

		if (ConfigReloadPending)
		{
			ConfigReloadPending = false;
			ProcessConfigFile(PGC_SIGHUP);
		}
		if (ImsgManagerPid() != manager_pid || !helper_slot_is_mine())
			break;
	}
	proc_exit(0);
}
