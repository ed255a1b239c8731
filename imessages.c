/*-------------------------------------------------------------------------
 *
 * imessages.c
 *	  Module entry point: GUCs, shared memory hooks, the manager worker.
 *
 * imessages must be loaded through shared_preload_libraries: _PG_init then
 * runs in the postmaster, asks for the shared memory area in
 * shmem_request_hook, lays it out in shmem_startup_hook and registers the
 * replication manager.  Loaded any other way (CREATE EXTENSION alone) it
 * defines its session GUCs only, and every function reports that it must be
 * preloaded.
 *
 * Copyright (c) 2026, imessages developers
 *
 * IDENTIFICATION
 *	  imessages.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "fmgr.h"
#include "miscadmin.h"
#include "storage/ipc.h"
#include "storage/lwlock.h"
#include "storage/shmem.h"
#include "postmaster/postmaster.h"
#include "utils/guc.h"

#include "src/mailbox_int.h"
#include "src/replication_int.h"
#include "src/changeset_int.h"

PG_MODULE_MAGIC;

void		_PG_init(void);

/* GUC variables */
int			imsg_buffer_size_kb = 8192;
int			imsg_max_message_size = 1024 * 1024;
int			imsg_send_timeout_ms = 5000;
int			imsg_mailbox_quota = -1;
int			imsg_manager_mailbox_quota = -1;
int			imsg_min_helpers = 1;
int			imsg_max_helpers = 4;
char	   *imsg_database = NULL;
int			imsg_gcs = 0;
char	   *imsg_gcs_group = NULL;
char	   *imsg_node_name = NULL;
int			imsg_commit_mode = IMSG_COMMIT_ASYNC;
int			imsg_commit_timeout_ms = 10000;
int			imsg_settle_delay_ms = 1;
int			imsg_gcs_join_wait_ms = 3000;
int			imsg_certification_window = 262144;
char	   *imsg_node_conninfo = NULL;
int			imsg_changeset_log_size_kb = 64 * 1024;
bool		imsg_debug_skip_position = false;
int			imsg_flow_control_limit = 1000;
int			imsg_node_id = 0;
int			imsg_node_sequence_stride = 16;

static const struct config_enum_entry commit_mode_options[] = {
	{"async", IMSG_COMMIT_ASYNC, false},
	{"sync", IMSG_COMMIT_SYNC, false},
	{NULL, 0, false}
};

static shmem_request_hook_type prev_shmem_request_hook = NULL;
static shmem_startup_hook_type prev_shmem_startup_hook = NULL;

static void imsg_shmem_request(void);
static void imsg_shmem_startup(void);

/*
 * imessages.mailbox_quota and imessages.manager_mailbox_quota: publish the
 * new value in this process's mailbox (mailbox.c), so that its senders see
 * it.  The hooks get the new value before the variable changes.
 */
static void
imsg_assign_mailbox_quota(int newval, void *extra)
{
	imsg_quota_settings_changed(newval, imsg_manager_mailbox_quota);
}

static void
imsg_assign_manager_mailbox_quota(int newval, void *extra)
{
	imsg_quota_settings_changed(imsg_mailbox_quota, newval);
}

/* imessages.max_message_size may not exceed the area. */
static bool
imsg_check_max_message_size(int *newval, void **extra, GucSource source)
{
	if ((int64) *newval > (int64) imsg_buffer_size_kb * 1024)
	{
		GUC_check_errdetail("imessages.max_message_size must not exceed imessages.buffer_size (%d kB).",
							imsg_buffer_size_kb);
		return false;
	}
	return true;
}

