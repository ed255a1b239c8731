/*-------------------------------------------------------------------------
 *
 * gcs_corosync.c
 *	  The 'corosync' group communication system: Corosync's Closed Process
 *	  Group (CPG), with agreed (total) order and virtual synchrony.
 *
 * The manager joins the CPG group imessages.gcs_group and waits on the CPG
 * file descriptor in its event loop.  Every message is multicast with
 * CPG_TYPE_AGREED, so every member delivers the same messages in the same
 * order, its own included; that delivery order is the group's total order.
 *
 * Framing: each CPG message is a frame with a small header (below), the
 * sending node's name in a message's first frame, then payload.  A message
 * larger than one frame (CPG carries about 1 MiB atomically) is split; a
 * sender's frames are delivered in its send order (agreed order is FIFO per
 * sender), so a receiver appends them per sender and delivers the message
 * at its last frame.  That position is the same on every member, so the
 * order stays total.
 *
 * Batching: a message of up to IMSG_CPG_BATCH_MAX bytes is not sent at
 * once but added to a batch frame (IMSG_CPG_BATCH: its payload is a series of uint32
 * length, network order, and message), which goes out when the manager's
 * loop has done a pass (corosync_flush, before it sleeps or looks at its
 * mailbox again), when the next message would not fit, or before a
 * message of several frames.  A lone committer's change set thus goes out
 * at the end of the pass that took it, as before; the change sets of
 * backends that commit together go out in one CPG message, which costs
 * corosync's totem ring one message instead of many.  And while
 * IMSG_CPG_IN_FLIGHT of our frames are on their way (sent, not yet
 * delivered back to us), the batch waits for one to come back (at most
 * IMSG_CPG_HOLD_MS, or until it is half full): a busy ring then carries
 * fewer, fuller messages, clocked by its own deliveries rather than by a
 * timer, and an idle one is never waited for.  A receiver delivers
 * a batch's messages one by one, in order, at the batch's place in the
 * total order: the same place on every member, so certification and
 * positions stay per message.  A batch of one is sent as a plain frame.
 *
 * Flow control: cpg_mcast_joined answers CS_ERR_TRY_AGAIN when corosync's
 * queues are full.  Frames that could not go out wait in an outgoing queue,
 * in order, and are retried when the CPG descriptor becomes readable (our
 * own messages coming back drain the queues) or after IMSG_CPG_RETRY_MS:
 * the manager keeps serving its mailbox meanwhile, never spins.
 *
 * Quorum: a node cut off from the others (or whose corosync just
 * restarted and has not merged yet) forms a group of its own, and what it
 * multicasts there is delivered there only: a sync commit would succeed
 * on it alone, and its async change sets would never reach the others.
 * So the manager orders change sets only while this node is in the
 * primary component of the managers' group: corosync's quorum service says
 * the node is quorate, and a majority of the nodes in corosync's quorate
 * view have a manager in our CPG group.  The second condition matters when
 * corosync comes back before the managers: corosync is quorate at once,
 * but a message multicast before the other managers have joined again is
 * delivered to the sender alone.  For the same reason a node that has just
 * regained a majority waits up to imessages.gcs_join_wait for the managers
 * of the rest of the view, and of the nodes seen in the group before (the
 * view grows as corosyncs come back, a manager reconnects within a second
 * of its corosync), before it orders anything: otherwise what it held
 * while it was in a minority would go out to the first majority, and a
 * manager joining a moment later would never get it (there is no state
 * transfer).  A node already ordering does not wait for newcomers.
 * Without a quorum provider in corosync.conf (quorum_type QUORUM_FREE)
 * every view counts as quorate, which is right for a single corosync node.
 * The quorum state is tracked from its own descriptor (with the view) and
 * its flag read again at every CPG view change, so that it is current when
 * the view's messages arrive.
 *
 * Callbacks: cpg_dispatch runs our deliver and confchg callbacks inside
 * the corosync library.  They only copy what arrived into local queues; the
 * messages are handed to the manager (imsg_gcs_deliver) after cpg_dispatch
 * returns, so that an ERROR there cannot unwind through the library.
 *
 * Copyright (c) 2026, imessages developers
 *
 * IDENTIFICATION
 *	  src/gcs_corosync.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <corosync/cpg.h>
#include <corosync/quorum.h>

#include "lib/stringinfo.h"
#include "miscadmin.h"
#include "nodes/pg_list.h"
#include "port/pg_bswap.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"

#include "replication_int.h"

#define IMSG_CPG_MAGIC			0x494D	/* "IM" */
#define IMSG_CPG_VERSION		2
#define IMSG_CPG_FIRST			0x01	/* first frame of a message */
#define IMSG_CPG_LAST			0x02	/* last frame of a message */
#define IMSG_CPG_HELLO			0x04	/* announces the sender's node name */
#define IMSG_CPG_BATCH			0x08	/* several whole messages (see above) */

