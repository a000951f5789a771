/*
 * Bounded queues: desync_set_max_pending, try_desync (issue 11). A full
 * queue blocks desync until a job has run, refuses it (DESYNC_EAGAIN) where
 * waiting could never end or would hold a pool thread, is run by a blocked
 * producer when no thread runs it, and a blocked producer is part of the
 * wait-for graph.
 */
#include "test.h"

#include <desync.h>

#include <string.h>

/* A producer thread that queues one job (arg is the object) and says when
 * its desync returned. */
struct producer {
    desync_t *d;
    desync_job_fn job;
    void *arg;
    atomic_int returned;
    int rc;
};

static void *producer_main(void *p) {
    struct producer *pr = p;
    pr->rc = desync_desync(pr->d, pr->job, pr->arg);
    atomic_store(&pr->returned, 1);
    return NULL;
}

TEST(bounded_desync_blocks_until_room) {
    struct thread_log log = {0};
    desync_t *d = desync_new(&log, NULL);
    CHECK(d);
    CHECK_EQ(desync_set_max_pending(d, 4), 0);
    struct blocker b = {0};
    CHECK_EQ(desync_desync(d, blocker_job, &b), 0);
    for (int i = 1; i < 4; i++)
        CHECK_EQ(desync_desync(d, thread_log_job, IV(i)), 0);
    CHECK(test_wait_flag(&b.started, LONG_MS));
    /* Four pending (the blocker counts until it returns): the fifth blocks. */
    struct producer pr = {.d = d, .job = thread_log_job, .arg = IV(4)};
    pthread_t t;
    CHECK_EQ(pthread_create(&t, NULL, producer_main, &pr), 0);
    /* Wait until it is blocked (it cannot return before go). */
    desync_queue_stats_t st = {0};
    for (int i = 0; i < 2000 && st.blocked == 0; i++) {
        test_sleep_ms(1);
        CHECK_EQ(desync_queue_stats(desync_get_queue(d), &st), 0);
    }
    CHECK_EQ(st.blocked, 1);
    CHECK_EQ(st.max_pending, 4);
    CHECK_EQ(atomic_load(&pr.returned), 0);
    atomic_store(&b.go, 1);
    CHECK(test_wait_flag(&pr.returned, LONG_MS));
    pthread_join(t, NULL);
    CHECK_EQ(pr.rc, 0);
    CHECK_EQ(desync_sync(d, noop_job, NULL), 0);
    CHECK_EQ(log.n, 4);
    for (int i = 0; i < 4; i++)
        CHECK_EQ(log.order[i], i + 1);
    desync_release(d);
    return 0;
}

TEST(bounded_try_desync_eagain) {
    int v = 0;
    desync_t *d = desync_new(&v, NULL);
    CHECK(d);
    /* Without a limit, try_desync is desync. */
    CHECK_EQ(desync_try_desync(d, count_job, NULL), 0);
    CHECK_EQ(desync_set_max_pending(d, 2), 0);
    struct blocker b = {0};
    CHECK_EQ(desync_desync(d, blocker_job, &b), 0);
    CHECK_EQ(desync_try_desync(d, count_job, NULL), 0);
    CHECK_EQ(desync_try_desync(d, count_job, NULL), DESYNC_EAGAIN);
    CHECK_EQ(desync_queue_try_desync(desync_get_queue(d), noop_queue_job, NULL), DESYNC_EAGAIN);
    atomic_store(&b.go, 1);
    CHECK_EQ(desync_sync(d, noop_job, NULL), 0);
    CHECK_EQ(v, 2);
    CHECK_EQ(desync_try_desync(d, count_job, NULL), 0);
    /* No limit any more: never refused. */
    CHECK_EQ(desync_set_max_pending(d, 0), 0);
    struct blocker b2 = {0};
    CHECK_EQ(desync_desync(d, blocker_job, &b2), 0);
    for (int i = 0; i < 10; i++)
        CHECK_EQ(desync_try_desync(d, count_job, NULL), 0);
    atomic_store(&b2.go, 1);
    CHECK_EQ(desync_sync(d, noop_job, NULL), 0);
    CHECK_EQ(v, 13);
    CHECK_EQ(desync_try_desync(NULL, count_job, NULL), DESYNC_EINVAL);
    CHECK_EQ(desync_try_desync(d, NULL, NULL), DESYNC_EINVAL);
    CHECK_EQ(desync_set_max_pending(NULL, 1), DESYNC_EINVAL);
    CHECK_EQ(desync_queue_set_max_pending(NULL, 1), DESYNC_EINVAL);
    desync_release(d);
    return 0;
}

