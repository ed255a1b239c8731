/*-------------------------------------------------------------------------
 *
 * apply.c
 *	  Apply a change set that another node committed: run by a helper
 *	  backend, in its own transaction.
 *
 * Tables are matched by schema and name; each must have the same live
 * columns (names and types, in order) as on the origin, or the change set
 * is refused: nodes start from identical definitions (see README).  Rows
 * are found by their primary key (the key columns of the 'R' record).  An
 * UPDATE or DELETE that finds no row, or an INSERT that hits an existing
 * key, is an error: the nodes have diverged, and skipping it would hide
 * that.  The helper runs with session_replication_role = replica, so the
 * capture trigger (an ordinary trigger) does not fire and applied changes
 * are not captured again; constraints and replica triggers still apply.
 *
 * Statements go through SPI with one plan per relation and kind, prepared
 * the first time a change set uses it (plans last one change set).
 *
 * Copyright (c) 2026, imessages developers
 *
 * IDENTIFICATION
 *	  src/apply.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "access/relation.h"
#include "access/table.h"
#include "catalog/namespace.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "lib/stringinfo.h"
#include "nodes/makefuncs.h"
#include "utils/builtins.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/rel.h"

#include "imessages_int.h"

/* A column of an 'R' record, resolved against the local table. */
typedef struct ApplyColumn
{
	char	   *name;
	Oid			typid;
	int32		typmod;
	Oid			ioparam;
	bool		is_key;
	FmgrInfo	input;			/* for text values */
	FmgrInfo	receive;		/* for binary values */
} ApplyColumn;

/* A relation of the change set being applied ('R' record id -> this). */
typedef struct ApplyRel
{
	int32		id;
	char	   *schema;
	char	   *name;
	int			ncols;
	int			nkeys;
	ApplyColumn *cols;
	SPIPlanPtr	insert_plan;
	SPIPlanPtr	upsert_plan;
	SPIPlanPtr	update_plan;
	SPIPlanPtr	delete_plan;
} ApplyRel;

static List *apply_rels = NIL;	/* of the change set being applied */

/*
 * Overwrite mode, for async change sets (last writer wins): an INSERT of an
 * existing key updates the row, an UPDATE that finds no row inserts the new
 * one, a DELETE that finds none is done.  Otherwise (sync change sets,
 * certified) a missing or existing row is an error: the nodes diverged.
 */
static bool apply_overwrite = false;

static ApplyRel *
find_rel(int32 id)
{
	ListCell   *lc;

	foreach(lc, apply_rels)
	{
		ApplyRel   *r = lfirst(lc);

		if (r->id == id)
			return r;
	}
	ereport(ERROR,
			(errcode(ERRCODE_INVALID_BINARY_REPRESENTATION),
			 errmsg("change set refers to relation %d before describing it", id)));
	return NULL;				/* keep compiler quiet */
}

static char *
get_cstring(ImsgBuffer *in)
{
	uint32		len;
	const char *p = ImsgBufferGetString(in, &len);

	return pnstrdup(p, len);
}

/*
 * Read an 'R' record and resolve it against the local table, refusing a
 * table that is missing or whose definition differs.
 */
