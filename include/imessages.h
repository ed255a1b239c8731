/*-------------------------------------------------------------------------
 *
 * imessages.h
 *	  Public C API of imessages: typed messages between PostgreSQL processes
 *	  through a fixed-size shared memory area.
 *
 * Every process (backend or background worker) owns one mailbox, a FIFO
 * queue.  A sender copies a message into the recipient's mailbox, or builds
 * it there in place, and sets the recipient's latch.  Messages live in the
 * area until the recipient releases them.
 *
 * All functions must be called from a process attached to shared memory,
 * after the library was loaded through shared_preload_libraries.  They never
 * raise an ERROR for an expected condition (full area, unknown recipient,
 * timeout): they return an ImsgResult, and the caller decides.  They do
 * raise ERROR for programming errors and run CHECK_FOR_INTERRUPTS() while
 * waiting, so a wait can end in a query cancel or die.
 *
 * Copyright (c) 2026, imessages developers
 *
 * IDENTIFICATION
 *	  include/imessages.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef IMESSAGES_H
#define IMESSAGES_H

#include "datatype/timestamp.h"

/* A message in the area; opaque, read it through the accessors below. */
typedef struct ImsgMessage ImsgMessage;

/* Outcome of a queue operation. */
typedef enum ImsgResult
{
	IMSG_OK = 0,				/* done */
	IMSG_WOULD_BLOCK,			/* nowait: no space, or no message */
	IMSG_TIMEOUT,				/* waited the whole timeout */
	IMSG_NO_RECIPIENT,			/* no open mailbox for that process */
	IMSG_TOO_LARGE,				/* message larger than the limit */
	IMSG_NOT_LOADED,			/* not loaded via shared_preload_libraries */
	IMSG_OVER_QUOTA				/* recipient's mailbox at its quota (nowait,
								 * or after the whole timeout) */
} ImsgResult;

/* Pass as recipient_pid to address the replication manager. */
#define IMSG_MANAGER		0

/* Timeouts in milliseconds: 0 = do not wait, IMSG_WAIT_FOREVER = no limit. */
#define IMSG_WAIT_FOREVER	(-1L)

/* Message types below this are reserved for imessages' own protocol. */
#define IMSG_FIRST_USER_TYPE	0

/*
 * Bounds-checked buffer for building and reading payloads.
 *
 * Integers are written in network byte order; strings and byte strings
 * carry a uint32 length prefix.  A writer over fixed memory (for example a
 * reserved message in the area) raises ERROR instead of overrunning it; a
 * growable writer (ImsgBufferInitGrowable) enlarges itself in the given
 * memory context.  A reader raises ERROR on any read past the end or any
 * length prefix that does not fit what is left.
 */
typedef struct ImsgBuffer
{
	char	   *data;			/* start of the bytes */
	uint32		len;			/* bytes written (writer) or readable (reader) */
	uint32		capacity;		/* writer: bytes available at data */
	uint32		cursor;			/* reader: next byte to read */
	uint32		max_capacity;	/* growable writer: upper bound; else 0 */
	void	   *context;		/* growable writer: MemoryContext; else NULL */
	void	   *reservation;	/* set by ImsgReserve; internal */
} ImsgBuffer;

/* Buffer set-up */
extern PGDLLEXPORT void ImsgBufferInitWriter(ImsgBuffer *buf, void *data, uint32 capacity);
extern PGDLLEXPORT void ImsgBufferInitGrowable(ImsgBuffer *buf, uint32 initial, uint32 max_capacity);
extern PGDLLEXPORT void ImsgBufferInitReader(ImsgBuffer *buf, const void *data, uint32 len);

