/*
 * sync, try_sync and desync: which thread runs a job and when, the order of
 * an object's jobs, and what one job's writes show to the next.
 * Every wait is bounded.
 */
#include <desync.h>

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "test.h"

/* ------------------------------------------------------- where jobs run */

TEST(core_sync_drains_no_threads) {
    desync_scheduler_t *s = desync_scheduler_new(0);
    CHECK(s);
    CHECK_EQ(desync_scheduler_max_threads(s), 0);
    static struct thread_log l;
    memset(&l, 0, sizeof l);
    desync_t *d = desync_new_on(s, &l, NULL);
    CHECK(d);
    for (int i = 0; i < 10; i++)
        CHECK_EQ(desync_desync(d, thread_log_job, (void *)(intptr_t)i), 0);
    /* No thread may run them in the background. */
    test_sleep_ms(50);
    CHECK_EQ(atomic_load(&l.ran), 0);
    CHECK_EQ(desync_scheduler_thread_count(s), 0);

    /* The sync runs everything queued before it, in order, on this thread. */
    CHECK_EQ(desync_sync(d, thread_log_job, (void *)(intptr_t)10), 0);
    CHECK_EQ(l.n, 11);
    for (int i = 0; i < 11; i++) {
        CHECK_EQ(l.order[i], i);
        CHECK(pthread_equal(l.threads[i], pthread_self()));
    }
    CHECK_EQ(desync_scheduler_thread_count(s), 0);
    desync_release(d);
    desync_scheduler_free(s);
    return 0;
}

TEST(core_sync_idle_runs_on_caller) {
    desync_scheduler_t *s0 = desync_scheduler_new(0);
    desync_scheduler_t *s2 = desync_scheduler_new(2);
    CHECK(s0 && s2);
    desync_scheduler_t *scheds[3] = {NULL, s0, s2};
    for (int k = 0; k < 3; k++) {
        int x = 0;
        desync_t *d = scheds[k] ? desync_new_on(scheds[k], &x, NULL) : desync_new(&x, NULL);
        CHECK(d);
        for (int i = 0; i < 100; i++) {
            pthread_t th = {0};
            CHECK_EQ(desync_sync(d, record_thread, &th), 0);
            CHECK(pthread_equal(th, pthread_self()));
        }
        desync_release(d);
    }
    desync_scheduler_free(s0);
    desync_scheduler_free(s2);
    return 0;
}

TEST(core_try_sync) {
    static struct tracked t;
    memset(&t, 0, sizeof t);
    desync_t *d = desync_new(&t, NULL);
    CHECK(d);

    /* Idle and empty: runs at once on this thread. */
    struct try_probe p = {0};
    CHECK_EQ(desync_try_sync(d, try_probe_job, &p), 0);
    CHECK_EQ(atomic_load(&p.ran), 1);
    CHECK(pthread_equal(p.thread, pthread_self()));

    /* After background work has finished (a sync proves it), idle again. */
    for (int i = 0; i < 10; i++)
        CHECK_EQ(desync_desync(d, tracked_job, NULL), 0);
    CHECK_EQ(desync_sync(d, noop_job, NULL), 0);
    struct try_probe p2 = {0};
    CHECK_EQ(desync_try_sync(d, try_probe_job, &p2), 0);
    CHECK_EQ(atomic_load(&p2.ran), 1);

    /* Busy: a running job makes try_sync fail without running its job. */
    static struct blocker b;
    memset(&b, 0, sizeof b);
    CHECK_EQ(desync_desync(d, blocker_job, &b), 0);
    CHECK(test_wait_flag(&b.started, 5000));
    struct try_probe p3 = {0};
    int rc = desync_try_sync(d, try_probe_job, &p3);
    CHECK_EQ(desync_desync(d, tracked_job, NULL), 0); /* a pending job as well */
    int rc2 = desync_try_sync(d, try_probe_job, &p3);
    atomic_store(&b.go, 1);
    CHECK_EQ(rc, DESYNC_EBUSY);
    CHECK_EQ(rc2, DESYNC_EBUSY);
    CHECK_EQ(desync_sync(d, noop_job, NULL), 0);
    CHECK_EQ(atomic_load(&p3.ran), 0); /* and it is never run later */
    CHECK_EQ(atomic_load(&b.finished), 1);

    /* Same through the queue API. */
    desync_queue_t *q = desync_get_queue(d);
    struct try_probe p4 = {0};
    CHECK_EQ(desync_queue_try_sync(q, try_probe_queue_job, &p4), 0);
    CHECK_EQ(atomic_load(&p4.ran), 1);
    desync_release(d);

    /* Pending jobs that no thread runs (0 threads) also make it busy. */
    desync_scheduler_t *s = desync_scheduler_new(0);
    CHECK(s);
    static struct tracked t0;
    memset(&t0, 0, sizeof t0);
    desync_t *d0 = desync_new_on(s, &t0, NULL);
    CHECK(d0);
    CHECK_EQ(desync_desync(d0, tracked_job, NULL), 0);
    struct try_probe p5 = {0};
    CHECK_EQ(desync_try_sync(d0, try_probe_job, &p5), DESYNC_EBUSY);
    CHECK_EQ(atomic_load(&p5.ran), 0);
    CHECK_EQ(desync_sync(d0, noop_job, NULL), 0);
    CHECK_EQ(t0.jobs, 1);
    CHECK_EQ(desync_try_sync(d0, try_probe_job, &p5), 0);
    CHECK_EQ(atomic_load(&p5.ran), 1);
    desync_release(d0);
    desync_scheduler_free(s);
    return 0;
}

