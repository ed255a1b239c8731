/*-------------------------------------------------------------------------
 *
 * changeset_reader.h
 *	  The one reader of the change-set format (see "Change-set format" in
 *	  imessages_int.h), shared by the server and the fuzz target
 *	  (src/test/fuzz/fuzz_changeset.c).
 *
 * Copyright (c) 2026, imessages developers
 *
 * IDENTIFICATION
 *	  src/changeset_reader.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef IMESSAGES_CHANGESET_READER_H
#define IMESSAGES_CHANGESET_READER_H

/* Relation ids in a change set are below this. */
#define IMSG_CS_MAX_RELATIONS	65536

/* A value as it is in the change set: its bytes are not copied. */
typedef struct ImsgCsValue
{
	int8		kind;			/* IMSG_CS_NULL, _BINARY or _TEXT */
	uint32		len;
	const char *data;			/* not NUL-terminated; NULL for a null */
} ImsgCsValue;

/* A column of an 'R' record, its strings not copied either. */
typedef struct ImsgCsColumn
{
	const char *name;
	uint32		name_len;
	const char *type;
	uint32		type_len;
	int8		flags;			/* IMSG_CS_COL_* */
} ImsgCsColumn;

/*
 * One record, valid until the next imsg_cs_reader_next() call.  The reader
 * has checked its framing: a change refers to a relation declared before
 * it, and has as many values as that relation has columns (or key
 * columns); it has not looked at types or value bytes.
 */
typedef struct ImsgCsRecord
{
	int8		tag;			/* IMSG_CS_RELATION, _INSERT, _UPDATE, _DELETE,
								 * _STATEMENT */
	int32		rel;			/* the relation's id in this change set */

	/* IMSG_CS_RELATION */
	const char *schema;
	uint32		schema_len;
	const char *name;
	uint32		name_len;
	int			ncols;
	const ImsgCsColumn *cols;

	/* IMSG_CS_STATEMENT (its tables' names are not returned) */
	const char *search_path;
	uint32		search_path_len;
	const char *sql;
	uint32		sql_len;
	int8		stmt_flags;		/* IMSG_CS_STMT_* */
	int			ntables;		/* the identities of its tables' names */
	const uint64 *tables;

	/* a change (a statement counts as one) */
	int64		n;				/* its number, from 0 */
	int			nkey;			/* update, delete: the old key, key columns' */
	const ImsgCsValue *key;
	int			nvalues;		/* insert, update: every column's new value */
	const ImsgCsValue *values;

	/*
	 * When asked for (imsg_cs_reader_init's want_rows): the identity of
	 * the row the change finds (the old key of an update or a delete, the
	 * key of an inserted row) and of the row it leaves (the key of an
	 * inserted row or of an update's new row; 0 for a delete).  An identity
	 * is a hash of the table's schema and name and of the key columns'
	 * value bytes: the one name of a row for certification and for
	 * local_writes.c, alike on every node.
	 */
	uint64		row;
	uint64		new_row;
} ImsgCsRecord;

typedef struct ImsgCsReaderRel ImsgCsReaderRel;

/* A pull reader; its fields are private to changeset_reader.c but 'why'. */
typedef struct ImsgCsReader
{
	ImsgBuffer	in;
	bool		want_rows;
	int64		changes;		/* changes read so far */
	const char *why;			/* set when it stops on a malformed record */
	ImsgCsReaderRel *rels;		/* by relation id */
	int			nrels;
	ImsgCsColumn *cols;
	int			cols_size;
	ImsgCsValue *key;
	int			key_size;
	ImsgCsValue *values;
	int			values_size;
	uint64	   *tables;
	int			tables_size;
	ImsgCsRecord rec;
} ImsgCsReader;

/*
 * Read the change set 'data' of 'len' bytes (kept, not copied).  Never
 * raises an error and never reads outside data[0 .. len-1]: a malformed
 * change set makes imsg_cs_reader_next() return NULL with r->why set to a
 * sentence for an errdetail.  In the server it allocates in the current
 * memory context; imsg_cs_reader_free() gives it back.
 */
extern void imsg_cs_reader_init(ImsgCsReader *r, const char *data, Size len,
								bool want_rows);
extern const ImsgCsRecord *imsg_cs_reader_next(ImsgCsReader *r);
extern void imsg_cs_reader_free(ImsgCsReader *r);

/*
 * What the manager needs of a change set, from one read: how many changes
 * it has (or -1 and why it is malformed), whether it has a statement, and,
 * if want_rows, the rows each change finds and leaves (an update's old and
 * new row, both), in order, and its tables' identities for certification
 * (see certify.c): a statement's tables' "DDL" identities, and for an
 * exclusive one (a column's type changes) their "written" ones too, go
 * into rows (checked and recorded); for a table it only changes rows
 * of, its "DDL" identity goes into checks and its "written" one into
 * writes (ntables of each).  imsg_replicate()'s statement is an exclusive
 * one: it replaces the table's rows.
 */
typedef struct ImsgCsSummary
{
	int64		nchanges;
	const char *why;
	bool		has_statement;
	int64		nrows;
	uint64	   *rows;
	int64		ntables;
	uint64	   *checks;
	uint64	   *writes;
} ImsgCsSummary;

/*
 * A table's identities for certification, from the identity of its name:
 * "a statement changed it" and "rows of it were written".
 */
#define IMSG_TABLE_DDL_ID(h)		hash_combine64((h), UINT64CONST(0x44444c))
#define IMSG_TABLE_WRITTEN_ID(h)	hash_combine64((h), UINT64CONST(0x575254))

extern int64 imsg_changeset_summarize(const char *data, Size len, bool want_rows,
									  ImsgCsSummary *s);
extern void imsg_changeset_summary_free(ImsgCsSummary *s);

#endif							/* IMESSAGES_CHANGESET_READER_H */
