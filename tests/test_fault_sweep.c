/*
 * Every allocation site failed in turn (tests/fault.h): scenarios that use
 * each public operation, run once per n with the nth library allocation
 * failing (FAULT_NTH) and with every allocation from the nth on failing
 * (FAULT_FROM), each in a fresh process. A run passes when every call
 * either succeeded or reported the error it documents, nothing crashed or
 * hung, every job whose call succeeded ran exactly once (and no other), no
 * job ran inside the call that queued it, every item was delivered or freed
 * once, and (in the AddressSanitizer build) LeakSanitizer found no leak.
 * Thread creation is swept the same way (failing once at the nth start,
 * every nth start, and always).
 *
 * `make test` runs a sample of each sweep (every SAMPLE_STEP-th n);
 * `make check-faults` sets DESYNC_TEST_FAULT_FULL and runs every n, in the
 * ASan build.
 */
#include "desync.h"
#include "fault.h"
#include "test.h"

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define SAMPLE_STEP 7
#define MAX_N 1000
#define CHILD_TIMEOUT_S 20

/* ------------------------------------------------------------- helpers */

/* Set while this thread is inside a call that queues a job: a job that
 * runs while it is set ran inside the call that queued it. */
static _Thread_local int tl_in_call;

static void ledger_job(void *data, void *arg) {
    (void)data;
    if (tl_in_call)
        FAILF("job %d ran inside the call that queued it\n", LEDGER_ID(arg));
    ledger_ran(LEDGER_ID(arg));
}

static void ledger_queue_job(void *arg) { ledger_job(NULL, arg); }

/* Checks that a call returned 0 or one of the listed errors. */
#define CHECK_RC(rc, ...)                                                                 \
    do {                                                                                  \
        int check_rc_ = (rc), check_ok_[] = {0, __VA_ARGS__};                             \
        bool check_found_ = false;                                                        \
        for (size_t i_ = 0; i_ < sizeof check_ok_ / sizeof check_ok_[0]; i_++)            \
            check_found_ |= check_rc_ == check_ok_[i_];                                   \
        if (!check_found_) {                                                              \
            fprintf(stderr, "%s:%d: %s returned %d (%s)\n", __FILE__, __LINE__, #rc,     \
                    check_rc_, desync_strerror(check_rc_));                               \
            return 1;                                                                     \
        }                                                                                 \
    } while (0)

/* desync_desync of a ledger job; returns the call's result. */
static int q_desync(desync_t *d) {
    int id = ledger_new();
    tl_in_call = 1;
    int rc = desync_desync(d, ledger_job, LEDGER_ARG(id));
    tl_in_call = 0;
    ledger_queued(id, rc == 0);
    return rc;
}

static int q_queue_desync(desync_queue_t *q) {
    int id = ledger_new();
    tl_in_call = 1;
    int rc = desync_queue_desync(q, ledger_queue_job, LEDGER_ARG(id));
    tl_in_call = 0;
    ledger_queued(id, rc == 0);
    return rc;
}

/* A copied argument: the job checks that it got the bytes. */
struct big_arg {
    int id;
    unsigned char fill[100];
};

static int big_arg_ok(const struct big_arg *a) {
    for (size_t i = 0; i < sizeof a->fill; i++)
        if (a->fill[i] != (unsigned char)(a->id + i))
            return 0;
    return 1;
}

static void big_job(void *data, void *arg) {
    (void)data;
    const struct big_arg *a = arg;
    if (!big_arg_ok(a))
        FAILF("job %d: copied argument corrupt\n", a->id);
    ledger_job(NULL, LEDGER_ARG(a->id));
}

static void big_queue_job(void *arg) { big_job(NULL, arg); }

struct small_arg {
    int id;
    int check;
};

static void small_job(void *data, void *arg) {
    (void)data;
    const struct small_arg *a = arg;
    if (a->check != ~a->id)
        FAILF("job %d: copied argument corrupt\n", a->id);
    ledger_job(NULL, LEDGER_ARG(a->id));
}

/* desync_desync_copy with `len` bytes: 8 (inline in the job) or more. */
static int q_desync_copy(desync_t *d, bool big) {
    int id = ledger_new(), rc;
    tl_in_call = 1;
    if (big) {
        struct big_arg a = {.id = id};
        for (size_t i = 0; i < sizeof a.fill; i++)
            a.fill[i] = (unsigned char)(id + i);
        rc = desync_desync_copy(d, big_job, &a, sizeof a);
    } else {
        struct small_arg a = {id, ~id};
        rc = desync_desync_copy(d, small_job, &a, sizeof a);
    }
    tl_in_call = 0;
    ledger_queued(id, rc == 0);
    return rc;
}

