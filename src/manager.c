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
 * Change sets the GCS delivers are certified and numbered here
 * (deliver_changeset), then go to manager_own.c (ours) or manager_apply.c
 * (other nodes'); pings and helper jobs are manager_jobs.c's.  See
 * manager_int.h for what the parts share.
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

#include "miscadmin.h"
#include "nodes/pg_list.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "storage/proc.h"
#include "utils/guc.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"

#include "manager_int.h"
#include "mailbox_int.h"
#include "changeset_int.h"
#include "changeset_reader.h"
#include "cslog.h"

#define IMSG_MANAGER_BATCH		256
#define IMSG_MANAGER_RESTART_S	1
#define IMSG_GCS_RETRY_MS		1000

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

static MemoryContext loop_context = NULL;
static MemoryContext send_context = NULL;	/* retry_list */
static ImsgAssembler assembler;	/* large messages, from backends */
static List *retry_list = NIL;

static bool retry_waiting_for(int pid, RetrySend *upto);
const ImsgGcsOps *imsg_mgr_gcs = NULL;
bool		imsg_mgr_gcs_connected = false;
static int	gcs_failures = 0;		/* connection attempts failed in a row */
static TimestampTz gcs_failure_logged = 0;
static TimestampTz gcs_retry_at = 0;
static bool wait_set_stale = true;
static uint64 last_logged = 0;	/* the log's last position at its last write */
static bool log_unsynced = false;

#define IMSG_LOG_SYNC_MS	100
#define IMSG_SHUTDOWN_DRAIN_MS	5000

typedef void (*ImsgHandler) (ImsgWhole *msg);

static void handle_user_message(ImsgWhole *msg);

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
	{IMSG_T_PING, imsg_mgr_handle_ping},
	{IMSG_T_HELPER_READY, imsg_mgr_handle_helper_ready},
	{IMSG_T_JOB_DONE, imsg_mgr_handle_job_done},
	{IMSG_T_CHANGESET, imsg_mgr_handle_changeset},
	{IMSG_T_CS_APPLIED, imsg_mgr_handle_cs_applied},
	{IMSG_T_STATE_INFO, imsg_mgr_handle_state_info},
	{IMSG_T_CS_FETCHED, imsg_mgr_handle_cs_fetched},
	{IMSG_T_CATCH_UP_DONE, imsg_mgr_handle_catch_up_done},
	{IMSG_T_PAUSE_APPLY, imsg_mgr_handle_pause_apply},
	{IMSG_T_RESUME_APPLY, imsg_mgr_handle_resume_apply},
	{IMSG_T_TRANSFER_DONE, imsg_mgr_handle_transfer_done},
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
		MemoryContext old = MemoryContextSwitchTo(send_context);
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
	/* (never IMSG_OVER_QUOTA: the manager's sends ignore quotas) */
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
	pg_atomic_write_u32(&ImsgManagerState->node_state, IMSG_NODE_DISCONNECTED);
	if (imsg_mgr_gcs_connected)
		imsg_mgr_gcs->disconnect();
	imsg_mgr_gcs_connected = false;

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


/*
 * May this node order messages now?  It must be connected to the GCS and,
 * if the GCS has a notion of quorum, in the primary component: what a node
 * cut off from the others multicasts is delivered to it alone.
 */
ImsgCsOutcome
imsg_mgr_order_state(void)
{
	if (!imsg_mgr_gcs_connected)
		return IMSG_CS_OUTCOME_NO_GROUP;
	if (imsg_mgr_gcs->quorate != NULL && !imsg_mgr_gcs->quorate())
		return IMSG_CS_OUTCOME_NO_QUORUM;
	/* a node that is not synced orders nothing of its own */
	if (!imsg_mgr_gcs->single_node && !imsg_mgr_state_writable())
		return IMSG_CS_OUTCOME_NO_QUORUM;
	return IMSG_CS_OUTCOME_ORDERED;
}

/* For log lines; ORDERED here means the GCS refused the multicast. */
const char *
imsg_mgr_order_state_text(ImsgCsOutcome state)
{
	return state == IMSG_CS_OUTCOME_NO_QUORUM ? "this node has no quorum in" : "this node is not connected to";
}

/* Keep imsg_manager_status().group_quorate current, and log its changes. */
static void
publish_order_state(void)
{
	static bool published = false;
	bool		now;

	/* the GCS's view of it: a node that is not synced says so itself */
	now = imsg_mgr_gcs_connected &&
		(imsg_mgr_gcs->quorate == NULL || imsg_mgr_gcs->quorate());
	if (now == published)
		return;
	published = now;
	SpinLockAcquire(&ImsgManagerState->mutex);
	ImsgManagerState->group_quorate = now;
	SpinLockRelease(&ImsgManagerState->mutex);
	if (imsg_mgr_gcs_connected && imsg_mgr_gcs->quorate != NULL)
		ereport(LOG,
				(errmsg(now ? "imessages manager: this node is quorate in \"%s\": change sets are ordered again"
						: "imessages manager: this node lost quorum in \"%s\": sync commits fail, async change sets are held",
						imsg_mgr_gcs->name)));
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

/* A user message: hand it to the group; it counts once delivered. */
static void
handle_user_message(ImsgWhole *msg)
{
	static const char kind = GCS_USER_MESSAGE;

	/* the kind byte and the payload go out without a copy here */
	if (imsg_mgr_order_state() != IMSG_CS_OUTCOME_ORDERED ||
		!imsg_mgr_gcs->multicast(&kind, 1, msg->data, msg->len))
		ereport(LOG,
				(errmsg("imessages manager dropped message %llu: the group communication system \"%s\" is not connected or this node has no quorum",
						(unsigned long long) (msg->msg ? ImsgMessageId(msg->msg) : 0),
						imsg_mgr_gcs->name)));
}

/*
 * Count a change set as delivered and keep it in the ring.  The number of
 * changes recorded is what the read of the change set found ('counted',
 * -1 if malformed), so a change set that lost or garbled a part on the
 * way shows up (and is logged).
 */
void
imsg_mgr_record_delivered(uint64 seq, int origin_pid, uint64 xid, int32 nchanges,
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

/* imsg_certify, and publish the size of its map */
static bool
certify_changeset(uint64 position, const char *node, const ImsgGcsChangeset *c,
				  const ImsgCsSummary *summary, char *winner, Size winner_len)
{
	bool		ok = imsg_certify(position, node, c->mgr_pid, c->counter, c->sync,
								  c->seen, c->nseen, summary->rows, summary->nrows,
								  summary->checks, summary->writes, summary->ntables,
								  winner, winner_len);
	int64		rows = imsg_certification_rows();

	SpinLockAcquire(&ImsgManagerState->mutex);
	ImsgManagerState->certification_rows = rows;
	SpinLockRelease(&ImsgManagerState->mutex);
	return ok;
}

/*
 * A change set delivered before this node joined (from the change-set log,
 * its own or a donor's), whose outcome the group decided then: recorded in
 * the certification map as it was on the others, so that this node
 * certifies what comes next as they do.
 */
void
imsg_mgr_certify_replay(const char *origin, uint64 position, uint8 flags,
						const char *data, Size len)
{
	ImsgGcsChangeset c;
	ImsgCsSummary summary;
	char		winner[NAMEDATALEN + 16];

	if ((flags & IMSG_LOG_LOST) || position <= imsg_certified_position() ||
		!imsg_gcs_changeset_parse(data, len, &c))
		return;
	(void) imsg_changeset_summarize(c.cs, c.cslen, true, &summary);
	(void) imsg_certify(position, origin, c.mgr_pid, c.counter, false,
						c.seen, c.nseen, summary.rows, summary.nrows,
						summary.checks, summary.writes, summary.ntables,
						winner, sizeof(winner));
	imsg_changeset_summary_free(&summary);
}

/*
 * A change set delivered by the GCS in total order: position it, certify it
 * (sync ones; see certify.c), log it, and settle, apply or answer it.
 * Every delivered change set has a position, winner or loser, so that
 * positions do not depend on certification (see manager_state.c).
 */
void
imsg_mgr_deliver_changeset(const char *origin, const char *data, Size len)
{
	ImsgGcsChangeset c;
	uint64		seq;
	bool		mine = strcmp(origin, imsg_my_node_name()) == 0;
	bool		single_node = imsg_mgr_gcs->single_node;
	ImsgCsSummary summary;
	bool		won;
	int			summary_count;
	char		winner[NAMEDATALEN + 16];

	if (!imsg_gcs_changeset_parse(data, len, &c))
	{
		/* every node drops it alike: the same bytes are delivered to all */
		ereport(LOG,
				(errmsg("imessages manager dropped a change set of node \"%s\": it is malformed",
						origin)));
		return;
	}

	/*
	 * The one read of the change set here: its count for the delivered
	 * record, its rows for certification.  A damaged one certifies with no
	 * rows and is logged by imsg_mgr_record_delivered.  A group of one has
	 * nothing to certify against, nor a map to keep.
	 */
	SpinLockAcquire(&ImsgManagerState->mutex);
	seq = ImsgManagerState->last_seq + 1;
	SpinLockRelease(&ImsgManagerState->mutex);
	if (!single_node && imsg_mgr_already_have(seq))
		return;					/* a full state transfer brought it */
	(void) imsg_changeset_summarize(c.cs, c.cslen, !single_node, &summary);
	won = single_node ||
		certify_changeset(seq, origin, &c, &summary, winner, sizeof(winner));
	summary_count = summary.nchanges;

	/* nothing to wait for: a loser, or our own async one (committed) */
	(void) imsg_mgr_next_position(!won || (mine && !c.sync));
	if (!single_node)
		imsg_cslog_append(seq, origin, c.mgr_pid, c.counter, c.xid,
						  won ? 0 : IMSG_LOG_LOST, data, len);

	if (!won)
	{
		imsg_changeset_summary_free(&summary);
		/* the later of two conflicting change sets: aborted, applied nowhere */
		SpinLockAcquire(&ImsgManagerState->mutex);
		ImsgManagerState->change_sets_conflicted++;
		SpinLockRelease(&ImsgManagerState->mutex);
		ereport(DEBUG1,
				(errmsg("imessages manager: change set of transaction %llu of node \"%s\" conflicts with one of %s delivered before it",
						(unsigned long long) c.xid, origin, winner)));
		if (mine)
			imsg_mgr_own_conflict(c.origin_pid, c.xid);
		return;
	}

	if (!mine)
	{
		/* another node's: delivered here, to be applied by a helper */
		imsg_mgr_record_delivered(seq, c.origin_pid, c.xid, c.nchanges, summary_count,
								  c.cs, c.cslen);
		/*
		 * (its rows: which change sets it may be applied beside; one with
		 * a statement goes alone, after those before it and before those
		 * after it)
		 */
		imsg_mgr_queue_remote(seq, origin, c.mgr_pid, c.counter, !c.sync, c.xid,
							  c.cs, c.cslen, summary.has_statement,
							  summary.rows,
							  summary.nchanges >= 0 && !single_node &&
							  !summary.has_statement ? summary.nrows : -1);
		imsg_changeset_summary_free(&summary);
		return;
	}
	imsg_changeset_summary_free(&summary);

	/* ours: remote change sets delivered before it must not overwrite it */
	if (!single_node)
		imsg_mgr_own_delivered(c.xid, seq);
	if (!c.sync)
	{
		/* multicast only after its commit: delivered now */
		imsg_mgr_record_delivered(seq, c.origin_pid, c.xid, c.nchanges, summary_count,
								  c.cs, c.cslen);
		return;
	}

	/* sync: tell the waiting backend */
	imsg_mgr_own_ordered(c.origin_pid, c.xid, seq, summary_count);
}

/* Called by the GCS for each message it delivers, in total order. */
void
imsg_gcs_deliver(const char *origin, uint32 nodeid, uint32 pid,
				 const void *data, Size len)
{
	const char *p = data;

	if (len >= 1 && p[0] == GCS_STATE)
		imsg_mgr_state_message(nodeid, pid, p, len);
	else if (len >= 1 && p[0] == GCS_FLOW)
		imsg_mgr_flow_message(origin, p, len);
	else if (len >= GCS_CS_HEADER && p[0] == GCS_CHANGESET)
	{
		if (imsg_mgr_state_can_position())
			imsg_mgr_deliver_changeset(origin, p, len);
		else if (imsg_mgr_state_should_hold())
			imsg_mgr_state_hold(origin, p, len);
		else
			ereport(DEBUG1,
					(errmsg("imessages manager ignored a change set of node \"%s\" delivered while this node is %s",
							origin, imsg_node_state_name(imsg_mgr_node_state()))));
	}
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
		static int	published = 0;
		int			partial = imsg_assembler_sweep(&assembler);

		/* imsg_manager_status(); rarely nonzero: no lock per pass */
		if (partial != published)
		{
			SpinLockAcquire(&ImsgManagerState->mutex);
			ImsgManagerState->messages_in_assembly = partial;
			SpinLockRelease(&ImsgManagerState->mutex);
			published = partial;
		}
	}
	return n == IMSG_MANAGER_BATCH;
}

/*
 * The change-set log: what a pass appended is written at its end, and
 * synced to disk at most every IMSG_LOG_SYNC_MS (and when the manager
 * exits): the log serves recovery, and a node whose last records did not
 * reach the disk holds a lower position and fetches them again.
 */
static void
log_write(void)
{
	static TimestampTz synced_at = 0;
	TimestampTz now;

	if (imsg_mgr_gcs->single_node)
		return;
	if (imsg_cslog_last_position() != last_logged)
	{
		imsg_cslog_write();
		last_logged = imsg_cslog_last_position();
		log_unsynced = true;
	}
	if (!log_unsynced)
		return;
	now = GetCurrentTimestamp();
	if (TimestampDifferenceExceeds(synced_at, now, IMSG_LOG_SYNC_MS))
	{
		imsg_cslog_sync();
		synced_at = now;
		log_unsynced = false;
	}
}

static void
gcs_try_connect(void)
{
	TimestampTz now = GetCurrentTimestamp();

	if (imsg_mgr_gcs_connected || now < gcs_retry_at)
		return;
	imsg_mgr_gcs_connected = imsg_mgr_gcs->connect();
	wait_set_stale = true;
	if (!imsg_mgr_gcs_connected)
	{
		gcs_retry_at = TimestampTzPlusMilliseconds(now, IMSG_GCS_RETRY_MS);
		/* the first failure, then once a minute */
		if (gcs_failures++ == 0 ||
			TimestampDifferenceExceeds(gcs_failure_logged, now, 60 * 1000))
		{
			ereport(LOG,
					(errmsg("imessages manager could not join the group through \"%s\"; retrying every %d ms",
							imsg_mgr_gcs->name, IMSG_GCS_RETRY_MS),
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
	ereport(LOG,
			(errmsg("imessages manager lost its connection to \"%s\"; reconnecting",
					imsg_mgr_gcs->name)));

	imsg_mgr_own_gcs_lost();
	imsg_mgr_state_gcs_lost();
	imsg_mgr_flow_reset();
	imsg_mgr_gcs->disconnect();
	imsg_mgr_gcs_connected = false;
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
	if (imsg_mgr_gcs_connected)
		nfds = imsg_mgr_gcs->wait_fds(fds, IMSG_GCS_MAX_FDS);
	set = CreateWaitEventSet(TopMemoryContext, 2 + nfds);
	AddWaitEventToSet(set, WL_LATCH_SET, PGINVALID_SOCKET, MyLatch, NULL);
	AddWaitEventToSet(set, WL_EXIT_ON_PM_DEATH, PGINVALID_SOCKET, NULL, NULL);
	for (i = 0; i < nfds; i++)
		AddWaitEventToSet(set, WL_SOCKET_READABLE, fds[i], NULL, NULL);
	wait_set_stale = false;
	return set;
}

long
imsg_mgr_min_timeout(long a, long b)
{
	if (a < 0)
		return b;
	if (b < 0)
		return a;
	return Min(a, b);
}

/*
 * How long the loop may sleep: the soonest any part wants another pass
 * (-1: until woken).
 */
static long
next_timeout(long settle_timeout)
{
	long		timeout = settle_timeout;

	timeout = imsg_mgr_min_timeout(timeout, imsg_helpers_next_timeout());
	timeout = imsg_mgr_min_timeout(timeout, imsg_mgr_jobs_next_timeout());
	timeout = imsg_mgr_min_timeout(timeout, imsg_mgr_own_next_timeout());
	timeout = imsg_mgr_min_timeout(timeout, imsg_mgr_apply_next_timeout());
	timeout = imsg_mgr_min_timeout(timeout, imsg_mgr_state_next_timeout());
	if (log_unsynced)
		timeout = imsg_mgr_min_timeout(timeout, IMSG_LOG_SYNC_MS);
	/* a partial message whose sender may leave: see it go */
	if (imsg_assembler_count(&assembler) > 0)
		timeout = imsg_mgr_min_timeout(timeout, 1000);
	/* messages waiting for room: look again soon */
	if (retry_list != NIL)
		timeout = imsg_mgr_min_timeout(timeout, 10);
	if (!imsg_mgr_gcs_connected)
		timeout = imsg_mgr_min_timeout(timeout, IMSG_GCS_RETRY_MS);
	else if (imsg_mgr_gcs->next_timeout)
		timeout = imsg_mgr_min_timeout(timeout, imsg_mgr_gcs->next_timeout());
	return timeout;
}

/*
 * Asked to stop: go on for up to IMSG_SHUTDOWN_DRAIN_MS while this node's
 * committed change sets are still on their way to the group (in our
 * mailbox, in flight, or in the GCS's send queue), so that a clean stop
 * (pg_ctl -m fast) does not lose an async transaction that committed just
 * before it: the others would never get it, and this node would hold rows
 * the group has not.  True while draining; a node that cannot order them
 * (not synced) does not wait.
 */
static bool
shutdown_drained(TimestampTz *since)
{
	bool		pending;

	if (*since == 0)
		*since = GetCurrentTimestamp();
	pending = imsg_mailbox_has_ready() || imsg_mgr_own_pending() ||
		(imsg_mgr_gcs_connected && imsg_mgr_gcs->pending());
	if (!pending || imsg_mgr_gcs->single_node ||
		imsg_mgr_order_state() != IMSG_CS_OUTCOME_ORDERED)
		return false;
	if (TimestampDifferenceExceeds(*since, GetCurrentTimestamp(), IMSG_SHUTDOWN_DRAIN_MS))
	{
		ereport(LOG,
				(errmsg("imessages manager stops with change sets of this node not yet sent to the group")));
		return false;
	}
	return true;
}

static void
manager_loop(void)
{
	WaitEventSet *set = NULL;
	bool		gcs_readable = false;
	int			settled_since_wait = 0;

	TimestampTz shutdown_at = 0;

	for (;;)
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
		if (ShutdownRequestPending && !shutdown_drained(&shutdown_at))
			break;
		if (ConfigReloadPending)
		{
			ConfigReloadPending = false;
			ProcessConfigFile(PGC_SIGHUP);
		}
		imsg_mgr_state_debug_skip();

		gcs_try_connect();
		more = drain_mailbox(&user_messages);
		if (imsg_mgr_gcs_connected && (gcs_readable || imsg_mgr_gcs->pending()))
		{
			gcs_readable = false;
			if (!imsg_mgr_gcs->dispatch())
				gcs_lost();
		}
		publish_order_state();
		retry_sends();
		imsg_helpers_check();
		imsg_mgr_jobs_run();
		imsg_mgr_state_run();
		imsg_mgr_apply_run();
		imsg_mgr_flow_run();
		in_progress = imsg_mgr_own_settle(&settled);
		/*
		 * Counted until we sleep: the pass that settles a change set may not
		 * be the last before it (the local GCS delivers it in the next).
		 */
		settled_since_wait += settled;
		MemoryContextSwitchTo(old);
		publish_memory();
		log_write();

		/*
		 * What this pass multicast goes out now, together: the change sets
		 * of backends that committed at the same time in one GCS packet,
		 * and a lone one without waiting for company (gcs_corosync.c).
		 */
		if (imsg_mgr_gcs_connected && imsg_mgr_gcs->flush != NULL &&
			!imsg_mgr_gcs->flush())
			gcs_lost();

		if (more || (imsg_mgr_gcs_connected && imsg_mgr_gcs->pending()))
			continue;

		/*
		 * A pass that took several user messages is most likely in a
		 * stream from imsg_send: look for more for a while, in short
		 * sleeps that leave the CPU to the sender (imsg_poll_mailbox),
		 * rather than sleep on the latch, which costs the sender a kill()
		 * per wake-up and us a context switch.  If some came, take them
		 * after a wait that does not block, so that the GCS socket and the
		 * postmaster are still watched.  A single message (an
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
		 * quiet last part, its own COMMIT or ABORT callback reads the
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
		timeout = stream_continues ? 0 : next_timeout(settle_timeout);
		/* what t/030 counts: a sleep a sender may have to end with a kill() */
		if (timeout != 0)
			elog(DEBUG2, "imessages manager waits on its latch");

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
	send_context = AllocSetContextCreate(TopMemoryContext,
										 "imessages manager sends",
										 ALLOCSET_SMALL_SIZES);
	imsg_mgr_gcs = imsg_gcs_ops();
	imsg_mgr_jobs_init();
	imsg_mgr_own_init();
	imsg_mgr_apply_init();
	imsg_mgr_flow_reset();		/* (a pause of the manager before us ends) */
	imsg_mgr_state_init();
	imsg_assembler_init(&assembler, "imessages manager assembly", partial_dropped);

	/* our sends ignore quotas; our mailbox has the manager's (mailbox.c) */
	imsg_mailbox_set_internal(true);
	ImsgOpenMailbox();
	mb = imsg_my_mailbox();
	imsg_helpers_init();

	/* registered after the mailbox's callback, so it runs before it */
	on_shmem_exit(imsg_manager_unregister, (Datum) 0);

	SpinLockAcquire(&ImsgManagerState->mutex);
	ImsgManagerState->pid = MyProcPid;
	ImsgManagerState->started_at = GetCurrentTimestamp();
	strlcpy(ImsgManagerState->gcs, imsg_mgr_gcs->name, sizeof(ImsgManagerState->gcs));
	ImsgManagerState->group_members = 0;
	ImsgManagerState->change_sets_to_apply = 0;
	ImsgManagerState->group_quorate = false;
	ImsgManagerState->certification_rows = 0;
	ImsgManagerState->messages_in_assembly = 0;
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
			(errmsg("imessages manager started (group communication: %s)", imsg_mgr_gcs->name)));

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

	/* what the log holds is on disk: a clean stop loses no position */
	if (!imsg_mgr_gcs->single_node)
		imsg_cslog_sync();
	ereport(LOG, (errmsg("imessages manager shutting down")));
	/* status 1: the postmaster starts a new manager unless it is shutting down */
	proc_exit(1);
}
