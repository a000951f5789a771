/*
 * Streams and channels: every reader call, wakers, timeouts, EPIPE,
 * rendezvous channels, several senders, item_free on free.
 */
#include "desync.h"
#include "test.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>

/* --------------------------------------------------------------- helpers */

/* Counts in g_freed (test.h), as heap_free does, but frees nothing. */
static void count_free(void *item) {
    (void)item;
    atomic_fetch_add(&g_freed, 1);
}

typedef struct {
    atomic_int calls;
} wake_count;

static void count_wake(void *ctx) { atomic_fetch_add(&((wake_count *)ctx)->calls, 1); }

static int calls_at_least_1(void *ctx) { return atomic_load(&((wake_count *)ctx)->calls) >= 1; }

/* A user stream over a small locked buffer. It calls its waker WITH ITS
 * LOCK HELD (legal for a stream), so the library must not poll it from
 * inside the wake. */
typedef struct {
    pthread_mutex_t mu;
    uintptr_t buf[64];
    int head, count;
    bool closed;
    desync_waker_t w;
    bool has_w;
    atomic_int frees;
    atomic_int polls;
} ustream;

static int us_poll(void *self, void **item, const desync_waker_t *waker) {
    ustream *u = self;
    atomic_fetch_add(&u->polls, 1);
    pthread_mutex_lock(&u->mu);
    int r;
    if (u->count) {
        *item = P(u->buf[u->head]);
        u->head = (u->head + 1) % 64;
        u->count--;
        r = 0;
    } else if (u->closed) {
        r = DESYNC_EOF;
    } else {
        u->has_w = waker != NULL;
        if (waker)
            u->w = *waker;
        r = DESYNC_EAGAIN;
    }
    pthread_mutex_unlock(&u->mu);
    return r;
}

static void us_free(void *self) { atomic_fetch_add(&((ustream *)self)->frees, 1); }

static const desync_stream_ops_t us_ops = {us_poll, us_free};

static void us_init(ustream *u) {
    pthread_mutex_init(&u->mu, NULL);
    u->head = u->count = 0;
    u->closed = false;
    u->has_w = false;
    atomic_init(&u->frees, 0);
    atomic_init(&u->polls, 0);
}

static void us_wake_locked(ustream *u) {
    if (u->has_w) {
        u->has_w = false;
        u->w.wake(u->w.ctx); /* lock held on purpose */
    }
}

static void us_push(ustream *u, uintptr_t v) {
    pthread_mutex_lock(&u->mu);
    u->buf[(u->head + u->count) % 64] = v;
    u->count++;
    us_wake_locked(u);
    pthread_mutex_unlock(&u->mu);
}

static void us_close(ustream *u) {
    pthread_mutex_lock(&u->mu);
    u->closed = true;
    us_wake_locked(u);
    pthread_mutex_unlock(&u->mu);
}

/* ---------------------------------------------------------------- arrays */

TEST(stream_array_reads) {
    void *items[] = {P(1), P(2), P(3), P(4)};
    desync_stream_t *s = desync_stream_from_array(items, 4);
    CHECK(s);
    items[0] = P(99); /* the pointers were copied */
    void *v = NULL;
    CHECK_EQ(desync_stream_try_next(s, &v), 0);
    CHECK_EQ(U(v), 1);
    CHECK_EQ(desync_stream_next(s, &v), 0);
    CHECK_EQ(U(v), 2);
    CHECK_EQ(desync_stream_next_for(s, 1000000, &v), 0);
    CHECK_EQ(U(v), 3);
    wake_count wc = {0};
    desync_waker_t w = {count_wake, &wc};
    CHECK_EQ(desync_stream_poll_next(s, &v, &w), 0);
    CHECK_EQ(U(v), 4);
    CHECK_EQ(desync_stream_next(s, &v), DESYNC_EOF);
    CHECK_EQ(desync_stream_try_next(s, &v), DESYNC_EOF);
    CHECK_EQ(desync_stream_next_for(s, 0, &v), DESYNC_EOF);
    CHECK_EQ(desync_stream_poll_next(s, &v, &w), DESYNC_EOF);
    CHECK_EQ(atomic_load(&wc.calls), 0);
    desync_stream_free(s);

    s = desync_stream_from_array(NULL, 0);
    CHECK(s);
    CHECK_EQ(desync_stream_next(s, &v), DESYNC_EOF);
    desync_stream_free(s);
    return 0;
}

