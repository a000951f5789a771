/*
 * future_sync: the job runs on the thread that waits for (or polls) its
 * future, or on the queue once nobody can wait any more (detached, owned by
 * a queue); freed before it started, it never runs. Starts with the
 * future_sync forms of the Rust desync crate's "update data with a future".
 * See test_future.h for how waits are bounded.
 */
#include <desync.h>

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <string.h>

#include "test_future.h"

TEST(future_update_data_with_future_sync) {
    int val = 0;
    desync_t *d = desync_new(&val, NULL);
    CHECK(d);
    CHECK_EQ(desync_desync(d, sleep_set_42, NULL), 0);
    struct sync_probe p = {0};
    desync_future_t *f = desync_future_sync(d, probe_ready_int, &p);
    CHECK(f);
    void *v = NULL;
    CHECK_EQ(desync_future_wait_for(f, LONG_NS, &v), 0);
    CHECK_EQ(VI(v), 42);
    CHECK_EQ(atomic_load(&p.ran), 1);
    CHECK(pthread_equal(p.thread, pthread_self()));
    desync_future_free(f);
    desync_release(d);
    return 0;
}

TEST(future_update_data_with_future_sync_1000) {
    int n = TEST_SCALED(1000);
    for (int i = 0; i < n; i++) {
        int val = 0;
        desync_t *d = desync_new(&val, NULL);
        CHECK(d);
        CHECK_EQ(desync_desync(d, set_int, IV(42)), 0);
        CHECK_EQ(desync_desync(d, set_int, IV(43)), 0);
        struct sync_probe p = {0};
        desync_future_t *f = desync_future_sync(d, probe_ready_int, &p);
        CHECK(f);
        void *v = NULL;
        CHECK_EQ(desync_future_wait_for(f, LONG_NS, &v), 0);
        CHECK_EQ(VI(v), 43);
        CHECK_EQ(atomic_load(&p.ran), 1);
        CHECK(pthread_equal(p.thread, pthread_self()));
        desync_future_free(f);
        desync_release(d);
    }
    return 0;
}

TEST(future_sync_freed_before_start) {
    int val = 0;
    desync_t *d = desync_new(&val, NULL);
    CHECK(d);

    /* Freed while the queue is busy before it. */
    struct blocker bl = {0};
    CHECK_EQ(desync_desync(d, blocker_job, &bl), 0);
    atomic_int ran = 0, later = 0;
    desync_future_t *f = desync_future_sync(d, set_flag_async, &ran);
    CHECK(f);
    desync_future_free(f);
    CHECK_EQ(desync_desync(d, set_flag_job, &later), 0);
    atomic_store(&bl.go, 1);
    CHECK(test_wait_flag(&later, LONG_MS));
    CHECK_EQ(desync_sync(d, noop_job, NULL), 0);
    CHECK_EQ(atomic_load(&ran), 0);

    /* Freed after the queue has reached it (it then waits for a waiter). */
    atomic_int ran2 = 0, later2 = 0;
    f = desync_future_sync(d, set_flag_async, &ran2);
    CHECK(f);
    test_sleep_ms(SHORT_MS);
    CHECK_EQ(atomic_load(&ran2), 0); /* nobody waits: not run */
    CHECK_EQ(desync_desync(d, set_flag_job, &later2), 0);
    desync_future_free(f);
    CHECK(test_wait_flag(&later2, LONG_MS));
    CHECK_EQ(atomic_load(&ran2), 0);

    /* On a 0-thread scheduler, a sync behind it still completes. */
    desync_scheduler_t *s = desync_scheduler_new(0);
    CHECK(s);
    int val0 = 0;
    desync_t *d0 = desync_new_on(s, &val0, NULL);
    CHECK(d0);
    atomic_int ran3 = 0;
    f = desync_future_sync(d0, set_flag_async, &ran3);
    CHECK(f);
    CHECK_EQ(desync_desync(d0, set_int, IV(5)), 0);
    desync_future_free(f);
    int out = -1;
    CHECK_EQ(desync_sync(d0, get_int, &out), 0);
    CHECK_EQ(out, 5);
    CHECK_EQ(atomic_load(&ran3), 0);
    desync_release(d0);
    desync_scheduler_free(s);
    desync_release(d);
    return 0;
}

