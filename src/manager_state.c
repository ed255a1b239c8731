/*-------------------------------------------------------------------------
 *
 * manager_state.c
 *	  The node's place in its group: the state exchange after each view
 *	  change, the group id and the positions, the node state, and the
 *	  catch-up of a node that missed change sets.  See DESIGN.md, "Node
 *	  recovery", for the protocol and why it is safe.
 *
 * Every delivered change set has a position in the group's total order,
 * winners and losers of certification alike, so that positions do not
 * depend on certification: the position of the change set delivered k-th
 * after a decision is the decided position + k on every member.  That
 * starting point is fixed by the state exchange: after each view change,
 * which CPG delivers at the same point of the order on every member, each
 * manager multicasts a state message (its group id, the last position it
 * holds, its change-set log's range, its state, whether it sees a quorum,
 * its conninfo).  Once a member has the state of every member of the view,
 * it decides from those messages alone, so every member decides the same:
 * who is synced, the group position, who catches up from which donor, who
 * is refused.  Change sets delivered before that are held, unpositioned,
 * and positioned in their order afterwards.
 *
 * A member's state message may come again without a view change (its
 * quorum flag changed, or it finished catching up); every member then
 * decides again from the latest message of each.  Only the first decision
 * of a view sets the position counter; later ones change roles only.
 *
 * Durable state: the table imsg_state (group id, applied position), read
 * and written by helpers (the manager has no database connection): a
 * helper updates it in each apply transaction, and the manager has one
 * write it when the group id changes or when its own change sets moved the
 * applied position on (every second at most).
 *
 * Copyright (c) 2026, imessages developers
 *
 * IDENTIFICATION
 *	  src/manager_state.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "common/pg_prng.h"
#include "miscadmin.h"
#include "nodes/pg_list.h"
#include "storage/ipc.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"

#include "manager_int.h"
#include "mailbox_int.h"
#include "changeset_int.h"
#include "cslog.h"

#define IMSG_STATE_VERSION		2	/* 2: the member's imessages.node_id */
#define IMSG_CONNINFO_MAX		512
#define IMSG_SAVE_INTERVAL_MS	1000
#define IMSG_SAVE_RETRY_MS		100
#define IMSG_CATCHUP_RETRY_MS	1000

/* The latest state message of a member of the current view. */
typedef struct MemberState
{
	uint32		nodeid;			/* the GCS's identity of the member */
	uint32		pid;
	bool		have;			/* a state message came since the view */
	ImsgNodeState state;
	bool		quorate;
	bool		has_group;
	uint8		group_id[IMSG_GROUP_ID_LEN];
	uint8		proposal[IMSG_GROUP_ID_LEN];	/* if it founds the group */
	uint64		position;		/* the last position it holds */
	uint64		log_first;		/* its change-set log, 0 if empty */
	uint64		log_last;
	int32		node_id;		/* its imessages.node_id (0: none) */
	char		node[NAMEDATALEN];
	char		conninfo[IMSG_CONNINFO_MAX];
} MemberState;

/* What a decision gives a member. */
typedef enum Role
{
	ROLE_SYNCED,
	ROLE_CATCH_UP,
	ROLE_TRANSFER,
	ROLE_REFUSED_GROUP,
	ROLE_REFUSED_AHEAD
} Role;

static MemberState view[IMSG_MAX_GROUP_MEMBERS];
static int	view_count = 0;
static bool view_decided = false;	/* the position counter is set */
static bool state_sent = false;		/* our state message for this view */
static bool sent_quorate = false;
static ImsgNodeState sent_state = IMSG_NODE_DISCONNECTED;
static uint8 my_proposal[IMSG_GROUP_ID_LEN];

/* durable state, as a helper read it from imsg_state */
static bool durable_known = false;
static bool durable_asked = false;
static bool durable_has_group = false;
static uint8 durable_group_id[IMSG_GROUP_ID_LEN];
static uint64 durable_applied = 0;
static bool save_pending = false;	/* a save job is out */
static TimestampTz saved_at = 0;

/* our state, mirrored in shared memory */
static ImsgNodeState my_state = IMSG_NODE_DISCONNECTED;
static bool synced_in_view = false; /* synced until this view change */
static bool apply_stopped = false;	/* a DDL statement failed: STOPPED */
static bool have_group = false;
static uint8 group_id[IMSG_GROUP_ID_LEN];

/* catching up: positions (catchup_from - 1, catchup_upto] */
static uint64 catchup_upto = 0;
static uint64 catchup_done_upto = 0;	/* applied by the catch-up so far */
static bool catchup_running = false;
static bool catchup_need_restart = false;
static TimestampTz catchup_retry_at = 0;
static int	catchup_donor = -1;	/* index into view[], or -1: own log only */
static int	catchup_slot = -1;	/* the helper doing it */
static int	catchup_pid = 0;

/* a full state transfer: from view[transfer_donor], then positions after it */
static int	transfer_donor = -1;
static bool transfer_need_start = false;
static bool transfer_running = false;
static int	transfer_slot = -1;
static int	transfer_pid = 0;
static TimestampTz transfer_retry_at = 0;
static uint64 transfer_through = 0; /* the snapshot holds positions up to it */

/*
 * A donor's pause (imsg_pause_apply): new deliveries are held while the
 * backend 'pause_pid' exports its snapshot.
 */
#define IMSG_PAUSE_MAX_MS		30000
static int	pause_pid = 0;
static int64 pause_id = 0;
static bool pause_answered = false;
static TimestampTz pause_since = 0;

/* change sets delivered before they can be positioned, in order */
typedef struct HeldDelivery
{
	char		origin[NAMEDATALEN];
	Size		len;
	char	   *data;
} HeldDelivery;

static MemoryContext state_context = NULL;
static List *held = NIL;
static Size held_bytes = 0;

/*
 * Positions up to this one were held during a full transfer and dropped
 * (spill_held): a catch-up fetches them after the transfer.
 */
static uint64 held_dropped_upto = 0;

/*
 * Positions delivered here whose change set is not done yet (applied, or
 * ours and committed), in order: a ring of flags from 'ring_first' on.
 * applied_position is the position before the first that is not done.
 */
static bool *ring = NULL;
static int	ring_size = 0;
static int	ring_head = 0;
static int	ring_count = 0;
static uint64 ring_first = 1;	/* position of ring[ring_head] */

static const char *const state_names[] = {
	"disconnected", "joining", "catching_up", "transferring", "synced", "refused",
	"stopped"
};

const char *
imsg_node_state_name(ImsgNodeState state)
{
	if ((int) state < 0 || (int) state >= lengthof(state_names))
		return "unknown";
	return state_names[state];
}


/* The position counter and what is applied, for the view and others. */
static void
publish_positions(void)
{
	uint64		applied = ring_first - 1;

	SpinLockAcquire(&ImsgManagerState->mutex);
	/* (the catch-up helper publishes its progress itself) */
	if (!catchup_running)
		ImsgManagerState->applied_position = applied;
	if (ImsgManagerState->last_seq > ImsgManagerState->group_position)
		ImsgManagerState->group_position = ImsgManagerState->last_seq;
	SpinLockRelease(&ImsgManagerState->mutex);
}

static bool gcs_primary(void);

/*
 * A member that was synced when the view changed, and is still in the
 * primary component (gcs_primary: for corosync, a majority of the quorum's
 * nodes have a manager in our CPG view, known as soon as the view is),
 * goes on taking writes while the members exchange their state: the
 * exchange cannot make it anything but synced (a synced member's state is
 * the reference), and what it multicasts meanwhile is held and positioned
 * after the decision like every delivery.  Refusing writes there instead
 * failed every transaction that began in those few milliseconds, at each
 * membership change of the group.
 */
