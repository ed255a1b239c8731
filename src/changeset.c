/*-------------------------------------------------------------------------
 *
 * changeset.c
 *	  Change-set capture: a transaction's row changes on replicated tables,
 *	  collected by a trigger and sent to the manager at commit.
 *
 * imsg_capture() is an AFTER ... FOR EACH ROW trigger.  It appends each
 * change to a change set kept in this backend's memory for the top-level
 * transaction (see "Change-set format" in imessages_int.h).  A savepoint
 * that rolls back truncates the change set back to where it was when the
 * savepoint first captured something.
 *
 * At PRE_COMMIT the change set goes to the manager as one message, in
 * parts if it is large (mailbox_large.c), so that any size fits through
 * the area.  PRE_COMMIT is not the commit: the transaction can still fail
 * before its commit record is written.  So the manager never trusts the
 * change set's arrival; it asks the commit log whether the transaction's
 * xid committed before it counts the change set as delivered (see
 * manager_own.c).  Our COMMIT and ABORT callbacks only set the manager's
 * latch, which cannot fail.
 *
 * imessages.commit_mode = 'sync' makes PRE_COMMIT wait, up to
 * imessages.commit_timeout, until the manager reports that the group
 * delivered the change set in its total order; an expired wait is an ERROR,
 * which aborts the transaction.
 *
 * Copyright (c) 2026, imessages developers
 *
 * IDENTIFICATION
 *	  src/changeset.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/heapam.h"
#include "access/htup_details.h"
#include "access/sysattr.h"
#include "access/table.h"
#include "access/tableam.h"
#include "access/xact.h"
#include "catalog/pg_type.h"
#include "commands/trigger.h"
#include "executor/executor.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "nodes/bitmapset.h"
#include "storage/latch.h"
#include "storage/proc.h"
#include "utils/acl.h"
#include "utils/builtins.h"
#include "utils/hsearch.h"
#include "utils/inval.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/rel.h"
#include "utils/relcache.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"
#include "utils/wait_event.h"

#include "replication_int.h"
#include "changeset_int.h"
#include "changeset_reader.h"
#include "mailbox_large.h"

PG_FUNCTION_INFO_V1(imsg_capture);
PG_FUNCTION_INFO_V1(imsg_refuse_truncate);
PG_FUNCTION_INFO_V1(imsg_capture_replicate);

/* How one column's values are written. */
typedef struct ColumnInfo
{
	bool		dropped;
	bool		is_key;
	bool		binary;			/* send/recv form, else text */
	FmgrInfo	out;			/* typsend or typoutput */
} ColumnInfo;

/*
 * What capture needs to know of a relation, kept for the session: the
 * output function of each column and the body of its 'R' record.  Built
 * from the catalogs on first use; a relcache invalidation marks it stale,
 * and the next use rebuilds it with a new version number.
 */
typedef struct CachedRel
{
	Oid			relid;			/* hash key */
	bool		valid;
	uint32		version;
	MemoryContext context;		/* holds cols and descr */
	int			natts;
	ColumnInfo *cols;
	char	   *descr;			/* 'R' record after the relation id */
	uint32		descr_len;
} CachedRel;

/* A relation as this transaction's change set knows it. */
typedef struct RelInfo
{
	Oid			relid;			/* hash key */
	int32		local_id;		/* id inside the change set */
	bool		described;		/* its 'R' record is in the buffer */
	uint32		described_at;	/* buffer offset of that record */
	uint32		described_version;	/* CachedRel version it describes */
} RelInfo;

static HTAB *rel_cache = NULL;
static MemoryContext rel_cache_context = NULL;

/* Where to truncate the change set if a subtransaction aborts. */
typedef struct CaptureMark
{
	uint32		len;
	int32		nchanges;
} CaptureMark;

static MemoryContext cs_context = NULL;	/* child of TopTransactionContext */
static ImsgBuffer cs_buf;
static int32 cs_nchanges = 0;
static HTAB *cs_rels = NULL;
static int32 cs_next_local_id = 0;
static ImsgNestMarks cs_marks;
static CaptureMark cs_mark_payload[IMSG_MAX_NEST_MARKS];
static bool cs_sent = false;	/* sent at PRE_COMMIT: wake the manager at the end */
static bool cs_has_statement = false;	/* a DDL statement: certified (sync) */

/*
 * Types written in binary send/recv form: built-in ones (same OIDs on every
 * PostgreSQL 15 node), except composites, whose binary form embeds column
 * type OIDs of their own.  Everything else travels as text.
 */
static bool
imsg_type_is_portable_binary(Oid typid)
{
	Oid			elem;

	if (typid >= FirstGenbkiObjectId || type_is_rowtype(typid))
		return false;
	elem = get_element_type(typid);
	return !OidIsValid(elem) || imsg_type_is_portable_binary(elem);
}

