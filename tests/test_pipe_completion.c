/*
 * Pipe completion: desync_pipe_in_future / desync_pipe_in_async_future.
 * The future completes with 0 once every item was processed, or with
 * DESYNC_ECANCELED and the number of items not processed when the object's
 * last reference went first. Checked with counts (processed + dropped ==
 * sent, frees == dropped), never with timing; waits are bounded.
 */
#include "desync.h"
#include "test.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>

typedef struct {
    atomic_long processed;
    uintptr_t last; /* order check: items arrive in order */
    int in_order;
    desync_t *self; /* released by the job that sees release_at */
    uintptr_t release_at;
} counter;

static atomic_long g_item_frees;

static void count_free(void *item) {
    (void)item;
    atomic_fetch_add(&g_item_frees, 1);
}

static void count_item(void *data, void *item, void *arg) {
    (void)arg;
    counter *c = data;
    if (U(item) != c->last + 1)
        c->in_order = 0;
    c->last = U(item);
    atomic_fetch_add(&c->processed, 1);
    if (c->release_at && U(item) == c->release_at)
        desync_release(c->self); /* from its own job: does not block */
}

static desync_future_t *count_item_async(void *data, void *item, void *arg) {
    count_item(data, item, arg);
    return U(item) % 2 ? desync_future_ready(NULL) : NULL;
}

/* A channel holding n items 1..n, closed: its reading end. */
static desync_stream_t *filled_channel(long n) {
    desync_stream_t *rx = NULL;
    desync_channel_t *ch = desync_channel_new((size_t)n, &rx);
    if (!ch)
        return NULL;
    desync_stream_set_item_free(rx, count_free);
    for (long i = 1; i <= n; i++)
        if (desync_channel_send(ch, P(i)) != 0)
            return NULL;
    desync_channel_close(ch);
    return rx;
}

#define N_ITEMS 100000L

/* Wait on the future, then release: every item is processed. */
TEST(pipe_in_future_wait_then_release) {
    counter c = {0};
    c.in_order = 1;
    atomic_store(&g_item_frees, 0);
    desync_t *d = desync_new(&c, NULL);
    CHECK(d);
    desync_stream_t *rx = filled_channel(N_ITEMS);
    CHECK(rx);
    desync_future_t *f = desync_pipe_in_future(d, rx, count_item, NULL);
    CHECK(f);
    void *v = IV(1);
    CHECK_EQ(desync_future_wait_for(f, LONG_NS, &v), 0);
    CHECK_EQ(U(v), 0u);
    /* The last item's job has run when the future completes. */
    CHECK_EQ(atomic_load(&c.processed), N_ITEMS);
    CHECK(c.in_order);
    desync_future_free(f);
    desync_release(d);
    CHECK_EQ(atomic_load(&g_item_frees), 0);
    return 0;
}

/* Sent, closed, released at once: the pipe may stop early; the future
 * says so and counts what was dropped. */
TEST(pipe_in_future_release_after_close_counts) {
    counter c = {0};
    c.in_order = 1;
    atomic_store(&g_item_frees, 0);
    desync_t *d = desync_new(&c, NULL);
    CHECK(d);
    desync_stream_t *rx = filled_channel(N_ITEMS);
    CHECK(rx);
    desync_future_t *f = desync_pipe_in_future(d, rx, count_item, NULL);
    CHECK(f);
    desync_release(d);
    void *v = NULL;
    int st = desync_future_wait_for(f, LONG_NS, &v);
    long dropped = (long)U(v);
    CHECK(st == 0 || st == DESYNC_ECANCELED);
    CHECK_EQ(st == 0, dropped == 0);
    CHECK_EQ(atomic_load(&c.processed) + dropped, N_ITEMS);
    CHECK_EQ(atomic_load(&g_item_frees), dropped);
    CHECK(c.in_order);
    desync_future_free(f);
    return 0;
}