static bool
writable_while_joining(void)
{
	return my_state == IMSG_NODE_JOINING && synced_in_view && gcs_primary();
}

/* May this node take writes to replicated tables and order its change sets? */
/*
 * imessages.debug_skip_position turned on at a reload (not the value a
 * manager starts with, or every restarted one would skip again): count
 * one position as delivered without a delivery, so that the next one
 * comes with a hole before it.
 */
void
imsg_mgr_state_debug_skip(void)
{
	static bool seen = false;
	static bool started = false;

	if (!started)
	{
		started = true;
		seen = imsg_debug_skip_position;
		return;
	}
	if (imsg_debug_skip_position && !seen)
	{
		ereport(LOG,
				(errmsg("imessages manager skips a position (imessages.debug_skip_position)")));
		SpinLockAcquire(&ImsgManagerState->mutex);
		ImsgManagerState->last_seq++;
		SpinLockRelease(&ImsgManagerState->mutex);
	}
	seen = imsg_debug_skip_position;
}

bool
imsg_mgr_state_writable(void)
{
	return my_state == IMSG_NODE_SYNCED || writable_while_joining();
}

/* The state the capture trigger and imsg_manager_status() see. */
static void
publish_node_state(void)
{
	ImsgNodeState shown = imsg_mgr_state_writable() ? IMSG_NODE_SYNCED : my_state;

	if (pg_atomic_read_u32(&ImsgManagerState->node_state) != (uint32) shown)
		pg_atomic_write_u32(&ImsgManagerState->node_state, (uint32) shown);
}

/* Change our state: shared memory, and a log line. */
static void
set_state(ImsgNodeState state, const char *detail)
{
	uint64		applied = ring_first - 1;
	uint64		group_pos;
	ImsgNodeState prev;

	/* stopped stays stopped, whatever the group does, until a restart */
	if (apply_stopped && state != IMSG_NODE_STOPPED)
		return;

	SpinLockAcquire(&ImsgManagerState->mutex);
	strlcpy(ImsgManagerState->state_detail, detail ? detail : "",
			sizeof(ImsgManagerState->state_detail));
	ImsgManagerState->has_group_id = have_group;
	memcpy(ImsgManagerState->group_id, group_id, IMSG_GROUP_ID_LEN);
	group_pos = ImsgManagerState->group_position;
	SpinLockRelease(&ImsgManagerState->mutex);
	/* synced, and still so through view changes (JOINING) */
	if (state == IMSG_NODE_SYNCED)
		synced_in_view = true;
	else if (state != IMSG_NODE_JOINING)
		synced_in_view = false;
	if (state == my_state)
	{
		publish_node_state();
		return;
	}
	prev = my_state;
	my_state = state;
	publish_node_state();
	ereport(LOG,
			(errmsg("imessages manager: node \"%s\" is %s (was %s): applied position %llu, group position %llu",
					imsg_my_node_name(), imsg_node_state_name(state),
					imsg_node_state_name(prev),
					(unsigned long long) applied, (unsigned long long) group_pos),
			 detail && detail[0] ? errdetail_internal("%s", detail) : 0));
}

/*
 * The change set at 'seq' from 'origin' has a DDL statement that failed
 * here (the helper logged why): apply nothing more, refuse local writes,
 * until the DBA has mended the cause and restarted the manager, which
 * then tries the statement again from its change-set log.
 */
void
imsg_mgr_stop_applying(uint64 seq, const char *origin)
{
	char		detail[128];

	snprintf(detail, sizeof(detail),
			 "The DDL statement of change set %llu from node \"%s\" failed here.",
			 (unsigned long long) seq, origin);
	ereport(LOG,
			(errmsg("imessages manager: node \"%s\" stops applying: the DDL statement at position %llu, from node \"%s\", failed on this node",
					imsg_my_node_name(), (unsigned long long) seq, origin),
			 errhint("The helper's log line before this one says why.  Mend the cause, then restart the manager (SELECT pg_terminate_backend(imsg_manager_pid())) to apply it again.")));
	SpinLockAcquire(&ImsgManagerState->mutex);
	ImsgManagerState->ddl_errors++;
	SpinLockRelease(&ImsgManagerState->mutex);
	set_state(IMSG_NODE_STOPPED, detail);
	apply_stopped = true;
}

ImsgNodeState
imsg_mgr_node_state(void)
{
	return my_state;
}

/* ---------------------------------------------------------------------
 * Positions done
 * ---------------------------------------------------------------------
 */

/*
 * Every position before ring_first is done: helpers waiting to commit a
 * later one may go on (see ImsgManagerShared.commit_horizon).
 */
static void
publish_horizon(void)
{
	if (imsg_advance_horizon(ring_first - 1))
		imsg_mgr_apply_wake();
}

/* Start counting done positions after 'applied'. */
static void
ring_reset(uint64 applied)
{
	ring_head = 0;
	ring_count = 0;
	ring_first = applied + 1;
	pg_atomic_write_u64(&ImsgManagerState->commit_horizon, applied);	/* (may go down) */
	imsg_mgr_apply_wake();
	publish_positions();
}

/* Position 'pos' was delivered here (the next one); 'done' if nothing to wait for. */
static void
ring_append(uint64 pos, bool done)
{
	if (pos != ring_first + ring_count)
	{
		/*
		 * A hole (or a position twice): a delivery was lost, or counted
		 * twice.  Never apply out of order, never skip: nothing from here
		 * on is queued.  The manager exits; the one the postmaster starts
		 * a second later rejoins the group (a view change, a state
		 * exchange) and catches up from imsg_state's position, where every
		 * position comes in order from a log.
		 */
		ereport(LOG,
				(errmsg("imessages manager: position %llu delivered where %llu was expected",
						(unsigned long long) pos, (unsigned long long) (ring_first + ring_count)),
				 errdetail("A hole in the group's positions: this node stops applying, and its manager restarts to catch up from position %llu.",
						   (unsigned long long) ring_first)));
		proc_exit(1);
	}
	if (ring_count == 0 && done)
	{
		ring_first++;
		publish_horizon();
		return;
	}
	if (ring_count == ring_size)
	{
		int			newsize = Max(ring_size * 2, 1024);
		bool	   *n = MemoryContextAlloc(TopMemoryContext, sizeof(bool) * newsize);
		int			i;

		for (i = 0; i < ring_count; i++)
			n[i] = ring[(ring_head + i) % ring_size];
		if (ring)
			pfree(ring);
		ring = n;
		ring_size = newsize;
		ring_head = 0;
	}
	ring[(ring_head + ring_count) % ring_size] = done;
	ring_count++;
}

void
imsg_mgr_position_done(uint64 pos)
{
	if (pos < ring_first || pos >= ring_first + ring_count)
		return;					/* from before a reset */
	ring[(ring_head + (pos - ring_first)) % ring_size] = true;
	while (ring_count > 0 && ring[ring_head])
	{
		ring_head = (ring_head + 1) % ring_size;
		ring_count--;
		ring_first++;
	}
	publish_horizon();
}

/* Is every position before 'pos' done (so that 'pos' may be applied)? */
bool
imsg_mgr_position_is_next(uint64 pos)
{
	return pos == ring_first;
}

uint64
imsg_mgr_applied_position(void)
{
	return ring_first - 1;
}

/*
 * The next position for a change set delivered now, or 0 if it cannot be
 * positioned yet: the caller holds it (imsg_mgr_state_hold).
 */
uint64
imsg_mgr_next_position(bool done)
{
	uint64		pos;

	SpinLockAcquire(&ImsgManagerState->mutex);
	pos = ++ImsgManagerState->last_seq;
	if (pos > ImsgManagerState->group_position)
		ImsgManagerState->group_position = pos;
	SpinLockRelease(&ImsgManagerState->mutex);
	ring_append(pos, done);
	return pos;
}

