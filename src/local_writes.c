/*-------------------------------------------------------------------------
 *
 * local_writes.c
 *	  This node's own writes that a remote change set delivered before them
 *	  must not overwrite: how async replication keeps "of two change sets
 *	  that wrote a row, the one delivered later wins" on every node.
 *
 * An async transaction commits on its node before the group orders its
 * change set; every other node applies change sets in delivery order, so
 * there the later-delivered one ends on top.  Its own node is the
 * exception: a remote change set R delivered before our L (at position p
 * below L's q) may reach us after L committed here, and applying R as it
 * is would leave R's values where every other node ends with L's.  So a
 * helper applying R at position p writes a row only if the row's current
 * version is not from a local transaction whose change set is undelivered
 * or delivered after p; and, for a row that is absent, only if no such
 * local transaction removed it.  Each node decides from the delivery order
 * and its own writes, so every node ends with the later-delivered values.
 *
 * Two shared hash tables, partitioned like the lock manager's (one LWLock
 * per partition; every operation but the sweep and the reset holds one
 * partition lock at a time, and those two take every partition of both
 * maps in one fixed order, so there is no deadlock):
 *
 *	xids: a local transaction's xid, and those of its committed
 *	subtransactions (a row's xmin can be either), each naming the top-level
 *	xid; the top-level entry holds the position its change set was
 *	delivered at, 0 until then.  Written by the backend at PRE_COMMIT
 *	(entered, delivered_seq 0), removed by it if the transaction then
 *	aborts; delivered_seq is set by the manager when the change set comes
 *	back in total order, before the manager looks at any later delivery,
 *	so a helper applying a change set at p > q always sees q.  The manager
 *	removes a top-level entry once every remote change set delivered
 *	before it has been applied: no helper can ask about it any more.
 *
 *	removed: a row identity (changeset_reader.c's hash) that a local
 *	transaction deleted, or moved away from by changing its key, and the
 *	top-level xid of the last one that did.  Written by the backend at
 *	PRE_COMMIT.  Removers of one row are serialized by its row lock, so
 *	the last one entered is the last one that committed.
 *
 * Subtransaction and removal entries whose top-level entry is gone are
 * dead: lookups treat them as absent, and the manager sweeps them when a
 * map is half full.  Entries are not WAL-logged: after a restart the
 * manager starts with nothing in flight, and so do these maps; what the
 * catch-up that follows needs of them it rebuilds from the change-set log
 * (the end of this file).
 *
 * Only a node in a group with other nodes keeps them (imessages.gcs other
 * than 'local'): a group of one applies no remote change sets.
 *
 * Copyright (c) 2026, imessages developers
 *
 * IDENTIFICATION
 *	  src/local_writes.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/transam.h"
#include "access/xact.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "storage/lwlock.h"
#include "storage/shmem.h"
#include "utils/hsearch.h"
#include "utils/memutils.h"

#include "changeset_int.h"

#define LW_PARTITIONS	16

typedef struct LocalXid
{
	TransactionId xid;			/* hash key */
	TransactionId top;			/* == xid for a top-level transaction */
	uint64		delivered_seq;	/* top-level only: 0 until delivered */
} LocalXid;

typedef struct LocalRemoval
{
	uint64		row;			/* hash key */
	TransactionId top;
} LocalRemoval;

int			imsg_max_local_writes = 65536;

static HTAB *local_xids = NULL;
static HTAB *local_removals = NULL;
static LWLockPadded *lw_locks = NULL;	/* xids' partitions, then removals' */

/* What this backend entered at PRE_COMMIT, to take back if it aborts. */
static TransactionId registered_top = InvalidTransactionId;
static int	registered_nchildren = 0;
static TransactionId *registered_children = NULL;

/* Set by apply.c around a change set, read by imsg_remote_wins(). */
static uint64 applying_seq = 0;
static bool remote_wins_called = false;
static bool remote_wins_lost = false;

Size
imsg_local_writes_shmem_size(void)
{
	return add_size(hash_estimate_size(imsg_max_local_writes, sizeof(LocalXid)),
					hash_estimate_size(imsg_max_local_writes, sizeof(LocalRemoval)));
}

void
imsg_local_writes_request(void)
{
	RequestAddinShmemSpace(imsg_local_writes_shmem_size());
	RequestNamedLWLockTranche("imessages local writes", 2 * LW_PARTITIONS);
}

