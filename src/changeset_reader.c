/*-------------------------------------------------------------------------
 *
 * changeset_reader.c
 *	  The one reader of the change-set format.
 *
 * Everything that reads a change set reads it through here, as
 * PostgreSQL's logical replication has one reader of its protocol
 * (proto.c) for every apply path: the manager's summary (the count for
 * the delivered record and the row identities certification compares),
 * imsg_changeset_decode(), the helpers' apply, and the backend's note of
 * its own writes (local_writes.c).  So the framing is checked in one
 * place, and a row is named by one function on the backend that wrote
 * it, on its own manager and on every other node.
 *
 * imsg_cs_reader_next() checks the framing of each record before it
 * yields it: the header, record tags, that every change refers to a
 * relation declared before it, that each row has as many values as its
 * relation has columns (or key columns), and value kinds.  It does not
 * look at types or value bytes; its callers do (apply, decode).  Values
 * and names are yielded in place, not copied.
 *
 * It checks every length against what is left before reading, so the
 * buffer readers never report an overrun: the reader raises no error and
 * needs no PG_TRY.  A malformed change set ends the records, with a
 * reason; the caller decides whether that is an error.  This is the seam
 * that lets the file build outside the server, with IMSG_BUFFER_STANDALONE
 * and src/buffer.c, for the fuzz target src/test/fuzz/fuzz_changeset.c.
 *
 * Copyright (c) 2026, imessages developers
 *
 * IDENTIFICATION
 *	  src/changeset_reader.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "common/hashfn.h"
#ifndef IMSG_BUFFER_STANDALONE
#include "utils/memutils.h"
#endif

#include "changeset_int.h"
#include "changeset_reader.h"

/* Memory: palloc in the server, malloc outside. */
#ifdef IMSG_BUFFER_STANDALONE
static void *
reader_realloc(void *p, Size size)
{
	p = realloc(p, size);
	if (p == NULL)
		abort();
	return p;
}
#define reader_free(p) free(p)
#else
/* huge: a summary's rows of a big change set may pass MaxAllocSize */
#define reader_realloc(p, size) \
	((p) ? repalloc_huge((p), (size)) : MemoryContextAllocHuge(CurrentMemoryContext, (size)))
#define reader_free(p) pfree(p)
#endif

/* What the reader knows of a declared relation. */
struct ImsgCsReaderRel
{
	int			ncols;			/* -1: not declared */
	int			nkeys;
	uint64		name_hash;		/* of its schema and name */
	bool	   *is_key;			/* by column */
	int			is_key_size;
};

static const char *const ends_early = "It ends in the middle of a record.";

/* Make *array hold 'n' elements of 'elem' bytes. */
static void
reserve(void **array, int *size, int n, Size elem)
{
	if (n <= *size)
		return;
	*size = Max(n, Max(*size * 2, 8));
	*array = reader_realloc(*array, elem * *size);
}

/* A length-prefixed string's bytes and *len, or NULL if it does not fit. */
static const char *
read_string(ImsgBuffer *in, uint32 *len)
{
	if (ImsgBufferRemaining(in) < 4)
		return NULL;
	*len = (uint32) ImsgBufferGetInt32(in);
	if (*len > ImsgBufferRemaining(in))
		return NULL;
	return ImsgBufferGetBytes(in, *len);
}

/* The identity of a table's name: the seed of its rows' identities. */
static uint64
name_hash(const char *schema, uint32 schema_len, const char *name, uint32 name_len)
{
	return hash_combine64(hash_bytes_extended((const unsigned char *) schema, schema_len, 0),
						  hash_bytes_extended((const unsigned char *) name, name_len, 1));
}

/*
 * Read an 'S' record's body (after its id) into r->rec; NULL or why not.
 */