/* Released from the job of item 10: deterministic early stop. */
static int release_in_job(bool async) {
    counter c = {0};
    c.in_order = 1;
    atomic_store(&g_item_frees, 0);
    desync_t *d = desync_new(&c, NULL);
    CHECK(d);
    c.self = d;
    c.release_at = 10;
    desync_stream_t *rx = filled_channel(N_ITEMS);
    CHECK(rx);
    desync_future_t *f = async ? desync_pipe_in_async_future(d, rx, count_item_async, NULL)
                               : desync_pipe_in_future(d, rx, count_item, NULL);
    CHECK(f);
    void *v = NULL;
    CHECK_EQ(desync_future_wait_for(f, LONG_NS, &v), DESYNC_ECANCELED);
    long dropped = (long)U(v);
    CHECK(dropped > 0);
    CHECK(atomic_load(&c.processed) >= 10);
    CHECK_EQ(atomic_load(&c.processed) + dropped, N_ITEMS);
    CHECK_EQ(atomic_load(&g_item_frees), dropped);
    CHECK(c.in_order);
    desync_future_free(f);
    return 0;
}

TEST(pipe_in_future_release_in_job_cancels) { return release_in_job(false); }

TEST(pipe_in_async_future_release_in_job_cancels) { return release_in_job(true); }

TEST(pipe_in_async_future_all_processed) {
    counter c = {0};
    c.in_order = 1;
    atomic_store(&g_item_frees, 0);
    desync_t *d = desync_new(&c, NULL);
    CHECK(d);
    long n = TEST_SCALED(20000);
    desync_stream_t *rx = filled_channel(n);
    CHECK(rx);
    desync_future_t *f = desync_pipe_in_async_future(d, rx, count_item_async, NULL);
    CHECK(f);
    void *v = IV(1);
    CHECK_EQ(desync_future_wait_for(f, LONG_NS, &v), 0);
    CHECK_EQ(U(v), 0u);
    CHECK_EQ(atomic_load(&c.processed), n);
    CHECK(c.in_order);
    desync_future_free(f);
    desync_release(d);
    return 0;
}

/* An input that is still open when the future is made: the future
 * completes only after the channel is closed; items sent meanwhile are all
 * processed. A future freed before completion does not stop the pipe. */
TEST(pipe_in_future_open_channel) {
    counter c = {0};
    c.in_order = 1;
    desync_t *d = desync_new(&c, NULL);
    CHECK(d);
    desync_stream_t *rx;
    desync_channel_t *ch = desync_channel_new(4, &rx);
    CHECK(ch);
    desync_future_t *f = desync_pipe_in_future(d, rx, count_item, NULL);
    CHECK(f);
    for (long i = 1; i <= 1000; i++)
        CHECK_EQ(desync_channel_send(ch, P(i)), 0);
    CHECK_EQ(desync_future_wait_for(f, 1000000, NULL), DESYNC_ETIMEDOUT);
    desync_channel_close(ch);
    CHECK_EQ(desync_future_wait_for(f, LONG_NS, NULL), 0);
    CHECK_EQ(atomic_load(&c.processed), 1000);
    desync_future_free(f);

    /* Freed early: the pipe goes on. */
    counter c2 = {0};
    c2.in_order = 1;
    desync_t *d2 = desync_new(&c2, NULL);
    CHECK(d2);
    desync_stream_t *rx2 = filled_channel(500);
    CHECK(rx2);
    desync_future_free(desync_pipe_in_future(d2, rx2, count_item, NULL));
    desync_release(d2); /* blocks until queued jobs ran; not all may be queued */
    CHECK(atomic_load(&c2.processed) <= 500);
    desync_release(d);
    return 0;
}

/* Empty input: complete at once with 0. A user stream's error ends the
 * pipe with that status. */
static int err_poll(void *self, void **item, const desync_waker_t *w) {
    (void)w;
    uintptr_t *k = self;
    if (*k >= 5)
        return DESYNC_EPIPE;
    *item = P(++*k);
    return 0;
}

static const desync_stream_ops_t err_ops = {err_poll, NULL};

