/*-------------------------------------------------------------------------
 *
 * changeset_walk.h
 *	  Structural walk of a change set, shared by the server and the fuzz
 *	  target (src/test/fuzz/fuzz_changeset.c).
 *
 * Copyright (c) 2026, imessages developers
 *
 * IDENTIFICATION
 *	  src/changeset_walk.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef IMESSAGES_CHANGESET_WALK_H
#define IMESSAGES_CHANGESET_WALK_H

/* Relation ids in a change set are below this. */
#define IMSG_CS_MAX_RELATIONS	65536

/*
 * The number of changes in the change set 'data' of 'len' bytes, or -1 if
 * it is malformed; then *why (if 'why' is not NULL) says why, as a
 * sentence for an errdetail.  Never raises an error and never reads
 * outside data[0 .. len-1].
 */
extern int64 imsg_changeset_walk(const char *data, Size len, const char **why);

/*
 * Called by imsg_changeset_read() for each well-formed change, in order:
 * 'n' counts from 0, 'kind' is IMSG_CS_INSERT, _UPDATE or _DELETE, 'row'
 * the identity of the row the change finds (the old key of an update or a
 * delete, the key of an inserted row) and 'new_row' of the row it leaves
 * (the key of an inserted row or of an update's new row; 0 for a delete).
 * A change set found malformed later may already have had some calls.
 */
typedef void (*ImsgCsRowCallback) (void *arg, int64 n, int8 kind,
								   uint64 row, uint64 new_row);

/* imsg_changeset_walk, also naming each change's rows (row_cb may be NULL) */
extern int64 imsg_changeset_read(const char *data, Size len,
								 ImsgCsRowCallback row_cb, void *arg,
								 const char **why);

#endif							/* IMESSAGES_CHANGESET_WALK_H */
