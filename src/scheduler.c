/*
 * The scheduler: a bounded pool of threads that run ready entries.
 *
 * The scheduler knows nothing of queues. It runs *runnables* (internal.h):
 * opaque entries that an owner (queue.c: a queue whose run token was placed
 * with the scheduler) submits, and that it runs through the callback table
 * the owner attached. A submitted entry waits in one of two places:
 *   - the run list, a FIFO ring under the scheduler's spinlock, with a slot
 *     reserved for each attached queue (so submitting never allocates);
 *   - a worker's `next` slot, when the entry is submitted from inside a job
 *     that worker is running: it runs on the same thread right after the
 *     current entry, with no lock and no wake-up (a job that desyncs onto an
 *     idle queue is the common case: ping-pong between two queues, W5, then
 *     stays on one thread). Only the job's own worker fills it: an entry
 *     taken from the run list is never held back behind another (a worker
 *     that took two would leave the second waiting while the first blocks
 *     outside the library, with another thread free).
 * An entry may be stale (a waiting syncer took the queue's token meanwhile);
 * the run callback then only drops it.
 *
 * Workers: run an entry for at most DSY_SCHED_BATCH jobs, then give it up
 * if anything else is waiting (fairness), else keep going. Without work a
 * worker spins for between DSY_WORKER_SPIN_MIN_NS and DSY_WORKER_SPIN_NS,
 * as its recent spins paid or not (spin_adapt; longer while work keeps
 * arriving), yielding its core every DSY_WORKER_SPIN_YIELD_EVERY rounds
 * (on a loaded machine it must not take the CPU of the threads that make the
 * work), then
 * sleeps on its own futex word; after DSY_WORKER_RETIRE_NS asleep it exits.
 * While it looks for work it only tries the lock (spin_take,
 * pop_global_try), so that submitters do not wait behind spinning workers;
 * it takes the lock for good only to go to sleep, where it looks at the run
 * list once more. A worker is woken, or a new one started (up to
 * max_threads), when an entry enters the run list, no worker is spinning
 * and fewer than one per core are awake (AWAKE CAP).
 *
 * GRACE. A spinner leaves a lone entry alone for DSY_WORKER_GRACE_NS, as the
 * thread that made the queue ready often waits for it soon and then runs its
 * jobs itself (a waiter takes a listed token: the entry stays listed, stale,
 * and the queue's next job makes it ready again without a submit). The
 * grace runs from the moment the spinner last saw the entry's owner make
 * progress elsewhere (the runnable's `progress` count, read under the lock
 * when the spinner first sees the entry and when the grace is out): a
 * thread that keeps queuing bursts and syncing (W4) or waiting on futures
 * (W7) keeps its queue, instead of losing it to a worker halfway through a
 * burst, when moving every job across cores costs more than running it.
 * The count moves only when the queue's jobs run, so a ready entry is run
 * within about two graces, by its waiter or else by the spinner (or by a
 * spinner whose spin ends meanwhile, before it sleeps). Each look at the
 * count takes a cache line from the thread serving the queue, so one
 * spinner watches a lone entry (grace_watcher: the others spin as if the
 * list were empty, and their sleep path leaves it), and each grace its
 * waiter fills doubles the next, up to DSY_WORKER_GRACE_MAX_NS.
 *
 * CROWDED. A spinner whose yield returns late (DSY_WORKER_CROWDED_NS) shares
 * its core with a busy thread: the kernel often wakes a worker on the
 * waker's core and, as both stay busy, never moves either. Its spin ends
 * there. If the lone entry it watched was being run by its waiter, its
 * sleep path leaves it to the run list's watcher (below; the spinner itself
 * if there is none), which also reads the entry's progress each period and
 * takes it after a period in which its waiter did not run it.
 *
 * AWAKE CAP. Entries are for the workers that are awake (not on the idle
 * stack: running, spinning or about to look): a new entry wakes or starts a
 * worker only while fewer than `awake_cap` (the online cores) are awake.
 * With every core busy, another awake worker would only take CPU from the
 * threads that feed it, and fewer entries would find their queue's token
 * still listed (a desync onto a listed queue only links its job: the listed
 * entry then runs several jobs in one turn). An awake worker may block in a
 * job, so while entries wait for the awake ones, one idle worker, the
 * watcher, sleeps with a timeout (DSY_WORKER_WATCH_NS) and looks: if no
 * entry left the run list in a whole period, it takes one itself (and the
 * next idle worker watches), unless that is a lone entry whose waiter ran
 * it meanwhile (CROWDED); if the run list is empty, it stops watching.
 * So an entry waits for a thread at most about one period per blocked
 * worker while the pool has room. Without an idle worker to watch, one is
 * started for the purpose. A worker whose job blocks in the library
 * (dsy_sched_thread_blocks) and timers kick without the cap.
 *
 * A thread that cannot be started (kick_locked) leaves the scheduler
 * "starved": pushes onto its waiting queues try again (dsy_sched_poke).
 *
 * A queue in a worker's next slot waits for the job that made it ready to
 * return, with three exceptions. When that job blocks in the library (a
 * sync, a future wait), dsy_sched_thread_blocks moves the entry to the run
 * list first. A spinning worker takes over next-slot entries that have
 * waited through its whole spin phase. And for a job that blocks outside
 * the library (its own mutex, a read), NEXT-SLOT WATCH: the watcher (above)
 * also looks at the next slots, and takes over an entry that has stayed in
 * one for a whole period. An entry stashed while nobody watches appoints a
 * watcher: the top idle worker, or with none idle and room in the pool a
 * new thread, as for the run list (the stash path pays relaxed loads only
 * while a watcher exists, or the pool is full and busy). A worker that goes
 * to sleep while an entry waits in a next slot and nobody watches becomes
 * the watcher. So such an entry waits about one period while the pool has
 * an idle thread or room for one. The watch ends when the run list and the
 * next slots are empty.
 *
 * Timers (timer.c): a worker fires the due timers of its scheduler each
 * time it looks for work (one relaxed load while none is pending), and one
 * idle worker, the timer waiter, parks only until the earliest deadline.
 * It sits at the bottom of the idle stack (woken for work last); a start
 * that makes a new earliest deadline wakes it (dsy_sched_timer_kick), or,
 * with no waiter, kicks as for new work. It does not retire while timers
 * are pending.
 *
 * HELPERS. With no threads (max_threads 0, or freed), a ready entry runs
 * only on a thread that syncs or waits on its queue, drains or frees. A
 * thread waiting on queue A may need queue B run first (a multi-object job
 * parked on A waits for its turn on B), and nobody waits on B. So a thread
 * about to sleep on a queue of such a scheduler, outside any job, first
 * runs the run list, and lists itself as a helper (dsy_wait_word_help in
 * queue.c): each entry submitted meanwhile wakes one helper to run it. An
 * entry never waits in the run list while a helper sleeps.
 *
 * Lock order: the scheduler lock is a leaf; no job runs while it is held.
 * (Around fork, the list of schedulers' mutex is taken before every
 * scheduler's lock: see "fork" at the end of this file.)
 */
#include "internal.h"
#include "ring.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>

/* A worker's futex word. */
enum { WAKE_ASLEEP, WAKE_WORK, WAKE_WATCH };

typedef struct worker {
    desync_scheduler_t *s;
    pthread_t thread;
    _Atomic(dsy_runnable *) next_q; /* an entry or NULL */
    _Atomic uint32_t next_seq;        /* bumped whenever next_q is filled */
    uint32_t watch_seq;               /* lock: next_seq at the watcher's last look */
    _Atomic uint32_t wake;            /* futex word: WAKE_* */
    _Atomic bool stop;                /* set under the lock: exit when possible */
    const void *joiner;               /* lock: who joins it once stopped (stop_locked) */
    bool in_job;                      /* this thread is running a job */
    bool idle;                        /* on the idle stack (lock) */
    struct worker *idle_next;         /* lock */
    struct worker *all_next;          /* lock: every live worker */
    struct worker *zombie_next;       /* lock: exited, to be joined */
    unsigned id;                      /* its name is desync-<id> (set at spawn) */
    /* How long it spins for work before it sleeps (this worker alone): see
     * spin_adapt. */
    uint64_t spin_ns;
    /* Its spin ended on a long yield (CROWDED) while the lone entry it
     * watched was being run by its waiter: the sleep path leaves it (this
     * worker alone). */
    bool leave_lone;
    /* Introspection, written by this worker alone (relaxed load + store, no
     * RMW) and summed by desync_scheduler_stats: entries run, wake-ups. */
    _Atomic uint64_t nrun, nwake;
    _Atomic(dsy_runnable *) running; /* the entry it runs now, for the dump */
} worker;