/* In shmem_startup_hook, under AddinShmemInitLock. */
void
imsg_local_writes_startup(void)
{
	HASHCTL		info;

	info.keysize = sizeof(TransactionId);
	info.entrysize = sizeof(LocalXid);
	info.num_partitions = LW_PARTITIONS;
	local_xids = ShmemInitHash("imessages local write xids",
							   imsg_max_local_writes, imsg_max_local_writes, &info,
							   HASH_ELEM | HASH_BLOBS | HASH_PARTITION | HASH_FIXED_SIZE);
	info.keysize = sizeof(uint64);
	info.entrysize = sizeof(LocalRemoval);
	local_removals = ShmemInitHash("imessages local removals",
								   imsg_max_local_writes, imsg_max_local_writes, &info,
								   HASH_ELEM | HASH_BLOBS | HASH_PARTITION | HASH_FIXED_SIZE);
	lw_locks = GetNamedLWLockTranche("imessages local writes");
}

static inline LWLock *
xid_lock(uint32 hashcode)
{
	return &lw_locks[hashcode % LW_PARTITIONS].lock;
}

static inline LWLock *
removal_lock(uint32 hashcode)
{
	return &lw_locks[LW_PARTITIONS + hashcode % LW_PARTITIONS].lock;
}

/* Every partition of both maps, in one order (see the file header). */
static void
lock_all_partitions(void)
{
	int			i;

	for (i = 0; i < 2 * LW_PARTITIONS; i++)
		LWLockAcquire(&lw_locks[i].lock, LW_EXCLUSIVE);
}

static void
unlock_all_partitions(void)
{
	int			i;

	for (i = 2 * LW_PARTITIONS - 1; i >= 0; i--)
		LWLockRelease(&lw_locks[i].lock);
}

/* Enter xid -> top; false if the map is full. */
static bool
enter_xid(TransactionId xid, TransactionId top)
{
	uint32		h = get_hash_value(local_xids, &xid);
	LocalXid   *e;

	LWLockAcquire(xid_lock(h), LW_EXCLUSIVE);
	e = hash_search_with_hash_value(local_xids, &xid, h, HASH_ENTER_NULL, NULL);
	if (e != NULL)
	{
		e->top = top;
		e->delivered_seq = 0;
	}
	LWLockRelease(xid_lock(h));
	return e != NULL;
}

static void
remove_xid(TransactionId xid)
{
	uint32		h = get_hash_value(local_xids, &xid);

	LWLockAcquire(xid_lock(h), LW_EXCLUSIVE);
	(void) hash_search_with_hash_value(local_xids, &xid, h, HASH_REMOVE, NULL);
	LWLockRelease(xid_lock(h));
}

/* The top-level entry's delivered_seq; false if there is none. */
static bool
lookup_top(TransactionId xid, TransactionId *top, uint64 *delivered_seq)
{
	uint32		h = get_hash_value(local_xids, &xid);
	LocalXid   *e;
	bool		found = false;

	LWLockAcquire(xid_lock(h), LW_SHARED);
	e = hash_search_with_hash_value(local_xids, &xid, h, HASH_FIND, NULL);
	if (e != NULL)
	{
		*top = e->top;
		*delivered_seq = e->delivered_seq;
		found = true;
	}
	LWLockRelease(xid_lock(h));
	if (found && *top != xid)
	{
		/* a subtransaction: its top-level entry, if that is still there */
		TransactionId subtop = *top;

		if (!lookup_top(subtop, top, delivered_seq) || *top != subtop)
			return false;
	}
	return found;
}

static void
map_full(const char *what)
{
	ereport(ERROR,
			(errcode(ERRCODE_CONFIGURATION_LIMIT_EXCEEDED),
			 errmsg("too many of this node's writes are waiting for the group: the map of %s is full",
					what),
			 errdetail("It holds imessages.max_local_writes = %d entries.",
					   imsg_max_local_writes),
			 errhint("Raise imessages.max_local_writes, or commit fewer or smaller transactions until the group catches up.")));
}

/*
 * PRE_COMMIT of a transaction that wrote replicated rows, on a node in a
 * group: enter its xid, its committed subtransactions' and the rows it
 * removed.  ERROR (the transaction aborts) if a map is full.
 */
void
imsg_local_writes_register(int nremoved, const uint64 *removed)
{
	TransactionId top = GetTopTransactionIdIfAny();
	TransactionId *children;
	int			nchildren = xactGetCommittedChildren(&children);
	int			i;

	if (!TransactionIdIsValid(top))
		return;
	imsg_local_writes_end(false);
	registered_children = MemoryContextAlloc(TopMemoryContext,
											 sizeof(TransactionId) * Max(nchildren, 1));
	registered_nchildren = 0;
	registered_top = top;
	if (!enter_xid(top, top))
	{
		registered_top = InvalidTransactionId;
		map_full("transactions");
	}
	for (i = 0; i < nchildren; i++)
	{
		if (!enter_xid(children[i], top))
			map_full("transactions");
		registered_children[registered_nchildren++] = children[i];
	}
	for (i = 0; i < nremoved; i++)
	{
		uint32		h = get_hash_value(local_removals, &removed[i]);
		LocalRemoval *e;

		LWLockAcquire(removal_lock(h), LW_EXCLUSIVE);
		e = hash_search_with_hash_value(local_removals, &removed[i], h,
										HASH_ENTER_NULL, NULL);
		if (e != NULL)
			e->top = top;
		LWLockRelease(removal_lock(h));
		if (e == NULL)
			map_full("removed rows");
	}
}