TEST(stream_array_item_free) {
    void *items[5];
    for (int i = 0; i < 5; i++)
        items[i] = heap_item(i);
    desync_stream_t *s = desync_stream_from_array(items, 5);
    CHECK(s);
    desync_stream_set_item_free(s, heap_free);
    void *v;
    CHECK_EQ(desync_stream_next(s, &v), 0);
    CHECK_EQ(*(int *)v, 0);
    free(v);
    desync_stream_free(s); /* 4 left */
    CHECK_EQ(atomic_load(&g_freed), 4);
    return 0;
}

TEST(stream_bad_input) {
    CHECK(desync_stream_from_array(NULL, 3) == NULL);
    CHECK(desync_stream_new(NULL, NULL) == NULL);
    desync_stream_ops_t no_poll = {NULL, NULL};
    CHECK(desync_stream_new(&no_poll, NULL) == NULL);
    void *v;
    CHECK_EQ(desync_stream_next(NULL, &v), DESYNC_EINVAL);
    CHECK_EQ(desync_stream_next_for(NULL, 1, &v), DESYNC_EINVAL);
    CHECK_EQ(desync_stream_try_next(NULL, &v), DESYNC_EINVAL);
    CHECK_EQ(desync_stream_poll_next(NULL, &v, NULL), DESYNC_EINVAL);
    desync_stream_t *s = desync_stream_from_array(NULL, 0);
    CHECK_EQ(desync_stream_next(s, NULL), DESYNC_EINVAL);
    CHECK_EQ(desync_stream_try_next(s, NULL), DESYNC_EINVAL);
    CHECK(desync_stream_next_future(NULL) == NULL);
    desync_stream_set_item_free(NULL, count_free);
    desync_stream_free(NULL);
    desync_stream_free(s);
    desync_stream_t *rx;
    CHECK(desync_channel_new(1, NULL) == NULL);
    desync_channel_t *c = desync_channel_new(1, &rx);
    CHECK(c);
    CHECK_EQ(desync_channel_send(NULL, P(1)), DESYNC_EINVAL);
    CHECK_EQ(desync_channel_try_send(NULL, P(1)), DESYNC_EINVAL);
    CHECK(desync_channel_send_future(NULL, P(1)) == NULL);
    CHECK(desync_channel_retain(NULL) == NULL);
    desync_channel_close(NULL);
    desync_pipe_set_backpressure_depth(rx, 3); /* not a pipe: ignored */
    desync_pipe_set_backpressure_depth(NULL, 3);
    desync_channel_close(c);
    desync_stream_free(rx);
    return 0;
}

/* ----------------------------------------------------------- user streams */

TEST(stream_user_reads_and_frees) {
    ustream u;
    us_init(&u);
    desync_stream_t *s = desync_stream_new(&us_ops, &u);
    CHECK(s);
    void *v;
    CHECK_EQ(desync_stream_try_next(s, &v), DESYNC_EAGAIN);
    us_push(&u, 7);
    CHECK_EQ(desync_stream_next(s, &v), 0);
    CHECK_EQ(U(v), 7);
    CHECK_EQ(desync_stream_next_for(s, 20000000, &v), DESYNC_ETIMEDOUT);
    us_close(&u);
    CHECK_EQ(desync_stream_next(s, &v), DESYNC_EOF);
    desync_stream_free(s);
    CHECK_EQ(atomic_load(&u.frees), 1);
    return 0;
}

typedef struct {
    ustream *u;
    unsigned delay_ms;
    int n;
} pusher_arg;

static void *us_pusher(void *a) {
    pusher_arg *pa = a;
    for (int i = 1; i <= pa->n; i++) {
        if (pa->delay_ms)
            test_sleep_ms(pa->delay_ms);
        us_push(pa->u, (uintptr_t)i);
    }
    us_close(pa->u);
    return NULL;
}

