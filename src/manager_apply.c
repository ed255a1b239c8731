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
#include "storage/latch.h"
#include "storage/proc.h"
#include "utils/memutils.h"

#include "manager_int.h"
#include "changeset_int.h"

/*
 * Change sets of other nodes, delivered and waiting to be applied, in
 * delivery order.  Several helpers apply them at once, up to
 * imessages.max_helpers: a change set goes out when no change set before
 * it that is not done yet touches one of its rows (the row identities
 * certification reads at delivery come with it); one whose rows are not
 * known waits for every one before it, and every one after it waits for
 * it.  So two change sets with a row in common are applied one after the
 * other, in delivery order, and the others side by side.  Each helper
 * then commits in position order: it waits until every position before its
 * own is done (ImsgManagerShared.commit_horizon, which imsg_mgr_apply_wake
 * follows), so a reader here sees the same sequence of states as on every
 * other node, and imsg_state's applied position p still means "everything
 * up to p".  An entry leaves the queue when its helper reports
 * (IMSG_T_CS_APPLIED), and goes out again if the helper exits first.
 *
 * A helper gets a *run*: the change set that may go out and those right
 * after it at consecutive positions that do not touch the rows held back
 * either (at most IMSG_APPLY_RUN of them, IMSG_APPLY_RUN_BYTES in all).
 * It applies them in order in one transaction and commits once, for the
 * last position: a lagging node then spends one transaction, one commit
 * and one report per run instead of per change set.  If the run fails, the
 * helper applies its change sets one by one.
 *
 * While the node catches up, only the head goes out, alone, once every
 * position before it is done: the catch-up helper, not the ring, says how
 * far the node is then.
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
	int64		nrows;			/* -1: not known, or it has a statement */
	uint64	   *rows;			/* row identities (see changeset_reader.h) */
	bool		has_statement;	/* DDL: if it fails, this node stops applying */
	int			slot;			/* the helper applying it, or -1 */
	int			pid;
	bool		run_first;		/* the first of its run (counted in 'applying') */
} RemoteChangeset;

/* change sets of the queue looked at for one that may go out */
#define IMSG_APPLY_WINDOW	256
/* a helper's run: change sets, and their bytes */
#define IMSG_APPLY_RUN		64
#define IMSG_APPLY_RUN_BYTES	(256 * 1024)

static MemoryContext apply_context = NULL;
static List *apply_queue = NIL;
static int	applying = 0;		/* runs with a helper */
static int	applying_max = 0;

static void prune_own_delivered(void);

/* imsg_manager_status().change_sets_to_apply, applying_now, applying_max */
static void
publish_apply_queue(void)
{
	SpinLockAcquire(&ImsgManagerState->mutex);
	ImsgManagerState->change_sets_to_apply = list_length(apply_queue);
	ImsgManagerState->apply_horizon = apply_queue != NIL ?
		((RemoteChangeset *) linitial(apply_queue))->seq : 0;
	ImsgManagerState->applying_now = applying;
	ImsgManagerState->applying_max = applying_max;
	SpinLockRelease(&ImsgManagerState->mutex);
}

void
imsg_mgr_queue_remote(uint64 seq, const char *origin, int32 origin_pid,
					  uint64 counter, bool overwrite, uint64 xid,
					  const char *cs, Size cslen, bool has_statement,
					  const uint64 *rows, int64 nrows)
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
	r->has_statement = has_statement;
	r->nrows = nrows;			/* (< 0: not known) */
	r->rows = NULL;
	if (r->nrows > 0)
	{
		r->rows = palloc(sizeof(uint64) * r->nrows);
		memcpy(r->rows, rows, sizeof(uint64) * r->nrows);
	}
	r->slot = -1;
	r->pid = 0;
	apply_queue = lappend(apply_queue, r);
	MemoryContextSwitchTo(old);
	publish_apply_queue();
}

static void
free_remote(RemoteChangeset *r)
{
	pfree(r->data);
	if (r->rows)
		pfree(r->rows);
	pfree(r);
}

/*
 * The rows of the change sets before the one looked at that are not done:
 * a set of row identities (PostgreSQL's simplehash, in the pass's memory
 * context; the identities are hashes already).
 */
typedef struct RowEntry
{
	uint64		row;
	char		status;			/* (simplehash's) */
} RowEntry;

#define SH_PREFIX		rowset
#define SH_ELEMENT_TYPE	RowEntry
#define SH_KEY_TYPE		uint64
#define SH_KEY			row
#define SH_HASH_KEY(tb, key)	((uint32) ((key) ^ ((key) >> 32)))
#define SH_EQUAL(tb, a, b)		((a) == (b))
#define SH_SCOPE		static inline
#define SH_DECLARE
#define SH_DEFINE
#include "lib/simplehash.h"

typedef rowset_hash RowSet;

static bool
touches(RowSet *set, const RemoteChangeset *r)
{
	int64		i;

	for (i = 0; i < r->nrows; i++)
		if (rowset_lookup(set, r->rows[i]) != NULL)
			return true;
	return false;
}