/* ---------------------------------------------------------------------
 * Held deliveries
 * ---------------------------------------------------------------------
 */

/*
 * May a delivered change set be positioned now?  Not before the view's
 * first decision, nor while we catch up (the certification map is not
 * complete until the catch-up's records are in), nor if we are refused.
 */
static bool
positioning_allowed(void)
{
	return view_decided && pause_pid == 0 &&
		(my_state == IMSG_NODE_SYNCED ||
		 (my_state == IMSG_NODE_CATCHING_UP && !catchup_running &&
		  !catchup_need_restart && catchup_done_upto >= catchup_upto));
}

bool
imsg_mgr_state_can_position(void)
{
	if (imsg_mgr_gcs->single_node)
		return true;
	return held == NIL && positioning_allowed();
}

/* Not positioned now: to be held (true), or dropped (refused, a minority)? */
bool
imsg_mgr_state_should_hold(void)
{
	return !view_decided || pause_pid != 0 || my_state == IMSG_NODE_JOINING ||
		my_state == IMSG_NODE_CATCHING_UP ||
		(my_state == IMSG_NODE_TRANSFERRING && transfer_donor >= 0);
}

/*
 * Is the next position one the full state transfer's snapshot holds (a
 * change set delivered while it ran)?  Then it is counted, and nothing
 * else: its rows are in the snapshot, its record in our log and map.
 */
bool
imsg_mgr_already_have(uint64 position)
{
	if (position > transfer_through)
		return false;
	SpinLockAcquire(&ImsgManagerState->mutex);
	ImsgManagerState->last_seq = position;
	SpinLockRelease(&ImsgManagerState->mutex);
	return true;
}

static void
free_held(void)
{
	list_free_deep(held);
	held = NIL;
	held_bytes = 0;
	MemoryContextReset(state_context);
}

/*
 * The most a catch-up or a full transfer holds: a quarter of the
 * change-set log, which the donor's log (of the same size, as a rule)
 * still has a moment later.  Past it, what is held is dropped and
 * fetched from the donor instead.
 */
static Size
held_limit(void)
{
	return Max((Size) imsg_changeset_log_size_kb * 1024 / 4, (Size) 64 * 1024);
}

/*
 * Drop what a catch-up or a transfer holds, keeping only how many: every
 * member positions deliveries in the same order, so they are the next
 * positions, which the donor logs as it positions them.  The catch-up
 * goes on up to the last of them (for a transfer, one follows it).
 */
static void
spill_held(void)
{
	int			n = list_length(held);
	Size		bytes = held_bytes;
	uint64		upto;

	free_held();
	SpinLockAcquire(&ImsgManagerState->mutex);
	ImsgManagerState->last_seq += n;
	upto = ImsgManagerState->last_seq;
	if (upto > ImsgManagerState->group_position)
		ImsgManagerState->group_position = upto;
	SpinLockRelease(&ImsgManagerState->mutex);
	if (my_state == IMSG_NODE_CATCHING_UP)
		catchup_upto = upto;
	else
		held_dropped_upto = upto;
	ereport(LOG,
			(errmsg("imessages manager dropped %d change sets (%zu bytes) delivered while it %s: it fetches them from the donor's log, up to position %llu",
					n, bytes, my_state == IMSG_NODE_CATCHING_UP ? "catches up" : "receives a full transfer",
					(unsigned long long) upto)));
}

void
imsg_mgr_state_hold(const char *origin, const char *data, Size len)
{
	MemoryContext old = MemoryContextSwitchTo(state_context);
	HeldDelivery *h = palloc(sizeof(HeldDelivery));

	strlcpy(h->origin, origin, sizeof(h->origin));
	h->len = len;
	h->data = palloc(len);
	memcpy(h->data, data, len);
	held = lappend(held, h);
	held_bytes += len;
	MemoryContextSwitchTo(old);
	if (held_bytes > held_limit() && view_decided && pause_pid == 0 &&
		((my_state == IMSG_NODE_CATCHING_UP && catchup_donor >= 0) ||
		 (my_state == IMSG_NODE_TRANSFERRING && transfer_donor >= 0)))
		spill_held();
}

/* Position what was held, in order, once that is allowed. */
static void
release_held(void)
{
	while (held != NIL)
	{
		HeldDelivery *h = linitial(held);
		List	   *rest;

		if (!positioning_allowed())
			return;
		/* detach it first: delivery checks that nothing is held */
		rest = list_delete_first(held);
		held = NIL;
		imsg_mgr_deliver_changeset(h->origin, h->data, h->len);
		held = rest;
		pfree(h->data);
		pfree(h);
	}
}

/* Forget what was held: it will never be positioned here. */
static void
drop_held(const char *why)
{
	if (held == NIL)
		return;
	ereport(LOG,
			(errmsg("imessages manager dropped %d change sets delivered while %s",
					list_length(held), why)));
	free_held();
}

/* ---------------------------------------------------------------------
 * The state message
 * ---------------------------------------------------------------------
 */

/* The last position this node holds: applied, or in its log after that. */
static uint64
local_position(void)
{
	uint64		applied = Max(durable_applied, imsg_mgr_applied_position());
	uint64		first = imsg_cslog_first_position();
	uint64		last = imsg_cslog_last_position();
	uint64		counter;

	SpinLockAcquire(&ImsgManagerState->mutex);
	counter = ImsgManagerState->last_seq;
	SpinLockRelease(&ImsgManagerState->mutex);
	if (view_decided || my_state == IMSG_NODE_SYNCED)
		return counter;
	if (first != 0 && first <= applied + 1 && last > applied)
		return last;
	return applied;
}

/* What our state message says about the primary component. */
static bool
gcs_primary(void)
{
	if (imsg_mgr_gcs->primary != NULL)
		return imsg_mgr_gcs->primary();
	return imsg_mgr_gcs->quorate == NULL || imsg_mgr_gcs->quorate();
}

static void
send_state(void)
{
	char		buf[256 + IMSG_CONNINFO_MAX + NAMEDATALEN];
	ImsgBuffer	out;
	bool		quorate = gcs_primary();
	const char *node = imsg_my_node_name();
	const char *conninfo = imsg_node_conninfo ? imsg_node_conninfo : "";

	if (!durable_known || !imsg_mgr_gcs_connected)
		return;
	ImsgBufferInitWriter(&out, buf, sizeof(buf));
	ImsgBufferPutInt8(&out, GCS_STATE);
	ImsgBufferPutInt8(&out, IMSG_STATE_VERSION);
	ImsgBufferPutInt8(&out, (int8) my_state);
	ImsgBufferPutInt8(&out, quorate ? 1 : 0);
	ImsgBufferPutInt8(&out, have_group ? 1 : 0);
	ImsgBufferPutBytes(&out, group_id, IMSG_GROUP_ID_LEN);
	ImsgBufferPutBytes(&out, my_proposal, IMSG_GROUP_ID_LEN);
	ImsgBufferPutInt64(&out, (int64) local_position());
	ImsgBufferPutInt64(&out, (int64) imsg_cslog_first_position());
	ImsgBufferPutInt64(&out, (int64) imsg_cslog_last_position());
	ImsgBufferPutInt32(&out, (int32) imsg_node_id);
	ImsgBufferPutString(&out, node, strlen(node));
	ImsgBufferPutString(&out, conninfo, Min(strlen(conninfo), IMSG_CONNINFO_MAX - 1));
	if (imsg_mgr_gcs->multicast(out.data, out.len, NULL, 0))
	{
		state_sent = true;
		sent_quorate = quorate;
		sent_state = my_state;
	}
}

static int	view_self = -1;		/* our index in view[] */

static void decide(void);

