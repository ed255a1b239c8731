/*-------------------------------------------------------------------------
 *
 * mailbox_int.h
 *	  The area and its mailboxes: the layout of the shared memory, the
 *	  message and segment formats, and what area.c and mailbox.c offer the
 *	  rest.  Every reader of the segment format lives in mailbox.c (the
 *	  monitoring views included); area.c owns the page allocator.
 *
 * Layout of the area (one ShmemInitStruct, sized from imessages.buffer_size):
 *
 *	 ImsgArea header (counters, the page allocator's FreePageManager)
 *	 ImsgMailbox[num_mailboxes], one per PGPROC slot, cache-line padded
 *	 message pages: buffer_size bytes, FPM_PAGE_SIZE each
 *
 * A mailbox's queue is a chain of segments: runs of pages taken from the
 * page allocator.  Senders append messages at the end of the newest segment
 * (the tail); the owner reads them from the oldest (the head).
 *
 * Copyright (c) 2026, imessages developers
 *
 * IDENTIFICATION
 *	  src/mailbox_int.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef IMESSAGES_MAILBOX_INT_H
#define IMESSAGES_MAILBOX_INT_H

#include "imessages_int.h"
#include "port/atomics.h"
#include "storage/condition_variable.h"
#include "storage/spin.h"
#include "utils/freepage.h"

/*
 * A message as it sits in a segment.
 *
 * The sender reserves it under the mailbox mutex, where it sets state to
 * IMSG_STATE_RESERVED before publishing the segment's new end.  It then
 * fills in the other fields and the payload without any lock, issues a
 * write barrier and sets state to READY (or CANCELLED).  The owner reads a
 * message only at an offset below the segment's end (so state is
 * initialized), and reads the other fields only after seeing READY and
 * issuing a read barrier: the pair is the write barrier in
 * imsg_finish_pending and the read barrier in imsg_next_message.  After
 * READY only the owner writes the message: it may set state to CONSUMED
 * (ImsgConsume) until it releases it.
 */
struct ImsgMessage
{
	pg_atomic_uint32 state;		/* IMSG_STATE_* */
	uint32		space;			/* bytes taken in the segment, header too */
	uint32		length;			/* payload bytes */
	int32		msgtype;
	int32		sender_pid;
	int32		recipient_pid;
	Oid			sender_role;
	uint32		reserved_len;	/* payload bytes reserved */
	uint64		msg_id;
	TimestampTz sent_at;
	/* payload follows, MAXALIGNed */
};

#define IMSG_STATE_RESERVED		1
#define IMSG_STATE_READY		2
#define IMSG_STATE_CANCELLED	3
#define IMSG_STATE_CONSUMED		4	/* taken out of order by its owner */
#define IMSG_STATE_MASK			0x7

#define IMSG_HEADER_SIZE		MAXALIGN(sizeof(ImsgMessage))
#define IMSG_MESSAGE_SPACE(len) (IMSG_HEADER_SIZE + MAXALIGN(len))

/*
 * A compact message: what ImsgSendPipelined writes into a batch segment (see
 * mailbox.c), 8 bytes of header where a full message has 48.  What all the
 * batch's messages share (sender, role, recipient, time, the first id) is
 * in the segment's header.  Its first word takes the place of 'state':
 *
 *	bits 0-2	IMSG_STATE_* (READY when published; the owner may set CONSUMED)
 *	bit 3		IMSG_STATE_COMPACT
 *	bits 4-17	payload length (< IMSG_COMPACT_MAX_LEN + 1)
 *	bits 18-31	offset in its segment, in 8-byte units
 *
 * so the state test is the same for both kinds, and the accessors find the
 * segment from the message.  Its id is the batch's first id plus its offset
 * in 8-byte units: unique, and increasing in send order.
 */
typedef struct ImsgCompactMessage
{
	pg_atomic_uint32 word;
	int32		msgtype;
	/* payload follows */
} ImsgCompactMessage;

#define IMSG_STATE_COMPACT		0x8
#define IMSG_COMPACT_HEADER		MAXALIGN(sizeof(ImsgCompactMessage))
#define IMSG_COMPACT_SPACE(len) (IMSG_COMPACT_HEADER + MAXALIGN(len))
#define IMSG_COMPACT_MAX_LEN	((1U << 14) - 1)
#define IMSG_COMPACT_MAX_OFFSET ((1U << 14) * 8)	/* a batch segment's limit */

static inline uint32
imsg_compact_word(uint32 state, uint32 len, uint32 offset)
{
	return state | IMSG_STATE_COMPACT | (len << 4) | ((offset / 8) << 18);
}

/* The payload length, and the offset in 8-byte units, of a compact word. */
static inline uint32
imsg_compact_len(uint32 word)
{
	return (word >> 4) & IMSG_COMPACT_MAX_LEN;
}

static inline uint32
imsg_compact_offset8(uint32 word)
{
	return word >> 18;
}