struct desync_scheduler {
    dsy_spinlock lock; /* short sections only; thread creation aside */
    dsy_ring run;      /* the run list of entries (lock) */
    _Atomic size_t ready; /* == run.len, readable without the lock */
    /* The callback table of every runnable attached (one kind of owner, so
     * entries carry no pointer of their own). Written by each attach with
     * the same value; read by workers after taking an entry. */
    _Atomic(const dsy_runnable_ops *) rops;
    _Atomic size_t max_threads;
    _Atomic size_t nthreads; /* written under the lock */
    _Atomic unsigned nspinning;
    worker *idle;
    _Atomic size_t nidle; /* written under the lock; read without it (awake) */
    /* Workers kept awake for work (online cores): see AWAKE CAP. */
    size_t awake_cap;
    /* The idle worker that watches the run list while entries wait for the
     * awake workers, and the other workers' next slots (NEXT-SLOT WATCH)
     * (lock); the pops it last saw and when (lock); whether there is one
     * (readable without the lock). */
    worker *watcher;
    uint64_t npop, watch_pops, watch_since;
    _Atomic bool watched;
    /* The spinner that leaves a lone entry its grace (lock; GRACE). Set
     * only while that worker is in spin_for_work, which clears it on the
     * way out: so a lone entry it watches is taken by it, or by anyone once
     * it has stopped watching. */
    worker *grace_watcher;
    /* The lone entry the watcher saw at its last look, and its progress
     * count then (lock): one whose waiter keeps running it is left to it. */
    dsy_runnable *watch_lone;
    uint32_t watch_progress;
    worker *all;
    worker *zombies;
    bool closed;   /* freed by the user: no threads any more */
    bool immortal; /* the default scheduler */
    bool fork_restart; /* lock: a fork child's run list waits for threads */
    dsy_helper *helpers; /* lock: HELPERS sleeping (no threads only) */
    dsy_refcount refs;
    _Atomic size_t spawn_failures; /* thread starts the system refused */
    /* Introspection (lock): threads ever started (the next one's id), the
     * most alive at once, and the counts of workers that are gone. */
    unsigned nspawned;
    size_t threads_peak;
    uint64_t gone_run, gone_wake;
    /* The last try to get a thread for the run list failed (no thread could
     * be started): pushes onto a waiting queue try again (dsy_sched_poke).
     * Written under the lock (set_starved_locked), read without it. */
    _Atomic bool starved;
    /* Queues attached, and the run list's capacity (written under the
     * lock). A queue has at most one entry (LINKED) in the run list or a
     * next slot, and attaching reserves its slot, so pushing an entry
     * never needs memory: see dsy_sched_attach. */
    _Atomic size_t nattached;
    _Atomic size_t run_room;
    _Atomic(dsy_timers *) timers; /* timer.c's heap, made by the first timer */
    worker *timer_waiter;         /* lock: the idle worker parked until a deadline */
    struct desync_scheduler *list_prev, *list_next; /* every scheduler (fork) */
};

/* What find_work found. */
typedef enum work_kind {
    WORK_ENTRY,   /* an entry to run */
    WORK_STOP,    /* this worker was told to stop */
    WORK_RETIRED, /* idle too long: the worker has unlinked itself (do not touch it) */
} work_kind;

static DSY_TLS worker *tls_worker;

/* A counter that only its worker writes: no RMW. */
static inline void counter_add(_Atomic uint64_t *c) {
    atomic_store_explicit(c, atomic_load_explicit(c, memory_order_relaxed) + 1,
                          memory_order_relaxed);
}

_Atomic unsigned dsy_sched_starved_count;

/* Lock held. Keeps dsy_sched_starved_count, which pushes read first. */
static void set_starved_locked(desync_scheduler_t *s, bool starved) {
    if (atomic_load_explicit(&s->starved, memory_order_relaxed) == starved)
        return;
    atomic_store_explicit(&s->starved, starved, memory_order_relaxed);
    if (starved)
        atomic_fetch_add_explicit(&dsy_sched_starved_count, 1, memory_order_relaxed);
    else
        atomic_fetch_sub_explicit(&dsy_sched_starved_count, 1, memory_order_relaxed);
}
static void sched_list_add(desync_scheduler_t *s);
static void sched_list_remove(desync_scheduler_t *s);
static dsy_thread *listing_begin(desync_scheduler_t *s, dsy_runnable *r);
static void listing_end(dsy_thread *t);
static void fork_restart_locked(desync_scheduler_t *s);

/* ------------------------------------------------------------ run list */

/* Lock held. There is always room: its queue's slot was reserved when
 * the queue attached. */
static void runlist_push(desync_scheduler_t *s, dsy_runnable *r) {
    dsy_ring_put(&s->run, r);
    atomic_store_explicit(&s->ready, s->run.len, memory_order_relaxed);
}

/* Lock held. NULL if empty. */
static dsy_runnable *runlist_pop(desync_scheduler_t *s) {
    if (!s->run.len)
        return NULL;
    s->npop++; /* progress, for the watcher */
    dsy_runnable *r = dsy_ring_take(&s->run);
    atomic_store_explicit(&s->ready, s->run.len, memory_order_relaxed);
    return r;
}

static dsy_runnable *pop_global(desync_scheduler_t *s) {
    dsy_spin_lock(&s->lock);
    dsy_runnable *r = runlist_pop(s);
    dsy_spin_unlock(&s->lock);
    return r;
}

/* For a worker looking for work, which can look again: does not wait for
 * the lock. Spinning workers that queued for it held up the submitters
 * (each pop attempt behind a submit, each submit behind several attempts):
 * with one producer desyncing onto many idle objects (W6, CM), half of its
 * time went into waiting for this lock. */
static dsy_runnable *pop_global_try(desync_scheduler_t *s) {
    if (!dsy_spin_trylock(&s->lock))
        return NULL;
    dsy_runnable *r = runlist_pop(s);
    dsy_spin_unlock(&s->lock);
    return r;
}

static const dsy_runnable_ops *rops(desync_scheduler_t *s) {
    return atomic_load_explicit(&s->rops, memory_order_relaxed);
}

/* Runs r to the end on this thread (no fairness limit): for entries that no
 * worker will take (a freeing thread). */
static void run_here(desync_scheduler_t *s, dsy_runnable *r) {
    rops(s)->run(r, 0, false);
}

/* ------------------------------------------------------------- threads */

static void *worker_main(void *arg);

/* Starts a worker (lock held). 0, DESYNC_ENOMEM or DESYNC_EAGAIN. */
static int spawn_locked(desync_scheduler_t *s) {
    worker *w = calloc(1, sizeof *w);
    if (!w)
        return DESYNC_ENOMEM;
    w->s = s;
    w->id = s->nspawned + 1;
    w->spin_ns = DSY_WORKER_SPIN_NS;
    int rc = dsy_thread_start(&w->thread, worker_main, w);
    if (rc != 0) {
        free(w);
        return rc;
    }
    s->nspawned++;
    w->all_next = s->all;
    s->all = w;
    size_t n = atomic_load(&s->nthreads) + 1;
    atomic_store_explicit(&s->nthreads, n, memory_order_relaxed);
    if (n > s->threads_peak)
        s->threads_peak = n;
    set_starved_locked(s, false);
    return 0;
}

static void unlink_all(desync_scheduler_t *s, worker *w) {
    for (worker **p = &s->all; *p; p = &(*p)->all_next)
        if (*p == w) {
            *p = w->all_next;
            break;
        }
    atomic_store_explicit(&s->nthreads, atomic_load(&s->nthreads) - 1, memory_order_relaxed);
    s->gone_run += atomic_load_explicit(&w->nrun, memory_order_relaxed);
    s->gone_wake += atomic_load_explicit(&w->nwake, memory_order_relaxed);
}

static void timer_waiter_gone_locked(desync_scheduler_t *s, worker *w);

/* Lock held: w, idle, is woken or leaves the idle stack: no longer the
 * watcher (the next deferred entry finds another). */
static void unwatch_locked(desync_scheduler_t *s, worker *w) {
    if (s->watcher == w) {
        s->watcher = NULL;
        atomic_store_explicit(&s->watched, false, memory_order_relaxed);
    }
}

/* Lock held: w becomes the watcher, from now. */
static void watch_locked(desync_scheduler_t *s, worker *w) {
    s->watcher = w;
    atomic_store_explicit(&s->watched, true, memory_order_relaxed);
    s->watch_pops = s->npop;
    s->watch_since = dsy_now_ns();
    s->watch_lone = NULL;
    for (worker *o = s->all; o; o = o->all_next)
        o->watch_seq = atomic_load_explicit(&o->next_seq, memory_order_relaxed);
}

/* Lock held, w the watcher or about to be (NEXT-SLOT WATCH). With `period`
 * (a whole watch period since the last look): takes over and returns an
 * entry that has stayed in another worker's next slot since that look (the
 * same fill count: the job that stashed it has not returned), and notes the
 * fill counts for the next look. Else, and if there is none, returns NULL;
 * *filled then says whether another worker's next slot holds an entry.
 * (A fill is counted just after its store: a look between the two may take
 * a fresh entry over, which only moves it to another thread.) */
