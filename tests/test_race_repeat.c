/*
 * Every race scenario of the reference Rust desync crate, 1,000 rounds each
 * with fresh objects and the timing varied from round to round: pipe-through
 * ordering (races.rs), suspend with the queue on background threads and
 * with a background thread resuming a queue that a sync waits on
 * (scheduler/suspend.rs), updating data from a future (desync.rs), and a
 * future_sync and a future_desync waiting for each other across two queues
 * (scheduler/future_sync.rs). The single-run versions live in
 * test_pipe_basic.c, test_pipe_order.c, test_suspend.c and
 * test_future_async.c.
 *
 * The rounds are not scaled down in sanitizer builds; instead each loop
 * stops after TEST_ROUND_BUDGET_NS (8 s) once it has done TEST_MIN_ROUNDS
 * (200), so a slow build still finishes well inside its timeout. Every wait
 * is bounded (LONG_NS); a stuck sync is caught by the runner's timeout.
 */
#include <desync.h>

#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>

#include "test_pipe.h"

#define ROUNDS 1000

/* Busy-waits a random 0..max_ns, to shift which thread gets where first. */
static void jitter(uint32_t *seed, uint32_t max_ns) { test_spin_ns(test_rnd(seed) % max_ns); }

/* --------------------------------------------------- pipe-through ordering */

static void set_state(void *data, void *arg) { ((vec *)data)->state = (int)U(arg); }

static void spin_job(void *data, void *arg) {
    (void)data;
    test_spin_ns(U(arg));
}

/* Sends item and checks the pipe's next output. */
static int send_expect(desync_channel_t *c, desync_stream_t *out, uintptr_t item, uintptr_t want) {
    CHECK_EQ(desync_channel_send(c, P(item)), 0);
    void *v = NULL;
    CHECK_EQ(desync_stream_next_for(out, LONG_NS, &v), 0);
    CHECK_EQ(U(v), want);
    return 0;
}

/*
 * races.rs pipe_through: the output of a pipe that adds the object's state
 * to each item changes once a desync has changed the state. Then the same
 * without the sync the crate needs: a job queued before an item is sent runs
 * before that item is processed, and a job queued after an item was sent
 * runs after it. Capacity 0 (rendezvous), 1 and 10; every few rounds a
 * busy queue or a slow first job makes the pump queue behind other work.
 */
TEST(race_pipe_through_1000) {
    uint32_t seed = 11;
    uint64_t start = test_now_ns();
    for (int r = 1; test_rounds_left(r, ROUNDS, start); r++) {
        vec *x = vec_new();
        CHECK(x);
        x->state = 1;
        desync_t *d = desync_new(x, vec_destroy);
        CHECK(d);
        desync_stream_t *rx;
        size_t caps[] = {0, 1, 10};
        desync_channel_t *c = desync_channel_new(caps[r % 3], &rx);
        CHECK(c);
        desync_stream_t *out = desync_pipe(d, rx, add_state, NULL);
        CHECK(out);
        if (r % 4 == 0)
            CHECK_EQ(desync_desync(d, spin_job, P(test_rnd(&seed) % 20000)), 0);
        /* The crate's scenario. */
        CHECK_EQ(send_expect(c, out, 2, 3), 0);
        CHECK_EQ(send_expect(c, out, 42, 43), 0);
        CHECK_EQ(desync_sync(d, noop_job, NULL), 0);
        CHECK_EQ(desync_desync(d, set_state, P(2)), 0);
        CHECK_EQ(send_expect(c, out, 44, 46), 0);
        /* Without the sync, in both directions. */
        if (r % 2)
            CHECK_EQ(desync_desync(d, spin_job, P(test_rnd(&seed) % 5000)), 0);
        CHECK_EQ(desync_desync(d, set_state, P(5)), 0);
        CHECK_EQ(desync_channel_send(c, P(10)), 0);
        jitter(&seed, 3000);
        CHECK_EQ(desync_desync(d, set_state, P(7)), 0);
        void *v = NULL;
        CHECK_EQ(desync_stream_next_for(out, LONG_NS, &v), 0);
        CHECK_EQ(U(v), 15); /* after the 5, before the 7 */
        CHECK_EQ(send_expect(c, out, 20, 27), 0);
        desync_channel_close(c);
        CHECK_EQ(desync_stream_next_for(out, LONG_NS, &v), DESYNC_EOF);
        desync_stream_free(out);
        desync_release(d);
    }
    return 0;
}

