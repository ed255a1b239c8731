/*-------------------------------------------------------------------------
 *
 * gcs_local.c
 *	  The 'local' group communication system: a group of one node.
 *
 * Multicast appends a copy of the message to a queue in the manager's own
 * memory; dispatch delivers the queue back, in send order, which is the
 * total order of a one-member group.  The queue's buffer is reused from one
 * dispatch to the next: allocating and freeing a copy per message made the
 * allocator return memory to the kernel and fault it back in, batch after
 * batch.  It has no sockets, so the manager
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

#include "lib/stringinfo.h"
#include "miscadmin.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"

#include "replication_int.h"

/*
 * The queue: one buffer of (uint32 length, bytes) records, emptied by each
 * dispatch and reused, so that a stream of messages does not allocate.
 */
static MemoryContext local_context = NULL;
static StringInfoData local_queue;

#define LOCAL_QUEUE_KEEP	(8 * 1024 * 1024)	/* shrink back beyond this */

static bool
local_connect(void)
{
	if (local_context == NULL)
	{
		local_context = AllocSetContextCreate(TopMemoryContext,
											  "imessages local gcs",
											  ALLOCSET_DEFAULT_SIZES);
		local_queue.data = NULL;
	}
	if (local_queue.data == NULL)
	{
		MemoryContext old = MemoryContextSwitchTo(local_context);

		initStringInfo(&local_queue);
		MemoryContextSwitchTo(old);
	}
	{
		ImsgGroupMember self;

		memset(&self, 0, sizeof(self));
		strlcpy(self.node, imsg_my_node_name(), sizeof(self.node));
		self.pid = MyProcPid;
		self.joined_at = GetCurrentTimestamp();
		imsg_gcs_set_members(&self, 1);
		imsg_gcs_view(&self, 1, 0);
	}
	return true;
}

static int
local_wait_fds(pgsocket *fds, int max_fds)
{
	return 0;
}

static bool
local_multicast(const void *head, Size headlen, const void *body, Size bodylen)
{
	uint32		len = headlen + bodylen;

	appendBinaryStringInfo(&local_queue, (const char *) &len, sizeof(len));
	if (headlen > 0)
		appendBinaryStringInfo(&local_queue, head, headlen);
	if (bodylen > 0)
		appendBinaryStringInfo(&local_queue, body, bodylen);
	SpinLockAcquire(&ImsgManagerState->mutex);
	ImsgManagerState->gcs_messages_sent++;
	ImsgManagerState->gcs_packets_sent++;
	SpinLockRelease(&ImsgManagerState->mutex);
	return true;
}

static bool
local_dispatch(void)
{
	int			off = 0;

	while (off < local_queue.len)
	{
		uint32		len;

		memcpy(&len, local_queue.data + off, sizeof(len));
		off += sizeof(len);
		imsg_gcs_deliver(imsg_my_node_name(), 0, MyProcPid, local_queue.data + off, len);
		off += len;
	}
	if (local_queue.maxlen > LOCAL_QUEUE_KEEP)
	{
		MemoryContext old = MemoryContextSwitchTo(local_context);

		pfree(local_queue.data);
		initStringInfo(&local_queue);
		MemoryContextSwitchTo(old);
	}
	else
		resetStringInfo(&local_queue);
	return true;
}

static bool
local_pending(void)
{
	return local_queue.data != NULL && local_queue.len > 0;
}

static void
local_disconnect(void)
{
	if (local_context != NULL)
		MemoryContextReset(local_context);
	local_queue.data = NULL;
}

const ImsgGcsOps imsg_gcs_local_ops = {
	.name = "local",
	.single_node = true,
	.connect = local_connect,
	.wait_fds = local_wait_fds,
	.multicast = local_multicast,
	.dispatch = local_dispatch,
	.pending = local_pending,
	.disconnect = local_disconnect,
};
