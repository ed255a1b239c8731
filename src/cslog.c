/*-------------------------------------------------------------------------
 *
 * cslog.c
 *	  The change-set log: the last change sets delivered to this node, in
 *	  the group's total order, each with its group-wide position.
 *
 * It is Galera's gcache: a node that was away for a while asks a donor for
 * the change sets after the last one it applied (imsg_changeset_log(), over
 * libpq) instead of copying the whole database.  The manager writes it and
 * has no database connection, so it is files, not a table: segments in
 * pg_imessages/changeset_log named by the position of their first record
 * (16 hex digits), each a run of consecutive records
 *
 *	  CslogHeader (48 bytes) | origin (node name) | data | zeros to 8 bytes
 *
 * with a CRC-32C over all three (the header's crc taken as 0).  A segment
 * is closed when the next record would not fit in imsg_cslog_segment_size();
 * the oldest segments are unlinked while the log is over
 * imessages.changeset_log_size, which is how positions leave the log.
 *
 * Readers share nothing with the writer but the files, and the records
 * themselves say where the log ends: a short or bad-CRC record is one not
 * written yet.  The writer finishes a segment before it creates the next,
 * so a reader that finds the next segment (by the name it expects) rereads
 * its own once and moves on, and one whose segment was unlinked with no
 * next one has lost the race with recycling.  A reader's descriptors
 * belong to its memory context (a reset callback closes them), so they go
 * on every path, in a transaction or not, in a backend or in the manager.
 *
 * Copyright (c) 2026, imessages developers
 *
 * IDENTIFICATION
 *	  src/cslog.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "funcapi.h"
#include "miscadmin.h"
#include "port/pg_crc32c.h"
#include "port/pg_iovec.h"
#include "storage/fd.h"
#include "utils/builtins.h"
#include "utils/memutils.h"

#include "cslog.h"
#include "replication_int.h"

PG_FUNCTION_INFO_V1(imsg_changeset_log);
PG_FUNCTION_INFO_V1(imsg_changeset_log_range);

#define CSLOG_PARENT_DIR	"pg_imessages"
#define CSLOG_DIR			"pg_imessages/changeset_log"
#define CSLOG_MAGIC			0x4C43534D
#define CSLOG_MAX_DATA		(MaxAllocSize - VARHDRSZ)	/* fits a bytea */
#define CSLOG_WBUF_INITIAL	(64 * 1024)
#define CSLOG_WBUF_MAX		(1024 * 1024)
#define CSLOG_RBUF_INITIAL	(256 * 1024)
#define CSLOG_SQL_MAX_BYTES ((uint64) 64 * 1024 * 1024)

typedef struct CslogHeader
{
	uint32		magic;
	uint32		data_len;
	uint64		position;
	uint64		counter;
	uint64		xid;
	int32		origin_pid;
	uint8		flags;
	uint8		origin_len;
	uint16		pad;
	pg_crc32c	crc;
	uint32		reserved;		/* zero: what would be tail padding */
} CslogHeader;

StaticAssertDecl(sizeof(CslogHeader) == 48, "change-set log header is 48 bytes");

struct ImsgCslogReader
{
	MemoryContext context;
	MemoryContextCallback release;
	uint64		segment;		/* start of the segment fd reads */
	int			fd;
	int			next_fd;		/* the segment after it, while switching */
	uint64		expect;			/* position of the next record */
	char	   *buf;
	Size		buf_size;
	Size		buf_len;
	Size		buf_pos;		/* where the record fetched starts */
	off_t		buf_offset;		/* file offset of buf[0] */
	CslogHeader hdr;			/* that record's header */
};

/* The writer's picture of a segment; the last one is the current one. */
typedef struct CslogSegment
{
	uint64		start;
	uint64		bytes;			/* on disk */
} CslogSegment;

