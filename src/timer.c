/*
 * Timers: desync_timer_start, desync_queue_timer_start, desync_timer_cancel
 * and desync_future_delay.
 *
 * No thread of their own. Each scheduler that ever had a timer has one
 * dsy_timers: a binary min-heap of pending timers keyed by (deadline, start
 * sequence), so equal deadlines fire in start order. The scheduler's threads
 * drive it (scheduler.c): a worker looks for due timers each time it looks
 * for work, and one idle worker at a time (the "timer waiter") parks with a
 * timeout until the earliest deadline instead of parking for good; a start
 * that makes a new earliest deadline wakes it (dsy_sched_timer_kick). On a
 * scheduler with 0 threads (or a freed one) the threads that sync on its
 * queues or drain it fire the timers that are due (dsy_timers_on_sync,
 * drain_quiet).
 *
 * HEAP. heap[0..len) under `lock`; heap[i] is not later than heap[2i+1] and
 * heap[2i+2] in (deadline, seq) order; each timer in the heap knows its
 * index (heap_idx; TIMER_NONE when not in the heap), so cancel removes it in
 * O(log n). An entry is 16 bytes (deadline and timer: the tie-break on seq
 * reads the timer). `next` mirrors heap[0]'s deadline (UINT64_MAX when
 * empty), written under the lock, read without it (relaxed: a stale value
 * only makes a worker look once more, or sleep until a deadline that a
 * kick, which takes the scheduler's lock after the store, moves earlier).
 *
 * FIRING. A due periodic timer gets its next deadline (fixed rate: the
 * start plus a whole number of periods; the periods missed meanwhile are
 * skipped) and stays in the heap; a one-shot timer leaves it. Its job is
 * queued through the timer's embedded dsy_kick node: a fire while the node
 * is queued and not started is served by that run, a fire during the run
 * queues it once more when the run returns (queue.c), so at most one fire
 * of a timer waits in its queue (coalescing), and firing needs no memory.
 * One thread pushes at a time (`firing`; another that wants to fire waits
 * for it, yielding): it pops up to DSY_TIMER_FIRE_BATCH due timers under
 * the lock, then pushes them in that order with the lock dropped (a push
 * may wake or start threads, or join exited ones: nothing to do under a
 * spinlock), so equal deadlines reach a queue in start order. Then, no
 * longer `firing`, it completes the batch's delay futures in order (their
 * callbacks are the user's code, run on the firing thread).
 *
 * CANCEL AND FIRE. Cancel takes the lock, takes the timer out of the heap
 * and sets `cancelled` (release), so no firer pops it again. A firer that
 * popped it before holds a reference; it checks `cancelled` (acquire)
 * before it pushes. Batches are numbered (gen, under the lock; each timer
 * records the batch that popped it), and the firer publishes the number
 * once the batch is pushed (done_gen, release): a cancel that finds the
 * timer in the batch being pushed waits for that (a few pushes away: the
 * firer completes the batch's delay futures, whose callbacks are the
 * user's code, only after). So once cancel has returned the job is never
 * queued again. A run of the kick checks `cancelled` (acquire)
 * before it calls the job: a run queued before cancel returned does
 * nothing; one that had passed the check keeps running. The memory is
 * shared by counted owners (refs): the handle (dropped by cancel), a firer
 * between pop and push, and the kick while it is queued or running (the
 * firer's reference passes to it; the kick's done gives it back). The
 * timer keeps a queue reference until it is freed (its node is pushed onto
 * that queue), and, for an object, a strong reference while it is armed
 * (`holds_obj`): whoever exchanges that flag to false (cancel, or the run
 * of a one-shot timer after its job) releases it without waiting
 * (object.c). A kick's done runs with the queue's token held, so the queue
 * reference it may drop is never the last. The heap's lock is a leaf: only
 * the heap's realloc runs under it.
 *
 * Fork: every dsy_timers lock is taken around fork (fork.c: after the
 * registry, before the schedulers') and released in parent and child;
 * the child keeps its pending timers (they fire there too, like the jobs
 * that were queued), driven by the threads it starts on demand.
 */
