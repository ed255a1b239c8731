/*-------------------------------------------------------------------------
 *
 * apply.c
 *	  Apply a change set that another node committed: run by a helper
 *	  backend, in its own transaction.
 *
 * Tables are matched by schema and name, columns by name; a column of
 * another type than on the origin, or a key column missing, refuses the
 * change set.  A column the change set has and the table no longer has,
 * or the reverse, is one a replicated DDL statement (ddl.c) dropped or
 * added after the change set's snapshot: its values are ignored, or the
 * column gets its default, as on the nodes that applied the change set
 * before the statement.  Rows are found by their primary key (the key
 * columns of the 'R' record).  A DDL statement ('S' record) runs at its
 * place among the changes, under the search_path it ran with.
 *
 * Every statement skips a row this node's own transactions wrote, or
 * removed, and whose change set is delivered after the one being applied
 * (see local_writes.c): of two writes of a row, the later-delivered one
 * stays, here as on every other node.  An async change set then puts rows
 * (an INSERT of an existing key updates it, an UPDATE that finds no row
 * inserts it) and removes them (a DELETE that finds none is done).  A sync
 * change set was certified, so a row missing or in the way, with no local
 * write to explain it, is an error: the nodes have diverged, and skipping
 * it would hide that.  An UPDATE that changes the key is a removal of the
 * old row and a put of the new.  The helper runs with session_replication_role = replica, so the
 * capture trigger (an ordinary trigger) does not fire and applied changes
 * are not captured again; constraints and replica triggers still apply.
 *
 * Statements go through SPI with one plan per relation and kind, kept by
 * the helper across change sets (keyed by the statement's text and its
 * parameter types, so a table whose columns changed gets a new one); a
 * kept plan is a cached plan, which PostgreSQL revalidates after DDL on
 * its table.  Preparing them for every change set cost more than applying
 * a small one.
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
#include "common/hashfn.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "lib/stringinfo.h"
#include "miscadmin.h"
#include "nodes/makefuncs.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/hsearch.h"
#include "utils/jsonb.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/rel.h"

#include "changeset_int.h"
#include "changeset_reader.h"

/* A column of an 'R' record, resolved against the local table. */
typedef struct ApplyColumn
{
	char	   *name;
	Oid			typid;
	int32		typmod;
	Oid			ioparam;
	bool		is_key;
	bool		absent;			/* not here (dropped since): its values ignored */
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
	SPIPlanPtr	upsert_plan;
	SPIPlanPtr	update_plan;
	SPIPlanPtr	delete_plan;
} ApplyRel;

static List *apply_rels = NIL;	/* of the change set being applied */

static int64 rows_kept = 0;		/* row writes skipped: a local write won */
static char *ext_schema = NULL;	/* where imsg_remote_wins() lives */

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

/*
 * Read an 'R' record and resolve it against the local table, refusing a
 * table that is missing or whose definition differs.
 */
