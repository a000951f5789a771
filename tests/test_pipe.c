/*
 * Pipes: the reference crate's pipe tests (pipe_in a stream and a channel,
 * pipe through, backpressure, the blockage loop), ordering with other jobs,
 * async forms, weak/strong object references, and closing/freeing in every
 * order (items are heap blocks, so the AddressSanitizer build finds leaks).
 */
#include "desync.h"
#include "test.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>

/* --------------------------------------------------------------- helpers */

static atomic_int g_destroyed; /* objects destroyed */

typedef struct {
    uintptr_t v[4096];
    int n;
    int state;
} vec;

static vec *vec_new(void) { return calloc(1, sizeof(vec)); }

static void vec_destroy(void *data) {
    atomic_fetch_add(&g_destroyed, 1);
    free(data);
}

static void vec_push(void *data, void *item, void *arg) {
    (void)arg;
    vec *x = data;
    x->v[x->n++] = U(item);
}

static atomic_int g_processed;

static void vec_push_heap(void *data, void *item, void *arg) {
    vec_push(data, P(*(int *)item), arg);
    free(item);
    atomic_fetch_add(&g_processed, 1);
}

static int all_320_gone(void *ctx) {
    (void)ctx;
    return atomic_load(&g_processed) + atomic_load(&g_freed) == 320;
}

static void read_n(void *data, void *arg) { *(int *)arg = ((vec *)data)->n; }

static int vec_len(desync_t *d) {
    int n = -1;
    desync_sync(d, read_n, &n);
    return n;
}

static int destroyed_6(void *ctx) {
    (void)ctx;
    return atomic_load(&g_destroyed) == 6;
}

static int destroyed_100(void *ctx) {
    (void)ctx;
    return atomic_load(&g_destroyed) == 100;
}

static int destroyed_1(void *ctx) {
    (void)ctx;
    return atomic_load(&g_destroyed) >= 1;
}

/* A user stream that counts its frees (always at EOF once drained). */
typedef struct {
    uintptr_t next, n;
    atomic_int frees;
    _Atomic uintptr_t polled;
} counter_src;

static int cs_poll(void *self, void **item, const desync_waker_t *w) {
    (void)w;
    counter_src *c = self;
    if (c->next > c->n)
        return DESYNC_EOF;
    *item = P(c->next);
    atomic_store(&c->polled, c->next);
    c->next++;
    return 0;
}

static void cs_free(void *self) { atomic_fetch_add(&((counter_src *)self)->frees, 1); }

static const desync_stream_ops_t cs_ops = {cs_poll, cs_free};

static int freed_once(void *ctx) { return atomic_load(&((counter_src *)ctx)->frees) == 1; }

/* ------------------------------------------------------- reference tests */

TEST(pipe_in_simple_stream) {
    desync_t *d = desync_new(vec_new(), vec_destroy);
    void *items[] = {P(1), P(2), P(3)};
    CHECK_EQ(desync_pipe_in(d, desync_stream_from_array(items, 3), vec_push, NULL), 0);
    CHECK_EQ(vec_len(d), 3);
    vec *x = desync_data(d); /* no job is running any more */
    CHECK_EQ(x->v[0], 1);
    CHECK_EQ(x->v[1], 2);
    CHECK_EQ(x->v[2], 3);
    desync_release(d);
    CHECK_EQ(atomic_load(&g_destroyed), 1);
    return 0;
}

TEST(pipe_in_channel) {
    desync_t *d = desync_new(vec_new(), vec_destroy);
    desync_stream_t *rx;
    desync_channel_t *c = desync_channel_new(1, &rx);
    CHECK_EQ(desync_pipe_in(d, rx, vec_push, NULL), 0);
    CHECK_EQ(vec_len(d), 0);
    CHECK_EQ(desync_channel_send(c, P(1)), 0);
    CHECK_EQ(desync_channel_send(c, P(2)), 0);
    /* Sent before the sync was queued: processed before it. */
    CHECK_EQ(vec_len(d), 2);
    vec *x = desync_data(d);
    CHECK_EQ(x->v[0], 1);
    CHECK_EQ(x->v[1], 2);
    desync_channel_close(c);
    desync_release(d);
    return 0;
}

