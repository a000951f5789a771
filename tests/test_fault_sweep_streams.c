/*
 * Fault sweeps (see test_fault_sweep.c) over channels, streams and pipes.
 */
#include "test_fault_sweep.h"

/* ------------------------------------------------------------ channels */

/* Sends one item with send, try_send or send_future (kind 0, 1, 2); a
 * refused item is freed here, a send future is kept in fs[*nf] with its
 * item in fitems. */
static int send_one(desync_channel_t *c, int kind, desync_future_t **fs, void **fitems, int *nf) {
    void *item = item_new(*nf);
    int rc;
    if (kind == 0) {
        rc = desync_channel_send(c, item);
        CHECK_RC(rc, DESYNC_ENOMEM);
    } else if (kind == 1) {
        rc = desync_channel_try_send(c, item);
        CHECK_RC(rc, DESYNC_ENOMEM, DESYNC_EAGAIN);
    } else {
        desync_future_t *f = desync_channel_send_future(c, item);
        rc = f ? 0 : DESYNC_ENOMEM;
        if (f) {
            fs[*nf] = f;
            fitems[(*nf)++] = item;
        }
    }
    if (rc != 0)
        item_del(item);
    return 0;
}

/* Waits for the send futures: an item refused (ECANCELED) is still ours. */
static int settle_sends(desync_future_t **fs, void **fitems, int nf) {
    for (int i = 0; i < nf; i++) {
        int st = desync_future_wait_for(fs[i], LONG_NS, NULL);
        CHECK(st == 0 || st == DESYNC_ECANCELED);
        if (st == DESYNC_ECANCELED)
            item_del(fitems[i]);
        desync_future_free(fs[i]);
    }
    return 0;
}

/* Channels: new (its ring), send, try_send, send_future (a node and a
 * promise), retain/close, a ring that grows past its first size, reading
 * with try_next, poll_next, next_future and next, a full channel's waiting
 * send futures, a rendezvous, and freeing the receiver with items left. */
static int sc_channels(void) {
    fault_begin();
    desync_future_t *fs[64];
    void *fitems[64];
    int nf = 0;
    void *v;
    int rc;

    /* Room for everything: nothing blocks. The ring grows 16 -> 32 -> 40. */
    desync_stream_t *rx = NULL;
    desync_channel_t *c = desync_channel_new(40, &rx);
    if (c) {
        desync_stream_set_item_free(rx, item_del);
        CHECK(desync_channel_retain(c) == c);
        for (int i = 0; i < 36; i++)
            CHECK(!send_one(c, i % 3, fs, fitems, &nf));
        desync_channel_close(c);
        for (int i = 0; i < 5 && desync_stream_try_next(rx, &v) == 0; i++)
            item_del(v);
        atomic_int woken = 0;
        desync_waker_t w = {wake_count, &woken};
        if ((rc = desync_stream_poll_next(rx, &v, &w)) == 0)
            item_del(v);
        CHECK_RC(rc, DESYNC_EAGAIN, DESYNC_EOF);
        desync_future_t *nf_f = desync_stream_next_future(rx);
        if (nf_f) {
            v = NULL;
            CHECK_RC(desync_future_wait_for(nf_f, LONG_NS, &v), DESYNC_EOF);
            item_del(v);
            desync_future_free(nf_f);
        }
        for (int i = 0; i < 5 && (rc = desync_stream_next_for(rx, LONG_NS, &v)) == 0; i++)
            item_del(v);
        CHECK_RC(rc, DESYNC_EOF);
        desync_channel_close(c);
        desync_stream_free(rx); /* with items left: item_free */
    }
    CHECK(!settle_sends(fs, fitems, nf));
    nf = 0;

    /* Full: send futures wait in line; taking one admits the next; freeing
     * the receiver refuses the rest. */
    c = desync_channel_new(2, &rx);
    if (c) {
        desync_stream_set_item_free(rx, item_del);
        for (int i = 0; i < 6; i++)
            CHECK(!send_one(c, i < 2 ? 1 : 2, fs, fitems, &nf));
        if (desync_stream_try_next(rx, &v) == 0)
            item_del(v);
        desync_stream_free(rx);
        desync_channel_close(c);
    }
    CHECK(!settle_sends(fs, fitems, nf));
    nf = 0;

    /* Rendezvous: a send future completes once the reader took the item. */
    c = desync_channel_new(0, &rx);
    if (c) {
        CHECK(!send_one(c, 2, fs, fitems, &nf));
        if (nf) {
            CHECK_EQ(desync_stream_try_next(rx, &v), 0);
            item_del(v);
        }
        desync_channel_close(c);
        CHECK_EQ(desync_stream_try_next(rx, &v), DESYNC_EOF);
        desync_stream_free(rx);
    }
    CHECK(!settle_sends(fs, fitems, nf));
    CHECK_EQ(atomic_load(&g_live), 0);
    return finish("channels");
}

/* ------------------------------------------------------------- streams */

struct src {
    int next, n;
    desync_waker_t w;
    bool has_waker;
};

/* Yields n heap items, with an EAGAIN (and a wake right away) before every
 * third one, so next_future goes through the wake trampoline. */
