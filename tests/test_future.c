/*
 * Futures, promises, async jobs, after, future_sync, suspend/resume.
 *
 * The first group ports the futures scenarios of the Rust desync crate's
 * tests (update data with a future, wait for future, future and sync, double
 * future and sync, suspend/resume); the rest checks the contract of
 * <desync/future.h> call by call. Every wait is bounded: futures are waited
 * on with desync_future_wait_for(LONG_NS) and other conditions with
 * test_wait_until; nothing asserts on how long something took. Checks that
 * something has NOT happened look after a short pause (SHORT_MS), so they can
 * only miss a bug, never report a false one.
 */
#include <desync.h>

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdint.h>
#include <string.h>
#include <unistd.h>

#include "test.h"

/* A pause before checking that something has not happened. */
#define SHORT_MS 30u

/* ------------------------------------------------------------ helpers */

static void inc_atomic_queue_job(void *arg) { atomic_fetch_add((atomic_int *)arg, 1); }

static void sleep_set_42(void *data, void *arg) {
    (void)arg;
    test_sleep_ms(100);
    *(int *)data = 42;
}

/* Async job: done at once with the object's int. */
static desync_future_t *ready_int(void *data, void *arg) {
    (void)arg;
    return desync_future_ready(IV(*(int *)data));
}

/* Async job: returns the future passed as arg (the queue takes it over). */
static desync_future_t *return_arg_future(void *data, void *arg) {
    (void)data;
    return arg;
}

/* Async job: sets the flag at arg and is done with NULL. */
static desync_future_t *set_flag_async(void *data, void *arg) {
    (void)data;
    atomic_store((atomic_int *)arg, 1);
    return NULL;
}

static desync_future_t *set_flag_queue_async(void *arg) { return set_flag_async(NULL, arg); }

/* Completes (or cancels) a promise from another thread after a delay. */
struct completer {
    pthread_t th;
    desync_promise_t *p;
    void *value;
    unsigned delay_ms;
    int cancel;
    int rc;
    pthread_t self; /* the completing thread, for then-callback checks */
};

static void *completer_main(void *arg) {
    struct completer *c = arg;
    c->self = pthread_self();
    if (c->delay_ms)
        test_sleep_ms(c->delay_ms);
    if (c->cancel)
        desync_promise_cancel(c->p);
    else
        c->rc = desync_promise_complete(c->p, c->value);
    return NULL;
}

static int completer_start(struct completer *c, desync_promise_t *p, void *value, unsigned delay_ms,
                           int cancel) {
    memset(c, 0, sizeof *c);
    c->p = p;
    c->value = value;
    c->delay_ms = delay_ms;
    c->cancel = cancel;
    return pthread_create(&c->th, NULL, completer_main, c) == 0;
}

static void completer_join(struct completer *c) { pthread_join(c->th, NULL); }

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

/* Calls a counter when woken. */
struct wake_count {
    atomic_int n;
};

static void count_wake(void *ctx) { atomic_fetch_add(&((struct wake_count *)ctx)->n, 1); }

/* Records a then-callback. */
struct then_rec {
    atomic_int calls;
    int status;
    void *value;
    pthread_t thread;
};

static void then_record(int status, void *value, void *arg) {
    struct then_rec *r = arg;
    r->status = status;
    r->value = value;
    r->thread = pthread_self();
    atomic_fetch_add(&r->calls, 1);
}

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

struct sync_probe {
    pthread_t thread;
    atomic_int ran;
};

/* future_sync job: records its thread, done with the object's int. */
static desync_future_t *probe_ready_int(void *data, void *arg) {
    struct sync_probe *p = arg;
    p->thread = pthread_self();
    atomic_fetch_add(&p->ran, 1);
    return desync_future_ready(IV(*(int *)data));
}

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

static void read_core(void *data, void *arg) { *(struct core_data *)arg = *(struct core_data *)data; }

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

/* --------------------------------------------------------- suspend ports */

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

