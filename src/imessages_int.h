/*-------------------------------------------------------------------------
 *
 * imessages_int.h
 *	  What every layer of imessages shares: the settings, the numbers of
 *	  imessages' own message types, and small helpers.  Each layer has its
 *	  own header on top of this one:
 *
 *	  mailbox_int.h		the area, its mailboxes and the message format
 *						(area.c, mailbox.c, mailbox_large.c)
 *	  replication_int.h	the manager's shared state, the helpers and the
 *						GCS interface (manager*.c, helpers.c, gcs*.c)
 *	  changeset_int.h	the change-set format, capture, certification,
 *						apply (changeset*.c, certify.c, apply.c,
 *						local_writes.c, nestmarks.c)
 *
 * and a file includes only those whose internals it touches.  See DESIGN.md
 * for the whole picture.
 *
 * Copyright (c) 2026, imessages developers
 *
 * IDENTIFICATION
 *	  src/imessages_int.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef IMESSAGES_INT_H
#define IMESSAGES_INT_H

#include "imessages.h"
#include "utils/guc.h"

/* GUCs (imessages.c) */
extern int	imsg_buffer_size_kb;
extern int	imsg_max_message_size;
extern int	imsg_send_timeout_ms;
extern int	imsg_mailbox_quota;
extern int	imsg_manager_mailbox_quota;
extern int	imsg_min_helpers;
extern int	imsg_max_helpers;
extern char *imsg_database;
extern int	imsg_gcs;
extern char *imsg_gcs_group;
extern char *imsg_node_name;
extern int	imsg_commit_mode;
extern int	imsg_commit_timeout_ms;
extern int	imsg_settle_delay_ms;
extern int	imsg_gcs_join_wait_ms;
extern int	imsg_certification_window;
extern char *imsg_node_conninfo;
extern int	imsg_changeset_log_size_kb;
extern bool imsg_debug_skip_position;
extern int	imsg_flow_control_limit;
extern int	imsg_node_id;
extern int	imsg_node_sequence_stride;

/* the largest imessages.node_sequence_stride (and imessages.node_id) */
#define IMSG_MAX_NODE_SEQUENCE_STRIDE	65535

#define IMSG_COMMIT_ASYNC		0
#define IMSG_COMMIT_SYNC		1

/*
 * imessages' own message types (negative: imsg_send() refuses them, and
 * imsg_receive() skips any that a timed-out wait left behind).
 */
#define IMSG_T_PING				(-1)	/* backend -> manager: int64 id, int8 target */
#define IMSG_T_PONG				(-2)	/* manager -> backend: int64 id, int8 status */
#define IMSG_T_HELPER_READY		(-3)	/* helper -> manager: int32 slot */
#define IMSG_T_JOB_PING			(-4)	/* manager -> helper: int32 origin, int64 id */
#define IMSG_T_JOB_DONE			(-5)	/* helper -> manager: int32 slot, int32 origin, int64 id */

#define IMSG_T_CHANGESET		(-10)	/* backend -> manager: a change set (below) */
#define IMSG_T_CS_ORDERED		(-11)	/* manager -> backend: int64 xid, int64 seq,
										 * int8 ImsgCsOutcome */
#define IMSG_T_CS_APPLY			(-12)	/* manager -> helper: a run of remote change sets */
#define IMSG_T_CS_APPLIED		(-13)	/* helper -> manager: int32 slot, int32 n, n x (int64 seq, int8 ok) */
/* -14 was a separate seen vector; -15 is IMSG_T_PART (mailbox_large.h) */
/* node recovery (manager_state.c, helpers.c) */
#define IMSG_T_STATE_READ		(-16)	/* manager -> helper: read imsg_state */
#define IMSG_T_STATE_INFO		(-17)	/* helper -> manager: int32 slot, int8 ok,
										 * int8 has group, 16 bytes group id,
										 * int64 applied position */
#define IMSG_T_STATE_SAVE		(-18)	/* manager -> helper: 16 bytes group id,
										 * int64 applied position */
#define IMSG_T_CATCH_UP			(-19)	/* manager -> helper: int64 up to, int64
										 * own log's last, string donor,
										 * string conninfo */
#define IMSG_T_CS_FETCHED		(-20)	/* helper -> manager: int64 position,
										 * int8 flags, string origin, message */
#define IMSG_T_PAUSE_APPLY		(-22)	/* backend -> manager: int64 id */
#define IMSG_T_PAUSED			(-23)	/* manager -> backend: int64 id, int8 ok,
										 * int64 position */
#define IMSG_T_RESUME_APPLY		(-24)	/* backend -> manager: int64 id */
#define IMSG_T_TRANSFER			(-25)	/* manager -> helper: string donor,
										 * string donor's conninfo, 16 bytes
										 * group id */
#define IMSG_T_TRANSFER_DONE	(-26)	/* helper -> manager: int32 slot, int8 ok,
										 * int64 position, string error */
#define IMSG_T_CATCH_UP_DONE	(-21)	/* helper -> manager: int32 slot, int8 ok,
										 * int8 log gone, int64 through,
										 * string error */

