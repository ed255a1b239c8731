# imessages: PGXS build
MODULE_big = imessages
OBJS = imessages.o src/area.o src/mailbox.o src/buffer.o src/sql_api.o \
       src/manager.o src/helpers.o src/gcs.o src/gcs_local.o src/sql_manager.o \
       src/changeset.o src/changeset_decode.o src/changeset_reader.o \
       src/nestmarks.o src/apply.o src/certify.o src/checksum.o \
       src/local_writes.o src/mailbox_large.o \
       src/manager_jobs.o src/manager_own.o src/manager_apply.o \
       src/manager_state.o src/recovery.o src/cslog.o src/flow_control.o \
       src/ddl.o
# Corosync CPG support (imessages.gcs = 'corosync') when libcpg-dev and
# libquorum-dev are there
ifeq ($(words $(wildcard /usr/include/corosync/cpg.h /usr/include/corosync/quorum.h)),2)
OBJS += src/gcs_corosync.o
PG_CPPFLAGS_COROSYNC = -DUSE_COROSYNC
SHLIB_LINK += -lcpg -lquorum
endif
EXTENSION = imessages
DATA = $(wildcard imessages--*.sql)
HEADERS_imessages = include/imessages.h
PG_CPPFLAGS = -I$(srcdir)/include -I$(srcdir)/src -I$(libpq_srcdir) $(PG_CPPFLAGS_COROSYNC)
# libpq: a node that catches up fetches change sets from a donor (recovery.c)
SHLIB_LINK_INTERNAL = $(libpq)

REGRESS = setup send_receive errors quota manager changeset checksum security hostile \
          node_sequences table_definition
REGRESS_OPTS = --temp-config=$(srcdir)/imessages.conf
ISOLATION = fifo_two_senders wake_receiver full_area_wait mailbox_quota_wait \
            changeset_commits
ISOLATION_OPTS = --temp-config=$(srcdir)/imessages.conf
TAP_TESTS = 1

PG_CONFIG ?= pg_config
PGXS := $(shell $(PG_CONFIG) --pgxs)
include $(PGXS)

# PGXS does not track header dependencies: every object depends on ours.
$(OBJS): src/imessages_int.h src/mailbox_int.h src/replication_int.h src/changeset_int.h \
         include/imessages.h src/mailbox_large.h
src/manager.o src/manager_jobs.o src/manager_own.o src/manager_apply.o src/manager_state.o src/flow_control.o: src/manager_int.h
src/manager.o src/manager_state.o src/recovery.o src/cslog.o: src/cslog.h
src/changeset_decode.o src/changeset_reader.o src/certify.o src/changeset.o src/apply.o src/manager.o src/manager_own.o: src/changeset_reader.h