static void *add_state(void *data, void *item, void *arg) {
    (void)arg;
    return P(U(item) + (uintptr_t)((vec *)data)->state);
}

static void set_state(void *data, void *arg) { ((vec *)data)->state = (int)U(arg); }

static int pipe_through_once(size_t cap) {
    vec *x = vec_new();
    x->state = 1;
    desync_t *d = desync_new(x, vec_destroy);
    desync_stream_t *rx;
    desync_channel_t *c = desync_channel_new(cap, &rx);
    desync_stream_t *out = desync_pipe(d, rx, add_state, NULL);
    CHECK(out);
    void *v;
    CHECK_EQ(desync_channel_send(c, P(2)), 0);
    CHECK_EQ(desync_stream_next_for(out, 5 * SEC, &v), 0);
    CHECK_EQ(U(v), 3);
    CHECK_EQ(desync_channel_send(c, P(42)), 0);
    CHECK_EQ(desync_stream_next_for(out, 5 * SEC, &v), 0);
    CHECK_EQ(U(v), 43);
    desync_sync(d, noop_job, NULL);
    desync_desync(d, set_state, P(2));
    CHECK_EQ(desync_channel_send(c, P(44)), 0);
    CHECK_EQ(desync_stream_next_for(out, 5 * SEC, &v), 0);
    CHECK_EQ(U(v), 46);
    desync_channel_close(c);
    CHECK_EQ(desync_stream_next_for(out, 5 * SEC, &v), DESYNC_EOF);
    desync_stream_free(out);
    desync_release(d);
    return 0;
}

TEST(pipe_through) {
    CHECK_EQ(pipe_through_once(1), 0);
    CHECK_EQ(pipe_through_once(0), 0);
    return 0;
}

TEST(pipe_through_1000_times) {
    for (int i = 0; i < TEST_SCALED(1000); i++)
        CHECK_EQ(pipe_through_once((size_t)(i % 3)), 0);
    return 0;
}

TEST(pipe_through_input_closes) {
    desync_t *d = desync_new(vec_new(), vec_destroy);
    desync_stream_t *rx;
    desync_channel_t *c = desync_channel_new(4, &rx);
    desync_stream_t *out = desync_pipe(d, rx, add_state, NULL);
    CHECK_EQ(desync_channel_send(c, P(1)), 0);
    CHECK_EQ(desync_channel_send(c, P(2)), 0);
    desync_channel_close(c);
    void *v;
    CHECK_EQ(desync_stream_next_for(out, 5 * SEC, &v), 0);
    CHECK_EQ(U(v), 1);
    CHECK_EQ(desync_stream_next_for(out, 5 * SEC, &v), 0);
    CHECK_EQ(U(v), 2);
    CHECK_EQ(desync_stream_next_for(out, 5 * SEC, &v), DESYNC_EOF);
    CHECK_EQ(desync_stream_next_for(out, 5 * SEC, &v), DESYNC_EOF);
    desync_stream_free(out);
    desync_release(d);
    return 0;
}

static void *identity(void *data, void *item, void *arg) {
    (void)data;
    (void)arg;
    return item;
}

typedef struct {
    desync_channel_t *c;
    void *item;
} try_send_ctx;

static int try_send_ok(void *ctx) {
    try_send_ctx *t = ctx;
    return desync_channel_try_send(t->c, t->item) == 0;
}

