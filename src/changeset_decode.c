/*-------------------------------------------------------------------------
 *
 * changeset_decode.c
 *	  Reading change sets: imsg_changeset_decode() and
 *	  imsg_recent_changesets().
 *
 * The decoder trusts nothing in its input: the change-set reader
 * (changeset_reader.c) checks the framing, names must be valid in the
 * database encoding, types are looked up by name, and values go through
 * the types' own receive or input functions, which validate them.
 * Malformed input is an ERROR with SQLSTATE 22P03.
 *
 * Copyright (c) 2026, imessages developers
 *
 * IDENTIFICATION
 *	  src/changeset_decode.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "catalog/pg_type.h"
#include "fmgr.h"
#include "funcapi.h"
#include "lib/stringinfo.h"
#include "mb/pg_wchar.h"
#include "miscadmin.h"
#include "parser/parse_type.h"
#include "utils/builtins.h"
#include "utils/json.h"
#include "utils/jsonb.h"
#include "utils/lsyscache.h"
#include "utils/numeric.h"
#include "utils/resowner.h"
#include "utils/timestamp.h"
#include "utils/xid8.h"

#include "replication_int.h"
#include "changeset_int.h"
#include "changeset_reader.h"

PG_FUNCTION_INFO_V1(imsg_changeset_decode);
PG_FUNCTION_INFO_V1(imsg_recent_changesets);

typedef struct DecColumn
{
	char	   *name;
	Oid			typid;
	bool		is_key;
	FmgrInfo	output;
	Oid			output_fn;
} DecColumn;

typedef struct DecRelation
{
	bool		defined;
	char	   *name;			/* schema.name, quoted as needed */
	int			ncols;
	int			nkeys;
	DecColumn  *cols;
} DecRelation;

static void decode_rows(ReturnSetInfo *rsinfo, const char *data, Size len);
static void decode_rows_checked(ReturnSetInfo *rsinfo, const char *data, Size len);

static void
bad_changeset(const char *what)
{
	ereport(ERROR,
			(errcode(ERRCODE_INVALID_BINARY_REPRESENTATION),
			 errmsg("invalid imessages change set"),
			 errdetail("%s", what)));
}

static char *
get_cstring(const char *p, uint32 len)
{
	if (memchr(p, '\0', len) != NULL)
		bad_changeset("A name contains a zero byte.");
	if (!pg_verify_mbstr(GetDatabaseEncoding(), p, len, true))
		bad_changeset("A name or value is not valid in the database encoding.");
	return pnstrdup(p, len);
}

/* One value as a JSON value: numbers and booleans as such, else text. */
static void
push_value(JsonbParseState **state, DecColumn *col, const ImsgCsValue *in)
{
	int8		kind = in->kind;
	JsonbValue	v;
	Datum		datum;
	char	   *text;

	if (kind == IMSG_CS_NULL)
	{
		v.type = jbvNull;
		pushJsonbValue(state, WJB_VALUE, &v);
		return;
	}
	if (kind == IMSG_CS_BINARY)
	{
		StringInfoData buf;
		Oid			recv;
		Oid			ioparam;

		initStringInfo(&buf);
		appendBinaryStringInfo(&buf, in->data, in->len);
		getTypeBinaryInputInfo(col->typid, &recv, &ioparam);
		datum = OidReceiveFunctionCall(recv, &buf, ioparam, -1);
		if (buf.cursor != buf.len)
			bad_changeset("A binary value has bytes its type does not read.");
	}
	else if (kind == IMSG_CS_TEXT)
	{
		char	   *s = get_cstring(in->data, in->len);
		Oid			input;
		Oid			ioparam;

		getTypeInputInfo(col->typid, &input, &ioparam);
		datum = OidInputFunctionCall(input, s, ioparam, -1);
	}
	else
	{
		bad_changeset("A value has an unknown kind.");
		return;
	}

	text = OutputFunctionCall(&col->output, datum);
	switch (col->typid)
	{
		case BOOLOID:
			v.type = jbvBool;
			v.val.boolean = DatumGetBool(datum);
			break;
		case INT2OID:
		case INT4OID:
		case INT8OID:
		case NUMERICOID:
		case FLOAT4OID:
		case FLOAT8OID:
			if (strspn(text, "0123456789.-+eE") == strlen(text) && text[0] != '\0')
			{
				v.type = jbvNumeric;
				v.val.numeric = DatumGetNumeric(DirectFunctionCall3(numeric_in,
																	CStringGetDatum(text),
																	ObjectIdGetDatum(InvalidOid),
																	Int32GetDatum(-1)));
				break;
			}
			/* NaN, Infinity: JSON has no number for them */
			/* FALLTHROUGH */
		default:
			v.type = jbvString;
			v.val.string.val = text;
			v.val.string.len = strlen(text);
			break;
	}
	pushJsonbValue(state, WJB_VALUE, &v);
}