static atomic_int g_destroyed;

static void count_destroy(void *data) {
    (void)data;
    atomic_fetch_add(&g_destroyed, 1);
}

static void release_arg_job(void *data, void *arg) {
    (void)data;
    desync_release(arg); /* the object's own job: does not block */
}

/* A worker of the default scheduler is alive after this (set-up done
 * before the faults start, for scenarios whose background work needs a
 * thread: a sync does not drive every path, e.g. a pipe's reader). */
static int warm_default_worker(void) {
    desync_t *d = desync_new(NULL, NULL);
    if (!d)
        return 0;
    atomic_int ran = 0;
    if (desync_desync(d, set_flag_job, &ran) != 0)
        return 0;
    int ok = test_wait_flag(&ran, LONG_MS);
    desync_release(d);
    return ok && desync_scheduler_thread_count(desync_scheduler_default()) > 0;
}

static int finish(const char *where) {
    int bad = ledger_check(where);
    if (atomic_load(&g_errors))
        return 1;
    return bad ? 1 : 0;
}

/* ------------------------------------------------------------- objects */

/* desync_new (and the default scheduler's creation), desync, desync_copy
 * (inline and allocated copies), sync, try_sync, retain/release, the
 * object's queue, and release from the object's own job. */
static int sc_objects(void) {
    fault_begin();
    desync_t *d = desync_new(NULL, count_destroy);
    if (!d) {
        /* The scheduler or the object could not be made: try again, as a
         * program would. After one failure it must work (the default
         * scheduler must not stay NULL). */
        if (!(d = desync_new(NULL, count_destroy))) {
            CHECK(fault_failures(FAULT_ALLOC) >= 2);
            return finish("objects");
        }
    }
    for (int i = 0; i < 6; i++)
        CHECK_RC(q_desync(d), DESYNC_ENOMEM);
    for (int i = 0; i < 3; i++) {
        CHECK_RC(q_desync_copy(d, false), DESYNC_ENOMEM);
        CHECK_RC(q_desync_copy(d, true), DESYNC_ENOMEM);
    }
    int id = ledger_new();
    CHECK_EQ(desync_sync(d, ledger_job, LEDGER_ARG(id)), 0);
    ledger_queued(id, 1);
    id = ledger_new();
    int rc = desync_try_sync(d, ledger_job, LEDGER_ARG(id));
    CHECK_RC(rc, DESYNC_EBUSY);
    ledger_queued(id, rc == 0);

    CHECK(desync_retain(d) == d);
    desync_release(d);
    desync_queue_t *q = desync_get_queue(d);
    CHECK_RC(q_queue_desync(q), DESYNC_ENOMEM);

    /* Another object, released by its own job. */
    desync_t *e = desync_new(NULL, count_destroy);
    int destroys = 1;
    if (e) {
        destroys++;
        CHECK_RC(q_desync(e), DESYNC_ENOMEM);
        CHECK_EQ(desync_sync(e, release_arg_job, e), 0);
    }
    for (int i = 0; i < 3; i++)
        CHECK_RC(q_desync(d), DESYNC_ENOMEM);
    desync_release(d); /* blocks until d's jobs ran, then destroys */
    /* e's destruction was queued behind its job: a thread runs it, or
     * whoever syncs; none may exist (thread start failed), so wait a bit
     * and only require it when a thread exists. */
    if (destroys == 2 && desync_scheduler_thread_count(desync_scheduler_default()) > 0)
        CHECK(test_wait_count(&g_destroyed, 2, LONG_MS));
    else
        CHECK(atomic_load(&g_destroyed) >= 1);
    return finish("objects");
}

/* -------------------------------------------------------------- queues */

/* Bare queues on a private scheduler with no threads: new, desync,
 * desync_copy, sync, try_sync, retain/release, and the scheduler's free. */
