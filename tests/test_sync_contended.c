/*
 * Syncs on a busy queue (queue.c: BARGING): a sync that finds the queue
 * busy waits outside it and takes it when it goes idle, or queues its node
 * after a time limit. These tests check what must hold whatever path a sync
 * takes: jobs queued before a sync run before it, every job runs once, a
 * sync gets its turn although another thread keeps the queue busy, and a
 * sync waiting outside runs a token that no thread will run.
 */
#include "test.h"

#include <desync.h>
#include <string.h>

/* ------------------------------------------------- order with barging */

struct order_obj {
    long ran[2]; /* desync jobs run, per producer */
    long bad;    /* syncs that found a job of their own producer missing */
    long syncs;
};

struct order_arg {
    desync_t *d;
    int who;
    long n;
};

static void order_append(void *data, void *arg) {
    struct order_obj *o = data;
    o->ran[(intptr_t)arg]++;
}

struct order_check {
    int who;
    long want;
};

static void order_check_job(void *data, void *arg) {
    struct order_obj *o = data;
    struct order_check *c = arg;
    if (o->ran[c->who] != c->want)
        o->bad++;
    o->syncs++;
}

/* Each producer desyncs a job, then syncs a check that all its own jobs so
 * far have run: with the other producer doing the same, the queue is busy
 * and the syncs wait outside or queue. */
static void *order_main(void *p) {
    struct order_arg *a = p;
    for (long i = 1; i <= a->n; i++) {
        if (desync_desync(a->d, order_append, (void *)(intptr_t)a->who) != 0)
            return (void *)1;
        struct order_check c = {a->who, i};
        if (desync_sync(a->d, order_check_job, &c) != 0)
            return (void *)1;
    }
    return NULL;
}

TEST(sync_contended_runs_after_earlier_jobs) {
    const long n = TEST_SCALED(20000);
    static struct order_obj o;
    memset(&o, 0, sizeof o);
    desync_t *d = desync_new(&o, NULL);
    CHECK(d);
    struct order_arg args[2] = {{d, 0, n}, {d, 1, n}};
    pthread_t th[2];
    for (int i = 0; i < 2; i++)
        CHECK_EQ(pthread_create(&th[i], NULL, order_main, &args[i]), 0);
    void *r0, *r1;
    pthread_join(th[0], &r0);
    pthread_join(th[1], &r1);
    CHECK(r0 == NULL && r1 == NULL);
    desync_release(d); /* waits for every job */
    CHECK_EQ(o.bad, 0);
    CHECK_EQ(o.syncs, 2 * n);
    CHECK_EQ(o.ran[0], n);
    CHECK_EQ(o.ran[1], n);
    return 0;
}

/* ------------------------------------------- a sync gets its turn */

struct hog_arg {
    desync_t *d;
    atomic_int *stop;
    long done;
};

static void hog_count_job(void *data, void *arg) {
    (void)arg;
    ++*(long *)data;
}

/* Keeps the queue busy with back-to-back syncs until told to stop. */
static void *hog_main(void *p) {
    struct hog_arg *a = p;
    while (!atomic_load(a->stop)) {
        if (desync_sync(a->d, hog_count_job, NULL) != 0)
            return (void *)1;
        a->done++;
    }
    return NULL;
}

TEST(sync_contended_gets_its_turn) {
    static long count;
    count = 0;
    desync_t *d = desync_new(&count, NULL);
    CHECK(d);
    atomic_int stop = 0;
    enum { HOGS = 3 };
    struct hog_arg hogs[HOGS];
    pthread_t th[HOGS];
    for (int i = 0; i < HOGS; i++) {
        hogs[i] = (struct hog_arg){d, &stop, 0};
        CHECK_EQ(pthread_create(&th[i], NULL, hog_main, &hogs[i]), 0);
    }
    /* This thread's syncs compete with three threads that never pause; each
     * one must come through (the test's timeout bounds the wait). */
    const long n = TEST_SCALED(2000);
    for (long i = 0; i < n; i++)
        CHECK_EQ(desync_sync(d, hog_count_job, NULL), 0);
    atomic_store(&stop, 1);
    long total = n;
    for (int i = 0; i < HOGS; i++) {
        void *r;
        pthread_join(th[i], &r);
        CHECK(r == NULL);
        total += hogs[i].done;
    }
    desync_release(d); /* waits for every job */
    CHECK_EQ(count, total);
    return 0;
}

