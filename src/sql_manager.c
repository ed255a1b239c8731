/*-------------------------------------------------------------------------
 *
 * sql_manager.c
 *	  SQL functions about the replication manager: imsg_ping,
 *	  imsg_manager_status, imsg_helpers.
 *
 * imsg_ping is the health check of the whole path: a message to the
 * manager (and through it to a helper and back), answered into the
 * caller's mailbox.  It waits with a selective receive, so messages queued
 * for the caller stay where they are, and it rechecks every 100 ms that the
 * manager it asked is still the one running, so a manager that exits ends
 * the wait at once with an error instead of leaving it to the timeout.
 *
 * Copyright (c) 2026, imessages developers
 *
 * IDENTIFICATION
 *	  src/sql_manager.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "funcapi.h"
#include "miscadmin.h"
#include "utils/builtins.h"
#include "utils/timestamp.h"
#include "utils/uuid.h"

#include "replication_int.h"
#include "changeset_int.h"

PG_FUNCTION_INFO_V1(imsg_ping);
PG_FUNCTION_INFO_V1(imsg_manager_status);
PG_FUNCTION_INFO_V1(imsg_helpers);
PG_FUNCTION_INFO_V1(imsg_pause_apply);
PG_FUNCTION_INFO_V1(imsg_resume_apply);

#define PING_LIVENESS_MS 100

/* imsg_ping(target text DEFAULT 'manager', timeout_ms integer DEFAULT 1000) */
Datum
imsg_ping(PG_FUNCTION_ARGS)
{
	static int64 last_ping_id = 0;
	char	   *target;
	int8		target_code;
	int			timeout_ms;
	int			manager_pid;
	int64		ping_id;
	char		data[9];
	ImsgBuffer	buf;
	ImsgResult	r;
	TimestampTz start;
	TimestampTz deadline;
	Interval   *result;
	char		status;

	imsg_check_available();
	if (PG_ARGISNULL(0) || PG_ARGISNULL(1))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("imsg_ping arguments must not be null")));
	target = text_to_cstring(PG_GETARG_TEXT_PP(0));
	timeout_ms = PG_GETARG_INT32(1);
	if (strcmp(target, "manager") == 0)
		target_code = IMSG_PING_MANAGER;
	else if (strcmp(target, "helper") == 0)
		target_code = IMSG_PING_HELPER;
	else
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid imsg_ping target \"%s\"", target),
				 errhint("The target is 'manager' or 'helper'.")));
	if (timeout_ms < 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid imsg_ping timeout %d", timeout_ms),
				 errdetail("The timeout is in milliseconds and must be 0 or more.")));

	if (imsg_resolve_manager(&manager_pid) != IMSG_OK)
		imsg_report_send_failure(IMSG_NO_RECIPIENT, IMSG_MANAGER, 0, 0);

	ping_id = ++last_ping_id;
	ImsgBufferInitWriter(&buf, data, sizeof(data));
	ImsgBufferPutInt64(&buf, ping_id);
	ImsgBufferPutInt8(&buf, target_code);

	start = GetCurrentTimestamp();
	r = ImsgSend(IMSG_MANAGER, IMSG_T_PING, buf.data, buf.len,
				 Min(imsg_send_timeout_ms, timeout_ms), NULL);
	if (r != IMSG_OK)
		imsg_report_send_failure(r, IMSG_MANAGER, buf.len,
								 Min(imsg_send_timeout_ms, timeout_ms));
	deadline = TimestampTzPlusMilliseconds(start, timeout_ms);

	r = imsg_wait_manager_reply(IMSG_T_PONG, ping_id, manager_pid, deadline,
								PING_LIVENESS_MS, &status, 1);
	if (r == IMSG_NO_RECIPIENT)
		ereport(ERROR,
				(errcode(ERRCODE_CONNECTION_FAILURE),
				 errmsg("imessages manager exited while waiting for its reply"),
				 errdetail("Manager process %d is gone.", manager_pid)));
	if (r == IMSG_TIMEOUT)
		ereport(ERROR,
				(errcode(ERRCODE_CONNECTION_FAILURE),
				 errmsg("imessages ping to the %s timed out", target),
				 errdetail("No reply within %d ms.", timeout_ms),
				 errhint("Check imsg_manager_status(), imsg_helpers() and the server log.")));
	if (status == IMSG_PONG_NO_HELPER)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("imessages has no helper to answer the ping"),
				 errhint("imessages.max_helpers is 0.")));

	result = palloc0(sizeof(Interval));
	result->time = GetCurrentTimestamp() - start;
	PG_RETURN_INTERVAL_P(result);
}

