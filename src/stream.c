/*
 * Streams: the reader calls shared by every kind of stream, user streams,
 * array streams, and the building blocks of stream_internal.h.
 *
 * Every stream is a desync_stream_t header with an internal vtable whose one
 * essential call is poll(s, &item, waker): 0 with an item, DESYNC_EOF, or
 * DESYNC_EAGAIN after storing the waker. Every reader call is built on it:
 *   try_next   poll without a waker.
 *   next(_for) spin briefly on the stream's cheap `ready` hint when it has one
 *              (pipe outputs: no waker traffic at all while the reader keeps
 *              up), then poll with the stream's own dsy_swaiter as waker and
 *              wait on it (spin, then futex). Never a busy loop: the sleep
 *              ends only when the stream wakes us or the deadline passes.
 *   next_future  a promise completed by a "step" (poll with a waker whose
 *              ctx is the stream itself); the waker runs the next step. Steps
 *              are serialised by a tiny run flag (a wake that arrives during
 *              a step makes that step poll again). For user streams the wake
 *              only queues the step as a job (their wakes may come with their
 *              own locks held, so polling inline could deadlock).
 * The blocking waiter and the next_future state live in the header, so a
 * stream that calls an old waker late finds valid memory.
 *
 * Wake lifetimes: a stream stores its reader's waker in a dsy_wslot. Firing
 * copies the waker, clears the slot and calls it outside any lock, counting
 * the call in `inflight`. A stream's free quiesces its slot: later fires do
 * nothing and free waits (yielding) until calls of other threads returned,
 * so whoever gave the waker may free its ctx right after freeing the stream.
 * A call on the freeing thread's own stack (a wake that frees the stream it
 * came from) is not waited for: a thread-local list of fire frames says so.
 */
#include "stream_internal.h"

#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------ waker slot */

#define WS_SET 1u
#define WS_LOCK 2u
#define WS_DEAD 4u

typedef struct fire_frame {
    const dsy_wslot *slot;
    struct fire_frame *up;
} fire_frame;

/* Wake calls this thread is inside of, innermost first. */
static DSY_TLS fire_frame *tls_fires;

void dsy_wslot_init(dsy_wslot *s) {
    atomic_init(&s->st, 0);
    atomic_init(&s->inflight, 0);
    s->w.wake = NULL;
    s->w.ctx = NULL;
}

/* Takes the slot's little lock (held for a few instructions only); false if
 * the slot is dead. */
static bool ws_lock(dsy_wslot *s) {
    for (unsigned b = 0;; dsy_backoff(&b)) {
        uint32_t st = atomic_load_explicit(&s->st, memory_order_relaxed);
        if (st & WS_DEAD)
            return false;
        if (!(st & WS_LOCK) &&
            atomic_compare_exchange_weak_explicit(&s->st, &st, WS_LOCK, memory_order_acquire,
                                                  memory_order_relaxed))
            return true;
    }
}

void dsy_wslot_set(dsy_wslot *s, const desync_waker_t *w) {
    if (!ws_lock(s))
        return;
    bool set = w && w->wake;
    if (set)
        s->w = *w;
    atomic_store_explicit(&s->st, set ? WS_SET : 0u, memory_order_seq_cst);
}

void dsy_wslot_clear(dsy_wslot *s) {
    if (atomic_load_explicit(&s->st, memory_order_relaxed) & WS_SET)
        dsy_wslot_set(s, NULL);
}

void dsy_wslot_fire(dsy_wslot *s) {
    uint32_t st = atomic_load_explicit(&s->st, memory_order_seq_cst);
    for (;;) {
        /* Not set, or someone is setting/clearing/firing it: a setter checks
         * its condition again after setting, a firer calls it. */
        if (st != WS_SET)
            return;
        if (atomic_compare_exchange_weak_explicit(&s->st, &st, WS_LOCK, memory_order_acquire,
                                                  memory_order_relaxed))
            break;
    }
    desync_waker_t w = s->w;
    atomic_fetch_add_explicit(&s->inflight, 1, memory_order_relaxed);
    atomic_store_explicit(&s->st, 0u, memory_order_release);
    fire_frame f = {s, tls_fires};
    tls_fires = &f;
    w.wake(w.ctx);
    tls_fires = f.up;
    atomic_fetch_sub_explicit(&s->inflight, 1, memory_order_release);
}

