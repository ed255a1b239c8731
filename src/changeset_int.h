/*-------------------------------------------------------------------------
 *
 * changeset_int.h
 *	  Change sets: their format, capture (changeset.c), certification
 *	  (certify.c), the local writes a remote change set must not overwrite
 *	  (local_writes.c) and apply (apply.c).  The reader of the format is
 *	  changeset_reader.h.
 *
 * Copyright (c) 2026, imessages developers
 *
 * IDENTIFICATION
 *	  src/changeset_int.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef IMESSAGES_CHANGESET_INT_H
#define IMESSAGES_CHANGESET_INT_H

#include "imessages_int.h"
#include "replication_int.h"	/* ImsgSeen, IMSG_MAX_GROUP_MEMBERS */

/*
 * Change-set format, written by changeset.c and read by changeset_decode.c
 * (and, across nodes, by the helpers that apply it).  All integers in
 * network order through the ImsgBuffer helpers; "string" is a uint32
 * length and bytes.
 *
 *	 header:   int32 IMSG_CS_MAGIC, int8 IMSG_CS_VERSION
 *	 then records, each starting with an int8 tag:
 *	 'R' relation: int32 id, string schema, string name, int16 ncols,
 *				   ncols x (string column, string type, int8 IMSG_CS_COL_* flags)
 *	 'I' insert:   int32 relation id, values of every column
 *	 'U' update:   int32 relation id, values of the old key, values of every column
 *	 'D' delete:   int32 relation id, values of the old key
 *	 'S' statement: int32 0, string search_path, string SQL text, int8
 *				   IMSG_CS_STMT_* flags, int16 n, n x (string schema,
 *				   string name): a DDL statement on replicated tables
 *				   (ddl.c), run by the helpers at its place among the
 *				   changes; the tables are those it changes, named as
 *				   before it ran (certification)
 *	 values:       int16 n, n x (int8 'n' null | 'b' binary string | 't' text string)
 *
 * A relation's 'R' record comes before its first change in each change set.
 *
 * The message (IMSG_T_CHANGESET, in parts if large: see mailbox_large.c)
 * carries: int64 xid (full), int8 IMSG_CS_SYNC/IMSG_CS_HAS_SEEN flags,
 * int32 number of changes, with HAS_SEEN the seen vector (what this node
 * had applied at PRE_COMMIT, for certification), then the change set.
 */
#define IMSG_CS_MAGIC			0x49435331	/* "ICS1" */
#define IMSG_CS_VERSION			1
#define IMSG_CS_RELATION		'R'
#define IMSG_CS_INSERT			'I'
#define IMSG_CS_UPDATE			'U'
#define IMSG_CS_DELETE			'D'
#define IMSG_CS_STATEMENT		'S'
#define IMSG_CS_STMT_EXCLUSIVE	0x01	/* conflicts with unseen writes of its tables */
#define IMSG_CS_STMT_REPLICATE	0x02	/* imsg_replicate/imsg_unreplicate: the SQL
										 * is a jsonb document for
										 * imsg_apply_replicate() (sent with
										 * EXCLUSIVE too) */
#define IMSG_CS_NULL			'n'
#define IMSG_CS_BINARY			'b'
#define IMSG_CS_TEXT			't'
#define IMSG_CS_COL_KEY			0x01
#define IMSG_CS_COL_BINARY		0x02
#define IMSG_CS_SYNC			0x02
#define IMSG_CS_HAS_SEEN		0x04
#define IMSG_CS_HEADER			(8 + 1 + 4) /* before the seen vector */

/*
 * What the manager multicasts for a change set (and keeps in its change-set
 * log, see cslog.h): the kind byte GCS_CHANGESET, int32 origin backend pid,
 * int64 xid, int32 changes, int8 sync, int32 origin manager pid, int64 the
 * origin manager's counter, the seen vector, then the change set.  A state
 * message (manager_state.c) has kind GCS_STATE.
 */
#define GCS_CHANGESET		'C'
#define GCS_CS_HEADER		(1 + 4 + 8 + 4 + 1)
#define GCS_STATE			'S'
#define GCS_FLOW			'F'		/* flow control: int8 stop (flow_control.c) */

typedef struct ImsgGcsChangeset
{
	int32		origin_pid;		/* the backend */
	uint64		xid;
	int32		nchanges;
	bool		sync;
	int32		mgr_pid;		/* the origin's manager */
	uint64		counter;		/* its number at its origin */
	int			nseen;
	ImsgSeen	seen[IMSG_MAX_GROUP_MEMBERS];
	const char *cs;
	Size		cslen;
} ImsgGcsChangeset;

/* flags of a change-set log record */
#define IMSG_LOG_LOST		0x01	/* lost certification: applied nowhere */

/* certify.c */
extern int64 imsg_certification_rows(void);
extern uint64 imsg_certified_position(void);
extern bool imsg_certify(uint64 position, const char *node, int pid, uint64 counter,
						 bool certify, const ImsgSeen *seen, int nseen,
						 const uint64 *rows, int64 nrows,
						 const uint64 *checks, const uint64 *writes, int64 ntables,
						 char *winner, Size winner_len);
extern bool imsg_gcs_changeset_parse(const char *data, Size len, ImsgGcsChangeset *out);

/*
 * The seen vector on the wire (in IMSG_T_CHANGESET, and after the fixed header
 * of a multicast change set): int16 n, n x (string node, int32 pid, int64
 * counter).  One encoder and one decoder, in certify.c.
 */
#define IMSG_SEEN_WIRE_MAX	(2 + IMSG_MAX_GROUP_MEMBERS * (4 + NAMEDATALEN + 12))
extern int	imsg_seen_snapshot(ImsgSeen *seen);
extern void imsg_seen_encode(ImsgBuffer *out, const ImsgSeen *seen, int nseen);
extern int	imsg_seen_decode(ImsgBuffer *in, ImsgSeen *seen);

/* changeset.c, ddl.c: DDL statements on replicated tables */
extern void imsg_cs_capture_statement(const char *search_path, const char *sql, int len,
									  int8 flags, int ntables, const char *const *schemas,
									  const char *const *names);
extern void imsg_ddl_init(void);

/* local_writes.c */
extern int	imsg_max_local_writes;
extern Size imsg_local_writes_shmem_size(void);
extern void imsg_local_writes_request(void);
extern void imsg_local_writes_startup(void);
extern void imsg_local_writes_register(int nremoved, const uint64 *removed);
extern void imsg_local_writes_end(bool committed);
extern void imsg_local_writes_forget_mine(void);
extern void imsg_local_writes_delivered(TransactionId top, uint64 seq);
extern void imsg_local_writes_forget(TransactionId top);
extern void imsg_local_writes_counts(int64 *xids, int64 *removals);
extern void imsg_local_writes_sweep(void);
extern void imsg_local_writes_reset(void);
extern void imsg_local_writes_applying(uint64 seq);
extern void imsg_remote_wins_reset(void);
extern void imsg_remote_wins_result(bool *called, bool *lost);
extern bool imsg_local_removal_wins(uint64 row);
extern void imsg_local_writes_catch_up_note(uint64 row, uint64 position);
extern void imsg_local_writes_catch_up_end(void);
extern bool imsg_local_writes_catch_up_wins(uint64 row);

/* apply.c */
extern int64 imsg_apply_rows_kept(void);
extern int64 imsg_apply_changeset(const char *data, Size len, bool overwrite,
								  uint64 seq);

/* changeset.c */
extern void imsg_changeset_init(void);


#endif							/* IMESSAGES_CHANGESET_INT_H */
