/*-------------------------------------------------------------------------
 *
 * manager_jobs.c
 *	  The manager's pings and helper jobs: imsg_ping() to the manager is
 *	  answered at once; one to 'helper' becomes a job for a ready helper
 *	  (started on demand, see helpers.c), kept until the helper reports it
 *	  done and given to another if the helper goes away first.
 *
 * Copyright (c) 2026, imessages developers
 *
 * IDENTIFICATION
 *	  src/manager_jobs.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "nodes/pg_list.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"

#include "manager_int.h"

#define IMSG_JOB_MAX_AGE_MS		60000
#define IMSG_MAX_PENDING_JOBS	1024

/* A ping for a helper, waiting until one is ready. */
typedef struct PendingJob
{
	int			origin;
	int64		ping_id;
	TimestampTz queued_at;
} PendingJob;

/*
 * A job handed to a helper, kept until the helper reports it done.  If the
 * helper goes away first (crash, exit; its slot's generation changes), the
 * job goes back to the pending ones and another helper does it: jobs are
 * done at least once.
 */
typedef struct AssignedJob
{
	PendingJob	job;
	int			slot;
	uint32		generation;		/* the slot's generation when handed out */
	int			helper_pid;
} AssignedJob;

static MemoryContext jobs_context = NULL;
static List *pending_jobs = NIL;
static List *assigned_jobs = NIL;

static void
reply_pong(int origin, int64 ping_id, int8 status)
{
	char		data[9];
	ImsgBuffer	buf;

	ImsgBufferInitWriter(&buf, data, sizeof(data));
	ImsgBufferPutInt64(&buf, ping_id);
	ImsgBufferPutInt8(&buf, status);
	imsg_manager_send(origin, IMSG_T_PONG, buf.data, buf.len);
}

/*
 * Give a helper ping to a ready helper and remember it until it is done;
 * false if no helper is ready.
 */
static bool
dispatch_helper_ping(int origin, int64 ping_id, TimestampTz queued_at)
{
	int			pid;
	uint32		generation;
	int			slot = imsg_helper_pick(&pid, &generation);
	char		data[12];
	ImsgBuffer	buf;
	MemoryContext old;
	AssignedJob *a;

	if (slot < 0)
		return false;

	old = MemoryContextSwitchTo(jobs_context);
	a = palloc(sizeof(AssignedJob));
	a->job.origin = origin;
	a->job.ping_id = ping_id;
	a->job.queued_at = queued_at;
	a->slot = slot;
	a->generation = generation;
	a->helper_pid = pid;
	assigned_jobs = lappend(assigned_jobs, a);
	MemoryContextSwitchTo(old);

	ImsgBufferInitWriter(&buf, data, sizeof(data));
	ImsgBufferPutInt32(&buf, origin);
	ImsgBufferPutInt64(&buf, ping_id);
	imsg_manager_send(pid, IMSG_T_JOB_PING, buf.data, buf.len);
	return true;
}

/*
 * Jobs whose helper went away before reporting them done (its slot's
 * generation moved on: the manager reaped it) go back to the front of the
 * pending jobs, in their order, to be redone by another helper.  Jobs older
 * than IMSG_JOB_MAX_AGE_MS are dropped, as pending ones are.
 */
static void
requeue_orphaned_jobs(void)
{
	ListCell   *lc;
	List	   *redo = NIL;
	TimestampTz now;

	if (assigned_jobs == NIL)
		return;
	now = GetCurrentTimestamp();
	foreach(lc, assigned_jobs)
	{
		AssignedJob *a = lfirst(lc);
		ImsgHelperSlot *slot = &ImsgManagerState->helpers[a->slot];
		uint32		generation;

		SpinLockAcquire(&slot->mutex);
		generation = slot->generation;
		SpinLockRelease(&slot->mutex);

		if (TimestampDifferenceExceeds(a->job.queued_at, now, IMSG_JOB_MAX_AGE_MS))
		{
			assigned_jobs = foreach_delete_current(assigned_jobs, lc);
			pfree(a);
		}
		else if (generation != a->generation)
		{
			ereport(LOG,
					(errmsg("imessages manager redoes a job that helper (PID %d) did not finish",
							a->helper_pid)));
			assigned_jobs = foreach_delete_current(assigned_jobs, lc);
			/* the AssignedJob starts with its PendingJob: reuse it */
			redo = lappend(redo, &a->job);
		}
	}
	if (redo != NIL)
	{
		MemoryContext old = MemoryContextSwitchTo(jobs_context);
		List	   *waiting = pending_jobs;

		/*
		 * 'redo' was built in the loop's memory, reset every round: the
		 * pending list must be a copy in jobs_context, or it dangles and
		 * corrupts the loop context's free lists.
		 */
		pending_jobs = list_concat_copy(redo, waiting);
		list_free(waiting);
		list_free(redo);
		MemoryContextSwitchTo(old);
	}
}

