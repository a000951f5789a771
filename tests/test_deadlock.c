/*
 * Reentrancy: a sync on a queue that the calling thread (or the chain of
 * syncs it is running in, even across threads) is already running returns
 * DESYNC_EDEADLK instead of deadlocking; a chain without a cycle works.
 * Every wait is bounded.
 */
#include <desync.h>

#include <pthread.h>
#include <stdatomic.h>
#include <string.h>

#include "test.h"

struct reent {
    desync_t *d;
    int sync_rc, try_rc, qsync_rc, qtry_rc, desync_rc;
    atomic_int inner_ran;
    atomic_int later_ran;
    atomic_int done;
};

static void reent_inner(void *data, void *arg) {
    (void)data;
    atomic_fetch_add(&((struct reent *)arg)->inner_ran, 1);
}

static void reent_inner_q(void *arg) { reent_inner(NULL, arg); }

static void reent_later(void *data, void *arg) {
    (void)data;
    atomic_fetch_add(&((struct reent *)arg)->later_ran, 1);
}

static void reent_job(void *data, void *arg) {
    (void)data;
    struct reent *r = arg;
    desync_queue_t *q = desync_get_queue(r->d);
    r->sync_rc = desync_sync(r->d, reent_inner, r);
    r->try_rc = desync_try_sync(r->d, reent_inner, r);
    r->qsync_rc = desync_queue_sync(q, reent_inner_q, r);
    r->qtry_rc = desync_queue_try_sync(q, reent_inner_q, r);
    r->desync_rc = desync_desync(r->d, reent_later, r);
    atomic_store(&r->done, 1);
}

static int check_reent(struct reent *r) {
    CHECK_EQ(r->sync_rc, DESYNC_EDEADLK);
    CHECK_EQ(r->try_rc, DESYNC_EDEADLK);
    CHECK_EQ(r->qsync_rc, DESYNC_EDEADLK);
    CHECK_EQ(r->qtry_rc, DESYNC_EDEADLK);
    CHECK_EQ(r->desync_rc, 0);
    CHECK_EQ(atomic_load(&r->inner_ran), 0); /* refused jobs are not queued */
    return 0;
}

struct qreent {
    desync_queue_t *q;
    int sync_rc, try_rc;
    atomic_int done;
};

static void qreent_job(void *arg) {
    struct qreent *r = arg;
    r->sync_rc = desync_queue_sync(r->q, noop_queue_job, NULL);
    r->try_rc = desync_queue_try_sync(r->q, noop_queue_job, NULL);
    atomic_store(&r->done, 1);
}

TEST(core_reentrant_edeadlk) {
    int x = 0;
    desync_t *d = desync_new(&x, NULL);
    CHECK(d);

    /* From a sync job (running on this thread). */
    static struct reent r1;
    memset(&r1, 0, sizeof r1);
    r1.d = d;
    CHECK_EQ(desync_sync(d, reent_job, &r1), 0);
    if (check_reent(&r1))
        return 1;

    /* From a background job. */
    static struct reent r2;
    memset(&r2, 0, sizeof r2);
    r2.d = d;
    CHECK_EQ(desync_desync(d, reent_job, &r2), 0);
    CHECK(test_wait_flag(&r2.done, 5000));
    CHECK_EQ(desync_sync(d, noop_job, NULL), 0);
    if (check_reent(&r2))
        return 1;
    /* The desync from inside the jobs ran later, once each. */
    CHECK_EQ(atomic_load(&r1.later_ran), 1);
    CHECK_EQ(atomic_load(&r2.later_ran), 1);
    desync_release(d);

    /* A bare queue, both ways. */
    desync_queue_t *q = desync_queue_new(NULL);
    CHECK(q);
    static struct qreent qr1, qr2;
    memset(&qr1, 0, sizeof qr1);
    memset(&qr2, 0, sizeof qr2);
    qr1.q = qr2.q = q;
    CHECK_EQ(desync_queue_sync(q, qreent_job, &qr1), 0);
    CHECK_EQ(qr1.sync_rc, DESYNC_EDEADLK);
    CHECK_EQ(qr1.try_rc, DESYNC_EDEADLK);
    CHECK_EQ(desync_queue_desync(q, qreent_job, &qr2), 0);
    CHECK(test_wait_flag(&qr2.done, 5000));
    CHECK_EQ(qr2.sync_rc, DESYNC_EDEADLK);
    CHECK_EQ(qr2.try_rc, DESYNC_EDEADLK);
    desync_queue_release(q);
    return 0;
}

struct chain {
    desync_t *a, *b, *c;
    int rc_ab, rc_bc, rc_ca, rc_ba, rc_try_ba;
    atomic_int done;
};

/* b's job, reached from a's job: syncing back on a must be refused. */
static void chain_b_back(void *data, void *arg) {
    (void)data;
    struct chain *ch = arg;
    ch->rc_ba = desync_sync(ch->a, noop_job, NULL);
    ch->rc_try_ba = desync_try_sync(ch->a, noop_job, NULL);
}

static void chain_a_job(void *data, void *arg) {
    (void)data;
    struct chain *ch = arg;
    ch->rc_ab = desync_sync(ch->b, chain_b_back, ch);
    atomic_store(&ch->done, 1);
}

static void chain3_c(void *data, void *arg) {
    (void)data;
    struct chain *ch = arg;
    ch->rc_ca = desync_sync(ch->a, noop_job, NULL);
}

static void chain3_b(void *data, void *arg) {
    (void)data;
    struct chain *ch = arg;
    ch->rc_bc = desync_sync(ch->c, chain3_c, ch);
}

