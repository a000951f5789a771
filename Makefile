# libdesync build (GNU make).
#
#   make                      libraries, examples and the test binary in build/
#   make test                 build and run every test
#   make run                  build everything and run build/demo
#   make bench                build and run build/bench
#   make test CC=clang        same with clang, in build-clang/
#   make test SAN=thread      ThreadSanitizer build in build-thread/
#   make test SAN=address,undefined
#   make test DEBUG=1         invariant checks (DSY_ASSERT) on, in build-debug/
#   make test OS=posix        the portable OS layer instead of Linux's, in build-posix/
#   make model                check the SPIN models of the queue protocol (models/)
#   make clean

# Make's built-in default for CC is "cc"; we default to gcc, but honour any
# CC given on the command line or in the environment.
ifeq ($(origin CC),default)
CC := gcc
endif

SAN ?=
DEBUG ?=
comma := ,

# The OS layer (src/os/): sets OS and OS_SRCS.
include src/os/os.mk

# Sanitizer builds always check the library's invariants.
DEBUG_ON := $(if $(or $(SAN),$(filter-out 0,$(DEBUG))),1)

# One build directory per compiler and sanitizer set, so builds never mix.
CC_NAME := $(notdir $(firstword $(CC)))
CC_TAG := $(if $(filter gcc cc,$(CC_NAME)),,-$(CC_NAME))
SAN_DIRNAME := $(subst $(comma),-,$(SAN))
BUILD ?= build$(CC_TAG)$(if $(SAN),-$(SAN_DIRNAME),$(if $(DEBUG_ON),-debug))$(if $(filter posix,$(OS)),-posix)

OPT := -O2
SANFLAGS :=
ifneq ($(SAN),)
OPT := -O1
SANFLAGS := -fsanitize=$(SAN) -fno-omit-frame-pointer
endif

# CFLAGS/LDFLAGS given by the user are appended, never replace ours.
BASE_CFLAGS := -std=c11 $(OPT) -g -Wall -Wextra -Werror -pthread -D_GNU_SOURCE \
               -fPIC -fvisibility=hidden -Iinclude -Isrc $(SANFLAGS) \
               $(if $(DEBUG_ON),-DDESYNC_DEBUG)
ALL_CFLAGS := $(BASE_CFLAGS) $(CFLAGS)
ALL_LDFLAGS := -pthread $(SANFLAGS) $(LDFLAGS)
LDLIBS := -lm

# Tests scale their loops down in sanitizer builds (TSan is ~10x slower).
TEST_CFLAGS := $(ALL_CFLAGS) -Itests $(if $(SAN),-DDESYNC_TEST_SANITIZED)

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
TEST_SRCS := tests/runner.c $(wildcard tests/test_*.c)
TEST_OBJS := $(TEST_SRCS:%.c=$(BUILD)/%.o)
EXAMPLE_SRCS := $(wildcard examples/*.c)
EXAMPLES := $(EXAMPLE_SRCS:examples/%.c=$(BUILD)/%)
BENCH_SRCS := $(wildcard bench/*.c)
BENCH_OBJS := $(BENCH_SRCS:bench/%.c=$(BUILD)/bench-obj/%.o)

STATIC_LIB := $(BUILD)/libdesync.a
SHARED_LIB := $(BUILD)/libdesync.so

.PHONY: all lib examples tests test run bench clean check-valgrind check-all model
.DEFAULT_GOAL := all

all: lib examples tests

lib: $(STATIC_LIB) $(SHARED_LIB)

examples: $(EXAMPLES)

tests: $(BUILD)/run_tests

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

$(BUILD)/run_tests: $(TEST_OBJS) $(STATIC_LIB)
	$(CC) -o $@ $(TEST_OBJS) $(STATIC_LIB) $(ALL_LDFLAGS) $(LDLIBS)

$(EXAMPLES): $(BUILD)/%: $(BUILD)/examples/%.o $(STATIC_LIB)
	$(CC) -o $@ $< $(STATIC_LIB) $(ALL_LDFLAGS) $(LDLIBS)

$(BUILD)/bench: $(BENCH_OBJS) $(STATIC_LIB)
	$(CC) -o $@ $(BENCH_OBJS) $(STATIC_LIB) $(ALL_LDFLAGS) $(LDLIBS)

# Arguments for the test runner, e.g. `make test TESTS="core_sync_retrieve"`.
TESTS ?=

test: $(BUILD)/run_tests
	DESYNC_TEST_TIMEOUT_SCALE=$${DESYNC_TEST_TIMEOUT_SCALE:-$(TIMEOUT_SCALE)} \
	$(RUN_PREFIX) ./$(BUILD)/run_tests $(TESTS)

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

# The SPIN models (models/README.md): the correct ones must pass, every
# injected-bug variant must be caught. Installs spin if it can, else skips.
model:
	@CC="$(CC)" models/run.sh build/model

# The slow checks, beyond `make test` (called by .ci/run).
check-all: check-valgrind

bench: $(BUILD)/bench
	$(RUN_PREFIX) ./$(BUILD)/bench

clean:
	rm -rf build build-*

-include $(wildcard $(BUILD)/*/*.d $(BUILD)/*/*/*.d)