/* Blocking next sleeps and is woken by a stream that wakes under its lock. */
TEST(stream_user_blocking_next_woken) {
    ustream u;
    us_init(&u);
    desync_stream_t *s = desync_stream_new(&us_ops, &u);
    pusher_arg pa = {&u, 30, 3};
    pthread_t t;
    pthread_create(&t, NULL, us_pusher, &pa);
    void *v;
    for (int i = 1; i <= 3; i++) {
        CHECK_EQ(desync_stream_next_for(s, 5000000000ull, &v), 0);
        CHECK_EQ(U(v), i);
    }
    CHECK_EQ(desync_stream_next_for(s, 5000000000ull, &v), DESYNC_EOF);
    pthread_join(t, NULL);
    /* A blocked reader polls a few times per item, never in a loop. */
    CHECK(atomic_load(&u.polls) < 40);
    desync_stream_free(s);
    return 0;
}

/* ---------------------------------------------------------- next_future */

TEST(stream_next_future_channel) {
    desync_stream_t *rx;
    desync_channel_t *c = desync_channel_new(4, &rx);
    desync_future_t *f = desync_stream_next_future(rx);
    CHECK(f);
    void *v = NULL;
    CHECK_EQ(desync_future_poll(f, &v, NULL), DESYNC_EAGAIN);
    CHECK_EQ(desync_channel_send(c, P(5)), 0);
    CHECK_EQ(desync_future_wait_for(f, 5000000000ull, &v), 0);
    CHECK_EQ(U(v), 5);
    desync_future_free(f);

    /* Ready at once. */
    CHECK_EQ(desync_channel_send(c, P(6)), 0);
    f = desync_stream_next_future(rx);
    CHECK_EQ(desync_future_poll(f, &v, NULL), 0);
    CHECK_EQ(U(v), 6);
    desync_future_free(f);

    /* The end: status DESYNC_EOF. */
    f = desync_stream_next_future(rx);
    desync_channel_close(c);
    CHECK_EQ(desync_future_wait_for(f, 5000000000ull, &v), DESYNC_EOF);
    desync_future_free(f);
    desync_stream_free(rx);
    return 0;
}

TEST(stream_next_future_user_stream) {
    ustream u;
    us_init(&u);
    desync_stream_t *s = desync_stream_new(&us_ops, &u);
    pusher_arg pa = {&u, 10, 5};
    pthread_t t;
    pthread_create(&t, NULL, us_pusher, &pa);
    for (int i = 1; i <= 5; i++) {
        desync_future_t *f = desync_stream_next_future(s);
        CHECK(f);
        void *v = NULL;
        CHECK_EQ(desync_future_wait_for(f, 5000000000ull, &v), 0);
        CHECK_EQ(U(v), i);
        desync_future_free(f);
    }
    desync_future_t *f = desync_stream_next_future(s);
    CHECK_EQ(desync_future_wait_for(f, 5000000000ull, NULL), DESYNC_EOF);
    desync_future_free(f);
    pthread_join(t, NULL);
    desync_stream_free(s);
    CHECK_EQ(atomic_load(&u.frees), 1);
    return 0;
}

/* --------------------------------------------------------------- channels */

