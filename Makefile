# morango: PGXS build for the morango extension.
#
#   make && make install          build and install (as root)
#   make installcheck             pg_regress + isolation + TAP against a running server
#
# tools/test.sh runs everything on a fresh machine (packages, throwaway cluster,
# unprivileged user); see README.md.

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
ISOLATION      = serialize_commit_order deserialize_vs_local_edit deserialize_insert_deadlock
ISOLATION_OPTS = --inputdir=test/isolation --load-extension=$(EXTENSION)

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

# make memcheck: the pg_regress suite and the isolation specs against a server
# under valgrind memcheck (as root; tools/memcheck.sh, doc/testing.md)
.PHONY: memcheck
memcheck:
	bash tools/memcheck.sh
