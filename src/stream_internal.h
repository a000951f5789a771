/*
 * Internals shared by stream.c, channel.c and pipe.c (nothing here is
 * exported; every non-static name has the dsy_ prefix).
 *
 * Building blocks:
 *   dsy_swaiter  one thread waits (spin briefly, then sleep on a futex), any
 *                thread wakes it; usable directly as a waker.
 *   dsy_wslot    holds the one waker a stream was last polled with. Firing it
 *                is one load when nobody waits; quiesce (at free) waits until
 *                no other thread is still inside a wake call from this slot,
 *                so a waker's ctx may be freed once the stream is.
 *   dsy_spsc     unbounded single-producer/single-consumer FIFO of pointers
 *                in linked 32-slot segments; consumed segments are kept as
 *                spares, enough that a queue whose length stays within its
 *                reserve never allocates after init (dsy_spsc_init).
 *   desync_stream_t  a small header with an internal vtable; channel
 *                receivers and pipe outputs embed it.
 */
#ifndef DSY_STREAM_INTERNAL_H
#define DSY_STREAM_INTERNAL_H

#include "internal.h"

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* ------------------------------------------------------------ waiter */

/* One waiting thread, woken by anyone: the queue's waiter word protocol
 * (dsy_wait_word / dsy_waiter_signal in queue.c) with DONE as "signalled". */
typedef struct dsy_swaiter {
    _Atomic uint32_t st; /* DSY_W_WAITING, DSY_W_DONE or DSY_W_SLEEPING */
} dsy_swaiter;

#define DSY_SW_IDLE DSY_W_WAITING

static inline void dsy_swaiter_reset(dsy_swaiter *w) {
    atomic_store_explicit(&w->st, DSY_W_WAITING, memory_order_relaxed);
}

/* A desync_waker_t function: ctx is the dsy_swaiter. */
static inline void dsy_swaiter_wake(void *ctx) {
    dsy_waiter_signal(&((dsy_swaiter *)ctx)->st, DSY_W_DONE);
}

/* Spins briefly, then sleeps until woken; deadline is absolute
 * (dsy_now_ns), 0 = none. False if the deadline passed first. */
static inline bool dsy_swaiter_wait(dsy_swaiter *w, uint64_t deadline) {
    return dsy_wait_word(&w->st, deadline) == DSY_W_DONE;
}

/* ------------------------------------------------------------ waker slot */

typedef struct dsy_wslot {
    _Atomic uint32_t st;       /* DSY_WS_* bits */
    _Atomic uint32_t inflight; /* wake calls running outside the slot */
    desync_waker_t w;
} dsy_wslot;

void dsy_wslot_init(dsy_wslot *s);
/* Stores w (NULL or w->wake NULL clears). seq_cst: a producer that publishes
 * an item and then fires sees either this waker or nothing to wake. */
void dsy_wslot_set(dsy_wslot *s, const desync_waker_t *w);
void dsy_wslot_clear(dsy_wslot *s);
/* Calls the stored waker once (and forgets it); nothing if none. */
void dsy_wslot_fire(dsy_wslot *s);
/* Forgets the waker for good and waits for wake calls of other threads to
 * return (calls on this thread's stack are its own business). */
void dsy_wslot_quiesce(dsy_wslot *s);

/* ------------------------------------------------------------ SPSC FIFO */

#define DSY_SEG_N 32

typedef struct dsy_seg {
    _Atomic(struct dsy_seg *) next;
    void *v[DSY_SEG_N];
} dsy_seg;

typedef struct dsy_spsc {
    /* producer side */
    dsy_seg *tail;
    size_t ti;
    _Atomic size_t pushed;
    char pad_[64];
    /* consumer side */
    dsy_seg *head;
    size_t hi;
    size_t seen; /* last value of pushed the consumer loaded */
    _Atomic size_t popped;
    /* Spare segments: a stack that the consumer pushes consumed segments
     * onto and only the producer pops (so no ABA), linked through `next`. */
    _Atomic(dsy_seg *) spares;
    _Atomic size_t nspares;
    _Atomic size_t keep; /* the consumer frees segments beyond this many spares */
} dsy_spsc;

/* An empty queue holding up to `reserve` items without allocating: the
 * segments they can need are allocated now (reserve 0: one segment, and
 * pushes allocate the next ones). 0 or DESYNC_ENOMEM (nothing allocated). */
int dsy_spsc_init(dsy_spsc *q, size_t reserve);
/* Changes the reserve: spares are kept for up to `reserve` items from now
 * on (segments missing are allocated by the pushes that need them). */
void dsy_spsc_set_reserve(dsy_spsc *q, size_t reserve);
/* Frees the segments; items still queued go to item_free (if not NULL). */
void dsy_spsc_destroy(dsy_spsc *q, void (*item_free)(void *));
/* Producer: appends a segment (from the spares, else malloc'd) when the
 * tail one is full. 0 or DESYNC_ENOMEM. */
int dsy_spsc_grow(dsy_spsc *q);
/* Consumer: moves past the head segment, fully read (to the spares, or
 * freed beyond the reserve). */
void dsy_spsc_advance(dsy_spsc *q);

/* The fast paths are inline: a pipe's item costs a push and a pop, each a
 * few instructions when they stay in their segment. */

/* 0, or DESYNC_ENOMEM (item not queued; never while the queue holds
 * fewer items than its reserve). The count store is seq_cst when sc (a
 * consumer may be setting a waker and then re-checking), else release. */