/* ================================================================ reading */

TEST(future_poll_waker) {
    desync_future_t *f = NULL;
    desync_promise_t *p = desync_promise_new(&f);
    CHECK(p && f);
    struct wake_count a = {0}, b = {0}, c = {0};
    desync_waker_t wa = {count_wake, &a}, wb = {count_wake, &b}, wc = {count_wake, &c};
    void *v = IV(-1);
    CHECK_EQ(desync_future_poll(f, &v, &wa), DESYNC_EAGAIN);
    CHECK_EQ(VI(v), -1); /* untouched while pending */
    CHECK_EQ(desync_future_poll(f, &v, &wb), DESYNC_EAGAIN); /* replaces wa */
    CHECK_EQ(atomic_load(&a.n), 0);
    CHECK_EQ(atomic_load(&b.n), 0);
    CHECK_EQ(desync_promise_complete(p, IV(7)), 0);
    CHECK_EQ(atomic_load(&a.n), 0); /* replaced: never called */
    CHECK_EQ(atomic_load(&b.n), 1); /* exactly once */
    CHECK_EQ(desync_future_poll(f, &v, &wc), 0);
    CHECK_EQ(VI(v), 7);
    CHECK_EQ(desync_future_poll(f, NULL, NULL), 0);
    CHECK_EQ(atomic_load(&b.n), 1);
    CHECK_EQ(atomic_load(&c.n), 0); /* complete already: no waker arranged */
    desync_future_free(f);

    /* A NULL waker replaces the old one too. */
    p = desync_promise_new(&f);
    CHECK(p);
    CHECK_EQ(desync_future_poll(f, NULL, &wa), DESYNC_EAGAIN);
    CHECK_EQ(desync_future_poll(f, NULL, NULL), DESYNC_EAGAIN);
    CHECK_EQ(desync_promise_complete(p, IV(8)), 0);
    CHECK_EQ(atomic_load(&a.n), 0);
    CHECK_EQ(desync_future_poll(f, &v, NULL), 0);
    CHECK_EQ(VI(v), 8);
    desync_future_free(f);

    /* Completed by another thread, on a queue-bound future. */
    int val = 5;
    desync_t *d = desync_new(&val, NULL);
    CHECK(d);
    struct blocker bl = {0};
    CHECK_EQ(desync_desync(d, blocker_job, &bl), 0);
    desync_future_t *fq = desync_future_desync(d, ready_int, NULL);
    CHECK(fq);
    struct wake_count q = {0};
    desync_waker_t wq = {count_wake, &q};
    CHECK_EQ(desync_future_poll(fq, &v, &wq), DESYNC_EAGAIN);
    atomic_store(&bl.go, 1);
    CHECK(test_wait_count(&q.n, 1, LONG_MS));
    CHECK_EQ(desync_future_poll(fq, &v, NULL), 0);
    CHECK_EQ(VI(v), 5);
    test_sleep_ms(SHORT_MS);
    CHECK_EQ(atomic_load(&q.n), 1);
    desync_future_free(fq);
    desync_release(d);
    return 0;
}

