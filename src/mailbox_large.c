/*-------------------------------------------------------------------------
 *
 * mailbox_large.c
 *	  Messages larger than one message of the area: sent in parts,
 *	  assembled by the recipient.
 *
 * A message is at most imessages.max_message_size and what the area can
 * hold at once, but a change set can be 1 GB.  ImsgSendLarge sends such a
 * message as consecutive IMSG_T_PART messages of at most an eighth of the
 * area, so that the recipient takes the first parts out while the sender
 * writes the next; a message that fits in one part goes as itself, with no
 * part header.  Like shm_mq's, the parts of one message are consecutive in
 * the sender's stream: a sender sends one large message at a time, and one
 * sender's messages to a recipient stay in order.
 *
 * The recipient passes everything it receives through imsg_assemble, which
 * keeps one partial message per sender and hands out whole messages,
 * assembled or not.  A partial message is dropped, and the recipient told,
 * when:
 *	- its sender starts another large message (part 0): it gave this one up
 *	  (an ERROR or a timeout between parts), or
 *	- its sender sends a whole message of the same type: the same, or
 *	- the sender has no mailbox any more (it exited) and the recipient has
 *	  read everything in its own, looked at by imsg_assembler_sweep: parts
 *	  a sender queued just before it exited are still to be read until
 *	  then (the last of them may complete a message whose sender went on
 *	  to commit and exit).
 * So what an assembler holds is at most one message per live sender.
 *
 * Copyright (c) 2026, imessages developers
 *
 * IDENTIFICATION
 *	  src/mailbox_large.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "utils/memutils.h"

#include "mailbox_int.h"
#include "mailbox_large.h"

/* One sender's message being assembled. */
typedef struct ImsgPartial
{
	int			sender_pid;		/* hash key */
	int32		msgtype;
	uint32		next_part;
	Size		len;			/* the whole message's */
	Size		received;
	char	   *data;			/* len bytes, in the assembler's context */
	bool		sender_gone;	/* imsg_assembler_sweep's note */
} ImsgPartial;

/*
 * The largest part: one message, part header included, at most an eighth
 * of the area so that a large message streams through it.
 */
Size
imsg_large_part_size(void)
{
	Size		limit = Min((Size) imsg_max_message_size, imsg_largest_message());

	limit = Min(limit, ImsgAreaPtr->size_bytes / 8);
	return limit > IMSG_PART_HEADER + 1024 ? limit - IMSG_PART_HEADER : 1024;
}

/* Copy bytes [off, off + n) of head || body to 'out'. */
static void
put_slice(ImsgBuffer *out, const char *head, Size head_len,
		  const char *body, Size off, Size n)
{
	if (off < head_len)
	{
		Size		h = Min(n, head_len - off);

		ImsgBufferPutBytes(out, head + off, h);
		off += h;
		n -= h;
	}
	if (n > 0)
		ImsgBufferPutBytes(out, body + (off - head_len), n);
}

/*
 * Send head || body (two pieces, so that the caller need not copy them
 * together) to 'recipient_pid' as one message of 'msgtype', in parts if it
 * is larger than imsg_large_part_size().  timeout_ms applies to each part.
 * A failure after some parts went out leaves a partial message at the
 * recipient, which its next large message (or whole message of the same
 * type) from us replaces; the caller sends it again from the start.
 */
