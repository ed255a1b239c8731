/*-------------------------------------------------------------------------
 *
 * manager.c
 *	  The replication manager: one background worker per server that owns
 *	  the mailbox "to the manager" (recipient NULL / IMSG_MANAGER), talks to
 *	  the group communication system and runs the helper pool.
 *
 * Its loop is the modern form of the seed's select(): one WaitEventSet over
 * its latch (set by senders, by the postmaster's notifications about
 * helpers, and by signals), postmaster death and the GCS's sockets.  Each
 * iteration runs in a memory context that is reset, drains the mailbox in
 * batches and hands every message to the handler its type maps to in
 * 'handlers'; user messages (type >= 0) are multicast to the group, and
 * counted as delivered when the GCS delivers them back in total order.
 *
 * SIGHUP reloads the configuration.  SIGTERM ends the loop; the manager
 * then stops its helpers and exits with status 1, like any ERROR, so that
 * the postmaster starts a new one after bgw_restart_time (during a server
 * shutdown the postmaster does not restart it).  The reason for an ERROR
 * exit is kept in shared memory for imsg_manager_status().last_error.
 *
 * Copyright (c) 2026, imessages developers
 *
 * IDENTIFICATION
 *	  src/manager.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/transam.h"
#include "lib/ilist.h"
#include "lib/stringinfo.h"
#include "miscadmin.h"
#include "nodes/pg_list.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "storage/proc.h"
#include "storage/procarray.h"
#include "utils/guc.h"
#include "utils/hsearch.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"

#include "imessages_int.h"
#include "mailbox_large.h"
#include "changeset_reader.h"

#define IMSG_MANAGER_BATCH		256
#define IMSG_MANAGER_RESTART_S	1
#define IMSG_GCS_RETRY_MS		1000
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

/*
 * Where one of this node's change sets is, from its arrival (whole) to its
 * settling (see settle_inflight):
 *
 *	async:	WAITING --commit--> multicast, settled
 *			WAITING --commit, no group--> HELD --group back--> multicast, settled
 *			WAITING or HELD --abort--> discarded
 *	sync:	arrival --multicast--> MULTICAST --delivered (or lost, or lost
 *			certification)--> ANSWERED --commit--> recorded, settled
 *			arrival --no group--> ANSWERED (with the error) --abort--> discarded
 *			MULTICAST waits for its delivery even once its transaction ended
 *			(a backend that died): an answer nobody reads, then discarded.
 */
typedef enum InflightState
{
	INFLIGHT_WAITING,			/* for its transaction to end */
	INFLIGHT_HELD,				/* committed; multicast once the group is back */
	INFLIGHT_MULTICAST,			/* sync: for its delivery in total order */
	INFLIGHT_ANSWERED			/* sync: its backend has the answer */
} InflightState;

/* (origin pid, xid): zeroed first, the padding is part of the hash key */
typedef struct InflightKey
{
	uint64		xid;
	int32		origin_pid;
	int32		pad;
} InflightKey;

/*
 * A change set on its way, held until the commit log says how its
 * transaction ended: an entry of 'inflight_by_key', linked in arrival
 * order (the order of the commits it waits for) in 'inflight'.  'cs'
 * points into 'cs_alloc', which it owns: the assembled message itself for
 * a large one (no copy), else a copy.
 */
typedef struct Inflight
{
	InflightKey key;			/* hash key */
	dlist_node	node;
	InflightState state;
	bool		sync;
	uint64		counter;		/* our number for it, once multicast */
	int			nseen;			/* what this node had applied at its PRE_COMMIT */
	ImsgSeen   *seen;			/* or NULL: taken when multicast */
	uint64		seq;
	int32		nchanges;
	int64		counted;		/* changes its read at delivery found (sync) */
	int			looks;			/* settle passes that found it in progress */
	const char *cs;
	Size		cslen;
	char	   *cs_alloc;
} Inflight;

/*
 * A transaction still in progress after this many settle passes (about as
 * many milliseconds at settle_delay = 1 ms) is not committing promptly: a
 * sync commit waiting for the group, or a commit waiting for a synchronous
 * standby.  It stops keeping the manager on its settle_delay timer, and its
 * COMMIT callback wakes the manager as before.
 */
#define IMSG_SETTLE_MAX_LOOKS	20

/*
 * A small message the manager could not send because the area was full,
 * to be retried (see imsg_manager_send).
 */
#define IMSG_RETRY_DATA		32	/* a pong, a sync commit's answer (17 bytes) */
#define IMSG_MAX_RETRIES	1024
#define IMSG_RETRY_MAX_MS	60000

typedef struct RetrySend
{
	int			pid;
	int32		msgtype;
	Size		len;
	char		data[IMSG_RETRY_DATA];
	TimestampTz queued_at;
} RetrySend;

/* What the manager multicasts: a kind byte, then the kind's payload. */
#define GCS_USER_MESSAGE	'U'
#define GCS_CHANGESET		'C' /* int32 origin pid, int64 xid, int32 changes, int8 sync */
#define GCS_CS_HEADER		(1 + 4 + 8 + 4 + 1)

static MemoryContext loop_context = NULL;
static ImsgAssembler assembler;	/* large messages, from backends */
static MemoryContext cs_context = NULL;
static HTAB *inflight_by_key = NULL;
static dlist_head inflight = DLIST_STATIC_INIT(inflight);
static MemoryContext jobs_context = NULL;
static List *pending_jobs = NIL;
static List *assigned_jobs = NIL;
static List *retry_list = NIL;

static bool retry_waiting_for(int pid, RetrySend *upto);
static void prune_own_delivered(void);
static int	settle_inflight(int *settled);
static const ImsgGcsOps *gcs = NULL;
static bool gcs_connected = false;
static int	gcs_failures = 0;		/* connection attempts failed in a row */
static TimestampTz gcs_failure_logged = 0;
static TimestampTz gcs_retry_at = 0;
static bool wait_set_stale = true;

typedef void (*ImsgHandler) (ImsgWhole *msg);

static void handle_ping(ImsgWhole *msg);
static void handle_helper_ready(ImsgWhole *msg);
static void handle_job_done(ImsgWhole *msg);
static void handle_user_message(ImsgWhole *msg);
static void reply_ordered(int origin_pid, uint64 xid, uint64 seq,
						  ImsgCsOutcome outcome);
static void handle_changeset(ImsgWhole *msg);
static void handle_cs_applied(ImsgWhole *msg);

/*
 * Message type -> handler.  A new message type is one line here.  Types
 * >= 0 are the users' and all go to handle_user_message.
 */
static const struct
{
	int32		msgtype;
	ImsgHandler handler;
}			handlers[] =
{
	{IMSG_T_PING, handle_ping},
	{IMSG_T_HELPER_READY, handle_helper_ready},
	{IMSG_T_JOB_DONE, handle_job_done},
	{IMSG_T_CHANGESET, handle_changeset},
	{IMSG_T_CS_APPLIED, handle_cs_applied},
};