static void
imsg_cs_reset(void)
{
	cs_context = NULL;			/* freed with TopTransactionContext */
	cs_rels = NULL;
	cs_nchanges = 0;
	cs_next_local_id = 0;
	cs_marks.count = 0;
	cs_has_statement = false;
	memset(&cs_buf, 0, sizeof(cs_buf));
}

static void
imsg_cs_start(void)
{
	HASHCTL		ctl;
	MemoryContext old;

	cs_context = AllocSetContextCreate(TopTransactionContext,
									   "imessages change set",
									   ALLOCSET_DEFAULT_SIZES);
	old = MemoryContextSwitchTo(cs_context);
	ImsgBufferInitGrowable(&cs_buf, 8192, MaxAllocSize);
	ImsgBufferPutInt32(&cs_buf, IMSG_CS_MAGIC);
	ImsgBufferPutInt8(&cs_buf, IMSG_CS_VERSION);
	ctl.keysize = sizeof(Oid);
	ctl.entrysize = sizeof(RelInfo);
	ctl.hcxt = cs_context;
	cs_rels = hash_create("imessages change set relations", 16, &ctl,
						  HASH_ELEM | HASH_BLOBS | HASH_CONTEXT);
	MemoryContextSwitchTo(old);
}

/* Relcache invalidation: the relation's definition may have changed. */
static void
imsg_cs_relcache_callback(Datum arg, Oid relid)
{
	HASH_SEQ_STATUS seq;
	CachedRel  *cr;

	if (rel_cache == NULL)
		return;
	if (OidIsValid(relid))
	{
		cr = hash_search(rel_cache, &relid, HASH_FIND, NULL);
		if (cr != NULL)
			cr->valid = false;
		return;
	}
	hash_seq_init(&seq, rel_cache);
	while ((cr = hash_seq_search(&seq)) != NULL)
		cr->valid = false;
}

/* The session's description of 'rel', built or rebuilt as needed. */
static CachedRel *
imsg_cs_cached_relation(Relation rel)
{
	Oid			relid = RelationGetRelid(rel);
	TupleDesc	desc = RelationGetDescr(rel);
	CachedRel  *cr;
	bool		found;
	Bitmapset  *pk;
	ImsgBuffer	d;
	MemoryContext old;
	const char *nsp;
	const char *name;
	int			nlive = 0;
	int			i;

	if (rel_cache == NULL)
	{
		HASHCTL		ctl;

		rel_cache_context = AllocSetContextCreate(TopMemoryContext,
												  "imessages capture relations",
												  ALLOCSET_SMALL_SIZES);
		ctl.keysize = sizeof(Oid);
		ctl.entrysize = sizeof(CachedRel);
		ctl.hcxt = rel_cache_context;
		rel_cache = hash_create("imessages capture relations", 16, &ctl,
								HASH_ELEM | HASH_BLOBS | HASH_CONTEXT);
		CacheRegisterRelcacheCallback(imsg_cs_relcache_callback, (Datum) 0);
	}
	cr = hash_search(rel_cache, &relid, HASH_ENTER, &found);
	if (found && cr->valid)
		return cr;
	if (!found)
	{
		cr->version = 0;
		cr->context = NULL;
	}

	if (!OidIsValid(RelationGetPrimaryKeyIndex(rel)))
	{
		cr->valid = false;
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("replicated table \"%s\" has no primary key",
						RelationGetRelationName(rel)),
				 errhint("imessages identifies rows by an immediate (not deferrable) primary key; add one, or call imsg_unreplicate().")));
	}

	if (cr->context != NULL)
		MemoryContextDelete(cr->context);
	cr->context = AllocSetContextCreate(rel_cache_context, "imessages capture relation",
										ALLOCSET_SMALL_SIZES);
	old = MemoryContextSwitchTo(cr->context);

	pk = RelationGetIndexAttrBitmap(rel, INDEX_ATTR_BITMAP_PRIMARY_KEY);
	cr->natts = desc->natts;
	cr->cols = palloc0(sizeof(ColumnInfo) * desc->natts);
	for (i = 0; i < desc->natts; i++)
	{
		Form_pg_attribute att = TupleDescAttr(desc, i);
		ColumnInfo *col = &cr->cols[i];
		Oid			fn;
		bool		isvarlena;

		col->dropped = att->attisdropped;
		if (col->dropped)
			continue;
		nlive++;
		col->is_key = bms_is_member(att->attnum - FirstLowInvalidHeapAttributeNumber, pk);
		col->binary = imsg_type_is_portable_binary(att->atttypid);
		if (col->binary)
			getTypeBinaryOutputInfo(att->atttypid, &fn, &isvarlena);
		else
			getTypeOutputInfo(att->atttypid, &fn, &isvarlena);
		fmgr_info_cxt(fn, &col->out, cr->context);
	}

	/* the 'R' record's body: schema, name, then each live column */
	nsp = get_namespace_name(RelationGetNamespace(rel));
	name = RelationGetRelationName(rel);
	ImsgBufferInitGrowable(&d, 256, MaxAllocSize);
	ImsgBufferPutString(&d, nsp, strlen(nsp));
	ImsgBufferPutString(&d, name, strlen(name));
	ImsgBufferPutInt16(&d, nlive);
	for (i = 0; i < cr->natts; i++)
	{
		Form_pg_attribute att = TupleDescAttr(desc, i);
		char	   *typname;

		if (cr->cols[i].dropped)
			continue;
		typname = format_type_be_qualified(att->atttypid);
		ImsgBufferPutString(&d, NameStr(att->attname), strlen(NameStr(att->attname)));
		ImsgBufferPutString(&d, typname, strlen(typname));
		ImsgBufferPutInt8(&d, (cr->cols[i].is_key ? IMSG_CS_COL_KEY : 0) |
						  (cr->cols[i].binary ? IMSG_CS_COL_BINARY : 0));
	}
	cr->descr = d.data;
	cr->descr_len = d.len;
	MemoryContextSwitchTo(old);

	cr->version++;
	cr->valid = true;
	return cr;
}