/* The same ordering for desync_pipe_in: each item is recorded with the state
 * it saw; items sent before a job see the old state, items after it the new
 * one, with nobody reading the pipe's output to pace it. */
static void record_state(void *data, void *item, void *arg) {
    (void)arg;
    vec *x = data;
    x->v[x->n++] = U(item) * 1000 + (uintptr_t)x->state;
}

TEST(race_pipe_in_ordering_1000) {
    uint32_t seed = 12;
    uint64_t start = test_now_ns();
    for (int r = 1; test_rounds_left(r, ROUNDS, start); r++) {
        desync_t *d = desync_new(vec_new(), vec_destroy);
        CHECK(d);
        desync_stream_t *rx;
        desync_channel_t *c = desync_channel_new((size_t)(r % 3) * 4, &rx);
        CHECK(c);
        CHECK_EQ(desync_pipe_in(d, rx, record_state, NULL), 0);
        if (r % 3 == 0)
            CHECK_EQ(desync_desync(d, spin_job, P(test_rnd(&seed) % 10000)), 0);
        for (int i = 1; i <= 4; i++) {
            CHECK_EQ(desync_channel_send(c, P(i)), 0);
            if (test_rnd(&seed) % 2)
                jitter(&seed, 2000);
            CHECK_EQ(desync_desync(d, set_state, P(i)), 0);
        }
        int n = vec_len(d);
        CHECK_EQ(n, 4);
        vec *x = desync_data(d); /* no job runs now: only this thread queues */
        for (int i = 1; i <= 4; i++)
            CHECK_EQ(x->v[i - 1], (uintptr_t)i * 1000 + (uintptr_t)(i - 1));
        desync_channel_close(c);
        desync_release(d);
    }
    return 0;
}

/* ------------------------------------------------------------ suspension */

struct susp {
    atomic_int pos;
    atomic_int seen0, seen1;
    atomic_int ran0, ran1;
};

static void record0(void *arg) {
    struct susp *s = arg;
    atomic_store(&s->seen0, atomic_load(&s->pos));
    atomic_store(&s->ran0, 1);
}

static void record1(void *arg) {
    struct susp *s = arg;
    atomic_store(&s->seen1, atomic_load(&s->pos));
    atomic_fetch_add(&s->ran1, 1);
}

/* Resumes r after `spin_ns`, on its own thread. */
struct bg_resume {
    pthread_t th;
    desync_resumer_t *r;
    uint64_t spin_ns;
    desync_scheduler_t *raise; /* then: 1 thread for this scheduler */
};

static void *bg_resume_main(void *arg) {
    struct bg_resume *b = arg;
    test_spin_ns(b->spin_ns);
    desync_resumer_resume(b->r);
    if (b->raise)
        desync_scheduler_set_max_threads(b->raise, 1);
    return NULL;
}

/*
 * suspend.rs suspend_queue: on a queue run by background threads (the
 * default scheduler, or one with a single thread), a job, a suspend, and a
 * job queued while suspended; the second job must not run before the
 * resume and must see what was set before it. Resumed from this thread or
 * from another one.
 */