ImsgResult
ImsgSendLarge(int recipient_pid, int32 msgtype, const void *head, Size head_len,
			  const void *body, Size body_len, long timeout_ms, int flags)
{
	Size		part_max;
	Size		total = head_len + body_len;
	Size		off = 0;
	uint32		part = 0;

	if (ImsgAreaPtr == NULL)
		return IMSG_NOT_LOADED;
	if (total > MaxAllocSize)
		return IMSG_TOO_LARGE;
	part_max = imsg_large_part_size();

	if (total <= part_max + IMSG_PART_HEADER)
	{
		ImsgBuffer	out;
		ImsgResult	r;

		r = ImsgReserve(recipient_pid, msgtype, total, timeout_ms, &out);
		if (r != IMSG_OK)
			return r;
		put_slice(&out, head, head_len, body, 0, total);
		if (flags & IMSG_LARGE_QUIET_LAST)
			imsg_commit_quiet(&out);
		else
			ImsgCommit(&out);
		return IMSG_OK;
	}

	while (off < total)
	{
		Size		n = Min(part_max, total - off);
		ImsgBuffer	out;
		ImsgResult	r;

		r = ImsgReserve(recipient_pid, IMSG_T_PART, IMSG_PART_HEADER + n,
						timeout_ms, &out);
		if (r != IMSG_OK)
			return r;
		ImsgBufferPutInt32(&out, msgtype);
		ImsgBufferPutInt32(&out, (int32) total);
		ImsgBufferPutInt32(&out, (int32) part);
		put_slice(&out, head, head_len, body, off, n);
		off += n;
		part++;

		/*
		 * Earlier parts wake the recipient so that it makes room for the
		 * next; the last may leave the waking to the caller.
		 */
		if (off == total && (flags & IMSG_LARGE_QUIET_LAST))
			imsg_commit_quiet(&out);
		else
			ImsgCommit(&out);
	}
	return IMSG_OK;
}

void
imsg_assembler_init(ImsgAssembler *a, const char *name,
					ImsgPartialDropped dropped)
{
	HASHCTL		ctl;

	a->context = AllocSetContextCreate(TopMemoryContext, "imessages assembly",
									   ALLOCSET_DEFAULT_SIZES);
	MemoryContextSetIdentifier(a->context, name);
	ctl.keysize = sizeof(int);
	ctl.entrysize = sizeof(ImsgPartial);
	ctl.hcxt = a->context;
	a->partials = hash_create(name, 16, &ctl,
							  HASH_ELEM | HASH_BLOBS | HASH_CONTEXT);
	a->dropped = dropped;
}

/* Forget a partial message; tell the owner if it was given up. */
static void
drop_partial(ImsgAssembler *a, ImsgPartial *p, bool given_up)
{
	int			sender = p->sender_pid;

	if (given_up && a->dropped)
		a->dropped(p->msgtype, sender, p->received, p->len);
	pfree(p->data);
	(void) hash_search(a->partials, &sender, HASH_REMOVE, NULL);
}

/* Log a part that does not belong where it came, and drop it. */
static bool
reject_part(ImsgAssembler *a, ImsgPartial *p, int sender, uint32 part,
			const char *why)
{
	ereport(LOG,
			(errmsg("imessages dropped part %u of a message from process %d: %s",
					part, sender, why)));
	if (p != NULL)
		drop_partial(a, p, false);
	return false;
}

/*
 * Take in one received message.  True when it makes a whole message, set
 * in *out (call imsg_whole_done after use, before the message is
 * released); false when it was a part kept for later, or a bad one
 * (logged).
 */
