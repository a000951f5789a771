/*
 * Deadlock cycles across threads: a job on A syncs (or waits for a future
 * of) B while B's running job waits for A, over two, three and many threads.
 * At least one of the waits returns DESYNC_EDEADLK without queueing its job,
 * and every thread finishes. Chains without a cycle never get an error, also
 * under stress. Before the wait-for graph these tests hung (timeout).
 */
#include <desync.h>

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "test.h"

#define MAXT 16

/* A ring of n threads: thread i holds object i (it is inside a sync job of
 * it) and, once every thread holds its own, syncs (or waits for a future
 * of) object i+1. */
typedef struct ring {
    int n;
    bool use_future;
    desync_t *obj[MAXT];
    atomic_int holding;
    atomic_int edeadlk, ok, inner_runs, other_err;
} ring;

typedef struct ring_arg {
    ring *r;
    int i;
} ring_arg;

static void inner_job(void *data, void *arg) {
    (void)data;
    atomic_fetch_add(&((ring *)arg)->inner_runs, 1);
}

static desync_future_t *inner_async(void *data, void *arg) {
    inner_job(data, arg);
    return NULL;
}

static void outer_job(void *data, void *arg) {
    (void)data;
    ring_arg *a = arg;
    ring *r = a->r;
    atomic_fetch_add(&r->holding, 1);
    /* Every thread is inside its own object's job before anyone goes on. */
    if (!test_wait_count(&r->holding, r->n, LONG_MS)) {
        atomic_fetch_add(&r->other_err, 1);
        return;
    }
    desync_t *next = r->obj[(a->i + 1) % r->n];
    int rc;
    if (r->use_future) {
        desync_future_t *f = desync_future_desync(next, inner_async, r);
        if (!f) {
            atomic_fetch_add(&r->other_err, 1);
            return;
        }
        rc = desync_future_wait(f, NULL);
        if (rc == DESYNC_EDEADLK) {
            /* The future's job stays queued: it runs once the cycle is
             * broken (the wait refused, the job was queued by
             * future_desync). Drop the handle. */
            desync_future_detach(f);
        } else {
            desync_future_free(f);
        }
    } else {
        rc = desync_sync(next, inner_job, r);
    }
    if (rc == DESYNC_EDEADLK)
        atomic_fetch_add(&r->edeadlk, 1);
    else if (rc == 0)
        atomic_fetch_add(&r->ok, 1);
    else
        atomic_fetch_add(&r->other_err, 1);
}

static void *ring_thread(void *p) {
    ring_arg *a = p;
    desync_sync(a->r->obj[a->i], outer_job, a);
    return NULL;
}

static int run_ring(int n, bool use_future) {
    ring r = {.n = n, .use_future = use_future};
    for (int i = 0; i < n; i++)
        CHECK((r.obj[i] = desync_new(NULL, NULL)));
    pthread_t th[MAXT];
    ring_arg args[MAXT];
    for (int i = 0; i < n; i++) {
        args[i] = (ring_arg){&r, i};
        CHECK_EQ(pthread_create(&th[i], NULL, ring_thread, &args[i]), 0);
    }
    test_join_threads(th, n);
    for (int i = 0; i < n; i++)
        desync_release(r.obj[i]); /* waits for the future jobs left queued */
    CHECK_EQ(atomic_load(&r.other_err), 0);
    CHECK(atomic_load(&r.edeadlk) >= 1);
    CHECK_EQ(atomic_load(&r.edeadlk) + atomic_load(&r.ok), n);
    /* A refused sync queued nothing; a refused future wait left its job
     * queued, and it ran after the cycle broke. */
    if (use_future)
        CHECK_EQ(atomic_load(&r.inner_runs), n);
    else
        CHECK_EQ(atomic_load(&r.inner_runs), atomic_load(&r.ok));
    return 0;
}

TEST(deadlock_cycle_two_threads_sync) {
    for (int round = 0; round < 20; round++)
        CHECK_EQ(run_ring(2, false), 0);
    return 0;
}

TEST(deadlock_cycle_three_threads_sync) {
    for (int round = 0; round < 10; round++)
        CHECK_EQ(run_ring(3, false), 0);
    return 0;
}

TEST(deadlock_cycle_long_sync) {
    CHECK_EQ(run_ring(MAXT, false), 0);
    CHECK_EQ(run_ring(11, false), 0);
    return 0;
}

TEST(deadlock_cycle_futures) {
    for (int round = 0; round < 10; round++)
        CHECK_EQ(run_ring(2, true), 0);
    CHECK_EQ(run_ring(5, true), 0);
    return 0;
}

/* A future cycle where a pool worker, not a user thread, runs B's job:
 * a job on A (a worker of the default scheduler) waits for a future of B,
 * whose running job (another worker) waits for a future of A. */
typedef struct cross {
    desync_t *a, *b;
    atomic_int in_a, in_b, edeadlk, ok, done;
} cross;