/*
 * A row's values (the reader checked how many) as a jsonb object.  'keys':
 * a key (key columns only).
 */
static Jsonb *
read_row(DecRelation *rel, const ImsgCsValue *in, bool keys)
{
	JsonbParseState *state = NULL;
	JsonbValue *res;
	int			i;
	int			nv = 0;

	pushJsonbValue(&state, WJB_BEGIN_OBJECT, NULL);
	for (i = 0; i < rel->ncols; i++)
	{
		JsonbValue	k;

		if (keys && !rel->cols[i].is_key)
			continue;
		k.type = jbvString;
		k.val.string.val = rel->cols[i].name;
		k.val.string.len = strlen(rel->cols[i].name);
		pushJsonbValue(&state, WJB_KEY, &k);
		push_value(&state, &rel->cols[i], &in[nv++]);
	}
	res = pushJsonbValue(&state, WJB_END_OBJECT, NULL);
	return JsonbValueToJsonb(res);
}

/* The key columns of a full row, as a jsonb object. */
static Jsonb *
key_of(DecRelation *rel, Jsonb *row)
{
	JsonbParseState *state = NULL;
	JsonbValue *res;
	int			i;

	pushJsonbValue(&state, WJB_BEGIN_OBJECT, NULL);
	for (i = 0; i < rel->ncols; i++)
	{
		JsonbValue	k;
		JsonbValue *v;

		if (!rel->cols[i].is_key)
			continue;
		k.type = jbvString;
		k.val.string.val = rel->cols[i].name;
		k.val.string.len = strlen(rel->cols[i].name);
		v = getKeyJsonValueFromContainer(&row->root, k.val.string.val,
										 k.val.string.len, NULL);
		pushJsonbValue(&state, WJB_KEY, &k);
		pushJsonbValue(&state, WJB_VALUE, v);
	}
	res = pushJsonbValue(&state, WJB_END_OBJECT, NULL);
	return JsonbValueToJsonb(res);
}

/* Relations declared so far, indexed by their id in the change set. */
typedef struct DecRelations
{
	DecRelation *rels;
	int			size;
} DecRelations;

