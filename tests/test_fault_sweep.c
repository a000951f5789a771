/*
 * Every allocation site failed in turn (tests/fault.h): scenarios that use
 * each public operation, run once per n with the nth library allocation
 * failing (FAULT_NTH) and with every allocation from the nth on failing
 * (FAULT_FROM), each in a fresh process. A run passes when every call
 * either succeeded or reported the error it documents, nothing crashed or
 * hung, every job whose call succeeded ran exactly once (and no other), no
 * job ran inside the call that queued it, every item was delivered or freed
 * once, and (in the AddressSanitizer build) LeakSanitizer found no leak.
 * Thread creation is swept the same way (failing once at the nth start,
 * every nth start, and always).
 *
 * Channels, streams and pipes are in test_fault_sweep_streams.c; shared
 * helpers in test_fault_sweep.h.
 *
 * `make test` runs a sample of each sweep (every SAMPLE_STEP-th n);
 * `make check-faults` sets DESYNC_TEST_FAULT_FULL and runs every n, in the
 * ASan build.
 */
#include "test_fault_sweep.h"

/* ------------------------------------------------------------- objects */

/* desync_new (and the default scheduler's creation), desync, desync_copy
 * (inline and allocated copies), sync, try_sync, retain/release, the
 * object's queue, and release from the object's own job. */
static int sc_objects(void) {
    fault_begin();
    desync_t *d = desync_new(NULL, count_destroy);
    if (!d) {
        /* The scheduler or the object could not be made: try again, as a
         * program would. After one failure it must work (the default
         * scheduler must not stay NULL). */
        if (!(d = desync_new(NULL, count_destroy))) {
            CHECK(fault_failures(FAULT_ALLOC) >= 2);
            return finish("objects");
        }
    }
    for (int i = 0; i < 6; i++)
        CHECK_RC(q_desync(d), DESYNC_ENOMEM);
    for (int i = 0; i < 3; i++) {
        CHECK_RC(q_desync_copy(d, false), DESYNC_ENOMEM);
        CHECK_RC(q_desync_copy(d, true), DESYNC_ENOMEM);
    }
    int id = ledger_new();
    CHECK_EQ(desync_sync(d, ledger_job, LEDGER_ARG(id)), 0);
    ledger_queued(id, 1);
    id = ledger_new();
    int rc = desync_try_sync(d, ledger_job, LEDGER_ARG(id));
    CHECK_RC(rc, DESYNC_EBUSY);
    ledger_queued(id, rc == 0);

    CHECK(desync_retain(d) == d);
    desync_release(d);
    desync_queue_t *q = desync_get_queue(d);
    CHECK_RC(q_queue_desync(q), DESYNC_ENOMEM);

    /* Another object, released by its own job. */
    desync_t *e = desync_new(NULL, count_destroy);
    int destroys = 1;
    if (e) {
        destroys++;
        CHECK_RC(q_desync(e), DESYNC_ENOMEM);
        CHECK_EQ(desync_sync(e, release_arg_job, e), 0);
    }
    for (int i = 0; i < 3; i++)
        CHECK_RC(q_desync(d), DESYNC_ENOMEM);
    desync_release(d); /* blocks until d's jobs ran, then destroys */
    /* e's destruction was queued behind its job: a thread runs it, or
     * whoever syncs; none may exist (thread start failed), so wait a bit
     * and only require it when a thread exists. */
    if (destroys == 2 && desync_scheduler_thread_count(desync_scheduler_default()) > 0)
        CHECK(test_wait_count(&g_destroyed, 2, LONG_MS));
    else
        CHECK(atomic_load(&g_destroyed) >= 1);
    return finish("objects");
}

/* -------------------------------------------------------------- queues */

/* Bare queues on a private scheduler with no threads: new, desync,
 * desync_copy, sync, try_sync, retain/release, and the scheduler's free. */