/* Writer state: the manager's process only. */
static bool writer_started = false;
static CslogSegment *segments = NULL;
static int	nsegments = 0;
static int	max_segments = 0;
static uint64 first_position = 0;
static uint64 last_position = 0;	/* buffered records included */
static uint64 total_bytes = 0;	/* on disk */
static int	current_fd = -1;
static bool current_dirty = false;	/* written since the last sync */
static int	finished_fd = -1;	/* previous segment, written, not synced */
static uint64 finished_start = 0;
static bool dir_dirty = false;
static char *wbuf = NULL;
static Size wbuf_len = 0;
static Size wbuf_size = 0;
static char zeros[8];			/* record padding */

/*
 * A quarter of the log, so that recycling frees space in steps small next
 * to the log, within bounds that keep file counts and unlinks sensible.
 */
Size
imsg_cslog_segment_size(void)
{
	uint64		size = (uint64) Max(imsg_changeset_log_size_kb, 0) * 1024 / 4;

	return (Size) Min(Max(size, 64 * 1024), 16 * 1024 * 1024);
}

static void
segment_path(char *path, uint64 start)
{
	snprintf(path, MAXPGPATH, CSLOG_DIR "/%016llX", (unsigned long long) start);
}

static void
file_error(const char *what, uint64 start)
{
	char		path[MAXPGPATH];

	segment_path(path, start);
	ereport(ERROR,
			(errcode_for_file_access(),
			 errmsg("could not %s change-set log file \"%s\": %m", what, path)));
}

static Size
record_length(uint32 origin_len, uint64 data_len)
{
	return (Size) TYPEALIGN(8, sizeof(CslogHeader) + origin_len + data_len);
}

static pg_crc32c
record_crc(const CslogHeader *hdr, const char *origin, const char *data)
{
	CslogHeader h = *hdr;
	pg_crc32c	crc;

	h.crc = 0;
	INIT_CRC32C(crc);
	COMP_CRC32C(crc, &h, sizeof(h));
	COMP_CRC32C(crc, origin, hdr->origin_len);
	COMP_CRC32C(crc, data, hdr->data_len);
	FIN_CRC32C(crc);
	return crc;
}

/* Held across calls, so counted by fd.c, as xlog.c's are. */
static int
open_segment(uint64 start, int flags)
{
	char		path[MAXPGPATH];
	int			fd;
	int			save_errno;

	segment_path(path, start);
	ReserveExternalFD();
	if ((fd = BasicOpenFile(path, flags | PG_BINARY)) < 0)
	{
		save_errno = errno;
		ReleaseExternalFD();
		errno = save_errno;
	}
	return fd;
}

static void
close_segment(int *fd)
{
	if (*fd >= 0)
	{
		close(*fd);
		ReleaseExternalFD();
	}
	*fd = -1;
}

static int
compare_uint64(const void *a, const void *b)
{
	uint64		x = *(const uint64 *) a;
	uint64		y = *(const uint64 *) b;

	return (x > y) - (x < y);
}

/* The directory is the truth for every process; none is an empty log. */
static int
list_segments(uint64 **starts)
{
	DIR		   *dir = AllocateDir(CSLOG_DIR);
	struct dirent *de;
	int			n = 0;
	int			size = 16;

	*starts = NULL;
	if (dir == NULL && errno == ENOENT)
		return 0;
	*starts = palloc(size * sizeof(uint64));
	while ((de = ReadDir(dir, CSLOG_DIR)) != NULL)
	{
		if (strlen(de->d_name) != 16 || strspn(de->d_name, "0123456789ABCDEF") != 16)
			continue;
		if (n == size)
			*starts = repalloc(*starts, (size *= 2) * sizeof(uint64));
		(*starts)[n++] = strtou64(de->d_name, NULL, 16);
	}
	FreeDir(dir);
	qsort(*starts, n, sizeof(uint64), compare_uint64);
	return n;
}

/* ---- Reading ---- */

static void
reader_release(void *arg)
{
	ImsgCslogReader *r = (ImsgCslogReader *) arg;

	close_segment(&r->fd);
	close_segment(&r->next_fd);
}