TEST(race_suspend_queue_1000) {
    uint32_t seed = 13;
    desync_scheduler_t *one = desync_scheduler_new(1);
    CHECK(one);
    uint64_t start = test_now_ns();
    for (int r = 1; test_rounds_left(r, ROUNDS, start); r++) {
        struct susp s;
        atomic_init(&s.pos, 0);
        atomic_init(&s.seen0, -1);
        atomic_init(&s.seen1, -1);
        atomic_init(&s.ran0, 0);
        atomic_init(&s.ran1, 0);
        desync_queue_t *q = desync_queue_new(r % 2 ? NULL : one);
        CHECK(q);
        CHECK_EQ(desync_queue_desync(q, record0, &s), 0);
        desync_future_t *sf = desync_queue_suspend(q);
        CHECK(sf);
        if (r % 3 == 0)
            jitter(&seed, 5000);
        CHECK_EQ(desync_queue_desync(q, record1, &s), 0);
        void *v = NULL;
        CHECK_EQ(desync_future_wait_for(sf, LONG_NS, &v), 0);
        CHECK(v);
        CHECK_EQ(atomic_load(&s.ran0), 1);
        CHECK_EQ(atomic_load(&s.seen0), 0);
        jitter(&seed, 2000);
        CHECK_EQ(atomic_load(&s.ran1), 0);
        atomic_store(&s.pos, 1);
        if (r % 4 < 2) {
            desync_resumer_resume(v);
        } else {
            struct bg_resume b = {.r = v, .spin_ns = test_rnd(&seed) % 20000};
            CHECK(pthread_create(&b.th, NULL, bg_resume_main, &b) == 0);
            pthread_join(b.th, NULL);
        }
        CHECK(test_wait_count(&s.ran1, 1, LONG_MS));
        CHECK_EQ(atomic_load(&s.seen1), 1);
        CHECK_EQ(desync_queue_sync(q, noop_queue_job, NULL), 0);
        CHECK_EQ(atomic_load(&s.ran1), 1);
        desync_future_free(sf);
        desync_queue_release(q);
    }
    desync_scheduler_free(one);
    return 0;
}

static void set_42(void *arg) { *(int *)arg = 42; }

static void read_pair_job(void *arg) {
    int **pp = arg;
    *pp[1] = *pp[0];
}

/*
 * suspend.rs suspend_queue_with_local_drain: a scheduler with 0 threads, a
 * queue suspended (the wait drains it up to the suspend on this thread),
 * and a sync that waits while a background thread resumes the queue and
 * gives the scheduler a thread. The resume lands before, during or after
 * the sync starts to wait.
 */
TEST(race_suspend_background_resume_1000) {
    uint32_t seed = 14;
    uint64_t start = test_now_ns();
    for (int r = 1; test_rounds_left(r, ROUNDS, start); r++) {
        desync_scheduler_t *s = desync_scheduler_new(0);
        CHECK(s);
        desync_queue_t *q = desync_queue_new(s);
        CHECK(q);
        CHECK_EQ(desync_queue_desync(q, noop_queue_job, NULL), 0);
        desync_future_t *sf = desync_queue_suspend(q);
        CHECK(sf);
        void *v = NULL;
        CHECK_EQ(desync_future_wait_for(sf, LONG_NS, &v), 0);
        CHECK(v);
        int val = 0;
        CHECK_EQ(desync_queue_desync(q, set_42, &val), 0);
        struct bg_resume b = {
            .r = v, .spin_ns = test_rnd(&seed) % 50000, .raise = r % 2 ? s : NULL};
        CHECK(pthread_create(&b.th, NULL, bg_resume_main, &b) == 0);
        int out = -1;
        int *pp[2] = {&val, &out};
        CHECK_EQ(desync_queue_sync(q, read_pair_job, pp), 0);
        CHECK_EQ(out, 42);
        pthread_join(b.th, NULL);
        desync_future_free(sf);
        desync_queue_release(q);
        desync_scheduler_free(s);
    }
    return 0;
}

/*
 * suspend.rs resume_before_suspend, in this API's terms (a resumer exists
 * only once the suspension took effect): the queue is resumed by a
 * then-callback as soon as the suspend completes, on whichever thread
 * completes it; the jobs on both sides of the suspension run once each, in
 * order.
 */
static void resume_then(int status, void *value, void *arg) {
    (void)arg;
    if (status == 0)
        desync_resumer_resume(value);
}