static dsy_runnable *next_slots_look_locked(desync_scheduler_t *s, worker *w, bool period,
                                            bool *filled) {
    *filled = false;
    for (worker *o = s->all; o; o = o->all_next) {
        if (o == w || !atomic_load_explicit(&o->next_q, memory_order_relaxed))
            continue;
        uint32_t seq = atomic_load_explicit(&o->next_seq, memory_order_relaxed);
        if (period && seq == o->watch_seq) {
            /* acq_rel: pairs with the filler's exchange (submit). */
            dsy_runnable *r = atomic_exchange_explicit(&o->next_q, NULL, memory_order_acq_rel);
            if (r)
                return r;
            continue;
        }
        *filled = true;
        if (period)
            o->watch_seq = seq;
    }
    return NULL;
}

/* Workers awake: not on the idle stack (a snapshot without the lock). */
static inline size_t awake(desync_scheduler_t *s) {
    size_t n = atomic_load_explicit(&s->nthreads, memory_order_relaxed);
    size_t idle = atomic_load_explicit(&s->nidle, memory_order_relaxed);
    return n > idle ? n - idle : 0;
}

static void wake_locked(worker *w) {
    if (DSY_UNLIKELY(w->s->timer_waiter == w))
        timer_waiter_gone_locked(w->s, w);
    unwatch_locked(w->s, w);
    w->idle = false;
    atomic_store_explicit(&w->wake, WAKE_WORK, memory_order_release);
}

/* The futex wake is done after the lock is dropped, so the woken thread does
 * not block on the lock at once. If it has exited meanwhile, waking an
 * address nobody waits on is harmless. */
static void unpark_worker(worker *w) {
    if (w)
        dsy_unpark_one(&w->wake);
}

/* Lock held, nobody watching: the idle worker on top of the stack (not the
 * timer waiter) becomes the watcher, returned in *unpark to be unparked once
 * the lock is dropped; or, with no idle worker and room in the pool, a
 * thread is started as the watcher (it sleeps at once: worker_main). False
 * if neither was possible. */
static bool watcher_appoint_locked(desync_scheduler_t *s, worker **unpark) {
    worker *w = s->idle;
    *unpark = NULL;
    if (w && w != s->timer_waiter) {
        watch_locked(s, w);
        atomic_store_explicit(&w->wake, WAKE_WATCH, memory_order_release);
        *unpark = w;
        return true;
    }
    if (w || s->closed || atomic_load(&s->nthreads) >= atomic_load(&s->max_threads))
        return false;
    if (spawn_locked(s) != 0) {
        atomic_fetch_add_explicit(&s->spawn_failures, 1, memory_order_relaxed);
        set_starved_locked(s, true);
    } else {
        watch_locked(s, s->all);
    }
    return true;
}

/* After the run list grew (lock held): make sure some thread will look.
 * Returns a worker to unpark once the lock is dropped, or NULL.
 *
 * If a thread is needed and cannot be started (the system refused it, or no
 * memory for its record), the entry stays on the run list for the threads
 * that exist, and the scheduler is marked starved: every later push onto a
 * queue whose token waits here tries again (dsy_sched_poke), as does the
 * next entry submitted; a sync or future wait on the queue runs it on the
 * waiting thread meanwhile. So one failed start never stalls a queue. */
static worker *kick_locked(desync_scheduler_t *s, bool force) {
    /* seq_cst: pairs with the spinners' count (spin_for_work). */
    if (atomic_load_explicit(&s->nspinning, memory_order_seq_cst))
        return NULL;
    if (!force && awake(s) >= s->awake_cap) {
        /* The awake workers take it (AWAKE CAP); an idle one watches. */
        if (s->watcher || !s->run.len)
            return NULL;
        worker *w;
        if (watcher_appoint_locked(s, &w))
            return w;
        /* Only the timer waiter is idle, or no room: as for any entry. */
    }
    if (s->idle) {
        worker *w = s->idle;
        DSY_ASSERT(w->idle && s->nidle > 0);
        s->idle = w->idle_next;
        s->nidle--;
        wake_locked(w);
        set_starved_locked(s, false);
        return w;
    }
    if (!s->closed && atomic_load(&s->nthreads) < atomic_load(&s->max_threads) &&
        spawn_locked(s) != 0) {
        atomic_fetch_add_explicit(&s->spawn_failures, 1, memory_order_relaxed);
        set_starved_locked(s, true);
    }
    return NULL;
}

/* A worker has just taken an entry: if more are waiting, make sure another
 * thread looks at them. Submitters kick only when nobody spins, and the
 * spinner they counted on takes one entry: without this, a second entry
 * submitted meanwhile waited, with threads asleep, until the next submit. */
static void kick_if_backlog(desync_scheduler_t *s) {
    if (!atomic_load_explicit(&s->ready, memory_order_relaxed))
        return;
    /* Enough workers awake, and watched: nothing to do (kick_locked). */
    if (awake(s) >= s->awake_cap && atomic_load_explicit(&s->watched, memory_order_relaxed))
        return;
    dsy_spin_lock(&s->lock);
    worker *w = s->run.len ? kick_locked(s, false) : NULL;
    dsy_spin_unlock(&s->lock);
    unpark_worker(w);
}

/* One kick per waiting queue (lock held), while kicks wake or start threads. */
static void kick_waiting_locked(desync_scheduler_t *s) {
    for (size_t i = 0; i < s->run.len; i++) {
        size_t before = atomic_load(&s->nthreads);
        worker *w = kick_locked(s, false);
        if (w)
            dsy_unpark_one(&w->wake); /* w cannot exit while we hold the lock */
        else if (atomic_load(&s->nthreads) == before)
            break;
    }
}

static void join_list(worker *z) {
    while (z) {
        worker *next = z->zombie_next;
        pthread_join(z->thread, NULL);
        free(z);
        z = next;
    }
}

static _Atomic uint32_t *helper_take_locked(desync_scheduler_t *s);

/* An entry was stashed in a next slot and nobody watches: appoint a
 * watcher (an idle worker, or a new thread). */
static void next_slot_watch(desync_scheduler_t *s) {
    worker *w = NULL;
    dsy_spin_lock(&s->lock);
    if (!s->watcher)
        watcher_appoint_locked(s, &w);
    dsy_spin_unlock(&s->lock);
    unpark_worker(w);
}

/* force: wake or start a worker for r even with enough awake (the caller,
 * awake, is about to block). */
static void submit(desync_scheduler_t *s, dsy_runnable *r, bool force) {
    worker *w = tls_worker;
    if (w && w->s == s && w->in_job) {
        dsy_runnable *old = atomic_exchange_explicit(&w->next_q, r, memory_order_acq_rel);
        atomic_fetch_add_explicit(&w->next_seq, 1, memory_order_relaxed);
        if (!old) {
            /* The job may now block outside the library: a watcher looks
             * at the slot (NEXT-SLOT WATCH). Relaxed loads only, while a
             * watcher exists or the pool is full and busy. */
            if (DSY_UNLIKELY(!atomic_load_explicit(&s->watched, memory_order_relaxed)) &&
                (atomic_load_explicit(&s->nidle, memory_order_relaxed) ||
                 atomic_load_explicit(&s->nthreads, memory_order_relaxed) <
                     atomic_load_explicit(&s->max_threads, memory_order_relaxed)))
                next_slot_watch(s);
            return;
        }
        r = old; /* the older one goes to the run list */
    }
    dsy_thread *me = listing_begin(s, r);
    dsy_spin_lock(&s->lock);
    listing_end(me);
    if (s->closed) {
        dsy_spin_unlock(&s->lock);
        rops(s)->orphan(r);
        return;
    }
    runlist_push(s, r);
    _Atomic uint32_t *helper = s->helpers ? helper_take_locked(s) : NULL;
    worker *wake = kick_locked(s, force);
    if (DSY_UNLIKELY(s->fork_restart))
        fork_restart_locked(s);
    worker *z = s->zombies;
    s->zombies = NULL;
    dsy_spin_unlock(&s->lock);
    unpark_worker(wake);
    if (helper)
        dsy_unpark_one(helper); /* harmless if it has gone (a futex word) */
    join_list(z);
}

void dsy_sched_submit(desync_scheduler_t *s, dsy_runnable *r) { submit(s, r, false); }

/* HELPERS: takes the first listed helper that is still waiting and sets
 * its word to HELP; returns the word if it slept (to wake it after the
 * unlock), else NULL. A helper whose word says TOKEN or DONE is leaving: it
 * is unlisted and the next one tried. */
static _Atomic uint32_t *helper_take_locked(desync_scheduler_t *s) {
    while (s->helpers) {
        dsy_helper *h = s->helpers;
        s->helpers = h->next;
        h->listed = false;
        uint32_t w = atomic_load_explicit(h->word, memory_order_relaxed);
        /* CAS, not exchange: TOKEN and DONE are final for this wait. */
        while ((w == DSY_W_WAITING || w == DSY_W_SLEEPING) &&
               !atomic_compare_exchange_weak_explicit(h->word, &w, DSY_W_HELP,
                                                      memory_order_release,
                                                      memory_order_relaxed)) {
        }
        if (w == DSY_W_SLEEPING)
            return h->word;
        if (w == DSY_W_WAITING)
            return NULL; /* awake: it sees HELP before it sleeps */
    }
    return NULL;
}

