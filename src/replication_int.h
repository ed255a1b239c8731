/*-------------------------------------------------------------------------
 *
 * replication_int.h
 *	  The manager's shared state (status, helper slots, group members,
 *	  what this node applied of others), the ring of recent change sets,
 *	  the GCS interface, and what the manager and helpers offer the rest.
 *
 * Copyright (c) 2026, imessages developers
 *
 * IDENTIFICATION
 *	  src/replication_int.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef IMESSAGES_REPLICATION_INT_H
#define IMESSAGES_REPLICATION_INT_H

#include "imessages_int.h"
#include "port/atomics.h"
#include "storage/lwlock.h"
#include "storage/spin.h"

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
 * writes 'pid' and 'procno' (its PGPROC, whose latch the manager sets when
 * its turn to commit comes: see manager_apply.c), 'started_at', state
 * IDLE/BUSY, 'jobs_done', 'applying' (the position of the remote change
 * set it applies, 0 when none) and 'change_sets_applied' while it runs,
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
	int			procno;
	TimestampTz started_at;
	uint64		jobs_done;
	uint64		applying;
	uint64		change_sets_applied;
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

/*
 * A node's place in its group (manager_state.c decides it; see DESIGN.md,
 * "Node recovery").  Only a synced node accepts writes to replicated
 * tables; every change is logged by the manager.
 */
typedef enum ImsgNodeState
{
	IMSG_NODE_DISCONNECTED = 0, /* not in a primary component of the group */
	IMSG_NODE_JOINING,			/* in one; the state exchange is not done */
	IMSG_NODE_CATCHING_UP,		/* applying what it missed, from its own log
								 * and a donor's */
	IMSG_NODE_TRANSFERRING,		/* needs a full state transfer */
	IMSG_NODE_SYNCED,
	IMSG_NODE_REFUSED,			/* its state is not the group's */
	IMSG_NODE_STOPPED			/* a replicated DDL statement failed here: no
								 * more is applied until its manager restarts */
} ImsgNodeState;

#define IMSG_GROUP_ID_LEN	16	/* a UUID */

typedef struct ImsgManagerShared
{
	slock_t		mutex;
	pg_atomic_uint32 settle_polling;	/* see above; no mutex */
	/*
	 * Every position up to this one is done here: applied and committed,
	 * ours and committed, or lost.  An atomic, no mutex, moved up only
	 * (imsg_advance_horizon, but for the manager's resets): by the manager
	 * when its ring of done positions advances, after it took the helpers'
	 * IMSG_T_CS_APPLIED reports, which they send after their commit; and by
	 * the helper that committed position p when the horizon was p - 1 (it
	 * was waiting for that), which then sets the latch of the helper that
	 * applies p + 1, so the next commit does not wait for the manager.  A helper that applied
	 * position p commits only once this is p - 1 (manager_apply.c): the
	 * write is ordered after the earlier helper's commit by the message
	 * it sent, and the read by the helper's WaitLatch (which has a full
	 * barrier) before it looks at the value.
	 */
	pg_atomic_uint64 commit_horizon;
	/*
	 * 1 while the group's committers are paused by flow control
	 * (flow_control.c): written by the manager, read by backends at
	 * PRE_COMMIT without a lock or barrier (a late look only waits a poll
	 * longer, or lets one more change set through).
	 */
	pg_atomic_uint32 flow_paused;
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
	uint64		ddl_applied;	/* remote change sets with a DDL statement applied */
	uint64		ddl_errors;		/* such ones that failed here (node stopped) */
	uint64		change_sets_conflicted; /* lost certification */
	int64		change_sets_to_apply;	/* remote ones delivered, not yet applied */
	uint64		apply_horizon;	/* seq of the oldest of them; 0: none */
	int64		manager_memory_bytes;	/* the manager's memory contexts */
	int64		messages_in_assembly;	/* large messages it has parts of */
	uint64		remote_writes_skipped;	/* rows a local write kept (helpers) */
	int			num_seen;
	ImsgSeen	seen[IMSG_MAX_GROUP_MEMBERS];
	/*
	 * The node's state (an ImsgNodeState), also an atomic so that a
	 * backend's first write of a transaction reads it without the mutex
	 * (a synced member exchanging state in the primary component shows
	 * as synced: it takes writes meanwhile, see writable_while_joining);
	 * the rest under the mutex, all written by the manager
	 * (manager_state.c).  'last_seq' is the group position of the last
	 * change set this node delivered; 'applied_position' the highest one
	 * below which every change set is applied here (or is ours and
	 * committed); 'group_position' the highest the node knows the group
	 * has delivered.
	 */
	pg_atomic_uint32 node_state;
	bool		has_group_id;
	uint8		group_id[IMSG_GROUP_ID_LEN];
	uint64		last_seq;
	uint64		applied_position;
	uint64		group_position;
	char		state_detail[128];	/* why, for the hint and the view */
	/*
	 * The members of the group's primary view that have this node's
	 * imessages.node_id too (empty: none), from the last state exchange
	 * (manager, under the mutex): imsg_node_sequence() refuses then.
	 */
	char		node_id_clash[128];
	/*
	 * When this node last served a node that catches up (a backend running
	 * imsg_changeset_log, any backend writes it), and whether its manager
	 * is paused for a full transfer (the manager): imsg_manager_status()
	 * then shows a synced node as 'donor'.
	 */
	TimestampTz donor_served_at;
	bool		paused_for_transfer;
	/*
	 * Batching, parallel apply and flow control, written by the manager
	 * under the mutex: messages it multicast and the GCS packets that
	 * carried them (several per packet when committers come together); the
	 * remote change sets its helpers apply at this moment, and the most at
	 * once since it started; whether the group's committers are paused by
	 * flow control (a member's apply queue is past
	 * imessages.flow_control_limit), how long they were in all, and how
	 * often this node asked for a pause.
	 */
	uint64		gcs_messages_sent;
	uint64		gcs_packets_sent;
	int			applying_now;
	int			applying_max;
	bool		flow_control_active;
	uint64		flow_control_paused_ms;
	uint64		flow_control_sent;
	char		last_error[256];
	int			num_helper_slots;
	ImsgHelperSlot helpers[FLEXIBLE_ARRAY_MEMBER];
} ImsgManagerShared;

