/*
 * future_desync and after: an async job's future, and the queue held until
 * that future completes. Starts with the futures scenarios of the Rust
 * desync crate's tests (update data with a future, wait for future, future
 * and sync, double future and sync), then waiting with 0 threads, no thread
 * blocked by waiting queues, ordering, and EDEADLK on the own queue.
 * See test_future.h for how waits are bounded.
 */
#include <desync.h>

#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "test_future.h"

/* -------------------------------------------------------------- helpers */

/*
 * "await f, then store its value in *slot": returns a future that completes
 * (with f's value) only after the value is stored. An async job that returns
 * it holds its queue until then, so *slot may be the job's own data.
 */
struct store_ctx {
    int *slot;
    atomic_int *arrival; /* if set: the order of arrival is stored in order_out */
    int *order_out;
    desync_promise_t *done;
};

static void store_then(int status, void *value, void *arg) {
    struct store_ctx *c = arg;
    *c->slot = status == 0 ? VI(value) : -1;
    if (c->arrival)
        *c->order_out = atomic_fetch_add(c->arrival, 1) + 1;
    desync_promise_t *p = c->done;
    free(c);
    desync_promise_complete(p, value);
}

static desync_future_t *await_into(desync_future_t *f, int *slot, atomic_int *arrival,
                                   int *order_out) {
    if (!f)
        return NULL;
    struct store_ctx *c = malloc(sizeof *c);
    desync_future_t *mine = NULL;
    if (!c)
        return f; /* degrade: the test's checks then fail */
    c->slot = slot;
    c->arrival = arrival;
    c->order_out = order_out;
    c->done = desync_promise_new(&mine);
    if (!c->done) {
        free(c);
        return f;
    }
    desync_future_then(f, store_then, c);
    return mine;
}

/* ================================================================ ports */

TEST(future_update_data_with_future) {
    int val = 0;
    desync_t *d = desync_new(&val, NULL);
    CHECK(d);
    CHECK_EQ(desync_desync(d, sleep_set_42, NULL), 0);
    desync_future_t *f = desync_future_desync(d, ready_int, NULL);
    CHECK(f);
    void *v = NULL;
    CHECK_EQ(desync_future_wait_for(f, LONG_NS, &v), 0);
    CHECK_EQ(VI(v), 42);
    desync_future_free(f);
    desync_release(d);
    return 0;
}

TEST(future_update_data_with_future_1000) {
    int n = TEST_SCALED(1000);
    for (int i = 0; i < n; i++) {
        int val = 0;
        desync_t *d = desync_new(&val, NULL);
        CHECK(d);
        CHECK_EQ(desync_desync(d, set_int, IV(42)), 0);
        CHECK_EQ(desync_desync(d, set_int, IV(43)), 0);
        desync_future_t *f = desync_future_desync(d, ready_int, NULL);
        CHECK(f);
        void *v = NULL;
        CHECK_EQ(desync_future_wait_for(f, LONG_NS, &v), 0);
        CHECK_EQ(VI(v), 43);
        desync_future_free(f);
        desync_release(d);
    }
    return 0;
}

/* 0 -> 1 (desync) -> 2 (after the promise) -> 3 (desync), checked in the jobs. */
struct steps {
    int val;
    int errors;       /* touched only from jobs */
    atomic_int progress; /* read from outside */
};

static void step_to_1(void *data, void *arg) {
    struct steps *s = data;
    if (arg)
        test_sleep_ms((unsigned)VI(arg));
    if (s->val != 0)
        s->errors++;
    s->val = 1;
    atomic_store(&s->progress, 1);
}

static void *step_after(void *data, int status, void *value, void *arg) {
    (void)arg;
    struct steps *s = data;
    if (s->val != 1 || status != 0)
        s->errors++;
    s->val = VI(value);
    atomic_store(&s->progress, 2);
    return IV(4);
}