/*
 * This transaction's entry for the relation, with an 'R' record for the
 * current definition written into the change set if it has none yet.
 */
static RelInfo *
imsg_cs_relation(CachedRel *cr)
{
	RelInfo    *ri;
	bool		found;

	ri = hash_search(cs_rels, &cr->relid, HASH_ENTER, &found);
	if (!found)
	{
		ri->local_id = cs_next_local_id++;
		ri->described = false;
	}
	if (!ri->described || ri->described_version != cr->version)
	{
		ri->described_at = cs_buf.len;
		ImsgBufferPutInt8(&cs_buf, IMSG_CS_RELATION);
		ImsgBufferPutInt32(&cs_buf, ri->local_id);
		ImsgBufferPutBytes(&cs_buf, cr->descr, cr->descr_len);
		ri->described = true;
		ri->described_version = cr->version;
	}
	return ri;
}

/* The columns of 'tuple' (only the key ones if keys_only). */
static void
imsg_cs_put_values(CachedRel *ri, TupleDesc desc, HeapTuple tuple, bool keys_only)
{
	int			i;
	int			n = 0;

	for (i = 0; i < ri->natts; i++)
		if (!ri->cols[i].dropped && (!keys_only || ri->cols[i].is_key))
			n++;
	ImsgBufferPutInt16(&cs_buf, n);

	for (i = 0; i < ri->natts; i++)
	{
		ColumnInfo *col = &ri->cols[i];
		Datum		value;
		bool		isnull;

		if (col->dropped || (keys_only && !col->is_key))
			continue;
		value = heap_getattr(tuple, i + 1, desc, &isnull);
		if (isnull)
			ImsgBufferPutInt8(&cs_buf, IMSG_CS_NULL);
		else if (col->binary)
		{
			bytea	   *b = SendFunctionCall(&col->out, value);

			ImsgBufferPutInt8(&cs_buf, IMSG_CS_BINARY);
			ImsgBufferPutString(&cs_buf, VARDATA(b), VARSIZE(b) - VARHDRSZ);
			pfree(b);
		}
		else
		{
			char	   *s = OutputFunctionCall(&col->out, value);

			ImsgBufferPutInt8(&cs_buf, IMSG_CS_TEXT);
			ImsgBufferPutString(&cs_buf, s, strlen(s));
			pfree(s);
		}
	}
}

/* Remember where this subtransaction level started capturing. */
static void
imsg_cs_mark(void)
{
	int			i = imsg_nest_mark_push(&cs_marks, "changes to replicated tables are",
										"change replicated tables");

	if (i >= 0)
	{
		cs_mark_payload[i].len = cs_buf.len;
		cs_mark_payload[i].nchanges = cs_nchanges;
	}
}

/*
 * imsg_capture(): AFTER INSERT OR UPDATE OR DELETE FOR EACH ROW.
 */
/*
 * A node that is not synced with its group (catching up, cut off, refused)
 * accepts no write to a replicated table: it would commit on data that may
 * be stale.  Checked at a transaction's first captured row; reads are not
 * checked.  A group of one (imessages.gcs = local) is always synced.
 */
static void
check_node_synced(void)
{
	ImsgManagerShared *st = ImsgManagerState;
	ImsgNodeState state;
	uint64		applied;
	uint64		group_position;
	char		detail[sizeof(st->state_detail)];

	if (imsg_gcs_ops()->single_node)
		return;
	state = (ImsgNodeState) pg_atomic_read_u32(&st->node_state);
	if (state == IMSG_NODE_SYNCED)
		return;
	SpinLockAcquire(&st->mutex);
	applied = st->applied_position;
	group_position = st->group_position;
	strlcpy(detail, st->state_detail, sizeof(detail));
	SpinLockRelease(&st->mutex);
	ereport(ERROR,
			(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
			 errmsg("node \"%s\" is not synced with its group: writes to replicated tables are refused",
					imsg_my_node_name()),
			 errdetail("The node is %s: applied position %llu, group position %llu, lag %llu change sets.%s%s",
					   imsg_node_state_name(state),
					   (unsigned long long) applied, (unsigned long long) group_position,
					   (unsigned long long) (group_position > applied ? group_position - applied : 0),
					   detail[0] ? " " : "", detail),
			 errhint("Wait until imsg_manager_status().state is 'synced'.  Reads are allowed and may return stale data.")));
}