/* A state message, delivered in total order. */
void
imsg_mgr_state_message(uint32 nodeid, uint32 pid, const char *data, Size len)
{
	ImsgBuffer	in;
	MemberState m;
	uint32		l;
	const char *p;
	int			i;

	if (len < 4 + 2 * IMSG_GROUP_ID_LEN + 24 + 4 + 8)
		goto malformed;
	ImsgBufferInitReader(&in, data + 1, len - 1);
	if (ImsgBufferGetInt8(&in) != IMSG_STATE_VERSION)
		goto malformed;
	memset(&m, 0, sizeof(m));
	m.nodeid = nodeid;
	m.pid = pid;
	m.have = true;
	m.state = (ImsgNodeState) ImsgBufferGetInt8(&in);
	m.quorate = ImsgBufferGetInt8(&in) != 0;
	m.has_group = ImsgBufferGetInt8(&in) != 0;
	memcpy(m.group_id, ImsgBufferGetBytes(&in, IMSG_GROUP_ID_LEN), IMSG_GROUP_ID_LEN);
	memcpy(m.proposal, ImsgBufferGetBytes(&in, IMSG_GROUP_ID_LEN), IMSG_GROUP_ID_LEN);
	m.position = (uint64) ImsgBufferGetInt64(&in);
	m.log_first = (uint64) ImsgBufferGetInt64(&in);
	m.log_last = (uint64) ImsgBufferGetInt64(&in);
	m.node_id = ImsgBufferGetInt32(&in);
	if (ImsgBufferRemaining(&in) < 4)
		goto malformed;
	l = (uint32) ImsgBufferGetInt32(&in);
	if (l > ImsgBufferRemaining(&in) || ImsgBufferRemaining(&in) - l < 4)
		goto malformed;
	p = ImsgBufferGetBytes(&in, l);
	imsg_copy_name(m.node, p, l);
	l = (uint32) ImsgBufferGetInt32(&in);
	if (l != ImsgBufferRemaining(&in) || l >= IMSG_CONNINFO_MAX)
		goto malformed;
	memcpy(m.conninfo, ImsgBufferGetBytes(&in, l), l);
	m.conninfo[l] = '\0';

	for (i = 0; i < view_count; i++)
	{
		if (view[i].nodeid == nodeid && view[i].pid == pid)
		{
			view[i] = m;
			decide();
			return;
		}
	}
	return;						/* from a member that has left */

malformed:
	ereport(LOG,
			(errmsg("imessages manager ignored a malformed state message from corosync node %u pid %u",
					nodeid, pid)));
}

/* A view change, delivered in its place in the total order. */
void
imsg_gcs_view(const ImsgGroupMember *members, int count, int self)
{
	int			i;

	count = Min(count, IMSG_MAX_GROUP_MEMBERS);
	view_count = count;
	view_self = self < count ? self : -1;
	for (i = 0; i < count; i++)
	{
		memset(&view[i], 0, sizeof(MemberState));
		view[i].nodeid = members[i].nodeid;
		view[i].pid = members[i].pid;
	}
	view_decided = false;
	state_sent = false;
	imsg_mgr_flow_reset();

	if (imsg_mgr_gcs->single_node)
	{
		/* a group of one: nothing to exchange */
		view_decided = true;
		set_state(IMSG_NODE_SYNCED, NULL);
		return;
	}
	if (my_state == IMSG_NODE_SYNCED || my_state == IMSG_NODE_CATCHING_UP)
		set_state(IMSG_NODE_JOINING, "The group's membership changed; its members exchange their state.");
	send_state();
}

/* ---------------------------------------------------------------------
 * The decision
 * ---------------------------------------------------------------------
 */

static bool
same_id(const uint8 *a, const uint8 *b)
{
	return memcmp(a, b, IMSG_GROUP_ID_LEN) == 0;
}

/* The first synced member, other than 'self', whose log holds from..upto. */
static int
find_donor(uint64 from, uint64 upto, const Role *roles, int self)
{
	int			i;

	for (i = 0; i < view_count; i++)
	{
		if (i == self || roles[i] != ROLE_SYNCED || view[i].conninfo[0] == '\0')
			continue;
		if (view[i].log_first != 0 && view[i].log_first <= from &&
			view[i].log_last >= upto)
			return i;
	}
	return -1;
}

static void start_catchup(void);
static void start_transfer(void);
static bool group_saved(void);

/* The first synced member with a conninfo: a full transfer needs no log. */
static int
find_transfer_donor(const Role *roles, int self)
{
	int			i;

	for (i = 0; i < view_count; i++)
		if (i != self && roles[i] == ROLE_SYNCED && view[i].conninfo[0] != '\0')
			return i;
	return -1;
}

/* Would a synced member serve from..upto, had it a conninfo? */
static bool
donor_without_conninfo(uint64 from, uint64 upto, const Role *roles, int self)
{
	int			i;

	for (i = 0; i < view_count; i++)
		if (i != self && roles[i] == ROLE_SYNCED && view[i].conninfo[0] == '\0' &&
			view[i].log_first != 0 && view[i].log_first <= from &&
			view[i].log_last >= upto)
			return true;
	return false;
}

/*
 * Rebuild the certification map from our own change-set log, once per
 * manager: the rows written by the change sets of the last window of
 * positions up to 'upto' (certify.c forgets older ones at the same points
 * on every node), so that this node decides about the next change sets
 * as the members that never stopped.  A catch-up from a donor adds the
 * rest (imsg_mgr_handle_cs_fetched).
 */
static void
replay_own_log(uint64 upto)
{
	static bool replayed = false;
	uint64		window = (uint64) imsg_certification_window + Max(imsg_certification_window / 4, 1);
	uint64		from;
	ImsgCslogReader *r;
	ImsgCslogRecord rec;
	uint64		n = 0;

	if (replayed)
		return;
	replayed = true;
	if (imsg_cslog_first_position() == 0)
		return;
	from = Max(imsg_cslog_first_position(), upto > window ? upto - window + 1 : 1);
	if (from > Min(upto, imsg_cslog_last_position()))
		return;
	r = imsg_cslog_begin_read(from);
	while (r != NULL && imsg_cslog_next(r, &rec) && rec.position <= upto)
	{
		imsg_mgr_certify_replay(rec.origin, rec.position, rec.flags, rec.data, rec.len);
		n++;
	}
	if (r != NULL)
		imsg_cslog_end_read(r);
	ereport(LOG,
			(errmsg("imessages manager rebuilt its certification map from %llu change sets of its change-set log, positions %llu to %llu",
					(unsigned long long) n, (unsigned long long) from,
					(unsigned long long) (from + n - 1))));
}

/*
 * Members with our imessages.node_id would give the same keys from
 * sequences imsg_node_sequence() spread: publish them for it (which then
 * refuses), and say so once each time the set of them changes.
 */
static void
note_node_id_clash(int me)
{
	char		clash[sizeof(ImsgManagerState->node_id_clash)] = "";
	bool		changed;
	int			i;

	for (i = 0; i < view_count; i++)
		if (i != me && imsg_node_id > 0 && view[i].node_id == imsg_node_id)
		{
			if (clash[0])
				strlcat(clash, ", ", sizeof(clash));
			strlcat(clash, "\"", sizeof(clash));
			strlcat(clash, view[i].node[0] ? view[i].node : "?", sizeof(clash));
			strlcat(clash, "\"", sizeof(clash));
		}
	SpinLockAcquire(&ImsgManagerState->mutex);
	changed = strcmp(clash, ImsgManagerState->node_id_clash) != 0;
	strlcpy(ImsgManagerState->node_id_clash, clash, sizeof(clash));
	SpinLockRelease(&ImsgManagerState->mutex);
	if (changed && clash[0])
		ereport(WARNING,
				(errmsg("imessages.node_id %d of node \"%s\" is also that of node %s of group \"%s\"",
						imsg_node_id, imsg_my_node_name(), clash, imsg_gcs_group),
				 errdetail("Sequences that imsg_node_sequence() spread give the same values on these nodes, and rows inserted on both collide."),
				 errhint("Give every node of the group its own imessages.node_id, then run imsg_node_sequence() again on the node whose id changed.")));
}