TEST(pipe_backpressure) {
    desync_t *d = desync_new(vec_new(), vec_destroy);
    desync_stream_t *rx;
    desync_channel_t *c = desync_channel_new(1, &rx);
    desync_stream_t *out = desync_pipe(d, rx, identity, NULL);
    desync_pipe_set_backpressure_depth(out, 3);
    /* 3 go into the pipe, the 4th waits in the channel. */
    for (int i = 1; i <= 4; i++)
        CHECK_EQ(desync_channel_send(c, P(i)), 0);
    desync_sync(d, noop_job, NULL);
    CHECK_EQ(desync_channel_try_send(c, P(5)), DESYNC_EAGAIN);
    test_sleep_ms(20);
    CHECK_EQ(desync_channel_try_send(c, P(5)), DESYNC_EAGAIN);
    /* Reading one output lets the pipe take the 4th: room again. */
    void *v;
    CHECK_EQ(desync_stream_next_for(out, 5 * SEC, &v), 0);
    CHECK_EQ(U(v), 1);
    try_send_ctx t = {c, P(5)};
    CHECK(test_wait_until(try_send_ok, &t, 5000));
    CHECK_EQ(desync_channel_try_send(c, P(6)), DESYNC_EAGAIN);
    for (int i = 2; i <= 5; i++) {
        CHECK_EQ(desync_stream_next_for(out, 5 * SEC, &v), 0);
        CHECK_EQ(U(v), i);
    }
    desync_channel_close(c);
    CHECK_EQ(desync_stream_next_for(out, 5 * SEC, &v), DESYNC_EOF);
    desync_stream_free(out);
    desync_release(d);
    return 0;
}

/* Raising the depth lets a held-back pipe read on at once. */
TEST(pipe_backpressure_depth_change) {
    desync_t *d = desync_new(vec_new(), vec_destroy);
    counter_src src = {.next = 1, .n = 100};
    desync_stream_t *out = desync_pipe(d, desync_stream_new(&cs_ops, &src), identity, NULL);
    desync_pipe_set_backpressure_depth(out, 2);
    desync_sync(d, noop_job, NULL);
    test_sleep_ms(10);
    CHECK_EQ(atomic_load(&src.polled), 5); /* read at creation, default depth */
    void *v;
    for (int i = 1; i <= 5; i++) {
        CHECK_EQ(desync_stream_next_for(out, 5 * SEC, &v), 0);
        CHECK_EQ(U(v), i);
    }
    desync_sync(d, noop_job, NULL);
    test_sleep_ms(10);
    /* Depth 2 now: at most 2 items ahead of the reader. */
    CHECK(atomic_load(&src.polled) <= 7);
    desync_pipe_set_backpressure_depth(out, 10);
    desync_sync(d, noop_job, NULL);
    test_sleep_ms(10);
    desync_sync(d, noop_job, NULL);
    CHECK_EQ(atomic_load(&src.polled), 15);
    desync_pipe_set_backpressure_depth(out, 0); /* taken as 1 */
    for (int i = 6; i <= 100; i++) {
        CHECK_EQ(desync_stream_next_for(out, 5 * SEC, &v), 0);
        CHECK_EQ(U(v), i);
        CHECK(atomic_load(&src.polled) <= (uintptr_t)(i >= 15 ? i + 1 : 15));
    }
    CHECK_EQ(desync_stream_next_for(out, 5 * SEC, &v), DESYNC_EOF);
    CHECK_EQ(atomic_load(&src.frees), 1); /* the input is freed at its end */
    desync_stream_free(out);
    desync_release(d);
    return 0;
}

/* An always-ready input is read only as fast as the output is consumed. */
TEST(pipe_backpressure_bounds_ready_input) {
    desync_t *d = desync_new(vec_new(), vec_destroy);
    uintptr_t n = (uintptr_t)TEST_SCALED(200000);
    counter_src src = {.next = 1, .n = n};
    desync_stream_t *out = desync_pipe(d, desync_stream_new(&cs_ops, &src), identity, NULL);
    void *v;
    uintptr_t ahead = 0;
    for (uintptr_t k = 1; k <= n; k++) {
        CHECK_EQ(desync_stream_next_for(out, 5 * SEC, &v), 0);
        CHECK_EQ(U(v), k);
        uintptr_t p = atomic_load(&src.polled);
        if (p > k && p - k > ahead)
            ahead = p - k;
    }
    CHECK_EQ(desync_stream_next_for(out, 5 * SEC, &v), DESYNC_EOF);
    CHECK(ahead <= 5);
    desync_stream_free(out);
    desync_release(d);
    return 0;
}

/* The pipe blockage race: the pipe's output is fed back into its input
 * through a second channel and a thread; every value arrives, in order. */
