/*
 * Futures, promises, async jobs and suspend/resume.
 *
 * A future is a small state record: pending or complete (status + value),
 * and, while pending, who is interested: blocked waiters (each with a word on
 * its stack), one poll waker, one then-callback, an eventfd. Completion
 * happens exactly once (fut_complete), under the future's spinlock; the
 * interested parties are called after the lock is dropped. Two references
 * keep a future alive: the user's handle and its producer (promise, queue
 * node, or nothing for ready futures). A queue-bound future and its node
 * are one block (struct qfuture), freed with the last of the two.
 *
 * QUEUE NODES. future_desync, future_sync, after and suspend each put one
 * fnode in the queue. A node that must wait for something (the future its
 * job returned, the `after` future, a resume, a future_sync waiter) returns
 * DSY_PARKED: the run token stays with the node, no thread is blocked, and
 * later jobs of the queue wait. Whoever ends the wait places the token again
 * (dsy_token_place) and the queue runs the same node again; the node's phase
 * says where it was:
 *
 *   START --job returns a pending future--> WAIT --it completes--> READY
 *   START / READY --complete `out`--> DONE (the node is unlinked)
 *   AFTER:   START --`after` pending--> WAIT --completes--> READY --job--> DONE
 *   SUSPEND: START --complete `out` with a resumer--> SUSPENDED --resume--> DONE
 *   SYNC (future_sync) runs its job only on a thread that waits on or polls
 *   `out`: reached by any other thread it hands the token to a waiter of
 *   `out` or parks it in `out` (parked_q) for the next wait or poll.
 *
 * A thread waiting on a queue-bound future counts itself a waiter of that
 * queue (dsy_queue_wait_node), so when no other thread runs the queue, the
 * waiter gets the token and runs the queue itself up to the future's node.
 * Two steps come first: a waiter that finds the token waiting for a thread
 * (READY) takes it at once and runs up to the node without listing itself
 * (fut_run_ready: it does not block, so it publishes no wait-for edge), and
 * one that finds another thread running the queue watches the future for a
 * moment before it lists itself.
 *
 * FORK. A waiter's fwaiter lives on its stack; the thread's record chains
 * the ones it is listed with (dsy_self.waiting), so that the child of a fork
 * unlists those of vanished threads (new threads may reuse their stacks).
 * Futures of a forked-off queue (queue.c) never complete in the child: waits
 * and polls on them return DESYNC_EFORKED.
 */
#include "internal.h"

#include <stdlib.h>
#include <string.h>
#include <unistd.h>

typedef struct fwaiter {
    _Atomic uint32_t word;
    struct fwaiter *next;
    desync_future_t *f; /* fork: the future listing it */
    struct fwaiter *up; /* fork: this thread's enclosing wait (dsy_self.waiting) */
} fwaiter;

enum fkind { K_ASYNC, K_SYNC, K_AFTER, K_SUSPEND };
enum fphase { P_START, P_WAIT, P_READY, P_SUSPENDED, P_DONE };

struct desync_future {
    dsy_spinlock lock; /* over everything below but `done` */
    _Atomic uint32_t done; /* 1 once status/value are final (store-release) */
    dsy_refcount refs;
    /* 1 while fut_complete signals the fd and calls the waker outside the
     * lock: poll and free wait for it, so that once they return, no old
     * waker call or fd write is still under way (the waker's context and the
     * fd number may be gone right after). */
    _Atomic uint32_t waking;
    int status;
    void *value;
    fwaiter *waiters;
    desync_waker_t waker;
    bool has_waker;
    bool handle_gone; /* freed or detached by the user */
    bool detached;
    uint8_t cls; /* its pool class: DSY_POOL_192 when its queue node is in the block */
    desync_then_fn then_cb;
    void *then_arg;
    int fd, fd_write; /* -1 until desync_future_fd; fd_write is the pipe's other end */
    /* Queue-bound futures: the queue and node that complete this future.
     * Valid while pending: the node is unlinked only after completion. */
    desync_queue_t *q;
    dsy_node *node;
    desync_queue_t *parked_q; /* K_SYNC: the token waits here for a waiter or poller */
    /* Combinators listening to this future (f locked; taken by fut_complete). */
    struct flistener *listeners;
    /* The combinator producing this future (future_all/any), else NULL.
     * Set before the handle is returned; constant. */
    struct comb *comb;
};

/* A combinator's interest in one of its inputs: listed in the input's
 * `listeners` (under its lock) until fut_complete takes it or the
 * combined future's free removes it. */
typedef struct flistener {
    struct flistener *next;
    struct flistener *pnext; /* sync_node_defer's chain of listeners to notify */
    struct comb *c;
    size_t i; /* the input's index */
} flistener;

static void comb_input_done(struct flistener *l, int status);
static void comb_notify_parked(desync_future_t *in);
static void comb_destroy(struct comb *c);
static void comb_unlist(struct comb *c);
static unsigned comb_drive(struct comb *c, bool wait);
#define DRIVE_SLICE 1u /* comb_drive: sleep in slices (an input's queue has no thread) */
#define DRIVE_STUCK 2u /* comb_drive: no pending input of an any-future can complete */
static int comb_wait_inputs(struct comb *c, uint64_t deadline);
static uint32_t comb_parks(struct comb *c);

struct desync_resumer {
    desync_queue_t *q;
    struct fnode *node;
};

typedef struct fnode {
    dsy_node node;
    uint8_t kind, phase;
    bool with_data;
    bool held; /* the token is parked (dsy_queue_mark_held): cleared at the next run */
    int status;        /* of the awaited future, once READY */
    dsy_fn fn;         /* the user's job */
    void *arg;
    desync_future_t *out; /* the future this node completes (holds a reference) */
    union {
        desync_future_t *after; /* K_AFTER, until it completes */
        void *value;            /* the awaited future's value, once READY */
        desync_resumer_t *resumer;
    } u;
} fnode;

/* The future the current thread is waiting on or polling: a K_SYNC node of
 * that future runs its job when this thread reaches it. */
