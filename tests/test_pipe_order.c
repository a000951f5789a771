/*
 * Pipes among the object's other jobs: items are processed in order with the
 * jobs queued around them (from a channel or a user stream), the async forms
 * hold the queue until each item's future completes, and idle pipes keep no
 * thread parked.
 */
#include "desync.h"
#include "test_pipe.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>

/* ------------------------------------------------------------- ordering */

/* A job queued on d before an item is sent runs before that item is
 * processed, even while an earlier pump job is still queued behind slow
 * work (a pump that polled when its job ran would take both items). */
typedef struct {
    uintptr_t item, state;
} seen;

typedef struct {
    seen log[4096];
    int n;
    int state;
} olog;

static void olog_record(void *data, void *item, void *arg) {
    (void)arg;
    olog *o = data;
    o->log[o->n].item = U(item);
    o->log[o->n].state = (uintptr_t)o->state;
    o->n++;
}

static void olog_set(void *data, void *arg) { ((olog *)data)->state = (int)U(arg); }

static void slow_job(void *data, void *arg) {
    (void)data;
    test_sleep_ms((unsigned)U(arg));
}

/* strict: item 2r also ran before state r+1 was set (it was sent, and its
 * job queued, before that); only channel inputs wake the pipe inside send,
 * so only they guarantee it. */
static int check_olog(desync_t *d, int rounds, bool strict) {
    desync_sync(d, noop_job, NULL);
    olog *o = desync_data(d);
    CHECK_EQ(o->n, 2 * rounds);
    for (int i = 0; i < o->n; i++) {
        CHECK_EQ(o->log[i].item, (uintptr_t)i);
        /* item 2r was sent before state r+1 was set, 2r+1 after */
        uintptr_t want = (uintptr_t)(i / 2 + (i % 2));
        if (strict)
            CHECK_EQ(o->log[i].state, want);
        else
            CHECK(o->log[i].state >= want);
    }
    return 0;
}

TEST(pipe_in_ordered_with_jobs) {
    int rounds = 50;
    desync_t *d = desync_new(calloc(1, sizeof(olog)), free);
    desync_stream_t *rx;
    desync_channel_t *c = desync_channel_new(8, &rx);
    CHECK_EQ(desync_pipe_in(d, rx, olog_record, NULL), 0);
    for (int r = 0; r < rounds; r++) {
        desync_desync(d, slow_job, P(r % 5 == 0 ? 2 : 0));
        CHECK_EQ(desync_channel_send(c, P(2 * r)), 0);
        desync_desync(d, olog_set, P(r + 1));
        CHECK_EQ(desync_channel_send(c, P(2 * r + 1)), 0);
        if (r % 5 == 4)
            desync_sync(d, noop_job, NULL); /* stay clear of backpressure */
    }
    CHECK_EQ(check_olog(d, rounds, true), 0);
    desync_channel_close(c);
    desync_release(d);
    return 0;
}

static void *olog_through(void *data, void *item, void *arg) {
    olog_record(data, item, arg);
    return item;
}

/* The same with an output pipe, and a user stream as input (its wakes come
 * with its lock held, through a queued pump job). */
typedef struct {
    pthread_mutex_t mu;
    uintptr_t buf[256];
    int head, count;
    bool closed;
    desync_waker_t w;
    bool has_w;
} lstream;

static int ls_poll(void *self, void **item, const desync_waker_t *waker) {
    lstream *l = self;
    pthread_mutex_lock(&l->mu);
    int r = DESYNC_EAGAIN;
    if (l->count) {
        *item = P(l->buf[l->head]);
        l->head = (l->head + 1) % 256;
        l->count--;
        r = 0;
    } else if (l->closed) {
        r = DESYNC_EOF;
    } else {
        l->has_w = waker != NULL;
        if (waker)
            l->w = *waker;
    }
    pthread_mutex_unlock(&l->mu);
    return r;
}

static void ls_free(void *self) {
    lstream *l = self;
    pthread_mutex_destroy(&l->mu);
    free(l);
}

static const desync_stream_ops_t ls_ops = {ls_poll, ls_free};

static void ls_push(lstream *l, uintptr_t v, bool close) {
    pthread_mutex_lock(&l->mu);
    if (close)
        l->closed = true;
    else
        l->buf[(l->head + l->count++) % 256] = v;
    if (l->has_w) {
        l->has_w = false;
        l->w.wake(l->w.ctx); /* with the lock held */
    }
    pthread_mutex_unlock(&l->mu);
}

TEST(pipe_ordered_with_jobs_user_stream) {
    int rounds = 50;
    desync_t *d = desync_new(calloc(1, sizeof(olog)), free);
    lstream *l = calloc(1, sizeof *l);
    pthread_mutex_init(&l->mu, NULL);
    desync_stream_t *out = desync_pipe(d, desync_stream_new(&ls_ops, l), olog_through, NULL);
    desync_pipe_set_backpressure_depth(out, 1000);
    for (int r = 0; r < rounds; r++) {
        desync_desync(d, slow_job, P(r % 5 == 0 ? 2 : 0));
        ls_push(l, (uintptr_t)(2 * r), false);
        desync_desync(d, olog_set, P(r + 1));
        ls_push(l, (uintptr_t)(2 * r + 1), false);
    }
    void *v;
    for (int i = 0; i < 2 * rounds; i++) {
        CHECK_EQ(desync_stream_next_for(out, 5 * SEC, &v), 0);
        CHECK_EQ(U(v), i);
    }
    CHECK_EQ(check_olog(d, rounds, false), 0);
    ls_push(l, 0, true);
    CHECK_EQ(desync_stream_next_for(out, 5 * SEC, &v), DESYNC_EOF);
    desync_stream_free(out);
    desync_release(d);
    return 0;
}