/* From a job of the full queue itself: DESYNC_EAGAIN, on any thread. */
struct self_ctx {
    desync_t *d;
    int rc1, rc2;
    atomic_int done;
};

static void self_desync_job(void *data, void *arg) {
    (void)data;
    struct self_ctx *c = arg;
    c->rc1 = desync_desync(c->d, count_job, NULL); /* room for one */
    c->rc2 = desync_desync(c->d, count_job, NULL); /* full: would wait for itself */
    atomic_store(&c->done, 1);
}

/* From a job on a pool thread (of another object): never blocks there. */
static void pool_desync_job(void *data, void *arg) {
    (void)data;
    struct self_ctx *c = arg;
    c->rc1 = desync_desync(c->d, count_job, NULL);
    c->rc2 = desync_desync_copy(c->d, count_job, "x", 1);
    atomic_store(&c->done, 1);
}

TEST(bounded_eagain_from_own_job_and_pool) {
    int v = 0;
    desync_t *d = desync_new(&v, NULL);
    CHECK(d);
    CHECK_EQ(desync_set_max_pending(d, 1), 0);
    /* A sync on the idle object runs its job on this (non-pool) thread. */
    struct self_ctx c = {.d = d};
    CHECK_EQ(desync_sync(d, self_desync_job, &c), 0);
    CHECK_EQ(c.rc1, 0);
    CHECK_EQ(c.rc2, DESYNC_EAGAIN);
    CHECK_EQ(desync_sync(d, noop_job, NULL), 0);
    CHECK_EQ(v, 1);
    /* The same from a desync job of d (on a pool thread). */
    struct self_ctx c2 = {.d = d};
    CHECK_EQ(desync_set_max_pending(d, 2), 0);
    CHECK_EQ(desync_desync(d, self_desync_job, &c2), 0);
    CHECK(test_wait_flag(&c2.done, LONG_MS));
    CHECK_EQ(c2.rc1, 0);
    CHECK_EQ(c2.rc2, DESYNC_EAGAIN);
    CHECK_EQ(desync_sync(d, noop_job, NULL), 0);
    CHECK_EQ(v, 2);
    /* A job of another object on a pool thread, d full. */
    CHECK_EQ(desync_set_max_pending(d, 1), 0);
    struct blocker b = {0};
    CHECK_EQ(desync_desync(d, blocker_job, &b), 0);
    CHECK(test_wait_flag(&b.started, LONG_MS));
    desync_t *e = desync_new(NULL, NULL);
    CHECK(e);
    struct self_ctx c3 = {.d = d};
    CHECK_EQ(desync_desync(e, pool_desync_job, &c3), 0);
    CHECK(test_wait_flag(&c3.done, LONG_MS));
    CHECK_EQ(c3.rc1, DESYNC_EAGAIN);
    CHECK_EQ(c3.rc2, DESYNC_EAGAIN);
    atomic_store(&b.go, 1);
    CHECK_EQ(desync_sync(d, noop_job, NULL), 0);
    CHECK_EQ(v, 2);
    desync_release(e);
    desync_release(d);
    return 0;
}

/* On a scheduler with no threads, a producer that fills the queue runs it
 * itself and goes on: nothing else would ever make room. */