typedef struct {
    desync_stream_t *out;
    desync_channel_t *back;
    int n;
    int err;
} relay_arg;

static void *relay(void *a) {
    relay_arg *r = a;
    void *v;
    int rc;
    while ((rc = desync_stream_next_for(r->out, 10 * SEC, &v)) == 0) {
        if (desync_channel_send(r->back, v) != 0) {
            r->err = 1;
            break;
        }
    }
    if (rc != DESYNC_EOF && rc != 0)
        r->err = rc;
    desync_channel_close(r->back);
    return NULL;
}

TEST(pipe_blockage) {
    int n = TEST_SCALED(100000);
    desync_t *d = desync_new(vec_new(), vec_destroy);
    desync_stream_t *in_rx, *back_rx;
    desync_channel_t *in = desync_channel_new(0, &in_rx);
    desync_channel_t *back = desync_channel_new(0, &back_rx);
    relay_arg ra = {desync_pipe(d, in_rx, identity, NULL), back, n, 0};
    CHECK(ra.out);
    pthread_t t;
    pthread_create(&t, NULL, relay, &ra);
    for (int i = 0; i < n; i++) {
        CHECK_EQ(desync_channel_send(in, P(i)), 0);
        void *v;
        CHECK_EQ(desync_stream_next_for(back_rx, 10 * SEC, &v), 0);
        CHECK_EQ(U(v), i);
    }
    desync_channel_close(in);
    void *v;
    CHECK_EQ(desync_stream_next_for(back_rx, 10 * SEC, &v), DESYNC_EOF);
    pthread_join(t, NULL);
    CHECK_EQ(ra.err, 0);
    desync_stream_free(ra.out);
    desync_stream_free(back_rx);
    desync_release(d);
    return 0;
}

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

typedef struct {
    desync_promise_t *pr;
    void *value;
    bool cancel;
    atomic_int *completed;
} completion;

static void *completer(void *a) {
    completion *c = a;
    test_sleep_ms(3);
    atomic_fetch_add(c->completed, 1);
    if (c->cancel)
        desync_promise_cancel(c->pr);
    else
        desync_promise_complete(c->pr, c->value);
    free(c);
    return NULL;
}

static atomic_int g_completed;

/* Output item*10 after a delay on another thread; every 3rd is cancelled;
 * item 0 gives a NULL future (done at once, value NULL). */
static desync_future_t *slow_times_ten(void *data, void *item, void *arg) {
    (void)arg;
    vec *x = data;
    x->v[x->n++] = U(item);
    if (U(item) == 0)
        return NULL;
    desync_future_t *f;
    completion *c = malloc(sizeof *c);
    c->pr = desync_promise_new(&f);
    c->value = P(U(item) * 10);
    c->cancel = U(item) % 3 == 0;
    c->completed = &g_completed;
    pthread_t t;
    pthread_create(&t, NULL, completer, c);
    pthread_detach(t);
    return f;
}

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

/* ------------------------------------------------------- references */

/* pipe_in holds only a weak reference: releasing d destroys the data; the
 * pipe then drops what it reads and frees its input. */
TEST(pipe_in_weak_reference) {
    desync_t *d = desync_new(vec_new(), vec_destroy);
    desync_stream_t *rx;
    desync_channel_t *c = desync_channel_new(4, &rx);
    desync_stream_set_item_free(rx, heap_free);
    CHECK_EQ(desync_pipe_in(d, rx, vec_push_heap, NULL), 0);
    CHECK_EQ(desync_channel_send(c, heap_item(1)), 0);
    CHECK_EQ(vec_len(d), 1);
    desync_release(d);
    CHECK_EQ(atomic_load(&g_destroyed), 1);
    /* The next item finds the object gone: item_free, input freed. */
    int r = 0;
    uint64_t end = test_now_ns() + 5 * SEC;
    for (int i = 2; test_now_ns() < end; i++) {
        void *item = heap_item(i);
        r = desync_channel_try_send(c, item);
        if (r != 0)
            free(item);
        if (r == DESYNC_EPIPE)
            break;
        test_sleep_ms(1);
    }
    CHECK_EQ(r, DESYNC_EPIPE);
    CHECK(atomic_load(&g_freed) >= 1);
    desync_channel_close(c);
    return 0;
}

