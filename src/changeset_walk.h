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

#endif							/* IMESSAGES_CHANGESET_WALK_H */