TEST(channel_try_send_capacity) {
    desync_stream_t *rx;
    desync_channel_t *c = desync_channel_new(2, &rx);
    CHECK_EQ(desync_channel_try_send(c, P(1)), 0);
    CHECK_EQ(desync_channel_try_send(c, P(2)), 0);
    CHECK_EQ(desync_channel_try_send(c, P(3)), DESYNC_EAGAIN);
    void *v;
    CHECK_EQ(desync_stream_try_next(rx, &v), 0);
    CHECK_EQ(U(v), 1);
    CHECK_EQ(desync_channel_try_send(c, P(3)), 0);
    CHECK_EQ(desync_channel_try_send(c, P(4)), DESYNC_EAGAIN);
    CHECK_EQ(desync_stream_next(rx, &v), 0);
    CHECK_EQ(U(v), 2);
    CHECK_EQ(desync_stream_next(rx, &v), 0);
    CHECK_EQ(U(v), 3);
    CHECK_EQ(desync_stream_try_next(rx, &v), DESYNC_EAGAIN);
    uint64_t t0 = test_now_ns();
    CHECK_EQ(desync_stream_next_for(rx, 50000000, &v), DESYNC_ETIMEDOUT);
    uint64_t dt = test_now_ns() - t0;
    CHECK(dt >= 45000000);
    CHECK(dt < 2000000000);
    desync_channel_close(c);
    CHECK_EQ(desync_stream_next(rx, &v), DESYNC_EOF);
    desync_stream_free(rx);
    return 0;
}

/* A channel's items sit in a ring whose capacity need not be a power of two
 * (5 here; 40 after growing from a smaller first allocation): the slots
 * wrap around it many times, and the order must hold. */
TEST(channel_odd_capacity_wraps_in_order) {
    static const size_t caps[] = {5, 40};
    for (size_t k = 0; k < sizeof caps / sizeof caps[0]; k++) {
        desync_stream_t *rx;
        desync_channel_t *c = desync_channel_new(caps[k], &rx);
        CHECK(c);
        uintptr_t sent = 1, got = 1;
        for (int round = 0; round < 500; round++) {
            /* Fill to capacity, then take back a varying number. */
            while (desync_channel_try_send(c, P(sent)) == 0)
                sent++;
            CHECK_EQ(sent - got, caps[k]);
            for (int i = 0; i < 1 + round % (int)caps[k]; i++) {
                void *v;
                CHECK_EQ(desync_stream_try_next(rx, &v), 0);
                CHECK_EQ(U(v), got);
                got++;
            }
        }
        desync_channel_close(c);
        void *v;
        while (got < sent) {
            CHECK_EQ(desync_stream_next(rx, &v), 0);
            CHECK_EQ(U(v), got);
            got++;
        }
        CHECK_EQ(desync_stream_next(rx, &v), DESYNC_EOF);
        desync_stream_free(rx);
    }
    return 0;
}

TEST(channel_large_capacity_grows) {
    desync_stream_t *rx;
    desync_channel_t *c = desync_channel_new(1000, &rx);
    for (int i = 0; i < 1000; i++)
        CHECK_EQ(desync_channel_try_send(c, P(i)), 0);
    CHECK_EQ(desync_channel_try_send(c, P(0)), DESYNC_EAGAIN);
    void *v;
    for (int i = 0; i < 500; i++) {
        CHECK_EQ(desync_stream_try_next(rx, &v), 0);
        CHECK_EQ(U(v), i);
    }
    for (int i = 1000; i < 1500; i++)
        CHECK_EQ(desync_channel_try_send(c, P(i)), 0);
    for (int i = 500; i < 1500; i++) {
        CHECK_EQ(desync_stream_try_next(rx, &v), 0);
        CHECK_EQ(U(v), i);
    }
    desync_channel_close(c);
    CHECK_EQ(desync_stream_try_next(rx, &v), DESYNC_EOF);
    desync_stream_free(rx);
    return 0;
}