/*
 * The transaction ended: if it aborted after registering, take its entries
 * back (its removal entries die with its top-level one); if it committed,
 * they are the manager's now.
 */
void
imsg_local_writes_end(bool committed)
{
	if (!committed)
		imsg_local_writes_forget_mine();
	registered_top = InvalidTransactionId;
	registered_nchildren = 0;
	if (registered_children)
		pfree(registered_children);
	registered_children = NULL;
}

void
imsg_local_writes_forget_mine(void)
{
	int			i;

	if (TransactionIdIsValid(registered_top))
		remove_xid(registered_top);
	for (i = 0; i < registered_nchildren; i++)
		remove_xid(registered_children[i]);
	registered_top = InvalidTransactionId;
	registered_nchildren = 0;
}

/* Manager: our change set of transaction 'top' was delivered at 'seq'. */
void
imsg_local_writes_delivered(TransactionId top, uint64 seq)
{
	uint32		h = get_hash_value(local_xids, &top);
	LocalXid   *e;

	LWLockAcquire(xid_lock(h), LW_EXCLUSIVE);
	e = hash_search_with_hash_value(local_xids, &top, h, HASH_FIND, NULL);
	if (e != NULL)
		e->delivered_seq = seq;
	LWLockRelease(xid_lock(h));
}

/*
 * Manager: no remote change set delivered before 'top's will be applied
 * any more (or its change set will never be delivered): forget it.
 */
void
imsg_local_writes_forget(TransactionId top)
{
	remove_xid(top);
}

/* Manager: number of entries in the two maps, for the sweep and the view. */
void
imsg_local_writes_counts(int64 *xids, int64 *removals)
{
	*xids = (int64) hash_get_num_entries(local_xids);
	*removals = (int64) hash_get_num_entries(local_removals);
}

/*
 * Manager: drop dead entries (whose top-level transaction is forgotten)
 * when a map is half full.  Every partition lock is held meanwhile.
 */
void
imsg_local_writes_sweep(void)
{
	int64		nx,
				nr;
	HASH_SEQ_STATUS scan;

	imsg_local_writes_counts(&nx, &nr);
	if (nx < imsg_max_local_writes / 2 && nr < imsg_max_local_writes / 2)
		return;
	lock_all_partitions();
	{
		LocalXid   *x;
		LocalRemoval *r;

		hash_seq_init(&scan, local_xids);
		while ((x = hash_seq_search(&scan)) != NULL)
			if (x->top != x->xid &&
				hash_search(local_xids, &x->top, HASH_FIND, NULL) == NULL)
				(void) hash_search(local_xids, &x->xid, HASH_REMOVE, NULL);
		hash_seq_init(&scan, local_removals);
		while ((r = hash_seq_search(&scan)) != NULL)
			if (hash_search(local_xids, &r->top, HASH_FIND, NULL) == NULL)
				(void) hash_search(local_removals, &r->row, HASH_REMOVE, NULL);
	}
	unlock_all_partitions();
}

/* Manager start: nothing of a previous manager's is in flight any more. */
void
imsg_local_writes_reset(void)
{
	HASH_SEQ_STATUS scan;
	LocalXid   *x;
	LocalRemoval *r;

	lock_all_partitions();
	hash_seq_init(&scan, local_xids);
	while ((x = hash_seq_search(&scan)) != NULL)
		(void) hash_search(local_xids, &x->xid, HASH_REMOVE, NULL);
	hash_seq_init(&scan, local_removals);
	while ((r = hash_seq_search(&scan)) != NULL)
		(void) hash_search(local_removals, &r->row, HASH_REMOVE, NULL);
	unlock_all_partitions();
}

/* Does a local transaction 'top' delivered at delivered_seq win over p? */
static inline bool
local_beats(uint64 delivered_seq, uint64 p)
{
	return delivered_seq == 0 || delivered_seq > p;
}

/* apply.c: the change set being applied was delivered at 'seq' (0: none). */
void
imsg_local_writes_applying(uint64 seq)
{
	applying_seq = seq;
}

/* apply.c: forget what imsg_remote_wins() said in the last statement. */
void
imsg_remote_wins_reset(void)
{
	remote_wins_called = false;
	remote_wins_lost = false;
}