static void
read_relation(ImsgBuffer *in)
{
	ApplyRel   *r = palloc0(sizeof(ApplyRel));
	Relation	rel;
	TupleDesc	desc;
	Oid			relid;
	int			nlive = 0;
	int			i;
	int			att;

	r->id = ImsgBufferGetInt32(in);
	r->schema = get_cstring(in);
	r->name = get_cstring(in);
	r->ncols = ImsgBufferGetInt16(in);
	if (r->ncols < 0 || r->ncols > MaxTupleAttributeNumber)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_BINARY_REPRESENTATION),
				 errmsg("change set describes relation \"%s.%s\" with %d columns",
						r->schema, r->name, r->ncols)));
	r->cols = palloc0(sizeof(ApplyColumn) * Max(r->ncols, 1));

	relid = get_relname_relid(r->name, get_namespace_oid(r->schema, true));
	if (!OidIsValid(relid))
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_TABLE),
				 errmsg("replicated table \"%s.%s\" does not exist on this node",
						r->schema, r->name),
				 errhint("Every node needs the same replicated tables; create it with the same definition.")));

	rel = table_open(relid, RowExclusiveLock);
	desc = RelationGetDescr(rel);
	att = 0;
	for (i = 0; i < r->ncols; i++)
	{
		ApplyColumn *c = &r->cols[i];
		char	   *typname;
		char	   *local_typname;
		int8		flags;
		Oid			infunc;
		Oid			recvfunc;
		Form_pg_attribute a = NULL;

		c->name = get_cstring(in);
		typname = get_cstring(in);
		flags = ImsgBufferGetInt8(in);
		c->is_key = (flags & IMSG_CS_COL_KEY) != 0;
		if (c->is_key)
			r->nkeys++;

		/* the next live local column must be this one */
		while (att < desc->natts && TupleDescAttr(desc, att)->attisdropped)
			att++;
		if (att < desc->natts)
			a = TupleDescAttr(desc, att++);
		local_typname = a ? format_type_be_qualified(a->atttypid) : NULL;
		if (a == NULL || strcmp(NameStr(a->attname), c->name) != 0 ||
			strcmp(local_typname, typname) != 0)
			ereport(ERROR,
					(errcode(ERRCODE_DATATYPE_MISMATCH),
					 errmsg("replicated table \"%s.%s\" differs on this node",
							r->schema, r->name),
					 errdetail("Column %d is \"%s\" %s on the origin but %s here.",
							   i + 1, c->name, typname,
							   a ? psprintf("\"%s\" %s", NameStr(a->attname), local_typname) :
							   "missing"),
					 errhint("Nodes must start with identical table definitions.")));
		c->typid = a->atttypid;
		c->typmod = a->atttypmod;
		getTypeInputInfo(c->typid, &infunc, &c->ioparam);
		fmgr_info(infunc, &c->input);
		if (flags & IMSG_CS_COL_BINARY)
		{
			getTypeBinaryInputInfo(c->typid, &recvfunc, &c->ioparam);
			fmgr_info(recvfunc, &c->receive);
		}
		nlive++;
	}
	while (att < desc->natts && TupleDescAttr(desc, att)->attisdropped)
		att++;
	if (att < desc->natts)
		ereport(ERROR,
				(errcode(ERRCODE_DATATYPE_MISMATCH),
				 errmsg("replicated table \"%s.%s\" differs on this node",
						r->schema, r->name),
				 errdetail("It has more columns here than on the origin (%d).", nlive),
				 errhint("Nodes must start with identical table definitions.")));
	if (r->nkeys == 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_BINARY_REPRESENTATION),
				 errmsg("change set describes \"%s.%s\" without a key", r->schema, r->name)));
	table_close(rel, NoLock);	/* keep the lock until commit */
	apply_rels = lappend(apply_rels, r);
}

/*
 * Read a values list into values/nulls at the positions of the columns it
 * covers: every column, or only the key ones.
 */
static void
read_values(ImsgBuffer *in, ApplyRel *r, bool keys_only, Datum *values, bool *nulls)
{
	int			n = ImsgBufferGetInt16(in);
	int			expected = keys_only ? r->nkeys : r->ncols;
	int			i;
	int			k = 0;

	if (n != expected)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_BINARY_REPRESENTATION),
				 errmsg("change set has %d values for \"%s.%s\", expected %d",
						n, r->schema, r->name, expected)));
	for (i = 0; i < r->ncols; i++)
	{
		ApplyColumn *c = &r->cols[i];
		int8		tag;

		if (keys_only && !c->is_key)
			continue;
		tag = ImsgBufferGetInt8(in);
		if (tag == IMSG_CS_NULL)
		{
			values[k] = (Datum) 0;
			nulls[k++] = true;
			continue;
		}
		else if (tag == IMSG_CS_TEXT)
		{
			char	   *s = get_cstring(in);

			values[k] = InputFunctionCall(&c->input, s, c->ioparam, c->typmod);
		}
		else if (tag == IMSG_CS_BINARY && OidIsValid(c->receive.fn_oid))
		{
			StringInfoData si;
			uint32		len;
			const char *p = ImsgBufferGetString(in, &len);

			initStringInfo(&si);
			appendBinaryStringInfo(&si, p, len);
			values[k] = ReceiveFunctionCall(&c->receive, &si, c->ioparam, c->typmod);
			if (si.cursor != si.len)
				ereport(ERROR,
						(errcode(ERRCODE_INVALID_BINARY_REPRESENTATION),
						 errmsg("incorrect binary data format in column \"%s\" of \"%s.%s\"",
								c->name, r->schema, r->name)));
		}
		else
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_BINARY_REPRESENTATION),
					 errmsg("change set has a value of unknown form '%c'", tag)));
		nulls[k++] = false;
	}
}

