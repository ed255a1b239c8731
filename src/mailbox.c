/*-------------------------------------------------------------------------
 *
 * mailbox.c
 *	  Per-process mailboxes: send, receive and release messages.
 *
 * Every PGPROC slot has a mailbox.  A process opens it the first time it
 * uses imessages and closes it on exit (on_shmem_exit), which frees every
 * message still queued.  A mailbox is a FIFO queue made of a chain of
 * segments; see ImsgMailbox and ImsgSegment in imessages_int.h for who
 * writes what.
 *
 * Sending: under the recipient's mailbox mutex the sender checks the owner
 * (pid and generation), reserves room at the end of the tail segment and
 * marks the message RESERVED; then, without any lock, it fills the message,
 * marks it READY and sets the owner's latch.  Only senders to the same
 * recipient share a lock, and only for the reservation.  When the tail is
 * full the sender links a new segment: the mailbox's spare if it has one,
 * else a fresh one from the page allocator (area.c).
 *
 * Receiving: the owner walks its chain without taking the mutex: it reads a
 * segment's end, then the message states below it.  A RESERVED message
 * stops it, which keeps the queue FIFO and hides partly written messages.
 * What the owner has released is published under the mutex in batches (a
 * segment passed, a quarter of a segment freed, or before it sleeps),
 * which is also when drained segments are recycled.
 *
 * Quotas: a mailbox holds at most its quota of queued bytes (see "Quotas"
 * below); a send that would take it over waits for the owner to take
 * messages out, without holding up sends to other mailboxes.
 *
 * Copyright (c) 2026, imessages developers
 *
 * IDENTIFICATION
 *	  src/mailbox.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <sched.h>
#if defined(__x86_64__)
#include <immintrin.h>
#endif

#include "miscadmin.h"
#include "pgstat.h"
#include "portability/instr_time.h"
#include "storage/s_lock.h"
#include "postmaster/bgworker.h"
#include "storage/condition_variable.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "storage/proc.h"
#include "utils/backend_status.h"
#include "utils/timestamp.h"

#include "mailbox_int.h"

#define IMSG_MIN_SEGMENT		(2 * FPM_PAGE_SIZE)
#define IMSG_MAX_SEGMENT		(64 * FPM_PAGE_SIZE)

/* This process's mailbox, or NULL while it has not used imessages. */
static ImsgMailbox *MyMailbox = NULL;

/*
 * Owner-local receive state.  The cursor is the next message to hand out;
 * the release position trails it, at the first message received and not
 * yet released.  'published' is the release position the mailbox shows
 * (mb->head, mb->head_off); counts not yet published wait in unpublished_*.
 */
typedef struct ImsgPosition
{
	ImsgSegment *seg;
	uint32		off;
	uint64		count;			/* messages passed since the mailbox opened */
} ImsgPosition;

static ImsgPosition cursor;
static ImsgPosition release;
static uint64 unpublished_msgs = 0;
static uint64 unpublished_bytes = 0;
static uint64 unpublished_received = 0;

/* The reservation this process is filling, if any. */
static ImsgMessage *pending_msg = NULL;
static ImsgMailbox *pending_mailbox = NULL;
static int	pending_procno = -1;

/* Last recipient looked up: pid -> (slot, generation). */
static int	cached_pid = 0;
static int	cached_procno = -1;
static uint32 cached_generation = 0;

static void imsg_close_mailbox(int code, Datum arg);
static void imsg_publish_release(void);
static uint64 imsg_resolve_quota(int mailbox_quota, int manager_quota);
static bool imsg_cursor_at_end(void);

static ImsgMessage *imsg_release_one(bool *passed_segment);

/* ERROR (SQLSTATE 55000) unless the area exists. */
void
imsg_check_available(void)
{
	if (ImsgAreaPtr == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("imessages must be loaded via shared_preload_libraries"),
				 errhint("Add imessages to shared_preload_libraries and restart the server.")));
}

bool
ImsgAvailable(void)
{
	return ImsgAreaPtr != NULL;
}

static inline ImsgMailbox *
imsg_mailbox(int procno)
{
	return &ImsgAreaPtr->mailboxes[procno].mb;
}

/*
 * Open this process's mailbox, so that others can send to it.  Idempotent;
 * every other entry point calls it.
 */
void
ImsgOpenMailbox(void)
{
	ImsgMailbox *mb;
	const char *type;

	if (MyMailbox != NULL)
		return;
	imsg_check_available();
	if (MyProc == NULL || MyProc->pgprocno >= ImsgAreaPtr->num_mailboxes)
		elog(ERROR, "imessages: this process has no PGPROC slot with a mailbox");

	if (MyBackendType == B_BG_WORKER && MyBgworkerEntry != NULL)
		type = MyBgworkerEntry->bgw_type;
	else
		type = GetBackendTypeDesc(MyBackendType);

	mb = imsg_mailbox(MyProc->pgprocno);

	/*
	 * Registered after InitProcess's ProcKill, so it runs before the slot is
	 * given away; and before the mailbox opens, so that a failure to
	 * register cannot leave an open mailbox behind (the callback does
	 * nothing while MyMailbox is NULL).
	 */
	on_shmem_exit(imsg_close_mailbox, (Datum) 0);

	/*
	 * The previous owner of this slot closed the mailbox in its
	 * on_shmem_exit callback, before ProcKill released the slot to us, so it
	 * is empty and nobody is writing into it.
	 */
	SpinLockAcquire(&mb->mutex);
	Assert(!mb->open && mb->head == NULL && mb->spare == NULL);
	mb->open = true;
	mb->owner_pid = MyProcPid;
	mb->generation++;
	mb->head = mb->tail = mb->spare = NULL;
	mb->head_off = 0;
	mb->enqueued_msgs = mb->enqueued_bytes = 0;
	mb->dequeued_msgs = mb->dequeued_bytes = 0;
	mb->quota_bytes = imsg_resolve_quota(imsg_mailbox_quota,
										 imsg_manager_mailbox_quota);
	mb->quota_wait_bytes = 0;
	strlcpy(mb->backend_type, type, sizeof(mb->backend_type));
	SpinLockRelease(&mb->mutex);
	pg_atomic_write_u64(&mb->sent, 0);
	pg_atomic_write_u64(&mb->received, 0);

	memset(&cursor, 0, sizeof(cursor));
	memset(&release, 0, sizeof(release));
	unpublished_msgs = unpublished_bytes = unpublished_received = 0;
	MyMailbox = mb;
}

ImsgMailbox *
imsg_my_mailbox(void)
{
	return MyMailbox;
}

/*
 * Is a sender still filling a message in this (closed) mailbox?  No
 * reservation can start once it is closed, and a sender touches its
 * message only until it marks it READY or CANCELLED (after a write
 * barrier), so a message still RESERVED is the only sign of one.
 */
static bool
imsg_writes_in_progress(ImsgMailbox *mb)
{
	ImsgSegment *seg;
	uint32		off;

	SpinLockAcquire(&mb->mutex);
	seg = mb->head;
	off = mb->head_off;
	SpinLockRelease(&mb->mutex);

	for (; seg != NULL; seg = seg->next, off = IMSG_SEGMENT_HEADER)
	{
		uint32		end = pg_atomic_read_u32(&seg->end);

		pg_read_barrier();
		while (off < end)
		{
			ImsgMessage *msg = (ImsgMessage *) ((char *) seg + off);

			if (imsg_msg_state(msg) == IMSG_STATE_RESERVED)
				return true;
			off += imsg_msg_space(msg);
		}
	}
	return false;
}

/*
 * on_shmem_exit callback: withdraw our own reservation, close the mailbox
 * so that no new message can be reserved in it, wait for senders still
 * writing into it, then free everything it holds.
 */
static void
imsg_close_mailbox(int code, Datum arg)
{
	ImsgMailbox *mb = MyMailbox;
	ImsgSegment *chain;
	ImsgSegment *spare;
	int			waited_ms = 0;
	bool		wake_quota_waiters;

	if (mb == NULL)
		return;

	/* an ERROR may have escaped with the allocator lock held */
	LWLockReleaseAll();
	ConditionVariableCancelSleep();
	imsg_flush_pipelined();
	if (pending_msg != NULL)
	{
		ImsgBuffer	buf;

		memset(&buf, 0, sizeof(buf));
		buf.reservation = pending_msg;
		ImsgCancel(&buf);
	}

	SpinLockAcquire(&mb->mutex);
	mb->open = false;
	mb->owner_pid = 0;
	mb->generation++;
	wake_quota_waiters = mb->quota_wait_bytes != 0;
	mb->quota_wait_bytes = 0;
	SpinLockRelease(&mb->mutex);

	/* senders waiting for our quota find the mailbox closed: 42704 */
	if (wake_quota_waiters)
		ConditionVariableBroadcast(&mb->quota_cv);

	/*
	 * Senders that reserved before we closed are copying a message and will
	 * be done within microseconds.  Freeing under them would corrupt the
	 * area, so wait; if one is stuck (stopped by a debugger, say), leak the
	 * segments rather than risk that.
	 */
	while (imsg_writes_in_progress(mb))
	{
		if (waited_ms >= 10000)
		{
			elog(LOG, "imessages: a sender to process %d did not finish within 10 s; its mailbox memory is not freed",
				 MyProcPid);
			/* leak the chain, but leave the slot clean for its next owner */
			SpinLockAcquire(&mb->mutex);
			mb->head = mb->tail = mb->spare = NULL;
			mb->head_off = 0;
			SpinLockRelease(&mb->mutex);
			MyMailbox = NULL;
			return;
		}
		pg_usleep(1000L);
		waited_ms++;
	}

	SpinLockAcquire(&mb->mutex);
	chain = mb->head;
	spare = mb->spare;
	mb->head = mb->tail = mb->spare = NULL;
	mb->head_off = 0;
	mb->enqueued_msgs = mb->enqueued_bytes = 0;
	mb->dequeued_msgs = mb->dequeued_bytes = 0;
	SpinLockRelease(&mb->mutex);

	while (chain != NULL)
	{
		ImsgSegment *next = chain->next;

		imsg_segment_free(chain);
		chain = next;
	}
	if (spare != NULL)
		imsg_segment_free(spare);

	/* fold our counts into the area's totals; the views skip closed boxes */
	pg_atomic_fetch_add_u64(&ImsgAreaPtr->retired_sent,
							pg_atomic_read_u64(&mb->sent));
	pg_atomic_fetch_add_u64(&ImsgAreaPtr->retired_received,
							pg_atomic_read_u64(&mb->received) + unpublished_received);
	pg_atomic_write_u64(&mb->sent, 0);
	pg_atomic_write_u64(&mb->received, 0);
	MyMailbox = NULL;
}