/* Frames stay well under CPG's atomic limit (cpg_max_atomic_msgsize_get). */
#define IMSG_CPG_MAX_FRAME		(1024 * 1024)
#define IMSG_CPG_RETRY_MS		5
#define IMSG_CPG_IN_FLIGHT		2	/* our frames on their way before a batch waits */
#define IMSG_CPG_HOLD_MS		5	/* longest a batch waits for one to come back */

/*
 * A frame's header, in network byte order.  'total_len' is the payload size
 * of the whole message (in every frame, to check reassembly); the node name
 * (name_len bytes) follows the header in first frames only.
 */
typedef struct CpgFrameHeader
{
	uint16		magic;
	uint8		version;
	uint8		flags;
	uint32		msgno;			/* per sender, from 1 */
	uint32		total_len;
	uint8		name_len;
	uint8		pad[3];
} CpgFrameHeader;

/* A frame waiting for corosync to take it (CS_ERR_TRY_AGAIN). */
typedef struct CpgOutFrame
{
	Size		len;
	char		data[FLEXIBLE_ARRAY_MEMBER];
} CpgOutFrame;

/* A message being reassembled, per sender (nodeid, pid). */
typedef struct CpgPartial
{
	uint32		nodeid;
	uint32		pid;
	uint32		msgno;
	uint32		total_len;
	char		node[NAMEDATALEN];
	StringInfoData buf;
} CpgPartial;

/*
 * A message delivered by corosync, or a view change (members != NULL), to
 * hand to the manager in the order corosync delivered them: the state
 * exchange (manager_state.c) depends on where a view change falls among
 * the messages.
 */
typedef struct CpgDelivered
{
	char		node[NAMEDATALEN];
	uint32		nodeid;
	uint32		pid;
	Size		len;
	char	   *data;
	int			num_members;
	ImsgGroupMember *members;
} CpgDelivered;

static MemoryContext cpg_context = NULL;
static cpg_handle_t cpg_handle;
static bool cpg_initialized = false;
static int	cpg_fd = -1;
static struct cpg_name cpg_group;
static uint32 my_nodeid;
static uint32 next_msgno = 1;
static List *out_frames = NIL;	/* CpgOutFrame *, oldest first */
static StringInfoData batch;	/* messages for the next batch frame */
static int	batch_count = 0;
static int	own_in_flight = 0;	/* our first frames sent, not yet delivered to us */
static TimestampTz batch_since = 0; /* when the batch's first message came */
static TimestampTz retry_at = 0;
static List *partials = NIL;	/* CpgPartial * */
static List *delivered = NIL;	/* CpgDelivered *, in delivery order */
static bool membership_changed = false;
static quorum_handle_t quorum_handle;
static bool quorum_initialized = false;
static int	quorum_fd = -1;
static bool quorum_provided = false;	/* false: QUORUM_FREE, always quorate */
static bool quorate = false;
/* corosync nodes in the quorum service's current view */
#define IMSG_MAX_QUORUM_VIEW 384	/* corosync's PROCESSOR_COUNT_MAX */
static uint32 quorum_view[IMSG_MAX_QUORUM_VIEW];
static int	quorum_view_count = 0;
/* ordering (corosync_quorate); else since when it waits for managers, or 0 */
static bool primary = false;
static TimestampTz join_wait_since = 0;
/* corosync nodes that have had a manager in our group since we started */
static uint32 known_nodes[IMSG_MAX_QUORUM_VIEW];
static int	num_known_nodes = 0;
static bool connection_failed = false;
static int	last_connect_err = CS_OK;	/* cpg_initialize's, logged once */

/* The group as corosync last reported it, with what we know of each. */
static ImsgGroupMember members[IMSG_MAX_GROUP_MEMBERS];
static int	num_members = 0;

/*
 * A first frame names its sender's node: remember it for the member list.
 * Names must be unique in the group (a change set's origin is its node's
 * name), so say so loudly when another member uses ours.
 */
static void
note_member_name(uint32 nodeid, uint32 pid, const char *node)
{
	int			i;

	for (i = 0; i < num_members; i++)
	{
		ImsgGroupMember *m = &members[i];

		if (m->nodeid != nodeid || m->pid != pid)
			continue;
		if (strcmp(m->node, node) != 0)
		{
			strlcpy(m->node, node, sizeof(m->node));
			membership_changed = true;
		}
		break;
	}
	if (strcmp(node, imsg_my_node_name()) == 0 &&
		(nodeid != my_nodeid || pid != (uint32) MyProcPid))
		elog(WARNING, "imessages: another member of group \"%s\" (corosync node %u, pid %u) also calls itself \"%s\"",
			 imsg_gcs_group, nodeid, pid, node);
}

/*
 * A batch frame's messages, queued for delivery one by one in their order
 * (in cpg_context).  False, and nothing queued, if the lengths do not add
 * up.
 */