TEST(bounded_zero_threads_producer_runs_queue) {
    desync_scheduler_t *s = desync_scheduler_new(0);
    CHECK(s);
    struct thread_log log = {0};
    desync_t *d = desync_new_on(s, &log, NULL);
    CHECK(d);
    CHECK_EQ(desync_set_max_pending(d, 3), 0);
    for (int i = 0; i < 40; i++)
        CHECK_EQ(desync_desync(d, thread_log_job, IV(i)), 0);
    /* All but at most the last 3 have run, on this thread. */
    CHECK(atomic_load(&log.ran) >= 37);
    CHECK_EQ(desync_sync(d, noop_job, NULL), 0);
    CHECK_EQ(log.n, 40);
    for (int i = 0; i < 40; i++) {
        CHECK_EQ(log.order[i], i);
        CHECK(pthread_equal(log.threads[i], pthread_self()));
    }
    /* The queue form, with copies. */
    desync_queue_t *q = desync_queue_new(s);
    CHECK(q);
    CHECK_EQ(desync_queue_set_max_pending(q, 1), 0);
    for (int i = 0; i < 10; i++)
        CHECK_EQ(desync_queue_desync_copy(q, noop_queue_job, &i, sizeof i), 0);
    desync_queue_release(q);
    desync_release(d);
    desync_scheduler_free(s);
    return 0;
}

/* Only desyncs count and wait: on a full queue, syncs, futures and the last
 * release go through (0 threads: nothing runs until we sync). */
static desync_future_t *ready_job(void *data, void *arg) {
    (void)data;
    return desync_future_ready(arg);
}

TEST(bounded_other_calls_never_refused) {
    desync_scheduler_t *s = desync_scheduler_new(0);
    CHECK(s);
    struct tracked t = {0};
    desync_t *d = desync_new_on(s, &t, tracked_destroy);
    CHECK(d);
    CHECK_EQ(desync_set_max_pending(d, 1), 0);
    CHECK_EQ(desync_desync(d, tracked_job, NULL), 0);
    CHECK_EQ(desync_try_desync(d, tracked_job, NULL), DESYNC_EAGAIN);
    desync_future_t *f = desync_future_desync(d, ready_job, IV(7));
    CHECK(f);
    CHECK_EQ(desync_sync(d, tracked_job, NULL), 0); /* runs all three here */
    CHECK_EQ(t.jobs, 2);
    void *v = NULL;
    CHECK_EQ(desync_future_wait_for(f, LONG_NS, &v), 0);
    CHECK_EQ(VI(v), 7);
    desync_future_free(f);
    CHECK_EQ(desync_try_desync(d, tracked_job, NULL), 0); /* room again */
    CHECK_EQ(desync_try_desync(d, tracked_job, NULL), DESYNC_EAGAIN);
    desync_release(d); /* full: destruction still queues, and runs the job first */
    CHECK_EQ(atomic_load(&t.destroyed), 1);
    CHECK_EQ(atomic_load(&t.jobs_at_destroy), 3);
    desync_scheduler_free(s);
    return 0;
}

/* A producer blocked on a suspended full queue goes on after the resume,
 * also when no thread runs the queue (it then runs it itself). */
struct resume_ctx {
    desync_resumer_t *r;
    atomic_int resume;
};

static void *resumer_main(void *p) {
    struct resume_ctx *c = p;
    test_wait_flag(&c->resume, LONG_MS);
    desync_resumer_resume(c->r);
    return NULL;
}