#include "internal.h"

#include <pthread.h>
#include <stdlib.h>

#define TIMER_NONE UINT32_MAX
#define TIMER_NEVER UINT64_MAX /* `next` of an empty heap */

typedef struct hent {
    uint64_t deadline;
    desync_timer_t *t;
} hent;

struct dsy_timers {
    dsy_spinlock lock;
    _Atomic uint64_t next; /* heap[0].deadline or TIMER_NEVER (written under the lock) */
    hent *heap;            /* lock */
    uint32_t len, cap;     /* lock */
    uint64_t seq;          /* lock: start order */
    bool firing;           /* lock: a thread is pushing a batch (one at a time) */
    /* Batches: the firer numbers each (gen, under the lock) and publishes
     * the number once all of its timers are pushed (done_gen, release). */
    uint32_t gen;
    _Atomic uint32_t done_gen;
    desync_scheduler_t *sched;
    struct dsy_timers *list_prev, *list_next; /* every dsy_timers (fork) */
};

enum timer_kind { T_OBJECT, T_QUEUE, T_DELAY };

struct desync_timer {
    dsy_kick kick; /* T_OBJECT, T_QUEUE: the fire node, on the timer's queue */
    dsy_timers *ts;
    dsy_fn fn;
    void *arg;
    union {
        desync_t *obj;            /* T_OBJECT: whose strong reference holds_obj is */
        desync_promise_t *promise; /* T_DELAY */
    } u;
    uint64_t period; /* 0: one-shot */
    uint64_t seq;    /* start order (lock) */
    uint32_t heap_idx; /* lock */
    dsy_refcount refs;
    _Atomic bool cancelled;
    _Atomic bool holds_obj;
    uint32_t popped_gen; /* lock: the batch that last popped it */
    uint8_t kind;
};

_Static_assert(sizeof(struct desync_timer) <= 128, "timers come from the 128-byte pool");

/* Heaps that exist: every sync on a scheduler without threads looks at its
 * timers only while this is nonzero (dsy_timers_on_sync). */
_Atomic unsigned dsy_timer_heaps;

static pthread_mutex_t timers_list_lock = PTHREAD_MUTEX_INITIALIZER;
static dsy_timers *timers_list;

/* ----------------------------------------------------------------- heap */

static bool before(hent a, hent b) {
    return a.deadline < b.deadline || (a.deadline == b.deadline && a.t->seq < b.t->seq);
}

static void heap_set(dsy_timers *ts, uint32_t i, hent e) {
    ts->heap[i] = e;
    e.t->heap_idx = i;
}

static void sift_up(dsy_timers *ts, uint32_t i, hent e) {
    while (i > 0) {
        uint32_t p = (i - 1) / 2;
        if (!before(e, ts->heap[p]))
            break;
        heap_set(ts, i, ts->heap[p]);
        i = p;
    }
    heap_set(ts, i, e);
}

static void sift_down(dsy_timers *ts, uint32_t i, hent e) {
    for (;;) {
        uint32_t c = 2 * i + 1;
        if (c >= ts->len)
            break;
        if (c + 1 < ts->len && before(ts->heap[c + 1], ts->heap[c]))
            c++;
        if (!before(ts->heap[c], e))
            break;
        heap_set(ts, i, ts->heap[c]);
        i = c;
    }
    heap_set(ts, i, e);
}

static void publish_next(dsy_timers *ts) {
    atomic_store_explicit(&ts->next, ts->len ? ts->heap[0].deadline : TIMER_NEVER,
                          memory_order_relaxed);
}

/* Lock held. False on ENOMEM (nothing changed). */
static bool heap_insert(dsy_timers *ts, desync_timer_t *t, uint64_t deadline) {
    if (ts->len == ts->cap) {
        uint32_t cap = ts->cap ? ts->cap * 2 : 16;
        hent *h = realloc(ts->heap, (size_t)cap * sizeof *h);
        if (!h)
            return false;
        ts->heap = h;
        ts->cap = cap;
    }
    hent e = {deadline, t};
    sift_up(ts, ts->len++, e);
    return true;
}