TEST(future_wait_for_timeout) {
    /* A promise. */
    desync_future_t *f = NULL;
    desync_promise_t *p = desync_promise_new(&f);
    CHECK(p);
    void *v = IV(-1);
    CHECK_EQ(desync_future_wait_for(f, 20 * 1000000ull, &v), DESYNC_ETIMEDOUT);
    CHECK_EQ(VI(v), -1);
    CHECK_EQ(desync_future_wait_for(f, 0, &v), DESYNC_ETIMEDOUT);
    struct completer c;
    CHECK(completer_start(&c, p, IV(3), 20, 0));
    CHECK_EQ(desync_future_wait_for(f, LONG_NS, &v), 0);
    CHECK_EQ(VI(v), 3);
    CHECK_EQ(desync_future_wait_for(f, 0, &v), 0); /* complete: no wait at all */
    completer_join(&c);
    desync_future_free(f);

    /* A queue-bound future behind a busy job. */
    int val = 9;
    desync_t *d = desync_new(&val, NULL);
    CHECK(d);
    struct blocker bl = {0};
    CHECK_EQ(desync_desync(d, blocker_job, &bl), 0);
    /* On a worker: a waiter that found the queue unclaimed would run the
     * blocker itself. */
    CHECK(test_wait_flag(&bl.started, LONG_MS));
    desync_future_t *fq = desync_future_desync(d, ready_int, NULL);
    CHECK(fq);
    CHECK_EQ(desync_future_wait_for(fq, 20 * 1000000ull, &v), DESYNC_ETIMEDOUT);
    atomic_store(&bl.go, 1);
    CHECK_EQ(desync_future_wait_for(fq, LONG_NS, &v), 0);
    CHECK_EQ(VI(v), 9);
    desync_future_free(fq);

    /* future_sync behind a busy job: a timed-out wait must not strand the
     * job (the next wait runs it here). */
    struct blocker bl2 = {0};
    CHECK_EQ(desync_desync(d, blocker_job, &bl2), 0);
    CHECK(test_wait_flag(&bl2.started, LONG_MS));
    struct sync_probe pr = {0};
    desync_future_t *fs = desync_future_sync(d, probe_ready_int, &pr);
    CHECK(fs);
    CHECK_EQ(desync_future_wait_for(fs, 20 * 1000000ull, &v), DESYNC_ETIMEDOUT);
    atomic_store(&bl2.go, 1);
    CHECK(test_wait_flag(&bl2.finished, LONG_MS));
    test_sleep_ms(SHORT_MS);
    CHECK_EQ(atomic_load(&pr.ran), 0); /* nobody waits: it does not run */
    CHECK_EQ(desync_future_wait_for(fs, LONG_NS, &v), 0);
    CHECK_EQ(VI(v), 9);
    CHECK_EQ(atomic_load(&pr.ran), 1);
    CHECK(pthread_equal(pr.thread, pthread_self()));
    desync_future_free(fs);
    desync_release(d);

    /* 0 threads: the waiter runs the job, which awaits a promise. */
    desync_scheduler_t *s = desync_scheduler_new(0);
    CHECK(s);
    int val0 = 0;
    desync_t *d0 = desync_new_on(s, &val0, NULL);
    CHECK(d0);
    desync_future_t *pf = NULL;
    desync_promise_t *p0 = desync_promise_new(&pf);
    CHECK(p0);
    desync_future_t *f0 = desync_future_desync(d0, return_arg_future, pf);
    CHECK(f0);
    CHECK_EQ(desync_future_wait_for(f0, 20 * 1000000ull, &v), DESYNC_ETIMEDOUT);
    CHECK(completer_start(&c, p0, IV(11), 20, 0));
    CHECK_EQ(desync_future_wait_for(f0, LONG_NS, &v), 0);
    CHECK_EQ(VI(v), 11);
    completer_join(&c);
    desync_future_free(f0);
    desync_release(d0);
    desync_scheduler_free(s);
    return 0;
}

static int fd_readable(int fd, int timeout_ms) {
    struct pollfd pfd = {fd, POLLIN, 0};
    int r;
    do {
        r = poll(&pfd, 1, timeout_ms);
    } while (r < 0 && errno == EINTR);
    return r == 1 && (pfd.revents & POLLIN);
}