/* A pending poll's waker is called exactly once; a later poll replaces it. */
TEST(channel_waker_once_and_replaced) {
    desync_stream_t *rx;
    desync_channel_t *c = desync_channel_new(4, &rx);
    wake_count a = {0}, b = {0};
    desync_waker_t wa = {count_wake, &a}, wb = {count_wake, &b};
    void *v;
    CHECK_EQ(desync_stream_poll_next(rx, &v, &wa), DESYNC_EAGAIN);
    CHECK_EQ(atomic_load(&a.calls), 0);
    CHECK_EQ(desync_channel_send(c, P(1)), 0);
    CHECK_EQ(atomic_load(&a.calls), 1);
    CHECK_EQ(desync_channel_send(c, P(2)), 0);
    CHECK_EQ(atomic_load(&a.calls), 1);
    CHECK_EQ(desync_stream_poll_next(rx, &v, &wa), 0);
    CHECK_EQ(U(v), 1);
    CHECK_EQ(desync_stream_poll_next(rx, &v, &wa), 0);
    CHECK_EQ(U(v), 2);
    /* Replace: A registered, then B: only B is called. */
    CHECK_EQ(desync_stream_poll_next(rx, &v, &wa), DESYNC_EAGAIN);
    CHECK_EQ(desync_stream_poll_next(rx, &v, &wb), DESYNC_EAGAIN);
    CHECK_EQ(desync_channel_send(c, P(3)), 0);
    CHECK_EQ(atomic_load(&a.calls), 1);
    CHECK_EQ(atomic_load(&b.calls), 1);
    /* try_next also replaces: no call afterwards. */
    CHECK_EQ(desync_stream_try_next(rx, &v), 0);
    CHECK_EQ(desync_stream_poll_next(rx, &v, &wb), DESYNC_EAGAIN);
    CHECK_EQ(desync_stream_try_next(rx, &v), DESYNC_EAGAIN);
    CHECK_EQ(desync_channel_send(c, P(4)), 0);
    CHECK_EQ(atomic_load(&b.calls), 1);
    /* The end wakes a pending poll too. */
    CHECK_EQ(desync_stream_try_next(rx, &v), 0);
    CHECK_EQ(desync_stream_poll_next(rx, &v, &wa), DESYNC_EAGAIN);
    desync_channel_close(c);
    CHECK_EQ(atomic_load(&a.calls), 2);
    CHECK_EQ(desync_stream_poll_next(rx, &v, &wa), DESYNC_EOF);
    desync_stream_free(rx);
    return 0;
}

TEST(channel_epipe_after_reader_freed) {
    desync_stream_t *rx;
    desync_channel_t *c = desync_channel_new(4, &rx);
    desync_stream_set_item_free(rx, heap_free);
    CHECK_EQ(desync_channel_send(c, heap_item(1)), 0);
    CHECK_EQ(desync_channel_send(c, heap_item(2)), 0);
    desync_stream_free(rx);
    CHECK_EQ(atomic_load(&g_freed), 2); /* buffered items went to item_free */
    CHECK_EQ(desync_channel_send(c, P(3)), DESYNC_EPIPE);
    CHECK_EQ(desync_channel_try_send(c, P(3)), DESYNC_EPIPE);
    desync_future_t *f = desync_channel_send_future(c, P(3));
    CHECK(f);
    CHECK_EQ(desync_future_wait_for(f, 1000000000, NULL), DESYNC_ECANCELED);
    desync_future_free(f);
    desync_channel_close(c);
    return 0;
}

typedef struct {
    desync_channel_t *c;
    int from, to;
    int result;
    atomic_int done;
} sender_arg;

static void *blocking_sender(void *a) {
    sender_arg *sa = a;
    sa->result = 0;
    for (int i = sa->from; i < sa->to && sa->result == 0; i++)
        sa->result = desync_channel_send(sa->c, P(i));
    atomic_store(&sa->done, 1);
    return NULL;
}

static int sender_done(void *ctx) { return atomic_load(&((sender_arg *)ctx)->done); }

TEST(channel_blocked_sender_gets_epipe) {
    desync_stream_t *rx;
    desync_channel_t *c = desync_channel_new(1, &rx);
    CHECK_EQ(desync_channel_send(c, P(1)), 0);
    sender_arg sa = {c, 2, 3, -100, 0};
    pthread_t t;
    pthread_create(&t, NULL, blocking_sender, &sa);
    test_sleep_ms(50);
    CHECK_EQ(atomic_load(&sa.done), 0); /* blocked: the channel is full */
    desync_stream_free(rx);
    CHECK(test_wait_until(sender_done, &sa, 5000));
    pthread_join(t, NULL);
    CHECK_EQ(sa.result, DESYNC_EPIPE);
    desync_channel_close(c);
    return 0;
}

