/*
 * Helpers shared by the pipe tests (test_pipe_*.c): a vector object whose
 * destruction is counted, a user stream that counts up and counts its frees,
 * and the transforms and async job more than one of them uses.
 */
#ifndef DESYNC_TEST_PIPE_H
#define DESYNC_TEST_PIPE_H

#include "desync.h"
#include "test.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>

static atomic_int g_destroyed; /* objects destroyed (by vec_destroy) */

/* An object's data: the items it was given, and a state that jobs set. */
typedef struct {
    uintptr_t v[4096];
    int n;
    int state;
} vec;

static inline vec *vec_new(void) { return calloc(1, sizeof(vec)); }

static inline void vec_destroy(void *data) {
    atomic_fetch_add(&g_destroyed, 1);
    free(data);
}

static inline void vec_push(void *data, void *item, void *arg) {
    (void)arg;
    vec *x = data;
    x->v[x->n++] = U(item);
}

static inline void read_n(void *data, void *arg) { *(int *)arg = ((vec *)data)->n; }

/* The number of items d holds, read with a sync. */
static inline int vec_len(desync_t *d) {
    int n = -1;
    desync_sync(d, read_n, &n);
    return n;
}

/* A user stream that counts its frees (always at EOF once drained). */
typedef struct {
    uintptr_t next, n;
    atomic_int frees;
    _Atomic uintptr_t polled;
} counter_src;

static inline int cs_poll(void *self, void **item, const desync_waker_t *w) {
    (void)w;
    counter_src *c = self;
    if (c->next > c->n)
        return DESYNC_EOF;
    *item = P(c->next);
    atomic_store(&c->polled, c->next);
    c->next++;
    return 0;
}

static inline void cs_free(void *self) { atomic_fetch_add(&((counter_src *)self)->frees, 1); }

static const desync_stream_ops_t cs_ops = {cs_poll, cs_free};

/* Transforms: the item unchanged, or plus the object's state. */
static inline void *identity(void *data, void *item, void *arg) {
    (void)data;
    (void)arg;
    return item;
}

static inline void *add_state(void *data, void *item, void *arg) {
    (void)arg;
    return P(U(item) + (uintptr_t)((vec *)data)->state);
}

/* Completes (or cancels) a promise on its own thread after 3 ms. */
typedef struct {
    desync_promise_t *pr;
    void *value;
    bool cancel;
    atomic_int *completed;
} completion;

static inline void *completer(void *a) {
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

static atomic_int g_completed; /* promises completed by completer */

/* Output item*10 after a delay on another thread; every 3rd is cancelled;
 * item 0 gives a NULL future (done at once, value NULL). */
static inline desync_future_t *slow_times_ten(void *data, void *item, void *arg) {
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

#endif