static int sc_queues(void) {
    fault_begin();
    desync_scheduler_t *s = desync_scheduler_new(0);
    if (!s)
        return finish("queues");
    desync_queue_t *q = desync_queue_new(s), *r = desync_queue_new(s);
    if (q) {
        for (int i = 0; i < 5; i++) {
            CHECK_RC(q_queue_desync(q), DESYNC_ENOMEM);
            int id = ledger_new();
            struct big_arg a = {.id = id};
            for (size_t k = 0; k < sizeof a.fill; k++)
                a.fill[k] = (unsigned char)(id + k);
            tl_in_call = 1;
            int rc = desync_queue_desync_copy(q, big_queue_job, &a, sizeof a);
            tl_in_call = 0;
            CHECK_RC(rc, DESYNC_ENOMEM);
            ledger_queued(id, rc == 0);
        }
        CHECK(desync_queue_retain(q) == q);
        desync_queue_release(q);
        int id = ledger_new();
        CHECK_EQ(desync_queue_sync(q, ledger_queue_job, LEDGER_ARG(id)), 0); /* runs them all */
        ledger_queued(id, 1);
        id = ledger_new();
        CHECK_EQ(desync_queue_try_sync(q, ledger_queue_job, LEDGER_ARG(id)), 0);
        ledger_queued(id, 1);
        desync_queue_release(q);
    }
    if (r) {
        CHECK_RC(q_queue_desync(r), DESYNC_ENOMEM);
        CHECK_EQ(desync_queue_sync(r, noop_queue_job, NULL), 0);
        desync_queue_release(r);
    }
    desync_scheduler_free(s);
    return finish("queues");
}

/* ------------------------------------------------------------ futures */

static desync_future_t *async_ledger(void *data, void *arg) {
    ledger_job(data, arg);
    return NULL;
}

static desync_future_t *async_ready(void *data, void *arg) {
    ledger_job(data, arg);
    return desync_future_ready(arg); /* NULL on ENOMEM: done with NULL */
}

static void *after_ledger(void *data, int status, void *value, void *arg) {
    (void)status;
    (void)value;
    ledger_job(data, arg);
    return arg;
}

static void then_count(int status, void *value, void *arg) {
    (void)status;
    (void)value;
    atomic_fetch_add((atomic_int *)arg, 1);
}

static void wake_count(void *ctx) { atomic_fetch_add((atomic_int *)ctx, 1); }

/* Queues an async job (future_desync or future_sync) and waits for it. */
static int future_job(desync_t *d, bool sync, bool ready) {
    int id = ledger_new();
    desync_async_fn fn = ready ? async_ready : async_ledger;
    tl_in_call = !sync; /* a future_sync job runs inside the wait, not the call */
    desync_future_t *f = sync ? desync_future_sync(d, fn, LEDGER_ARG(id))
                              : desync_future_desync(d, fn, LEDGER_ARG(id));
    tl_in_call = 0;
    ledger_queued(id, f != NULL);
    if (!f)
        return 0;
    void *v = NULL;
    CHECK_EQ(desync_future_wait_for(f, LONG_NS, &v), 0);
    CHECK(v == NULL || v == LEDGER_ARG(id));
    desync_future_free(f);
    return 0;
}

/* future_desync, future_sync, after (on d and on a bare queue), ready,
 * promises (complete and cancel), then, poll with a waker, a timed wait,
 * the fd, and suspend/resume. */