/*
 * Is the mailbox in slot 'procno' open under 'pid'?  If so, with its
 * generation (which identifies this owner) and the owner's role (from its
 * PGPROC: the slot is the owner's pgprocno), read under the mailbox's
 * mutex so that they are that owner's.
 */
static bool
imsg_mailbox_owned_by(int procno, int pid, uint32 *generation, Oid *role)
{
	ImsgMailbox *mb = imsg_mailbox(procno);
	bool		match;

	/* unlocked peek at an int; confirmed under the mutex */
	if (((volatile ImsgMailbox *) mb)->owner_pid != pid)
		return false;
	SpinLockAcquire(&mb->mutex);
	match = mb->open && mb->owner_pid == pid;
	if (match && generation)
		*generation = mb->generation;
	if (match && role)
		*role = GetPGProcByNumber(procno)->roleId;
	SpinLockRelease(&mb->mutex);
	return match;
}

/*
 * The slot of the mailbox open under 'pid', or -1; 'hint' is a slot to
 * try first, or -1.  The one search by pid: for sends, the SQL API's
 * permission check and the assemblers.
 */
static int
imsg_find_open_mailbox(int pid, int hint, uint32 *generation, Oid *role)
{
	int			i;

	if (hint >= 0 && imsg_mailbox_owned_by(hint, pid, generation, role))
		return hint;
	for (i = 0; i < ImsgAreaPtr->num_mailboxes; i++)
		if (i != hint && imsg_mailbox_owned_by(i, pid, generation, role))
			return i;
	return -1;
}

/*
 * Find the mailbox of process 'pid': its slot and the generation that
 * identifies this owner.
 */
static ImsgResult
imsg_lookup(int pid, int *procno, uint32 *generation)
{
	uint64		ident;

	if (pid == IMSG_MANAGER)
	{
		ident = pg_atomic_read_u64(&ImsgAreaPtr->manager_ident);
		*procno = IMSG_IDENT_PROCNO(ident);
		*generation = IMSG_IDENT_GENERATION(ident);
		return ident != 0 ? IMSG_OK : IMSG_NO_RECIPIENT;
	}
	if (pid < 0)
		return IMSG_NO_RECIPIENT;
	if (pid == cached_pid)
	{
		*procno = cached_procno;
		*generation = cached_generation;
		return IMSG_OK;
	}
	*procno = imsg_find_open_mailbox(pid, -1, generation, NULL);
	if (*procno < 0)
		return IMSG_NO_RECIPIENT;
	cached_pid = pid;
	cached_procno = *procno;
	cached_generation = *generation;
	return IMSG_OK;
}

/* Has process 'pid' an open mailbox?  Not cached (see mailbox_large.c). */
bool
imsg_mailbox_is_open(int pid)
{
	return imsg_find_open_mailbox(pid, -1, NULL, NULL) >= 0;
}

/*
 * The role of the process whose mailbox is open under 'pid' (InvalidOid
 * for one that runs without a role); false if none is open under 'pid'.
 * The slot found last is tried first.
 */
bool
imsg_mailbox_owner_role(int pid, Oid *role)
{
	static int	last_procno = -1;
	int			procno = imsg_find_open_mailbox(pid, last_procno, NULL, role);

	if (procno < 0)
		return false;
	last_procno = procno;
	return true;
}

/* Set the manager's latch, if a manager runs. */
void
imsg_wake_manager(void)
{
	int			procno = IMSG_IDENT_PROCNO(pg_atomic_read_u64(&ImsgAreaPtr->manager_ident));

	if (procno >= 0)
		SetLatch(&GetPGProcByNumber(procno)->procLatch);
}

/* The manager's pid, or IMSG_NO_RECIPIENT while none runs. */
ImsgResult
imsg_resolve_manager(int *pid)
{
	ImsgArea   *area = ImsgAreaPtr;

	SpinLockAcquire(&area->manager_lock);
	*pid = area->manager_pid;
	SpinLockRelease(&area->manager_lock);
	return *pid != 0 ? IMSG_OK : IMSG_NO_RECIPIENT;
}

int
ImsgManagerPid(void)
{
	int			pid;

	if (ImsgAreaPtr == NULL)
		return 0;
	(void) imsg_resolve_manager(&pid);
	return pid;
}

/*
 * The deadline of a wait of timeout_ms (0 if there is none), computed the
 * first time the caller actually has to sleep: *deadline is 0 until then.
 */
static TimestampTz
imsg_deadline(long timeout_ms, TimestampTz *deadline)
{
	if (*deadline == 0 && timeout_ms > 0)
		*deadline = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), timeout_ms);
	return *deadline;
}

/*
 * Quotas.
 *
 * A mailbox may hold at most quota_bytes of queued messages (their space in
 * the segments, headers included: enqueued_bytes - dequeued_bytes, which
 * imsg_mailboxes shows as queued_bytes).  The value is the owner's: its
 * imessages.mailbox_quota, or imessages.manager_mailbox_quota for the
 * manager's mailbox, where -1 means a quarter of the area (half for the
 * manager) and 0 no quota.  The owner publishes it in its mailbox when it
 * opens it and whenever its setting changes (the GUCs' assign hooks).
 *
 * A send that would take the mailbox over its quota waits, like one that
 * finds the area full, up to its timeout, for the owner to take messages
 * out, and then fails with IMSG_OVER_QUOTA; sends to other mailboxes go on
 * meanwhile.  The protocol (see ImsgMailbox): the sender registers on the
 * mailbox's quota_cv, looks again under the mutex and, still over, notes
 * in quota_wait_bytes the room it needs; the owner broadcasts quota_cv
 * once releases it publishes (imsg_publish_release) leave that room, when
 * it changes its quota and when it closes.  What the owner has taken out
 * counts once it is
 * published: at the latest before it next sleeps in ImsgReceive, when it
 * has passed a segment or freed a quarter of one, and at the end of the
 * transaction for imsg_receive().
 *
 * An empty mailbox takes one message of any size, so that a quota smaller
 * than a message delays it but never makes it impossible.  A pipelined
 * batch is sized to the room the quota leaves when it starts, so each
 * pipelined sender can overshoot by what others queued meanwhile; plain
 * sends check and reserve under one hold of the mutex and never overshoot.
 * A pipelined sender that may wait starts a batch only once a quarter of
 * the quota (at most a batch) is free, and a waiter is woken only when
 * the room it waits for is there, so a stream held at the quota runs in
 * whole batches with one wake-up each.
 *
 * The sends of imessages' own workers are not held to quotas
 * (imsg_mailbox_set_internal): the manager never waits (it sends nowait
 * and retries), and what it sends a backend is a reply to that backend's
 * own request, what it sends a helper one job at a time; a helper sends
 * the manager the results the manager asked for.  A quota there could
 * only turn the manager's jobs and replies into retries and failures,
 * while what a process that never reads can be sent by them stays bounded
 * by what it asked for.
 */
static bool quota_exempt = false;		/* this process's sends ignore quotas */
static bool is_manager_process = false; /* the manager's quota is ours */
static ImsgOverQuota last_over_quota;

/* This process's quota in bytes (0: none) for the given settings. */
static uint64
imsg_resolve_quota(int mailbox_quota, int manager_quota)
{
	int			setting = is_manager_process ? manager_quota : mailbox_quota;

	if (setting < 0)
		return ImsgAreaPtr->size_bytes / (is_manager_process ? 2 : 4);
	return (uint64) setting;
}

/* Publish this process's quota in its mailbox; wake waiting senders. */
static void
imsg_publish_quota(uint64 quota)
{
	ImsgMailbox *mb = MyMailbox;
	bool		wake;

	SpinLockAcquire(&mb->mutex);
	mb->quota_bytes = quota;
	wake = mb->quota_wait_bytes != 0;
	mb->quota_wait_bytes = 0;
	SpinLockRelease(&mb->mutex);
	/* a waiter rechecks against the new quota */
	if (wake)
		ConditionVariableBroadcast(&mb->quota_cv);
}

/*
 * The assign hook of imessages.mailbox_quota and of
 * imessages.manager_mailbox_quota, with the new values of both.  Runs
 * wherever GUCs change (SET, a reload, the end of a transaction that SET
 * LOCAL): it only takes our mailbox's spinlock, and does nothing before
 * the mailbox is open (ImsgOpenMailbox reads the settings).
 */
void
imsg_quota_settings_changed(int mailbox_quota, int manager_quota)
{
	if (MyMailbox != NULL)
		imsg_publish_quota(imsg_resolve_quota(mailbox_quota, manager_quota));
}