/*
 * The start of a captured change of 'cr': the change set started (on a
 * synced node), the subtransaction marked, the relation described; the
 * caller writes the record in cs_context, then switches back to *old.
 */
static RelInfo *
imsg_cs_begin_change(CachedRel *cr, MemoryContext *old)
{
	if (cs_context == NULL)
	{
		check_node_synced();
		imsg_cs_start();
	}
	imsg_cs_mark();
	*old = MemoryContextSwitchTo(cs_context);
	return imsg_cs_relation(cr);
}

/* An inserted row (the trigger's, or one imsg_replicate() sends). */
static void
imsg_cs_capture_insert(Relation rel, HeapTuple tuple)
{
	CachedRel  *cr = imsg_cs_cached_relation(rel);
	MemoryContext old;
	RelInfo    *ri = imsg_cs_begin_change(cr, &old);

	ImsgBufferPutInt8(&cs_buf, IMSG_CS_INSERT);
	ImsgBufferPutInt32(&cs_buf, ri->local_id);
	imsg_cs_put_values(cr, RelationGetDescr(rel), tuple, false);
	cs_nchanges++;
	MemoryContextSwitchTo(old);
}

Datum
imsg_capture(PG_FUNCTION_ARGS)
{
	TriggerData *trigdata = (TriggerData *) fcinfo->context;
	Relation	rel;
	TupleDesc	desc;
	CachedRel  *cr;
	RelInfo    *ri;
	MemoryContext old;
	TriggerEvent ev;

	if (!CALLED_AS_TRIGGER(fcinfo))
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("imsg_capture() must be called as a trigger")));
	ev = trigdata->tg_event;
	if (!TRIGGER_FIRED_AFTER(ev) || !TRIGGER_FIRED_FOR_ROW(ev))
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("imsg_capture() must be an AFTER ... FOR EACH ROW trigger")));
	imsg_check_available();

	rel = trigdata->tg_relation;
	if (TRIGGER_FIRED_BY_INSERT(ev))
	{
		imsg_cs_capture_insert(rel, trigdata->tg_trigtuple);
		return PointerGetDatum(NULL);
	}
	desc = RelationGetDescr(rel);
	cr = imsg_cs_cached_relation(rel);
	ri = imsg_cs_begin_change(cr, &old);
	if (TRIGGER_FIRED_BY_UPDATE(ev))
	{
		ImsgBufferPutInt8(&cs_buf, IMSG_CS_UPDATE);
		ImsgBufferPutInt32(&cs_buf, ri->local_id);
		imsg_cs_put_values(cr, desc, trigdata->tg_trigtuple, true);
		imsg_cs_put_values(cr, desc, trigdata->tg_newtuple, false);
	}
	else if (TRIGGER_FIRED_BY_DELETE(ev))
	{
		ImsgBufferPutInt8(&cs_buf, IMSG_CS_DELETE);
		ImsgBufferPutInt32(&cs_buf, ri->local_id);
		imsg_cs_put_values(cr, desc, trigdata->tg_trigtuple, true);
	}
	else
		elog(ERROR, "imsg_capture: unexpected trigger event");
	cs_nchanges++;
	MemoryContextSwitchTo(old);

	return PointerGetDatum(NULL);
}

/*
 * A DDL statement on replicated tables, just run (ddl.c): an 'S' record at
 * its place among the transaction's changes, so that every node runs it
 * between the same rows.  'tables' (schema, name pairs, as before it ran)
 * are the tables it changes, for certification.  The transaction's change
 * set is then certified as in sync mode, whatever imessages.commit_mode
 * says: a statement must not race with writes to its tables elsewhere.
 */
void
imsg_cs_capture_statement(const char *search_path, const char *sql, int len,
						  int8 flags, int ntables, const char *const *schemas,
						  const char *const *names)
{
	MemoryContext old;
	int			i;

	imsg_check_available();
	if (cs_context == NULL)
	{
		check_node_synced();
		imsg_cs_start();
	}
	imsg_cs_mark();
	old = MemoryContextSwitchTo(cs_context);
	ImsgBufferPutInt8(&cs_buf, IMSG_CS_STATEMENT);
	ImsgBufferPutInt32(&cs_buf, 0);
	ImsgBufferPutString(&cs_buf, search_path, strlen(search_path));
	ImsgBufferPutString(&cs_buf, sql, len);
	ImsgBufferPutInt8(&cs_buf, flags);
	ImsgBufferPutInt16(&cs_buf, (int16) ntables);
	for (i = 0; i < ntables; i++)
	{
		ImsgBufferPutString(&cs_buf, schemas[i], strlen(schemas[i]));
		ImsgBufferPutString(&cs_buf, names[i], strlen(names[i]));
	}
	cs_nchanges++;
	cs_has_statement = true;
	MemoryContextSwitchTo(old);
}