static bool
split_batch(const char *node, uint32 nodeid, uint32 pid, const char *p, Size len)
{
	Size		off = 0;
	List	   *got = NIL;

	while (off < len)
	{
		uint32		n;
		CpgDelivered *d;

		if (len - off < sizeof(n))
			break;
		memcpy(&n, p + off, sizeof(n));
		n = pg_ntoh32(n);
		off += sizeof(n);
		if (n > len - off)
			break;
		d = palloc0(sizeof(CpgDelivered));
		strlcpy(d->node, node, sizeof(d->node));
		d->nodeid = nodeid;
		d->pid = pid;
		d->len = n;
		d->data = palloc(Max(n, 1));
		memcpy(d->data, p + off, n);
		got = lappend(got, d);
		off += n;
	}
	if (off != len)
	{
		list_free_deep(got);	/* (a malformed frame: its data is lost anyway) */
		return false;
	}
	delivered = list_concat(delivered, got);
	list_free(got);				/* (list_concat copied its cells) */
	return true;
}

static void
cpg_deliver_cb(cpg_handle_t handle, const struct cpg_name *group,
			   uint32_t nodeid, uint32_t pid, void *msg, size_t msg_len)
{
	CpgFrameHeader hdr;
	const char *p = msg;
	const char *payload;
	Size		payload_len;
	char		node[NAMEDATALEN];
	CpgPartial *part = NULL;
	ListCell   *lc;
	MemoryContext old;

	if (msg_len < sizeof(hdr))
		goto malformed;
	memcpy(&hdr, p, sizeof(hdr));
	hdr.magic = pg_ntoh16(hdr.magic);
	hdr.msgno = pg_ntoh32(hdr.msgno);
	hdr.total_len = pg_ntoh32(hdr.total_len);
	if (hdr.magic != IMSG_CPG_MAGIC || hdr.version != IMSG_CPG_VERSION ||
		hdr.name_len >= NAMEDATALEN)
		goto malformed;
	payload = p + sizeof(hdr);
	payload_len = msg_len - sizeof(hdr);
	node[0] = '\0';
	if (hdr.flags & IMSG_CPG_FIRST)
	{
		if (payload_len < hdr.name_len)
			goto malformed;
		memcpy(node, payload, hdr.name_len);
		node[hdr.name_len] = '\0';
		payload += hdr.name_len;
		payload_len -= hdr.name_len;
		note_member_name(nodeid, pid, node);
		if (nodeid == my_nodeid && pid == (uint32) MyProcPid && own_in_flight > 0)
			own_in_flight--;
		if (hdr.flags & IMSG_CPG_HELLO)
			return;
	}

	old = MemoryContextSwitchTo(cpg_context);

	foreach(lc, partials)
	{
		CpgPartial *pp = lfirst(lc);

		if (pp->nodeid == nodeid && pp->pid == pid)
		{
			part = pp;
			break;
		}
	}

	if (hdr.flags & IMSG_CPG_FIRST)
	{
		if (part != NULL)
		{
			/* the sender started over (it reconnected): drop the rest */
			partials = list_delete_ptr(partials, part);
			pfree(part->buf.data);
			pfree(part);
			part = NULL;
		}
		if ((hdr.flags & IMSG_CPG_BATCH) && (hdr.flags & IMSG_CPG_LAST))
		{
			if (payload_len != hdr.total_len || !split_batch(node, nodeid, pid, payload, payload_len))
				goto malformed_ctx;
		}
		else if (hdr.flags & IMSG_CPG_LAST)
		{
			CpgDelivered *d = palloc0(sizeof(CpgDelivered));

			if (payload_len != hdr.total_len)
				goto malformed_ctx;
			strlcpy(d->node, node, sizeof(d->node));
			d->nodeid = nodeid;
			d->pid = pid;
			d->len = payload_len;
			d->data = palloc(Max(payload_len, 1));
			memcpy(d->data, payload, payload_len);
			delivered = lappend(delivered, d);
		}
		else
		{
			part = palloc0(sizeof(CpgPartial));
			part->nodeid = nodeid;
			part->pid = pid;
			part->msgno = hdr.msgno;
			part->total_len = hdr.total_len;
			strlcpy(part->node, node, sizeof(part->node));
			initStringInfo(&part->buf);
			enlargeStringInfo(&part->buf, hdr.total_len);
			appendBinaryStringInfo(&part->buf, payload, payload_len);
			partials = lappend(partials, part);
		}
	}
	else
	{
		if (part == NULL || part->msgno != hdr.msgno ||
			part->total_len != hdr.total_len ||
			part->buf.len + payload_len > hdr.total_len)
			goto malformed_ctx;
		appendBinaryStringInfo(&part->buf, payload, payload_len);
		if (hdr.flags & IMSG_CPG_LAST)
		{
			CpgDelivered *d = palloc0(sizeof(CpgDelivered));

			if ((uint32) part->buf.len != part->total_len)
				goto malformed_ctx;
			strlcpy(d->node, part->node, sizeof(d->node));
			d->nodeid = nodeid;
			d->pid = pid;
			d->len = part->buf.len;
			d->data = part->buf.data;
			delivered = lappend(delivered, d);
			partials = list_delete_ptr(partials, part);
			pfree(part);
		}
	}
	MemoryContextSwitchTo(old);
	return;

malformed_ctx:
	MemoryContextSwitchTo(old);
malformed:
	/* no ereport(ERROR) inside the library: note it, drop the frame */
	elog(LOG, "imessages: dropped a malformed corosync frame from node %u pid %u (%zu bytes)",
		 nodeid, pid, msg_len);
}