static DSY_TLS desync_future_t *tls_driving;
/* The future whose waker this thread is calling (a waker may poll it). */
static DSY_TLS desync_future_t *tls_waking;

static void fut_lock(desync_future_t *f) { dsy_spin_lock(&f->lock); }
static void fut_unlock(desync_future_t *f) { dsy_spin_unlock(&f->lock); }

/* ------------------------------------------------------------ lifetime */

/* A queue-bound future and the node that completes it, in one block: one
 * allocation, and the node's memory lives as long as the future's. */
typedef struct qfuture {
    struct desync_future f;
    fnode x;
} qfuture;

_Static_assert(sizeof(struct desync_future) <= 128, "futures come from the 128-byte pool");
_Static_assert(sizeof(qfuture) <= 192, "queue futures come from the 192-byte pool");

static void fut_init(desync_future_t *f, uint32_t refs, unsigned cls) {
    memset(f, 0, sizeof *f);
    dsy_ref_init(&f->refs, refs);
    f->fd = f->fd_write = -1;
    f->cls = (uint8_t)cls;
}

static desync_future_t *fut_new(uint32_t refs) {
    desync_future_t *f = dsy_pool_alloc(DSY_POOL_128);
    if (f)
        fut_init(f, refs, DSY_POOL_128);
    return f;
}

/* True if the caller, an owner, is the only one: nobody else can then take
 * or drop a reference (acquire: pairs with the others' acq_rel drops). */
static bool fut_sole_owner(desync_future_t *f) {
    return atomic_load_explicit(&f->refs, memory_order_acquire) == 1;
}

static void fut_unref(desync_future_t *f) {
    /* The last owner frees without a read-modify-write. */
    if (!fut_sole_owner(f) && !dsy_ref_dec(&f->refs))
        return;
    if (DSY_UNLIKELY(f->comb != NULL))
        comb_destroy(f->comb);
    if (f->fd >= 0)
        close(f->fd);
    if (f->fd_write >= 0)
        close(f->fd_write);
    dsy_pool_free(f, f->cls);
}

static bool fut_is_done(desync_future_t *f) {
    return atomic_load_explicit(&f->done, memory_order_acquire) != 0;
}

/* Locks f if it is still pending (true); false, unlocked, once complete. */
static inline bool fut_lock_pending(desync_future_t *f) {
    if (fut_is_done(f))
        return false;
    fut_lock(f);
    if (!fut_is_done(f))
        return true;
    fut_unlock(f);
    return false;
}

static void fd_signal(int fd) {
    if (fd >= 0)
        dsy_event_fd_signal(fd);
}

/* Waits until a completion of f has finished calling its waker (see
 * `waking`); not if this thread is that caller. */
static void fut_quiesce(desync_future_t *f) {
    for (unsigned b = 0; atomic_load_explicit(&f->waking, memory_order_acquire) && tls_waking != f;)
        dsy_backoff(&b);
}

/* Signals fd (if >= 0) and calls waker (if not NULL) outside f's lock, with
 * `waking` already set under it; clears `waking` when done. */
static void fut_call_waker(desync_future_t *f, const desync_waker_t *waker, int fd) {
    fd_signal(fd);
    desync_future_t *saved = tls_waking;
    tls_waking = f;
    if (waker)
        waker->wake(waker->ctx);
    tls_waking = saved;
    atomic_store_explicit(&f->waking, 0, memory_order_release);
}

/* Completes f exactly once; false if it was already complete. Waiters,
 * waker, fd and then-callback are served after the lock is dropped. The
 * caller holds a reference across the call. */
static bool fut_complete(desync_future_t *f, int status, void *value) {
    if (!fut_lock_pending(f))
        return false;
    f->status = status;
    f->value = value;
    if (DSY_LIKELY(!f->waiters && !f->listeners && !f->has_waker && !f->then_cb && f->fd < 0)) {
        /* Nobody to tell (the common case: a waiter that ran the job). */
        atomic_store_explicit(&f->done, 1, memory_order_release);
        fut_unlock(f);
        return true;
    }
    fwaiter *w = f->waiters;
    f->waiters = NULL;
    flistener *ls = f->listeners;
    f->listeners = NULL;
    desync_waker_t waker = f->waker;
    bool has_waker = f->has_waker && waker.wake;
    f->has_waker = false;
    desync_then_fn cb = f->then_cb;
    void *cb_arg = f->then_arg;
    f->then_cb = NULL;
    int fd = f->fd_write >= 0 ? f->fd_write : f->fd;
    /* `waking` before `done`: whoever sees done (acquire) also sees it. */
    if (has_waker || fd >= 0)
        atomic_store_explicit(&f->waking, 1, memory_order_relaxed);
    atomic_store_explicit(&f->done, 1, memory_order_release);
    fut_unlock(f);
    /* Combinators before waiters: a waiter of an input (a wait on
     * future_all waits on each input) wakes to find the combined state
     * updated. (One that sees `done` without waiting may come a moment
     * early: it then waits on the combined future for this call.) */
    while (ls) {
        flistener *next = ls->next; /* read before the call may free ls */
        comb_input_done(ls, status);
        ls = next;
    }
    while (w) {
        fwaiter *next = w->next; /* read before the waiter may return */
        dsy_waiter_signal(&w->word, DSY_W_DONE);
        w = next;
    }
    if (has_waker || fd >= 0)
        fut_call_waker(f, has_waker ? &waker : NULL, fd);
    if (cb) {
        cb(status, value, cb_arg);
        fut_unref(f); /* the reference then() consumed */
    }
    return true;
}

/* The user's handle is gone (f locked): no more waker; a future_sync job
 * is cancelled, or (detach) runs on its queue. Returns a queue whose token
 * was parked in f, for the caller to place once f is unlocked: the node then
 * runs again and sees the new flags. */
static desync_queue_t *fut_handle_gone_locked(desync_future_t *f, bool detach) {
    f->handle_gone = true;
    f->detached = detach;
    f->has_waker = false;
    desync_queue_t *parked = f->parked_q;
    f->parked_q = NULL;
    return parked;
}