/*
 * This process is one of imessages' own workers: its sends ignore quotas
 * and, for the manager, its own mailbox has imessages.manager_mailbox_quota.
 */
void
imsg_mailbox_set_internal(bool is_manager)
{
	quota_exempt = true;
	is_manager_process = is_manager;
	if (MyMailbox != NULL)
		imsg_publish_quota(imsg_resolve_quota(imsg_mailbox_quota,
											  imsg_manager_mailbox_quota));
}

/* The last send of this process that ended in IMSG_OVER_QUOTA. */
const ImsgOverQuota *
imsg_last_over_quota(void)
{
	return &last_over_quota;
}

/*
 * Would a message of 'space' bytes take 'mb' over its quota?  Called with
 * the mutex held, on every send: a load and a compare when the mailbox has
 * no quota, a few loads (of the cache line the reservation writes anyway)
 * and an addition when it has one.
 */
static inline bool
imsg_over_quota(ImsgMailbox *mb, uint32 space)
{
	uint64		queued;

	if (mb->quota_bytes == 0 || quota_exempt)
		return false;
	queued = mb->enqueued_bytes - mb->dequeued_bytes;
	return queued > 0 && queued + space > mb->quota_bytes;
}

/*
 * How many bytes 'mb' may take before it is over its quota, given that a
 * message of 'space' bytes fits (PG_UINT64_MAX: no quota).  Mutex held.
 */
static inline uint64
imsg_quota_room(ImsgMailbox *mb, uint32 space)
{
	uint64		queued;

	if (mb->quota_bytes == 0 || quota_exempt)
		return PG_UINT64_MAX;
	queued = mb->enqueued_bytes - mb->dequeued_bytes;
	if (queued == 0)
		return Max(mb->quota_bytes, (uint64) space);
	Assert(queued + space <= mb->quota_bytes);
	return mb->quota_bytes - queued;
}

/*
 * A send of a message of 'space' bytes found 'mb' without the room 'need'
 * (>= space) under its quota (imsg_over_quota, under the mutex).  Note why
 * for the error, note the room we wait for in quota_wait_bytes if we are
 * registered on quota_cv ('prepared'), and release the mutex.
 */
static void
imsg_note_over_quota(ImsgMailbox *mb, uint32 space, uint32 need, bool prepared)
{
	last_over_quota.pid = mb->owner_pid;
	last_over_quota.queued_bytes = mb->enqueued_bytes - mb->dequeued_bytes;
	last_over_quota.quota_bytes = mb->quota_bytes;
	last_over_quota.needed_bytes = space;
	if (prepared && (mb->quota_wait_bytes == 0 || need < mb->quota_wait_bytes))
		mb->quota_wait_bytes = need;
	SpinLockRelease(&mb->mutex);
}

/*
 * A send gives up over a quota: counted in imsg_area.send_failures, as one
 * that finds the area full.
 */
static ImsgResult
imsg_quota_failed(void)
{
	pg_atomic_fetch_add_u64(&ImsgAreaPtr->send_failures, 1);
	return IMSG_OVER_QUOTA;
}

/*
 * After imsg_note_over_quota: nowait, IMSG_OVER_QUOTA.  The first time,
 * register on the mailbox's quota_cv (a wait, counted in
 * imsg_area.send_waits) and return IMSG_OK: the caller looks again under
 * the mutex (and, still over, notes what it needs in quota_wait_bytes), so
 * an owner that makes that room after that wakes us.  Later, sleep until woken or the
 * deadline (IMSG_OVER_QUOTA once it has passed) and return IMSG_OK to look
 * again.  The sleep runs CHECK_FOR_INTERRUPTS and exits on postmaster
 * death (ConditionVariableTimedSleep); the caller cancels it
 * (ConditionVariableCancelSleep) when it is done, whatever the outcome.
 */
static ImsgResult
imsg_quota_wait(ImsgMailbox *mb, long timeout_ms, TimestampTz *deadline,
				bool *prepared)
{
	if (timeout_ms == 0)
		return imsg_quota_failed();
	if (!*prepared)
	{
		ConditionVariablePrepareToSleep(&mb->quota_cv);
		*prepared = true;
		pg_atomic_fetch_add_u64(&ImsgAreaPtr->send_waits, 1);
		(void) imsg_deadline(timeout_ms, deadline);
		return IMSG_OK;
	}
	if (*deadline != 0)
	{
		long		remaining;

		remaining = TimestampDifferenceMilliseconds(GetCurrentTimestamp(),
													*deadline);
		if (remaining <= 0)
			return imsg_quota_failed();
		(void) ConditionVariableTimedSleep(&mb->quota_cv, remaining,
										   PG_WAIT_EXTENSION);
	}
	else
		ConditionVariableSleep(&mb->quota_cv, PG_WAIT_EXTENSION);
	return IMSG_OK;
}

/*
 * What is left of a send's timeout for its wait for area space, once it
 * has waited for the quota (*deadline set): the two waits share it.
 */
static long
imsg_timeout_left(long timeout_ms, TimestampTz deadline)
{
	if (deadline == 0)
		return timeout_ms;
	return Max(1, TimestampDifferenceMilliseconds(GetCurrentTimestamp(),
												  deadline));
}

/* Where a reservation landed: the recipient's slot and identity. */
typedef struct ImsgTarget
{
	ImsgMailbox *mb;
	int			procno;
	uint32		generation;
	int			owner_pid;
} ImsgTarget;

/*
 * Reserve 'space' bytes for a message at the end of the mailbox of
 * 'recipient_pid', marked RESERVED, waiting up to timeout_ms for room
 * under its quota and for area space.  Returns the message, or NULL with
 * *result set.
 */
static ImsgMessage *
imsg_reserve_space(int recipient_pid, uint32 space, long timeout_ms,
				   ImsgTarget *target, ImsgResult *result)
{
	int			procno;
	uint32		generation;
	ImsgMailbox *mb;
	ImsgSegment *new_seg = NULL;
	ImsgSegment *seg;
	ImsgMessage *msg;
	bool		retried_lookup = false;
	bool		quota_prepared = false;
	TimestampTz deadline = 0;

lookup:
	if (quota_prepared)
	{
		/* registered on the former owner's quota_cv */
		ConditionVariableCancelSleep();
		quota_prepared = false;
	}
	*result = imsg_lookup(recipient_pid, &procno, &generation);
	if (*result != IMSG_OK)
	{
		/* a segment taken before the recipient went away goes back */
		if (new_seg)
			imsg_segment_free(new_seg);
		return NULL;
	}
	mb = imsg_mailbox(procno);

	for (;;)
	{
		uint32		end;
		Size		tail_size;

		SpinLockAcquire(&mb->mutex);
		if (!mb->open || mb->generation != generation ||
			(recipient_pid != IMSG_MANAGER && mb->owner_pid != recipient_pid))
		{
			SpinLockRelease(&mb->mutex);
			/* a stale cache entry or manager restart: look up once more */
			cached_pid = 0;
			if (!retried_lookup)
			{
				retried_lookup = true;
				goto lookup;
			}
			if (new_seg)
				imsg_segment_free(new_seg);
			if (quota_prepared)
				ConditionVariableCancelSleep();
			*result = IMSG_NO_RECIPIENT;
			return NULL;
		}

		if (unlikely(imsg_over_quota(mb, space)))
		{
			imsg_note_over_quota(mb, space, space, quota_prepared);	/* releases */
			/* hold no area memory while waiting for the owner */
			if (new_seg)
			{
				imsg_segment_free(new_seg);
				new_seg = NULL;
			}
			*result = imsg_quota_wait(mb, timeout_ms, &deadline, &quota_prepared);
			if (*result != IMSG_OK)
			{
				if (quota_prepared)
					ConditionVariableCancelSleep();
				return NULL;
			}
			continue;
		}

		seg = mb->tail;
		end = seg ? pg_atomic_read_u32(&seg->end) : 0;
		if (seg == NULL || seg->size - end < space)
		{
			ImsgSegment *ns = NULL;

			if (mb->spare && mb->spare->size - IMSG_SEGMENT_HEADER >= space)
			{
				ns = mb->spare;
				mb->spare = NULL;
			}
			else if (new_seg)
			{
				ns = new_seg;
				new_seg = NULL;
			}
			else
			{
				/* go to the allocator without the mutex, then retry */
				tail_size = seg ? seg->size : 0;
				SpinLockRelease(&mb->mutex);
				new_seg = imsg_segment_alloc(IMSG_SEGMENT_HEADER + space,
											 Min(Max(2 * tail_size, IMSG_MIN_SEGMENT),
												 IMSG_MAX_SEGMENT),
											 imsg_timeout_left(timeout_ms, deadline),
											 result);
				if (new_seg == NULL)
				{
					if (quota_prepared)
						ConditionVariableCancelSleep();
					return NULL;
				}
				continue;
			}
			ns->next = NULL;
			pg_atomic_write_u32(&ns->end, IMSG_SEGMENT_HEADER);

			/*
			 * A spare was used before: its reset 'end' and 'next' must be
			 * visible before the owner can reach it through seg->next.
			 * Pairs with the read barrier after reading 'next' in
			 * imsg_next_message.
			 */
			pg_write_barrier();
			if (seg)
				seg->next = ns;
			else
			{
				mb->head = ns;
				mb->head_off = IMSG_SEGMENT_HEADER;
			}
			mb->tail = seg = ns;
			end = IMSG_SEGMENT_HEADER;
		}

		target->owner_pid = mb->owner_pid;

		/* initialize the state before the owner can see it (below 'end') */
		msg = (ImsgMessage *) ((char *) seg + end);
		pg_atomic_init_u32(&msg->state, IMSG_STATE_RESERVED);
		msg->space = space;
		pg_write_barrier();
		pg_atomic_write_u32(&seg->end, end + space);
		mb->enqueued_msgs++;
		mb->enqueued_bytes += space;
		SpinLockRelease(&mb->mutex);
		break;
	}
	if (quota_prepared)
		ConditionVariableCancelSleep();

	/* a segment allocated in a race we lost: keep it as spare, or free it */
	if (new_seg)
	{
		SpinLockAcquire(&mb->mutex);
		if (mb->spare == NULL && mb->open)
		{
			mb->spare = new_seg;
			new_seg = NULL;
		}
		SpinLockRelease(&mb->mutex);
		if (new_seg)
			imsg_segment_free(new_seg);
	}

	target->mb = mb;
	target->procno = procno;
	target->generation = generation;
	*result = IMSG_OK;
	return msg;
}