void dsy_wslot_quiesce(dsy_wslot *s) {
    for (unsigned b = 0;; dsy_backoff(&b)) {
        uint32_t st = atomic_load_explicit(&s->st, memory_order_relaxed);
        if (st & WS_DEAD)
            break;
        if (!(st & WS_LOCK) &&
            atomic_compare_exchange_weak_explicit(&s->st, &st, WS_LOCK | WS_DEAD,
                                                  memory_order_acquire, memory_order_relaxed))
            break;
    }
    uint32_t mine = 0;
    for (fire_frame *f = tls_fires; f; f = f->up)
        if (f->slot == s)
            mine++;
    /* Bounded by the wake calls already running on other threads. */
    for (unsigned b = 0; atomic_load_explicit(&s->inflight, memory_order_acquire) > mine;)
        dsy_backoff(&b);
}

/* ------------------------------------------------------------ SPSC FIFO */

/* Spare segments for up to `reserve` items: when a push needs a new
 * segment with m items queued, at most m / DSY_SEG_N + 1 segments are in
 * the chain (the head one may be fully read but not yet handed back), so
 * (reserve - 1) / DSY_SEG_N + 1 spares always leave one for it. */
static size_t spares_for(size_t reserve) { return reserve ? (reserve - 1) / DSY_SEG_N + 1 : 0; }

static void spare_push(dsy_spsc *q, dsy_seg *s) {
    dsy_seg *top = atomic_load_explicit(&q->spares, memory_order_relaxed);
    do
        atomic_store_explicit(&s->next, top, memory_order_relaxed);
    while (!atomic_compare_exchange_weak_explicit(&q->spares, &top, s, memory_order_release,
                                                  memory_order_relaxed));
    atomic_fetch_add_explicit(&q->nspares, 1, memory_order_relaxed);
}

/* Producer only. */
static dsy_seg *spare_pop(dsy_spsc *q) {
    dsy_seg *top = atomic_load_explicit(&q->spares, memory_order_acquire);
    while (top && !atomic_compare_exchange_weak_explicit(
                      &q->spares, &top, atomic_load_explicit(&top->next, memory_order_relaxed),
                      memory_order_acquire, memory_order_acquire)) {
    }
    if (top)
        atomic_fetch_sub_explicit(&q->nspares, 1, memory_order_relaxed);
    return top;
}

static void free_segs(dsy_seg *s) {
    while (s) {
        dsy_seg *n = atomic_load_explicit(&s->next, memory_order_relaxed);
        free(s);
        s = n;
    }
}

int dsy_spsc_init(dsy_spsc *q, size_t reserve) {
    size_t keep = spares_for(reserve);
    atomic_init(&q->spares, NULL);
    atomic_init(&q->nspares, 0);
    atomic_init(&q->keep, keep);
    dsy_seg *s = malloc(sizeof *s);
    for (size_t i = 0; s && i < keep; i++) {
        dsy_seg *x = malloc(sizeof *x);
        if (!x) {
            free(s);
            s = NULL;
            break;
        }
        spare_push(q, x);
    }
    if (!s) {
        free_segs(atomic_load_explicit(&q->spares, memory_order_relaxed));
        return DESYNC_ENOMEM;
    }
    atomic_init(&s->next, NULL);
    q->tail = q->head = s;
    q->ti = q->hi = 0;
    q->seen = 0;
    atomic_init(&q->pushed, 0);
    atomic_init(&q->popped, 0);
    return 0;
}

void dsy_spsc_set_reserve(dsy_spsc *q, size_t reserve) {
    atomic_store_explicit(&q->keep, spares_for(reserve), memory_order_relaxed);
}