/* ------------------------------------- more syncers than barger slots */

struct crowd_arg {
    desync_t *d;
    long n;
    int rc;
};

/* Long enough (about ten microseconds) that the syncers behind it give up
 * watching and sleep outside. */
static void crowd_job(void *data, void *arg) {
    (void)arg;
    for (volatile int spin = 0; spin < 20000; spin++)
        ;
    ++*(long *)data;
}

static void *crowd_main(void *p) {
    struct crowd_arg *a = p;
    for (long i = 0; i < a->n && a->rc == 0; i++)
        a->rc = (i & 255) == 255 ? desync_desync(a->d, crowd_job, NULL)
                                 : desync_sync(a->d, crowd_job, NULL);
    return NULL;
}

/* 32 threads on one object: more than the 15 syncers that the count of
 * those waiting outside holds (queue.c: the barger count), so the count can
 * run full (the extra syncers then wait outside uncounted, under SAT) and
 * empties again many times, with some syncers outside and others queued.
 * Every call must come through and every job run once. */
TEST(sync_contended_more_syncers_than_barger_slots) {
    static long count;
    count = 0;
    desync_t *d = desync_new(&count, NULL);
    CHECK(d);
    enum { THREADS = 32 };
    struct crowd_arg a[THREADS];
    pthread_t th[THREADS];
    const long n = TEST_SCALED(300);
    for (int i = 0; i < THREADS; i++) {
        a[i] = (struct crowd_arg){d, n, 0};
        CHECK_EQ(pthread_create(&th[i], NULL, crowd_main, &a[i]), 0);
    }
    for (int i = 0; i < THREADS; i++) {
        pthread_join(th[i], NULL);
        CHECK_EQ(a[i].rc, 0);
    }
    desync_release(d); /* waits for every job */
    CHECK_EQ(count, THREADS * n);
    return 0;
}

/* ------------------------- a token that only the waiting syncer can run */

struct park_obj {
    atomic_int in_job; /* the holder's job has started */
    atomic_int go;     /* lets the holder's job end */
    long after;        /* runs of the job desynced from the holder's job */
    long waiter_ran;
    int desync_failed;
};

static void after_job(void *data, void *arg) {
    (void)arg;
    struct park_obj *o = data;
    o->after++;
}

static void holder_job(void *data, void *arg) {
    struct park_obj *o = data;
    desync_t *d = arg;
    atomic_store(&o->in_job, 1);
    test_wait_flag(&o->go, 10000);
    /* Queued behind this job once the waiter waits (outside: nothing was
     * queued when it came): when this job ends, the token goes to the
     * scheduler, which has no thread, and only the waiter can run it. */
    if (desync_desync(d, after_job, NULL) != 0)
        o->desync_failed = 1;
}

static void waiter_job(void *data, void *arg) {
    (void)arg;
    struct park_obj *o = data;
    o->waiter_ran++;
}

struct holder_arg {
    desync_t *d;
    int rc;
};

static void *holder_main(void *p) {
    struct holder_arg *a = p;
    a->rc = desync_sync(a->d, holder_job, a->d);
    return NULL;
}

static void *waiter_main(void *p) {
    struct holder_arg *a = p;
    a->rc = desync_sync(a->d, waiter_job, NULL);
    return NULL;
}

TEST(sync_contended_runs_token_no_thread_takes) {
    desync_scheduler_t *s = desync_scheduler_new(0);
    CHECK(s);
    /* Let the holder go on soon (the waiter is then most likely still
     * waiting outside: the READY token wakes it) or late (it has queued its
     * node after its time outside): either way both syncs return and the
     * job queued from the holder's job runs once. */
    for (int late = 0; late < 2; late++) {
        static struct park_obj o;
        memset(&o, 0, sizeof o);
        desync_t *d = desync_new_on(s, &o, NULL);
        CHECK(d);
        struct holder_arg ha = {d, -1}, wa = {d, -1};
        pthread_t h, w;
        CHECK_EQ(pthread_create(&h, NULL, holder_main, &ha), 0);
        CHECK(test_wait_flag(&o.in_job, 10000));
        CHECK_EQ(pthread_create(&w, NULL, waiter_main, &wa), 0);
        if (late)
            test_sleep_ms(5);
        else
            test_spin_ns(200000);
        atomic_store(&o.go, 1);
        pthread_join(h, NULL);
        pthread_join(w, NULL);
        CHECK_EQ(ha.rc, 0);
        CHECK_EQ(wa.rc, 0);
        CHECK_EQ(o.desync_failed, 0);
        CHECK_EQ(o.waiter_ran, 1);
        desync_release(d); /* runs what is still queued */
        CHECK_EQ(o.after, 1);
    }
    desync_scheduler_free(s);
    return 0;
}

