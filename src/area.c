/*-------------------------------------------------------------------------
 *
 * area.c
 *	  The imessages shared memory area: sizing, start-up, page allocator.
 *
 * The area is one fixed block of the main shared memory segment, reserved
 * in shmem_request_hook and laid out in shmem_startup_hook.  Message memory
 * is handed out in segments (runs of FPM_PAGE_SIZE pages) by core's
 * FreePageManager, the page allocator dsa.c uses; dsa itself is not used
 * because the postmaster cannot create DSM, every process would have to
 * attach, and dsa's per-allocation locking is too coarse for a per-message
 * allocator.  A segment is shared by many messages (see mailbox.c), so the
 * allocator lock is taken once per segment, not once per message.
 *
 * Copyright (c) 2026, imessages developers
 *
 * IDENTIFICATION
 *	  src/area.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "miscadmin.h"
#include "pgstat.h"
#include "storage/ipc.h"
#include "storage/lwlock.h"
#include "storage/proc.h"
#include "storage/shmem.h"
#include "utils/timestamp.h"

#include "mailbox_int.h"
#include "replication_int.h"
#include "changeset_int.h"

ImsgArea   *ImsgAreaPtr = NULL;
ImsgManagerShared *ImsgManagerState = NULL;
ImsgRecentRing *ImsgRecent = NULL;

/*
 * Bumped each time the postmaster (re)creates the area, so that message ids
 * stay unique across crash restarts within one postmaster's life.  Only the
 * postmaster runs imsg_area_startup, so a plain static is enough.
 */
static uint64 area_incarnation = 0;

#define IMSG_ID_BLOCK			1024	/* ids a process takes at a time */
#define IMSG_MIN_SEGMENT		(2 * FPM_PAGE_SIZE)

static int
imsg_num_mailboxes(void)
{
	/* one per PGPROC slot that can run a process (no prepared-xact dummies) */
	return MaxBackends + NUM_AUXILIARY_PROCS;
}

/* Bytes of the header plus the mailbox array, rounded up to whole pages. */
static Size
imsg_metadata_size(void)
{
	Size		size;

	size = MAXALIGN(sizeof(ImsgArea));
	size = add_size(size, mul_size(imsg_num_mailboxes(), sizeof(ImsgMailboxPadded)));
	return TYPEALIGN(FPM_PAGE_SIZE, size);
}

Size
imsg_area_shmem_size(void)
{
	Size		pages = (Size) imsg_buffer_size_kb * 1024 / FPM_PAGE_SIZE;

	/* one spare page so that the message pages can start page-aligned */
	return add_size(imsg_metadata_size(), mul_size(pages + 1, FPM_PAGE_SIZE));
}

/* The manager's status and one helper slot per possible worker. */
Size
imsg_manager_shmem_size(void)
{
	return add_size(offsetof(ImsgManagerShared, helpers),
					mul_size(max_worker_processes, sizeof(ImsgHelperSlot)));
}

void
imsg_area_request(void)
{
	RequestAddinShmemSpace(imsg_area_shmem_size());
	RequestAddinShmemSpace(imsg_manager_shmem_size());
	RequestAddinShmemSpace(sizeof(ImsgRecentRing));
	/* the page allocator's lock and the recent change sets' lock */
	RequestNamedLWLockTranche("imessages", 2);
	imsg_local_writes_request();
}

/*
 * Lay out the area.  Runs in the postmaster (and again after every crash
 * restart, in a brand new segment), under AddinShmemInitLock.
 */