static ImsgCslogReader *
reader_create(void)
{
	MemoryContext context = AllocSetContextCreate(CurrentMemoryContext,
												  "imessages change-set log reader",
												  ALLOCSET_DEFAULT_SIZES);
	ImsgCslogReader *r = MemoryContextAllocZero(context, sizeof(ImsgCslogReader));

	r->context = context;
	r->fd = r->next_fd = -1;
	r->buf_size = CSLOG_RBUF_INITIAL;
	r->buf = MemoryContextAlloc(context, r->buf_size);
	r->release.func = reader_release;
	r->release.arg = r;
	MemoryContextRegisterResetCallback(context, &r->release);
	return r;
}

static void
reader_adopt(ImsgCslogReader *r, int fd, uint64 start)
{
	close_segment(&r->fd);
	r->fd = fd;
	r->segment = r->expect = start;
	r->buf_len = r->buf_pos = 0;
	r->buf_offset = 0;
}

/* false if the segment is gone (recycled) */
static bool
reader_open(ImsgCslogReader *r, uint64 start)
{
	int			fd = open_segment(start, O_RDONLY);

	if (fd < 0 && errno != ENOENT)
		file_error("open", start);
	if (fd >= 0)
		reader_adopt(r, fd, start);
	return fd >= 0;
}

/*
 * Have 'need' bytes from buf_pos in the buffer if the file has them.  The
 * buffer grows only to lengths the file holds, so that a torn header
 * cannot make us allocate what it claims.
 */
static Size
reader_fill(ImsgCslogReader *r, Size need)
{
	Size		avail = r->buf_len - r->buf_pos;
	struct stat st;
	ssize_t		n;

	if (avail >= need)
		return avail;
	if (need > r->buf_size)
	{
		if (fstat(r->fd, &st) < 0)
			file_error("stat", r->segment);
		if ((uint64) st.st_size < r->buf_offset + r->buf_pos + need)
			return avail;
		r->buf = repalloc_huge(r->buf, need);
		r->buf_size = need;
	}
	memmove(r->buf, r->buf + r->buf_pos, avail);
	r->buf_offset += r->buf_pos;
	r->buf_len = avail;
	r->buf_pos = 0;
	while (r->buf_len < need)
	{
		n = pg_pread(r->fd, r->buf + r->buf_len, r->buf_size - r->buf_len,
					 r->buf_offset + r->buf_len);
		if (n < 0)
			file_error("read", r->segment);
		if (n == 0)
			break;
		r->buf_len += n;
	}
	return r->buf_len;
}

/*
 * Find a whole, intact record at buf_pos.  Partial bytes are dropped: a
 * torn tail is read again next time, since a restarted manager truncates
 * and rewrites it.
 */
static bool
fetch_in_segment(ImsgCslogReader *r)
{
	CslogHeader *hdr = &r->hdr;
	Size		reclen;
	const char *origin;

	if (reader_fill(r, sizeof(CslogHeader)) >= sizeof(CslogHeader))
	{
		memcpy(hdr, r->buf + r->buf_pos, sizeof(CslogHeader));
		reclen = record_length(hdr->origin_len, hdr->data_len);
		if (hdr->magic == CSLOG_MAGIC && hdr->origin_len < NAMEDATALEN &&
			hdr->data_len <= CSLOG_MAX_DATA && reader_fill(r, reclen) >= reclen)
		{
			origin = r->buf + r->buf_pos + sizeof(CslogHeader);
			if (record_crc(hdr, origin, origin + hdr->origin_len) == hdr->crc)
				return true;
		}
	}
	r->buf_len = r->buf_pos;
	return false;
}

/* A later segment exists, so this one is complete. */
static bool
segment_superseded(uint64 segment)
{
	uint64	   *starts;
	int			n = list_segments(&starts);
	bool		result = n > 0 && starts[n - 1] > segment;

	if (starts)
		pfree(starts);
	return result;
}

/*
 * Find the record at position 'expect', moving to the next segment when
 * this one is finished; false at the current end of the log.
 *
 * The writer creates a segment only once the one before is complete, and
 * unlinks the oldest first.  So, looking in this order: if a later segment
 * existed, ours was complete, and the next one (named 'expect') must be
 * there unless ours was unlinked too; a segment still linked but with no
 * later one is the end of the log.
 */
