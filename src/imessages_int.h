/*-------------------------------------------------------------------------
 *
 * imessages_int.h
 *	  Private declarations shared by the files of imessages.
 *
 * Layout of the area (one ShmemInitStruct, sized from imessages.buffer_size):
 *
 *	 ImsgArea header (counters, the page allocator's FreePageManager)
 *	 ImsgMailbox[num_mailboxes], one per PGPROC slot, cache-line padded
 *	 message pages: buffer_size bytes, FPM_PAGE_SIZE each
 *
 * A mailbox's queue is a chain of segments: runs of pages taken from the
 * page allocator.  Senders append messages at the end of the newest segment
 * (the tail); the owner reads them from the oldest (the head).  See
 * DESIGN.md for the whole picture.
 *
 * Copyright (c) 2026, imessages developers
 *
 * IDENTIFICATION
 *	  src/imessages_int.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef IMESSAGES_INT_H
#define IMESSAGES_INT_H

#include "imessages.h"
#include "port/atomics.h"
#include "storage/condition_variable.h"
#include "storage/lwlock.h"
#include "storage/spin.h"
#include "utils/freepage.h"
#include "utils/guc.h"

/* GUCs (imessages.c) */
extern int	imsg_buffer_size_kb;
extern int	imsg_max_message_size;
extern int	imsg_send_timeout_ms;
extern int	imsg_min_helpers;
extern int	imsg_max_helpers;
extern char *imsg_database;
extern int	imsg_gcs;
extern char *imsg_gcs_group;
extern char *imsg_node_name;
extern int	imsg_commit_mode;
extern int	imsg_commit_timeout_ms;
extern int	imsg_settle_delay_ms;
extern int	imsg_gcs_join_wait_ms;
extern int	imsg_certification_window;

#define IMSG_COMMIT_ASYNC		0
#define IMSG_COMMIT_SYNC		1

/*
 * imessages' own message types (negative: imsg_send() refuses them, and
 * imsg_receive() skips any that a timed-out wait left behind).
 */
#define IMSG_T_PING				(-1)	/* backend -> manager: int64 id, int8 target */
#define IMSG_T_PONG				(-2)	/* manager -> backend: int64 id, int8 status */
#define IMSG_T_HELPER_READY		(-3)	/* helper -> manager: int32 slot */
#define IMSG_T_JOB_PING			(-4)	/* manager -> helper: int32 origin, int64 id */
#define IMSG_T_JOB_DONE			(-5)	/* helper -> manager: int32 slot, int32 origin, int64 id */

#define IMSG_T_CHANGESET		(-10)	/* backend -> manager: a change set (below) */
#define IMSG_T_CS_ORDERED		(-11)	/* manager -> backend: int64 xid, int64 seq,
										 * int8 ImsgCsOutcome */
#define IMSG_T_CS_APPLY			(-12)	/* manager -> helper: a remote change set */
#define IMSG_T_CS_APPLIED		(-13)	/* helper -> manager: int32 slot, int64 seq, int8 ok, int64 changes */
/* -14 was a separate seen vector; -15 is IMSG_T_PART (mailbox_large.h) */

/* How a sync change set fared, in the IMSG_T_CS_ORDERED reply. */
typedef enum ImsgCsOutcome
{
	IMSG_CS_OUTCOME_ORDERED = 0,	/* delivered in total order: commit */
	IMSG_CS_OUTCOME_CONFLICT = 1,	/* lost certification: 40001 */
	IMSG_CS_OUTCOME_NO_GROUP = 2,	/* the GCS is not connected: not sent */
	IMSG_CS_OUTCOME_NO_QUORUM = 3,	/* not in the primary component: not sent */
	IMSG_CS_OUTCOME_LOST = 4	/* sent, then the GCS was lost: unknown */
} ImsgCsOutcome;

#define IMSG_PING_MANAGER		0
#define IMSG_PING_HELPER		1
#define IMSG_PONG_OK			0
#define IMSG_PONG_NO_HELPER		1

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
	char		backend_type[64];

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