static void chain3_a(void *data, void *arg) {
    (void)data;
    struct chain *ch = arg;
    ch->rc_ab = desync_sync(ch->b, chain3_b, ch);
    atomic_store(&ch->done, 1);
}

/* A nested sync that is not a cycle must work. */
static void chain_ok_c(void *data, void *arg) {
    (void)arg;
    (*(int *)data)++;
}

static void chain_ok_b(void *data, void *arg) {
    (void)data;
    struct chain *ch = arg;
    ch->rc_bc = desync_sync(ch->c, chain_ok_c, NULL);
    ch->rc_try_ba = desync_try_sync(ch->c, chain_ok_c, NULL); /* c is idle again */
}

static void chain_ok_a(void *data, void *arg) {
    (void)data;
    struct chain *ch = arg;
    ch->rc_ab = desync_sync(ch->b, chain_ok_b, ch);
    atomic_store(&ch->done, 1);
}

TEST(core_reentrant_chain_edeadlk) {
    int xa = 0, xb = 0, xc = 0;
    desync_t *a = desync_new(&xa, NULL), *b = desync_new(&xb, NULL), *c = desync_new(&xc, NULL);
    CHECK(a && b && c);

    /* a -> b -> a, started by a sync on this thread. */
    static struct chain ch;
    memset(&ch, 0, sizeof ch);
    ch.a = a;
    ch.b = b;
    ch.c = c;
    CHECK_EQ(desync_sync(a, chain_a_job, &ch), 0);
    CHECK_EQ(ch.rc_ab, 0);
    CHECK_EQ(ch.rc_ba, DESYNC_EDEADLK);
    CHECK_EQ(ch.rc_try_ba, DESYNC_EDEADLK);

    /* Same, started from a background job of a. */
    static struct chain ch2;
    memset(&ch2, 0, sizeof ch2);
    ch2.a = a;
    ch2.b = b;
    ch2.c = c;
    CHECK_EQ(desync_desync(a, chain_a_job, &ch2), 0);
    CHECK(test_wait_flag(&ch2.done, 5000));
    CHECK_EQ(ch2.rc_ab, 0);
    CHECK_EQ(ch2.rc_ba, DESYNC_EDEADLK);
    CHECK_EQ(ch2.rc_try_ba, DESYNC_EDEADLK);

    /* a -> b -> c -> a. */
    static struct chain ch3;
    memset(&ch3, 0, sizeof ch3);
    ch3.a = a;
    ch3.b = b;
    ch3.c = c;
    CHECK_EQ(desync_desync(a, chain3_a, &ch3), 0);
    CHECK(test_wait_flag(&ch3.done, 5000));
    CHECK_EQ(ch3.rc_ab, 0);
    CHECK_EQ(ch3.rc_bc, 0);
    CHECK_EQ(ch3.rc_ca, DESYNC_EDEADLK);

    /* a -> b -> c is fine. */
    static struct chain ch4;
    memset(&ch4, 0, sizeof ch4);
    ch4.a = a;
    ch4.b = b;
    ch4.c = c;
    CHECK_EQ(desync_desync(a, chain_ok_a, &ch4), 0);
    /* (chain_ok_b also checks that try_sync from another queue's job works) */
    CHECK(test_wait_flag(&ch4.done, 5000));
    CHECK_EQ(ch4.rc_ab, 0);
    CHECK_EQ(ch4.rc_bc, 0);
    CHECK_EQ(ch4.rc_try_ba, 0);
    int v = 0;
    CHECK_EQ(desync_sync(c, get_int, &v), 0);
    CHECK_EQ(v, 2);

    desync_release(a);
    desync_release(b);
    desync_release(c);
    return 0;
}

/* The nested job runs on another thread: a's job syncs b while b is busy on
 * a worker, so b's job (run by that worker) syncs a from another thread. It
 * is still the same chain and must get EDEADLK, not hang. */
struct xchain {
    desync_t *a, *b;
    struct blocker blk;
    atomic_int a_started, a_done;
    int rc_ab, rc_ba;
    pthread_t b_thread;
};

static void xchain_b(void *data, void *arg) {
    (void)data;
    struct xchain *x = arg;
    x->b_thread = pthread_self();
    x->rc_ba = desync_sync(x->a, noop_job, NULL);
}

static void xchain_a(void *data, void *arg) {
    (void)data;
    struct xchain *x = arg;
    atomic_store(&x->a_started, 1);
    x->rc_ab = desync_sync(x->b, xchain_b, x);
    atomic_store(&x->a_done, 1);
}

TEST(core_reentrant_chain_cross_thread) {
    int xa = 0, xb = 0;
    static struct xchain x;
    memset(&x, 0, sizeof x);
    x.a = desync_new(&xa, NULL);
    x.b = desync_new(&xb, NULL);
    CHECK(x.a && x.b);
    CHECK_EQ(desync_desync(x.b, blocker_job, &x.blk), 0);
    CHECK(test_wait_flag(&x.blk.started, 5000));
    CHECK_EQ(desync_desync(x.a, xchain_a, &x), 0);
    CHECK(test_wait_flag(&x.a_started, 5000));
    test_sleep_ms(20); /* let a's job reach its sync on b (either order is valid) */
    atomic_store(&x.blk.go, 1);
    int finished = test_wait_flag(&x.a_done, 8000);
    if (!finished)
        fprintf(stderr, "deadlock: b's job syncing a (in a's sync chain) never returned\n");
    CHECK(finished);
    CHECK_EQ(x.rc_ab, 0);
    CHECK_EQ(x.rc_ba, DESYNC_EDEADLK);
    desync_release(x.a);
    desync_release(x.b);
    return 0;
}
