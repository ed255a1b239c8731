/*-------------------------------------------------------------------------
 *
 * manager_own.c
 *	  This node's change sets in the manager, from their arrival (sent by
 *	  the backend at PRE_COMMIT) until they are settled: multicast once
 *	  their transaction committed (async) or at once (sync, whose backend
 *	  waits for the answer), discarded if it did not commit.
 *
 * The manager never trusts a change set's arrival: the transaction can
 * still fail after PRE_COMMIT.  It asks the commit log (in progress, then
 * committed) before a change set counts; see imsg_mgr_own_settle.
 *
 * Copyright (c) 2026, imessages developers
 *
 * IDENTIFICATION
 *	  src/manager_own.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/transam.h"
#include "lib/ilist.h"
#include "miscadmin.h"
#include "storage/procarray.h"
#include "utils/hsearch.h"
#include "utils/memutils.h"

#include "manager_int.h"
#include "changeset_int.h"

/*
 * Where one of this node's change sets is, from its arrival (whole) to its
 * settling (see imsg_mgr_own_settle):
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

static MemoryContext cs_context = NULL;
static HTAB *inflight_by_key = NULL;
static dlist_head inflight = DLIST_STATIC_INIT(inflight);

/* Our own change sets, numbered for certification (certify.c). */
static uint64 own_counter = 0;

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
	ImsgSeen	now[IMSG_MAX_GROUP_MEMBERS];
	const ImsgSeen *seen = e->seen;
	int			nseen = e->nseen;

	if (!imsg_mgr_gcs_connected)
		return false;
	if (e->counter == 0)
		e->counter = ++own_counter;
	if (seen == NULL)
	{
		/* a group of one sends none: what this node applied now */
		nseen = imsg_seen_snapshot(now);
		seen = now;
	}

	ImsgBufferInitWriter(&head, head_data, sizeof(head_data));
	ImsgBufferPutInt8(&head, GCS_CHANGESET);
	ImsgBufferPutInt32(&head, e->key.origin_pid);
	ImsgBufferPutInt64(&head, (int64) e->key.xid);
	ImsgBufferPutInt32(&head, e->nchanges);
	ImsgBufferPutInt8(&head, e->sync ? 1 : 0);
	ImsgBufferPutInt32(&head, MyProcPid);
	ImsgBufferPutInt64(&head, (int64) e->counter);
	imsg_seen_encode(&head, seen, nseen);
	return imsg_mgr_gcs->multicast(head.data, head.len, e->cs, e->cslen);
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
void
imsg_mgr_handle_changeset(ImsgWhole *msg)
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
		(void) imsg_mgr_own_settle(&settled);
		state = imsg_mgr_order_state();

		if (state == IMSG_CS_OUTCOME_ORDERED && multicast_changeset(e))
			e->state = INFLIGHT_MULTICAST;
		else
		{
			/* fail the commit now rather than at commit_timeout */
			if (state == IMSG_CS_OUTCOME_ORDERED)
				state = IMSG_CS_OUTCOME_NO_GROUP;
			ereport(LOG,
					(errmsg("imessages manager could not multicast the change set of transaction %llu: %s \"%s\"",
							(unsigned long long) xid, imsg_mgr_order_state_text(state), imsg_mgr_gcs->name)));
			e->state = INFLIGHT_ANSWERED;
			reply_ordered(e->key.origin_pid, xid, 0, state);
		}
	}
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
int
imsg_mgr_own_settle(int *settled)
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
		{
			imsg_mgr_record_delivered(e->seq, e->key.origin_pid, e->key.xid,
									  e->nchanges, e->counted, e->cs, e->cslen);
			imsg_mgr_position_done(e->seq);
		}
		else if (e->sync && e->seq != 0 && !imsg_mgr_gcs->single_node)
		{
			/*
			 * Ordered, so every other node applies it, but its transaction
			 * failed after PRE_COMMIT here: apply it here too, as a remote
			 * one (the helper sees that its transaction did not commit).
			 */
			ereport(LOG,
					(errmsg("imessages manager: transaction %llu did not commit after its change set was ordered at position %llu; a helper applies it",
							(unsigned long long) e->key.xid, (unsigned long long) e->seq)));
			imsg_mgr_queue_remote(e->seq, imsg_my_node_name(), MyProcPid, e->counter,
								  false, e->key.xid, e->cs, e->cslen, false, NULL, -1);
		}
		else if (committed)
		{
			ImsgCsOutcome state = imsg_mgr_order_state();

			if (state == IMSG_CS_OUTCOME_ORDERED && multicast_changeset(e))
				 /* handed over */ ;
			else
			{
				/* keep it, in commit order, and retry */
				if (e->state != INFLIGHT_HELD)
					ereport(LOG,
							(errmsg("imessages manager holds the change set of transaction %llu: %s \"%s\"",
									(unsigned long long) e->key.xid,
									imsg_mgr_order_state_text(state),
									imsg_mgr_gcs->name),
							 errdetail("It is sent when the node is back in the group.")));
				e->state = INFLIGHT_HELD;
				continue;
			}
		}
		else
		{
			count_discarded(e);
			if (e->sync && e->seq != 0)
				imsg_mgr_position_done(e->seq); /* a group of one: nobody has it */
		}

		free_inflight(e);
		(*settled)++;
	}
	return in_progress;
}


