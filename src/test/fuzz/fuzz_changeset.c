/*-------------------------------------------------------------------------
 *
 * fuzz_changeset.c
 *	  libFuzzer target for the change-set reader (src/changeset_reader.c
 *	  and src/buffer.c built with IMSG_BUFFER_STANDALONE).
 *
 * For every input it checks that the reader, and the summaries the
 * manager certifies and records from:
 *	 - never reads outside the input (the input ends where libFuzzer's
 *	   allocation ends, so ASan sees any overrun), never reaches the buffer
 *	   readers' overrun report (it must check lengths first), and does not
 *	   leak (LeakSanitizer);
 *	 - stops with a reason, or counts changes >= 0 with none; yields
 *	   records whose names and values lie inside the input, changes
 *	   numbered 0, 1, 2..., and two rows for an update, one otherwise;
 *	 - agrees with an independent reference walk written the way the
 *	   server's imsg_changeset_count() used to be, catching short reads as
 *	   errors (here through a longjmp) instead of checking lengths first;
 *	 - counts one more on a valid change set with a change appended, and
 *	   rejects it cut short by one byte.
 *
 * Copyright (c) 2026, imessages developers
 *
 * IDENTIFICATION
 *	  src/test/fuzz/fuzz_changeset.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <setjmp.h>
#include <stdio.h>

#include "changeset_int.h"
#include "changeset_reader.h"

/* port.h maps these to libpgport, which the target does not link */
#undef printf
#undef fprintf

int			LLVMFuzzerTestOneInput(const uint8 *data, size_t size);
void		imsg_buffer_overrun(const ImsgBuffer *buf, bool reading, uint64 wanted);

