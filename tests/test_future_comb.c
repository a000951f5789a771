/*
 * Future combinators: desync_future_all / desync_future_any. Results and
 * their order, bad input, inputs completed concurrently with creation and
 * with an early free of the combined future, future_sync inputs run by the
 * waiter of the combined future, combinators of combinators. Waits are
 * bounded (LONG_NS); nothing asserts on timing.
 */
#include <desync.h>

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <string.h>

#include "test_future.h"

#define NP 4

static int make_promises(desync_promise_t *p[], desync_future_t *f[], int n) {
    for (int i = 0; i < n; i++) {
        p[i] = desync_promise_new(&f[i]);
        if (!p[i])
            return 0;
    }
    return 1;
}

static void free_all(desync_future_t *f[], int n) {
    for (int i = 0; i < n; i++)
        desync_future_free(f[i]);
}

/* A future whose status is DESYNC_EOF: the next item of an empty stream. */
static desync_future_t *eof_future(void) {
    desync_stream_t *s = desync_stream_from_array(NULL, 0);
    desync_future_t *f = s ? desync_stream_next_future(s) : NULL;
    if (f && desync_future_wait_for(f, LONG_NS, NULL) != DESYNC_EOF) {
        desync_future_free(f);
        f = NULL;
    }
    desync_stream_free(s);
    return f;
}

TEST(future_all_basic) {
    desync_promise_t *p[NP];
    desync_future_t *f[NP];
    CHECK(make_promises(p, f, NP));
    desync_future_t *all = desync_future_all(f, NP);
    CHECK(all);
    /* Completed in reverse order: pending until the last one. */
    for (int i = NP - 1; i > 0; i--) {
        CHECK_EQ(desync_promise_complete(p[i], IV(10 + i)), 0);
        CHECK_EQ(desync_future_poll(all, NULL, NULL), DESYNC_EAGAIN);
    }
    CHECK_EQ(desync_future_wait_for(all, 1000000, NULL), DESYNC_ETIMEDOUT);
    CHECK_EQ(desync_promise_complete(p[0], IV(10)), 0);
    void *v = IV(1);
    CHECK_EQ(desync_future_wait_for(all, LONG_NS, &v), 0);
    CHECK(v == NULL);
    desync_future_free(all);
    /* The inputs are still the caller's, with their values. */
    for (int i = 0; i < NP; i++) {
        CHECK_EQ(desync_future_wait_for(f[i], LONG_NS, &v), 0);
        CHECK_EQ(VI(v), 10 + i);
    }
    free_all(f, NP);
    return 0;
}

TEST(future_all_first_error_in_array_order) {
    /* [0] ok, [1] EOF (complete before), [2] cancelled (last): EOF. */
    desync_future_t *f[3];
    desync_promise_t *p0, *p2;
    CHECK((p0 = desync_promise_new(&f[0])));
    CHECK((f[1] = eof_future()));
    CHECK((p2 = desync_promise_new(&f[2])));
    desync_future_t *all = desync_future_all(f, 3);
    CHECK(all);
    CHECK_EQ(desync_promise_cancel(p2), 0);
    CHECK_EQ(desync_promise_complete(p0, IV(5)), 0);
    CHECK_EQ(desync_future_wait_for(all, LONG_NS, NULL), DESYNC_EOF);
    desync_future_free(all);
    free_all(f, 3);

    /* [0] cancelled last, [1] EOF: the cancel comes first in the array. */
    CHECK((p0 = desync_promise_new(&f[0])));
    CHECK((f[1] = eof_future()));
    all = desync_future_all(f, 2);
    CHECK(all);
    CHECK_EQ(desync_promise_cancel(p0), 0);
    CHECK_EQ(desync_future_wait_for(all, LONG_NS, NULL), DESYNC_ECANCELED);
    desync_future_free(all);
    free_all(f, 2);
    return 0;
}