/*
 * Change-set format, written by changeset.c and read by changeset_decode.c
 * (and, across nodes, by the helpers that apply it).  All integers in
 * network order through the ImsgBuffer helpers; "string" is a uint32
 * length and bytes.
 *
 *	 header:   int32 IMSG_CS_MAGIC, int8 IMSG_CS_VERSION
 *	 then records, each starting with an int8 tag:
 *	 'R' relation: int32 id, string schema, string name, int16 ncols,
 *				   ncols x (string column, string type, int8 IMSG_CS_COL_* flags)
 *	 'I' insert:   int32 relation id, values of every column
 *	 'U' update:   int32 relation id, values of the old key, values of every column
 *	 'D' delete:   int32 relation id, values of the old key
 *	 values:       int16 n, n x (int8 'n' null | 'b' binary string | 't' text string)
 *
 * A relation's 'R' record comes before its first change in each change set.
 *
 * The message (IMSG_T_CHANGESET, in parts if large: see mailbox_large.c)
 * carries: int64 xid (full), int8 IMSG_CS_SYNC/IMSG_CS_HAS_SEEN flags,
 * int32 number of changes, with HAS_SEEN the seen vector (what this node
 * had applied at PRE_COMMIT, for certification), then the change set.
 */
#define IMSG_CS_MAGIC			0x49435331	/* "ICS1" */
#define IMSG_CS_VERSION			1
#define IMSG_CS_RELATION		'R'
#define IMSG_CS_INSERT			'I'
#define IMSG_CS_UPDATE			'U'
#define IMSG_CS_DELETE			'D'
#define IMSG_CS_NULL			'n'
#define IMSG_CS_BINARY			'b'
#define IMSG_CS_TEXT			't'
#define IMSG_CS_COL_KEY			0x01
#define IMSG_CS_COL_BINARY		0x02
#define IMSG_CS_SYNC			0x02
#define IMSG_CS_HAS_SEEN		0x04
#define IMSG_CS_HEADER			(8 + 1 + 4) /* before the seen vector */

/*
 * The last change sets the manager delivered, for imsg_recent_changesets():
 * a ring written by the manager only, under 'lock' (an LWLock: readers copy
 * up to IMSG_RECENT_PAYLOAD bytes).  A bigger change set is kept without
 * its payload.
 */
#define IMSG_RECENT_SLOTS		64
#define IMSG_RECENT_PAYLOAD		8192

typedef struct ImsgRecentChangeset
{
	uint64		seq;
	int			origin_pid;
	uint64		xid;
	int32		changes;
	uint32		bytes;
	TimestampTz delivered_at;
	bool		has_payload;
	char		payload[IMSG_RECENT_PAYLOAD];
} ImsgRecentChangeset;

typedef struct ImsgRecentRing
{
	LWLock	   *lock;
	uint64		count;			/* entries ever written */
	ImsgRecentChangeset slots[IMSG_RECENT_SLOTS];
} ImsgRecentRing;

extern ImsgRecentRing *ImsgRecent;

/*
 * One slot per helper the manager may run (max_worker_processes of them).
 *
 * The manager owns the slot's lifecycle: it fills 'generation' and sets
 * state STARTING before registering the worker, and frees the slot
 * (state FREE) once the postmaster reports the worker stopped.  The helper
 * writes 'pid', 'started_at', state IDLE/BUSY, 'jobs_done' while it runs,
 * and 'exit_code' (from its on_shmem_exit callback) as it exits.  Every
 * field is protected by 'mutex'; readers are the manager and the SQL
 * functions.  A helper whose generation does not match its slot's (the
 * manager gave up on it) exits at once.
 */
typedef enum ImsgHelperState
{
	IMSG_HELPER_FREE = 0,
	IMSG_HELPER_STARTING,
	IMSG_HELPER_IDLE,
	IMSG_HELPER_BUSY
} ImsgHelperState;

typedef struct ImsgHelperSlot
{
	slock_t		mutex;
	ImsgHelperState state;
	uint32		generation;
	int			pid;
	TimestampTz started_at;
	uint64		jobs_done;
	bool		exit_recorded;
	int			exit_code;
} ImsgHelperSlot;