/*
 * Decide from the latest state message of every member, as every member
 * does: see the top of the file.
 */
static void
decide(void)
{
	int			votes = 0;
	int			ref = -1;
	bool		running = false;
	uint8		gid[IMSG_GROUP_ID_LEN];
	uint64		position;
	Role		roles[IMSG_MAX_GROUP_MEMBERS];
	int			me;
	int			i;
	char		detail[128];

	for (i = 0; i < view_count; i++)
	{
		if (!view[i].have)
			return;				/* not every member has spoken */
		if (view[i].quorate)
			votes++;
	}
	me = view_self;
	if (me < 0)
		return;
	note_node_id_clash(me);

	if (view_decided)
	{
		/*
		 * A later state message (a member's quorum flag changed): only the
		 * loss of the majority matters.  Then every member starts the
		 * exchange again at this point of the order, as at a view change,
		 * so that the next decision is made from fresh states.
		 */
		if (2 * votes > view_count)
			return;
		for (i = 0; i < view_count; i++)
			view[i].have = false;
		view_decided = false;
		state_sent = false;
		set_state(IMSG_NODE_DISCONNECTED, "This node is not in the primary component of the group.");
		send_state();
		return;
	}
	if (2 * votes <= view_count)
	{
		/* a minority: nothing is ordered here; wait for a primary view */
		drop_held("this node was not in the primary component");
		set_state(IMSG_NODE_DISCONNECTED, "This node is not in the primary component of the group.");
		return;
	}

	/* the state to continue from: a synced member's, else the most advanced */
	for (i = 0; i < view_count; i++)
		if (view[i].state == IMSG_NODE_SYNCED && view[i].has_group &&
			(ref < 0 || view[i].position > view[ref].position))
			ref = i;
	running = ref >= 0;
	if (!running)
		for (i = 0; i < view_count; i++)
			if (view[i].has_group &&
				(ref < 0 || view[i].position > view[ref].position))
				ref = i;
	if (ref >= 0)
	{
		memcpy(gid, view[ref].group_id, IMSG_GROUP_ID_LEN);
		position = view[ref].position;
	}
	else
	{
		/* nobody has a group: the first member founds one */
		memcpy(gid, view[0].proposal, IMSG_GROUP_ID_LEN);
		position = 0;
	}

	for (i = 0; i < view_count; i++)
	{
		MemberState *m = &view[i];

		if (m->has_group && !same_id(m->group_id, gid))
			roles[i] = ROLE_REFUSED_GROUP;
		else if (m->position > position)
			roles[i] = ROLE_REFUSED_AHEAD;
		else if (m->position == position && (m->has_group || position == 0))
			roles[i] = ROLE_SYNCED;
		else if (!m->has_group)
			roles[i] = ROLE_TRANSFER;	/* a new node: it has none of the tables */
		else
			roles[i] = ROLE_CATCH_UP;
	}
	/* a catching-up member needs a donor; none: a full transfer */
	for (i = 0; i < view_count; i++)
		if (roles[i] == ROLE_CATCH_UP &&
			find_donor(view[i].position + 1, position, roles, i) < 0)
			roles[i] = ROLE_TRANSFER;

	replay_own_log(Min(position, view[me].position));

	/* the counter every member continues from */
	SpinLockAcquire(&ImsgManagerState->mutex);
	ImsgManagerState->last_seq = position;
	ImsgManagerState->group_position = position;
	SpinLockRelease(&ImsgManagerState->mutex);
	view_decided = true;
	held_dropped_upto = 0;		/* (the reference position has them) */

	switch (roles[me])
	{
		case ROLE_REFUSED_GROUP:
			snprintf(detail, sizeof(detail), "This node belongs to group %s, ",
					 imsg_format_group_id(view[me].group_id));
			strlcat(detail, "the group's id is ", sizeof(detail));
			strlcat(detail, imsg_format_group_id(gid), sizeof(detail));
			strlcat(detail, ".", sizeof(detail));
			if (my_state != IMSG_NODE_REFUSED)
				ereport(LOG,
						(errmsg("imessages manager: node \"%s\" is refused by group \"%s\": it belongs to another group",
								imsg_my_node_name(), imsg_gcs_group),
						 errdetail_internal("%s", detail),
						 errhint("Start it with an empty data directory to join this group, or point imessages.gcs_group at its own group.")));
			drop_held("this node was refused");
			set_state(IMSG_NODE_REFUSED, detail);
			return;
		case ROLE_REFUSED_AHEAD:
			snprintf(detail, sizeof(detail),
					 "It holds position %llu, the group only %llu: its data has changes the group does not.",
					 (unsigned long long) view[me].position, (unsigned long long) position);
			if (my_state != IMSG_NODE_REFUSED)
				ereport(LOG,
						(errmsg("imessages manager: node \"%s\" is refused by group \"%s\": it is ahead of the group",
								imsg_my_node_name(), imsg_gcs_group),
						 errdetail_internal("%s", detail),
						 errhint("The group restarted without this node; rebuild it from a member.")));
			drop_held("this node was refused");
			set_state(IMSG_NODE_REFUSED, detail);
			return;
		case ROLE_TRANSFER:
			/* the group the transfer makes us part of (have_group once done) */
			memcpy(group_id, gid, IMSG_GROUP_ID_LEN);
			transfer_donor = find_transfer_donor(roles, me);
			if (transfer_donor >= 0)
			{
				snprintf(detail, sizeof(detail),
						 "It receives a full state transfer from node \"%s\"; the group is at position %llu.",
						 view[transfer_donor].node, (unsigned long long) position);
				transfer_need_start = true;
				transfer_retry_at = 0;
				set_state(IMSG_NODE_TRANSFERRING, detail);
				start_transfer();
				return;
			}
			if (!view[me].has_group)
				snprintf(detail, sizeof(detail),
						 "It has no state of this group, which is at position %llu.",
						 (unsigned long long) position);
			else if (donor_without_conninfo(view[me].position + 1, position, roles, me))
				snprintf(detail, sizeof(detail),
						 "The members that hold positions %llu to %llu have no imessages.node_conninfo.",
						 (unsigned long long) view[me].position + 1, (unsigned long long) position);
			else
				snprintf(detail, sizeof(detail),
						 "It holds position %llu and no member's change-set log reaches back to it; the group is at %llu.",
						 (unsigned long long) view[me].position, (unsigned long long) position);
			drop_held("this node needs a full state transfer");
			set_state(IMSG_NODE_TRANSFERRING, detail);
			return;
		case ROLE_SYNCED:
		case ROLE_CATCH_UP:
			break;
	}

	if (!have_group || !same_id(group_id, gid))
	{
		if (ref < 0)
			ereport(LOG,
					(errmsg("imessages manager: the members of \"%s\" found group %s",
							imsg_gcs_group, imsg_format_group_id(gid))));
		have_group = true;
		memcpy(group_id, gid, IMSG_GROUP_ID_LEN);
		save_pending = false;	/* save it now */
		saved_at = 0;
	}

	/*
	 * A member that was synced when the view changed stays so: it
	 * delivered everything up to the group position, and applies the rest
	 * as before (its apply queue is intact).
	 */
	if (roles[me] == ROLE_SYNCED && synced_in_view)
	{
		set_state(IMSG_NODE_SYNCED, NULL);
		release_held();
		return;
	}

	/* what this node lacks: from its own log, then from a donor */
	catchup_upto = position;
	catchup_done_upto = 0;
	catchup_donor = -1;
	if (Max(durable_applied, imsg_mgr_applied_position()) >= position)
	{
		ring_reset(position);
		set_state(IMSG_NODE_SYNCED, NULL);
		release_held();
		return;
	}
	if (view[me].position < position)
		catchup_donor = find_donor(view[me].position + 1, position, roles, me);
	snprintf(detail, sizeof(detail), "It applies positions after %llu up to %llu, %s%s.",
			 (unsigned long long) Max(durable_applied, imsg_mgr_applied_position()),
			 (unsigned long long) position,
			 catchup_donor >= 0 ? "fetching them from node " : "from its own change-set log",
			 catchup_donor >= 0 ? view[catchup_donor].node : "");
	set_state(IMSG_NODE_CATCHING_UP, detail);
	catchup_need_restart = true;
	catchup_retry_at = 0;
	start_catchup();
}