void dsy_spsc_destroy(dsy_spsc *q, void (*item_free)(void *)) {
    void *v;
    while (dsy_spsc_pop(q, &v))
        if (item_free)
            item_free(v);
    free_segs(q->head);
    free_segs(atomic_load_explicit(&q->spares, memory_order_acquire));
    q->head = q->tail = NULL;
}

int dsy_spsc_grow(dsy_spsc *q) {
    dsy_seg *n = spare_pop(q);
    if (!n && !(n = malloc(sizeof *n)))
        return DESYNC_ENOMEM;
    atomic_store_explicit(&n->next, NULL, memory_order_relaxed);
    atomic_store_explicit(&q->tail->next, n, memory_order_release);
    q->tail = n;
    q->ti = 0;
    return 0;
}

void dsy_spsc_advance(dsy_spsc *q) {
    dsy_seg *old = q->head;
    q->head = atomic_load_explicit(&old->next, memory_order_acquire);
    q->hi = 0;
    /* Keep it for the producer, up to the reserve; free the surplus. */
    if (atomic_load_explicit(&q->nspares, memory_order_relaxed) <
        atomic_load_explicit(&q->keep, memory_order_relaxed))
        spare_push(q, old);
    else
        free(old);
}

size_t dsy_spsc_pop_n(dsy_spsc *q, void **v, size_t max) {
    size_t c = atomic_load_explicit(&q->popped, memory_order_relaxed);
    if (q->seen - c < max)
        q->seen = atomic_load_explicit(&q->pushed, memory_order_acquire);
    size_t n = q->seen - c < max ? q->seen - c : max;
    for (size_t i = 0; i < n; i++)
        v[i] = dsy_spsc_next(q);
    if (n)
        atomic_store_explicit(&q->popped, c + n, memory_order_release);
    return n;
}

size_t dsy_spsc_count(dsy_spsc *q) {
    size_t out = atomic_load_explicit(&q->popped, memory_order_seq_cst);
    size_t in = atomic_load_explicit(&q->pushed, memory_order_seq_cst);
    return in - out;
}

/* ---------------------------------------------------------------- header */

void dsy_stream_init(desync_stream_t *s, const dsy_stream_vt *vt) {
    s->vt = vt;
    s->item_free = NULL;
    atomic_init(&s->waiter.st, DSY_SW_IDLE);
    atomic_init(&s->nf_run, 0);
    atomic_init(&s->nf_promise, NULL);
    s->nf_queue = NULL;
    s->ops = NULL;
    s->self = NULL;
    dsy_ref_init(&s->refs, 1);
}

/* ---------------------------------------------------------- user streams */

/* A user stream: the header, and the job that polls it for next_future
 * when it wakes us (nf_wake), part of it so that a wake needs no memory. */
typedef struct user_stream {
    desync_stream_t s;
    dsy_kick nf_kick; /* on s.nf_queue, once that exists */
} user_stream;

static void user_unref(desync_stream_t *s) {
    if (!dsy_ref_dec(&s->refs))
        return;
    if (s->nf_queue)
        desync_queue_release(s->nf_queue);
    dsy_handle_free(s, sizeof *s);
}

static int user_poll(desync_stream_t *s, void **item, const desync_waker_t *w) {
    return s->ops->poll_next(s->self, item, w);
}

static void user_free(desync_stream_t *s) {
    if (s->ops->free)
        s->ops->free(s->self);
    user_unref(s);
}

static const dsy_stream_vt user_vt = {user_poll, user_free, NULL, NULL, NULL, false};

desync_stream_t *desync_stream_new(const desync_stream_ops_t *ops, void *self) {
    if (!ops || !ops->poll_next)
        return NULL;
    user_stream *u = malloc(sizeof *u);
    if (!u)
        return NULL;
    desync_stream_t *s = &u->s;
    dsy_stream_init(s, &user_vt);
    s->ops = ops;
    s->self = self;
    return s;
}

/* --------------------------------------------------------- array streams */

typedef struct arr_stream {
    desync_stream_t s;
    size_t i, n;
    void *items[];
} arr_stream;