bool
imsg_assemble(ImsgAssembler *a, ImsgMessage *msg, ImsgWhole *out)
{
	int			sender = ImsgMessageSender(msg);
	ImsgPartial *p = NULL;
	ImsgBuffer	in;
	int32		msgtype;
	Size		len;
	uint32		part;
	uint32		n;

	/* most messages come whole, and no partial message is held */
	if (hash_get_num_entries(a->partials) > 0)
		p = hash_search(a->partials, &sender, HASH_FIND, NULL);
	out->sender_pid = sender;
	if (ImsgMessageType(msg) != IMSG_T_PART)
	{
		out->msgtype = ImsgMessageType(msg);
		out->data = ImsgMessageData(msg);
		out->len = ImsgMessageLength(msg);
		out->msg = msg;
		out->assembled = NULL;
		/* a whole one of the same type: the large one was given up */
		if (p != NULL && p->msgtype == out->msgtype)
			drop_partial(a, p, true);
		return true;
	}

	if (ImsgMessageLength(msg) < IMSG_PART_HEADER)
		return reject_part(a, NULL, sender, 0, "it is too short");
	ImsgBufferInitReader(&in, ImsgMessageData(msg), ImsgMessageLength(msg));
	msgtype = ImsgBufferGetInt32(&in);
	len = (uint32) ImsgBufferGetInt32(&in);
	part = (uint32) ImsgBufferGetInt32(&in);
	n = ImsgBufferRemaining(&in);

	if (part == 0)
	{
		char	   *data;

		if (p != NULL)
			drop_partial(a, p, true);	/* its sender gave the last one up */
		if (len > MaxAllocSize || n == 0 || n >= len)
			return reject_part(a, NULL, sender, part, "its message length is invalid");
		data = MemoryContextAllocExtended(a->context, len, MCXT_ALLOC_NO_OOM);
		if (data == NULL)
			return reject_part(a, NULL, sender, part, "out of memory");
		p = hash_search(a->partials, &sender, HASH_ENTER, NULL);
		p->msgtype = msgtype;
		p->len = len;
		p->received = 0;
		p->next_part = 0;
		p->data = data;
	}
	else if (p == NULL)
		return reject_part(a, NULL, sender, part, "no part 0 came before it");
	if (part != p->next_part || msgtype != p->msgtype || len != p->len ||
		n > p->len - p->received)
		return reject_part(a, p, sender, part, "out of sequence");
	memcpy(p->data + p->received, ImsgBufferGetBytes(&in, n), n);
	p->received += n;
	p->next_part++;
	if (p->received < p->len)
		return false;

	out->msgtype = p->msgtype;
	out->data = p->data;
	out->len = p->len;
	out->msg = NULL;
	out->assembled = p->data;
	(void) hash_search(a->partials, &sender, HASH_REMOVE, NULL);
	return true;
}

/*
 * Keep an assembled message's bytes (palloc'd in the assembler's context;
 * pfree them when done), or NULL if it came whole: then copy what is
 * needed before the message is released.
 */
char *
imsg_whole_take(ImsgWhole *w)
{
	char	   *data = w->assembled;

	w->assembled = NULL;
	return data;
}

void
imsg_whole_done(ImsgWhole *w)
{
	if (w->assembled != NULL)
		pfree(w->assembled);
	w->assembled = NULL;
	w->data = NULL;
}

/*
 * Drop the partial messages of senders that have gone, once everything
 * they queued has been read.  Returns how many partial messages are left.
 */
int
imsg_assembler_sweep(ImsgAssembler *a)
{
	HASH_SEQ_STATUS seq;
	ImsgPartial *p;
	int			gone = 0;

	if (hash_get_num_entries(a->partials) == 0)
		return 0;
	hash_seq_init(&seq, a->partials);
	while ((p = hash_seq_search(&seq)) != NULL)
	{
		p->sender_gone = !imsg_mailbox_is_open(p->sender_pid);
		gone += p->sender_gone ? 1 : 0;
	}
	if (gone == 0)
		return (int) hash_get_num_entries(a->partials);

	/*
	 * The sender closed its mailbox after it queued its last part: if ours
	 * is empty after that (looked at after the mailbox checks, hence the
	 * barrier), we have read every part it sent.
	 */
	pg_memory_barrier();
	if (!imsg_mailbox_drained())
		return (int) hash_get_num_entries(a->partials);
	hash_seq_init(&seq, a->partials);
	while ((p = hash_seq_search(&seq)) != NULL)
	{
		/* deleting the entry just returned is allowed during a scan */
		if (p->sender_gone)
			drop_partial(a, p, true);
	}
	return (int) hash_get_num_entries(a->partials);
}

int
imsg_assembler_count(const ImsgAssembler *a)
{
	return (int) hash_get_num_entries(a->partials);
}
