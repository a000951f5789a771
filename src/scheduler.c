/*
 * The scheduler: a bounded pool of threads that run ready queues.
 *
 * A queue whose run token is placed with the scheduler (queue.c) becomes an
 * entry in one of two places:
 *   - the run list, a FIFO ring under the scheduler's spinlock;
 *   - a worker's `next_q` slot, when the token is placed from inside a job
 *     that worker is running: the queue runs on the same thread right after
 *     the current queue, with no lock and no wake-up (a job that desyncs onto
 *     an idle queue is the common case, as in the W5 ping-pong benchmark).
 * An entry may be stale (a waiting syncer stole the token); claiming it then
 * fails and the entry is dropped (dsy_queue_claim_entry).
 *
 * Workers: run a queue for at most BATCH jobs, then give it up if anything
 * else is waiting (fairness), else keep going. Without work a worker spins
 * for SPIN_NS (longer while work keeps arriving), then sleeps on its own
 * futex word; after RETIRE_NS asleep it exits. While spinning it leaves a
 * lone new entry alone for GRACE_NS, as the thread that made the queue ready
 * often runs it itself right after (sync or future wait). A worker is woken,
 * or a new one started (up to max_threads), when a queue enters the run list
 * and no worker is spinning.
 *
 * Known limit: a queue in a worker's next slot waits for the job that made it
 * ready to return, unless another worker is spinning: a spinning worker takes
 * over next-slot entries that have waited through its whole spin phase.
 *
 * Lock order: the scheduler lock is a leaf; no job runs while it is held.
 */
#include "internal.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>

#define BATCH 256
#define SPIN_NS 20000u
/* A spinning worker leaves a lone newly ready queue alone this long: the
 * thread that made it ready often waits for it at once (sync, future wait)
 * and then runs it itself, cheaper than moving it across cores. A backlog
 * of ready queues is taken at once. Far below the cost of a wake-up. */
#define GRACE_NS 1000u
#define RETIRE_NS 5000000000ull

typedef struct worker {
    desync_scheduler_t *s;
    pthread_t thread;
    _Atomic(desync_queue_t *) next_q; /* an entry (LINKED queue) or NULL */
    _Atomic uint32_t next_seq;        /* bumped whenever next_q is filled */
    _Atomic uint32_t wake;            /* futex word: 1 once woken */
    _Atomic bool stop;                /* set under the lock: exit when possible */
    bool in_job;                      /* this thread is running a job */
    bool idle;                        /* on the idle stack (lock) */
    struct worker *idle_next;         /* lock */
    struct worker *all_next;          /* lock: every live worker */
    struct worker *zombie_next;       /* lock: exited, to be joined */
} worker;

struct desync_scheduler {
    dsy_spinlock lock; /* short sections only; thread creation aside */
    desync_queue_t **ring; /* run list (lock) */
    size_t cap, head, len;
    _Atomic size_t ready; /* == len, readable without the lock */
    _Atomic size_t max_threads;
    _Atomic size_t nthreads; /* written under the lock */
    _Atomic unsigned nspinning;
    worker *idle;
    size_t nidle;
    worker *all;
    worker *zombies;
    bool closed;   /* freed by the user: no threads any more */
    bool immortal; /* the default scheduler */
    _Atomic uint32_t refs;
};

static DSY_TLS worker *tls_worker;

/* ------------------------------------------------------------ run list */

static bool ring_push(desync_scheduler_t *s, desync_queue_t *q) {
    if (s->len == s->cap) {
        size_t cap = s->cap ? s->cap * 2 : 64;
        desync_queue_t **r = malloc(cap * sizeof *r);
        if (!r)
            return false;
        for (size_t i = 0; i < s->len; i++)
            r[i] = s->ring[(s->head + i) % s->cap];
        free(s->ring);
        s->ring = r;
        s->cap = cap;
        s->head = 0;
    }
    s->ring[(s->head + s->len) % s->cap] = q;
    s->len++;
    atomic_store_explicit(&s->ready, s->len, memory_order_relaxed);
    return true;
}

static desync_queue_t *ring_pop(desync_scheduler_t *s) {
    if (!s->len)
        return NULL;
    desync_queue_t *q = s->ring[s->head];
    s->head = (s->head + 1) % s->cap;
    s->len--;
    atomic_store_explicit(&s->ready, s->len, memory_order_relaxed);
    return q;
}

