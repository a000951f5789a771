/*
 * Pipe backpressure: the reference crate's backpressure test and its
 * blockage loop (the output fed back into the input), changing the depth,
 * and an always-ready input read no faster than the output is consumed.
 */
#include "desync.h"
#include "test_pipe.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>

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
    /* Reading one output leaves 2 unread: above half the depth, the pipe
     * still does not read. Reading the second lets it take the 4th: room
     * again. */
    void *v;
    CHECK_EQ(desync_stream_next_for(out, 5 * SEC, &v), 0);
    CHECK_EQ(U(v), 1);
    desync_sync(d, noop_job, NULL);
    test_sleep_ms(20);
    CHECK_EQ(desync_channel_try_send(c, P(5)), DESYNC_EAGAIN);
    CHECK_EQ(desync_stream_next_for(out, 5 * SEC, &v), 0);
    CHECK_EQ(U(v), 2);
    try_send_ctx t = {c, P(5)};
    CHECK(test_wait_until(try_send_ok, &t, 5000));
    for (int i = 3; i <= 5; i++) {
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
    /* d's queue is held suspended until the depth is set, so the first batch
     * cannot end (and a quick one grow the default depth to 10, reading 5
     * more) before the set: without this, 1 run in several hundred read 10. */
    void *resumer = NULL;
    desync_future_t *sf = desync_queue_suspend(desync_get_queue(d));
    CHECK(sf != NULL);
    CHECK_EQ(desync_future_wait_for(sf, 5 * SEC, &resumer), 0);
    CHECK(resumer != NULL);
    desync_future_free(sf);
    desync_stream_t *out = desync_pipe(d, desync_stream_new(&cs_ops, &src), identity, NULL);
    desync_pipe_set_backpressure_depth(out, 2);
    desync_resumer_resume(resumer);
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

/* Reads all n items of an always-ready input through pipe(process), with
 * the depth set to `depth` (0: the default); returns how far at most the
 * input was read ahead of the reader, or (uintptr_t)-1 on a failure. */
static uintptr_t read_ahead(uintptr_t n, size_t depth, desync_pipe_fn process) {
    desync_t *d = desync_new(vec_new(), vec_destroy);
    counter_src src = {.next = 1, .n = n};
    /* A depth to set: d's queue is held suspended until it is set, so no
     * batch of the pipe ends before (the default depth could grow after a
     * quick batch, and the pump read that far ahead before the set). */
    void *resumer = NULL;
    if (depth) {
        desync_future_t *sf = desync_queue_suspend(desync_get_queue(d));
        if (!sf || desync_future_wait_for(sf, 5 * SEC, &resumer) != 0 || !resumer)
            return (uintptr_t)-1;
        desync_future_free(sf);
    }
    desync_stream_t *out = desync_pipe(d, desync_stream_new(&cs_ops, &src), process, NULL);
    if (depth) {
        desync_pipe_set_backpressure_depth(out, depth);
        desync_resumer_resume(resumer);
    }
    void *v;
    uintptr_t ahead = 0;
    for (uintptr_t k = 1; k <= n; k++) {
        if (desync_stream_next_for(out, 5 * SEC, &v) != 0 || U(v) != k)
            return (uintptr_t)-1;
        uintptr_t p = atomic_load(&src.polled);
        if (p > k && p - k > ahead)
            ahead = p - k;
    }
    if (desync_stream_next_for(out, 5 * SEC, &v) != DESYNC_EOF)
        return (uintptr_t)-1;
    desync_stream_free(out);
    desync_release(d);
    return ahead;
}

/* An always-ready input is read only as fast as the output is consumed:
 * at most the depth the program set ahead (set before any batch ends, so the
 * default's growth never starts: before, the set came after desync_pipe and
 * failed 1 run in 200 when a quick first batch had grown the depth), and at
 * most the default's maximum (64) with the default. */
TEST(pipe_backpressure_bounds_ready_input) {
    uintptr_t n = (uintptr_t)TEST_SCALED(200000);
    CHECK(read_ahead(n, 5, identity) <= 5);
    CHECK(read_ahead(n, 0, identity) <= 64);
    return 0;
}

/* The default depth grows for quick items: an identity pipe whose reader
 * keeps its output full is read more than 5 (the starting depth) ahead.
 * Whether an item counts as quick is measured (DSY_PIPE_SLOW_ITEM_NS): on a
 * loaded machine under ThreadSanitizer one run in about eight measured its
 * items slow throughout and kept the depth, and with other builds running
 * beside it (load 7 on 2 cores) five such runs in a row were seen, so the
 * growth must show in one of up to 20 runs (the bound must hold in every
 * run; a run stops as soon as it grew). */
TEST(pipe_backpressure_default_depth_grows) {
    bool grew = false;
    for (int run = 0; run < 20 && !grew; run++) {
        uintptr_t ahead = read_ahead((uintptr_t)TEST_SCALED(200000), 0, identity);
        CHECK(ahead != (uintptr_t)-1);
        CHECK(ahead <= 64);
        grew = ahead > 5;
    }
    CHECK(grew);
    return 0;
}

/* ... but not for slow items (each sleeps far longer than a hand-off, and
 * than the 20 us under which an item counts as quick). */
static void *sleepy_identity(void *data, void *item, void *arg) {
    (void)data;
    (void)arg;
    test_sleep_ms(2);
    return item;
}

TEST(pipe_backpressure_slow_items_keep_depth) {
    CHECK(read_ahead(60, 0, sleepy_identity) <= 5);
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

/* With refills at half the depth, a pipe still never holds more than depth
 * unread items, whether the reader is quick or slow, and loses no kick. */
typedef struct {
    atomic_int processed;
} proc_count;

static void *count_identity(void *data, void *item, void *arg) {
    (void)data;
    atomic_fetch_add(&((proc_count *)arg)->processed, 1);
    return item;
}

TEST(pipe_refill_at_half_keeps_depth) {
    enum { DEPTH = 8 };
    int n = TEST_SCALED(20000);
    desync_t *d = desync_new(vec_new(), vec_destroy);
    desync_stream_t *rx;
    desync_channel_t *c = desync_channel_new(64, &rx);
    proc_count pc = {0};
    desync_stream_t *out = desync_pipe(d, rx, count_identity, &pc);
    desync_pipe_set_backpressure_depth(out, DEPTH);
    int sent = 0;
    for (int k = 1; k <= n; k++) {
        while (sent < n && desync_channel_try_send(c, P(sent + 1)) == 0)
            sent++;
        void *v;
        /* Alternate blocking and non-blocking reads, so that the pipe is
         * refilled from the reader's thread and from d's queue. */
        int rc;
        if (k % 3)
            rc = desync_stream_next_for(out, 5 * SEC, &v);
        else
            while ((rc = desync_stream_try_next(out, &v)) == DESYNC_EAGAIN)
                test_sleep_ms(0);
        CHECK_EQ(rc, 0);
        CHECK_EQ(U(v), k);
        /* Processed and not yet read (this one is read): at most DEPTH. */
        CHECK(atomic_load(&pc.processed) - k <= DEPTH);
    }
    desync_channel_close(c);
    void *v;
    CHECK_EQ(desync_stream_next_for(out, 5 * SEC, &v), DESYNC_EOF);
    desync_stream_free(out);
    desync_release(d);
    return 0;
}