void
imsg_area_startup(void)
{
	bool		found;
	ImsgArea   *area;
	char	   *base;
	Size		meta;
	Size		first_page;
	int			i;

	ImsgManagerState = ShmemInitStruct("imessages manager",
									   imsg_manager_shmem_size(), &found);
	if (!found)
	{
		memset(ImsgManagerState, 0, imsg_manager_shmem_size());
		SpinLockInit(&ImsgManagerState->mutex);
		pg_atomic_init_u32(&ImsgManagerState->settle_polling, 0);
		pg_atomic_init_u64(&ImsgManagerState->commit_horizon, 0);
		pg_atomic_init_u32(&ImsgManagerState->flow_paused, 0);
		pg_atomic_init_u32(&ImsgManagerState->node_state, IMSG_NODE_DISCONNECTED);
		ImsgManagerState->num_helper_slots = max_worker_processes;
		for (i = 0; i < max_worker_processes; i++)
			SpinLockInit(&ImsgManagerState->helpers[i].mutex);
	}

	ImsgRecent = ShmemInitStruct("imessages recent change sets",
								 sizeof(ImsgRecentRing), &found);
	if (!found)
	{
		memset(ImsgRecent, 0, sizeof(ImsgRecentRing));
		ImsgRecent->lock = &(GetNamedLWLockTranche("imessages"))[1].lock;
	}

	imsg_local_writes_startup();

	area = ShmemInitStruct("imessages area", imsg_area_shmem_size(), &found);
	ImsgAreaPtr = area;
	if (found)
		return;

	memset(area, 0, MAXALIGN(sizeof(ImsgArea)));
	meta = imsg_metadata_size();

	/*
	 * FreePageManager numbers pages from its base; make the base the area
	 * itself, rounded down to a page boundary, so the metadata occupies the
	 * first pages and is never handed out.
	 */
	base = (char *) TYPEALIGN_DOWN(FPM_PAGE_SIZE, (uintptr_t) area);
	first_page = fpm_size_to_pages(((char *) area + meta) - base);

	area->num_mailboxes = imsg_num_mailboxes();
	area->mailboxes = (ImsgMailboxPadded *) ((char *) area + MAXALIGN(sizeof(ImsgArea)));
	area->total_pages = (Size) imsg_buffer_size_kb * 1024 / FPM_PAGE_SIZE;
	area->size_bytes = area->total_pages * FPM_PAGE_SIZE;
	area->pages = base + first_page * FPM_PAGE_SIZE;
	Assert(area->pages + area->size_bytes <= (char *) area + imsg_area_shmem_size());

	area->alloc_lock = &(GetNamedLWLockTranche("imessages"))->lock;
	FreePageManagerInitialize(&area->fpm, base);
	FreePageManagerPut(&area->fpm, first_page, area->total_pages);
	ConditionVariableInit(&area->space_cv);

	area_incarnation++;
	pg_atomic_init_u64(&area->next_msg_id, ((area_incarnation - 1) << 48) + 1);
	pg_atomic_init_u64(&area->retired_sent, 0);
	pg_atomic_init_u64(&area->retired_received, 0);
	pg_atomic_init_u64(&area->send_waits, 0);
	pg_atomic_init_u64(&area->send_failures, 0);

	SpinLockInit(&area->manager_lock);
	area->manager_pid = 0;
	pg_atomic_init_u64(&area->manager_ident, 0);

	for (i = 0; i < area->num_mailboxes; i++)
	{
		ImsgMailbox *mb = &area->mailboxes[i].mb;

		memset(mb, 0, sizeof(ImsgMailboxPadded));
		SpinLockInit(&mb->mutex);
		ConditionVariableInit(&mb->quota_cv);
		pg_atomic_init_u64(&mb->sent, 0);
		pg_atomic_init_u64(&mb->received, 0);
	}
}

/*
 * The largest message payload that can ever fit: one segment spanning the
 * whole area.  FreePageManager may keep a few pages for its own btree, so
 * leave it some room.
 */
Size
imsg_largest_message(void)
{
	Size		pages = ImsgAreaPtr->total_pages;
	Size		usable;

	pages -= Min(pages / 64 + 1, pages);
	usable = pages * FPM_PAGE_SIZE;
	if (usable <= IMSG_SEGMENT_HEADER + IMSG_HEADER_SIZE)
		return 0;
	return usable - IMSG_SEGMENT_HEADER - IMSG_HEADER_SIZE;
}

/* Try to take npages from the allocator; NULL if no run that long is free. */
static ImsgSegment *
imsg_try_get_pages(Size npages)
{
	ImsgArea   *area = ImsgAreaPtr;
	Size		first_page;
	ImsgSegment *seg = NULL;

	LWLockAcquire(area->alloc_lock, LW_EXCLUSIVE);
	if (FreePageManagerGet(&area->fpm, npages, &first_page))
	{
		seg = (ImsgSegment *) fpm_page_to_pointer(fpm_segment_base((&area->fpm)), first_page);
		area->allocated_bytes += npages * FPM_PAGE_SIZE;
		area->peak_bytes = Max(area->peak_bytes, area->allocated_bytes);
		area->segments_allocated++;
	}
	LWLockRelease(area->alloc_lock);

	if (seg)
	{
		seg->next = NULL;
		seg->size = npages * FPM_PAGE_SIZE;
		pg_atomic_init_u32(&seg->end, IMSG_SEGMENT_HEADER);
	}
	return seg;
}

/*
 * Take back the spare segments of every mailbox: they are empty, kept only
 * to spare their owners a trip to the allocator.  Called when the allocator
 * runs dry, before anyone waits.
 */
static void
imsg_reclaim_spares(void)
{
	ImsgArea   *area = ImsgAreaPtr;
	int			i;

	for (i = 0; i < area->num_mailboxes; i++)
	{
		ImsgMailbox *mb = &area->mailboxes[i].mb;
		ImsgSegment *spare;

		if (mb->spare == NULL)	/* unlocked peek; rechecked below */
			continue;
		SpinLockAcquire(&mb->mutex);
		spare = mb->spare;
		mb->spare = NULL;
		SpinLockRelease(&mb->mutex);
		if (spare)
			imsg_segment_free(spare);
	}
}

