/*-------------------------------------------------------------------------
 *
 * flow_control.c
 *	  Flow control: a node whose apply queue grows past
 *	  imessages.flow_control_limit change sets makes the whole group's
 *	  committers wait until it has applied half of them, instead of letting
 *	  its queue, its manager's memory and its lag grow without bound
 *	  (Galera's gcs.fc_limit).
 *
 * The node's manager multicasts a flow message (GCS_FLOW: "stop" or "go")
 * when its queue passes the limit, and again when it is back to half.
 * Every manager delivers these in the group's total order and keeps the
 * set of nodes that asked it to stop; while the set is not empty, its
 * backends wait at PRE_COMMIT before they send a change set
 * (imsg_flow_control_wait), interruptibly.  A view change empties the set:
 * a node that left cannot ask any more, and one that stays and is still
 * over the limit asks again (it sends "stop" once more after every view
 * change).  The pause holds back new change sets only: those already
 * committing, and every helper, go on, so the queue drains.
 *
 * A paused backend holds its transaction's row locks, and a change set in
 * the queue may need one of them: the queue would never drain (Galera
 * aborts such a local transaction).  So a paused backend looks, while a
 * helper waits for a lock, whether it is that helper's blocker
 * (pg_blocking_pids), and if it is, it stops waiting and commits: its
 * locks go, and the helper goes on.
 *
 * Copyright (c) 2026, imessages developers
 *
 * IDENTIFICATION
 *	  src/flow_control.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "miscadmin.h"
#include "pgstat.h"
#include "storage/latch.h"
#include "storage/proc.h"
#include "utils/timestamp.h"

#include "manager_int.h"
#include "changeset_int.h"

/* how often a paused backend looks at the flag again */
#define IMSG_FLOW_POLL_MS	5

/* The manager's view: which nodes asked to stop (by name). */
static char stopped_by[IMSG_MAX_GROUP_MEMBERS][NAMEDATALEN];
static int	num_stopped = 0;
static bool my_stop_sent = false;	/* we asked, and did not say go since */
static TimestampTz paused_since = 0;
static uint64 paused_ms_before = 0;	/* of the pauses that ended */

/* Publish the pause: the flag backends read, and the status. */
static void
publish(void)
{
	bool		paused = num_stopped > 0;
	TimestampTz now = GetCurrentTimestamp();
	uint64		total;

	if (paused && paused_since == 0)
		paused_since = now;
	else if (!paused && paused_since != 0)
	{
		paused_ms_before += TimestampDifferenceMilliseconds(paused_since, now);
		paused_since = 0;
	}
	total = paused_ms_before +
		(paused_since != 0 ? TimestampDifferenceMilliseconds(paused_since, now) : 0);
	pg_atomic_write_u32(&ImsgManagerState->flow_paused, paused ? 1 : 0);
	SpinLockAcquire(&ImsgManagerState->mutex);
	ImsgManagerState->flow_control_active = paused;
	ImsgManagerState->flow_control_paused_ms = total;
	SpinLockRelease(&ImsgManagerState->mutex);
}

/* Multicast "stop" (true) or "go" for this node. */
static bool
send_flow(bool stop)
{
	char		msg[2] = {GCS_FLOW, stop ? 1 : 0};

	if (!imsg_mgr_gcs_connected || imsg_mgr_gcs->single_node)
		return false;
	return imsg_mgr_gcs->multicast(msg, sizeof(msg), NULL, 0);
}

/*
 * Each pass of the manager's loop: ask the group to stop when our apply
 * queue is past the limit, to go on when it is back to half of it.
 */
void
imsg_mgr_flow_run(void)
{
	int64		queued;

	SpinLockAcquire(&ImsgManagerState->mutex);
	queued = ImsgManagerState->change_sets_to_apply;
	SpinLockRelease(&ImsgManagerState->mutex);

	if (!my_stop_sent && imsg_flow_control_limit > 0 && queued > imsg_flow_control_limit &&
		imsg_mgr_node_state() == IMSG_NODE_SYNCED)
	{
		if (send_flow(true))
		{
			my_stop_sent = true;
			SpinLockAcquire(&ImsgManagerState->mutex);
			ImsgManagerState->flow_control_sent++;
			SpinLockRelease(&ImsgManagerState->mutex);
			ereport(LOG,
					(errmsg("imessages manager: %lld change sets to apply, past imessages.flow_control_limit (%d): the group's committers pause",
							(long long) queued, imsg_flow_control_limit)));
		}
	}
	else if (my_stop_sent &&
			 (imsg_flow_control_limit <= 0 || queued <= imsg_flow_control_limit / 2))
	{
		if (send_flow(false))
		{
			my_stop_sent = false;
			ereport(LOG,
					(errmsg("imessages manager: %lld change sets to apply: the group's committers go on",
							(long long) queued)));
		}
	}
	if (paused_since != 0)
		publish();				/* (the paused time grows) */
}

/* A flow message of node 'origin', in total order. */
void
imsg_mgr_flow_message(const char *origin, const char *p, Size len)
{
	bool		stop = len >= 2 && p[1] != 0;
	int			i;

	for (i = 0; i < num_stopped; i++)
		if (strcmp(stopped_by[i], origin) == 0)
			break;
	if (stop && i == num_stopped && num_stopped < IMSG_MAX_GROUP_MEMBERS)
		strlcpy(stopped_by[num_stopped++], origin, NAMEDATALEN);
	else if (!stop && i < num_stopped)
	{
		num_stopped--;
		if (i < num_stopped)
			memcpy(stopped_by[i], stopped_by[num_stopped], NAMEDATALEN);
	}
	publish();
}

/*
 * The membership changed (or the GCS connection is gone): nobody is
 * stopped; a member still past its limit asks again.
 */
void
imsg_mgr_flow_reset(void)
{
	num_stopped = 0;
	my_stop_sent = false;
	publish();
}

/*
 * A backend about to send its change set (PRE_COMMIT): wait while the
 * group is paused, unless a helper waits for one of our locks.  Cancel,
 * statement_timeout and the postmaster's death end the wait, as any
 * other.
 */
void
imsg_flow_control_wait(void)
{
	int			polls = 0;

	while (pg_atomic_read_u32(&ImsgManagerState->flow_paused) != 0)
	{
		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
						 IMSG_FLOW_POLL_MS, PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
		CHECK_FOR_INTERRUPTS();
		/* (every 50 ms: pg_blocking_pids takes every lock partition) */
		if (++polls % 10 == 0 && imsg_helper_waits_for_me(PG_UINT64_MAX))
			return;
	}
}
