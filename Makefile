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
SHARED_LIB := $(BUILD)/libdesync.so
# The test binary links a copy of the static library whose objects call the
# fault-injection hooks of tests/fault.c instead of these functions, so tests
# can fail the library's own allocations and thread creations (tests/fault.h).
FAULT_LIB := $(BUILD)/libdesync_fault.a
FAULT_SYMS := malloc calloc realloc aligned_alloc posix_memalign mmap pthread_create
OBJCOPY ?= objcopy

.PHONY: all lib examples tests test run bench clean check-valgrind check-all soak soak-run check-soak check-faults check-fork fuzz model
.DEFAULT_GOAL := all

all: lib examples tests

lib: $(STATIC_LIB) $(SHARED_LIB)

examples: $(EXAMPLES)

tests: $(BUILD)/run_tests $(BUILD)/soak

$(STATIC_LIB): $(LIB_OBJS)
	@mkdir -p $(@D)
	rm -f $@
	$(AR) rcs $@ $^

$(SHARED_LIB): $(LIB_OBJS)
	@mkdir -p $(@D)
	$(CC) -shared -o $@ $^ $(ALL_LDFLAGS) $(LDLIBS)

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

$(BUILD)/soak: $(BUILD)/tests/soak.o $(STATIC_LIB)
	$(CC) -o $@ $< $(STATIC_LIB) $(ALL_LDFLAGS) $(LDLIBS)

$(EXAMPLES): $(BUILD)/%: $(BUILD)/examples/%.o $(STATIC_LIB)
	$(CC) -o $@ $< $(STATIC_LIB) $(ALL_LDFLAGS) $(LDLIBS)

$(BUILD)/bench: $(BENCH_OBJS) $(STATIC_LIB)
	$(CC) -o $@ $(BENCH_OBJS) $(STATIC_LIB) $(ALL_LDFLAGS) $(LDLIBS)

# Arguments for the test runner, e.g. `make test TESTS="core_sync_retrieve"`.
TESTS ?=

test: $(BUILD)/run_tests
	DESYNC_TEST_TIMEOUT_SCALE=$${DESYNC_TEST_TIMEOUT_SCALE:-$(TIMEOUT_SCALE)} \
	$(RUN_PREFIX) ./$(BUILD)/run_tests $(TESTS)

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

bench: $(BUILD)/bench
	$(RUN_PREFIX) ./$(BUILD)/bench

clean:
	rm -rf build build-*

-include $(wildcard $(BUILD)/*/*.d $(BUILD)/*/*/*.d)
-include $(wildcard $(FUZZ_BUILD)/*.d $(FUZZ_BUILD)/*/*.d $(FUZZ_BUILD)/*/*/*.d)
