/*
 * Helpers shared by the fault sweeps (test_fault_sweep.c: objects, queues,
 * futures, schedulers, threads; test_fault_sweep_streams.c: channels,
 * streams, pipes). See test_fault_sweep.c for what a sweep checks.
 */
#ifndef DESYNC_TEST_FAULT_SWEEP_H
#define DESYNC_TEST_FAULT_SWEEP_H

#include "desync.h"
#include "fault.h"
#include "test.h"

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* make test: every SAMPLE_STEP-th n; make check-faults: every n. */
#define SAMPLE_STEP 7
#define MAX_N 1000
#define CHILD_TIMEOUT_S 20

/* ------------------------------------------------------------- helpers */

/* Set while this thread is inside a call that queues a job: a job that
 * runs while it is set ran inside the call that queued it. */
static _Thread_local int tl_in_call TEST_UNUSED;

static inline void ledger_job(void *data, void *arg) {
    (void)data;
    if (tl_in_call)
        FAILF("job %d ran inside the call that queued it\n", LEDGER_ID(arg));
    ledger_ran(LEDGER_ID(arg));
}

static inline void ledger_queue_job(void *arg) { ledger_job(NULL, arg); }

/* Checks that a call returned 0 or one of the listed errors. */
#define CHECK_RC(rc, ...)                                                                 \
    do {                                                                                  \
        int check_rc_ = (rc), check_ok_[] = {0, __VA_ARGS__};                             \
        bool check_found_ = false;                                                        \
        for (size_t i_ = 0; i_ < sizeof check_ok_ / sizeof check_ok_[0]; i_++)            \
            check_found_ |= check_rc_ == check_ok_[i_];                                   \
        if (!check_found_) {                                                              \
            fprintf(stderr, "%s:%d: %s returned %d (%s)\n", __FILE__, __LINE__, #rc,     \
                    check_rc_, desync_strerror(check_rc_));                               \
            return 1;                                                                     \
        }                                                                                 \
    } while (0)

/* desync_desync of a ledger job; returns the call's result. */
static inline int q_desync(desync_t *d) {
    int id = ledger_new();
    tl_in_call = 1;
    int rc = desync_desync(d, ledger_job, LEDGER_ARG(id));
    tl_in_call = 0;
    ledger_queued(id, rc == 0);
    return rc;
}

static inline int q_queue_desync(desync_queue_t *q) {
    int id = ledger_new();
    tl_in_call = 1;
    int rc = desync_queue_desync(q, ledger_queue_job, LEDGER_ARG(id));
    tl_in_call = 0;
    ledger_queued(id, rc == 0);
    return rc;
}

/* A copied argument: the job checks that it got the bytes. */
struct big_arg {
    int id;
    unsigned char fill[100];
};

static inline int big_arg_ok(const struct big_arg *a) {
    for (size_t i = 0; i < sizeof a->fill; i++)
        if (a->fill[i] != (unsigned char)(a->id + i))
            return 0;
    return 1;
}

static inline void big_job(void *data, void *arg) {
    (void)data;
    const struct big_arg *a = arg;
    if (!big_arg_ok(a))
        FAILF("job %d: copied argument corrupt\n", a->id);
    ledger_job(NULL, LEDGER_ARG(a->id));
}

static inline void big_queue_job(void *arg) { big_job(NULL, arg); }

struct small_arg {
    int id;
    int check;
};

static inline void small_job(void *data, void *arg) {
    (void)data;
    const struct small_arg *a = arg;
    if (a->check != ~a->id)
        FAILF("job %d: copied argument corrupt\n", a->id);
    ledger_job(NULL, LEDGER_ARG(a->id));
}

/* desync_desync_copy with `len` bytes: 8 (inline in the job) or more. */
static inline int q_desync_copy(desync_t *d, bool big) {
    int id = ledger_new(), rc;
    tl_in_call = 1;
    if (big) {
        struct big_arg a = {.id = id};
        for (size_t i = 0; i < sizeof a.fill; i++)
            a.fill[i] = (unsigned char)(id + i);
        rc = desync_desync_copy(d, big_job, &a, sizeof a);
    } else {
        struct small_arg a = {id, ~id};
        rc = desync_desync_copy(d, small_job, &a, sizeof a);
    }
    tl_in_call = 0;
    ledger_queued(id, rc == 0);
    return rc;
}

static atomic_int g_destroyed TEST_UNUSED;

static inline void count_destroy(void *data) {
    (void)data;
    atomic_fetch_add(&g_destroyed, 1);
}

static inline void release_arg_job(void *data, void *arg) {
    (void)data;
    desync_release(arg); /* the object's own job: does not block */
}

/* A worker of the default scheduler is alive after this (set-up done
 * before the faults start, for scenarios whose background work needs a
 * thread: a sync does not drive every path, e.g. a pipe's reader). */
static inline int warm_default_worker(void) {
    desync_t *d = desync_new(NULL, NULL);
    if (!d)
        return 0;
    atomic_int ran = 0;
    if (desync_desync(d, set_flag_job, &ran) != 0)
        return 0;
    int ok = test_wait_flag(&ran, LONG_MS);
    desync_release(d);
    return ok && desync_scheduler_thread_count(desync_scheduler_default()) > 0;
}

static inline int finish(const char *where) {
    int bad = ledger_check(where);
    if (atomic_load(&g_errors))
        return 1;
    return bad ? 1 : 0;
}

/* Heap items, counted while alive: at the end of a scenario every item was
 * delivered and freed, or freed by the library's item_free, exactly once
 * (ASan catches a second free, g_live a missing one). */
static atomic_int g_live TEST_UNUSED;

static inline void *item_new(int v) {
    atomic_fetch_add(&g_live, 1);
    return heap_item(v);
}

static inline void item_del(void *item) {
    if (!item)
        return;
    atomic_fetch_sub(&g_live, 1);
    free(item);
}

static inline int no_live_items(void *unused) {
    (void)unused;
    return atomic_load(&g_live) == 0;
}

static inline void wake_count(void *ctx) { atomic_fetch_add((atomic_int *)ctx, 1); }

/* --------------------------------------------------------------- sweeps */

static inline int sweep(const char *name, int (*sc)(void), enum fault_kind kind,
                        enum fault_mode mode) {
    unsigned long step = fault_full() ? 1 : SAMPLE_STEP;
    return fault_sweep(name, sc, kind, mode, 1, step, MAX_N, CHILD_TIMEOUT_S, NULL);
}

static inline int sweep_alloc(const char *name, int (*sc)(void)) {
    if (sweep(name, sc, FAULT_ALLOC, FAULT_NTH))
        return 1;
    return sweep(name, sc, FAULT_ALLOC, FAULT_FROM);
}

#endif
