# jobq — build, test, run. `make help` lists the targets.
#
# Sources are found by directory, so a new file needs no edit here:
#   common/   code both binaries link (must not include runtime headers)
#   daemon/   jobqd (daemon/main.c holds main), daemon/runtime/ the runtime
#   client/   jobq
#   tests/test_<subsystem>.c   one cmocka binary each, linked with everything
#   tests/tools/<tool>.c       helper programs the integration tests drive

.DEFAULT_GOAL := all
SHELL := /bin/bash

ARCH ?= $(shell uname -m)
BUILD ?= build
PREFIX ?= /usr/local
DESTDIR ?=
SAN ?=
OPT ?= -O2

CC ?= cc
PKG_CONFIG ?= pkg-config
PKGS := libevent_core libevent_extra sqlite3 libcjson
# libpq's headers only: jobqd loads the library itself when a PostgreSQL
# store is opened (daemon/store_pg_lib.c). Tests may call it directly.
PG_PKG := libpq
TEST_PKGS := cmocka libpq

VERSION := $(shell cat VERSION 2>/dev/null || echo 0.0.0)
GIT_REV := $(shell git rev-parse --short HEAD 2>/dev/null || echo unknown)

WARN := -Wall -Wextra -Werror -Wshadow -Wstrict-prototypes -Wmissing-prototypes \
	-Wno-unused-parameter -Wvla -Wformat=2
CPPFLAGS_ALL := -Iinclude -D_GNU_SOURCE -DJOBQ_VERSION='"$(VERSION)"' \
	-DJOBQ_GIT_REV='"$(GIT_REV)"' $(CPPFLAGS)
CFLAGS_ALL := -std=c17 $(OPT) -g -pthread -fno-strict-aliasing -fstack-clash-protection $(WARN) $(CFLAGS)
LDFLAGS_ALL := -pthread $(LDFLAGS)

ifeq ($(SAN),asan)
CFLAGS_ALL += -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined
LDFLAGS_ALL += -fsanitize=address,undefined
CPPFLAGS_ALL += -DJOBQ_ASAN=1
else ifeq ($(SAN),tsan)
CFLAGS_ALL += -fsanitize=thread -fno-omit-frame-pointer
LDFLAGS_ALL += -fsanitize=thread
CPPFLAGS_ALL += -DJOBQ_TSAN=1
else ifeq ($(SAN),fuzz)
# libFuzzer targets (CC=clang): coverage for the fuzzer, ASan and UBSan on
# everything they link; tests/integ/fuzz.sh builds them this way.
CFLAGS_ALL += -fsanitize=fuzzer-no-link,address,undefined -fno-omit-frame-pointer \
	-fno-sanitize-recover=undefined
LDFLAGS_ALL += -fsanitize=address,undefined
CPPFLAGS_ALL += -DJOBQ_ASAN=1
endif

PKG_CFLAGS = $(shell $(PKG_CONFIG) --cflags $(PKGS) $(PG_PKG) 2>/dev/null)
PKG_LIBS = $(shell $(PKG_CONFIG) --libs $(PKGS) 2>/dev/null)
TEST_LIBS = $(shell $(PKG_CONFIG) --libs $(TEST_PKGS) 2>/dev/null)