bool dsy_sched_helper_add(desync_scheduler_t *s, dsy_helper *h) {
    h->listed = false;
    if (atomic_load_explicit(&s->max_threads, memory_order_relaxed) != 0)
        return false;
    dsy_spin_lock(&s->lock);
    bool listed = !s->closed && atomic_load_explicit(&s->max_threads, memory_order_relaxed) == 0;
    if (listed) {
        h->next = s->helpers;
        s->helpers = h;
        h->listed = true;
    }
    dsy_spin_unlock(&s->lock);
    return listed; /* (h->listed may be cleared by a submit from here on) */
}

void dsy_sched_helper_remove(desync_scheduler_t *s, dsy_helper *h) {
    dsy_spin_lock(&s->lock);
    if (h->listed) {
        dsy_helper **p = &s->helpers;
        while (*p != h)
            p = &(*p)->next;
        *p = h->next;
        h->listed = false;
    }
    dsy_spin_unlock(&s->lock);
}

bool dsy_sched_help_one(desync_scheduler_t *s) {
    if (!atomic_load_explicit(&s->ready, memory_order_relaxed))
        return false;
    dsy_runnable *r = pop_global(s);
    if (r)
        run_here(s, r);
    return r != NULL;
}

void dsy_sched_poke(desync_scheduler_t *s) {
    if (DSY_LIKELY(!atomic_load_explicit(&s->starved, memory_order_relaxed)))
        return;
    dsy_spin_lock(&s->lock);
    worker *wake = NULL;
    if (s->run.len)
        wake = kick_locked(s, false);
    else
        set_starved_locked(s, false); /* nothing waits */
    worker *z = s->zombies;
    s->zombies = NULL;
    dsy_spin_unlock(&s->lock);
    unpark_worker(wake);
    join_list(z);
}

bool dsy_sched_in_pool_job(void) {
    worker *w = tls_worker;
    return w && w->in_job;
}

bool dsy_sched_nothing_else(void) {
    worker *w = tls_worker;
    return w && !atomic_load_explicit(&w->next_q, memory_order_relaxed) &&
           !atomic_load_explicit(&w->s->ready, memory_order_relaxed);
}

void dsy_sched_thread_blocks(void) {
    if (DSY_UNLIKELY(atomic_load_explicit(&dsy_sched_restart_pending, memory_order_relaxed)))
        dsy_sched_fork_restart(); /* a fork child: work listed at fork gets threads */
    worker *w = tls_worker;
    if (DSY_LIKELY(!w) || !atomic_load_explicit(&w->next_q, memory_order_relaxed))
        return;
    dsy_runnable *r = atomic_exchange_explicit(&w->next_q, NULL, memory_order_acq_rel);
    if (!r)
        return;
    /* Submitted as from any other thread: to the run list, waking or
     * starting a worker for it (this one, awake, is about to block). */
    bool in_job = w->in_job;
    w->in_job = false;
    submit(w->s, r, true);
    w->in_job = in_job;
}

/* Adapts w's spin to how soon work came (the adaptive mutex's rule, for a
 * worker): a spin that found work, or a sleep that work ended sooner than a
 * whole spin would have lasted, says spinning pays and doubles it, up to
 * DSY_WORKER_SPIN_NS; a sleep longer than that says the spin was CPU thrown
 * away and halves it, down to DSY_WORKER_SPIN_MIN_NS. A process whose work
 * comes seldom (IB) stops burning a core's share on spins; a stream keeps
 * its workers spinning. */
static void spin_adapt(worker *w, bool pays) {
    if (pays)
        w->spin_ns = w->spin_ns * 2 < DSY_WORKER_SPIN_NS ? w->spin_ns * 2 : DSY_WORKER_SPIN_NS;
    else
        w->spin_ns = w->spin_ns / 2 > DSY_WORKER_SPIN_MIN_NS ? w->spin_ns / 2
                                                            : DSY_WORKER_SPIN_MIN_NS;
}

/* GRACE: what a spinner knows of the lone entry it leaves alone (see the
 * top comment): since when (0: none seen), which, its progress count, the
 * grace it gets (doubled each time its waiter ran it meanwhile, up to
 * DSY_WORKER_GRACE_MAX_NS), and whether this spinner is the scheduler's
 * grace_watcher. */
typedef struct lone_look {
    uint64_t since;
    dsy_runnable *r;
    uint32_t progress;
    uint32_t grace_ns;
    bool watcher;
} lone_look;

/* For a spinning worker w: takes the first entry while several wait (a
 * backlog is not about to be run by whoever queued it), and a lone one once
 * it has waited out its grace. One spinner watches a lone entry's grace;
 * the others spin on as if the list were empty, then sleep: each look at an
 * entry's progress takes a cache line from the thread serving it. Only
 * tries the lock (NULL if another holds it: the spinner looks again next
 * round). */
static dsy_runnable *spin_take(desync_scheduler_t *s, worker *w, lone_look *lk, dsy_spin *sp) {
    uint64_t now = dsy_now_ns();
    if (!dsy_spin_trylock(&s->lock))
        return NULL;
    dsy_runnable *r = NULL;
    if (s->run.len == 1 && s->grace_watcher && s->grace_watcher != w) {
        /* Watched by another: look again after a grace. */
        *lk = (lone_look){now, NULL, 0, DSY_WORKER_GRACE_NS, false};
    } else if (s->run.len == 1) {
        dsy_runnable *first = dsy_ring_first(&s->run);
        uint32_t progress = rops(s)->progress(first);
        if (lk->since && first == lk->r && progress == lk->progress) {
            r = runlist_pop(s);
        } else {
            /* New to this spinner, or run by a waiter since: its grace
             * starts now, and the spin lasts beyond it (work keeps
             * arriving), so that the sleep path does not take it sooner. */
            uint32_t grace = DSY_WORKER_GRACE_NS;
            if (lk->since && first == lk->r && lk->grace_ns < DSY_WORKER_GRACE_MAX_NS / 2)
                grace = lk->grace_ns * 2;
            else if (lk->since && first == lk->r)
                grace = DSY_WORKER_GRACE_MAX_NS;
            *lk = (lone_look){now, first, progress, grace, true};
            s->grace_watcher = w;
            dsy_spin_extend_for(sp, grace);
        }
    } else if (s->run.len) {
        r = runlist_pop(s);
    } else {
        lk->since = 0;
    }
    if (lk->watcher && (r || !lk->since)) {
        s->grace_watcher = NULL;
        lk->watcher = false;
    }
    dsy_spin_unlock(&s->lock);
    return r;
}

/* Spins for w->spin_ns looking for work, then takes over next-slot
 * entries of other workers that waited through the whole spin. Returns an
 * entry, or NULL. */
static dsy_runnable *spin_for_work(worker *w) {
    desync_scheduler_t *s = w->s;
    worker *seen[DSY_WORKER_TAKEOVER_MAX];
    uint32_t seq[DSY_WORKER_TAKEOVER_MAX];
    unsigned nseen = 0;
    dsy_spin_lock(&s->lock);
    for (worker *o = s->all; o && nseen < DSY_WORKER_TAKEOVER_MAX; o = o->all_next)
        if (o != w && atomic_load_explicit(&o->next_q, memory_order_relaxed)) {
            seen[nseen] = o;
            seq[nseen++] = atomic_load_explicit(&o->next_seq, memory_order_relaxed);
        }
    dsy_spin_unlock(&s->lock);

    /* seq_cst, paired with the seq_cst load of nspinning in kick_locked: a
     * submitter that sees no spinner wakes or starts a worker; one that sees
     * this spinner counts on it to look at `ready`. This is only about who
     * runs the entry soonest: a spinner that gives up still checks the run
     * list under the lock before it sleeps (find_work), so nothing is lost
     * either way. */
    atomic_fetch_add_explicit(&s->nspinning, 1, memory_order_seq_cst);
    dsy_runnable *r = NULL;
    lone_look lk = {0, NULL, 0, DSY_WORKER_GRACE_NS, false};
    dsy_spin sp = dsy_spin_for(w->spin_ns, 0);
    unsigned round = 0;
    do {
        /* Politely: on a loaded machine the threads that make the work get
         * the CPU, and a long yield ends the spin (CROWDED); with a core to
         * spare, the yield returns at once. */
        if (++round % DSY_WORKER_SPIN_YIELD_EVERY == 0) {
            uint64_t before = dsy_now_ns();
            dsy_yield();
            if (dsy_now_ns() - before >= DSY_WORKER_CROWDED_NS) {
                /* A lone entry whose grace was restarted (its waiter kept
                 * running it) is left to the waiter and the watcher. */
                w->leave_lone = lk.watcher && lk.grace_ns > DSY_WORKER_GRACE_NS;
                break;
            }
        }
        if (atomic_load_explicit(&w->next_q, memory_order_relaxed) ||
            atomic_load_explicit(&w->stop, memory_order_relaxed))
            break;
        size_t ready = atomic_load_explicit(&s->ready, memory_order_relaxed);
        if (!ready)
            lk.since = 0;
        else if ((ready > 1 || !lk.since || dsy_now_ns() - lk.since >= lk.grace_ns) &&
                 (r = spin_take(s, w, &lk, &sp)))
            break;
    } while (dsy_spin_round(&sp));
    if (lk.watcher) { /* the watch ends with the spin (grace_watcher) */
        dsy_spin_lock(&s->lock);
        if (s->grace_watcher == w)
            s->grace_watcher = NULL;
        dsy_spin_unlock(&s->lock);
    }
    unsigned spinners = atomic_fetch_sub_explicit(&s->nspinning, 1, memory_order_seq_cst);
    DSY_ASSERT(spinners > 0);
    (void)spinners;
    if (r || atomic_load_explicit(&w->next_q, memory_order_relaxed))
        spin_adapt(w, true);
    if (r)
        kick_if_backlog(s); /* no longer counted as a spinner: others may be woken */
    if (r || !nseen)
        return r;
    /* Workers stay in the all-list until joined, and only the lock holder
     * joins them, so `seen` pointers are checked against the list again. */
    dsy_spin_lock(&s->lock);
    for (unsigned i = 0; i < nseen && !r; i++) {
        bool live = false;
        for (worker *o = s->all; o; o = o->all_next)
            live |= o == seen[i];
        if (!live || atomic_load_explicit(&seen[i]->next_seq, memory_order_relaxed) != seq[i])
            continue;
        r = atomic_exchange_explicit(&seen[i]->next_q, NULL, memory_order_acq_rel);
    }
    dsy_spin_unlock(&s->lock);
    return r;
}

