/*
 * Pipes, the basics: the reference crate's pipe tests (pipe_in a stream and
 * a channel, pipe through), a chain of pipes through three objects, a future
 * for the next output, and bad input.
 */
#include "desync.h"
#include "test_pipe.h"

#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>

/* ------------------------------------------------------ reference tests */

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

/* --------------------------------------------------------------- chains */

static int freed_once(void *ctx) { return atomic_load(&((counter_src *)ctx)->frees) == 1; }

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
