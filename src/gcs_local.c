/*-------------------------------------------------------------------------
 *
 * gcs_local.c
 *	  The 'local' group communication system: a group of one node.
 *
 * Multicast appends a copy of the message to a queue in the manager's own
 * memory; dispatch delivers the queue back, in send order, which is the
 * total order of a one-member group.  It has no sockets, so the manager
 * asks pending() whether to dispatch without waiting.
 *
 * Copyright (c) 2026, imessages developers
 *
 * IDENTIFICATION
 *	  src/gcs_local.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "nodes/pg_list.h"
#include "utils/memutils.h"

#include "imessages_int.h"

typedef struct LocalMessage
{
	Size		len;
	char		data[FLEXIBLE_ARRAY_MEMBER];
} LocalMessage;

static MemoryContext local_context = NULL;
static List *local_queue = NIL;

static bool
local_connect(void)
{
	if (local_context == NULL)
		local_context = AllocSetContextCreate(TopMemoryContext,
											  "imessages local gcs",
											  ALLOCSET_DEFAULT_SIZES);
	imsg_gcs_membership(1);
	return true;
}

static int
local_wait_fds(pgsocket *fds, int max_fds)
{
	return 0;
}

static bool
local_multicast(const void *data, Size len)
{
	MemoryContext old = MemoryContextSwitchTo(local_context);
	LocalMessage *m = palloc(offsetof(LocalMessage, data) + len);

	m->len = len;
	memcpy(m->data, data, len);
	local_queue = lappend(local_queue, m);
	MemoryContextSwitchTo(old);
	return true;
}

static bool
local_dispatch(void)
{
	List	   *batch = local_queue;
	ListCell   *lc;

	local_queue = NIL;
	foreach(lc, batch)
	{
		LocalMessage *m = lfirst(lc);

		imsg_gcs_deliver("local", m->data, m->len);
	}
	list_free_deep(batch);
	return true;
}

static bool
local_pending(void)
{
	return local_queue != NIL;
}

static void
local_disconnect(void)
{
	local_queue = NIL;
	if (local_context != NULL)
		MemoryContextReset(local_context);
}

const ImsgGcsOps imsg_gcs_local_ops = {
	.name = "local",
	.connect = local_connect,
	.wait_fds = local_wait_fds,
	.multicast = local_multicast,
	.dispatch = local_dispatch,
	.pending = local_pending,
	.disconnect = local_disconnect,
};
