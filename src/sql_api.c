/*-------------------------------------------------------------------------
 *
 * sql_api.c
 *	  SQL-callable functions: imsg_send, imsg_receive, monitoring.
 *
 * The queue layer (mailbox.c) returns result codes; this file turns them
 * into errors with SQLSTATEs.
 *
 * imsg_receive is transactional: a message taken out by a transaction is
 * released (its memory freed) when the transaction commits, and put back at
 * the head of the mailbox if the transaction, or the subtransaction that
 * received it, aborts.  It is a value-per-call set-returning function that
 * takes out one message per row asked for, wrapped in an inlinable SQL
 * function (see imessages--1.0.sql) so that a LIMIT stops it.
 *
 * Copyright (c) 2026, imessages developers
 *
 * IDENTIFICATION
 *	  src/sql_api.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "access/xact.h"
#include "catalog/pg_authid.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "storage/proc.h"
#include "utils/acl.h"
#include "utils/builtins.h"
#include "utils/timestamp.h"

#include "imessages_int.h"

PG_FUNCTION_INFO_V1(imsg_send);
PG_FUNCTION_INFO_V1(imsg_receive_internal);
PG_FUNCTION_INFO_V1(imsg_manager_pid);
PG_FUNCTION_INFO_V1(imsg_area_stats);
PG_FUNCTION_INFO_V1(imsg_mailbox_stats);

/*
 * Where to rewind the receive cursor if a subtransaction aborts: the
 * cursor before each nesting level's first receive (see nestmarks.c).
 */
static ImsgNestMarks receive_marks;
static ImsgCursorMark receive_positions[IMSG_MAX_NEST_MARKS];
static bool received_in_xact = false;

static void
imsg_remember_receive_start(void)
{
	int			i;

	received_in_xact = true;
	i = imsg_nest_mark_push(&receive_marks, "imsg_receive is", "receive messages");
	if (i >= 0)
		imsg_get_cursor(&receive_positions[i]);
}

static void
imsg_xact_callback(XactEvent event, void *arg)
{
	/* pipelined sends are not transactional, but their wake-up is due */
	if (event == XACT_EVENT_COMMIT || event == XACT_EVENT_ABORT ||
		event == XACT_EVENT_PREPARE)
		imsg_flush_pipelined();

	switch (event)
	{
		case XACT_EVENT_PRE_PREPARE:
			/* a prepared transaction may end in another session: refuse */
			if (received_in_xact && imsg_have_unreleased())
				ereport(ERROR,
						(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
						 errmsg("cannot PREPARE a transaction that has received imessages")));
			return;
		case XACT_EVENT_COMMIT:
		case XACT_EVENT_PARALLEL_COMMIT:
		case XACT_EVENT_PREPARE:
			if (received_in_xact)
				imsg_release_all_received();
			break;
		case XACT_EVENT_ABORT:
		case XACT_EVENT_PARALLEL_ABORT:
			imsg_cancel_pending();
			if (received_in_xact)
				imsg_rewind_unreleased();
			break;
		default:
			return;
	}
	received_in_xact = false;
	receive_marks.count = 0;
}

static void
imsg_subxact_callback(SubXactEvent event, SubTransactionId mySubid,
					  SubTransactionId parentSubid, void *arg)
{
	if (event == SUBXACT_EVENT_ABORT_SUB)
	{
		int			i;

		imsg_cancel_pending();
		i = imsg_nest_mark_abort(&receive_marks);
		if (i >= 0)
			imsg_set_cursor(&receive_positions[i]);
	}
	else if (event == SUBXACT_EVENT_COMMIT_SUB)
		imsg_nest_mark_commit(&receive_marks);
}

void
imsg_sql_init(void)
{
	RegisterXactCallback(imsg_xact_callback, NULL);
	RegisterSubXactCallback(imsg_subxact_callback, NULL);
}

/*
 * Wait for the manager's reply to a request of ours: a message of type
 * 'msgtype' whose payload starts with int64 'id'.  Replies to earlier
 * requests that gave up (another id) are stale: consumed and skipped.
 * Looks every 'liveness_ms' whether the manager we asked ('manager_pid')
 * still runs.  Copies the payload after the id into reply[reply_len] and
 * returns IMSG_OK; IMSG_TIMEOUT at 'deadline'; IMSG_NO_RECIPIENT if the
 * manager went away.  The wait honours interrupts and postmaster death
 * (ImsgReceiveMatching).
 */
