/*-------------------------------------------------------------------------
 *
 * manager_apply.c
 *	  Other nodes' change sets in the manager: delivered in total order,
 *	  queued, and handed one at a time to a helper that applies them (see
 *	  helpers.c and apply.c), so that every node applies them in the same
 *	  order.  Also the ring of this node's own delivered change sets that
 *	  remote ones still to be applied precede (see local_writes.c).
 *
 * Copyright (c) 2026, imessages developers
 *
 * IDENTIFICATION
 *	  src/manager_apply.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/transam.h"
#include "nodes/pg_list.h"
#include "utils/memutils.h"

#include "manager_int.h"
#include "changeset_int.h"

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

static MemoryContext apply_context = NULL;
static List *apply_queue = NIL;
static int	apply_slot = -1;		/* helper applying the head, or -1 */
static int	apply_pid = 0;

static void prune_own_delivered(void);

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

void
imsg_mgr_queue_remote(uint64 seq, const char *origin, int32 origin_pid,
					  uint64 counter, bool overwrite, uint64 xid,
					  const char *cs, Size cslen)
{
	MemoryContext old = MemoryContextSwitchTo(apply_context);
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
void
imsg_mgr_apply_run(void)
{
	RemoteChangeset *r;
	int			pid;
	int			slot;
	char		head_data[8 + 4 + NAMEDATALEN + 4 + 8 + 1 + 8];
	ImsgBuffer	head;

	if (apply_queue == NIL)
		return;
	if (imsg_mgr_node_state() != IMSG_NODE_SYNCED &&
		imsg_mgr_node_state() != IMSG_NODE_CATCHING_UP)
		return;					/* keep them; a catch-up may drop them */
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

	/*
	 * In position order, and only once everything before it is done (our
	 * own sync change sets before it committed): the helper's transaction
	 * records it as the applied position, which must then hold for every
	 * position before it, or a crash would skip one.
	 */
	r = linitial(apply_queue);
	if (!imsg_mgr_position_is_next(r->seq))
		return;
	slot = imsg_helper_pick(&pid, NULL);
	if (slot < 0)
		return;					/* one is starting; the loop comes back */

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
void
imsg_mgr_handle_cs_applied(ImsgWhole *msg)
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
	imsg_mgr_position_done(r->seq);
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

void
imsg_mgr_own_delivered(uint64 full_xid, uint64 seq)
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

void
imsg_mgr_apply_init(void)
{
	apply_context = AllocSetContextCreate(TopMemoryContext,
										  "imessages manager apply queue",
										  ALLOCSET_DEFAULT_SIZES);
}

/* A remote change set waits for a helper (or room to send it). */
long
imsg_mgr_apply_next_timeout(void)
{
	return apply_queue != NIL && apply_slot < 0 ? 10 : -1;
}

/* Is no remote change set being applied? */
bool
imsg_mgr_apply_idle(void)
{
	return apply_slot < 0;
}

/*
 * Forget the queue (a catch-up applies those change sets again, from the
 * change-set log, in order); the one being applied is let finish.
 */
void
imsg_mgr_apply_drop_queue(void)
{
	ListCell   *lc;

	if (apply_slot >= 0 && apply_queue != NIL)
	{
		/* keep the head: its report comes */
		foreach(lc, apply_queue)
		{
			RemoteChangeset *r = lfirst(lc);

			if (foreach_current_index(lc) == 0)
				continue;
			pfree(r->data);
			pfree(r);
			apply_queue = foreach_delete_current(apply_queue, lc);
		}
	}
	else
	{
		foreach(lc, apply_queue)
		{
			RemoteChangeset *r = lfirst(lc);

			pfree(r->data);
			pfree(r);
		}
		list_free(apply_queue);
		apply_queue = NIL;
	}
	publish_apply_queue();
	prune_own_delivered();
}