static void
read_relation(DecRelations *decl, const ImsgCsRecord *rec)
{
	int32		id = rec->rel;
	char	   *schema;
	char	   *name;
	int			ncols = rec->ncols;
	DecRelation *rel;
	int			i;

	if (id >= decl->size)
	{
		int			newsize = Max(id + 1, decl->size * 2);

		decl->rels = repalloc(decl->rels, sizeof(DecRelation) * newsize);
		memset(decl->rels + decl->size, 0, sizeof(DecRelation) * (newsize - decl->size));
		decl->size = newsize;
	}
	rel = &decl->rels[id];
	schema = get_cstring(rec->schema, rec->schema_len);
	name = get_cstring(rec->name, rec->name_len);
	if (ncols > MaxHeapAttributeNumber)
		bad_changeset("A relation has an invalid number of columns.");
	rel->defined = true;
	rel->name = quote_qualified_identifier(schema, name);
	rel->ncols = ncols;
	rel->nkeys = 0;
	rel->cols = palloc0(sizeof(DecColumn) * Max(ncols, 1));
	for (i = 0; i < ncols; i++)
	{
		DecColumn  *col = &rel->cols[i];
		char	   *typname;
		int32		typmod;
		int8		flags;
		bool		isvarlena;

		col->name = get_cstring(rec->cols[i].name, rec->cols[i].name_len);
		typname = get_cstring(rec->cols[i].type, rec->cols[i].type_len);
		flags = rec->cols[i].flags;
		parseTypeString(typname, &col->typid, &typmod, false);
		col->is_key = (flags & IMSG_CS_COL_KEY) != 0;
		if (col->is_key)
			rel->nkeys++;
		getTypeOutputInfo(col->typid, &col->output_fn, &isvarlena);
		fmgr_info(col->output_fn, &col->output);
	}
}

/*
 * imsg_changeset_decode(bytea)
 *	  RETURNS TABLE(ord integer, relation text, op text, key jsonb, new_row jsonb)
 */
Datum
imsg_changeset_decode(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	bytea	   *payload = PG_GETARG_BYTEA_PP(0);

	InitMaterializedSRF(fcinfo, 0);
	decode_rows(rsinfo, VARDATA_ANY(payload), VARSIZE_ANY_EXHDR(payload));
	return (Datum) 0;
}

/*
 * Decode a change set into rsinfo's tuplestore.  The structure is checked
 * first, without looking anything up; then names are resolved and values
 * read by their types' own functions, which report errors of their own
 * (unknown type, bad syntax, short data): those run in a subtransaction
 * and come back as 22P03, like every other flaw of the change set.
 */
static void
decode_rows(ReturnSetInfo *rsinfo, const char *data, Size len)
{
	MemoryContext oldcontext = CurrentMemoryContext;
	ResourceOwner oldowner = CurrentResourceOwner;

	ImsgCsSummary summary;

	/* the framing first, so that a flaw in it is reported as such */
	if (imsg_changeset_summarize(data, len, false, &summary) < 0)
		bad_changeset(summary.why);

	BeginInternalSubTransaction(NULL);
	MemoryContextSwitchTo(oldcontext);
	PG_TRY();
	{
		decode_rows_checked(rsinfo, data, len);
		ReleaseCurrentSubTransaction();
		MemoryContextSwitchTo(oldcontext);
		CurrentResourceOwner = oldowner;
	}
	PG_CATCH();
	{
		ErrorData  *edata;

		MemoryContextSwitchTo(oldcontext);
		edata = CopyErrorData();
		FlushErrorState();
		RollbackAndReleaseCurrentSubTransaction();
		MemoryContextSwitchTo(oldcontext);
		CurrentResourceOwner = oldowner;
		if (edata->sqlerrcode == ERRCODE_QUERY_CANCELED ||
			edata->sqlerrcode == ERRCODE_INVALID_BINARY_REPRESENTATION)
			ReThrowError(edata);
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_BINARY_REPRESENTATION),
				 errmsg("invalid imessages change set"),
				 errdetail("Decoding it failed: %s", edata->message)));
	}
	PG_END_TRY();
}