/* Lock held: takes the entry at i out of the heap. */
static void heap_remove(dsy_timers *ts, uint32_t i) {
    ts->heap[i].t->heap_idx = TIMER_NONE;
    hent last = ts->heap[--ts->len];
    if (i < ts->len) {
        if (i > 0 && before(last, ts->heap[(i - 1) / 2]))
            sift_up(ts, i, last);
        else
            sift_down(ts, i, last);
    }
    /* Give memory back after a burst of timers: at a quarter full, halve. */
    if (ts->cap > 64 && ts->len < ts->cap / 4) {
        hent *h = realloc(ts->heap, (size_t)(ts->cap / 2) * sizeof *h);
        if (h) {
            ts->heap = h;
            ts->cap /= 2;
        }
    }
}

/* ----------------------------------------------------------- the heaps */

/* The default scheduler's heap lives in static storage, like the scheduler
 * itself: after desync_shutdown nothing of it is left allocated. */
static dsy_timers default_timers;
static pthread_once_t default_timers_once = PTHREAD_ONCE_INIT;

static void default_timers_init(void) {
    atomic_init(&default_timers.next, TIMER_NEVER);
    default_timers.sched = desync_scheduler_default();
}

static dsy_timers *timers_of(desync_scheduler_t *s) {
    dsy_timers *ts = dsy_sched_timers(s);
    if (DSY_LIKELY(ts))
        return ts;
    if (s == desync_scheduler_default()) {
        pthread_once(&default_timers_once, default_timers_init);
        ts = &default_timers;
    } else if ((ts = calloc(1, sizeof *ts))) {
        atomic_init(&ts->next, TIMER_NEVER);
        ts->sched = s;
    } else {
        return NULL;
    }
    dsy_timers *won = dsy_sched_timers_install(s, ts);
    if (won != ts) {
        if (ts != &default_timers)
            free(ts);
        return won;
    }
    pthread_mutex_lock(&timers_list_lock);
    ts->list_next = timers_list;
    if (timers_list)
        timers_list->list_prev = ts;
    timers_list = ts;
    pthread_mutex_unlock(&timers_list_lock);
    atomic_fetch_add_explicit(&dsy_timer_heaps, 1, memory_order_relaxed);
    return ts;
}

void dsy_timers_free(dsy_timers *ts) {
    if (!ts)
        return;
    DSY_ASSERT(ts->len == 0); /* every timer holds a queue of the scheduler */
    pthread_mutex_lock(&timers_list_lock);
    DSY_DLIST_UNLINK(&timers_list, ts, list_prev, list_next);
    pthread_mutex_unlock(&timers_list_lock);
    atomic_fetch_sub_explicit(&dsy_timer_heaps, 1, memory_order_relaxed);
    free(ts->heap);
    free(ts);
}

void dsy_timers_reclaim(dsy_timers *ts) {
    if (!ts)
        return;
    dsy_spin_lock(&ts->lock);
    if (!ts->len) {
        free(ts->heap);
        ts->heap = NULL;
        ts->cap = 0;
    }
    dsy_spin_unlock(&ts->lock);
}

uint64_t dsy_timers_next(dsy_timers *ts) {
    return atomic_load_explicit(&ts->next, memory_order_relaxed);
}

/* ---------------------------------------------------------------- firing */

static void timer_free(desync_timer_t *t) {
    if (t->kind != T_DELAY)
        dsy_queue_unref(t->kick.q);
    dsy_pool_free(t, DSY_POOL_128);
}

static void timer_unref(desync_timer_t *t) {
    if (dsy_ref_dec(&t->refs))
        timer_free(t);
}

/* Drops the object's strong reference if the timer still holds it (exactly
 * one caller gets true from the exchange). */
