/*-------------------------------------------------------------------------
 *
 * certify.c
 *	  Certification of change sets in the group's delivery order, as
 *	  Postgres-R did: of two change sets from different nodes that changed
 *	  the same row without one having seen the other, the one delivered
 *	  first wins everywhere and the later one is aborted.
 *
 * Every node runs this in its manager on every change set, in delivery
 * order, with the same inputs, so every node decides the same:
 *
 *	- the rows a change set changed: a 64-bit hash of each row's table and
 *	  primary key value bytes, from the manager's one read of the change set
 *	  (imsg_changeset_summarize);
 *	- who wrote each row last, among the change sets that won: the writer's
 *	  origin (node name and manager pid) and its number in that origin's own
 *	  sequence (a counter the origin's manager puts in each change set);
 *	- what the change set's origin had applied of every other origin when
 *	  the change set was sent (its "seen" vector, in the change set too).
 *
 * A change set conflicts if one of its rows was last written by another
 * origin's change set that its origin had not applied.  That is enough:
 * a node applies remote change sets one at a time, and notes one as
 * applied just before its transaction commits, after writing its rows;
 * a local transaction that wrote one of those rows before them holds the
 * row lock, so the remote change set cannot be noted as applied until the
 * local transaction ends, and one that wrote the row after them saw it.
 *
 * Only sync change sets are certified (their transactions wait for it).
 * Async ones have committed already; they are recorded as last writers
 * here, and win or lose row by row when applied: of two change sets that
 * wrote a row, the one delivered later wins on every node (see
 * local_writes.c for how a node keeps that for its own rows).  A hash
 * collision can only declare a conflict that is not there, never miss one.
 * The map of last writers lives in the manager's memory: a node that
 * joins later, or whose manager restarted, rebuilds it from the change-set
 * log (imsg_mgr_certify_replay; see manager_state.c) before it certifies
 * anything new.
 *
 * The map is bounded by age, in positions (every delivered change set has
 * one, winner or loser: see manager_state.c): each entry notes the
 * position of the change set that wrote its row, and at every multiple of
 * window/4 of the position the entries older than
 * imessages.certification_window positions are dropped.  Both counts
 * come from the delivery order alone, so every node drops the same entries
 * at the same point and still decides the same.  What is lost: a conflict
 * between two change sets delivered more than a window apart (a sync
 * change set is delivered within imessages.commit_timeout of its snapshot,
 * so the window must hold what the group delivers in that time).  Pruning
 * by what every node has applied would keep less, but an async change
 * set's snapshot can be older than what its node reports later, and the
 * window needs no extra messages.
 *
 * Copyright (c) 2026, imessages developers
 *
 * IDENTIFICATION
 *	  src/certify.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "common/hashfn.h"
#include "utils/hsearch.h"
#include "utils/memutils.h"

#include "replication_int.h"
#include "changeset_int.h"

/* A row's last writer. */
typedef struct LastWriter
{
	uint64		row;			/* hash key */
	int			origin;			/* index into origins[] */
	uint64		counter;
	uint64		written_at;		/* the position of the change set that wrote it */
} LastWriter;

#define IMSG_MAX_ORIGINS	256

/* An origin (node name and manager pid), and how many entries name it. */
typedef struct Origin
{
	char		id[NAMEDATALEN + 16];
	int64		entries;
	uint64		last_used;		/* certified_count of its last change set */
} Origin;

static Origin origins[IMSG_MAX_ORIGINS];
static int	num_origins = 0;
static HTAB *last_writers = NULL;
static uint64 certified_count = 0;	/* position of the last change set */
static uint64 last_pruned_at = 0;	/* the last boundary pruned at */

static void drop_entries(int origin, uint64 older_than);

static int
origin_index(const char *node, int pid)
{
	char		id[NAMEDATALEN + 16];
	int			i;
	int			victim = -1;

	snprintf(id, sizeof(id), "%s/%d", node, pid);
	for (i = 0; i < num_origins; i++)
		if (strcmp(origins[i].id, id) == 0)
			return i;
	if (num_origins < IMSG_MAX_ORIGINS)
		victim = num_origins++;
	else
	{
		/*
		 * Reuse the slot of an origin no entry names, else the one used
		 * least recently, forgetting its rows: the same choice on every
		 * node, since it depends on the delivery order only.
		 */
		for (i = 0; i < IMSG_MAX_ORIGINS; i++)
		{
			if (origins[i].entries == 0)
			{
				victim = i;
				break;
			}
			if (victim < 0 || origins[i].last_used < origins[victim].last_used)
				victim = i;
		}
		if (origins[victim].entries > 0)
			drop_entries(victim, PG_UINT64_MAX);
	}
	strlcpy(origins[victim].id, id, sizeof(origins[victim].id));
	origins[victim].entries = 0;
	return victim;
}