/*
 * imsg_capture_replicate(tbl regclass, op text): imsg_replicate() (op
 * 'replicate', once it made the table replicated here) and
 * imsg_unreplicate() ('unreplicate', once it did the reverse) travel
 * through the group.  With op NULL, only says whether they do here: not in
 * a group of one (imessages.gcs = local), nor in a session with
 * session_replication_role = replica (the helpers', or a DBA's setting a
 * node up by hand); on a node that is not synced it fails as a write does.
 *
 * With op: a statement record whose text is a jsonb document (op, schema,
 * table; for 'replicate' the statements that create the table,
 * imsg_table_definition(), and its sequences' floors) that the other
 * nodes' helpers hand to imsg_apply_replicate(); then for 'replicate'
 * every row of the table as an insert, read under a snapshot taken once no
 * other transaction can write the table (CREATE TRIGGER's lock, taken here
 * again).  The helpers run the document's statements as superuser, so it
 * is built here from the catalogs, never taken from the caller, who must
 * own the table and may call the SQL function of the same op.
 * Certification makes it fail if its origin had not applied a statement
 * on the table or a change of its rows that the group ordered before it
 * (IMSG_CS_STMT_REPLICATE).
 */
Datum
imsg_capture_replicate(PG_FUNCTION_ARGS)
{
	Oid			relid;
	char	   *op;
	bool		replicate;
	Relation	rel;
	const char *schemas[1];
	const char *names[1];
	const char *schema;
	char	   *refused;
	char	   *doc;
	Oid			argtypes[2] = {TEXTOID, REGCLASSOID};
	Datum		args[2];
	int			ret;

	if (PG_ARGISNULL(0) || imsg_gcs_ops()->single_node ||
		SessionReplicationRole == SESSION_REPLICATION_ROLE_REPLICA)
		PG_RETURN_BOOL(false);
	relid = PG_GETARG_OID(0);
	if (PG_ARGISNULL(1))
	{
		if (cs_context == NULL)
			check_node_synced();
		PG_RETURN_BOOL(true);
	}
	op = text_to_cstring(PG_GETARG_TEXT_PP(1));
	replicate = strcmp(op, "replicate") == 0;
	if (!replicate && strcmp(op, "unreplicate") != 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("unknown operation \"%s\"", op),
				 errhint("It is \"replicate\" or \"unreplicate\".")));
	if (IsolationUsesXactSnapshot())
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("imsg_%s() cannot send a table to the group in a %s transaction", op,
						IsolationIsSerializable() ? "SERIALIZABLE" : "REPEATABLE READ"),
				 errdetail("Its rows and its sequences' values are read once the table is locked, which an older snapshot would not see."),
				 errhint("Call it in a READ COMMITTED transaction.")));
	/* (the owner first: nobody else may even queue for the lock) */
	if (!pg_class_ownercheck(relid, GetUserId()))
		aclcheck_error(ACLCHECK_NOT_OWNER, get_relkind_objtype(get_rel_relkind(relid)),
					   get_rel_name(relid));
	rel = table_open(relid, ShareRowExclusiveLock);

	schema = quote_identifier(imsg_extension_schema_name());
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "imsg_capture_replicate: SPI_connect failed");
	args[0] = PointerGetDatum(cstring_to_text(op));
	args[1] = ObjectIdGetDatum(relid);
	ret = SPI_execute_with_args(psprintf(
		"SELECT CASE WHEN NOT pg_catalog.has_function_privilege("
		"                 pg_catalog.format('%%s.imsg_%%s(pg_catalog.regclass)', %s, $1), 'EXECUTE')"
		"            THEN 'permission denied for function imsg_' || $1"
		"            WHEN EXISTS (SELECT 1 FROM pg_catalog.pg_trigger"
		"                          WHERE tgrelid = $2 AND tgname = 'imsg_capture') <> ($1 = 'replicate')"
		"            THEN 'imsg_' || $1 || '() has not run on the table here' END,"
		"       pg_catalog.jsonb_build_object('op', $1, 'schema', n.nspname, 'table', c.relname,"
		"         'owner', pg_catalog.pg_get_userbyid(c.relowner),"
		"         'superuser', (SELECT rolsuper FROM pg_catalog.pg_roles WHERE rolname = CURRENT_USER),"
		"         'node', pg_catalog.current_setting('imessages.node_name'))"
		"       || CASE WHEN $1 = 'replicate' THEN"
		"            pg_catalog.jsonb_build_object("
		"              'definition', pg_catalog.to_jsonb(%s.imsg_table_definition($2)),"
		"              'sequences', %s.imsg_table_sequence_floors($2))"
		"          ELSE '{}' END"
		"  FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace"
		" WHERE c.oid = $2",
		quote_literal_cstr(schema), schema, schema),
		2, argtypes, args, NULL, false, 1);
	if (ret != SPI_OK_SELECT || SPI_processed != 1)
		elog(ERROR, "imsg_capture_replicate: the table's description failed: %s",
			 SPI_result_code_string(ret));
	refused = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1);
	if (refused != NULL)
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("cannot send imsg_%s() of table \"%s\" to the group: %s",
						op, RelationGetRelationName(rel), refused)));
	doc = MemoryContextStrdup(TopTransactionContext,
							  SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2));
	SPI_finish();

	schemas[0] = get_namespace_name(RelationGetNamespace(rel));
	names[0] = RelationGetRelationName(rel);
	/*
	 * exclusive, as a column type's change: it must have seen the table's
	 * statements and changes, and later ones must have seen it
	 */
	imsg_cs_capture_statement("pg_catalog", doc, strlen(doc),
							  IMSG_CS_STMT_REPLICATE | IMSG_CS_STMT_EXCLUSIVE,
							  1, schemas, names);
	if (replicate)
	{
		Snapshot	snapshot = RegisterSnapshot(GetLatestSnapshot());
		TableScanDesc scan = table_beginscan(rel, snapshot, 0, NULL);
		HeapTuple	tuple;

		while ((tuple = heap_getnext(scan, ForwardScanDirection)) != NULL)
		{
			CHECK_FOR_INTERRUPTS();
			imsg_cs_capture_insert(rel, tuple);
		}
		table_endscan(scan);
		UnregisterSnapshot(snapshot);
	}
	table_close(rel, NoLock);
	PG_RETURN_BOOL(true);
}