struct other_waiter {
    desync_t *d;
    struct sync_probe pr;
    int rc;
    int value;
};

static void *other_waiter_main(void *arg) {
    struct other_waiter *ow = arg;
    desync_future_t *f = desync_future_sync(ow->d, probe_ready_int, &ow->pr);
    void *v = NULL;
    ow->rc = f ? desync_future_wait_for(f, LONG_NS, &v) : 99;
    ow->value = VI(v);
    desync_future_free(f);
    return NULL;
}

TEST(future_sync_runs_on_waiting_thread) {
    int val = 1;
    desync_t *d = desync_new(&val, NULL);
    CHECK(d);
    for (int i = 0; i < 3; i++) {
        struct blocker bl = {0};
        if (i == 1) { /* the queue busy on a worker thread first */
            CHECK_EQ(desync_desync(d, blocker_job, &bl), 0);
            CHECK(test_wait_flag(&bl.started, LONG_MS));
        }
        struct sync_probe pr = {0};
        desync_future_t *f = desync_future_sync(d, probe_ready_int, &pr);
        CHECK(f);
        if (i == 1)
            atomic_store(&bl.go, 1);
        if (i == 2) /* the queue reaches it before anyone waits */
            test_sleep_ms(SHORT_MS);
        void *v = NULL;
        CHECK_EQ(desync_future_wait_for(f, LONG_NS, &v), 0);
        CHECK_EQ(VI(v), 1);
        CHECK_EQ(atomic_load(&pr.ran), 1);
        CHECK(pthread_equal(pr.thread, pthread_self()));
        desync_future_free(f);
    }
    /* Waited on from another thread: runs on that thread. */
    struct other_waiter ow = {d, {0}, -1, 0};
    pthread_t th;
    CHECK(pthread_create(&th, NULL, other_waiter_main, &ow) == 0);
    pthread_join(th, NULL);
    CHECK_EQ(ow.rc, 0);
    CHECK_EQ(atomic_load(&ow.pr.ran), 1);
    CHECK(pthread_equal(ow.pr.thread, th));
    desync_release(d);
    return 0;
}

static atomic_int g_in_poll;

struct poll_probe {
    atomic_int ran;
    int in_poll;
    pthread_t thread;
    desync_promise_t *p; /* if wanted: the job returns a pending promise */
    int want_pending;
};

static desync_future_t *poll_probe_job(void *data, void *arg) {
    (void)data;
    struct poll_probe *pp = arg;
    pp->in_poll = atomic_load(&g_in_poll);
    pp->thread = pthread_self();
    atomic_fetch_add(&pp->ran, 1);
    if (pp->want_pending) {
        desync_future_t *f = NULL;
        pp->p = desync_promise_new(&f);
        return f;
    }
    return desync_future_ready(IV(12));
}