/* Registers cb to run (once) on completion and consumes f; false (nothing
 * registered, f not consumed) if f is already complete. Nobody can wait on
 * or poll f any more, so a future_sync job behind it now runs on its queue
 * (a token parked for a poller is placed again). */
/* The library takes f over (desync_after): nobody can wait on or poll it
 * any more, so a future_sync job of f runs on its queue now, as after a
 * detach (a token parked for a poller is placed again), not only once the
 * after node is reached: an after queued behind f's own node would wait
 * for it forever. The reference passes to the caller. */
static void fut_adopt(desync_future_t *f) {
    fut_lock(f);
    desync_queue_t *parked = fut_handle_gone_locked(f, true);
    fut_unlock(f);
    if (parked)
        dsy_token_place(parked, true);
}

static bool fut_hook(desync_future_t *f, desync_then_fn cb, void *arg) {
    if (!fut_lock_pending(f))
        return false;
    f->then_cb = cb;
    f->then_arg = arg;
    desync_queue_t *parked = fut_handle_gone_locked(f, true);
    fut_unlock(f);
    if (parked)
        dsy_token_place(parked, true);
    return true;
}

/* -------------------------------------------------------------- nodes */

static desync_future_t *node_out(dsy_node *n) { return DSY_CONTAINER_OF(n, fnode, node)->out; }

/* The awaited future completed: remember its result and let the queue run
 * this node again. The parked token carries its queue reference. */
static void node_wake(int status, void *value, void *arg) {
    fnode *x = arg;
    x->status = status;
    x->u.value = value;
    x->phase = P_READY;
    dsy_token_place(x->out->q, true);
}

/* Parks on `awaited` if pending (consuming it); else takes its result. */
/* The token is about to wait in a future (held: the queue reads SUSPENDED in
 * its stats), or stays here after all (!held). Marked before the park can
 * be seen: the token may come back at once on another thread, whose run of
 * x clears the mark (fnode_run). */
static void node_mark_held(fnode *x, desync_queue_t *q, bool held) {
    x->held = held;
    dsy_queue_mark_held(q, held);
}

static bool node_await(fnode *x, desync_queue_t *q, desync_future_t *awaited) {
    /* Once hooked, node_wake may run at once on another thread and hand the
     * token on: the phase and the mark are set first, and x is not touched
     * afterwards. A future already complete (the common case) is not
     * marked: it will not hold the queue. */
    x->phase = P_WAIT;
    if (awaited && !fut_is_done(awaited)) {
        node_mark_held(x, q, true);
        if (fut_hook(awaited, node_wake, x))
            return true;
        node_mark_held(x, q, false);
    }
    x->status = awaited ? awaited->status : 0;
    x->u.value = awaited ? awaited->value : NULL;
    x->phase = P_READY;
    if (awaited)
        fut_unref(awaited);
    return false;
}

/* What a K_SYNC node reached by a thread that does not drive `out` does. */
typedef enum defer_result {
    DEFER_DONE,     /* cancelled: completed with ECANCELED */
    DEFER_PARKED,   /* the token went to a waiter of out, or waits in out */
    DEFER_RUN_HERE, /* detached: nobody will drive it, run the job here */
} defer_result;

/* Under out's lock, so that then/free/detach see either the token parked in
 * out or a node that will see their flags: cancelled -> complete with
 * ECANCELED; detached -> run here; else hand the token to a waiter of out,
 * or park it in out for the next wait/poll. */
static defer_result sync_node_defer(fnode *x, desync_queue_t *q) {
    desync_future_t *out = x->out;
    fut_lock(out);
    if (out->handle_gone && !out->detached) {
        fut_unlock(out);
        fut_complete(out, DESYNC_ECANCELED, NULL);
        x->phase = P_DONE;
        return DEFER_DONE;
    }
    if (out->detached) {
        fut_unlock(out);
        return DEFER_RUN_HERE;
    }
    if (out->waiters) {
        dsy_waiter_signal(&out->waiters->word, DSY_W_TOKEN);
        fut_unlock(out);
        return DEFER_PARKED;
    }
    out->parked_q = q;
    desync_waker_t waker = out->waker;
    bool has_waker = out->has_waker && waker.wake;
    out->has_waker = false;
    if (has_waker)
        atomic_store_explicit(&out->waking, 1, memory_order_relaxed);
    /* Combined futures over out are told too (unlocks out): their waiters
     * and pollers run the job, as if they waited on out. */
    comb_notify_parked(out);
    if (has_waker)
        fut_call_waker(out, &waker, -1);
    return DEFER_PARKED;
}

static enum dsy_run_result fnode_run_any(dsy_node *n, desync_queue_t *q, void *data);

/* The common case first: an async job's first run whose future is complete
 * when it returns (or NULL) completes `out` at once; anything else takes
 * the general path. */
static enum dsy_run_result fnode_run(dsy_node *n, desync_queue_t *q, void *data) {
    fnode *x = DSY_CONTAINER_OF(n, fnode, node);
    if (x->kind != K_ASYNC || x->phase != P_START)
        return fnode_run_any(n, q, data);
    desync_future_t *inner = x->with_data ? ((desync_async_fn)x->fn)(data, x->arg)
                                          : ((desync_queue_async_fn)x->fn)(x->arg);
    if (inner && !fut_is_done(inner))
        return node_await(x, q, inner) ? DSY_PARKED : fnode_run_any(n, q, data);
    int status = inner ? inner->status : 0;
    void *value = inner ? inner->value : NULL;
    if (inner)
        fut_unref(inner);
    x->phase = P_DONE;
    fut_complete(x->out, status, value);
    return DSY_DONE;
}

