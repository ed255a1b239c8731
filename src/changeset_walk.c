/*-------------------------------------------------------------------------
 *
 * changeset_walk.c
 *	  Structural walk of a change set without looking anything up.
 *
 * imsg_changeset_walk() checks a change set's framing (see "Change-set
 * format" in imessages_int.h): the header, record tags, that every change
 * refers to a relation declared before it, that each row has as many values
 * as its relation has columns (or key columns), and value kinds.  It does
 * not look at types or value bytes; imsg_changeset_decode() does.
 * The manager uses it, through imsg_changeset_count(), to check that a
 * reassembled change set is whole.
 *
 * imsg_changeset_read() is the same walk that also names the rows each
 * change finds and leaves (a hash of the table's schema and name and of
 * the key columns' value bytes): certification compares them, and the
 * apply of async change sets keys on them (see local_writes.c).  One
 * function computes a row's identity, so the backend that wrote a change
 * set, its own manager and every other node's manager and helpers all
 * name a row alike.
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

#include "common/hashfn.h"

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

/*
 * What the walk knows of each declared relation, indexed by its id: its
 * number of columns and of key columns, and, when rows are wanted, a hash
 * of its schema and name and which columns are key columns.
 */
typedef struct WalkRelations
{
	int		   *ncols;			/* -1: not declared */
	int		   *nkeys;
	uint64	   *name_hash;
	bool	  **is_key;
	int			size;
	bool		want_rows;
} WalkRelations;

/*
 * Skip a length-prefixed string; its bytes (not NUL-terminated) and *len,
 * or NULL if it does not fit.
 */
static const char *
walk_string(ImsgBuffer *in, uint32 *len)
{
	if (ImsgBufferRemaining(in) < 4)
		return NULL;
	*len = (uint32) ImsgBufferGetInt32(in);
	if (*len > ImsgBufferRemaining(in))
		return NULL;
	return ImsgBufferGetBytes(in, *len);
}

/*
 * Skip 'values' of 'expected' columns; NULL if fine, else why not.  If
 * 'row' is not NULL, *row becomes the identity of the row these values
 * name: a hash of the relation's name and of the key columns' values
 * (which of the values are key columns: is_key, or all of them if
 * is_key is NULL, for a list of key values).
 */
static const char *
walk_values(ImsgBuffer *in, int expected, uint64 name_hash, const bool *is_key,
			uint64 *row)
{
	int16		n;
	int			i;
	uint64		h = name_hash;

	if (ImsgBufferRemaining(in) < 2)
		return "It ends in the middle of a record.";
	n = ImsgBufferGetInt16(in);
	if (n != expected)
		return "A row has the wrong number of values.";
	for (i = 0; i < n; i++)
	{
		int8		kind;
		bool		key = is_key == NULL || is_key[i];
		uint32		len;
		const char *p;

		if (ImsgBufferRemaining(in) < 1)
			return "It ends in the middle of a record.";
		kind = ImsgBufferGetInt8(in);
		if (kind == IMSG_CS_NULL)
		{
			if (key)
				h = hash_combine64(h, 0x6e);
			continue;
		}
		if (kind != IMSG_CS_BINARY && kind != IMSG_CS_TEXT)
			return "A value has an unknown kind.";
		if (ImsgBufferRemaining(in) < 4)
			return "It ends in the middle of a record.";
		len = (uint32) ImsgBufferGetInt32(in);
		if (len > ImsgBufferRemaining(in))
			return "It ends in the middle of a record.";
		p = ImsgBufferGetBytes(in, len);
		if (key && row != NULL)
			h = hash_combine64(h, hash_bytes_extended((const unsigned char *) p, len, kind));
	}
	if (row != NULL)
		*row = h;
	return NULL;
}