static void step_to_3(void *data, void *arg) {
    (void)arg;
    struct steps *s = data;
    if (s->val != 2)
        s->errors++;
    s->val = 3;
    atomic_store(&s->progress, 3);
}

static void read_steps(void *data, void *arg) { *(struct steps *)arg = *(struct steps *)data; }

/* mode 0: promise completed by another thread while the queue waits on it;
 * mode 1: completed at once, while the job before the after-node still runs;
 * mode 2: complete before desync_after is even called. */
static int wait_for_future_case(int mode) {
    struct steps s;
    memset(&s, 0, sizeof s);
    desync_t *d = desync_new(&s, NULL);
    CHECK(d);
    desync_future_t *pf = NULL;
    desync_promise_t *p = desync_promise_new(&pf);
    CHECK(p && pf);
    if (mode == 2)
        CHECK_EQ(desync_promise_complete(p, IV(2)), 0);
    CHECK_EQ(desync_desync(d, step_to_1, mode == 1 ? IV(100) : NULL), 0);
    desync_future_t *fa = desync_after(d, pf, step_after, NULL);
    CHECK(fa);
    CHECK_EQ(desync_desync(d, step_to_3, NULL), 0);

    struct completer c;
    if (mode == 0) {
        /* '1' arrives, then the queue is held by the after-node. */
        CHECK(test_wait_count(&s.progress, 1, LONG_MS));
        test_sleep_ms(SHORT_MS);
        CHECK_EQ(atomic_load(&s.progress), 1);
        CHECK(completer_start(&c, p, IV(2), 20, 0));
    } else if (mode == 1) {
        CHECK_EQ(desync_promise_complete(p, IV(2)), 0);
    }
    void *v = NULL;
    CHECK_EQ(desync_future_wait_for(fa, LONG_NS, &v), 0);
    CHECK_EQ(VI(v), 4);
    struct steps out;
    CHECK_EQ(desync_sync(d, read_steps, &out), 0);
    CHECK_EQ(out.val, 3);
    CHECK_EQ(out.errors, 0);
    CHECK_EQ(atomic_load(&s.progress), 3);
    if (mode == 0) {
        completer_join(&c);
        CHECK_EQ(c.rc, 0);
    }
    desync_future_free(fa);
    desync_release(d);
    return 0;
}

TEST(future_wait_for_future) {
    for (int mode = 0; mode < 3; mode++) {
        if (wait_for_future_case(mode)) {
            fprintf(stderr, "wait_for_future: mode %d failed\n", mode);
            return 1;
        }
    }
    return 0;
}

/* A's async job awaits an async job on B, which awaits a promise. */
struct a_job_arg {
    desync_t *b;
    desync_future_t *b_awaits;
};

static desync_future_t *a_await_b(void *data, void *arg) {
    struct a_job_arg *a = arg;
    desync_future_t *fb = desync_future_desync(a->b, return_arg_future, a->b_awaits);
    return await_into(fb, data, NULL, NULL);
}

TEST(future_and_sync) {
    int a_val = 0, b_val = 0;
    desync_t *a = desync_new(&a_val, NULL);
    desync_t *b = desync_new(&b_val, NULL);
    CHECK(a && b);
    desync_future_t *pf = NULL;
    desync_promise_t *p = desync_promise_new(&pf);
    CHECK(p);
    struct a_job_arg arg = {b, pf};
    desync_future_t *fa = desync_future_desync(a, a_await_b, &arg);
    CHECK(fa);
    /* Dropping the handle of a future_desync does not cancel its job. */
    desync_future_free(fa);
    struct completer c;
    CHECK(completer_start(&c, p, IV(42), 50, 0));
    /* The sync queues behind the async job, which holds A until B's result
     * is stored. */
    int out = -1;
    CHECK_EQ(desync_sync(a, get_int, &out), 0);
    CHECK_EQ(out, 42);
    completer_join(&c);
    desync_release(a);
    desync_release(b);
    return 0;
}

