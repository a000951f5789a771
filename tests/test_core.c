/*
 * Core API and semantics: objects, queues, schedulers, errors.
 * Every wait is bounded; nothing asserts on timing except the generous
 * idle-CPU check in core_idle_threads_sleep.
 */
#include <desync.h>

#include <pthread.h>
#include <signal.h>
#include <stdalign.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include "test.h"

/* ------------------------------------------------------------ helpers */

static void blocker_queue_job(void *arg) { blocker_job(NULL, arg); }

/* ------------------------------------------------------- basic access */

struct point {
    int x, y;
    char name[16];
    void *seen_data;
};

static void read_point(void *data, void *arg) {
    struct point *out = arg;
    *out = *(struct point *)data;
    out->seen_data = data;
}

TEST(core_sync_retrieve) {
    struct point *p = malloc(sizeof *p);
    CHECK(p);
    memset(p, 0, sizeof *p);
    p->x = 3;
    p->y = -4;
    strcpy(p->name, "origin");

    desync_t *d = desync_new(p, free);
    CHECK(d);
    CHECK(desync_data(d) == p);
    CHECK(desync_get_queue(d) != NULL);

    struct point *out = calloc(1, sizeof *out);
    CHECK(out);
    CHECK_EQ(desync_sync(d, read_point, out), 0);
    CHECK_EQ(out->x, 3);
    CHECK_EQ(out->y, -4);
    CHECK(strcmp(out->name, "origin") == 0);
    CHECK(out->seen_data == p); /* jobs receive the object's data pointer */
    free(out);
    desync_release(d);
    return 0;
}

struct sum_args {
    int from, to;
    long sum;
};

static void sum_range(void *data, void *arg) {
    int *a = data;
    struct sum_args *s = arg;
    s->sum = 0;
    for (int i = s->from; i < s->to; i++)
        s->sum += a[i];
}

TEST(core_sync_into_local) {
    int *a = malloc(100 * sizeof *a);
    CHECK(a);
    for (int i = 0; i < 100; i++)
        a[i] = i;
    desync_t *d = desync_new(a, free);
    CHECK(d);

    int v = -1; /* the job writes straight into the caller's stack */
    CHECK_EQ(desync_sync(d, get_int, &v), 0);
    CHECK_EQ(v, 0);

    struct sum_args s = {10, 20, -1};
    CHECK_EQ(desync_sync(d, sum_range, &s), 0);
    CHECK_EQ(s.sum, 145);
    desync_release(d);
    return 0;
}

struct slow_set_arg {
    int value;
    unsigned sleep_ms;
};

static void slow_set(void *data, void *arg) {
    struct slow_set_arg *a = arg;
    test_sleep_ms(a->sleep_ms);
    *(int *)data = a->value;
}

TEST(core_async_update_then_sync) {
    int *n = malloc(sizeof *n);
    CHECK(n);
    *n = 1;
    desync_t *d = desync_new(n, free);
    CHECK(d);
    static struct slow_set_arg arg = {77, 100};
    CHECK_EQ(desync_desync(d, slow_set, &arg), 0);
    int v = 0;
    CHECK_EQ(desync_sync(d, get_int, &v), 0);
    CHECK_EQ(v, 77); /* sync queued after the slow update sees it */
    desync_release(d);
    return 0;
}

static atomic_int g_int_destroyed;
static void counted_free(void *p) {
    free(p);
    atomic_fetch_add(&g_int_destroyed, 1);
}

TEST(core_desync_42_43_repeat) {
    atomic_store(&g_int_destroyed, 0);
    for (int i = 0; i < 1000; i++) {
        int *n = malloc(sizeof *n);
        CHECK(n);
        *n = 0;
        desync_t *d = desync_new(n, counted_free);
        CHECK(d);
        CHECK_EQ(desync_desync(d, set_int, (void *)(intptr_t)42), 0);
        CHECK_EQ(desync_desync(d, set_int, (void *)(intptr_t)43), 0);
        int v = 0;
        CHECK_EQ(desync_sync(d, get_int, &v), 0);
        if (v != 43)
            fprintf(stderr, "iteration %d\n", i);
        CHECK_EQ(v, 43);
        desync_release(d);
        CHECK_EQ(atomic_load(&g_int_destroyed), i + 1);
    }
    return 0;
}

/* ----------------------------------------------------------- lifetime */

struct slow_log {
    struct tracked t;
    int order[8];
    int n;
};

static void slow_log_job(void *data, void *arg) {
    struct slow_log *l = data;
    test_sleep_ms(20);
    l->order[l->n++] = (int)(intptr_t)arg;
    l->t.jobs++;
}

static void slow_log_destroy(void *data) {
    struct slow_log *l = data;
    l->t.jobs_at_destroy = l->n; /* must see every job */
    atomic_fetch_add(&l->t.destroyed, 1);
}

TEST(core_release_with_slow_jobs_queued) {
    static struct slow_log l;
    memset(&l, 0, sizeof l);
    desync_t *d = desync_new(&l, slow_log_destroy);
    CHECK(d);
    for (int i = 0; i < 5; i++)
        CHECK_EQ(desync_desync(d, slow_log_job, (void *)(intptr_t)i), 0);
    /* The last release blocks until the queued jobs ran, then destroys. */
    desync_release(d);
    CHECK_EQ(atomic_load(&l.t.destroyed), 1);
    CHECK_EQ(l.t.jobs_at_destroy, 5);
    CHECK_EQ(l.n, 5);
    for (int i = 0; i < 5; i++)
        CHECK_EQ(l.order[i], i);
    /* Nothing runs destroy a second time later. */
    test_sleep_ms(50);
    CHECK_EQ(atomic_load(&l.t.destroyed), 1);
    return 0;
}