static bool
fetch_record(ImsgCslogReader *r)
{
	struct stat st;
	bool		superseded;
	char		path[MAXPGPATH];

	if (!fetch_in_segment(r))
	{
		superseded = segment_superseded(r->segment);
		/* the next segment starts after at least one record of this one */
		if (r->expect > r->segment &&
			(r->next_fd = open_segment(r->expect, O_RDONLY)) < 0 && errno != ENOENT)
			file_error("open", r->expect);
		if (fetch_in_segment(r))
			close_segment(&r->next_fd);
		else if (r->next_fd >= 0)
		{
			reader_adopt(r, r->next_fd, r->expect);
			r->next_fd = -1;
			if (!fetch_in_segment(r))
				return false;
		}
		else
		{
			if (fstat(r->fd, &st) < 0)
				file_error("stat", r->segment);
			if (st.st_nlink == 0)
				ereport(ERROR,
						(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
						 errmsg("change-set log position %llu was recycled while being read",
								(unsigned long long) r->expect)));
			if (!superseded)
				return false;
			segment_path(path, r->segment);
			ereport(ERROR,
					(errcode(ERRCODE_DATA_CORRUPTED),
					 errmsg("change-set log position %llu is missing", (unsigned long long) r->expect),
					 errdetail("File \"%s\" has no valid record at offset %llu, and no file starts at that position.",
							   path, (unsigned long long) (r->buf_offset + r->buf_pos))));
		}
	}
	if (r->hdr.position != r->expect)
	{
		segment_path(path, r->segment);
		ereport(ERROR,
				(errcode(ERRCODE_DATA_CORRUPTED),
				 errmsg("change-set log file \"%s\" holds position %llu where position %llu was expected",
						path, (unsigned long long) r->hdr.position,
						(unsigned long long) r->expect)));
	}
	return true;
}

static void
consume_record(ImsgCslogReader *r)
{
	r->buf_pos += record_length(r->hdr.origin_len, r->hdr.data_len);
	r->expect++;
}

/*
 * Start at 'from', which must still be in the log or be just past its end
 * (a reader that waits for what comes next); NULL otherwise.
 */
ImsgCslogReader *
imsg_cslog_begin_read(uint64 from)
{
	uint64	   *starts;
	int			i = list_segments(&starts) - 1;
	ImsgCslogReader *r = NULL;

	while (i >= 0 && starts[i] > from)
		i--;
	if (from > 0 && i >= 0)
	{
		r = reader_create();
		/* if the segment is gone, 'from' was recycled meanwhile */
		if (reader_open(r, starts[i]))
			while (r->expect < from && fetch_record(r))
				consume_record(r);
		if (r->expect != from)
		{
			imsg_cslog_end_read(r);
			r = NULL;
		}
	}
	if (starts)
		pfree(starts);
	return r;
}

/* rec->data points into the reader's buffer, to spare a copy. */
bool
imsg_cslog_next(ImsgCslogReader *r, ImsgCslogRecord *rec)
{
	const char *origin;

	if (!fetch_record(r))
		return false;
	origin = r->buf + r->buf_pos + sizeof(CslogHeader);
	rec->position = r->hdr.position;
	memcpy(rec->origin, origin, r->hdr.origin_len);
	rec->origin[r->hdr.origin_len] = '\0';
	rec->origin_pid = r->hdr.origin_pid;
	rec->counter = r->hdr.counter;
	rec->xid = r->hdr.xid;
	rec->flags = r->hdr.flags;
	rec->len = r->hdr.data_len;
	rec->data = (char *) origin + r->hdr.origin_len;
	consume_record(r);
	return true;
}

void
imsg_cslog_end_read(ImsgCslogReader *r)
{
	MemoryContextDelete(r->context);	/* reader_release closes the files */
}

/* ---- Writing (the manager) ---- */