/* BEFORE TRUNCATE ... FOR EACH STATEMENT on replicated tables. */
Datum
imsg_refuse_truncate(PG_FUNCTION_ARGS)
{
	TriggerData *trigdata = (TriggerData *) fcinfo->context;

	if (!CALLED_AS_TRIGGER(fcinfo))
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("imsg_refuse_truncate() must be called as a trigger")));
	ereport(ERROR,
			(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
			 errmsg("cannot truncate replicated table \"%s\"",
					RelationGetRelationName(trigdata->tg_relation)),
			 errdetail("TRUNCATE fires no row triggers, so its changes could not be replicated."),
			 errhint("Use DELETE, or call imsg_unreplicate() first.")));
	PG_RETURN_NULL();
}

/*
 * The manager's answer to a sync commit: return if the change set was
 * ordered, else the ERROR that rolls the transaction back.
 */
static void
imsg_cs_report_outcome(ImsgCsOutcome outcome)
{
	const char *gcs = GetConfigOption("imessages.gcs", false, false);

	switch (outcome)
	{
		case IMSG_CS_OUTCOME_ORDERED:
			return;
		case IMSG_CS_OUTCOME_NO_GROUP:
			ereport(ERROR,
					(errcode(ERRCODE_CONNECTION_FAILURE),
					 errmsg("imessages manager is not connected to the group communication system \"%s\"", gcs),
					 errdetail("The transaction is rolled back; its change set was sent to no node."),
					 errhint("Check the server log and imsg_manager_status(), or use imessages.commit_mode = 'async'.")));
			break;
		case IMSG_CS_OUTCOME_NO_QUORUM:
			ereport(ERROR,
					(errcode(ERRCODE_CONNECTION_FAILURE),
					 errmsg("this node has no quorum in the group communication system \"%s\"", gcs),
					 errdetail("The transaction is rolled back; its change set was sent to no node.  A node cut off from the primary component cannot commit in sync mode."),
					 errhint("Check imsg_manager_status().group_quorate and the group's network, or use imessages.commit_mode = 'async'.")));
			break;
		case IMSG_CS_OUTCOME_LOST:
			ereport(ERROR,
					(errcode(ERRCODE_TRANSACTION_RESOLUTION_UNKNOWN),
					 errmsg("the connection to the group communication system \"%s\" was lost before the transaction's change set was ordered", gcs),
					 errdetail("The transaction is rolled back on this node; other nodes may have applied its change set."),
					 errhint("Check the server log and imsg_manager_status() on every node.")));
			break;
		case IMSG_CS_OUTCOME_CONFLICT:
			ereport(ERROR,
					(errcode(ERRCODE_T_R_SERIALIZATION_FAILURE),
					 errmsg("could not serialize access due to a concurrent update on another node"),
					 errdetail("A change set of another node that changed the same rows was delivered first."),
					 errhint("The transaction might succeed if retried.")));
			break;
	}
	elog(ERROR, "imessages: unknown sync commit outcome %d", (int) outcome);
}

/*
 * A sync transaction of this session lost certification to change sets
 * delivered up to cs_wait_applied_seq.  Its next statement that runs the
 * executor first waits (at most imessages.commit_timeout) until this node
 * has applied them, so that a retry reads what won instead of losing again
 * on the same stale rows.  Not in PRE_COMMIT or at abort: the losing
 * transaction still holds its row locks there, and the helper applying the
 * winner may be waiting for exactly those.  At the start of the retry's
 * first statement the session holds no row lock.  Without it, a node whose
 * helper lags behind the others' writes loses nearly every retry, and the
 * node that writes most commits nearly everything (see README).
 */