void
imsg_mgr_own_init(void)
{
	HASHCTL		ctl;

	cs_context = AllocSetContextCreate(TopMemoryContext,
									   "imessages manager change sets",
									   ALLOCSET_DEFAULT_SIZES);
	ctl.keysize = sizeof(InflightKey);
	ctl.entrysize = sizeof(Inflight);
	ctl.hcxt = cs_context;
	inflight_by_key = hash_create("imessages manager change sets in flight", 256,
								  &ctl, HASH_ELEM | HASH_BLOBS | HASH_CONTEXT);
}

/* A sync change set of ours delivered in total order: tell its backend. */
void
imsg_mgr_own_ordered(int origin_pid, uint64 xid, uint64 seq, int64 counted)
{
	Inflight   *e = find_inflight(origin_pid, xid);

	/* delivered once its commit is seen */
	if (e != NULL && e->state == INFLIGHT_MULTICAST)
	{
		e->state = INFLIGHT_ANSWERED;
		e->seq = seq;
		e->counted = counted;
		reply_ordered(origin_pid, xid, seq, IMSG_CS_OUTCOME_ORDERED);
	}
}

/* A sync change set of ours lost certification: its transaction fails. */
void
imsg_mgr_own_conflict(int origin_pid, uint64 xid)
{
	Inflight   *e = find_inflight(origin_pid, xid);
	uint64		seq;

	if (e != NULL && e->state == INFLIGHT_MULTICAST)
	{
		e->state = INFLIGHT_ANSWERED;	/* its transaction will abort: discarded */
		/* with how far the winner is: the backend waits for its apply */
		SpinLockAcquire(&ImsgManagerState->mutex);
		seq = ImsgManagerState->last_seq;
		SpinLockRelease(&ImsgManagerState->mutex);
		reply_ordered(origin_pid, xid, seq, IMSG_CS_OUTCOME_CONFLICT);
	}
}

/*
 * The GCS connection is lost: sync change sets multicast but not delivered
 * back will not be now.  Their backends fail at once rather than at
 * commit_timeout.  Whether other nodes delivered them is unknown (08007);
 * their transactions roll back here and they are settled as discarded.
 */
void
imsg_mgr_own_gcs_lost(void)
{
	dlist_iter	iter;

	dlist_foreach(iter, &inflight)
	{
		Inflight   *e = dlist_container(Inflight, node, iter.cur);

		if (e->state == INFLIGHT_MULTICAST)
		{
			e->state = INFLIGHT_ANSWERED;
			reply_ordered(e->key.origin_pid, e->key.xid, 0, IMSG_CS_OUTCOME_LOST);
		}
	}
}

/* Are change sets of ours still on their way (for a clean shutdown)? */
bool
imsg_mgr_own_pending(void)
{
	return !dlist_is_empty(&inflight);
}

/* Backstop for change sets whose backend died: recheck often. */
long
imsg_mgr_own_next_timeout(void)
{
	return dlist_is_empty(&inflight) ? -1 : 10;
}