static void
sync_segment(int fd, uint64 start)
{
	char		path[MAXPGPATH];

	if (pg_fdatasync(fd) != 0)
	{
		segment_path(path, start);
		ereport(data_sync_elevel(ERROR),
				(errcode_for_file_access(),
				 errmsg("could not fdatasync change-set log file \"%s\": %m", path)));
	}
}

/* Forget every descriptor and buffered byte: the files are the truth. */
static void
writer_release(void)
{
	close_segment(&current_fd);
	close_segment(&finished_fd);
	current_dirty = dir_dirty = writer_started = false;
	nsegments = 0;
	first_position = last_position = total_bytes = 0;
	wbuf_len = 0;
}

static void
make_directories(void)
{
	const char *dirs[] = {CSLOG_PARENT_DIR, CSLOG_DIR};

	for (int i = 0; i < lengthof(dirs); i++)
		if (MakePGDirectory(dirs[i]) < 0 && errno != EEXIST)
			ereport(ERROR,
					(errcode_for_file_access(),
					 errmsg("could not create directory \"%s\": %m", dirs[i])));
}

static void
remove_segment(uint64 start)
{
	char		path[MAXPGPATH];

	segment_path(path, start);
	if (unlink(path) < 0 && errno != ENOENT)
		file_error("remove", start);
	dir_dirty = true;
}

static void
add_segment(uint64 start, uint64 bytes)
{
	if (nsegments == max_segments)
	{
		max_segments = Max(16, max_segments * 2);
		if (segments == NULL)
			segments = MemoryContextAlloc(TopMemoryContext,
										  max_segments * sizeof(CslogSegment));
		else
			segments = repalloc(segments, max_segments * sizeof(CslogSegment));
	}
	segments[nsegments].start = start;
	segments[nsegments++].bytes = bytes;
	total_bytes += bytes;
}

/* Unlink the oldest segments while the log is over its size. */
static void
recycle(void)
{
	uint64		limit = (uint64) Max(imsg_changeset_log_size_kb, 0) * 1024;

	while (nsegments > 1 && total_bytes > limit)
	{
		remove_segment(segments[0].start);
		if (finished_fd >= 0 && finished_start == segments[0].start)
			close_segment(&finished_fd);
		total_bytes -= segments[0].bytes;
		memmove(segments, segments + 1, --nsegments * sizeof(CslogSegment));
		first_position = segments[0].start;
	}
}

/*
 * Write at the end of the current segment.  The state changes once the
 * bytes are written: after an ERROR the same bytes go to the same offset.
 */
static void
write_current(const struct iovec *iov, int iovcnt, Size len)
{
	CslogSegment *seg = &segments[nsegments - 1];

	if (current_fd < 0 && (current_fd = open_segment(seg->start, O_RDWR)) < 0)
		file_error("open", seg->start);
	if (pg_pwritev_with_retry(current_fd, iov, iovcnt, seg->bytes) < 0)
		file_error("write", seg->start);
	seg->bytes += len;
	total_bytes += len;
	current_dirty = true;
}

static void
flush_buffer(void)
{
	struct iovec iov = {.iov_base = wbuf, .iov_len = wbuf_len};

	if (wbuf_len == 0)
		return;
	write_current(&iov, 1, wbuf_len);
	wbuf_len = 0;
	recycle();
}

/* Finish the current segment and create the one starting at 'position'. */
static void
start_segment(uint64 position)
{
	flush_buffer();
	if (current_dirty)
	{
		/* at most one finished segment waits for imsg_cslog_sync() */
		if (finished_fd >= 0)
			sync_segment(finished_fd, finished_start);
		close_segment(&finished_fd);
		finished_fd = current_fd;
		finished_start = segments[nsegments - 1].start;
		current_fd = -1;
	}
	close_segment(&current_fd);
	if ((current_fd = open_segment(position, O_RDWR | O_CREAT | O_EXCL)) < 0)
		file_error("create", position);
	current_dirty = dir_dirty = true;
	add_segment(position, 0);
}

/*
 * Find where the log is after a restart.  Each segment must continue the
 * previous one: what precedes a hole is dropped, since no reader could
 * cross it.  The last segment ends at its last intact record.
 */