/*
 * The manager's status, for imsg_manager_status().  Written by the manager
 * under 'mutex'; survives manager restarts (not server restarts), so that
 * 'last_error' tells why the previous manager exited.  Also under 'mutex'
 * but written by others: 'seen' and 'remote_writes_skipped' by helpers
 * when they commit an apply.  'apply_horizon' (manager) is read by a
 * backend whose sync transaction lost certification, waiting for the
 * winners' apply (imsg_cs_wait_applied).
 *
 * 'settle_polling' is the exception: an atomic, written only by the manager,
 * read without the mutex by backends at COMMIT and ABORT.  Nonzero, it says
 * that the manager will look at committing transactions' outcomes within
 * imessages.settle_delay without being woken, so they skip the SetLatch.
 * The manager clears it, issues a full barrier and looks at its mailbox
 * once more before it sleeps; a backend queues its change set, issues a
 * full barrier and reads the flag (imsg_cs_wake_manager).
 */
/*
 * A member of the group, as the GCS reports it: 'node' is its
 * imessages.node_name once known (empty until it has sent something),
 * 'nodeid' the GCS's own node number (0 for 'local'), 'pid' its manager's
 * pid on that node, 'joined_at' when this node saw it join (or joined a
 * group that had it).
 */
#define IMSG_MAX_GROUP_MEMBERS	32

typedef struct ImsgGroupMember
{
	char		node[NAMEDATALEN];
	uint32		nodeid;
	uint32		pid;
	TimestampTz joined_at;
} ImsgGroupMember;

/*
 * What this node has applied of another origin's change sets: the counter
 * of the last one (origins number their own change sets).  Written by the
 * helper that applied it, just before its transaction commits, under the
 * manager state's mutex; read by the manager when it sends a change set
 * (the "seen" vector certification compares with; see certify.c).
 */
typedef struct ImsgSeen
{
	char		node[NAMEDATALEN];
	int32		pid;			/* the origin's manager */
	uint64		counter;
} ImsgSeen;

typedef struct ImsgManagerShared
{
	slock_t		mutex;
	pg_atomic_uint32 settle_polling;	/* see above; no mutex */
	int			pid;
	TimestampTz started_at;
	char		gcs[NAMEDATALEN];
	int			group_members;
	bool		group_quorate;	/* the GCS lets this node order messages */
	int64		certification_rows; /* rows in certify.c's map of last writers */
	ImsgGroupMember members[IMSG_MAX_GROUP_MEMBERS];
	uint64		messages_received;
	uint64		messages_delivered;
	uint64		helpers_started;
	uint64		helpers_exited;
	uint64		helpers_crashed;
	uint64		change_sets_delivered;
	uint64		change_set_bytes;
	uint64		change_sets_discarded;	/* their transaction did not commit */
	uint64		remote_change_sets_applied; /* from other nodes, by helpers */
	uint64		apply_errors;	/* remote change sets that could not be applied */
	uint64		change_sets_conflicted; /* lost certification */
	int64		change_sets_to_apply;	/* remote ones delivered, not yet applied */
	uint64		apply_horizon;	/* seq of the oldest of them; 0: none */
	int64		manager_memory_bytes;	/* the manager's memory contexts */
	int64		messages_in_assembly;	/* large messages it has parts of */
	uint64		remote_writes_skipped;	/* rows a local write kept (helpers) */
	int			num_seen;
	ImsgSeen	seen[IMSG_MAX_GROUP_MEMBERS];
	uint64		last_seq;		/* global sequence number, per server life */
	char		last_error[256];
	int			num_helper_slots;
	ImsgHelperSlot helpers[FLEXIBLE_ARRAY_MEMBER];
} ImsgManagerShared;

extern ImsgManagerShared *ImsgManagerState;