/* Three initiators each await a job on one core object; the core jobs sleep
 * and overlap the initiators' requests. Gates order the requests (rather than
 * sleeps), so the core sees them as 1, 2, 3. */
struct core_data {
    int order[3];
    int n;
};

struct initiator {
    desync_t *core;
    int id;
    unsigned core_sleep_ms;
    atomic_int *gate_in; /* wait for this before asking the core (NULL: none) */
    atomic_int gate_out; /* set once this initiator's core job is queued */
    atomic_int *arrival;
    int arrived;         /* order in which the result arrived (from jobs) */
};

static desync_future_t *core_job(void *data, void *arg) {
    struct core_data *c = data;
    struct initiator *in = arg;
    test_sleep_ms(in->core_sleep_ms);
    if (c->n < 3)
        c->order[c->n] = in->id;
    c->n++;
    return desync_future_ready(IV(in->id));
}

static desync_future_t *initiator_job(void *data, void *arg) {
    struct initiator *in = arg;
    if (in->gate_in)
        test_wait_flag(in->gate_in, LONG_MS);
    desync_future_t *f = desync_future_desync(in->core, core_job, in);
    atomic_store(&in->gate_out, 1);
    return await_into(f, data, in->arrival, &in->arrived);
}

static void read_core(void *data, void *arg) {
    *(struct core_data *)arg = *(struct core_data *)data;
}

struct arrived_read {
    struct initiator *in;
    int arrived;
};

/* `arrived` is written by the store callback while the initiator's queue is
 * held, so reading it from a job of that queue is ordered after it. */
static void read_arrived(void *data, void *arg) {
    (void)data;
    struct arrived_read *r = arg;
    r->arrived = r->in->arrived;
}

TEST(future_double_future_and_sync) {
    struct core_data cd;
    memset(&cd, 0, sizeof cd);
    desync_t *core = desync_new(&cd, NULL);
    CHECK(core);
    int vals[3] = {0, 0, 0};
    desync_t *init[3];
    static struct initiator in[3];
    atomic_int arrival = 0;
    unsigned sleeps[3] = {400, 200, 200};
    for (int i = 0; i < 3; i++) {
        init[i] = desync_new(&vals[i], NULL);
        CHECK(init[i]);
        in[i].core = core;
        in[i].id = i + 1;
        in[i].core_sleep_ms = sleeps[i];
        in[i].gate_in = i ? &in[i - 1].gate_out : NULL;
        atomic_init(&in[i].gate_out, 0);
        in[i].arrival = &arrival;
        in[i].arrived = 0;
    }
    for (int i = 0; i < 3; i++) {
        desync_future_t *f = desync_future_desync(init[i], initiator_job, &in[i]);
        CHECK(f);
        desync_future_detach(f);
    }
    /* Syncs in reverse order: each returns once its initiator has stored. */
    for (int i = 2; i >= 0; i--) {
        int out = -1;
        CHECK_EQ(desync_sync(init[i], get_int, &out), 0);
        CHECK_EQ(out, i + 1);
    }
    struct core_data seen;
    CHECK_EQ(desync_sync(core, read_core, &seen), 0);
    CHECK_EQ(seen.n, 3);
    for (int i = 0; i < 3; i++)
        CHECK_EQ(seen.order[i], i + 1);
    for (int i = 0; i < 3; i++) {
        struct arrived_read r = {&in[i], 0};
        CHECK_EQ(desync_sync(init[i], read_arrived, &r), 0);
        CHECK_EQ(r.arrived, i + 1); /* results arrived 1, 2, 3 */
    }
    for (int i = 0; i < 3; i++)
        desync_release(init[i]);
    desync_release(core);
    return 0;
}

/* ----------------------------------------------------------- scheduling */

struct log0 {
    int order[16];
    int n;
    pthread_t threads[16];
};

static void log_job(void *data, void *arg) {
    struct log0 *l = data;
    if (l->n < 16) {
        l->order[l->n] = VI(arg);
        l->threads[l->n] = pthread_self();
    }
    l->n++;
}