static void drop_object(desync_timer_t *t) {
    if (t->kind == T_OBJECT && atomic_exchange_explicit(&t->holds_obj, false, memory_order_acq_rel))
        dsy_object_release_async(t->u.obj);
}

/* The kick's run, on the timer's queue. */
static void timer_run(dsy_kick *k) {
    desync_timer_t *t = DSY_CONTAINER_OF(k, desync_timer_t, kick);
    /* acquire: pairs with cancel's release store; set means cancel returned
     * or is returning, and its caller may have freed arg. */
    if (atomic_load_explicit(&t->cancelled, memory_order_acquire))
        return;
    if (t->kind == T_OBJECT)
        ((desync_job_fn)t->fn)(t->u.obj->q.data, t->arg);
    else
        ((desync_queue_job_fn)t->fn)(t->arg);
    if (!t->period)
        drop_object(t); /* a one-shot timer has fired: the object may go */
}

/* The kick is idle again: it gives back its reference. */
static void timer_kick_done(dsy_kick *k) { timer_unref(DSY_CONTAINER_OF(k, desync_timer_t, kick)); }

/* Lock held: the next deadline of periodic t, due at `due`: the first
 * due + m * period (m >= 1) after now; saturates. */
static uint64_t next_deadline(uint64_t due, uint64_t period, uint64_t now) {
    uint64_t m = now >= due ? (now - due) / period + 1 : 1;
    if (m > (TIMER_NEVER - 1 - due) / period)
        return TIMER_NEVER - 1;
    return due + m * period;
}

/* Outside the lock: queues a popped timer's job (or completes a delay),
 * unless it was cancelled meanwhile; then tells cancel it is done with t. */
static void fire_one(desync_timer_t *t) {
    if (t->kind == T_DELAY) {
        dsy_promise_complete_status(t->u.promise, 0, NULL);
        timer_unref(t); /* delays are never cancelled: the heap's reference */
        return;
    }
    /* acquire: pairs with cancel's store; a cancel that comes later waits
     * for the batch to be done, so no push follows its return. */
    if (!atomic_load_explicit(&t->cancelled, memory_order_acquire) && dsy_kick_arm(&t->kick))
        dsy_kick_push(&t->kick); /* the firer's reference becomes the kick's */
    else
        timer_unref(t);
}

void dsy_timers_fire(dsy_timers *ts) {
    /* Popped timers: jobs to queue, and delays (the same batch of at most
     * DSY_TIMER_FIRE_BATCH), in heap order. Once pushed, a timer may be
     * freed: nothing of it is read again. */
    desync_timer_t *batch[DSY_TIMER_FIRE_BATCH], *delays[DSY_TIMER_FIRE_BATCH];
    (void)dsy_thread_self(); /* registered before our lock (fork.c's order) */
    for (;;) {
        dsy_spin_lock(&ts->lock);
        /* Another thread is pushing its batch (a few pushes, no user code):
         * ours must come after it. Waiting (and yielding: on a busy machine
         * it may have been preempted) beats leaving it the work, which kept
         * every due timer waiting for a preempted firer. */
        for (unsigned b = 0; ts->firing; dsy_spin_lock(&ts->lock)) {
            dsy_spin_unlock(&ts->lock);
            dsy_backoff(&b);
        }
        uint64_t now = dsy_now_ns();
        uint32_t gen = ++ts->gen;
        unsigned n = 0, nd = 0;
        while (n + nd < DSY_TIMER_FIRE_BATCH && ts->len && ts->heap[0].deadline <= now) {
            hent e = ts->heap[0];
            desync_timer_t *t = e.t;
            if (t->period) {
                e.deadline = next_deadline(e.deadline, t->period, now);
                sift_down(ts, 0, e);
            } else {
                heap_remove(ts, 0);
            }
            if (t->kind == T_DELAY) {
                delays[nd++] = t;
            } else {
                dsy_ref_inc(&t->refs); /* the firer's, until pushed */
                t->popped_gen = gen;
                batch[n++] = t;
            }
        }
        publish_next(ts);
        ts->firing = n > 0;
        dsy_spin_unlock(&ts->lock);
        if (!n && !nd)
            return;
        for (unsigned i = 0; i < n; i++)
            fire_one(batch[i]);
        if (n) {
            /* release: the pushes above, to a cancel that waited for them. */
            atomic_store_explicit(&ts->done_gen, gen, memory_order_release);
            dsy_spin_lock(&ts->lock);
            ts->firing = false;
            dsy_spin_unlock(&ts->lock);
        }
        /* Then the delays, whose callbacks (the user's code, which may
         * cancel timers, fire them, or block) nobody waits for. */
        for (unsigned i = 0; i < nd; i++)
            fire_one(delays[i]);
    }
}