static inline int dsy_spsc_push(dsy_spsc *q, void *v, bool sc) {
    if (DSY_UNLIKELY(q->ti == DSY_SEG_N) && dsy_spsc_grow(q) != 0)
        return DESYNC_ENOMEM;
    q->tail->v[q->ti++] = v;
    size_t c = atomic_load_explicit(&q->pushed, memory_order_relaxed);
    /* Two constant orders: compilers treat a variable order as seq_cst. */
    if (sc)
        atomic_store_explicit(&q->pushed, c + 1, memory_order_seq_cst);
    else
        atomic_store_explicit(&q->pushed, c + 1, memory_order_release);
    return 0;
}

/* Consumer: the next item, which is known to be there. */
static inline void *dsy_spsc_next(dsy_spsc *q) {
    if (DSY_UNLIKELY(q->hi == DSY_SEG_N))
        dsy_spsc_advance(q);
    return q->head->v[q->hi++];
}

/* true with *v set, false when empty. The count store is a release: a
 * consumer that must publish the take before reading a flag (Dekker) calls
 * dsy_spsc_publish, when dsy_spsc_known says it may be needed. */
static inline bool dsy_spsc_pop(dsy_spsc *q, void **v) {
    size_t c = atomic_load_explicit(&q->popped, memory_order_relaxed);
    if (q->seen == c) {
        q->seen = atomic_load_explicit(&q->pushed, memory_order_acquire);
        if (q->seen == c)
            return false;
    }
    *v = dsy_spsc_next(q);
    atomic_store_explicit(&q->popped, c + 1, memory_order_release);
    return true;
}

/* Consumer only: stores the count again, seq_cst (the one writer, so the
 * value is unchanged), for a flag read next to be ordered after the takes. */
static inline void dsy_spsc_publish(dsy_spsc *q) {
    atomic_store_explicit(&q->popped, atomic_load_explicit(&q->popped, memory_order_relaxed),
                          memory_order_seq_cst);
}

/* Consumer only: a lower bound on the count. Items the consumer already
 * knows of; if not more than `enough`, it reads the producer's count again
 * (a shared line, so only when the answer matters). */
static inline size_t dsy_spsc_known(dsy_spsc *q, size_t enough) {
    size_t c = atomic_load_explicit(&q->popped, memory_order_relaxed);
    if (q->seen - c <= enough)
        q->seen = atomic_load_explicit(&q->pushed, memory_order_acquire);
    return q->seen - c;
}

/* Pops up to max items into v (oldest first) with one count store
 * (a release, as in dsy_spsc_pop); returns how many. */
size_t dsy_spsc_pop_n(dsy_spsc *q, void **v, size_t max);
/* Items queued, seen from any thread (never less than the true count). */
size_t dsy_spsc_count(dsy_spsc *q);

/* ------------------------------------------------------------ streams */

typedef struct dsy_stream_vt {
    int (*poll)(desync_stream_t *s, void **item, const desync_waker_t *w);
    /* Frees the source (buffered items go to s->item_free) and s. */
    void (*free)(desync_stream_t *s);
    /* Optional cheap hint: a poll would not return EAGAIN now. Lets a
     * blocking reader spin without registering a waker per item. */
    bool (*ready)(desync_stream_t *s);
    /* Optional: a blocked reader about to sleep calls it to run, on its own
     * thread, work that would produce the next item and that no thread runs
     * (a pipe's jobs on a scheduler with 0 threads, or whose threads are all
     * busy). */
    void (*help)(desync_stream_t *s);
    /* Optional: takes up to max items the stream holds already, at once
     * (one lock or one count update for all); never waits, never reports
     * the end, leaves the waker alone. dsy_stream_poll_n uses it. */
    size_t (*take)(desync_stream_t *s, void **items, size_t max);
    /* Its wakers are never called with a lock of the stream held, and its
     * free waits for wake calls in flight: a waker may poll it again on the
     * waking thread. False for user streams (their wakes are trampolined
     * through a queue job). */
    bool inline_wake;
} dsy_stream_vt;

struct desync_stream {
    const dsy_stream_vt *vt;
    void (*item_free)(void *item);
    dsy_swaiter waiter; /* blocking next's waker (one reader at a time) */
    /* desync_stream_next_future: at most one in flight per stream. */
    _Atomic uint32_t nf_run; /* serialises nf steps: 0 idle, 1 running, 3 again */
    _Atomic(desync_promise_t *) nf_promise;
    desync_queue_t *nf_queue; /* user streams: trampoline for wakes */
    /* User streams only: ops/self, and refs (handle + trampoline jobs). */
    const desync_stream_ops_t *ops;
    void *self;
    dsy_refcount refs;
};

void dsy_stream_init(desync_stream_t *s, const dsy_stream_vt *vt);

/* The stream this thread is blocked reading in desync_stream_next(_for)
 * (NULL elsewhere): a pipe pumped for it may run its batch on this thread. */
extern DSY_TLS desync_stream_t *dsy_tls_blocking_reader;

static inline int dsy_stream_poll(desync_stream_t *s, void **item, const desync_waker_t *w) {
    return s->vt->poll(s, item, w);
}

/* Polls up to max items into items[] (take first, then poll one by one);
 * returns how many. *r is 0 if it stopped at max, else the result of the
 * poll that found no item (EAGAIN with w stored, the end, an error). */
static inline size_t dsy_stream_poll_n(desync_stream_t *s, void **items, size_t max,
                                       const desync_waker_t *w, int *r) {
    size_t n = s->vt->take && max > 1 ? s->vt->take(s, items, max) : 0;
    *r = 0;
    while (n < max && (*r = dsy_stream_poll(s, &items[n], w)) == 0)
        n++;
    return n;
}

#endif