/* Fill in a reserved message's header (not its state or space). */
static inline void
imsg_fill_header(ImsgMessage *msg, int32 msgtype, Size len, int owner_pid,
				 TimestampTz sent_at)
{
	int			sec_context;

	msg->length = 0;
	msg->reserved_len = len;
	msg->msgtype = msgtype;
	msg->sender_pid = MyProcPid;
	msg->recipient_pid = owner_pid;
	/* not GetUserId(): it asserts a role, and a worker may have none */
	GetUserIdAndSecContext(&msg->sender_role, &sec_context);
	msg->msg_id = imsg_next_message_id();
	msg->sent_at = sent_at;
}

static inline ImsgResult
imsg_check_send(Size len)
{
	static Size largest = 0;	/* the area's size does not change */

	if (ImsgAreaPtr == NULL)
		return IMSG_NOT_LOADED;
	if (largest == 0)
		largest = imsg_largest_message();
	if (len > (Size) imsg_max_message_size || len > largest)
		return IMSG_TOO_LARGE;
	if (MyMailbox == NULL)
		ImsgOpenMailbox();
	return IMSG_OK;
}

/*
 * Reserve room for a message of 'len' payload bytes in the mailbox of
 * 'recipient_pid' and set *buf up to fill it.  See imessages.h.
 */
ImsgResult
ImsgReserve(int recipient_pid, int32 msgtype, Size len, long timeout_ms,
			ImsgBuffer *buf)
{
	uint32		space;
	ImsgTarget	target;
	ImsgMessage *msg;
	ImsgResult	result;

	if ((result = imsg_check_send(len)) != IMSG_OK)
		return result;
	if (pending_msg != NULL)
		elog(ERROR, "imessages: a reservation is already in progress");

	/* an open pipelined batch would hide this message too: publish it */
	imsg_flush_pipelined();

	space = IMSG_MESSAGE_SPACE(len);
	msg = imsg_reserve_space(recipient_pid, space, timeout_ms, &target, &result);
	if (msg == NULL)
		return result;

	/* from here on, an ERROR or exit must cancel it */
	pending_msg = msg;
	pending_mailbox = target.mb;
	pending_procno = target.procno;

	imsg_fill_header(msg, msgtype, len, target.owner_pid, GetCurrentTimestamp());
	ImsgBufferInitWriter(buf, (char *) msg + IMSG_HEADER_SIZE, len);
	buf->reservation = msg;
	return IMSG_OK;
}

/*
 * Mark the pending message READY or CANCELLED and, if 'wake', wake its
 * recipient.
 */
static void
imsg_finish_pending(ImsgMessage *msg, uint32 state, bool wake)
{
	int			procno = pending_procno;

	pending_msg = NULL;
	pending_mailbox = NULL;
	pending_procno = -1;

	/*
	 * Pairs with the read barrier in imsg_next_message: the owner reads the
	 * header and payload only after it has seen READY.
	 */
	pg_write_barrier();
	pg_atomic_write_u32(&msg->state, state);
	/* from here on the owner may release and reuse the memory: no access */
	if (wake)
		SetLatch(&GetPGProcByNumber(procno)->procLatch);
}

/*
 * Publish the reserved message.  imsg_commit_quiet() does not wake the
 * recipient: for a caller that wakes it anyway moments later (change-set
 * capture's last part, followed by the COMMIT or ABORT callback's
 * imsg_cs_wake_manager), so that the recipient runs once, not twice.  The
 * invariant every caller must keep: after a quiet commit, this process
 * runs a wake-up that reads the manager's settle_polling flag after a full
 * barrier (see manager_loop), or the message may wait unseen.  A cancelled
 * reservation always wakes: a reader may be stopped at it.
 */
static uint64
imsg_commit_reserved(ImsgBuffer *buf, bool wake)
{
	ImsgMessage *msg = (ImsgMessage *) buf->reservation;
	uint64		id;

	if (msg == NULL || msg != pending_msg)
		elog(ERROR, "imessages: no reservation to commit");
	Assert(buf->len <= msg->reserved_len);
	msg->length = buf->len;
	id = msg->msg_id;
	buf->reservation = NULL;
	imsg_finish_pending(msg, IMSG_STATE_READY, wake);
	pg_atomic_write_u64(&MyMailbox->sent, pg_atomic_read_u64(&MyMailbox->sent) + 1);
	return id;
}

uint64
ImsgCommit(ImsgBuffer *buf)
{
	return imsg_commit_reserved(buf, true);
}

uint64
imsg_commit_quiet(ImsgBuffer *buf)
{
	return imsg_commit_reserved(buf, false);
}

void
ImsgCancel(ImsgBuffer *buf)
{
	ImsgMessage *msg = (ImsgMessage *) buf->reservation;

	if (msg == NULL || msg != pending_msg)
		return;
	buf->reservation = NULL;
	imsg_finish_pending(msg, IMSG_STATE_CANCELLED, true);
}

/* Cancel this process's reservation, if any: for error cleanup. */
void
imsg_cancel_pending(void)
{
	if (pending_msg != NULL)
		imsg_finish_pending(pending_msg, IMSG_STATE_CANCELLED, true);
}

ImsgResult
ImsgSend(int recipient_pid, int32 msgtype, const void *data, Size len,
		 long timeout_ms, uint64 *msg_id)
{
	ImsgBuffer	buf;
	ImsgResult	result;
	uint64		id;

	result = ImsgReserve(recipient_pid, msgtype, len, timeout_ms, &buf);
	if (result != IMSG_OK)
		return result;
	if (len > 0)				/* an empty message may come with data NULL */
		memcpy(buf.data, data, len);
	buf.len = len;
	id = ImsgCommit(&buf);
	if (msg_id)
		*msg_id = id;
	return IMSG_OK;
}

/*
 * The batch a pipelined sender is filling.
 *
 * ImsgSendPipelined writes messages into a segment of its own, allocated
 * from the area for the batch and not yet linked into any mailbox, so
 * filling it takes no lock and writes no shared cache line anyone reads.
 * Publishing links the whole segment at the recipient's tail under the
 * mailbox mutex (imsg_publish_batch): one mutex, one barrier, one
 * SetLatch per batch, which is what shm_mq gains with force_flush =
 * false, while the mailbox stays open to other senders meanwhile: nobody
 * waits behind an unpublished batch, and the recipient can exit.  What
 * was left free in the previous tail segment is abandoned (it goes back
 * with the segment), and later senders append after the batch.
 *
 * The space is taken from the area when the batch starts, so a message
 * the call accepted never waits for room again; only the recipient's exit
 * before publication loses it, as it loses the messages it left unread.
 */
#define IMSG_BATCH_SEGMENT		(64 * 1024)

static struct
{
	ImsgSegment *seg;			/* NULL while no batch is open */
	int			recipient_pid;	/* as the caller named it */
	int			procno;
	uint32		generation;
	int			owner_pid;
	uint32		count;
	uint32		end;			/* where the next message goes */
	uint32		limit;			/* where its messages must end */
	Oid			role;			/* the sender's role when it opened */
}			batch;

/*
 * Write a compact message into the open batch: a small one with streaming
 * (non-temporal) stores.
 *
 * A batch reuses a segment its recipient has just read (the spare), so
 * every line of it sits in the recipient's cache, and a plain store must
 * first take the line over: a round trip to the other core per 64 bytes.
 * That was most of the cost of a small pipelined message (writing the same
 * stream into a private buffer costs a few ns a message; DESIGN.md).
 * Streaming stores write whole lines through the write-combining buffers
 * without reading them; the recipient later reads them from memory, in
 * order, which the prefetcher hides.  Larger messages are copied by memcpy:
 * streaming them measured slower (1 kB: half the throughput).
 *
 * Streaming stores are weakly ordered: imsg_publish_batch fences them
 * before the batch can be reached.  Elsewhere than x86-64, plain stores.
 */
#define IMSG_STREAM_MAX_LEN		256

static inline void
imsg_write_compact(ImsgCompactMessage *msg, uint32 word, int32 msgtype,
				   const void *data, Size len)
{
#if defined(__x86_64__)
	if (len <= IMSG_STREAM_MAX_LEN)
	{
		long long  *dst = (long long *) msg;	/* MAXALIGNed in the segment */
		const char *src = data;
		Size		done;

		StaticAssertStmt(IMSG_COMPACT_HEADER == 8 &&
						 offsetof(ImsgCompactMessage, msgtype) == 4,
						 "the compact header must be one 8-byte word");
		_mm_stream_si64(dst++, (long long) ((uint64) word | ((uint64) (uint32) msgtype << 32)));
		for (done = 0; done + 8 <= len; done += 8)
		{
			long long	w;

			memcpy(&w, src + done, 8);
			_mm_stream_si64(dst++, w);
		}
		if (done < len)
		{
			/* the padding up to MAXALIGN(len) is ours: zero it */
			long long	w = 0;

			memcpy(&w, src + done, len - done);
			_mm_stream_si64(dst, w);
		}
		return;
	}
#endif
	pg_atomic_init_u32(&msg->word, word);
	msg->msgtype = msgtype;
	memcpy((char *) msg + IMSG_COMPACT_HEADER, data, len);
}