TEST(future_sync_polled) {
    int val = 0;
    desync_t *d = desync_new(&val, NULL);
    CHECK(d);
    for (int pending = 0; pending < 2; pending++) {
        struct blocker bl = {0};
        CHECK_EQ(desync_desync(d, blocker_job, &bl), 0);
        struct poll_probe pp = {0};
        pp.want_pending = pending;
        desync_future_t *f = desync_future_sync(d, poll_probe_job, &pp);
        CHECK(f);
        struct wake_count w = {0};
        desync_waker_t wk = {count_wake, &w};
        void *v = NULL;
        CHECK_EQ(desync_future_poll(f, &v, &wk), DESYNC_EAGAIN);
        atomic_store(&bl.go, 1);
        /* The queue reaches the job: the waker says "poll again". */
        CHECK(test_wait_count(&w.n, 1, LONG_MS));
        CHECK_EQ(atomic_load(&pp.ran), 0);
        struct wake_count w2 = {0};
        desync_waker_t wk2 = {count_wake, &w2};
        atomic_store(&g_in_poll, 1);
        int rc = desync_future_poll(f, &v, &wk2);
        atomic_store(&g_in_poll, 0);
        CHECK_EQ(atomic_load(&pp.ran), 1);
        CHECK_EQ(pp.in_poll, 1);
        CHECK(pthread_equal(pp.thread, pthread_self()));
        if (!pending) {
            CHECK_EQ(rc, 0);
            CHECK_EQ(VI(v), 12);
        } else {
            CHECK_EQ(rc, DESYNC_EAGAIN);
            CHECK(pp.p);
            CHECK_EQ(desync_promise_complete(pp.p, IV(13)), 0);
            CHECK(test_wait_count(&w2.n, 1, LONG_MS));
            CHECK_EQ(desync_future_poll(f, &v, NULL), 0);
            CHECK_EQ(VI(v), 13);
        }
        CHECK_EQ(atomic_load(&w.n), 1);
        desync_future_free(f);
    }
    desync_release(d);
    return 0;
}

TEST(future_detach) {
    int val = 0;
    desync_t *d = desync_new(&val, NULL);
    CHECK(d);
    /* future_desync, detached while its job waits behind a busy one. */
    struct blocker bl = {0};
    CHECK_EQ(desync_desync(d, blocker_job, &bl), 0);
    atomic_int ran1 = 0, ran2 = 0, ran3 = 0;
    desync_future_t *f = desync_future_desync(d, set_flag_async, &ran1);
    CHECK(f);
    desync_future_detach(f);
    /* future_sync, detached before the queue reaches it: runs on the queue. */
    f = desync_future_sync(d, set_flag_async, &ran2);
    CHECK(f);
    desync_future_detach(f);
    atomic_store(&bl.go, 1);
    CHECK(test_wait_flag(&ran1, LONG_MS));
    CHECK(test_wait_flag(&ran2, LONG_MS));
    /* future_sync, detached after the queue has reached it. */
    f = desync_future_sync(d, set_flag_async, &ran3);
    CHECK(f);
    test_sleep_ms(SHORT_MS);
    desync_future_detach(f);
    CHECK(test_wait_flag(&ran3, LONG_MS));
    /* A detached future_desync whose job awaits a promise. */
    desync_future_t *pf = NULL;
    desync_promise_t *p = desync_promise_new(&pf);
    CHECK(p);
    f = desync_future_desync(d, return_arg_future, pf);
    CHECK(f);
    desync_future_detach(f);
    CHECK_EQ(desync_desync(d, set_int, IV(9)), 0);
    CHECK_EQ(desync_promise_complete(p, NULL), 0);
    int out = -1;
    CHECK_EQ(desync_sync(d, get_int, &out), 0);
    CHECK_EQ(out, 9);
    desync_release(d);
    return 0;
}

/* ---------------------------------------------- futures owned by queues */

/* An after whose awaited future is a future_sync of another object: the
 * queue owns it, so nobody can wait on it; it must run anyway. */
TEST(future_after_owns_future_sync) {
    int a_val = 1, b_val = 2;
    desync_t *a = desync_new(&a_val, NULL);
    desync_t *b = desync_new(&b_val, NULL);
    CHECK(a && b);
    struct sync_probe pr = {0};
    desync_future_t *fs = desync_future_sync(b, probe_ready_int, &pr);
    CHECK(fs);
    desync_future_t *f = desync_after(a, fs, after_noop, NULL);
    CHECK(f);
    void *v = NULL;
    CHECK_EQ(desync_future_wait_for(f, 5000000000ull, &v), 0);
    CHECK_EQ(VI(v), 2);
    CHECK_EQ(atomic_load(&pr.ran), 1);
    desync_future_free(f);
    desync_release(a);
    desync_release(b);
    return 0;
}