TEST(future_any_basic) {
    desync_promise_t *p[NP];
    desync_future_t *f[NP];
    CHECK(make_promises(p, f, NP));
    desync_future_t *any = desync_future_any(f, NP);
    CHECK(any);
    CHECK_EQ(desync_future_poll(any, NULL, NULL), DESYNC_EAGAIN);
    CHECK_EQ(desync_promise_cancel(p[2]), 0);
    void *v = NULL;
    CHECK_EQ(desync_future_wait_for(any, LONG_NS, &v), 0);
    CHECK_EQ(U(v), 2u);
    /* The winner's own result is read from the input. */
    CHECK_EQ(desync_future_wait_for(f[2], LONG_NS, NULL), DESYNC_ECANCELED);
    /* Later completions change nothing. */
    CHECK_EQ(desync_promise_complete(p[0], IV(1)), 0);
    CHECK_EQ(desync_future_wait_for(any, LONG_NS, &v), 0);
    CHECK_EQ(U(v), 2u);
    desync_future_free(any);
    CHECK_EQ(desync_promise_complete(p[1], IV(2)), 0);
    CHECK_EQ(desync_future_wait_for(f[0], LONG_NS, &v), 0);
    CHECK_EQ(VI(v), 1);
    free_all(f, NP);
    /* p[3] is completed after its future was freed: the promise keeps it. */
    CHECK_EQ(desync_promise_complete(p[3], IV(3)), 0);
    return 0;
}

TEST(future_any_complete_at_creation_lowest_index) {
    desync_future_t *f[4];
    desync_promise_t *p0 = desync_promise_new(&f[0]);
    CHECK(p0);
    CHECK((f[1] = desync_future_ready(IV(11))));
    CHECK((f[2] = desync_future_ready(IV(12))));
    desync_promise_t *p3 = desync_promise_new(&f[3]);
    CHECK(p3);
    desync_future_t *any = desync_future_any(f, 4);
    CHECK(any);
    void *v = NULL;
    CHECK_EQ(desync_future_poll(any, &v, NULL), 0);
    CHECK_EQ(U(v), 1u);
    /* all over complete inputs is complete at once. */
    desync_future_t *all = desync_future_all(f + 1, 2);
    CHECK(all);
    CHECK_EQ(desync_future_poll(all, NULL, NULL), 0);
    desync_future_free(all);
    desync_future_free(any);
    desync_promise_complete(p0, NULL);
    desync_promise_cancel(p3);
    free_all(f, 4);
    return 0;
}

TEST(future_comb_bad_input) {
    desync_future_t *f[2] = {NULL, NULL};
    CHECK(desync_future_all(NULL, 1) == NULL);
    CHECK(desync_future_any(NULL, 1) == NULL);
    CHECK((f[0] = desync_future_ready(NULL)));
    CHECK(desync_future_all(f, 0) == NULL);
    CHECK(desync_future_any(f, 0) == NULL);
    CHECK(desync_future_all(f, 2) == NULL); /* f[1] is NULL */
    CHECK(desync_future_any(f, 2) == NULL);
    f[1] = f[0]; /* the same input twice */
    desync_future_t *all = desync_future_all(f, 2);
    CHECK(all);
    CHECK_EQ(desync_future_wait_for(all, LONG_NS, NULL), 0);
    desync_future_free(all);
    desync_future_free(f[0]);
    return 0;
}

TEST(future_comb_free_early) {
    desync_promise_t *p[NP];
    desync_future_t *f[NP];
    CHECK(make_promises(p, f, NP));
    desync_future_t *all = desync_future_all(f, NP);
    desync_future_t *any = desync_future_any(f, NP);
    CHECK(all && any);
    desync_future_free(all);
    desync_future_free(any);
    /* Inputs go on as if no combinator existed. */
    for (int i = 0; i < NP; i++)
        CHECK_EQ(desync_promise_complete(p[i], IV(i)), 0);
    void *v;
    for (int i = 0; i < NP; i++) {
        CHECK_EQ(desync_future_wait_for(f[i], LONG_NS, &v), 0);
        CHECK_EQ(VI(v), i);
    }
    free_all(f, NP);
    return 0;
}

TEST(future_comb_timeout_then_complete) {
    desync_promise_t *p[2];
    desync_future_t *f[2];
    CHECK(make_promises(p, f, 2));
    desync_future_t *all = desync_future_all(f, 2);
    desync_future_t *any = desync_future_any(f, 2);
    CHECK(all && any);
    CHECK_EQ(desync_future_wait_for(any, 1000000, NULL), DESYNC_ETIMEDOUT);
    CHECK_EQ(desync_future_wait_for(all, 1000000, NULL), DESYNC_ETIMEDOUT);
    struct completer c;
    CHECK(completer_start(&c, p[1], IV(7), 20, 0));
    void *v = NULL;
    CHECK_EQ(desync_future_wait_for(any, LONG_NS, &v), 0);
    CHECK_EQ(U(v), 1u);
    completer_join(&c);
    CHECK_EQ(desync_future_wait_for(all, 1000000, NULL), DESYNC_ETIMEDOUT);
    CHECK(completer_start(&c, p[0], IV(8), 20, 0));
    CHECK_EQ(desync_future_wait_for(all, LONG_NS, NULL), 0);
    completer_join(&c);
    desync_future_free(all);
    desync_future_free(any);
    free_all(f, 2);
    return 0;
}

