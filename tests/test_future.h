/*
 * Helpers shared by the future tests: test_future_async.c,
 * test_future_sync.c, test_promise.c and test_suspend.c.
 *
 * Every wait in those tests is bounded: futures are waited on with
 * desync_future_wait_for(LONG_NS) and other conditions with test_wait_until;
 * nothing asserts on how long something took. Checks that something has NOT
 * happened look after a short pause (SHORT_MS), so they can only miss a bug,
 * never report a false one.
 */
#ifndef DESYNC_TEST_FUTURE_H
#define DESYNC_TEST_FUTURE_H

#include <desync.h>

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <string.h>

#include "test.h"

/* A pause before checking that something has not happened. */
#define SHORT_MS 30u

/* Sets the object's int to 42 after 100 ms. */
static inline void sleep_set_42(void *data, void *arg) {
    (void)arg;
    test_sleep_ms(100);
    *(int *)data = 42;
}

/* Async job: done at once with the object's int. */
static inline desync_future_t *ready_int(void *data, void *arg) {
    (void)arg;
    return desync_future_ready(IV(*(int *)data));
}

/* Async job: returns the future passed as arg (the queue takes it over). */
static inline desync_future_t *return_arg_future(void *data, void *arg) {
    (void)data;
    return arg;
}

/* Async job: sets the flag at arg and is done with NULL. */
static inline desync_future_t *set_flag_async(void *data, void *arg) {
    (void)data;
    atomic_store((atomic_int *)arg, 1);
    return NULL;
}

/* Completes (or cancels) a promise from another thread after a delay. */
struct completer {
    pthread_t th;
    desync_promise_t *p;
    void *value;
    unsigned delay_ms;
    int cancel;
    int rc;
    pthread_t self; /* the completing thread, for then-callback checks */
};

static inline void *completer_main(void *arg) {
    struct completer *c = arg;
    c->self = pthread_self();
    if (c->delay_ms)
        test_sleep_ms(c->delay_ms);
    if (c->cancel)
        desync_promise_cancel(c->p);
    else
        c->rc = desync_promise_complete(c->p, c->value);
    return NULL;
}

static inline int completer_start(struct completer *c, desync_promise_t *p, void *value,
                                  unsigned delay_ms, int cancel) {
    memset(c, 0, sizeof *c);
    c->p = p;
    c->value = value;
    c->delay_ms = delay_ms;
    c->cancel = cancel;
    return pthread_create(&c->th, NULL, completer_main, c) == 0;
}

static inline void completer_join(struct completer *c) { pthread_join(c->th, NULL); }

/* Calls a counter when woken. */
struct wake_count {
    atomic_int n;
};

static inline void count_wake(void *ctx) { atomic_fetch_add(&((struct wake_count *)ctx)->n, 1); }

/* Whether, and on which thread, a future_sync job ran. */
struct sync_probe {
    pthread_t thread;
    atomic_int ran;
};

/* future_sync job: records its thread, done with the object's int. */
static inline desync_future_t *probe_ready_int(void *data, void *arg) {
    struct sync_probe *p = arg;
    p->thread = pthread_self();
    atomic_fetch_add(&p->ran, 1);
    return desync_future_ready(IV(*(int *)data));
}

/* After job: records the status and value it was given, returns 77. */
struct after_seen {
    int status;
    void *value;
};

static inline void *record_after(void *data, int status, void *value, void *arg) {
    (void)data;
    struct after_seen *s = arg;
    s->status = status;
    s->value = value;
    return IV(77);
}

/* After job: passes the awaited value on. */
static inline void *after_noop(void *data, int status, void *value, void *arg) {
    (void)data;
    (void)status;
    (void)arg;
    return value;
}

#endif
