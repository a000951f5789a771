/*
 * Stream stress tests (meant for the ThreadSanitizer and AddressSanitizer
 * builds as much as the plain one): several producers feeding chained pipes
 * through several objects while other threads queue jobs on them; many
 * pipe_in's into one object; freeing pipes while items flow; next_future
 * and waker/free races.
 */
#include "desync.h"
#include "test.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>

typedef struct {
    uint64_t count;
    uint64_t sum;
} acc;

static acc *acc_new(void) { return calloc(1, sizeof(acc)); }

static void read_acc(void *data, void *arg) { *(acc *)arg = *(acc *)data; }

static acc get_acc(desync_t *d) {
    acc a = {0, 0};
    desync_sync(d, read_acc, &a);
    return a;
}

/* ------------------------------------------------------------ the chain */

enum { PRODUCERS = 4 };

typedef struct {
    desync_channel_t *c;
    int id, n;
} prod_arg;

/* Item: producer id in the top bits, sequence number below. */
static void *producer(void *a) {
    prod_arg *pa = a;
    for (int i = 0; i < pa->n; i++)
        if (desync_channel_send(pa->c, P(((uintptr_t)pa->id << 24) | (uintptr_t)i)) != 0)
            break;
    desync_channel_close(pa->c);
    return NULL;
}

static void *count_through(void *data, void *item, void *arg) {
    (void)arg;
    acc *x = data;
    x->count++;
    x->sum += U(item) & 0xffffff;
    return item;
}

typedef struct {
    desync_t *objs[3];
    atomic_int stop;
} noise_arg;

static void noise_job(void *data, void *arg) {
    (void)arg;
    ((acc *)data)->sum += 0; /* touch the data: TSan checks the ordering */
}

static void *noise(void *a) {
    noise_arg *na = a;
    for (unsigned i = 0; !atomic_load(&na->stop); i++) {
        desync_t *d = na->objs[i % 3];
        if (i % 4 == 0)
            desync_sync(d, noise_job, NULL);
        else
            desync_desync(d, noise_job, NULL);
        if (i % 64 == 0)
            test_sleep_ms(1);
    }
    return NULL;
}

TEST(stream_stress_chain) {
    int n = TEST_SCALED(20000);
    desync_t *a = desync_new(acc_new(), free);
    desync_t *b = desync_new(acc_new(), free);
    desync_t *c = desync_new(acc_new(), free);
    desync_stream_t *rx;
    desync_channel_t *ch = desync_channel_new(8, &rx);
    desync_stream_t *o1 = desync_pipe(a, rx, count_through, NULL);
    desync_pipe_set_backpressure_depth(o1, 3);
    desync_stream_t *o2 = desync_pipe(b, o1, count_through, NULL);
    desync_stream_t *o3 = desync_pipe(c, o2, count_through, NULL);
    CHECK(o3);
    desync_pipe_set_backpressure_depth(o3, 16);
    noise_arg na = {{a, b, c}, 0};
    pthread_t nt;
    pthread_create(&nt, NULL, noise, &na);
    prod_arg pa[PRODUCERS];
    pthread_t pt[PRODUCERS];
    for (int i = 0; i < PRODUCERS; i++) {
        pa[i] = (prod_arg){i ? desync_channel_retain(ch) : ch, i, n};
    }
    for (int i = 0; i < PRODUCERS; i++)
        pthread_create(&pt[i], NULL, producer, &pa[i]);
    int next[PRODUCERS] = {0};
    int got = 0, r;
    void *v;
    while ((r = desync_stream_next_for(o3, 10 * SEC, &v)) == 0) {
        int id = (int)(U(v) >> 24), seq = (int)(U(v) & 0xffffff);
        CHECK(id >= 0 && id < PRODUCERS);
        CHECK_EQ(seq, next[id]); /* per producer: every item, in order */
        next[id]++;
        got++;
    }
    CHECK_EQ(r, DESYNC_EOF);
    CHECK_EQ(got, PRODUCERS * n);
    for (int i = 0; i < PRODUCERS; i++)
        pthread_join(pt[i], NULL);
    atomic_store(&na.stop, 1);
    pthread_join(nt, NULL);
    uint64_t want_sum = (uint64_t)PRODUCERS * (uint64_t)n * (uint64_t)(n - 1) / 2;
    desync_t *objs[3] = {a, b, c};
    for (int i = 0; i < 3; i++) {
        acc x = get_acc(objs[i]);
        CHECK_EQ(x.count, (uint64_t)PRODUCERS * (uint64_t)n);
        CHECK_EQ(x.sum, want_sum);
    }
    desync_stream_free(o3);
    desync_release(a);
    desync_release(b);
    desync_release(c);
    return 0;
}