extern ImsgManagerShared *ImsgManagerState;

/*
 * Move commit_horizon up to 'to' (never down): every position up to 'to'
 * is done.  True if it moved.
 */
static inline bool
imsg_advance_horizon(uint64 to)
{
	uint64		cur = pg_atomic_read_u64(&ImsgManagerState->commit_horizon);

	while (cur < to)
		if (pg_atomic_compare_exchange_u64(&ImsgManagerState->commit_horizon, &cur, to))
			return true;
	return false;
}

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
 *				calling imsg_gcs_deliver(), and each view change in its place
 *				in that order by calling imsg_gcs_view() (the state exchange
 *				depends on it); report what it knows of the members by
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
	/* send what multicast() batched (end of a pass); false: connection lost.  NULL: none */
	bool		(*flush) (void);
	long		(*next_timeout) (void);
	void		(*disconnect) (void);
	/* may this node order messages now (primary component)?  NULL: yes */
	bool		(*quorate) (void);
	/* is it in the primary component, waits aside?  NULL: as quorate */
	bool		(*primary) (void);
} ImsgGcsOps;

#define IMSG_GCS_MAX_FDS 4

/* gcs.c */
extern const struct config_enum_entry *imsg_gcs_options(void);
extern const ImsgGcsOps *imsg_gcs_ops(void);
extern const char *imsg_my_node_name(void);

extern void imsg_gcs_deliver(const char *origin, uint32 nodeid, uint32 pid,
							 const void *data, Size len);
extern void imsg_gcs_set_members(const ImsgGroupMember *members, int count);
extern void imsg_gcs_view(const ImsgGroupMember *members, int count, int self);

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
extern int	imsg_helper_pick(int *pid, uint32 *generation);
extern int	imsg_helper_pick_for_apply(int *pid);
extern void imsg_helper_set_applying(int slot, bool applying);
extern void imsg_helper_ready(int slot, int pid);
extern void imsg_helper_job_done(int slot);
extern int	imsg_helpers_running(void);
extern PGDLLEXPORT void imsg_helper_main(Datum main_arg);
extern int	imsg_helper_my_slot(void);
/* helpers.c: lock waits the deadlock detector cannot see (a latch wait between) */
extern bool imsg_waits_for_me(int waiter);
extern bool imsg_helper_waits_for_me(uint64 seq);

/* flow_control.c: a backend at PRE_COMMIT */
extern void imsg_flow_control_wait(void);

extern bool imsg_helper_apply(uint64 seq, const char *origin, int32 origin_pid,
							  uint64 counter, bool overwrite, uint64 xid,
							  const char *cs, Size cslen, bool in_turn,
							  int64 *changes);
extern bool imsg_own_transaction_committed(uint64 full_xid);

/* recovery.c (helper jobs) */
struct ImsgWhole;
extern char *imsg_state_table(void);
extern char *imsg_extension_schema_name(void);
extern void imsg_job_state_read(struct ImsgWhole *msg);
extern void imsg_job_state_save(struct ImsgWhole *msg);
extern void imsg_job_catch_up(struct ImsgWhole *msg);
extern void imsg_job_transfer(struct ImsgWhole *msg);

/* manager_state.c */
extern const char *imsg_node_state_name(ImsgNodeState state);

/* sql_manager.c */
extern void imsg_note_donor_activity(void);
extern const char *imsg_format_group_id(const uint8 *id);

/* manager.c */
extern void imsg_register_manager(void);
extern PGDLLEXPORT void imsg_manager_main(Datum main_arg);
extern void imsg_manager_send(int pid, int32 msgtype, const void *data, Size len);
extern void imsg_manager_set_error(const char *msg);


#endif							/* IMESSAGES_REPLICATION_INT_H */