static const char *
read_statement(ImsgCsReader *r)
{
	ImsgBuffer *in = &r->in;
	ImsgCsRecord *rec = &r->rec;
	int16		n;
	int			i;

	rec->search_path = read_string(in, &rec->search_path_len);
	rec->sql = rec->search_path ? read_string(in, &rec->sql_len) : NULL;
	if (rec->sql == NULL || ImsgBufferRemaining(in) < 3)
		return ends_early;
	rec->stmt_flags = ImsgBufferGetInt8(in);
	if (rec->stmt_flags & ~(IMSG_CS_STMT_EXCLUSIVE | IMSG_CS_STMT_REPLICATE))
		return "A statement has flags this version does not know.";
	n = ImsgBufferGetInt16(in);
	if (n < 0)
		return "A statement has an invalid number of tables.";
	reserve((void **) &r->tables, &r->tables_size, Max(n, 1), sizeof(uint64));
	for (i = 0; i < n; i++)
	{
		const char *schema;
		const char *name;
		uint32		schema_len;
		uint32		name_len;

		schema = read_string(in, &schema_len);
		name = schema ? read_string(in, &name_len) : NULL;
		if (name == NULL)
			return ends_early;
		r->tables[i] = name_hash(schema, schema_len, name, name_len);
	}
	rec->ntables = n;
	rec->tables = r->tables;
	rec->n = r->changes;
	rec->nkey = rec->nvalues = 0;
	rec->row = rec->new_row = 0;
	return NULL;
}

/*
 * Read a values list of 'expected' values into out[]; NULL if fine, else
 * why not.  If 'row' is not NULL, *row becomes the identity of the row the
 * values name: a hash of the relation's name and of the key columns'
 * values (is_key says which are key columns, or all are if NULL, for a
 * list of key values).
 */
static const char *
read_values(ImsgBuffer *in, int expected, ImsgCsValue *out,
			uint64 name_hash, const bool *is_key, uint64 *row)
{
	int16		n;
	int			i;
	uint64		h = name_hash;

	if (ImsgBufferRemaining(in) < 2)
		return ends_early;
	n = ImsgBufferGetInt16(in);
	if (n != expected)
		return "A row has the wrong number of values.";
	for (i = 0; i < n; i++)
	{
		ImsgCsValue *v = &out[i];
		bool		key = is_key == NULL || is_key[i];

		if (ImsgBufferRemaining(in) < 1)
			return ends_early;
		v->kind = ImsgBufferGetInt8(in);
		if (v->kind == IMSG_CS_NULL)
		{
			v->len = 0;
			v->data = NULL;
			if (key)
				h = hash_combine64(h, 0x6e);
			continue;
		}
		if (v->kind != IMSG_CS_BINARY && v->kind != IMSG_CS_TEXT)
			return "A value has an unknown kind.";
		if ((v->data = read_string(in, &v->len)) == NULL)
			return ends_early;
		if (key && row != NULL)
			h = hash_combine64(h, hash_bytes_extended((const unsigned char *) v->data,
													  v->len, v->kind));
	}
	if (row != NULL)
		*row = h;
	return NULL;
}

/* Read an 'R' record's body (after its id) into r->rec; NULL or why not. */
static const char *
read_relation(ImsgCsReader *r, int32 id)
{
	ImsgBuffer *in = &r->in;
	ImsgCsRecord *rec = &r->rec;
	ImsgCsReaderRel *rel;
	int16		n;
	int			i;

	if (id >= r->nrels)
	{
		int			old = r->nrels;

		reserve((void **) &r->rels, &r->nrels, id + 1, sizeof(ImsgCsReaderRel));
		for (i = old; i < r->nrels; i++)
		{
			r->rels[i].ncols = -1;
			r->rels[i].is_key = NULL;
			r->rels[i].is_key_size = 0;
		}
	}
	rel = &r->rels[id];
	rec->schema = read_string(in, &rec->schema_len);
	rec->name = rec->schema ? read_string(in, &rec->name_len) : NULL;
	if (rec->name == NULL || ImsgBufferRemaining(in) < 2)
		return ends_early;
	n = ImsgBufferGetInt16(in);
	if (n < 0)
		return "A relation has an invalid number of columns.";
	/* a relation described again (a new version of it) replaces the old */
	rel->ncols = -1;
	rel->nkeys = 0;
	rel->name_hash = name_hash(rec->schema, rec->schema_len, rec->name, rec->name_len);
	reserve((void **) &rel->is_key, &rel->is_key_size, Max(n, 1), sizeof(bool));
	reserve((void **) &r->cols, &r->cols_size, Max(n, 1), sizeof(ImsgCsColumn));
	for (i = 0; i < n; i++)
	{
		ImsgCsColumn *c = &r->cols[i];

		c->name = read_string(in, &c->name_len);
		c->type = c->name ? read_string(in, &c->type_len) : NULL;
		if (c->type == NULL || ImsgBufferRemaining(in) < 1)
			return ends_early;
		c->flags = ImsgBufferGetInt8(in);
		rel->is_key[i] = (c->flags & IMSG_CS_COL_KEY) != 0;
		if (rel->is_key[i])
			rel->nkeys++;
	}
	rel->ncols = n;
	rec->ncols = n;
	rec->cols = r->cols;
	return NULL;
}