/*
 * Before a batch starts for the mailbox 'mb' (owner 'generation'): wait,
 * as imsg_reserve_space does, until its first message of 'space' bytes
 * fits under the mailbox's quota, with room for a worthwhile batch if the
 * caller may wait (else *result is IMSG_OVER_QUOTA), and
 * set *room to what the quota then leaves for the batch (PG_UINT64_MAX: no
 * quota).  Returns the recipient's spare segment if it has one big enough
 * for that message: the segment its owner passed last, which spares a
 * round trip through the page allocator per batch in a stream.  A mailbox
 * closed meanwhile gives no spare and no quota: publishing the batch finds
 * it closed.  *timeout_ms becomes what is left of the timeout.
 */
static ImsgSegment *
imsg_batch_start(ImsgMailbox *mb, uint32 generation, uint32 space,
				 long *timeout_ms, uint64 *room, ImsgResult *result)
{
	ImsgSegment *seg = NULL;
	bool		prepared = false;
	TimestampTz deadline = 0;

	*result = IMSG_OK;
	*room = PG_UINT64_MAX;
	for (;;)
	{
		uint32		need = space;

		SpinLockAcquire(&mb->mutex);
		if (!mb->open || mb->generation != generation)
		{
			SpinLockRelease(&mb->mutex);
			break;
		}

		/*
		 * A sender that may wait starts a batch only with room for a
		 * quarter of the quota (at most a whole batch): a stream that keeps
		 * a mailbox at its quota then goes on in real batches, with a
		 * wake-up each, not in slivers as the owner frees a few messages.
		 */
		if (*timeout_ms != 0 && mb->quota_bytes != 0)
			need = Max(space, (uint32) Min((uint64) (IMSG_BATCH_SEGMENT - IMSG_SEGMENT_HEADER),
										   mb->quota_bytes / 4));
		if (unlikely(imsg_over_quota(mb, need)))
		{
			imsg_note_over_quota(mb, space, need, prepared);	/* releases */
			*result = imsg_quota_wait(mb, *timeout_ms, &deadline, &prepared);
			if (*result != IMSG_OK)
				break;
			continue;
		}
		*room = imsg_quota_room(mb, space);
		if (mb->spare != NULL && mb->spare->size >= IMSG_SEGMENT_HEADER + space)
		{
			seg = mb->spare;
			mb->spare = NULL;
		}
		SpinLockRelease(&mb->mutex);
		break;
	}
	if (prepared)
		ConditionVariableCancelSleep();
	*timeout_ms = imsg_timeout_left(*timeout_ms, deadline);
	return seg;
}

/*
 * Link the open batch at the end of its recipient's mailbox and wake it.
 * IMSG_NO_RECIPIENT (and the batch dropped) if the recipient has exited.
 */
static ImsgResult
imsg_publish_batch(void)
{
	ImsgSegment *seg = batch.seg;
	ImsgMailbox *mb;
	uint32		used;

	if (seg == NULL)
		return IMSG_OK;
	batch.seg = NULL;
	/* 'end' is kept privately while the batch fills, published here */
	pg_atomic_write_u32(&seg->end, batch.end);
	used = batch.end - IMSG_SEGMENT_HEADER;
	mb = imsg_mailbox(batch.procno);

	/*
	 * The messages must be visible before the owner can reach the segment
	 * through 'next' or 'head'; pairs with the read barrier after reading
	 * 'next' in imsg_next_message.
	 */
#if defined(__x86_64__)
	_mm_sfence();				/* imsg_write_compact's streaming stores */
#endif
	pg_write_barrier();
	SpinLockAcquire(&mb->mutex);
	if (!mb->open || mb->generation != batch.generation)
	{
		SpinLockRelease(&mb->mutex);
		imsg_segment_free(seg);
		return IMSG_NO_RECIPIENT;
	}
	if (mb->tail != NULL)
		mb->tail->next = seg;
	else
	{
		mb->head = seg;
		mb->head_off = IMSG_SEGMENT_HEADER;
	}
	mb->tail = seg;
	mb->enqueued_msgs += batch.count;
	mb->enqueued_bytes += used;
	SpinLockRelease(&mb->mutex);

	SetLatch(&GetPGProcByNumber(batch.procno)->procLatch);
	pg_atomic_write_u64(&MyMailbox->sent, pg_atomic_read_u64(&MyMailbox->sent) + batch.count);
	return IMSG_OK;
}

/* Append a message to the open batch, which has room for it. */
static inline void
imsg_batch_append(int32 msgtype, const void *data, Size len, uint64 *msg_id)
{
	uint32		end = batch.end;
	ImsgCompactMessage *msg = (ImsgCompactMessage *) ((char *) batch.seg + end);

	/* nobody else sees this segment yet: no atomics needed */
	imsg_write_compact(msg, imsg_compact_word(IMSG_STATE_READY, (uint32) len, end),
					   msgtype, data, len);
	batch.end = end + IMSG_COMPACT_SPACE(len);
	batch.count++;
	if (msg_id)
		*msg_id = batch.seg->batch_first_id + end / 8;
}

/*
 * Everything ImsgSendPipelined's fast path leaves out: publish the open
 * batch, then start one for recipient_pid with this message in it, or send
 * a message too big for a batch on its own.
 */
static pg_noinline ImsgResult
imsg_send_pipelined_slow(int recipient_pid, int32 msgtype, const void *data,
						 Size len, long timeout_ms, uint64 *msg_id)
{
	ImsgResult	result;
	uint32		space;
	ImsgSegment *seg;
	int			sec_context;
	uint64		room;

	if ((result = imsg_check_send(len)) != IMSG_OK)
		return result;
	if (pending_msg != NULL)
		elog(ERROR, "imessages: a reservation is already in progress");

	(void) imsg_publish_batch();

	/* a message too big for a compact record goes on its own */
	if (len > IMSG_COMPACT_MAX_LEN || IMSG_COMPACT_SPACE(len) > IMSG_BATCH_SEGMENT / 2)
		return ImsgSend(recipient_pid, msgtype, data, len, timeout_ms, msg_id);
	space = IMSG_COMPACT_SPACE(len);

	result = imsg_lookup(recipient_pid, &batch.procno, &batch.generation);
	if (result != IMSG_OK)
		return result;
	seg = imsg_batch_start(imsg_mailbox(batch.procno), batch.generation,
						   space, &timeout_ms, &room, &result);
	if (result != IMSG_OK)
		return result;
	if (seg == NULL)
		seg = imsg_segment_alloc(IMSG_SEGMENT_HEADER + space,
								 room < IMSG_BATCH_SEGMENT - IMSG_SEGMENT_HEADER ?
								 IMSG_SEGMENT_HEADER + room : IMSG_BATCH_SEGMENT,
								 timeout_ms, &result);
	if (seg == NULL)
		return result;
	seg->next = NULL;
	pg_atomic_init_u32(&seg->end, IMSG_SEGMENT_HEADER);
	/* offsets of compact messages must fit in their first word */
	batch.limit = Min(seg->size, IMSG_COMPACT_MAX_OFFSET);
	/* and the batch within the recipient's quota (room >= space) */
	if (room < batch.limit - IMSG_SEGMENT_HEADER)
		batch.limit = IMSG_SEGMENT_HEADER + (uint32) room;
	batch.recipient_pid = recipient_pid;
	batch.owner_pid = recipient_pid == IMSG_MANAGER ?
		imsg_mailbox(batch.procno)->owner_pid : recipient_pid;
	batch.count = 0;
	batch.end = IMSG_SEGMENT_HEADER;
	/* not GetUserId(): it asserts a role, and a worker may have none */
	GetUserIdAndSecContext(&batch.role, &sec_context);
	seg->batch_first_id = imsg_reserve_message_ids(batch.limit / 8);
	seg->batch_sent_at = GetCurrentTimestamp();
	seg->batch_sender_pid = MyProcPid;
	seg->batch_recipient_pid = batch.owner_pid;
	seg->batch_sender_role = batch.role;
	batch.seg = seg;

	imsg_batch_append(msgtype, data, len, msg_id);
	return IMSG_OK;
}

/*
 * The fast path: append to the open batch.  Its conditions imply the
 * slow path's checks: an open batch means the area is loaded, the mailbox
 * open and no reservation pending (ImsgReserve publishes the batch first).
 */
ImsgResult
ImsgSendPipelined(int recipient_pid, int32 msgtype, const void *data,
				  Size len, long timeout_ms, uint64 *msg_id)
{
	Oid			role;
	int			sec_context;

	/* a batch's messages share their recipient and their sender's role */
	GetUserIdAndSecContext(&role, &sec_context);
	if (unlikely(batch.seg == NULL || batch.recipient_pid != recipient_pid ||
				 role != batch.role ||
				 len > IMSG_COMPACT_MAX_LEN || len > (Size) imsg_max_message_size ||
				 batch.limit - batch.end < IMSG_COMPACT_SPACE(len)))
		return imsg_send_pipelined_slow(recipient_pid, msgtype, data, len,
										timeout_ms, msg_id);
	imsg_batch_append(msgtype, data, len, msg_id);
	return IMSG_OK;
}

