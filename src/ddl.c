/*-------------------------------------------------------------------------
 *
 * ddl.c
 *	  Schema changes on replicated tables travel through the group: a
 *	  ProcessUtility hook puts the text of each such statement, with the
 *	  search_path it ran under, into the transaction's change set
 *	  (imsg_cs_capture_statement), at its place among the row changes.
 *	  Every other node's helper runs it there (apply.c), so the change
 *	  sets delivered before it are applied before it and those after it
 *	  after it: the manager hands a change set with a statement out alone
 *	  (manager_apply.c).  Certification (certify.c) makes it conflict
 *	  with a statement on the same table that its origin had not seen,
 *	  and a sync change set of rows with a statement on its tables that
 *	  its origin had not seen.  A change set of rows written before an ADD
 *	  or DROP COLUMN and applied after it is fine (apply.c matches columns
 *	  by name); one written before a column's type changes is not, so
 *	  such a statement also conflicts with any unseen change of its table.
 *
 * Replicated (on a table that imsg_replicate() set up, or its indexes):
 * ALTER TABLE, CREATE INDEX, DROP TABLE, DROP INDEX, ALTER TABLE/INDEX
 * ... RENAME.  Refused with an error: CREATE INDEX CONCURRENTLY and DROP
 * INDEX CONCURRENTLY (they cannot run inside the apply transaction),
 * ALTER TABLE ... SET SCHEMA, disabling or re-enabling triggers (capture
 * is a trigger), and any statement that leaves a replicated table without
 * a primary key.  Everything else runs on this node only: VACUUM,
 * ANALYZE, CLUSTER, REINDEX, GRANT, COMMENT, CREATE TRIGGER, policies.
 * imsg_replicate() and imsg_unreplicate() send a statement of their own
 * (imsg_capture_replicate in changeset.c), which creates the table where
 * it is missing: CREATE TABLE itself is not captured.
 * Statements run by the helpers themselves (session_replication_role =
 * replica) and the sub-statements of one being captured are not captured
 * again.  Like Postgres Pro multimaster, and unlike Galera's total order
 * isolation, the statement runs first on its origin inside the user's
 * transaction; certification then orders it against the rest.
 *
 * Copyright (c) 2026, imessages developers
 *
 * IDENTIFICATION
 *	  src/ddl.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/genam.h"
#include "access/htup_details.h"
#include "access/relation.h"
#include "access/table.h"
#include "catalog/index.h"
#include "catalog/indexing.h"
#include "catalog/namespace.h"
#include "catalog/pg_class.h"
#include "catalog/pg_trigger.h"
#include "commands/trigger.h"
#include "miscadmin.h"
#include "nodes/parsenodes.h"
#include "tcop/utility.h"
#include "utils/builtins.h"
#include "utils/fmgroids.h"
#include "utils/guc.h"
#include "utils/lsyscache.h"
#include "utils/rel.h"
#include "utils/relcache.h"
#include "utils/syscache.h"

#include "changeset_int.h"

static ProcessUtility_hook_type prev_process_utility = NULL;
static int	utility_depth = 0;	/* our own nesting: capture the outermost */

/* The replicated tables a statement changes, named before it runs. */
typedef struct DdlTargets
{
	int8		flags;			/* IMSG_CS_STMT_* */
	int			n;
	Oid			relids[64];
	const char *schemas[64];
	const char *names[64];
} DdlTargets;