static desync_future_t *log_async(void *data, void *arg) {
    log_job(data, arg);
    return desync_future_ready(IV(((struct log0 *)data)->n));
}

TEST(future_wait_zero_threads) {
    desync_scheduler_t *s = desync_scheduler_new(0);
    CHECK(s);
    static struct log0 l;
    memset(&l, 0, sizeof l);
    desync_t *d = desync_new_on(s, &l, NULL);
    CHECK(d);
    for (int i = 0; i < 5; i++)
        CHECK_EQ(desync_desync(d, log_job, IV(i)), 0);
    desync_future_t *f = desync_future_desync(d, log_async, IV(5));
    CHECK(f);
    test_sleep_ms(SHORT_MS);
    CHECK_EQ(desync_scheduler_thread_count(s), 0);
    void *v = NULL;
    CHECK_EQ(desync_future_wait_for(f, LONG_NS, &v), 0);
    CHECK_EQ(VI(v), 6);
    for (int i = 0; i < 6; i++) {
        CHECK_EQ(l.order[i], i);
        CHECK(pthread_equal(l.threads[i], pthread_self()));
    }
    desync_future_free(f);

    /* The job awaits a promise completed later by another thread. */
    desync_future_t *pf = NULL;
    desync_promise_t *p = desync_promise_new(&pf);
    CHECK(p);
    f = desync_future_desync(d, return_arg_future, pf);
    CHECK(f);
    struct completer c;
    CHECK(completer_start(&c, p, IV(42), 100, 0));
    CHECK_EQ(desync_future_wait_for(f, LONG_NS, &v), 0);
    CHECK_EQ(VI(v), 42);
    completer_join(&c);
    desync_future_free(f);

    /* after, and future_sync, on 0 threads. */
    p = desync_promise_new(&pf);
    CHECK(p);
    struct after_seen seen = {1, NULL};
    f = desync_after(d, pf, record_after, &seen);
    CHECK(f);
    CHECK(completer_start(&c, p, IV(43), 20, 0));
    CHECK_EQ(desync_future_wait_for(f, LONG_NS, &v), 0);
    CHECK_EQ(VI(v), 77);
    CHECK_EQ(seen.status, 0);
    CHECK_EQ(VI(seen.value), 43);
    completer_join(&c);
    desync_future_free(f);

    CHECK_EQ(desync_desync(d, log_job, IV(6)), 0);
    f = desync_future_sync(d, log_async, IV(7));
    CHECK(f);
    CHECK_EQ(desync_future_wait_for(f, LONG_NS, &v), 0);
    CHECK_EQ(VI(v), 8);
    CHECK_EQ(l.order[7], 7);
    CHECK(pthread_equal(l.threads[7], pthread_self()));
    desync_future_free(f);
    CHECK_EQ(desync_scheduler_thread_count(s), 0);
    desync_release(d);
    desync_scheduler_free(s);
    return 0;
}

/* A waiter that finds its queue's token waiting for a thread runs the queue
 * itself up to its future's node, and no further: the jobs queued behind
 * stay queued (with 0 threads, until the next wait or release). */