TEST(future_fd) {
    /* Pending, then completed by another thread. */
    desync_future_t *f = NULL;
    desync_promise_t *p = desync_promise_new(&f);
    CHECK(p);
    int fd = desync_future_fd(f);
    CHECK(fd >= 0);
    CHECK_EQ(desync_future_fd(f), fd); /* one descriptor per future */
    CHECK(!fd_readable(fd, 0));
    struct completer c;
    CHECK(completer_start(&c, p, IV(1), 20, 0));
    CHECK(fd_readable(fd, (int)LONG_MS));
    void *v = NULL;
    CHECK_EQ(desync_future_poll(f, &v, NULL), 0);
    CHECK_EQ(VI(v), 1);
    CHECK(fd_readable(fd, 0)); /* stays readable */
    completer_join(&c);
    desync_future_free(f);
    /* Both ends are gone: the descriptor was closed (no other thread of this
     * process opens descriptors meanwhile). */
    CHECK(fcntl(fd, F_GETFD) == -1 && errno == EBADF);

    /* Already complete: readable at once. */
    desync_future_t *r = desync_future_ready(IV(2));
    CHECK(r);
    int rfd = desync_future_fd(r);
    CHECK(rfd >= 0);
    CHECK(fd_readable(rfd, 0));
    desync_future_free(r);

    /* Completed before the descriptor was asked for. */
    p = desync_promise_new(&f);
    CHECK(p);
    CHECK_EQ(desync_promise_complete(p, IV(3)), 0);
    fd = desync_future_fd(f);
    CHECK(fd >= 0);
    CHECK(fd_readable(fd, 0));
    desync_future_free(f);

    /* A queue-bound future. */
    int val = 4;
    desync_t *d = desync_new(&val, NULL);
    CHECK(d);
    struct blocker bl = {0};
    CHECK_EQ(desync_desync(d, blocker_job, &bl), 0);
    desync_future_t *fq = desync_future_desync(d, ready_int, NULL);
    CHECK(fq);
    fd = desync_future_fd(fq);
    CHECK(fd >= 0);
    CHECK(!fd_readable(fd, (int)SHORT_MS));
    atomic_store(&bl.go, 1);
    CHECK(fd_readable(fd, (int)LONG_MS));
    CHECK_EQ(desync_future_wait_for(fq, LONG_NS, &v), 0);
    CHECK_EQ(VI(v), 4);
    desync_future_free(fq);
    desync_release(d);
    return 0;
}

TEST(future_then) {
    /* Already complete: runs at once, on this thread. */
    struct then_rec r1 = {0};
    desync_future_t *f = desync_future_ready(IV(5));
    CHECK(f);
    CHECK_EQ(desync_future_then(f, then_record, &r1), 0);
    CHECK_EQ(atomic_load(&r1.calls), 1);
    CHECK_EQ(r1.status, 0);
    CHECK_EQ(VI(r1.value), 5);
    CHECK(pthread_equal(r1.thread, pthread_self()));

    /* Pending: runs once on completion, on the completing thread. */
    struct then_rec r2 = {0};
    desync_promise_t *p = desync_promise_new(&f);
    CHECK(p);
    CHECK_EQ(desync_future_then(f, then_record, &r2), 0);
    test_sleep_ms(SHORT_MS);
    CHECK_EQ(atomic_load(&r2.calls), 0);
    struct completer c;
    CHECK(completer_start(&c, p, IV(6), 0, 0));
    completer_join(&c);
    CHECK_EQ(atomic_load(&r2.calls), 1);
    CHECK_EQ(r2.status, 0);
    CHECK_EQ(VI(r2.value), 6);
    CHECK(pthread_equal(r2.thread, c.self));

    /* Cancelled. */
    struct then_rec r3 = {0};
    p = desync_promise_new(&f);
    CHECK(p);
    CHECK_EQ(desync_future_then(f, then_record, &r3), 0);
    desync_promise_cancel(p);
    CHECK_EQ(atomic_load(&r3.calls), 1);
    CHECK_EQ(r3.status, DESYNC_ECANCELED);

    /* A future_desync future. */
    int val = 8;
    desync_t *d = desync_new(&val, NULL);
    CHECK(d);
    struct then_rec r4 = {0};
    f = desync_future_desync(d, ready_int, NULL);
    CHECK(f);
    CHECK_EQ(desync_future_then(f, then_record, &r4), 0);
    CHECK(test_wait_count(&r4.calls, 1, LONG_MS));
    CHECK_EQ(VI(r4.value), 8);

    /* A future_sync future: nobody waits on it any more, so its job runs
     * on the queue. */
    struct then_rec r5 = {0};
    struct sync_probe pr = {0};
    f = desync_future_sync(d, probe_ready_int, &pr);
    CHECK(f);
    CHECK_EQ(desync_future_then(f, then_record, &r5), 0);
    CHECK(test_wait_count(&r5.calls, 1, LONG_MS));
    CHECK_EQ(VI(r5.value), 8);
    CHECK_EQ(atomic_load(&pr.ran), 1);

    test_sleep_ms(SHORT_MS);
    CHECK_EQ(atomic_load(&r2.calls), 1);
    CHECK_EQ(atomic_load(&r4.calls), 1);
    CHECK_EQ(atomic_load(&r5.calls), 1);
    desync_release(d);
    return 0;
}