static int suspended_case(size_t threads) {
    desync_scheduler_t *s = desync_scheduler_new(threads);
    CHECK(s);
    struct thread_log log = {0};
    desync_t *d = desync_new_on(s, &log, NULL);
    CHECK(d);
    CHECK_EQ(desync_set_max_pending(d, 2), 0);
    desync_future_t *f = desync_queue_suspend(desync_get_queue(d));
    CHECK(f);
    void *value = NULL;
    CHECK_EQ(desync_future_wait_for(f, LONG_NS, &value), 0);
    desync_future_free(f);
    struct resume_ctx rc = {.r = value};
    CHECK_EQ(desync_desync(d, thread_log_job, IV(0)), 0);
    CHECK_EQ(desync_desync(d, thread_log_job, IV(1)), 0);
    CHECK_EQ(desync_try_desync(d, thread_log_job, IV(9)), DESYNC_EAGAIN);
    pthread_t t;
    CHECK_EQ(pthread_create(&t, NULL, resumer_main, &rc), 0);
    struct producer pr = {.d = d, .job = thread_log_job, .arg = IV(2)};
    pthread_t p;
    CHECK_EQ(pthread_create(&p, NULL, producer_main, &pr), 0);
    test_sleep_ms(20); /* the producer blocks; it cannot return before the resume */
    CHECK_EQ(atomic_load(&pr.returned), 0);
    atomic_store(&rc.resume, 1);
    CHECK(test_wait_flag(&pr.returned, LONG_MS));
    pthread_join(p, NULL);
    pthread_join(t, NULL);
    CHECK_EQ(pr.rc, 0);
    CHECK_EQ(desync_sync(d, noop_job, NULL), 0);
    CHECK_EQ(log.n, 3);
    for (int i = 0; i < 3; i++)
        CHECK_EQ(log.order[i], i);
    desync_release(d);
    desync_scheduler_free(s);
    return 0;
}

TEST(bounded_suspended_queue) {
    CHECK_EQ(suspended_case(2), 0);
    CHECK_EQ(suspended_case(0), 0);
    return 0;
}

/* A cycle through a blocked desync: this thread is inside a job of X and
 * desyncs onto full Q, whose running job syncs on X. One of the two waits
 * is refused with DESYNC_EDEADLK; nothing hangs. */
struct cycle_ctx {
    desync_t *x, *q;
    atomic_int q_job_started;
    int inner_rc, outer_rc;
};

static void q_job_syncs_x(void *data, void *arg) {
    (void)data;
    struct cycle_ctx *c = arg;
    atomic_store(&c->q_job_started, 1);
    c->inner_rc = desync_sync(c->x, noop_job, NULL);
}

static void x_job_desyncs_q(void *data, void *arg) {
    (void)data;
    struct cycle_ctx *c = arg;
    test_wait_flag(&c->q_job_started, LONG_MS);
    test_sleep_ms(20); /* let it block in its sync (either order is checked) */
    c->outer_rc = desync_desync(c->q, noop_job, NULL);
}

TEST(bounded_deadlock_cycle_edeadlk) {
    struct cycle_ctx c = {0};
    c.x = desync_new(NULL, NULL);
    c.q = desync_new(NULL, NULL);
    CHECK(c.x && c.q);
    CHECK_EQ(desync_set_max_pending(c.q, 1), 0);
    CHECK_EQ(desync_desync(c.q, q_job_syncs_x, &c), 0); /* Q is now full */
    CHECK_EQ(desync_sync(c.x, x_job_desyncs_q, &c), 0);
    CHECK_EQ(desync_sync(c.q, noop_job, NULL), 0);
    /* Exactly one of the two waits was refused. */
    CHECK((c.outer_rc == DESYNC_EDEADLK) != (c.inner_rc == DESYNC_EDEADLK));
    CHECK(c.outer_rc == 0 || c.outer_rc == DESYNC_EDEADLK);
    CHECK(c.inner_rc == 0 || c.inner_rc == DESYNC_EDEADLK);
    desync_release(c.x);
    desync_release(c.q);
    return 0;
}

/* Many producers, a small limit: every accepted job runs exactly once, in
 * each producer's order. */
#define STRESS_PRODUCERS 4
struct stress_log {
    int next[STRESS_PRODUCERS]; /* only touched from jobs */
    int bad;
};

