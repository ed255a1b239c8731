/*-------------------------------------------------------------------------
 *
 * nestmarks.c
 *	  Marks per subtransaction nesting level: where to roll back to if a
 *	  subtransaction aborts.
 *
 * Receiving (sql_api.c) and capturing changes (changeset.c) both keep, for
 * each nesting level that did something, a mark taken before its first
 * action: an abort of that level (or of a deeper one) returns to the mark,
 * a commit hands it to the parent unless the parent has its own, earlier
 * one.  Levels only grow along the stack (a lower level can act again only
 * after the higher ones ended), so a subtransaction's marks are always on
 * top.  The stack holds only the levels; callers keep their payloads in an
 * array of their own, indexed like it.
 *
 * Copyright (c) 2026, imessages developers
 *
 * IDENTIFICATION
 *	  src/nestmarks.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"

#include "imessages_int.h"

/*
 * Called before an action: the index at which the caller stores its
 * payload for a new mark of the current level, or -1 if the level has a
 * mark already.  ERROR, with 'what' ("imsg_receive is") and 'may'
 * ("receive messages") in the messages, beyond IMSG_MAX_NEST_MARKS levels.
 */
int
imsg_nest_mark_push(ImsgNestMarks *marks, const char *what, const char *may)
{
	int			level = GetCurrentTransactionNestLevel();

	if (marks->count > 0 && marks->levels[marks->count - 1] >= level)
		return -1;
	if (marks->count == IMSG_MAX_NEST_MARKS)
		ereport(ERROR,
				(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
				 errmsg("%s nested in too many subtransactions", what),
				 errdetail("At most %d nested subtransactions may %s.",
						   IMSG_MAX_NEST_MARKS, may)));
	marks->levels[marks->count] = level;
	return marks->count++;
}

/*
 * At SUBXACT_EVENT_ABORT_SUB: the index of the mark to roll back to (the
 * oldest of this level or deeper), which is then dropped with the ones
 * above it; -1 if this level did nothing.
 */
int
imsg_nest_mark_abort(ImsgNestMarks *marks)
{
	int			level = GetCurrentTransactionNestLevel();
	int			first = marks->count;

	while (first > 0 && marks->levels[first - 1] >= level)
		first--;
	if (first == marks->count)
		return -1;
	marks->count = first;
	return first;
}

/* At SUBXACT_EVENT_COMMIT_SUB: the level's mark now belongs to the parent. */
void
imsg_nest_mark_commit(ImsgNestMarks *marks)
{
	int			level = GetCurrentTransactionNestLevel();

	if (marks->count == 0 || marks->levels[marks->count - 1] != level)
		return;
	if (marks->count > 1 && marks->levels[marks->count - 2] == level - 1)
		marks->count--;			/* the parent's own mark is earlier */
	else
		marks->levels[marks->count - 1] = level - 1;
}
