/*-------------------------------------------------------------------------
 *
 * manager_int.h
 *	  What the parts of the replication manager share.  Only manager*.c
 *	  include this; the rest of imessages sees the manager through
 *	  imessages_int.h (imsg_manager_send, the shared ImsgManagerState).
 *
 *	  manager.c			the loop, the GCS, replies, total-order delivery
 *	  manager_jobs.c	pings and helper jobs
 *	  manager_own.c		this node's change sets, until settled
 *	  manager_apply.c	other nodes' change sets, handed to a helper
 *
 * Each part owns its state (file-level statics) and tells the loop when it
 * next needs a pass (its next_timeout function: -1 for none, else ms).
 * Everything runs in the manager process: no locking between the parts.
 *
 * Copyright (c) 2026, imessages developers
 *
 * IDENTIFICATION
 *	  src/manager_int.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef IMESSAGES_MANAGER_INT_H
#define IMESSAGES_MANAGER_INT_H

#include "replication_int.h"
#include "mailbox_large.h"

/* What the manager multicasts: a kind byte, then the kind's payload. */
#define GCS_USER_MESSAGE	'U'
/* GCS_CHANGESET and GCS_STATE: changeset_int.h */

/* manager.c */
extern const ImsgGcsOps *imsg_mgr_gcs;
extern bool imsg_mgr_gcs_connected;
extern ImsgCsOutcome imsg_mgr_order_state(void);
extern const char *imsg_mgr_order_state_text(ImsgCsOutcome state);
extern void imsg_mgr_record_delivered(uint64 seq, int origin_pid, uint64 xid,
									  int32 nchanges, int64 counted,
									  const char *cs, Size cslen);
extern long imsg_mgr_min_timeout(long a, long b);
extern void imsg_mgr_deliver_changeset(const char *origin, const char *data, Size len);
extern void imsg_mgr_certify_replay(const char *origin, uint64 position, uint8 flags,
									const char *data, Size len);

/* manager_state.c */
extern void imsg_mgr_state_init(void);
extern void imsg_mgr_state_run(void);
extern long imsg_mgr_state_next_timeout(void);
extern void imsg_mgr_state_gcs_lost(void);
extern void imsg_mgr_state_message(uint32 nodeid, uint32 pid, const char *data, Size len);
extern bool imsg_mgr_state_can_position(void);
extern bool imsg_mgr_state_should_hold(void);
extern void imsg_mgr_state_hold(const char *origin, const char *data, Size len);
extern uint64 imsg_mgr_next_position(bool done);
extern void imsg_mgr_position_done(uint64 pos);
extern bool imsg_mgr_position_is_next(uint64 pos);
extern uint64 imsg_mgr_applied_position(void);
extern ImsgNodeState imsg_mgr_node_state(void);
extern void imsg_mgr_stop_applying(uint64 seq, const char *origin);
extern bool imsg_mgr_state_writable(void);
extern void imsg_mgr_state_debug_skip(void);
extern void imsg_mgr_handle_state_info(ImsgWhole *msg);
extern void imsg_mgr_handle_cs_fetched(ImsgWhole *msg);
extern void imsg_mgr_handle_catch_up_done(ImsgWhole *msg);
extern void imsg_mgr_handle_pause_apply(ImsgWhole *msg);
extern void imsg_mgr_handle_resume_apply(ImsgWhole *msg);
extern void imsg_mgr_handle_transfer_done(ImsgWhole *msg);
extern bool imsg_mgr_already_have(uint64 position);

/* manager_jobs.c */
extern void imsg_mgr_jobs_init(void);
extern void imsg_mgr_handle_ping(ImsgWhole *msg);
extern void imsg_mgr_handle_helper_ready(ImsgWhole *msg);
extern void imsg_mgr_handle_job_done(ImsgWhole *msg);
extern void imsg_mgr_jobs_run(void);
extern long imsg_mgr_jobs_next_timeout(void);

/* manager_own.c */
extern void imsg_mgr_own_init(void);
extern void imsg_mgr_handle_changeset(ImsgWhole *msg);
extern int	imsg_mgr_own_settle(int *settled);
extern void imsg_mgr_own_ordered(int origin_pid, uint64 xid, uint64 seq,
								 int64 counted);
extern void imsg_mgr_own_conflict(int origin_pid, uint64 xid);
extern void imsg_mgr_own_gcs_lost(void);
extern long imsg_mgr_own_next_timeout(void);
extern bool imsg_mgr_own_pending(void);

/* flow_control.c */
extern void imsg_mgr_flow_run(void);
extern void imsg_mgr_flow_message(const char *origin, const char *p, Size len);
extern void imsg_mgr_flow_reset(void);

/* manager_apply.c */
extern void imsg_mgr_apply_init(void);
extern void imsg_mgr_queue_remote(uint64 seq, const char *origin, int32 origin_pid,
								  uint64 counter, bool overwrite, uint64 xid,
								  const char *cs, Size cslen, bool has_statement,
								  const uint64 *rows, int64 nrows);
extern void imsg_mgr_apply_run(void);
extern void imsg_mgr_apply_wake(void);
extern void imsg_mgr_handle_cs_applied(ImsgWhole *msg);
extern void imsg_mgr_own_delivered(uint64 full_xid, uint64 seq);
extern long imsg_mgr_apply_next_timeout(void);
extern bool imsg_mgr_apply_idle(void);
extern void imsg_mgr_apply_drop_queue(void);

#endif							/* IMESSAGES_MANAGER_INT_H */
