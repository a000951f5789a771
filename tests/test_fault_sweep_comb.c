/*
 * Allocation failures swept over every allocation site of the future
 * combinators and of pipe_in_future (see test_fault_sweep.h): every call
 * either works or reports ENOMEM (NULL) and leaves nothing behind, and
 * what was accepted completes.
 */
#include "test_fault_sweep.h"

static desync_future_t *ready_null(void *data, void *arg) {
    (void)data;
    (void)arg;
    return NULL;
}

static int sc_comb(void) {
    if (!warm_default_worker())
        return 1;
    fault_begin();
    desync_t *d = desync_new(NULL, NULL);
    desync_future_t *f[4] = {NULL, NULL, NULL, NULL};
    desync_promise_t *p0 = desync_promise_new(&f[0]);
    desync_promise_t *p1 = desync_promise_new(&f[1]);
    f[2] = desync_future_ready(IV(2));
    f[3] = d ? desync_future_sync(d, ready_null, NULL) : NULL;
    desync_future_t *all = NULL, *any = NULL;
    if (f[0] && f[1] && f[2] && f[3]) {
        all = desync_future_all(f, 4);
        any = desync_future_any(f, 4);
        desync_future_free(desync_future_any(f, 2)); /* freed early */
    }
    if (p0)
        CHECK_EQ(desync_promise_complete(p0, NULL), 0);
    if (p1)
        CHECK_EQ(desync_promise_cancel(p1), 0);
    void *v = NULL;
    if (all)
        CHECK_EQ(desync_future_wait_for(all, LONG_NS, &v), DESYNC_ECANCELED);
    if (any) {
        CHECK_EQ(desync_future_wait_for(any, LONG_NS, &v), 0);
        CHECK_EQ(U(v), 2u); /* the one complete at creation */
    }
    desync_future_free(all);
    desync_future_free(any);
    for (int i = 0; i < 4; i++)
        desync_future_free(f[i]);
    desync_release(d);
    return finish("comb");
}

static atomic_int g_processed_items;

static void process_del(void *data, void *item, void *arg) {
    (void)data;
    (void)arg;
    atomic_fetch_add(&g_processed_items, 1);
    item_del(item);
}

static int sc_pipe_in_future(void) {
    if (!warm_default_worker())
        return 1;
    fault_begin();
    desync_t *d = desync_new(NULL, NULL);
    desync_stream_t *rx = NULL;
    desync_channel_t *ch = desync_channel_new(64, &rx);
    if (!d || !ch) {
        if (ch) {
            desync_channel_close(ch);
            desync_stream_free(rx);
        }
        desync_release(d);
        return finish("pipe_in_future");
    }
    desync_stream_set_item_free(rx, item_del);
    desync_future_t *f = desync_pipe_in_future(d, rx, process_del, NULL);
    int sent = 0;
    for (int i = 0; i < 50; i++) {
        void *item = item_new(i);
        if (desync_channel_send(ch, item) == 0)
            sent++;
        else
            item_del(item); /* the pipe failed and freed its input, or never started */
    }
    desync_channel_close(ch);
    if (f) {
        void *v = NULL;
        int st = desync_future_wait_for(f, LONG_NS, &v);
        CHECK(st == 0 || st == DESYNC_ENOMEM);
        CHECK_EQ(st == 0, U(v) == 0);
        CHECK_EQ(atomic_load(&g_processed_items) + (int)U(v), sent);
        desync_future_free(f);
    } else {
        CHECK_EQ(sent, 0); /* the input was freed: sends fail */
    }
    desync_release(d);
    CHECK(test_wait_until(no_live_items, NULL, LONG_MS));
    return finish("pipe_in_future");
}

TEST(fault_sweep_future_comb) { return sweep_alloc("future_comb", sc_comb); }
TEST(fault_sweep_pipe_in_future) { return sweep_alloc("pipe_in_future", sc_pipe_in_future); }