static void
quorum_notify_cb(quorum_handle_t handle, uint32_t is_quorate, uint64_t ring_seq,
				 uint32_t view_list_entries, uint32_t *view_list)
{
	quorate = !quorum_provided || is_quorate != 0;
	quorum_view_count = Min(view_list_entries, IMSG_MAX_QUORUM_VIEW);
	memcpy(quorum_view, view_list, sizeof(uint32) * quorum_view_count);
}

static quorum_callbacks_t quorum_callbacks = {
	.quorum_notify_fn = quorum_notify_cb,
};

/* Ask corosync now (an IPC round trip); on failure keep what we knew. */
static void
refresh_quorate(void)
{
	int			q;

	if (!quorum_provided)
		quorate = true;
	else if (quorum_initialized && quorum_getquorate(quorum_handle, &q) == CS_OK)
		quorate = q != 0;
}

/* Not in the primary component (any more): the next majority waits again. */
static bool
not_primary(void)
{
	primary = false;
	join_wait_since = 0;
	return false;
}

/* Is corosync node 'nodeid' among the 'n' in 'nodeids'? */
static bool
node_listed(const uint32 *nodeids, int n, uint32 nodeid)
{
	int			i;

	for (i = 0; i < n; i++)
		if (nodeids[i] == nodeid)
			return true;
	return false;
}

static void
note_known_node(uint32 nodeid)
{
	if (node_listed(known_nodes, num_known_nodes, nodeid))
		return;
	if (num_known_nodes < IMSG_MAX_QUORUM_VIEW)
		known_nodes[num_known_nodes++] = nodeid;
}

static void
cpg_confchg_cb(cpg_handle_t handle, const struct cpg_name *group,
			   const struct cpg_address *member_list, size_t member_list_entries,
			   const struct cpg_address *left_list, size_t left_list_entries,
			   const struct cpg_address *joined_list, size_t joined_list_entries)
{
	ImsgGroupMember old_members[IMSG_MAX_GROUP_MEMBERS];
	int			old_count = num_members;
	TimestampTz now = GetCurrentTimestamp();
	int			i,
				j;

	memcpy(old_members, members, sizeof(members));
	num_members = 0;
	for (i = 0; i < (int) member_list_entries && num_members < IMSG_MAX_GROUP_MEMBERS; i++)
	{
		ImsgGroupMember *m = &members[num_members++];

		memset(m, 0, sizeof(*m));
		m->nodeid = member_list[i].nodeid;
		m->pid = member_list[i].pid;
		m->joined_at = now;
		/* keep what we knew of members that stay */
		for (j = 0; j < old_count; j++)
		{
			if (old_members[j].nodeid == m->nodeid && old_members[j].pid == m->pid)
			{
				*m = old_members[j];
				break;
			}
		}
		if (m->nodeid == my_nodeid && m->pid == (uint32) MyProcPid)
			strlcpy(m->node, imsg_my_node_name(), sizeof(m->node));
		note_known_node(m->nodeid);
	}

	/* forget half-received messages of members that left */
	for (i = 0; i < (int) left_list_entries; i++)
	{
		ListCell   *lc;

		foreach(lc, partials)
		{
			CpgPartial *pp = lfirst(lc);

			if (pp->nodeid == left_list[i].nodeid && pp->pid == left_list[i].pid)
			{
				partials = foreach_delete_current(partials, lc);
				pfree(pp->buf.data);
				pfree(pp);
			}
		}
	}
	membership_changed = true;
	refresh_quorate();
	own_in_flight = 0;			/* (a safety net: a batch waits for nothing lost) */

	/* the view change, in its place among the messages */
	{
		MemoryContext old = MemoryContextSwitchTo(cpg_context);
		CpgDelivered *d = palloc0(sizeof(CpgDelivered));

		d->num_members = num_members;
		d->members = palloc(sizeof(ImsgGroupMember) * Max(num_members, 1));
		memcpy(d->members, members, sizeof(ImsgGroupMember) * num_members);
		delivered = lappend(delivered, d);
		MemoryContextSwitchTo(old);
	}
}

static cpg_callbacks_t cpg_callbacks = {
	.cpg_deliver_fn = cpg_deliver_cb,
	.cpg_confchg_fn = cpg_confchg_cb,
};