void
_PG_init(void)
{
	DefineCustomIntVariable("imessages.send_timeout",
							"Time a sender waits for room in a full area.",
							"0 means fail at once.",
							&imsg_send_timeout_ms,
							5000, 0, INT_MAX,
							PGC_USERSET,
							GUC_UNIT_MS,
							NULL, NULL, NULL);

	/*
	 * The quotas are the recipient's: each process publishes its own value
	 * in its mailbox, and senders to it wait past it.  -1 stands for a
	 * share of imessages.buffer_size, which a GUC's default cannot name.
	 */
	DefineCustomIntVariable("imessages.mailbox_quota",
							"Most bytes of unread messages this process's mailbox may hold before senders wait.",
							"Senders to a mailbox over its quota wait up to imessages.send_timeout, then fail.  "
							"-1: a quarter of imessages.buffer_size; 0: no quota.",
							&imsg_mailbox_quota,
							-1, -1, INT_MAX,
							PGC_SUSET,
							GUC_UNIT_BYTE,
							NULL, imsg_assign_mailbox_quota, NULL);

	DefineCustomIntVariable("imessages.manager_mailbox_quota",
							"Most bytes of unread messages the replication manager's mailbox may hold before senders wait.",
							"-1: half of imessages.buffer_size; 0: no quota.",
							&imsg_manager_mailbox_quota,
							-1, -1, INT_MAX,
							PGC_SIGHUP,
							GUC_UNIT_BYTE,
							NULL, imsg_assign_manager_mailbox_quota, NULL);

	DefineCustomEnumVariable("imessages.commit_mode",
							 "Whether commit waits until the group has ordered the change set.",
							 "async: commit does not wait; sync: it waits up to imessages.commit_timeout.",
							 &imsg_commit_mode,
							 IMSG_COMMIT_ASYNC,
							 commit_mode_options,
							 PGC_USERSET,
							 0,
							 NULL, NULL, NULL);

	DefineCustomIntVariable("imessages.commit_timeout",
							"Longest a sync commit waits for its change set to be ordered.",
							"The transaction is rolled back when it expires.",
							&imsg_commit_timeout_ms,
							10000, 1, INT_MAX,
							PGC_USERSET,
							GUC_UNIT_MS,
							NULL, NULL, NULL);

	/*
	 * Read by imsg_node_sequence() and imsg_replicate() (SQL), in any
	 * session: superuser-only, since they decide which values this node's
	 * sequences hand out; a superuser may set them in the session that runs
	 * imsg_node_sequence(), as MySQL allows for auto_increment_offset.
	 */
	DefineCustomIntVariable("imessages.node_id",
							"This node's number in the group, from 1 to imessages.node_sequence_stride; unique within the group.",
							"imsg_node_sequence() gives this node's sequences the values congruent to it modulo the stride.  "
							"0: none, and imsg_node_sequence() refuses to run.",
							&imsg_node_id,
							0, 0, IMSG_MAX_NODE_SEQUENCE_STRIDE,
							PGC_SUSET,
							0,
							NULL, NULL, NULL);

	DefineCustomIntVariable("imessages.node_sequence_stride",
							"The increment imsg_node_sequence() gives sequences: the most nodes whose values stay disjoint.",
							"Use the same value on every node.",
							&imsg_node_sequence_stride,
							16, 2, IMSG_MAX_NODE_SEQUENCE_STRIDE,
							PGC_SUSET,
							0,
							NULL, NULL, NULL);

	if (!process_shared_preload_libraries_in_progress)
	{
		DefineCustomStringVariable("imessages.node_conninfo",
							   "How other nodes reach this one to catch up from its change-set log (a libpq connection string).",
							   "Published to the group; a node that missed change sets connects here to fetch them.  "
							   "Empty: this node is never a donor.",
							   &imsg_node_conninfo,
							   "",
							   PGC_SIGHUP,
							   GUC_SUPERUSER_ONLY,
							   NULL, NULL, NULL);

	DefineCustomIntVariable("imessages.changeset_log_size",
							"How much of the latest change sets each node keeps in its change-set log, for nodes that catch up.",
							"A node behind by more than a donor's log holds needs a full state transfer.",
							&imsg_changeset_log_size_kb,
							64 * 1024, 256, INT_MAX / 2,
							PGC_SIGHUP,
							GUC_UNIT_KB,
							NULL, NULL, NULL);

	MarkGUCPrefixReserved("imessages");
		return;
	}

	DefineCustomIntVariable("imessages.buffer_size",
							"Size of the shared memory area for messages waiting to be received.",
							"The hard limit on queued messages, headers included.",
							&imsg_buffer_size_kb,
							8192, 256, INT_MAX / 2,
							PGC_POSTMASTER,
							GUC_UNIT_KB,
							NULL, NULL, NULL);

	DefineCustomIntVariable("imessages.max_message_size",
							"Largest payload one message may carry.",
							NULL,
							&imsg_max_message_size,
							1024 * 1024, 0, INT_MAX,
							PGC_SUSET,
							GUC_UNIT_BYTE,
							imsg_check_max_message_size, NULL, NULL);

	DefineCustomIntVariable("imessages.settle_delay",
							"Longest the manager takes to notice that transactions whose change sets it holds have ended.",
							"While such transactions are committing, the manager looks at their outcome this often instead of being woken by each; 0 has every commit wake it.",
							&imsg_settle_delay_ms,
							1, 0, 1000,
							PGC_SIGHUP,
							GUC_UNIT_MS,
							NULL, NULL, NULL);

	DefineCustomIntVariable("imessages.min_helpers",
							"Helper backends the manager keeps running.",
							NULL,
							&imsg_min_helpers,
							1, 0, MAX_BACKENDS,
							PGC_SIGHUP,
							0,
							NULL, NULL, NULL);

	DefineCustomIntVariable("imessages.max_helpers",
							"Most helper backends the manager runs.",
							"Also bounded by max_worker_processes, less one for the manager.",
							&imsg_max_helpers,
							4, 0, MAX_BACKENDS,
							PGC_SIGHUP,
							0,
							NULL, NULL, NULL);

	DefineCustomStringVariable("imessages.database",
							   "Database the helper backends connect to.",
							   NULL,
							   &imsg_database,
							   "postgres",
							   PGC_SIGHUP,
							   0,
							   NULL, NULL, NULL);

	DefineCustomEnumVariable("imessages.gcs",
							 "Group communication system the manager uses.",
							 NULL,
							 &imsg_gcs,
							 0,
							 imsg_gcs_options(),
							 PGC_POSTMASTER,
							 0,
							 NULL, NULL, NULL);

	DefineCustomStringVariable("imessages.gcs_group",
							   "Name of the group the manager joins (the Corosync CPG group).",
							   "Every node of one replicated cluster uses the same name.",
							   &imsg_gcs_group,
							   "imessages",
							   PGC_POSTMASTER,
							   0,
							   NULL, NULL, NULL);

	DefineCustomIntVariable("imessages.gcs_join_wait",
							"How long a node that regains a majority in the group waits for the managers of the other nodes before it orders change sets without them.",
							"What is ordered before a manager joins never reaches its node.  0 orders as soon as there is a majority.",
							&imsg_gcs_join_wait_ms,
							3000, 0, 3600 * 1000,
							PGC_SIGHUP,
							GUC_UNIT_MS,
							NULL, NULL, NULL);

	DefineCustomIntVariable("imessages.certification_window",
							"How many delivered change sets certification remembers rows for.",
							"Conflicts between change sets delivered further apart are not detected.  "
							"Use the same value on every node.",
							&imsg_certification_window,
							262144, 1000, INT_MAX,
							PGC_POSTMASTER,
							0,
							NULL, NULL, NULL);

	DefineCustomIntVariable("imessages.max_local_writes",
							"How many of this node's recent transactions, and rows they removed, are remembered for async replication.",
							"A remote change set delivered before one of ours must not overwrite our rows here; "
							"a transaction that finds the map full fails at commit.",
							&imsg_max_local_writes,
							65536, 1024, 16 * 1024 * 1024,
							PGC_POSTMASTER,
							0,
							NULL, NULL, NULL);

	DefineCustomStringVariable("imessages.node_name",
							   "This node's name in the group; unique within the group.",
							   "Empty: cluster_name if set, else host name and port.",
							   &imsg_node_name,
							   "",
							   PGC_POSTMASTER,
							   0,
							   NULL, NULL, NULL);

	DefineCustomStringVariable("imessages.node_conninfo",
							   "How other nodes reach this one to catch up from its change-set log (a libpq connection string).",
							   "Published to the group; a node that missed change sets connects here to fetch them.  "
							   "Empty: this node is never a donor.",
							   &imsg_node_conninfo,
							   "",
							   PGC_SIGHUP,
							   GUC_SUPERUSER_ONLY,
							   NULL, NULL, NULL);

	DefineCustomIntVariable("imessages.changeset_log_size",
							"How much of the latest change sets each node keeps in its change-set log, for nodes that catch up.",
							"A node behind by more than a donor's log holds needs a full state transfer.",
							&imsg_changeset_log_size_kb,
							64 * 1024, 256, INT_MAX / 2,
							PGC_SIGHUP,
							GUC_UNIT_KB,
							NULL, NULL, NULL);

	DefineCustomIntVariable("imessages.flow_control_limit",
							"Change sets a node may have to apply before the group's committers pause.",
							"Past it, the node asks every node's committers to wait until it has applied half of them.  "
							"0: no flow control.",
							&imsg_flow_control_limit,
							1000, 0, INT_MAX,
							PGC_SIGHUP,
							0,
							NULL, NULL, NULL);

	DefineCustomBoolVariable("imessages.debug_skip_position",
							 "Developer option: the manager skips one position, as if a delivery were lost.",
							 "For testing gap detection only: when it is turned on at a reload, the next change "
							 "set delivered to this node gets a position one past the expected one.",
							 &imsg_debug_skip_position,
							 false,
							 PGC_SIGHUP,
							 GUC_NOT_IN_SAMPLE | GUC_SUPERUSER_ONLY,
							 NULL, NULL, NULL);

	MarkGUCPrefixReserved("imessages");

	prev_shmem_request_hook = shmem_request_hook;
	shmem_request_hook = imsg_shmem_request;
	prev_shmem_startup_hook = shmem_startup_hook;
	shmem_startup_hook = imsg_shmem_startup;

	imsg_sql_init();
	imsg_changeset_init();
	imsg_ddl_init();
	imsg_register_manager();
}

static void
imsg_shmem_request(void)
{
	if (prev_shmem_request_hook)
		prev_shmem_request_hook();
	imsg_area_request();
}

static void
imsg_shmem_startup(void)
{
	if (prev_shmem_startup_hook)
		prev_shmem_startup_hook();

	LWLockAcquire(AddinShmemInitLock, LW_EXCLUSIVE);
	imsg_area_startup();
	LWLockRelease(AddinShmemInitLock);
}