/* The types of the columns covered by a values list, for SPI_prepare. */
static Oid *
column_types(ApplyRel *r, bool keys_only, Oid *types)
{
	int			i;
	int			k = 0;

	for (i = 0; i < r->ncols; i++)
		if (!keys_only || r->cols[i].is_key)
			types[k++] = r->cols[i].typid;
	return types;
}

/* "k1 = $first AND k2 = $first+1 ..." */
static void
append_key_match(StringInfo sql, ApplyRel *r, int first)
{
	int			i;
	int			k = 0;

	for (i = 0; i < r->ncols; i++)
	{
		if (!r->cols[i].is_key)
			continue;
		appendStringInfo(sql, "%s%s = $%d", k > 0 ? " AND " : "",
						 quote_identifier(r->cols[i].name), first + k);
		k++;
	}
}

static SPIPlanPtr
prepare_plan(const char *sql, int nargs, Oid *types)
{
	SPIPlanPtr	plan = SPI_prepare(sql, nargs, types);

	if (plan == NULL)
		elog(ERROR, "imessages: could not prepare \"%s\": %s", sql,
			 SPI_result_code_string(SPI_result));
	return plan;
}

static bool
run_plan(SPIPlanPtr plan, Datum *values, bool *nulls, int nargs, int expected_spi,
		 ApplyRel *r, const char *what)
{
	char	   *nullchars = palloc(nargs + 1);
	int			i;
	int			ret;

	for (i = 0; i < nargs; i++)
		nullchars[i] = nulls[i] ? 'n' : ' ';
	nullchars[nargs] = '\0';
	ret = SPI_execute_plan(plan, values, nullchars, false, 0);
	if (ret != expected_spi)
		elog(ERROR, "imessages: %s on \"%s.%s\" failed: %s", what, r->schema, r->name,
			 SPI_result_code_string(ret));
	if (SPI_processed != 1 && apply_overwrite)
		return false;
	if (SPI_processed != 1)
		ereport(ERROR,
				(errcode(ERRCODE_NO_DATA_FOUND),
				 errmsg("replicated %s on \"%s.%s\" found no row with its key",
						what, r->schema, r->name),
				 errdetail("The nodes have diverged.")));
	return true;
}

/* INSERT ... ON CONFLICT (key) DO UPDATE: the row ends with these values. */
static void
upsert_row(ApplyRel *r, Datum *values, bool *nulls)
{
	if (r->upsert_plan == NULL)
	{
		StringInfoData sql;
		Oid		   *types = palloc(sizeof(Oid) * Max(r->ncols, 1));
		int			i;
		int			k = 0;

		initStringInfo(&sql);
		appendStringInfo(&sql, "INSERT INTO %s VALUES (",
						 quote_qualified_identifier(r->schema, r->name));
		for (i = 0; i < r->ncols; i++)
			appendStringInfo(&sql, "%s$%d", i > 0 ? ", " : "", i + 1);
		appendStringInfoString(&sql, ") ON CONFLICT (");
		for (i = 0; i < r->ncols; i++)
			if (r->cols[i].is_key)
				appendStringInfo(&sql, "%s%s", k++ > 0 ? ", " : "",
								 quote_identifier(r->cols[i].name));
		appendStringInfoString(&sql, ") DO UPDATE SET ");
		for (i = 0; i < r->ncols; i++)
			appendStringInfo(&sql, "%s%s = EXCLUDED.%s", i > 0 ? ", " : "",
							 quote_identifier(r->cols[i].name),
							 quote_identifier(r->cols[i].name));
		r->upsert_plan = prepare_plan(sql.data, r->ncols, column_types(r, false, types));
	}
	(void) run_plan(r->upsert_plan, values, nulls, r->ncols, SPI_OK_INSERT, r, "INSERT");
}

static void
apply_insert(ImsgBuffer *in)
{
	ApplyRel   *r = find_rel(ImsgBufferGetInt32(in));
	Datum	   *values = palloc(sizeof(Datum) * Max(r->ncols, 1));
	bool	   *nulls = palloc(sizeof(bool) * Max(r->ncols, 1));

	read_values(in, r, false, values, nulls);
	if (apply_overwrite)
	{
		upsert_row(r, values, nulls);
		return;
	}
	if (r->insert_plan == NULL)
	{
		StringInfoData sql;
		Oid		   *types = palloc(sizeof(Oid) * Max(r->ncols, 1));
		int			i;

		initStringInfo(&sql);
		appendStringInfo(&sql, "INSERT INTO %s VALUES (",
						 quote_qualified_identifier(r->schema, r->name));
		for (i = 0; i < r->ncols; i++)
			appendStringInfo(&sql, "%s$%d", i > 0 ? ", " : "", i + 1);
		appendStringInfoChar(&sql, ')');
		r->insert_plan = prepare_plan(sql.data, r->ncols, column_types(r, false, types));
	}
	(void) run_plan(r->insert_plan, values, nulls, r->ncols, SPI_OK_INSERT, r, "INSERT");
}