/*
 * A segment: a run of pages in a mailbox's chain.
 *
 * 'size' never changes while the segment is allocated.  'end' is the offset
 * of the first unreserved byte; senders advance it under the mailbox mutex,
 * after initializing the state of the message they reserve, and the owner
 * reads it locklessly followed by a read barrier (pairs with the spinlock
 * release in imsg_reserve).  'next' is set once, under the mutex, when a
 * sender links a newer segment; no reservation is made in this segment
 * after that, so an owner that sees next != NULL and then (after a read
 * barrier) reads 'end' sees its final value.
 */
typedef struct ImsgSegment
{
	struct ImsgSegment *next;
	pg_atomic_uint32 end;
	uint32		size;			/* bytes, this header included */
	/* a batch segment's compact messages share these (set before publishing) */
	uint64		batch_first_id;
	TimestampTz batch_sent_at;
	int32		batch_sender_pid;
	int32		batch_recipient_pid;
	Oid			batch_sender_role;
} ImsgSegment;

#define IMSG_SEGMENT_HEADER		MAXALIGN(sizeof(ImsgSegment))

/* A message's state, whichever its kind. */
static inline uint32
imsg_msg_state(ImsgMessage *msg)
{
	return pg_atomic_read_u32(&msg->state) & IMSG_STATE_MASK;
}

static inline bool
imsg_msg_is_compact(ImsgMessage *msg)
{
	return (pg_atomic_read_u32(&msg->state) & IMSG_STATE_COMPACT) != 0;
}

/* Bytes it takes in its segment, header included. */
static inline uint32
imsg_msg_space(ImsgMessage *msg)
{
	uint32		word = pg_atomic_read_u32(&msg->state);

	if (word & IMSG_STATE_COMPACT)
		return IMSG_COMPACT_SPACE(imsg_compact_len(word));
	return msg->space;
}

/* The owner marks a message taken out of order (either kind). */
static inline void
imsg_msg_set_state(ImsgMessage *msg, uint32 state)
{
	uint32		word = pg_atomic_read_u32(&msg->state);

	pg_atomic_write_u32(&msg->state, (word & ~IMSG_STATE_MASK) | state);
}

static inline ImsgSegment *
imsg_compact_segment(ImsgMessage *msg)
{
	uint32		word = pg_atomic_read_u32(&msg->state);

	return (ImsgSegment *) ((char *) msg - (Size) imsg_compact_offset8(word) * 8);
}

/*
 * A mailbox, one per PGPROC slot (index = pgprocno).
 *
 * Notes on synchronization:
 *
 * 'mutex' protects the fields in the first group.  Senders take it to check
 * the owner and reserve space; the owner takes it to publish what it has
 * released and to recycle drained segments.  No LWLock is ever acquired
 * while it is held, and it is held for a few dozen instructions only.
 *
 * 'owner_pid' and 'generation' identify the owner: a sender remembers both
 * when it looks the pid up, and a reservation succeeds only if both still
 * match under the mutex.  The owner bumps 'generation' when it opens and
 * when it closes its mailbox, so a sender can never reach a later owner of
 * the same slot, even one with a reused pid.
 *
 * A reservation in progress is a message in state RESERVED: the closing
 * owner waits until none is left (imsg_writes_in_progress) before it frees
 * the segments, so a sender never writes into freed pages.  (A counter of
 * writers did this before; it cost two atomic operations per message.)
 *
 * The owner-only fields are written by the owner alone (plain atomic
 * writes, no lock) and read by the monitoring views; they are on their own
 * cache line so that the owner's writes do not disturb senders.
 *
 * Quota (see "Quotas" in mailbox.c): a sender compares enqueued_bytes -
 * dequeued_bytes (the bytes queued, as the owner last published its
 * releases) with 'quota_bytes' under the mutex it takes anyway to reserve,
 * so the check adds no lock and no atomic operation to a send; the three
 * fields share the first cache line.  A sender that must wait for the
 * sender that must wait for the owner registers on 'quota_cv' first
 * (ConditionVariablePrepareToSleep), then, under the mutex, finds the
 * mailbox still over its quota and notes in 'quota_wait_bytes' the room it
 * needs (the smallest need of all waiters).  The owner, under the mutex,
 * publishes what it released (dequeued_bytes); if that leaves the room a
 * waiter needs, it clears quota_wait_bytes and, after releasing the
 * mutex, broadcasts quota_cv.  The mutex orders the two: either the
 * sender's recheck sees the new dequeued_bytes, or the owner sees the
 * need of a sender that is already on the CV's wait list, and the owner's
 * test is the negation of the sender's, so no wake-up is lost; a release
 * that leaves too little room wakes nobody, and an owner that nobody
 * waits for pays one load and a compare under a mutex it holds already.
 */