void
imsg_register_manager(void)
{
	BackgroundWorker worker;

	memset(&worker, 0, sizeof(worker));
	worker.bgw_flags = BGWORKER_SHMEM_ACCESS | BGWORKER_BACKEND_DATABASE_CONNECTION;
	worker.bgw_start_time = BgWorkerStart_RecoveryFinished;
	worker.bgw_restart_time = IMSG_MANAGER_RESTART_S;
	strlcpy(worker.bgw_library_name, "imessages", BGW_MAXLEN);
	strlcpy(worker.bgw_function_name, "imsg_manager_main", BGW_MAXLEN);
	strlcpy(worker.bgw_name, "imessages manager", BGW_MAXLEN);
	strlcpy(worker.bgw_type, "imessages manager", BGW_MAXLEN);
	RegisterBackgroundWorker(&worker);
}

/* Keep the reason the manager failed, for imsg_manager_status(). */
void
imsg_manager_set_error(const char *msg)
{
	SpinLockAcquire(&ImsgManagerState->mutex);
	strlcpy(ImsgManagerState->last_error, msg,
			sizeof(ImsgManagerState->last_error));
	SpinLockRelease(&ImsgManagerState->mutex);
}

/*
 * Send without waiting: the manager must never block on a full area.  A
 * recipient that has gone away is normal (a backend that stopped waiting).
 * A small message (a reply, a job) that finds the area full is kept and
 * retried on the next rounds (retry_sends), so that a backend waiting for
 * it gets it once room frees up, within its own timeout; it is dropped,
 * and logged, after IMSG_RETRY_MAX_MS or beyond IMSG_MAX_RETRIES.
 * Anything else is logged and dropped, and its sender's wait times out.
 */
void
imsg_manager_send(int pid, int32 msgtype, const void *data, Size len)
{
	ImsgResult	r;

	/* per recipient, nothing overtakes a message waiting to be retried */
	if (len <= IMSG_RETRY_DATA && retry_waiting_for(pid, NULL))
		r = IMSG_WOULD_BLOCK;
	else
		r = ImsgSend(pid, msgtype, data, len, 0, NULL);

	if (r == IMSG_WOULD_BLOCK && len <= IMSG_RETRY_DATA &&
		list_length(retry_list) < IMSG_MAX_RETRIES)
	{
		MemoryContext old = MemoryContextSwitchTo(jobs_context);
		RetrySend  *rs = palloc(sizeof(RetrySend));

		rs->pid = pid;
		rs->msgtype = msgtype;
		rs->len = len;
		memcpy(rs->data, data, len);
		rs->queued_at = GetCurrentTimestamp();
		retry_list = lappend(retry_list, rs);
		MemoryContextSwitchTo(old);
		return;
	}
	if (r != IMSG_OK && r != IMSG_NO_RECIPIENT)
		ereport(LOG,
				(errmsg("imessages manager could not send a message of type %d to process %d: %s",
						msgtype, pid, ImsgResultString(r))));
}

/*
 * Does a message to 'pid' wait to be retried (before 'upto', if given)?
 */
static bool
retry_waiting_for(int pid, RetrySend *upto)
{
	ListCell   *lc;

	foreach(lc, retry_list)
	{
		RetrySend  *rs = lfirst(lc);

		if (rs == upto)
			break;
		if (rs->pid == pid)
			return true;
	}
	return false;
}

/*
 * Send what found the area full before, while there is room, in order per
 * recipient: a message still waiting holds back later ones to its
 * recipient only.
 */
static void
retry_sends(void)
{
	ListCell   *lc;
	TimestampTz now = 0;

	foreach(lc, retry_list)
	{
		RetrySend  *rs = lfirst(lc);
		ImsgResult	r;

		if (retry_waiting_for(rs->pid, rs))
			continue;
		r = ImsgSend(rs->pid, rs->msgtype, rs->data, rs->len, 0, NULL);
		if (r == IMSG_WOULD_BLOCK)
		{
			if (now == 0)
				now = GetCurrentTimestamp();
			/* still full: try the others next round (each try walks the spares) */
			if (!TimestampDifferenceExceeds(rs->queued_at, now, IMSG_RETRY_MAX_MS))
				break;
		}
		if (r != IMSG_OK && r != IMSG_NO_RECIPIENT)
			ereport(LOG,
					(errmsg("imessages manager could not send a message of type %d to process %d: %s",
							rs->msgtype, rs->pid, ImsgResultString(r))));
		retry_list = foreach_delete_current(retry_list, lc);
		pfree(rs);
	}
}

/* on_shmem_exit: stop being the manager (before the mailbox closes). */
static void
imsg_manager_unregister(int code, Datum arg)
{
	ImsgArea   *area = ImsgAreaPtr;

	imsg_helpers_stop_all();
	if (gcs_connected)
		gcs->disconnect();
	gcs_connected = false;

	SpinLockAcquire(&area->manager_lock);
	if (area->manager_pid == MyProcPid)
	{
		area->manager_pid = 0;
		pg_atomic_write_u64(&area->manager_ident, 0);
	}
	SpinLockRelease(&area->manager_lock);

	SpinLockAcquire(&ImsgManagerState->mutex);
	if (ImsgManagerState->pid == MyProcPid)
		ImsgManagerState->pid = 0;
	SpinLockRelease(&ImsgManagerState->mutex);
}

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
	int			slot = imsg_helper_pick();
	int			pid;
	uint32		generation;
	char		data[12];
	ImsgBuffer	buf;
	MemoryContext old;
	AssignedJob *a;

	if (slot < 0)
		return false;
	SpinLockAcquire(&ImsgManagerState->helpers[slot].mutex);
	pid = ImsgManagerState->helpers[slot].pid;
	generation = ImsgManagerState->helpers[slot].generation;
	SpinLockRelease(&ImsgManagerState->helpers[slot].mutex);

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

static void
handle_ping(ImsgWhole *msg)
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

static void
handle_helper_ready(ImsgWhole *msg)
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

static void
handle_job_done(ImsgWhole *msg)
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


/* Our own change sets, numbered for certification (certify.c). */
static uint64 own_counter = 0;

/*
 * May this node order messages now?  It must be connected to the GCS and,
 * if the GCS has a notion of quorum, in the primary component: what a node
 * cut off from the others multicasts is delivered to it alone.
 */
static ImsgCsOutcome
gcs_order_state(void)
{
	if (!gcs_connected)
		return IMSG_CS_OUTCOME_NO_GROUP;
	if (gcs->quorate != NULL && !gcs->quorate())
		return IMSG_CS_OUTCOME_NO_QUORUM;
	return IMSG_CS_OUTCOME_ORDERED;
}

/* For log lines; ORDERED here means the GCS refused the multicast. */
static const char *
gcs_order_state_text(ImsgCsOutcome state)
{
	return state == IMSG_CS_OUTCOME_NO_QUORUM ? "this node has no quorum in" : "this node is not connected to";
}