TEST(future_wait_runs_queue_up_to_its_node) {
    desync_scheduler_t *s = desync_scheduler_new(0);
    CHECK(s);
    static struct log0 l;
    memset(&l, 0, sizeof l);
    desync_t *d = desync_new_on(s, &l, NULL);
    CHECK(d);
    for (int round = 0; round < 3; round++) {
        int base = round * 5;
        CHECK_EQ(desync_desync(d, log_job, IV(base)), 0);
        CHECK_EQ(desync_desync(d, log_job, IV(base + 1)), 0);
        desync_future_t *f = desync_future_desync(d, log_async, IV(base + 2));
        CHECK(f);
        CHECK_EQ(desync_desync(d, log_job, IV(base + 3)), 0);
        desync_future_t *g = desync_future_desync(d, log_async, IV(base + 4));
        CHECK(g);
        void *v = NULL;
        CHECK_EQ(desync_future_wait(f, &v), 0);
        CHECK_EQ(VI(v), base + 3);
        CHECK_EQ(l.n, base + 3); /* base + 3 and g's job have not run */
        CHECK_EQ(desync_future_wait(g, &v), 0);
        CHECK_EQ(VI(v), base + 5);
        CHECK_EQ(l.n, base + 5);
        for (int i = 0; i < base + 5; i++) {
            CHECK_EQ(l.order[i], i);
            CHECK(pthread_equal(l.threads[i], pthread_self()));
        }
        desync_future_free(f);
        desync_future_free(g);
    }
    CHECK_EQ(desync_scheduler_thread_count(s), 0);
    desync_release(d);
    desync_scheduler_free(s);
    return 0;
}

struct pend {
    desync_promise_t *p;
    atomic_int made;
};

/* Async job: returns a pending promise's future (completed by the test). */
static desync_future_t *pending_async(void *data, void *arg) {
    (void)data;
    struct pend *pd = arg;
    desync_future_t *f = NULL;
    pd->p = desync_promise_new(&f);
    atomic_store(&pd->made, 1);
    return f;
}

TEST(future_no_thread_blocked) {
    enum { N = 100 };
    desync_scheduler_t *s = desync_scheduler_new(1);
    CHECK(s);
    static desync_t *objs[N];
    static desync_future_t *futs[N];
    static struct pend pends[N];
    static int vals[N];
    for (int i = 0; i < N; i++) {
        atomic_init(&pends[i].made, 0);
        pends[i].p = NULL;
        vals[i] = 0;
        objs[i] = desync_new_on(s, &vals[i], NULL);
        CHECK(objs[i]);
        futs[i] = desync_future_desync(objs[i], pending_async, &pends[i]);
        CHECK(futs[i]);
        CHECK_EQ(desync_desync(objs[i], set_int, IV(i + 1)), 0);
    }
    for (int i = 0; i < N; i++)
        CHECK(test_wait_flag(&pends[i].made, LONG_MS));
    /* 100 queues are waiting on futures; the one thread is still free. */
    int other_val = 0;
    desync_t *other = desync_new_on(s, &other_val, NULL);
    CHECK(other);
    atomic_int ran = 0;
    CHECK_EQ(desync_desync(other, set_flag_job, &ran), 0);
    CHECK(test_wait_flag(&ran, LONG_MS));
    CHECK(desync_scheduler_thread_count(s) <= 1);
    for (int i = 0; i < N; i++)
        CHECK_EQ(desync_future_poll(futs[i], NULL, NULL), DESYNC_EAGAIN);
    for (int i = 0; i < N; i++)
        CHECK_EQ(desync_promise_complete(pends[i].p, IV(1000 + i)), 0);
    for (int i = 0; i < N; i++) {
        void *v = NULL;
        CHECK_EQ(desync_future_wait_for(futs[i], LONG_NS, &v), 0);
        CHECK_EQ(VI(v), 1000 + i);
        desync_future_free(futs[i]);
    }
    for (int i = 0; i < N; i++) {
        int out = -1;
        CHECK_EQ(desync_sync(objs[i], get_int, &out), 0);
        CHECK_EQ(out, i + 1);
        desync_release(objs[i]);
    }
    desync_release(other);
    desync_scheduler_free(s);
    return 0;
}

struct order_probe {
    atomic_int completed; /* set just before the promise is completed */
    atomic_int later_ran;
    atomic_int later_saw_completed;
};

static void later_job(void *data, void *arg) {
    (void)data;
    struct order_probe *o = arg;
    atomic_store(&o->later_saw_completed, atomic_load(&o->completed));
    atomic_store(&o->later_ran, 1);
}