void
imsg_cslog_startup(void)
{
	uint64	   *starts;
	int			n;
	ImsgCslogReader *r;
	struct stat st;
	char		path[MAXPGPATH];

	writer_release();
	make_directories();
	n = list_segments(&starts);
	r = reader_create();
	for (int i = 0; i < n; i++)
	{
		if (nsegments > 0 && starts[i] != r->expect)
		{
			ereport(LOG,
					(errmsg("removing the change-set log files before a gap in positions"),
					 errdetail("Positions %llu to %llu are missing; the log now starts at position %llu.",
							   (unsigned long long) r->expect,
							   (unsigned long long) (starts[i] - 1),
							   (unsigned long long) starts[i])));
			while (nsegments > 0)
				remove_segment(segments[--nsegments].start);
			total_bytes = 0;
		}
		r->expect = starts[i];
		if (!reader_open(r, starts[i]))
			continue;
		while (fetch_in_segment(r) && r->hdr.position == r->expect)
			consume_record(r);
		if (fstat(r->fd, &st) < 0)
			file_error("stat", starts[i]);
		add_segment(starts[i], Min(st.st_size, r->buf_offset + r->buf_pos));
		if (i == n - 1 && st.st_size > r->buf_offset + r->buf_pos)
		{
			segment_path(path, starts[i]);
			if ((current_fd = open_segment(starts[i], O_RDWR)) < 0 ||
				ftruncate(current_fd, r->buf_offset + r->buf_pos) < 0)
				file_error("truncate", starts[i]);
			if (pg_fsync(current_fd) != 0)
				ereport(data_sync_elevel(ERROR),
						(errcode_for_file_access(),
						 errmsg("could not fsync change-set log file \"%s\": %m", path)));
			ereport(LOG,
					(errmsg("truncated the torn tail of change-set log file \"%s\" (%llu bytes)",
							path, (unsigned long long) (st.st_size - r->buf_offset - r->buf_pos)),
					 errdetail("The log ends at position %llu.",
							   (unsigned long long) (r->expect - 1))));
		}
	}
	if (nsegments == 1 && segments[0].bytes == 0)
	{
		close_segment(&current_fd);
		remove_segment(segments[0].start);
		nsegments = 0;
	}
	if (nsegments > 0)
	{
		first_position = segments[0].start;
		last_position = r->expect - 1;
	}
	imsg_cslog_end_read(r);
	if (starts)
		pfree(starts);
	writer_started = true;
	if (dir_dirty)
		fsync_fname(CSLOG_DIR, true);
	dir_dirty = false;
	recycle();
}

/* The getters start the writer, so that the manager needs no order of calls. */
uint64
imsg_cslog_first_position(void)
{
	if (!writer_started)
		imsg_cslog_startup();
	return first_position;
}

uint64
imsg_cslog_last_position(void)
{
	if (!writer_started)
		imsg_cslog_startup();
	return last_position;
}

uint64
imsg_cslog_bytes(void)
{
	if (!writer_started)
		imsg_cslog_startup();
	return total_bytes + wbuf_len;
}

/*
 * Into the buffer, which is written when full or by imsg_cslog_write(); a
 * record too large for it goes straight to the file.  A position out of
 * order is the caller's bug: the log would have a hole no reader crosses.
 */