/* Keep imsg_manager_status().group_quorate current, and log its changes. */
static void
publish_order_state(void)
{
	static bool published = false;
	bool		now = gcs_order_state() == IMSG_CS_OUTCOME_ORDERED;

	if (now == published)
		return;
	published = now;
	SpinLockAcquire(&ImsgManagerState->mutex);
	ImsgManagerState->group_quorate = now;
	SpinLockRelease(&ImsgManagerState->mutex);
	if (gcs_connected && gcs->quorate != NULL)
		ereport(LOG,
				(errmsg(now ? "imessages manager: this node is quorate in \"%s\": change sets are ordered again"
						: "imessages manager: this node lost quorum in \"%s\": sync commits fail, async change sets are held",
						gcs->name)));
}

/*
 * The bytes 'context' and its children have in use: what they took from
 * malloc less their free chunks.  Not MemoryContextMemAllocated(): a
 * context keeps the blocks a busy moment made it take (a burst of change
 * sets in flight), so what it holds moves in steps of a block and does not
 * fall back, while a leak shows only in what is in use.
 */
static Size
memory_in_use(MemoryContext context)
{
	MemoryContextCounters counters;
	MemoryContext child;
	Size		used;

	memset(&counters, 0, sizeof(counters));
	context->methods->stats(context, NULL, NULL, &counters, false);
	used = counters.totalspace - counters.freespace;
	for (child = context->firstchild; child != NULL; child = child->nextchild)
		used += memory_in_use(child);
	return used;
}

/*
 * imsg_manager_status().manager_memory_bytes: what the manager's memory
 * contexts have in use, at most every 100 ms (it walks every context).
 */
static void
publish_memory(void)
{
	static TimestampTz last = 0;
	TimestampTz now = GetCurrentTimestamp();
	Size		bytes;

	if (now - last < 100 * 1000)
		return;
	last = now;
	bytes = memory_in_use(TopMemoryContext);
	SpinLockAcquire(&ImsgManagerState->mutex);
	ImsgManagerState->manager_memory_bytes = (int64) bytes;
	SpinLockRelease(&ImsgManagerState->mutex);
}

/*
 * Multicast a change set: the fixed header, then what certification needs
 * (our manager pid, our number for it, what we have applied of every other
 * origin), then the change set itself.
 */
static bool
multicast_changeset(Inflight *e)
{
	char		head_data[GCS_CS_HEADER + 12 + IMSG_SEEN_WIRE_MAX];
	ImsgBuffer	head;
	ImsgSeen	seen[IMSG_MAX_GROUP_MEMBERS];
	int			nseen;

	if (!gcs_connected)
		return false;
	if (e->counter == 0)
		e->counter = ++own_counter;
	if (e->seen != NULL)
	{
		nseen = e->nseen;
		memcpy(seen, e->seen, sizeof(ImsgSeen) * nseen);
	}
	else
		nseen = imsg_seen_snapshot(seen);

	ImsgBufferInitWriter(&head, head_data, sizeof(head_data));
	ImsgBufferPutInt8(&head, GCS_CHANGESET);
	ImsgBufferPutInt32(&head, e->key.origin_pid);
	ImsgBufferPutInt64(&head, (int64) e->key.xid);
	ImsgBufferPutInt32(&head, e->nchanges);
	ImsgBufferPutInt8(&head, e->sync ? 1 : 0);
	ImsgBufferPutInt32(&head, MyProcPid);
	ImsgBufferPutInt64(&head, (int64) e->counter);
	imsg_seen_encode(&head, seen, nseen);
	return gcs->multicast(head.data, head.len, e->cs, e->cslen);
}

/* A user message: hand it to the group; it counts once delivered. */
static void
handle_user_message(ImsgWhole *msg)
{
	static const char kind = GCS_USER_MESSAGE;

	/* the kind byte and the payload go out without a copy here */
	if (gcs_order_state() != IMSG_CS_OUTCOME_ORDERED ||
		!gcs->multicast(&kind, 1, msg->data, msg->len))
		ereport(LOG,
				(errmsg("imessages manager dropped message %llu: the group communication system \"%s\" is not connected or this node has no quorum",
						(unsigned long long) (msg->msg ? ImsgMessageId(msg->msg) : 0),
						gcs->name)));
}

static InflightKey
inflight_key(int origin_pid, uint64 xid)
{
	InflightKey key;

	memset(&key, 0, sizeof(key));
	key.xid = xid;
	key.origin_pid = origin_pid;
	return key;
}

static Inflight *
find_inflight(int origin_pid, uint64 xid)
{
	InflightKey key = inflight_key(origin_pid, xid);

	return hash_search(inflight_by_key, &key, HASH_FIND, NULL);
}

/* Take a change set out of 'inflight' and free it, seen vector included. */
static void
free_inflight(Inflight *e)
{
	pfree(e->cs_alloc);
	if (e->seen)
		pfree(e->seen);
	dlist_delete(&e->node);
	(void) hash_search(inflight_by_key, &e->key, HASH_REMOVE, NULL);
}

/*
 * A backend's change set, sent at its PRE_COMMIT (see imsg_cs_send):
 * held until its transaction ends; a sync one is multicast now.
 */
static void
handle_changeset(ImsgWhole *msg)
{
	ImsgBuffer	in;
	uint64		xid;
	int8		flags;
	int32		nchanges;
	ImsgSeen	seen[IMSG_MAX_GROUP_MEMBERS];
	int			nseen = 0;
	int			origin = msg->sender_pid;
	MemoryContext old;
	InflightKey key;
	Inflight   *e;

	if (msg->len < IMSG_CS_HEADER)
	{
		ereport(LOG,
				(errmsg("imessages manager dropped a change set from process %d: it is too short",
						origin)));
		return;
	}
	ImsgBufferInitReader(&in, msg->data, msg->len);
	xid = (uint64) ImsgBufferGetInt64(&in);
	flags = ImsgBufferGetInt8(&in);
	nchanges = ImsgBufferGetInt32(&in);
	if ((flags & IMSG_CS_HAS_SEEN) && (nseen = imsg_seen_decode(&in, seen)) < 0)
	{
		/* where the change set starts is not known either */
		ereport(LOG,
				(errmsg("imessages manager dropped the change set of transaction %llu from process %d: its seen vector is malformed",
						(unsigned long long) xid, origin)));
		return;
	}

	e = find_inflight(origin, xid);
	if (e != NULL)
		free_inflight(e);		/* sent again (cannot happen): the last wins */

	old = MemoryContextSwitchTo(cs_context);
	key = inflight_key(origin, xid);
	e = hash_search(inflight_by_key, &key, HASH_ENTER, NULL);
	memset((char *) e + sizeof(InflightKey), 0, sizeof(Inflight) - sizeof(InflightKey));
	e->state = INFLIGHT_WAITING;
	e->sync = (flags & IMSG_CS_SYNC) != 0;
	e->nchanges = nchanges;
	if (flags & IMSG_CS_HAS_SEEN)
	{
		e->nseen = nseen;
		e->seen = palloc(sizeof(ImsgSeen) * Max(nseen, 1));
		memcpy(e->seen, seen, sizeof(ImsgSeen) * nseen);
	}
	e->cslen = msg->len - in.cursor;
	e->cs_alloc = imsg_whole_take(msg);
	if (e->cs_alloc != NULL)
		e->cs = e->cs_alloc + in.cursor;
	else
	{
		e->cs_alloc = palloc(Max(e->cslen, 1));
		memcpy(e->cs_alloc, msg->data + in.cursor, e->cslen);
		e->cs = e->cs_alloc;
	}
	dlist_push_tail(&inflight, &e->node);
	MemoryContextSwitchTo(old);

	/* sync: order it now; its transaction waits in PRE_COMMIT for that */
	if (e->sync)
	{
		ImsgCsOutcome state;
		int			settled;

		/*
		 * First multicast the async change sets that committed before it:
		 * it may have read their rows, and must be delivered after them, or
		 * every other node would apply them over it.  They were sent before
		 * they committed, so before this one: they are here already.
		 */
		(void) settle_inflight(&settled);
		state = gcs_order_state();

		if (state == IMSG_CS_OUTCOME_ORDERED && multicast_changeset(e))
			e->state = INFLIGHT_MULTICAST;
		else
		{
			/* fail the commit now rather than at commit_timeout */
			if (state == IMSG_CS_OUTCOME_ORDERED)
				state = IMSG_CS_OUTCOME_NO_GROUP;
			ereport(LOG,
					(errmsg("imessages manager could not multicast the change set of transaction %llu: %s \"%s\"",
							(unsigned long long) xid, gcs_order_state_text(state), gcs->name)));
			e->state = INFLIGHT_ANSWERED;
			reply_ordered(e->key.origin_pid, xid, 0, state);
		}
	}
}