/* then on a combined future: called once, on the completing thread. */
static void record_then(int status, void *value, void *arg) {
    struct after_seen *s = arg;
    s->status = status;
    s->value = value;
}

TEST(future_comb_then_and_nested) {
    desync_promise_t *p[3];
    desync_future_t *f[3];
    CHECK(make_promises(p, f, 3));
    desync_future_t *any = desync_future_any(f, 2);
    CHECK(any);
    desync_future_t *outer_in[2] = {any, f[2]};
    desync_future_t *all = desync_future_all(outer_in, 2); /* all(any(f0, f1), f2) */
    CHECK(all);
    struct after_seen s = {1, IV(1)};
    CHECK_EQ(desync_future_then(all, record_then, &s), 0);
    CHECK_EQ(desync_promise_complete(p[2], NULL), 0);
    CHECK_EQ(s.status, 1); /* any still pending */
    CHECK_EQ(desync_promise_complete(p[1], NULL), 0);
    CHECK_EQ(s.status, 0);
    CHECK(s.value == NULL);
    void *v = NULL;
    CHECK_EQ(desync_future_wait_for(any, LONG_NS, &v), 0);
    CHECK_EQ(U(v), 1u);
    desync_future_free(any); /* after the outer one completed */
    CHECK_EQ(desync_promise_complete(p[0], NULL), 0);
    free_all(f, 3);
    return 0;
}

/* future_sync inputs run on the thread that waits on the combined future,
 * also when their queue reaches them only after the wait has started. */
TEST(future_comb_sync_inputs_run_by_waiter) {
    int va = 1, vb = 2;
    desync_t *a = desync_new(&va, NULL), *b = desync_new(&vb, NULL);
    CHECK(a && b);
    for (int kind = 0; kind < 2; kind++) {
        struct sync_probe pa = {0}, pb = {0};
        /* b's job comes after a slow job: its token parks later. */
        CHECK_EQ(desync_desync(b, sleep_set_42, NULL), 0);
        desync_future_t *f[2];
        CHECK((f[0] = desync_future_sync(a, probe_ready_int, &pa)));
        CHECK((f[1] = desync_future_sync(b, probe_ready_int, &pb)));
        desync_future_t *c = kind ? desync_future_any(f + 1, 1) : desync_future_all(f, 2);
        CHECK(c);
        void *v = IV(9);
        CHECK_EQ(desync_future_wait_for(c, LONG_NS, &v), 0);
        CHECK_EQ(U(v), 0u); /* all: NULL; any over f[1] alone: index 0 */
        CHECK_EQ(atomic_load(&pb.ran), 1);
        CHECK(pthread_equal(pb.thread, pthread_self()));
        if (!kind) {
            CHECK_EQ(atomic_load(&pa.ran), 1);
            CHECK(pthread_equal(pa.thread, pthread_self()));
        }
        CHECK_EQ(desync_future_wait_for(f[1], LONG_NS, &v), 0);
        CHECK_EQ(VI(v), 42);
        desync_future_free(c);
        free_all(f, 2); /* kind 1: a's job never started: cancelled */
        vb = 2;
    }
    desync_release(a);
    desync_release(b);
    return 0;
}

