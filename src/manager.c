/*-------------------------------------------------------------------------
 *
 * manager.c
 *	  The replication manager: a background worker that owns the mailbox
 *	  messages sent "to the manager" (recipient NULL / IMSG_MANAGER) go to.
 *
 * It registers itself in the area (pid, slot, mailbox generation) so that
 * senders can find it, drains its mailbox in batches, and sleeps on its
 * latch.  SIGHUP reloads the configuration; SIGTERM ends it with exit
 * status 1, so the postmaster starts a new one after bgw_restart_time
 * (during a server shutdown the postmaster does not restart it).
 *
 * Copyright (c) 2026, imessages developers
 *
 * IDENTIFICATION
 *	  src/manager.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "storage/proc.h"
#include "utils/guc.h"

#include "imessages_int.h"

#define IMSG_MANAGER_BATCH		256
#define IMSG_MANAGER_RESTART_S	1

void
imsg_register_manager(void)
{
	BackgroundWorker worker;

	memset(&worker, 0, sizeof(worker));
	worker.bgw_flags = BGWORKER_SHMEM_ACCESS | BGWORKER_BACKEND_DATABASE_CONNECTION;
	worker.bgw_start_time = BgWorkerStart_RecoveryFinished;
	worker.bgw_restart_time = IMSG_MANAGER_RESTART_S;
	strlcpy(worker.bgw_library_name, "imessages", BGW_MAXLEN);
	strlcpy(worker.bgw_function_name, "imsg_manager_main", BGW_MAXLEN);
	strlcpy(worker.bgw_name, "imessages manager", BGW_MAXLEN);
	strlcpy(worker.bgw_type, "imessages manager", BGW_MAXLEN);
	RegisterBackgroundWorker(&worker);
}

/* on_shmem_exit: stop being the manager before the mailbox closes. */
static void
imsg_manager_unregister(int code, Datum arg)
{
	ImsgArea   *area = ImsgAreaPtr;

	SpinLockAcquire(&area->manager_lock);
	if (area->manager_pid == MyProcPid)
	{
		area->manager_pid = 0;
		area->manager_procno = -1;
	}
	SpinLockRelease(&area->manager_lock);
}

/* Take out and count up to one batch of messages; true if it was full. */
static bool
imsg_manager_drain(void)
{
	ImsgMessage *msg;
	ImsgMessage *last = NULL;
	int			n;

	for (n = 0; n < IMSG_MANAGER_BATCH; n++)
	{
		if (ImsgReceive(0, &msg) != IMSG_OK)
			break;
		last = msg;
	}
	if (last != NULL)
	{
		ImsgRelease(last);
		pg_atomic_fetch_add_u64(&ImsgAreaPtr->manager_received, n);
	}
	return n == IMSG_MANAGER_BATCH;
}

void
imsg_manager_main(Datum main_arg)
{
	ImsgArea   *area = ImsgAreaPtr;
	ImsgMailbox *mb;

	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	pqsignal(SIGTERM, SignalHandlerForShutdownRequest);
	BackgroundWorkerUnblockSignals();

	/* no database: this makes it visible in pg_stat_activity */
	BackgroundWorkerInitializeConnection(NULL, NULL, 0);

	ImsgOpenMailbox();
	mb = imsg_my_mailbox();

	/* registered after the mailbox's callback, so it runs before it */
	on_shmem_exit(imsg_manager_unregister, (Datum) 0);
	SpinLockAcquire(&area->manager_lock);
	area->manager_pid = MyProcPid;
	area->manager_procno = MyProc->pgprocno;
	area->manager_generation = mb->generation;
	SpinLockRelease(&area->manager_lock);

	elog(LOG, "imessages manager started");

	while (!ShutdownRequestPending)
	{
		if (imsg_manager_drain())
		{
			CHECK_FOR_INTERRUPTS();
			continue;
		}

		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_EXIT_ON_PM_DEATH, -1L,
						 PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
		CHECK_FOR_INTERRUPTS();

		if (ConfigReloadPending)
		{
			ConfigReloadPending = false;
			ProcessConfigFile(PGC_SIGHUP);
		}
	}

	elog(LOG, "imessages manager shutting down");
	/* status 1: the postmaster starts a new manager unless it is shutting down */
	proc_exit(1);
}
