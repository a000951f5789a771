/*
 * desync_t: a queue plus the data it protects, in one allocation (the queue
 * comes first, so a job on the queue finds the data at no cost).
 *
 * Reference counts: `strong` counts user references; when it drops to zero,
 * destroy(data) is queued as a job, so it runs after every job queued
 * before it. `weak` counts pipes that watch the object without keeping it
 * alive, plus one for all strong references together. The object owns one
 * reference to its queue, dropped with the last weak one; the memory goes
 * with the last queue reference (desync_get_queue users, tokens in transit).
 */
#include "internal.h"

#include <stdlib.h>

desync_t *desync_new_on(desync_scheduler_t *scheduler, void *data, void (*destroy)(void *data)) {
    if (!scheduler && !(scheduler = desync_scheduler_default()))
        return NULL;
    desync_t *d = malloc(sizeof *d);
    if (!d)
        return NULL;
    dsy_queue_init(&d->q, scheduler);
    atomic_store_explicit(&d->q.state, DSY_Q_OBJECT, memory_order_relaxed);
    d->data = data;
    d->destroy = destroy;
    atomic_init(&d->strong, 1);
    atomic_init(&d->weak, 1);
    return d;
}

desync_t *desync_new(void *data, void (*destroy)(void *data)) {
    return desync_new_on(NULL, data, destroy);
}

desync_t *desync_retain(desync_t *d) {
    if (d)
        atomic_fetch_add_explicit(&d->strong, 1, memory_order_relaxed);
    return d;
}

void dsy_object_weak_retain(desync_t *d) { atomic_fetch_add_explicit(&d->weak, 1, memory_order_relaxed); }

void dsy_object_weak_release(desync_t *d) {
    if (atomic_fetch_sub_explicit(&d->weak, 1, memory_order_acq_rel) == 1)
        dsy_queue_unref(&d->q);
}

int dsy_object_alive(desync_t *d) { return atomic_load_explicit(&d->strong, memory_order_acquire) > 0; }

static void destroy_data(void *data, void *arg) {
    desync_t *d = arg;
    if (d->destroy)
        d->destroy(data);
}

/* Queued from one of the object's own jobs: whoever runs it holds a queue
 * reference for the run token, so dropping the object's one here is safe. */
static void destroy_data_and_release(void *data, void *arg) {
    destroy_data(data, arg);
    dsy_object_weak_release(arg);
}

void desync_release(desync_t *d) {
    if (!d || atomic_fetch_sub_explicit(&d->strong, 1, memory_order_acq_rel) != 1)
        return;
    if (dsy_queue_in_chain(&d->q) ||
        (atomic_load_explicit(&d->q.state, memory_order_relaxed) & DSY_Q_SUSPENDED)) {
        /* A sync would deadlock (or wait for a resume that this thread may
         * hold): destruction runs after the current job / the resume. */
        while (dsy_desync(&d->q, (void (*)(void))destroy_data_and_release, true, d, 0, false) ==
               DESYNC_ENOMEM)
            dsy_sleep_ns(1000000);
        return;
    }
    dsy_sync(&d->q, (void (*)(void))destroy_data, d->data, true, d, false);
    dsy_object_weak_release(d);
}

int desync_desync(desync_t *d, desync_job_fn job, void *arg) {
    return d ? dsy_desync(&d->q, (void (*)(void))job, true, arg, 0, false) : DESYNC_EINVAL;
}

int desync_desync_copy(desync_t *d, desync_job_fn job, const void *arg, size_t len) {
    return d ? dsy_desync(&d->q, (void (*)(void))job, true, arg, len, true) : DESYNC_EINVAL;
}

int desync_sync(desync_t *d, desync_job_fn job, void *arg) {
    return d ? dsy_sync(&d->q, (void (*)(void))job, d->data, true, arg, false) : DESYNC_EINVAL;
}

int desync_try_sync(desync_t *d, desync_job_fn job, void *arg) {
    return d ? dsy_sync(&d->q, (void (*)(void))job, d->data, true, arg, true) : DESYNC_EINVAL;
}

desync_queue_t *desync_get_queue(desync_t *d) { return d ? &d->q : NULL; }

void *desync_data(desync_t *d) { return d ? d->data : NULL; }