static int arr_poll(desync_stream_t *s, void **item, const desync_waker_t *w) {
    (void)w;
    arr_stream *a = (arr_stream *)s;
    if (a->i == a->n)
        return DESYNC_EOF;
    *item = a->items[a->i++];
    return 0;
}

static bool arr_ready(desync_stream_t *s) {
    (void)s;
    return true;
}

static void arr_free(desync_stream_t *s) {
    arr_stream *a = (arr_stream *)s;
    if (s->item_free)
        for (size_t i = a->i; i < a->n; i++)
            s->item_free(a->items[i]);
    dsy_handle_free(a, sizeof *a + a->n * sizeof(void *));
}

static const dsy_stream_vt arr_vt = {arr_poll, arr_free, arr_ready, NULL, NULL, true};

desync_stream_t *desync_stream_from_array(void *const *items, size_t count) {
    if (!items && count)
        return NULL;
    if (count > (SIZE_MAX - sizeof(arr_stream)) / sizeof(void *))
        return NULL;
    arr_stream *a = malloc(sizeof *a + count * sizeof(void *));
    if (!a)
        return NULL;
    dsy_stream_init(&a->s, &arr_vt);
    a->i = 0;
    a->n = count;
    if (count)
        memcpy(a->items, items, count * sizeof(void *));
    return &a->s;
}

/* --------------------------------------------------------------- reading */

DSY_TLS desync_stream_t *dsy_tls_blocking_reader;

static int blocking_poll(desync_stream_t *s, void **item, const desync_waker_t *w) {
    desync_stream_t *saved = dsy_tls_blocking_reader;
    dsy_tls_blocking_reader = s;
    int r = dsy_stream_poll(s, item, w);
    dsy_tls_blocking_reader = saved;
    return r;
}

int desync_stream_poll_next(desync_stream_t *s, void **item, const desync_waker_t *waker) {
    if (!s || !item)
        return DESYNC_EINVAL;
    return dsy_stream_poll(s, item, waker);
}

int desync_stream_try_next(desync_stream_t *s, void **item) {
    if (!s || !item)
        return DESYNC_EINVAL;
    return dsy_stream_poll(s, item, NULL);
}

static int next_until(desync_stream_t *s, uint64_t deadline, void **item) {
    if (!s || !item)
        return DESYNC_EINVAL;
    const desync_waker_t w = {dsy_swaiter_wake, &s->waiter};
    bool (*ready)(desync_stream_t *) = s->vt->ready;
    for (;;) {
        int r;
        if (ready) {
            /* Fast path while the producer keeps up: poll, and spin on the
             * cheap hint before falling back to a waker. */
            r = blocking_poll(s, item, NULL);
            if (r != DESYNC_EAGAIN)
                return r;
            dsy_spin sp = dsy_spin_for(DSY_READER_SPIN_NS, deadline);
            while (!ready(s) && dsy_spin_round(&sp)) {
            }
        }
        dsy_swaiter_reset(&s->waiter);
        r = blocking_poll(s, item, &w);
        if (r != DESYNC_EAGAIN)
            return r;
        /* The waker is set: work run here that produces an item fires it,
         * and the wait below returns at once. */
        if (s->vt->help)
            s->vt->help(s);
        if (!dsy_swaiter_wait(&s->waiter, deadline)) {
            /* Last look, so an item that arrived at the deadline is not
             * reported as a timeout. */
            r = dsy_stream_poll(s, item, NULL);
            return r == DESYNC_EAGAIN ? DESYNC_ETIMEDOUT : r;
        }
    }
}

int desync_stream_next(desync_stream_t *s, void **item) { return next_until(s, 0, item); }

int desync_stream_next_for(desync_stream_t *s, uint64_t timeout_ns, void **item) {
    return next_until(s, dsy_deadline_after(timeout_ns), item);
}

/* ----------------------------------------------------------- next_future */

static void nf_wake(void *ctx);