TEST(pipe_in_future_end_states) {
    counter c = {0};
    c.in_order = 1;
    desync_t *d = desync_new(&c, NULL);
    CHECK(d);
    desync_stream_t *empty = desync_stream_from_array(NULL, 0);
    CHECK(empty);
    desync_future_t *f = desync_pipe_in_future(d, empty, count_item, NULL);
    CHECK(f);
    void *v = IV(1);
    CHECK_EQ(desync_future_wait_for(f, LONG_NS, &v), 0);
    CHECK_EQ(U(v), 0u);
    desync_future_free(f);

    uintptr_t k = 0;
    desync_stream_t *s = desync_stream_new(&err_ops, &k);
    CHECK(s);
    f = desync_pipe_in_future(d, s, count_item, NULL);
    CHECK(f);
    CHECK_EQ(desync_future_wait_for(f, LONG_NS, &v), DESYNC_EPIPE);
    CHECK_EQ(U(v), 0u);
    CHECK_EQ(atomic_load(&c.processed), 5);
    desync_future_free(f);
    desync_release(d);
    return 0;
}

static int g_src_frees;
static void src_free(void *self) {
    (void)self;
    g_src_frees++;
}
static const desync_stream_ops_t free_ops = {err_poll, src_free};

TEST(pipe_in_future_bad_input) {
    int x = 0;
    desync_t *d = desync_new(&x, NULL);
    CHECK(d);
    uintptr_t k = 0;
    g_src_frees = 0;
    desync_stream_t *s = desync_stream_new(&free_ops, &k);
    CHECK(s);
    CHECK(desync_pipe_in_future(NULL, s, count_item, NULL) == NULL);
    CHECK_EQ(g_src_frees, 1); /* the input is freed */
    s = desync_stream_new(&free_ops, &k);
    CHECK(s);
    CHECK(desync_pipe_in_future(d, s, NULL, NULL) == NULL);
    CHECK_EQ(g_src_frees, 2);
    CHECK(desync_pipe_in_future(d, NULL, count_item, NULL) == NULL);
    CHECK(desync_pipe_in_async_future(d, NULL, count_item_async, NULL) == NULL);
    desync_release(d);
    return 0;
}

/* Stress: small pipes released at random points from other threads. */
struct releaser {
    desync_t *d;
    unsigned spin;
};

static void *releaser_main(void *arg) {
    struct releaser *r = arg;
    test_spin_ns(r->spin);
    desync_release(r->d);
    return NULL;
}

TEST(pipe_in_future_release_race_stress) {
    uint32_t rnd = 777;
    int rounds = TEST_SCALED(400);
    uint64_t start = test_now_ns();
    for (int r = 0; test_rounds_left(r, rounds, start); r++) {
        counter c = {0};
        c.in_order = 1;
        atomic_store(&g_item_frees, 0);
        desync_t *d = desync_new(&c, NULL);
        CHECK(d);
        long n = 200;
        desync_stream_t *rx = filled_channel(n);
        CHECK(rx);
        bool async = test_rnd(&rnd) % 2;
        desync_future_t *f = async ? desync_pipe_in_async_future(d, rx, count_item_async, NULL)
                                   : desync_pipe_in_future(d, rx, count_item, NULL);
        CHECK(f);
        struct releaser rel = {d, test_rnd(&rnd) % 200000};
        pthread_t th;
        CHECK_EQ(pthread_create(&th, NULL, releaser_main, &rel), 0);
        void *v = NULL;
        int st = desync_future_wait_for(f, LONG_NS, &v);
        pthread_join(th, NULL);
        long dropped = (long)U(v);
        CHECK(st == 0 || st == DESYNC_ECANCELED);
        CHECK_EQ(st == 0, dropped == 0);
        CHECK_EQ(atomic_load(&c.processed) + dropped, n);
        CHECK_EQ(atomic_load(&g_item_frees), dropped);
        CHECK(c.in_order);
        desync_future_free(f);
    }
    return 0;
}