/* The same on a scheduler with no threads: the waiter runs the queues. */
TEST(future_comb_inputs_no_threads) {
    desync_scheduler_t *s = desync_scheduler_new(0);
    CHECK(s);
    int va = 1, vb = 2;
    desync_t *a = desync_new_on(s, &va, NULL), *b = desync_new_on(s, &vb, NULL);
    CHECK(a && b);
    desync_future_t *f[2];
    CHECK((f[0] = desync_future_desync(a, ready_int, NULL)));
    CHECK((f[1] = desync_future_sync(b, ready_int, NULL)));
    desync_future_t *all = desync_future_all(f, 2);
    CHECK(all);
    CHECK_EQ(desync_future_wait_for(all, LONG_NS, NULL), 0);
    desync_future_free(all);
    free_all(f, 2);
    CHECK((f[0] = desync_future_desync(a, ready_int, NULL)));
    desync_future_t *any = desync_future_any(f, 1);
    CHECK(any);
    void *v = IV(5);
    CHECK_EQ(desync_future_wait_for(any, LONG_NS, &v), 0);
    CHECK_EQ(U(v), 0u);
    desync_future_free(any);
    desync_future_free(f[0]);
    desync_release(a);
    desync_release(b);
    desync_scheduler_free(s);
    return 0;
}

/* No threads, and the input's queue becomes ready only after the wait on
 * any has started (a sync on another thread holds it): the waiter still
 * runs it. Also a long backlog before the input's job. */
struct sync_holder {
    desync_t *d;
    atomic_int started, go;
};

static void hold_until_go(void *data, void *arg) {
    (void)data;
    struct sync_holder *h = arg;
    atomic_store(&h->started, 1);
    test_wait_flag(&h->go, LONG_MS);
}

static void *holder_main(void *arg) {
    struct sync_holder *h = arg;
    desync_sync(h->d, hold_until_go, h);
    return NULL;
}

static void *open_gate_later(void *arg) {
    test_sleep_ms(20);
    atomic_store(&((struct sync_holder *)arg)->go, 1);
    return NULL;
}

TEST(future_any_no_threads_ready_later) {
    desync_scheduler_t *s = desync_scheduler_new(0);
    CHECK(s);
    int va = 7;
    desync_t *a = desync_new_on(s, &va, NULL);
    CHECK(a);
    for (int i = 0; i < 1000; i++)
        CHECK_EQ(desync_desync(a, noop_job, NULL), 0);
    desync_future_t *f[2];
    desync_promise_t *p = desync_promise_new(&f[1]);
    CHECK(p);
    CHECK((f[0] = desync_future_desync(a, ready_int, NULL)));
    desync_future_t *any = desync_future_any(f, 2);
    CHECK(any);
    void *v = IV(5);
    CHECK_EQ(desync_future_wait_for(any, LONG_NS, &v), 0);
    CHECK_EQ(U(v), 0u);
    desync_future_free(any);
    desync_future_free(f[0]);

    struct sync_holder h = {a, 0, 0};
    pthread_t th, gate;
    CHECK_EQ(pthread_create(&th, NULL, holder_main, &h), 0);
    CHECK(test_wait_flag(&h.started, LONG_MS));
    CHECK((f[0] = desync_future_desync(a, ready_int, NULL)));
    any = desync_future_any(f, 2);
    CHECK(any);
    CHECK_EQ(pthread_create(&gate, NULL, open_gate_later, &h), 0);
    CHECK_EQ(desync_future_wait_for(any, LONG_NS, &v), 0);
    CHECK_EQ(U(v), 0u);
    pthread_join(gate, NULL);
    pthread_join(th, NULL);
    desync_future_free(any);
    desync_future_free(f[0]);
    desync_promise_cancel(p);
    desync_future_free(f[1]);
    desync_release(a);
    desync_scheduler_free(s);
    return 0;
}

/* Polling an any-future over a future_sync input whose token parks later:
 * the waker is called, and the next poll runs the job. */
static void flag_then_sleep(void *data, void *arg) {
    atomic_store((atomic_int *)arg, 1);
    sleep_set_42(data, NULL);
}

TEST(future_comb_poll_drives_sync_input) {
    int vb = 0;
    desync_t *b = desync_new(&vb, NULL);
    CHECK(b);
    /* A pool thread runs b's slow job: the token parks in f after the
     * first poll of any has returned EAGAIN. */
    atomic_int started = 0;
    CHECK_EQ(desync_desync(b, flag_then_sleep, &started), 0);
    CHECK(test_wait_flag(&started, LONG_MS));
    struct sync_probe pb = {0};
    desync_future_t *f = desync_future_sync(b, probe_ready_int, &pb);
    CHECK(f);
    desync_future_t *any = desync_future_any(&f, 1);
    CHECK(any);
    struct wake_count wc = {0};
    desync_waker_t w = {count_wake, &wc};
    int rc = desync_future_poll(any, NULL, &w);
    uint64_t end = test_now_ns() + LONG_NS;
    while (rc == DESYNC_EAGAIN && test_now_ns() < end) {
        int seen = atomic_load(&wc.n);
        for (int k = 0; k < 2000 && atomic_load(&wc.n) == seen; k++)
            test_sleep_ms(1);
        rc = desync_future_poll(any, NULL, &w);
    }
    CHECK_EQ(rc, 0);
    CHECK(atomic_load(&wc.n) >= 1);
    CHECK_EQ(atomic_load(&pb.ran), 1);
    CHECK(pthread_equal(pb.thread, pthread_self()));
    desync_future_free(any);
    desync_future_free(f);
    desync_release(b);
    return 0;
}