static void
block_rows(RowSet *set, const RemoteChangeset *r)
{
	int64		i;

	for (i = 0; i < r->nrows; i++)
	{
		bool		found;

		(void) rowset_insert(set, r->rows[i], &found);
	}
}

/*
 * Hand a run to a free helper, beginning at the 'first'-th entry of the
 * queue (see the top of the file): int32 count, then for each change set
 * int64 seq, string origin, int32 origin pid, int64 counter, int8
 * overwrite, int64 xid, string change set (one message, in parts if large:
 * see mailbox_large.c).  Nothing waits for room: false if it did not go
 * out (no free helper, no room), and it goes whole in a later pass.  The
 * run's rows go into 'blocked'.
 */
static bool
hand_out_run(int first, RowSet *blocked, int max_run)
{
	int			pid;
	int			slot;
	int			n = 0;
	int			i;
	Size		bytes = 4;
	char	   *buf;
	ImsgBuffer	out;
	RemoteChangeset *prev = NULL;

	slot = imsg_helper_pick_for_apply(&pid);
	if (slot < 0)
		return false;			/* one is starting; the loop comes back */

	/* how far the run goes */
	for (i = first; i < list_length(apply_queue) && n < max_run; i++)
	{
		RemoteChangeset *r = list_nth(apply_queue, i);
		Size		size = 8 + 4 + strlen(r->origin) + 4 + 8 + 1 + 8 + 4 + r->len;

		if (n > 0 &&
			(r->slot >= 0 || r->nrows < 0 || r->seq != prev->seq + 1 ||
			 bytes + size > IMSG_APPLY_RUN_BYTES || touches(blocked, r)))
			break;
		bytes += size;
		prev = r;
		n++;
	}

	buf = palloc(bytes);
	ImsgBufferInitWriter(&out, buf, bytes);
	ImsgBufferPutInt32(&out, n);
	for (i = first; i < first + n; i++)
	{
		RemoteChangeset *r = list_nth(apply_queue, i);

		ImsgBufferPutInt64(&out, (int64) r->seq);
		ImsgBufferPutString(&out, r->origin, strlen(r->origin));
		ImsgBufferPutInt32(&out, r->origin_pid);
		ImsgBufferPutInt64(&out, (int64) r->counter);
		ImsgBufferPutInt8(&out, r->overwrite ? 1 : 0);
		ImsgBufferPutInt64(&out, (int64) r->xid);
		ImsgBufferPutString(&out, r->data, r->len);
	}
	if (ImsgSendLarge(pid, IMSG_T_CS_APPLY, NULL, 0, out.data, out.len, 0, 0) != IMSG_OK)
	{
		pfree(buf);
		return false;
	}
	pfree(buf);
	for (i = first; i < first + n; i++)
	{
		RemoteChangeset *r = list_nth(apply_queue, i);

		r->slot = slot;
		r->pid = pid;
		r->run_first = i == first;
		block_rows(blocked, r);
	}
	imsg_helper_set_applying(slot, true);
	applying++;
	applying_max = Max(applying_max, applying);
	return true;
}

/* Helpers that exited with a change set: it goes out again. */
static void
notice_exited_helpers(void)
{
	ListCell   *lc;

	if (applying == 0)
		return;
	foreach(lc, apply_queue)
	{
		RemoteChangeset *r = lfirst(lc);
		ImsgHelperSlot *hs;
		int			pid;

		if (r->slot < 0)
			continue;
		hs = &ImsgManagerState->helpers[r->slot];
		SpinLockAcquire(&hs->mutex);
		pid = hs->pid;
		SpinLockRelease(&hs->mutex);
		if (pid == r->pid)
			continue;
		ereport(LOG,
				(errmsg("imessages manager: the helper applying change set %llu exited; handing it to another",
						(unsigned long long) r->seq)));
		if (r->run_first)
		{
			imsg_helper_set_applying(r->slot, false);
			applying--;
		}
		r->slot = -1;
		r->pid = 0;
		r->run_first = false;
	}
}

/* How many change sets may be applied at once now. */
static int
apply_parallelism(void)
{
	if (imsg_mgr_node_state() != IMSG_NODE_SYNCED)
		return 1;
	return Max(imsg_max_helpers, 1);
}

/*
 * Hand out what may be applied now (see the top of the file), in delivery
 * order, while helpers are free.
 */
