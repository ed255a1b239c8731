/*-------------------------------------------------------------------------
 *
 * changeset_walk.c
 *	  Structural walk of a change set without looking anything up.
 *
 * imsg_changeset_walk() checks a change set's framing (see "Change-set
 * format" in imessages_int.h): the header, record tags, that every change
 * refers to a relation declared before it, that each row has as many values
 * as its relation has columns (or key columns), and value kinds.  It does
 * not look at names, types or value bytes; imsg_changeset_decode() does.
 * The manager uses it, through imsg_changeset_count(), to check that a
 * reassembled change set is whole.
 *
 * It checks every length against what is left before reading, so the
 * buffer readers never report an overrun: the walk raises no error and
 * needs no PG_TRY.  A malformed change set is a return value (-1) with a
 * reason; the caller decides whether that is an error.  This is the seam
 * that lets the file build outside the server, with IMSG_BUFFER_STANDALONE
 * and src/buffer.c, for the fuzz target src/test/fuzz/fuzz_changeset.c.
 *
 * Copyright (c) 2026, imessages developers
 *
 * IDENTIFICATION
 *	  src/changeset_walk.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "imessages_int.h"
#include "changeset_walk.h"

/* Memory: palloc in the server, malloc outside (freed before returning). */
#ifdef IMSG_BUFFER_STANDALONE
static void *
walk_realloc(void *p, Size size)
{
	p = realloc(p, size);
	if (p == NULL)
		abort();
	return p;
}
#define walk_free(p) free(p)
#else
#define walk_realloc(p, size) ((p) ? repalloc((p), (size)) : palloc(size))
#define walk_free(p) pfree(p)
#endif

/* What the walk knows of each declared relation, indexed by its id. */
typedef struct WalkRelations
{
	int		   *ncols;			/* -1: not declared */
	int		   *nkeys;
	int			size;
} WalkRelations;

/* Skip a length-prefixed string; false if it does not fit. */
static bool
walk_string(ImsgBuffer *in)
{
	uint32		len;

	if (ImsgBufferRemaining(in) < 4)
		return false;
	len = (uint32) ImsgBufferGetInt32(in);
	if (len > ImsgBufferRemaining(in))
		return false;
	(void) ImsgBufferGetBytes(in, len);
	return true;
}

/* Skip 'values' of 'expected' columns; NULL if fine, else why not. */
static const char *
walk_values(ImsgBuffer *in, int expected)
{
	int16		n;
	int			i;

	if (ImsgBufferRemaining(in) < 2)
		return "It ends in the middle of a record.";
	n = ImsgBufferGetInt16(in);
	if (n != expected)
		return "A row has the wrong number of values.";
	for (i = 0; i < n; i++)
	{
		int8		kind;

		if (ImsgBufferRemaining(in) < 1)
			return "It ends in the middle of a record.";
		kind = ImsgBufferGetInt8(in);
		if (kind == IMSG_CS_NULL)
			continue;
		if (kind != IMSG_CS_BINARY && kind != IMSG_CS_TEXT)
			return "A value has an unknown kind.";
		if (!walk_string(in))
			return "It ends in the middle of a record.";
	}
	return NULL;
}

/* Read an 'R' record's body (after its id) into rels; NULL or why not. */
static const char *
walk_relation(ImsgBuffer *in, WalkRelations *rels, int32 id)
{
	int16		n;
	int			i;

	if (id >= rels->size)
	{
		int			newsize = Max(id + 1, rels->size * 2);

		rels->ncols = walk_realloc(rels->ncols, sizeof(int) * newsize);
		rels->nkeys = walk_realloc(rels->nkeys, sizeof(int) * newsize);
		for (i = rels->size; i < newsize; i++)
			rels->ncols[i] = -1;
		rels->size = newsize;
	}
	if (!walk_string(in) || !walk_string(in) || ImsgBufferRemaining(in) < 2)
		return "It ends in the middle of a record.";
	n = ImsgBufferGetInt16(in);
	if (n < 0)
		return "A relation has an invalid number of columns.";
	rels->ncols[id] = n;
	rels->nkeys[id] = 0;
	for (i = 0; i < n; i++)
	{
		if (!walk_string(in) || !walk_string(in) || ImsgBufferRemaining(in) < 1)
			return "It ends in the middle of a record.";
		if (ImsgBufferGetInt8(in) & IMSG_CS_COL_KEY)
			rels->nkeys[id]++;
	}
	return NULL;
}

int64
imsg_changeset_walk(const char *data, Size len, const char **why)
{
	ImsgBuffer	in;
	WalkRelations rels = {NULL, NULL, 0};
	int64		changes = 0;
	const char *bad = NULL;

	if (len < 5 || (uint64) len > PG_UINT32_MAX)
		bad = "It does not start with the change-set header.";
	else
	{
		ImsgBufferInitReader(&in, data, (uint32) len);
		if ((uint32) ImsgBufferGetInt32(&in) != IMSG_CS_MAGIC)
			bad = "It does not start with the change-set header.";
		else if (ImsgBufferGetInt8(&in) != IMSG_CS_VERSION)
			bad = "Its version is not supported.";
	}
	while (bad == NULL && ImsgBufferRemaining(&in) > 0)
	{
		int8		tag;
		int32		id;

		if (ImsgBufferRemaining(&in) < 5)
		{
			bad = "It ends in the middle of a record.";
			break;
		}
		tag = ImsgBufferGetInt8(&in);
		id = ImsgBufferGetInt32(&in);
		if (id < 0 || id >= IMSG_CS_MAX_RELATIONS)
			bad = "A relation id is out of range.";
		else if (tag == IMSG_CS_RELATION)
			bad = walk_relation(&in, &rels, id);
		else if (tag != IMSG_CS_INSERT && tag != IMSG_CS_UPDATE &&
				 tag != IMSG_CS_DELETE)
			bad = "A record has an unknown type.";
		else if (id >= rels.size || rels.ncols[id] < 0)
			bad = "A change refers to an undeclared relation.";
		else
		{
			if (tag == IMSG_CS_INSERT)
				bad = walk_values(&in, rels.ncols[id]);
			else if (tag == IMSG_CS_UPDATE)
			{
				bad = walk_values(&in, rels.nkeys[id]);
				if (bad == NULL)
					bad = walk_values(&in, rels.ncols[id]);
			}
			else
				bad = walk_values(&in, rels.nkeys[id]);
			if (bad == NULL)
				changes++;
		}
	}
	if (rels.ncols)
		walk_free(rels.ncols);
	if (rels.nkeys)
		walk_free(rels.nkeys);
	if (why)
		*why = bad;
	return bad ? -1 : changes;
}
