/*-------------------------------------------------------------------------
 *
 * imessages_test.c
 *	  Test functions for the imessages C API, written as a separate
 *	  extension would write them: only include/imessages.h.
 *
 * Copyright (c) 2026, imessages developers
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "fmgr.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "catalog/pg_type.h"
#include "utils/array.h"
#include "utils/builtins.h"

#include "imessages.h"

PG_MODULE_MAGIC;

PG_FUNCTION_INFO_V1(imsg_test_build_in_place);
PG_FUNCTION_INFO_V1(imsg_test_reserve_cancel);
PG_FUNCTION_INFO_V1(imsg_test_reserve_then_error);
PG_FUNCTION_INFO_V1(imsg_test_overfill);
PG_FUNCTION_INFO_V1(imsg_test_decode);
PG_FUNCTION_INFO_V1(imsg_test_receive_all);
PG_FUNCTION_INFO_V1(imsg_test_send_result);

#define TEST_MSGTYPE 4711

/* int32 n, string label, int64 -n, int16 7, int8 -1: built in the area */
Datum
imsg_test_build_in_place(PG_FUNCTION_ARGS)
{
	int			recipient = PG_GETARG_INT32(0);
	int32		n = PG_GETARG_INT32(1);
	text	   *label = PG_GETARG_TEXT_PP(2);
	uint32		label_len = VARSIZE_ANY_EXHDR(label);
	ImsgBuffer	buf;
	ImsgResult	r;

	r = ImsgReserve(recipient, TEST_MSGTYPE, 4 + 4 + label_len + 8 + 2 + 1, 0, &buf);
	if (r != IMSG_OK)
		elog(ERROR, "ImsgReserve: %s", ImsgResultString(r));
	ImsgBufferPutInt32(&buf, n);
	ImsgBufferPutString(&buf, VARDATA_ANY(label), label_len);
	ImsgBufferPutInt64(&buf, -(int64) n);
	ImsgBufferPutInt16(&buf, 7);
	ImsgBufferPutInt8(&buf, -1);
	PG_RETURN_INT64((int64) ImsgCommit(&buf));
}

/* Reserve and cancel, then send a plain message: only that one arrives. */
Datum
imsg_test_reserve_cancel(PG_FUNCTION_ARGS)
{
	int			recipient = PG_GETARG_INT32(0);
	ImsgBuffer	buf;
	ImsgResult	r;

	r = ImsgReserve(recipient, TEST_MSGTYPE, 100, 0, &buf);
	if (r != IMSG_OK)
		elog(ERROR, "ImsgReserve: %s", ImsgResultString(r));
	ImsgBufferPutInt32(&buf, 12345);
	ImsgCancel(&buf);
	r = ImsgSend(recipient, TEST_MSGTYPE, "\0\0\0\1\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0", 4 + 4 + 8 + 2 + 1, 0, NULL);
	PG_RETURN_TEXT_P(cstring_to_text(ImsgResultString(r)));
}

/* Reserve, write a little, then fail: the abort must withdraw it. */
Datum
imsg_test_reserve_then_error(PG_FUNCTION_ARGS)
{
	ImsgBuffer	buf;

	if (ImsgReserve(PG_GETARG_INT32(0), TEST_MSGTYPE, 64, 0, &buf) != IMSG_OK)
		elog(ERROR, "ImsgReserve failed");
	ImsgBufferPutInt32(&buf, 1);
	ereport(ERROR,
			(errcode(ERRCODE_DATA_EXCEPTION),
			 errmsg("failing while a message is reserved")));
	PG_RETURN_VOID();
}

/* Write more than reserved: ERROR, nothing past the reservation. */
Datum
imsg_test_overfill(PG_FUNCTION_ARGS)
{
	ImsgBuffer	buf;

	if (ImsgReserve(PG_GETARG_INT32(0), TEST_MSGTYPE, 8, 0, &buf) != IMSG_OK)
		elog(ERROR, "ImsgReserve failed");
	ImsgBufferPutInt64(&buf, 1);
	ImsgBufferPutInt8(&buf, 2);
	PG_RETURN_VOID();
}

static char *
decode_payload(const char *data, uint32 len)
{
	ImsgBuffer	in;
	int32		n;
	const char *s;
	uint32		slen;
	int64		neg;
	int16		seven;
	int8		minus_one;

	ImsgBufferInitReader(&in, data, len);
	n = ImsgBufferGetInt32(&in);
	s = ImsgBufferGetString(&in, &slen);
	neg = ImsgBufferGetInt64(&in);
	seven = ImsgBufferGetInt16(&in);
	minus_one = ImsgBufferGetInt8(&in);
	ImsgBufferCheckEnd(&in);
	return psprintf("%d %.*s " INT64_FORMAT " %d %d", n, (int) slen, s, neg,
					seven, minus_one);
}