void
imsg_mgr_apply_run(void)
{
	RowSet	   *blocked;
	ListCell   *lc;
	int			looked = 0;
	bool		barrier = false;
	bool		changed = false;

	if (apply_queue == NIL)
		return;
	if (imsg_mgr_node_state() != IMSG_NODE_SYNCED &&
		imsg_mgr_node_state() != IMSG_NODE_CATCHING_UP)
		return;					/* keep them; a catch-up may drop them */
	notice_exited_helpers();
	if (applying >= apply_parallelism())
		return;

	if (imsg_mgr_node_state() != IMSG_NODE_SYNCED)
	{
		RemoteChangeset *r = linitial(apply_queue);

		blocked = rowset_create(CurrentMemoryContext, 16, NULL);
		if (r->slot < 0 && imsg_mgr_position_is_next(r->seq) && hand_out_run(0, blocked, 1))
			publish_apply_queue();
		rowset_destroy(blocked);
		return;
	}

	blocked = rowset_create(CurrentMemoryContext, 256, NULL);
	foreach(lc, apply_queue)
	{
		RemoteChangeset *r = lfirst(lc);
		bool		may_go;

		if (looked++ >= IMSG_APPLY_WINDOW || barrier)
			break;
		if (r->slot >= 0)
			may_go = false;
		else if (r->nrows < 0)
			may_go = foreach_current_index(lc) == 0;
		else
			may_go = !touches(blocked, r);
		if (may_go)
		{
			if (!hand_out_run(foreach_current_index(lc), blocked,
							  r->nrows < 0 ? 1 : IMSG_APPLY_RUN))
				break;			/* no free helper: the next pass */
			changed = true;
		}
		if (r->nrows < 0)
			barrier = true;
		else if (!may_go)
			block_rows(blocked, r);	/* (a run's went in with it) */
		if (applying >= apply_parallelism())
			break;
	}
	rowset_destroy(blocked);
	if (changed)
		publish_apply_queue();
}

/*
 * commit_horizon moved: the helper applying the next position may commit
 * (the others wait on).  See ImsgManagerShared.commit_horizon.
 */
void
imsg_mgr_apply_wake(void)
{
	uint64		next = pg_atomic_read_u64(&ImsgManagerState->commit_horizon) + 1;
	ListCell   *lc;

	if (applying == 0)
		return;
	foreach(lc, apply_queue)
	{
		RemoteChangeset *r = lfirst(lc);

		if (r->seq > next)
			break;
		if (r->seq == next && r->slot >= 0)
		{
			ImsgHelperSlot *hs = &ImsgManagerState->helpers[r->slot];
			int			procno;

			SpinLockAcquire(&hs->mutex);
			procno = hs->pid == r->pid ? hs->procno : -1;
			SpinLockRelease(&hs->mutex);
			if (procno >= 0)
				SetLatch(&GetPGProcByNumber(procno)->procLatch);
			break;
		}
	}
}

/*
 * A helper is done with a run (IMSG_T_CS_APPLIED: int32 slot, int32 count,
 * then int64 seq and int8 ok of each change set).
 */
void
imsg_mgr_handle_cs_applied(ImsgWhole *msg)
{
	ImsgBuffer	in;
	int32		slot;
	int32		n;
	int32		k;
	int			applied = 0;
	int			failed = 0;
	bool		freed_run = false;

	ImsgBufferInitReader(&in, msg->data, msg->len);
	slot = ImsgBufferGetInt32(&in);
	n = ImsgBufferGetInt32(&in);
	imsg_helper_job_done(slot);
	for (k = 0; k < n; k++)
	{
		uint64		seq = (uint64) ImsgBufferGetInt64(&in);
		bool		ok = ImsgBufferGetInt8(&in) != 0;
		ListCell   *lc;
		RemoteChangeset *r = NULL;

		foreach(lc, apply_queue)
		{
			RemoteChangeset *e = lfirst(lc);

			if (e->seq > seq)
				break;
			if (e->seq == seq)
			{
				if (e->slot == slot)
				{
					r = e;
					apply_queue = foreach_delete_current(apply_queue, lc);
				}
				break;
			}
		}
		if (r == NULL)
			continue;			/* a late report of one handed out again */
		if (r->run_first && !freed_run)
		{
			imsg_helper_set_applying(slot, false);
			applying--;
			freed_run = true;
		}
		if (ok)
			applied++;
		else
			failed++;
		if (ok && r->has_statement)
		{
			SpinLockAcquire(&ImsgManagerState->mutex);
			ImsgManagerState->ddl_applied++;
			SpinLockRelease(&ImsgManagerState->mutex);
		}
		if (!ok && r->has_statement)
		{
			/*
			 * A DDL statement the others ran failed here: going on would
			 * apply what follows to a table that differs.  The position
			 * stays undone, so a restarted manager tries it again.
			 */
			imsg_mgr_stop_applying(r->seq, r->origin);
			free_remote(r);
			continue;
		}
		imsg_mgr_position_done(r->seq);
		free_remote(r);
	}
	publish_apply_queue();
	prune_own_delivered();
	SpinLockAcquire(&ImsgManagerState->mutex);
	ImsgManagerState->remote_change_sets_applied += applied;
	ImsgManagerState->apply_errors += failed;
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
	return list_length(apply_queue) > applying && applying < apply_parallelism() ? 10 : -1;
}

/* Is no remote change set being applied? */
bool
imsg_mgr_apply_idle(void)
{
	return applying == 0;
}

/*
 * Forget the queue (a catch-up applies those change sets again, from the
 * change-set log, in order); those being applied are let finish: their
 * reports come.
 */
void
imsg_mgr_apply_drop_queue(void)
{
	ListCell   *lc;

	foreach(lc, apply_queue)
	{
		RemoteChangeset *r = lfirst(lc);

		if (r->slot >= 0)
			continue;
		free_remote(r);
		apply_queue = foreach_delete_current(apply_queue, lc);
	}
	publish_apply_queue();
	prune_own_delivered();
}
