/*
 * Futures under load: promises completed from several threads while others
 * poll, wait, wait_for, then, watch the fd or free; many future_desync,
 * future_sync and after jobs on a few objects from several threads, mixed
 * with sync and desync, checked for order and exactly-once. The races around
 * completion are in test_future_race.c.
 * Loops shrink 10x in sanitizer builds (-DDESYNC_TEST_SANITIZED).
 */
#include <desync.h>

#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdint.h>
#include <string.h>

#include "test.h"

/* ===================================================== promises, readers */

enum { P_PRODUCERS = 2, P_CONSUMERS = 3, P_MODES = 7 };

struct pslot {
    desync_future_t *f;
    desync_promise_t *p;
    int cancel;
    int mode;
    atomic_int then_calls;
    atomic_int wakes;
    int expect_wakes; /* set by the consumer */
    atomic_int released; /* the consumer no longer holds f */
    atomic_int started;  /* the consumer is about to read f */
};

static struct pslot *g_slots;
static int g_nslots;

static int expect_ok(struct pslot *s, int i, int rc, void *v, const char *how) {
    int want = s->cancel ? DESYNC_ECANCELED : 0;
    if (rc != want || (!s->cancel && VI(v) != 2 * i + 1) || (s->cancel && v != NULL)) {
        FAILF("slot %d (%s): rc %d value %d, want rc %d value %d\n", i, how, rc, VI(v), want,
              s->cancel ? 0 : 2 * i + 1);
        return 0;
    }
    return 1;
}

struct pthr {
    int k;
    uint32_t seed;
};

static void *producer_main(void *arg) {
    struct pthr *t = arg;
    gate_wait();
    for (int i = t->k; i < g_nslots; i += P_PRODUCERS) {
        struct pslot *s = &g_slots[i];
        /* Complete it about when its consumer gets to it, but do not wait
         * long: consumers may be blocked on the other producer. */
        uint64_t end = test_now_ns() + 20000;
        while (!atomic_load(&s->started) && test_now_ns() < end) {
        }
        test_spin_ns(test_rnd(&t->seed) % 3000);
        if (s->cancel)
            desync_promise_cancel(s->p);
        else if (desync_promise_complete(s->p, IV(2 * i + 1)) != 0)
            FAILF("complete %d failed\n", i);
        if (test_rnd(&t->seed) % 8 == 0)
            sched_yield();
    }
    return NULL;
}

static void slot_wake(void *ctx) { atomic_fetch_add(&((struct pslot *)ctx)->wakes, 1); }

static void slot_then(int status, void *value, void *arg) {
    struct pslot *s = arg;
    int i = (int)(s - g_slots);
    expect_ok(s, i, status, value, "then");
    atomic_fetch_add(&s->then_calls, 1);
}

static void *consumer_main(void *arg) {
    struct pthr *t = arg;
    gate_wait();
    for (int i = t->k; i < g_nslots; i += P_CONSUMERS) {
        struct pslot *s = &g_slots[i];
        void *v = NULL;
        int rc;
        atomic_store(&s->started, 1); /* producers look at this */
        switch (s->mode) {
        case 0:
            rc = desync_future_wait(s->f, &v);
            expect_ok(s, i, rc, v, "wait");
            break;
        case 1:
            rc = desync_future_wait_for(s->f, LONG_NS, &v);
            expect_ok(s, i, rc, v, "wait_for");
            break;
        case 2: {
            desync_waker_t w = {slot_wake, s};
            rc = desync_future_poll(s->f, &v, &w);
            if (rc == DESYNC_EAGAIN) {
                s->expect_wakes = 1;
                uint64_t end = test_now_ns() + LONG_NS;
                while (!atomic_load(&s->wakes) && test_now_ns() < end)
                    sched_yield();
                if (!atomic_load(&s->wakes)) {
                    FAILF("slot %d: waker never called\n", i);
                    break;
                }
                rc = desync_future_poll(s->f, &v, NULL);
            }
            expect_ok(s, i, rc, v, "poll");
            break;
        }
        case 3:
            if (desync_future_then(s->f, slot_then, s) != 0)
                FAILF("then %d failed\n", i);
            break;
        case 4: {
            int fd = desync_future_fd(s->f);
            if (fd < 0) {
                FAILF("slot %d: fd %d\n", i, fd);
                break;
            }
            struct pollfd pfd = {fd, POLLIN, 0};
            do {
                rc = poll(&pfd, 1, (int)LONG_MS);
            } while (rc < 0 && errno == EINTR);
            if (rc != 1) {
                FAILF("slot %d: fd not readable (%d)\n", i, rc);
                break;
            }
            rc = desync_future_poll(s->f, &v, NULL);
            expect_ok(s, i, rc, v, "fd");
            break;
        }
        case 5:
            /* Dropped, maybe before completion. */
            break;
        case 6: {
            /* Short timed waits until it completes. */
            uint64_t end = test_now_ns() + LONG_NS;
            while ((rc = desync_future_wait_for(s->f, test_rnd(&t->seed) % 20000, &v)) ==
                   DESYNC_ETIMEDOUT) {
                if (test_now_ns() > end)
                    break;
            }
            expect_ok(s, i, rc, v, "short wait_for");
            break;
        }
        }
        if (s->mode != 3)
            desync_future_free(s->f);
        atomic_store(&s->released, 1);
    }
    return NULL;
}