/* Read a change's body (after its relation id) into r->rec. */
static const char *
read_change(ImsgCsReader *r, int8 tag, int32 id)
{
	ImsgCsRecord *rec = &r->rec;
	ImsgCsReaderRel *rel;
	uint64	   *row = r->want_rows ? &rec->row : NULL;
	const char *bad = NULL;

	if (id >= r->nrels || r->rels[id].ncols < 0)
		return "A change refers to an undeclared relation.";
	rel = &r->rels[id];
	reserve((void **) &r->key, &r->key_size, Max(rel->nkeys, 1), sizeof(ImsgCsValue));
	reserve((void **) &r->values, &r->values_size, Max(rel->ncols, 1), sizeof(ImsgCsValue));
	rec->n = r->changes;
	rec->nkey = 0;
	rec->key = r->key;
	rec->nvalues = 0;
	rec->values = r->values;
	rec->row = 0;
	rec->new_row = 0;

	/* I: every column; U: old key, then every column; D: old key */
	if (tag != IMSG_CS_INSERT)
	{
		rec->nkey = rel->nkeys;
		bad = read_values(&r->in, rel->nkeys, r->key, rel->name_hash, NULL, row);
	}
	if (bad == NULL && tag != IMSG_CS_DELETE)
	{
		rec->nvalues = rel->ncols;
		bad = read_values(&r->in, rel->ncols, r->values, rel->name_hash, rel->is_key,
						  r->want_rows ? &rec->new_row : NULL);
		if (tag == IMSG_CS_INSERT)
			rec->row = rec->new_row;
	}
	return bad;
}

void
imsg_cs_reader_init(ImsgCsReader *r, const char *data, Size len, bool want_rows)
{
	memset(r, 0, sizeof(ImsgCsReader));
	r->want_rows = want_rows;
	if (len < 5 || (uint64) len > PG_UINT32_MAX)
	{
		r->why = "It does not start with the change-set header.";
		return;
	}
	ImsgBufferInitReader(&r->in, data, (uint32) len);
	if ((uint32) ImsgBufferGetInt32(&r->in) != IMSG_CS_MAGIC)
		r->why = "It does not start with the change-set header.";
	else if (ImsgBufferGetInt8(&r->in) != IMSG_CS_VERSION)
		r->why = "Its version is not supported.";
}

/*
 * The next record, or NULL at the end of the change set or at a malformed
 * record (then r->why says what is wrong, and every later call returns
 * NULL too).
 */
const ImsgCsRecord *
imsg_cs_reader_next(ImsgCsReader *r)
{
	ImsgCsRecord *rec = &r->rec;

	if (r->why != NULL || ImsgBufferRemaining(&r->in) == 0)
		return NULL;
	if (ImsgBufferRemaining(&r->in) < 5)
	{
		r->why = ends_early;
		return NULL;
	}
	rec->tag = ImsgBufferGetInt8(&r->in);
	rec->rel = ImsgBufferGetInt32(&r->in);
	rec->ntables = 0;			/* (a statement's; the record is reused) */
	if (rec->rel < 0 || rec->rel >= IMSG_CS_MAX_RELATIONS)
		r->why = "A relation id is out of range.";
	else if (rec->tag == IMSG_CS_RELATION)
		r->why = read_relation(r, rec->rel);
	else if (rec->tag == IMSG_CS_INSERT || rec->tag == IMSG_CS_UPDATE ||
			 rec->tag == IMSG_CS_DELETE)
	{
		r->why = read_change(r, rec->tag, rec->rel);
		if (r->why == NULL)
			r->changes++;
	}
	else if (rec->tag == IMSG_CS_STATEMENT)
	{
		r->why = read_statement(r);
		if (r->why == NULL)
			r->changes++;
	}
	else
		r->why = "A record has an unknown type.";
	return r->why == NULL ? rec : NULL;
}