static int sc_queues(void) {
    fault_begin();
    desync_scheduler_t *s = desync_scheduler_new(0);
    if (!s)
        return finish("queues");
    desync_queue_t *q = desync_queue_new(s), *r = desync_queue_new(s);
    if (q) {
        for (int i = 0; i < 5; i++) {
            CHECK_RC(q_queue_desync(q), DESYNC_ENOMEM);
            int id = ledger_new();
            struct big_arg a = {.id = id};
            for (size_t k = 0; k < sizeof a.fill; k++)
                a.fill[k] = (unsigned char)(id + k);
            tl_in_call = 1;
            int rc = desync_queue_desync_copy(q, big_queue_job, &a, sizeof a);
            tl_in_call = 0;
            CHECK_RC(rc, DESYNC_ENOMEM);
            ledger_queued(id, rc == 0);
        }
        CHECK(desync_queue_retain(q) == q);
        desync_queue_release(q);
        int id = ledger_new();
        CHECK_EQ(desync_queue_sync(q, ledger_queue_job, LEDGER_ARG(id)), 0); /* runs them all */
        ledger_queued(id, 1);
        id = ledger_new();
        CHECK_EQ(desync_queue_try_sync(q, ledger_queue_job, LEDGER_ARG(id)), 0);
        ledger_queued(id, 1);
        desync_queue_release(q);
    }
    if (r) {
        CHECK_RC(q_queue_desync(r), DESYNC_ENOMEM);
        CHECK_EQ(desync_queue_sync(r, noop_queue_job, NULL), 0);
        desync_queue_release(r);
    }
    desync_scheduler_free(s);
    return finish("queues");
}

/* ------------------------------------------------------------ futures */

static desync_future_t *async_ledger(void *data, void *arg) {
    ledger_job(data, arg);
    return NULL;
}

static desync_future_t *async_ready(void *data, void *arg) {
    ledger_job(data, arg);
    return desync_future_ready(arg); /* NULL on ENOMEM: done with NULL */
}

static void *after_ledger(void *data, int status, void *value, void *arg) {
    (void)status;
    (void)value;
    ledger_job(data, arg);
    return arg;
}

static void then_count(int status, void *value, void *arg) {
    (void)status;
    (void)value;
    atomic_fetch_add((atomic_int *)arg, 1);
}

/* Queues an async job (future_desync or future_sync) and waits for it. */
static int future_job(desync_t *d, bool sync, bool ready) {
    int id = ledger_new();
    desync_async_fn fn = ready ? async_ready : async_ledger;
    tl_in_call = !sync; /* a future_sync job runs inside the wait, not the call */
    desync_future_t *f = sync ? desync_future_sync(d, fn, LEDGER_ARG(id))
                              : desync_future_desync(d, fn, LEDGER_ARG(id));
    tl_in_call = 0;
    ledger_queued(id, f != NULL);
    if (!f)
        return 0;
    void *v = NULL;
    CHECK_EQ(desync_future_wait_for(f, LONG_NS, &v), 0);
    CHECK(v == NULL || v == LEDGER_ARG(id));
    desync_future_free(f);
    return 0;
}

/* future_desync, future_sync, after (on d and on a bare queue), ready,
 * promises (complete and cancel), then, poll with a waker, a timed wait,
 * the fd, and suspend/resume. */