#define CHECK(cond) \
	do { \
		if (!(cond)) \
		{ \
			fprintf(stderr, "fuzz_changeset: check failed at line %d: %s\n", \
					__LINE__, #cond); \
			abort(); \
		} \
	} while (0)

static sigjmp_buf short_read;
static bool in_reference = false;

/* Only the reference walk may read short; the reader under test never. */
void
imsg_buffer_overrun(const ImsgBuffer *buf, bool reading, uint64 wanted)
{
	CHECK(in_reference && reading);
	siglongjmp(short_read, 1);
}

/* The reference: values of 'expected' columns, false if malformed. */
static bool
ref_values(ImsgBuffer *in, int expected)
{
	int16		n = ImsgBufferGetInt16(in);
	int			i;

	if (n != expected)
		return false;
	for (i = 0; i < n; i++)
	{
		int8		kind = ImsgBufferGetInt8(in);
		uint32		len;

		if (kind == IMSG_CS_NULL)
			continue;
		if (kind != IMSG_CS_BINARY && kind != IMSG_CS_TEXT)
			return false;
		(void) ImsgBufferGetString(in, &len);
	}
	return true;
}

/* ncols/nkeys per relation id for the reference; -1: not declared */
static int	ref_ncols[IMSG_CS_MAX_RELATIONS];
static int	ref_nkeys[IMSG_CS_MAX_RELATIONS];

/*
 * The reference walk: imsg_changeset_count() as it was before the reader
 * (PG_TRY around buffer reads).
 */
static int64
ref_count(const uint8 *data, size_t len)
{
	ImsgBuffer	in;
	volatile int64 changes = 0;
	volatile bool ok = true;
	volatile int32 maxid = -1;

	if (len < 5 || len > PG_UINT32_MAX)
		return -1;
	ImsgBufferInitReader(&in, data, (uint32) len);
	in_reference = true;
	if (sigsetjmp(short_read, 0) == 0)
	{
		if ((uint32) ImsgBufferGetInt32(&in) != IMSG_CS_MAGIC ||
			ImsgBufferGetInt8(&in) != IMSG_CS_VERSION)
			ok = false;
		while (ok && ImsgBufferRemaining(&in) > 0)
		{
			int8		tag = ImsgBufferGetInt8(&in);
			int32		id = ImsgBufferGetInt32(&in);
			uint32		l;

			if (id < 0 || id >= IMSG_CS_MAX_RELATIONS)
				ok = false;
			else if (tag == IMSG_CS_RELATION)
			{
				int16		n;
				int			i;

				for (i = maxid + 1; i <= id; i++)
					ref_ncols[i] = -1;
				if (id > maxid)
					maxid = id;
				(void) ImsgBufferGetString(&in, &l);
				(void) ImsgBufferGetString(&in, &l);
				n = ImsgBufferGetInt16(&in);
				ok = n >= 0;
				ref_ncols[id] = n;
				ref_nkeys[id] = 0;
				for (i = 0; ok && i < n; i++)
				{
					(void) ImsgBufferGetString(&in, &l);
					(void) ImsgBufferGetString(&in, &l);
					if (ImsgBufferGetInt8(&in) & IMSG_CS_COL_KEY)
						ref_nkeys[id]++;
				}
			}
			else if (tag == IMSG_CS_STATEMENT)
			{
				int16		n;
				int			i;
				int8		stmt_flags;

				(void) ImsgBufferGetString(&in, &l);
				(void) ImsgBufferGetString(&in, &l);
				stmt_flags = ImsgBufferGetInt8(&in);
				n = ImsgBufferGetInt16(&in);
				ok = n >= 0 &&
					(stmt_flags & ~(IMSG_CS_STMT_EXCLUSIVE | IMSG_CS_STMT_REPLICATE)) == 0;
				for (i = 0; ok && i < n; i++)
				{
					(void) ImsgBufferGetString(&in, &l);
					(void) ImsgBufferGetString(&in, &l);
				}
			}
			else if (id > maxid || ref_ncols[id] < 0)
				ok = false;
			else if (tag == IMSG_CS_INSERT)
				ok = ref_values(&in, ref_ncols[id]);
			else if (tag == IMSG_CS_UPDATE)
				ok = ref_values(&in, ref_nkeys[id]) && ref_values(&in, ref_ncols[id]);
			else if (tag == IMSG_CS_DELETE)
				ok = ref_values(&in, ref_nkeys[id]);
			else
				ok = false;
			if (ok && tag != IMSG_CS_RELATION)
				changes++;
		}
	}
	else
		ok = false;
	in_reference = false;
	return ok ? changes : -1;
}

/* Does [p, p + len) lie inside the input? */
static bool
inside(const uint8 *data, size_t size, const char *p, uint32 len)
{
	return (const uint8 *) p >= data && (const uint8 *) p + len <= data + size;
}

/*
 * The reader under test, with the checks every record must pass, and the
 * summaries (with and without rows, as the manager takes them for
 * certification and the delivered record) agreeing with it.
 */
static int64
walk(const uint8 *data, size_t len)
{
	ImsgCsReader r;
	const ImsgCsRecord *rec;
	ImsgCsSummary plain;
	ImsgCsSummary with_rows;
	int64		changes = 0;
	int64		rows = 0;
	int64		n;
	int			i;

	imsg_cs_reader_init(&r, (const char *) data, len, true);
	while ((rec = imsg_cs_reader_next(&r)) != NULL)
	{
		CHECK(r.why == NULL);
		CHECK(rec->rel >= 0 && rec->rel < IMSG_CS_MAX_RELATIONS);
		if (rec->tag == IMSG_CS_RELATION)
		{
			CHECK(inside(data, len, rec->schema, rec->schema_len));
			CHECK(inside(data, len, rec->name, rec->name_len));
			CHECK(rec->ncols >= 0);
			for (i = 0; i < rec->ncols; i++)
			{
				CHECK(inside(data, len, rec->cols[i].name, rec->cols[i].name_len));
				CHECK(inside(data, len, rec->cols[i].type, rec->cols[i].type_len));
			}
			continue;
		}
		if (rec->tag == IMSG_CS_STATEMENT)
		{
			CHECK(inside(data, len, rec->search_path, rec->search_path_len));
			CHECK(inside(data, len, rec->sql, rec->sql_len));
			CHECK(rec->ntables >= 0);
			CHECK(rec->n == changes);
			changes++;
			rows += (rec->stmt_flags & IMSG_CS_STMT_EXCLUSIVE ? 2 : 1) * rec->ntables;
			continue;
		}
		CHECK(rec->tag == IMSG_CS_INSERT || rec->tag == IMSG_CS_UPDATE ||
			  rec->tag == IMSG_CS_DELETE);
		CHECK(rec->n == changes);
		CHECK(rec->tag != IMSG_CS_DELETE || (rec->nvalues == 0 && rec->new_row == 0));
		CHECK(rec->tag != IMSG_CS_INSERT || (rec->nkey == 0 && rec->new_row == rec->row));
		for (i = 0; i < rec->nkey; i++)
			CHECK(rec->key[i].kind == IMSG_CS_NULL ? rec->key[i].data == NULL :
				  inside(data, len, rec->key[i].data, rec->key[i].len));
		for (i = 0; i < rec->nvalues; i++)
			CHECK(rec->values[i].kind == IMSG_CS_NULL ? rec->values[i].data == NULL :
				  inside(data, len, rec->values[i].data, rec->values[i].len));
		changes++;
		rows += rec->tag == IMSG_CS_UPDATE ? 2 : 1;
	}
	/* once at the end, it stays there */
	CHECK(imsg_cs_reader_next(&r) == NULL);
	CHECK(r.changes == changes);
	n = r.why ? -1 : changes;
	imsg_cs_reader_free(&r);

	CHECK(imsg_changeset_summarize((const char *) data, len, false, &plain) == n);
	CHECK(imsg_changeset_summarize((const char *) data, len, true, &with_rows) == n);
	CHECK((plain.why == NULL) == (n >= 0));
	CHECK((with_rows.why == NULL) == (n >= 0));
	CHECK(n == -1 || n <= (int64) len);
	CHECK(plain.nrows == 0 && plain.rows == NULL);
	CHECK(with_rows.nrows == (n >= 0 ? rows : 0));
	imsg_changeset_summary_free(&plain);
	imsg_changeset_summary_free(&with_rows);
	return n;
}

int
LLVMFuzzerTestOneInput(const uint8 *data, size_t size)
{
	int64		n = walk(data, size);
	int64		ref = ref_count(data, size);

	if (n != ref)
	{
		fprintf(stderr, "reader counts %lld, reference %lld\n",
				(long long) n, (long long) ref);
		abort();
	}

	/*
	 * A valid change set with a DELETE of relation 0 with an empty key
	 * appended: if the reference counts one more change (relation 0 was
	 * declared without key columns), so must the reader, and cutting that
	 * record short by a byte makes it malformed.
	 */
	if (n >= 0 && size < 65536)
	{
		static const uint8 del[] = {IMSG_CS_DELETE, 0, 0, 0, 0, 0, 0};
		uint8	   *more = malloc(size + sizeof(del));

		CHECK(more != NULL);
		memcpy(more, data, size);
		memcpy(more + size, del, sizeof(del));
		if (ref_count(more, size + sizeof(del)) == n + 1)
		{
			CHECK(walk(more, size + sizeof(del)) == n + 1);
			CHECK(walk(more, size + sizeof(del) - 1) == -1);
		}
		free(more);
	}
	return 0;
}

#ifdef FUZZ_WALK_MAIN
/*
 * Without libFuzzer (built by src/tools/fuzz.sh as walk_seeds): print
 * "file changes reason" for each file named, after the same checks.
 */
int
main(int argc, char **argv)
{
	int			i;

	for (i = 1; i < argc; i++)
	{
		FILE	   *f = fopen(argv[i], "rb");
		static uint8 buf[1 << 20];
		size_t		len;
		const char *why = NULL;
		int64		n;
		uint8	   *data;

		if (f == NULL)
		{
			perror(argv[i]);
			return 1;
		}
		len = fread(buf, 1, sizeof(buf), f);
		fclose(f);
		/* exactly sized, so that ASan sees a read past the end */
		data = malloc(len ? len : 1);
		CHECK(data != NULL);
		memcpy(data, buf, len);
		LLVMFuzzerTestOneInput(data, len);
		{
			ImsgCsSummary summary;

			n = imsg_changeset_summarize((const char *) data, len, false, &summary);
			why = summary.why;
		}
		printf("%s %lld %s\n", argv[i], (long long) n, why ? why : "");
		free(data);
	}
	return 0;
}
#endif
