/*-------------------------------------------------------------------------
 *
 * mailbox_large.h
 *	  Messages of any size (up to 1 GB) over the mailboxes: sent in parts,
 *	  assembled on receipt.  Internal: the change sets (backend to manager)
 *	  and the remote change sets (manager to helper) travel this way.
 *
 * Copyright (c) 2026, imessages developers
 *
 * IDENTIFICATION
 *	  src/mailbox_large.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef IMESSAGES_MAILBOX_LARGE_H
#define IMESSAGES_MAILBOX_LARGE_H

#include "imessages.h"
#include "utils/hsearch.h"

/*
 * The part of a large message (IMSG_T_PART): int32 the message's type,
 * uint32 its length, uint32 the part's number, then its bytes.  The last
 * part is the one that completes the length.
 */
#define IMSG_T_PART				(-15)
#define IMSG_PART_HEADER		(4 + 4 + 4)

/* ImsgSendLarge flags */
#define IMSG_LARGE_QUIET_LAST	0x01	/* the last part does not wake (see
										 * imsg_commit_quiet) */

extern Size imsg_large_part_size(void);
extern ImsgResult ImsgSendLarge(int recipient_pid, int32 msgtype,
								const void *head, Size head_len,
								const void *body, Size body_len,
								long timeout_ms, int flags);

/*
 * A whole message: one that came whole (msg set, data in the mailbox until
 * it is released), or one assembled from its parts (msg NULL, data in
 * 'assembled', palloc'd in the assembler's context).
 */
typedef struct ImsgWhole
{
	int32		msgtype;
	int			sender_pid;
	const char *data;
	Size		len;
	ImsgMessage *msg;
	char	   *assembled;
} ImsgWhole;

/*
 * Told of a partial message given up: its sender left, or started another
 * (see mailbox_large.c).  Not of one dropped as malformed (that is logged).
 */
typedef void (*ImsgPartialDropped) (int32 msgtype, int sender_pid, Size received,
									Size len);

/* Messages being assembled, one per sender. */
typedef struct ImsgAssembler
{
	MemoryContext context;
	HTAB	   *partials;		/* sender pid -> ImsgPartial */
	ImsgPartialDropped dropped; /* or NULL */
} ImsgAssembler;

extern void imsg_assembler_init(ImsgAssembler *a, const char *name,
								ImsgPartialDropped dropped);
extern bool imsg_assemble(ImsgAssembler *a, ImsgMessage *msg, ImsgWhole *out);
extern char *imsg_whole_take(ImsgWhole *w);
extern void imsg_whole_done(ImsgWhole *w);
extern int	imsg_assembler_sweep(ImsgAssembler *a);
extern int	imsg_assembler_count(const ImsgAssembler *a);

#endif							/* IMESSAGES_MAILBOX_LARGE_H */
