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

#include <stddef.h>
#include <stdlib.h>
#include <string.h>

/* The rest of an object at d (its memory allocated by the caller): its
 * queue on `scheduler` (NULL: the default one), data and references. False
 * on ENOMEM (nothing to undo but the caller's memory). */
static bool object_init(desync_t *d, desync_scheduler_t *scheduler, unsigned flags, void *data,
                        desync_destroy_fn destroy) {
    if (!scheduler)
        scheduler = desync_scheduler_default(); /* never NULL: no allocation */
    if (dsy_queue_init(&d->q, scheduler, DSY_QUEUE_OF_OBJECT | flags) != 0)
        return false;
    d->q.data = data;
    d->destroy = destroy;
    dsy_ref_init(&d->strong, 1);
    dsy_ref_init(&d->weak, 1);
    return true;
}

_Static_assert(sizeof(desync_t) <= DSY_POOL_OBJECT_BYTES, "an object fits its pool block");

/* From the pool's object arena (jobpool.c): a million objects fault in
 * their memory in 2 MiB pages, not 4 KiB ones. Freed with the queue
 * (dsy_queue_unref). */
desync_t *desync_new_on(desync_scheduler_t *scheduler, void *data, desync_destroy_fn destroy) {
    desync_t *d = dsy_pool_alloc(DSY_POOL_OBJECT);
    if (d && !object_init(d, scheduler, 0, data, destroy)) {
        dsy_pool_free(d, DSY_POOL_OBJECT);
        d = NULL;
    }
    return d;
}

desync_t *desync_new(void *data, desync_destroy_fn destroy) {
    return desync_new_on(NULL, data, destroy);
}

/* desync_new_copy's storage, aligned for any type. */
#define DATA_ALIGN _Alignof(max_align_t)

static size_t round_up(size_t n, size_t to) { return (n + to - 1) / to * to; }

/*
 * One allocation, aligned to a cache line, holding the object and its data.
 * Data of up to DSY_DATA_BEFORE bytes ends where the object starts, half a
 * line in: it shares a line with the queue's first fields (tail, data, head,
 * state), so a sync or a multi-object job on an idle object touches one
 * line, as a mutex and the data beside it do. Larger data follows the
 * object.
 */
desync_t *desync_new_copy_on(desync_scheduler_t *scheduler, const void *init, size_t size,
                             desync_destroy_fn destroy) {
    size_t obj = round_up(sizeof(desync_t), DATA_ALIGN);
    bool before = size <= DSY_DATA_BEFORE;
    if (!before && size > SIZE_MAX - obj - DSY_CACHE_LINE)
        return NULL;
    size_t bytes = before ? DSY_DATA_BEFORE + sizeof(desync_t) : obj + size;
    unsigned char *mem = aligned_alloc(DSY_CACHE_LINE, round_up(bytes, DSY_CACHE_LINE));
    if (!mem)
        return NULL;
    desync_t *d = (desync_t *)(before ? mem + DSY_DATA_BEFORE : mem);
    void *data = before ? mem + DSY_DATA_BEFORE - round_up(size, DATA_ALIGN) : mem + obj;
    if (init)
        memcpy(data, init, size);
    else
        memset(data, 0, size);
    if (!object_init(d, scheduler, before ? DSY_QUEUE_DATA_BEFORE : 0, data, destroy)) {
        free(mem);
        return NULL;
    }
    return d;
}

desync_t *desync_new_copy(const void *init, size_t size, desync_destroy_fn destroy) {
    return desync_new_copy_on(NULL, init, size, destroy);
}

desync_t *desync_retain(desync_t *d) {
    if (d)
        dsy_ref_inc(&d->strong);
    return d;
}

void dsy_object_weak_retain(desync_t *d) { dsy_ref_inc(&d->weak); }

void dsy_object_weak_release(desync_t *d) {
    if (dsy_ref_dec(&d->weak))
        dsy_queue_unref(&d->q);
}

int dsy_object_alive(desync_t *d) {
    return atomic_load_explicit(&d->strong, memory_order_acquire) > 0;
}

static void destroy_data(void *data, void *arg) {
    desync_t *d = arg;
    if (d->destroy)
        d->destroy(data);
}

/* The destruction job queued by a last release that must not wait: it
 * lives in the object (d->destroy_node), so release needs no memory. The
 * thread that runs it holds a queue reference for the run token, so the
 * object's memory (shared with its queue) outlives dropping the object's
 * own reference here. */
static enum dsy_run_result destroy_node_run(dsy_node *n, desync_queue_t *q, void *data) {
    (void)q;
    desync_t *d = DSY_CONTAINER_OF(n, desync_t, destroy_node);
    if (d->destroy)
        d->destroy(data);
    dsy_object_weak_release(d);
    return DSY_DONE;
}

static void destroy_node_finish(dsy_node *n) { (void)n; }

static const dsy_node_ops destroy_node_ops = {destroy_node_run, destroy_node_finish, NULL};

void desync_release(desync_t *d) {
    if (!d || !dsy_ref_dec(&d->strong))
        return;
    if (dsy_queue_in_chain(&d->q) || dsy_queue_is_suspended(&d->q)) {
        /* A sync would deadlock (or wait for a resume that this thread may
         * hold): destruction runs after the current job / the resume. */
        d->destroy_node.ops = &destroy_node_ops;
        dsy_queue_push_schedule(&d->q, &d->destroy_node);
        return;
    }
    dsy_sync(&d->q, (dsy_fn)destroy_data, d, DSY_JOB_DATA);
    dsy_object_weak_release(d);
}

void dsy_object_release_async(desync_t *d) {
    if (!dsy_ref_dec(&d->strong))
        return;
    d->destroy_node.ops = &destroy_node_ops;
    dsy_queue_push_schedule(&d->q, &d->destroy_node);
}

int desync_desync(desync_t *d, desync_job_fn job, void *arg) {
    return d ? dsy_desync(&d->q, (dsy_fn)job, arg, 0, DSY_JOB_DATA) : DESYNC_EINVAL;
}

int desync_desync_copy(desync_t *d, desync_job_fn job, const void *arg, size_t len) {
    return d ? dsy_desync(&d->q, (dsy_fn)job, arg, len, DSY_JOB_DATA | DSY_JOB_COPY)
             : DESYNC_EINVAL;
}

int desync_try_desync(desync_t *d, desync_job_fn job, void *arg) {
    return d ? dsy_desync(&d->q, (dsy_fn)job, arg, 0, DSY_JOB_DATA | DSY_JOB_TRY) : DESYNC_EINVAL;
}

int desync_set_max_pending(desync_t *d, size_t n) {
    return d ? desync_queue_set_max_pending(&d->q, n) : DESYNC_EINVAL;
}

int desync_sync(desync_t *d, desync_job_fn job, void *arg) {
    return d ? dsy_sync(&d->q, (dsy_fn)job, arg, DSY_JOB_DATA) : DESYNC_EINVAL;
}

int desync_try_sync(desync_t *d, desync_job_fn job, void *arg) {
    return d ? dsy_sync(&d->q, (dsy_fn)job, arg, DSY_JOB_DATA | DSY_JOB_TRY)
             : DESYNC_EINVAL;
}

int desync_set_label(desync_t *d, const char *name) {
    return d ? desync_queue_set_label(&d->q, name) : DESYNC_EINVAL;
}

desync_queue_t *desync_get_queue(desync_t *d) { return d ? &d->q : NULL; }

void *desync_data(desync_t *d) { return d ? d->q.data : NULL; }