void
imsg_cslog_append(uint64 position, const char *origin, int32 origin_pid,
				  uint64 counter, uint64 xid, uint8 flags,
				  const char *data, Size len)
{
	CslogHeader hdr = {0};
	Size		reclen;
	Size		in_segment;
	Size		padding;

	if (!writer_started)
		imsg_cslog_startup();
	if (position == 0 || (last_position != 0 && position != last_position + 1))
		elog(ERROR, "change-set log position %llu appended after %llu",
			 (unsigned long long) position, (unsigned long long) last_position);
	if (len > CSLOG_MAX_DATA)
		elog(ERROR, "change set at position %llu is too large for the change-set log (%zu bytes)",
			 (unsigned long long) position, len);
	/* an empty log restarts anywhere, but not in a segment named otherwise */
	if (last_position == 0 && nsegments > 0 && segments[0].start != position)
		imsg_cslog_reset();

	origin = origin ? origin : "";
	data = data ? data : "";
	hdr.magic = CSLOG_MAGIC;
	hdr.data_len = (uint32) len;
	hdr.position = position;
	hdr.counter = counter;
	hdr.xid = xid;
	hdr.origin_pid = origin_pid;
	hdr.flags = flags;
	hdr.origin_len = strnlen(origin, NAMEDATALEN - 1);
	hdr.crc = record_crc(&hdr, origin, data);
	reclen = record_length(hdr.origin_len, len);
	padding = reclen - sizeof(hdr) - hdr.origin_len - len;

	in_segment = nsegments > 0 ? segments[nsegments - 1].bytes + wbuf_len : 0;
	if (nsegments == 0 ||
		(in_segment > 0 && in_segment + reclen > imsg_cslog_segment_size()))
		start_segment(position);

	if (reclen > CSLOG_WBUF_MAX)
	{
		struct iovec iov[4] = {
			{.iov_base = &hdr, .iov_len = sizeof(hdr)},
			{.iov_base = unconstify(char *, origin), .iov_len = hdr.origin_len},
			{.iov_base = unconstify(char *, data), .iov_len = len},
			{.iov_base = zeros, .iov_len = padding}};

		flush_buffer();
		write_current(iov, 4, reclen);
	}
	else
	{
		if (wbuf_len + reclen > wbuf_size)
		{
			flush_buffer();
			if (wbuf == NULL)
			{
				wbuf_size = Max(CSLOG_WBUF_INITIAL, reclen);
				wbuf = MemoryContextAlloc(TopMemoryContext, wbuf_size);
			}
			else if (reclen > wbuf_size)
			{
				wbuf_size = CSLOG_WBUF_MAX;
				wbuf = repalloc(wbuf, wbuf_size);
			}
		}
		memcpy(wbuf + wbuf_len, &hdr, sizeof(hdr));
		memcpy(wbuf + wbuf_len + sizeof(hdr), origin, hdr.origin_len);
		memcpy(wbuf + wbuf_len + sizeof(hdr) + hdr.origin_len, data, len);
		memset(wbuf + wbuf_len + reclen - padding, 0, padding);
		wbuf_len += reclen;
	}
	if (first_position == 0)
		first_position = position;
	last_position = position;
	if (reclen > CSLOG_WBUF_MAX)
		recycle();
}

/* What readers see: only what was written. */
void
imsg_cslog_write(void)
{
	if (!writer_started)
		imsg_cslog_startup();
	flush_buffer();
}

/* Durable up to the last append: a restarted node's log ends there. */
void
imsg_cslog_sync(void)
{
	imsg_cslog_write();
	if (finished_fd >= 0)
		sync_segment(finished_fd, finished_start);
	close_segment(&finished_fd);
	if (current_fd >= 0 && current_dirty)
		sync_segment(current_fd, segments[nsegments - 1].start);
	current_dirty = false;
	if (dir_dirty)
		fsync_fname(CSLOG_DIR, true);
	dir_dirty = false;
}

/*
 * Newest first, so that a crash halfway leaves a shorter log rather than
 * a hole; durable at once, or after a crash old segments could come back
 * in front of new ones.  An ERROR halfway leaves writer_started false: the
 * next call looks at the files again.
 */
void
imsg_cslog_reset(void)
{
	uint64	   *starts;
	int			n;

	writer_release();
	make_directories();
	n = list_segments(&starts);
	while (n > 0)
		remove_segment(starts[--n]);
	if (starts)
		pfree(starts);
	fsync_fname(CSLOG_DIR, true);
	dir_dirty = false;
	writer_started = true;
}

/* ---- SQL ---- */