static desync_queue_t *pop_global(desync_scheduler_t *s) {
    dsy_spin_lock(&s->lock);
    desync_queue_t *q = ring_pop(s);
    dsy_spin_unlock(&s->lock);
    return q;
}

/* ------------------------------------------------------------- threads */

static void *worker_main(void *arg);

/* Starts a worker (lock held). 0, DESYNC_ENOMEM or DESYNC_EAGAIN. */
static int spawn_locked(desync_scheduler_t *s) {
    worker *w = calloc(1, sizeof *w);
    if (!w)
        return DESYNC_ENOMEM;
    w->s = s;
    /* Workers take no signals: they belong to the application's threads. */
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    int rc = pthread_create(&w->thread, NULL, worker_main, w);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (rc != 0) {
        free(w);
        return rc == ENOMEM ? DESYNC_ENOMEM : DESYNC_EAGAIN;
    }
    w->all_next = s->all;
    s->all = w;
    atomic_store_explicit(&s->nthreads, atomic_load(&s->nthreads) + 1, memory_order_relaxed);
    return 0;
}

static void unlink_all(desync_scheduler_t *s, worker *w) {
    for (worker **p = &s->all; *p; p = &(*p)->all_next)
        if (*p == w) {
            *p = w->all_next;
            break;
        }
    atomic_store_explicit(&s->nthreads, atomic_load(&s->nthreads) - 1, memory_order_relaxed);
}

static void wake_locked(worker *w) {
    w->idle = false;
    atomic_store_explicit(&w->wake, 1, memory_order_release);
}

/* The futex wake is done after the lock is dropped, so the woken thread does
 * not block on the lock at once. If it has exited meanwhile, waking an
 * address nobody waits on is harmless. */
static void unpark_worker(worker *w) {
    if (w)
        dsy_unpark_one(&w->wake);
}

/* After the run list grew (lock held): make sure some thread will look.
 * Returns a worker to unpark once the lock is dropped, or NULL. */
static worker *kick_locked(desync_scheduler_t *s) {
    if (atomic_load_explicit(&s->nspinning, memory_order_seq_cst))
        return NULL;
    if (s->idle) {
        worker *w = s->idle;
        s->idle = w->idle_next;
        s->nidle--;
        wake_locked(w);
        return w;
    }
    if (!s->closed && atomic_load(&s->nthreads) < atomic_load(&s->max_threads))
        spawn_locked(s); /* on failure the work waits for others or a sync */
    return NULL;
}

static void join_list(worker *z) {
    while (z) {
        worker *next = z->zombie_next;
        pthread_join(z->thread, NULL);
        free(z);
        z = next;
    }
}

/* A closed scheduler has no run list: the token stays READY with no entry,
 * for a syncer or waiter to steal, and the entry's reference goes with it. */
static void submit_closed(desync_queue_t *q) {
    uint32_t old = atomic_fetch_and_explicit(&q->state, ~DSY_Q_LINKED, memory_order_acq_rel);
    if (!(old & DSY_Q_READY))
        dsy_queue_unref(q); /* already stolen, with a reference of its own */
}

void dsy_sched_submit(desync_scheduler_t *s, desync_queue_t *q) {
    worker *w = tls_worker;
    if (w && w->s == s && w->in_job) {
        desync_queue_t *old = atomic_exchange_explicit(&w->next_q, q, memory_order_acq_rel);
        atomic_fetch_add_explicit(&w->next_seq, 1, memory_order_relaxed);
        if (!old)
            return;
        q = old; /* the older one goes to the run list */
    }
    dsy_spin_lock(&s->lock);
    if (s->closed) {
        dsy_spin_unlock(&s->lock);
        submit_closed(q);
        return;
    }
    if (!ring_push(s, q)) {
        dsy_spin_unlock(&s->lock);
        /* No memory for the run list: run the queue here, nothing is lost. */
        if (dsy_queue_claim_entry(q))
            while (dsy_queue_run(q, 0)) {
            }
        return;
    }
    worker *wake = kick_locked(s);
    worker *z = s->zombies;
    s->zombies = NULL;
    dsy_spin_unlock(&s->lock);
    unpark_worker(wake);
    join_list(z);
}

bool dsy_sched_nothing_else(void) {
    worker *w = tls_worker;
    return w && !atomic_load_explicit(&w->next_q, memory_order_relaxed) &&
           !atomic_load_explicit(&w->s->ready, memory_order_relaxed);
}