/*
 * Count a change set as delivered and keep it in the ring.  The number of
 * changes recorded is what the read of the change set found ('counted',
 * -1 if malformed), so a change set that lost or garbled a part on the
 * way shows up (and is logged).
 */
static void
record_delivered(uint64 seq, int origin_pid, uint64 xid, int32 nchanges,
				 int64 counted, const char *cs, Size cslen)
{
	ImsgRecentChangeset *slot;

	if (counted != nchanges)
		ereport(LOG,
				(errmsg("imessages change set %llu of transaction %llu is damaged: %lld changes found, %d announced",
						(unsigned long long) seq, (unsigned long long) xid,
						(long long) counted, nchanges)));
	nchanges = (int32) counted;

	LWLockAcquire(ImsgRecent->lock, LW_EXCLUSIVE);
	slot = &ImsgRecent->slots[ImsgRecent->count % IMSG_RECENT_SLOTS];
	slot->seq = seq;
	slot->origin_pid = origin_pid;
	slot->xid = xid;
	slot->changes = nchanges;
	slot->bytes = cslen;
	slot->delivered_at = GetCurrentTimestamp();
	slot->has_payload = cslen <= IMSG_RECENT_PAYLOAD;
	if (slot->has_payload)
		memcpy(slot->payload, cs, cslen);
	ImsgRecent->count++;
	LWLockRelease(ImsgRecent->lock);

	SpinLockAcquire(&ImsgManagerState->mutex);
	ImsgManagerState->change_sets_delivered++;
	ImsgManagerState->change_set_bytes += cslen;
	SpinLockRelease(&ImsgManagerState->mutex);
}

static void
count_discarded(Inflight *e)
{
	/* never delivered: no remote change set is to lose to it */
	imsg_local_writes_forget(XidFromFullTransactionId(FullTransactionIdFromU64(e->key.xid)));
	SpinLockAcquire(&ImsgManagerState->mutex);
	ImsgManagerState->change_sets_discarded++;
	SpinLockRelease(&ImsgManagerState->mutex);
	ereport(DEBUG1,
			(errmsg("imessages manager discarded the change set of transaction %llu: it did not commit",
					(unsigned long long) e->key.xid)));
}

/*
 * Settle change sets whose transaction has ended, as the commit log says:
 * committed ones are multicast (async) or recorded as delivered (sync,
 * already ordered); the others are discarded, never delivered.  The
 * backends' COMMIT and ABORT callbacks set our latch so that this runs
 * promptly, unless we said we would look again within settle_delay (see
 * manager_loop); a backend that died is caught here too.  Returns how
 * many change sets' transactions are in progress (and not for long:
 * IMSG_SETTLE_MAX_LOOKS), and sets *settled to how many were settled.
 */
static int
settle_inflight(int *settled)
{
	dlist_mutable_iter iter;
	int			in_progress = 0;

	*settled = 0;

	dlist_foreach_modify(iter, &inflight)
	{
		Inflight   *e = dlist_container(Inflight, node, iter.cur);
		TransactionId xid = XidFromFullTransactionId(FullTransactionIdFromU64(e->key.xid));
		bool		committed;

		if (TransactionIdIsInProgress(xid))
		{
			if (e->looks++ < IMSG_SETTLE_MAX_LOOKS)
				in_progress++;
			continue;
		}
		if (e->state == INFLIGHT_MULTICAST)
			continue;			/* wait for the GCS to deliver it back */
		committed = TransactionIdDidCommit(xid);

		if (committed && e->sync)
			record_delivered(e->seq, e->key.origin_pid, e->key.xid, e->nchanges,
							 e->counted, e->cs, e->cslen);
		else if (committed)
		{
			ImsgCsOutcome state = gcs_order_state();

			if (state == IMSG_CS_OUTCOME_ORDERED && multicast_changeset(e))
				 /* handed over */ ;
			else
			{
				/* keep it, in commit order, and retry */
				if (e->state != INFLIGHT_HELD)
					ereport(LOG,
							(errmsg("imessages manager holds the change set of transaction %llu: %s \"%s\"",
									(unsigned long long) e->key.xid,
									gcs_order_state_text(state),
									gcs->name),
							 errdetail("It is sent when the node is back in the group.")));
				e->state = INFLIGHT_HELD;
				continue;
			}
		}
		else
			count_discarded(e);

		free_inflight(e);
		(*settled)++;
	}
	return in_progress;
}

/*
 * Change sets of other nodes, delivered and waiting to be applied, oldest
 * first.  One helper applies one at a time, in delivery order, so that
 * every node applies them in the group's total order; the next one goes
 * out when the helper reports (IMSG_T_CS_APPLIED), and the same one again
 * if the helper exits first.
 */
typedef struct RemoteChangeset
{
	uint64		seq;
	char		origin[NAMEDATALEN];
	int32		origin_pid;		/* its manager */
	uint64		counter;		/* its number at its origin */
	bool		overwrite;		/* async: last writer wins (see apply.c) */
	uint64		xid;
	Size		len;
	char	   *data;
} RemoteChangeset;

static List *apply_queue = NIL;
static int	apply_slot = -1;		/* helper applying the head, or -1 */
static int	apply_pid = 0;