/*
 * imsg_pause_apply(timeout_ms integer DEFAULT 10000): have the manager hold
 * new deliveries and wait until everything delivered so far is applied
 * here, and return that position.  What a donor does before it exports the
 * snapshot of a full state transfer (recovery.c): a snapshot taken now
 * holds exactly the positions up to the one returned, plus this node's
 * own async transactions that committed and are not delivered yet (which
 * the joiner applies again, with the same outcome).  Released by
 * imsg_resume_apply(), when this session ends, or after 30 s.
 */
Datum
imsg_pause_apply(PG_FUNCTION_ARGS)
{
	static int64 last_id = 0;
	int			timeout_ms = PG_GETARG_INT32(0);
	int			manager_pid;
	int64		id;
	char		data[8];
	char		reply[9];
	ImsgBuffer	buf;
	ImsgResult	r;

	imsg_check_available();
	if (timeout_ms < 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid imsg_pause_apply timeout %d", timeout_ms),
				 errdetail("The timeout is in milliseconds and must be 0 or more.")));
	if (imsg_resolve_manager(&manager_pid) != IMSG_OK)
		imsg_report_send_failure(IMSG_NO_RECIPIENT, IMSG_MANAGER, 0, 0);
	id = ++last_id;
	ImsgBufferInitWriter(&buf, data, sizeof(data));
	ImsgBufferPutInt64(&buf, id);
	r = ImsgSend(IMSG_MANAGER, IMSG_T_PAUSE_APPLY, buf.data, buf.len,
				 imsg_send_timeout_ms, NULL);
	if (r != IMSG_OK)
		imsg_report_send_failure(r, IMSG_MANAGER, buf.len, imsg_send_timeout_ms);
	r = imsg_wait_manager_reply(IMSG_T_PAUSED, id, manager_pid,
								TimestampTzPlusMilliseconds(GetCurrentTimestamp(), timeout_ms),
								PING_LIVENESS_MS, reply, sizeof(reply));
	if (r == IMSG_NO_RECIPIENT)
		ereport(ERROR,
				(errcode(ERRCODE_CONNECTION_FAILURE),
				 errmsg("imessages manager exited while pausing apply")));
	if (r == IMSG_TIMEOUT)
		ereport(ERROR,
				(errcode(ERRCODE_QUERY_CANCELED),
				 errmsg("imessages manager did not apply what it delivered within %d ms", timeout_ms)));
	ImsgBufferInitReader(&buf, reply, sizeof(reply));
	if (ImsgBufferGetInt8(&buf) == 0)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("node \"%s\" cannot be a donor now",
						imsg_my_node_name()),
				 errdetail("It is not synced with its group, or it is paused for another transfer.")));
	PG_RETURN_INT64(ImsgBufferGetInt64(&buf));
}

/* imsg_resume_apply(): end this session's imsg_pause_apply(). */
Datum
imsg_resume_apply(PG_FUNCTION_ARGS)
{
	char		data[8];
	ImsgBuffer	buf;
	ImsgResult	r;

	imsg_check_available();
	ImsgBufferInitWriter(&buf, data, sizeof(data));
	ImsgBufferPutInt64(&buf, 0);
	r = ImsgSend(IMSG_MANAGER, IMSG_T_RESUME_APPLY, buf.data, buf.len,
				 imsg_send_timeout_ms, NULL);
	if (r != IMSG_OK)
		imsg_report_send_failure(r, IMSG_MANAGER, buf.len, imsg_send_timeout_ms);
	PG_RETURN_VOID();
}

/* A group id as text, in a static buffer (log lines, the restore's SQL). */
const char *
imsg_format_group_id(const uint8 *id)
{
	static char buf[40];

	snprintf(buf, sizeof(buf),
			 "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x",
			 id[0], id[1], id[2], id[3], id[4], id[5], id[6], id[7],
			 id[8], id[9], id[10], id[11], id[12], id[13], id[14], id[15]);
	return buf;
}