/* Fires the due timers of s, if it has any (timer.c). */
static inline void fire_due_timers(desync_scheduler_t *s) {
    dsy_timers *t = atomic_load_explicit(&s->timers, memory_order_acquire);
    if (DSY_UNLIKELY(t) && dsy_timers_due(t))
        dsy_timers_fire(t);
}

/* Lock held, w about to sleep: if timers are pending and no other worker
 * waits for them, w becomes the timer waiter: returns the deadline to wake
 * at, or 1 if it has passed already (w then does not sleep); 0 otherwise.
 * A start that publishes an earlier deadline then kicks under this lock
 * (dsy_sched_timer_kick), so the deadline read here is never missed. */
static uint64_t timer_wait_locked(desync_scheduler_t *s, worker *w) {
    dsy_timers *t = atomic_load_explicit(&s->timers, memory_order_acquire);
    if (DSY_LIKELY(!t) || s->timer_waiter)
        return 0;
    uint64_t next = dsy_timers_next(t);
    if (next == UINT64_MAX)
        return 0;
    if (next <= dsy_now_ns())
        return 1;
    s->timer_waiter = w;
    return next;
}

/* Lock held: w goes on the idle stack; the timer waiter at the bottom, so
 * that it is woken for work last and keeps its watch while others can. */
static void idle_push_locked(desync_scheduler_t *s, worker *w, bool bottom) {
    worker **p = &s->idle;
    while (bottom && *p)
        p = &(*p)->idle_next;
    w->idle_next = *p;
    *p = w;
}

/* Lock held: takes idle w off the idle stack. */
static void idle_unlink_locked(desync_scheduler_t *s, worker *w) {
    for (worker **p = &s->idle; *p; p = &(*p)->idle_next)
        if (*p == w) {
            *p = w->idle_next;
            break;
        }
    s->nidle--;
}

/* Lock held: the timer waiter w is woken for work or to stop. Another idle
 * worker, if any, is woken to take over the watch
 * (it becomes the waiter as it goes back to sleep); w itself does if none. */
static void timer_waiter_gone_locked(desync_scheduler_t *s, worker *w) {
    s->timer_waiter = NULL;
    worker *o = s->idle;
    if (o == w)
        o = o->idle_next;
    if (!o)
        return;
    idle_unlink_locked(s, o);
    unwatch_locked(s, o);
    o->idle = false;
    atomic_store_explicit(&o->wake, WAKE_WORK, memory_order_release);
    dsy_unpark_one(&o->wake); /* o cannot exit while we hold the lock */
}

dsy_timers *dsy_sched_timers(desync_scheduler_t *s) {
    return atomic_load_explicit(&s->timers, memory_order_acquire);
}

dsy_timers *dsy_sched_timers_install(desync_scheduler_t *s, dsy_timers *t) {
    dsy_timers *cur = NULL;
    /* release: the heap's initial state, to the acquire loads above. */
    if (atomic_compare_exchange_strong_explicit(&s->timers, &cur, t, memory_order_acq_rel,
                                                memory_order_acquire))
        return t;
    return cur;
}

void dsy_sched_timer_kick(desync_scheduler_t *s) {
    dsy_spin_lock(&s->lock);
    worker *w = s->timer_waiter;
    if (w) {
        DSY_ASSERT(w->idle);
        s->timer_waiter = NULL; /* no hand-over: w looks at the new deadline */
        idle_unlink_locked(s, w);
        wake_locked(w);
    } else {
        w = kick_locked(s, true);
    }
    dsy_spin_unlock(&s->lock);
    unpark_worker(w);
}

/* The watcher w (idle) woke: what next? Lock not held. */
typedef enum watch_kind {
    WATCH_STAY, /* sleep again (still watching, or woken for work: see wake) */
    WATCH_GO,   /* off the idle stack: look for work as any awake worker */
} watch_kind;

/* Lock held, a watch period over with nothing taken from the run list:
 * true if it holds one entry whose waiter has run its jobs since the last
 * look (GRACE, CROWDED: it is left to the waiter for another period).
 * Records what it saw for the next look. */
static bool lone_served_locked(desync_scheduler_t *s) {
    dsy_runnable *first = s->run.len == 1 ? dsy_ring_first(&s->run) : NULL;
    uint32_t progress = first ? rops(s)->progress(first) : 0;
    bool served = first && first == s->watch_lone && progress != s->watch_progress;
    s->watch_lone = first;
    s->watch_progress = progress;
    return served;
}

/* *took: an entry taken over from another worker's next slot, with
 * WATCH_GO. */
static watch_kind watch_check(desync_scheduler_t *s, worker *w, dsy_runnable **took) {
    fire_due_timers(s); /* the awake workers may all be in long jobs */
    watch_kind k = WATCH_STAY;
    dsy_spin_lock(&s->lock);
    if (w->idle && s->watcher == w) {
        uint64_t now = dsy_now_ns();
        bool period = now - s->watch_since >= DSY_WORKER_WATCH_NS, filled;
        dsy_runnable *r = next_slots_look_locked(s, w, period, &filled);
        if (r || (!s->run.len && !filled) ||
            (s->run.len && period && s->npop == s->watch_pops && !lone_served_locked(s))) {
            /* An entry stayed in a next slot for a whole period (its
             * stasher is blocked), or nothing waits (the watch is over), or
             * nothing left the run list for a whole period (the awake
             * workers are blocked): run it, or look for work; the next
             * deferred entry gets another watcher. */
            unwatch_locked(s, w);
            idle_unlink_locked(s, w);
            w->idle = false;
            *took = r;
            k = WATCH_GO;
        } else if (period) {
            s->watch_pops = s->npop;
            s->watch_since = now;
        }
    }
    dsy_spin_unlock(&s->lock);
    return k;
}

/* The next entry to run (*out), or why there is none. A worker started as
 * the watcher (`watching`) goes to sleep at once. */