/*
 * Try to hand the queued frames to corosync, oldest first.  False if the
 * connection failed; frames corosync refuses for now stay queued.
 */
static bool
flush_out_frames(void)
{
	while (out_frames != NIL)
	{
		CpgOutFrame *f = linitial(out_frames);
		struct iovec iov;
		cs_error_t	err;

		iov.iov_base = f->data;
		iov.iov_len = f->len;
		err = cpg_mcast_joined(cpg_handle, CPG_TYPE_AGREED, &iov, 1);
		if (err == CS_ERR_TRY_AGAIN)
		{
			retry_at = TimestampTzPlusMilliseconds(GetCurrentTimestamp(),
												   IMSG_CPG_RETRY_MS);
			return true;
		}
		if (err != CS_OK)
		{
			elog(LOG, "imessages: corosync multicast failed: error %d", (int) err);
			return false;
		}
		out_frames = list_delete_first(out_frames);
		pfree(f);
	}
	return true;
}

/*
 * Multicast one frame made of the header, the name (first frames) and up
 * to two payload slices; queue a copy if corosync says try again.
 */
static bool
send_frame(uint8 flags, uint32 msgno, uint32 total_len,
		   const char *a, Size alen, const char *b, Size blen)
{
	CpgFrameHeader hdr;
	const char *name = imsg_my_node_name();
	Size		name_len = (flags & IMSG_CPG_FIRST) ? strlen(name) : 0;
	struct iovec iov[4];
	int			n = 0;
	cs_error_t	err = CS_ERR_TRY_AGAIN;

	memset(&hdr, 0, sizeof(hdr));
	hdr.magic = pg_hton16(IMSG_CPG_MAGIC);
	hdr.version = IMSG_CPG_VERSION;
	hdr.flags = flags;
	hdr.msgno = pg_hton32(msgno);
	hdr.total_len = pg_hton32(total_len);
	hdr.name_len = (uint8) name_len;

	iov[n].iov_base = &hdr;
	iov[n++].iov_len = sizeof(hdr);
	if (name_len > 0)
	{
		iov[n].iov_base = unconstify(char *, name);
		iov[n++].iov_len = name_len;
	}
	if (alen > 0)
	{
		iov[n].iov_base = unconstify(char *, a);
		iov[n++].iov_len = alen;
	}
	if (blen > 0)
	{
		iov[n].iov_base = unconstify(char *, b);
		iov[n++].iov_len = blen;
	}

	if (flags & IMSG_CPG_FIRST)
		own_in_flight++;		/* (until it comes back: cpg_deliver_cb) */

	/* keep the order: nothing overtakes frames already waiting */
	if (out_frames == NIL)
		err = cpg_mcast_joined(cpg_handle, CPG_TYPE_AGREED, iov, n);
	if (err == CS_ERR_TRY_AGAIN)
	{
		Size		len = 0;
		CpgOutFrame *f;
		MemoryContext old;
		int			i;

		for (i = 0; i < n; i++)
			len += iov[i].iov_len;
		f = MemoryContextAlloc(cpg_context, offsetof(CpgOutFrame, data) + len);
		f->len = 0;
		for (i = 0; i < n; i++)
		{
			memcpy(f->data + f->len, iov[i].iov_base, iov[i].iov_len);
			f->len += iov[i].iov_len;
		}
		/* the list lives as long as the frames, not in the caller's context */
		old = MemoryContextSwitchTo(cpg_context);
		out_frames = lappend(out_frames, f);
		MemoryContextSwitchTo(old);
		if (list_length(out_frames) == 1)
			retry_at = TimestampTzPlusMilliseconds(GetCurrentTimestamp(),
												   IMSG_CPG_RETRY_MS);
		return true;
	}
	if (err != CS_OK)
	{
		elog(LOG, "imessages: corosync multicast failed: error %d", (int) err);
		return false;
	}
	return true;
}

/* Announce this node's name, so that members list it in imsg_group_members(). */
static bool
send_hello(void)
{
	return send_frame(IMSG_CPG_FIRST | IMSG_CPG_LAST | IMSG_CPG_HELLO,
					  next_msgno++, 0, NULL, 0, NULL, 0);
}

static void
corosync_disconnect(void)
{
	if (cpg_initialized)
	{
		(void) cpg_leave(cpg_handle, &cpg_group);
		(void) cpg_finalize(cpg_handle);
	}
	cpg_initialized = false;
	cpg_fd = -1;
	if (quorum_initialized)
		(void) quorum_finalize(quorum_handle);
	quorum_initialized = false;
	quorum_fd = -1;
	quorate = false;
	quorum_view_count = 0;
	(void) not_primary();
	out_frames = partials = delivered = NIL;
	batch.data = NULL;			/* (in cpg_context) */
	batch_count = 0;
	own_in_flight = 0;
	num_members = 0;
	if (cpg_context != NULL)
		MemoryContextReset(cpg_context);
}