static void
read_relation(const ImsgCsRecord *rec)
{
	ApplyRel   *r = palloc0(sizeof(ApplyRel));
	Relation	rel;
	TupleDesc	desc;
	Oid			relid;
	int			i;
	int			att;

	r->id = rec->rel;
	r->schema = pnstrdup(rec->schema, rec->schema_len);
	r->name = pnstrdup(rec->name, rec->name_len);
	r->ncols = rec->ncols;
	/* the reader rejects a negative count; the limit is the table's own */
	if (r->ncols > MaxTupleAttributeNumber)
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

		c->name = pnstrdup(rec->cols[i].name, rec->cols[i].name_len);
		typname = pnstrdup(rec->cols[i].type, rec->cols[i].type_len);
		flags = rec->cols[i].flags;
		c->is_key = (flags & IMSG_CS_COL_KEY) != 0;
		if (c->is_key)
			r->nkeys++;

		/*
		 * The local column of the same name.  One the origin has and this
		 * node no longer has, or the reverse, is a column that a DDL
		 * statement delivered between this change set's snapshot and its
		 * position added or dropped (ddl.c): its values are ignored, and a
		 * column the change set lacks gets its default.  A column of
		 * another type is a table that differs.
		 */
		a = NULL;
		for (att = 0; att < desc->natts; att++)
		{
			Form_pg_attribute cand = TupleDescAttr(desc, att);

			if (!cand->attisdropped && strcmp(NameStr(cand->attname), c->name) == 0)
			{
				a = cand;
				break;
			}
		}
		/* a generated column is computed here, from the others */
		if ((a == NULL || a->attgenerated != '\0') && !c->is_key)
		{
			c->absent = true;
			c->typid = TEXTOID;	/* (an unused parameter's type) */
			c->typmod = -1;
			continue;
		}
		local_typname = a ? format_type_be_qualified(a->atttypid) : NULL;
		if (a == NULL || strcmp(local_typname, typname) != 0)
			ereport(ERROR,
					(errcode(ERRCODE_DATATYPE_MISMATCH),
					 errmsg("replicated table \"%s.%s\" differs on this node",
							r->schema, r->name),
					 errdetail("Column \"%s\" is %s on the origin but %s here.",
							   c->name, typname,
							   a ? local_typname : "missing"),
					 errhint("Change replicated tables' definitions with DDL on one node: it runs on every node.")));
		c->typid = a->atttypid;
		c->typmod = a->atttypmod;
		getTypeInputInfo(c->typid, &infunc, &c->ioparam);
		fmgr_info(infunc, &c->input);
		if (flags & IMSG_CS_COL_BINARY)
		{
			getTypeBinaryInputInfo(c->typid, &recvfunc, &c->ioparam);
			fmgr_info(recvfunc, &c->receive);
		}
	}
	if (r->nkeys == 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_BINARY_REPRESENTATION),
				 errmsg("change set describes \"%s.%s\" without a key", r->schema, r->name)));
	table_close(rel, NoLock);	/* keep the lock until commit */
	apply_rels = lappend(apply_rels, r);
}

/*
 * Convert a values list (the reader checked its length) into values/nulls:
 * every column's, or only the key ones'.
 */