static work_kind find_work(worker *w, dsy_runnable **out, bool watching) {
    desync_scheduler_t *s = w->s;
    for (;;) {
        fire_due_timers(s);
        dsy_runnable *r = NULL;
        if (!watching) {
            r = atomic_exchange_explicit(&w->next_q, NULL, memory_order_acq_rel);
            if (!r && atomic_load_explicit(&w->stop, memory_order_relaxed))
                return WORK_STOP;
            /* With the lock taken by another, spin_for_work looks again. */
            if (!r && atomic_load_explicit(&s->ready, memory_order_relaxed) &&
                (r = pop_global_try(s)))
                kick_if_backlog(s);
            if (!r)
                r = spin_for_work(w);
            if (r) {
                *out = r;
                return WORK_ENTRY;
            }
            if (atomic_load_explicit(&w->next_q, memory_order_relaxed))
                continue;
        }
        watching = false;

        /* Sleep. The run list is checked under the lock, and submitters kick
         * under the lock, so no wake-up is lost. The watcher leaves the run
         * list to the awake workers. */
        dsy_spin_lock(&s->lock);
        bool watch = s->watcher == w;
        bool leave = w->leave_lone && s->run.len == 1 && !watch;
        w->leave_lone = false;
        /* A lone entry in a spinner's grace is left to that spinner; one
         * that a crowded spinner saw its waiter run, to the watcher. */
        if (!watch && !(s->run.len == 1 && (s->grace_watcher || leave)) && (r = runlist_pop(s))) {
            worker *other = s->run.len ? kick_locked(s, false) : NULL;
            dsy_spin_unlock(&s->lock);
            unpark_worker(other);
            *out = r;
            return WORK_ENTRY;
        }
        if (atomic_load_explicit(&w->stop, memory_order_relaxed)) {
            unwatch_locked(s, w);
            dsy_spin_unlock(&s->lock);
            return WORK_STOP;
        }
        if (leave && !s->grace_watcher) {
            /* CROWDED: the watcher (this worker if none) looks at the entry
             * each period, from its progress now. */
            if (!s->watcher)
                watch_locked(s, w);
            watch = s->watcher == w;
            s->watch_lone = dsy_ring_first(&s->run);
            s->watch_progress = rops(s)->progress(s->watch_lone);
        }
        /* The first to sleep while timers are pending sleeps only until the
         * earliest deadline (0: not the timer waiter). */
        uint64_t until = watch ? 0 : timer_wait_locked(s, w);
        if (until == 1) {
            dsy_spin_unlock(&s->lock);
            continue; /* a deadline has passed: fire it */
        }
        bool filled;
        if (!watch && !until && !s->watcher && !next_slots_look_locked(s, w, false, &filled) &&
            filled) {
            /* An entry was stashed while no worker was idle to watch it, and
             * after this one's spin began (NEXT-SLOT WATCH). */
            watch_locked(s, w);
            watch = true;
        }
        atomic_store_explicit(&w->wake, watch ? WAKE_WATCH : WAKE_ASLEEP, memory_order_relaxed);
        w->idle = true;
        idle_push_locked(s, w, until != 0);
        s->nidle++;
        dsy_spin_unlock(&s->lock);

        uint64_t start = dsy_now_ns();
        for (;;) {
            uint32_t seen = atomic_load_explicit(&w->wake, memory_order_acquire);
            uint64_t now = dsy_now_ns(), timeout = DSY_WORKER_RETIRE_NS;
            if (seen == WAKE_WATCH)
                timeout = DSY_WORKER_WATCH_NS;
            else if (until && (until <= now || until - now < timeout))
                timeout = until > now ? until - now : 1;
            if (seen != WAKE_WORK)
                dsy_park(&w->wake, seen, timeout);
            seen = atomic_load_explicit(&w->wake, memory_order_acquire);
            if (seen == WAKE_WORK) {
                counter_add(&w->nwake);
                spin_adapt(w, dsy_now_ns() - start < DSY_WORKER_SPIN_NS);
                break;
            }
            if (seen == WAKE_WATCH) {
                dsy_runnable *took = NULL;
                if (watch_check(s, w, &took) == WATCH_GO) {
                    if (took) {
                        *out = took;
                        return WORK_ENTRY;
                    }
                    break;
                }
                start = dsy_now_ns();
                continue;
            }
            now = dsy_now_ns();
            bool due = until && now >= until;
            if (!due && now - start < DSY_WORKER_RETIRE_NS)
                continue;
            dsy_spin_lock(&s->lock);
            if (w->idle && (due || s->timer_waiter == w)) {
                /* A deadline passed (or the waiter would retire): off the
                 * idle stack, to fire the timers and look again. */
                idle_unlink_locked(s, w);
                if (s->timer_waiter == w)
                    s->timer_waiter = NULL; /* no hand-over: w looks itself */
                w->idle = false;
                dsy_spin_unlock(&s->lock);
                break;
            }
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
                return WORK_RETIRED;
            }
            dsy_spin_unlock(&s->lock);
            break;
        }
    }
}

/* Runs r, then whatever it put in this worker's next slot. */
static void run_work(worker *w, dsy_runnable *r) {
    desync_scheduler_t *s = w->s;
    const dsy_runnable_ops *ops = rops(s);
    bool owned = false; /* r returned MORE: the token is still ours */
    for (;;) {
        if (!owned) {
            counter_add(&w->nrun);
            atomic_store_explicit(&w->running, r, memory_order_relaxed);
        }
        w->in_job = true;
        dsy_run_status st = ops->run(r, DSY_SCHED_BATCH, owned);
        w->in_job = false;
        owned = false;
        if (st == DSY_RUN_MORE) {
            /* Fairness: give the entry up only if something else waits. */
            if (!atomic_load_explicit(&w->stop, memory_order_relaxed) &&
                !atomic_load_explicit(&s->ready, memory_order_relaxed) &&
                !atomic_load_explicit(&w->next_q, memory_order_relaxed)) {
                owned = true;
                continue;
            }
            ops->requeue(r);
        }
        if (atomic_load_explicit(&w->stop, memory_order_relaxed) ||
            !(r = atomic_exchange_explicit(&w->next_q, NULL, memory_order_acq_rel))) {
            atomic_store_explicit(&w->running, NULL, memory_order_relaxed);
            return;
        }
    }
}

static void *worker_main(void *arg) {
    worker *w = arg;
    desync_scheduler_t *s = w->s;
    tls_worker = w;
    dsy_thread_self(); /* registered (for fork) before it takes any lock */
    char name[16]; /* the system keeps 15 bytes */
    snprintf(name, sizeof name, "desync-%u", w->id);
    dsy_os_thread_name(name);
    dsy_spin_lock(&s->lock);
    bool watching = s->watcher == w; /* started as the watcher (kick_locked) */
    dsy_spin_unlock(&s->lock);
    for (;;) {
        dsy_runnable *r = NULL;
        work_kind k = find_work(w, &r, watching);
        watching = false;
        if (k == WORK_RETIRED)
            return NULL; /* joined later by whoever finds it */
        if (k == WORK_STOP)
            break;
        run_work(w, r);
    }
    /* Stopped: the joiner (despawn or free) unlinks us; hand on our slot. */
    dsy_spin_lock(&s->lock);
    dsy_runnable *r = atomic_exchange_explicit(&w->next_q, NULL, memory_order_acq_rel);
    if (r)
        runlist_push(s, r);
    worker *wake = s->run.len ? kick_locked(s, true) : NULL;
    dsy_spin_unlock(&s->lock);
    unpark_worker(wake);
    return NULL;
}

/* ----------------------------------------------------------- lifetime */

/* Initialises zeroed memory as a scheduler, and lists it (fork). */
static void sched_init(desync_scheduler_t *s, size_t max_threads, bool immortal) {
    dsy_fork_init();
    dsy_ring_init(&s->run);
    atomic_init(&s->max_threads, max_threads);
    s->awake_cap = dsy_cpu_count();
    if (!s->awake_cap)
        s->awake_cap = 1;
    dsy_ref_init(&s->refs, 1);
    s->immortal = immortal;
    sched_list_add(s);
}

static desync_scheduler_t *sched_create(size_t max_threads, bool immortal) {
    desync_scheduler_t *s = calloc(1, sizeof *s);
    if (s)
        sched_init(s, max_threads, immortal);
    return s;
}

static void sched_release(desync_scheduler_t *s) {
    if (s->immortal || !dsy_ref_dec(&s->refs))
        return;
    if (atomic_load_explicit(&s->starved, memory_order_relaxed))
        atomic_fetch_sub_explicit(&dsy_sched_starved_count, 1, memory_order_relaxed);
    /* Only reachable after desync_scheduler_free: no threads remain, and no
     * runnable is left to have entries in the run list. */
    DSY_ASSERT(s->closed && !s->all && !s->run.len);
    sched_list_remove(s);
    dsy_ring_destroy(&s->run);
    dsy_timers_free(atomic_load_explicit(&s->timers, memory_order_acquire));
    free(s);
}

int dsy_sched_attach(desync_scheduler_t *s, const dsy_runnable_ops *ops) {
    /* Reserve this owner's run-list slot. Lock-free while there is room: if
     * k attached owners remain, the one of them that counted itself last
     * saw n >= k, and it checked n against the capacity, which only grows. */
    /* seq_cst on nattached and run_room: pairs with desync_shutdown, which
     * zeroes run_room before it looks at nattached (Dekker): either it sees
     * us and keeps the run list, or we see no room and take the lock. */
    size_t n = atomic_fetch_add_explicit(&s->nattached, 1, memory_order_seq_cst) + 1;
    if (n > atomic_load_explicit(&s->run_room, memory_order_seq_cst)) {
        dsy_spin_lock(&s->lock);
        bool ok = dsy_ring_reserve_total(&s->run, DSY_RUNLIST_INITIAL, n);
        if (ok)
            atomic_store_explicit(&s->run_room, s->run.cap, memory_order_release);
        dsy_spin_unlock(&s->lock);
        if (!ok) {
            atomic_fetch_sub_explicit(&s->nattached, 1, memory_order_relaxed);
            return DESYNC_ENOMEM;
        }
    }
    atomic_store_explicit(&s->rops, ops, memory_order_relaxed);
    if (!s->immortal)
        dsy_ref_inc(&s->refs);
    return 0;
}

void dsy_sched_detach(desync_scheduler_t *s) {
    atomic_fetch_sub_explicit(&s->nattached, 1, memory_order_relaxed);
    sched_release(s);
}

/* The default scheduler lives in static storage: creating it cannot fail
 * (no allocation), and nothing of it is left allocated after
 * desync_shutdown. */
desync_scheduler_t dsy_default_scheduler;
static desync_scheduler_t *default_sched;
static pthread_once_t default_once = PTHREAD_ONCE_INIT;