static bool
corosync_connect(void)
{
	cs_error_t	err;
	int			tries;

	if (cpg_context == NULL)
		cpg_context = AllocSetContextCreate(TopMemoryContext,
											"imessages corosync gcs",
											ALLOCSET_DEFAULT_SIZES);
	if (strlen(imsg_gcs_group) >= CPG_MAX_NAME_LENGTH)
	{
		elog(LOG, "imessages.gcs_group is too long for corosync (at most %d bytes)",
			 CPG_MAX_NAME_LENGTH - 1);
		return false;
	}

	err = cpg_initialize(&cpg_handle, &cpg_callbacks);
	if (err != CS_OK)
	{
		/*
		 * The manager retries every second and repeats its own line once a
		 * minute (gcs_try_connect); say why here when the reason changes.
		 */
		if ((int) err != last_connect_err)
			elog(LOG, "imessages: cannot connect to corosync (cpg_initialize: error %d); is corosync running?",
				 (int) err);
		last_connect_err = (int) err;
		return false;
	}
	last_connect_err = CS_OK;
	cpg_initialized = true;
	strlcpy(cpg_group.value, imsg_gcs_group, sizeof(cpg_group.value));
	cpg_group.length = strlen(cpg_group.value);

	if ((err = cpg_local_get(cpg_handle, &my_nodeid)) != CS_OK ||
		(err = cpg_fd_get(cpg_handle, &cpg_fd)) != CS_OK)
		goto fail;

	/* quorum first, so that the first view change finds it */
	{
		uint32_t	quorum_type = QUORUM_FREE;
		int			q = 0;

		if ((err = quorum_initialize(&quorum_handle, &quorum_callbacks, &quorum_type)) != CS_OK)
			goto fail;
		quorum_initialized = true;
		quorum_provided = quorum_type == QUORUM_SET;
		if ((err = quorum_fd_get(quorum_handle, &quorum_fd)) != CS_OK ||
			(err = quorum_trackstart(quorum_handle, CS_TRACK_CURRENT | CS_TRACK_CHANGES)) != CS_OK ||
			(err = quorum_getquorate(quorum_handle, &q)) != CS_OK)
			goto fail;
		quorate = !quorum_provided || q != 0;
	}

	/* corosync may still be forming its ring: try again briefly */
	for (tries = 0; tries < 10; tries++)
	{
		err = cpg_join(cpg_handle, &cpg_group);
		if (err != CS_ERR_TRY_AGAIN)
			break;
		pg_usleep(10000L);
	}
	if (err != CS_OK)
		goto fail;

	next_msgno = 1;
	membership_changed = false;
	connection_failed = false;
	elog(LOG, "imessages: joined corosync group \"%s\" as node \"%s\" (corosync node id %u, %s)",
		 imsg_gcs_group, imsg_my_node_name(), my_nodeid,
		 !quorum_provided ? "no quorum provider" : quorate ? "quorate" : "not quorate yet");
	return true;

fail:
	elog(LOG, "imessages: cannot join corosync group \"%s\": error %d",
		 imsg_gcs_group, (int) err);
	corosync_disconnect();
	return false;
}

static int
corosync_wait_fds(pgsocket *fds, int max_fds)
{
	if (cpg_fd < 0 || max_fds < 2)
		return 0;
	fds[0] = cpg_fd;
	fds[1] = quorum_fd;
	return 2;
}

/* A frame's room for payload (a first frame carries the node's name). */
#define IMSG_CPG_ROOM	(IMSG_CPG_MAX_FRAME - sizeof(CpgFrameHeader) - NAMEDATALEN)

/*
 * A batch frame's payload at most: past a few dozen change sets a larger
 * CPG message saves nothing, and it only takes longer around the ring.
 */
#define IMSG_CPG_BATCH_MAX	(64 * 1024)

static void
count_sent(int messages)
{
	SpinLockAcquire(&ImsgManagerState->mutex);
	ImsgManagerState->gcs_messages_sent += messages;
	ImsgManagerState->gcs_packets_sent++;
	SpinLockRelease(&ImsgManagerState->mutex);
}

/* May the batch go now (see the top of the file)? */
static bool
batch_may_go(void)
{
	return batch_count > 0 &&
		(own_in_flight < IMSG_CPG_IN_FLIGHT ||
		 batch.len >= IMSG_CPG_BATCH_MAX / 2 ||
		 TimestampDifferenceExceeds(batch_since, GetCurrentTimestamp(), IMSG_CPG_HOLD_MS));
}

/*
 * Send the batch: as a batch frame, or as a plain one if it holds a single
 * message.  False if the connection failed.
 */
