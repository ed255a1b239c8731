/*-------------------------------------------------------------------------
 *
 * checksum.c
 *	  imsg_table_checksum(regclass): an order-independent digest of a
 *	  table's rows, so that a DBA (and the tests) can compare nodes.
 *
 * Each row is hashed on its own, from the binary send form of each live
 * column of a built-in type (the text form for other types: the send form
 * of an array or a composite carries its element or column types' OIDs,
 * which differ between nodes for a type created on each, such as an enum),
 * each value preceded by
 * its column's position among the live columns and its length, so that
 * neither session settings (DateStyle, extra_float_digits) nor the physical
 * order of rows or of dropped columns changes the result.  The digest is
 * the sum, modulo 2^64, of two independent 64-bit hashes of every row:
 * a sum does not depend on the order, and unlike a XOR two equal rows do
 * not cancel out.  Two nodes with the same rows give the same digest; a
 * single differing value changes it except with probability 2^-128.
 *
 * It reads the table with the calling statement's snapshot, as a SELECT
 * would, after the same privilege checks: SELECT on the table, and no
 * row-level security policy that applies to the caller (a digest of rows
 * the caller may not see would leak them).
 *
 * Copyright (c) 2026, imessages developers
 *
 * IDENTIFICATION
 *	  src/checksum.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "access/table.h"
#include "access/tableam.h"
#include "access/transam.h"
#include "catalog/pg_type.h"
#include "common/hashfn.h"
#include "executor/tuptable.h"
#include "fmgr.h"
#include "funcapi.h"
#include "lib/stringinfo.h"
#include "miscadmin.h"
#include "utils/acl.h"
#include "utils/builtins.h"
#include "utils/lsyscache.h"
#include "utils/rel.h"
#include "utils/rls.h"
#include "utils/snapmgr.h"
#include "utils/syscache.h"

#include "imessages_int.h"

PG_FUNCTION_INFO_V1(imsg_table_checksum);

typedef struct ChecksumColumn
{
	int			attno;			/* 0-based in the tuple descriptor */
	bool		binary;
	FmgrInfo	out;			/* typsend or typoutput */
} ChecksumColumn;

/* Is the send form of this type's values the same on every node? */
static bool
type_has_portable_send(Oid typid)
{
	HeapTuple	tup;
	bool		result;

	if (typid >= FirstNormalObjectId)
		return false;
	tup = SearchSysCache1(TYPEOID, ObjectIdGetDatum(typid));

	if (!HeapTupleIsValid(tup))
		elog(ERROR, "cache lookup failed for type %u", typid);
	result = OidIsValid(((Form_pg_type) GETSTRUCT(tup))->typsend);
	ReleaseSysCache(tup);
	return result;
}

/* Append one row's canonical bytes to 'buf' (reset by the caller). */
static void
checksum_row(StringInfo buf, TupleTableSlot *slot, ChecksumColumn *cols, int ncols)
{
	int			i;

	for (i = 0; i < ncols; i++)
	{
		ChecksumColumn *c = &cols[i];
		bool		isnull;
		Datum		d = slot_getattr(slot, c->attno + 1, &isnull);
		uint32		header[2];

		header[0] = (uint32) i;
		if (isnull)
		{
			header[1] = PG_UINT32_MAX;
			appendBinaryStringInfo(buf, (char *) header, sizeof(header));
			continue;
		}
		if (c->binary)
		{
			bytea	   *b = SendFunctionCall(&c->out, d);

			header[1] = VARSIZE(b) - VARHDRSZ;
			appendBinaryStringInfo(buf, (char *) header, sizeof(header));
			appendBinaryStringInfo(buf, VARDATA(b), VARSIZE(b) - VARHDRSZ);
			pfree(b);
		}
		else
		{
			char	   *s = OutputFunctionCall(&c->out, d);

			header[1] = strlen(s);
			appendBinaryStringInfo(buf, (char *) header, sizeof(header));
			appendBinaryStringInfoNT(buf, s, header[1]);
			pfree(s);
		}
	}
}