TEST(channel_blocking_send_in_order) {
    desync_stream_t *rx;
    desync_channel_t *c = desync_channel_new(1, &rx);
    sender_arg sa = {c, 0, 20000, -100, 0};
    pthread_t t;
    pthread_create(&t, NULL, blocking_sender, &sa);
    for (int i = 0; i < 20000; i++) {
        void *v;
        CHECK_EQ(desync_stream_next_for(rx, 5000000000ull, &v), 0);
        CHECK_EQ(U(v), i);
    }
    pthread_join(t, NULL);
    CHECK_EQ(sa.result, 0);
    desync_channel_close(c);
    void *v;
    CHECK_EQ(desync_stream_next(rx, &v), DESYNC_EOF);
    desync_stream_free(rx);
    return 0;
}

/* Capacity 0: send completes only once the reader took the item; try_send
 * succeeds only while the reader waits. */
TEST(channel_rendezvous) {
    desync_stream_t *rx;
    desync_channel_t *c = desync_channel_new(0, &rx);
    CHECK_EQ(desync_channel_try_send(c, P(1)), DESYNC_EAGAIN);
    sender_arg sa = {c, 10, 11, -100, 0};
    pthread_t t;
    pthread_create(&t, NULL, blocking_sender, &sa);
    test_sleep_ms(50);
    CHECK_EQ(atomic_load(&sa.done), 0); /* nobody took it yet */
    void *v;
    CHECK_EQ(desync_stream_next_for(rx, 5000000000ull, &v), 0);
    CHECK_EQ(U(v), 10);
    CHECK(test_wait_until(sender_done, &sa, 5000));
    pthread_join(t, NULL);
    CHECK_EQ(sa.result, 0);

    /* A waiting reader (pending poll) lets try_send hand the item over. */
    wake_count wc = {0};
    desync_waker_t w = {count_wake, &wc};
    CHECK_EQ(desync_stream_poll_next(rx, &v, &w), DESYNC_EAGAIN);
    CHECK_EQ(desync_channel_try_send(c, P(11)), 0);
    CHECK_EQ(atomic_load(&wc.calls), 1);
    CHECK_EQ(desync_channel_try_send(c, P(12)), DESYNC_EAGAIN); /* slot taken */
    CHECK_EQ(desync_stream_try_next(rx, &v), 0);
    CHECK_EQ(U(v), 11);
    CHECK_EQ(desync_channel_try_send(c, P(12)), DESYNC_EAGAIN); /* not waiting */

    /* send_future completes when taken. */
    desync_future_t *f = desync_channel_send_future(c, P(13));
    CHECK_EQ(desync_future_poll(f, NULL, NULL), DESYNC_EAGAIN);
    CHECK_EQ(desync_stream_try_next(rx, &v), 0);
    CHECK_EQ(U(v), 13);
    CHECK_EQ(desync_future_wait_for(f, 1000000000, NULL), 0);
    desync_future_free(f);
    desync_channel_close(c);
    CHECK_EQ(desync_stream_try_next(rx, &v), DESYNC_EOF);
    desync_stream_free(rx);
    return 0;
}

TEST(channel_send_future) {
    desync_stream_t *rx;
    desync_channel_t *c = desync_channel_new(1, &rx);
    desync_future_t *f1 = desync_channel_send_future(c, P(1));
    CHECK(f1);
    CHECK_EQ(desync_future_poll(f1, NULL, NULL), 0); /* room: accepted at once */
    desync_future_t *f2 = desync_channel_send_future(c, P(2));
    wake_count wc = {0};
    desync_waker_t w = {count_wake, &wc};
    CHECK_EQ(desync_future_poll(f2, NULL, &w), DESYNC_EAGAIN);
    CHECK_EQ(desync_channel_try_send(c, P(99)), DESYNC_EAGAIN); /* f2 is first in line */
    void *v;
    CHECK_EQ(desync_stream_next(rx, &v), 0);
    CHECK_EQ(U(v), 1);
    CHECK_EQ(atomic_load(&wc.calls), 1);
    CHECK_EQ(desync_future_poll(f2, NULL, NULL), 0);
    /* Pending when the reader goes: cancelled, and closing still works. */
    desync_future_t *f3 = desync_channel_send_future(c, P(3));
    CHECK_EQ(desync_future_poll(f3, NULL, NULL), DESYNC_EAGAIN);
    desync_stream_free(rx);
    CHECK_EQ(desync_future_wait_for(f3, 1000000000, NULL), DESYNC_ECANCELED);
    desync_future_free(f1);
    desync_future_free(f2);
    desync_future_free(f3);
    desync_channel_close(c);
    return 0;
}

