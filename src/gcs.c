/*-------------------------------------------------------------------------
 *
 * gcs.c
 *	  The table of group communication systems, chosen by imessages.gcs.
 *
 * A GCS is an ImsgGcsOps (see imessages_int.h).  To add one, write its
 * file, then add a line to imsg_gcs_options and to gcs_table below, in the
 * same position.
 *
 * Copyright (c) 2026, imessages developers
 *
 * IDENTIFICATION
 *	  src/gcs.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "imessages_int.h"

const struct config_enum_entry imsg_gcs_options[] = {
	{"local", 0, false},
	{NULL, 0, false}
};

static const ImsgGcsOps *const gcs_table[] = {
	&imsg_gcs_local_ops,
};

StaticAssertDecl(lengthof(gcs_table) == lengthof(imsg_gcs_options) - 1,
				 "every imessages.gcs option needs a GCS");

const ImsgGcsOps *
imsg_gcs_ops(void)
{
	return gcs_table[imsg_gcs];
}