static void default_init(void) {
    unsigned n = DSY_DEFAULT_THREADS_PER_CPU * dsy_cpu_count();
    sched_init(&dsy_default_scheduler, n > DSY_DEFAULT_THREADS_MIN ? n : DSY_DEFAULT_THREADS_MIN,
               true);
    default_sched = &dsy_default_scheduler;
}

desync_scheduler_t *desync_scheduler_default(void) {
    pthread_once(&default_once, default_init);
    return default_sched;
}

desync_scheduler_t *desync_scheduler_new(size_t max_threads) {
    return sched_create(max_threads, false);
}

/* Tells v to stop, to be joined by `by` (lock held). A sleeping v is woken
 * now: it is joined later, so it is still alive. No memory is needed, so
 * stopping threads cannot fail. */
static void stop_locked(desync_scheduler_t *s, worker *v, const void *by) {
    atomic_store(&v->stop, true);
    v->joiner = by;
    if (v->idle) {
        for (worker **p = &s->idle; *p; p = &(*p)->idle_next)
            if (*p == v) {
                *p = v->idle_next;
                break;
            }
        s->nidle--;
        wake_locked(v);
        dsy_unpark_one(&v->wake);
    }
}

/* A joiner tag for workers being joined right now. */
static const char joining;

/* Joins the retired workers and those stopped by `by`, one at a time (lock
 * held on entry, dropped on return). A stopped worker stays in the all-list
 * until it is joined, as spin_for_work expects. */
static void join_stopped(desync_scheduler_t *s, const void *by) {
    worker *z = s->zombies;
    s->zombies = NULL;
    dsy_spin_unlock(&s->lock);
    join_list(z);
    for (;;) {
        dsy_spin_lock(&s->lock);
        worker *v = s->all;
        while (v && v->joiner != by)
            v = v->all_next;
        if (v)
            v->joiner = &joining;
        dsy_spin_unlock(&s->lock);
        if (!v)
            return;
        pthread_join(v->thread, NULL);
        dsy_spin_lock(&s->lock);
        unlink_all(s, v);
        /* v counted until now, so no kick could start a thread in its place
         * (the count was at the limit): work that waits gets one now. */
        worker *wake = s->run.len ? kick_locked(s, false) : NULL;
        dsy_spin_unlock(&s->lock);
        unpark_worker(wake);
        free(v);
    }
}

/* Is the calling thread running one of s's jobs (on a worker of s, or a
 * job of s's queues run by a sync or a wait)? */
static bool running_here(desync_scheduler_t *s) {
    if (tls_worker && tls_worker->s == s)
        return true;
    const dsy_runnable_ops *ops = rops(s);
    return ops && ops->running_here(s);
}

/* Runs ready entries on this thread until s is quiet: the run list empty,
 * every worker asleep and no next slot filled. Looks again every
 * DSY_SCHED_DRAIN_POLL_NS while workers finish (their jobs may queue more);
 * the hot paths pay nothing for it. */
static void drain_quiet(desync_scheduler_t *s) {
    for (;;) {
        fire_due_timers(s); /* due ones only: a periodic timer never ends */
        dsy_spin_lock(&s->lock);
        dsy_runnable *r = runlist_pop(s);
        bool quiet = !r && s->nidle == atomic_load(&s->nthreads);
        for (worker *o = s->all; quiet && o; o = o->all_next)
            quiet = !atomic_load(&o->next_q);
        dsy_spin_unlock(&s->lock);
        if (r) {
            run_here(s, r);
            continue;
        }
        if (quiet)
            return;
        dsy_sleep_ns(DSY_SCHED_DRAIN_POLL_NS); /* workers are finishing: look again */
    }
}

/* Stops every worker of s that nobody else is stopping and joins it, with
 * no allocation (stop_locked / join_stopped). Not from a worker of s. */
static void stop_all_workers(desync_scheduler_t *s) {
    const char me = 0;
    dsy_spin_lock(&s->lock);
    for (worker *o = s->all; o; o = o->all_next)
        if (!atomic_load(&o->stop))
            stop_locked(s, o, &me);
    join_stopped(s, &me); /* unlocks */
}

void desync_scheduler_free(desync_scheduler_t *s) {
    if (!s || s->immortal || running_here(s))
        return;
    drain_quiet(s);
    dsy_spin_lock(&s->lock);
    s->closed = true;
    atomic_store(&s->max_threads, 0);
    set_starved_locked(s, false); /* no thread is wanted any more */
    dsy_spin_unlock(&s->lock);
    stop_all_workers(s);
    /* Threads a concurrent despawn stopped are joined by it. */
    for (;;) {
        dsy_spin_lock(&s->lock);
        bool gone = !s->all;
        dsy_spin_unlock(&s->lock);
        if (gone)
            break;
        dsy_sleep_ns(DSY_SCHED_DRAIN_POLL_NS);
    }
    sched_release(s);
}

desync_scheduler_t *dsy_sched_worker_of(void) { return tls_worker ? tls_worker->s : NULL; }

int desync_scheduler_drain(desync_scheduler_t *s) {
    if (!s)
        s = desync_scheduler_default();
    if (running_here(s))
        return DESYNC_EDEADLK;
    /* Waiting for s's busy workers: a cycle through one of them (a worker
     * of s blocked on a queue this thread holds) is refused (waitgraph.c). */
    dsy_wait_edge edge;
    if (dsy_wait_enter_sched(&edge, s))
        return DESYNC_EDEADLK;
    drain_quiet(s);
    dsy_wait_leave(&edge);
    return 0;
}

void desync_shutdown(void) {
    desync_scheduler_t *s = desync_scheduler_default(); /* static: cannot fail */
    if (running_here(s)) {
        /* From one of its jobs (exit() on a worker, say): waiting for the
         * scheduler to be quiet, or joining its threads, could never end.
         * Run what is ready and leave the threads be. */
        dsy_runnable *r;
        while ((r = pop_global(s)))
            run_here(s, r);
    } else {
        drain_quiet(s);
        stop_all_workers(s);
        /* The run list's memory goes too if no queue is attached (none can
         * submit); the next attach grows it again. See dsy_sched_attach. */
        dsy_spin_lock(&s->lock);
        atomic_store_explicit(&s->run_room, 0, memory_order_seq_cst);
        if (!atomic_load_explicit(&s->nattached, memory_order_seq_cst) && !s->run.len)
            dsy_ring_destroy(&s->run);
        else
            atomic_store_explicit(&s->run_room, s->run.cap, memory_order_seq_cst);
        dsy_spin_unlock(&s->lock);
        dsy_timers_reclaim(atomic_load_explicit(&s->timers, memory_order_acquire));
    }
    dsy_pool_reclaim();
}

void desync_scheduler_set_max_threads(desync_scheduler_t *s, size_t n) {
    if (!s)
        return;
    dsy_spin_lock(&s->lock);
    if (!s->closed)
        atomic_store(&s->max_threads, n);
    kick_waiting_locked(s); /* waiting work may now get threads */
    dsy_spin_unlock(&s->lock);
}

size_t desync_scheduler_max_threads(desync_scheduler_t *s) {
    return s ? atomic_load(&s->max_threads) : 0;
}

size_t desync_scheduler_thread_count(desync_scheduler_t *s) {
    return s ? atomic_load(&s->nthreads) : 0;
}

int desync_scheduler_spawn_thread(desync_scheduler_t *s) {
    int rc = DESYNC_EINVAL;
    if (s) {
        dsy_spin_lock(&s->lock);
        if (!s->closed)
            rc = spawn_locked(s);
        dsy_spin_unlock(&s->lock);
    }
    return rc;
}

void desync_scheduler_despawn_threads_if_overloaded(desync_scheduler_t *s) {
    if (!s)
        return;
    const char me = 0;
    dsy_spin_lock(&s->lock);
    /* Threads another despawn (or free) is stopping already go: counting
     * them too, two despawns at once would stop every thread. */
    size_t have = 0, max = atomic_load(&s->max_threads);
    for (worker *o = s->all; o; o = o->all_next)
        have += !atomic_load(&o->stop);
    size_t excess = have > max ? have - max : 0, n = 0;
    /* Idle workers first, then busy ones; never the calling thread. */
    for (int pass = 0; pass < 2; pass++)
        for (worker *o = s->all; o && n < excess; o = o->all_next)
            if (o != tls_worker && !atomic_load(&o->stop) && o->idle == (pass == 0)) {
                stop_locked(s, o, &me);
                n++;
            }
    join_stopped(s, &me);
}

/* ------------------------------------------------------- introspection */

int desync_scheduler_stats(desync_scheduler_t *s, desync_scheduler_stats_t *out) {
    if (!out)
        return DESYNC_EINVAL;
    if (!s)
        s = desync_scheduler_default();
    dsy_spin_lock(&s->lock);
    out->threads = atomic_load(&s->nthreads);
    out->threads_peak = s->threads_peak;
    out->max_threads = atomic_load(&s->max_threads);
    out->ready = s->run.len;
    out->queues_run = s->gone_run;
    out->wakeups = s->gone_wake;
    for (worker *o = s->all; o; o = o->all_next) {
        out->queues_run += atomic_load_explicit(&o->nrun, memory_order_relaxed);
        out->wakeups += atomic_load_explicit(&o->nwake, memory_order_relaxed);
    }
    out->spawn_failures = atomic_load_explicit(&s->spawn_failures, memory_order_relaxed);
    dsy_spin_unlock(&s->lock);
    return 0;
}