/* Sends that wait on a full channel are let in once the reader has taken
 * it down to half its capacity (all that fit, in order), not one per take:
 * a sender that keeps the channel full wakes once per half channel. */
TEST(channel_waiting_sends_let_in_at_half) {
    desync_stream_t *rx;
    desync_channel_t *c = desync_channel_new(4, &rx);
    for (int i = 1; i <= 4; i++)
        CHECK_EQ(desync_channel_try_send(c, P(i)), 0);
    desync_future_t *f[3];
    for (int i = 0; i < 3; i++) {
        f[i] = desync_channel_send_future(c, P(5 + i));
        CHECK(f[i]);
        CHECK_EQ(desync_future_poll(f[i], NULL, NULL), DESYNC_EAGAIN);
    }
    void *v;
    CHECK_EQ(desync_stream_try_next(rx, &v), 0);
    CHECK_EQ(U(v), 1);
    /* 3 of 4 left: above half, the sends still wait (and try_send with
     * them). */
    CHECK_EQ(desync_future_poll(f[0], NULL, NULL), DESYNC_EAGAIN);
    CHECK_EQ(desync_channel_try_send(c, P(99)), DESYNC_EAGAIN);
    CHECK_EQ(desync_stream_try_next(rx, &v), 0);
    CHECK_EQ(U(v), 2);
    /* 2 left: the first two waiting sends fill the channel again. */
    CHECK_EQ(desync_future_poll(f[0], NULL, NULL), 0);
    CHECK_EQ(desync_future_poll(f[1], NULL, NULL), 0);
    CHECK_EQ(desync_future_poll(f[2], NULL, NULL), DESYNC_EAGAIN);
    for (int i = 3; i <= 7; i++) {
        CHECK_EQ(desync_stream_try_next(rx, &v), 0);
        CHECK_EQ(U(v), i);
        if (i == 4) /* 2 left (5 and 6): 7 comes in */
            CHECK_EQ(desync_future_poll(f[2], NULL, NULL), 0);
    }
    CHECK_EQ(desync_stream_try_next(rx, &v), DESYNC_EAGAIN);
    for (int i = 0; i < 3; i++)
        desync_future_free(f[i]);
    desync_channel_close(c);
    CHECK_EQ(desync_stream_try_next(rx, &v), DESYNC_EOF);
    desync_stream_free(rx);
    return 0;
}

/* Queued send futures are delivered even after the handle closed. */
TEST(channel_close_delivers_queued_items) {
    desync_stream_t *rx;
    desync_channel_t *c = desync_channel_new(2, &rx);
    CHECK_EQ(desync_channel_send(c, P(1)), 0);
    CHECK_EQ(desync_channel_send(c, P(2)), 0);
    desync_future_t *f = desync_channel_send_future(c, P(3));
    desync_channel_close(c);
    void *v;
    for (int i = 1; i <= 3; i++) {
        CHECK_EQ(desync_stream_next(rx, &v), 0);
        CHECK_EQ(U(v), i);
    }
    CHECK_EQ(desync_stream_next(rx, &v), DESYNC_EOF);
    CHECK_EQ(desync_future_wait_for(f, 1000000000, NULL), 0);
    desync_future_free(f);
    desync_stream_free(rx);
    return 0;
}

static void *sender_then_close(void *a) {
    blocking_sender(a);
    desync_channel_close(((sender_arg *)a)->c);
    return NULL;
}