static int sc_futures(void) {
    if (!warm_default_worker())
        return 1;
    fault_begin();
    desync_t *d = desync_new(NULL, NULL);
    if (!d)
        return finish("futures");
    for (int i = 0; i < 3; i++) {
        CHECK(!future_job(d, false, i == 1));
        CHECK(!future_job(d, true, i == 2));
    }

    /* after: waits for a promise completed from here. */
    desync_future_t *pf = NULL;
    desync_promise_t *p = desync_promise_new(&pf);
    if (p) {
        int id = ledger_new();
        tl_in_call = 1;
        desync_future_t *f = desync_after(d, pf, after_ledger, LEDGER_ARG(id));
        tl_in_call = 0;
        ledger_queued(id, f != NULL);
        CHECK_EQ(desync_promise_complete(p, NULL), 0);
        if (f) {
            void *v = NULL;
            CHECK_EQ(desync_future_wait_for(f, LONG_NS, &v), 0);
            CHECK(v == LEDGER_ARG(id));
            desync_future_free(f);
        }
    }

    /* On the object's queue: queue_future_desync and queue_after. */
    desync_queue_t *q = desync_get_queue(d);
    int id = ledger_new();
    tl_in_call = 1;
    desync_future_t *qf = desync_queue_future_desync(q, (desync_queue_async_fn)(void *)NULL, NULL);
    tl_in_call = 0;
    CHECK(!qf); /* NULL job: EINVAL */
    desync_future_t *ready = desync_future_ready(LEDGER_ARG(7));
    if (ready) {
        tl_in_call = 1;
        desync_future_t *f =
            desync_queue_after(q, ready, (desync_queue_after_fn)(void *)NULL, NULL);
        tl_in_call = 0;
        CHECK(!f); /* NULL job: EINVAL, `ready` consumed */
    }
    ledger_queued(id, 0);

    /* then / poll / timed wait / fd on a promise's future. */
    desync_future_t *g = NULL;
    desync_promise_t *gp = desync_promise_new(&g);
    atomic_int calls = 0;
    if (gp) {
        desync_waker_t w = {wake_count, &calls};
        CHECK_EQ(desync_future_poll(g, NULL, &w), DESYNC_EAGAIN);
        CHECK_EQ(desync_future_wait_for(g, 1000, NULL), DESYNC_ETIMEDOUT);
        int fd = desync_future_fd(g);
        CHECK(fd >= 0 || fd == DESYNC_ENOMEM || fd == DESYNC_EAGAIN);
        desync_promise_cancel(gp);
        CHECK_EQ(atomic_load(&calls), 1);
        CHECK_EQ(desync_future_wait(g, NULL), DESYNC_ECANCELED);
        desync_future_free(g);
    }
    desync_future_t *h = desync_future_ready(NULL);
    if (h)
        CHECK_EQ(desync_future_then(h, then_count, &calls), 0);

    /* suspend: a job queued while suspended waits for the resume. */
    desync_future_t *sf = desync_queue_suspend(q);
    if (sf) {
        void *v = NULL;
        CHECK_EQ(desync_future_wait_for(sf, LONG_NS, &v), 0);
        desync_future_free(sf);
        CHECK_RC(q_desync(d), DESYNC_ENOMEM);
        desync_resumer_resume(v);
    }
    CHECK_RC(q_desync(d), DESYNC_ENOMEM);
    desync_release(d);
    return finish("futures");
}

/* ------------------------------------------------------------ channels */

/* Heap items, counted while alive: at the end of a scenario every item was
 * delivered and freed, or freed by the library's item_free, exactly once
 * (ASan catches a second free, g_live a missing one). */
static atomic_int g_live;

static void *item_new(int v) {
    atomic_fetch_add(&g_live, 1);
    return heap_item(v);
}

static void item_del(void *item) {
    if (!item)
        return;
    atomic_fetch_sub(&g_live, 1);
    free(item);
}

static int no_live_items(void *unused) {
    (void)unused;
    return atomic_load(&g_live) == 0;
}

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

/* ---------------------------------------------------------- schedulers */

/* A private scheduler: new, spawn_thread, set_max_threads, objects on it
 * with jobs, despawn, and free (threads start on demand: their records
 * are allocation sites too). */
static int sc_schedulers(void) {
    fault_begin();
    desync_scheduler_t *s = desync_scheduler_new(2);
    if (!s)
        return finish("schedulers");
    CHECK_RC(desync_scheduler_spawn_thread(s), DESYNC_ENOMEM, DESYNC_EAGAIN);
    desync_t *objs[3];
    int nobj = 0;
    for (int i = 0; i < 3; i++)
        if ((objs[nobj] = desync_new_on(s, NULL, count_destroy)))
            nobj++;
    for (int k = 0; k < 4; k++)
        for (int i = 0; i < nobj; i++)
            CHECK_RC(q_desync(objs[i]), DESYNC_ENOMEM);
    desync_scheduler_set_max_threads(s, 3);
    for (int i = 0; i < nobj; i++)
        CHECK_RC(q_desync(objs[i]), DESYNC_ENOMEM);
    desync_scheduler_set_max_threads(s, 1);
    desync_scheduler_despawn_threads_if_overloaded(s);
    CHECK(desync_scheduler_thread_count(s) <= 1);
    for (int i = 0; i < nobj; i++)
        desync_release(objs[i]);
    CHECK_EQ(atomic_load(&g_destroyed), nobj);
    desync_scheduler_free(s);
    return finish("schedulers");
}

/* ------------------------------------------------------ thread creation */

struct producer {
    desync_t **objs;
    int nobj;
    int id0;
};

static void *produce(void *arg) {
    struct producer *p = arg;
    for (int i = 0; i < 60; i++) {
        desync_t *d = p->objs[(p->id0 + i) % p->nobj];
        if (desync_desync(d, ledger_job, LEDGER_ARG(p->id0 + i)) != 0)
            FAILF("desync failed\n");
    }
    return NULL;
}