/* Which job ran at each position (written by the queue's jobs only). */
struct order_log {
    atomic_int n;
    int tags[2];
};

static void log_tag(struct order_log *o, int tag) {
    int i = atomic_fetch_add(&o->n, 1);
    if (i < 2)
        o->tags[i] = tag;
}

static void job_a(void *arg) { log_tag(arg, 1); }
static void job_b(void *arg) { log_tag(arg, 2); }

TEST(race_resume_at_once_1000) {
    uint32_t seed = 15;
    uint64_t start = test_now_ns();
    for (int r = 1; test_rounds_left(r, ROUNDS, start); r++) {
        struct order_log o = {0, {0, 0}};
        desync_queue_t *q = desync_queue_new(NULL);
        CHECK(q);
        CHECK_EQ(desync_queue_desync(q, job_a, &o), 0);
        desync_future_t *sf = desync_queue_suspend(q);
        CHECK(sf);
        if (r % 2)
            jitter(&seed, 3000);
        CHECK_EQ(desync_future_then(sf, resume_then, NULL), 0);
        CHECK_EQ(desync_queue_desync(q, job_b, &o), 0);
        CHECK(test_wait_count(&o.n, 2, LONG_MS));
        CHECK_EQ(desync_queue_sync(q, noop_queue_job, NULL), 0);
        CHECK_EQ(atomic_load(&o.n), 2);
        CHECK_EQ(o.tags[0], 1);
        CHECK_EQ(o.tags[1], 2);
        desync_queue_release(q);
    }
    return 0;
}

/* --------------------------------------------- updating data from a future */

static desync_future_t *ready_int_job(void *data, void *arg) {
    (void)arg;
    return desync_future_ready(IV(*(int *)data));
}

/*
 * desync.rs update_data_with_future_1000_times: two desyncs set 42 then 43,
 * and a future reading the data sees 43; read with future_desync, with
 * future_sync, and with a sync, alternately.
 */
TEST(race_update_data_with_future_1000) {
    uint64_t start = test_now_ns();
    for (int r = 1; test_rounds_left(r, ROUNDS, start); r++) {
        int val = 0;
        desync_t *d = desync_new(&val, NULL);
        CHECK(d);
        CHECK_EQ(desync_desync(d, set_int, IV(42)), 0);
        CHECK_EQ(desync_desync(d, set_int, IV(43)), 0);
        void *v = NULL;
        if (r % 3 == 2) {
            int got = 0;
            CHECK_EQ(desync_sync(d, get_int, &got), 0);
            v = IV(got);
        } else {
            desync_future_t *f = r % 3 ? desync_future_sync(d, ready_int_job, NULL)
                                       : desync_future_desync(d, ready_int_job, NULL);
            CHECK(f);
            CHECK_EQ(desync_future_wait_for(f, LONG_NS, &v), 0);
            desync_future_free(f);
        }
        CHECK_EQ(VI(v), 43);
        desync_release(d);
    }
    return 0;
}

/* desync.rs wait_for_future: 0 -> 1 (desync), -> the value of a promise
 * completed by another thread (after), -> 3 (desync); the after's future
 * gives 4 and a sync then reads 3. Each job checks the value before it. */
struct steps {
    int val;
    int errors; /* only touched by the object's jobs */
};

static void step_0_to_1(void *data, void *arg) {
    struct steps *s = data;
    if (arg)
        test_spin_ns(U(arg));
    s->errors += s->val != 0;
    s->val = 1;
}

static void *step_from_future(void *data, int status, void *value, void *arg) {
    (void)arg;
    struct steps *s = data;
    s->errors += s->val != 1 || status != 0;
    s->val = VI(value);
    return IV(4);
}

static void step_2_to_3(void *data, void *arg) {
    (void)arg;
    struct steps *s = data;
    s->errors += s->val != 2;
    s->val = 3;
}

static void read_steps(void *data, void *arg) { *(struct steps *)arg = *(struct steps *)data; }

struct late_complete {
    pthread_t th;
    desync_promise_t *p;
    uint64_t spin_ns;
};

