# morango: PGXS build for the morango extension.
#
#   make && make install          build and install (as root)
#   make installcheck             pg_regress + isolation + TAP, each in servers of its own
#
# make installcheck needs the extension installed (make install) and never
# touches the server PGPORT names: pg_regress and the isolation tester each
# run a temporary instance (below), the TAP tests make their own clusters.
# tools/test.sh runs everything on a fresh machine (packages, unprivileged
# user, the -Werror and assertion builds); see doc/testing.md.

EXTENSION    = morango
EXTVERSION   = $(shell sed -n "s/^default_version *= *'\(.*\)'/\1/p" $(EXTENSION).control)

MODULE_big   = morango
OBJS = \
	src/morango.o \
	src/fault.o \
	src/spi.o \
	src/textutil.o \
	src/idrule.o \
	src/filter.o \
	src/scope.o \
	src/crypto.o \
	src/fsic.o \
	src/fsic_sql.o \
	src/subxact.o \
	src/owner.o \
	src/registry.o \
	src/register.o \
	src/capture.o \
	src/serialize.o \
	src/deserialize.o \
	src/session.o \
	src/counters.o \
	src/transfer.o \
	src/protocol.o \
	src/queue.o \
	src/buffer.o \
	src/dequeue.o \
	src/history.o \
	src/transport.o \
	src/pack.o \
	src/certify.o \
	src/peer.o \
	src/driver.o \
	src/worker.o

DATA         = sql/$(EXTENSION)--$(EXTVERSION).sql

# pg_regress: sql/*.sql against expected/*.out
REGRESS      = setup idrule identity register capture serialize deserialize fsic edges certificates \
               transport sync scopes worker hostile privileges attack_forgery attack_counters \
               attack_sessions attack_filters sessions

# isolation tester: test/isolation/specs/*.spec against test/isolation/expected/*.out
ISOLATION      = serialize_commit_order deserialize_vs_local_edit deserialize_insert_deadlock \
                 queue_vs_serialize
ISOLATION_OPTS = --inputdir=test/isolation --load-extension=$(EXTENSION)

# pg_regress and pg_isolation_regress each initdb a temporary instance
# (tmp_check/, tmp_check_iso/; logs in log/ and output_iso/log/) with
# test/regress.conf appended, listening on 127.0.0.1 only (the tests
# connect to it over TCP, as a peer would) with trust authentication, as the
# user running make; it is stopped at the end and removed when every test
# passed.  TEST_PORT=N gives its port (tools/test.sh takes a free one from
# MG_PORT_BASE, so that two suites can run at once); without it pg_regress
# probes for a free one from 51652.  EXISTING_SERVER=1 runs both against the
# running server at PGHOST/PGPORT instead, creating databases and roles
# there (tools/memcheck.sh does, for its server under valgrind).
ifeq ($(EXISTING_SERVER),)
TEST_INSTANCE_OPTS = --temp-config=test/regress.conf --host=127.0.0.1 $(if $(TEST_PORT),--port=$(TEST_PORT)) \
                     --bindir=$(CURDIR)/tmp_check_bin
REGRESS_OPTS   += --temp-instance=tmp_check $(TEST_INSTANCE_OPTS)
ISOLATION_OPTS += --temp-instance=tmp_check_iso $(TEST_INSTANCE_OPTS)
REGRESS_PREP    = test-bindir
endif
EXTRA_CLEAN     = tmp_check_bin/

# one locale for the temporary instances and the TAP clusters, whatever the
# caller's: UTF-8, byte-order collation, English messages (pg_regress unsets
# LC_ALL before initdb, so each category is set)
installcheck: export LANG = C.UTF-8
installcheck: export LC_COLLATE = C
installcheck: export LC_CTYPE = C.UTF-8
installcheck: export LC_MESSAGES = C
installcheck: export LC_MONETARY = C
installcheck: export LC_NUMERIC = C
installcheck: export LC_TIME = C

# TAP tests with real clusters (test/t/*.pl)
TAP_TESTS    = 1
PROVE_TESTS  = $(wildcard test/t/*.pl)

PG_CPPFLAGS  = -I$(libpq_srcdir) -Isrc $(shell pkg-config --cflags json-c)
SHLIB_LINK   = $(libpq) $(shell pkg-config --libs json-c) -lcrypto -lz
# -Wno-unused-parameter only for PostgreSQL's own headers (ilist.h, bufpage.h)
PG_CFLAGS    = -Wall -Wextra -Wno-unused-parameter

# no LLVM bitcode: nothing here benefits from JIT inlining
override with_llvm := no

PG_CONFIG ?= pg_config
PGXS := $(shell $(PG_CONFIG) --pgxs)
include $(PGXS)

# pg_regress starts the temporary instance's postmaster in its own
# environment, where it sets PGDATESTYLE, PGTZ, PGOPTIONS and PGAPPNAME for
# its psql sessions (and PGHOST for them to find it); libpq in the server
# would send those on the connections to peers that the tests make, and a
# PGDATESTYLE even wins over the datestyle the transport pins.  So
# pg_regress gets this bindir, whose postgres starts without them, as from
# pg_ctl in a clean environment; initdb, pg_ctl and psql are the
# installation's.
.PHONY: test-bindir
test-bindir:
	@rm -rf tmp_check_bin && mkdir tmp_check_bin
	@for p in initdb pg_ctl psql; do ln -s '$(bindir)/'$$p tmp_check_bin/$$p || exit 1; done
	@printf '#!/bin/sh\nexec env -u PGDATESTYLE -u PGTZ -u PGOPTIONS -u PGAPPNAME -u PGHOST %s "$$@"\n' \
	    "'$(bindir)/postgres'" >tmp_check_bin/postgres
	@chmod 755 tmp_check_bin/postgres

# make memcheck: the pg_regress suite and the isolation specs against a server
# under valgrind memcheck (as root; tools/memcheck.sh, doc/testing.md)
.PHONY: memcheck
memcheck:
	bash tools/memcheck.sh