/* ------------------------------------------- many pipe_in's, one object */

static void add_in(void *data, void *item, void *arg) {
    (void)arg;
    acc *x = data;
    x->count++;
    x->sum += U(item);
}

static desync_future_t *add_in_async(void *data, void *item, void *arg) {
    add_in(data, item, arg);
    return U(item) % 2 ? desync_future_ready(NULL) : NULL;
}

TEST(stream_stress_fan_in) {
    enum { CH = 6 };
    int n = TEST_SCALED(20000);
    desync_t *d = desync_new(acc_new(), free);
    prod_arg pa[CH];
    pthread_t pt[CH];
    for (int i = 0; i < CH; i++) {
        desync_stream_t *rx;
        pa[i] = (prod_arg){desync_channel_new((size_t)(i % 3), &rx), 0, n};
        if (i % 2)
            CHECK_EQ(desync_pipe_in_async(d, rx, add_in_async, NULL), 0);
        else
            CHECK_EQ(desync_pipe_in(d, rx, add_in, NULL), 0);
    }
    for (int i = 0; i < CH; i++)
        pthread_create(&pt[i], NULL, producer, &pa[i]);
    for (int i = 0; i < CH; i++)
        pthread_join(pt[i], NULL);
    uint64_t end = test_now_ns() + 20 * SEC;
    acc x;
    while ((x = get_acc(d)).count < (uint64_t)CH * (uint64_t)n && test_now_ns() < end)
        test_sleep_ms(2);
    CHECK_EQ(x.count, (uint64_t)CH * (uint64_t)n);
    CHECK_EQ(x.sum, (uint64_t)CH * (uint64_t)n * (uint64_t)(n - 1) / 2);
    desync_release(d);
    return 0;
}

/* ------------------------------------------------- freeing while flowing */

static atomic_int g_created, g_gone; /* heap items made / released */

static void *new_item(void) {
    atomic_fetch_add(&g_created, 1);
    return malloc(16);
}

static void item_gone(void *item) {
    free(item);
    atomic_fetch_add(&g_gone, 1);
}

typedef struct {
    desync_channel_t *c;
    int n;
} hprod_arg;

static void *heap_producer(void *a) {
    hprod_arg *h = a;
    for (int i = 0; i < h->n; i++) {
        void *item = new_item();
        if (desync_channel_send(h->c, item) != 0) {
            item_gone(item);
            break;
        }
    }
    desync_channel_close(h->c);
    return NULL;
}

static void *pass(void *data, void *item, void *arg) {
    (void)arg;
    ((acc *)data)->count++;
    return item;
}

typedef struct {
    desync_stream_t *out;
    int take;
} hreader_arg;

static void *heap_reader(void *a) {
    hreader_arg *h = a;
    void *v;
    for (int i = 0; i < h->take && desync_stream_next_for(h->out, 10 * SEC, &v) == 0; i++)
        item_gone(v);
    desync_stream_free(h->out);
    return NULL;
}

static int all_items_gone(void *ctx) {
    (void)ctx;
    return atomic_load(&g_created) == atomic_load(&g_gone);
}

TEST(stream_stress_free_while_flowing) {
    int rounds = TEST_SCALED(300);
    for (int r = 0; r < rounds; r++) {
        desync_t *d = desync_new(acc_new(), free);
        desync_stream_t *rx;
        desync_channel_t *c = desync_channel_new((size_t)(r % 4), &rx);
        desync_stream_set_item_free(rx, item_gone);
        desync_stream_t *mid = desync_pipe(d, rx, pass, NULL);
        desync_stream_set_item_free(mid, item_gone);
        desync_stream_t *out = desync_pipe(d, mid, pass, NULL);
        desync_stream_set_item_free(out, item_gone);
        hprod_arg hp = {c, 50};
        hreader_arg hr = {out, r % 60};
        pthread_t tp, tr;
        pthread_create(&tp, NULL, heap_producer, &hp);
        pthread_create(&tr, NULL, heap_reader, &hr);
        if (r % 3 == 0)
            test_sleep_ms(0);
        desync_release(d);
        pthread_join(tp, NULL);
        pthread_join(tr, NULL);
    }
    CHECK(test_wait_until(all_items_gone, NULL, 10000));
    return 0;
}