static int sc_futures(void) {
    if (!warm_default_worker())
        return 1;
    fault_begin();
    desync_t *d = desync_new(NULL, NULL);
    if (!d)
        return finish("futures");
    for (int i = 0; i < 3; i++) {
        CHECK(!future_job(d, false, i == 1));
        CHECK(!future_job(d, true, i == 2));
    }

    /* after: waits for a promise completed from here. */
    desync_future_t *pf = NULL;
    desync_promise_t *p = desync_promise_new(&pf);
    if (p) {
        int id = ledger_new();
        tl_in_call = 1;
        desync_future_t *f = desync_after(d, pf, after_ledger, LEDGER_ARG(id));
        tl_in_call = 0;
        ledger_queued(id, f != NULL);
        CHECK_EQ(desync_promise_complete(p, NULL), 0);
        if (f) {
            void *v = NULL;
            CHECK_EQ(desync_future_wait_for(f, LONG_NS, &v), 0);
            CHECK(v == LEDGER_ARG(id));
            desync_future_free(f);
        }
    }

    /* On the object's queue: queue_future_desync and queue_after. */
    desync_queue_t *q = desync_get_queue(d);
    int id = ledger_new();
    tl_in_call = 1;
    desync_future_t *qf = desync_queue_future_desync(q, (desync_queue_async_fn)(void *)NULL, NULL);
    tl_in_call = 0;
    CHECK(!qf); /* NULL job: EINVAL */
    desync_future_t *ready = desync_future_ready(LEDGER_ARG(7));
    if (ready) {
        tl_in_call = 1;
        desync_future_t *f =
            desync_queue_after(q, ready, (desync_queue_after_fn)(void *)NULL, NULL);
        tl_in_call = 0;
        CHECK(!f); /* NULL job: EINVAL, `ready` consumed */
    }
    ledger_queued(id, 0);

    /* then / poll / timed wait / fd on a promise's future. */
    desync_future_t *g = NULL;
    desync_promise_t *gp = desync_promise_new(&g);
    atomic_int calls = 0;
    if (gp) {
        desync_waker_t w = {wake_count, &calls};
        CHECK_EQ(desync_future_poll(g, NULL, &w), DESYNC_EAGAIN);
        CHECK_EQ(desync_future_wait_for(g, 1000, NULL), DESYNC_ETIMEDOUT);
        int fd = desync_future_fd(g);
        CHECK(fd >= 0 || fd == DESYNC_ENOMEM || fd == DESYNC_EAGAIN);
        desync_promise_cancel(gp);
        CHECK_EQ(atomic_load(&calls), 1);
        CHECK_EQ(desync_future_wait(g, NULL), DESYNC_ECANCELED);
        desync_future_free(g);
    }
    desync_future_t *h = desync_future_ready(NULL);
    if (h)
        CHECK_EQ(desync_future_then(h, then_count, &calls), 0);

    /* suspend: a job queued while suspended waits for the resume. */
    desync_future_t *sf = desync_queue_suspend(q);
    if (sf) {
        void *v = NULL;
        CHECK_EQ(desync_future_wait_for(sf, LONG_NS, &v), 0);
        desync_future_free(sf);
        CHECK_RC(q_desync(d), DESYNC_ENOMEM);
        desync_resumer_resume(v);
    }
    CHECK_RC(q_desync(d), DESYNC_ENOMEM);
    desync_release(d);
    return finish("futures");
}

/* ---------------------------------------------------------- schedulers */

/* A private scheduler: new, spawn_thread, set_max_threads, objects on it
 * with jobs, despawn, and free (threads start on demand: their records
 * are allocation sites too). */
static int sc_schedulers(void) {
    fault_begin();
    desync_scheduler_t *s = desync_scheduler_new(2);
    if (!s)
        return finish("schedulers");
    CHECK_RC(desync_scheduler_spawn_thread(s), DESYNC_ENOMEM, DESYNC_EAGAIN);
    desync_t *objs[3];
    int nobj = 0;
    for (int i = 0; i < 3; i++)
        if ((objs[nobj] = desync_new_on(s, NULL, count_destroy)))
            nobj++;
    for (int k = 0; k < 4; k++)
        for (int i = 0; i < nobj; i++)
            CHECK_RC(q_desync(objs[i]), DESYNC_ENOMEM);
    desync_scheduler_set_max_threads(s, 3);
    for (int i = 0; i < nobj; i++)
        CHECK_RC(q_desync(objs[i]), DESYNC_ENOMEM);
    desync_scheduler_set_max_threads(s, 1);
    desync_scheduler_despawn_threads_if_overloaded(s);
    CHECK(desync_scheduler_thread_count(s) <= 1);
    for (int i = 0; i < nobj; i++)
        desync_release(objs[i]);
    CHECK_EQ(atomic_load(&g_destroyed), nobj);
    desync_scheduler_free(s);
    return finish("schedulers");
}