/* What the files hold now; false if no position. */
static bool
cslog_range(uint64 *first, uint64 *last, uint64 *bytes, int *count)
{
	uint64	   *starts;
	int			n = list_segments(&starts);
	ImsgCslogReader *r;
	struct stat st;
	char		path[MAXPGPATH];

	*first = *last = *bytes = 0;
	*count = n;
	for (int i = 0; i < n; i++)
	{
		segment_path(path, starts[i]);
		if (stat(path, &st) == 0)
			*bytes += st.st_size;
		else if (errno != ENOENT)
			file_error("stat", starts[i]);
	}
	if (n > 0 && (r = imsg_cslog_begin_read(starts[n - 1])) != NULL)
	{
		while (fetch_record(r))
			consume_record(r);
		*first = starts[0];
		*last = r->expect - 1;
		imsg_cslog_end_read(r);
	}
	if (starts)
		pfree(starts);
	return *last >= *first && *last > 0;
}

/*
 * imsg_changeset_log(from_position, max_records): what a recovering node
 * fetches from its donor, in batches bounded in rows and in bytes.
 */
Datum
imsg_changeset_log(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	int64		from = PG_GETARG_INT64(0);
	int32		max_records = PG_GETARG_INT32(1);
	ImsgCslogReader *r;
	ImsgCslogRecord rec;
	MemoryContext row_context;
	MemoryContext old;
	uint64		first,
				last,
				data_bytes = 0;
	int			count;
	Datum		values[7];
	bool		nulls[7] = {0};
	bytea	   *data;

	if (from < 1)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid from_position %lld", (long long) from),
				 errdetail("Positions start at 1.")));
	if (max_records < 1)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid max_records %d", max_records),
				 errdetail("max_records must be at least 1.")));

	InitMaterializedSRF(fcinfo, 0);
	if ((r = imsg_cslog_begin_read((uint64) from)) == NULL)
	{
		bool		held = cslog_range(&first, &last, &data_bytes, &count);

		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("the change-set log of this node does not hold position %llu",
						(unsigned long long) from),
				 held ? errdetail("It holds positions %llu to %llu.",
								  (unsigned long long) first,
								  (unsigned long long) last) :
				 errdetail("It is empty.")));
	}

	imsg_note_donor_activity();	/* imsg_manager_status() shows 'donor' */
	row_context = AllocSetContextCreate(CurrentMemoryContext,
										"imsg_changeset_log row",
										ALLOCSET_DEFAULT_SIZES);
	while (max_records-- > 0 && data_bytes < CSLOG_SQL_MAX_BYTES &&
		   imsg_cslog_next(r, &rec))
	{
		CHECK_FOR_INTERRUPTS();
		old = MemoryContextSwitchTo(row_context);
		data = (bytea *) palloc(rec.len + VARHDRSZ);
		SET_VARSIZE(data, rec.len + VARHDRSZ);
		memcpy(VARDATA(data), rec.data, rec.len);
		values[0] = Int64GetDatum((int64) rec.position);
		values[1] = CStringGetTextDatum(rec.origin);
		values[2] = Int32GetDatum(rec.origin_pid);
		values[3] = Int64GetDatum((int64) rec.counter);
		values[4] = Int64GetDatum((int64) rec.xid);
		values[5] = Int32GetDatum(rec.flags);
		values[6] = PointerGetDatum(data);
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
		MemoryContextSwitchTo(old);
		MemoryContextReset(row_context);
		data_bytes += rec.len;
	}
	imsg_cslog_end_read(r);
	MemoryContextDelete(row_context);
	return (Datum) 0;
}

/* imsg_changeset_log_range(): what this node could give as a donor. */
Datum
imsg_changeset_log_range(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	uint64		first,
				last,
				bytes;
	int			count;
	bool		held;
	Datum		values[4];
	bool		nulls[4] = {0};

	InitMaterializedSRF(fcinfo, 0);
	held = cslog_range(&first, &last, &bytes, &count);
	nulls[0] = nulls[1] = !held;
	values[0] = Int64GetDatum((int64) first);
	values[1] = Int64GetDatum((int64) last);
	values[2] = Int64GetDatum((int64) bytes);
	values[3] = Int32GetDatum(count);
	tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	return (Datum) 0;
}