typedef struct ImsgMailbox
{
	slock_t		mutex;
	/* protected by mutex: */
	bool		open;
	int			owner_pid;
	uint32		generation;
	ImsgSegment *head;			/* oldest segment not yet recycled */
	uint32		head_off;		/* published release position in head */
	ImsgSegment *tail;			/* segment that takes new messages */
	ImsgSegment *spare;			/* drained segment kept for reuse */
	uint64		enqueued_msgs;	/* reserved since open (sender side) */
	uint64		enqueued_bytes;
	uint64		dequeued_msgs;	/* released since open (owner side) */
	uint64		dequeued_bytes;

	/*
	 * Bytes this mailbox may have queued before senders wait (0: no
	 * quota).  Written by the owner only (when it opens the mailbox and
	 * when its setting changes), under the mutex; read by senders under
	 * the mutex.
	 */
	uint64		quota_bytes;

	/*
	 * 0, or the smallest room (bytes) a sender waiting on quota_cv needs
	 * under the quota.  Set by such a sender, after it registered on
	 * quota_cv; read by the owner when it publishes releases, and cleared
	 * (then quota_cv broadcast) once they leave that much room, when its
	 * quota changes and when it closes.  Under the mutex.
	 */
	uint32		quota_wait_bytes;
	char		backend_type[64];

	/* senders waiting for room under the quota; see quota_wait_bytes */
	ConditionVariable quota_cv;

	/* written only by the owner, read by the views: */
	char		pad[PG_CACHE_LINE_SIZE];
	pg_atomic_uint64 sent;		/* messages this process sent */
	pg_atomic_uint64 received;	/* messages this process received */
} ImsgMailbox;

typedef union ImsgMailboxPadded
{
	ImsgMailbox mb;
	char		pad[3 * PG_CACHE_LINE_SIZE];
} ImsgMailboxPadded;

StaticAssertDecl(sizeof(ImsgMailbox) <= 3 * PG_CACHE_LINE_SIZE,
				 "ImsgMailbox does not fit its padding");

/*
 * The area header.
 *
 * Set at shared memory start-up and never changed: size fields, mailboxes,
 * pages.  The page allocator 'fpm' and 'allocated_bytes'/'peak_bytes' are
 * protected by 'alloc_lock' (an LWLock: FreePageManagerGet can walk its
 * btree, too long for a spinlock).  It is taken only to get or put a whole
 * segment, never per message.  'space_cv' is broadcast whenever pages are
 * freed; a sender short of space registers on it (ConditionVariable-
 * PrepareToSleep) before it rechecks the allocator, so no wake-up is lost.
 *
 * The manager's identity is written by the manager when it starts and
 * stops: its pid under manager_lock (for the SQL functions), and its slot
 * and mailbox generation packed in one atomic, manager_ident, that senders
 * read without any lock (a spinlock here was one more atomic operation on
 * a line shared by every sender).  A stale value is harmless: the sender
 * checks the generation again under the mailbox's mutex.  The other counters are atomics updated
 * on rare paths (waits, failures, mailbox close).
 */
typedef struct ImsgArea
{
	/* constant after start-up */
	Size		size_bytes;		/* bytes of message pages */
	Size		total_pages;
	int			num_mailboxes;
	char	   *pages;			/* first message page */
	ImsgMailboxPadded *mailboxes;
	int			lwlock_tranche_id;

	/* page allocator */
	LWLock	   *alloc_lock;
	Size		allocated_bytes;
	Size		peak_bytes;
	uint64		segments_allocated;
	FreePageManager fpm;

	ConditionVariable space_cv;

	/* message ids: handed out to processes in blocks */
	pg_atomic_uint64 next_msg_id;

	/* statistics of closed mailboxes and rare events */
	pg_atomic_uint64 retired_sent;
	pg_atomic_uint64 retired_received;
	pg_atomic_uint64 send_waits;
	pg_atomic_uint64 send_failures;

	/* the replication manager */
	slock_t		manager_lock;
	int			manager_pid;
	pg_atomic_uint64 manager_ident; /* see IMSG_MANAGER_IDENT */
} ImsgArea;

/* area.c */
extern ImsgArea *ImsgAreaPtr;
extern void imsg_area_request(void);
extern void imsg_area_startup(void);
extern Size imsg_area_shmem_size(void);
extern ImsgSegment *imsg_segment_alloc(Size min_bytes, Size want_bytes,
									   long timeout_ms, ImsgResult *result);
extern void imsg_segment_free(ImsgSegment *seg);
extern uint64 imsg_next_message_id(void);
extern uint64 imsg_reserve_message_ids(uint64 count);

/* mailbox.c */
extern ImsgMailbox *imsg_my_mailbox(void);
extern bool imsg_mailbox_has_ready(void);
extern bool imsg_poll_mailbox(void);
extern void imsg_flush_release(void);
extern bool imsg_mailbox_drained(void);
extern bool imsg_mailbox_is_open(int pid);


#endif							/* IMESSAGES_MAILBOX_INT_H */