/* imsg_manager_status().change_sets_to_apply */
static void
publish_apply_queue(void)
{
	SpinLockAcquire(&ImsgManagerState->mutex);
	ImsgManagerState->change_sets_to_apply = list_length(apply_queue);
	ImsgManagerState->apply_horizon = apply_queue != NIL ?
		((RemoteChangeset *) linitial(apply_queue))->seq : 0;
	SpinLockRelease(&ImsgManagerState->mutex);
}

static void
queue_remote_changeset(uint64 seq, const char *origin, int32 origin_pid,
					   uint64 counter, bool overwrite, uint64 xid,
					   const char *cs, Size cslen)
{
	MemoryContext old = MemoryContextSwitchTo(cs_context);
	RemoteChangeset *r = palloc(sizeof(RemoteChangeset));

	r->overwrite = overwrite;
	r->seq = seq;
	strlcpy(r->origin, origin, sizeof(r->origin));
	r->origin_pid = origin_pid;
	r->counter = counter;
	r->xid = xid;
	r->len = cslen;
	r->data = palloc(Max(cslen, 1));
	memcpy(r->data, cs, cslen);
	apply_queue = lappend(apply_queue, r);
	MemoryContextSwitchTo(old);
	publish_apply_queue();
}

/*
 * Hand the oldest remote change set to a helper: int64 seq, string origin,
 * int32 origin pid, int64 counter, int8 overwrite, int64 xid, then the
 * change set (in parts if large: see mailbox_large.c).  Nothing is sent
 * while one is being applied; nothing waits for room either: what did not
 * go out is sent again, whole, in a later pass.
 */
static void
run_apply_queue(void)
{
	RemoteChangeset *r;
	int			pid;
	int			slot;
	char		head_data[8 + 4 + NAMEDATALEN + 4 + 8 + 1 + 8];
	ImsgBuffer	head;

	if (apply_queue == NIL)
		return;
	if (apply_slot >= 0)
	{
		ImsgHelperSlot *hs = &ImsgManagerState->helpers[apply_slot];

		SpinLockAcquire(&hs->mutex);
		pid = hs->pid;
		SpinLockRelease(&hs->mutex);
		if (pid == apply_pid)
			return;				/* still at it */
		ereport(LOG,
				(errmsg("imessages manager: the helper applying change set %llu exited; handing it to another",
						(unsigned long long) ((RemoteChangeset *) linitial(apply_queue))->seq)));
		apply_slot = -1;
	}

	slot = imsg_helper_pick();
	if (slot < 0)
		return;					/* one is starting; the loop comes back */
	SpinLockAcquire(&ImsgManagerState->helpers[slot].mutex);
	pid = ImsgManagerState->helpers[slot].pid;
	SpinLockRelease(&ImsgManagerState->helpers[slot].mutex);

	r = linitial(apply_queue);
	ImsgBufferInitWriter(&head, head_data, sizeof(head_data));
	ImsgBufferPutInt64(&head, (int64) r->seq);
	ImsgBufferPutString(&head, r->origin, strlen(r->origin));
	ImsgBufferPutInt32(&head, r->origin_pid);
	ImsgBufferPutInt64(&head, (int64) r->counter);
	ImsgBufferPutInt8(&head, r->overwrite ? 1 : 0);
	ImsgBufferPutInt64(&head, (int64) r->xid);
	if (ImsgSendLarge(pid, IMSG_T_CS_APPLY, head.data, head.len, r->data, r->len,
					  0, 0) != IMSG_OK)
		return;					/* no room now (or it exited): again later */
	apply_slot = slot;
	apply_pid = pid;
}

/* A helper is done with a remote change set. */
static void
handle_cs_applied(ImsgWhole *msg)
{
	ImsgBuffer	in;
	int32		slot;
	uint64		seq;
	bool		ok;
	RemoteChangeset *r;

	ImsgBufferInitReader(&in, msg->data, msg->len);
	slot = ImsgBufferGetInt32(&in);
	seq = (uint64) ImsgBufferGetInt64(&in);
	ok = ImsgBufferGetInt8(&in) != 0;
	imsg_helper_job_done(slot);
	if (apply_queue == NIL)
		return;
	r = linitial(apply_queue);
	if (r->seq != seq)
		return;					/* a late report of one handed out again */
	apply_queue = list_delete_first(apply_queue);
	pfree(r->data);
	pfree(r);
	apply_slot = -1;
	apply_pid = 0;
	publish_apply_queue();
	prune_own_delivered();
	SpinLockAcquire(&ImsgManagerState->mutex);
	if (ok)
		ImsgManagerState->remote_change_sets_applied++;
	else
		ImsgManagerState->apply_errors++;
	SpinLockRelease(&ImsgManagerState->mutex);
}

/* Tell a backend waiting in a sync commit how its change set fared. */
static void
reply_ordered(int origin_pid, uint64 xid, uint64 seq, ImsgCsOutcome outcome)
{
	char		reply[24];
	ImsgBuffer	out;

	ImsgBufferInitWriter(&out, reply, sizeof(reply));
	ImsgBufferPutInt64(&out, (int64) xid);
	ImsgBufferPutInt64(&out, (int64) seq);
	ImsgBufferPutInt8(&out, (int8) outcome);
	imsg_manager_send(origin_pid, IMSG_T_CS_ORDERED, out.data, out.len);
}

/* imsg_certify, and publish the size of its map */
static bool
certify_changeset(const char *node, int pid, uint64 counter, bool certify,
				  const ImsgSeen *seen, int nseen, const ImsgCsSummary *summary,
				  char *winner, Size winner_len)
{
	bool		ok = imsg_certify(node, pid, counter, certify, seen, nseen,
								  summary->rows, summary->nrows, winner, winner_len);
	int64		rows = imsg_certification_rows();

	SpinLockAcquire(&ImsgManagerState->mutex);
	ImsgManagerState->certification_rows = rows;
	SpinLockRelease(&ImsgManagerState->mutex);
	return ok;
}

/*
 * Our own change sets delivered, in delivery order (seq increasing), whose
 * entries in local_writes.c a helper may still ask about: those of remote
 * change sets delivered before them are still to be applied.
 */
typedef struct OwnDelivered
{
	uint64		seq;
	TransactionId xid;
} OwnDelivered;

static OwnDelivered *own_ring = NULL;
static int	own_ring_size = 0;
static int	own_ring_head = 0;	/* oldest */
static int	own_ring_count = 0;

static void
own_delivered(uint64 full_xid, uint64 seq)
{
	TransactionId xid = XidFromFullTransactionId(FullTransactionIdFromU64(full_xid));

	imsg_local_writes_delivered(xid, seq);
	if (own_ring_count == own_ring_size)
	{
		int			newsize = Max(own_ring_size * 2, 256);
		OwnDelivered *n = MemoryContextAlloc(TopMemoryContext, sizeof(OwnDelivered) * newsize);
		int			i;

		for (i = 0; i < own_ring_count; i++)
			n[i] = own_ring[(own_ring_head + i) % own_ring_size];
		if (own_ring)
			pfree(own_ring);
		own_ring = n;
		own_ring_size = newsize;
		own_ring_head = 0;
	}
	own_ring[(own_ring_head + own_ring_count) % own_ring_size].seq = seq;
	own_ring[(own_ring_head + own_ring_count) % own_ring_size].xid = xid;
	own_ring_count++;
	prune_own_delivered();
}