/*
 * A group communication system, as the manager sees it.  Exactly one runs,
 * chosen by imessages.gcs; adding one is a new file and an entry in
 * gcs.c's table.  Every callback runs in the manager.
 *
 * connect		join the group; false if it failed (the manager retries later)
 * wait_fds		fill fds[] with sockets to wait on (readable), return how many
 * multicast	send a message, 'head' then 'body' (either may be empty), to the
 *				whole group; false if it could not be sent now
 * dispatch		deliver what has arrived, in the group's total order, by
 *				calling imsg_gcs_deliver(); report membership changes by
 *				calling imsg_gcs_set_members(); false if the connection failed
 * pending		true if dispatch should run now without waiting (a GCS
 *				without sockets, or a retry that is due)
 * next_timeout	ms until dispatch should run even if no socket is readable,
 *				-1 if never (optional)
 * disconnect	leave the group
 */
typedef struct ImsgGcsOps
{
	const char *name;

	/*
	 * A group of this node alone: nothing to certify against, and no
	 * remote change set to keep our own writes from (certify.c,
	 * local_writes.c are skipped).
	 */
	bool		single_node;
	bool		(*connect) (void);
	int			(*wait_fds) (pgsocket *fds, int max_fds);
	bool		(*multicast) (const void *head, Size headlen,
							  const void *body, Size bodylen);
	bool		(*dispatch) (void);
	bool		(*pending) (void);
	long		(*next_timeout) (void);
	void		(*disconnect) (void);
	/* may this node order messages now (primary component)?  NULL: yes */
	bool		(*quorate) (void);
} ImsgGcsOps;

#define IMSG_GCS_MAX_FDS 4

/* nestmarks.c: one mark per subtransaction level that acted */
#define IMSG_MAX_NEST_MARKS 64

typedef struct ImsgNestMarks
{
	int			count;
	int			levels[IMSG_MAX_NEST_MARKS];
} ImsgNestMarks;

extern int	imsg_nest_mark_push(ImsgNestMarks *marks, const char *what, const char *may);
extern int	imsg_nest_mark_abort(ImsgNestMarks *marks);
extern void imsg_nest_mark_commit(ImsgNestMarks *marks);

/* certify.c */
extern int64 imsg_certification_rows(void);
extern bool imsg_certify(const char *node, int pid, uint64 counter, bool certify,
						 const ImsgSeen *seen, int nseen, const uint64 *rows,
						 int64 nrows, char *winner, Size winner_len);

/*
 * The seen vector on the wire (in IMSG_T_CHANGESET, and after the fixed header
 * of a multicast change set): int16 n, n x (string node, int32 pid, int64
 * counter).  One encoder and one decoder, in certify.c.
 */
#define IMSG_SEEN_WIRE_MAX	(2 + IMSG_MAX_GROUP_MEMBERS * (4 + NAMEDATALEN + 12))
extern int	imsg_seen_snapshot(ImsgSeen *seen);
extern void imsg_seen_encode(ImsgBuffer *out, const ImsgSeen *seen, int nseen);
extern int	imsg_seen_decode(ImsgBuffer *in, ImsgSeen *seen);

/* local_writes.c */
extern int	imsg_max_local_writes;
extern Size imsg_local_writes_shmem_size(void);
extern void imsg_local_writes_request(void);
extern void imsg_local_writes_startup(void);
extern void imsg_local_writes_register(int nremoved, const uint64 *removed);
extern void imsg_local_writes_end(bool committed);
extern void imsg_local_writes_forget_mine(void);
extern void imsg_local_writes_delivered(TransactionId top, uint64 seq);
extern void imsg_local_writes_forget(TransactionId top);
extern void imsg_local_writes_counts(int64 *xids, int64 *removals);
extern void imsg_local_writes_sweep(void);
extern void imsg_local_writes_reset(void);
extern void imsg_local_writes_applying(uint64 seq);
extern void imsg_remote_wins_reset(void);
extern void imsg_remote_wins_result(bool *called, bool *lost);
extern bool imsg_local_removal_wins(uint64 row);

/* apply.c */
extern int64 imsg_apply_rows_kept(void);
extern int64 imsg_apply_changeset(const char *data, Size len, bool overwrite,
								  uint64 seq);

/* changeset.c */
extern void imsg_changeset_init(void);