static bool
send_batch(void)
{
	bool		ok;

	if (batch_count == 0)
		return true;
	if (batch_count == 1)
		ok = send_frame(IMSG_CPG_FIRST | IMSG_CPG_LAST, next_msgno++,
						(uint32) (batch.len - sizeof(uint32)),
						batch.data + sizeof(uint32), batch.len - sizeof(uint32), NULL, 0);
	else
		ok = send_frame(IMSG_CPG_FIRST | IMSG_CPG_LAST | IMSG_CPG_BATCH, next_msgno++,
						(uint32) batch.len, batch.data, batch.len, NULL, 0);
	if (ok)
		count_sent(batch_count);
	resetStringInfo(&batch);
	batch_count = 0;
	return ok;
}

/* The end of a pass of the manager's loop: send the batch if it may go. */
static bool
corosync_flush(void)
{
	return !batch_may_go() || send_batch();
}

static bool
corosync_multicast(const void *head, Size headlen, const void *body, Size bodylen)
{
	Size		total = headlen + bodylen;
	Size		room = IMSG_CPG_ROOM;
	uint32		msgno;
	Size		off = 0;
	uint8		flags = IMSG_CPG_FIRST;

	if (!cpg_initialized)
		return false;
	if (total > PG_UINT32_MAX)
		elog(ERROR, "imessages: message too large for corosync framing");

	/* small: into the batch (sent first if it would not fit) */
	if (total + sizeof(uint32) <= IMSG_CPG_BATCH_MAX)
	{
		uint32		n = pg_hton32((uint32) total);
		MemoryContext old;

		if (batch.len + sizeof(uint32) + total > IMSG_CPG_BATCH_MAX && !send_batch())
			return false;
		if (batch_count == 0)
			batch_since = GetCurrentTimestamp();
		old = MemoryContextSwitchTo(cpg_context);
		if (batch.data == NULL)
			initStringInfo(&batch);
		appendBinaryStringInfo(&batch, (const char *) &n, sizeof(n));
		if (headlen > 0)
			appendBinaryStringInfo(&batch, head, headlen);
		if (bodylen > 0)
			appendBinaryStringInfo(&batch, body, bodylen);
		MemoryContextSwitchTo(old);
		batch_count++;
		return true;
	}

	/* larger: after what is batched, in frames of its own */
	if (!send_batch())
		return false;
	msgno = next_msgno++;
	count_sent(1);

	/* one frame per 'room' bytes of head+body */
	do
	{
		Size		n = Min(room, total - off);
		const char *a = NULL;
		const char *b = NULL;
		Size		alen = 0;
		Size		blen = 0;

		if (off < headlen)
		{
			a = (const char *) head + off;
			alen = Min(n, headlen - off);
		}
		if (n > alen)
		{
			Size		boff = off + alen - headlen;

			b = (const char *) body + boff;
			blen = n - alen;
		}
		off += n;
		if (off == total)
			flags |= IMSG_CPG_LAST;
		if (!send_frame(flags, msgno, (uint32) total, a, alen, b, blen))
			return false;
		flags = 0;
	} while (off < total);
	return true;
}

static bool
corosync_dispatch(void)
{
	cs_error_t	err;

	if (!cpg_initialized)
		return false;
	err = cpg_dispatch(cpg_handle, CS_DISPATCH_ALL);
	if (err != CS_OK && err != CS_ERR_TRY_AGAIN)
	{
		elog(LOG, "imessages: corosync dispatch failed: error %d", (int) err);
		return false;
	}
	err = quorum_dispatch(quorum_handle, CS_DISPATCH_ALL);
	if (err != CS_OK && err != CS_ERR_TRY_AGAIN)
	{
		elog(LOG, "imessages: corosync quorum dispatch failed: error %d", (int) err);
		return false;
	}

	/* hand over what arrived, in delivery order */
	while (delivered != NIL)
	{
		CpgDelivered *d = linitial(delivered);

		delivered = list_delete_first(delivered);
		if (d->members != NULL)
		{
			int			self = -1;
			int			i;

			for (i = 0; i < d->num_members; i++)
				if (d->members[i].nodeid == my_nodeid &&
					d->members[i].pid == (uint32) MyProcPid)
					self = i;
			imsg_gcs_view(d->members, d->num_members, self);
			pfree(d->members);
		}
		else
		{
			imsg_gcs_deliver(d->node, d->nodeid, d->pid, d->data, d->len);
			pfree(d->data);
		}
		pfree(d);
	}
	if (membership_changed)
	{
		membership_changed = false;
		imsg_gcs_set_members(members, num_members);
		/* newcomers learn our name */
		if (!send_hello())
			return false;
	}
	return flush_out_frames();
}

static bool
corosync_pending(void)
{
	return batch_may_go() || (out_frames != NIL && GetCurrentTimestamp() >= retry_at);
}

static TimestampTz
join_wait_end(void)
{
	return TimestampTzPlusMilliseconds(join_wait_since, imsg_gcs_join_wait_ms);
}