/*
 * Publish the open pipelined batch, if any: before this process waits or
 * sends otherwise, at the end of a transaction and at exit, so that a
 * caller that never flushes (or fails before it could) leaves nothing
 * behind.  Never waits and never raises an ERROR (it runs in transaction
 * callbacks).
 */
void
imsg_flush_pipelined(void)
{
	if (batch.seg != NULL)
		(void) imsg_publish_batch();
}

/* Publish the pipelined messages sent so far; see imessages.h. */
ImsgResult
ImsgFlush(int recipient_pid)
{
	if (ImsgAreaPtr == NULL)
		return IMSG_NOT_LOADED;
	return imsg_publish_batch();
}

/*
 * Outcome of looking at the cursor: a message, nothing queued, or a message
 * still being written (we must wait for it: FIFO).
 */
typedef enum
{
	NEXT_MESSAGE,
	NEXT_EMPTY,
	NEXT_BLOCKED
} NextResult;

/*
 * Make sure the cursor points into a segment; false if the mailbox has none
 * yet (or its last one was freed): senders may have added one since.
 */
static bool
imsg_cursor_start(void)
{
	ImsgMailbox *mb = MyMailbox;

	if (cursor.seg != NULL)
		return true;
	SpinLockAcquire(&mb->mutex);
	cursor.seg = mb->head;
	cursor.off = mb->head_off;
	SpinLockRelease(&mb->mutex);
	if (cursor.seg == NULL)
		return false;
	release.seg = cursor.seg;
	release.off = cursor.off;
	release.count = cursor.count;
	return true;
}

/*
 * The cursor segment's 'end' as last read.  Senders only move 'end'
 * forward (the owner itself rewinds it, and then forgets this), so while
 * the cursor is below it the messages there need no new read of the shared
 * cache line: one read serves a whole batch.
 */
static ImsgSegment *end_cache_seg = NULL;
static uint32 end_cache = 0;

static inline void
imsg_forget_end_cache(void)
{
	end_cache_seg = NULL;
}

static NextResult
imsg_next_message(ImsgMessage **msgp)
{
	if (!imsg_cursor_start())
		return NEXT_EMPTY;

	for (;;)
	{
		uint32		end;
		ImsgSegment *next;

		if (end_cache_seg != cursor.seg || cursor.off >= end_cache)
		{
			end_cache = pg_atomic_read_u32(&cursor.seg->end);
			end_cache_seg = cursor.seg;
			/* pairs with the write barrier and spinlock release in ImsgReserve */
			pg_read_barrier();
		}
		end = end_cache;
		if (cursor.off < end)
		{
			ImsgMessage *msg = (ImsgMessage *) ((char *) cursor.seg + cursor.off);
			uint32		state = imsg_msg_state(msg);

			if (state == IMSG_STATE_RESERVED)
				return NEXT_BLOCKED;
			/* pairs with the write barrier in imsg_finish_pending */
			pg_read_barrier();
			if (state != IMSG_STATE_READY && release.count == cursor.count)
			{
				/*
				 * Cancelled, or consumed out of order, and nothing before it
				 * is held back: release it along with the cursor, so that it
				 * does not wait for the next ImsgRelease.
				 */
				bool		passed_segment = false;

				(void) imsg_release_one(&passed_segment);
				cursor = release;
				continue;
			}
			cursor.off += imsg_msg_space(msg);
			cursor.count++;
			if (state != IMSG_STATE_READY)
				continue;
			*msgp = msg;
			return NEXT_MESSAGE;
		}

		next = ((volatile ImsgSegment *) cursor.seg)->next;
		if (next == NULL)
			return NEXT_EMPTY;

		/*
		 * A newer segment exists, so this one's end is final; read it again
		 * after a barrier in case it moved after our first read.
		 */
		pg_read_barrier();
		if (pg_atomic_read_u32(&cursor.seg->end) != cursor.off)
			continue;
		cursor.seg = next;
		cursor.off = IMSG_SEGMENT_HEADER;
	}
}

/*
 * The first READY message at or after the cursor for which match() is
 * true, or NULL.  The cursor does not move.  A message still being written
 * is stepped over: its 'space' was set under the mutex before 'end' moved
 * past it.
 */
static ImsgMessage *
imsg_find_matching(ImsgMatchFunc match, void *arg)
{
	ImsgSegment *seg;
	uint32		off;

	if (!imsg_cursor_start())
		return NULL;
	seg = cursor.seg;
	off = cursor.off;
	for (;;)
	{
		uint32		end = pg_atomic_read_u32(&seg->end);
		ImsgSegment *next;

		pg_read_barrier();		/* as in imsg_next_message */
		if (off < end)
		{
			ImsgMessage *msg = (ImsgMessage *) ((char *) seg + off);

			if (imsg_msg_state(msg) == IMSG_STATE_READY)
			{
				pg_read_barrier();
				if (match(msg, arg))
					return msg;
			}
			off += imsg_msg_space(msg);
			continue;
		}
		next = ((volatile ImsgSegment *) seg)->next;
		if (next == NULL)
			return NULL;
		pg_read_barrier();
		if (pg_atomic_read_u32(&seg->end) != off)
			continue;
		seg = next;
		off = IMSG_SEGMENT_HEADER;
	}
}

/*
 * Nothing to take yet: publish what was released (so that the views are
 * right while we wait), then sleep on our latch until a sender sets it or
 * timeout_ms passes (*deadline is set on the first wait).  Returns IMSG_OK
 * to look again, else the result to report.  Runs CHECK_FOR_INTERRUPTS;
 * exits on postmaster death.
 */
static ImsgResult
imsg_wait_for_message(long timeout_ms, TimestampTz *deadline)
{
	long		remaining = -1;
	int			events = WL_LATCH_SET | WL_EXIT_ON_PM_DEATH;

	/* whoever we wait for may be waiting for our pipelined sends */
	imsg_flush_pipelined();
	imsg_publish_release();
	if (timeout_ms == 0)
		return IMSG_WOULD_BLOCK;
	if (imsg_deadline(timeout_ms, deadline) != 0)
	{
		remaining = TimestampDifferenceMilliseconds(GetCurrentTimestamp(),
													*deadline);
		if (remaining <= 0)
			return IMSG_TIMEOUT;
		events |= WL_TIMEOUT;
	}
	(void) WaitLatch(MyLatch, events, remaining, PG_WAIT_EXTENSION);
	ResetLatch(MyLatch);
	CHECK_FOR_INTERRUPTS();
	return IMSG_OK;
}

/*
 * A receiver in the middle of a stream (its last receive found a message)
 * polls for up to IMSG_SPIN_US before it sleeps: the next message is then
 * usually microseconds away, and sleeping costs the sender a signal and
 * both of them context switches, which dominated the C-path benchmark.
 * Only the segment's 'end' and 'next' are read, and pg_spin_delay keeps
 * the polling gentle on the other hyperthread.
 *
 * A process waiting for a reply (a ping's, a sync commit's) polls longer,
 * IMSG_REPLY_SPIN_US, but yields the CPU between looks: the process that
 * answers may need this very CPU (on a small, busy machine it often does),
 * and being woken by a signal costs the replier a kill() and us a context
 * switch, more than the reply's own work.  The yield is only a hint (CFS
 * may run us again at once), so a wait can cost up to 200 us of CPU; on
 * the 2-CPU benchmark machine it still made sync commits faster (DESIGN.md).
 */
#define IMSG_SPIN_US 50
#define IMSG_REPLY_SPIN_US 200

static bool streaming = false;

/*
 * Look for a message to take, every look_every_us (0: on every iteration),
 * until limit_us have passed; true as soon as the cursor is not at the end.
 * Between looks, yield the CPU or (spinning) pg_spin_delay.
 */
static bool
imsg_poll_cursor(int limit_us, int look_every_us, bool yield)
{
	instr_time	start;
	instr_time	now;
	long		elapsed = 0;
	long		next_look = look_every_us;
	int			i = 0;

	INSTR_TIME_SET_CURRENT(start);
	for (;;)
	{
		if (elapsed >= next_look)
		{
			if (!imsg_cursor_at_end())
				return true;
			if (elapsed >= limit_us)
				return false;
			next_look += look_every_us;
		}
		if (yield)
			sched_yield();
		else
			pg_spin_delay();
		/* a yield is a system call: look at the clock after each one */
		if (yield || ++i % 64 == 0)
		{
			INSTR_TIME_SET_CURRENT(now);
			INSTR_TIME_SUBTRACT(now, start);
			elapsed = INSTR_TIME_GET_MICROSEC(now);
		}
	}
}

static bool
imsg_spin_for_message(bool for_reply)
{
	return imsg_poll_cursor(for_reply ? IMSG_REPLY_SPIN_US : IMSG_SPIN_US, 0,
							for_reply);
}

/*
 * Selective receive: wait up to timeout_ms for a message for which match()
 * is true, leaving every other message where it is.  See imessages.h.
 */
ImsgResult
ImsgReceiveMatching(long timeout_ms, ImsgMatchFunc match, void *arg,
					ImsgMessage **msgp)
{
	TimestampTz deadline = 0;
	bool		spun;

	if (ImsgAreaPtr == NULL)
		return IMSG_NOT_LOADED;
	ImsgOpenMailbox();
	imsg_flush_pipelined();		/* as in ImsgReceive */
	for (spun = false;; spun = true)
	{
		ImsgResult	r;

		*msgp = imsg_find_matching(match, arg);
		if (*msgp != NULL)
			return IMSG_OK;

		/*
		 * A reply (a ping's, a sync commit's) usually comes within tens of
		 * microseconds: poll for it once (see imsg_spin_for_message) before
		 * paying for a sleep and a signal.
		 */
		if (!spun && timeout_ms != 0 && imsg_spin_for_message(true))
			continue;
		r = imsg_wait_for_message(timeout_ms, &deadline);
		if (r != IMSG_OK)
			return r;
	}
}