/* A donor's backend serves a node that catches up (see donor_served_at). */
void
imsg_note_donor_activity(void)
{
	TimestampTz now = GetCurrentTimestamp();

	SpinLockAcquire(&ImsgManagerState->mutex);
	ImsgManagerState->donor_served_at = now;
	SpinLockRelease(&ImsgManagerState->mutex);
}

/* imsg_manager_status(): one row. */
Datum
imsg_manager_status(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	ImsgManagerShared *st;
	ImsgManagerShared copy;
	Datum		values[38];
	bool		nulls[38] = {0};
	ImsgNodeState node_state;
	int64		local_xids;
	int64		local_removals;
	int			running;

	imsg_check_available();
	InitMaterializedSRF(fcinfo, 0);
	st = ImsgManagerState;

	SpinLockAcquire(&st->mutex);
	memcpy(&copy, st, offsetof(ImsgManagerShared, helpers));
	SpinLockRelease(&st->mutex);
	running = imsg_helpers_running();

	if (copy.pid != 0)
		values[0] = Int32GetDatum(copy.pid);
	else
		nulls[0] = true;
	copy.gcs[sizeof(copy.gcs) - 1] = '\0';
	values[1] = CStringGetTextDatum(copy.gcs[0] ? copy.gcs : "");
	values[2] = Int32GetDatum(copy.group_members);
	values[3] = Int64GetDatum((int64) copy.messages_received);
	values[4] = Int64GetDatum((int64) copy.messages_delivered);
	values[5] = Int32GetDatum(running);
	values[6] = Int64GetDatum((int64) copy.helpers_started);
	values[7] = Int64GetDatum((int64) copy.helpers_exited);
	values[8] = Int64GetDatum((int64) copy.helpers_crashed);
	copy.last_error[sizeof(copy.last_error) - 1] = '\0';
	if (copy.last_error[0])
		values[9] = CStringGetTextDatum(copy.last_error);
	else
		nulls[9] = true;
	if (copy.started_at != 0)
		values[10] = TimestampTzGetDatum(copy.started_at);
	else
		nulls[10] = true;
	values[11] = Int64GetDatum((int64) copy.change_sets_delivered);
	values[12] = Int64GetDatum((int64) copy.change_set_bytes);
	values[13] = Int64GetDatum((int64) copy.change_sets_discarded);
	values[14] = Int64GetDatum((int64) copy.remote_change_sets_applied);
	values[15] = Int64GetDatum((int64) copy.apply_errors);
	values[16] = Int64GetDatum((int64) copy.change_sets_conflicted);
	values[17] = BoolGetDatum(copy.pid != 0 && copy.group_quorate);
	values[18] = Int64GetDatum(copy.certification_rows);
	values[19] = Int64GetDatum(copy.change_sets_to_apply);
	values[20] = Int64GetDatum((int64) copy.remote_writes_skipped);
	imsg_local_writes_counts(&local_xids, &local_removals);
	values[21] = Int64GetDatum(local_xids);
	values[22] = Int64GetDatum(copy.manager_memory_bytes);
	values[23] = Int64GetDatum(copy.messages_in_assembly);
	node_state = (ImsgNodeState) pg_atomic_read_u32(&ImsgManagerState->node_state);
	/* a synced node serving another one (catch-up within 2 s, or a transfer) */
	if (node_state == IMSG_NODE_SYNCED &&
		(copy.paused_for_transfer ||
		 (copy.donor_served_at != 0 &&
		  !TimestampDifferenceExceeds(copy.donor_served_at, GetCurrentTimestamp(), 2000))))
		values[24] = CStringGetTextDatum("donor");
	else
		values[24] = CStringGetTextDatum(imsg_node_state_name(node_state));
	if (copy.has_group_id)
	{
		pg_uuid_t  *u = palloc(sizeof(pg_uuid_t));

		memcpy(u->data, copy.group_id, UUID_LEN);
		values[25] = UUIDPGetDatum(u);
	}
	else
		nulls[25] = true;
	values[26] = Int64GetDatum((int64) copy.applied_position);
	values[27] = Int64GetDatum((int64) copy.group_position);
	values[28] = Int64GetDatum((int64) (copy.group_position > copy.applied_position ?
										copy.group_position - copy.applied_position : 0));
	values[29] = Int64GetDatum((int64) copy.gcs_messages_sent);
	values[30] = Int64GetDatum((int64) copy.gcs_packets_sent);
	values[31] = Int32GetDatum(copy.applying_now);
	values[32] = Int32GetDatum(copy.applying_max);
	values[33] = BoolGetDatum(copy.flow_control_active);
	values[34] = Int64GetDatum((int64) copy.flow_control_paused_ms);
	values[35] = Int64GetDatum((int64) copy.flow_control_sent);
	values[36] = Int64GetDatum((int64) copy.ddl_applied);
	values[37] = Int64GetDatum((int64) copy.ddl_errors);
	tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	return (Datum) 0;
}