static bool nf_enter(desync_stream_t *s) {
    uint32_t st = atomic_load_explicit(&s->nf_run, memory_order_relaxed);
    for (;;) {
        if (st == 0) {
            if (atomic_compare_exchange_weak_explicit(&s->nf_run, &st, 1, memory_order_acquire,
                                                      memory_order_relaxed))
                return true;
        } else if (st == 3) {
            return false;
        } else if (atomic_compare_exchange_weak_explicit(&s->nf_run, &st, 3, memory_order_release,
                                                         memory_order_relaxed)) {
            return false;
        }
    }
}

/* True if a wake came during the step: run it again. */
static bool nf_leave(desync_stream_t *s) {
    uint32_t st = 1;
    if (atomic_compare_exchange_strong_explicit(&s->nf_run, &st, 0, memory_order_release,
                                                memory_order_acquire))
        return false;
    atomic_store_explicit(&s->nf_run, 1, memory_order_relaxed);
    return true;
}

static void nf_complete(desync_promise_t *p, int r, void *item) {
    if (r == 0)
        desync_promise_complete(p, item);
    else if (r == DESYNC_EOF || r == DESYNC_ENOMEM) /* ENOMEM: a failed pipe's output */
        dsy_promise_complete_status(p, r, NULL);
    else
        desync_promise_cancel(p);
}

static void nf_step(desync_stream_t *s) {
    if (!nf_enter(s))
        return;
    const desync_waker_t w = {nf_wake, s};
    for (;;) {
        /* No promise: a late wake after completion (the stream may only be
         * freed once the future completed, so s is still valid here). */
        if (atomic_load_explicit(&s->nf_promise, memory_order_acquire)) {
            void *item = NULL;
            int r = dsy_stream_poll(s, &item, &w);
            if (r != DESYNC_EAGAIN) {
                desync_promise_t *p =
                    atomic_exchange_explicit(&s->nf_promise, NULL, memory_order_acq_rel);
                atomic_store_explicit(&s->nf_run, 0, memory_order_release);
                /* The reader may free s as soon as p completes. */
                nf_complete(p, r, item);
                return;
            }
        }
        if (!nf_leave(s))
            return;
    }
}

static void nf_kick_run(dsy_kick *k) { nf_step(&DSY_CONTAINER_OF(k, user_stream, nf_kick)->s); }

static void nf_kick_done(dsy_kick *k) { user_unref(&DSY_CONTAINER_OF(k, user_stream, nf_kick)->s); }

static void nf_wake(void *ctx) {
    desync_stream_t *s = ctx;
    if (s->vt->inline_wake) {
        nf_step(s);
        return;
    }
    /* A user stream may wake us with its own lock held: poll from a job on
     * nf_queue (the stream's embedded kick: no memory needed). */
    if (!atomic_load_explicit(&s->nf_promise, memory_order_acquire))
        return;
    user_stream *u = DSY_CONTAINER_OF(s, user_stream, s);
    if (dsy_kick_arm(&u->nf_kick)) {
        dsy_ref_inc(&s->refs); /* the kick's, dropped by nf_kick_done */
        dsy_kick_push(&u->nf_kick);
    }
}

desync_future_t *desync_stream_next_future(desync_stream_t *s) {
    if (!s)
        return NULL;
    if (!s->vt->inline_wake && !s->nf_queue) {
        if (!(s->nf_queue = desync_queue_new(NULL)))
            return NULL;
        dsy_kick_init(&DSY_CONTAINER_OF(s, user_stream, s)->nf_kick, s->nf_queue, nf_kick_run,
                      nf_kick_done);
    }
    desync_future_t *f = NULL;
    desync_promise_t *p = desync_promise_new(&f);
    if (!p)
        return NULL;
    atomic_store_explicit(&s->nf_promise, p, memory_order_release);
    nf_step(s);
    return f;
}

/* ------------------------------------------------------------ the rest */

void desync_stream_set_item_free(desync_stream_t *s, void (*item_free)(void *item)) {
    if (s)
        s->item_free = item_free;
}

void desync_stream_free(desync_stream_t *s) {
    if (s)
        s->vt->free(s);
}