static desync_future_t *noop_async(void *data, void *arg) {
    (void)data;
    (void)arg;
    return NULL;
}

static void wait_other(cross *c, atomic_int *mine, atomic_int *theirs, desync_t *other) {
    atomic_store(mine, 1);
    test_wait_flag(theirs, LONG_MS);
    desync_future_t *f = desync_future_desync(other, noop_async, NULL);
    int rc = f ? desync_future_wait(f, NULL) : DESYNC_ENOMEM;
    if (rc == DESYNC_EDEADLK)
        desync_future_detach(f);
    else
        desync_future_free(f);
    atomic_fetch_add(rc == DESYNC_EDEADLK ? &c->edeadlk : &c->ok, rc == 0 || rc == DESYNC_EDEADLK);
    atomic_fetch_add(&c->done, 1);
}

static void job_on_a(void *data, void *arg) {
    (void)data;
    cross *c = arg;
    wait_other(c, &c->in_a, &c->in_b, c->b);
}

static void job_on_b(void *data, void *arg) {
    (void)data;
    cross *c = arg;
    wait_other(c, &c->in_b, &c->in_a, c->a);
}

TEST(deadlock_cycle_futures_on_workers) {
    for (int round = 0; round < 10; round++) {
        cross c = {0};
        c.a = desync_new(NULL, NULL);
        c.b = desync_new(NULL, NULL);
        CHECK(c.a && c.b);
        CHECK_EQ(desync_desync(c.a, job_on_a, &c), 0);
        CHECK_EQ(desync_desync(c.b, job_on_b, &c), 0);
        if (!test_wait_count(&c.done, 2, LONG_MS)) {
            fprintf(stderr, "round %d: in_a %d in_b %d edeadlk %d ok %d\n", round,
                    atomic_load(&c.in_a), atomic_load(&c.in_b), atomic_load(&c.edeadlk),
                    atomic_load(&c.ok));
            return 1;
        }
        CHECK(atomic_load(&c.edeadlk) >= 1);
        CHECK_EQ(atomic_load(&c.edeadlk) + atomic_load(&c.ok), 2);
        desync_release(c.a);
        desync_release(c.b);
    }
    return 0;
}

/* ----------------------------------------------------- no false positives */

/* Threads form and dissolve chains over objects, always syncing from a
 * lower to a higher index inside jobs: chains, never cycles. No call may
 * return an error. */
#define CHAIN_OBJS 6
#define CHAIN_THREADS 8

typedef struct chains {
    desync_t *obj[CHAIN_OBJS];
    atomic_int errors, stop;
    atomic_long syncs;
} chains;

typedef struct chain_step {
    chains *c;
    int at;
    uint32_t rnd;
} chain_step;

static void chain_step_job(void *data, void *arg) {
    (void)data;
    chain_step *s = arg;
    atomic_fetch_add(&s->c->syncs, 1);
    if (test_rnd(&s->rnd) % 3 == 0)
        test_spin_ns(2000); /* hold the object a little: others block on it */
    int span = CHAIN_OBJS - 1 - s->at;
    if (span <= 0 || test_rnd(&s->rnd) % 4 == 0)
        return;
    int prev = s->at;
    s->at += 1 + (int)(test_rnd(&s->rnd) % (uint32_t)span);
    int rc = desync_sync(s->c->obj[s->at], chain_step_job, s);
    if (rc != 0) {
        fprintf(stderr, "nested sync %d -> %d: %s\n", prev, s->at, desync_strerror(rc));
        atomic_fetch_add(&s->c->errors, 1);
    }
    s->at = prev;
}

static void *chain_thread(void *p) {
    chain_step s = {p, 0, (uint32_t)(uintptr_t)&s | 1u};
    chains *c = p;
    while (!atomic_load(&c->stop)) {
        s.at = (int)(test_rnd(&s.rnd) % CHAIN_OBJS);
        if (desync_sync(c->obj[s.at], chain_step_job, &s) != 0)
            atomic_fetch_add(&c->errors, 1);
    }
    return NULL;
}

TEST(deadlock_no_false_positive_stress) {
    chains c = {0};
    for (int i = 0; i < CHAIN_OBJS; i++)
        CHECK((c.obj[i] = desync_new(NULL, NULL)));
    pthread_t th[CHAIN_THREADS];
    for (int i = 0; i < CHAIN_THREADS; i++)
        CHECK_EQ(pthread_create(&th[i], NULL, chain_thread, &c), 0);
    uint64_t end = test_now_ns() + 3 * SEC;
    while (test_now_ns() < end && atomic_load(&c.errors) == 0)
        test_sleep_ms(10);
    atomic_store(&c.stop, 1);
    test_join_threads(th, CHAIN_THREADS);
    for (int i = 0; i < CHAIN_OBJS; i++)
        desync_release(c.obj[i]);
    CHECK_EQ(atomic_load(&c.errors), 0);
    CHECK(atomic_load(&c.syncs) > 1000);
    return 0;
}
