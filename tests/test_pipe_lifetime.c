/*
 * Pipe lifetimes: pipe_in holds only a weak reference to its object, pipe
 * keeps it alive until the output is freed, and inputs, outputs, objects and
 * channels are closed or freed in every order while items are in flight
 * (items are heap blocks, so the AddressSanitizer build finds leaks).
 */
#include "desync.h"
#include "test_pipe.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>

/* -------------------------------------------------------------- helpers */

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

static int destroyed_1(void *ctx) {
    (void)ctx;
    return atomic_load(&g_destroyed) >= 1;
}

static int destroyed_6(void *ctx) {
    (void)ctx;
    return atomic_load(&g_destroyed) == 6;
}

/* ----------------------------------------------------------- references */

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

/* ----------------------------------------------- freeing in every order */

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