/* Does 'relid' have imsg_replicate()'s capture trigger? */
static bool
is_replicated(Oid relid)
{
	Relation	tgrel;
	ScanKeyData key[2];
	SysScanDesc scan;
	bool		found;

	if (!OidIsValid(relid) || get_rel_relkind(relid) == '\0')
		return false;
	tgrel = table_open(TriggerRelationId, AccessShareLock);
	ScanKeyInit(&key[0], Anum_pg_trigger_tgrelid, BTEqualStrategyNumber, F_OIDEQ,
				ObjectIdGetDatum(relid));
	ScanKeyInit(&key[1], Anum_pg_trigger_tgname, BTEqualStrategyNumber, F_NAMEEQ,
				CStringGetDatum("imsg_capture"));
	scan = systable_beginscan(tgrel, TriggerRelidNameIndexId, true, NULL, 2, key);
	found = HeapTupleIsValid(systable_getnext(scan));
	systable_endscan(scan);
	table_close(tgrel, AccessShareLock);
	return found;
}

/* The table of relation 'relid' (itself, or an index's table). */
static Oid
table_of(Oid relid)
{
	char		kind = get_rel_relkind(relid);

	if (kind == RELKIND_INDEX || kind == RELKIND_PARTITIONED_INDEX)
		return IndexGetRelation(relid, true);
	return relid;
}

/* Note 'rv' (a table or an index) if its table is replicated. */
static void
add_target(DdlTargets *t, const RangeVar *rv)
{
	Oid			relid;
	int			i;

	if (rv == NULL)
		return;
	relid = table_of(RangeVarGetRelid(rv, NoLock, true));
	if (!is_replicated(relid))
		return;
	for (i = 0; i < t->n; i++)
		if (t->relids[i] == relid)
			return;
	if (t->n >= lengthof(t->relids))
		ereport(ERROR,
				(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
				 errmsg("a replicated statement may change at most %d replicated tables",
						(int) lengthof(t->relids))));
	t->relids[t->n] = relid;
	t->schemas[t->n] = get_namespace_name(get_rel_namespace(relid));
	t->names[t->n] = get_rel_name(relid);
	t->n++;
}

static void
refuse(const DdlTargets *t, const char *what, const char *hint)
{
	ereport(ERROR,
			(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
			 errmsg("%s is not supported on replicated table \"%s.%s\"",
					what, t->schemas[0], t->names[0]),
			 errhint("%s", hint)));
}

/*
 * The replicated tables 'stmt' changes, refusing what cannot be
 * replicated; false if it is not a statement that travels.
 */
static bool
statement_targets(Node *stmt, DdlTargets *t)
{
	ListCell   *lc;

	t->n = 0;
	t->flags = 0;
	switch (nodeTag(stmt))
	{
		case T_AlterTableStmt:
			{
				AlterTableStmt *at = (AlterTableStmt *) stmt;

				if (at->objtype != OBJECT_TABLE && at->objtype != OBJECT_INDEX)
					return false;
				add_target(t, at->relation);
				if (t->n == 0)
					return false;
				foreach(lc, at->cmds)
				{
					AlterTableCmd *cmd = lfirst_node(AlterTableCmd, lc);

					switch (cmd->subtype)
					{
						case AT_EnableTrig:
						case AT_EnableAlwaysTrig:
						case AT_EnableReplicaTrig:
						case AT_DisableTrig:
						case AT_EnableTrigAll:
						case AT_DisableTrigAll:
						case AT_EnableTrigUser:
						case AT_DisableTrigUser:
							refuse(t, "ALTER TABLE ... ENABLE/DISABLE TRIGGER",
								   "Changes of replicated tables are captured by a trigger; imsg_unreplicate() the table first.");
							break;
						case AT_AlterColumnType:

							/*
							 * a change set written before it has values of
							 * the old type: it must not race with writes
							 */
							t->flags |= IMSG_CS_STMT_EXCLUSIVE;
							break;
						default:
							break;
					}
				}
				return true;
			}
		case T_IndexStmt:
			{
				IndexStmt  *is = (IndexStmt *) stmt;

				add_target(t, is->relation);
				if (t->n == 0)
					return false;
				if (is->concurrent)
					refuse(t, "CREATE INDEX CONCURRENTLY",
						   "Use CREATE INDEX without CONCURRENTLY: it is applied inside a transaction on every node.");
				return true;
			}
		case T_DropStmt:
			{
				DropStmt   *ds = (DropStmt *) stmt;

				if (ds->removeType != OBJECT_TABLE && ds->removeType != OBJECT_INDEX)
					return false;
				foreach(lc, ds->objects)
					add_target(t, makeRangeVarFromNameList(lfirst(lc)));
				if (t->n == 0)
					return false;
				if (ds->concurrent)
					refuse(t, "DROP INDEX CONCURRENTLY",
						   "Use DROP INDEX without CONCURRENTLY: it is applied inside a transaction on every node.");
				return true;
			}
		case T_RenameStmt:
			{
				RenameStmt *rs = (RenameStmt *) stmt;

				if (rs->renameType != OBJECT_TABLE && rs->renameType != OBJECT_COLUMN &&
					rs->renameType != OBJECT_INDEX && rs->renameType != OBJECT_TABCONSTRAINT)
					return false;
				add_target(t, rs->relation);
				return t->n > 0;
			}
		case T_AlterObjectSchemaStmt:
			{
				AlterObjectSchemaStmt *as = (AlterObjectSchemaStmt *) stmt;

				if (as->objectType != OBJECT_TABLE)
					return false;
				add_target(t, as->relation);
				if (t->n > 0)
					refuse(t, "ALTER TABLE ... SET SCHEMA",
						   "imsg_unreplicate() the table on every node, move it, and imsg_replicate() it again.");
				return false;
			}
		default:
			return false;
	}
}