TEST(future_stress_promises) {
    g_nslots = TEST_SCALED(20000);
    g_slots = calloc((size_t)g_nslots, sizeof *g_slots);
    CHECK(g_slots);
    atomic_store(&g_errors, 0);
    for (int i = 0; i < g_nslots; i++) {
        struct pslot *s = &g_slots[i];
        s->p = desync_promise_new(&s->f);
        CHECK(s->p && s->f);
        s->cancel = i % 11 == 5;
        s->mode = (i / P_CONSUMERS) % P_MODES;
    }
    pthread_t th[P_PRODUCERS + P_CONSUMERS];
    struct pthr args[P_PRODUCERS + P_CONSUMERS];
    for (int i = 0; i < P_PRODUCERS + P_CONSUMERS; i++) {
        args[i].k = i < P_PRODUCERS ? i : i - P_PRODUCERS;
        args[i].seed = 0x9e3779b9u * (uint32_t)(i + 1);
    }
    atomic_store(&g_gate, 0);
    for (int i = 0; i < P_PRODUCERS + P_CONSUMERS; i++)
        CHECK(pthread_create(&th[i], NULL, i < P_PRODUCERS ? producer_main : consumer_main,
                             &args[i]) == 0);
    atomic_store(&g_gate, 1);
    test_join_threads(th, P_PRODUCERS + P_CONSUMERS);
    CHECK_EQ(atomic_load(&g_errors), 0);
    for (int i = 0; i < g_nslots; i++) {
        struct pslot *s = &g_slots[i];
        CHECK_EQ(atomic_load(&s->released), 1);
        if (s->mode == 3)
            CHECK_EQ(atomic_load(&s->then_calls), 1);
        if (s->mode == 2)
            CHECK_EQ(atomic_load(&s->wakes), s->expect_wakes);
        else
            CHECK_EQ(atomic_load(&s->wakes), 0);
    }
    if (getenv("DESYNC_TEST_VERBOSE")) {
        int pending_polls = 0, polls = 0;
        for (int i = 0; i < g_nslots; i++)
            if (g_slots[i].mode == 2) {
                polls++;
                pending_polls += g_slots[i].expect_wakes;
            }
        fprintf(stderr, "promises: %d slots, %d of %d polls found them pending\n", g_nslots,
                pending_polls, polls);
    }
    free(g_slots);
    g_slots = NULL;
    return 0;
}

/* ============================================ objects, order, exactly-once */

enum { O_OBJS = 3, O_THREADS = 4 };
enum { OK_DESYNC, OK_SYNC, OK_FDESYNC, OK_FSYNC, OK_AFTER, OK_KINDS };
enum { H_WAIT, H_POLL, H_THEN, H_DETACH, H_FREE, H_KINDS };

struct obj_data {
    int last_seq[O_THREADS];
    long runs;
    int errors;
};

struct op {
    int thread, seq, kind, handling, variant;
    int id; /* global, > 0 */
    pthread_t issuer;
    atomic_int ran;
    atomic_int then_calls;
    atomic_int wrong_thread;
};

static desync_t *g_objs[O_OBJS];
static struct obj_data g_obj_data[O_OBJS];
static desync_t *g_helper; /* completes promises from its own jobs */
static struct op *g_ops;
static int g_ops_per_thread;

static void op_run(struct obj_data *o, struct op *op) {
    if (op->seq <= o->last_seq[op->thread]) {
        o->errors++;
        FAILF("op %d: seq %d ran after %d (thread %d)\n", op->id, op->seq,
              o->last_seq[op->thread], op->thread);
    }
    o->last_seq[op->thread] = op->seq;
    o->runs++;
    atomic_fetch_add(&op->ran, 1);
}

