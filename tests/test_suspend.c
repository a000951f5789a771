/*
 * Suspend and resume: the Rust desync crate's suspend scenarios, a suspended
 * queue drained on the waiting thread, and releasing a suspended queue or
 * object.
 * See test_future.h for how waits are bounded.
 */
#include <desync.h>

#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdint.h>
#include <string.h>

#include "test_future.h"

/* -------------------------------------------------------------- helpers */

static void inc_atomic_queue_job(void *arg) { atomic_fetch_add((atomic_int *)arg, 1); }

/* Resumes a suspended queue from another thread after a delay. */
struct resumer_thread {
    pthread_t th;
    desync_resumer_t *r;
    unsigned delay_ms;
    desync_scheduler_t *raise; /* if set: set its max threads to 1 after resuming */
};

static void *resumer_main(void *arg) {
    struct resumer_thread *t = arg;
    test_sleep_ms(t->delay_ms);
    desync_resumer_resume(t->r);
    if (t->raise)
        desync_scheduler_set_max_threads(t->raise, 1);
    return NULL;
}

static int resumer_start(struct resumer_thread *t, desync_resumer_t *r, unsigned delay_ms,
                         desync_scheduler_t *raise) {
    t->r = r;
    t->delay_ms = delay_ms;
    t->raise = raise;
    return pthread_create(&t->th, NULL, resumer_main, t) == 0;
}

/* -------------------------------------------------------- suspend ports */

struct susp {
    atomic_int pos;
    atomic_int seen0, seen1;
    atomic_int ran;
};

static void record_pos0(void *arg) {
    struct susp *s = arg;
    atomic_store(&s->seen0, atomic_load(&s->pos));
}

static void record_pos1(void *arg) {
    struct susp *s = arg;
    atomic_store(&s->seen1, atomic_load(&s->pos));
    atomic_store(&s->ran, 1);
}

TEST(future_suspend_queue_1000) {
    int n = TEST_SCALED(1000);
    for (int i = 0; i < n; i++) {
        struct susp s;
        atomic_init(&s.pos, 0);
        atomic_init(&s.seen0, -1);
        atomic_init(&s.seen1, -1);
        atomic_init(&s.ran, 0);
        desync_queue_t *q = desync_queue_new(NULL); /* background threads */
        CHECK(q);
        CHECK_EQ(desync_queue_desync(q, record_pos0, &s), 0);
        desync_future_t *sf = desync_queue_suspend(q);
        CHECK(sf);
        void *v = NULL;
        CHECK_EQ(desync_future_wait_for(sf, LONG_NS, &v), 0);
        desync_resumer_t *r = v;
        CHECK(r);
        /* The job before the suspend has run. */
        CHECK_EQ(atomic_load(&s.seen0), 0);
        CHECK_EQ(desync_queue_desync(q, record_pos1, &s), 0);
        if (i % 100 == 0) {
            test_sleep_ms(SHORT_MS);
        } else {
            for (int k = 0; k < 3; k++)
                sched_yield();
        }
        CHECK_EQ(atomic_load(&s.ran), 0);
        atomic_store(&s.pos, 1);
        desync_resumer_resume(r);
        CHECK_EQ(desync_queue_sync(q, noop_queue_job, NULL), 0);
        CHECK_EQ(atomic_load(&s.ran), 1);
        CHECK_EQ(atomic_load(&s.seen1), 1);
        desync_future_free(sf);
        desync_queue_release(q);
    }
    return 0;
}

static void set_42_queue_job(void *arg) { *(int *)arg = 42; }

static void read_int_queue_job(void *arg) {
    int **pp = arg;
    *pp[1] = *pp[0];
}

TEST(future_suspend_local_drain) {
    desync_scheduler_t *s = desync_scheduler_new(0);
    CHECK(s);
    desync_queue_t *q = desync_queue_new(s);
    CHECK(q);
    CHECK_EQ(desync_queue_desync(q, noop_queue_job, NULL), 0);
    desync_future_t *sf = desync_queue_suspend(q);
    CHECK(sf);
    /* 0 threads: waiting drains the queue up to the suspend on this thread. */
    void *v = NULL;
    CHECK_EQ(desync_future_wait_for(sf, LONG_NS, &v), 0);
    CHECK(v);
    int val = 0;
    CHECK_EQ(desync_queue_desync(q, set_42_queue_job, &val), 0);
    struct resumer_thread rt;
    CHECK(resumer_start(&rt, v, 100, s));
    int out = -1;
    int *pp[2] = {&val, &out};
    CHECK_EQ(desync_queue_sync(q, read_int_queue_job, pp), 0);
    CHECK_EQ(out, 42);
    pthread_join(rt.th, NULL);
    desync_future_free(sf);
    desync_queue_release(q);
    desync_scheduler_free(s);
    return 0;
}