static int src_poll(void *self, void **item, const desync_waker_t *w) {
    struct src *s = self;
    if (s->next >= s->n)
        return DESYNC_EOF;
    if (s->next % 3 == 1 && !s->has_waker && w && w->wake) {
        s->has_waker = true;
        s->w = *w;
        return DESYNC_EAGAIN;
    }
    s->has_waker = false;
    *item = item_new(s->next++);
    return 0;
}

static void src_free(void *self) { free(self); }

static const desync_stream_ops_t src_ops = {src_poll, src_free};

/* Array streams, user streams and next_future on a user stream (its queue
 * and its wake job). */
static int sc_streams(void) {
    if (!warm_default_worker())
        return 1;
    fault_begin();
    void *items[3] = {IV(1), IV(2), IV(3)};
    desync_stream_t *a = desync_stream_from_array(items, 3);
    if (a) {
        void *v;
        CHECK_EQ(desync_stream_next(a, &v), 0);
        CHECK(v == IV(1));
        desync_stream_free(a);
    }
    struct src *self = calloc(1, sizeof *self);
    self->n = 6;
    desync_stream_t *s = desync_stream_new(&src_ops, self);
    if (!s) {
        free(self);
        return finish("streams");
    }
    for (int i = 0; i < 6; i++) {
        desync_future_t *f = desync_stream_next_future(s);
        if (!f)
            continue;
        if (self->has_waker) /* the source is ready at once: wake */
            self->w.wake(self->w.ctx);
        void *v = NULL;
        int st = desync_future_wait_for(f, LONG_NS, &v);
        CHECK_RC(st, DESYNC_EOF);
        item_del(v);
        desync_future_free(f);
    }
    desync_stream_free(s);
    CHECK_EQ(atomic_load(&g_live), 0);
    return finish("streams");
}

/* --------------------------------------------------------------- pipes */

static void *twice(void *data, void *item, void *arg) {
    (void)data;
    (void)arg;
    void *o = item_new(2 * *(int *)item);
    item_del(item);
    return o;
}

static void consume(void *data, void *item, void *arg) {
    (void)data;
    (void)arg;
    item_del(item);
}

static desync_future_t *twice_async(void *data, void *item, void *arg) {
    void *o = twice(data, item, arg);
    desync_future_t *f = desync_future_ready(o);
    if (!f)
        item_del(o);
    return f; /* NULL: done, with output NULL */
}

static desync_future_t *consume_async(void *data, void *item, void *arg) {
    consume(data, item, arg);
    return NULL;
}

/* A closed channel holding up to n items. */
static desync_stream_t *filled_channel(int n) {
    desync_stream_t *rx;
    desync_channel_t *c = desync_channel_new((size_t)n, &rx);
    if (!c)
        return NULL;
    desync_stream_set_item_free(rx, item_del);
    for (int i = 0; i < n; i++) {
        void *item = item_new(i);
        if (desync_channel_send(c, item) != 0)
            item_del(item);
    }
    desync_channel_close(c);
    return rx;
}

/* Reads an output to its end (DESYNC_EOF, or DESYNC_ENOMEM if the pipe
 * failed), then frees it. */
static int drain_output(desync_stream_t *out) {
    void *v;
    int rc;
    while ((rc = desync_stream_next_for(out, LONG_NS, &v)) == 0)
        item_del(v);
    CHECK_RC(rc, DESYNC_EOF, DESYNC_ENOMEM);
    desync_stream_free(out);
    return 0;
}

/* All four kinds of pipe, over channels, on one object; a pipe that reads
 * another pipe's output; pipe_in pipes still running when the object is
 * released (they stop and free their items). */
static int sc_pipes(void) {
    if (!warm_default_worker())
        return 1;
    fault_begin();
    desync_t *d = desync_new(NULL, count_destroy);
    if (!d)
        return finish("pipes");
    desync_stream_t *in;
    if ((in = filled_channel(12))) {
        desync_stream_t *out = desync_pipe(d, in, twice, NULL);
        if (out)
            desync_stream_set_item_free(out, item_del);
        desync_stream_t *out2 = out ? desync_pipe(d, out, twice, NULL) : NULL;
        if (out2) {
            desync_stream_set_item_free(out2, item_del);
            CHECK(!drain_output(out2));
        }
    }
    if ((in = filled_channel(6))) {
        desync_stream_t *out = desync_pipe_async(d, in, twice_async, NULL);
        if (out) {
            desync_stream_set_item_free(out, item_del);
            CHECK(!drain_output(out));
        }
    }
    if ((in = filled_channel(40)))
        CHECK_RC(desync_pipe_in(d, in, consume, NULL), DESYNC_ENOMEM);
    if ((in = filled_channel(6)))
        CHECK_RC(desync_pipe_in_async(d, in, consume_async, NULL), DESYNC_ENOMEM);
    CHECK_RC(q_desync(d), DESYNC_ENOMEM);
    desync_release(d);
    CHECK(test_wait_flag(&g_destroyed, LONG_MS));
    /* Pipes drop their last references (freeing what they hold) on their
     * own threads, possibly just after the object's destroy. */
    CHECK(test_wait_until(no_live_items, NULL, LONG_MS));
    return finish("pipes");
}

/* --------------------------------------------------------------- sweeps */

TEST(fault_sweep_channels) { return sweep_alloc("channels", sc_channels); }
TEST(fault_sweep_streams) { return sweep_alloc("streams", sc_streams); }
TEST(fault_sweep_pipes) { return sweep_alloc("pipes", sc_pipes); }