static uint64 cs_wait_applied_seq = 0;
static ExecutorStart_hook_type prev_executor_start = NULL;

static void
imsg_cs_wait_applied(void)
{
	TimestampTz deadline = TimestampTzPlusMilliseconds(GetCurrentTimestamp(),
													   imsg_commit_timeout_ms);
	uint64		seq = cs_wait_applied_seq;

	cs_wait_applied_seq = 0;
	for (;;)
	{
		uint64		horizon;
		long		remaining;

		SpinLockAcquire(&ImsgManagerState->mutex);
		horizon = ImsgManagerState->apply_horizon;
		SpinLockRelease(&ImsgManagerState->mutex);
		if (horizon == 0 || horizon > seq)
			return;
		remaining = TimestampDifferenceMilliseconds(GetCurrentTimestamp(), deadline);
		if (remaining <= 0)
			return;
		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
						 Min(remaining, 1), PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
		CHECK_FOR_INTERRUPTS();
	}
}

static void
imsg_cs_executor_start(QueryDesc *queryDesc, int eflags)
{
	if (cs_wait_applied_seq != 0 && ImsgManagerState != NULL)
		imsg_cs_wait_applied();
	if (prev_executor_start)
		prev_executor_start(queryDesc, eflags);
	else
		standard_ExecutorStart(queryDesc, eflags);
}

/* sync mode: wait until the manager says the group ordered our change set. */
static void
imsg_cs_wait_ordered(FullTransactionId fxid, int manager_pid)
{
	TimestampTz deadline = TimestampTzPlusMilliseconds(GetCurrentTimestamp(),
													   imsg_commit_timeout_ms);
	char		reply[9];
	ImsgBuffer	in;
	uint64		seq;
	int8		outcome;
	ImsgResult	r;

	r = imsg_wait_manager_reply(IMSG_T_CS_ORDERED,
								(int64) U64FromFullTransactionId(fxid),
								manager_pid, deadline, 100, reply, sizeof(reply));
	if (r == IMSG_NO_RECIPIENT)
		ereport(ERROR,
				(errcode(ERRCODE_CONNECTION_FAILURE),
				 errmsg("imessages manager exited before the change set was ordered"),
				 errdetail("The transaction is rolled back.")));
	if (r == IMSG_TIMEOUT)
		ereport(ERROR,
				(errcode(ERRCODE_CONNECTION_FAILURE),
				 errmsg("the group did not order the transaction's change set within imessages.commit_timeout (%d ms)",
						imsg_commit_timeout_ms),
				 errdetail("The transaction is rolled back."),
				 errhint("Check imsg_manager_status() and the server log, or use imessages.commit_mode = 'async'.")));
	ImsgBufferInitReader(&in, reply, sizeof(reply));
	seq = (uint64) ImsgBufferGetInt64(&in);
	outcome = ImsgBufferGetInt8(&in);
	if (outcome == IMSG_CS_OUTCOME_CONFLICT)
		cs_wait_applied_seq = seq;	/* see imsg_cs_executor_start */
	imsg_cs_report_outcome((ImsgCsOutcome) outcome);
}

/*
 * On a node in a group, note this transaction's writes before it commits,
 * so that a remote change set delivered before ours does not overwrite
 * them here (see local_writes.c): the rows it removes, deleted or left by
 * a key change.
 */
static void
imsg_cs_register_writes(void)
{
	ImsgCsReader reader;
	const ImsgCsRecord *rec;
	uint64	   *removed = NULL;
	int			nremoved = 0;
	int			size = 0;

	if (imsg_gcs_ops()->single_node)
		return;
	imsg_cs_reader_init(&reader, cs_buf.data, cs_buf.len, true);
	while ((rec = imsg_cs_reader_next(&reader)) != NULL)
	{
		if (rec->tag == IMSG_CS_RELATION || rec->tag == IMSG_CS_INSERT ||
			rec->tag == IMSG_CS_STATEMENT ||
			(rec->tag == IMSG_CS_UPDATE && rec->row == rec->new_row))
			continue;
		if (nremoved == size)
		{
			size = Max(size * 2, 16);
			removed = removed ? repalloc_huge(removed, sizeof(uint64) * size) :
				MemoryContextAllocHuge(CurrentMemoryContext, sizeof(uint64) * size);
		}
		removed[nremoved++] = rec->row;
	}
	imsg_cs_reader_free(&reader);
	imsg_local_writes_register(nremoved, removed);
	if (removed)
		pfree(removed);
}

/*
 * PRE_COMMIT: send the change set (in parts if it is large: see
 * mailbox_large.c); in sync mode, wait.  In a group, its header carries
 * what this node had applied of other nodes' change sets when this
 * transaction reached PRE_COMMIT, for certification (see certify.c): after
 * the rows it changed are registered, so that a helper cannot note as
 * applied a row this transaction holds.
 */