bool
ImsgMatchType(const ImsgMessage *msg, void *msgtype)
{
	return ImsgMessageType(msg) == *(const int32 *) msgtype;
}

/*
 * Done with a message found by ImsgReceiveMatching: ImsgReceive will skip
 * it, and its memory is freed once the messages before it are released.
 * Only the owner reads or writes a READY message's state, so a plain
 * atomic write is enough.
 */
void
ImsgConsume(ImsgMessage *msg)
{
	ImsgMessage *next;

	Assert(imsg_msg_state(msg) == IMSG_STATE_READY);
	imsg_msg_set_state(msg, IMSG_STATE_CONSUMED);

	/* if it was at the head, let the cursor step over it (and release it) */
	if (imsg_next_message(&next) == NEXT_MESSAGE)
	{
		/* one too far: step back before that READY message (same segment) */
		cursor.off -= imsg_msg_space(next);
		cursor.count--;
	}
	if (unpublished_msgs > 0)
		imsg_publish_release();
}

ImsgResult
ImsgReceive(long timeout_ms, ImsgMessage **msgp)
{
	TimestampTz deadline = 0;

	if (ImsgAreaPtr == NULL)
		return IMSG_NOT_LOADED;
	ImsgOpenMailbox();
	if (pending_msg != NULL && pending_mailbox == MyMailbox)
		elog(ERROR, "imessages: cannot receive while a message to oneself is reserved");
	imsg_flush_pipelined();		/* it may be for us, or awaited by our sender */

	for (;;)
	{
		ImsgResult	r;

		if (imsg_next_message(msgp) == NEXT_MESSAGE)
		{
			streaming = true;
			return IMSG_OK;
		}
		/* poll once per call: a sender's reservation may be slow to fill */
		if (streaming && timeout_ms != 0)
		{
			streaming = false;
			if (imsg_spin_for_message(false))
				continue;
		}
		streaming = false;
		r = imsg_wait_for_message(timeout_ms, &deadline);
		if (r != IMSG_OK)
			return r;
	}
}

/* Has the cursor read everything senders have reserved so far? */
static inline bool
imsg_cursor_at_end(void)
{
	/* no segment yet: an unlocked peek at the head (set under the mutex) */
	if (cursor.seg == NULL)
		return ((volatile ImsgMailbox *) MyMailbox)->head == NULL;
	if (cursor.off < pg_atomic_read_u32(&cursor.seg->end))
	{
		ImsgMessage *msg = (ImsgMessage *) ((char *) cursor.seg + cursor.off);

		/* a message still being written is nothing to take yet */
		return imsg_msg_state(msg) == IMSG_STATE_RESERVED;
	}
	return ((volatile ImsgSegment *) cursor.seg)->next == NULL;
}

/*
 * The manager's poll after a pass that took user messages, whose sender is
 * likely still sending: sleep IMSG_MANAGER_POLL_US, look for the next
 * message, and so on for up to IMSG_MANAGER_POLL_LIMIT_US.  True if the
 * cursor is not at the end (usually a message to take, at worst a
 * cancelled one or one still being written at the start of a new segment,
 * which costs the caller one more pass) or if our latch was set meanwhile
 * (a signal, or a sender that found it reset): the caller's pass then
 * takes it after a wait that does not block.  The GCS socket and the
 * postmaster are not watched for that long, at most the limit.
 *
 * Not imsg_spin_for_message's close look: a reader right behind the writer
 * takes each line of the stream from the writer's cache as it is written,
 * and the writer must take it back to write the next message into the rest
 * of it, so the sender was no faster with a reader polling closely than
 * with one that slept.  Nor sched_yield() between looks, as it was: when
 * the scheduler has put the manager on the sender's CPU (a wake-up by
 * the sender puts it there), and the manager has used less CPU than the
 * sender, CFS runs the manager again at once after its yield; it then held
 * the CPU for the whole poll while the sender, which was to send what it
 * looked for, waited, found nothing, slept, and was woken by the next
 * message with a kill() that made it preempt the sender again: about
 * 4,400 such cycles a second, and the SQL stream at 64 B ran at 1.6M
 * messages/s on a shared CPU against 2.4M on two (DESIGN.md).  A real
 * sleep gives the CPU to the sender for that long whichever CPU it is on;
 * the sender's SetLatch meanwhile finds the latch awake (no signal), and
 * each look finds a run of messages whose lines the sender is done with.
 * (The sleep is a nanosleep: the timer slack, 50 us by default, comes on
 * top.)
 */
#define IMSG_MANAGER_POLL_US 50
#define IMSG_MANAGER_POLL_LIMIT_US 500

bool
imsg_poll_mailbox(void)
{
	instr_time	start;
	instr_time	now;

	if (MyMailbox == NULL)
		return false;
	INSTR_TIME_SET_CURRENT(start);
	for (;;)
	{
		pg_usleep(IMSG_MANAGER_POLL_US);
		if (!imsg_cursor_at_end() || ((volatile Latch *) MyLatch)->is_set)
			return true;
		INSTR_TIME_SET_CURRENT(now);
		INSTR_TIME_SUBTRACT(now, start);
		if (INSTR_TIME_GET_MICROSEC(now) >= IMSG_MANAGER_POLL_LIMIT_US)
			return false;
	}
}

/* Is there a message for the owner to take (not one still being written)? */
bool
imsg_mailbox_has_ready(void)
{
	return MyMailbox != NULL && !imsg_cursor_at_end();
}

/*
 * Has the owner read everything in its mailbox, with nothing being written
 * either?  (An assembler's test before it drops a partial message.)
 */
bool
imsg_mailbox_drained(void)
{
	if (MyMailbox == NULL)
		return true;
	if (cursor.seg == NULL)
		return ((volatile ImsgMailbox *) MyMailbox)->head == NULL;
	return cursor.off >= pg_atomic_read_u32(&cursor.seg->end) &&
		((volatile ImsgSegment *) cursor.seg)->next == NULL;
}

/*
 * Advance the release position past one message (skipping to the next
 * segment when this one is used up) and count it as taken out.  Only called
 * while the release position is behind the cursor, so the message exists
 * and, at a segment's end, 'next' is set.
 */
static ImsgMessage *
imsg_release_one(bool *passed_segment)
{
	ImsgMessage *m;
	uint32		space;

	while (release.off >= pg_atomic_read_u32(&release.seg->end))
	{
		release.seg = release.seg->next;
		release.off = IMSG_SEGMENT_HEADER;
		*passed_segment = true;
	}
	m = (ImsgMessage *) ((char *) release.seg + release.off);
	space = imsg_msg_space(m);
	release.off += space;
	release.count++;
	unpublished_msgs++;
	unpublished_bytes += space;
	if (imsg_msg_state(m) != IMSG_STATE_CANCELLED)
		unpublished_received++;
	return m;
}

/*
 * Release 'msg' and every message received before it.  Cheap: the release
 * is published in batches (see imsg_publish_release).
 */
void
ImsgRelease(ImsgMessage *msg)
{
	bool		passed_segment = false;

	if (MyMailbox == NULL)
		elog(ERROR, "imessages: no received message to release");
	for (;;)
	{
		if (release.count >= cursor.count)
			elog(ERROR, "imessages: released message was not received");
		if (imsg_release_one(&passed_segment) == msg)
			break;
	}
	/*
	 * Publish when a segment can be recycled or a good part of one is free;
	 * otherwise before the owner sleeps (imsg_wait_for_message), or when it
	 * asks (imsg_flush_release).  Publishing takes the mailbox's mutex, so
	 * doing it on every release of a receiver that keeps up made it contend
	 * with the sender on every message.
	 */
	if (passed_segment || unpublished_bytes >= release.seg->size / 4)
		imsg_publish_release();
}

/* Publish what was released now (for an owner that is about to sleep). */
void
imsg_flush_release(void)
{
	imsg_publish_release();
}

/* Release everything received so far (SQL commit). */
void
imsg_release_all_received(void)
{
	bool		passed_segment = false;

	if (MyMailbox == NULL)
		return;
	while (release.count < cursor.count)
		(void) imsg_release_one(&passed_segment);
	imsg_publish_release();
}

bool
imsg_have_unreleased(void)
{
	return MyMailbox != NULL && cursor.count != release.count;
}

/* Put the cursor back to the release position: received messages return. */
void
imsg_rewind_unreleased(void)
{
	if (MyMailbox == NULL)
		return;
	cursor = release;
}

/* Current cursor, for rewinding to it later (subtransactions). */
void
imsg_get_cursor(ImsgCursorMark *mark)
{
	mark->seg = cursor.seg;
	mark->off = cursor.off;
	mark->count = cursor.count;
}

void
imsg_set_cursor(const ImsgCursorMark *mark)
{
	if (MyMailbox == NULL)
		return;
	/*
	 * Never rewind past what was released already.  A mark at the release
	 * position is also replaced by it: publishing may have rewound or freed
	 * the segment the mark points into since (only an empty mailbox is
	 * rewound, so nothing between the two is lost).
	 */
	if (mark->seg == NULL || mark->count <= release.count)
		cursor = release;
	else
	{
		cursor.seg = mark->seg;
		cursor.off = mark->off;
		cursor.count = mark->count;
	}
}