struct sync_in_job {
    desync_t *b;
    struct sync_probe pr;
};

static desync_future_t *return_future_sync(void *data, void *arg) {
    (void)data;
    struct sync_in_job *s = arg;
    return desync_future_sync(s->b, probe_ready_int, &s->pr);
}

/* An async job that returns a future_sync future of another object. */
TEST(future_async_returns_future_sync) {
    int a_val = 1, b_val = 3;
    desync_t *a = desync_new(&a_val, NULL);
    desync_t *b = desync_new(&b_val, NULL);
    CHECK(a && b);
    struct sync_in_job s;
    memset(&s, 0, sizeof s);
    s.b = b;
    desync_future_t *f = desync_future_desync(a, return_future_sync, &s);
    CHECK(f);
    void *v = NULL;
    CHECK_EQ(desync_future_wait_for(f, 5000000000ull, &v), 0);
    CHECK_EQ(VI(v), 3);
    CHECK_EQ(atomic_load(&s.pr.ran), 1);
    desync_future_free(f);
    desync_release(a);
    desync_release(b);
    return 0;
}

/* desync_after takes ownership of a future_sync future: nobody can wait on
 * or poll it any more, so its job must run on its queue. When the after is
 * queued on the same object, behind the future_sync, the queue used to stop
 * at the future_sync node for good (found by the soak). */
static desync_future_t *ready_7(void *data, void *arg) {
    (void)data;
    (void)arg;
    return desync_future_ready(IV(7));
}

static void *after_add_one(void *data, int status, void *value, void *arg) {
    (void)data;
    (void)arg;
    return status == 0 ? IV(VI(value) + 1) : NULL;
}

TEST(future_after_takes_over_future_sync) {
    for (int same = 0; same < 2; same++) {
        desync_t *x = desync_new(NULL, NULL), *y = desync_new(NULL, NULL);
        CHECK(x && y);
        desync_future_t *fs = desync_future_sync(x, ready_7, NULL);
        CHECK(fs);
        desync_future_t *fa = desync_after(same ? x : y, fs, after_add_one, NULL);
        CHECK(fa);
        void *v = NULL;
        CHECK_EQ(desync_future_wait_for(fa, 5 * SEC, &v), 0); /* timed out before */
        CHECK_EQ(VI(v), 8);
        desync_future_free(fa);
        desync_release(x);
        desync_release(y);
    }
    return 0;
}

/* desync_after takes over a future_sync future of its own object, queued
 * ahead of it: the job must run on the queue ("when desync_after takes the
 * future over, the job runs on the queue like a future_desync job"), with
 * and without threads. Found by fuzz/fuzz_api.c: the future_sync node waited
 * for a thread to drive it, and the after that owns its future (the only one
 * that could) was queued behind it, so the object hung for good. */
TEST(future_after_owns_future_sync_same_object) {
    desync_scheduler_t *none = desync_scheduler_new(0);
    CHECK(none);
    for (int threads = 0; threads < 2; threads++) {
        int val = 5;
        desync_t *d = desync_new_on(threads ? NULL : none, &val, NULL);
        CHECK(d);
        struct sync_probe pr = {0};
        desync_future_t *fs = desync_future_sync(d, probe_ready_int, &pr);
        CHECK(fs);
        desync_future_t *f = desync_after(d, fs, after_noop, NULL);
        CHECK(f);
        void *v = NULL;
        CHECK_EQ(desync_future_wait_for(f, 2000000000ull, &v), 0);
        CHECK_EQ(VI(v), 5);
        CHECK_EQ(atomic_load(&pr.ran), 1);
        desync_future_free(f);
        desync_release(d);
    }
    desync_scheduler_free(none);
    return 0;
}