ImsgResult
imsg_wait_manager_reply(int32 msgtype, int64 id, int manager_pid,
						TimestampTz deadline, long liveness_ms,
						char *reply, Size reply_len)
{
	for (;;)
	{
		long		remaining = TimestampDifferenceMilliseconds(GetCurrentTimestamp(),
																deadline);
		ImsgMessage *msg;
		int			now_pid;

		/* 0 means look once without waiting; never pass a negative wait */
		if (ImsgReceiveMatching(Max(0, Min(remaining, liveness_ms)),
								ImsgMatchType, &msgtype, &msg) == IMSG_OK)
		{
			ImsgBuffer	in;
			int64		got;

			ImsgBufferInitReader(&in, ImsgMessageData(msg), ImsgMessageLength(msg));
			got = ImsgBufferGetInt64(&in);
			if (got == id)
				memcpy(reply, ImsgBufferGetBytes(&in, reply_len), reply_len);
			ImsgConsume(msg);
			if (got == id)
				return IMSG_OK;
			continue;
		}
		(void) imsg_resolve_manager(&now_pid);
		if (now_pid != manager_pid)
			return IMSG_NO_RECIPIENT;
		if (remaining <= 0)
			return IMSG_TIMEOUT;
	}
}

/*
 * ERROR for a send that failed with 'result': one wording and SQLSTATE per
 * outcome, for every SQL path that sends (imsg_send, imsg_ping, change
 * sets).  'len' is the payload size, 'timeout_ms' what the send waited.
 */
void
imsg_report_send_failure(ImsgResult result, int recipient, Size len,
						 int timeout_ms)
{
	switch (result)
	{
		case IMSG_OK:
			return;
		case IMSG_TOO_LARGE:
			ereport(ERROR,
					(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
					 errmsg("imessages message is too large"),
					 errdetail("The payload has %zu bytes; the limit is %zu bytes.",
							   len,
							   Min((Size) imsg_max_message_size, imsg_largest_message())),
					 errhint("The limit is imessages.max_message_size, at most what fits in imessages.buffer_size.")));
			break;
		case IMSG_NO_RECIPIENT:
			if (recipient == IMSG_MANAGER)
				ereport(ERROR,
						(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
						 errmsg("imessages manager is not running"),
						 errhint("The postmaster restarts it; check the server log.")));
			ereport(ERROR,
					(errcode(ERRCODE_UNDEFINED_OBJECT),
					 errmsg("process %d has no imessages mailbox", recipient),
					 errdetail("The process does not exist, has exited, or has not used imessages yet."),
					 errhint("A process opens its mailbox the first time it calls an imessages function, for example imsg_receive().")));
			break;
		case IMSG_WOULD_BLOCK:
		case IMSG_TIMEOUT:
			{
				ImsgAreaCounts c;

				imsg_area_counts(&c);
				ereport(ERROR,
						(errcode(ERRCODE_INSUFFICIENT_RESOURCES),
						 errmsg("imessages area is full"),
						 errdetail("%llu of %llu bytes are in use; waited %d ms for space.",
								   (unsigned long long) c.allocated_bytes,
								   (unsigned long long) c.size_bytes,
								   result == IMSG_TIMEOUT ? timeout_ms : 0),
						 errhint("Recipients must take their messages out with imsg_receive(), or raise imessages.buffer_size or imessages.send_timeout.")));
			}
			break;
		case IMSG_OVER_QUOTA:
			{
				/* what the queue layer saw when the send gave up */
				const ImsgOverQuota *q = imsg_last_over_quota();

				ereport(ERROR,
						(errcode(ERRCODE_INSUFFICIENT_RESOURCES),
						 errmsg("imessages mailbox of process %d is over its quota", q->pid),
						 errdetail("The mailbox holds %llu bytes of unread messages and its quota is %llu bytes; the message needs %llu bytes; waited %d ms for the process to take messages out.",
								   (unsigned long long) q->queued_bytes,
								   (unsigned long long) q->quota_bytes,
								   (unsigned long long) q->needed_bytes,
								   timeout_ms),
						 recipient == IMSG_MANAGER ?
						 errhint("The manager's mailbox quota is imessages.manager_mailbox_quota; raise it or imessages.send_timeout if the load is legitimate.") :
						 errhint("The recipient must take its messages out with imsg_receive(); a superuser can raise its imessages.mailbox_quota (0: no quota), or raise imessages.send_timeout.")));
			}
			break;
		case IMSG_NOT_LOADED:
			imsg_check_available();
			break;
	}
	elog(ERROR, "imessages: unexpected send result %d", (int) result);
}

/*
 * May the current user send to process 'pid'?  The rule of
 * pg_signal_backend() (pg_cancel_backend, pg_terminate_backend), in its
 * PostgreSQL 16 form, which also protects processes without a role:
 *
 * - a superuser may send to any process;
 * - anyone may send to the manager (as with a NULL recipient) and to
 *	 itself;
 * - only a superuser may send to a process of a superuser or of no role
 *	 (the helpers, background workers);
 * - otherwise the current user must have the privileges of the target
 *	 process's role (be it, or a member of it that inherits), or of
 *	 pg_signal_backend.
 *
 * The target's role is the role its session logged in with (PGPROC's
 * roleId), as for pg_signal_backend: SET ROLE does not change it.  Like
 * pg_signal_backend, this checks the pid, then sends: a process that exits
 * in between and whose pid is reused at once by a new process of another
 * role would get the message.  Unknown pids pass here and fail in the send
 * (42704).
 */