void
imsg_mgr_handle_ping(ImsgWhole *msg)
{
	ImsgBuffer	in;
	int64		ping_id;
	int8		target;
	int			origin = msg->sender_pid;

	ImsgBufferInitReader(&in, msg->data, msg->len);
	ping_id = ImsgBufferGetInt64(&in);
	target = ImsgBufferGetInt8(&in);

	if (target == IMSG_PING_MANAGER)
		reply_pong(origin, ping_id, IMSG_PONG_OK);
	else if (imsg_max_helpers == 0)
		reply_pong(origin, ping_id, IMSG_PONG_NO_HELPER);
	else if (!dispatch_helper_ping(origin, ping_id, GetCurrentTimestamp()))
	{
		MemoryContext old = MemoryContextSwitchTo(jobs_context);
		PendingJob *job = palloc(sizeof(PendingJob));

		job->origin = origin;
		job->ping_id = ping_id;
		job->queued_at = GetCurrentTimestamp();
		pending_jobs = lappend(pending_jobs, job);
		if (list_length(pending_jobs) > IMSG_MAX_PENDING_JOBS)
		{
			pfree(linitial(pending_jobs));
			pending_jobs = list_delete_first(pending_jobs);
		}
		MemoryContextSwitchTo(old);
	}
}

void
imsg_mgr_handle_helper_ready(ImsgWhole *msg)
{
	ImsgBuffer	in;

	ImsgBufferInitReader(&in, msg->data, msg->len);
	imsg_helper_ready(ImsgBufferGetInt32(&in), msg->sender_pid);
}

/*
 * A job is done: forget it, also if it was given back to the pending jobs
 * meanwhile (its helper exited after reporting it).
 */
static void
forget_job(int origin, int64 ping_id)
{
	ListCell   *lc;

	foreach(lc, assigned_jobs)
	{
		AssignedJob *a = lfirst(lc);

		if (a->job.origin == origin && a->job.ping_id == ping_id)
		{
			assigned_jobs = foreach_delete_current(assigned_jobs, lc);
			pfree(a);
			return;
		}
	}
	foreach(lc, pending_jobs)
	{
		PendingJob *job = lfirst(lc);

		if (job->origin == origin && job->ping_id == ping_id)
		{
			pending_jobs = foreach_delete_current(pending_jobs, lc);
			pfree(job);
			return;
		}
	}
}

void
imsg_mgr_handle_job_done(ImsgWhole *msg)
{
	ImsgBuffer	in;
	int			slot;
	int			origin;
	int64		ping_id;

	ImsgBufferInitReader(&in, msg->data, msg->len);
	slot = ImsgBufferGetInt32(&in);
	origin = ImsgBufferGetInt32(&in);
	ping_id = ImsgBufferGetInt64(&in);
	imsg_helper_job_done(slot);
	forget_job(origin, ping_id);
	reply_pong(origin, ping_id, IMSG_PONG_OK);
}

/* Give waiting helper pings to ready helpers; drop those nobody wants. */
static void
run_pending_jobs(void)
{
	TimestampTz now = GetCurrentTimestamp();

	while (pending_jobs != NIL)
	{
		PendingJob *job = linitial(pending_jobs);

		if (!TimestampDifferenceExceeds(job->queued_at, now, IMSG_JOB_MAX_AGE_MS) &&
			!dispatch_helper_ping(job->origin, job->ping_id, job->queued_at))
			break;
		pfree(job);
		pending_jobs = list_delete_first(pending_jobs);
	}
}

void
imsg_mgr_jobs_init(void)
{
	jobs_context = AllocSetContextCreate(TopMemoryContext,
										 "imessages manager jobs",
										 ALLOCSET_SMALL_SIZES);
}

/* Hand out what waits; redo what a helper that went away left. */
void
imsg_mgr_jobs_run(void)
{
	requeue_orphaned_jobs();
	run_pending_jobs();
}

/* Pending jobs: look again within a second (they expire, helpers start). */
long
imsg_mgr_jobs_next_timeout(void)
{
	return pending_jobs != NIL ? 1000 : -1;
}