static int g_jobs_expected;

static int all_jobs_ran(void *unused) {
    (void)unused;
    for (int id = 0; id < g_jobs_expected; id++)
        if (ledger_ran_count(id) < 1)
            return 0;
    return 1;
}

/* Thread starts failing (no allocation faults): objects on the default
 * and on a private scheduler, jobs from two producers, futures. Unless
 * every start fails, the jobs must all run in the background (a failed
 * start is retried), without a sync; with none, release runs them. */
static int sc_threads(void) {
    unsigned long n;
    enum fault_mode mode = fault_sweep_mode(&n);
    bool can_grow = mode != FAULT_FROM && !(mode == FAULT_EVERY && n == 1);
    fault_begin();
    /* A lone object first: nothing else submits, so only a retry of the
     * failed start (or a sync) can run its jobs. */
    desync_t *lone = desync_new(NULL, NULL);
    CHECK(lone);
    for (int i = 0; i < 11; i++)
        CHECK_EQ(q_desync(lone), 0);
    g_jobs_expected = 11;
    if (can_grow)
        CHECK(test_wait_until(all_jobs_ran, NULL, LONG_MS));
    desync_release(lone);

    desync_scheduler_t *s = desync_scheduler_new(3);
    CHECK(s);
    desync_t *objs[6];
    for (int i = 0; i < 6; i++)
        CHECK((objs[i] = desync_new_on(i % 2 ? s : NULL, NULL, count_destroy)));
    struct producer pr[2];
    pthread_t th[2];
    for (int t = 0; t < 2; t++) {
        int id0 = ledger_new();
        for (int i = 1; i < 60; i++)
            ledger_new();
        for (int i = 0; i < 60; i++)
            ledger_queued(id0 + i, 1);
        pr[t] = (struct producer){objs, 6, id0};
        CHECK_EQ(pthread_create(&th[t], NULL, produce, &pr[t]), 0);
    }
    test_join_threads(th, 2);
    g_jobs_expected = 11 + 120;
    if (can_grow)
        CHECK(test_wait_until(all_jobs_ran, NULL, LONG_MS));
    for (int i = 0; i < 6; i++)
        CHECK(!future_job(objs[i], false, false));
    for (int i = 0; i < 6; i++)
        desync_release(objs[i]);
    CHECK_EQ(atomic_load(&g_destroyed), 6);
    desync_scheduler_free(s);
    return finish("threads");
}

/* --------------------------------------------------------------- sweeps */

static int sweep(const char *name, int (*sc)(void), enum fault_kind kind, enum fault_mode mode) {
    unsigned long step = fault_full() ? 1 : SAMPLE_STEP;
    return fault_sweep(name, sc, kind, mode, 1, step, MAX_N, CHILD_TIMEOUT_S, NULL);
}

static int sweep_alloc(const char *name, int (*sc)(void)) {
    if (sweep(name, sc, FAULT_ALLOC, FAULT_NTH))
        return 1;
    return sweep(name, sc, FAULT_ALLOC, FAULT_FROM);
}

TEST(fault_sweep_objects) { return sweep_alloc("objects", sc_objects); }
TEST(fault_sweep_queues) { return sweep_alloc("queues", sc_queues); }
TEST(fault_sweep_futures) { return sweep_alloc("futures", sc_futures); }
TEST(fault_sweep_channels) { return sweep_alloc("channels", sc_channels); }
TEST(fault_sweep_streams) { return sweep_alloc("streams", sc_streams); }
TEST(fault_sweep_pipes) { return sweep_alloc("pipes", sc_pipes); }
TEST(fault_sweep_schedulers) { return sweep_alloc("schedulers", sc_schedulers); }

/* Thread creation failing once (at the nth start, every n), every nth
 * start (n = 1..4) and always. */
TEST(fault_sweep_threads) {
    if (fault_sweep("threads", sc_threads, FAULT_THREAD, FAULT_NTH, 1, 1, MAX_N, CHILD_TIMEOUT_S,
                    NULL))
        return 1;
    if (fault_sweep("threads", sc_threads, FAULT_THREAD, FAULT_EVERY, 1, 1,
                    fault_full() ? 4 : 2, CHILD_TIMEOUT_S, NULL))
        return 1;
    return fault_sweep("threads", sc_threads, FAULT_THREAD, FAULT_FROM, 1, 1, 1, CHILD_TIMEOUT_S,
                       NULL);
}