/* ------------------------------------------------------ thread creation */

struct producer {
    desync_t **objs;
    int nobj;
    int id0;
};

static void *produce(void *arg) {
    struct producer *p = arg;
    for (int i = 0; i < 60; i++) {
        desync_t *d = p->objs[(p->id0 + i) % p->nobj];
        if (desync_desync(d, ledger_job, LEDGER_ARG(p->id0 + i)) != 0)
            FAILF("desync failed\n");
    }
    return NULL;
}

static int g_jobs_expected;

static int all_jobs_ran(void *unused) {
    (void)unused;
    for (int id = 0; id < g_jobs_expected; id++)
        if (ledger_ran_count(id) < 1)
            return 0;
    return 1;
}

/* Thread starts failing (no allocation faults): objects on the default
 * and on a private scheduler, jobs from two producers, futures. Unless
 * every start fails, the jobs must all run in the background (a failed
 * start is retried), without a sync; with none, release runs them. */
static int sc_threads(void) {
    unsigned long n;
    enum fault_mode mode = fault_sweep_mode(&n);
    bool can_grow = mode != FAULT_FROM && !(mode == FAULT_EVERY && n == 1);
    fault_begin();
    /* A lone object first: nothing else submits, so only a retry of the
     * failed start (or a sync) can run its jobs. */
    desync_t *lone = desync_new(NULL, NULL);
    CHECK(lone);
    for (int i = 0; i < 11; i++)
        CHECK_EQ(q_desync(lone), 0);
    g_jobs_expected = 11;
    if (can_grow)
        CHECK(test_wait_until(all_jobs_ran, NULL, LONG_MS));
    desync_release(lone);

    desync_scheduler_t *s = desync_scheduler_new(3);
    CHECK(s);
    desync_t *objs[6];
    for (int i = 0; i < 6; i++)
        CHECK((objs[i] = desync_new_on(i % 2 ? s : NULL, NULL, count_destroy)));
    struct producer pr[2];
    pthread_t th[2];
    for (int t = 0; t < 2; t++) {
        int id0 = ledger_new();
        for (int i = 1; i < 60; i++)
            ledger_new();
        for (int i = 0; i < 60; i++)
            ledger_queued(id0 + i, 1);
        pr[t] = (struct producer){objs, 6, id0};
        CHECK_EQ(pthread_create(&th[t], NULL, produce, &pr[t]), 0);
    }
    test_join_threads(th, 2);
    g_jobs_expected = 11 + 120;
    if (can_grow)
        CHECK(test_wait_until(all_jobs_ran, NULL, LONG_MS));
    for (int i = 0; i < 6; i++)
        CHECK(!future_job(objs[i], false, false));
    for (int i = 0; i < 6; i++)
        desync_release(objs[i]);
    CHECK_EQ(atomic_load(&g_destroyed), 6);
    desync_scheduler_free(s);
    return finish("threads");
}

/* --------------------------------------------------------------- sweeps */

TEST(fault_sweep_objects) { return sweep_alloc("objects", sc_objects); }
TEST(fault_sweep_queues) { return sweep_alloc("queues", sc_queues); }
TEST(fault_sweep_futures) { return sweep_alloc("futures", sc_futures); }
TEST(fault_sweep_schedulers) { return sweep_alloc("schedulers", sc_schedulers); }

/* Thread creation failing once (at the nth start, every n), every nth
 * start (n = 1..4) and always. */
TEST(fault_sweep_threads) {
    if (fault_sweep("threads", sc_threads, FAULT_THREAD, FAULT_NTH, 1, 1, MAX_N, CHILD_TIMEOUT_S,
                    NULL))
        return 1;
    if (fault_sweep("threads", sc_threads, FAULT_THREAD, FAULT_EVERY, 1, 1,
                    fault_full() ? 4 : 2, CHILD_TIMEOUT_S, NULL))
        return 1;
    return fault_sweep("threads", sc_threads, FAULT_THREAD, FAULT_FROM, 1, 1, 1, CHILD_TIMEOUT_S,
                       NULL);
}