/* Inside a job of d, waiting on all over a future of d's own queue could
 * never end. */
struct deadlock_probe {
    desync_t *d;
    int rc;
};

static void wait_all_of_own_queue(void *data, void *arg) {
    (void)data;
    struct deadlock_probe *dp = arg;
    desync_future_t *f = desync_future_desync(dp->d, ready_int, NULL);
    desync_future_t *all = f ? desync_future_all(&f, 1) : NULL;
    dp->rc = all ? desync_future_wait_for(all, LONG_NS, NULL) : -1;
    desync_future_free(all);
    desync_future_free(f);
}

TEST(future_all_edeadlk_in_own_queue) {
    int v = 0;
    desync_t *d = desync_new(&v, NULL);
    CHECK(d);
    struct deadlock_probe dp = {d, 1};
    CHECK_EQ(desync_sync(d, wait_all_of_own_queue, &dp), 0);
    CHECK_EQ(dp.rc, DESYNC_EDEADLK);
    desync_release(d);
    return 0;
}

/* Inside a job of d: an any-future whose pending inputs all belong to d's
 * queue could never complete (EDEADLK); with another input that may still
 * complete, it just waits. */
struct any_probe {
    desync_t *d;
    int rc_stuck, rc_other, rc_ready;
    uintptr_t ready_index;
};

static void wait_any_in_own_queue(void *data, void *arg) {
    (void)data;
    struct any_probe *ap = arg;
    desync_future_t *f[2];
    f[0] = desync_future_desync(ap->d, ready_int, NULL);
    desync_promise_t *p = desync_promise_new(&f[1]);
    if (!f[0] || !p)
        return;
    desync_future_t *any = desync_future_any(f, 1);
    ap->rc_stuck = any ? desync_future_wait_for(any, LONG_NS, NULL) : -1;
    desync_future_free(any);
    any = desync_future_any(f, 2);
    ap->rc_other = any ? desync_future_wait_for(any, 1000000, NULL) : -1;
    desync_future_free(any);
    desync_promise_complete(p, NULL);
    any = desync_future_any(f, 2);
    void *v = NULL;
    ap->rc_ready = any ? desync_future_wait_for(any, LONG_NS, &v) : -1;
    ap->ready_index = U(v);
    desync_future_free(any);
    desync_future_free(f[0]);
    desync_future_free(f[1]);
}

TEST(future_any_edeadlk_in_own_queue) {
    int v = 0;
    desync_t *d = desync_new(&v, NULL);
    CHECK(d);
    struct any_probe ap = {d, 1, 1, 1, 9};
    CHECK_EQ(desync_sync(d, wait_any_in_own_queue, &ap), 0);
    CHECK_EQ(ap.rc_stuck, DESYNC_EDEADLK);
    CHECK_EQ(ap.rc_other, DESYNC_ETIMEDOUT);
    CHECK_EQ(ap.rc_ready, 0);
    CHECK_EQ(ap.ready_index, 1u);
    desync_release(d);
    return 0;
}

/* Stress: inputs completed from pool threads while the combinators are
 * made, the combined future waited on or freed at once (early). */
static void complete_job(void *data, void *arg) {
    (void)data;
    desync_promise_complete(arg, arg);
}