static void op_job(void *data, void *arg) { op_run(data, arg); }

struct completion {
    desync_promise_t *p;
    void *value;
};

static void complete_job(void *data, void *arg) {
    (void)data;
    struct completion *c = arg;
    desync_promise_complete(c->p, c->value);
}

/* Completes p with value from a job of the helper object. */
static void complete_via_helper(desync_promise_t *p, void *value) {
    struct completion c = {p, value};
    while (desync_desync_copy(g_helper, complete_job, &c, sizeof c) == DESYNC_ENOMEM)
        sched_yield();
}

static void *op_expect(struct op *op) {
    if (op->kind == OK_AFTER)
        return IV(op->id + 1);
    if (op->variant == 1)
        return NULL;
    return IV(op->id);
}

static desync_future_t *op_async(void *data, void *arg) {
    struct op *op = arg;
    op_run(data, op);
    if (op->kind == OK_FSYNC && (op->handling == H_WAIT || op->handling == H_POLL) &&
        !pthread_equal(pthread_self(), op->issuer))
        atomic_fetch_add(&op->wrong_thread, 1);
    switch (op->variant) {
    case 0:
        return desync_future_ready(IV(op->id));
    case 1:
        return NULL;
    default: {
        desync_future_t *f = NULL;
        desync_promise_t *p = desync_promise_new(&f);
        if (!p)
            return NULL;
        complete_via_helper(p, IV(op->id));
        return f;
    }
    }
}

static void *op_after(void *data, int status, void *value, void *arg) {
    struct op *op = arg;
    if (status != 0 || VI(value) != op->id)
        FAILF("after op %d: status %d value %d\n", op->id, status, VI(value));
    op_run(data, op);
    return IV(op->id + 1);
}

static void op_then(int status, void *value, void *arg) {
    struct op *op = arg;
    if (status != 0 || value != op_expect(op))
        FAILF("then op %d: status %d value %d\n", op->id, status, VI(value));
    atomic_fetch_add(&op->then_calls, 1);
}

static void op_wake(void *ctx) { atomic_fetch_add((atomic_int *)ctx, 1); }

static void handle_future(struct op *op, desync_future_t *f) {
    void *v = NULL;
    int rc;
    switch (op->handling) {
    case H_WAIT:
        rc = desync_future_wait_for(f, LONG_NS, &v);
        if (rc != 0 || v != op_expect(op))
            FAILF("wait op %d (kind %d, variant %d): rc %d value %d\n", op->id, op->kind,
                  op->variant, rc, VI(v));
        desync_future_free(f);
        break;
    case H_POLL: {
        atomic_int wakes = 0;
        desync_waker_t w = {op_wake, &wakes};
        uint64_t end = test_now_ns() + LONG_NS;
        int seen = 0;
        while ((rc = desync_future_poll(f, &v, &w)) == DESYNC_EAGAIN) {
            while (atomic_load(&wakes) == seen && test_now_ns() < end)
                sched_yield();
            if (atomic_load(&wakes) == seen) {
                FAILF("poll op %d (kind %d, variant %d): never woken\n", op->id, op->kind,
                      op->variant);
                break;
            }
            seen = atomic_load(&wakes);
        }
        if (rc != 0 || v != op_expect(op))
            FAILF("poll op %d (kind %d, variant %d): rc %d value %d\n", op->id, op->kind,
                  op->variant, rc, VI(v));
        /* `wakes` is about to go away: the last waker was either called
         * or replaced by the successful poll. */
        desync_future_free(f);
        break;
    }
    case H_THEN:
        if (desync_future_then(f, op_then, op) != 0)
            FAILF("then op %d failed\n", op->id);
        break;
    case H_DETACH:
        desync_future_detach(f);
        break;
    case H_FREE:
        desync_future_free(f);
        break;
    }
}

struct othr {
    int t;
    uint32_t seed;
};