/* imsg_table_checksum(tbl regclass, OUT rows bigint, OUT digest text) */
Datum
imsg_table_checksum(PG_FUNCTION_ARGS)
{
	Oid			relid = PG_GETARG_OID(0);
	Relation	rel;
	TupleDesc	desc;
	ChecksumColumn *cols;
	int			ncols = 0;
	int			i;
	TableScanDesc scan;
	TupleTableSlot *slot;
	StringInfoData row;
	uint64		sum1 = 0;
	uint64		sum2 = 0;
	int64		rows = 0;
	AclResult	acl;
	TupleDesc	result_desc;
	Datum		values[2];
	bool		nulls[2] = {false, false};
	MemoryContext row_context;
	MemoryContext old;

	if (get_call_result_type(fcinfo, NULL, &result_desc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "imsg_table_checksum: return type must be a row type");

	rel = table_open(relid, AccessShareLock);
	if (rel->rd_rel->relkind != RELKIND_RELATION &&
		rel->rd_rel->relkind != RELKIND_MATVIEW)
		ereport(ERROR,
				(errcode(ERRCODE_WRONG_OBJECT_TYPE),
				 errmsg("\"%s\" is not a table", RelationGetRelationName(rel)),
				 errdetail("imsg_table_checksum() reads tables and materialized views.")));
	acl = pg_class_aclcheck(relid, GetUserId(), ACL_SELECT);
	if (acl != ACLCHECK_OK)
		aclcheck_error(acl, OBJECT_TABLE, RelationGetRelationName(rel));
	if (check_enable_rls(relid, InvalidOid, false) == RLS_ENABLED)
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("cannot checksum table \"%s\": row-level security applies to this user",
						RelationGetRelationName(rel)),
				 errhint("Run it as the table's owner or a role that bypasses row-level security.")));

	desc = RelationGetDescr(rel);
	cols = palloc(sizeof(ChecksumColumn) * Max(desc->natts, 1));
	for (i = 0; i < desc->natts; i++)
	{
		Form_pg_attribute a = TupleDescAttr(desc, i);
		ChecksumColumn *c;
		Oid			func;
		bool		varlena;

		if (a->attisdropped)
			continue;
		c = &cols[ncols++];
		c->attno = i;
		c->binary = type_has_portable_send(a->atttypid);
		if (c->binary)
			getTypeBinaryOutputInfo(a->atttypid, &func, &varlena);
		else
			getTypeOutputInfo(a->atttypid, &func, &varlena);
		fmgr_info(func, &c->out);
	}

	row_context = AllocSetContextCreate(CurrentMemoryContext, "imsg_table_checksum row",
										ALLOCSET_DEFAULT_SIZES);
	initStringInfo(&row);
	slot = table_slot_create(rel, NULL);
	scan = table_beginscan(rel, GetActiveSnapshot(), 0, NULL);
	while (table_scan_getnextslot(scan, ForwardScanDirection, slot))
	{
		CHECK_FOR_INTERRUPTS();
		resetStringInfo(&row);
		old = MemoryContextSwitchTo(row_context);
		checksum_row(&row, slot, cols, ncols);
		MemoryContextSwitchTo(old);
		MemoryContextReset(row_context);
		sum1 += hash_bytes_extended((const unsigned char *) row.data, row.len, 0x696d7367);
		sum2 += hash_bytes_extended((const unsigned char *) row.data, row.len, 0x63686b73);
		rows++;
	}
	table_endscan(scan);
	ExecDropSingleTupleTableSlot(slot);
	table_close(rel, AccessShareLock);

	values[0] = Int64GetDatum(rows);
	values[1] = CStringGetTextDatum(psprintf("%016llx%016llx",
											 (unsigned long long) sum1,
											 (unsigned long long) sum2));
	PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(BlessTupleDesc(result_desc),
													  values, nulls)));
}