/* ---------------------------------------------------------------------
 * Catch-up and durable state, through helpers
 * ---------------------------------------------------------------------
 */

/*
 * Have a helper apply what this node lacks, up to catchup_upto: from our
 * own log first, then from the donor (see helpers.c, job_catch_up).  The
 * remote apply queue must be idle: the helper applies in position order,
 * and imsg_state tells it what is already applied.
 */
static void
start_catchup(void)
{
	char		buf[64 + IMSG_CONNINFO_MAX + NAMEDATALEN];
	ImsgBuffer	out;
	int			pid;
	int			slot;
	const char *conninfo = catchup_donor >= 0 ? view[catchup_donor].conninfo : "";
	const char *donor = catchup_donor >= 0 ? view[catchup_donor].node : "";

	if (!catchup_need_restart || catchup_running ||
		GetCurrentTimestamp() < catchup_retry_at)
		return;
	/* the helper applies them again from the log, in order */
	imsg_mgr_apply_drop_queue();
	if (!imsg_mgr_apply_idle())
		return;					/* one is being applied: next pass */
	slot = imsg_helper_pick(&pid, NULL);
	if (slot < 0)
		return;
	ImsgBufferInitWriter(&out, buf, sizeof(buf));
	ImsgBufferPutInt64(&out, (int64) catchup_upto);
	ImsgBufferPutInt64(&out, (int64) imsg_cslog_last_position());
	ImsgBufferPutString(&out, donor, strlen(donor));
	ImsgBufferPutString(&out, conninfo, strlen(conninfo));
	if (ImsgSend(pid, IMSG_T_CATCH_UP, out.data, out.len, 0, NULL) != IMSG_OK)
		return;
	catchup_running = true;
	catchup_need_restart = false;
	catchup_slot = slot;
	catchup_pid = pid;
}

/*
 * Have a helper copy every replicated table from the donor, at a position
 * the donor pauses at (see recovery.c, imsg_job_transfer).  Our log starts
 * again with the donor's records before that position.
 */
static void
start_transfer(void)
{
	char		buf[64 + IMSG_CONNINFO_MAX + NAMEDATALEN];
	ImsgBuffer	out;
	int			pid;
	int			slot;

	if (!transfer_need_start || transfer_running || transfer_donor < 0 ||
		GetCurrentTimestamp() < transfer_retry_at)
		return;
	imsg_mgr_apply_drop_queue();
	if (!imsg_mgr_apply_idle())
		return;
	slot = imsg_helper_pick(&pid, NULL);
	if (slot < 0)
		return;
	ImsgBufferInitWriter(&out, buf, sizeof(buf));
	ImsgBufferPutString(&out, view[transfer_donor].node, strlen(view[transfer_donor].node));
	ImsgBufferPutString(&out, view[transfer_donor].conninfo, strlen(view[transfer_donor].conninfo));
	ImsgBufferPutBytes(&out, group_id, IMSG_GROUP_ID_LEN);
	if (ImsgSend(pid, IMSG_T_TRANSFER, out.data, out.len, 0, NULL) != IMSG_OK)
		return;
	imsg_cslog_reset();
	transfer_running = true;
	transfer_need_start = false;
	transfer_slot = slot;
	transfer_pid = pid;
}

/*
 * The transfer helper's report (IMSG_T_TRANSFER_DONE: int32 slot, int8 ok,
 * int64 position, string error).  imsg_state holds the group id and the
 * position already: the helper wrote them in the restore's transaction.
 */
void
imsg_mgr_handle_transfer_done(ImsgWhole *msg)
{
	ImsgBuffer	in;
	int32		slot;
	bool		ok;
	uint64		through;
	uint32		l;
	const char *err;

	ImsgBufferInitReader(&in, msg->data, msg->len);
	slot = ImsgBufferGetInt32(&in);
	ok = ImsgBufferGetInt8(&in) != 0;
	through = (uint64) ImsgBufferGetInt64(&in);
	l = (uint32) ImsgBufferGetInt32(&in);
	err = ImsgBufferGetBytes(&in, l);
	imsg_helper_job_done(slot);
	if (!transfer_running || slot != transfer_slot)
		return;
	transfer_running = false;
	transfer_slot = -1;
	if (my_state != IMSG_NODE_TRANSFERRING)
		return;
	if (ok)
	{
		durable_applied = through;
		durable_has_group = true;
		memcpy(durable_group_id, group_id, IMSG_GROUP_ID_LEN);
		have_group = true;		/* (the transfer wrote it to imsg_state) */
		transfer_through = through;
		ring_reset(through);
		catchup_upto = through;
		catchup_done_upto = through;
		if (held_dropped_upto > through)
		{
			char		detail[128 + NAMEDATALEN];

			/* what was dropped during the transfer comes from the donor */
			catchup_upto = held_dropped_upto;
			catchup_donor = transfer_donor;
			catchup_need_restart = true;
			catchup_retry_at = 0;
			held_dropped_upto = 0;
			snprintf(detail, sizeof(detail),
					 "It applies the change sets delivered during its full transfer, up to position %llu, fetching them from node %s.",
					 (unsigned long long) catchup_upto, view[catchup_donor].node);
			set_state(IMSG_NODE_CATCHING_UP, detail);
			return;
		}
		held_dropped_upto = 0;
		set_state(IMSG_NODE_SYNCED, NULL);
		release_held();
		return;
	}
	ereport(LOG,
			(errmsg("imessages manager: the full state transfer failed; it starts again in %d ms",
					IMSG_CATCHUP_RETRY_MS),
			 l > 0 ? errdetail_internal("%.*s", (int) l, err) : 0));
	transfer_need_start = true;
	transfer_retry_at = TimestampTzPlusMilliseconds(GetCurrentTimestamp(),
													IMSG_CATCHUP_RETRY_MS);
}

/*
 * A change set the catch-up fetched from the donor (IMSG_T_CS_FETCHED:
 * int64 position, int8 flags, string origin, then the GCS message), applied
 * by the helper already: into our log, so that we can be a donor too, and
 * into the certification map.
 */