static void *obj_thread_main(void *arg) {
    struct othr *th = arg;
    gate_wait();
    for (int s = 0; s < g_ops_per_thread; s++) {
        struct op *op = &g_ops[th->t * g_ops_per_thread + s];
        desync_t *d = g_objs[test_rnd(&th->seed) % O_OBJS];
        switch (op->kind) {
        case OK_DESYNC:
            if (desync_desync(d, op_job, op) != 0)
                FAILF("desync failed\n");
            break;
        case OK_SYNC:
            if (desync_sync(d, op_job, op) != 0)
                FAILF("sync failed\n");
            break;
        case OK_FDESYNC:
        case OK_FSYNC: {
            desync_future_t *f = op->kind == OK_FDESYNC ? desync_future_desync(d, op_async, op)
                                                        : desync_future_sync(d, op_async, op);
            if (!f) {
                FAILF("future op %d: NULL\n", op->id);
                break;
            }
            handle_future(op, f);
            break;
        }
        case OK_AFTER: {
            desync_future_t *pf = NULL;
            desync_promise_t *p = desync_promise_new(&pf);
            if (!p) {
                FAILF("promise_new failed\n");
                break;
            }
            if (op->variant == 0)
                desync_promise_complete(p, IV(op->id));
            desync_future_t *f = desync_after(d, pf, op_after, op);
            if (!f) {
                FAILF("after op %d: NULL\n", op->id);
                break;
            }
            if (op->variant == 1)
                desync_promise_complete(p, IV(op->id));
            else if (op->variant == 2)
                complete_via_helper(p, IV(op->id));
            handle_future(op, f);
            break;
        }
        }
    }
    return NULL;
}

static void no_destroy(void *data) { (void)data; }

TEST(future_stress_objects) {
    atomic_store(&g_errors, 0);
    g_ops_per_thread = TEST_SCALED(10000);
    int total = g_ops_per_thread * O_THREADS;
    g_ops = calloc((size_t)total, sizeof *g_ops);
    CHECK(g_ops);
    memset(g_obj_data, 0, sizeof g_obj_data);
    for (int i = 0; i < O_OBJS; i++) {
        for (int t = 0; t < O_THREADS; t++)
            g_obj_data[i].last_seq[t] = -1;
        g_objs[i] = desync_new(&g_obj_data[i], no_destroy);
        CHECK(g_objs[i]);
    }
    g_helper = desync_new(NULL, NULL);
    CHECK(g_helper);

    pthread_t th[O_THREADS];
    struct othr args[O_THREADS];
    uint32_t seed = 12345;
    for (int t = 0; t < O_THREADS; t++) {
        args[t].t = t;
        args[t].seed = 0x2545f491u * (uint32_t)(t + 1);
        for (int s = 0; s < g_ops_per_thread; s++) {
            struct op *op = &g_ops[t * g_ops_per_thread + s];
            op->thread = t;
            op->seq = s;
            op->id = t * g_ops_per_thread + s + 1;
            op->kind = (int)(test_rnd(&seed) % OK_KINDS);
            op->handling = (int)(test_rnd(&seed) % H_KINDS);
            op->variant = (int)(test_rnd(&seed) % 3);
        }
    }
    atomic_store(&g_gate, 0);
    for (int t = 0; t < O_THREADS; t++) {
        CHECK(pthread_create(&th[t], NULL, obj_thread_main, &args[t]) == 0);
        for (int s = 0; s < g_ops_per_thread; s++)
            g_ops[t * g_ops_per_thread + s].issuer = th[t];
    }
    /* The issuers were stored before the gate opens (no op ran yet). */
    atomic_store(&g_gate, 1);
    test_join_threads(th, O_THREADS);

    /* Everything queued has run once the objects are released. */
    long runs = 0;
    for (int i = 0; i < O_OBJS; i++)
        desync_release(g_objs[i]); /* blocks until every job ran */
    desync_release(g_helper);
    for (int i = 0; i < O_OBJS; i++) {
        CHECK_EQ(g_obj_data[i].errors, 0);
        runs += g_obj_data[i].runs;
    }
    CHECK_EQ(atomic_load(&g_errors), 0);
    long ran = 0;
    int cancelled = 0;
    for (int i = 0; i < total; i++) {
        struct op *op = &g_ops[i];
        int r = atomic_load(&op->ran);
        ran += r;
        if (op->kind == OK_FSYNC && op->handling == H_FREE) {
            CHECK(r == 0 || r == 1);
            cancelled += r == 0;
        } else if (r != 1) {
            fprintf(stderr, "op %d (kind %d, handling %d, variant %d) ran %d times\n", op->id,
                    op->kind, op->handling, op->variant, r);
            CHECK_EQ(r, 1);
        }
        if (op->handling == H_THEN && op->kind >= OK_FDESYNC)
            CHECK_EQ(atomic_load(&op->then_calls), 1);
        CHECK_EQ(atomic_load(&op->wrong_thread), 0);
    }
    CHECK_EQ(ran, runs);
    if (getenv("DESYNC_TEST_VERBOSE"))
        fprintf(stderr, "objects: %d ops, %ld runs, %d future_syncs cancelled by free\n", total,
                runs, cancelled);
    free(g_ops);
    g_ops = NULL;
    return 0;
}