/* Buffer writers: ERROR if the value does not fit */
extern PGDLLEXPORT void ImsgBufferPutInt8(ImsgBuffer *buf, int8 value);
extern PGDLLEXPORT void ImsgBufferPutInt16(ImsgBuffer *buf, int16 value);
extern PGDLLEXPORT void ImsgBufferPutInt32(ImsgBuffer *buf, int32 value);
extern PGDLLEXPORT void ImsgBufferPutInt64(ImsgBuffer *buf, int64 value);
extern PGDLLEXPORT void ImsgBufferPutBytes(ImsgBuffer *buf, const void *data, uint32 len);
extern PGDLLEXPORT void ImsgBufferPutString(ImsgBuffer *buf, const char *str, uint32 len);

/* Buffer readers: ERROR on a read past the end */
extern PGDLLEXPORT int8 ImsgBufferGetInt8(ImsgBuffer *buf);
extern PGDLLEXPORT int16 ImsgBufferGetInt16(ImsgBuffer *buf);
extern PGDLLEXPORT int32 ImsgBufferGetInt32(ImsgBuffer *buf);
extern PGDLLEXPORT int64 ImsgBufferGetInt64(ImsgBuffer *buf);
extern PGDLLEXPORT const char *ImsgBufferGetBytes(ImsgBuffer *buf, uint32 len);
extern PGDLLEXPORT const char *ImsgBufferGetString(ImsgBuffer *buf, uint32 *len);
extern PGDLLEXPORT uint32 ImsgBufferRemaining(const ImsgBuffer *buf);
extern PGDLLEXPORT void ImsgBufferCheckEnd(const ImsgBuffer *buf);

/*
 * Sending.
 *
 * ImsgSend copies len bytes into the recipient's mailbox and wakes it.  If
 * the area is full it waits up to timeout_ms for space (0: return
 * IMSG_WOULD_BLOCK at once).  If the message would take the recipient's
 * mailbox over its quota (imessages.mailbox_quota, or
 * imessages.manager_mailbox_quota for the manager's) it waits, within the
 * same timeout, for the recipient to take messages out, and then returns
 * IMSG_OVER_QUOTA (at once if timeout_ms is 0); an empty mailbox takes one
 * message of any size.  Sends to other mailboxes are not held up.  On
 * IMSG_OK *msg_id (if not NULL) is the message's id, unique for the life of
 * the server.  On any other result nothing was queued.  Safe to call concurrently from any number of
 * processes; senders to different recipients never share a lock.  Calling
 * it opens the caller's own mailbox.
 *
 * ImsgReserve is the zero-copy form: it reserves room for len payload bytes
 * in the recipient's mailbox and sets *buf up as a writer over that room.
 * Fill it with the ImsgBufferPut* functions, then ImsgCommit publishes the
 * message with buf->len bytes (never more than reserved), or ImsgCancel
 * withdraws it.  Until then the recipient cannot read past this message, so
 * keep the window short and never wait inside it.  A process holds at most
 * one reservation; an ERROR or exit cancels it automatically.
 */
extern PGDLLEXPORT ImsgResult ImsgSend(int recipient_pid, int32 msgtype,
									   const void *data, Size len,
									   long timeout_ms, uint64 *msg_id);
extern PGDLLEXPORT ImsgResult ImsgReserve(int recipient_pid, int32 msgtype,
										  Size len, long timeout_ms,
										  ImsgBuffer *buf);
extern PGDLLEXPORT uint64 ImsgCommit(ImsgBuffer *buf);
extern PGDLLEXPORT void ImsgCancel(ImsgBuffer *buf);

/*
 * Pipelined sending, for a stream of messages to one recipient (like
 * shm_mq_send with force_flush = false): ImsgSendPipelined writes each
 * message into a batch of up to 64 kB that this process fills on its own
 * (its room is taken from the area when the batch starts, so an accepted
 * message never waits for space again), and publishes the batch to the
 * recipient, with one wake-up, when it is full or at the next of:
 * ImsgFlush, a pipelined send to another recipient, ImsgSend or
 * ImsgReserve, ImsgReceive or ImsgReceiveMatching, the end of the caller's
 * transaction, its exit.  Until then the recipient does not see the batch
 * (other senders are not held up by it); end a stream with ImsgFlush, and
 * flush before pausing.  ImsgFlush returns IMSG_NO_RECIPIENT if the
 * recipient exited before the batch could be published: like the messages
 * a process leaves unread, the batch is then lost.  The messages of one
 * batch share their sent_at.  A message larger than half a batch is sent
 * on its own, as by ImsgSend.  A batch is no larger than the room left
 * under the recipient's quota when it starts (a batch that cannot start
 * waits as ImsgSend does, and may return IMSG_OVER_QUOTA); messages
 * accepted into it are never refused later.  A process has at most one batch open, so
 * ImsgFlush publishes it whichever recipient_pid it is given.
 */