static __attribute__((noinline)) enum dsy_run_result
fnode_run_any(dsy_node *n, desync_queue_t *q, void *data) {
    fnode *x = DSY_CONTAINER_OF(n, fnode, node);
    desync_future_t *out = x->out;
    if (x->held)
        node_mark_held(x, q, false); /* back from a park: the queue runs again */
    switch ((enum fphase)x->phase) {
    case P_START:
        if (x->kind == K_SUSPEND) {
            x->phase = P_SUSPENDED;
            dsy_queue_mark_suspended(q);
            /* Once out is complete, whoever has the resumer may resume q,
             * and another thread may finish this node (dropping its
             * reference to out) while fut_complete still unlocks out: hold
             * a reference of our own across the call. x is not touched
             * afterwards. Found by the API fuzzer (multi-threaded mode). */
            dsy_ref_inc(&out->refs);
            fut_complete(out, 0, x->u.resumer);
            fut_unref(out);
            return DSY_PARKED;
        }
        if (x->kind == K_AFTER) {
            if (node_await(x, q, x->u.after))
                return DSY_PARKED;
            goto ready;
        }
        if (x->kind == K_SYNC && tls_driving != out) {
            node_mark_held(x, q, true);
            defer_result r = sync_node_defer(x, q);
            if (r == DEFER_PARKED)
                return DSY_PARKED;
            node_mark_held(x, q, false);
            if (r == DEFER_DONE)
                return DSY_DONE;
        }
        {
            desync_future_t *inner =
                x->with_data ? ((desync_async_fn)x->fn)(data, x->arg)
                             : ((desync_queue_async_fn)x->fn)(x->arg);
            if (node_await(x, q, inner))
                return DSY_PARKED;
        }
        /* fallthrough */
    case P_READY:
    ready:
        if (x->kind == K_AFTER) {
            void *r = x->with_data
                          ? ((desync_after_fn)x->fn)(data, x->status, x->u.value, x->arg)
                          : ((desync_queue_after_fn)x->fn)(x->status, x->u.value, x->arg);
            fut_complete(out, 0, r);
        } else {
            fut_complete(out, x->status, x->u.value);
        }
        x->phase = P_DONE;
        return DSY_DONE;
    case P_DONE: /* resumed (desync_resumer_resume) */
        break;
    case P_WAIT: /* not reachable: the token returns only with READY */
    case P_SUSPENDED: /* ... or, once resumed, with DONE */
        DSY_ASSERT(!"a future node runs again in START, READY or DONE only");
        break;
    }
    return DSY_DONE;
}

/* x is in out's block: the last of x and the handle frees both. */
static void fnode_finish(dsy_node *n) { fut_unref(node_out(n)); }

static int fnode_take_waiter(dsy_node *n) {
    desync_future_t *out = node_out(n);
    fut_lock(out);
    fwaiter *w = out->waiters;
    if (w)
        dsy_waiter_signal(&w->word, DSY_W_TOKEN);
    fut_unlock(out);
    return w != NULL;
}

static const dsy_node_ops fnode_ops = {fnode_run, fnode_finish, fnode_take_waiter};

/* Queues a future node; returns its future (the node holds the producer
 * reference) or NULL. Inlined: each caller's kind is a constant. */
static inline __attribute__((always_inline)) desync_future_t *
queue_fnode(desync_queue_t *q, enum fkind kind, dsy_fn fn, unsigned flags, void *arg,
            desync_future_t *after) {
    if (!q || (kind != K_SUSPEND && !fn) || (kind == K_AFTER && !after) ||
        (atomic_load_explicit(&dsy_forked, memory_order_relaxed) && dsy_queue_forked_off(q))) {
        if (after)
            desync_future_free(after);
        return NULL;
    }
    qfuture *b = dsy_pool_alloc(DSY_POOL_192);
    desync_resumer_t *r = kind == K_SUSPEND ? malloc(sizeof *r) : NULL;
    if (!b || (kind == K_SUSPEND && !r)) {
        if (b)
            dsy_pool_free(b, DSY_POOL_192);
        free(r);
        if (after)
            desync_future_free(after);
        return NULL;
    }
    desync_future_t *out = &b->f;
    fnode *x = &b->x;
    fut_init(out, 2, DSY_POOL_192);
    x->node.ops = &fnode_ops;
    x->kind = (uint8_t)kind;
    x->phase = P_START;
    x->with_data = flags & DSY_JOB_DATA;
    x->held = false;
    x->status = 0;
    x->fn = fn;
    x->arg = arg;
    x->out = out;
    x->u.after = after;
    if (r) {
        r->q = q;
        r->node = x;
        x->u.resumer = r;
    }
    out->q = q;
    out->node = &x->node;
    if (after)
        fut_adopt(after);
    dsy_queue_push_schedule(q, &x->node);
    return out;
}

/* ------------------------------------------------------------ creating */

desync_future_t *desync_future_desync(desync_t *d, desync_async_fn job, void *arg) {
    return d ? queue_fnode(&d->q, K_ASYNC, (dsy_fn)job, DSY_JOB_DATA, arg, NULL) : NULL;
}

desync_future_t *desync_future_sync(desync_t *d, desync_async_fn job, void *arg) {
    return d ? queue_fnode(&d->q, K_SYNC, (dsy_fn)job, DSY_JOB_DATA, arg, NULL) : NULL;
}

desync_future_t *desync_after(desync_t *d, desync_future_t *after, desync_after_fn job, void *arg) {
    if (!d) {
        desync_future_free(after);
        return NULL;
    }
    return queue_fnode(&d->q, K_AFTER, (dsy_fn)job, DSY_JOB_DATA, arg, after);
}

desync_future_t *desync_queue_future_desync(desync_queue_t *q, desync_queue_async_fn job,
                                            void *arg) {
    return queue_fnode(q, K_ASYNC, (dsy_fn)job, 0, arg, NULL);
}

desync_future_t *desync_queue_future_sync(desync_queue_t *q, desync_queue_async_fn job, void *arg) {
    return queue_fnode(q, K_SYNC, (dsy_fn)job, 0, arg, NULL);
}

desync_future_t *desync_queue_after(desync_queue_t *q, desync_future_t *after,
                                    desync_queue_after_fn job, void *arg) {
    return queue_fnode(q, K_AFTER, (dsy_fn)job, 0, arg, after);
}

desync_future_t *desync_queue_suspend(desync_queue_t *q) {
    return queue_fnode(q, K_SUSPEND, NULL, 0, NULL, NULL);
}