/* A replicated table must keep a primary key: rows are found by it. */
static void
check_primary_keys(const DdlTargets *t)
{
	int			i;

	for (i = 0; i < t->n; i++)
	{
		Relation	rel;
		Oid			pk;

		if (!SearchSysCacheExists1(RELOID, ObjectIdGetDatum(t->relids[i])))
			continue;			/* dropped */
		rel = relation_open(t->relids[i], NoLock);
		pk = RelationGetPrimaryKeyIndex(rel);
		relation_close(rel, NoLock);
		if (!OidIsValid(pk))
			ereport(ERROR,
					(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
					 errmsg("replicated table \"%s.%s\" must keep its primary key",
							t->schemas[i], t->names[i]),
					 errhint("imessages finds rows by their primary key; imsg_unreplicate() the table first.")));
	}
}

static void
imsg_process_utility(PlannedStmt *pstmt, const char *queryString, bool readOnlyTree,
					 ProcessUtilityContext context, ParamListInfo params,
					 QueryEnvironment *queryEnv, DestReceiver *dest,
					 QueryCompletion *qc)
{
	DdlTargets	targets;
	bool		capture;

	capture = utility_depth == 0 && context != PROCESS_UTILITY_SUBCOMMAND &&
		SessionReplicationRole != SESSION_REPLICATION_ROLE_REPLICA &&
		IsTransactionState() &&
		statement_targets(pstmt->utilityStmt, &targets);

	utility_depth++;
	PG_TRY();
	{
		if (prev_process_utility)
			prev_process_utility(pstmt, queryString, readOnlyTree, context, params,
								 queryEnv, dest, qc);
		else
			standard_ProcessUtility(pstmt, queryString, readOnlyTree, context, params,
									queryEnv, dest, qc);
	}
	PG_FINALLY();
	{
		utility_depth--;
	}
	PG_END_TRY();

	if (capture)
	{
		int			start = Max(pstmt->stmt_location, 0);
		int			len = pstmt->stmt_len > 0 ? pstmt->stmt_len :
			(int) strlen(queryString + start);

		check_primary_keys(&targets);
		imsg_cs_capture_statement(GetConfigOption("search_path", false, false),
								  queryString + start, len, targets.flags, targets.n,
								  targets.schemas, targets.names);
	}
}

void
imsg_ddl_init(void)
{
	prev_process_utility = ProcessUtility_hook;
	ProcessUtility_hook = imsg_process_utility;
}
