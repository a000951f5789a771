# libdesync build (GNU make).
#
#   make                      libraries, examples and the test binary in build/
#   make test                 build and run every test
#   make run                  build everything and run build/demo
#   make bench                build and run build/bench
#   make check-soak           the soak (tests/soak.c), CI-sized: about a minute
#   make soak                 the soak for 11 minutes, checking that RSS stays flat
#   make test CC=clang        same with clang, in build-clang/
#   make test SAN=thread      ThreadSanitizer build in build-thread/
#   make test SAN=address,undefined
#   make test-cxx             only the C++ wrapper's tests and example (also in make test)
#   make test DEBUG=1         invariant checks (DSY_ASSERT) on, in build-debug/
#   make test OS=posix        the portable OS layer instead of Linux's, in build-posix/
#   make test NOPOOL=1        no block pool or job segments (one malloc per block)
#                             and freed handles poisoned, so ASan and valgrind see
#                             misused futures, promises, objects, streams and
#                             channels; in build-nopool/ (with SAN=address,undefined:
#                             build-address-undefined-nopool/)
#   make check-faults         every allocation site and thread creation failed in
#                             turn (tests/fault.h), in the ASan build (a few minutes)
#   make check-fork           1,000 forks under load (slow; any SAN/CC/DEBUG too)
#   make fuzz                 the API fuzzer for FUZZ_SECONDS (clang), in build-fuzz/
#   make model                check the SPIN models of the queue protocol (models/)
#   make install              install into PREFIX (default /usr/local), staged
#                             under DESTDIR if set; make uninstall removes it
#   make check-symbols        what the libraries export (also run by make test)
#   make check-version        the version in debian/changelog is the headers'
#   make docs                 the HTML API reference (doxygen) in build/docs/html
#   make format-check         the lines changed since main follow .clang-format
#   make check-tsan-user      a user's TSan program against `make install SAN=thread`
#                             (tests/consumer/tsan_user.sh)
#   make test-blocks          <desync/blocks.h> tests (clang -fblocks; in make test)
#   make test-kvserver        examples/kvserver.c's 5,000 requests (in make test)
#   make clean

# Make's built-in default for CC is "cc"; we default to gcc, but honour any
# CC given on the command line or in the environment.
ifeq ($(origin CC),default)
CC := gcc
endif

SAN ?=
DEBUG ?=
NOPOOL ?=
comma := ,

# The OS layer (src/os/): sets OS and OS_SRCS.
include src/os/os.mk

# The version, read from include/desync/version.h (the one place it is
# written). While MAJOR is 0 the soname carries the minor (libdesync.so.0.1):
# every 0.x minor release may change the ABI. From 1.0 it is the major alone.
version_part = $(shell sed -n 's/^.define DESYNC_VERSION_$(1) \([0-9][0-9]*\)$$/\1/p' include/desync/version.h)
VERSION_MAJOR := $(call version_part,MAJOR)
VERSION_MINOR := $(call version_part,MINOR)
VERSION_PATCH := $(call version_part,PATCH)
ifeq ($(and $(VERSION_MAJOR),$(VERSION_MINOR),$(VERSION_PATCH)),)
$(error could not read the version from include/desync/version.h)
endif
VERSION := $(VERSION_MAJOR).$(VERSION_MINOR).$(VERSION_PATCH)
SOVERSION := $(if $(filter 0,$(VERSION_MAJOR)),$(VERSION_MAJOR).$(VERSION_MINOR),$(VERSION_MAJOR))

# Sanitizer builds always check the library's invariants.
DEBUG_ON := $(if $(or $(SAN),$(filter-out 0,$(DEBUG))),1)
NOPOOL_ON := $(if $(filter-out 0,$(NOPOOL)),1)

# One build directory per compiler and sanitizer set, so builds never mix.
CC_NAME := $(notdir $(firstword $(CC)))
CC_TAG := $(if $(filter gcc cc,$(CC_NAME)),,-$(CC_NAME))
SAN_DIRNAME := $(subst $(comma),-,$(SAN))
BUILD ?= build$(CC_TAG)$(if $(SAN),-$(SAN_DIRNAME),$(if $(DEBUG_ON),-debug))$(if $(NOPOOL_ON),-nopool)$(if $(filter posix,$(OS)),-posix)

OPT := -O2
SANFLAGS :=
ifneq ($(SAN),)
OPT := -O1
SANFLAGS := -fsanitize=$(SAN) -fno-omit-frame-pointer
endif

# CFLAGS/LDFLAGS given by the user are appended, never replace ours.
BASE_CFLAGS := -std=c11 $(OPT) -g -Wall -Wextra -Werror -pthread -D_GNU_SOURCE \
               -fPIC -fvisibility=hidden -Iinclude -Isrc $(SANFLAGS) \
               $(if $(DEBUG_ON),-DDESYNC_DEBUG) $(if $(NOPOOL_ON),-DDESYNC_NOPOOL)
ALL_CFLAGS := $(BASE_CFLAGS) $(CFLAGS)
ALL_LDFLAGS := -pthread $(SANFLAGS) $(LDFLAGS)
LDLIBS := -lm