/*
 * Forget our delivered change sets that no remote change set still to be
 * applied precedes (the apply queue is in delivery order), and sweep the
 * maps' dead entries now and then.
 */
static void
prune_own_delivered(void)
{
	uint64		horizon = apply_queue != NIL ?
		((RemoteChangeset *) linitial(apply_queue))->seq : PG_UINT64_MAX;

	while (own_ring_count > 0 && own_ring[own_ring_head].seq < horizon)
	{
		imsg_local_writes_forget(own_ring[own_ring_head].xid);
		own_ring_head = (own_ring_head + 1) % own_ring_size;
		own_ring_count--;
	}
	imsg_local_writes_sweep();
}

/*
 * A change set delivered by the GCS in total order: certify it (sync ones;
 * see certify.c), number it, and settle, apply or answer it.
 */
static void
deliver_changeset(const char *origin, const char *data, Size len)
{
	ImsgBuffer	in;
	int32		origin_pid;
	uint64		xid;
	int32		nchanges;
	bool		sync;
	int32		mgr_pid;
	uint64		counter;
	int			nseen;
	ImsgSeen	seen[IMSG_MAX_GROUP_MEMBERS];
	const char *cs;
	Size		cslen;
	uint64		seq = 0;
	bool		mine = strcmp(origin, imsg_my_node_name()) == 0;
	bool		single_node = gcs->single_node;
	ImsgCsSummary summary;
	bool		won;
	int			summary_count;
	char		winner[NAMEDATALEN + 16];
	Inflight   *e;

	ImsgBufferInitReader(&in, data + 1, len - 1);
	origin_pid = ImsgBufferGetInt32(&in);
	xid = (uint64) ImsgBufferGetInt64(&in);
	nchanges = ImsgBufferGetInt32(&in);
	sync = ImsgBufferGetInt8(&in) != 0;
	mgr_pid = ImsgBufferGetInt32(&in);
	counter = (uint64) ImsgBufferGetInt64(&in);
	nseen = imsg_seen_decode(&in, seen);
	if (nseen < 0)
	{
		/* every node drops it alike: the same bytes are delivered to all */
		ereport(LOG,
				(errmsg("imessages manager dropped the change set of transaction %llu of node \"%s\": its seen vector is malformed",
						(unsigned long long) xid, origin)));
		return;
	}
	cs = data + 1 + in.cursor;
	cslen = len - 1 - in.cursor;

	/*
	 * The one read of the change set here: its count for the delivered
	 * record, its rows for certification.  A damaged one certifies with no
	 * rows and is logged by record_delivered.  A group of one has nothing
	 * to certify against, nor a map to keep.
	 */
	(void) imsg_changeset_summarize(cs, cslen, !single_node, &summary);
	e = mine ? find_inflight(origin_pid, xid) : NULL;
	won = single_node ||
		certify_changeset(origin, mgr_pid, counter, sync, seen, nseen, &summary,
						  winner, sizeof(winner));
	summary_count = summary.nchanges;
	imsg_changeset_summary_free(&summary);
	if (!won)
	{
		/* the later of two conflicting change sets: aborted, applied nowhere */
		SpinLockAcquire(&ImsgManagerState->mutex);
		ImsgManagerState->change_sets_conflicted++;
		SpinLockRelease(&ImsgManagerState->mutex);
		ereport(DEBUG1,
				(errmsg("imessages manager: change set of transaction %llu of node \"%s\" conflicts with one of %s delivered before it",
						(unsigned long long) xid, origin, winner)));
		if (e != NULL && e->state == INFLIGHT_MULTICAST)
		{
			e->state = INFLIGHT_ANSWERED;	/* its transaction will abort: discarded */
			/* with how far the winner is: the backend waits for its apply */
			SpinLockAcquire(&ImsgManagerState->mutex);
			seq = ImsgManagerState->last_seq;
			SpinLockRelease(&ImsgManagerState->mutex);
			reply_ordered(origin_pid, xid, seq, IMSG_CS_OUTCOME_CONFLICT);
		}
		return;
	}

	SpinLockAcquire(&ImsgManagerState->mutex);
	seq = ++ImsgManagerState->last_seq;
	SpinLockRelease(&ImsgManagerState->mutex);

	if (!mine)
	{
		/* another node's: delivered here, to be applied by a helper */
		record_delivered(seq, origin_pid, xid, nchanges, summary_count, cs, cslen);
		queue_remote_changeset(seq, origin, mgr_pid, counter, !sync, xid, cs, cslen);
		return;
	}

	/* ours: remote change sets delivered before it must not overwrite it */
	if (!single_node)
		own_delivered(xid, seq);
	if (!sync)
	{
		/* multicast only after its commit: delivered now */
		record_delivered(seq, origin_pid, xid, nchanges, summary_count, cs, cslen);
		return;
	}

	/* sync: tell the waiting backend; delivered once its commit is seen */
	if (e != NULL && e->state == INFLIGHT_MULTICAST)
	{
		e->state = INFLIGHT_ANSWERED;
		e->seq = seq;
		e->counted = summary_count;
		reply_ordered(origin_pid, xid, seq, IMSG_CS_OUTCOME_ORDERED);
	}
}

/* Called by the GCS for each message it delivers, in total order. */
void
imsg_gcs_deliver(const char *origin, const void *data, Size len)
{
	const char *p = data;

	if (len >= GCS_CS_HEADER && p[0] == GCS_CHANGESET)
		deliver_changeset(origin, p, len);
	else
	{
		SpinLockAcquire(&ImsgManagerState->mutex);
		ImsgManagerState->messages_delivered++;
		SpinLockRelease(&ImsgManagerState->mutex);
	}
}

/* Called by the GCS when the group's membership (or what we know of it) changes. */
void
imsg_gcs_set_members(const ImsgGroupMember *members, int count)
{
	count = Min(count, IMSG_MAX_GROUP_MEMBERS);
	SpinLockAcquire(&ImsgManagerState->mutex);
	ImsgManagerState->group_members = count;
	if (count > 0)
		memcpy(ImsgManagerState->members, members, count * sizeof(ImsgGroupMember));
	SpinLockRelease(&ImsgManagerState->mutex);
}

/* Handle one whole message; true if it was a user message. */
static bool
dispatch_message(ImsgWhole *msg)
{
	int32		msgtype = msg->msgtype;
	int			i;

	if (msgtype >= IMSG_FIRST_USER_TYPE)
	{
		handle_user_message(msg);
		return true;
	}
	for (i = 0; i < lengthof(handlers); i++)
	{
		if (handlers[i].msgtype == msgtype)
		{
			handlers[i].handler(msg);
			return false;
		}
	}
	ereport(LOG,
			(errmsg("imessages manager ignored a message of unknown type %d from process %d",
					msgtype, msg->sender_pid)));
	return false;
}