struct stress_item {
    int producer, seq;
};

static void stress_job(void *data, void *arg) {
    struct stress_log *l = data;
    const struct stress_item *it = arg;
    if (l->next[it->producer] != it->seq)
        l->bad++;
    l->next[it->producer] = it->seq + 1;
}

struct stress_producer {
    desync_t *d;
    int id, n, accepted, refused;
    struct stress_item *items; /* n items; arguments of try_desync jobs */
};

static void *stress_main(void *p) {
    struct stress_producer *sp = p;
    gate_wait();
    uint32_t rnd = 12345u + (uint32_t)sp->id;
    while (sp->accepted < sp->n) {
        struct stress_item *it = &sp->items[sp->accepted];
        it->producer = sp->id;
        it->seq = sp->accepted;
        int rc;
        switch (test_rnd(&rnd) % 3) {
        case 0:
            rc = desync_try_desync(sp->d, stress_job, it);
            if (rc == DESYNC_EAGAIN) {
                sp->refused++;
                sched_yield();
                continue;
            }
            break;
        case 1:
            rc = desync_desync(sp->d, stress_job, it);
            break;
        default:
            rc = desync_desync_copy(sp->d, stress_job, it, sizeof *it);
            break;
        }
        if (rc == 0)
            sp->accepted++;
        else {
            FAILF("desync: %d\n", rc);
            break;
        }
    }
    return NULL;
}

/* Changes the limit while producers block on it (1, 2, 7, none, ...). */
struct tuner {
    desync_t *d;
    atomic_int stop;
    int changes;
};

static void *tuner_main(void *p) {
    struct tuner *t = p;
    static const size_t limits[] = {1, 2, 7, 0, 3};
    gate_wait();
    while (!atomic_load(&t->stop)) {
        if (desync_set_max_pending(t->d, limits[t->changes++ % 5]) != 0)
            FAILF("set_max_pending failed\n");
        test_spin_ns(50000);
    }
    return NULL;
}

static int stress_run(int tune) {
    struct stress_log log = {0};
    desync_t *d = desync_new(&log, NULL);
    CHECK(d);
    CHECK_EQ(desync_set_max_pending(d, 3), 0);
    struct stress_producer sp[STRESS_PRODUCERS];
    pthread_t th[STRESS_PRODUCERS];
    int n = TEST_SCALED(20000);
    for (int i = 0; i < STRESS_PRODUCERS; i++) {
        sp[i] = (struct stress_producer){.d = d, .id = i, .n = n};
        sp[i].items = calloc((size_t)n, sizeof *sp[i].items);
        CHECK(sp[i].items);
        CHECK_EQ(pthread_create(&th[i], NULL, stress_main, &sp[i]), 0);
    }
    struct tuner tn = {.d = d};
    pthread_t tt;
    if (tune)
        CHECK_EQ(pthread_create(&tt, NULL, tuner_main, &tn), 0);
    atomic_store(&g_gate, 1);
    test_join_threads(th, STRESS_PRODUCERS);
    if (tune) {
        atomic_store(&tn.stop, 1);
        pthread_join(tt, NULL);
    }
    CHECK_EQ(desync_sync(d, noop_job, NULL), 0);
    CHECK_EQ(atomic_load(&g_errors), 0);
    CHECK_EQ(log.bad, 0);
    for (int i = 0; i < STRESS_PRODUCERS; i++) {
        CHECK_EQ(sp[i].accepted, n);
        CHECK_EQ(log.next[i], n);
        free(sp[i].items);
    }
    desync_release(d);
    atomic_store(&g_gate, 0);
    return 0;
}

TEST(bounded_stress_order_exactly_once) {
    CHECK_EQ(stress_run(0), 0);
    CHECK_EQ(stress_run(1), 0); /* the limit changing under the producers */
    return 0;
}