/* What the dump shows, copied under the lock and printed after it: no I/O
 * under a spinlock. Entries are only compared and named by their owner
 * (rops->name), never dereferenced here. */
#define DUMP_MAX 64

void desync_scheduler_dump(desync_scheduler_t *s, FILE *f) {
    if (!s)
        s = desync_scheduler_default();
    if (!f)
        f = stderr;
    desync_scheduler_stats_t st;
    desync_scheduler_stats(s, &st);
    struct {
        unsigned id;
        bool idle;
        dsy_runnable *running;
    } ws[DUMP_MAX];
    dsy_runnable *ready[DUMP_MAX];
    size_t nw = 0, nr = 0;
    dsy_spin_lock(&s->lock);
    for (worker *o = s->all; o && nw < DUMP_MAX; o = o->all_next, nw++) {
        ws[nw].id = o->id;
        ws[nw].idle = o->idle;
        ws[nw].running = atomic_load_explicit(&o->running, memory_order_relaxed);
    }
    for (size_t i = 0; i < s->run.len && nr < DUMP_MAX; i++)
        ready[nr++] = s->run.slots[dsy_ring_at(&s->run, i)];
    dsy_spin_unlock(&s->lock);
    const dsy_runnable_ops *ops = rops(s);
    char name[128];
    fprintf(f, "desync scheduler %p%s: %zu threads (peak %zu, max %zu), %zu ready, "
               "%llu queues run, %llu wake-ups, %llu spawn failures\n",
            (void *)s, s->immortal ? " (default)" : "", st.threads, st.threads_peak,
            st.max_threads, st.ready, (unsigned long long)st.queues_run,
            (unsigned long long)st.wakeups, (unsigned long long)st.spawn_failures);
    for (size_t i = 0; i < nw; i++) {
        if (ws[i].running && ops) {
            ops->name(ws[i].running, name, sizeof name);
            fprintf(f, "  thread desync-%u: running %s\n", ws[i].id, name);
        } else {
            fprintf(f, "  thread desync-%u: %s\n", ws[i].id,
                    ws[i].idle ? "asleep" : "looking for work");
        }
    }
    for (size_t i = 0; i < nr && ops; i++) {
        ops->name(ready[i], name, sizeof name);
        fprintf(f, "  ready: %s\n", name);
    }
    if (ops)
        ops->dump(s, f);
}

/* ------------------------------------------------------------------ fork
 *
 * Around fork (fork.c) the list mutex and every scheduler's lock are held,
 * so the child finds no run list half updated. In the child no worker
 * exists but the calling thread (a worker if it forked from a job):
 *   - the run lists stay, and the entries in the next slots of vanished
 *     workers, or in the hands of a vanished thread that was listing one
 *     (between dsy_sched_submit's start and its lock), join them: work that
 *     was queued at fork stays runnable;
 *   - the vanished workers' structs are freed, unjoined (their threads do not
 *     exist here; neither do the exited ones on the zombie list);
 *   - counts are reset; threads start again on demand: at the first submit
 *     to a scheduler that had work listed, or the first time a thread of the
 *     child goes to sleep in the library (dsy_sched_fork_restart), so a child
 *     that only calls exec or _exit starts none.
 * Not covered: an entry a worker has popped and not yet claimed (a few
 * instructions outside the lock) is lost with its worker; its queue stays
 * ready and runs when a thread syncs or waits on it.
 */

static pthread_mutex_t sched_list_lock = PTHREAD_MUTEX_INITIALIZER;
static desync_scheduler_t *sched_list;
_Atomic bool dsy_sched_restart_pending;

static void sched_list_add(desync_scheduler_t *s) {
    pthread_mutex_lock(&sched_list_lock);
    s->list_next = sched_list;
    if (sched_list)
        sched_list->list_prev = s;
    sched_list = s;
    pthread_mutex_unlock(&sched_list_lock);
}

static void sched_list_remove(desync_scheduler_t *s) {
    pthread_mutex_lock(&sched_list_lock);
    DSY_DLIST_UNLINK(&sched_list, s, list_prev, list_next);
    pthread_mutex_unlock(&sched_list_lock);
}

/* Marks r as being listed on s by this thread, from before it takes s's lock
 * (where a fork may find it waiting) to listing_end, under the lock. The
 * entry is stored first and cleared last, so the child never pairs an entry
 * with another scheduler. */
static dsy_thread *listing_begin(desync_scheduler_t *s, dsy_runnable *r) {
    dsy_thread *t = dsy_thread_self();
    atomic_store_explicit(&t->submit_entry, r, memory_order_relaxed);
    atomic_store_explicit(&t->submit_sched, s, memory_order_release);
    return t;
}

static void listing_end(dsy_thread *t) {
    atomic_store_explicit(&t->submit_sched, NULL, memory_order_relaxed);
    atomic_store_explicit(&t->submit_entry, NULL, memory_order_relaxed);
}

/* Child, lock held: r (from a vanished thread) joins s's run list. Without
 * memory for the run list it is dropped: its queue stays ready, for a thread
 * that syncs or waits on it. */
static void fork_relist_locked(desync_scheduler_t *s, dsy_runnable *r) {
    if (s->closed)
        rops(s)->orphan(r);
    else
        (void)runlist_push(s, r);
}

static void fork_restart_locked(desync_scheduler_t *s) {
    s->fork_restart = false;
    kick_waiting_locked(s);
    if (!s->run.len && !s->all) { /* pending timers only: a thread for them */
        worker *w = kick_locked(s, true);
        if (w)
            dsy_unpark_one(&w->wake);
    }
}

void dsy_sched_fork_prepare(void) {
    pthread_mutex_lock(&sched_list_lock);
    for (desync_scheduler_t *s = sched_list; s; s = s->list_next)
        dsy_spin_lock(&s->lock);
}

void dsy_sched_fork_parent(void) {
    for (desync_scheduler_t *s = sched_list; s; s = s->list_next)
        dsy_spin_unlock(&s->lock);
    pthread_mutex_unlock(&sched_list_lock);
}

void dsy_sched_fork_vanished(dsy_thread *t) {
    desync_scheduler_t *s = atomic_load_explicit(&t->submit_sched, memory_order_acquire);
    dsy_runnable *r = atomic_load_explicit(&t->submit_entry, memory_order_relaxed);
    if (s && r)
        fork_relist_locked(s, r);
}

void dsy_sched_fork_child(void) {
    bool restart = false;
    for (desync_scheduler_t *s = sched_list; s; s = s->list_next) {
        worker *me = tls_worker && tls_worker->s == s ? tls_worker : NULL;
        for (worker *o = s->all, *next; o; o = next) {
            next = o->all_next;
            dsy_runnable *r = atomic_exchange_explicit(&o->next_q, NULL, memory_order_relaxed);
            if (r)
                fork_relist_locked(s, r);
            if (o != me)
                free(o);
        }
        for (worker *z = s->zombies, *next; z; z = next) {
            next = z->zombie_next;
            free(z);
        }
        if (me) {
            /* Forked from a job: the rest of that job is no pool job for the
             * next-slot shortcut (no other thread would take work from it). */
            me->all_next = NULL;
            me->idle = false;
            me->in_job = false;
        }
        s->all = me;
        s->idle = NULL;
        s->nidle = 0;
        s->zombies = NULL;
        s->timer_waiter = NULL;
        s->watcher = NULL;
        s->helpers = NULL; /* threads that are not in the child */
        atomic_store_explicit(&s->watched, false, memory_order_relaxed);
        atomic_store_explicit(&s->nthreads, me ? 1 : 0, memory_order_relaxed);
        atomic_store_explicit(&s->nspinning, 0, memory_order_relaxed);
        dsy_timers *tm = atomic_load_explicit(&s->timers, memory_order_relaxed);
        s->fork_restart = s->run.len > 0 || (tm && dsy_timers_next(tm) != UINT64_MAX);
        restart |= s->fork_restart;
        dsy_spin_unlock(&s->lock);
    }
    atomic_store_explicit(&dsy_sched_restart_pending, restart, memory_order_relaxed);
    pthread_mutex_unlock(&sched_list_lock);
}

void dsy_sched_fork_restart(void) {
    if (!atomic_exchange_explicit(&dsy_sched_restart_pending, false, memory_order_relaxed))
        return;
    pthread_mutex_lock(&sched_list_lock);
    for (desync_scheduler_t *s = sched_list; s; s = s->list_next) {
        dsy_spin_lock(&s->lock);
        if (s->fork_restart)
            fork_restart_locked(s);
        dsy_spin_unlock(&s->lock);
    }
    pthread_mutex_unlock(&sched_list_lock);
}