/* -------------------------------------------------- when desync returns */

static void handshake_copy_job(void *data, void *arg) {
    handshake_job(data, *(struct handshake **)arg);
}

TEST(core_desync_returns_at_once) {
    desync_scheduler_t *s1 = desync_scheduler_new(1);
    CHECK(s1);
    desync_scheduler_t *scheds[2] = {NULL, s1};
    for (int k = 0; k < 2; k++) {
        int x = 0;
        desync_t *d = scheds[k] ? desync_new_on(scheds[k], &x, NULL) : desync_new(&x, NULL);
        CHECK(d);

        struct handshake h1 = {0}, h2 = {0}, h3 = {0};
        CHECK_EQ(desync_desync(d, handshake_job, &h1), 0);
        atomic_store(&h1.go, 1);
        struct handshake *hp = &h2;
        CHECK_EQ(desync_desync_copy(d, handshake_copy_job, &hp, sizeof hp), 0);
        atomic_store(&h2.go, 1);
        CHECK_EQ(desync_queue_desync(desync_get_queue(d), handshake_queue_job, &h3), 0);
        atomic_store(&h3.go, 1);

        CHECK_EQ(desync_sync(d, noop_job, NULL), 0);
        CHECK_EQ(atomic_load(&h1.done), 1);
        CHECK_EQ(atomic_load(&h1.saw_go), 1);
        CHECK_EQ(atomic_load(&h2.saw_go), 1);
        CHECK_EQ(atomic_load(&h3.saw_go), 1);
        desync_release(d);
    }
    desync_scheduler_free(s1);
    return 0;
}

struct event_log {
    char ev[32];
    int n;
};

struct self_ctx {
    desync_t *d;
    int n_at_end;
    int rc_b, rc_c;
};

static void log_event(void *data, void *arg) {
    struct event_log *l = data;
    if (l->n < 31)
        l->ev[l->n++] = (char)(intptr_t)arg;
}

static void outer_sync_job(void *data, void *arg) {
    struct self_ctx *c = arg;
    log_event(data, (void *)(intptr_t)'A');
    c->rc_b = desync_desync(c->d, log_event, (void *)(intptr_t)'B');
    c->rc_c = desync_desync(c->d, log_event, (void *)(intptr_t)'C');
    c->n_at_end = ((struct event_log *)data)->n; /* B and C must not have run yet */
}

TEST(core_desync_self_from_sync) {
    desync_scheduler_t *s0 = desync_scheduler_new(0);
    CHECK(s0);
    desync_scheduler_t *scheds[2] = {NULL, s0};
    for (int k = 0; k < 2; k++) {
        struct event_log l;
        memset(&l, 0, sizeof l);
        desync_t *d = scheds[k] ? desync_new_on(scheds[k], &l, NULL) : desync_new(&l, NULL);
        CHECK(d);
        struct self_ctx c = {d, -1, -1, -1};
        CHECK_EQ(desync_sync(d, outer_sync_job, &c), 0);
        CHECK_EQ(c.rc_b, 0);
        CHECK_EQ(c.rc_c, 0);
        CHECK_EQ(c.n_at_end, 1);
        CHECK_EQ(desync_sync(d, log_event, (void *)(intptr_t)'D'), 0);
        CHECK_EQ(l.n, 4);
        CHECK(memcmp(l.ev, "ABCD", 4) == 0);
        desync_release(d);
    }
    desync_scheduler_free(s0);
    return 0;
}