void
imsg_mgr_handle_cs_fetched(ImsgWhole *msg)
{
	ImsgBuffer	in;
	uint64		pos;
	uint8		flags;
	uint32		l;
	const char *p;
	char		origin[NAMEDATALEN];
	ImsgGcsChangeset c;
	Size		len;

	ImsgBufferInitReader(&in, msg->data, msg->len);
	pos = (uint64) ImsgBufferGetInt64(&in);
	flags = (uint8) ImsgBufferGetInt8(&in);
	l = (uint32) ImsgBufferGetInt32(&in);
	p = ImsgBufferGetBytes(&in, l);
	imsg_copy_name(origin, p, l);
	if (imsg_cslog_last_position() != 0 && pos != imsg_cslog_last_position() + 1)
	{
		if (pos <= imsg_cslog_last_position())
		{
			/* we have it (our log did not reach our applied position) */
			imsg_mgr_certify_replay(origin, pos, flags, msg->data + in.cursor,
									msg->len - in.cursor);
			return;
		}
		/* our log does not reach it: start it again here */
		imsg_cslog_reset();
	}
	p = msg->data + in.cursor;
	len = msg->len - in.cursor;
	if (!imsg_gcs_changeset_parse(p, len, &c))
		memset(&c, 0, sizeof(c));
	imsg_mgr_certify_replay(origin, pos, flags, p, len);
	imsg_cslog_append(pos, origin, c.mgr_pid, c.counter, c.xid, flags, p, len);
}

/*
 * The catch-up helper's report (IMSG_T_CATCH_UP_DONE: int32 slot, int8 ok,
 * int8 log_gone, int8 diverged, int64 applied through, string error).
 */
void
imsg_mgr_handle_catch_up_done(ImsgWhole *msg)
{
	ImsgBuffer	in;
	int32		slot;
	bool		ok;
	bool		log_gone;
	bool		diverged;
	uint64		through;
	uint32		l;
	const char *err;

	ImsgBufferInitReader(&in, msg->data, msg->len);
	slot = ImsgBufferGetInt32(&in);
	ok = ImsgBufferGetInt8(&in) != 0;
	log_gone = ImsgBufferGetInt8(&in) != 0;
	diverged = ImsgBufferGetInt8(&in) != 0;
	through = (uint64) ImsgBufferGetInt64(&in);
	l = (uint32) ImsgBufferGetInt32(&in);
	err = ImsgBufferGetBytes(&in, l);
	imsg_helper_job_done(slot);
	if (!catchup_running || slot != catchup_slot)
		return;
	catchup_running = false;
	catchup_slot = -1;
	if (through > catchup_done_upto)
		catchup_done_upto = through;
	if (my_state != IMSG_NODE_CATCHING_UP)
		return;
	if (ok && through >= catchup_upto)
	{
		durable_applied = Max(durable_applied, through);
		ring_reset(through);
		set_state(IMSG_NODE_SYNCED, NULL);
		release_held();
		return;
	}
	if (ok && l == 0)
	{
		/* done with what it was given; what was held since is further on */
		catchup_need_restart = true;
		catchup_retry_at = 0;
		return;
	}
	if (diverged)
	{
		char		detail[512];

		/*
		 * Its data has changes the group never had: neither a catch-up nor
		 * (silently) a full transfer over them is right; the DBA decides.
		 */
		snprintf(detail, sizeof(detail), "%.*s", (int) l, err);
		ereport(LOG,
				(errmsg("imessages manager: node \"%s\" is refused by group \"%s\": its history differs from the group's",
						imsg_my_node_name(), imsg_gcs_group),
				 errdetail_internal("%s", detail),
				 errhint("It went on without the group at some point; rebuild it from a member (an empty data directory with CREATE EXTENSION gets a full state transfer).")));
		drop_held("this node was refused");
		set_state(IMSG_NODE_REFUSED, detail);
		return;
	}
	if (log_gone)
	{
		char		detail[128];

		snprintf(detail, sizeof(detail),
				 "The donor's change-set log no longer holds position %llu.",
				 (unsigned long long) (through + 1));
		drop_held("this node needs a full state transfer");
		set_state(IMSG_NODE_TRANSFERRING, detail);
		return;
	}
	ereport(LOG,
			(errmsg("imessages manager: the catch-up stopped at position %llu of %llu; it starts again in %d ms",
					(unsigned long long) through, (unsigned long long) catchup_upto,
					IMSG_CATCHUP_RETRY_MS),
			 l > 0 ? errdetail_internal("%.*s", (int) l, err) : 0));
	catchup_need_restart = true;
	catchup_retry_at = TimestampTzPlusMilliseconds(GetCurrentTimestamp(),
												   IMSG_CATCHUP_RETRY_MS);
}

/* Is our group id in imsg_state? */
static bool
group_saved(void)
{
	return durable_has_group && same_id(durable_group_id, group_id);
}

/* Ask a helper for imsg_state (once per manager) or to write it. */
static void
durable_jobs(void)
{
	char		buf[64];
	ImsgBuffer	out;
	int			pid;
	int			slot;
	uint64		applied = imsg_mgr_applied_position();

	if (imsg_mgr_gcs->single_node)
		return;
	if (!durable_known)
	{
		if (durable_asked)
			return;
		slot = imsg_helper_pick(&pid, NULL);
		if (slot < 0)
			return;
		if (ImsgSend(pid, IMSG_T_STATE_READ, NULL, 0, 0, NULL) == IMSG_OK)
			durable_asked = true;
		return;
	}
	if (save_pending || !have_group)
		return;
	/*
	 * A new group id at once (saved_at 0), and again every
	 * IMSG_SAVE_RETRY_MS until it is saved (the extension may not be
	 * created yet); positions at most once a second.
	 */
	if (group_saved() && applied <= durable_applied)
		return;
	if (saved_at != 0 &&
		!TimestampDifferenceExceeds(saved_at, GetCurrentTimestamp(),
									group_saved() ? IMSG_SAVE_INTERVAL_MS : IMSG_SAVE_RETRY_MS))
		return;
	slot = imsg_helper_pick(&pid, NULL);
	if (slot < 0)
		return;
	ImsgBufferInitWriter(&out, buf, sizeof(buf));
	ImsgBufferPutBytes(&out, group_id, IMSG_GROUP_ID_LEN);
	ImsgBufferPutInt64(&out, (int64) applied);
	if (ImsgSend(pid, IMSG_T_STATE_SAVE, out.data, out.len, 0, NULL) == IMSG_OK)
	{
		save_pending = true;
		saved_at = GetCurrentTimestamp();
	}
}

/*
 * A helper's answer about imsg_state (IMSG_T_STATE_INFO: int32 slot, int8
 * ok, int8 has_group, group id, int64 applied position), after a read or a
 * save.
 */
void
imsg_mgr_handle_state_info(ImsgWhole *msg)
{
	ImsgBuffer	in;
	int32		slot;
	bool		ok;
	bool		has;
	bool		first = !durable_known;

	ImsgBufferInitReader(&in, msg->data, msg->len);
	slot = ImsgBufferGetInt32(&in);
	ok = ImsgBufferGetInt8(&in) != 0;
	has = ImsgBufferGetInt8(&in) != 0;
	imsg_helper_job_done(slot);
	save_pending = false;
	if (ok)
	{
		durable_has_group = has;
		memcpy(durable_group_id, ImsgBufferGetBytes(&in, IMSG_GROUP_ID_LEN), IMSG_GROUP_ID_LEN);
		durable_applied = (uint64) ImsgBufferGetInt64(&in);
	}
	else if (first)
	{
		/* no imsg_state in imessages.database: a node with no state */
		ereport(LOG,
				(errmsg("imessages manager could not read its state from table imsg_state in database \"%s\"; it starts with none",
						imsg_database),
				 errhint("Run CREATE EXTENSION imessages in that database.")));
	}
	if (!first)
		return;
	durable_known = true;
	if (durable_has_group)
	{
		have_group = true;
		memcpy(group_id, durable_group_id, IMSG_GROUP_ID_LEN);
	}
	ring_reset(durable_applied);
	{
		uint64		pos;

		SpinLockAcquire(&ImsgManagerState->mutex);
		ImsgManagerState->last_seq = 0;
		SpinLockRelease(&ImsgManagerState->mutex);
		pos = local_position();
		SpinLockAcquire(&ImsgManagerState->mutex);
		ImsgManagerState->last_seq = pos;
		ImsgManagerState->group_position = pos;
		SpinLockRelease(&ImsgManagerState->mutex);
	}
	ereport(LOG,
			(errmsg("imessages manager: node \"%s\" %s%s, applied position %llu, change-set log %llu to %llu",
					imsg_my_node_name(),
					have_group ? "belongs to group " : "has no group yet",
					have_group ? imsg_format_group_id(group_id) : "",
					(unsigned long long) durable_applied,
					(unsigned long long) imsg_cslog_first_position(),
					(unsigned long long) imsg_cslog_last_position())));
	if (view_count > 0 && !state_sent)
		send_state();
}