void desync_resumer_resume(desync_resumer_t *r) {
    if (!r)
        return;
    desync_queue_t *q = r->q;
    r->node->phase = P_DONE;
    dsy_handle_free(r, sizeof *r);
    dsy_queue_resume(q);
}

desync_future_t *desync_future_ready(void *value) {
    desync_future_t *f = fut_new(1);
    if (f) {
        f->value = value;
        atomic_store_explicit(&f->done, 1, memory_order_relaxed);
    }
    return f;
}

struct desync_promise {
    desync_future_t f; /* never used as such: a promise is its future's address */
};

desync_promise_t *desync_promise_new(desync_future_t **future) {
    if (!future)
        return NULL;
    desync_future_t *f = fut_new(2);
    *future = f;
    return (desync_promise_t *)(void *)f;
}

int dsy_promise_complete_status(desync_promise_t *p, int status, void *value) {
    if (!p)
        return DESYNC_EINVAL;
    desync_future_t *f = (desync_future_t *)(void *)p;
    /* Only its promise completes a promise's future, so a complete future
     * means the promise was consumed and its reference is gone: a misuse,
     * seen here while the user's handle keeps f alive. */
    if (!fut_complete(f, status, value))
        return DESYNC_EINVAL;
    fut_unref(f);
    return 0;
}

int desync_promise_complete(desync_promise_t *p, void *value) {
    return dsy_promise_complete_status(p, 0, value);
}

int desync_promise_cancel(desync_promise_t *p) {
    return dsy_promise_complete_status(p, DESYNC_ECANCELED, NULL);
}

/* ------------------------------------------------------------- reading */

static int result(desync_future_t *f, void **value) {
    if (value)
        *value = f->value;
    return f->status;
}

/* A future_sync job is due and its token is parked in f: run it here.
 * Called with f locked; unlocks. */
static void run_parked(desync_future_t *f) {
    desync_queue_t *q = f->parked_q;
    dsy_node *node = f->node;
    f->parked_q = NULL;
    fut_unlock(f);
    desync_future_t *saved = tls_driving;
    tls_driving = f;
    dsy_queue_drain_until(q, node);
    tls_driving = saved;
}

/* A pending queue-bound future whose queue was forked off (f locked). */
static bool fut_forked_off(desync_future_t *f) {
    return DSY_UNLIKELY(atomic_load_explicit(&dsy_forked, memory_order_relaxed)) && f->q &&
           dsy_queue_forked_off(f->q);
}

/* The first steps of a wait and of a poll: FUT_COMPLETE (unlocked), or
 * FUT_FORKED (unlocked), or FUT_PENDING with f locked. A future_sync job
 * that is due (its token parked in f) is run here first. */
typedef enum fut_look { FUT_COMPLETE, FUT_FORKED, FUT_PENDING } fut_look;

static fut_look fut_lock_for_wait(desync_future_t *f) {
    for (;;) {
        if (!fut_lock_pending(f))
            return FUT_COMPLETE;
        if (fut_forked_off(f)) {
            fut_unlock(f);
            return FUT_FORKED;
        }
        if (!f->parked_q)
            return FUT_PENDING;
        run_parked(f);
    }
}

/* A waiter's fast path (f locked and pending, q = f->q): if q's token waits
 * for a thread (READY), take it and run q up to f's node here, as a waiter
 * handed the token would, without listing a waiter or a wait-for edge (this
 * thread does not block: it runs the jobs, each in its own frame). f's lock
 * keeps the node from completing, so q is busy and alive until the steal;
 * then the stolen token's reference keeps it, and the drain pops our hold
 * (which fork may read) before that reference goes. Unlocks f and returns
 * true if it ran the queue; false, with f still locked, if the token was
 * not READY. */
static bool fut_run_ready(desync_future_t *f, desync_queue_t *q) {
    dsy_hold h; /* fork: from before the steal; the drain pops it */
    dsy_hold_push(&h, q);
    if (!dsy_queue_steal_ready(q)) {
        dsy_hold_pop(&h);
        return false;
    }
    dsy_node *node = f->node; /* still queued: f is pending */
    fut_unlock(f);
    desync_future_t *saved = tls_driving;
    tls_driving = f;
    dsy_queue_drain_until_held(q, node, &h); /* q may be gone after it */
    tls_driving = saved;
    return true;
}

/* The wait, written once for both kinds of future: compiled twice, with
 * `comb` constant (the combinator's steps cost other futures nothing). */
#if defined(__GNUC__)
#define FUT_WAIT_INLINE inline __attribute__((always_inline))
#else
#define FUT_WAIT_INLINE inline
#endif