/* ---------------------------------------------------------------- order */

struct order_state {
    int next;
    int errors;
};

static void order_job(void *data, void *arg) {
    struct order_state *o = data;
    if ((int)(intptr_t)arg != o->next)
        o->errors++;
    o->next++;
}

TEST(core_order_many_jobs) {
    desync_scheduler_t *s0 = desync_scheduler_new(0);
    desync_scheduler_t *s2 = desync_scheduler_new(2);
    CHECK(s0 && s2);
    desync_scheduler_t *scheds[3] = {NULL, s0, s2};
    for (int k = 0; k < 3; k++) {
        struct order_state o = {0, 0};
        desync_t *d = scheds[k] ? desync_new_on(scheds[k], &o, NULL) : desync_new(&o, NULL);
        CHECK(d);
        int n = 0;
        for (int round = 0; round < 10; round++) {
            for (int i = 0; i < 1000; i++, n++)
                CHECK_EQ(desync_desync(d, order_job, (void *)(intptr_t)n), 0);
            /* A sync in between is just another job in the sequence. */
            CHECK_EQ(desync_sync(d, order_job, (void *)(intptr_t)n), 0);
            n++;
            struct order_state snap;
            CHECK_EQ(desync_sync(d, noop_job, NULL), 0);
            snap = o; /* safe: the queue is drained and this thread synced last */
            CHECK_EQ(snap.next, n);
            CHECK_EQ(snap.errors, 0);
        }
        desync_release(d);
    }
    desync_scheduler_free(s0);
    desync_scheduler_free(s2);
    return 0;
}

/* ---------------------------------------------------- memory visibility */

#define VIS_N 1024

struct vis {
    int vals[VIS_N];
    long gen;
    int errors;
};

static void vis_write(void *data, void *arg) {
    struct vis *v = data;
    long gen = (long)(intptr_t)arg;
    for (int i = 0; i < VIS_N; i++)
        v->vals[i] = (int)(gen * 1000 + i);
    v->gen = gen;
}

static void vis_verify(void *data, void *arg) {
    struct vis *v = data;
    long gen = (long)(intptr_t)arg;
    if (v->gen != gen)
        v->errors++;
    for (int i = 0; i < VIS_N; i++)
        if (v->vals[i] != (int)(gen * 1000 + i)) {
            v->errors++;
            break;
        }
}

/* Reads a buffer the caller filled (non-atomically) before queuing. */
static void vis_read_caller_buf(void *data, void *arg) {
    struct vis *v = data;
    int *buf = arg;
    for (int i = 0; i < VIS_N; i++)
        if (buf[i] != i * 3) {
            v->errors++;
            break;
        }
    buf[0] = -1; /* the caller must see this after its sync */
}

TEST(core_memory_visibility) {
    desync_scheduler_t *s2 = desync_scheduler_new(2);
    CHECK(s2);
    desync_scheduler_t *scheds[2] = {NULL, s2};
    int *buf = malloc(VIS_N * sizeof *buf);
    CHECK(buf);
    for (int k = 0; k < 2; k++) {
        struct vis *v = calloc(1, sizeof *v);
        CHECK(v);
        desync_t *d = scheds[k] ? desync_new_on(scheds[k], v, free) : desync_new(v, free);
        CHECK(d);
        for (long gen = 1; gen <= 200; gen++) {
            CHECK_EQ(desync_desync(d, vis_write, (void *)(intptr_t)gen), 0);
            CHECK_EQ(desync_desync(d, vis_verify, (void *)(intptr_t)gen), 0);
            if (gen % 10 == 0) {
                for (int i = 0; i < VIS_N; i++)
                    buf[i] = i * 3;
                CHECK_EQ(desync_desync(d, vis_read_caller_buf, buf), 0);
                struct vis snap;
                CHECK_EQ(desync_sync(d, noop_job, NULL), 0);
                CHECK_EQ(buf[0], -1);
                /* After a sync this thread may read the data directly. */
                memcpy(&snap, v, sizeof snap);
                CHECK_EQ(snap.errors, 0);
                CHECK_EQ(snap.gen, gen);
                for (int i = 0; i < VIS_N; i++)
                    CHECK_EQ(snap.vals[i], (int)(gen * 1000 + i));
            }
        }
        desync_release(d);
    }
    free(buf);
    desync_scheduler_free(s2);
    return 0;
}