/* Released while idle: the pipe notices at the input's end. */
static int freed_1(void *ctx) {
    (void)ctx;
    return atomic_load(&g_freed) == 1;
}

TEST(pipe_in_weak_reference_idle) {
    desync_t *d = desync_new(vec_new(), vec_destroy);
    desync_stream_t *rx;
    desync_channel_t *c = desync_channel_new(2, &rx);
    desync_stream_set_item_free(rx, heap_free);
    CHECK_EQ(desync_pipe_in(d, rx, vec_push_heap, NULL), 0);
    desync_release(d);
    CHECK_EQ(atomic_load(&g_destroyed), 1);
    CHECK_EQ(desync_channel_try_send(c, heap_item(1)), 0);
    desync_channel_close(c);
    /* Item 1 is dropped with item_free; ASan checks the rest is released. */
    CHECK(test_wait_until(freed_1, NULL, 5000));
    test_sleep_ms(20);
    return 0;
}

/* desync_pipe keeps d alive until the output is freed. */
TEST(pipe_keeps_object_alive) {
    desync_t *d = desync_new(vec_new(), vec_destroy);
    desync_stream_t *rx;
    desync_channel_t *c = desync_channel_new(2, &rx);
    desync_stream_t *out = desync_pipe(d, rx, add_state, NULL);
    desync_release(d);
    CHECK_EQ(atomic_load(&g_destroyed), 0);
    CHECK_EQ(desync_channel_send(c, P(5)), 0);
    void *v;
    CHECK_EQ(desync_stream_next_for(out, 5 * SEC, &v), 0);
    CHECK_EQ(U(v), 5);
    CHECK_EQ(atomic_load(&g_destroyed), 0);
    desync_stream_free(out);
    CHECK(test_wait_until(destroyed_1, NULL, 5000));
    /* Freeing the output freed the input: the channel has no reader. */
    CHECK_EQ(desync_channel_send(c, P(6)), DESYNC_EPIPE);
    desync_channel_close(c);
    return 0;
}

/* Freeing the output early: buffered outputs go to the output's
 * item_free, items still in the channel to the input's. */
TEST(pipe_output_freed_early) {
    desync_t *d = desync_new(vec_new(), vec_destroy);
    desync_stream_t *rx;
    desync_channel_t *c = desync_channel_new(8, &rx);
    desync_stream_set_item_free(rx, heap_free);
    for (int i = 0; i < 8; i++)
        CHECK_EQ(desync_channel_send(c, heap_item(i)), 0);
    desync_stream_t *out = desync_pipe(d, rx, identity, NULL);
    desync_stream_set_item_free(out, heap_free);
    void *v;
    CHECK_EQ(desync_stream_next_for(out, 5 * SEC, &v), 0);
    CHECK_EQ(*(int *)v, 0);
    free(v);
    desync_sync(d, noop_job, NULL);
    desync_stream_free(out);
    desync_release(d);
    /* The pipe's own reference goes in a job: destruction follows soon. */
    CHECK(test_wait_until(destroyed_1, NULL, 5000));
    CHECK_EQ(atomic_load(&g_freed), 7);
    CHECK_EQ(desync_channel_send(c, P(1)), DESYNC_EPIPE);
    desync_channel_close(c);
    return 0;
}

static void *slow_identity(void *data, void *item, void *arg) {
    (void)data;
    (void)arg;
    test_sleep_ms(2);
    return item;
}

typedef struct {
    desync_channel_t *c;
    int n;
} feeder_arg;

static void *feeder(void *a) {
    feeder_arg *f = a;
    for (int i = 0; i < f->n; i++) {
        void *item = heap_item(i);
        if (desync_channel_send(f->c, item) != 0) {
            free(item);
            break;
        }
    }
    desync_channel_close(f->c);
    return NULL;
}

/* Every order of: input ends, output freed, object released, channel
 * closed with items buffered, while items are in flight. */