static FUT_WAIT_INLINE int fut_wait(desync_future_t *f, uint64_t deadline, void **value,
                                    bool comb) {
    dsy_thread *me = dsy_thread_self(); /* registered before any lock is taken */
    bool watched = false;
    for (;;) {
        uint32_t parks = 0;
        bool slice = false; /* sleep in slices: an input's queue has no thread */
        if (comb) {
            parks = comb_parks(f->comb);
            unsigned dr = comb_drive(f->comb, true);
            if (dr & DRIVE_STUCK)
                return DESYNC_EDEADLK;
            slice = dr & DRIVE_SLICE;
        }
        fut_look look = fut_lock_for_wait(f);
        if (look != FUT_PENDING)
            return look == FUT_COMPLETE ? result(f, value) : DESYNC_EFORKED;
        desync_queue_t *q = f->q;
        if (q && dsy_queue_in_chain(q)) {
            fut_unlock(f);
            return DESYNC_EDEADLK;
        }
        if (!comb && q && fut_run_ready(f, q)) {
            if (fut_is_done(f))
                return result(f, value);
            continue; /* the queue parked before f's node completed: look again */
        }
        if (!comb && q && !watched && DSY_CONTAINER_OF(f->node, fnode, node)->kind != K_SYNC) {
            /* Another thread runs q (a worker took the token first): a
             * short job ends sooner than listing ourselves and a wake-up.
             * Once per wait; a future_sync node hands its token to a
             * listed waiter, so it is not watched. */
            watched = true;
            fut_unlock(f);
            dsy_spin sp = dsy_spin_for(DSY_FUT_WATCH_NS, deadline);
            while (!fut_is_done(f) && dsy_spin_round(&sp)) {
            }
            continue;
        }
        /* About to wait for q to run f's node: refuse a cycle of threads
         * waiting for each other. Checked outside f's lock (the reference
         * keeps q), then f is looked at again. */
        dsy_wait_edge edge = {NULL, NULL, 0};
        if (q) {
            dsy_queue_ref(q);
            fut_unlock(f);
            bool cycle = dsy_wait_enter(&edge, q);
            fut_lock(f);
            if (cycle || fut_is_done(f) || f->parked_q) {
                fut_unlock(f);
                if (!cycle)
                    dsy_wait_leave(&edge);
                dsy_queue_unref(q);
                if (cycle)
                    return DESYNC_EDEADLK;
                continue;
            }
        }
        if (comb && comb_parks(f->comb) != parks) {
            fut_unlock(f); /* an input parked a token after comb_drive: run it */
            continue;
        }
        fwaiter w;
        atomic_init(&w.word, DSY_W_WAITING);
        /* fork: marked before it is listed. The exchange (acq_rel) keeps the
         * listing below from being seen first; the hold marks q's token,
         * which may be handed to us. */
        dsy_hold h;
        if (q)
            dsy_hold_push(&h, q);
        w.f = f;
        w.up = atomic_load_explicit(&me->waiting, memory_order_relaxed);
        atomic_exchange_explicit(&me->waiting, &w, memory_order_acq_rel);
        w.next = f->waiters;
        f->waiters = &w;
        fut_unlock(f);

        bool done, recheck = false;
        if (q) {
            desync_future_t *saved = tls_driving;
            tls_driving = f;
            done = dsy_queue_wait_node(q, f->node, &w.word, deadline);
            tls_driving = saved;
        } else {
            uint64_t until = deadline;
            if (comb && slice) {
                uint64_t t = dsy_deadline_after(DSY_SCHED_DRAIN_POLL_NS);
                until = until && until < t ? until : t;
            }
            done = dsy_wait_word(&w.word, until) == DSY_W_DONE;
        }
        dsy_wait_leave(&edge);
        if (!done) {
            /* Timed out: leave the list; a token handed to us meanwhile
             * must be passed on. */
            bool removed = false;
            fut_lock(f);
            for (fwaiter **p = &f->waiters; *p; p = &(*p)->next)
                if (*p == &w) {
                    *p = w.next;
                    removed = true;
                    break;
                }
            fut_unlock(f);
            /* Not in the list: a completion took it and is about to write
             * DONE into `w`, which must outlive that write. */
            if (!removed)
                dsy_wait_word(&w.word, 0);
            uint32_t word = atomic_load_explicit(&w.word, memory_order_acquire);
            /* TOKEN on a queue-less future: a combined future's input has a
             * future_sync job for us to run (comb_wake): look again. */
            if (word == DSY_W_TOKEN && q)
                dsy_token_place(q, true);
            recheck = comb && ((word == DSY_W_TOKEN && !q) ||
                               (slice && word == DSY_W_WAITING &&
                                (!deadline || dsy_now_ns() < deadline)));
            done = word == DSY_W_DONE;
        }
        /* Unlisted (by fut_complete, or above): withdraw the marks. */
        atomic_store_explicit(&me->waiting, w.up, memory_order_release);
        if (q) {
            dsy_hold_pop(&h);
            dsy_queue_unref(q);
        }
        if (comb && recheck)
            continue;
        if (!done)
            return DESYNC_ETIMEDOUT;
        /* fut_complete has removed us from the list and set DONE. */
    }
}

/* A combined future: an all-future waits on its inputs first. */
static int comb_wait(desync_future_t *f, uint64_t deadline, void **value) {
    int rc = comb_wait_inputs(f->comb, deadline);
    return rc ? rc : fut_wait(f, deadline, value, true);
}

int desync_future_wait_for(desync_future_t *f, uint64_t timeout_ns, void **value) {
    if (!f)
        return DESYNC_EINVAL;
    uint64_t deadline = dsy_deadline_after(timeout_ns);
    if (DSY_UNLIKELY(f->comb != NULL))
        return comb_wait(f, deadline, value);
    return fut_wait(f, deadline, value, false);
}

int desync_future_wait(desync_future_t *f, void **value) {
    return desync_future_wait_for(f, UINT64_MAX, value);
}

int desync_future_poll(desync_future_t *f, void **value, const desync_waker_t *waker) {
    if (!f)
        return DESYNC_EINVAL;
    uint32_t parks = 0;
again:
    if (f->comb) {
        parks = comb_parks(f->comb);
        comb_drive(f->comb, false);
    }
    fut_look look = fut_lock_for_wait(f);
    if (look == FUT_FORKED)
        return DESYNC_EFORKED;
    if (look == FUT_COMPLETE) {
        fut_quiesce(f);
        return result(f, value);
    }
    if (f->comb && comb_parks(f->comb) != parks) {
        fut_unlock(f); /* an input parked a token after comb_drive: run it */
        goto again;
    }
    f->has_waker = waker != NULL;
    if (waker)
        f->waker = *waker;
    fut_unlock(f);
    fut_quiesce(f); /* no call of a waker this poll replaced is under way */
    return DESYNC_EAGAIN;
}

int desync_future_then(desync_future_t *f, desync_then_fn callback, void *arg) {
    if (!f || !callback)
        return DESYNC_EINVAL;
    if (fut_hook(f, callback, arg))
        return 0;
    fut_quiesce(f);
    callback(f->status, f->value, arg);
    fut_unref(f);
    return 0;
}

