/*-------------------------------------------------------------------------
 *
 * cslog.h
 *	  The change-set log: the last change sets this node delivered, in the
 *	  group's total order, kept in files so that a recovering node can
 *	  catch up from a donor without a full state transfer.  See cslog.c.
 *
 * One process writes it, the replication manager (imsg_cslog_startup,
 * _append, _write, _sync, _reset); any process may read it at the same
 * time (imsg_cslog_begin_read, _next, _end_read).
 *
 * Copyright (c) 2026, imessages developers
 *
 * IDENTIFICATION
 *	  src/cslog.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef IMESSAGES_CSLOG_H
#define IMESSAGES_CSLOG_H

/* imessages.changeset_log_size, in kB (imessages.c) */
extern int	imsg_changeset_log_size_kb;

/* The size at which a segment is closed and the next one started. */
extern Size imsg_cslog_segment_size(void);

/* The writer: the manager only. */
extern void imsg_cslog_startup(void);
extern uint64 imsg_cslog_first_position(void);
extern uint64 imsg_cslog_last_position(void);
extern void imsg_cslog_append(uint64 position, const char *origin, int32 origin_pid,
							  uint64 counter, uint64 xid, uint8 flags,
							  const char *data, Size len);
extern void imsg_cslog_write(void);
extern void imsg_cslog_sync(void);
extern void imsg_cslog_reset(void);
extern uint64 imsg_cslog_bytes(void);

/* One record as a reader returns it. */
typedef struct ImsgCslogRecord
{
	uint64		position;
	char		origin[NAMEDATALEN];
	int32		origin_pid;
	uint64		counter;
	uint64		xid;
	uint8		flags;
	Size		len;
	char	   *data;			/* valid until the next call */
} ImsgCslogRecord;

/* The readers: any process. */
typedef struct ImsgCslogReader ImsgCslogReader;

extern ImsgCslogReader *imsg_cslog_begin_read(uint64 from);
extern bool imsg_cslog_next(ImsgCslogReader *r, ImsgCslogRecord *rec);
extern void imsg_cslog_end_read(ImsgCslogReader *r);

#endif							/* IMESSAGES_CSLOG_H */