TEST(pipe_free_orders) {
    for (int order = 0; order < 6; order++) {
        desync_t *d = desync_new(vec_new(), vec_destroy);
        desync_stream_t *rx;
        desync_channel_t *c = desync_channel_new(3, &rx);
        desync_stream_set_item_free(rx, heap_free);
        desync_stream_t *out =
            desync_pipe(d, rx, order % 2 ? slow_identity : identity, NULL);
        desync_stream_set_item_free(out, heap_free);
        feeder_arg fa = {c, 40};
        pthread_t t;
        pthread_create(&t, NULL, feeder, &fa);
        void *v;
        switch (order) {
        case 0: /* read everything, then free */
        case 1:
            for (int i = 0; i < 40; i++) {
                CHECK_EQ(desync_stream_next_for(out, 5 * SEC, &v), 0);
                CHECK_EQ(*(int *)v, i);
                free(v);
            }
            CHECK_EQ(desync_stream_next_for(out, 5 * SEC, &v), DESYNC_EOF);
            desync_release(d);
            desync_stream_free(out);
            break;
        case 2: /* free the output while items flow */
        case 3:
            CHECK_EQ(desync_stream_next_for(out, 5 * SEC, &v), 0);
            free(v);
            desync_stream_free(out);
            desync_release(d);
            break;
        default: /* release first, read some, free */
            desync_release(d);
            for (int i = 0; i < 5; i++) {
                CHECK_EQ(desync_stream_next_for(out, 5 * SEC, &v), 0);
                free(v);
            }
            desync_stream_free(out);
            break;
        }
        pthread_join(t, NULL);
    }
    CHECK(test_wait_until(destroyed_6, NULL, 5000));
    test_sleep_ms(20);
    return 0;
}

/* pipe_in with the channel closed while items are buffered and the object
 * released at once. */
TEST(pipe_in_release_with_items_buffered) {
    for (int i = 0; i < 20; i++) {
        desync_t *d = desync_new(vec_new(), vec_destroy);
        desync_stream_t *rx;
        desync_channel_t *c = desync_channel_new(16, &rx);
        desync_stream_set_item_free(rx, heap_free);
        for (int k = 0; k < 16; k++)
            CHECK_EQ(desync_channel_send(c, heap_item(k)), 0);
        CHECK_EQ(desync_pipe_in(d, rx, vec_push_heap, NULL), 0);
        if (i % 2)
            desync_channel_close(c);
        desync_release(d);
        if (!(i % 2))
            desync_channel_close(c);
    }
    CHECK(test_wait_until(all_320_gone, NULL, 5000));
    test_sleep_ms(20);
    return 0;
}

/* Chained pipes through three objects; freeing the last output shuts down
 * the whole chain and frees the source. */
static void *plus_one(void *data, void *item, void *arg) {
    (void)data;
    (void)arg;
    return P(U(item) + 1);
}

static void *times_two(void *data, void *item, void *arg) {
    (void)data;
    (void)arg;
    return P(U(item) * 2);
}

static void sum_into(void *data, void *item, void *arg) {
    (void)arg;
    vec *x = data;
    x->v[0] += U(item);
    x->n++;
}