int desync_future_fd(desync_future_t *f) {
    if (!f)
        return DESYNC_EINVAL;
    fut_lock(f);
    int rc = 0;
    if (f->fd < 0) {
        int rfd, wfd;
        rc = dsy_event_fd_open(&rfd, &wfd);
        if (rc == 0) {
            f->fd = rfd;
            f->fd_write = wfd;
            if (fut_is_done(f))
                fd_signal(wfd >= 0 ? wfd : rfd);
        }
    }
    int fd = f->fd;
    fut_unlock(f);
    return rc ? rc : fd;
}

static void fut_drop_handle(desync_future_t *f, bool detach) {
    /* Complete, and nobody else holds it: no producer, no completion under
     * way (a completer holds a reference across its calls), no token parked
     * in it, nobody left to see the flags. */
    if (fut_is_done(f) && fut_sole_owner(f)) {
        fut_unref(f);
        return;
    }
    fut_lock(f);
    if (f->handle_gone) {
        /* Freed, detached or then'd already: a misuse, ignored while the
         * producer's reference keeps f alive. */
        fut_unlock(f);
        return;
    }
    desync_queue_t *parked = fut_handle_gone_locked(f, detach);
    fut_unlock(f);
    if (parked)
        dsy_token_place(parked, true);
    if (DSY_UNLIKELY(f->comb != NULL) && !detach)
        comb_unlist(f->comb); /* nobody will read the result */
    fut_quiesce(f);
    fut_unref(f);
}

void desync_future_detach(desync_future_t *f) {
    if (f)
        fut_drop_handle(f, true);
}

void desync_future_free(desync_future_t *f) {
    if (f)
        fut_drop_handle(f, false);
}

/* ------------------------------------------------------------ combinators
 *
 * future_all / future_any: a comb record produces the combined future `out`
 * from listeners on its inputs. The record holds a reference on each input
 * (so it may look at an input whenever it likes, even after the user freed
 * it), and `live` counts the listeners listed or being called, plus one
 * while the record is being made: while live > 0, the record holds out's
 * producer reference, and out's last reference frees the record (which
 * drops the inputs). Hence a listener called by an input's completion
 * always finds the record and out alive, whether out completed or was
 * freed meanwhile, and freeing out early (comb_unlist) only takes back the
 * listeners not yet taken by a completion.
 *
 * Who completes out: all: the input whose completion brings `remaining` to
 * 0 (acq_rel: it sees every status written before); any: the one whose CAS
 * sets `won`. Later completions only drop their listener.
 *
 * future_sync inputs run on whoever waits on out: a wait on all waits on
 * each input in turn (with its helping and deadlock checks), a wait on any
 * runs the jobs whose token is parked in an input (comb_drive), and a
 * parked token wakes out's waiters and poller to come and run it
 * (comb_notify_parked).
 */
typedef struct comb_in {
    desync_future_t *f;
    flistener l;
    int status; /* all: the input's status, written before `remaining` drops */
    bool listed;
} comb_in;

typedef struct comb {
    desync_future_t *out;
    bool any;
    size_t n;
    _Atomic size_t remaining; /* all: inputs not complete */
    _Atomic size_t won;       /* any: the index that completed out, SIZE_MAX before */
    _Atomic size_t live;      /* listeners listed or in a call, + 1 while creating */
    /* Tokens parked in inputs so far. Bumped before comb_wake takes out's
     * lock; a waiter or poller reads it before comb_drive and again under
     * out's lock before it lists itself: either it sees the bump, or
     * comb_wake finds it listed. */
    _Atomic uint32_t parks;
    comb_in in[];
} comb;

static uint32_t comb_parks(comb *c) {
    return atomic_load_explicit(&c->parks, memory_order_acquire);
}

static void comb_live_drop(comb *c) {
    if (atomic_fetch_sub_explicit(&c->live, 1, memory_order_acq_rel) == 1)
        fut_unref(c->out); /* the producer reference */
}

/* Input i completed with status (live > 0 keeps out alive). */
static void comb_input_result(comb *c, size_t i, int status) {
    if (c->any) {
        size_t none = SIZE_MAX;
        if (atomic_compare_exchange_strong_explicit(&c->won, &none, i, memory_order_acq_rel,
                                                    memory_order_relaxed))
            fut_complete(c->out, 0, (void *)(uintptr_t)i);
        return;
    }
    c->in[i].status = status;
    if (atomic_fetch_sub_explicit(&c->remaining, 1, memory_order_acq_rel) != 1)
        return;
    int st = 0;
    for (size_t j = 0; j < c->n && !st; j++)
        st = c->in[j].status;
    fut_complete(c->out, st, NULL);
}

static void comb_input_done(flistener *l, int status) {
    comb *c = l->c;
    comb_input_result(c, l->i, status);
    comb_live_drop(c);
}

/* A future_sync job of an input is due, its token parked in the input:
 * out's waiters (unlisted, word TOKEN: look again) and poller come to run
 * it. live > 0 (the caller's) keeps out alive. */
static void comb_wake(comb *c) {
    desync_future_t *out = c->out;
    if (!fut_lock_pending(out))
        return;
    fwaiter *w = out->waiters;
    out->waiters = NULL;
    desync_waker_t waker = out->waker;
    bool has_waker = out->has_waker && waker.wake;
    out->has_waker = false;
    if (has_waker)
        atomic_store_explicit(&out->waking, 1, memory_order_relaxed);
    fut_unlock(out);
    while (w) {
        fwaiter *next = w->next; /* read before the waiter may return */
        dsy_waiter_signal(&w->word, DSY_W_TOKEN);
        w = next;
    }
    if (has_waker)
        fut_call_waker(out, &waker, -1);
}

/* in is locked and has just parked a token: tells its combinators, after
 * unlocking in. A listener stays valid through the call by the live count
 * taken under in's lock; pnext is free, as one input parks one token at a
 * time. */
static void comb_notify_parked(desync_future_t *in) {
    flistener *chain = NULL;
    for (flistener *l = in->listeners; l; l = l->next) {
        atomic_fetch_add_explicit(&l->c->live, 1, memory_order_relaxed);
        l->pnext = chain;
        chain = l;
    }
    fut_unlock(in);
    while (chain) {
        flistener *next = chain->pnext;
        comb *c = chain->c;
        atomic_fetch_add_explicit(&c->parks, 1, memory_order_release);
        comb_wake(c);
        comb_live_drop(c);
        chain = next;
    }
}