/*
 * Publish what the owner has released: counts, the head position, and the
 * segments it has passed (kept as spare or freed).  If that leaves the
 * mailbox empty, shrink it: a small tail is rewound to its start, a big one
 * is freed, and so is the spare.
 */
static void
imsg_publish_release(void)
{
	ImsgMailbox *mb = MyMailbox;
	ImsgSegment *to_free = NULL;
	ImsgSegment *extra = NULL;
	uint64		received;
	bool		wake_quota_waiters;

	if (mb == NULL || release.seg == NULL)
		return;
	if (unpublished_msgs == 0)
		return;

	SpinLockAcquire(&mb->mutex);
	if (mb->head != release.seg)
		imsg_forget_end_cache();	/* the cached segment may be recycled */
	while (mb->head != release.seg)
	{
		ImsgSegment *seg = mb->head;

		mb->head = seg->next;
		if (mb->spare == NULL && seg->size <= IMSG_MAX_SEGMENT)
		{
			/* no stale 'end' or 'next' may survive into its next use */
			seg->next = NULL;
			pg_atomic_write_u32(&seg->end, IMSG_SEGMENT_HEADER);
			mb->spare = seg;
		}
		else
		{
			seg->next = to_free;
			to_free = seg;
		}
	}
	mb->head_off = release.off;
	mb->dequeued_msgs += unpublished_msgs;
	mb->dequeued_bytes += unpublished_bytes;
	/*
	 * Senders waiting for room under our quota, once there is the room the
	 * least needy of them waits for: the negation of imsg_over_quota (see
	 * ImsgMailbox).
	 */
	wake_quota_waiters = false;
	if (unlikely(mb->quota_wait_bytes != 0))
	{
		uint64		queued = mb->enqueued_bytes - mb->dequeued_bytes;

		if (queued == 0 || mb->quota_bytes == 0 ||
			queued + mb->quota_wait_bytes <= mb->quota_bytes)
		{
			mb->quota_wait_bytes = 0;
			wake_quota_waiters = true;
		}
	}

	if (mb->head == mb->tail &&
		release.off == pg_atomic_read_u32(&mb->tail->end) &&
		cursor.seg == release.seg && cursor.off == release.off)
	{
		ImsgSegment *tail = mb->tail;

		if (tail->size > IMSG_MIN_SEGMENT)
		{
			mb->head = mb->tail = NULL;
			mb->head_off = 0;
			tail->next = to_free;
			to_free = tail;
			cursor.seg = release.seg = NULL;
			imsg_forget_end_cache();
		}
		else
		{
			/* nobody can reserve while we hold the mutex */
			pg_atomic_write_u32(&tail->end, IMSG_SEGMENT_HEADER);
			imsg_forget_end_cache();
			mb->head_off = IMSG_SEGMENT_HEADER;
			cursor.off = release.off = IMSG_SEGMENT_HEADER;
		}
		extra = mb->spare;
		mb->spare = NULL;
	}
	SpinLockRelease(&mb->mutex);

	received = pg_atomic_read_u64(&mb->received) + unpublished_received;
	pg_atomic_write_u64(&mb->received, received);
	unpublished_msgs = unpublished_bytes = unpublished_received = 0;

	/* after the mutex: the waiters take it to look again */
	if (wake_quota_waiters)
		ConditionVariableBroadcast(&mb->quota_cv);

	while (to_free != NULL)
	{
		ImsgSegment *next = to_free->next;

		imsg_segment_free(to_free);
		to_free = next;
	}
	if (extra != NULL)
		imsg_segment_free(extra);
}

/*
 * Accessors.  A compact message (from a pipelined batch) keeps what its
 * batch shares in its segment's header; the message's first word says which
 * kind it is and where that header is.
 */
#define COMPACT(msg) ((ImsgCompactMessage *) unconstify(ImsgMessage *, (msg)))
#define SEGMENT_OF(msg) imsg_compact_segment(unconstify(ImsgMessage *, (msg)))
#define IS_COMPACT(msg) imsg_msg_is_compact(unconstify(ImsgMessage *, (msg)))

uint64
ImsgMessageId(const ImsgMessage *msg)
{
	if (IS_COMPACT(msg))
		return SEGMENT_OF(msg)->batch_first_id +
			imsg_compact_offset8(pg_atomic_read_u32(&COMPACT(msg)->word));
	return msg->msg_id;
}

int32
ImsgMessageType(const ImsgMessage *msg)
{
	if (IS_COMPACT(msg))
		return COMPACT(msg)->msgtype;
	return msg->msgtype;
}

int
ImsgMessageSender(const ImsgMessage *msg)
{
	if (IS_COMPACT(msg))
		return SEGMENT_OF(msg)->batch_sender_pid;
	return msg->sender_pid;
}

int
ImsgMessageRecipient(const ImsgMessage *msg)
{
	if (IS_COMPACT(msg))
		return SEGMENT_OF(msg)->batch_recipient_pid;
	return msg->recipient_pid;
}

Oid
ImsgMessageSenderRole(const ImsgMessage *msg)
{
	if (IS_COMPACT(msg))
		return SEGMENT_OF(msg)->batch_sender_role;
	return msg->sender_role;
}

TimestampTz
ImsgMessageSentAt(const ImsgMessage *msg)
{
	if (IS_COMPACT(msg))
		return SEGMENT_OF(msg)->batch_sent_at;
	return msg->sent_at;
}

uint32
ImsgMessageLength(const ImsgMessage *msg)
{
	if (IS_COMPACT(msg))
		return imsg_compact_len(pg_atomic_read_u32(&COMPACT(msg)->word));
	return msg->length;
}

const char *
ImsgMessageData(const ImsgMessage *msg)
{
	if (IS_COMPACT(msg))
		return (const char *) msg + IMSG_COMPACT_HEADER;
	return (const char *) msg + IMSG_HEADER_SIZE;
}

const char *
ImsgResultString(ImsgResult result)
{
	switch (result)
	{
		case IMSG_OK:
			return "ok";
		case IMSG_WOULD_BLOCK:
			return "would block";
		case IMSG_TIMEOUT:
			return "timeout";
		case IMSG_NO_RECIPIENT:
			return "no recipient";
		case IMSG_TOO_LARGE:
			return "too large";
		case IMSG_NOT_LOADED:
			return "not loaded";
		case IMSG_OVER_QUOTA:
			return "over quota";
	}
	return "unknown";
}

/* The counts behind view imsg_area (and the area-full error's detail). */
void
imsg_area_counts(ImsgAreaCounts *c)
{
	ImsgArea   *area = ImsgAreaPtr;
	int			i;

	memset(c, 0, sizeof(*c));
	c->sent = pg_atomic_read_u64(&area->retired_sent);
	c->received = pg_atomic_read_u64(&area->retired_received);
	for (i = 0; i < area->num_mailboxes; i++)
	{
		ImsgMailbox *mb = imsg_mailbox(i);
		bool		open;

		SpinLockAcquire(&mb->mutex);
		open = mb->open;
		if (open)
		{
			c->used_bytes += mb->enqueued_bytes - mb->dequeued_bytes;
			c->queued_messages += mb->enqueued_msgs - mb->dequeued_msgs;
		}
		SpinLockRelease(&mb->mutex);
		/* a closed mailbox's counts are in the retired totals already */
		if (open)
		{
			c->sent += pg_atomic_read_u64(&mb->sent);
			c->received += pg_atomic_read_u64(&mb->received);
		}
	}
	LWLockAcquire(area->alloc_lock, LW_SHARED);
	c->allocated_bytes = area->allocated_bytes;
	c->peak_bytes = area->peak_bytes;
	c->segments_allocated = area->segments_allocated;
	LWLockRelease(area->alloc_lock);
	c->size_bytes = area->size_bytes;
	c->send_waits = pg_atomic_read_u64(&area->send_waits);
	c->send_failures = pg_atomic_read_u64(&area->send_failures);
}

/* How many mailbox slots there are (one per PGPROC). */
int
imsg_mailbox_slots(void)
{
	return ImsgAreaPtr->num_mailboxes;
}

/* The row of view imsg_mailboxes for slot 'slot'; false if it is closed. */
bool
imsg_mailbox_info(int slot, ImsgMailboxInfo *info)
{
	ImsgMailbox *mb = imsg_mailbox(slot);
	bool		open;

	memset(info, 0, sizeof(*info));
	SpinLockAcquire(&mb->mutex);
	open = mb->open;
	info->pid = mb->owner_pid;
	memcpy(info->backend_type, mb->backend_type, sizeof(info->backend_type));
	info->queued_messages = mb->enqueued_msgs - mb->dequeued_msgs;
	info->queued_bytes = mb->enqueued_bytes - mb->dequeued_bytes;
	info->quota_bytes = mb->quota_bytes;

	/*
	 * The head segment cannot be freed while we hold the mutex.  Show the
	 * first message's time once it is READY (the barrier pairs with the one
	 * in imsg_finish_pending).
	 */
	if (open && info->queued_messages > 0 && mb->head != NULL &&
		mb->head_off < pg_atomic_read_u32(&mb->head->end))
	{
		ImsgMessage *msg = (ImsgMessage *) ((char *) mb->head + mb->head_off);

		if (imsg_msg_state(msg) == IMSG_STATE_READY)
		{
			pg_read_barrier();
			info->oldest_sent_at = ImsgMessageSentAt(msg);
		}
	}
	SpinLockRelease(&mb->mutex);
	info->backend_type[sizeof(info->backend_type) - 1] = '\0';
	info->sent = pg_atomic_read_u64(&mb->sent);
	info->received = pg_atomic_read_u64(&mb->received);
	return open;
}