/* Spins for SPIN_NS looking for work, then takes over next-slot entries of
 * other workers that waited through the whole spin. Returns a claimed queue. */
static desync_queue_t *spin_for_work(worker *w) {
    desync_scheduler_t *s = w->s;
    enum { MAXW = 64 };
    worker *seen[MAXW];
    uint32_t seq[MAXW];
    unsigned nseen = 0;
    dsy_spin_lock(&s->lock);
    for (worker *o = s->all; o && nseen < MAXW; o = o->all_next)
        if (o != w && atomic_load_explicit(&o->next_q, memory_order_relaxed)) {
            seen[nseen] = o;
            seq[nseen++] = atomic_load_explicit(&o->next_seq, memory_order_relaxed);
        }
    dsy_spin_unlock(&s->lock);

    atomic_fetch_add_explicit(&s->nspinning, 1, memory_order_seq_cst);
    desync_queue_t *q = NULL;
    uint64_t end = dsy_now_ns() + SPIN_NS, seen_at = 0;
    for (unsigned i = 1;; i++) {
        if (atomic_load_explicit(&w->next_q, memory_order_relaxed) ||
            atomic_load_explicit(&w->stop, memory_order_relaxed))
            break;
        size_t ready = atomic_load_explicit(&s->ready, memory_order_relaxed);
        if (!ready) {
            seen_at = 0;
        } else if (!seen_at && ready == 1) {
            seen_at = dsy_now_ns();
            end = seen_at + SPIN_NS; /* work keeps arriving: keep spinning */
        } else if (ready > 1 || dsy_now_ns() - seen_at >= GRACE_NS) {
            /* A backlog is not about to be run by whoever queued it. */
            seen_at = 0;
            q = pop_global(s);
            if (q) {
                if (dsy_queue_claim_entry(q))
                    break;
                q = NULL;
            }
        }
        if ((i & 63) == 0 && dsy_now_ns() > end)
            break;
        dsy_cpu_relax();
    }
    atomic_fetch_sub_explicit(&s->nspinning, 1, memory_order_seq_cst);
    if (q || !nseen)
        return q;
    /* Workers stay in the all-list until joined, and only the lock holder
     * joins them, so `seen` pointers are checked against the list again. */
    dsy_spin_lock(&s->lock);
    for (unsigned i = 0; i < nseen && !q; i++) {
        bool live = false;
        for (worker *o = s->all; o; o = o->all_next)
            live |= o == seen[i];
        if (!live || atomic_load_explicit(&seen[i]->next_seq, memory_order_relaxed) != seq[i])
            continue;
        q = atomic_exchange_explicit(&seen[i]->next_q, NULL, memory_order_acq_rel);
        if (q && !dsy_queue_claim_entry(q))
            q = NULL;
    }
    dsy_spin_unlock(&s->lock);
    return q;
}

/* Next queue to run (token claimed), or NULL when this worker must exit. */
static desync_queue_t *find_work(worker *w) {
    desync_scheduler_t *s = w->s;
    for (;;) {
        desync_queue_t *q = atomic_exchange_explicit(&w->next_q, NULL, memory_order_acq_rel);
        if (q) {
            if (dsy_queue_claim_entry(q))
                return q;
            continue;
        }
        if (atomic_load_explicit(&w->stop, memory_order_relaxed))
            return NULL;
        if (atomic_load_explicit(&s->ready, memory_order_relaxed) && (q = pop_global(s))) {
            if (dsy_queue_claim_entry(q))
                return q;
            continue;
        }
        if ((q = spin_for_work(w)))
            return q;
        if (atomic_load_explicit(&w->next_q, memory_order_relaxed))
            continue;

        /* Sleep. The run list is checked under the lock, and submitters kick
         * under the lock, so no wake-up is lost. */
        dsy_spin_lock(&s->lock);
        if (s->len) {
            q = ring_pop(s);
            dsy_spin_unlock(&s->lock);
            if (dsy_queue_claim_entry(q))
                return q;
            continue;
        }
        if (atomic_load_explicit(&w->stop, memory_order_relaxed)) {
            dsy_spin_unlock(&s->lock);
            return NULL;
        }
        atomic_store_explicit(&w->wake, 0, memory_order_relaxed);
        w->idle = true;
        w->idle_next = s->idle;
        s->idle = w;
        s->nidle++;
        dsy_spin_unlock(&s->lock);

        uint64_t start = dsy_now_ns();
        for (;;) {
            dsy_park(&w->wake, 0, RETIRE_NS);
            if (atomic_load_explicit(&w->wake, memory_order_acquire))
                break;
            if (dsy_now_ns() - start < RETIRE_NS)
                continue;
            dsy_spin_lock(&s->lock);
            if (w->idle) { /* nobody woke us: retire */
                for (worker **p = &s->idle; *p; p = &(*p)->idle_next)
                    if (*p == w) {
                        *p = w->idle_next;
                        break;
                    }
                s->nidle--;
                w->idle = false;
                unlink_all(s, w);
                w->zombie_next = s->zombies;
                s->zombies = w;
                dsy_spin_unlock(&s->lock);
                return (desync_queue_t *)w; /* sentinel: retired, do not touch w */
            }
            dsy_spin_unlock(&s->lock);
            break;
        }
    }
}