/* --------------------------------------- no convoy behind queued syncs */

/* How long a sync waits outside a busy queue before it queues its node
 * (src/tuning.h: DSY_SYNC_BARGE_NS). */
#define BARGE_LIMIT_NS 1000000u

struct late_arg {
    desync_t *d;
    _Atomic uint64_t called_at; /* test_now_ns() just before the call */
    int rc;
};

static void *late_main(void *p) {
    struct late_arg *a = p;
    atomic_store(&a->called_at, test_now_ns());
    a->rc = desync_sync(a->d, noop_job, NULL);
    return NULL;
}

static int pending_is(desync_t *d, uint64_t want) {
    desync_queue_stats_t st;
    return desync_queue_stats(desync_get_queue(d), &st) == 0 && st.pending == want;
}

static int one_pending(void *d) { return pending_is(d, 1); }

static struct blocker late_blk;

static void *blocking_holder_main(void *p) {
    struct holder_arg *a = p;
    a->rc = desync_sync(a->d, blocker_job, &late_blk);
    return NULL;
}

/* A holder keeps the queue in a long job. Syncer B waits outside until its
 * time there runs out, then queues its node. Syncer C, coming now with only
 * B's node queued, must wait outside too, and so queue no sooner than
 * BARGE_LIMIT_NS after the moment taken before its call, however fast or
 * slow the machine. Queued behind B at once (as before the fix), every
 * sync after it queues too, each handed on with a wake-up, and the queue
 * never goes idle while its threads keep syncing: a convoy (64 threads on
 * 2 cores: 6-9 us per sync in 1 run of 18, against 25-50 ns). */
TEST(sync_contended_behind_queued_syncs_waits_outside) {
    int early = 0;
    for (int trial = 0; trial < 5; trial++) {
        memset(&late_blk, 0, sizeof late_blk);
        desync_t *d = desync_new(NULL, NULL);
        CHECK(d);
        struct holder_arg ha = {d, -1};
        struct late_arg b = {.d = d, .rc = -1}, c = {.d = d, .rc = -1};
        pthread_t h, tb, tc;
        CHECK_EQ(pthread_create(&h, NULL, blocking_holder_main, &ha), 0);
        CHECK(test_wait_flag(&late_blk.started, 10000));
        CHECK_EQ(pthread_create(&tb, NULL, late_main, &b), 0);
        CHECK(test_wait_until(one_pending, d, 10000)); /* B queued */
        test_sleep_ms(50); /* B counts itself a waiter just after its push */
        CHECK_EQ(pthread_create(&tc, NULL, late_main, &c), 0);
        /* Polled closely, not with test_wait_until: its 1 ms polls are as
         * long as the bound. */
        uint64_t deadline = test_now_ns() + 10000000000u;
        while (!atomic_load(&c.called_at) && test_now_ns() < deadline)
            sched_yield();
        CHECK(atomic_load(&c.called_at));
        while (!pending_is(d, 2) && test_now_ns() < deadline)
            sched_yield();
        uint64_t seen = test_now_ns();
        CHECK(pending_is(d, 2));
        if (seen - atomic_load(&c.called_at) < BARGE_LIMIT_NS)
            early++;
        atomic_store(&late_blk.go, 1);
        pthread_join(h, NULL);
        pthread_join(tb, NULL);
        pthread_join(tc, NULL);
        CHECK_EQ(ha.rc, 0);
        CHECK_EQ(b.rc, 0);
        CHECK_EQ(c.rc, 0);
        desync_release(d);
    }
    /* A trial may see C queue early only if B was preempted for the whole
     * sleep between its push and counting itself: a majority of trials is
     * the bug (before the fix, all of them). */
    if (early)
        fprintf(stderr, "C queued early in %d of 5 trials\n", early);
    CHECK(early < 3);
    return 0;
}
