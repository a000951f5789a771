/*
 * Fault injection for tests: make the library's memory allocations or thread
 * creations fail on purpose, or its yields return late, and sweep a scenario
 * over every allocation site.
 *
 * How only the library's calls are caught: the test binary links
 * libdesync_fault.a, a copy of libdesync.a whose objects call
 * dsy_fault_malloc, dsy_fault_calloc, ... dsy_fault_sched_yield (fault.c)
 * instead of malloc, calloc, realloc, aligned_alloc, posix_memalign, mmap,
 * pthread_create and sched_yield (the Makefile renames the references with objcopy
 * --redefine-sym). The tests' own allocations are not counted. free is not
 * hooked (it never fails). The release libraries and the examples are not
 * touched.
 *
 * A rule applies to one kind of call (FAULT_ALLOC, FAULT_THREAD or
 * FAULT_YIELD) and
 * counts the calls from the moment it is set:
 *   FAULT_NTH n     only the nth call fails
 *   FAULT_FROM n    the nth call and every later one fail
 *   FAULT_EVERY n   every nth call fails (n, 2n, 3n, ...)
 *   FAULT_COUNT     nothing fails; the calls are only counted
 * With no rule set (FAULT_OFF, the default) the hooks only forward the call.
 * A failed allocation returns NULL (posix_memalign: ENOMEM); a failed thread
 * creation returns EAGAIN; a failed yield returns FAULT_YIELD_LATE_US late,
 * as if another thread had run on the core meanwhile.
 */
#ifndef DESYNC_TEST_FAULT_H
#define DESYNC_TEST_FAULT_H

enum fault_kind { FAULT_ALLOC, FAULT_THREAD, FAULT_YIELD };
#define FAULT_YIELD_LATE_US 200
enum fault_mode { FAULT_OFF, FAULT_COUNT, FAULT_NTH, FAULT_FROM, FAULT_EVERY };

/* Sets the rule for one kind of call; its counters start again at 0. */
void fault_set(enum fault_kind kind, enum fault_mode mode, unsigned long n);
/* No rules, counters at 0. */
void fault_reset(void);
/* Calls of that kind since its rule was set (not counted while FAULT_OFF),
 * and how many of them were made to fail. */
unsigned long fault_calls(enum fault_kind kind);
unsigned long fault_failures(enum fault_kind kind);

/*
 * A sweep: runs scenario() in a fresh forked child with the rule (kind,
 * mode, n) for n = first, first + step, ... until a run made no call fail
 * (every site was reached) or n passes max_n. The rule takes effect when the
 * scenario calls fault_begin() (after any set-up it does not want failed). Each child must return 0
 * within timeout_s seconds (times $DESYNC_TEST_TIMEOUT_SCALE); in the
 * AddressSanitizer build LeakSanitizer checks it for leaks when it exits.
 * Returns 0, or 1 after printing the first n that crashed, hung, leaked or
 * failed a check. *runs (if not NULL) gets the number of runs.
 *
 * The caller must not have used the library (so no library thread exists
 * when it forks). The scenario must clean up everything it created.
 */
int fault_sweep(const char *name, int (*scenario)(void), enum fault_kind kind,
                enum fault_mode mode, unsigned long first, unsigned long step,
                unsigned long max_n, unsigned timeout_s, unsigned long *runs);

/* In a sweep's scenario: the sweep's rule starts now (no-op elsewhere). */
void fault_begin(void);
/* In a sweep's scenario: the rule it runs under (FAULT_OFF elsewhere). */
enum fault_mode fault_sweep_mode(unsigned long *n);

/* Runs fn() once in a forked child (same checks as one step of a sweep),
 * with no rule set: for tests that must start in a process where the
 * library was never used. 0 if it returned 0. */
int fault_in_child(const char *name, int (*fn)(void), unsigned timeout_s);

/* True when $DESYNC_TEST_FAULT_FULL is set (make check-faults): sweeps then
 * cover every site instead of a sample. */
int fault_full(void);

/*
 * A ledger of jobs, for "every job whose call returned success runs exactly
 * once". ledger_new() gives an id for a job about to be queued; after the
 * call, ledger_queued(id, rc == 0) records whether it was accepted; the job
 * calls ledger_ran(id). ledger_check() (once every job must have run)
 * prints and counts each id that ran a different number of times than
 * accepted (0 or 1). Ids fit in a pointer (LEDGER_ARG / LEDGER_ID).
 */
#define LEDGER_MAX 4096
int ledger_new(void);
void ledger_queued(int id, int accepted);
void ledger_ran(int id);
int ledger_ran_count(int id);
int ledger_check(const char *where);

#define LEDGER_ARG(id) ((void *)(intptr_t)(id))
#define LEDGER_ID(p) ((int)(intptr_t)(p))

#endif