/* apply.c: did the last statement call imsg_remote_wins(), and lose? */
void
imsg_remote_wins_result(bool *called, bool *lost)
{
	*called = remote_wins_called;
	*lost = remote_wins_lost;
}

/*
 * apply.c: a row with this identity is absent; did a local transaction
 * that beats the change set being applied remove it?
 */
bool
imsg_local_removal_wins(uint64 row)
{
	uint32		h;
	LocalRemoval *e;
	TransactionId top = InvalidTransactionId;
	uint64		delivered_seq;

	if (applying_seq == 0 || local_removals == NULL)
		return false;
	h = get_hash_value(local_removals, &row);
	LWLockAcquire(removal_lock(h), LW_SHARED);
	e = hash_search_with_hash_value(local_removals, &row, h, HASH_FIND, NULL);
	if (e != NULL)
		top = e->top;
	LWLockRelease(removal_lock(h));
	if (!TransactionIdIsValid(top) || !lookup_top(top, &top, &delivered_seq))
		return false;
	/* entered at PRE_COMMIT: it counts once its transaction committed */
	return TransactionIdDidCommit(top) && local_beats(delivered_seq, applying_seq);
}

/*
 * imsg_remote_wins(xid): may the change set being applied overwrite a row
 * whose current version this transaction wrote?  Called by the apply
 * statements on the row's xmin, after the row is locked (and again on a
 * newer version, if one appears meanwhile).  True outside an apply.
 */
PG_FUNCTION_INFO_V1(imsg_remote_wins);

Datum
imsg_remote_wins(PG_FUNCTION_ARGS)
{
	TransactionId xmin = PG_GETARG_TRANSACTIONID(0);
	TransactionId top;
	uint64		delivered_seq;
	bool		wins = true;

	if (applying_seq != 0 && local_xids != NULL && TransactionIdIsNormal(xmin) &&
		!TransactionIdIsCurrentTransactionId(xmin) &&
		lookup_top(xmin, &top, &delivered_seq))
		wins = !local_beats(delivered_seq, applying_seq);
	remote_wins_called = true;
	remote_wins_lost = !wins;
	PG_RETURN_BOOL(wins);
}

/* ---------------------------------------------------------------------
 * A catch-up's own writes
 *
 * The maps above live in shared memory and start empty with the server,
 * so a node that stopped with a remote change set R delivered but not
 * applied, after which a transaction of its own L wrote R's row, catches
 * up without them: R is read again from the log, and applied as it is it
 * would overwrite L's values, which every other node keeps (L is
 * delivered after R).  So the catch-up helper first reads its own change
 * sets in the range it catches up (from the log: each one's position, and
 * whether its transaction committed here) and notes, per row identity,
 * the last position at which one of them wrote or removed the row.
 * Applying a remote change set at p then leaves a row alone whose noted
 * position is past p.  By identity rather than xmin: a row's xmin can be
 * a subtransaction's xid, and pg_subtrans does not survive a restart.
 * Process-local: one helper runs a catch-up, in position order.
 * ---------------------------------------------------------------------
 */
typedef struct CatchUpRow
{
	uint64		row;			/* hash key */
	uint64		position;		/* of our last change set that wrote it */
} CatchUpRow;

static HTAB *catch_up_rows = NULL;

/* recovery.c: our change set at 'position' (committed here) wrote 'row'. */
void
imsg_local_writes_catch_up_note(uint64 row, uint64 position)
{
	CatchUpRow *e;
	bool		found;

	if (row == 0)
		return;
	if (catch_up_rows == NULL)
	{
		HASHCTL		ctl;

		ctl.keysize = sizeof(uint64);
		ctl.entrysize = sizeof(CatchUpRow);
		ctl.hcxt = TopMemoryContext;
		catch_up_rows = hash_create("imessages catch-up own rows", 1024, &ctl,
									HASH_ELEM | HASH_BLOBS | HASH_CONTEXT);
	}
	e = hash_search(catch_up_rows, &row, HASH_ENTER, &found);
	if (!found || e->position < position)
		e->position = position;
}

/* recovery.c: the catch-up is over. */
void
imsg_local_writes_catch_up_end(void)
{
	if (catch_up_rows != NULL)
		hash_destroy(catch_up_rows);
	catch_up_rows = NULL;
}

/*
 * apply.c: does one of our change sets noted for the catch-up, delivered
 * after the change set being applied, write this row?
 */
bool
imsg_local_writes_catch_up_wins(uint64 row)
{
	CatchUpRow *e;

	if (catch_up_rows == NULL || applying_seq == 0 || row == 0)
		return false;
	e = hash_search(catch_up_rows, &row, HASH_FIND, NULL);
	return e != NULL && e->position > applying_seq;
}