TEST(channel_multiple_senders) {
    enum { SENDERS = 4, PER = 5000 };
    desync_stream_t *rx;
    desync_channel_t *c = desync_channel_new(3, &rx);
    sender_arg sa[SENDERS];
    pthread_t t[SENDERS];
    for (int i = 0; i < SENDERS; i++) {
        /* Handle i: the original for sender 0, retained ones for the rest. */
        sa[i] = (sender_arg){i ? desync_channel_retain(c) : c, i * PER, (i + 1) * PER, -100, 0};
        CHECK(sa[i].c == c);
    }
    for (int i = 0; i < SENDERS; i++)
        pthread_create(&t[i], NULL, sender_then_close, &sa[i]);
    int last[SENDERS];
    for (int i = 0; i < SENDERS; i++)
        last[i] = -1;
    int got = 0;
    void *v;
    int r;
    while ((r = desync_stream_next_for(rx, 5000000000ull, &v)) == 0) {
        int x = (int)U(v), who = x / PER;
        CHECK(who >= 0 && who < SENDERS);
        CHECK(x > last[who]); /* each sender's items stay in order */
        last[who] = x;
        got++;
    }
    CHECK_EQ(r, DESYNC_EOF);
    CHECK_EQ(got, SENDERS * PER);
    for (int i = 0; i < SENDERS; i++) {
        pthread_join(t[i], NULL);
        CHECK_EQ(sa[i].result, 0);
    }
    desync_stream_free(rx);
    return 0;
}

/* Either end may go first; the last one frees the channel (ASan checks). */
TEST(channel_free_orders) {
    for (int order = 0; order < 4; order++) {
        desync_stream_t *rx;
        desync_channel_t *c = desync_channel_new(order, &rx);
        desync_stream_set_item_free(rx, heap_free);
        desync_channel_t *c2 = desync_channel_retain(c);
        if (order)
            CHECK_EQ(desync_channel_try_send(c, heap_item(order)), 0);
        switch (order) {
        case 0:
            desync_channel_close(c);
            desync_channel_close(c2);
            desync_stream_free(rx);
            break;
        case 1:
            desync_stream_free(rx);
            desync_channel_close(c);
            desync_channel_close(c2);
            break;
        default:
            desync_channel_close(c);
            desync_stream_free(rx);
            desync_channel_close(c2);
            break;
        }
    }
    CHECK_EQ(atomic_load(&g_freed), 3);
    return 0;
}

/* A reader blocked long enough to sleep is woken by send and by close. */
static void *late_send_then_close(void *a) {
    desync_channel_t *c = a;
    test_sleep_ms(60);
    desync_channel_send(c, P(1));
    test_sleep_ms(60);
    desync_channel_close(c);
    return NULL;
}

TEST(channel_sleeping_reader_woken) {
    desync_stream_t *rx;
    desync_channel_t *c = desync_channel_new(1, &rx);
    pthread_t t;
    pthread_create(&t, NULL, late_send_then_close, c);
    void *v;
    uint64_t t0 = test_now_ns();
    CHECK_EQ(desync_stream_next_for(rx, 5000000000ull, &v), 0);
    CHECK_EQ(U(v), 1);
    CHECK_EQ(desync_stream_next_for(rx, 5000000000ull, &v), DESYNC_EOF);
    CHECK(test_now_ns() - t0 < 4000000000ull);
    pthread_join(t, NULL);
    desync_stream_free(rx);
    return 0;
}

/* A pending next_future completes (with DESYNC_EOF) when the last sender
 * closes, and its waker is called. */
TEST(channel_next_future_woken_by_close) {
    desync_stream_t *rx;
    desync_channel_t *c = desync_channel_new(1, &rx);
    desync_future_t *f = desync_stream_next_future(rx);
    wake_count wc = {0};
    desync_waker_t w = {count_wake, &wc};
    CHECK_EQ(desync_future_poll(f, NULL, &w), DESYNC_EAGAIN);
    desync_channel_close(c);
    CHECK(test_wait_until(calls_at_least_1, &wc, 5000));
    int st = desync_future_poll(f, NULL, NULL);
    CHECK(st == DESYNC_EOF);
    desync_future_free(f);
    desync_stream_free(rx);
    return 0;
}