/* gcs.c */
extern const struct config_enum_entry *imsg_gcs_options(void);
extern const ImsgGcsOps *imsg_gcs_ops(void);
extern const char *imsg_my_node_name(void);

/*
 * Copy a length-prefixed name (not NUL-terminated) into a NAMEDATALEN
 * buffer, truncating: strlcpy would read past its end looking for a NUL.
 */
static inline void
imsg_copy_name(char *dst, const char *src, uint32 len)
{
	uint32		n = Min(len, NAMEDATALEN - 1);

	memcpy(dst, src, n);
	dst[n] = '\0';
}
extern void imsg_gcs_deliver(const char *origin, const void *data, Size len);
extern void imsg_gcs_set_members(const ImsgGroupMember *members, int count);

/* gcs_local.c */
extern const ImsgGcsOps imsg_gcs_local_ops;

#ifdef USE_COROSYNC
/* gcs_corosync.c */
extern const ImsgGcsOps imsg_gcs_corosync_ops;
#endif

/* helpers.c */
extern void imsg_helpers_init(void);
extern void imsg_helpers_check(void);
extern long imsg_helpers_next_timeout(void);
extern void imsg_helpers_stop_all(void);
extern int	imsg_helper_pick(void);
extern void imsg_helper_ready(int slot, int pid);
extern void imsg_helper_job_done(int slot);
extern int	imsg_helpers_running(void);
extern PGDLLEXPORT void imsg_helper_main(Datum main_arg);

/* manager_ident: 0 = no manager, else (generation << 32) | (pgprocno + 1) */
#define IMSG_MANAGER_IDENT(procno, gen) (((uint64) (gen) << 32) | (uint32) ((procno) + 1))
#define IMSG_IDENT_PROCNO(ident)	((int) ((ident) & 0xFFFFFFFF) - 1)
#define IMSG_IDENT_GENERATION(ident) ((uint32) ((ident) >> 32))

/* area.c */
extern ImsgArea *ImsgAreaPtr;
extern void imsg_area_request(void);
extern void imsg_area_startup(void);
extern Size imsg_manager_shmem_size(void);
extern Size imsg_area_shmem_size(void);
extern ImsgSegment *imsg_segment_alloc(Size min_bytes, Size want_bytes,
									   long timeout_ms, ImsgResult *result);
extern void imsg_segment_free(ImsgSegment *seg);
extern uint64 imsg_next_message_id(void);
extern uint64 imsg_reserve_message_ids(uint64 count);
extern Size imsg_largest_message(void);

/* mailbox.c */
typedef struct ImsgCursorMark
{
	ImsgSegment *seg;
	uint32		off;
	uint64		count;
} ImsgCursorMark;

extern void imsg_check_available(void);
extern ImsgMailbox *imsg_my_mailbox(void);
extern void imsg_cancel_pending(void);
extern uint64 imsg_commit_quiet(ImsgBuffer *buf);
extern bool imsg_mailbox_has_ready(void);
extern bool imsg_poll_mailbox(void);
extern void imsg_rewind_unreleased(void);
extern void imsg_release_all_received(void);
extern void imsg_flush_release(void);
extern void imsg_flush_pipelined(void);
extern bool imsg_mailbox_drained(void);
extern bool imsg_mailbox_is_open(int pid);
extern bool imsg_have_unreleased(void);
extern void imsg_get_cursor(ImsgCursorMark *mark);
extern void imsg_set_cursor(const ImsgCursorMark *mark);
extern ImsgResult imsg_resolve_manager(int *pid);

/* manager.c */
extern void imsg_register_manager(void);
extern PGDLLEXPORT void imsg_manager_main(Datum main_arg);
extern void imsg_manager_send(int pid, int32 msgtype, const void *data, Size len);
extern void imsg_manager_set_error(const char *msg);

/* sql_api.c */
extern void imsg_sql_init(void);
extern void imsg_report_send_failure(ImsgResult result, int recipient, Size len,
									 int timeout_ms);

#endif							/* IMESSAGES_INT_H */