bool dsy_timers_due(dsy_timers *ts) {
    uint64_t next = atomic_load_explicit(&ts->next, memory_order_relaxed);
    return next != TIMER_NEVER && next <= dsy_now_ns();
}

void dsy_timers_on_sync(desync_scheduler_t *s) {
    dsy_timers *ts = dsy_sched_timers(s);
    if (ts && desync_scheduler_max_threads(s) == 0 && dsy_timers_due(ts))
        dsy_timers_fire(ts);
}

/* ------------------------------------------------------------- starting */

/* Lock not held: inserts t, due `delay` from now. False on ENOMEM. */
static bool timer_arm(dsy_timers *ts, desync_timer_t *t, uint64_t delay) {
    uint64_t now = dsy_now_ns();
    uint64_t deadline = delay < TIMER_NEVER - 1 - now ? now + delay : TIMER_NEVER - 1;
    (void)dsy_thread_self(); /* registered before our lock (fork.c's order) */
    dsy_spin_lock(&ts->lock);
    t->seq = ts->seq++;
    bool ok = heap_insert(ts, t, deadline);
    bool first = ok && t->heap_idx == 0;
    if (first)
        publish_next(ts);
    dsy_spin_unlock(&ts->lock);
    if (first)
        dsy_sched_timer_kick(ts->sched); /* a new earliest deadline */
    if (DSY_UNLIKELY(atomic_load_explicit(&dsy_sched_restart_pending, memory_order_relaxed)))
        dsy_sched_fork_restart(); /* a fork child: timers pending at fork get threads */
    return ok;
}

static desync_timer_t *timer_new(dsy_timers *ts, enum timer_kind kind, dsy_fn fn, void *arg,
                                 uint64_t period) {
    desync_timer_t *t = dsy_pool_alloc(DSY_POOL_128);
    if (!t)
        return NULL;
    t->ts = ts;
    t->fn = fn;
    t->arg = arg;
    t->period = period;
    t->heap_idx = TIMER_NONE;
    dsy_ref_init(&t->refs, 1);
    atomic_init(&t->cancelled, false);
    atomic_init(&t->holds_obj, false);
    t->popped_gen = 0;
    t->kind = (uint8_t)kind;
    return t;
}

static desync_timer_t *queue_timer_start(desync_queue_t *q, desync_t *obj, uint64_t delay,
                                         uint64_t period, dsy_fn fn, void *arg) {
    if (!q || !fn)
        return NULL;
    if (DSY_UNLIKELY(atomic_load_explicit(&dsy_forked, memory_order_relaxed)) &&
        dsy_queue_forked_off(q))
        return NULL;
    dsy_timers *ts = timers_of(dsy_queue_sched(q));
    desync_timer_t *t = ts ? timer_new(ts, obj ? T_OBJECT : T_QUEUE, fn, arg, period) : NULL;
    if (!t)
        return NULL;
    dsy_kick_init(&t->kick, q, timer_run, timer_kick_done);
    dsy_queue_ref(q);
    if (obj) {
        t->u.obj = desync_retain(obj);
        atomic_store_explicit(&t->holds_obj, true, memory_order_relaxed);
    }
    if (!timer_arm(ts, t, delay)) {
        drop_object(t);
        timer_unref(t);
        return NULL;
    }
    return t;
}