static void
read_values(const ImsgCsValue *in, ApplyRel *r, bool keys_only, Datum *values, bool *nulls)
{
	int			i;
	int			k = 0;

	for (i = 0; i < r->ncols; i++)
	{
		ApplyColumn *c = &r->cols[i];
		const ImsgCsValue *v;

		if (keys_only && !c->is_key)
			continue;
		v = &in[k];
		if (v->kind == IMSG_CS_NULL || c->absent)
		{
			values[k] = (Datum) 0;
			nulls[k++] = true;
			continue;
		}
		else if (v->kind == IMSG_CS_TEXT)
		{
			char	   *str = pnstrdup(v->data, v->len);

			values[k] = InputFunctionCall(&c->input, str, c->ioparam, c->typmod);
		}
		else if (OidIsValid(c->receive.fn_oid))
		{
			StringInfoData si;

			initStringInfo(&si);
			appendBinaryStringInfo(&si, v->data, v->len);
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
					 errmsg("change set has a binary value for column \"%s\" of \"%s.%s\", which was described as text",
							c->name, r->schema, r->name)));
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

/* A kept plan: its statement, parameter types and plan. */
typedef struct KeptPlan
{
	uint64		hash;			/* hash key: of the statement and types */
	char	   *sql;
	int			nargs;
	Oid		   *types;
	SPIPlanPtr	plan;
} KeptPlan;

#define IMSG_MAX_KEPT_PLANS	4096	/* past it, all are dropped (DDL churn) */

static HTAB *kept_plans = NULL;

static SPIPlanPtr
prepare_plan(const char *sql, int nargs, Oid *types)
{
	uint64		h;
	KeptPlan   *kp;
	bool		found;
	SPIPlanPtr	plan;

	if (kept_plans == NULL || hash_get_num_entries(kept_plans) >= IMSG_MAX_KEPT_PLANS)
	{
		HASHCTL		ctl;

		if (kept_plans != NULL)
		{
			HASH_SEQ_STATUS seq;

			hash_seq_init(&seq, kept_plans);
			while ((kp = hash_seq_search(&seq)) != NULL)
			{
				SPI_freeplan(kp->plan);
				pfree(kp->sql);
				pfree(kp->types);
			}
			hash_destroy(kept_plans);
		}
		ctl.keysize = sizeof(uint64);
		ctl.entrysize = sizeof(KeptPlan);
		kept_plans = hash_create("imessages apply plans", 64, &ctl, HASH_ELEM | HASH_BLOBS);
	}
	h = hash_bytes_extended((const unsigned char *) sql, strlen(sql), nargs);
	h = hash_combine64(h, hash_bytes_extended((const unsigned char *) types, sizeof(Oid) * nargs, 0));
	kp = hash_search(kept_plans, &h, HASH_FIND, NULL);
	if (kp != NULL && kp->nargs == nargs && strcmp(kp->sql, sql) == 0 &&
		memcmp(kp->types, types, sizeof(Oid) * nargs) == 0)
		return kp->plan;

	/* (an ERROR here, a table that is not there say, leaves no entry) */
	plan = SPI_prepare(sql, nargs, types);
	if (plan == NULL || SPI_keepplan(plan) != 0)
		elog(ERROR, "imessages: could not prepare \"%s\": %s", sql,
			 SPI_result_code_string(SPI_result));
	kp = hash_search(kept_plans, &h, HASH_ENTER, &found);
	if (found)
	{
		/* (a hash collision: the newer statement takes the place) */
		SPI_freeplan(kp->plan);
		pfree(kp->sql);
		pfree(kp->types);
	}
	kp->sql = MemoryContextStrdup(TopMemoryContext, sql);
	kp->nargs = nargs;
	kp->types = MemoryContextAlloc(TopMemoryContext, sizeof(Oid) * Max(nargs, 1));
	memcpy(kp->types, types, sizeof(Oid) * nargs);
	kp->plan = plan;
	return plan;
}

/* Run a plan; the number of rows it changed. */
static uint64
run_plan(SPIPlanPtr plan, Datum *values, bool *nulls, int nargs, int expected_spi,
		 ApplyRel *r, const char *what)
{
	char	   *nullchars = palloc(nargs + 1);
	int			i;
	int			ret;

	for (i = 0; i < nargs; i++)
		nullchars[i] = nulls[i] ? 'n' : ' ';
	nullchars[nargs] = '\0';
	imsg_remote_wins_reset();
	ret = SPI_execute_plan(plan, values, nullchars, false, 0);
	if (ret != expected_spi)
		elog(ERROR, "imessages: %s on \"%s.%s\" failed: %s", what, r->schema, r->name,
			 SPI_result_code_string(ret));
	pfree(nullchars);
	return SPI_processed;
}

/* Did the statement just run skip a row because a local write beats us? */
static bool
local_write_won(void)
{
	bool		called;
	bool		lost;

	imsg_remote_wins_result(&called, &lost);
	if (lost)
		rows_kept++;
	return lost;
}

/* A local removal beats the change set for this absent row. */
static bool
local_removal_won(uint64 row)
{
	if (!imsg_local_removal_wins(row))
		return false;
	rows_kept++;
	return true;
}

/*
 * In a catch-up: one of our own change sets delivered after this one
 * wrote the row (local_writes.c), so it keeps what ours left.
 */
static bool
catch_up_own_won(uint64 row)
{
	if (!imsg_local_writes_catch_up_wins(row))
		return false;
	rows_kept++;
	return true;
}

/* Row writes of the last change set applied that a local write beat. */
int64
imsg_apply_rows_kept(void)
{
	return rows_kept;
}

static void
diverged(ApplyRel *r, const char *what, bool found)
{
	ereport(ERROR,
			(errcode(found ? ERRCODE_UNIQUE_VIOLATION : ERRCODE_NO_DATA_FOUND),
			 errmsg("replicated %s on \"%s.%s\" found %s with its key",
					what, r->schema, r->name, found ? "a row" : "no row"),
			 errdetail("The nodes have diverged.")));
}

/* "schema.imsg_remote_wins(alias.xmin)": the filter of every apply statement */
static void
append_remote_wins(StringInfo sql, const char *alias)
{
	appendStringInfo(sql, "%s.imsg_remote_wins(%s%sxmin)",
					 quote_identifier(ext_schema), alias ? alias : "", alias ? "." : "");
}

static void remove_row(ApplyRel *r, Datum *keys, bool *key_nulls, uint64 row, bool strict);

/* The key columns' values out of a full row's. */
static void
key_values(ApplyRel *r, Datum *values, bool *nulls, Datum *keys, bool *key_nulls)
{
	int			i;
	int			k = 0;

	for (i = 0; i < r->ncols; i++)
		if (r->cols[i].is_key)
		{
			keys[k] = values[i];
			key_nulls[k++] = nulls[i];
		}
}

/*
 * Put a row (identity 'row'): INSERT ... ON CONFLICT (key) DO UPDATE, so
 * that it ends with these values, unless this node's own write of it beats
 * the change set (a version written, or the row removed, by a local
 * transaction delivered after it).  'strict': an existing row that does
 * not beat us means the nodes diverged.
 */
static void
put_row(ApplyRel *r, Datum *values, bool *nulls, uint64 row, bool strict)
{
	bool		called;
	bool		lost;

	if (r->upsert_plan == NULL)
	{
		StringInfoData sql;
		Oid		   *types = palloc(sizeof(Oid) * Max(r->ncols, 1));
		int			i;
		int			k = 0;

		initStringInfo(&sql);
		appendStringInfo(&sql, "INSERT INTO %s AS imsg_target (",
						 quote_qualified_identifier(r->schema, r->name));
		for (i = 0; i < r->ncols; i++)
			if (!r->cols[i].absent)
				appendStringInfo(&sql, "%s%s", k++ > 0 ? ", " : "",
								 quote_identifier(r->cols[i].name));
		/* (an identity key is given: the origin's value) */
		appendStringInfoString(&sql, ") OVERRIDING SYSTEM VALUE VALUES (");
		k = 0;
		for (i = 0; i < r->ncols; i++)
			if (!r->cols[i].absent)
				appendStringInfo(&sql, "%s$%d", k++ > 0 ? ", " : "", i + 1);
		k = 0;
		appendStringInfoString(&sql, ") ON CONFLICT (");
		for (i = 0; i < r->ncols; i++)
			if (r->cols[i].is_key)
				appendStringInfo(&sql, "%s%s", k++ > 0 ? ", " : "",
								 quote_identifier(r->cols[i].name));
		appendStringInfoString(&sql, ") DO UPDATE SET ");
		k = 0;

		/*
		 * Not the key's columns, which are equal (an identity key GENERATED
		 * ALWAYS may only be set to DEFAULT), unless the table has no others
		 */
		for (i = 0; i < r->ncols; i++)
			if (!r->cols[i].absent && !r->cols[i].is_key)
				appendStringInfo(&sql, "%s%s = EXCLUDED.%s", k++ > 0 ? ", " : "",
								 quote_identifier(r->cols[i].name),
								 quote_identifier(r->cols[i].name));
		for (i = 0; k == 0 && i < r->ncols; i++)
			if (r->cols[i].is_key)
				appendStringInfo(&sql, "%s = EXCLUDED.%s",
								 quote_identifier(r->cols[i].name),
								 quote_identifier(r->cols[i].name));
		appendStringInfoString(&sql, " WHERE ");
		append_remote_wins(&sql, "imsg_target");
		r->upsert_plan = prepare_plan(sql.data, r->ncols, column_types(r, false, types));
	}
	(void) run_plan(r->upsert_plan, values, nulls, r->ncols, SPI_OK_INSERT, r, "INSERT");
	imsg_remote_wins_result(&called, &lost);
	if (!called)
	{
		/*
		 * Inserted.  Checked after the insert, not before: a local
		 * transaction removing the row and still running would have
		 * made us wait, and is in the map by now.
		 */
		if (local_removal_won(row))
		{
			Datum	   *keys = palloc(sizeof(Datum) * r->nkeys);
			bool	   *key_nulls = palloc(sizeof(bool) * r->nkeys);

			key_values(r, values, nulls, keys, key_nulls);
			remove_row(r, keys, key_nulls, row, false);
		}
	}
	else if (lost)
		rows_kept++;
	else if (strict)
		diverged(r, "INSERT", true);
}

/*
 * Remove a row by its key, unless a local write beats the change set.
 * 'strict': a row that is absent, and not removed by such a write, means
 * the nodes diverged.
 */
static void
remove_row(ApplyRel *r, Datum *keys, bool *key_nulls, uint64 row, bool strict)
{
	if (r->delete_plan == NULL)
	{
		StringInfoData sql;
		Oid		   *types = palloc(sizeof(Oid) * r->nkeys);

		initStringInfo(&sql);
		appendStringInfo(&sql, "DELETE FROM %s WHERE ",
						 quote_qualified_identifier(r->schema, r->name));
		append_key_match(&sql, r, 1);
		appendStringInfoString(&sql, " AND ");
		append_remote_wins(&sql, NULL);
		r->delete_plan = prepare_plan(sql.data, r->nkeys, column_types(r, true, types));
	}
	if (run_plan(r->delete_plan, keys, key_nulls, r->nkeys, SPI_OK_DELETE, r, "DELETE") > 0 ||
		local_write_won())
		return;
	if (strict && !local_removal_won(row))
		diverged(r, "DELETE", false);
}

static void
apply_insert(const ImsgCsRecord *rec)
{
	ApplyRel   *r = find_rel(rec->rel);
	Datum	   *values = palloc(sizeof(Datum) * Max(r->ncols, 1));
	bool	   *nulls = palloc(sizeof(bool) * Max(r->ncols, 1));

	if (catch_up_own_won(rec->new_row))
		return;
	read_values(rec->values, r, false, values, nulls);
	put_row(r, values, nulls, rec->new_row, !apply_overwrite);
}

static void
apply_update(const ImsgCsRecord *rec)
{
	ApplyRel   *r = find_rel(rec->rel);
	int			nargs = r->ncols + r->nkeys;
	Datum	   *values = palloc(sizeof(Datum) * nargs);
	bool	   *nulls = palloc(sizeof(bool) * nargs);
	uint64		row = rec->row;
	uint64		new_row = rec->new_row;
	bool		strict = !apply_overwrite;

	/* plan parameters: the new values, then the old key */
	read_values(rec->key, r, true, values + r->ncols, nulls + r->ncols);
	read_values(rec->values, r, false, values, nulls);

	/* a new key: the old row goes and the new one comes, each on its own */
	if (row != new_row)
	{
		if (!catch_up_own_won(row))
			remove_row(r, values + r->ncols, nulls + r->ncols, row, strict);
		if (!catch_up_own_won(new_row))
			put_row(r, values, nulls, new_row, strict);
		return;
	}
	if (catch_up_own_won(row))
		return;

	if (r->update_plan == NULL)
	{
		StringInfoData sql;
		Oid		   *types = palloc(sizeof(Oid) * nargs);
		int			i;
		int			k = 0;

		initStringInfo(&sql);
		appendStringInfo(&sql, "UPDATE %s SET ",
						 quote_qualified_identifier(r->schema, r->name));
		for (i = 0; i < r->ncols; i++)
			if (!r->cols[i].absent)
				appendStringInfo(&sql, "%s%s = $%d", k++ > 0 ? ", " : "",
								 quote_identifier(r->cols[i].name), i + 1);
		appendStringInfoString(&sql, " WHERE ");
		append_key_match(&sql, r, r->ncols + 1);
		appendStringInfoString(&sql, " AND ");
		append_remote_wins(&sql, NULL);
		column_types(r, false, types);
		column_types(r, true, types + r->ncols);
		r->update_plan = prepare_plan(sql.data, nargs, types);
	}
	if (run_plan(r->update_plan, values, nulls, nargs, SPI_OK_UPDATE, r, "UPDATE") > 0 ||
		local_write_won() || local_removal_won(row))
		return;
	if (strict)
		diverged(r, "UPDATE", false);
	put_row(r, values, nulls, new_row, false);	/* async: the row ends as sent */
}

static void
apply_delete(const ImsgCsRecord *rec)
{
	ApplyRel   *r = find_rel(rec->rel);
	Datum	   *values = palloc(sizeof(Datum) * Max(r->nkeys, 1));
	bool	   *nulls = palloc(sizeof(bool) * Max(r->nkeys, 1));

	if (catch_up_own_won(rec->row))
		return;
	read_values(rec->key, r, true, values, nulls);
	remove_row(r, values, nulls, rec->row, !apply_overwrite);
}

/*
 * Run a DDL statement of the origin (ddl.c) under the search_path it ran
 * with there, restored after it.  The 'R' records after it describe the
 * tables as it left them.
 */
static void
apply_statement(const ImsgCsRecord *rec)
{
	char	   *search_path = pnstrdup(rec->search_path, rec->search_path_len);
	char	   *sql = pnstrdup(rec->sql, rec->sql_len);
	int			save_nestlevel = NewGUCNestLevel();
	int			ret;

	(void) set_config_option("search_path", search_path, PGC_USERSET, PGC_S_SESSION,
							 GUC_ACTION_SAVE, true, 0, false);
	if (rec->stmt_flags & IMSG_CS_STMT_REPLICATE)
	{
		/* imsg_replicate() or imsg_unreplicate() of the origin: a document */
		Oid			argtypes[1] = {JSONBOID};
		Datum		args[1];

		args[0] = DirectFunctionCall1(jsonb_in, CStringGetDatum(sql));
		ret = SPI_execute_with_args(psprintf("SELECT %s.imsg_apply_replicate($1)",
											 quote_identifier(ext_schema)),
									1, argtypes, args, NULL, false, 0);
	}
	else
		ret = SPI_execute(sql, false, 0);
	if (ret < 0)
		elog(ERROR, "imessages: replicated statement failed: %s", SPI_result_code_string(ret));
	AtEOXact_GUC(true, save_nestlevel);
	pfree(search_path);
	pfree(sql);
}

/*
 * Apply a change set in the current transaction (SPI connected by the
 * caller).  ERROR on anything wrong; the caller rolls back and reports.
 * Returns the number of changes applied.
 */
int64
imsg_apply_changeset(const char *data, Size len, bool overwrite, uint64 seq)
{
	ImsgCsReader reader;
	const ImsgCsRecord *rec;

	apply_rels = NIL;
	apply_overwrite = overwrite;
	rows_kept = 0;
	if (ext_schema == NULL)
		ext_schema = MemoryContextStrdup(TopMemoryContext, imsg_extension_schema_name());
	imsg_local_writes_applying(seq);

	/*
	 * One read: each record is applied as the reader yields it.  A
	 * malformed record later on is an ERROR that rolls back the changes
	 * applied before it, with the rest of the transaction.
	 */
	imsg_cs_reader_init(&reader, data, len, true);
	while ((rec = imsg_cs_reader_next(&reader)) != NULL)
	{
		CHECK_FOR_INTERRUPTS();
		switch (rec->tag)
		{
			case IMSG_CS_RELATION:
				read_relation(rec);
				break;
			case IMSG_CS_INSERT:
				apply_insert(rec);
				break;
			case IMSG_CS_UPDATE:
				apply_update(rec);
				break;
			case IMSG_CS_DELETE:
				apply_delete(rec);
				break;
			case IMSG_CS_STATEMENT:
				apply_statement(rec);
				break;
		}
	}
	if (reader.why != NULL)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_BINARY_REPRESENTATION),
				 errmsg("the change set is malformed"),
				 errdetail("%s", reader.why)));
	imsg_local_writes_applying(0);
	apply_rels = NIL;
	imsg_cs_reader_free(&reader);
	return reader.changes;
}