static void
apply_update(ImsgBuffer *in)
{
	ApplyRel   *r = find_rel(ImsgBufferGetInt32(in));
	int			nargs = r->ncols + r->nkeys;
	Datum	   *values = palloc(sizeof(Datum) * nargs);
	bool	   *nulls = palloc(sizeof(bool) * nargs);

	/* plan parameters: the new values, then the old key */
	read_values(in, r, true, values + r->ncols, nulls + r->ncols);
	read_values(in, r, false, values, nulls);
	if (r->update_plan == NULL)
	{
		StringInfoData sql;
		Oid		   *types = palloc(sizeof(Oid) * nargs);
		int			i;

		initStringInfo(&sql);
		appendStringInfo(&sql, "UPDATE %s SET ",
						 quote_qualified_identifier(r->schema, r->name));
		for (i = 0; i < r->ncols; i++)
			appendStringInfo(&sql, "%s%s = $%d", i > 0 ? ", " : "",
							 quote_identifier(r->cols[i].name), i + 1);
		appendStringInfoString(&sql, " WHERE ");
		append_key_match(&sql, r, r->ncols + 1);
		column_types(r, false, types);
		column_types(r, true, types + r->ncols);
		r->update_plan = prepare_plan(sql.data, nargs, types);
	}
	if (!run_plan(r->update_plan, values, nulls, nargs, SPI_OK_UPDATE, r, "UPDATE"))
		upsert_row(r, values, nulls);	/* overwrite mode: the row ends as sent */
}

static void
apply_delete(ImsgBuffer *in)
{
	ApplyRel   *r = find_rel(ImsgBufferGetInt32(in));
	Datum	   *values = palloc(sizeof(Datum) * r->nkeys);
	bool	   *nulls = palloc(sizeof(bool) * r->nkeys);

	read_values(in, r, true, values, nulls);
	if (r->delete_plan == NULL)
	{
		StringInfoData sql;
		Oid		   *types = palloc(sizeof(Oid) * r->nkeys);

		initStringInfo(&sql);
		appendStringInfo(&sql, "DELETE FROM %s WHERE ",
						 quote_qualified_identifier(r->schema, r->name));
		append_key_match(&sql, r, 1);
		r->delete_plan = prepare_plan(sql.data, r->nkeys, column_types(r, true, types));
	}
	(void) run_plan(r->delete_plan, values, nulls, r->nkeys, SPI_OK_DELETE, r, "DELETE");
}

/*
 * Apply a change set in the current transaction (SPI connected by the
 * caller).  ERROR on anything wrong; the caller rolls back and reports.
 * Returns the number of changes applied.
 */
int64
imsg_apply_changeset(const char *data, Size len, bool overwrite)
{
	ImsgBuffer	in;
	int64		changes = 0;

	apply_rels = NIL;
	apply_overwrite = overwrite;
	ImsgBufferInitReader(&in, data, len);
	if (ImsgBufferGetInt32(&in) != (int32) IMSG_CS_MAGIC ||
		ImsgBufferGetInt8(&in) != IMSG_CS_VERSION)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_BINARY_REPRESENTATION),
				 errmsg("not an imessages change set")));
	while (ImsgBufferRemaining(&in) > 0)
	{
		int8		tag = ImsgBufferGetInt8(&in);

		switch (tag)
		{
			case IMSG_CS_RELATION:
				read_relation(&in);
				break;
			case IMSG_CS_INSERT:
				apply_insert(&in);
				changes++;
				break;
			case IMSG_CS_UPDATE:
				apply_update(&in);
				changes++;
				break;
			case IMSG_CS_DELETE:
				apply_delete(&in);
				changes++;
				break;
			default:
				ereport(ERROR,
						(errcode(ERRCODE_INVALID_BINARY_REPRESENTATION),
						 errmsg("change set has a record of unknown kind '%c'", tag)));
		}
	}
	apply_rels = NIL;
	return changes;
}