/* ---------------------------------------------------------- async forms */

static void read_completed(void *data, void *arg) {
    (void)data;
    *(int *)arg = atomic_load(&g_completed);
}

TEST(pipe_async_holds_queue) {
    desync_t *d = desync_new(vec_new(), vec_destroy);
    desync_stream_t *rx;
    desync_channel_t *c = desync_channel_new(16, &rx);
    desync_stream_t *out = desync_pipe_async(d, rx, slow_times_ten, NULL);
    CHECK(out);
    desync_pipe_set_backpressure_depth(out, 100);
    int n = 10;
    for (int i = 0; i < n; i++) {
        CHECK_EQ(desync_channel_send(c, P(i)), 0);
        /* Queued after item i's job: runs once i's future completed. */
        int seen = -1;
        desync_sync(d, read_completed, &seen);
        CHECK_EQ(seen, i);
    }
    desync_channel_close(c);
    void *v;
    CHECK_EQ(desync_stream_next_for(out, 5 * SEC, &v), 0);
    CHECK(v == NULL); /* item 0: NULL future */
    for (int i = 1; i < n; i++) {
        if (i % 3 == 0)
            continue; /* cancelled: no output */
        CHECK_EQ(desync_stream_next_for(out, 5 * SEC, &v), 0);
        CHECK_EQ(U(v), i * 10);
    }
    CHECK_EQ(desync_stream_next_for(out, 5 * SEC, &v), DESYNC_EOF);
    desync_stream_free(out);
    desync_release(d);
    return 0;
}

TEST(pipe_in_async) {
    desync_t *d = desync_new(vec_new(), vec_destroy);
    void *items[] = {P(1), P(2), P(3), P(4), P(5), P(6), P(7)};
    CHECK_EQ(desync_pipe_in_async(d, desync_stream_from_array(items, 7), slow_times_ten, NULL), 0);
    /* Items are read at most `depth` (5) ahead, so wait for the rest. */
    uint64_t end = test_now_ns() + 5 * SEC;
    while (vec_len(d) < 7 && test_now_ns() < end)
        test_sleep_ms(2);
    CHECK_EQ(vec_len(d), 7);
    int seen = -1;
    desync_sync(d, read_completed, &seen);
    CHECK_EQ(seen, 7);
    vec *x = desync_data(d);
    for (int i = 0; i < 7; i++)
        CHECK_EQ(x->v[i], i + 1);
    desync_release(d);
    return 0;
}

/* -------------------------------------------------------------- threads */

/* No thread is parked in a pipe: 1 scheduler thread, 100 idle pipes, and
 * another object on the same scheduler is still served. */
static int flag_set(void *ctx) { return atomic_load((atomic_int *)ctx); }

static int destroyed_100(void *ctx) {
    (void)ctx;
    return atomic_load(&g_destroyed) == 100;
}

TEST(pipe_idle_pipes_one_thread) {
    enum { N = 100 };
    desync_scheduler_t *s = desync_scheduler_new(1);
    desync_t *objs[N];
    desync_channel_t *chans[N];
    for (int i = 0; i < N; i++) {
        objs[i] = desync_new_on(s, vec_new(), vec_destroy);
        desync_stream_t *rx;
        chans[i] = desync_channel_new(1, &rx);
        if (i % 2) {
            CHECK_EQ(desync_pipe_in(objs[i], rx, vec_push, NULL), 0);
        } else {
            desync_stream_t *out = desync_pipe(objs[i], rx, identity, NULL);
            CHECK_EQ(desync_pipe_in(objs[i], out, vec_push, NULL), 0);
        }
    }
    desync_t *other = desync_new_on(s, NULL, NULL);
    atomic_int flag = 0;
    desync_desync(other, set_flag_job, &flag);
    CHECK(test_wait_until(flag_set, &flag, 5000));
    CHECK(desync_scheduler_thread_count(s) <= 1);
    /* And the pipes still work on that one thread. */
    for (int i = 0; i < N; i++)
        CHECK_EQ(desync_channel_send(chans[i], P(i)), 0);
    for (int i = 0; i < N; i++) {
        uint64_t end = test_now_ns() + 5 * SEC;
        while (vec_len(objs[i]) < 1 && test_now_ns() < end)
            test_sleep_ms(1);
        CHECK_EQ(vec_len(objs[i]), 1);
    }
    atomic_store(&flag, 0);
    desync_desync(other, set_flag_job, &flag);
    CHECK(test_wait_until(flag_set, &flag, 5000));
    for (int i = 0; i < N; i++) {
        desync_channel_close(chans[i]);
        desync_release(objs[i]);
    }
    desync_release(other);
    CHECK(test_wait_until(destroyed_100, NULL, 5000));
    desync_scheduler_free(s);
    return 0;
}