static void
decode_rows_checked(ReturnSetInfo *rsinfo, const char *data, Size len)
{
	ImsgCsReader reader;
	const ImsgCsRecord *rec;
	DecRelations decl;
	int			ord = 0;

	decl.size = 8;
	decl.rels = palloc0(sizeof(DecRelation) * decl.size);

	imsg_cs_reader_init(&reader, data, len, false);
	while ((rec = imsg_cs_reader_next(&reader)) != NULL)
	{
		DecRelation *rel;
		Datum		values[5];
		bool		nulls[5] = {0};
		Jsonb	   *key = NULL;
		Jsonb	   *row = NULL;
		const char *op;

		CHECK_FOR_INTERRUPTS();
		if (rec->tag == IMSG_CS_RELATION)
		{
			read_relation(&decl, rec);
			continue;
		}
		if (rec->tag == IMSG_CS_STATEMENT)
		{
			/* a DDL statement: op 'DDL', new_row {"search_path", "sql"} */
			StringInfoData js;

			initStringInfo(&js);
			appendStringInfoString(&js, "{\"search_path\": ");
			escape_json(&js, pnstrdup(rec->search_path, rec->search_path_len));
			appendStringInfoString(&js, ", \"sql\": ");
			escape_json(&js, pnstrdup(rec->sql, rec->sql_len));
			appendStringInfoChar(&js, '}');
			values[0] = Int32GetDatum(++ord);
			nulls[1] = true;
			values[2] = CStringGetTextDatum("DDL");
			nulls[3] = true;
			values[4] = DirectFunctionCall1(jsonb_in, CStringGetDatum(js.data));
			tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
			continue;
		}
		rel = &decl.rels[rec->rel];

		if (rec->tag == IMSG_CS_INSERT)
		{
			op = "INSERT";
			row = read_row(rel, rec->values, false);
			key = key_of(rel, row);
		}
		else if (rec->tag == IMSG_CS_UPDATE)
		{
			op = "UPDATE";
			key = read_row(rel, rec->key, true);
			row = read_row(rel, rec->values, false);
		}
		else
		{
			op = "DELETE";
			key = read_row(rel, rec->key, true);
		}

		values[0] = Int32GetDatum(++ord);
		values[1] = CStringGetTextDatum(rel->name);
		values[2] = CStringGetTextDatum(op);
		values[3] = JsonbPGetDatum(key);
		if (row != NULL)
			values[4] = JsonbPGetDatum(row);
		else
			nulls[4] = true;
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	}
	if (reader.why != NULL)
		bad_changeset(reader.why);
	imsg_cs_reader_free(&reader);
}

/*
 * imsg_recent_changesets(n integer DEFAULT 10)
 *	  RETURNS TABLE(seq bigint, origin_pid integer, xid xid8, changes integer,
 *					bytes integer, delivered_at timestamptz, payload bytea)
 *
 * The last n change sets delivered, oldest first.
 */
Datum
imsg_recent_changesets(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	int			n;
	uint64		count;
	uint64		i;

	imsg_check_available();
	if (PG_ARGISNULL(0) || PG_GETARG_INT32(0) < 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("the number of change sets must be 0 or more")));
	n = Min(PG_GETARG_INT32(0), IMSG_RECENT_SLOTS);
	InitMaterializedSRF(fcinfo, 0);

	LWLockAcquire(ImsgRecent->lock, LW_SHARED);
	count = ImsgRecent->count;
	for (i = count - Min((uint64) n, count); i < count; i++)
	{
		ImsgRecentChangeset *slot = &ImsgRecent->slots[i % IMSG_RECENT_SLOTS];
		Datum		values[7];
		bool		nulls[7] = {0};

		values[0] = Int64GetDatum((int64) slot->seq);
		values[1] = Int32GetDatum(slot->origin_pid);
		values[2] = FullTransactionIdGetDatum(FullTransactionIdFromU64(slot->xid));
		values[3] = Int32GetDatum(slot->changes);
		values[4] = Int32GetDatum((int32) slot->bytes);
		values[5] = TimestampTzGetDatum(slot->delivered_at);
		if (slot->has_payload)
		{
			bytea	   *b = palloc(VARHDRSZ + slot->bytes);

			SET_VARSIZE(b, VARHDRSZ + slot->bytes);
			memcpy(VARDATA(b), slot->payload, slot->bytes);
			values[6] = PointerGetDatum(b);
		}
		else
			nulls[6] = true;
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	}
	LWLockRelease(ImsgRecent->lock);
	return (Datum) 0;
}