/*
 * A change set whose sender gave it up halfway (its transaction failed in
 * PRE_COMMIT, or its backend exited): it never committed.
 */
static void
partial_dropped(int32 msgtype, int sender_pid, Size received, Size len)
{
	if (msgtype != IMSG_T_CHANGESET)
		return;
	SpinLockAcquire(&ImsgManagerState->mutex);
	ImsgManagerState->change_sets_discarded++;
	SpinLockRelease(&ImsgManagerState->mutex);
	ereport(DEBUG1,
			(errmsg("imessages manager discarded a change set of process %d: %zu of its %zu bytes came",
					sender_pid, received, len)));
}

/*
 * Handle up to one batch of messages; true if the batch was full.  Sets
 * *user_messages to how many of them were user messages.
 */
static bool
drain_mailbox(int *user_messages)
{
	ImsgMessage *msg;
	ImsgMessage *last = NULL;
	ImsgWhole	whole;
	int			n;

	*user_messages = 0;
	for (n = 0; n < IMSG_MANAGER_BATCH; n++)
	{
		if (ImsgReceive(0, &msg) != IMSG_OK)
			break;
		if (imsg_assemble(&assembler, msg, &whole))
		{
			if (dispatch_message(&whole))
				(*user_messages)++;
			imsg_whole_done(&whole);
		}
		last = msg;
	}
	if (last != NULL)
	{
		ImsgRelease(last);
		if (n < IMSG_MANAGER_BATCH)
			imsg_flush_release();	/* about to sleep: make the views exact */
		SpinLockAcquire(&ImsgManagerState->mutex);
		ImsgManagerState->messages_received += n;
		SpinLockRelease(&ImsgManagerState->mutex);
	}
	if (n < IMSG_MANAGER_BATCH)
	{
		int			partial = imsg_assembler_sweep(&assembler);

		SpinLockAcquire(&ImsgManagerState->mutex);
		ImsgManagerState->messages_in_assembly = partial;
		SpinLockRelease(&ImsgManagerState->mutex);
	}
	return n == IMSG_MANAGER_BATCH;
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

static void
gcs_try_connect(void)
{
	TimestampTz now = GetCurrentTimestamp();

	if (gcs_connected || now < gcs_retry_at)
		return;
	gcs_connected = gcs->connect();
	wait_set_stale = true;
	if (!gcs_connected)
	{
		gcs_retry_at = TimestampTzPlusMilliseconds(now, IMSG_GCS_RETRY_MS);
		/* the first failure, then once a minute */
		if (gcs_failures++ == 0 ||
			TimestampDifferenceExceeds(gcs_failure_logged, now, 60 * 1000))
		{
			ereport(LOG,
					(errmsg("imessages manager could not join the group through \"%s\"; retrying every %d ms",
							gcs->name, IMSG_GCS_RETRY_MS),
					 gcs_failures > 1 ? errdetail("%d attempts failed so far.", gcs_failures) : 0));
			gcs_failure_logged = now;
		}
	}
	else
		gcs_failures = 0;
}

static void
gcs_lost(void)
{
	dlist_iter	iter;

	ereport(LOG,
			(errmsg("imessages manager lost its connection to \"%s\"; reconnecting",
					gcs->name)));

	/*
	 * Sync change sets multicast but not delivered back will not be now:
	 * their backends fail at once rather than at commit_timeout.  Whether
	 * other nodes delivered them is unknown (08007); their transactions
	 * roll back here and they are settled as discarded.
	 */
	dlist_foreach(iter, &inflight)
	{
		Inflight   *e = dlist_container(Inflight, node, iter.cur);

		if (e->state == INFLIGHT_MULTICAST)
		{
			e->state = INFLIGHT_ANSWERED;
			reply_ordered(e->key.origin_pid, e->key.xid, 0, IMSG_CS_OUTCOME_LOST);
		}
	}
	gcs->disconnect();
	gcs_connected = false;
	wait_set_stale = true;
	imsg_gcs_set_members(NULL, 0);
	gcs_retry_at = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), IMSG_GCS_RETRY_MS);
}

/* The set of events to sleep on: latch, postmaster death, GCS sockets. */
static WaitEventSet *
build_wait_set(WaitEventSet *old)
{
	WaitEventSet *set;
	pgsocket	fds[IMSG_GCS_MAX_FDS];
	int			nfds = 0;
	int			i;

	if (old != NULL)
		FreeWaitEventSet(old);
	if (gcs_connected)
		nfds = gcs->wait_fds(fds, IMSG_GCS_MAX_FDS);
	set = CreateWaitEventSet(TopMemoryContext, 2 + nfds);
	AddWaitEventToSet(set, WL_LATCH_SET, PGINVALID_SOCKET, MyLatch, NULL);
	AddWaitEventToSet(set, WL_EXIT_ON_PM_DEATH, PGINVALID_SOCKET, NULL, NULL);
	for (i = 0; i < nfds; i++)
		AddWaitEventToSet(set, WL_SOCKET_READABLE, fds[i], NULL, NULL);
	wait_set_stale = false;
	return set;
}

static long
min_timeout(long a, long b)
{
	if (a < 0)
		return b;
	if (b < 0)
		return a;
	return Min(a, b);
}