static desync_future_t *return_cancelled(void *data, void *arg) {
    (void)data;
    (void)arg;
    desync_future_t *f = NULL;
    desync_promise_t *p = desync_promise_new(&f);
    desync_promise_cancel(p);
    return f;
}

struct after_seen {
    int status;
    void *value;
};

static void *record_after(void *data, int status, void *value, void *arg) {
    (void)data;
    struct after_seen *s = arg;
    s->status = status;
    s->value = value;
    return IV(77);
}

TEST(future_promise_cancel) {
    desync_future_t *f = NULL;
    desync_promise_t *p = desync_promise_new(&f);
    CHECK(p);
    struct wake_count w = {0};
    desync_waker_t wk = {count_wake, &w};
    CHECK_EQ(desync_future_poll(f, NULL, &wk), DESYNC_EAGAIN);
    desync_promise_cancel(p);
    CHECK_EQ(atomic_load(&w.n), 1);
    void *v = IV(-1);
    CHECK_EQ(desync_future_wait_for(f, LONG_NS, &v), DESYNC_ECANCELED);
    CHECK(v == NULL);
    CHECK_EQ(desync_future_wait(f, NULL), DESYNC_ECANCELED);
    CHECK_EQ(desync_future_poll(f, &v, NULL), DESYNC_ECANCELED);
    desync_future_free(f);

    /* Cancelled from another thread while this one waits. */
    p = desync_promise_new(&f);
    CHECK(p);
    struct completer c;
    CHECK(completer_start(&c, p, NULL, 20, 1));
    CHECK_EQ(desync_future_wait_for(f, LONG_NS, &v), DESYNC_ECANCELED);
    completer_join(&c);
    desync_future_free(f);

    /* An async job returning a cancelled future: so is its future. */
    int val = 0;
    desync_t *d = desync_new(&val, NULL);
    CHECK(d);
    f = desync_future_desync(d, return_cancelled, NULL);
    CHECK(f);
    CHECK_EQ(desync_future_wait_for(f, LONG_NS, &v), DESYNC_ECANCELED);
    desync_future_free(f);

    /* after: the job sees the cancellation and its future has its value. */
    struct after_seen seen = {1, IV(-1)};
    desync_future_t *pf = NULL;
    p = desync_promise_new(&pf);
    CHECK(p);
    f = desync_after(d, pf, record_after, &seen);
    CHECK(f);
    desync_promise_cancel(p);
    CHECK_EQ(desync_future_wait_for(f, LONG_NS, &v), 0);
    CHECK_EQ(VI(v), 77);
    CHECK_EQ(seen.status, DESYNC_ECANCELED);
    CHECK(seen.value == NULL);
    desync_future_free(f);
    /* The queue goes on. */
    int out = -1;
    CHECK_EQ(desync_sync(d, get_int, &out), 0);
    desync_release(d);
    return 0;
}

/* ----------------------------------------------------------- future_sync */

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