static void run_work(worker *w, desync_queue_t *q) {
    desync_scheduler_t *s = w->s;
    for (;;) {
        w->in_job = true;
        bool held = dsy_queue_run(q, BATCH);
        w->in_job = false;
        if (held) {
            /* Fairness: give the queue up only if something else waits. */
            if (!atomic_load_explicit(&w->stop, memory_order_relaxed) &&
                !atomic_load_explicit(&s->ready, memory_order_relaxed) &&
                !atomic_load_explicit(&w->next_q, memory_order_relaxed))
                continue;
            dsy_token_place(q, true);
        }
        if (atomic_load_explicit(&w->stop, memory_order_relaxed))
            return;
        q = atomic_exchange_explicit(&w->next_q, NULL, memory_order_acq_rel);
        if (!q || !dsy_queue_claim_entry(q))
            return;
    }
}

static void *worker_main(void *arg) {
    worker *w = arg;
    desync_scheduler_t *s = w->s;
    tls_worker = w;
    for (;;) {
        desync_queue_t *q = find_work(w);
        if (q == (desync_queue_t *)w)
            return NULL; /* retired; joined later by whoever finds it */
        if (!q)
            break;
        run_work(w, q);
    }
    /* Stopped: the joiner (despawn or free) unlinks us; hand on our slot. */
    dsy_spin_lock(&s->lock);
    desync_queue_t *q = atomic_exchange_explicit(&w->next_q, NULL, memory_order_acq_rel);
    if (q && ring_push(s, q))
        q = NULL;
    if (q) {
        dsy_spin_unlock(&s->lock);
        if (dsy_queue_claim_entry(q))
            while (dsy_queue_run(q, 0)) {
            }
        dsy_spin_lock(&s->lock);
    }
    worker *wake = s->len ? kick_locked(s) : NULL;
    dsy_spin_unlock(&s->lock);
    unpark_worker(wake);
    return NULL;
}

/* ----------------------------------------------------------- lifetime */

static desync_scheduler_t *sched_create(size_t max_threads, bool immortal) {
    desync_scheduler_t *s = calloc(1, sizeof *s);
    if (!s)
        return NULL;
    atomic_init(&s->max_threads, max_threads);
    atomic_init(&s->refs, 1);
    s->immortal = immortal;
    return s;
}

void dsy_sched_retain(desync_scheduler_t *s) {
    if (!s->immortal)
        atomic_fetch_add_explicit(&s->refs, 1, memory_order_relaxed);
}

void dsy_sched_release(desync_scheduler_t *s) {
    if (s->immortal || atomic_fetch_sub_explicit(&s->refs, 1, memory_order_acq_rel) != 1)
        return;
    /* Only reachable after desync_scheduler_free: no threads remain, and no
     * queue is left to have entries in the run list. */
    free(s->ring);
    free(s);
}

static desync_scheduler_t *default_sched;
static pthread_once_t default_once = PTHREAD_ONCE_INIT;

static void default_init(void) {
    unsigned n = 2 * dsy_cpu_count();
    default_sched = sched_create(n > 8 ? n : 8, true);
}

desync_scheduler_t *desync_scheduler_default(void) {
    pthread_once(&default_once, default_init);
    return default_sched;
}

desync_scheduler_t *desync_scheduler_new(size_t max_threads) {
    return sched_create(max_threads, false);
}

/* Stops the given workers (lock held, already marked stop) and joins them
 * after unlocking. */