static void
manager_loop(void)
{
	WaitEventSet *set = NULL;
	bool		gcs_readable = false;
	int			settled_since_wait = 0;

	while (!ShutdownRequestPending)
	{
		MemoryContext old;
		bool		more;
		long		timeout = -1;
		long		settle_timeout;
		int			in_progress;
		int			settled;
		int			user_messages;
		bool		stream_continues;
		WaitEvent	events[1 + IMSG_GCS_MAX_FDS];
		int			nevents;
		int			i;

		MemoryContextReset(loop_context);
		old = MemoryContextSwitchTo(loop_context);

		CHECK_FOR_INTERRUPTS();
		if (ConfigReloadPending)
		{
			ConfigReloadPending = false;
			ProcessConfigFile(PGC_SIGHUP);
		}

		gcs_try_connect();
		more = drain_mailbox(&user_messages);
		if (gcs_connected && (gcs_readable || gcs->pending()))
		{
			gcs_readable = false;
			if (!gcs->dispatch())
				gcs_lost();
		}
		publish_order_state();
		retry_sends();
		imsg_helpers_check();
		requeue_orphaned_jobs();
		run_pending_jobs();
		run_apply_queue();
		in_progress = settle_inflight(&settled);
		/*
		 * Counted until we sleep: the pass that settles a change set may not
		 * be the last before it (the local GCS delivers it in the next).
		 */
		settled_since_wait += settled;
		MemoryContextSwitchTo(old);
		publish_memory();

		if (more || (gcs_connected && gcs->pending()))
			continue;

		/*
		 * A pass that took several user messages is most likely in a
		 * stream from imsg_send: look for more for a while
		 * (imsg_poll_mailbox) rather than sleep, which costs the sender a
		 * kill() per wake-up and us a context switch.  If some came, take
		 * them after a wait that does not block, so that the GCS socket and
		 * the postmaster are still watched.  A single message (an
		 * occasional sender) is not worth the poll's CPU.  Nor while change
		 * sets are committing or were just settled: the settle_delay timer
		 * below looks after those, and polling then takes CPU from the
		 * committing backends.
		 */
		stream_continues = user_messages > 1 && in_progress == 0 &&
			settled_since_wait == 0 && imsg_poll_mailbox();

		/*
		 * Transactions with change sets are committing (some we hold are
		 * in progress, or we just settled some): rather than have each one
		 * wake us at COMMIT (a kill() per transaction, which on a busy
		 * server costs more than the settling), look again within
		 * settle_delay, and say so.  Otherwise say that we sleep until
		 * woken, then look at the mailbox once more: a backend that saw the
		 * old flag skipped its SetLatch, but the barrier pairs with the one
		 * in imsg_cs_wake_manager (Dekker), so either it sees the cleared
		 * flag and wakes us, or we see the message it queued before.  (If
		 * an earlier message is still being written, we stop at it; its
		 * writer wakes us when it commits or cancels it, or, if it is a
		 * quiet final chunk, its own COMMIT or ABORT callback reads the
		 * flag after our clear and wakes us.)
		 */
		if ((in_progress > 0 || settled_since_wait > 0) && imsg_settle_delay_ms > 0)
		{
			/* every backend reads the flag at commit: write it on change only */
			if (pg_atomic_read_u32(&ImsgManagerState->settle_polling) == 0)
				pg_atomic_write_u32(&ImsgManagerState->settle_polling, 1);
			settle_timeout = imsg_settle_delay_ms;
		}
		else
		{
			settle_timeout = -1;
			if (pg_atomic_read_u32(&ImsgManagerState->settle_polling) != 0)
			{
				pg_atomic_write_u32(&ImsgManagerState->settle_polling, 0);
				pg_memory_barrier();
				if (imsg_mailbox_has_ready())
					continue;
			}
		}

		if (wait_set_stale)
			set = build_wait_set(set);
		timeout = imsg_helpers_next_timeout();
		if (pending_jobs != NIL)
			timeout = min_timeout(timeout, 1000);
		/* backstop for change sets whose backend died: recheck often */
		if (!dlist_is_empty(&inflight))
			timeout = min_timeout(timeout, 10);
		if (settle_timeout >= 0)
			timeout = min_timeout(timeout, settle_timeout);
		/* a partial message whose sender may leave: see it go */
		if (imsg_assembler_count(&assembler) > 0)
			timeout = min_timeout(timeout, 1000);
		/* messages waiting for room: look again soon */
		if (retry_list != NIL)
			timeout = min_timeout(timeout, 10);
		/* a remote change set waits for a helper (or room to send it) */
		if (apply_queue != NIL && apply_slot < 0)
			timeout = min_timeout(timeout, 10);
		if (!gcs_connected)
			timeout = min_timeout(timeout, IMSG_GCS_RETRY_MS);
		else if (gcs->next_timeout)
			timeout = min_timeout(timeout, gcs->next_timeout());
		if (stream_continues)
			timeout = 0;

		nevents = WaitEventSetWait(set, timeout, events, lengthof(events),
								   PG_WAIT_EXTENSION);
		settled_since_wait = 0;
		for (i = 0; i < nevents; i++)
		{
			if (events[i].events & WL_LATCH_SET)
				ResetLatch(MyLatch);
			if (events[i].events & WL_SOCKET_READABLE)
				gcs_readable = true;
		}
	}
	if (set != NULL)
		FreeWaitEventSet(set);
}

void
imsg_manager_main(Datum main_arg)
{
	ImsgArea   *area = ImsgAreaPtr;
	ImsgMailbox *mb;

	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	pqsignal(SIGTERM, SignalHandlerForShutdownRequest);
	BackgroundWorkerUnblockSignals();

	/* no database: this makes it visible in pg_stat_activity */
	BackgroundWorkerInitializeConnection(NULL, NULL, 0);

	loop_context = AllocSetContextCreate(TopMemoryContext,
										 "imessages manager loop",
										 ALLOCSET_DEFAULT_SIZES);
	jobs_context = AllocSetContextCreate(TopMemoryContext,
										 "imessages manager jobs",
										 ALLOCSET_SMALL_SIZES);
	cs_context = AllocSetContextCreate(TopMemoryContext,
									   "imessages manager change sets",
									   ALLOCSET_DEFAULT_SIZES);
	{
		HASHCTL		ctl;

		ctl.keysize = sizeof(InflightKey);
		ctl.entrysize = sizeof(Inflight);
		ctl.hcxt = cs_context;
		inflight_by_key = hash_create("imessages manager change sets in flight", 256,
									  &ctl, HASH_ELEM | HASH_BLOBS | HASH_CONTEXT);
	}
	imsg_assembler_init(&assembler, "imessages manager assembly", partial_dropped);
	gcs = imsg_gcs_ops();

	ImsgOpenMailbox();
	mb = imsg_my_mailbox();
	imsg_helpers_init();

	/* registered after the mailbox's callback, so it runs before it */
	on_shmem_exit(imsg_manager_unregister, (Datum) 0);

	SpinLockAcquire(&ImsgManagerState->mutex);
	ImsgManagerState->pid = MyProcPid;
	ImsgManagerState->started_at = GetCurrentTimestamp();
	strlcpy(ImsgManagerState->gcs, gcs->name, sizeof(ImsgManagerState->gcs));
	ImsgManagerState->group_members = 0;
	ImsgManagerState->change_sets_to_apply = 0;
	ImsgManagerState->group_quorate = false;
	ImsgManagerState->certification_rows = 0;
	SpinLockRelease(&ImsgManagerState->mutex);
	imsg_local_writes_reset();

	/*
	 * A previous manager may have exited with settle_polling set: clear it
	 * before backends can find us, or one could skip the wake-up for a
	 * change set we would never look at.  The barrier orders the clear
	 * before the publication of manager_ident below.
	 */
	pg_atomic_write_u32(&ImsgManagerState->settle_polling, 0);
	pg_memory_barrier();

	SpinLockAcquire(&area->manager_lock);
	area->manager_pid = MyProcPid;
	SpinLockRelease(&area->manager_lock);
	pg_atomic_write_u64(&area->manager_ident,
						IMSG_MANAGER_IDENT(MyProc->pgprocno, mb->generation));

	ereport(LOG,
			(errmsg("imessages manager started (group communication: %s)", gcs->name)));

	PG_TRY();
	{
		manager_loop();
	}
	PG_CATCH();
	{
		ErrorData  *edata;

		MemoryContextSwitchTo(TopMemoryContext);
		edata = CopyErrorData();
		imsg_manager_set_error(edata->message);
		FreeErrorData(edata);
		PG_RE_THROW();
	}
	PG_END_TRY();

	ereport(LOG, (errmsg("imessages manager shutting down")));
	/* status 1: the postmaster starts a new manager unless it is shutting down */
	proc_exit(1);
}