extern PGDLLEXPORT ImsgResult ImsgSendPipelined(int recipient_pid, int32 msgtype,
												const void *data, Size len,
												long timeout_ms, uint64 *msg_id);
extern PGDLLEXPORT ImsgResult ImsgFlush(int recipient_pid);

/*
 * Receiving (only from the caller's own mailbox).
 *
 * ImsgReceive returns the next message in FIFO order, waiting up to
 * timeout_ms on the caller's latch for one to arrive (0: IMSG_WOULD_BLOCK at
 * once).  The message stays in the area, readable through the accessors,
 * until released.  ImsgRelease(msg) releases msg and every message received
 * before it (a cumulative acknowledgement); their memory returns to the
 * area in batches (at the latest when the caller next waits in
 * ImsgReceive).  Messages received and not released are freed when the process
 * exits.  ImsgReceive may reset MyLatch: callers that also wait on it for
 * other reasons must recheck those conditions.
 */
extern PGDLLEXPORT ImsgResult ImsgReceive(long timeout_ms, ImsgMessage **msg);
extern PGDLLEXPORT void ImsgRelease(ImsgMessage *msg);

/*
 * Selective receive.  ImsgReceiveMatching waits up to timeout_ms for the
 * first message, in FIFO order, for which match(msg, arg) returns true,
 * leaving all others where they are (match is called on each READY message
 * it passes; it must not raise an ERROR or wait).  The caller reads it, then
 * calls ImsgConsume(msg), after which ImsgReceive skips it; its memory is
 * freed when the messages before it are released.  Meant for replies the
 * caller is waiting for while other traffic is queued.
 */
typedef bool (*ImsgMatchFunc) (const ImsgMessage *msg, void *arg);

extern PGDLLEXPORT ImsgResult ImsgReceiveMatching(long timeout_ms, ImsgMatchFunc match,
												  void *arg, ImsgMessage **msg);
/* An ImsgMatchFunc for the common case: arg points to the int32 type wanted */
extern PGDLLEXPORT bool ImsgMatchType(const ImsgMessage *msg, void *msgtype);
extern PGDLLEXPORT void ImsgConsume(ImsgMessage *msg);

/* Message accessors: valid until the message is released */
extern PGDLLEXPORT uint64 ImsgMessageId(const ImsgMessage *msg);
extern PGDLLEXPORT int32 ImsgMessageType(const ImsgMessage *msg);
extern PGDLLEXPORT int ImsgMessageSender(const ImsgMessage *msg);
extern PGDLLEXPORT int ImsgMessageRecipient(const ImsgMessage *msg);
extern PGDLLEXPORT Oid ImsgMessageSenderRole(const ImsgMessage *msg);
extern PGDLLEXPORT TimestampTz ImsgMessageSentAt(const ImsgMessage *msg);
extern PGDLLEXPORT uint32 ImsgMessageLength(const ImsgMessage *msg);
extern PGDLLEXPORT const char *ImsgMessageData(const ImsgMessage *msg);

/* Process-level helpers */
extern PGDLLEXPORT bool ImsgAvailable(void);
extern PGDLLEXPORT void ImsgOpenMailbox(void);
extern PGDLLEXPORT int ImsgManagerPid(void);
extern PGDLLEXPORT const char *ImsgResultString(ImsgResult result);

#endif							/* IMESSAGES_H */