/* ---------------------------------------------------------------------
 * A donor's pause, for a full state transfer
 * ---------------------------------------------------------------------
 */

static void
reply_paused(int pid, int64 id, bool ok, uint64 position)
{
	char		data[17];
	ImsgBuffer	out;

	ImsgBufferInitWriter(&out, data, sizeof(data));
	ImsgBufferPutInt64(&out, id);
	ImsgBufferPutInt8(&out, ok ? 1 : 0);
	ImsgBufferPutInt64(&out, (int64) position);
	imsg_manager_send(pid, IMSG_T_PAUSED, out.data, out.len);
}

static void
end_pause(const char *why)
{
	if (pause_pid == 0)
		return;
	ereport(LOG,
			(errmsg("imessages manager: apply resumes after the pause for process %d: %s",
					pause_pid, why)));
	pause_pid = 0;
	SpinLockAcquire(&ImsgManagerState->mutex);
	ImsgManagerState->paused_for_transfer = false;
	SpinLockRelease(&ImsgManagerState->mutex);
	release_held();
}

/*
 * While paused: answer once everything delivered is done here, and end
 * the pause if its backend went away or it lasted too long.
 */
static void
check_pause(void)
{
	uint64		last;

	if (pause_pid == 0)
		return;
	if (!imsg_mailbox_is_open(pause_pid))
	{
		end_pause("its session ended");
		return;
	}
	if (TimestampDifferenceExceeds(pause_since, GetCurrentTimestamp(), IMSG_PAUSE_MAX_MS))
	{
		end_pause("it lasted too long");
		return;
	}
	SpinLockAcquire(&ImsgManagerState->mutex);
	last = ImsgManagerState->last_seq;
	SpinLockRelease(&ImsgManagerState->mutex);
	if (!pause_answered && imsg_mgr_applied_position() == last && imsg_mgr_apply_idle())
	{
		reply_paused(pause_pid, pause_id, true, last);
		pause_answered = true;
		ereport(LOG,
				(errmsg("imessages manager: apply paused at position %llu for process %d (a full state transfer)",
						(unsigned long long) last, pause_pid)));
	}
}

void
imsg_mgr_handle_pause_apply(ImsgWhole *msg)
{
	ImsgBuffer	in;
	int64		id;

	ImsgBufferInitReader(&in, msg->data, msg->len);
	id = ImsgBufferGetInt64(&in);
	if (my_state != IMSG_NODE_SYNCED || imsg_mgr_gcs->single_node ||
		(pause_pid != 0 && pause_pid != msg->sender_pid))
	{
		reply_paused(msg->sender_pid, id, false, 0);
		return;
	}
	pause_pid = msg->sender_pid;
	SpinLockAcquire(&ImsgManagerState->mutex);
	ImsgManagerState->paused_for_transfer = true;
	SpinLockRelease(&ImsgManagerState->mutex);
	pause_id = id;
	pause_answered = false;
	pause_since = GetCurrentTimestamp();
	check_pause();
}

void
imsg_mgr_handle_resume_apply(ImsgWhole *msg)
{
	if (msg->sender_pid == pause_pid)
		end_pause("the snapshot is taken");
}

/* Has the helper that ran a job of ours ('slot', 'pid') exited? */
static bool
helper_gone(int slot, int pid)
{
	ImsgHelperSlot *hs;
	int			now;

	if (slot < 0)
		return false;
	hs = &ImsgManagerState->helpers[slot];
	SpinLockAcquire(&hs->mutex);
	now = hs->pid;
	SpinLockRelease(&hs->mutex);
	return now != pid;
}

/* Each pass of the manager's loop. */
void
imsg_mgr_state_run(void)
{
	bool		quorate;

	if (imsg_mgr_gcs->single_node)
		return;
	check_pause();
	durable_jobs();
	if (catchup_need_restart && my_state == IMSG_NODE_CATCHING_UP)
		start_catchup();
	if (transfer_need_start && my_state == IMSG_NODE_TRANSFERRING)
		start_transfer();
	if (transfer_running && helper_gone(transfer_slot, transfer_pid))
	{
		transfer_running = false;
		transfer_need_start = true;
	}
	if (catchup_running && helper_gone(catchup_slot, catchup_pid))
	{
		/* it exited: again, from where imsg_state says */
		catchup_running = false;
		catchup_need_restart = true;
	}
	/* our quorum flag changed since we said it: say it again */
	if (imsg_mgr_gcs_connected && view_count > 0 && durable_known)
	{
		quorate = gcs_primary();
		if (!state_sent || quorate != sent_quorate)
			send_state();
	}
	publish_node_state();		/* (the primary component may be lost) */
	publish_positions();
}

long
imsg_mgr_state_next_timeout(void)
{
	if (imsg_mgr_gcs->single_node)
		return -1;
	if (!durable_known || catchup_need_restart || transfer_need_start || pause_pid != 0)
		return pause_pid != 0 ? 10 : 100;
	if (have_group && !group_saved())
		return IMSG_SAVE_RETRY_MS;
	if (have_group && imsg_mgr_applied_position() > durable_applied)
		return IMSG_SAVE_INTERVAL_MS;
	return -1;
}

/* The GCS connection is gone: no view, nothing positioned. */
void
imsg_mgr_state_gcs_lost(void)
{
	view_count = 0;
	view_decided = false;
	state_sent = false;
	drop_held("the connection to the group was lost");
	set_state(IMSG_NODE_DISCONNECTED, "This node is not connected to the group.");
}

void
imsg_mgr_state_init(void)
{
	state_context = AllocSetContextCreate(TopMemoryContext,
										  "imessages manager held change sets",
										  ALLOCSET_DEFAULT_SIZES);
	/* a random group id, used if this node founds the group */
	if (!pg_strong_random(my_proposal, sizeof(my_proposal)))
	{
		uint64		a = pg_prng_uint64(&pg_global_prng_state);
		uint64		b = pg_prng_uint64(&pg_global_prng_state);

		memcpy(my_proposal, &a, 8);
		memcpy(my_proposal + 8, &b, 8);
	}
	my_proposal[6] = (my_proposal[6] & 0x0f) | 0x40;	/* version 4 */
	my_proposal[8] = (my_proposal[8] & 0x3f) | 0x80;	/* variant */
	my_state = IMSG_NODE_DISCONNECTED;
	pg_atomic_write_u32(&ImsgManagerState->node_state, IMSG_NODE_DISCONNECTED);
	SpinLockAcquire(&ImsgManagerState->mutex);
	ImsgManagerState->paused_for_transfer = false;	/* a previous manager's */
	SpinLockRelease(&ImsgManagerState->mutex);
	if (!imsg_mgr_gcs->single_node)
	{
		imsg_cslog_startup();
		ring_reset(0);			/* again once imsg_state is read */
	}
	else
	{
		uint64		pos;

		/* a group of one: positions go on from the previous manager's */
		durable_known = true;
		SpinLockAcquire(&ImsgManagerState->mutex);
		pos = ImsgManagerState->last_seq;
		SpinLockRelease(&ImsgManagerState->mutex);
		ring_reset(pos);
	}
}