TEST(core_retain_release) {
    static struct tracked t;
    memset(&t, 0, sizeof t);
    desync_t *d = desync_new(&t, tracked_destroy);
    CHECK(d);
    CHECK(desync_retain(d) == d);
    CHECK(desync_retain(d) == d); /* three references now */
    desync_release(d);
    desync_release(d);
    CHECK_EQ(atomic_load(&t.destroyed), 0);
    CHECK_EQ(desync_desync(d, tracked_job, NULL), 0);
    CHECK_EQ(desync_sync(d, tracked_job, NULL), 0); /* still alive and usable */
    desync_release(d);
    CHECK_EQ(atomic_load(&t.destroyed), 1);
    CHECK_EQ(t.jobs_at_destroy, 2);

    /* destroy may be NULL. */
    int x = 5;
    desync_t *e = desync_new(&x, NULL);
    CHECK(e);
    CHECK_EQ(desync_desync(e, set_int, (void *)(intptr_t)6), 0);
    desync_release(e);
    CHECK_EQ(x, 6);
    return 0;
}

/* -------------------------------------------- scheduling and threads */

struct thread_log {
    int order[64];
    pthread_t threads[64];
    int n;
    atomic_int ran;
};

static void thread_log_job(void *data, void *arg) {
    struct thread_log *l = data;
    if (l->n < 64) {
        l->order[l->n] = (int)(intptr_t)arg;
        l->threads[l->n] = pthread_self();
    }
    l->n++;
    atomic_fetch_add(&l->ran, 1);
}

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

struct try_probe {
    atomic_int ran;
    pthread_t thread;
};

static void try_probe_job(void *data, void *arg) {
    (void)data;
    struct try_probe *p = arg;
    p->thread = pthread_self();
    atomic_fetch_add(&p->ran, 1);
}

static void try_probe_queue_job(void *arg) { try_probe_job(NULL, arg); }

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

/* The job waits for a flag that the caller only sets after desync returned:
 * a desync that ran its job inline would see the flag still clear. */
struct handshake {
    atomic_int go;
    atomic_int saw_go;
    atomic_int done;
};

static void handshake_job(void *data, void *arg) {
    (void)data;
    struct handshake *h = arg;
    atomic_store(&h->saw_go, test_wait_flag(&h->go, 3000));
    atomic_store(&h->done, 1);
}

static void handshake_queue_job(void *arg) { handshake_job(NULL, arg); }

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

TEST(core_scheduler_basics) {
    desync_scheduler_t *def = desync_scheduler_default();
    CHECK(def);
    CHECK(desync_scheduler_default() == def);
    CHECK(desync_scheduler_max_threads(def) >= 8);
    CHECK(desync_scheduler_thread_count(def) <= desync_scheduler_max_threads(def));

    desync_scheduler_t *s = desync_scheduler_new(3);
    CHECK(s);
    CHECK(s != def);
    CHECK_EQ(desync_scheduler_max_threads(s), 3);
    CHECK_EQ(desync_scheduler_thread_count(s), 0); /* threads start on demand */
    desync_scheduler_set_max_threads(s, 5);
    CHECK_EQ(desync_scheduler_max_threads(s), 5);
    desync_scheduler_free(s);

    /* Freeing NULL or the default scheduler is ignored. */
    desync_scheduler_free(NULL);
    desync_scheduler_free(def);
    int x = 0;
    desync_t *d = desync_new(&x, NULL);
    CHECK(d);
    CHECK_EQ(desync_desync(d, set_int, (void *)(intptr_t)9), 0);
    int v = 0;
    CHECK_EQ(desync_sync(d, get_int, &v), 0);
    CHECK_EQ(v, 9);
    desync_release(d);

    desync_scheduler_t *unused = desync_scheduler_new(0);
    CHECK(unused);
    desync_scheduler_free(unused);
    return 0;
}

TEST(core_despawn_extra_threads) {
    desync_scheduler_t *s = desync_scheduler_new(10);
    CHECK(s);
    CHECK_EQ(desync_scheduler_spawn_thread(NULL), DESYNC_EINVAL);
    for (int i = 0; i < 20; i++)
        CHECK_EQ(desync_scheduler_spawn_thread(s), 0); /* even above the maximum */
    CHECK_EQ(desync_scheduler_thread_count(s), 20);
    desync_scheduler_despawn_threads_if_overloaded(s);
    size_t n = desync_scheduler_thread_count(s);
    CHECK(n <= 10);

    /* The remaining threads still run work. */
    int x = 0;
    desync_t *d = desync_new_on(s, &x, NULL);
    CHECK(d);
    struct handshake h = {0};
    CHECK_EQ(desync_desync(d, handshake_job, &h), 0);
    atomic_store(&h.go, 1);
    CHECK(test_wait_flag(&h.done, 5000));
    CHECK_EQ(atomic_load(&h.saw_go), 1);
    desync_release(d);

    /* Nothing surplus: despawn returns at once and changes nothing. */
    desync_scheduler_despawn_threads_if_overloaded(s);
    CHECK(desync_scheduler_thread_count(s) <= 10);
    desync_scheduler_free(s);
    return 0;
}

struct despawn_ctx {
    desync_scheduler_t *s;
    int spawn_rc[2];
    size_t before, after;
    atomic_int done;
};

static void despawn_job(void *data, void *arg) {
    (void)data;
    struct despawn_ctx *c = arg;
    c->spawn_rc[0] = desync_scheduler_spawn_thread(c->s);
    c->spawn_rc[1] = desync_scheduler_spawn_thread(c->s);
    c->before = desync_scheduler_thread_count(c->s);
    desync_scheduler_despawn_threads_if_overloaded(c->s);
    c->after = desync_scheduler_thread_count(c->s);
    atomic_store(&c->done, 1);
}

TEST(core_despawn_from_job) {
    desync_scheduler_t *s = desync_scheduler_new(1);
    CHECK(s);
    int x = 0;
    desync_t *d = desync_new_on(s, &x, NULL);
    CHECK(d);
    static struct despawn_ctx c;
    memset(&c, 0, sizeof c);
    c.s = s;
    CHECK_EQ(desync_desync(d, despawn_job, &c), 0);
    CHECK(test_wait_flag(&c.done, 5000));
    CHECK_EQ(c.spawn_rc[0], 0);
    CHECK_EQ(c.spawn_rc[1], 0);
    CHECK(c.before >= 3);
    /* The calling thread is not stoppable, the two others are. */
    CHECK_EQ(c.after, 1);
    CHECK_EQ(desync_sync(d, noop_job, NULL), 0);
    desync_release(d);
    desync_scheduler_free(s);
    return 0;
}