TEST(future_comb_race_stress) {
    enum { NOBJ = 4, NIN = 6 };
    desync_t *o[NOBJ];
    int dummy[NOBJ];
    for (int i = 0; i < NOBJ; i++)
        CHECK((o[i] = desync_new(&dummy[i], NULL)));
    uint32_t rnd = 12345;
    int rounds = TEST_SCALED(4000);
    uint64_t start = test_now_ns();
    for (int r = 0; test_rounds_left(r, rounds, start); r++) {
        desync_promise_t *p[NIN];
        desync_future_t *f[NIN];
        bool mine[NIN];
        CHECK(make_promises(p, f, NIN));
        /* Most inputs are completed by jobs on pool threads, racing with
         * the creation below; the rest by this thread afterwards. */
        for (int i = 0; i < NIN; i++) {
            mine[i] = test_rnd(&rnd) % 4 == 0;
            if (!mine[i])
                CHECK_EQ(desync_desync(o[test_rnd(&rnd) % NOBJ], complete_job, p[i]), 0);
        }
        desync_future_t *all = desync_future_all(f, NIN);
        desync_future_t *any = desync_future_any(f, NIN);
        CHECK(all && any);
        unsigned how = test_rnd(&rnd) % 4;
        if (how & 1) { /* freed early, maybe while inputs complete */
            desync_future_free(all);
            all = NULL;
        }
        if (how & 2) {
            desync_future_free(any);
            any = NULL;
        }
        for (int i = 0; i < NIN; i++)
            if (mine[i])
                CHECK_EQ(desync_promise_complete(p[i], p[i]), 0);
        void *v = NULL;
        if (any) {
            CHECK_EQ(desync_future_wait_for(any, LONG_NS, &v), 0);
            CHECK(U(v) < NIN);
            CHECK_EQ(desync_future_poll(f[U(v)], NULL, NULL), 0); /* the winner is complete */
        }
        if (all) {
            v = IV(1);
            CHECK_EQ(desync_future_wait_for(all, LONG_NS, &v), 0);
            CHECK(v == NULL);
            for (int i = 0; i < NIN; i++) {
                CHECK_EQ(desync_future_poll(f[i], &v, NULL), 0);
                CHECK(v == p[i]);
            }
        }
        desync_future_free(all);
        desync_future_free(any);
        for (int i = 0; i < NIN; i++) {
            CHECK_EQ(desync_future_wait_for(f[i], LONG_NS, &v), 0);
            CHECK(v == p[i]);
            desync_future_free(f[i]);
        }
    }
    for (int i = 0; i < NOBJ; i++)
        desync_release(o[i]);
    return 0;
}

/* Stress: future_sync inputs on several objects, any/all waited on from
 * several threads at once, inputs freed after. */
struct comb_waiter {
    pthread_t th;
    desync_future_t *c;
    int rc;
};

static void *comb_waiter_main(void *arg) {
    struct comb_waiter *w = arg;
    w->rc = desync_future_wait_for(w->c, LONG_NS, NULL);
    return NULL;
}

TEST(future_comb_sync_inputs_many_waiters) {
    enum { NOBJ = 3, NW = 3 };
    desync_t *o[NOBJ];
    int val[NOBJ];
    for (int i = 0; i < NOBJ; i++) {
        val[i] = i;
        CHECK((o[i] = desync_new(&val[i], NULL)));
    }
    int rounds = TEST_SCALED(500);
    uint64_t start = test_now_ns();
    for (int r = 0; test_rounds_left(r, rounds, start); r++) {
        desync_future_t *f[NOBJ];
        for (int i = 0; i < NOBJ; i++)
            CHECK((f[i] = desync_future_sync(o[i], ready_int, NULL)));
        desync_future_t *c = r % 2 ? desync_future_any(f, NOBJ) : desync_future_all(f, NOBJ);
        CHECK(c);
        struct comb_waiter w[NW];
        for (int k = 0; k < NW; k++) {
            w[k].c = c;
            CHECK_EQ(pthread_create(&w[k].th, NULL, comb_waiter_main, &w[k]), 0);
        }
        for (int k = 0; k < NW; k++) {
            pthread_join(w[k].th, NULL);
            CHECK_EQ(w[k].rc, 0);
        }
        desync_future_free(c);
        for (int i = 0; i < NOBJ; i++) {
            void *v;
            /* A future_sync input not run for any is run now, or
             * cancelled by the free. */
            if (r % 2 == 0) {
                CHECK_EQ(desync_future_poll(f[i], &v, NULL), 0);
                CHECK_EQ(VI(v), i);
            }
            desync_future_free(f[i]);
        }
    }
    for (int i = 0; i < NOBJ; i++)
        desync_release(o[i]);
    return 0;
}