/* out's handle is freed: take back the listeners no completion has taken. */
static void comb_unlist(comb *c) {
    for (size_t i = 0; i < c->n; i++) {
        if (!c->in[i].listed)
            continue;
        desync_future_t *in = c->in[i].f;
        bool removed = false;
        fut_lock(in);
        for (flistener **p = &in->listeners; *p; p = &(*p)->next)
            if (*p == &c->in[i].l) {
                *p = c->in[i].l.next;
                removed = true;
                break;
            }
        fut_unlock(in);
        if (removed)
            comb_live_drop(c); /* not the last reference: the handle's is held */
    }
}

/* out's memory goes: drop the inputs. */
static void comb_destroy(comb *c) {
    for (size_t i = 0; i < c->n; i++)
        fut_unref(c->in[i].f);
    free(c);
}

/* Before a wait (`wait`) or poll of out: runs the future_sync jobs due in
 * inputs. Before a wait on any, also runs the ready work of the inputs'
 * queues that no thread runs (as a wait on the input would), and returns
 * DRIVE_SLICE if a pending input's queue is on a scheduler with no threads
 * (work that becomes ready there later would wake nobody, so the wait
 * sleeps in slices of DSY_SCHED_DRAIN_POLL_NS and drives again, as drain
 * polls), DRIVE_STUCK if every pending input belongs to a queue whose job
 * this thread is running (its node is behind that job: it could never run). */
static unsigned comb_drive(comb *c, bool wait) {
    unsigned r = 0;
    bool free_pending = false, stuck = false;
    for (size_t i = 0; i < c->n && !fut_is_done(c->out); i++) {
        desync_future_t *in = c->in[i].f;
        if (!in->q) { /* set before in was returned; constant */
            free_pending = free_pending || !fut_is_done(in);
            continue;
        }
        if (fut_lock_for_wait(in) != FUT_PENDING)
            continue;
        desync_queue_t *q = in->q;
        bool held = dsy_queue_in_chain(q);
        stuck = stuck || held;
        free_pending = free_pending || !held;
        bool help = wait && c->any && !held;
        if (help)
            dsy_queue_ref(q);
        fut_unlock(in);
        if (!help)
            continue;
        /* A batch per call, and nothing when the queue is not waiting for
         * a runner: a few calls reach in's node behind a short backlog. */
        for (int k = 0; k < 64 && !fut_is_done(in); k++)
            dsy_queue_help(q);
        if (!fut_is_done(in) && desync_scheduler_max_threads(dsy_queue_sched(q)) == 0)
            r |= DRIVE_SLICE;
        dsy_queue_unref(q);
    }
    if (wait && c->any && stuck && !free_pending && !fut_is_done(c->out))
        r |= DRIVE_STUCK;
    return r;
}

/* A wait on all: waits on each input in turn (a future_sync input runs
 * here, a queue nobody runs is run here, a cycle is refused), so that out
 * is complete (or about to be: its last listener is being called) after.
 * 0, or the wait's error (ETIMEDOUT, EDEADLK, EFORKED) for an input still
 * pending. */
static int comb_wait_inputs(comb *c, uint64_t deadline) {
    if (c->any)
        return 0;
    for (size_t i = 0; i < c->n; i++) {
        desync_future_t *in = c->in[i].f;
        if (fut_is_done(in))
            continue;
        uint64_t t = UINT64_MAX;
        if (deadline) {
            uint64_t now = dsy_now_ns();
            t = now < deadline ? deadline - now : 0;
        }
        int rc = desync_future_wait_for(in, t, NULL);
        if (rc != 0 && !fut_is_done(in))
            return rc;
    }
    return 0;
}

static desync_future_t *comb_new(desync_future_t *const fs[], size_t n, bool any) {
    if (!fs || !n || n > (SIZE_MAX - sizeof(comb)) / sizeof(comb_in))
        return NULL;
    for (size_t i = 0; i < n; i++)
        if (!fs[i])
            return NULL;
    comb *c = malloc(sizeof *c + n * sizeof(comb_in));
    desync_future_t *out = c ? fut_new(2) : NULL;
    if (!out) {
        free(c);
        return NULL;
    }
    out->comb = c;
    c->out = out;
    c->any = any;
    c->n = n;
    atomic_init(&c->remaining, n);
    atomic_init(&c->won, SIZE_MAX);
    atomic_init(&c->live, 1);
    atomic_init(&c->parks, 0);
    for (size_t i = 0; i < n; i++) {
        desync_future_t *in = fs[i];
        comb_in *ci = &c->in[i];
        dsy_ref_inc(&in->refs);
        ci->f = in;
        ci->status = 0;
        ci->l.c = c;
        ci->l.i = i;
        ci->l.pnext = NULL;
        ci->listed = fut_lock_pending(in);
        if (ci->listed) {
            atomic_fetch_add_explicit(&c->live, 1, memory_order_relaxed);
            ci->l.next = in->listeners;
            in->listeners = &ci->l;
            fut_unlock(in);
        } else {
            comb_input_result(c, i, in->status);
        }
    }
    comb_live_drop(c); /* the creation's */
    return out;
}

desync_future_t *desync_future_all(desync_future_t *const fs[], size_t n) {
    return comb_new(fs, n, false);
}

desync_future_t *desync_future_any(desync_future_t *const fs[], size_t n) {
    return comb_new(fs, n, true);
}

/* ------------------------------------------------------------------ fork */

/* Child: t vanished; its fwaiters, still listed, are unlisted (a completion
 * would write into a stack that a new thread may be using). */
void dsy_future_fork_vanished(dsy_thread *t) {
    for (fwaiter *w = atomic_load_explicit(&t->waiting, memory_order_acquire); w; w = w->up)
        for (fwaiter **p = &w->f->waiters; *p; p = &(*p)->next)
            if (*p == w) {
                *p = w->next;
                break;
            }
}
