# Build the LISTEN/NOTIFY baseline benchmark client (bench/pgclient).
# Usage, from the repository root:  make -f bench/pgclient.mk

PG_CONFIG ?= /usr/lib/postgresql/15/bin/pg_config

# Directory holding this makefile ("bench" when run from the repo root).
PGCLIENT_DIR := $(patsubst %/,%,$(dir $(lastword $(MAKEFILE_LIST))))

PGCLIENT_CFLAGS := -O2 -Wall -Wextra -Werror \
	-I$(shell $(PG_CONFIG) --includedir)
PGCLIENT_LIBS := -L$(shell $(PG_CONFIG) --libdir) -lpq

# Default to gcc unless CC is set on the command line or environment.
ifeq ($(origin CC),default)
CC = gcc
endif

.PHONY: all clean

all: $(PGCLIENT_DIR)/pgclient

$(PGCLIENT_DIR)/pgclient: $(PGCLIENT_DIR)/pgclient.c $(PGCLIENT_DIR)/pgclient.mk
	$(CC) $(PGCLIENT_CFLAGS) $(CFLAGS) -o $@ $< $(PGCLIENT_LIBS) $(LDFLAGS)

clean:
	rm -f $(PGCLIENT_DIR)/pgclient