/* pipe_in on objects released while producers still send. */
static void consume(void *data, void *item, void *arg) {
    (void)arg;
    ((acc *)data)->count++;
    item_gone(item);
}

TEST(stream_stress_pipe_in_release_race) {
    int rounds = TEST_SCALED(300);
    for (int r = 0; r < rounds; r++) {
        desync_t *d = desync_new(acc_new(), free);
        desync_stream_t *rx;
        desync_channel_t *c = desync_channel_new((size_t)(r % 3), &rx);
        desync_stream_set_item_free(rx, item_gone);
        CHECK_EQ(desync_pipe_in(d, rx, consume, NULL), 0);
        hprod_arg hp = {c, 40};
        pthread_t tp;
        pthread_create(&tp, NULL, heap_producer, &hp);
        if (r % 2)
            test_sleep_ms(0);
        desync_release(d);
        pthread_join(tp, NULL);
    }
    CHECK(test_wait_until(all_items_gone, NULL, 10000));
    return 0;
}

/* --------------------------------------------------------- next_future */

TEST(stream_stress_next_future) {
    int n = TEST_SCALED(20000);
    desync_stream_t *rx;
    desync_channel_t *c = desync_channel_new(2, &rx);
    prod_arg pa[2];
    pthread_t pt[2];
    pa[0] = (prod_arg){c, 0, n};
    pa[1] = (prod_arg){desync_channel_retain(c), 1, n};
    for (int i = 0; i < 2; i++)
        pthread_create(&pt[i], NULL, producer, &pa[i]);
    int next[2] = {0, 0}, got = 0;
    for (;;) {
        desync_future_t *f = desync_stream_next_future(rx);
        CHECK(f);
        void *v;
        int st = desync_future_wait_for(f, 10 * SEC, &v);
        desync_future_free(f);
        if (st == DESYNC_EOF)
            break;
        CHECK_EQ(st, 0);
        int id = (int)(U(v) >> 24), seq = (int)(U(v) & 0xffffff);
        CHECK(id == 0 || id == 1);
        CHECK_EQ(seq, next[id]);
        next[id]++;
        got++;
    }
    CHECK_EQ(got, 2 * n);
    for (int i = 0; i < 2; i++)
        pthread_join(pt[i], NULL);
    desync_stream_free(rx);
    return 0;
}

/* ------------------------------------------------------ wakers vs. free */

/* Once desync_stream_free returns, no waker given to that stream is called
 * any more, so its ctx may be freed at once (ASan would see a late call). */
typedef struct {
    atomic_int calls;
} wctx;

static void wctx_wake(void *ctx) { atomic_fetch_add(&((wctx *)ctx)->calls, 1); }

typedef struct {
    desync_channel_t *c;
    atomic_int *stop;
} spam_arg;

static void *spammer(void *a) {
    spam_arg *s = a;
    while (!atomic_load(s->stop)) {
        if (desync_channel_try_send(s->c, P(1)) == DESYNC_EPIPE)
            break;
    }
    desync_channel_close(s->c);
    return NULL;
}

TEST(stream_stress_waker_vs_free) {
    int rounds = TEST_SCALED(2000);
    for (int r = 0; r < rounds; r++) {
        desync_stream_t *rx;
        desync_channel_t *c = desync_channel_new(1, &rx);
        atomic_int stop = 0;
        spam_arg sa = {desync_channel_retain(c), &stop};
        pthread_t t;
        pthread_create(&t, NULL, spammer, &sa);
        wctx *w = calloc(1, sizeof *w);
        desync_waker_t wk = {wctx_wake, w};
        void *v;
        for (int i = 0; i < r % 7; i++)
            desync_stream_poll_next(rx, &v, &wk);
        desync_stream_free(rx);
        free(w);
        atomic_store(&stop, 1);
        pthread_join(t, NULL);
        desync_channel_close(c);
    }
    return 0;
}