/* ------------------------------------------------------- scheduling */

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

static void *after_noop(void *data, int status, void *value, void *arg) {
    (void)data;
    (void)status;
    (void)arg;
    return value;
}

static void *queue_after_noop(int status, void *value, void *arg) {
    (void)status;
    (void)arg;
    return value;
}

static void then_noop(int status, void *value, void *arg) {
    (void)status;
    (void)value;
    (void)arg;
}

TEST(future_bad_input) {
    int val = 0;
    desync_t *d = desync_new(&val, NULL);
    CHECK(d);
    desync_queue_t *q = desync_get_queue(d);
    atomic_int flag = 0;

    CHECK(desync_future_desync(NULL, set_flag_async, &flag) == NULL);
    CHECK(desync_future_desync(d, NULL, NULL) == NULL);
    CHECK(desync_future_sync(NULL, set_flag_async, &flag) == NULL);
    CHECK(desync_future_sync(d, NULL, NULL) == NULL);
    CHECK(desync_queue_future_desync(NULL, set_flag_queue_async, &flag) == NULL);
    CHECK(desync_queue_future_desync(q, NULL, NULL) == NULL);
    CHECK(desync_queue_future_sync(NULL, set_flag_queue_async, &flag) == NULL);
    CHECK(desync_queue_future_sync(q, NULL, NULL) == NULL);
    CHECK(desync_after(d, NULL, after_noop, NULL) == NULL);
    CHECK(desync_queue_after(q, NULL, queue_after_noop, NULL) == NULL);
    /* after takes ownership of `after` even on failure (ASan: no leak). */
    desync_future_t *pf = NULL;
    desync_promise_t *p = desync_promise_new(&pf);
    CHECK(p);
    CHECK(desync_after(NULL, pf, after_noop, NULL) == NULL);
    CHECK_EQ(desync_promise_complete(p, NULL), 0);
    p = desync_promise_new(&pf);
    CHECK(p);
    CHECK(desync_after(d, pf, NULL, NULL) == NULL);
    desync_promise_cancel(p);
    CHECK(desync_queue_after(NULL, desync_future_ready(NULL), queue_after_noop, NULL) == NULL);
    CHECK(desync_queue_after(q, desync_future_ready(NULL), NULL, NULL) == NULL);
    CHECK(desync_queue_suspend(NULL) == NULL);
    desync_resumer_resume(NULL);

    CHECK(desync_promise_new(NULL) == NULL);
    CHECK_EQ(desync_promise_complete(NULL, NULL), DESYNC_EINVAL);
    desync_promise_cancel(NULL);
    void *v = NULL;
    CHECK_EQ(desync_future_wait(NULL, &v), DESYNC_EINVAL);
    CHECK_EQ(desync_future_wait_for(NULL, 1, &v), DESYNC_EINVAL);
    CHECK_EQ(desync_future_poll(NULL, &v, NULL), DESYNC_EINVAL);
    CHECK_EQ(desync_future_then(NULL, then_noop, NULL), DESYNC_EINVAL);
    CHECK_EQ(desync_future_fd(NULL), DESYNC_EINVAL);
    desync_future_detach(NULL);
    desync_future_free(NULL);

    /* then with a NULL callback does not consume the future. */
    desync_future_t *f = desync_future_ready(IV(3));
    CHECK(f);
    CHECK_EQ(desync_future_then(f, NULL, NULL), DESYNC_EINVAL);
    CHECK_EQ(desync_future_wait(f, NULL), 0); /* value may be NULL */
    CHECK_EQ(desync_future_wait(f, &v), 0);
    CHECK_EQ(VI(v), 3);
    desync_future_free(f);

    /* Nothing was queued by the failed calls. */
    CHECK_EQ(desync_sync(d, noop_job, NULL), 0);
    CHECK_EQ(atomic_load(&flag), 0);
    desync_release(d);
    return 0;
}

/* ------------------------------------------- futures owned by queues */

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