/* Drop the entries of 'origin' (-1: any) written before 'older_than'. */
static void
drop_entries(int origin, uint64 older_than)
{
	HASH_SEQ_STATUS scan;
	LastWriter *lw;

	hash_seq_init(&scan, last_writers);
	while ((lw = hash_seq_search(&scan)) != NULL)
	{
		if ((origin < 0 || lw->origin == origin) && lw->written_at < older_than)
		{
			origins[lw->origin].entries--;
			(void) hash_search(last_writers, &lw->row, HASH_REMOVE, NULL);
		}
	}
}

/*
 * At every multiple of window/4 of the position, forget the rows written
 * more than a window before it.  The points depend on the position alone,
 * so a node that rebuilt its map from the change-set log (a node that
 * caught up) drops the same rows at the same points as the others.
 */
static void
prune_old_entries(void)
{
	uint64		window = (uint64) imsg_certification_window;
	uint64		step = Max(window / 4, 1);
	uint64		boundary = certified_count - certified_count % step;

	if (boundary <= last_pruned_at)
		return;
	last_pruned_at = boundary;
	if (boundary > window)
		drop_entries(-1, boundary - window);
}

/* The position of the last change set certified or replayed (0: none). */
uint64
imsg_certified_position(void)
{
	return certified_count;
}

/* Rows in the map, for imsg_manager_status(). */
int64
imsg_certification_rows(void)
{
	return last_writers ? (int64) hash_get_num_entries(last_writers) : 0;
}

static void
ensure_map(void)
{
	HASHCTL		ctl;

	if (last_writers != NULL)
		return;
	ctl.keysize = sizeof(uint64);
	ctl.entrysize = sizeof(LastWriter);
	ctl.hcxt = TopMemoryContext;
	last_writers = hash_create("imessages certification", 1024, &ctl,
							   HASH_ELEM | HASH_BLOBS | HASH_CONTEXT);
}

/*
 * Does the last writer of identity 'id' conflict with a change set of
 * origin 'me' that had seen what 'seen' says?  Names the writer in
 * 'winner' if so.
 */
static bool
conflicts(uint64 id, int me, const ImsgSeen *seen, int nseen, char *winner, Size winner_len)
{
	LastWriter *lw = hash_search(last_writers, &id, HASH_FIND, NULL);
	uint64		applied = 0;
	int			j;

	if (lw == NULL || lw->origin == me)
		return false;
	for (j = 0; j < nseen; j++)
	{
		char		oid[NAMEDATALEN + 16];

		snprintf(oid, sizeof(oid), "%s/%d", seen[j].node, seen[j].pid);
		if (strcmp(oid, origins[lw->origin].id) == 0)
		{
			applied = seen[j].counter;
			break;
		}
	}
	if (lw->counter <= applied)
		return false;
	snprintf(winner, winner_len, "%s", origins[lw->origin].id);
	return true;
}

/* Record origin 'me' as the last writer of identity 'id'. */
static void
record_writer(uint64 id, int me, uint64 counter)
{
	bool		found;
	LastWriter *lw = hash_search(last_writers, &id, HASH_ENTER, &found);

	if (found)
		origins[lw->origin].entries--;
	lw->origin = me;
	lw->counter = counter;
	lw->written_at = certified_count;
	origins[me].entries++;
}

/*
 * Certify one change set delivered in total order.  'seen' holds what its
 * origin had applied: nseen entries of (node, pid, counter); 'rows' the
 * nrows identities it changed, each tested and recorded, 'checks' and
 * 'writes' ntables more, tested only and recorded only (its summary's, see
 * changeset_reader.h): so a DDL statement (its tables' "DDL" identities
 * in rows, and their "written" ones if it changes a column's type)
 * conflicts with a statement on the table it had not seen (and with any
 * change of it), a change set of rows (its tables' "DDL" identity in
 * checks, their "written" one in writes) with a statement on the table it
 * had not seen, and two change sets of rows only by their rows.  Returns
 * true if it wins (and records it as the last writer); false if it is a
 * sync change set ('certify') that conflicts, with 'winner' naming the
 * origin of the earlier writer.  An async change set is not tested: it has
 * committed, and wins or loses row by row when applied (local_writes.c).
 */