static void
imsg_check_send_privilege(int pid)
{
	Oid			role;
	int			manager_pid;

	if (pid == MyProcPid || superuser())
		return;
	if (imsg_resolve_manager(&manager_pid) == IMSG_OK && pid == manager_pid)
		return;
	if (!imsg_mailbox_owner_role(pid, &role))
		return;

	if (!OidIsValid(role) || superuser_arg(role))
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("permission denied to send to process %d", pid),
				 errdetail("Only superusers may send to a process of a superuser or of no role (a background worker)."),
				 errhint("Send to the replication manager with a NULL recipient.")));
	if (!has_privs_of_role(GetUserId(), role) &&
		!has_privs_of_role(GetUserId(), ROLE_PG_SIGNAL_BACKEND))
	{
		/* the role may have been dropped since the process logged in */
		char	   *name = GetUserNameFromId(role, true);

		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("permission denied to send to process %d", pid),
				 errdetail("Only roles with the privileges of the process's role \"%s\" or of \"pg_signal_backend\" may send to it.",
						   name ? name : psprintf("%u", role))));
	}
}

/*
 * imsg_send(payload bytea|text, recipient integer DEFAULT NULL,
 *			 msgtype integer DEFAULT 0) RETURNS bigint
 */
Datum
imsg_send(PG_FUNCTION_ARGS)
{
	struct varlena *payload;
	int			recipient;
	int32		msgtype;
	uint64		msg_id = 0;
	ImsgResult	result;

	imsg_check_available();
	if (PG_ARGISNULL(0))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("imessages payload must not be null")));
	if (PG_ARGISNULL(2))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("imessages message type must not be null")));
	msgtype = PG_GETARG_INT32(2);
	if (msgtype < IMSG_FIRST_USER_TYPE)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid imessages message type %d", msgtype),
				 errdetail("Message types below %d are reserved for imessages itself.",
						   IMSG_FIRST_USER_TYPE)));
	if (PG_ARGISNULL(1))
		recipient = IMSG_MANAGER;
	else
	{
		recipient = PG_GETARG_INT32(1);
		if (recipient <= 0)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("invalid recipient process ID %d", recipient),
					 errhint("Pass the process ID of a PostgreSQL process, or NULL for the replication manager.")));
		imsg_check_send_privilege(recipient);
	}

	payload = PG_GETARG_VARLENA_PP(0);
	result = ImsgSend(recipient, msgtype, VARDATA_ANY(payload),
					  VARSIZE_ANY_EXHDR(payload), imsg_send_timeout_ms, &msg_id);

	if (result != IMSG_OK)
		imsg_report_send_failure(result, recipient, VARSIZE_ANY_EXHDR(payload),
								 imsg_send_timeout_ms);
	PG_RETURN_INT64((int64) msg_id);
}

typedef struct ReceiveState
{
	int			timeout_ms;
	int64		max_messages;	/* -1: no limit */
} ReceiveState;

/*
 * imsg_receive_internal(timeout_ms integer, max_messages integer)
 *	  RETURNS SETOF record, value per call: one message per call.
 */