static long
corosync_next_timeout(void)
{
	TimestampTz now = GetCurrentTimestamp();
	long		ms = -1;

	/* (TimestampDifferenceMilliseconds: 0, never less, once it is time) */
	if (out_frames != NIL)
		ms = TimestampDifferenceMilliseconds(now, retry_at);
	/* a batch held for our frames on their way: not past its hold */
	if (batch_count > 0)
	{
		long		hold_ms = TimestampDifferenceMilliseconds(now,
															  TimestampTzPlusMilliseconds(batch_since, IMSG_CPG_HOLD_MS));

		ms = ms < 0 ? hold_ms : Min(ms, hold_ms);
	}
	/* wake when the wait for managers is over, to order without them */
	if (join_wait_since != 0)
	{
		long		wait_ms = TimestampDifferenceMilliseconds(now, join_wait_end());

		ms = ms < 0 ? wait_ms : Min(ms, wait_ms);
	}
	return ms;
}

/* Has corosync node 'nodeid' a manager in our group? */
static bool
has_manager(uint32 nodeid)
{
	int			i;

	for (i = 0; i < num_members; i++)
		if (members[i].nodeid == nodeid)
			return true;
	return false;
}

/* 1 if corosync node 'nodeid' has no manager in our group (named in 'names') */
static int
missing_manager(uint32 nodeid, StringInfo names)
{
	if (has_manager(nodeid))
		return 0;
	if (names != NULL)
		appendStringInfo(names, "%s%u", names->len > 0 ? ", " : "", nodeid);
	return 1;
}

/*
 * How many of the nodes in corosync's view, and of those that had a
 * manager in our group before, have none now; their ids go to 'names' if
 * it is not NULL.  (Known nodes count because the view itself can grow in
 * steps: a corosync that rejoins a moment after the others is not in it
 * yet.)
 */
static int
missing_managers(StringInfo names)
{
	int			missing = 0;
	int			i;

	for (i = 0; i < quorum_view_count; i++)
		missing += missing_manager(quorum_view[i], names);
	/* a known node in the view was counted with the view */
	for (i = 0; i < num_known_nodes; i++)
		if (!node_listed(quorum_view, quorum_view_count, known_nodes[i]))
			missing += missing_manager(known_nodes[i], names);
	return missing;
}

/*
 * Is this node in the primary component, so that it may order?  Its
 * corosync is quorate, a majority of the nodes in corosync's quorate view
 * have a manager in our group, and, if it just got that majority, the
 * managers of the other nodes in the view (or known before) have joined
 * too or imessages.gcs_join_wait has passed (see the top of the file).
 * Called on every pass of the manager's loop, which corosync_next_timeout
 * wakes when the wait is over.
 */
static bool
corosync_quorate(void)
{
	int			in_group = 0;
	int			i;

	if (!cpg_initialized || !quorate)
		return not_primary();
	if (!quorum_provided)
		return true;
	for (i = 0; i < quorum_view_count; i++)
		if (has_manager(quorum_view[i]))
			in_group++;
	if (2 * in_group <= quorum_view_count)
		return not_primary();
	if (primary)
		return true;
	if (imsg_gcs_join_wait_ms > 0 && missing_managers(NULL) > 0)
	{
		if (join_wait_since == 0)
		{
			StringInfoData names;

			join_wait_since = GetCurrentTimestamp();
			initStringInfo(&names);
			(void) missing_managers(&names);
			elog(LOG, "imessages: this node has a majority in corosync group \"%s\" and waits up to %d ms for the managers of corosync nodes %s to join before it orders change sets",
				 imsg_gcs_group, imsg_gcs_join_wait_ms, names.data);
			pfree(names.data);
		}
		if (GetCurrentTimestamp() < join_wait_end())
			return false;
	}
	primary = true;
	join_wait_since = 0;
	return true;
}

/*
 * Is this node in the primary component by corosync's own rule: quorate,
 * and a majority of the nodes in corosync's view have a manager in our
 * group?  What the state exchange votes with (manager_state.c); without
 * corosync_quorate's wait for the other managers, which concerns only
 * when this node orders its own change sets.
 */
static bool
corosync_primary(void)
{
	int			in_group = 0;
	int			i;

	if (!cpg_initialized || !quorate)
		return false;
	if (!quorum_provided)
		return true;
	for (i = 0; i < quorum_view_count; i++)
		if (has_manager(quorum_view[i]))
			in_group++;
	return 2 * in_group > quorum_view_count;
}

const ImsgGcsOps imsg_gcs_corosync_ops = {
	.name = "corosync",
	.connect = corosync_connect,
	.wait_fds = corosync_wait_fds,
	.multicast = corosync_multicast,
	.dispatch = corosync_dispatch,
	.pending = corosync_pending,
	.flush = corosync_flush,
	.next_timeout = corosync_next_timeout,
	.disconnect = corosync_disconnect,
	.quorate = corosync_quorate,
	.primary = corosync_primary,
};