/* mode 0: release while suspended, resume from another thread;
 * mode 1: release while suspended, resume on this thread;
 * mode 2: release before the suspend has taken effect. */
static int release_suspended_queue_case(int mode) {
    atomic_int count = 0;
    desync_queue_t *q = desync_queue_new(NULL);
    CHECK(q);
    CHECK_EQ(desync_queue_desync(q, inc_atomic_queue_job, &count), 0);
    desync_future_t *sf = desync_queue_suspend(q);
    CHECK(sf);
    CHECK_EQ(desync_queue_desync(q, inc_atomic_queue_job, &count), 0);
    if (mode == 2)
        desync_queue_release(q);
    void *v = NULL;
    CHECK_EQ(desync_future_wait_for(sf, LONG_NS, &v), 0);
    CHECK(v);
    CHECK(test_wait_count(&count, 1, LONG_MS));
    test_sleep_ms(SHORT_MS);
    CHECK_EQ(atomic_load(&count), 1);
    if (mode != 2)
        desync_queue_release(q);
    if (mode == 0) {
        struct resumer_thread rt;
        CHECK(resumer_start(&rt, v, 20, NULL));
        CHECK(test_wait_count(&count, 2, LONG_MS));
        pthread_join(rt.th, NULL);
    } else {
        desync_resumer_resume(v);
        CHECK(test_wait_count(&count, 2, LONG_MS));
    }
    desync_future_free(sf);
    /* Let the queue go idle before `count` leaves scope. */
    test_sleep_ms(10);
    return 0;
}

TEST(future_release_suspended_queue) {
    for (int mode = 0; mode < 3; mode++) {
        if (release_suspended_queue_case(mode)) {
            fprintf(stderr, "release_suspended_queue: mode %d failed\n", mode);
            return 1;
        }
    }
    return 0;
}

/* mode 0: resume from another thread; mode 1: from this thread. */
static int release_suspended_object_case(int mode) {
    static struct tracked t;
    atomic_store(&t.destroyed, 0);
    atomic_store(&t.jobs_at_destroy, -1);
    t.jobs = 0;
    desync_t *d = desync_new(&t, tracked_destroy);
    CHECK(d);
    CHECK_EQ(desync_desync(d, tracked_job, NULL), 0);
    desync_future_t *sf = desync_queue_suspend(desync_get_queue(d));
    CHECK(sf);
    CHECK_EQ(desync_desync(d, tracked_job, NULL), 0);
    void *v = NULL;
    CHECK_EQ(desync_future_wait_for(sf, LONG_NS, &v), 0);
    CHECK(v);
    struct resumer_thread rt;
    if (mode == 0)
        CHECK(resumer_start(&rt, v, 50, NULL));
    /* mode 1 would deadlock here if release waited for the resume (the
     * runner's timeout then fails the test). */
    desync_release(d);
    if (mode == 1) {
        test_sleep_ms(SHORT_MS);
        CHECK_EQ(atomic_load(&t.destroyed), 0);
        desync_resumer_resume(v);
    }
    CHECK(test_wait_count(&t.destroyed, 1, LONG_MS));
    CHECK_EQ(atomic_load(&t.jobs_at_destroy), 2); /* the waiting job ran first */
    if (mode == 0)
        pthread_join(rt.th, NULL);
    desync_future_free(sf);
    test_sleep_ms(SHORT_MS);
    CHECK_EQ(atomic_load(&t.destroyed), 1);
    return 0;
}

TEST(future_release_suspended_object) {
    for (int mode = 0; mode < 2; mode++) {
        if (release_suspended_object_case(mode)) {
            fprintf(stderr, "release_suspended_object: mode %d failed\n", mode);
            return 1;
        }
    }
    return 0;
}