bool
imsg_certify(uint64 position, const char *node, int pid, uint64 counter,
			 bool certify, const ImsgSeen *seen, int nseen,
			 const uint64 *rows, int64 nrows,
			 const uint64 *checks, const uint64 *writes, int64 ntables,
			 char *winner, Size winner_len)
{
	int			me;
	int64		i;
	bool		ok = true;

	ensure_map();
	me = origin_index(node, pid);

	for (i = 0; certify && i < nrows && ok; i++)
		ok = !conflicts(rows[i], me, seen, nseen, winner, winner_len);
	for (i = 0; certify && i < ntables && ok; i++)
		ok = !conflicts(checks[i], me, seen, nseen, winner, winner_len);
	/* the group position is the clock: the same on every node */
	certified_count = position;
	origins[me].last_used = certified_count;
	if (ok)
	{
		for (i = 0; i < nrows; i++)
			record_writer(rows[i], me, counter);
		for (i = 0; i < ntables; i++)
			record_writer(writes[i], me, counter);
	}
	prune_old_entries();
	return ok;
}

/*
 * Read a change set as the manager multicast it (GCS_CHANGESET): false if
 * it is malformed (too short, a bad seen vector).
 */
bool
imsg_gcs_changeset_parse(const char *data, Size len, ImsgGcsChangeset *out)
{
	ImsgBuffer	in;

	if (len < GCS_CS_HEADER + 4 + 8 || data[0] != GCS_CHANGESET)
		return false;
	ImsgBufferInitReader(&in, data + 1, len - 1);
	out->origin_pid = ImsgBufferGetInt32(&in);
	out->xid = (uint64) ImsgBufferGetInt64(&in);
	out->nchanges = ImsgBufferGetInt32(&in);
	out->sync = ImsgBufferGetInt8(&in) != 0;
	out->mgr_pid = ImsgBufferGetInt32(&in);
	out->counter = (uint64) ImsgBufferGetInt64(&in);
	out->nseen = imsg_seen_decode(&in, out->seen);
	if (out->nseen < 0)
		return false;
	out->cs = data + 1 + in.cursor;
	out->cslen = len - 1 - in.cursor;
	return true;
}

/*
 * What this node has applied of every other origin (helpers.c's
 * note_applied writes it): a copy into seen[IMSG_MAX_GROUP_MEMBERS], and
 * how many entries it has.
 */
int
imsg_seen_snapshot(ImsgSeen *seen)
{
	int			nseen;

	SpinLockAcquire(&ImsgManagerState->mutex);
	nseen = Min(ImsgManagerState->num_seen, IMSG_MAX_GROUP_MEMBERS);
	memcpy(seen, ImsgManagerState->seen, sizeof(ImsgSeen) * nseen);
	SpinLockRelease(&ImsgManagerState->mutex);
	return nseen;
}

/* Write a seen vector (see IMSG_SEEN_WIRE_MAX for its size). */
void
imsg_seen_encode(ImsgBuffer *out, const ImsgSeen *seen, int nseen)
{
	int			i;

	nseen = Min(Max(nseen, 0), IMSG_MAX_GROUP_MEMBERS);
	ImsgBufferPutInt16(out, nseen);
	for (i = 0; i < nseen; i++)
	{
		ImsgBufferPutString(out, seen[i].node, strlen(seen[i].node));
		ImsgBufferPutInt32(out, seen[i].pid);
		ImsgBufferPutInt64(out, (int64) seen[i].counter);
	}
}

/*
 * Read a seen vector into seen[IMSG_MAX_GROUP_MEMBERS]: how many entries it
 * has, or -1 if it is malformed (a count out of range, or entries that do
 * not fit what is left).  Lengths are checked before reading, so a bad
 * vector from another node is a return value, never an ERROR in the
 * manager's loop.
 */
int
imsg_seen_decode(ImsgBuffer *in, ImsgSeen *seen)
{
	int			nseen;
	int			i;

	if (ImsgBufferRemaining(in) < 2)
		return -1;
	nseen = ImsgBufferGetInt16(in);
	if (nseen < 0 || nseen > IMSG_MAX_GROUP_MEMBERS)
		return -1;
	for (i = 0; i < nseen; i++)
	{
		uint32		l;
		const char *p;

		if (ImsgBufferRemaining(in) < 4)
			return -1;
		l = (uint32) ImsgBufferGetInt32(in);
		if (l > ImsgBufferRemaining(in) || ImsgBufferRemaining(in) - l < 12)
			return -1;
		p = ImsgBufferGetBytes(in, l);
		imsg_copy_name(seen[i].node, p, l);
		seen[i].pid = ImsgBufferGetInt32(in);
		seen[i].counter = (uint64) ImsgBufferGetInt64(in);
	}
	return nseen;
}
