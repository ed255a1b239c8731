/*-------------------------------------------------------------------------
 *
 * gcs.c
 *	  The table of group communication systems, chosen by imessages.gcs.
 *
 * A GCS is an ImsgGcsOps (see imessages_int.h).  To add one, write its
 * file and add it to gcs_table below: the values imessages.gcs accepts are
 * made from this table.
 *
 * Copyright (c) 2026, imessages developers
 *
 * IDENTIFICATION
 *	  src/gcs.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <unistd.h>

#include "postmaster/postmaster.h"
#include "utils/guc.h"

#include "replication_int.h"

static const ImsgGcsOps *const gcs_table[] = {
	&imsg_gcs_local_ops,
#ifdef USE_COROSYNC
	&imsg_gcs_corosync_ops,
#endif
};

/* imessages.gcs's options, one per table entry; the GUC keeps the pointer. */
const struct config_enum_entry *
imsg_gcs_options(void)
{
	static struct config_enum_entry options[lengthof(gcs_table) + 1];
	int			i;

	for (i = 0; i < lengthof(gcs_table); i++)
	{
		options[i].name = gcs_table[i]->name;
		options[i].val = i;
		options[i].hidden = false;
	}
	options[i].name = NULL;
	return options;
}

const ImsgGcsOps *
imsg_gcs_ops(void)
{
	return gcs_table[imsg_gcs];
}

/*
 * This node's name in the group: imessages.node_name, else cluster_name,
 * else "host:port".  Change sets carry it as their origin.
 */
const char *
imsg_my_node_name(void)
{
	static char name[NAMEDATALEN];

	if (name[0] == '\0')
	{
		if (imsg_node_name != NULL && imsg_node_name[0] != '\0')
			strlcpy(name, imsg_node_name, sizeof(name));
		else if (cluster_name != NULL && cluster_name[0] != '\0')
			strlcpy(name, cluster_name, sizeof(name));
		else
		{
			char		host[256];

			if (gethostname(host, sizeof(host)) != 0)
				strlcpy(host, "localhost", sizeof(host));
			host[sizeof(host) - 1] = '\0';
			snprintf(name, sizeof(name), "%s:%d", host, PostPortNumber);
		}
	}
	return name;
}