static void *late_complete_main(void *arg) {
    struct late_complete *c = arg;
    test_spin_ns(c->spin_ns);
    desync_promise_complete(c->p, IV(2));
    return NULL;
}

TEST(race_after_updates_data_1000) {
    uint32_t seed = 16;
    uint64_t start = test_now_ns();
    for (int r = 1; test_rounds_left(r, ROUNDS, start); r++) {
        struct steps st = {0, 0};
        desync_t *d = desync_new(&st, NULL);
        CHECK(d);
        desync_future_t *pf = NULL;
        desync_promise_t *p = desync_promise_new(&pf);
        CHECK(p);
        CHECK_EQ(desync_desync(d, step_0_to_1, P(r % 2 ? test_rnd(&seed) % 20000 : 0)), 0);
        desync_future_t *f = desync_after(d, pf, step_from_future, NULL);
        CHECK(f);
        CHECK_EQ(desync_desync(d, step_2_to_3, NULL), 0);
        struct late_complete c = {.p = p, .spin_ns = test_rnd(&seed) % 20000};
        if (r % 3 == 0) {
            desync_promise_complete(p, IV(2)); /* before anything ran, maybe */
        } else {
            CHECK(pthread_create(&c.th, NULL, late_complete_main, &c) == 0);
        }
        void *v = NULL;
        CHECK_EQ(desync_future_wait_for(f, LONG_NS, &v), 0);
        CHECK_EQ(VI(v), 4);
        struct steps seen;
        CHECK_EQ(desync_sync(d, read_steps, &seen), 0);
        CHECK_EQ(seen.val, 3);
        CHECK_EQ(seen.errors, 0);
        if (r % 3 != 0)
            pthread_join(c.th, NULL);
        desync_future_free(f);
        desync_release(d);
    }
    return 0;
}

/* ------------------------------------ futures waiting across two queues */

static desync_future_t *return_arg_qjob(void *arg) { return arg; }

/*
 * future_sync.rs wait_for_sync_future_from_desync_future: a future_sync on
 * q1 waits for a promise; a future_desync on q2 returns (takes over) that
 * future_sync; the promise is completed and the future_desync waited on;
 * then both queues still serve a sync. And the reverse
 * (wait_for_desync_future_from_sync_future): the future_desync waits for the
 * promise, the future_sync returns it. The crate found a deadlock here.
 */
TEST(race_future_sync_and_desync_across_queues_1000) {
    uint32_t seed = 17;
    uint64_t start = test_now_ns();
    for (int r = 1; test_rounds_left(r, ROUNDS, start); r++) {
        desync_queue_t *q1 = desync_queue_new(NULL);
        desync_queue_t *q2 = desync_queue_new(NULL);
        CHECK(q1 && q2);
        desync_future_t *pf = NULL;
        desync_promise_t *p = desync_promise_new(&pf);
        CHECK(p);
        int sync_inside = r % 2; /* the future_sync is the inner one */
        desync_future_t *inner = sync_inside ? desync_queue_future_sync(q1, return_arg_qjob, pf)
                                             : desync_queue_future_desync(q1, return_arg_qjob, pf);
        CHECK(inner);
        desync_future_t *outer = sync_inside
                                     ? desync_queue_future_desync(q2, return_arg_qjob, inner)
                                     : desync_queue_future_sync(q2, return_arg_qjob, inner);
        CHECK(outer);
        if (r % 3 == 0)
            jitter(&seed, 5000);
        CHECK_EQ(desync_promise_complete(p, IV(r)), 0);
        void *v = NULL;
        CHECK_EQ(desync_future_wait_for(outer, LONG_NS, &v), 0);
        CHECK_EQ(VI(v), r);
        desync_future_free(outer);
        CHECK_EQ(desync_queue_sync(q1, noop_queue_job, NULL), 0);
        CHECK_EQ(desync_queue_sync(q2, noop_queue_job, NULL), 0);
        desync_queue_release(q1);
        desync_queue_release(q2);
    }
    return 0;
}