/* imsg_helpers(): one row per helper slot in use. */
Datum
imsg_helpers(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	int			i;

	imsg_check_available();
	InitMaterializedSRF(fcinfo, 0);

	for (i = 0; i < ImsgManagerState->num_helper_slots; i++)
	{
		ImsgHelperSlot *slot = &ImsgManagerState->helpers[i];
		ImsgHelperState state;
		int			pid;
		TimestampTz started_at;
		uint64		jobs_done;
		uint64		applying;
		uint64		applied;
		Datum		values[6];
		bool		nulls[6] = {0};
		static const char *const state_names[] = {"free", "starting", "idle", "busy"};

		SpinLockAcquire(&slot->mutex);
		state = slot->state;
		pid = slot->pid;
		started_at = slot->started_at;
		jobs_done = slot->jobs_done;
		applying = slot->applying;
		applied = slot->change_sets_applied;
		SpinLockRelease(&slot->mutex);
		if (state == IMSG_HELPER_FREE)
			continue;

		if (pid != 0)
			values[0] = Int32GetDatum(pid);
		else
			nulls[0] = true;
		values[1] = CStringGetTextDatum(state_names[state]);
		if (started_at != 0)
			values[2] = TimestampTzGetDatum(started_at);
		else
			nulls[2] = true;
		values[3] = Int64GetDatum((int64) jobs_done);
		if (applying != 0)
			values[4] = Int64GetDatum((int64) applying);
		else
			nulls[4] = true;
		values[5] = Int64GetDatum((int64) applied);
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	}
	return (Datum) 0;
}

PG_FUNCTION_INFO_V1(imsg_node_id_clash);

/*
 * imsg_node_id_clash(): the other members of the group with this node's
 * imessages.node_id, as the manager's last state exchange found them
 * (NULL: none, or no manager).
 */
Datum
imsg_node_id_clash(PG_FUNCTION_ARGS)
{
	char		clash[sizeof(ImsgManagerState->node_id_clash)];

	imsg_check_available();
	SpinLockAcquire(&ImsgManagerState->mutex);
	strlcpy(clash, ImsgManagerState->node_id_clash, sizeof(clash));
	SpinLockRelease(&ImsgManagerState->mutex);
	if (clash[0] == '\0')
		PG_RETURN_NULL();
	PG_RETURN_TEXT_P(cstring_to_text(clash));
}

PG_FUNCTION_INFO_V1(imsg_group_members);

/* imsg_group_members(): the group as this node's manager last saw it. */
Datum
imsg_group_members(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	ImsgGroupMember members[IMSG_MAX_GROUP_MEMBERS];
	int			count;
	int			manager_pid;
	int			i;

	imsg_check_available();
	InitMaterializedSRF(fcinfo, 0);

	SpinLockAcquire(&ImsgManagerState->mutex);
	manager_pid = ImsgManagerState->pid;
	count = manager_pid != 0 ? ImsgManagerState->group_members : 0;
	memcpy(members, ImsgManagerState->members, count * sizeof(ImsgGroupMember));
	SpinLockRelease(&ImsgManagerState->mutex);

	for (i = 0; i < count; i++)
	{
		Datum		values[5];
		bool		nulls[5] = {0};

		members[i].node[NAMEDATALEN - 1] = '\0';
		if (members[i].node[0])
			values[0] = CStringGetTextDatum(members[i].node);
		else
			nulls[0] = true;	/* it has not sent anything yet */
		values[1] = Int64GetDatum((int64) members[i].nodeid);
		values[2] = Int32GetDatum((int32) members[i].pid);
		values[3] = TimestampTzGetDatum(members[i].joined_at);
		values[4] = BoolGetDatum(members[i].pid == (uint32) manager_pid &&
								 strcmp(members[i].node, imsg_my_node_name()) == 0);
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	}
	return (Datum) 0;
}