RUNTIME_SRC := $(wildcard daemon/runtime/*.c daemon/runtime/switch_$(ARCH).S)
COMMON_SRC := $(wildcard common/*.c)
DAEMON_SRC := $(filter-out daemon/main.c,$(wildcard daemon/*.c))
CLIENT_SRC := $(wildcard client/*.c)
TEST_SRC := $(wildcard tests/test_*.c)
# tests/tools/*_shim.c are LD_PRELOAD libraries, not programs.
TOOL_SRC := $(filter-out %_shim.c,$(wildcard tests/tools/*.c))
SHIM_SRC := $(wildcard tests/tools/*_shim.c)

obj = $(patsubst %,$(BUILD)/obj/%.o,$(basename $(1)))

RUNTIME_OBJ := $(call obj,$(RUNTIME_SRC))
COMMON_OBJ := $(call obj,$(COMMON_SRC))
DAEMON_OBJ := $(call obj,$(DAEMON_SRC))
CLIENT_OBJ := $(call obj,$(CLIENT_SRC))
TEST_BIN := $(patsubst tests/%.c,$(BUILD)/tests/%,$(TEST_SRC))
TOOL_BIN := $(patsubst tests/tools/%.c,$(BUILD)/tools/%,$(TOOL_SRC)) \
	$(patsubst tests/tools/%.c,$(BUILD)/tools/%.so,$(SHIM_SRC))

LIBRUNTIME := $(BUILD)/libjobqrt.a
LIBCOMMON := $(BUILD)/libjobqcommon.a
LIBDAEMON := $(BUILD)/libjobqd.a

.PHONY: all deps run test check asan tsan fuzz fuzzers bench bench-runtime bench-store bench-e2e bench-peers bench-postgres \
	install clean format format-check test-aarch64 help tools tests benches

BINS := $(if $(wildcard daemon/main.c),$(BUILD)/jobqd) $(if $(CLIENT_SRC),$(BUILD)/jobq)

all: $(BINS)

help:
	@echo "make            build build/jobqd and build/jobq"
	@echo "make run        install missing packages, build, run jobqd on ./var in the foreground"
	@echo "make test       install missing packages, build, run every test suite"
	@echo "make asan|tsan  the whole suite under AddressSanitizer+UBSan / ThreadSanitizer"
	@echo "make chaos      the suite with the long fault runs (JOBQ_CHAOS=1, docs/RELIABILITY.md)"
	@echo "make fuzz       each libFuzzer target for FUZZ_SECONDS (default 600)"
	@echo "make bench      every benchmark (bench-runtime, bench-store, bench-e2e, bench-peers, bench-postgres)"
	@echo "make install    PREFIX=$(PREFIX) DESTDIR=..."
	@echo "make format     clang-format every C file"

deps:
	@scripts/deps.sh

$(BUILD)/obj/%.o: %.c
	@mkdir -p $(@D)
	$(CC) $(CPPFLAGS_ALL) $(CFLAGS_ALL) $(PKG_CFLAGS) -MMD -MP -c $< -o $@

$(BUILD)/obj/%.o: %.S
	@mkdir -p $(@D)
	$(CC) $(CPPFLAGS_ALL) $(CFLAGS_ALL) -MMD -MP -c $< -o $@

# The files that print JOBQ_GIT_REV are rebuilt when HEAD moves: the stamp
# is rewritten only when the revision differs, so --version never names an
# older commit than the one built.
REV_STAMP := $(BUILD)/rev.stamp
$(REV_STAMP): FORCE
	@mkdir -p $(@D)
	@echo '$(GIT_REV)' | cmp -s - $@ || echo '$(GIT_REV)' >$@
$(BUILD)/obj/daemon/main.o $(BUILD)/obj/daemon/api.o $(BUILD)/obj/client/info.o: $(REV_STAMP)
.PHONY: FORCE
FORCE:

$(LIBRUNTIME): $(RUNTIME_OBJ)
	@rm -f $@
	$(AR) rcs $@ $^

$(LIBCOMMON): $(COMMON_OBJ)
	@rm -f $@
	$(AR) rcs $@ $^

$(LIBDAEMON): $(DAEMON_OBJ)
	@rm -f $@
	$(AR) rcs $@ $^

$(BUILD)/jobqd: $(BUILD)/obj/daemon/main.o $(LIBDAEMON) $(LIBRUNTIME) $(LIBCOMMON)
	$(CC) $(LDFLAGS_ALL) -o $@ $^ $(PKG_LIBS) -lm

$(BUILD)/jobq: $(CLIENT_OBJ) $(LIBCOMMON)
	$(CC) $(LDFLAGS_ALL) -o $@ $^ $(shell $(PKG_CONFIG) --libs libcjson) -lm

$(BUILD)/tests/%: tests/%.c $(LIBDAEMON) $(LIBRUNTIME) $(LIBCOMMON)
	@mkdir -p $(@D)
	$(CC) $(CPPFLAGS_ALL) $(CFLAGS_ALL) -Wno-missing-prototypes $(PKG_CFLAGS) -Itests -o $@ $< \
		$(LIBDAEMON) $(LIBRUNTIME) $(LIBCOMMON) $(LDFLAGS_ALL) $(PKG_LIBS) $(TEST_LIBS) -lm

# The runtime's tests link the runtime alone, so it can be cross-built for
# aarch64 (make test-aarch64) without the store's dependencies.
$(BUILD)/tests/test_runtime: tests/test_runtime.c $(LIBRUNTIME)
	@mkdir -p $(@D)
	$(CC) $(CPPFLAGS_ALL) $(CFLAGS_ALL) -Wno-missing-prototypes $(shell $(PKG_CONFIG) --cflags libevent_core) \
		-o $@ $< $(LIBRUNTIME) $(LDFLAGS_ALL) $(shell $(PKG_CONFIG) --libs libevent_core cmocka)

$(BUILD)/tools/%: tests/tools/%.c $(LIBCOMMON)
	@mkdir -p $(@D)
	$(CC) $(CPPFLAGS_ALL) $(CFLAGS_ALL) -Wno-missing-prototypes $(PKG_CFLAGS) -o $@ $< \
		$(LIBCOMMON) $(LDFLAGS_ALL) $(PKG_LIBS) -lm

# Preload shims are built without the sanitizers (ASan must be the first
# library loaded; the tests skip them in sanitizer builds).
$(BUILD)/tools/%_shim.so: tests/tools/%_shim.c
	@mkdir -p $(@D)
	$(CC) $(CPPFLAGS_ALL) -std=c17 -O2 -g -fPIC -shared $(WARN) -Wno-missing-prototypes -o $@ $< -ldl

# The store's kill -9 victim drives the store itself: it links the daemon
# library and the runtime, like a test.
$(BUILD)/tools/store_crash: tests/tools/store_crash.c $(LIBDAEMON) $(LIBRUNTIME) $(LIBCOMMON)
	@mkdir -p $(@D)
	$(CC) $(CPPFLAGS_ALL) $(CFLAGS_ALL) -Wno-missing-prototypes $(PKG_CFLAGS) -o $@ $< \
		$(LIBDAEMON) $(LIBRUNTIME) $(LIBCOMMON) $(LDFLAGS_ALL) $(PKG_LIBS) -lm

# The packaging tests' YAML checker links Debian's libyaml (libyaml-dev).
$(BUILD)/tools/yamlcheck: tests/tools/yamlcheck.c
	@mkdir -p $(@D)
	$(CC) $(CPPFLAGS_ALL) $(CFLAGS_ALL) -Wno-missing-prototypes -o $@ $< $(LDFLAGS_ALL) \
		$(shell $(PKG_CONFIG) --libs yaml-0.1)

# Benchmark programs: bench/<area>/*.c, each a binary linked with everything.
BENCH_SRC := $(wildcard bench/*/*.c)
BENCH_BIN := $(patsubst bench/%.c,$(BUILD)/bench/%,$(BENCH_SRC))