void
imsg_cs_reader_free(ImsgCsReader *r)
{
	int			i;

	for (i = 0; i < r->nrels; i++)
		if (r->rels[i].is_key)
			reader_free(r->rels[i].is_key);
	if (r->rels)
		reader_free(r->rels);
	if (r->cols)
		reader_free(r->cols);
	if (r->key)
		reader_free(r->key);
	if (r->values)
		reader_free(r->values);
	if (r->tables)
		reader_free(r->tables);
	r->tables = NULL;
	r->tables_size = 0;
	r->rels = NULL;
	r->cols = NULL;
	r->key = NULL;
	r->values = NULL;
	r->nrels = r->cols_size = r->key_size = r->values_size = 0;
}

/*
 * Summarize a change set in one read: returns s->nchanges, -1 if it is
 * malformed (s->why says why; s->rows is then empty).
 */
int64
imsg_changeset_summarize(const char *data, Size len, bool want_rows, ImsgCsSummary *s)
{
	ImsgCsReader r;
	const ImsgCsRecord *rec;
	int			size = 0;
	int			checks_size = 0;
	int			writes_size = 0;
	int			i;

	memset(s, 0, sizeof(ImsgCsSummary));
	imsg_cs_reader_init(&r, data, len, want_rows);
	while ((rec = imsg_cs_reader_next(&r)) != NULL)
	{
		if (rec->tag == IMSG_CS_STATEMENT)
			s->has_statement = true;
		if (!want_rows)
			continue;
		if (rec->tag == IMSG_CS_RELATION)
		{
			/* rows of it follow (a relation is described before its first) */
			uint64		h = r.rels[rec->rel].name_hash;

			reserve((void **) &s->checks, &checks_size, (int) s->ntables + 1, sizeof(uint64));
			reserve((void **) &s->writes, &writes_size, (int) s->ntables + 1, sizeof(uint64));
			s->checks[s->ntables] = IMSG_TABLE_DDL_ID(h);
			s->writes[s->ntables++] = IMSG_TABLE_WRITTEN_ID(h);
			continue;
		}
		if (s->nrows + 2 + 2 * rec->ntables > size)
		{
			/*
			 * at most 2 rows per change (2 per table of a statement), and a
			 * change takes 7 bytes at least
			 */
			if (size >= INT_MAX / 2)
			{
				r.why = "It has too many changes.";
				break;
			}
			reserve((void **) &s->rows, &size, (int) s->nrows + 2 + 2 * rec->ntables,
					sizeof(uint64));
		}
		if (rec->tag == IMSG_CS_STATEMENT)
		{
			for (i = 0; i < rec->ntables; i++)
			{
				s->rows[s->nrows++] = IMSG_TABLE_DDL_ID(rec->tables[i]);
				if (rec->stmt_flags & IMSG_CS_STMT_EXCLUSIVE)
					s->rows[s->nrows++] = IMSG_TABLE_WRITTEN_ID(rec->tables[i]);
			}
			continue;
		}
		s->rows[s->nrows++] = rec->row;
		if (rec->tag == IMSG_CS_UPDATE)
			s->rows[s->nrows++] = rec->new_row;
	}
	s->why = r.why;
	s->nchanges = r.why ? -1 : r.changes;
	if (r.why)
		s->nrows = s->ntables = 0;
	imsg_cs_reader_free(&r);
	return s->nchanges;
}

void
imsg_changeset_summary_free(ImsgCsSummary *s)
{
	if (s->rows)
		reader_free(s->rows);
	if (s->checks)
		reader_free(s->checks);
	if (s->writes)
		reader_free(s->writes);
	s->rows = s->checks = s->writes = NULL;
	s->nrows = s->ntables = 0;
}