Datum
imsg_test_decode(PG_FUNCTION_ARGS)
{
	bytea	   *payload = PG_GETARG_BYTEA_PP(0);

	PG_RETURN_TEXT_P(cstring_to_text(decode_payload(VARDATA_ANY(payload),
													VARSIZE_ANY_EXHDR(payload))));
}

/* Receive everything through the C API, release as we go. */
Datum
imsg_test_receive_all(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	long		timeout = PG_GETARG_INT32(0);
	ImsgMessage *msg;

	InitMaterializedSRF(fcinfo, 0);
	while (ImsgReceive(timeout, &msg) == IMSG_OK)
	{
		Datum		values[7];
		bool		nulls[7] = {0};

		values[0] = Int64GetDatum((int64) ImsgMessageId(msg));
		values[1] = Int32GetDatum(ImsgMessageSender(msg));
		values[2] = Int32GetDatum(ImsgMessageRecipient(msg));
		values[3] = Int32GetDatum(ImsgMessageType(msg));
		values[4] = Int32GetDatum((int32) ImsgMessageLength(msg));
		values[5] = ObjectIdGetDatum(ImsgMessageSenderRole(msg));
		if (ImsgMessageType(msg) == TEST_MSGTYPE)
			values[6] = CStringGetTextDatum(decode_payload(ImsgMessageData(msg),
														   ImsgMessageLength(msg)));
		else
			nulls[6] = true;
		ImsgRelease(msg);
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
		timeout = 0;
	}
	return (Datum) 0;
}

/* The raw ImsgResult of a send, without the SQL layer's errors. */
Datum
imsg_test_send_result(PG_FUNCTION_ARGS)
{
	int			len = PG_GETARG_INT32(1);
	char	   *data = palloc0(Max(len, 1));
	ImsgResult	r;

	r = ImsgSend(PG_GETARG_INT32(0), 1, data, len, PG_GETARG_INT32(2), NULL);
	PG_RETURN_TEXT_P(cstring_to_text(ImsgResultString(r)));
}

PG_FUNCTION_INFO_V1(imsg_test_send_raw);

/* Any message type, any payload: to feed imessages' own protocol. */
Datum
imsg_test_send_raw(PG_FUNCTION_ARGS)
{
	bytea	   *payload = PG_GETARG_BYTEA_PP(2);
	ImsgResult	r;

	r = ImsgSend(PG_GETARG_INT32(0), PG_GETARG_INT32(1), VARDATA_ANY(payload),
				 VARSIZE_ANY_EXHDR(payload), 0, NULL);
	PG_RETURN_TEXT_P(cstring_to_text(ImsgResultString(r)));
}

PG_FUNCTION_INFO_V1(imsg_test_send_pipelined);

/* n pipelined messages carrying 1..n as int32, then a flush */
Datum
imsg_test_send_pipelined(PG_FUNCTION_ARGS)
{
	int			recipient = PG_GETARG_INT32(0);
	int			n = PG_GETARG_INT32(1);
	int			i;

	for (i = 1; i <= n; i++)
	{
		char		data[4];
		ImsgBuffer	buf;
		ImsgResult	r;

		ImsgBufferInitWriter(&buf, data, sizeof(data));
		ImsgBufferPutInt32(&buf, i);
		r = ImsgSendPipelined(recipient, 7, buf.data, buf.len, 5000, NULL);
		if (r != IMSG_OK)
			PG_RETURN_TEXT_P(cstring_to_text(ImsgResultString(r)));
	}
	ImsgFlush(recipient);
	PG_RETURN_TEXT_P(cstring_to_text("ok"));
}

PG_FUNCTION_INFO_V1(imsg_test_send_pipelined_sizes);

/*
 * One pipelined message per size: msgtype = size, payload byte i =
 * (size + i) % 251; then a flush.  Returns the ids ImsgSendPipelined reported,
 * comma-separated.
 */
Datum
imsg_test_send_pipelined_sizes(PG_FUNCTION_ARGS)
{
	int			recipient = PG_GETARG_INT32(0);
	ArrayType  *sizes = PG_GETARG_ARRAYTYPE_P(1);
	Datum	   *elems;
	int			n;
	int			i;
	StringInfoData ids;

	deconstruct_array(sizes, INT4OID, 4, true, TYPALIGN_INT, &elems, NULL, &n);
	initStringInfo(&ids);
	for (i = 0; i < n; i++)
	{
		int32		size = DatumGetInt32(elems[i]);
		char	   *data = palloc(Max(size, 1));
		uint64		id;
		ImsgResult	r;

		for (int b = 0; b < size; b++)
			data[b] = (char) ((size + b) % 251);
		r = ImsgSendPipelined(recipient, size, data, size, 5000, &id);
		if (r != IMSG_OK)
			PG_RETURN_TEXT_P(cstring_to_text(ImsgResultString(r)));
		appendStringInfo(&ids, "%s" UINT64_FORMAT, i > 0 ? "," : "", id);
		pfree(data);
	}
	ImsgFlush(recipient);
	PG_RETURN_TEXT_P(cstring_to_text(ids.data));
}