static void
imsg_cs_send(void)
{
	FullTransactionId fxid = GetTopFullTransactionId();
	bool		sync = imsg_commit_mode == IMSG_COMMIT_SYNC || cs_has_statement;
	bool		in_group = !imsg_gcs_ops()->single_node;
	char		head[IMSG_CS_HEADER + IMSG_SEEN_WIRE_MAX];
	ImsgBuffer	out;
	ImsgResult	r;
	int			manager_pid;

	if (imsg_resolve_manager(&manager_pid) != IMSG_OK)
		imsg_report_send_failure(IMSG_NO_RECIPIENT, IMSG_MANAGER, 0, 0);

	/* the group may be paused: a node has too much to apply */
	if (in_group)
		imsg_flow_control_wait();

	imsg_cs_register_writes();

	ImsgBufferInitWriter(&out, head, sizeof(head));
	ImsgBufferPutInt64(&out, (int64) U64FromFullTransactionId(fxid));
	ImsgBufferPutInt8(&out, (sync ? IMSG_CS_SYNC : 0) | (in_group ? IMSG_CS_HAS_SEEN : 0));
	ImsgBufferPutInt32(&out, cs_nchanges);
	if (in_group)
	{
		ImsgSeen	seen[IMSG_MAX_GROUP_MEMBERS];
		int			nseen = imsg_seen_snapshot(seen);

		imsg_seen_encode(&out, seen, nseen);
	}

	/*
	 * async: the COMMIT or ABORT callback wakes the manager moments later,
	 * when the outcome is in the commit log, so the last part need not: the
	 * manager then settles the change set in one pass.
	 */
	cs_sent = true;
	r = ImsgSendLarge(IMSG_MANAGER, IMSG_T_CHANGESET, out.data, out.len,
					  cs_buf.data, cs_buf.len, imsg_send_timeout_ms,
					  sync ? 0 : IMSG_LARGE_QUIET_LAST);
	if (r != IMSG_OK)
		imsg_report_send_failure(r, IMSG_MANAGER, out.len + cs_buf.len,
								 imsg_send_timeout_ms);

	if (sync)
		imsg_cs_wait_ordered(fxid, manager_pid);
}

/*
 * Tell the manager to look at our transaction's outcome now, unless it
 * said it will within imessages.settle_delay anyway.
 */
static void
imsg_cs_wake_manager(void)
{
	/*
	 * Our change set (and our commit or abort) before the flag: pairs with
	 * the manager's barrier between clearing it and its last look at the
	 * mailbox.
	 */
	pg_memory_barrier();
	if (pg_atomic_read_u32(&ImsgManagerState->settle_polling) != 0)
		return;
	imsg_wake_manager();
}

static void
imsg_cs_xact_callback(XactEvent event, void *arg)
{
	switch (event)
	{
		case XACT_EVENT_PRE_COMMIT:
			if (cs_nchanges > 0)
				imsg_cs_send();
			break;
		case XACT_EVENT_PRE_PREPARE:
			if (cs_nchanges > 0)
				ereport(ERROR,
						(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
						 errmsg("cannot PREPARE a transaction that changed replicated tables")));
			break;
		case XACT_EVENT_COMMIT:
		case XACT_EVENT_ABORT:
		case XACT_EVENT_PARALLEL_COMMIT:
		case XACT_EVENT_PARALLEL_ABORT:
		case XACT_EVENT_PREPARE:
			/* no ERROR here: the outcome is in the commit log already */
			imsg_local_writes_end(event != XACT_EVENT_ABORT &&
								  event != XACT_EVENT_PARALLEL_ABORT);
			if (cs_sent)
				imsg_cs_wake_manager();
			cs_sent = false;
			imsg_cs_reset();
			break;
		default:
			break;
	}
}

static void
imsg_cs_subxact_callback(SubXactEvent event, SubTransactionId mySubid,
						 SubTransactionId parentSubid, void *arg)
{
	if (event == SUBXACT_EVENT_ABORT_SUB)
	{
		int			i = imsg_nest_mark_abort(&cs_marks);
		HASH_SEQ_STATUS seq;
		RelInfo    *ri;

		if (i < 0)
			return;
		/* drop the subtransaction's changes, and descriptions written since */
		cs_buf.len = cs_mark_payload[i].len;
		cs_nchanges = cs_mark_payload[i].nchanges;
		hash_seq_init(&seq, cs_rels);
		while ((ri = hash_seq_search(&seq)) != NULL)
			if (ri->described && ri->described_at >= cs_buf.len)
				ri->described = false;
	}
	else if (event == SUBXACT_EVENT_COMMIT_SUB)
		imsg_nest_mark_commit(&cs_marks);
}

void
imsg_changeset_init(void)
{
	RegisterXactCallback(imsg_cs_xact_callback, NULL);
	prev_executor_start = ExecutorStart_hook;
	ExecutorStart_hook = imsg_cs_executor_start;
	RegisterSubXactCallback(imsg_cs_subxact_callback, NULL);
}