TEST(future_order_desync_after_future_desync) {
    int val = 0;
    desync_t *d = desync_new(&val, NULL);
    CHECK(d);
    for (int round = 0; round < 20; round++) {
        struct pend pd;
        atomic_init(&pd.made, 0);
        pd.p = NULL;
        struct order_probe o;
        atomic_init(&o.completed, 0);
        atomic_init(&o.later_ran, 0);
        atomic_init(&o.later_saw_completed, 0);
        desync_future_t *f = desync_future_desync(d, pending_async, &pd);
        CHECK(f);
        CHECK_EQ(desync_desync(d, later_job, &o), 0);
        CHECK(test_wait_flag(&pd.made, LONG_MS));
        if (round == 0)
            test_sleep_ms(SHORT_MS);
        else
            sched_yield();
        CHECK_EQ(atomic_load(&o.later_ran), 0);
        atomic_store(&o.completed, 1);
        if (round % 2) {
            CHECK_EQ(desync_promise_complete(pd.p, IV(round)), 0);
        } else {
            struct completer c;
            CHECK(completer_start(&c, pd.p, IV(round), 0, 0));
            completer_join(&c);
        }
        CHECK(test_wait_flag(&o.later_ran, LONG_MS));
        CHECK_EQ(atomic_load(&o.later_saw_completed), 1);
        void *v = NULL;
        CHECK_EQ(desync_future_poll(f, &v, NULL), 0); /* complete before later_job ran */
        CHECK_EQ(VI(v), round);
        desync_future_free(f);
    }
    desync_release(d);
    return 0;
}

struct dl_probe {
    desync_t *d, *other;
    int rc_desync, rc_sync, rc_other, rc_promise;
    void *other_value;
    atomic_int done;
};

static void wait_own_queue_job(void *data, void *arg) {
    (void)data;
    struct dl_probe *x = arg;
    desync_future_t *f = desync_future_desync(x->d, ready_int, NULL);
    x->rc_desync = f ? desync_future_wait_for(f, 5000000000ull, NULL) : 99;
    desync_future_free(f); /* its job still runs, after this one */
    atomic_int ran = 0;
    desync_future_t *g = desync_future_sync(x->d, set_flag_async, &ran);
    x->rc_sync = g ? desync_future_wait_for(g, 5000000000ull, NULL) : 99;
    desync_future_free(g);
    /* Other futures are fine. */
    desync_future_t *h = desync_future_desync(x->other, ready_int, NULL);
    x->rc_other = h ? desync_future_wait_for(h, LONG_NS, &x->other_value) : 99;
    desync_future_free(h);
    desync_future_t *r = desync_future_ready(NULL);
    x->rc_promise = r ? desync_future_wait_for(r, LONG_NS, NULL) : 99;
    desync_future_free(r);
    atomic_store(&x->done, 1);
}

TEST(future_wait_own_queue_edeadlk) {
    int val = 1, oval = 2;
    desync_t *d = desync_new(&val, NULL);
    desync_t *other = desync_new(&oval, NULL);
    CHECK(d && other);
    for (int mode = 0; mode < 2; mode++) {
        struct dl_probe x;
        memset(&x, 0, sizeof x);
        x.d = d;
        x.other = other;
        if (mode == 0) {
            CHECK_EQ(desync_sync(d, wait_own_queue_job, &x), 0);
        } else {
            CHECK_EQ(desync_desync(d, wait_own_queue_job, &x), 0);
            CHECK(test_wait_flag(&x.done, LONG_MS));
        }
        CHECK_EQ(x.rc_desync, DESYNC_EDEADLK);
        CHECK_EQ(x.rc_sync, DESYNC_EDEADLK);
        CHECK_EQ(x.rc_other, 0);
        CHECK_EQ(VI(x.other_value), 2);
        CHECK_EQ(x.rc_promise, 0);
        CHECK_EQ(desync_sync(d, noop_job, NULL), 0);
    }
    desync_release(other);
    desync_release(d);
    return 0;
}