/* How a sync change set fared, in the IMSG_T_CS_ORDERED reply. */
typedef enum ImsgCsOutcome
{
	IMSG_CS_OUTCOME_ORDERED = 0,	/* delivered in total order: commit */
	IMSG_CS_OUTCOME_CONFLICT = 1,	/* lost certification: 40001 */
	IMSG_CS_OUTCOME_NO_GROUP = 2,	/* the GCS is not connected: not sent */
	IMSG_CS_OUTCOME_NO_QUORUM = 3,	/* not in the primary component: not sent */
	IMSG_CS_OUTCOME_LOST = 4	/* sent, then the GCS was lost: unknown */
} ImsgCsOutcome;

#define IMSG_PING_MANAGER		0
#define IMSG_PING_HELPER		1
#define IMSG_PONG_OK			0
#define IMSG_PONG_NO_HELPER		1

/* manager_ident: 0 = no manager, else (generation << 32) | (pgprocno + 1) */
#define IMSG_MANAGER_IDENT(procno, gen) (((uint64) (gen) << 32) | (uint32) ((procno) + 1))
#define IMSG_IDENT_PROCNO(ident)	((int) ((ident) & 0xFFFFFFFF) - 1)
#define IMSG_IDENT_GENERATION(ident) ((uint32) ((ident) >> 32))

/*
 * Copy a length-prefixed name (not NUL-terminated) into a NAMEDATALEN
 * buffer, truncating: strlcpy would read past its end looking for a NUL.
 */
static inline void
imsg_copy_name(char *dst, const char *src, uint32 len)
{
	uint32		n = Min(len, NAMEDATALEN - 1);

	memcpy(dst, src, n);
	dst[n] = '\0';
}

/* imessages.c, area.c */
extern Size imsg_manager_shmem_size(void);

/* mailbox.c: for anybody that sends or receives */
extern void imsg_check_available(void);
extern uint64 imsg_commit_quiet(ImsgBuffer *buf);
extern ImsgResult imsg_resolve_manager(int *pid);
extern void imsg_wake_manager(void);
extern Size imsg_largest_message(void);

/* nestmarks.c: one mark per subtransaction level that acted */
#define IMSG_MAX_NEST_MARKS 64

typedef struct ImsgNestMarks
{
	int			count;
	int			levels[IMSG_MAX_NEST_MARKS];
} ImsgNestMarks;

extern int	imsg_nest_mark_push(ImsgNestMarks *marks, const char *what, const char *may);
extern int	imsg_nest_mark_abort(ImsgNestMarks *marks);
extern void imsg_nest_mark_commit(ImsgNestMarks *marks);

/*
 * mailbox.c, for the SQL API: where the receive cursor is (to go back to
 * it when a (sub)transaction that received rolls back), and what the
 * monitoring views show.  Every reader of the segment format is in
 * mailbox.c.
 */
typedef struct ImsgCursorMark
{
	struct ImsgSegment *seg;
	uint32		off;
	uint64		count;
} ImsgCursorMark;

extern void imsg_cancel_pending(void);
extern void imsg_flush_pipelined(void);
extern void imsg_rewind_unreleased(void);
extern void imsg_release_all_received(void);
extern bool imsg_have_unreleased(void);
extern void imsg_get_cursor(ImsgCursorMark *mark);
extern void imsg_set_cursor(const ImsgCursorMark *mark);

typedef struct ImsgAreaCounts
{
	uint64		size_bytes;
	uint64		used_bytes;		/* queued in open mailboxes */
	uint64		peak_bytes;
	uint64		queued_messages;
	uint64		sent;			/* closed mailboxes' included */
	uint64		received;
	uint64		send_waits;
	uint64		send_failures;
	uint64		allocated_bytes;	/* in segments */
	uint64		segments_allocated;
} ImsgAreaCounts;

typedef struct ImsgMailboxInfo
{
	int			pid;
	char		backend_type[64];
	uint64		queued_messages;
	uint64		queued_bytes;
	uint64		quota_bytes;	/* 0: no quota */
	TimestampTz oldest_sent_at; /* 0: none ready */
	uint64		sent;
	uint64		received;
} ImsgMailboxInfo;

extern void imsg_area_counts(ImsgAreaCounts *counts);
extern int	imsg_mailbox_slots(void);
extern bool imsg_mailbox_info(int slot, ImsgMailboxInfo *info);
extern bool imsg_mailbox_owner_role(int pid, Oid *role);

/*
 * mailbox.c: per-mailbox quotas.  imsg_quota_settings_changed is for the
 * GUCs' assign hooks (the new values of both settings); the manager and
 * the helpers call imsg_mailbox_set_internal(is_manager) once, before or
 * after they open their mailbox.  imsg_last_over_quota describes the last
 * send of this process that ended in IMSG_OVER_QUOTA (for its error).
 */
typedef struct ImsgOverQuota
{
	int			pid;			/* the mailbox's owner */
	uint64		queued_bytes;	/* queued when the send gave up */
	uint64		quota_bytes;
	uint64		needed_bytes;	/* what the message would have taken */
} ImsgOverQuota;

extern void imsg_quota_settings_changed(int mailbox_quota, int manager_quota);
extern void imsg_mailbox_set_internal(bool is_manager);
extern const ImsgOverQuota *imsg_last_over_quota(void);

/* sql_api.c */
extern void imsg_sql_init(void);
extern void imsg_report_send_failure(ImsgResult result, int recipient, Size len,
									 int timeout_ms);
extern ImsgResult imsg_wait_manager_reply(int32 msgtype, int64 id, int manager_pid,
										  TimestampTz deadline, long liveness_ms,
										  char *reply, Size reply_len);


#endif							/* IMESSAGES_INT_H */