TEST(pipe_chain) {
    desync_t *a = desync_new(vec_new(), vec_destroy);
    desync_t *b = desync_new(vec_new(), vec_destroy);
    desync_t *s = desync_new(vec_new(), vec_destroy);
    uintptr_t n = (uintptr_t)TEST_SCALED(20000);
    counter_src src = {.next = 1, .n = n};
    desync_stream_t *o1 = desync_pipe(a, desync_stream_new(&cs_ops, &src), plus_one, NULL);
    desync_stream_t *o2 = desync_pipe(b, o1, times_two, NULL);
    CHECK_EQ(desync_pipe_in(s, o2, sum_into, NULL), 0);
    uint64_t end = test_now_ns() + 20 * SEC;
    while (vec_len(s) < (int)n && test_now_ns() < end)
        test_sleep_ms(2);
    CHECK_EQ(vec_len(s), (int)n);
    vec *x = desync_data(s);
    CHECK_EQ(x->v[0], n * (n + 1) + 2 * n); /* sum of 2(i+1) */
    CHECK(test_wait_until(freed_once, &src, 5000));
    desync_release(a);
    desync_release(b);
    desync_release(s);

    /* Free the chain's end while the source still has items. */
    counter_src src2 = {.next = 1, .n = 1000000};
    desync_t *a2 = desync_new(vec_new(), vec_destroy);
    desync_t *b2 = desync_new(vec_new(), vec_destroy);
    o1 = desync_pipe(a2, desync_stream_new(&cs_ops, &src2), plus_one, NULL);
    o2 = desync_pipe(b2, o1, times_two, NULL);
    void *v;
    for (uintptr_t i = 1; i <= 100; i++) {
        CHECK_EQ(desync_stream_next_for(o2, 5 * SEC, &v), 0);
        CHECK_EQ(U(v), 2 * (i + 1));
    }
    desync_release(a2);
    desync_release(b2);
    desync_stream_free(o2);
    CHECK(test_wait_until(freed_once, &src2, 5000));
    return 0;
}

/* A future for the next output item. */
TEST(pipe_output_next_future) {
    desync_t *d = desync_new(vec_new(), vec_destroy);
    desync_stream_t *rx;
    desync_channel_t *c = desync_channel_new(1, &rx);
    desync_stream_t *out = desync_pipe(d, rx, plus_one, NULL);
    desync_future_t *f = desync_stream_next_future(out);
    CHECK_EQ(desync_future_poll(f, NULL, NULL), DESYNC_EAGAIN);
    CHECK_EQ(desync_channel_send(c, P(1)), 0);
    void *v;
    CHECK_EQ(desync_future_wait_for(f, 5 * SEC, &v), 0);
    CHECK_EQ(U(v), 2);
    desync_future_free(f);
    f = desync_stream_next_future(out);
    desync_channel_close(c);
    CHECK_EQ(desync_future_wait_for(f, 5 * SEC, &v), DESYNC_EOF);
    desync_future_free(f);
    desync_stream_free(out);
    desync_release(d);
    return 0;
}

TEST(pipe_bad_input) {
    desync_t *d = desync_new(vec_new(), vec_destroy);
    counter_src src[8] = {{0}};
    for (int i = 0; i < 8; i++)
        src[i].next = 1;
    CHECK_EQ(desync_pipe_in(NULL, desync_stream_new(&cs_ops, &src[0]), vec_push, NULL),
             DESYNC_EINVAL);
    CHECK_EQ(desync_pipe_in(d, desync_stream_new(&cs_ops, &src[1]), NULL, NULL), DESYNC_EINVAL);
    CHECK_EQ(desync_pipe_in(d, NULL, vec_push, NULL), DESYNC_EINVAL);
    CHECK(desync_pipe(NULL, desync_stream_new(&cs_ops, &src[2]), identity, NULL) == NULL);
    CHECK(desync_pipe(d, desync_stream_new(&cs_ops, &src[3]), NULL, NULL) == NULL);
    CHECK(desync_pipe(d, NULL, identity, NULL) == NULL);
    CHECK_EQ(desync_pipe_in_async(NULL, desync_stream_new(&cs_ops, &src[4]), slow_times_ten, NULL),
             DESYNC_EINVAL);
    CHECK_EQ(desync_pipe_in_async(d, desync_stream_new(&cs_ops, &src[5]), NULL, NULL),
             DESYNC_EINVAL);
    CHECK(desync_pipe_async(NULL, desync_stream_new(&cs_ops, &src[6]), slow_times_ten, NULL) ==
          NULL);
    CHECK(desync_pipe_async(d, desync_stream_new(&cs_ops, &src[7]), NULL, NULL) == NULL);
    for (int i = 0; i < 8; i++)
        CHECK_EQ(atomic_load(&src[i].frees), 1); /* the input is freed on error */
    desync_release(d);
    return 0;
}

/* No thread is parked in a pipe: 1 scheduler thread, 100 idle pipes, and
 * another object on the same scheduler is still served. */
static int flag_set(void *ctx) { return atomic_load((atomic_int *)ctx); }

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