/* The same for pipe outputs, whose waker is fired from the object's jobs. */
TEST(stream_stress_pipe_waker_vs_free) {
    int rounds = TEST_SCALED(1000);
    desync_t *d = desync_new(acc_new(), free);
    for (int r = 0; r < rounds; r++) {
        desync_stream_t *rx;
        desync_channel_t *c = desync_channel_new(4, &rx);
        desync_stream_t *out = desync_pipe(d, rx, pass, NULL);
        atomic_int stop = 0;
        spam_arg sa = {desync_channel_retain(c), &stop};
        pthread_t t;
        pthread_create(&t, NULL, spammer, &sa);
        wctx *w = calloc(1, sizeof *w);
        desync_waker_t wk = {wctx_wake, w};
        void *v;
        for (int i = 0; i < r % 9; i++)
            desync_stream_poll_next(out, &v, &wk);
        desync_stream_free(out);
        free(w);
        atomic_store(&stop, 1);
        pthread_join(t, NULL);
        desync_channel_close(c);
    }
    desync_release(d);
    return 0;
}

/* ------------------------------------------------ refills at half depth */

/* An input that always has its next item (as in benchmark W8). */
typedef struct {
    uint64_t next, n;
} ready_src;

static int ready_poll(void *self, void **item, const desync_waker_t *w) {
    (void)w;
    ready_src *s = self;
    if (s->next > s->n)
        return DESYNC_EOF;
    *item = P(s->next++);
    return 0;
}

static void ready_free(void *self) { (void)self; }

static const desync_stream_ops_t ready_ops = {ready_poll, ready_free};

static void *plus_one(void *data, void *item, void *arg) {
    (void)arg;
    ((acc *)data)->count++;
    return P(U(item) + 1);
}

/* A reader only publishes a take with a fence when it may leave half the
 * depth or less (the pump parked for a refill waits for that), and reads
 * the depth without ordering while the default depth grows. A missed kick
 * leaves the pump parked with the output drained: the bounded read then
 * times out. Each round starts a fresh pipe (default depth, growing) into a
 * second pipe (which reads the first in batches), with the reader
 * alternating blocking and polling reads and another thread queueing jobs
 * on both objects, so the batches run inline, on workers, or both. */
TEST(stream_stress_pipe_refill_kicks) {
    int rounds = TEST_SCALED(300);
    enum { ITEMS = 3000 };
    desync_t *a = desync_new(acc_new(), free);
    desync_t *b = desync_new(acc_new(), free);
    noise_arg na = {{a, b, a}, 0};
    pthread_t nt;
    pthread_create(&nt, NULL, noise, &na);
    uint64_t start = test_now_ns(), into_a = 0, into_b = 0;
    for (int r = 1; test_rounds_left(r, rounds, start); r++) {
        into_a += ITEMS;
        into_b += r % 2 ? ITEMS : 0;
        ready_src src = {1, ITEMS};
        desync_stream_t *in = desync_stream_new(&ready_ops, &src);
        desync_stream_t *o1 = desync_pipe(a, in, plus_one, NULL);
        desync_stream_t *out = r % 2 ? desync_pipe(b, o1, plus_one, NULL) : o1;
        CHECK(out);
        uint64_t add = r % 2 ? 2 : 1, k = 0;
        for (;;) {
            void *v;
            int rc;
            if (k % 5 < 3) {
                rc = desync_stream_next_for(out, 10 * SEC, &v);
            } else {
                uint64_t give_up = test_now_ns() + 10 * SEC;
                while ((rc = desync_stream_try_next(out, &v)) == DESYNC_EAGAIN &&
                       test_now_ns() < give_up)
                    test_sleep_ms(0);
            }
            if (rc == DESYNC_EOF)
                break;
            CHECK_EQ(rc, 0);
            k++;
            CHECK_EQ(U(v), k + add);
        }
        CHECK_EQ(k, ITEMS);
        desync_stream_free(out);
    }
    atomic_store(&na.stop, 1);
    pthread_join(nt, NULL);
    CHECK_EQ(get_acc(a).count, into_a);
    CHECK_EQ(get_acc(b).count, into_b);
    desync_release(a);
    desync_release(b);
    return 0;
}