# Tests scale their loops down in sanitizer builds (TSan is ~10x slower), and
# the misuse tests learn that the library was built without pools.
TEST_CFLAGS := $(ALL_CFLAGS) -Itests $(if $(SAN),-DDESYNC_TEST_SANITIZED) \
               $(if $(NOPOOL_ON),-DDESYNC_TEST_NOPOOL)

# Timeouts are multiplied in sanitizer builds unless the caller chose a scale.
TIMEOUT_SCALE := $(if $(SAN),3,1)

# ThreadSanitizer fails with "unexpected memory mapping" on kernels with high
# ASLR entropy; running without address randomisation avoids it.
# (Only if setarch exists and is allowed to change the personality here.)
ifneq ($(filter thread,$(subst $(comma), ,$(SAN))),)
NO_ASLR := setarch $(shell uname -m) -R
ifeq ($(shell $(NO_ASLR) true 2>/dev/null && echo ok),ok)
RUN_PREFIX ?= $(NO_ASLR)
endif
endif
RUN_PREFIX ?=

LIB_SRCS := $(wildcard src/*.c) $(OS_SRCS)
LIB_OBJS := $(LIB_SRCS:%.c=$(BUILD)/%.o)
TEST_SRCS := tests/runner.c tests/fault.c $(wildcard tests/test_*.c)
TEST_OBJS := $(TEST_SRCS:%.c=$(BUILD)/%.o)
EXAMPLE_SRCS := $(wildcard examples/*.c)
EXAMPLES := $(EXAMPLE_SRCS:examples/%.c=$(BUILD)/%)
BENCH_SRCS := $(wildcard bench/*.c)
BENCH_OBJS := $(BENCH_SRCS:bench/%.c=$(BUILD)/bench-obj/%.o)

STATIC_LIB := $(BUILD)/libdesync.a
# The shared library's file, its soname link and the link `-ldesync` finds.
SHARED_REAL := $(BUILD)/libdesync.so.$(VERSION)
SHARED_SONAME := libdesync.so.$(SOVERSION)
SHARED_LIB := $(BUILD)/libdesync.so
SHARED_LINKS := $(BUILD)/$(SHARED_SONAME) $(SHARED_LIB)
# All objects linked into one, with the hidden (internal) names made local:
# the static archive then defines only the public desync_* names.
STATIC_OBJ := $(BUILD)/libdesync-all.o
LD ?= ld
# The test binary links a copy of the static library whose objects call the
# fault-injection hooks of tests/fault.c instead of these functions, so tests
# can fail the library's own allocations and thread creations, and make its
# yields return late (tests/fault.h).
FAULT_LIB := $(BUILD)/libdesync_fault.a
FAULT_SYMS := malloc calloc realloc aligned_alloc posix_memalign mmap pthread_create sched_yield
OBJCOPY ?= objcopy

.PHONY: all lib examples tests test run bench clean check-valgrind check-all soak soak-run check-soak check-faults check-fork fuzz model \
        install uninstall check-symbols check-version print-version print-soversion
.DEFAULT_GOAL := all

all: lib examples tests

lib: $(STATIC_LIB) $(SHARED_REAL) $(SHARED_LINKS)

examples: $(EXAMPLES)

tests: $(BUILD)/run_tests $(BUILD)/run_tests_shared $(BUILD)/soak

# `ld -r` links the objects into one relocatable object, resolving the
# internal calls between them; --localize-hidden then turns every hidden
# (non-DESYNC_API) symbol into a local one. The code keeps its dsy_ names.
$(STATIC_OBJ): $(LIB_OBJS)
	@mkdir -p $(@D)
	$(LD) -r -o $@.tmp $^
	$(OBJCOPY) --localize-hidden $@.tmp $@
	rm -f $@.tmp

$(STATIC_LIB): $(STATIC_OBJ)
	rm -f $@
	$(AR) rcs $@ $^

# The linker version script (exports desync_* only) for this soname.
$(BUILD)/desync.map: src/desync.map.in include/desync/version.h
	@mkdir -p $(@D)
	sed 's/@SOVERSION@/$(SOVERSION)/' $< > $@

# -z defs: every symbol the library uses must come from its own objects or a
# library it names (not in sanitizer builds, whose runtime is linked into the
# program, not the library, by clang).
$(SHARED_REAL): $(LIB_OBJS) $(BUILD)/desync.map
	$(CC) -shared -Wl,-soname,$(SHARED_SONAME) -Wl,--version-script=$(BUILD)/desync.map \
	    $(if $(SAN),,-Wl,-z,defs) -o $@ $(LIB_OBJS) $(ALL_LDFLAGS) $(LDLIBS)

$(SHARED_LINKS): $(SHARED_REAL)
	ln -sf $(notdir $<) $@

$(BUILD)/src/%.o: src/%.c
	@mkdir -p $(@D)
	$(CC) $(ALL_CFLAGS) -MMD -MP -c $< -o $@

$(BUILD)/tests/%.o: tests/%.c
	@mkdir -p $(@D)
	$(CC) $(TEST_CFLAGS) -MMD -MP -c $< -o $@

$(BUILD)/examples/%.o: examples/%.c
	@mkdir -p $(@D)
	$(CC) $(ALL_CFLAGS) -MMD -MP -c $< -o $@

$(BUILD)/bench-obj/%.o: bench/%.c
	@mkdir -p $(@D)
	$(CC) $(ALL_CFLAGS) -MMD -MP -c $< -o $@

$(FAULT_LIB): $(STATIC_LIB)
	$(OBJCOPY) $(foreach f,$(FAULT_SYMS),--redefine-sym $(f)=dsy_fault_$(f)) $< $@

$(BUILD)/run_tests: $(TEST_OBJS) $(FAULT_LIB)
	$(CC) -o $@ $(TEST_OBJS) $(FAULT_LIB) $(ALL_LDFLAGS) $(LDLIBS)

# The same tests linked against the shared library (found next to the binary
# through its rpath): a call the tests make that the library does not export
# fails this link.
$(BUILD)/run_tests_shared: $(TEST_OBJS) $(SHARED_REAL) $(SHARED_LINKS)
	$(CC) -o $@ $(TEST_OBJS) $(SHARED_REAL) -Wl,-rpath,'$$ORIGIN' $(ALL_LDFLAGS) $(LDLIBS)

$(BUILD)/soak: $(BUILD)/tests/soak.o $(STATIC_LIB)
	$(CC) -o $@ $< $(STATIC_LIB) $(ALL_LDFLAGS) $(LDLIBS)

$(EXAMPLES): $(BUILD)/%: $(BUILD)/examples/%.o $(STATIC_LIB)
	$(CC) -o $@ $< $(STATIC_LIB) $(ALL_LDFLAGS) $(LDLIBS)

$(BUILD)/bench: $(BENCH_OBJS) $(STATIC_LIB)
	$(CC) -o $@ $(BENCH_OBJS) $(STATIC_LIB) $(ALL_LDFLAGS) $(LDLIBS)

# Arguments for the test runner, e.g. `make test TESTS="core_sync_retrieve"`.
TESTS ?=

# With no TESTS, `make test` also checks what the libraries export
# (check-symbols) and runs a subset of the suite with the test binary linked
# against the shared library (run_tests_shared): the link catches a call the
# library does not export, the run shows the shared library works. A subset,
# one to three quick tests per topic file (about 2 s), because the whole suite
# again would double the time of `make test`; the fault tests cannot run
# there (the shared library calls the real malloc, not tests/fault.c's).
SHARED_TESTS := core_sync_retrieve core_new_copy_owns_its_copy core_async_update_then_sync core_release_from_own_job \
    core_order_many_jobs core_try_sync core_desync_copy core_queue_api core_get_queue \
    core_reentrant_chain_cross_thread core_scheduler_basics core_scheduler_free_waits \
    core_bad_input core_strerror core_stress_mixed future_wait_for_future future_and_sync \
    future_sync_polled future_poll_waker future_fd future_then future_promise_cancel \
    future_suspend_local_drain stream_array_reads stream_user_reads_and_frees \
    channel_rendezvous channel_send_future pipe_through pipe_chain pipe_backpressure \
    pipe_in_async shutdown_at_exit_loses_nothing shutdown_drain_waits_for_jobs_queued_by_jobs \
    deadlock_cycle_two_threads_sync deadlock_cycle_futures misuse_channel_send_after_close_epipe \
    race_pipe_through_1000 fork_child_runs_background_jobs version_matches_headers \
    multi_sync_all_datas multi_order timer_one_shot_fires_once timer_periodic_cancel_stops \
    timer_future_delay bounded_desync_blocks_until_room bounded_try_desync_eagain \
    stats_queue_counts_and_states stats_dump_shows_labels future_all_basic future_any_basic \
    pipe_in_future_wait_then_release deadlock_drain_cycle_refused

test: $(BUILD)/run_tests $(if $(TESTS),,check-symbols $(BUILD)/run_tests_shared)
	DESYNC_TEST_TIMEOUT_SCALE=$${DESYNC_TEST_TIMEOUT_SCALE:-$(TIMEOUT_SCALE)} \
	$(RUN_PREFIX) ./$(BUILD)/run_tests $(TESTS)
ifeq ($(TESTS),)
	@echo "== the same tests linked against the shared library (a subset)"
	DESYNC_TEST_TIMEOUT_SCALE=$${DESYNC_TEST_TIMEOUT_SCALE:-$(TIMEOUT_SCALE)} \
	$(RUN_PREFIX) ./$(BUILD)/run_tests_shared $(SHARED_TESTS)
	$(CXX_TEST_RECIPE)
endif

# <desync/blocks.h> (the `_b` calls taking clang blocks) is tested by its
# own program, tests/blocks/test_blocks.c: it needs clang with -fblocks and
# the BlocksRuntime (Debian: libblocksruntime-dev), which the library does
# not. `make test` (without TESTS) runs it when a tiny program using both
# builds here, and says that it skips it otherwise. It is built by clang
# (BLOCKS_CC) against this build's static library, also when CC is gcc; in a
# gcc sanitizer build it is skipped, since clang's sanitizer runtime cannot
# be mixed with gcc's. In builds without SAN it runs a second time built
# with AddressSanitizer (the library uninstrumented): LeakSanitizer then
# sees that every block copy is freed.
BLOCKS_CC ?= $(if $(findstring clang,$(CC_NAME)),$(CC),clang)
BLOCKS_LIBS := -lBlocksRuntime -ldl
BLOCKS_SKIP := skipping blocks tests: needs clang -fblocks and libBlocksRuntime (libblocksruntime-dev)
BLOCKS_PROBE_SRC := \#include <Block.h>\nint main(void) { void (^b)(void) = Block_copy(^{}); b(); Block_release(b); return 0; }\n
BLOCKS_ASAN := -fsanitize=address -fno-omit-frame-pointer

.PHONY: test-blocks test-blocks-run
test-blocks: $(STATIC_LIB)
	@mkdir -p $(BUILD)/blocks
	@if [ -n "$(SAN)" ] && [ -z "$(findstring clang,$(CC_NAME))" ]; then \
	    echo "skipping blocks tests in a gcc sanitizer build (run them with CC=clang)"; \
	elif printf '$(BLOCKS_PROBE_SRC)' | $(BLOCKS_CC) -fblocks -x c - -o $(BUILD)/blocks/probe \
	        $(BLOCKS_LIBS) >/dev/null 2>&1; then \
	    $(MAKE) --no-print-directory test-blocks-run; \
	else echo "$(BLOCKS_SKIP)"; fi

test-blocks-run: $(BUILD)/test_blocks $(if $(SAN),,$(BUILD)/test_blocks_asan)
	@echo "== blocks tests ($(BLOCKS_CC) -fblocks)"
	DESYNC_TEST_TIMEOUT_SCALE=$${DESYNC_TEST_TIMEOUT_SCALE:-$(TIMEOUT_SCALE)} \
	$(RUN_PREFIX) ./$(BUILD)/test_blocks
ifeq ($(SAN),)
	@echo "== blocks tests under AddressSanitizer (leaks checked)"
	ASAN_OPTIONS=detect_leaks=1$${ASAN_OPTIONS:+:$$ASAN_OPTIONS} DESYNC_TEST_TIMEOUT_SCALE=3 \
	./$(BUILD)/test_blocks_asan
endif

$(BUILD)/test_blocks: tests/blocks/test_blocks.c $(STATIC_LIB)
	@mkdir -p $(BUILD)/blocks
	$(BLOCKS_CC) $(TEST_CFLAGS) -fblocks -MMD -MP -MT $@ -MF $(BUILD)/blocks/test_blocks.d \
	    -o $@ $< $(STATIC_LIB) $(ALL_LDFLAGS) $(LDLIBS) $(BLOCKS_LIBS)

$(BUILD)/test_blocks_asan: tests/blocks/test_blocks.c $(STATIC_LIB)
	@mkdir -p $(BUILD)/blocks
	$(BLOCKS_CC) $(TEST_CFLAGS) $(BLOCKS_ASAN) -fblocks -MMD -MP -MT $@ \
	    -MF $(BUILD)/blocks/test_blocks_asan.d -o $@ $< $(STATIC_LIB) $(ALL_LDFLAGS) $(BLOCKS_ASAN) \
	    $(LDLIBS) $(BLOCKS_LIBS)

test: $(if $(TESTS),,test-blocks)

# examples/kvserver.c, run with no argument, serves 127.0.0.1 on a free
# port and checks 5,000 requests from its own client threads (each wait in
# it is bounded); `make test` runs it and checks its exit status and line.
.PHONY: test-kvserver
test-kvserver: $(BUILD)/kvserver
	@echo "== examples/kvserver: 5,000 requests on loopback"
	@timeout 300 $(RUN_PREFIX) ./$(BUILD)/kvserver > $(BUILD)/kvserver.out 2>&1; rc=$$?; \
	    cat $(BUILD)/kvserver.out; \
	    [ $$rc = 0 ] && grep -q ' 5000 replies checked, 0 wrong' $(BUILD)/kvserver.out || \
	    { echo "FAIL examples/kvserver (exit status $$rc)"; exit 1; }

test: $(if $(TESTS),,test-kvserver)

# ThreadSanitizer for users (README, "ThreadSanitizer in your program"):
# installs the library built with SAN=thread into a temporary DESTDIR,
# builds tests/consumer/tsan_user.c (race-free) with -fsanitize=thread
# through pkg-config against it and fails on any TSan report; the same
# program with -DRACY must be reported. See tests/consumer/tsan_user.sh.
.PHONY: check-tsan-user
check-tsan-user:
	@CC="$(CC)" MAKE="$(MAKE)" sh tests/consumer/tsan_user.sh

# For scripts (.ci/consumers): the version and the soname's version.
print-version:
	@echo $(VERSION)
print-soversion:
	@echo $(SOVERSION)

# debian/ follows include/desync/version.h: the changelog's upstream
# version is VERSION, and the shared-library package is named after the
# soname (renamed, with its .install and .symbols files, at each 0.x minor).
# (The sed script is in a variable: make would count its parentheses.)
deb_version_sed := 1s/^[^(]*(\([0-9]*:\)\{0,1\}\([^)-]*\).*/\2/p
DEB_VERSION = $(shell sed -n '$(deb_version_sed)' debian/changelog)
check-version:
	@test "$(DEB_VERSION)" = "$(VERSION)" || \
	    { echo "debian/changelog says $(DEB_VERSION), include/desync/version.h $(VERSION)"; exit 1; }
	@grep -qx 'Package: libdesync$(SOVERSION)' debian/control && \
	    grep -q 'Depends: libdesync$(SOVERSION) (= $${binary:Version})' debian/control && \
	    test -f debian/libdesync$(SOVERSION).install && \
	    grep -q '^libdesync.so.$(SOVERSION) libdesync$(SOVERSION) ' debian/libdesync$(SOVERSION).symbols || \
	    { echo "debian/: the library package must be libdesync$(SOVERSION) (control, .install, .symbols)"; exit 1; }
	@echo "check-version: $(VERSION), soname libdesync.so.$(SOVERSION), package libdesync$(SOVERSION)"

check-symbols: $(STATIC_LIB) $(SHARED_REAL)
	tests/check_symbols.sh --shared $(SHARED_REAL) --static $(STATIC_LIB) $(SOVERSION)

# The fault-injection tests (tests/fault.h) with every allocation site and
# thread start failed in turn instead of a sample, in the ASan + UBSan build
# with LeakSanitizer on. A few minutes.
FAULT_TESTS := $(shell grep -o '^TEST_ENTRY.fault_[a-z0-9_]*' tests/test_list.h | cut -c12-)

check-faults:
	DESYNC_TEST_FAULT_FULL=1 ASAN_OPTIONS=detect_leaks=1$${ASAN_OPTIONS:+:$$ASAN_OPTIONS} \
	UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1$${UBSAN_OPTIONS:+:$$UBSAN_OPTIONS} \
	$(MAKE) test SAN=address,undefined TESTS="$(FAULT_TESTS)"

# `make test` forks 50 children under load (20 in sanitizer builds); this
# forks 1,000. Children that hang are killed by the test, so it cannot hang.
check-fork: $(BUILD)/run_tests
	DESYNC_TEST_GDB=$$(command -v gdb) DESYNC_TEST_FORKS=1000 DESYNC_TEST_TIMEOUT_SCALE=$${DESYNC_TEST_TIMEOUT_SCALE:-20} \
	$(RUN_PREFIX) ./$(BUILD)/run_tests fork_under_load

run: all
	$(RUN_PREFIX) ./$(BUILD)/demo

# Every example under valgrind's leak checker: nothing may be left, not even
# "still reachable" (the examples register desync_shutdown with atexit).
VALGRIND := valgrind --quiet --leak-check=full --errors-for-leak-kinds=all --error-exitcode=1
check-valgrind: $(EXAMPLES)
	@command -v valgrind >/dev/null || { echo "check-valgrind: valgrind is not installed"; exit 1; }
	@for e in $(EXAMPLES); do \
	    echo "valgrind $$e"; \
	    $(VALGRIND) ./$$e > /dev/null || { echo "FAIL valgrind $$e"; exit 1; }; \
	done; echo "valgrind: $(words $(EXAMPLES)) examples clean"

# The soak (tests/soak.c, not part of `make test`): producers mixing every
# kind of job over many objects, checking in each job that none is lost, run
# twice or out of order. `make soak-run SOAK_ARGS="-n 1000 -t 0"` runs it
# once with the given options (see soak.c), in this build's flavour.
SOAK_ARGS ?=
soak-run: $(BUILD)/soak
	$(RUN_PREFIX) ./$(BUILD)/soak $(SOAK_ARGS)

# 11 minutes (not in CI): fails if the RSS at the end is 10% or more above
# the RSS after the first minute.
soak:
	$(MAKE) --no-print-directory soak-run SOAK_ARGS="-s 660 -w 60 -g 10"

# CI-sized (about a minute on 2 cores, once built): 10M jobs on the default
# scheduler, fewer on schedulers with 1 and 0 threads, then the same three
# with small counts under ThreadSanitizer.
check-soak:
	$(MAKE) --no-print-directory soak-run SAN= SOAK_ARGS="-n 10000000"
	$(MAKE) --no-print-directory soak-run SAN= SOAK_ARGS="-n 3000000 -t 1"
	$(MAKE) --no-print-directory soak-run SAN= SOAK_ARGS="-n 5000000 -t 0"
	$(MAKE) --no-print-directory soak-run SAN=thread SOAK_ARGS="-n 2000000"
	$(MAKE) --no-print-directory soak-run SAN=thread SOAK_ARGS="-n 300000 -t 1"
	$(MAKE) --no-print-directory soak-run SAN=thread SOAK_ARGS="-n 300000 -t 0"

# The slow checks, beyond `make test` (called by .ci/run), one after the
# other: run side by side on 2 cores they would slow each other past their
# timeouts.
check-all:
	$(MAKE) check-valgrind
	$(MAKE) check-soak
	$(MAKE) check-faults
	$(MAKE) check-fork
	$(MAKE) fuzz
	$(MAKE) model

# The API fuzzer (fuzz/fuzz_api.c; its top comment says what an input means
# and what is checked): libFuzzer with ASan and UBSan, the library built with
# assertions on (-DDESYNC_DEBUG) and coverage in build-fuzz/. `make fuzz`
# runs the single- and the multi-threaded mode for FUZZ_SECONDS in all (half
# each; FUZZ_MODE=st or mt runs one) on copies of the seed corpus fuzz/corpus/
# in build/fuzz/ (fuzz/corpus is never written; see fuzz/run.sh), prints the
# executions, and fails with the reproducer's path if it finds a crash, leak
# or hang. Needs clang (FUZZ_CC). FUZZ_ARGS go to libFuzzer, FUZZ_DEFS to the
# harness's compiler (e.g. -DFUZZ_MISUSE_CHECKS=1; remove build-fuzz/fuzz_api
# when changing them).
FUZZ_CC ?= clang
FUZZ_SECONDS ?= 60
FUZZ_MODE ?= st mt
FUZZ_ARGS ?=
FUZZ_DEFS ?=
FUZZ_BUILD := build-fuzz
FUZZ_CFLAGS := -std=c11 -O1 -g -Wall -Wextra -Werror -pthread -D_GNU_SOURCE -fvisibility=hidden \
               -fno-omit-frame-pointer -fno-sanitize-recover=all -Iinclude -Isrc -DDESYNC_DEBUG
FUZZ_LIB_OBJS := $(LIB_SRCS:%.c=$(FUZZ_BUILD)/%.o)

$(FUZZ_BUILD)/src/%.o: src/%.c
	@mkdir -p $(@D)
	$(FUZZ_CC) $(FUZZ_CFLAGS) -fsanitize=fuzzer-no-link,address,undefined -MMD -MP -c $< -o $@

$(FUZZ_BUILD)/fuzz_api: fuzz/fuzz_api.c $(FUZZ_LIB_OBJS)
	$(FUZZ_CC) $(FUZZ_CFLAGS) $(FUZZ_DEFS) -fsanitize=fuzzer,address,undefined -MMD -MP -MF $@.d \
	    -o $@ $< $(FUZZ_LIB_OBJS) $(LDLIBS)

fuzz: $(FUZZ_BUILD)/fuzz_api
	@sh fuzz/run.sh $(FUZZ_BUILD)/fuzz_api build/fuzz $(FUZZ_SECONDS) "$(FUZZ_MODE)" $(FUZZ_ARGS)

# The slow checks, beyond `make test` (called by .ci/run), one after the
# other even under -j (each one keeps the cores busy).

# The SPIN models (models/README.md): the correct ones must pass, every
# injected-bug variant must be caught. Installs spin if it can, else skips.
model:
	@CC="$(CC)" models/run.sh build/model

# The benchmarks (bench/README.md), then the chart of their curves from the
# CSV files in $(BUILD)/bench-csv/ (bench/chart.sh: installs gnuplot if it
# can, else skips the chart with a message).
bench: $(BUILD)/bench
	$(RUN_PREFIX) ./$(BUILD)/bench
	@sh bench/chart.sh $(BUILD)/bench-csv

# Installation. `make install PREFIX=/usr DESTDIR=/tmp/stage` stages a tree
# for a package; LIBDIR (e.g. /usr/lib/x86_64-linux-gnu), INCLUDEDIR,
# PKGCONFIGDIR and CMAKEDIR can be set on their own. Installs the libraries
# of this build's flavour ($(BUILD)): `make install SAN=thread` installs a
# ThreadSanitizer build. The pkg-config and CMake files are written from
# desync.pc.in and cmake/*.cmake.in with the version and these directories;
# the CMake files find the libraries relative to themselves.
PREFIX ?= /usr/local
LIBDIR ?= $(PREFIX)/lib
INCLUDEDIR ?= $(PREFIX)/include
PKGCONFIGDIR ?= $(LIBDIR)/pkgconfig
CMAKEDIR ?= $(LIBDIR)/cmake/desync
DESTDIR ?=
INSTALL ?= install
LDCONFIG ?= ldconfig
PUBLIC_HEADERS := $(wildcard include/desync/*.h)

relpath = $(shell realpath -m --relative-to=$(1) $(2))
# Each @NAME@ of the templates.
INSTALL_SUBST := -e 's|@VERSION@|$(VERSION)|g' -e 's|@SOVERSION@|$(SOVERSION)|g' \
    -e 's|@VERSION_MAJOR@|$(VERSION_MAJOR)|g' -e 's|@VERSION_MINOR@|$(VERSION_MINOR)|g' \
    -e 's|@PREFIX@|$(PREFIX)|g' \
    -e 's|@LIBDIR@|$(patsubst $(PREFIX)/%,$${prefix}/%,$(LIBDIR))|g' \
    -e 's|@INCLUDEDIR@|$(patsubst $(PREFIX)/%,$${prefix}/%,$(INCLUDEDIR))|g' \
    -e 's|@CMAKEDIR_TO_PREFIX@|$(call relpath,$(CMAKEDIR),$(PREFIX))|g' \
    -e 's|@PREFIX_TO_LIBDIR@|$(call relpath,$(PREFIX),$(LIBDIR))|g' \
    -e 's|@PREFIX_TO_INCLUDEDIR@|$(call relpath,$(PREFIX),$(INCLUDEDIR))|g' \
    -e "s|@SIZEOF_VOID_P@|$$(echo __SIZEOF_POINTER__ | $(CC) -E -P - | tr -d ' ')|g"

install: lib
	$(INSTALL) -d $(DESTDIR)$(LIBDIR) $(DESTDIR)$(INCLUDEDIR)/desync \
	    $(DESTDIR)$(PKGCONFIGDIR) $(DESTDIR)$(CMAKEDIR)
	$(INSTALL) -m 644 $(SHARED_REAL) $(STATIC_LIB) $(DESTDIR)$(LIBDIR)/
	ln -sf libdesync.so.$(VERSION) $(DESTDIR)$(LIBDIR)/$(SHARED_SONAME)
	ln -sf $(SHARED_SONAME) $(DESTDIR)$(LIBDIR)/libdesync.so
	$(INSTALL) -m 644 include/desync.h include/desync.hpp $(DESTDIR)$(INCLUDEDIR)/
	$(INSTALL) -m 644 $(PUBLIC_HEADERS) $(DESTDIR)$(INCLUDEDIR)/desync/
	sed $(INSTALL_SUBST) desync.pc.in > $(DESTDIR)$(PKGCONFIGDIR)/desync.pc
	sed $(INSTALL_SUBST) cmake/desync-config.cmake.in > $(DESTDIR)$(CMAKEDIR)/desync-config.cmake
	sed $(INSTALL_SUBST) cmake/desync-config-version.cmake.in \
	    > $(DESTDIR)$(CMAKEDIR)/desync-config-version.cmake
	chmod 644 $(DESTDIR)$(PKGCONFIGDIR)/desync.pc $(DESTDIR)$(CMAKEDIR)/*.cmake
	@# Without this, programs installed into /usr/local would not find the
	@# new soname until the next ldconfig run.
	@if [ -z "$(DESTDIR)" ] && [ -w /etc/ld.so.cache ] && command -v $(LDCONFIG) >/dev/null; then \
	    echo "$(LDCONFIG)"; $(LDCONFIG); fi

uninstall:
	rm -f $(DESTDIR)$(LIBDIR)/libdesync.so.$(VERSION) $(DESTDIR)$(LIBDIR)/$(SHARED_SONAME) \
	    $(DESTDIR)$(LIBDIR)/libdesync.so $(DESTDIR)$(LIBDIR)/libdesync.a \
	    $(DESTDIR)$(INCLUDEDIR)/desync.h $(DESTDIR)$(INCLUDEDIR)/desync.hpp $(PUBLIC_HEADERS:include/%=$(DESTDIR)$(INCLUDEDIR)/%) \
	    $(DESTDIR)$(PKGCONFIGDIR)/desync.pc $(DESTDIR)$(CMAKEDIR)/desync-config.cmake \
	    $(DESTDIR)$(CMAKEDIR)/desync-config-version.cmake
	-rmdir $(DESTDIR)$(INCLUDEDIR)/desync $(DESTDIR)$(CMAKEDIR) 2>/dev/null
	@if [ -z "$(DESTDIR)" ] && [ -w /etc/ld.so.cache ] && command -v $(LDCONFIG) >/dev/null; then \
	    echo "$(LDCONFIG)"; $(LDCONFIG); fi

# Style: .clang-format pins the code's style, but the existing code was
# partly wrapped by hand, so only the lines changed since the branch left
# FORMAT_BASE (default main; uncommitted changes included) are checked, with
# git-clang-format (Debian package clang-format). `git clang-format
# $(git merge-base HEAD main)` applies what it reports.
FORMAT_BASE ?= main
CLANG_FORMAT ?= clang-format

format-check:
	@command -v git-clang-format >/dev/null 2>&1 && command -v $(CLANG_FORMAT) >/dev/null 2>&1 || \
	    { echo "make format-check: git-clang-format is missing (apt-get install -y clang-format)" >&2; \
	      exit 1; }
	@base=$$(git merge-base HEAD $(FORMAT_BASE) 2>/dev/null) || \
	    { echo "make format-check: no branch $(FORMAT_BASE) to compare with (FORMAT_BASE=...)" >&2; \
	      exit 1; }; \
	out=$$(git clang-format --binary $(CLANG_FORMAT) --diff --extensions c,h,cpp,hpp $$base 2>&1); \
	case "$$out" in \
	"" | "no modified files to format" | *"did not modify any files"*) \
	    echo "format-check: the lines changed since $(FORMAT_BASE) follow .clang-format";; \
	*) printf '%s\n' "$$out"; \
	   echo "format-check: the lines above differ from .clang-format (git clang-format $$base)" >&2; \
	   exit 1;; \
	esac

.PHONY: format-check

# API reference: build/docs/html from the public headers' comments (Doxyfile,
# front page docs/mainpage.md). Doxygen's warnings are errors, so a public
# declaration without a comment, or a broken reference in one, fails it
# (check-docs is the same target under the name CI uses). Not part of
# `make test`: the tests never need doxygen. A missing doxygen is installed
# from the Debian archive (as root, else with sudo).
DOXYGEN ?= doxygen

docs:
	@command -v $(DOXYGEN) >/dev/null 2>&1 || $(MAKE) --no-print-directory install-doxygen
	@mkdir -p build/docs
	$(DOXYGEN) Doxyfile
	@echo "API reference: build/docs/html/index.html"

check-docs: docs

install-doxygen:
	@echo "doxygen is missing: installing it from the Debian archive (apt-get install -y doxygen)"
	@if [ "$$(id -u)" = 0 ]; then sudo=; \
	elif command -v sudo >/dev/null 2>&1; then sudo=sudo; \
	else echo "make docs: not root and no sudo: install doxygen yourself" \
	    "(Debian/Ubuntu: apt-get install -y doxygen), then run make docs again" >&2; exit 1; fi; \
	if ! command -v apt-get >/dev/null 2>&1; then \
	    echo "make docs: no apt-get here: install doxygen with your system's package manager" >&2; \
	    exit 1; fi; \
	export DEBIAN_FRONTEND=noninteractive; \
	$$sudo apt-get install -y doxygen || \
	    { $$sudo apt-get update && $$sudo apt-get install -y doxygen; } || \
	    { echo "make docs: could not install doxygen; install it (apt-get install -y doxygen)" \
	      "and run make docs again" >&2; exit 1; }

.PHONY: docs check-docs install-doxygen

# C++: the wrapper include/desync.hpp (header-only; nothing of it goes into
# the libraries), its tests (tests/cpp/, build/run_tests_cpp, run by `make
# test` with no TESTS, or alone by `make test-cxx`) and its example
# (examples/cpp_lambdas.cpp, built by `make`, run and checked by the tests
# and under valgrind by check-valgrind). CXX defaults to the C++ compiler of
# CC's family (clang++ for CC=clang, g++-12 for CC=gcc-12, else g++); with
# no C++ compiler these are skipped with a message, never failed.
ifeq ($(origin CXX),default)
CXX := $(if $(filter clang%,$(CC_NAME)),$(patsubst clang%,clang++%,$(CC_NAME)),$(if \
         $(filter gcc-%,$(CC_NAME)),$(patsubst gcc-%,g++-%,$(CC_NAME)),g++))
endif
HAVE_CXX := $(if $(shell command -v $(firstword $(CXX)) 2>/dev/null),1)
ALL_CXXFLAGS := -std=c++17 $(OPT) -g -Wall -Wextra -pedantic -Werror -pthread -Iinclude \
                $(SANFLAGS) $(CXXFLAGS)
CXX_HEADERS := include/desync.hpp include/desync.h $(wildcard include/desync/*.h)
CXX_TEST_BIN := $(BUILD)/run_tests_cpp
CXX_EXAMPLES := $(BUILD)/cpp_lambdas

.PHONY: test-cxx

ifeq ($(HAVE_CXX),1)
examples: $(CXX_EXAMPLES)
tests: $(CXX_TEST_BIN)
test: $(if $(TESTS),,$(CXX_TEST_BIN) $(CXX_EXAMPLES))
check-valgrind: $(CXX_EXAMPLES)
# (check-valgrind's loop reads EXAMPLES when it runs: it gets the C++ one too.)
EXAMPLES += $(CXX_EXAMPLES)

$(CXX_TEST_BIN): tests/cpp/test_cpp.cpp $(CXX_HEADERS) $(STATIC_LIB)
	@mkdir -p $(@D)
	$(CXX) $(ALL_CXXFLAGS) $(if $(SAN),-DDESYNC_TEST_SANITIZED) -o $@ $< $(STATIC_LIB) \
	    $(ALL_LDFLAGS) $(LDLIBS)

$(CXX_EXAMPLES): $(BUILD)/%: examples/%.cpp $(CXX_HEADERS) $(STATIC_LIB)
	@mkdir -p $(@D)
	$(CXX) $(ALL_CXXFLAGS) -o $@ $< $(STATIC_LIB) $(ALL_LDFLAGS) $(LDLIBS)

# The tests, then the example, whose last line must show the expected total.
define CXX_TEST_RECIPE
@echo "== the C++ wrapper's tests ($(CXX))"
DESYNC_TEST_TIMEOUT_SCALE=$${DESYNC_TEST_TIMEOUT_SCALE:-$(TIMEOUT_SCALE)} \
$(RUN_PREFIX) ./$(CXX_TEST_BIN)
$(RUN_PREFIX) ./$(BUILD)/cpp_lambdas > $(BUILD)/cpp_lambdas.out
@grep -q '^alice: 170 (100 entries), bob: 135, total: 305$$' $(BUILD)/cpp_lambdas.out || \
    { cat $(BUILD)/cpp_lambdas.out; echo "FAIL cpp_lambdas: unexpected output"; exit 1; }
@echo "PASS example cpp_lambdas"
endef

test-cxx: $(CXX_TEST_BIN) $(CXX_EXAMPLES)
	$(CXX_TEST_RECIPE)
else
define CXX_TEST_RECIPE
@echo "skipping C++ tests: no C++ compiler ($(CXX) not found)"
endef

test-cxx:
	$(CXX_TEST_RECIPE)
endif

clean:
	rm -rf build build-*

-include $(wildcard $(BUILD)/*/*.d $(BUILD)/*/*/*.d)
-include $(wildcard $(FUZZ_BUILD)/*.d $(FUZZ_BUILD)/*/*.d $(FUZZ_BUILD)/*/*/*.d)