PG_FUNCTION_INFO_V1(imsg_test_send_pipelined_roles);

/*
 * Four pipelined messages (msgtype 1..4) to one recipient, the middle two
 * sent as 'role' (as inside a SECURITY DEFINER function), then a flush:
 * each must carry the role it was sent as, though a batch records one.
 */
Datum
imsg_test_send_pipelined_roles(PG_FUNCTION_ARGS)
{
	int			recipient = PG_GETARG_INT32(0);
	Oid			role = PG_GETARG_OID(1);
	Oid			saved_role;
	int			saved_context;
	int			i;

	GetUserIdAndSecContext(&saved_role, &saved_context);
	for (i = 1; i <= 4; i++)
	{
		ImsgResult	r;

		if (i == 2)
			SetUserIdAndSecContext(role, saved_context | SECURITY_LOCAL_USERID_CHANGE);
		r = ImsgSendPipelined(recipient, i, "r", 1, 5000, NULL);
		/* back to our own role after the middle two, or before an early return */
		if (i == 3 || (i == 2 && r != IMSG_OK))
			SetUserIdAndSecContext(saved_role, saved_context);
		if (r != IMSG_OK)
			PG_RETURN_TEXT_P(cstring_to_text(ImsgResultString(r)));
	}
	ImsgFlush(recipient);
	PG_RETURN_TEXT_P(cstring_to_text("ok"));
}

PG_FUNCTION_INFO_V1(imsg_test_send_pipelined_noflush);

/* n pipelined messages and no flush: as a caller that forgets it, or dies */
Datum
imsg_test_send_pipelined_noflush(PG_FUNCTION_ARGS)
{
	int			recipient = PG_GETARG_INT32(0);
	int			n = PG_GETARG_INT32(1);
	int			i;

	for (i = 0; i < n; i++)
	{
		ImsgResult	r = ImsgSendPipelined(recipient, 8, "p", 1, 5000, NULL);

		if (r != IMSG_OK)
			PG_RETURN_TEXT_P(cstring_to_text(ImsgResultString(r)));
	}
	PG_RETURN_TEXT_P(cstring_to_text("ok"));
}

PG_FUNCTION_INFO_V1(imsg_test_reserve_hold);

/*
 * Reserve a message and keep it unfinished for ms milliseconds (as a slow
 * sender would), then commit it.
 */
Datum
imsg_test_reserve_hold(PG_FUNCTION_ARGS)
{
	int			recipient = PG_GETARG_INT32(0);
	int			ms = PG_GETARG_INT32(1);
	ImsgBuffer	buf;
	ImsgResult	r;

	r = ImsgReserve(recipient, 9, 4, 5000, &buf);
	if (r != IMSG_OK)
		PG_RETURN_TEXT_P(cstring_to_text(ImsgResultString(r)));
	pg_usleep((long) ms * 1000L);
	ImsgBufferPutInt32(&buf, ms);
	(void) ImsgCommit(&buf);
	PG_RETURN_TEXT_P(cstring_to_text("ok"));
}

PG_FUNCTION_INFO_V1(imsg_test_send_pipelined_timeout);

/*
 * Up to n pipelined messages of len bytes, each waiting up to timeout_ms,
 * then a flush: "<messages accepted> <result of the last send>".
 */
Datum
imsg_test_send_pipelined_timeout(PG_FUNCTION_ARGS)
{
	int			recipient = PG_GETARG_INT32(0);
	int			n = PG_GETARG_INT32(1);
	int			len = PG_GETARG_INT32(2);
	int			timeout_ms = PG_GETARG_INT32(3);
	char	   *data = palloc0(Max(len, 1));
	ImsgResult	r = IMSG_OK;
	int			i;

	for (i = 0; i < n; i++)
	{
		r = ImsgSendPipelined(recipient, 10, data, len, timeout_ms, NULL);
		if (r != IMSG_OK)
			break;
	}
	ImsgFlush(recipient);
	PG_RETURN_TEXT_P(cstring_to_text(psprintf("%d %s", i, ImsgResultString(r))));
}