static void stop_and_join(desync_scheduler_t *s, worker **victims, size_t n) {
    for (size_t i = 0; i < n; i++) {
        worker *v = victims[i];
        if (v->idle) {
            for (worker **p = &s->idle; *p; p = &(*p)->idle_next)
                if (*p == v) {
                    *p = v->idle_next;
                    break;
                }
            s->nidle--;
            wake_locked(v);
            dsy_unpark_one(&v->wake); /* v is joined below, so it is alive */
        }
    }
    worker *z = s->zombies;
    s->zombies = NULL;
    dsy_spin_unlock(&s->lock);
    join_list(z);
    for (size_t i = 0; i < n; i++) {
        pthread_join(victims[i]->thread, NULL);
        dsy_spin_lock(&s->lock);
        unlink_all(s, victims[i]);
        dsy_spin_unlock(&s->lock);
        free(victims[i]);
    }
}

void desync_scheduler_free(desync_scheduler_t *s) {
    if (!s || s->immortal || (tls_worker && tls_worker->s == s))
        return;
    /* Help run everything that is ready, until all threads are asleep. */
    for (;;) {
        dsy_spin_lock(&s->lock);
        desync_queue_t *q = ring_pop(s);
        bool quiet = !q && s->nidle == atomic_load(&s->nthreads);
        for (worker *o = s->all; quiet && o; o = o->all_next)
            quiet = !atomic_load(&o->next_q);
        dsy_spin_unlock(&s->lock);
        if (q) {
            if (dsy_queue_claim_entry(q))
                while (dsy_queue_run(q, 0)) {
                }
            continue;
        }
        if (quiet)
            break;
        dsy_sleep_ns(100000); /* workers are finishing their queues: look again */
    }
    dsy_spin_lock(&s->lock);
    s->closed = true;
    atomic_store(&s->max_threads, 0);
    size_t n = 0;
    for (worker *o = s->all; o; o = o->all_next)
        n++;
    worker **victims = n ? malloc(n * sizeof *victims) : NULL;
    while (n && !victims) { /* tiny; retry rather than leak threads */
        dsy_spin_unlock(&s->lock);
        dsy_yield();
        dsy_spin_lock(&s->lock);
        victims = malloc(n * sizeof *victims);
    }
    n = 0;
    for (worker *o = s->all; o; o = o->all_next) {
        atomic_store(&o->stop, true);
        victims[n++] = o;
    }
    stop_and_join(s, victims, n);
    free(victims);
    dsy_sched_release(s);
}

void desync_scheduler_set_max_threads(desync_scheduler_t *s, size_t n) {
    if (!s)
        return;
    dsy_spin_lock(&s->lock);
    if (!s->closed)
        atomic_store(&s->max_threads, n);
    /* Waiting work may now get threads: one kick per waiting queue. */
    for (size_t i = 0; i < s->len; i++) {
        size_t before = atomic_load(&s->nthreads);
        worker *w = kick_locked(s);
        if (w)
            dsy_unpark_one(&w->wake); /* w cannot exit while we hold the lock */
        else if (atomic_load(&s->nthreads) == before)
            break;
    }
    dsy_spin_unlock(&s->lock);
}

size_t desync_scheduler_max_threads(desync_scheduler_t *s) {
    return s ? atomic_load(&s->max_threads) : 0;
}

size_t desync_scheduler_thread_count(desync_scheduler_t *s) {
    return s ? atomic_load(&s->nthreads) : 0;
}

int desync_scheduler_spawn_thread(desync_scheduler_t *s) {
    if (!s)
        return DESYNC_EINVAL;
    dsy_spin_lock(&s->lock);
    int rc = s->closed ? DESYNC_EINVAL : spawn_locked(s);
    dsy_spin_unlock(&s->lock);
    return rc;
}

void desync_scheduler_despawn_threads_if_overloaded(desync_scheduler_t *s) {
    if (!s)
        return;
    dsy_spin_lock(&s->lock);
    size_t have = atomic_load(&s->nthreads), max = atomic_load(&s->max_threads);
    size_t excess = have > max ? have - max : 0;
    worker **victims = excess ? malloc(excess * sizeof *victims) : NULL;
    size_t n = 0;
    if (victims) {
        /* Idle workers first, then busy ones; never the calling thread. */
        for (int pass = 0; pass < 2; pass++)
            for (worker *o = s->all; o && n < excess; o = o->all_next)
                if (o != tls_worker && !atomic_load(&o->stop) && o->idle == (pass == 0)) {
                    atomic_store(&o->stop, true);
                    victims[n++] = o;
                }
    }
    stop_and_join(s, victims, n);
    free(victims);
}