Datum
imsg_receive_internal(PG_FUNCTION_ARGS)
{
	FuncCallContext *funcctx;
	ReceiveState *state;
	ImsgMessage *msg;
	ImsgResult	result;
	Datum		values[6];
	bool		nulls[6] = {0};
	Oid			sender_role;
	bytea	   *payload;
	uint32		len;

	if (SRF_IS_FIRSTCALL())
	{
		MemoryContext oldcontext;
		TupleDesc	tupdesc;

		imsg_check_available();
		if (PG_ARGISNULL(0))
			ereport(ERROR,
					(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
					 errmsg("imessages timeout must not be null")));
		if (PG_GETARG_INT32(0) < 0)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("invalid imessages timeout %d", PG_GETARG_INT32(0)),
					 errdetail("The timeout is in milliseconds and must be 0 or more.")));
		if (!PG_ARGISNULL(1) && PG_GETARG_INT32(1) < 0)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("invalid max_messages %d", PG_GETARG_INT32(1)),
					 errdetail("max_messages must be 0 or more, or NULL for no limit.")));

		funcctx = SRF_FIRSTCALL_INIT();
		oldcontext = MemoryContextSwitchTo(funcctx->multi_call_memory_ctx);
		if (get_call_result_type(fcinfo, NULL, &tupdesc) != TYPEFUNC_COMPOSITE)
			elog(ERROR, "return type must be a row type");
		funcctx->tuple_desc = BlessTupleDesc(tupdesc);
		state = palloc(sizeof(ReceiveState));
		state->timeout_ms = PG_GETARG_INT32(0);
		state->max_messages = PG_ARGISNULL(1) ? -1 : PG_GETARG_INT32(1);
		funcctx->user_fctx = state;
		MemoryContextSwitchTo(oldcontext);
	}

	funcctx = SRF_PERCALL_SETUP();
	state = funcctx->user_fctx;
	if (state->max_messages >= 0 && funcctx->call_cntr >= state->max_messages)
		SRF_RETURN_DONE(funcctx);

	/* only the first message is waited for */
	ImsgOpenMailbox();
	imsg_remember_receive_start();
	for (;;)
	{
		result = ImsgReceive(funcctx->call_cntr == 0 ? state->timeout_ms : 0, &msg);
		if (result != IMSG_OK)
			SRF_RETURN_DONE(funcctx);
		/* skip imessages' own replies left by a wait that timed out */
		if (ImsgMessageType(msg) >= IMSG_FIRST_USER_TYPE)
			break;
	}

	len = ImsgMessageLength(msg);
	payload = palloc(VARHDRSZ + len);
	SET_VARSIZE(payload, VARHDRSZ + len);
	memcpy(VARDATA(payload), ImsgMessageData(msg), len);

	values[0] = Int64GetDatum((int64) ImsgMessageId(msg));
	values[1] = Int32GetDatum(ImsgMessageSender(msg));
	/* the sender's current_user; none for a process without a role */
	sender_role = ImsgMessageSenderRole(msg);
	if (OidIsValid(sender_role))
		values[2] = ObjectIdGetDatum(sender_role);
	else
		nulls[2] = true;
	values[3] = Int32GetDatum(ImsgMessageType(msg));
	values[4] = PointerGetDatum(payload);
	values[5] = TimestampTzGetDatum(ImsgMessageSentAt(msg));
	SRF_RETURN_NEXT(funcctx,
					HeapTupleGetDatum(heap_form_tuple(funcctx->tuple_desc, values, nulls)));
}

/* imsg_manager_pid() RETURNS integer: NULL while no manager runs. */
Datum
imsg_manager_pid(PG_FUNCTION_ARGS)
{
	int			pid;

	imsg_check_available();
	if (imsg_resolve_manager(&pid) != IMSG_OK)
		PG_RETURN_NULL();
	PG_RETURN_INT32(pid);
}

/* imsg_area_stats(): the one row behind view imsg_area. */
Datum
imsg_area_stats(PG_FUNCTION_ARGS)
{
	TupleDesc	tupdesc;
	Datum		values[10];
	bool		nulls[10] = {0};
	ImsgAreaCounts c;

	imsg_check_available();
	if (get_call_result_type(fcinfo, NULL, &tupdesc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "return type must be a row type");
	imsg_area_counts(&c);
	values[0] = Int64GetDatum((int64) c.size_bytes);
	values[1] = Int64GetDatum((int64) c.used_bytes);
	values[2] = Int64GetDatum((int64) c.peak_bytes);
	values[3] = Int64GetDatum((int64) c.queued_messages);
	values[4] = Int64GetDatum((int64) c.sent);
	values[5] = Int64GetDatum((int64) c.received);
	values[6] = Int64GetDatum((int64) c.send_waits);
	values[7] = Int64GetDatum((int64) c.send_failures);
	values[8] = Int64GetDatum((int64) c.allocated_bytes);
	values[9] = Int64GetDatum((int64) c.segments_allocated);
	PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(tupdesc, values, nulls)));
}

/* imsg_mailbox_stats(): the rows behind view imsg_mailboxes. */
Datum
imsg_mailbox_stats(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	int			i;

	imsg_check_available();
	InitMaterializedSRF(fcinfo, 0);

	for (i = 0; i < imsg_mailbox_slots(); i++)
	{
		ImsgMailboxInfo info;
		Datum		values[8];
		bool		nulls[8] = {0};

		if (!imsg_mailbox_info(i, &info))
			continue;
		values[0] = Int32GetDatum(info.pid);
		values[1] = CStringGetTextDatum(info.backend_type);
		values[2] = Int64GetDatum((int64) info.queued_messages);
		values[3] = Int64GetDatum((int64) info.queued_bytes);
		/* NULL: no quota */
		if (info.quota_bytes != 0)
			values[4] = Int64GetDatum((int64) info.quota_bytes);
		else
			nulls[4] = true;
		if (info.oldest_sent_at != 0)
			values[5] = TimestampTzGetDatum(info.oldest_sent_at);
		else
			nulls[5] = true;
		values[6] = Int64GetDatum((int64) info.sent);
		values[7] = Int64GetDatum((int64) info.received);
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	}
	return (Datum) 0;
}
