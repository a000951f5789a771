/*
 * Hand-written baselines: the textbook mutex + condvar structures the
 * libdesync variants are compared against. Straightforward on purpose: one
 * lock per operation, a condvar wait whenever a thread has nothing to do.
 */
#include "bench.h"

#include <stdlib.h>

/* ------------------------------------------- job queue with one worker */

static void *mq_worker(void *p) {
    mq_t *q = p;
    pthread_mutex_lock(&q->m);
    for (;;) {
        while (q->len == 0 && !q->stop)
            pthread_cond_wait(&q->cv, &q->m);
        if (q->len == 0)
            break;
        qjob_t j = q->ring[q->head];
        q->head = (q->head + 1) & (q->cap - 1);
        q->len--;
        pthread_mutex_unlock(&q->m);
        j.fn(j.arg);
        pthread_mutex_lock(&q->m);
    }
    pthread_mutex_unlock(&q->m);
    return NULL;
}

void mq_init(mq_t *q) {
    q->cap = 1024;
    q->ring = malloc(q->cap * sizeof *q->ring);
    if (!q->ring)
        die("out of memory");
    q->head = q->len = 0;
    q->stop = 0;
    CHECK_PT(pthread_mutex_init(&q->m, NULL));
    CHECK_PT(pthread_cond_init(&q->cv, NULL));
    CHECK_PT(pthread_create(&q->thread, NULL, mq_worker, q));
}

/* Doubles the ring (called with q->m held). */
static void mq_grow(mq_t *q) {
    size_t cap = q->cap * 2;
    qjob_t *ring = malloc(cap * sizeof *ring);
    if (!ring)
        die("out of memory");
    for (size_t i = 0; i < q->len; i++)
        ring[i] = q->ring[(q->head + i) & (q->cap - 1)];
    free(q->ring);
    q->ring = ring;
    q->cap = cap;
    q->head = 0;
}

static void mq_push_locked(mq_t *q, qjob_fn fn, void *arg) {
    if (q->len == q->cap)
        mq_grow(q);
    q->ring[(q->head + q->len) & (q->cap - 1)] = (qjob_t){fn, arg};
    if (q->len++ == 0)
        pthread_cond_signal(&q->cv); /* the worker only sleeps on an empty queue */
}

void mq_push(mq_t *q, qjob_fn fn, void *arg) {
    pthread_mutex_lock(&q->m);
    mq_push_locked(q, fn, arg);
    pthread_mutex_unlock(&q->m);
}

typedef struct {
    qjob_fn fn;
    void *arg;
    mq_t *q;
    pthread_cond_t cv;
    int done;
} mq_call_t;

static void mq_call_run(void *p) {
    mq_call_t *c = p;
    c->fn(c->arg);
    pthread_mutex_lock(&c->q->m);
    c->done = 1;
    pthread_cond_signal(&c->cv);
    pthread_mutex_unlock(&c->q->m);
}

void mq_sync(mq_t *q, qjob_fn fn, void *arg) {
    mq_call_t c = {.fn = fn, .arg = arg, .q = q, .done = 0};
    CHECK_PT(pthread_cond_init(&c.cv, NULL));
    pthread_mutex_lock(&q->m);
    mq_push_locked(q, mq_call_run, &c);
    while (!c.done)
        pthread_cond_wait(&c.cv, &q->m);
    pthread_mutex_unlock(&q->m);
    pthread_cond_destroy(&c.cv);
}

void mq_destroy(mq_t *q) {
    pthread_mutex_lock(&q->m);
    q->stop = 1;
    pthread_cond_signal(&q->cv);
    pthread_mutex_unlock(&q->m);
    CHECK_PT(pthread_join(q->thread, NULL));
    free(q->ring);
    pthread_cond_destroy(&q->cv);
    pthread_mutex_destroy(&q->m);
}

/* --------------------------------------------------- bounded u64 queue */

void bq_init(bq_t *q) {
    CHECK_PT(pthread_mutex_init(&q->m, NULL));
    CHECK_PT(pthread_cond_init(&q->not_full, NULL));
    CHECK_PT(pthread_cond_init(&q->not_empty, NULL));
    q->head = q->len = 0;
    q->closed = 0;
}

void bq_push(bq_t *q, uint64_t v) {
    pthread_mutex_lock(&q->m);
    while (q->len == BQ_CAP)
        pthread_cond_wait(&q->not_full, &q->m);
    q->buf[(q->head + q->len) % BQ_CAP] = v;
    q->len++;
    pthread_cond_signal(&q->not_empty);
    pthread_mutex_unlock(&q->m);
}

int bq_pop(bq_t *q, uint64_t *v) {
    pthread_mutex_lock(&q->m);
    while (q->len == 0 && !q->closed)
        pthread_cond_wait(&q->not_empty, &q->m);
    if (q->len == 0) {
        pthread_mutex_unlock(&q->m);
        return 0;
    }
    *v = q->buf[q->head];
    q->head = (q->head + 1) % BQ_CAP;
    q->len--;
    pthread_cond_signal(&q->not_full);
    pthread_mutex_unlock(&q->m);
    return 1;
}

void bq_close(bq_t *q) {
    pthread_mutex_lock(&q->m);
    q->closed = 1;
    pthread_cond_broadcast(&q->not_empty);
    pthread_mutex_unlock(&q->m);
}

void bq_destroy(bq_t *q) {
    pthread_cond_destroy(&q->not_full);
    pthread_cond_destroy(&q->not_empty);
    pthread_mutex_destroy(&q->m);
}

/* ------------------------------------------------------ condvar future */

cvfuture_t *cvf_new(void) {
    cvfuture_t *f = malloc(sizeof *f);
    if (!f)
        die("out of memory");
    CHECK_PT(pthread_mutex_init(&f->m, NULL));
    CHECK_PT(pthread_cond_init(&f->cv, NULL));
    f->done = 0;
    f->value = NULL;
    return f;
}

void cvf_complete(cvfuture_t *f, void *value) {
    pthread_mutex_lock(&f->m);
    f->value = value;
    f->done = 1;
    pthread_cond_signal(&f->cv);
    pthread_mutex_unlock(&f->m);
}

void *cvf_wait(cvfuture_t *f) {
    pthread_mutex_lock(&f->m);
    while (!f->done)
        pthread_cond_wait(&f->cv, &f->m);
    void *v = f->value;
    pthread_mutex_unlock(&f->m);
    return v;
}

void cvf_free(cvfuture_t *f) {
    pthread_cond_destroy(&f->cv);
    pthread_mutex_destroy(&f->m);
    free(f);
}

/* --------------------------------------------------------------- latch */

void latch_init(latch_t *l) {
    CHECK_PT(pthread_mutex_init(&l->m, NULL));
    CHECK_PT(pthread_cond_init(&l->cv, NULL));
    l->done = l->err = 0;
}

void latch_open(latch_t *l, int err) {
    pthread_mutex_lock(&l->m);
    if (!l->done)
        l->err = err;
    l->done = 1;
    pthread_cond_broadcast(&l->cv);
    pthread_mutex_unlock(&l->m);
}

int latch_wait(latch_t *l) {
    pthread_mutex_lock(&l->m);
    while (!l->done)
        pthread_cond_wait(&l->cv, &l->m);
    int err = l->err;
    pthread_mutex_unlock(&l->m);
    return err;
}

void latch_destroy(latch_t *l) {
    pthread_cond_destroy(&l->cv);
    pthread_mutex_destroy(&l->m);
}