/* Read an 'R' record's body (after its id) into rels; NULL or why not. */
static const char *
walk_relation(ImsgBuffer *in, WalkRelations *rels, int32 id)
{
	int16		n;
	int			i;

	uint32		schema_len;
	uint32		name_len;
	const char *schema;
	const char *name;

	if (id >= rels->size)
	{
		int			newsize = Max(id + 1, rels->size * 2);

		rels->ncols = walk_realloc(rels->ncols, sizeof(int) * newsize);
		rels->nkeys = walk_realloc(rels->nkeys, sizeof(int) * newsize);
		rels->name_hash = walk_realloc(rels->name_hash, sizeof(uint64) * newsize);
		rels->is_key = walk_realloc(rels->is_key, sizeof(bool *) * newsize);
		for (i = rels->size; i < newsize; i++)
		{
			rels->ncols[i] = -1;
			rels->is_key[i] = NULL;
		}
		rels->size = newsize;
	}
	schema = walk_string(in, &schema_len);
	name = schema ? walk_string(in, &name_len) : NULL;
	if (name == NULL || ImsgBufferRemaining(in) < 2)
		return "It ends in the middle of a record.";
	n = ImsgBufferGetInt16(in);
	if (n < 0)
		return "A relation has an invalid number of columns.";
	/* a relation described again (a new version of it) replaces the old */
	rels->ncols[id] = -1;
	rels->nkeys[id] = 0;
	rels->name_hash[id] =
		hash_combine64(hash_bytes_extended((const unsigned char *) schema, schema_len, 0),
					   hash_bytes_extended((const unsigned char *) name, name_len, 1));
	if (rels->want_rows)
	{
		if (rels->is_key[id])
			walk_free(rels->is_key[id]);
		rels->is_key[id] = walk_realloc(NULL, sizeof(bool) * Max(n, 1));
	}
	for (i = 0; i < n; i++)
	{
		uint32		l;
		bool		key;

		if (!walk_string(in, &l) || !walk_string(in, &l) || ImsgBufferRemaining(in) < 1)
			return "It ends in the middle of a record.";
		key = (ImsgBufferGetInt8(in) & IMSG_CS_COL_KEY) != 0;
		if (key)
			rels->nkeys[id]++;
		if (rels->want_rows)
			rels->is_key[id][i] = key;
	}
	rels->ncols[id] = n;
	return NULL;
}

int64
imsg_changeset_walk(const char *data, Size len, const char **why)
{
	return imsg_changeset_read(data, len, NULL, NULL, why);
}

int64
imsg_changeset_read(const char *data, Size len, ImsgCsRowCallback row_cb,
					void *arg, const char **why)
{
	ImsgBuffer	in;
	WalkRelations rels = {NULL, NULL, NULL, NULL, 0, row_cb != NULL};
	int64		changes = 0;
	int			i;
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
			uint64		nh = rels.name_hash[id];
			const bool *is_key = rels.is_key[id];
			uint64		row = 0;
			uint64		new_row = 0;
			uint64	   *want = row_cb ? &row : NULL;

			/* I: every column; U: old key, then every column; D: old key */
			if (tag == IMSG_CS_INSERT)
			{
				bad = walk_values(&in, rels.ncols[id], nh, is_key, want);
				new_row = row;
			}
			else if (tag == IMSG_CS_UPDATE)
			{
				bad = walk_values(&in, rels.nkeys[id], nh, NULL, want);
				if (bad == NULL)
					bad = walk_values(&in, rels.ncols[id], nh, is_key,
									  row_cb ? &new_row : NULL);
			}
			else
				bad = walk_values(&in, rels.nkeys[id], nh, NULL, want);
			if (bad == NULL)
			{
				if (row_cb)
					row_cb(arg, changes, tag, row, new_row);
				changes++;
			}
		}
	}
	for (i = 0; i < rels.size; i++)
		if (rels.is_key[i])
			walk_free(rels.is_key[i]);
	if (rels.ncols)
		walk_free(rels.ncols);
	if (rels.nkeys)
		walk_free(rels.nkeys);
	if (rels.name_hash)
		walk_free(rels.name_hash);
	if (rels.is_key)
		walk_free(rels.is_key);
	if (why)
		*why = bad;
	return bad ? -1 : changes;
}