TEST(core_set_max_threads_raise) {
    desync_scheduler_t *s = desync_scheduler_new(0);
    CHECK(s);
    int x = 0;
    desync_t *d = desync_new_on(s, &x, NULL);
    CHECK(d);
    static atomic_int flag;
    atomic_store(&flag, 0);
    CHECK_EQ(desync_desync(d, set_flag_job, &flag), 0);
    test_sleep_ms(50);
    CHECK_EQ(atomic_load(&flag), 0); /* 0 threads: nothing in the background */

    /* Raising the limit starts threads for the work already waiting. */
    desync_scheduler_set_max_threads(s, 2);
    CHECK_EQ(desync_scheduler_max_threads(s), 2);
    CHECK(test_wait_flag(&flag, 5000));
    CHECK(desync_scheduler_thread_count(s) <= 2);

    /* And for later work as well. */
    static atomic_int flag2;
    atomic_store(&flag2, 0);
    CHECK_EQ(desync_desync(d, set_flag_job, &flag2), 0);
    CHECK(test_wait_flag(&flag2, 5000));
    desync_release(d);
    desync_scheduler_free(s);
    return 0;
}

static void record_thread(void *data, void *arg) {
    (void)data;
    *(pthread_t *)arg = pthread_self();
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

/* ------------------------------------------------------------ reentrancy */

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

/* ---------------------------------------------------------- desync_copy */

static const size_t copy_sizes[] = {0, 1, 32, 33, 4096};
#define NCOPY_SIZES (sizeof copy_sizes / sizeof copy_sizes[0])

static unsigned char copy_pattern(size_t i, size_t size, int round) {
    return (unsigned char)(i * 7 + size * 13 + (size_t)round * 31 + 1);
}

struct copy_state {
    int n;
    int errors;
};

/* Knows which size and round it is from the queue order. */
static void copy_check_job(void *data, void *arg) {
    struct copy_state *st = data;
    size_t size = copy_sizes[st->n % NCOPY_SIZES];
    int round = st->n / (int)NCOPY_SIZES;
    const unsigned char *p = arg;
    if (size > 0) {
        if (!p || (uintptr_t)p % alignof(max_align_t) != 0) {
            st->errors++;
        } else {
            for (size_t i = 0; i < size; i++) {
                if (p[i] != copy_pattern(i, size, round)) {
                    st->errors++;
                    break;
                }
            }
        }
    }
    st->n++;
}

static int run_copy_rounds(desync_t *d, struct copy_state *st, int rounds) {
    static unsigned char buf[4096];
    for (int round = 0; round < rounds; round++) {
        for (size_t k = 0; k < NCOPY_SIZES; k++) {
            size_t size = copy_sizes[k];
            for (size_t i = 0; i < size; i++)
                buf[i] = copy_pattern(i, size, round);
            CHECK_EQ(desync_desync_copy(d, copy_check_job, buf, size), 0);
            memset(buf, 0xEE, sizeof buf); /* the job must see its own copy */
        }
    }
    CHECK_EQ(desync_sync(d, noop_job, NULL), 0);
    CHECK_EQ(st->n, rounds * (int)NCOPY_SIZES);
    CHECK_EQ(st->errors, 0);
    return 0;
}

static void count_job(void *data, void *arg) {
    (void)arg;
    (*(int *)data)++;
}

TEST(core_desync_copy) {
    /* 0 threads: every copy stays queued while the buffer is overwritten. */
    desync_scheduler_t *s0 = desync_scheduler_new(0);
    CHECK(s0);
    desync_scheduler_t *scheds[2] = {s0, NULL};
    for (int k = 0; k < 2; k++) {
        struct copy_state st = {0, 0};
        desync_t *d = scheds[k] ? desync_new_on(scheds[k], &st, NULL) : desync_new(&st, NULL);
        CHECK(d);
        if (run_copy_rounds(d, &st, 20))
            return 1;
        desync_release(d);
    }
    desync_scheduler_free(s0);

    /* NULL with length 0 is allowed. */
    int n = 0;
    desync_t *d = desync_new(&n, NULL);
    CHECK(d);
    CHECK_EQ(desync_desync_copy(d, count_job, NULL, 0), 0);
    CHECK_EQ(desync_sync(d, noop_job, NULL), 0);
    desync_release(d);
    CHECK_EQ(n, 1);
    return 0;
}

/* ------------------------------------------------------------ bad input */

TEST(core_bad_input) {
    int x = 0;
    desync_t *d = desync_new(&x, NULL);
    CHECK(d);
    desync_queue_t *q = desync_queue_new(NULL);
    CHECK(q);
    char buf[8] = {0};

    CHECK_EQ(desync_desync(NULL, noop_job, NULL), DESYNC_EINVAL);
    CHECK_EQ(desync_desync(d, NULL, NULL), DESYNC_EINVAL);
    CHECK_EQ(desync_desync_copy(NULL, noop_job, buf, 1), DESYNC_EINVAL);
    CHECK_EQ(desync_desync_copy(d, NULL, buf, 1), DESYNC_EINVAL);
    CHECK_EQ(desync_desync_copy(d, noop_job, NULL, 1), DESYNC_EINVAL);
    CHECK_EQ(desync_sync(NULL, noop_job, NULL), DESYNC_EINVAL);
    CHECK_EQ(desync_sync(d, NULL, NULL), DESYNC_EINVAL);
    CHECK_EQ(desync_try_sync(NULL, noop_job, NULL), DESYNC_EINVAL);
    CHECK_EQ(desync_try_sync(d, NULL, NULL), DESYNC_EINVAL);

    CHECK_EQ(desync_queue_desync(NULL, noop_queue_job, NULL), DESYNC_EINVAL);
    CHECK_EQ(desync_queue_desync(q, NULL, NULL), DESYNC_EINVAL);
    CHECK_EQ(desync_queue_desync_copy(NULL, noop_queue_job, buf, 1), DESYNC_EINVAL);
    CHECK_EQ(desync_queue_desync_copy(q, NULL, buf, 1), DESYNC_EINVAL);
    CHECK_EQ(desync_queue_desync_copy(q, noop_queue_job, NULL, 4096), DESYNC_EINVAL);
    CHECK_EQ(desync_queue_sync(NULL, noop_queue_job, NULL), DESYNC_EINVAL);
    CHECK_EQ(desync_queue_sync(q, NULL, NULL), DESYNC_EINVAL);
    CHECK_EQ(desync_queue_try_sync(NULL, noop_queue_job, NULL), DESYNC_EINVAL);
    CHECK_EQ(desync_queue_try_sync(q, NULL, NULL), DESYNC_EINVAL);

    CHECK_EQ(desync_scheduler_spawn_thread(NULL), DESYNC_EINVAL);

    /* NULL is accepted (and ignored) by these. */
    desync_release(NULL);
    CHECK(desync_retain(NULL) == NULL);
    desync_queue_release(NULL);
    CHECK(desync_queue_retain(NULL) == NULL);
    CHECK(desync_get_queue(NULL) == NULL);
    CHECK(desync_data(NULL) == NULL);
    desync_scheduler_free(NULL);

    /* Refused calls queued nothing: the object still works normally. */
    CHECK_EQ(desync_sync(d, set_int, (void *)(intptr_t)3), 0);
    CHECK_EQ(desync_queue_sync(q, noop_queue_job, NULL), 0);
    desync_queue_release(q);
    desync_release(d);
    CHECK_EQ(x, 3);

    /* A NULL data pointer is just data. */
    desync_t *e = desync_new(NULL, NULL);
    CHECK(e);
    CHECK(desync_data(e) == NULL);
    CHECK_EQ(desync_sync(e, noop_job, NULL), 0);
    desync_release(e);
    return 0;
}

TEST(core_strerror) {
    const int codes[] = {0,
                         DESYNC_EINVAL,
                         DESYNC_ENOMEM,
                         DESYNC_EBUSY,
                         DESYNC_EDEADLK,
                         DESYNC_ECANCELED,
                         DESYNC_ETIMEDOUT,
                         DESYNC_EAGAIN,
                         DESYNC_EOF,
                         DESYNC_EPIPE};
    const size_t n = sizeof codes / sizeof codes[0];
    const char *msg[sizeof codes / sizeof codes[0]];
    for (size_t i = 0; i < n; i++) {
        msg[i] = desync_strerror(codes[i]);
        CHECK(msg[i] != NULL);
        CHECK(msg[i][0] != '\0');
    }
    for (size_t i = 0; i < n; i++)
        for (size_t j = i + 1; j < n; j++)
            if (strcmp(msg[i], msg[j]) == 0) {
                fprintf(stderr, "codes %d and %d share \"%s\"\n", codes[i], codes[j], msg[i]);
                return 1;
            }
    /* Unknown codes still get a string. */
    CHECK(desync_strerror(-1000) != NULL);
    CHECK(desync_strerror(12345) != NULL);
    CHECK(desync_strerror(-2147483647 - 1) != NULL);
    return 0;
}

/* ------------------------------------------------ release from own job */

struct selfrel {
    struct tracked t;
    desync_t *d;
    atomic_int release_returned;
    int destroyed_seen_in_job; /* destroy count right after release, in the job */
    int release_returned_at_destroy;
};

static void selfrel_job(void *data, void *arg) {
    struct selfrel *s = data;
    (void)arg;
    desync_release(s->d); /* may be the last reference: must not deadlock */
    s->destroyed_seen_in_job = atomic_load(&s->t.destroyed);
    s->t.jobs++;
    atomic_store(&s->release_returned, 1);
}

static void selfrel_destroy(void *data) {
    struct selfrel *s = data;
    s->release_returned_at_destroy = atomic_load(&s->release_returned);
    tracked_destroy(data);
}

TEST(core_release_from_own_job) {
    /* The job drops the only reference while later jobs are still queued. */
    static struct selfrel s;
    memset(&s, 0, sizeof s);
    s.d = desync_new(&s, selfrel_destroy);
    CHECK(s.d);
    static struct blocker b;
    memset(&b, 0, sizeof b);
    CHECK_EQ(desync_desync(s.d, blocker_job, &b), 0);
    CHECK_EQ(desync_desync(s.d, selfrel_job, NULL), 0); /* owns our reference now */
    CHECK_EQ(desync_desync(s.d, tracked_job, NULL), 0);
    atomic_store(&b.go, 1);
    CHECK(test_wait_flag(&s.t.destroyed, 5000));
    test_sleep_ms(20);
    CHECK_EQ(atomic_load(&s.t.destroyed), 1);
    CHECK_EQ(s.destroyed_seen_in_job, 0);       /* not destroyed inside the job */
    CHECK_EQ(s.release_returned_at_destroy, 1); /* destroy ran after the job */
    CHECK_EQ(s.t.jobs_at_destroy, 2);           /* and after the job queued behind it */

    /* Same on a 0-thread scheduler: the job drops the last reference while
     * nothing runs the queue; scheduler_free runs the backlog here, and the
     * destruction comes after the releasing job and the job behind it. */
    desync_scheduler_t *s0 = desync_scheduler_new(0);
    CHECK(s0);
    static struct selfrel s2;
    memset(&s2, 0, sizeof s2);
    s2.d = desync_new_on(s0, &s2, selfrel_destroy);
    CHECK(s2.d);
    CHECK_EQ(desync_desync(s2.d, selfrel_job, NULL), 0); /* owns our reference */
    CHECK_EQ(desync_desync(s2.d, tracked_job, NULL), 0);
    test_sleep_ms(20);
    CHECK_EQ(atomic_load(&s2.t.destroyed), 0); /* nothing ran yet */
    desync_scheduler_free(s0);
    CHECK_EQ(atomic_load(&s2.t.destroyed), 1);
    CHECK_EQ(s2.t.jobs_at_destroy, 2);
    CHECK_EQ(s2.destroyed_seen_in_job, 0);
    CHECK_EQ(s2.release_returned_at_destroy, 1);

    /* Two references, released by the job and by us in either order: the
     * destruction still comes after both jobs. */
    static struct selfrel s3;
    memset(&s3, 0, sizeof s3);
    s3.d = desync_new(&s3, selfrel_destroy);
    CHECK(s3.d);
    CHECK(desync_retain(s3.d) == s3.d);
    CHECK_EQ(desync_desync(s3.d, selfrel_job, NULL), 0);
    CHECK_EQ(desync_desync(s3.d, tracked_job, NULL), 0);
    desync_release(s3.d);
    CHECK(test_wait_flag(&s3.t.destroyed, 5000));
    test_sleep_ms(20);
    CHECK_EQ(atomic_load(&s3.t.destroyed), 1);
    CHECK_EQ(s3.t.jobs_at_destroy, 2);
    CHECK_EQ(s3.destroyed_seen_in_job, 0);
    return 0;
}

TEST(core_release_inside_sync_job) {
    static struct selfrel s;
    memset(&s, 0, sizeof s);
    s.d = desync_new(&s, selfrel_destroy);
    CHECK(s.d);
    /* The sync job drops the last reference; the sync must still return. */
    CHECK_EQ(desync_sync(s.d, selfrel_job, NULL), 0);
    CHECK(test_wait_flag(&s.t.destroyed, 5000));
    CHECK_EQ(s.destroyed_seen_in_job, 0);
    CHECK_EQ(s.release_returned_at_destroy, 1);
    test_sleep_ms(20);
    CHECK_EQ(atomic_load(&s.t.destroyed), 1);
    return 0;
}

/* --------------------------------------------------------------- queues */

struct qlog {
    int order[256];
    int n;
    atomic_int ran;
};

struct qlog_arg {
    struct qlog *log;
    int value;
};

static void qlog_job(void *arg) {
    struct qlog_arg *a = arg;
    if (a->log->n < 256)
        a->log->order[a->log->n] = a->value;
    a->log->n++;
    atomic_fetch_add(&a->log->ran, 1);
}

static void qlog_slow_job(void *arg) {
    test_sleep_ms(20);
    qlog_job(arg);
}

static struct qcopy_state {
    int n, errors;
} g_qcopy;

static void qcopy_job(void *arg) {
    size_t size = copy_sizes[g_qcopy.n % NCOPY_SIZES];
    const unsigned char *p = arg;
    for (size_t i = 0; i < size; i++)
        if (p[i] != copy_pattern(i, size, 0)) {
            g_qcopy.errors++;
            break;
        }
    g_qcopy.n++;
}

TEST(core_queue_api) {
    desync_queue_t *q = desync_queue_new(NULL);
    CHECK(q);
    CHECK(desync_queue_retain(q) == q);
    desync_queue_release(q); /* back to one reference */

    /* Order across desync / copy / sync. */
    static struct qlog l;
    memset(&l, 0, sizeof l);
    static struct qlog_arg args[200];
    for (int i = 0; i < 200; i++) {
        args[i].log = &l;
        args[i].value = i;
    }
    for (int i = 0; i < 100; i++)
        CHECK_EQ(desync_queue_desync(q, qlog_job, &args[i]), 0);
    for (int i = 100; i < 150; i++) {
        struct qlog_arg tmp = {&l, i}; /* copied: tmp dies right away */
        CHECK_EQ(desync_queue_desync_copy(q, qlog_job, &tmp, sizeof tmp), 0);
    }
    CHECK_EQ(desync_queue_sync(q, qlog_job, &args[150]), 0);
    CHECK_EQ(l.n, 151);
    for (int i = 0; i < 151; i++)
        CHECK_EQ(l.order[i], i);

    /* try_sync on the idle queue runs on this thread. */
    struct try_probe p = {0};
    CHECK_EQ(desync_queue_try_sync(q, try_probe_queue_job, &p), 0);
    CHECK_EQ(atomic_load(&p.ran), 1);
    CHECK(pthread_equal(p.thread, pthread_self()));

    /* Busy queue: EBUSY, job not run. */
    static struct blocker b;
    memset(&b, 0, sizeof b);
    CHECK_EQ(desync_queue_desync(q, blocker_queue_job, &b), 0);
    CHECK(test_wait_flag(&b.started, 5000));
    struct try_probe p2 = {0};
    int rc = desync_queue_try_sync(q, try_probe_queue_job, &p2);
    atomic_store(&b.go, 1);
    CHECK_EQ(rc, DESYNC_EBUSY);
    CHECK_EQ(desync_queue_sync(q, noop_queue_job, NULL), 0);
    CHECK_EQ(atomic_load(&p2.ran), 0);

    /* Copies of every size. */
    static unsigned char buf[4096];
    memset(&g_qcopy, 0, sizeof g_qcopy);
    for (size_t k = 0; k < NCOPY_SIZES; k++) {
        for (size_t i = 0; i < copy_sizes[k]; i++)
            buf[i] = copy_pattern(i, copy_sizes[k], 0);
        CHECK_EQ(desync_queue_desync_copy(q, qcopy_job, buf, copy_sizes[k]), 0);
        memset(buf, 0xEE, sizeof buf);
    }
    CHECK_EQ(desync_queue_sync(q, noop_queue_job, NULL), 0);
    CHECK_EQ(g_qcopy.n, (int)NCOPY_SIZES);
    CHECK_EQ(g_qcopy.errors, 0);

    /* Releasing with slow jobs queued loses nothing. */
    static struct qlog l2;
    memset(&l2, 0, sizeof l2);
    static struct qlog_arg args2[5];
    for (int i = 0; i < 5; i++) {
        args2[i].log = &l2;
        args2[i].value = i;
        CHECK_EQ(desync_queue_desync(q, qlog_slow_job, &args2[i]), 0);
    }
    desync_queue_release(q);
    CHECK(test_wait_count(&l2.ran, 5, 5000));
    for (int i = 0; i < 5; i++)
        CHECK_EQ(l2.order[i], i);

    /* A queue on a 0-thread scheduler: sync runs the backlog on this thread. */
    desync_scheduler_t *s0 = desync_scheduler_new(0);
    CHECK(s0);
    desync_queue_t *q0 = desync_queue_new(s0);
    CHECK(q0);
    static struct qlog l3;
    memset(&l3, 0, sizeof l3);
    static struct qlog_arg args3[4];
    for (int i = 0; i < 4; i++) {
        args3[i].log = &l3;
        args3[i].value = i;
    }
    for (int i = 0; i < 3; i++)
        CHECK_EQ(desync_queue_desync(q0, qlog_job, &args3[i]), 0);
    test_sleep_ms(20);
    CHECK_EQ(atomic_load(&l3.ran), 0);
    CHECK_EQ(desync_queue_sync(q0, qlog_job, &args3[3]), 0);
    CHECK_EQ(l3.n, 4);
    for (int i = 0; i < 4; i++)
        CHECK_EQ(l3.order[i], i);
    desync_queue_release(q0);
    desync_scheduler_free(s0);
    return 0;
}

static void qlog_obj_job(void *data, void *arg) {
    (void)data;
    qlog_job(arg);
}

TEST(core_get_queue) {
    static struct tracked t;
    memset(&t, 0, sizeof t);
    desync_t *d = desync_new(&t, tracked_destroy);
    CHECK(d);
    desync_queue_t *q = desync_get_queue(d);
    CHECK(q);
    CHECK(desync_get_queue(d) == q);

    /* Queue jobs and object jobs share one order. */
    static struct qlog l;
    memset(&l, 0, sizeof l);
    static struct qlog_arg args[100];
    for (int i = 0; i < 100; i++) {
        args[i].log = &l;
        args[i].value = i;
        if (i % 2)
            CHECK_EQ(desync_queue_desync(q, qlog_job, &args[i]), 0);
        else
            CHECK_EQ(desync_desync(d, qlog_obj_job, &args[i]), 0);
    }
    CHECK_EQ(desync_sync(d, noop_job, NULL), 0);
    CHECK_EQ(l.n, 100);
    for (int i = 0; i < 100; i++)
        CHECK_EQ(l.order[i], i);

    /* A retained queue outlives its object. */
    CHECK(desync_queue_retain(q) == q);
    CHECK_EQ(desync_desync(d, tracked_job, NULL), 0);
    desync_release(d);
    CHECK_EQ(atomic_load(&t.destroyed), 1);
    CHECK_EQ(t.jobs_at_destroy, 1);
    static struct qlog l2;
    memset(&l2, 0, sizeof l2);
    struct qlog_arg a2 = {&l2, 7};
    CHECK_EQ(desync_queue_desync(q, qlog_job, &a2), 0);
    CHECK_EQ(desync_queue_sync(q, qlog_job, &a2), 0);
    CHECK_EQ(l2.n, 2);
    desync_queue_release(q);
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

/* ------------------------------------------------------------- fairness */

struct fair {
    desync_queue_t *a;
    atomic_int stop;
    atomic_int a_runs;
    atomic_int a_done;
    atomic_int a_errors;
    atomic_int b_ran;
    int a_runs_when_b_ran;
};

static void fair_a_job(void *arg) {
    struct fair *f = arg;
    atomic_fetch_add(&f->a_runs, 1);
    if (atomic_load(&f->stop)) {
        atomic_store(&f->a_done, 1);
        return;
    }
    if (desync_queue_desync(f->a, fair_a_job, f) != 0) {
        atomic_fetch_add(&f->a_errors, 1);
        atomic_store(&f->a_done, 1);
    }
}

static void fair_b_job(void *arg) {
    struct fair *f = arg;
    f->a_runs_when_b_ran = atomic_load(&f->a_runs);
    atomic_store(&f->b_ran, 1);
}

static int fair_a_moved(void *arg) {
    struct fair *f = arg;
    return atomic_load(&f->a_runs) > f->a_runs_when_b_ran + 100;
}

TEST(core_fairness) {
    desync_scheduler_t *s = desync_scheduler_new(1);
    CHECK(s);
    static struct fair f;
    memset(&f, 0, sizeof f);
    f.a = desync_queue_new(s);
    desync_queue_t *b = desync_queue_new(s);
    CHECK(f.a && b);

    /* A never runs dry; with one thread, B only runs if A yields it. */
    CHECK_EQ(desync_queue_desync(f.a, fair_a_job, &f), 0);
    CHECK(test_wait_until(fair_a_moved, &f, 5000)); /* A is going */
    CHECK_EQ(desync_queue_desync(b, fair_b_job, &f), 0);
    int b_ran = test_wait_flag(&f.b_ran, 5000);
    /* ...and A is still going afterwards. */
    int a_moved = b_ran && test_wait_until(fair_a_moved, &f, 5000);
    atomic_store(&f.stop, 1);
    int a_stopped = test_wait_flag(&f.a_done, 5000);
    if (!b_ran)
        fprintf(stderr, "queue B starved by a self-requeuing queue A (%d runs of A)\n",
                atomic_load(&f.a_runs));
    CHECK(b_ran);
    CHECK(a_moved);
    CHECK(a_stopped);
    CHECK_EQ(atomic_load(&f.a_errors), 0);
    desync_queue_release(f.a);
    desync_queue_release(b);
    desync_scheduler_free(s);
    return 0;
}

/* ---------------------------------------------------------- idle threads */

static uint64_t process_cpu_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

TEST(core_idle_threads_sleep) {
    /* Make threads on the default and on a private scheduler, then stop. */
    desync_scheduler_t *s = desync_scheduler_new(4);
    CHECK(s);
    for (int i = 0; i < 4; i++)
        CHECK_EQ(desync_scheduler_spawn_thread(s), 0);
    static int counters[8];
    desync_t *objs[8];
    for (int i = 0; i < 8; i++) {
        counters[i] = 0;
        objs[i] = i < 4 ? desync_new(&counters[i], NULL) : desync_new_on(s, &counters[i], NULL);
        CHECK(objs[i]);
    }
    for (int round = 0; round < 500; round++)
        for (int i = 0; i < 8; i++)
            CHECK_EQ(desync_desync(objs[i], count_job, NULL), 0);
    for (int i = 0; i < 8; i++) {
        CHECK_EQ(desync_sync(objs[i], noop_job, NULL), 0);
        CHECK_EQ(counters[i], 500);
        desync_release(objs[i]);
    }

    /* Give spinning threads time to go to sleep, then measure. */
    test_sleep_ms(300);
    uint64_t cpu0 = process_cpu_ns(), t0 = test_now_ns();
    test_sleep_ms(300);
    uint64_t cpu = process_cpu_ns() - cpu0, wall = test_now_ns() - t0;
#ifdef DESYNC_TEST_SANITIZED
    const uint64_t limit = 100000000u; /* sanitizer runtimes have their own threads */
#else
    const uint64_t limit = 50000000u;
#endif
    fprintf(stderr, "idle: %.1f ms CPU in %.1f ms (%zu + %zu threads alive)\n", cpu / 1e6,
            wall / 1e6, desync_scheduler_thread_count(s),
            desync_scheduler_thread_count(desync_scheduler_default()));
    desync_scheduler_free(s);
    CHECK(cpu < limit); /* a busy-looping idle thread would use ~all of wall */
    return 0;
}

/* ------------------------------------------------------ scheduler_free */

struct slow_counter {
    atomic_int count;
    int order_errors;
    int next;
};

static void slow_counter_job(void *data, void *arg) {
    struct slow_counter *c = data;
    int i = (int)(intptr_t)arg;
    if (i % 20 == 0)
        test_sleep_ms(1);
    if (i != c->next)
        c->order_errors++;
    c->next++;
    atomic_fetch_add(&c->count, 1);
}

static void counter_queue_job(void *arg) { atomic_fetch_add((atomic_int *)arg, 1); }

TEST(core_scheduler_free_waits) {
    /* With threads: free waits until the queued work has run. */
    desync_scheduler_t *s = desync_scheduler_new(2);
    CHECK(s);
    static struct slow_counter c;
    memset(&c, 0, sizeof c);
    desync_t *d = desync_new_on(s, &c, NULL);
    CHECK(d);
    for (int i = 0; i < 200; i++)
        CHECK_EQ(desync_desync(d, slow_counter_job, (void *)(intptr_t)i), 0);
    desync_scheduler_free(s);
    CHECK_EQ(atomic_load(&c.count), 200);
    CHECK_EQ(desync_sync(d, noop_job, NULL), 0);
    CHECK_EQ(c.order_errors, 0);
    desync_release(d);

    /* With 0 threads: free runs the backlog on the calling thread, including
     * that of a queue whose last reference was already dropped. */
    desync_scheduler_t *s0 = desync_scheduler_new(0);
    CHECK(s0);
    static struct slow_counter c0;
    memset(&c0, 0, sizeof c0);
    desync_t *d0 = desync_new_on(s0, &c0, NULL);
    CHECK(d0);
    for (int i = 0; i < 10; i++)
        CHECK_EQ(desync_desync(d0, slow_counter_job, (void *)(intptr_t)i), 0);
    desync_queue_t *q0 = desync_queue_new(s0);
    CHECK(q0);
    static atomic_int qcount;
    atomic_store(&qcount, 0);
    for (int i = 0; i < 3; i++)
        CHECK_EQ(desync_queue_desync(q0, counter_queue_job, &qcount), 0);
    desync_queue_release(q0);
    desync_scheduler_free(s0);
    CHECK_EQ(atomic_load(&c0.count), 10);
    CHECK_EQ(atomic_load(&qcount), 3);
    desync_release(d0);
    return 0;
}

TEST(core_objects_outlive_scheduler) {
    desync_scheduler_t *s = desync_scheduler_new(2);
    CHECK(s);
    static struct thread_log l;
    memset(&l, 0, sizeof l);
    desync_t *d = desync_new_on(s, &l, NULL);
    CHECK(d);
    desync_queue_t *q = desync_queue_new(s);
    CHECK(q);
    CHECK_EQ(desync_desync(d, thread_log_job, (void *)(intptr_t)0), 0);
    CHECK_EQ(desync_sync(d, thread_log_job, (void *)(intptr_t)1), 0);
    desync_scheduler_free(s);

    /* Still usable: work runs on the threads that sync (or queue) it. */
    pthread_t th;
    CHECK_EQ(desync_sync(d, record_thread, &th), 0);
    CHECK(pthread_equal(th, pthread_self()));
    CHECK_EQ(desync_desync(d, thread_log_job, (void *)(intptr_t)2), 0);
    CHECK_EQ(desync_desync(d, thread_log_job, (void *)(intptr_t)3), 0);
    CHECK_EQ(desync_sync(d, thread_log_job, (void *)(intptr_t)4), 0);
    CHECK_EQ(l.n, 5);
    for (int i = 0; i < 5; i++)
        CHECK_EQ(l.order[i], i);
    struct try_probe p = {0};
    CHECK_EQ(desync_try_sync(d, try_probe_job, &p), 0);
    CHECK_EQ(atomic_load(&p.ran), 1);

    static atomic_int qcount;
    atomic_store(&qcount, 0);
    CHECK_EQ(desync_queue_desync(q, counter_queue_job, &qcount), 0);
    CHECK_EQ(desync_queue_sync(q, counter_queue_job, &qcount), 0);
    CHECK_EQ(atomic_load(&qcount), 2);

    desync_queue_release(q);
    desync_release(d); /* the scheduler's memory goes with the last queue */
    return 0;
}

/* --------------------------------------------------- process exit */

/* Set in the forked child: it leaks on purpose (as real programs do at exit),
 * so LeakSanitizer must not turn that into a failing exit status. */
static volatile int g_lsan_off;
int __lsan_is_turned_off(void);
__attribute__((visibility("default"))) int __lsan_is_turned_off(void) { return g_lsan_off; }

static void exit_slow_job(void *data, void *arg) {
    (void)data;
    test_sleep_ms((unsigned)(intptr_t)arg);
}

/* Uses the library like a small program would, then returns. */
static int exit_child_body(int variant) {
    static int x, y;
    desync_t *d = desync_new(&x, NULL);
    desync_scheduler_t *s = desync_scheduler_new(3);
    if (!d || !s)
        return 2;
    desync_t *e = desync_new_on(s, &y, NULL);
    if (!e)
        return 2;
    for (int i = 0; i < 100; i++) {
        desync_desync(d, count_job, NULL);
        desync_desync(e, count_job, NULL);
    }
    if (desync_scheduler_spawn_thread(s) != 0)
        return 3;
    int v = 0;
    desync_sync(d, get_int, &v);
    desync_sync(e, get_int, &v);
    if (variant == 1) {
        /* Still busy in the background when the program ends. */
        desync_desync(d, exit_slow_job, (void *)(intptr_t)200);
        desync_desync(e, exit_slow_job, (void *)(intptr_t)200);
    } else {
        desync_release(d);
        desync_release(e);
        test_sleep_ms(20); /* threads idle (spinning or asleep) */
    }
    return 0; /* scheduler s intentionally never freed */
}

TEST(core_exit_with_idle_threads) {
    for (int variant = 0; variant < 2; variant++) {
        fflush(stdout);
        fflush(stderr);
        pid_t pid = fork();
        CHECK(pid >= 0);
        if (pid == 0) {
            g_lsan_off = 1;
            exit(exit_child_body(variant)); /* same as returning from main */
        }
        int status = 0;
        uint64_t end = test_now_ns() + 10000000000u;
        pid_t r;
        while ((r = waitpid(pid, &status, WNOHANG)) == 0 && test_now_ns() < end)
            test_sleep_ms(2);
        if (r == 0) {
            kill(pid, SIGKILL);
            waitpid(pid, &status, 0);
            fprintf(stderr, "variant %d: process did not exit within 10 s\n", variant);
            return 1;
        }
        CHECK_EQ(r, pid);
        CHECK(WIFEXITED(status));
        CHECK_EQ(WEXITSTATUS(status), 0);
    }
    return 0;
}

/* ------------------------------------------------ non-blocking releases */

TEST(core_release_not_last_does_not_block) {
    /* The job waits for a flag that is set only after release returned: a
     * release that waited for the job would leave it without the flag. */
    int x = 0;
    desync_t *d = desync_new(&x, NULL);
    CHECK(d);
    CHECK(desync_retain(d) == d);
    static struct handshake h;
    memset(&h, 0, sizeof h);
    CHECK_EQ(desync_desync(d, handshake_job, &h), 0);
    desync_release(d); /* not the last reference */
    atomic_store(&h.go, 1);
    CHECK_EQ(desync_sync(d, noop_job, NULL), 0);
    CHECK_EQ(atomic_load(&h.saw_go), 1);
    desync_release(d);

    /* desync_queue_release never blocks, even for the last reference. */
    desync_queue_t *q = desync_queue_new(NULL);
    CHECK(q);
    static struct handshake hq;
    memset(&hq, 0, sizeof hq);
    CHECK_EQ(desync_queue_desync(q, handshake_queue_job, &hq), 0);
    desync_queue_release(q);
    atomic_store(&hq.go, 1);
    CHECK(test_wait_flag(&hq.done, 5000));
    CHECK_EQ(atomic_load(&hq.saw_go), 1);
    return 0;
}

TEST(core_release_runs_backlog_no_threads) {
    /* With 0 threads, the last release runs the queued jobs itself. */
    desync_scheduler_t *s0 = desync_scheduler_new(0);
    CHECK(s0);
    static struct tracked t;
    memset(&t, 0, sizeof t);
    desync_t *d = desync_new_on(s0, &t, tracked_destroy);
    CHECK(d);
    for (int i = 0; i < 3; i++)
        CHECK_EQ(desync_desync(d, tracked_job, NULL), 0);
    desync_release(d);
    CHECK_EQ(atomic_load(&t.destroyed), 1);
    CHECK_EQ(t.jobs_at_destroy, 3);
    desync_scheduler_free(s0);
    return 0;
}

/* ------------------------------------- scheduler_free from its own job */

struct free_self {
    desync_scheduler_t *s;
    atomic_int returned;
};

static void free_self_job(void *data, void *arg) {
    (void)data;
    struct free_self *f = arg;
    desync_scheduler_free(f->s); /* not allowed here: must return, not free */
    atomic_store(&f->returned, 1);
}

TEST(core_scheduler_free_from_own_job) {
    desync_scheduler_t *s = desync_scheduler_new(2);
    CHECK(s);
    int x = 0;
    desync_t *d = desync_new_on(s, &x, NULL);
    CHECK(d);
    static struct free_self f;
    memset(&f, 0, sizeof f);
    f.s = s;
    CHECK_EQ(desync_desync(d, free_self_job, &f), 0);
    CHECK(test_wait_flag(&f.returned, 5000));
    /* The scheduler was not freed: it still runs background work. */
    CHECK_EQ(desync_scheduler_max_threads(s), 2);
    static struct handshake h;
    memset(&h, 0, sizeof h);
    CHECK_EQ(desync_desync(d, handshake_job, &h), 0);
    atomic_store(&h.go, 1);
    CHECK(test_wait_flag(&h.done, 5000));
    CHECK_EQ(atomic_load(&h.saw_go), 1);
    desync_release(d);
    desync_scheduler_free(s);
    return 0;
}

/* ------------------------------------------- default threads go away */

static int default_has_no_threads(void *unused) {
    (void)unused;
    return desync_scheduler_thread_count(desync_scheduler_default()) == 0;
}

TEST(core_default_threads_exit_when_idle) {
    /* Start several default-scheduler threads, then leave them idle. */
    enum { N = 6 };
    static int counters[N];
    desync_t *objs[N];
    for (int i = 0; i < N; i++) {
        objs[i] = desync_new(&counters[i], NULL);
        CHECK(objs[i]);
    }
    for (int round = 0; round < 200; round++)
        for (int i = 0; i < N; i++)
            CHECK_EQ(desync_desync(objs[i], count_job, NULL), 0);
    for (int i = 0; i < N; i++)
        desync_release(objs[i]);
    CHECK_EQ(counters[0], 200);
    /* "exit after a few seconds without work": allow plenty. */
    int gone = test_wait_until(default_has_no_threads, NULL, 20000);
    if (!gone)
        fprintf(stderr, "%zu default threads still alive after 20 s idle\n",
                desync_scheduler_thread_count(desync_scheduler_default()));
    CHECK(gone);

    /* And it starts threads again on demand. */
    int y = 0;
    desync_t *d = desync_new(&y, NULL);
    CHECK(d);
    static struct handshake h;
    memset(&h, 0, sizeof h);
    CHECK_EQ(desync_desync(d, handshake_job, &h), 0);
    atomic_store(&h.go, 1);
    CHECK(test_wait_flag(&h.done, 5000));
    CHECK_EQ(atomic_load(&h.saw_go), 1);
    desync_release(d);
    return 0;
}