/*
 * Allocate a segment of at least min_bytes, preferably want_bytes.
 *
 * If the area is full: with nowait, return NULL and IMSG_WOULD_BLOCK at
 * once; otherwise sleep on space_cv until pages are freed or timeout_ms
 * passes (< 0: no limit), then IMSG_TIMEOUT.  The clock is read only if it
 * has to sleep: reading it costs more than the rest of a send.  The sleep runs
 * CHECK_FOR_INTERRUPTS and exits on postmaster death, so cancel and
 * statement_timeout end it with an ERROR; nothing is held across it.
 */
ImsgSegment *
imsg_segment_alloc(Size min_bytes, Size want_bytes, long timeout_ms,
				   ImsgResult *result)
{
	ImsgArea   *area = ImsgAreaPtr;
	Size		min_pages = fpm_size_to_pages(min_bytes);
	Size		want_pages = Max(min_pages, fpm_size_to_pages(want_bytes));
	bool		reclaimed = false;
	bool		sleeping = false;
	bool		nowait = timeout_ms == 0;
	TimestampTz deadline = 0;
	ImsgSegment *seg;

	if (min_pages > area->total_pages)
	{
		*result = IMSG_TOO_LARGE;
		return NULL;
	}

	for (;;)
	{
		seg = imsg_try_get_pages(want_pages);
		if (seg == NULL && want_pages > min_pages)
			seg = imsg_try_get_pages(min_pages);
		if (seg != NULL)
			break;

		if (!reclaimed)
		{
			imsg_reclaim_spares();
			reclaimed = true;
			continue;
		}
		if (nowait)
		{
			*result = IMSG_WOULD_BLOCK;
			break;
		}
		if (!sleeping)
		{
			/* register, then recheck: a free after this point wakes us */
			ConditionVariablePrepareToSleep(&area->space_cv);
			pg_atomic_fetch_add_u64(&area->send_waits, 1);
			sleeping = true;
			if (timeout_ms > 0)
				deadline = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), timeout_ms);
			continue;
		}
		if (deadline != 0)
		{
			long		remaining;

			remaining = TimestampDifferenceMilliseconds(GetCurrentTimestamp(),
														deadline);
			if (remaining <= 0)
			{
				*result = IMSG_TIMEOUT;
				break;
			}
			(void) ConditionVariableTimedSleep(&area->space_cv, remaining,
											   PG_WAIT_EXTENSION);
		}
		else
			ConditionVariableSleep(&area->space_cv, PG_WAIT_EXTENSION);
	}

	if (sleeping)
		ConditionVariableCancelSleep();
	if (seg == NULL)
		pg_atomic_fetch_add_u64(&area->send_failures, 1);
	else
		*result = IMSG_OK;
	return seg;
}

/* Give a segment back to the allocator and wake senders waiting for room. */
void
imsg_segment_free(ImsgSegment *seg)
{
	ImsgArea   *area = ImsgAreaPtr;
	Size		npages = seg->size / FPM_PAGE_SIZE;
	char	   *base = fpm_segment_base((&area->fpm));

	LWLockAcquire(area->alloc_lock, LW_EXCLUSIVE);
	FreePageManagerPut(&area->fpm, fpm_pointer_to_page(base, seg), npages);
	area->allocated_bytes -= npages * FPM_PAGE_SIZE;
	LWLockRelease(area->alloc_lock);

	/* cheap when nobody waits: a spinlock and an empty-list test */
	ConditionVariableBroadcast(&area->space_cv);
}

/*
 * A message id unique for the life of the postmaster.  Each process takes a
 * block of ids at a time so that senders do not all hit one atomic.
 */
static uint64 next_id = 0;		/* this process's block of ids */
static uint64 id_limit = 0;

uint64
imsg_next_message_id(void)
{
	if (next_id == id_limit)
	{
		next_id = pg_atomic_fetch_add_u64(&ImsgAreaPtr->next_msg_id, IMSG_ID_BLOCK);
		id_limit = next_id + IMSG_ID_BLOCK;
	}
	return next_id++;
}

/*
 * A run of 'count' message ids for a pipelined batch (see mailbox.c).  The
 * rest of this process's block is dropped, so that its ids keep increasing
 * in send order: the run is above the block, the next block above the run.
 */
uint64
imsg_reserve_message_ids(uint64 count)
{
	next_id = id_limit = 0;
	return pg_atomic_fetch_add_u64(&ImsgAreaPtr->next_msg_id, count);
}