desync_timer_t *desync_timer_start(desync_t *d, uint64_t delay_ns, uint64_t period_ns,
                                   desync_job_fn job, void *arg) {
    return d ? queue_timer_start(&d->q, d, delay_ns, period_ns, (dsy_fn)job, arg) : NULL;
}

desync_timer_t *desync_queue_timer_start(desync_queue_t *q, uint64_t delay_ns, uint64_t period_ns,
                                         desync_queue_job_fn job, void *arg) {
    return queue_timer_start(q, NULL, delay_ns, period_ns, (dsy_fn)job, arg);
}

void desync_timer_cancel(desync_timer_t *t) {
    if (!t)
        return;
    dsy_timers *ts = t->ts;
    (void)dsy_thread_self(); /* registered before our lock (fork.c's order) */
    dsy_spin_lock(&ts->lock);
    if (t->heap_idx != TIMER_NONE) {
        heap_remove(ts, t->heap_idx);
        publish_next(ts);
    }
    /* release: a run or a firer that sees it leaves the job alone. */
    atomic_store_explicit(&t->cancelled, true, memory_order_release);
    /* A firer that popped t in the batch it is pushing now may be about to
     * push it: wait for those pushes (never longer: the firer runs no job
     * and no callback before it publishes done_gen). */
    bool wait = ts->firing && t->popped_gen == ts->gen;
    uint32_t gen = ts->gen;
    dsy_spin_unlock(&ts->lock);
    for (unsigned b = 0; wait && (int32_t)(atomic_load_explicit(&ts->done_gen,
                                                                memory_order_acquire) - gen) < 0;)
        dsy_backoff(&b);
    drop_object(t);
    timer_unref(t); /* the handle's */
}

desync_future_t *desync_future_delay(uint64_t ns) {
    desync_scheduler_t *s = desync_scheduler_default();
    dsy_timers *ts = timers_of(s);
    if (!ts)
        return NULL;
    desync_future_t *f;
    desync_promise_t *p = desync_promise_new(&f);
    if (!p)
        return NULL;
    desync_timer_t *t = timer_new(ts, T_DELAY, NULL, NULL, 0);
    if (!t) {
        desync_promise_cancel(p);
        desync_future_free(f);
        return NULL;
    }
    t->u.promise = p;
    if (!timer_arm(ts, t, ns)) {
        dsy_pool_free(t, DSY_POOL_128);
        desync_promise_cancel(p);
        desync_future_free(f);
        return NULL;
    }
    return f; /* the timer is freed when it fires: nobody cancels it */
}

/* ------------------------------------------------------------------ fork */

void dsy_timers_fork_prepare(void) {
    pthread_mutex_lock(&timers_list_lock);
    for (dsy_timers *ts = timers_list; ts; ts = ts->list_next)
        dsy_spin_lock(&ts->lock);
}

void dsy_timers_fork_parent(void) {
    for (dsy_timers *ts = timers_list; ts; ts = ts->list_next)
        dsy_spin_unlock(&ts->lock);
    pthread_mutex_unlock(&timers_list_lock);
}

/* The heaps are whole (no thread was inside the lock): the child keeps them.
 * A firer that vanished between popping timers and pushing them loses
 * those fires (as a worker that vanished between taking an entry and
 * running it, scheduler.c; their memory is not freed in the child): its
 * batch counts as done, so that a cancel in the child does not wait for
 * it, and firing is free again. */
void dsy_timers_fork_child(void) {
    for (dsy_timers *ts = timers_list; ts; ts = ts->list_next) {
        if (ts->firing) { /* never the survivor: pushing runs no user code */
            ts->firing = false;
            atomic_store_explicit(&ts->done_gen, ts->gen, memory_order_relaxed);
        }
    }
    dsy_timers_fork_parent();
}