$(BUILD)/bench/%: bench/%.c $(LIBDAEMON) $(LIBRUNTIME) $(LIBCOMMON)
	@mkdir -p $(@D)
	$(CC) $(CPPFLAGS_ALL) $(CFLAGS_ALL) -Wno-missing-prototypes $(PKG_CFLAGS) -o $@ $< \
		$(LIBDAEMON) $(LIBRUNTIME) $(LIBCOMMON) $(LDFLAGS_ALL) $(PKG_LIBS) -lm

# libFuzzer targets: tests/fuzz/<target>.c, each linked with everything.
FUZZ_SRC := $(wildcard tests/fuzz/*.c)
FUZZ_BIN := $(patsubst tests/fuzz/%.c,$(BUILD)/fuzz/%,$(FUZZ_SRC))
FUZZ_SECONDS ?= 600

$(BUILD)/fuzz/%: tests/fuzz/%.c $(LIBDAEMON) $(LIBRUNTIME) $(LIBCOMMON)
	@mkdir -p $(@D)
	$(CC) $(CPPFLAGS_ALL) $(CFLAGS_ALL) -Idaemon -Wno-missing-prototypes $(PKG_CFLAGS) \
		-fsanitize=fuzzer -o $@ $< $(LIBDAEMON) $(LIBRUNTIME) $(LIBCOMMON) $(LDFLAGS_ALL) \
		$(PKG_LIBS) -lm

tests: $(TEST_BIN)
tools: $(TOOL_BIN)
benches: $(BENCH_BIN)
fuzzers: $(FUZZ_BIN)

run: deps
	@$(MAKE) --no-print-directory all
	@mkdir -p var
	@echo "jobqd: state in ./var; point the client at it with:"
	@echo "  export JOBQ_SOCKET=$(CURDIR)/var/jobq.sock   # or: build/jobq --socket var/jobq.sock ..."
	exec $(BUILD)/jobqd --state-dir ./var --foreground

test: deps
	@$(MAKE) --no-print-directory all tests tools
	@scripts/run-tests.sh $(BUILD)

check: test

# The long reliability runs (docs/RELIABILITY.md): the same suite, with
# JOBQ_CHAOS=1 read by tests/integ/chaos_*.sh to scale up their rounds
# (50 kill -9 rounds, 100k soak jobs, ...) and 50 store crash rounds.
.PHONY: chaos
chaos: deps
	@$(MAKE) --no-print-directory all tests tools
	@JOBQ_CHAOS=1 JOBQ_CRASH_ROUNDS=100 SUITE_TIMEOUT=1800 scripts/run-tests.sh $(BUILD)

asan:
	@scripts/deps.sh
	@$(MAKE) --no-print-directory BUILD=build/asan SAN=asan OPT=-O1 all tests tools
	@ASAN_OPTIONS=detect_leaks=1:abort_on_error=0 UBSAN_OPTIONS=print_stacktrace=1 \
		JOBQ_SANITIZER=asan scripts/run-tests.sh build/asan

tsan:
	@scripts/deps.sh
	@$(MAKE) --no-print-directory BUILD=build/tsan SAN=tsan OPT=-O1 all tests tools
	@TSAN_OPTIONS="halt_on_error=1 second_deadlock_stack=1" \
		JOBQ_SANITIZER=tsan scripts/run-tests.sh build/tsan

# Each fuzz target for FUZZ_SECONDS (make test runs them 20 s each).
fuzz: deps
	@$(MAKE) --no-print-directory all tools
	@FUZZ_SECONDS=$(FUZZ_SECONDS) JOBQ_BUILD=$(CURDIR)/$(BUILD) bash tests/integ/fuzz.sh

# PKGS: the runtime needs libevent alone; the arm64 SQLite and cJSON are
# not installed, and one missing package empties pkg-config's answer.
# LD_LIBRARY_PATH: the loader under -L is the cross toolchain's, and the
# libc that libcmocka0:arm64 pulls into /lib/aarch64-linux-gnu is another
# build of it: mixed, they hang in the first pthread_create.
# JOBQ_EMULATED: tests that limit the process's address space skip, since
# the limit would bind qemu's own allocations.
test-aarch64:
	@scripts/deps.sh aarch64
	@$(MAKE) --no-print-directory BUILD=build/aarch64 ARCH=aarch64 CC=aarch64-linux-gnu-gcc \
		PKG_CONFIG="scripts/pkg-config-aarch64.sh" PKGS=libevent_core build/aarch64/tests/test_runtime
	qemu-aarch64-static -L /usr/aarch64-linux-gnu -E LD_LIBRARY_PATH=/usr/aarch64-linux-gnu/lib \
		-E JOBQ_EMULATED=qemu-user build/aarch64/tests/test_runtime

bench: bench-runtime bench-store bench-e2e bench-peers bench-postgres

bench-runtime bench-store bench-e2e bench-peers bench-postgres: deps
	@$(MAKE) --no-print-directory BUILD=build/bench OPT=-O2 all tools benches
	@bench/run.sh $(@:bench-%=%) build/bench

install: all
	scripts/install.sh "$(DESTDIR)" "$(PREFIX)" "$(BUILD)"

clean:
	rm -rf build

format:
	clang-format -i $$(git ls-files '*.c' '*.h')

format-check:
	@clang-format --dry-run --Werror $$(git ls-files '*.c' '*.h')

-include $(shell find $(BUILD)/obj -name '*.d' 2>/dev/null)
