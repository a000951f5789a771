/*
 * The serial job queue: the one place that owns every queue state transition.
 * Model: models/queue.pml (make model); a protocol change changes it in the same commit.
 *
 * JOB LIST. An intrusive multi-producer list in the style of Dmitry Vyukov's
 * MPSC queue, without a stub node: a producer links a node with one atomic
 * exchange on `tail` and then publishes it through the previous node's
 * `next`. A node stays in the list until its job has *finished*, so
 *
 *      tail == NULL  <=>  the queue is idle (nothing pending, nothing running).
 *
 * RUN TOKEN. The exchange (or CAS, for an idle sync) that finds tail == NULL
 * creates the queue's run token: the right to run its jobs and to touch
 * `head`. Exactly one party holds it while the queue is busy, so each queue is
 * scheduled once, with no lock. The holder runs the head node, unlinks it
 * (advance: the CAS tail: n -> NULL that succeeds destroys the token and
 * makes the queue idle), and goes on. The token moves only through:
 *
 *   held by a thread --dsy_token_place--> first waiter (give_token)
 *                                      \-> scheduler (state READY|LINKED)
 *   scheduler --claim (worker pops entry) or steal (waiter clears READY)--> thread
 *   held by a thread --node run returns DSY_PARKED--> a future / a resumer
 *   future / resumer --dsy_token_place--> the head node runs again (parking
 *                                         nodes keep their own phase)
 *
 * A token that is not held by the thread that created it on the idle-sync
 * fast path carries one queue reference, so a queue never disappears under
 * a token in transit. A LINKED run-list entry keeps the reference of the
 * token it was created for; a thread that steals the token takes its own.
 *
 * WAITING. A syncer whose queue is busy first watches it for a moment (a
 * short job of another syncer ends sooner than a hand-off), then links a node
 * on its stack, counts itself in `state` (DSY_WAITER units), and either
 * steals the token if it is READY or sleeps on its node's word. The token
 * holder that gives the token up while waiters are counted hands it to the
 * first waiting node in the list, so a waiter never sleeps while its queue
 * has work and no runner. Its word then says TOKEN, and the waiter runs the
 * queue itself up to and including its own job. Holders that meet a sync node
 * run it for the waiter (combining) and then set its word to DONE; a syncer
 * about to hand the token to a waiter that has gone to sleep does the same
 * for a few, rather than stall the queue on a wake-up.
 *
 * BARGING. A sync that still finds the queue busy after its pre-spin, with
 * no more queued nodes pending than threads blocked on their nodes
 * (BACKLOG's counts against the waiter count: the queue's users are other
 * syncs), does not link its node yet: like a mutex waiter, it waits outside
 * until the queue goes idle, then takes it with the idle CAS. It counts
 * itself in `state` and sets BARGE, and watches `tail` for a moment; if the
 * queue stays busy, it sets BSLEEP, looks at `tail` once more, and sleeps
 * on `state`. Whoever makes the queue idle (the CAS tail: n -> NULL in
 * advance or after an idle sync) looks at both bits
 * (queue_fast.h: went_idle): with BSLEEP it wakes every sleeper; with BARGE
 * alone it clears it and waits for a watcher to take the queue (for at most
 * DSY_SYNC_BARGE_TAKE_NS), then DSY_SYNC_BARGE_WINDOW_NS before it may take
 * it again, so that a watcher gets its turn without a futex call. A
 * token given to the scheduler (READY) wakes the sleepers too. The last
 * counted waiter to leave clears both bits (more waiters than the count
 * holds wait uncounted, under SAT). So the thread that is using the queue
 * keeps it and its cache lines for a stretch of calls while the others wait,
 * rather than every sync being handed across cores in turn (W3, W3b: a lock
 * convoy), and a queue nobody waits outside costs its user nothing. (Until
 * 6f19de0 a waiter set BARGE and left it set, and slept at once: W3's two
 * threads made 600,000 futex calls for nothing in 4M syncs, at 2-3x the
 * mutex's time.) Its place is not fixed before it links, so the order of
 * jobs is still the order of their linking. No sync waits outside longer
 * than DSY_SYNC_BARGE_NS: it then links its node and gets its turn in order.
 * A waiter outside that sees READY links at once (it may be the thread the
 * token waits for).
 *
 * DEADLOCKS. Each thread keeps a chain of frames for the jobs it is running
 * (dsy_self.frame); a job run for a blocked syncer also links that syncer's
 * chain. A sync on a queue in the chain can never complete: DESYNC_EDEADLK.
 *
 * FORK. A thread also marks, with holds (internal.h), the stretches where it
 * holds a token outside a job frame (running a queue between jobs, handing
 * the token on) or is linked in a queue (a waiter, a producer mid-push). The
 * child of a fork forks off every busy queue marked by a vanished thread
 * (FORKED, at the end of this file): sync, desync and waits on it return
 * DESYNC_EFORKED, and whoever still holds its token (the forking thread,
 * after its job) drops it.
 *
 * BACKLOG. `pushed` counts the nodes dsy_queue_push links, `unlinked` the
 * nodes token holders unlink (added every DSY_BACKLOG_YIELD_EVERY, before
 * the CAS that may make the queue idle, and before a node that may hand the
 * token on is run: always while the token is held, so `unlinked` has one
 * writer at a time and is added to with a load and a store, no RMW). Both
 * are relaxed: their difference is only a hint (unlinked never passes
 * pushed: a node is counted pushed before it is linked). A desync onto a
 * queue more than DSY_BACKLOG_YIELD jobs behind yields now and then (never
 * waits): with more producers than cores, the queue's thread gets the CPU to
 * catch up.
 *
 * LIMITS. A queue may carry a limit on pending desync jobs, kept in its cold
 * part (struct dsy_queue_cold, allocated on first use). Nothing on the hot
 * path reads it: dsy_desync tests one global word, `gate`, that it loads
 * anyway for the fork check, and only once some queue of the process has
 * had a limit does a desync look at its queue's cold part. A desync admitted
 * under a limit counts itself in `pending` (CAS below the limit) and is
 * queued with the bounded job ops, whose run subtracts it again once the job
 * has run; a producer that finds the queue full counts itself in `nblocked`
 * and parks on the `room` word. pending-- / nblocked++ and the loads after
 * them are seq_cst (Dekker): either the runner sees the blocked producer and
 * wakes it (once pending is down to half the limit), or the producer sees
 * the room. A blocked producer first runs the queue itself if its token
 * waits for a thread (dsy_queue_help), and parks with a timeout (growing to
 * DSY_BOUNDED_POLL_MAX_NS) for the cases where the token becomes free
 * without a job running (a resume or a future on a queue no thread runs).
 *
 * RUNNING. A worker that has run a fed queue's last job polls for the next
 * one for up to LINGER_NS before the queue goes idle, so a steady producer
 * does not send the queue through the scheduler on every job. Runners keep
 * `head` and the object's data in registers: both live on the cache line of
 * `tail`, which every producer exchanges.
 *
 * Memory ordering: tail exchange/CAS are acq_rel (they order a busy period
 * after the previous one's idle CAS), `next` is store-release/load-acquire,
 * state CASes that move the token are acq_rel, and waiter words are
 * exchange-release/load-acquire. No stand-alone fences (ThreadSanitizer does
 * not model them).
 */
#include "internal.h"
#include "queue_fast.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/*
 * Queue state word:
 *   LINKED   an entry for this queue sits in a scheduler run list or a worker's
 *            next slot (it may be stale: its claim fails once READY is gone)
 *   READY    the run token is with the scheduler; whoever clears READY with a
 *            CAS (a worker claiming the entry, or a waiting syncer) owns it
 *   SUSPENDED a suspend node holds the token (a resumer exists)
 *   OBJECT   the queue is part of a desync_t (set once, at init)
 *   FORKED   in a fork child: the queue was forked off (see fork below)
 *   HELD     a future node parked the token until a future completes or a
 *            waiter comes (future.c); read only by desync_queue_stats
 *   BARGE    syncers wait outside, watching (BARGING): the next to make
 *            the queue idle clears it and leaves them a moment to take it
 *   BSLEEP   syncers waiting outside may sleep on this word: the next to
 *            make the queue idle or READY clears it and BARGE, and wakes
 *            them all
 *   DATA_BEFORE the object's allocation starts DSY_DATA_BEFORE bytes before
 *            it, with its data there (desync_new_copy; set once, at init)
 *   barger count (units of DSY_Q_BARGER, at most DSY_Q_BARGERS_MAX): the
 *            syncers waiting outside (BARGING); the last to leave clears
 *            BARGE and BSLEEP, so a queue nobody waits outside costs its
 *            user nothing when it goes idle
 *   SAT      more syncers wait outside than the count holds: the extra ones
 *            are not counted, so the count reaching 0 clears nothing; waking
 *            the sleepers clears SAT (those still outside set it again)
 *   waiter count (units of DSY_WAITER, up to 2^18 - 1 threads): threads
 *            blocked until a node of this queue completes; a token holder
 *            that gives the token up while waiters exist hands it to the
 *            first of them instead of the scheduler, so a waiter never
 *            sleeps next to an unclaimed token
 */
#define DSY_Q_LINKED 1u
#define DSY_Q_READY 2u
#define DSY_Q_SUSPENDED 4u
#define DSY_Q_OBJECT 8u
#define DSY_Q_FORKED 16u
#define DSY_Q_HELD 32u
#define DSY_Q_DATA_BEFORE 128u
#define DSY_Q_BARGER 256u
#define DSY_Q_BARGERS_MAX 15u
#define DSY_Q_BARGERS (DSY_Q_BARGERS_MAX * DSY_Q_BARGER) /* the count's bits */
/* DSY_Q_BSLEEP 4096u: queue_fast.h */
#define DSY_Q_BSAT 8192u
#define DSY_WAITER 16384u

static inline bool forked_off_gated(desync_queue_t *q) {
    return DSY_UNLIKELY(atomic_load_explicit(&dsy_forked, memory_order_relaxed)) &&
           dsy_queue_forked_off(q);
}

/* Is there a frame in the chain of f whose queue is q (sched NULL) or whose
 * queue belongs to sched? Frames of threads blocked in sync stay valid while
 * we run their jobs, so the chain may cross threads through `behalf`.
 * Depth-limited for safety. */
static bool chain_has(const dsy_frame *f, const desync_queue_t *q, const desync_scheduler_t *sched,
                      int depth) {
    for (; f; f = f->parent) {
        if (sched ? dsy_queue_sched(f->q) == sched : f->q == q)
            return true;
        if (f->behalf && depth < 32 && chain_has(f->behalf, q, sched, depth + 1))
            return true;
    }
    return false;
}

bool dsy_queue_in_chain(desync_queue_t *q) { return chain_has(frame_top(), q, NULL, 0); }

uint32_t dsy_queue_held(_Atomic(desync_queue_t *) *out, uint32_t max, uint32_t keep) {
    uint32_t total = 0, n = 0;
    for (const dsy_frame *f = frame_top(); f; f = f->parent)
        total++;
    const dsy_frame *f = frame_top();
    for (uint32_t skip = total > keep ? total - keep : 0; skip; skip--)
        f = f->parent;
    for (; f; f = f->parent, n++)
        if (n < max)
            atomic_store_explicit(&out[n], f->q, memory_order_release);
    return n;
}

static const dsy_runnable_ops queue_runnable_ops;

/* ------------------------------------------------------- the cold part */

/* What few queues need, out of the queue's hot lines (see LIMITS above). */
typedef struct dsy_queue_cold {
    desync_scheduler_t *sched;  /* NULL: the default one; set before it is shared */
    _Atomic size_t max_pending; /* 0: no limit */
    _Atomic size_t pending;     /* desyncs admitted under a limit, not yet run */
    _Atomic uint32_t room;      /* futex word: bumped when blocked producers may go on */
    _Atomic uint32_t nblocked;  /* producers waiting for room */
    desync_queue_t *q;
    char *label;                            /* cold_lock */
    struct dsy_queue_cold *prev, *next;     /* cold_lock: every cold part (dump) */
} dsy_queue_cold;

/* Every queue with a cold part, for desync_scheduler_dump: a queue in this
 * list is alive while cold_lock is held (its free unlinks it first). A leaf
 * lock; taken around fork (dsy_queue_fork_prepare). */
static pthread_mutex_t cold_lock = PTHREAD_MUTEX_INITIALIZER;
static dsy_queue_cold *cold_list;

/* Nonzero once a desync may need more than the fast path: bit 0 in a fork
 * child with forked-off queues, bit 1 once a limit was set on some queue.
 * Set, never cleared. Read (relaxed) by every desync in place of dsy_forked. */
#define GATE_FORKED 1u
#define GATE_LIMITS 2u
static _Atomic unsigned gate;

/* q's cold part, made on first use (on scheduler `sched`, NULL for the
 * default one: only dsy_queue_init passes another). NULL on ENOMEM. */
static dsy_queue_cold *cold_get_on(desync_queue_t *q, desync_scheduler_t *sched) {
    dsy_queue_cold *c = atomic_load_explicit(&q->cold, memory_order_acquire);
    if (c)
        return c;
    dsy_queue_cold *mine = calloc(1, sizeof *mine);
    if (!mine)
        return NULL;
    mine->q = q;
    mine->sched = sched;
    /* Listed before it is installed, so that the queue's free finds it
     * listed; a loser of the race unlists its own. */
    pthread_mutex_lock(&cold_lock);
    mine->next = cold_list;
    if (cold_list)
        cold_list->prev = mine;
    cold_list = mine;
    pthread_mutex_unlock(&cold_lock);
    /* acq_rel: publishes mine's fields; acquires the winner's. */
    if (atomic_compare_exchange_strong_explicit(&q->cold, &c, mine, memory_order_acq_rel,
                                                memory_order_acquire))
        return mine;
    pthread_mutex_lock(&cold_lock);
    DSY_DLIST_UNLINK(&cold_list, mine, prev, next);
    pthread_mutex_unlock(&cold_lock);
    free(mine);
    return c;
}

static dsy_queue_cold *cold_get(desync_queue_t *q) { return cold_get_on(q, NULL); }

/* The cold part's pointer is read with acquire: it pairs with the CAS that
 * installed it (cold_get_on), so `sched` is seen as set. A queue whose cold
 * part is made later (a label, a limit) is on the default scheduler. */
static inline desync_scheduler_t *queue_sched(desync_queue_t *q) {
    dsy_queue_cold *c = atomic_load_explicit(&q->cold, memory_order_acquire);
    return DSY_UNLIKELY(c && c->sched) ? c->sched : &dsy_default_scheduler;
}

desync_scheduler_t *dsy_queue_sched(desync_queue_t *q) { return queue_sched(q); }

/* With q's memory: no producer is blocked (each holds a reference). */
static void cold_free(dsy_queue_cold *c) {
    pthread_mutex_lock(&cold_lock);
    DSY_DLIST_UNLINK(&cold_list, c, prev, next);
    pthread_mutex_unlock(&cold_lock);
    free(c->label);
    free(c);
}

void dsy_queue_fork_prepare(void) { pthread_mutex_lock(&cold_lock); }
void dsy_queue_fork_parent(void) { pthread_mutex_unlock(&cold_lock); }
void dsy_queue_fork_child(void) { pthread_mutex_init(&cold_lock, NULL); }

int dsy_queue_init(desync_queue_t *q, desync_scheduler_t *s, unsigned flags) {
    atomic_init(&q->tail, NULL);
    q->data = NULL;
    q->head = NULL;
    atomic_init(&q->pushed, 0);
    atomic_init(&q->unlinked, 0);
    atomic_init(&q->cold, NULL);
    atomic_init(&q->state, ((flags & DSY_QUEUE_OF_OBJECT) ? DSY_Q_OBJECT : 0u) |
                               ((flags & DSY_QUEUE_DATA_BEFORE) ? DSY_Q_DATA_BEFORE : 0u));
    dsy_ref_init(&q->refs, 1);
    /* Another scheduler than the default one: kept in the cold part, made
     * now (the hot object has no room for it: issue 10, memory per object). */
    if (s != &dsy_default_scheduler && !cold_get_on(q, s))
        return DESYNC_ENOMEM;
    int rc = dsy_sched_attach(s, &queue_runnable_ops);
    if (rc != 0) {
        dsy_queue_cold *c = atomic_load_explicit(&q->cold, memory_order_relaxed);
        if (c)
            cold_free(c);
    }
    return rc;
}

void dsy_queue_ref(desync_queue_t *q) { dsy_ref_inc(&q->refs); }

void dsy_queue_unref(desync_queue_t *q) {
    if (!dsy_ref_dec(&q->refs))
        return;
    /* The last reference: no token, no entry and no node can remain. */
    DSY_ASSERT(atomic_load_explicit(&q->tail, memory_order_relaxed) == NULL);
    DSY_ASSERT(!(atomic_load_explicit(&q->state, memory_order_relaxed) &
                 (DSY_Q_LINKED | DSY_Q_READY)));
    dsy_sched_detach(queue_sched(q)); /* before the cold part goes */
    dsy_queue_cold *c = atomic_load_explicit(&q->cold, memory_order_acquire);
    if (c)
        cold_free(c);
    uint32_t s = atomic_load_explicit(&q->state, memory_order_relaxed);
    if (s & DSY_Q_DATA_BEFORE)
        dsy_handle_free((char *)q - DSY_DATA_BEFORE, DSY_DATA_BEFORE + sizeof(desync_t));
    else if (s & DSY_Q_OBJECT)
        dsy_pool_free(q, DSY_POOL_OBJECT); /* desync_new_on */
    else
        dsy_handle_free(q, sizeof *q);
}

void dsy_queue_mark_suspended(desync_queue_t *q) {
    atomic_fetch_or_explicit(&q->state, DSY_Q_SUSPENDED, memory_order_relaxed);
}

void dsy_queue_mark_held(desync_queue_t *q, bool held) {
    if (held)
        atomic_fetch_or_explicit(&q->state, DSY_Q_HELD, memory_order_relaxed);
    else
        atomic_fetch_and_explicit(&q->state, ~DSY_Q_HELD, memory_order_relaxed);
}

bool dsy_queue_is_suspended(desync_queue_t *q) {
    return atomic_load_explicit(&q->state, memory_order_relaxed) & DSY_Q_SUSPENDED;
}

void dsy_queue_resume(desync_queue_t *q) {
    uint32_t old = atomic_fetch_and_explicit(&q->state, ~DSY_Q_SUSPENDED, memory_order_relaxed);
    DSY_ASSERT(old & DSY_Q_SUSPENDED);
    (void)old;
    dsy_token_place(q, true);
}

/* ------------------------------------------------------------ the list */

int dsy_queue_push(desync_queue_t *q, dsy_node *n) {
    atomic_store_explicit(&n->next, NULL, memory_order_relaxed);
    /* Before the exchange: once n is linked, q may be freed. */
    atomic_fetch_add_explicit(&q->pushed, 1, memory_order_relaxed);
    dsy_node *prev = atomic_exchange_explicit(&q->tail, n, memory_order_acq_rel);
    if (prev == NULL) {
        q->head = n; /* we hold the new token */
        return 1;
    }
    atomic_store_explicit(&prev->next, n, memory_order_release);
    return 0;
}

/* The producer that swapped `tail` past n has not linked n->next yet; it is
 * between two instructions, so this wait is short (yield if preempted). */
static dsy_node *wait_next(dsy_node *n) {
    dsy_node *next;
    for (unsigned b = 0; !(next = atomic_load_explicit(&n->next, memory_order_acquire));)
        dsy_backoff(&b);
    return next;
}

/* BARGING: wakes every syncer sleeping outside q. They are few: a syncer
 * watches the queue before it sleeps. */
static void wake_bargers(desync_queue_t *q) {
    atomic_fetch_and_explicit(&q->state, ~(DSY_Q_BARGE | DSY_Q_BSLEEP | DSY_Q_BSAT),
                              memory_order_relaxed);
    dsy_unpark_all(&q->state);
}

/* BARGING: see queue_fast.h (went_idle); s is the state word it loaded. A
 * syncer that only watches needs no futex call, but the caller, which just
 * made q idle, would take it again long before the watcher sees it idle:
 * it waits DSY_SYNC_BARGE_WINDOW_NS first (a futex wake, here before,
 * cost it more, and made the same window by the way). With several
 * watchers counted, only once one of them has taken q: if none has within
 * DSY_SYNC_BARGE_TAKE_NS, they are not running (preempted: more threads
 * than cores), and q would only stay idle for the whole window. */
void dsy_queue_barger_turn(desync_queue_t *q, uint32_t s) {
    if (s & DSY_Q_BSLEEP) {
        wake_bargers(q);
        return;
    }
    atomic_fetch_and_explicit(&q->state, ~DSY_Q_BARGE, memory_order_relaxed);
    /* With one watcher counted (two threads on the queue, mostly), it is
     * running and takes q, late or soon: the window alone. */
    if ((s & DSY_Q_BARGERS) > DSY_Q_BARGER || (s & DSY_Q_BSAT)) {
        dsy_spin look = dsy_spin_for(DSY_SYNC_BARGE_TAKE_NS, 0);
        while (!atomic_load_explicit(&q->tail, memory_order_relaxed))
            if (!dsy_spin_round(&look))
                return; /* no watcher runs */
    }
    dsy_spin sp = dsy_spin_for(DSY_SYNC_BARGE_WINDOW_NS, 0);
    while (dsy_spin_round(&sp)) {
    }
}

/* Adds n nodes that the caller unlinked (or is about to) to the count. Only
 * the token holder writes `unlinked`, and the token moves with
 * release/acquire, so a load and a store do (no RMW): see BACKLOG. */
static inline void count_unlinked(desync_queue_t *q, uint32_t n) {
    if (n)
        atomic_store_explicit(&q->unlinked,
                              atomic_load_explicit(&q->unlinked, memory_order_relaxed) + n,
                              memory_order_relaxed);
}

/* Unlinks the finished head node n and returns the next one, or NULL if
 * that made the queue idle (the token is gone: the caller must not touch
 * q's list again). The caller keeps the new head in a local variable and
 * stores q->head only when it may hand the token on or a node may park:
 * `head` shares a cache line with `tail`, which every producer exchanges. */
/* *uncounted: nodes the caller unlinked (n among them) and has not yet
 * added to `unlinked`; added here before the token can go (and zeroed). */
static dsy_node *advance(desync_queue_t *q, dsy_node *n, uint32_t *uncounted) {
    dsy_node *next = atomic_load_explicit(&n->next, memory_order_acquire);
    if (!next) {
        count_unlinked(q, *uncounted);
        *uncounted = 0;
        dsy_node *expect = n;
        if (atomic_compare_exchange_strong_explicit(&q->tail, &expect, NULL, memory_order_seq_cst,
                                                    memory_order_acquire)) {
            went_idle(q);
            return NULL;
        }
        next = wait_next(n);
    }
    return next;
}

/* The object's data, for jobs that take it (NULL for a bare queue). */
static void *queue_data(desync_queue_t *q) { return q->data; }

/* Runs the head node n. Nodes that can park (those with waiters) find
 * themselves at q->head when they are run again. */
static enum dsy_run_result run_node(desync_queue_t *q, dsy_node *n, void *data) {
    if (n->ops->take_waiter)
        q->head = n;
    dsy_frame f;
    frame_push(&f, q);
    enum dsy_run_result r = n->ops->run(n, q, data);
    frame_pop(&f);
    return r;
}

/* ----------------------------------------------------------- the token */

/* Hands the token to the waiter of the first node (from the head) that has
 * one and returns that node, or NULL. Only called by the token holder while
 * waiters are counted. */
static dsy_node *give_first_waiter(desync_queue_t *q) {
    dsy_node *n = q->head;
    for (;;) {
        if (n->ops->take_waiter && n->ops->take_waiter(n))
            return n;
        dsy_node *next = atomic_load_explicit(&n->next, memory_order_acquire);
        if (!next) {
            if (atomic_load_explicit(&q->tail, memory_order_acquire) == n)
                return NULL;
            next = wait_next(n);
        }
        n = next;
    }
}

void dsy_token_place(desync_queue_t *q, bool has_ref) {
    /* A token exists only while the queue is busy. */
    DSY_ASSERT(atomic_load_explicit(&q->tail, memory_order_relaxed) != NULL);
    if (forked_off_gated(q))
        return; /* dropped, with its reference: a forked-off queue is never freed */
    uint32_t s = atomic_load_explicit(&q->state, memory_order_relaxed);
    /* An entry is still listed (a waiter stole the token it was made for):
     * it keeps the reference of the token, so a token without one of its
     * own needs none, and q is not touched after the CAS. Any other case
     * (waiters, BSLEEP, a failed CAS) takes the general path below. */
    if (!has_ref && (s & (DSY_Q_LINKED | DSY_Q_BSLEEP)) == DSY_Q_LINKED && s < DSY_WAITER &&
        atomic_compare_exchange_strong_explicit(&q->state, &s, s | DSY_Q_READY,
                                                memory_order_acq_rel, memory_order_relaxed))
        return;
    if (!has_ref)
        dsy_queue_ref(q);
    for (;;) {
        if (s >= DSY_WAITER) {
            /* A waiter counts itself after linking its node, so a counted
             * waiter's node is found here unless it has already finished;
             * if one arrives meanwhile, the CAS below fails and we look again. */
            if (give_first_waiter(q))
                return;
        }
        if (atomic_compare_exchange_weak_explicit(&q->state, &s, s | DSY_Q_READY | DSY_Q_LINKED,
                                                  memory_order_acq_rel, memory_order_relaxed))
            break;
    }
    /* A syncer waiting outside may be the thread this token needs (a
     * scheduler without free threads): it queues its node once it sees
     * READY, a sleeping one once woken. q is alive until the entry or the
     * unref below. */
    if (DSY_UNLIKELY(s & DSY_Q_BSLEEP))
        wake_bargers(q);
    if (s & DSY_Q_LINKED)
        dsy_queue_unref(q); /* the stale entry already holds a reference */
    else
        dsy_sched_submit(queue_sched(q), (dsy_runnable *)q);
}

/* Claims the token of a queue whose entry a worker took: clears LINKED, and
 * READY if set; true if READY was set (the token, with the entry's
 * reference, is now the caller's). For a stale entry the caller drops the
 * entry's reference. */
static bool claim_entry(desync_queue_t *q) {
    uint32_t s = atomic_load_explicit(&q->state, memory_order_relaxed);
    while (!atomic_compare_exchange_weak_explicit(&q->state, &s,
                                                  s & ~(DSY_Q_LINKED | DSY_Q_READY),
                                                  memory_order_acq_rel, memory_order_relaxed)) {
    }
    DSY_ASSERT(s & DSY_Q_LINKED);
    return s & DSY_Q_READY; /* if so, the entry's reference now belongs to the token */
}

/* A waiter takes a READY token from the scheduler. If a run-list entry
 * exists (LINKED) it keeps its reference and the stolen token gets a new one;
 * without an entry (closed scheduler) the token's reference comes along. */
static bool steal(desync_queue_t *q, uint32_t *s) {
    if (!atomic_compare_exchange_weak_explicit(&q->state, s, *s & ~DSY_Q_READY,
                                               memory_order_acq_rel, memory_order_acquire))
        return false;
    if (*s & DSY_Q_LINKED)
        dsy_queue_ref(q);
    return true;
}

void dsy_queue_push_schedule(desync_queue_t *q, dsy_node *n) {
    /* A scheduler could not start a thread: if q's token waits in it, try
     * again. Before the push: once n is linked, q may run and be freed at
     * once (the job may own the caller's reference). */
    if (DSY_UNLIKELY(atomic_load_explicit(&dsy_sched_starved_count, memory_order_relaxed)) &&
        (atomic_load_explicit(&q->state, memory_order_relaxed) & DSY_Q_READY))
        dsy_sched_poke(queue_sched(q));
    dsy_hold h; /* from before the push (fork); the caller keeps q alive */
    dsy_hold_push(&h, q);
    if (dsy_queue_push(q, n))
        dsy_token_place(q, false);
    dsy_hold_pop(&h);
}

/* -------------------------------------------------------------- running */

/* A worker that has run the last queued job waits a moment for the next one
 * before letting the queue go idle: a producer that keeps desyncing would
 * otherwise make the queue idle and busy again on every job, paying a trip
 * through the scheduler each time. Not after a job that someone waits for
 * (sync, futures): they expect an idle queue once it is done. */
static dsy_node *advance_lingering(desync_queue_t *q, dsy_node *n, unsigned ran,
                                   uint32_t *uncounted) {
    /* Only for a queue that is being fed (it ran more than one job in this
     * turn) and a thread with nothing else to do: a job that desyncs onto
     * another queue must not wait here for an answer that queue would give. */
    if (ran && !n->ops->take_waiter && !atomic_load_explicit(&n->next, memory_order_relaxed) &&
        dsy_sched_nothing_else()) {
        /* Only n->next is polled, and not closely: reading `tail` would
         * pull the line every producer's exchange needs, and polling `next`
         * in a tight loop would pull each node away from its producer. A
         * new job waits until DSY_LINGER_BATCH_PAUSES have passed, so that
         * the producer links a batch into lines we do not read meanwhile
         * (run at its heels, each job cost a line taken back from us), but
         * one that someone waits for (a sync) runs at once. acquire: nx's
         * ops are read, published by the producer's release of n->next. */
        dsy_spin sp = dsy_spin_for(DSY_LINGER_NS, 0);
        for (unsigned j = 1; dsy_spin_round(&sp); j++) {
            if (j % DSY_LINGER_POLL_PAUSES)
                continue;
            dsy_node *nx = atomic_load_explicit(&n->next, memory_order_acquire);
            if (nx && (j >= DSY_LINGER_BATCH_PAUSES || nx->ops->take_waiter))
                break;
        }
    }
    return advance(q, n, uncounted);
}

/* Runs the queue with the token held, until it is idle, parked, or (when
 * limit > 0) `limit` jobs ran; returns true if the caller still holds the
 * token (only possible when the limit was hit: marked `owned` then). The
 * token carries a ref. Pops the caller's hold h before the token goes. */
static bool queue_run_jobs(desync_queue_t *q, unsigned limit, dsy_hold *h);

/* Node releases of the run are batched per job segment (jobpool.c). */
static bool queue_run(desync_queue_t *q, unsigned limit, dsy_hold *h) {
    dsy_job_release_batch_begin();
    bool more = queue_run_jobs(q, limit, h);
    dsy_job_release_batch_end();
    return more;
}

static bool queue_run_jobs(desync_queue_t *q, unsigned limit, dsy_hold *h) {
    DSY_ASSERT(atomic_load_explicit(&q->tail, memory_order_relaxed) != NULL && q->head);
    unsigned ran = 0;
    uint32_t unlinked = 0; /* not yet counted */
    dsy_node *n = q->head;
    void *data = queue_data(q);
    for (;;) {
        if (n->ops->take_waiter) {
            /* n may hand the token (and its reference) on: count first. */
            count_unlinked(q, unlinked);
            unlinked = 0;
        }
        if (run_node(q, n, data) == DSY_PARKED || survivor_left_forked(q)) {
            dsy_hold_pop(h);
            return false;
        }
        unlinked++; /* n, counted before the token can go (advance) */
        dsy_node *next = advance_lingering(q, n, ran, &unlinked);
        n->ops->finish(n);
        if (unlinked == DSY_BACKLOG_YIELD_EVERY) {
            count_unlinked(q, unlinked);
            unlinked = 0;
        }
        if (!next) {
            dsy_hold_pop(h);
            dsy_queue_unref(q);
            return false;
        }
        n = next;
        if (limit && ++ran >= limit) {
            count_unlinked(q, unlinked);
            q->head = n;
            atomic_store_explicit(&dsy_self.owned, q, memory_order_release);
            dsy_hold_pop(h);
            return true;
        }
    }
}

static dsy_node *combine_sleepers(desync_queue_t *q, dsy_node *n);

bool dsy_queue_drain_until(desync_queue_t *q, dsy_node *target) {
    return dsy_queue_drain_until_held(q, target, NULL);
}

static bool drain_until_held(desync_queue_t *q, dsy_node *target, dsy_hold *held);

/* Node releases of the drain are batched per job segment, as in queue_run:
 * a syncer that runs the jobs queued before its own (W4) would otherwise pay
 * an RMW on the segment's count for each. */
bool dsy_queue_drain_until_held(desync_queue_t *q, dsy_node *target, dsy_hold *held) {
    dsy_job_release_batch_begin();
    bool drained = drain_until_held(q, target, held);
    dsy_job_release_batch_end();
    return drained;
}

static bool drain_until_held(desync_queue_t *q, dsy_node *target, dsy_hold *held) {
    DSY_ASSERT(atomic_load_explicit(&q->tail, memory_order_relaxed) != NULL && q->head);
    DSY_ASSERT(!held || (held->q == q && atomic_load_explicit(&dsy_self.holds,
                                                              memory_order_relaxed) == held));
    dsy_hold own; /* fork: popped before the token (and its reference) goes */
    dsy_hold *hold = held ? held : &own;
    if (forked_off_gated(q)) {
        if (held)
            dsy_hold_pop(held);
        return false; /* a token parked before the fork: dropped */
    }
    if (!held)
        dsy_hold_push(&own, q);
    dsy_node *h = q->head;
    void *data = queue_data(q);
    uint32_t unlinked = 0; /* not yet counted (the caller keeps q alive) */
    for (;;) {
        if (h->ops->take_waiter) {
            /* h may hand the token on (and q be freed): count first. */
            count_unlinked(q, unlinked);
            unlinked = 0;
        }
        if (run_node(q, h, data) == DSY_PARKED || survivor_left_forked(q)) {
            dsy_hold_pop(hold);
            return false;
        }
        unlinked++; /* h, counted before the token can go (advance) */
        dsy_node *next = advance(q, h, &unlinked);
        h->ops->finish(h);
        if (next && h == target) {
            count_unlinked(q, unlinked); /* combine_sleepers may let the token go */
            unlinked = 0;
            next = combine_sleepers(q, next);
        }
        if (!next) {
            dsy_hold_pop(hold);
            dsy_queue_unref(q);
            return true; /* only possible once target (at or behind h) has finished */
        }
        if (h == target) {
            count_unlinked(q, unlinked);
            q->head = next;
            dsy_hold_pop(hold);
            dsy_token_place(q, true);
            return true;
        }
        h = next;
    }
}

/* Spins briefly first (a wake-up costs microseconds here: DSY_WAIT_SPIN_NS),
 * then parks. */
uint32_t dsy_wait_word(_Atomic uint32_t *word, uint64_t deadline) {
    uint32_t w;
    dsy_spin sp = dsy_spin_for(DSY_WAIT_SPIN_NS, deadline);
    do {
        if ((w = atomic_load_explicit(word, memory_order_acquire)) != DSY_W_WAITING)
            return w;
    } while (dsy_spin_round(&sp));
    dsy_sched_thread_blocks(); /* a next-slot entry must not wait for us; fork restart */
    for (;;) {
        w = DSY_W_WAITING;
        if (!atomic_compare_exchange_strong_explicit(word, &w, DSY_W_SLEEPING,
                                                     memory_order_acquire, memory_order_acquire)) {
            if (w != DSY_W_SLEEPING)
                return w;
        }
        uint64_t timeout = 0;
        if (deadline) {
            uint64_t now = dsy_now_ns();
            if (now >= deadline) {
                w = DSY_W_SLEEPING;
                if (atomic_compare_exchange_strong_explicit(word, &w, DSY_W_WAITING,
                                                            memory_order_acquire,
                                                            memory_order_acquire))
                    return DSY_W_WAITING;
                return w;
            }
            timeout = deadline - now;
        }
        dsy_park(word, DSY_W_SLEEPING, timeout);
    }
}

uint32_t dsy_wait_word_help(_Atomic uint32_t *word, uint64_t deadline, desync_scheduler_t *s) {
    /* Not from inside a job: the entries it would run could wait for that
     * job's queue (and nested helping has no end). */
    if (DSY_LIKELY(desync_scheduler_max_threads(s) != 0) || frame_top())
        return dsy_wait_word(word, deadline);
    for (;;) {
        dsy_helper h = {.word = word};
        bool listed = dsy_sched_helper_add(s, &h);
        /* Listed before the look: an entry submitted from here on sets
         * HELP, so none waits in the run list while we sleep. */
        uint32_t w;
        while ((w = atomic_load_explicit(word, memory_order_acquire)) == DSY_W_WAITING &&
               dsy_sched_help_one(s)) {
        }
        if (w == DSY_W_WAITING)
            w = dsy_wait_word(word, deadline);
        if (listed)
            dsy_sched_helper_remove(s, &h);
        if (w != DSY_W_HELP)
            return w;
        /* TOKEN or DONE may have replaced HELP since (an exchange): then
         * that is the answer. */
        if (!atomic_compare_exchange_strong_explicit(word, &w, DSY_W_WAITING,
                                                     memory_order_acquire, memory_order_acquire))
            return w;
    }
}

/* Sets a waiter's word (DONE or TOKEN) and wakes it if it sleeps. After the
 * exchange the waiter may return at once, so its word is not touched again
 * (waking a futex address that has gone away is harmless). */
void dsy_waiter_signal(_Atomic uint32_t *word, uint32_t value) {
    if (atomic_exchange_explicit(word, value, memory_order_acq_rel) == DSY_W_SLEEPING)
        dsy_unpark_one(word);
}

bool dsy_queue_wait_node(desync_queue_t *q, dsy_node *n, _Atomic uint32_t *word,
                         uint64_t deadline) {
    uint32_t s =
        atomic_fetch_add_explicit(&q->state, DSY_WAITER, memory_order_acq_rel) + DSY_WAITER;
    bool done = false;
    for (;;) {
        if (s & DSY_Q_READY) {
            if (!steal(q, &s))
                continue;
            if (dsy_queue_drain_until(q, n)) {
                done = true;
                break;
            }
            s = atomic_load_explicit(&q->state, memory_order_acquire);
            continue;
        }
        uint32_t w = dsy_wait_word_help(word, deadline, queue_sched(q));
        if (w == DSY_W_DONE) {
            done = true;
            break;
        }
        if (w != DSY_W_TOKEN)
            break; /* timed out */
        atomic_store_explicit(word, DSY_W_WAITING, memory_order_relaxed);
        if (dsy_queue_drain_until(q, n)) {
            done = true;
            break;
        }
        s = atomic_load_explicit(&q->state, memory_order_acquire);
    }
    uint32_t old = atomic_fetch_sub_explicit(&q->state, DSY_WAITER, memory_order_release);
    DSY_ASSERT(old >= DSY_WAITER);
    (void)old;
    /* Our node may have been run by another thread that has unlinked it
     * (advance) but not yet written DONE into our word (finish): we drained
     * the queue after stealing a token that a new busy period had made READY
     * again (ABA on the state word). The word lives on our caller's stack:
     * wait for that write, a few instructions away, before returning. Found
     * by the SPIN model (models/queue.pml, variant BUG_EARLY_RETURN). */
    while (done) {
        uint32_t w = atomic_load_explicit(word, memory_order_acquire);
        if (w == DSY_W_DONE)
            break;
        DSY_ASSERT(w == DSY_W_WAITING || w == DSY_W_SLEEPING);
        dsy_wait_word(word, 0);
    }
    return done;
}

/* ---------------------------------------------------------- sync nodes */

/* Runs fn on q's data (DSY_JOB_DATA) or arg alone, as the call's job. */
static inline void call_job(dsy_fn fn, bool with_data, void *data, void *arg) {
    if (with_data)
        ((desync_job_fn)fn)(data, arg);
    else
        ((desync_queue_job_fn)fn)(arg);
}


typedef struct sync_node {
    dsy_node node;
    dsy_fn fn;
    void *arg;
    bool with_data; /* fn takes q's data (DSY_JOB_DATA) */
    dsy_frame *caller; /* the waiting thread's frame chain */
    _Atomic uint32_t word;
} sync_node;

static enum dsy_run_result sync_run(dsy_node *n, desync_queue_t *q, void *data) {
    (void)q;
    sync_node *s = DSY_CONTAINER_OF(n, sync_node, node);
    /* Run on behalf of the waiter: its chain counts for deadlock checks. */
    dsy_frame *top = frame_top();
    if (s->caller != top->parent)
        top->behalf = s->caller;
    call_job(s->fn, s->with_data, data, s->arg);
    return DSY_DONE;
}

static void sync_finish(dsy_node *n) {
    sync_node *s = DSY_CONTAINER_OF(n, sync_node, node);
    dsy_waiter_signal(&s->word, DSY_W_DONE);
}

/* A sync node always has its waiter blocked on it. */
static int sync_take_waiter(dsy_node *n) {
    sync_node *s = DSY_CONTAINER_OF(n, sync_node, node);
    dsy_waiter_signal(&s->word, DSY_W_TOKEN);
    return 1;
}

static const dsy_node_ops sync_ops = {sync_run, sync_finish, sync_take_waiter};

/* A syncer that has run its own job and would now hand the token to the
 * next waiter runs that waiter's job itself if the waiter has gone to sleep
 * (a few at most): a sleeping thread would need microseconds to wake up and
 * take the queue on, and with more threads than cores every sync would wait
 * for such a wake-up (a lock convoy). The sleeper is woken with its job
 * done instead. Returns the new head, or NULL if the queue went idle. */
static dsy_node *combine_sleepers(desync_queue_t *q, dsy_node *n) {
    for (unsigned i = 0; i < DSY_COMBINE_MAX && n->ops == &sync_ops; i++) {
        sync_node *s = DSY_CONTAINER_OF(n, sync_node, node);
        if (atomic_load_explicit(&s->word, memory_order_relaxed) != DSY_W_SLEEPING)
            break;
        run_node(q, n, q->data);
        uint32_t one = 1;
        dsy_node *next = advance(q, n, &one);
        n->ops->finish(n);
        count_unlinked(q, one); /* the token is still ours unless advance counted */
        if (!next)
            return NULL;
        n = next;
    }
    return n;
}

/* The slow half of idle_give_back (queue_fast.h): jobs were queued behind
 * n; they get the token (sleeping syncers' jobs run here first). */
void dsy_queue_give_back_behind(desync_queue_t *q, dsy_node *n) {
    dsy_node *next = combine_sleepers(q, wait_next(n));
    if (next) {
        q->head = next;
        dsy_token_place(q, false);
    }
}

/* Counts the caller among the syncers waiting outside q and sets BARGE, in
 * one CAS; returns the state word after it. With DSY_Q_BARGERS_MAX counted
 * already, the caller waits outside uncounted: it sets SAT instead, and
 * again whenever it sets BSLEEP. */
static uint32_t barger_enter(desync_queue_t *q, bool *counted) {
    uint32_t s = atomic_load_explicit(&q->state, memory_order_relaxed), n;
    do {
        *counted = (s & DSY_Q_BARGERS) != DSY_Q_BARGERS;
        n = (*counted ? s + DSY_Q_BARGER : s | DSY_Q_BSAT) | DSY_Q_BARGE;
    } while (!atomic_compare_exchange_weak_explicit(&q->state, &s, n, memory_order_relaxed,
                                                    memory_order_relaxed));
    return n;
}

/* Uncounts the caller. The last counted barger out clears BARGE and BSLEEP
 * unless SAT says that uncounted ones may still wait: no counted barger
 * sleeps then (each is counted from before it sets BSLEEP until after its
 * last sleep), so nobody needs the turn they ask for. */
static void barger_leave(desync_queue_t *q, bool counted) {
    if (!counted)
        return;
    uint32_t s = atomic_load_explicit(&q->state, memory_order_relaxed), n;
    do {
        n = s - DSY_Q_BARGER;
        if (!(n & (DSY_Q_BARGERS | DSY_Q_BSAT)))
            n &= ~(DSY_Q_BARGE | DSY_Q_BSLEEP);
    } while (!atomic_compare_exchange_weak_explicit(&q->state, &s, n, memory_order_relaxed,
                                                    memory_order_relaxed));
}

/* Watches tail for a moment before a barger sleeps: true once q is seen
 * idle. Its user's calls are short (it was idle a moment ago), and a sleep
 * costs both threads a futex call: the barger's wait, and the wake of the
 * user that makes the queue idle next. */
static bool barger_watch(desync_queue_t *q) {
    for (unsigned i = 0; i < DSY_SYNC_BARGE_SPIN_ROUNDS; i++) {
        if (!atomic_load_explicit(&q->tail, memory_order_relaxed))
            return true;
        dsy_cpu_relax();
    }
    return false;
}

/* A sync that found q busy after its pre-spin waits outside the queue, with
 * no node linked, for q to go idle, and takes it then like an idle sync
 * (BARGING at the top). Returns 1 if it took q (f pushed), 0 if it should
 * queue its node after all (the wait lasted DSY_SYNC_BARGE_NS, or q's token
 * waits for a thread that this caller may have to be), or DESYNC_EDEADLK.
 * It sets BSLEEP, and looks at `tail` once more, before every sleep, so
 * whenever it sleeps, BSLEEP is set or a wake is on its way to it. */
static __attribute__((noinline)) int sync_wait_outside(desync_queue_t *q, dsy_node *n,
                                                       dsy_frame *f) {
    dsy_wait_edge edge;
    if (dsy_wait_enter(&edge, q))
        return DESYNC_EDEADLK;
    bool counted;
    uint32_t s = barger_enter(q, &counted);
    uint64_t deadline = dsy_deadline_after(DSY_SYNC_BARGE_NS);
    bool armed = false; /* BSLEEP set since the last look at tail */
    int took = 0;
    for (;;) {
        if (s & (DSY_Q_READY | DSY_Q_FORKED))
            break;
        frame_push(f, q);
        if (!atomic_load_explicit(&q->tail, memory_order_seq_cst) && idle_take(q, n)) {
            took = 1;
            break;
        }
        frame_pop(f);
        if (armed || !barger_watch(q)) {
            uint64_t now = dsy_now_ns();
            if (now >= deadline)
                break;
            if (!armed) {
                /* seq_cst: pairs with went_idle's CAS of tail and load of
                 * state; the loop looks at tail once more before the sleep. */
                uint32_t arm = DSY_Q_BARGE | DSY_Q_BSLEEP | (counted ? 0 : DSY_Q_BSAT);
                s = atomic_fetch_or_explicit(&q->state, arm, memory_order_seq_cst) | arm;
                armed = true;
                continue;
            }
            dsy_sched_thread_blocks(); /* a next-slot entry must not wait for us; fork restart */
            dsy_park(&q->state, s, deadline - now);
            armed = false;
        }
        s = atomic_fetch_or_explicit(&q->state, DSY_Q_BARGE, memory_order_relaxed) | DSY_Q_BARGE;
    }
    barger_leave(q, counted);
    dsy_wait_leave(&edge);
    return took;
}

/* Runs the job of a sync that took idle q with node n (its frame f pushed),
 * and gives q back. */
static inline void sync_run_taken(desync_queue_t *q, dsy_node *n, dsy_frame *f, dsy_fn fn,
                                  bool with_data, void *arg) {
    q->head = n;
    call_job(fn, with_data, q->data, arg);
    idle_give_back(q, n);
    frame_pop(f);
}

/* dsy_sync on a busy queue: pre-spin, wait outside, or queue a node and
 * wait for it. Out of line, so that the idle path saves few registers. */
static __attribute__((noinline)) int sync_busy(desync_queue_t *q, dsy_fn fn, void *arg,
                                               unsigned flags) {
    bool with_data = flags & DSY_JOB_DATA, try_only = flags & DSY_JOB_TRY;
    sync_node sn;
    atomic_store_explicit(&sn.node.next, NULL, memory_order_relaxed);
    dsy_frame f;
    bool idle = false;
    uint32_t st = atomic_load_explicit(&q->state, memory_order_relaxed);
    if (st & DSY_Q_FORKED)
        return DESYNC_EFORKED;
    if (!try_only && !dsy_queue_in_chain(q) && !(st & DSY_Q_READY)) {
        /* Busy: watch for it to go idle for a moment before queueing.
         * Our place is not fixed until we link a node, and a short job by
         * another syncer is usually over sooner than a hand-off between
         * threads. (Not when no thread runs it: then we drain it
         * ourselves at once.) */
        frame_push(&f, q);
        for (unsigned i = 0; i < DSY_SYNC_PRESPIN_ROUNDS && !idle; i++) {
            dsy_cpu_relax();
            idle = !atomic_load_explicit(&q->tail, memory_order_relaxed) &&
                   idle_take(q, &sn.node);
        }
        if (!idle) {
            frame_pop(&f);
            /* Wait outside only while every queued node pending (pushed,
             * not yet unlinked) may be a blocked waiter's, no more of
             * them than the waiter count: then the queue's users are
             * other syncs, whose jobs end soon. Behind queued desync
             * jobs (W4), our node is better queued: the thread running
             * them hands it the token or runs it, sooner than a wake-up
             * once the queue is idle. Behind queued syncs it is not: each
             * of them costs a wake-up, and a sync that queued behind them
             * would keep the queue from ever going idle (a convoy: with
             * 64 threads on 2 cores, once a barger outside timed out and
             * queued, every sync after it queued too, at 6-9 us each).
             * The counts share the line of `tail`, read just above. */
            uint32_t backlog = atomic_load_explicit(&q->pushed, memory_order_relaxed) -
                               atomic_load_explicit(&q->unlinked, memory_order_relaxed);
            if (backlog <= atomic_load_explicit(&q->state, memory_order_relaxed) / DSY_WAITER) {
                int rc = sync_wait_outside(q, &sn.node, &f);
                if (rc < 0)
                    return rc;
                idle = rc;
            }
        }
    }
    if (idle) {
        sync_run_taken(q, &sn.node, &f, fn, with_data, arg);
        return 0;
    }
    if (dsy_queue_in_chain(q))
        return DESYNC_EDEADLK;
    if (try_only)
        return DESYNC_EBUSY;
    /* About to block: a cycle of threads waiting for each other through q
     * is refused before our node is linked. */
    dsy_wait_edge edge;
    if (dsy_wait_enter(&edge, q))
        return DESYNC_EDEADLK;
    sn.node.ops = &sync_ops;
    sn.fn = fn;
    sn.arg = arg;
    sn.with_data = with_data;
    sn.caller = frame_top();
    atomic_init(&sn.word, DSY_W_WAITING);
    /* Our job may drop the last reference to q (a release inside it), and
     * another thread may run it: we hold a reference of our own, taken
     * before our node is linked, until we are done with q. */
    dsy_queue_ref(q);
    dsy_hold h; /* fork: our node, on this stack, is in q until we return */
    dsy_hold_push(&h, q);
    if (dsy_queue_push(q, &sn.node)) {
        /* The queue went idle in between: our node is the head, and the
         * token carries our reference. */
        dsy_queue_drain_until(q, &sn.node);
    } else {
        dsy_queue_wait_node(q, &sn.node, &sn.word, 0);
        dsy_queue_unref(q);
    }
    dsy_wait_leave(&edge);
    dsy_hold_pop(&h);
    return 0;
}

int dsy_sync(desync_queue_t *q, dsy_fn fn, void *arg, unsigned flags) {
    if (DSY_UNLIKELY(!q || !fn))
        return DESYNC_EINVAL;
    /* A scheduler without threads: its due timers fire first (timer.c). */
    if (DSY_UNLIKELY(atomic_load_explicit(&dsy_timer_heaps, memory_order_relaxed)))
        dsy_timers_on_sync(queue_sched(q));
    DSY_ASSERT(!(flags & DSY_JOB_COPY));
    /* Idle queue: run on this thread with one CAS each way. Nobody but us
     * reads our node while we hold the token, so only `next` is needed. The
     * CAS releases that store to producers that link behind our node. The
     * job's frame is pushed first and popped once the token is gone (fork);
     * the caller's reference keeps q alive meanwhile. */
    dsy_node n;
    atomic_store_explicit(&n.next, NULL, memory_order_relaxed);
    dsy_frame f;
    frame_push(&f, q);
    if (DSY_LIKELY(idle_take(q, &n))) {
        sync_run_taken(q, &n, &f, fn, flags & DSY_JOB_DATA, arg);
        return 0;
    }
    frame_pop(&f);
    return sync_busy(q, fn, arg, flags);
}

/* --------------------------------------------------------- desync jobs */

static enum dsy_run_result job_run_q(dsy_node *n, desync_queue_t *q, void *data) {
    (void)q;
    (void)data;
    dsy_job *j = DSY_CONTAINER_OF(n, dsy_job, node);
    ((desync_queue_job_fn)j->fn)(j->arg);
    return DSY_DONE;
}

static enum dsy_run_result job_run_obj(dsy_node *n, desync_queue_t *q, void *data) {
    (void)q;
    dsy_job *j = DSY_CONTAINER_OF(n, dsy_job, node);
    ((desync_job_fn)j->fn)(data, j->arg);
    return DSY_DONE;
}

/* Where a job node and its copy live (job_ops' second index): a node of
 * one cache line with its copy inline or separately allocated (BIG), or a
 * wide node (two lines, the copy inline); each from the block pool or from
 * a job segment. */
enum job_storage { JOB_POOL, JOB_SEG, JOB_POOL_BIG, JOB_SEG_BIG, JOB_POOL_WIDE, JOB_SEG_WIDE };

static void job_finish(dsy_node *n) {
    dsy_job_release(DSY_CONTAINER_OF(n, dsy_job, node), 1, false);
}
static void job_finish_seg(dsy_node *n) {
    dsy_job_release(DSY_CONTAINER_OF(n, dsy_job, node), 1, true);
}
static void job_finish_big(dsy_node *n) {
    dsy_job *j = DSY_CONTAINER_OF(n, dsy_job, node);
    free(j->arg);
    dsy_job_release(j, 1, false);
}
static void job_finish_big_seg(dsy_node *n) {
    dsy_job *j = DSY_CONTAINER_OF(n, dsy_job, node);
    free(j->arg);
    dsy_job_release(j, 1, true);
}
static void job_finish_wide(dsy_node *n) {
    dsy_job_release(DSY_CONTAINER_OF(n, dsy_job, node), 2, false);
}
static void job_finish_wide_seg(dsy_node *n) {
    dsy_job_release(DSY_CONTAINER_OF(n, dsy_job, node), 2, true);
}

/* job_ops[with_data][job_storage] */
static const dsy_node_ops job_ops[2][6] = {
    {{job_run_q, job_finish, NULL},
     {job_run_q, job_finish_seg, NULL},
     {job_run_q, job_finish_big, NULL},
     {job_run_q, job_finish_big_seg, NULL},
     {job_run_q, job_finish_wide, NULL},
     {job_run_q, job_finish_wide_seg, NULL}},
    {{job_run_obj, job_finish, NULL},
     {job_run_obj, job_finish_seg, NULL},
     {job_run_obj, job_finish_big, NULL},
     {job_run_obj, job_finish_big_seg, NULL},
     {job_run_obj, job_finish_wide, NULL},
     {job_run_obj, job_finish_wide_seg, NULL}},
};

/* Queues the job; the common part of every desync. `ops` is job_ops, or
 * bounded_ops for a job admitted under a limit (inlined with a constant,
 * so the fast path is what it was without limits). */
static inline __attribute__((always_inline)) int
desync_job(desync_queue_t *q, dsy_fn fn, const void *arg, size_t len, unsigned flags,
           const dsy_node_ops (*ops)[6]) {
    bool with_data = flags & DSY_JOB_DATA, copy = flags & DSY_JOB_COPY;
    bool seg = false, wide = copy && len > DSY_INLINE_ARG && len <= DSY_INLINE_ARG_WIDE;
    dsy_job *j = dsy_job_alloc(wide ? 2 : 1, &seg);
    if (DSY_UNLIKELY(!j))
        return DESYNC_ENOMEM;
    enum job_storage where = seg ? JOB_SEG : JOB_POOL;
    if (!copy) {
        j->arg = (void *)(uintptr_t)arg;
    } else if (wide) {
        /* The buffer runs past buf to the end of the node's second line. */
        unsigned char *buf = (unsigned char *)j + offsetof(dsy_job, buf);
        memcpy(buf, arg, len);
        j->arg = buf;
        where = seg ? JOB_SEG_WIDE : JOB_POOL_WIDE;
    } else if (len <= DSY_INLINE_ARG) {
        if (len)
            memcpy(j->buf, arg, len);
        j->arg = j->buf;
    } else {
        j->arg = malloc(len);
        if (!j->arg) {
            dsy_job_release(j, 1, seg);
            return DESYNC_ENOMEM;
        }
        memcpy(j->arg, arg, len);
        where = seg ? JOB_SEG_BIG : JOB_POOL_BIG;
    }
    j->node.ops = &ops[with_data][where];
    j->fn = fn;
    /* A queue far behind its producers: let its thread have the CPU now and
     * then (DSY_BACKLOG_YIELD). Never a wait. */
    uint32_t pushed = atomic_load_explicit(&q->pushed, memory_order_relaxed);
    if (DSY_UNLIKELY(pushed % DSY_BACKLOG_YIELD_EVERY == 0) &&
        pushed - atomic_load_explicit(&q->unlinked, memory_order_relaxed) > DSY_BACKLOG_YIELD)
        dsy_yield();
    dsy_queue_push_schedule(q, &j->node);
    return 0;
}

/* --------------------------------------------------------- limits */

/* One admitted job less (it ran, or it was never queued): wakes the blocked
 * producers when the queue comes down to half its limit. Only then: woken
 * producers take a while to uncount themselves, and waking them again for
 * every job meanwhile would cost a syscall per job. pending moves by one,
 * so coming down from full (where producers block) it meets half its limit
 * exactly; a limit changed meanwhile wakes them anyway (set_max_pending),
 * and a parked producer looks again after its timeout. q is alive (the
 * caller holds its token or a reference). */
static void bounded_done(desync_queue_t *q) {
    dsy_queue_cold *c = atomic_load_explicit(&q->cold, memory_order_acquire);
    size_t left = atomic_fetch_sub_explicit(&c->pending, 1, memory_order_seq_cst) - 1;
    if (atomic_load_explicit(&c->nblocked, memory_order_seq_cst) &&
        left == atomic_load_explicit(&c->max_pending, memory_order_relaxed) / 2) {
        atomic_fetch_add_explicit(&c->room, 1, memory_order_release);
        dsy_unpark_all(&c->room);
    }
}

static enum dsy_run_result bounded_run_q(dsy_node *n, desync_queue_t *q, void *data) {
    job_run_q(n, q, data);
    bounded_done(q);
    return DSY_DONE;
}

static enum dsy_run_result bounded_run_obj(dsy_node *n, desync_queue_t *q, void *data) {
    job_run_obj(n, q, data);
    bounded_done(q);
    return DSY_DONE;
}

/* The job ops of desyncs admitted under a limit. */
static const dsy_node_ops bounded_ops[2][6] = {
    {{bounded_run_q, job_finish, NULL},
     {bounded_run_q, job_finish_seg, NULL},
     {bounded_run_q, job_finish_big, NULL},
     {bounded_run_q, job_finish_big_seg, NULL},
     {bounded_run_q, job_finish_wide, NULL},
     {bounded_run_q, job_finish_wide_seg, NULL}},
    {{bounded_run_obj, job_finish, NULL},
     {bounded_run_obj, job_finish_seg, NULL},
     {bounded_run_obj, job_finish_big, NULL},
     {bounded_run_obj, job_finish_big_seg, NULL},
     {bounded_run_obj, job_finish_wide, NULL},
     {bounded_run_obj, job_finish_wide_seg, NULL}},
};

static bool bounded_full(dsy_queue_cold *c) {
    size_t max = atomic_load_explicit(&c->max_pending, memory_order_relaxed);
    return max && atomic_load_explicit(&c->pending, memory_order_seq_cst) >= max;
}

/* Blocks until q may have room (0: look again), with this thread in the
 * wait-for graph: DESYNC_EDEADLK if the wait would close a cycle (A's job
 * blocks on full B while B's running job waits for A). Runs q here while its
 * token waits for a thread. */
static int bounded_wait(desync_queue_t *q, dsy_queue_cold *c) {
    dsy_wait_edge edge;
    if (dsy_wait_enter(&edge, q))
        return DESYNC_EDEADLK;
    int rc = 0;
    uint64_t poll = DSY_BOUNDED_POLL_MIN_NS;
    for (;;) {
        if (forked_off_gated(q)) {
            rc = DESYNC_EFORKED;
            break;
        }
        dsy_queue_help(q); /* no thread has it: run a batch here */
        atomic_fetch_add_explicit(&c->nblocked, 1, memory_order_seq_cst);
        uint32_t seen = atomic_load_explicit(&c->room, memory_order_acquire);
        bool full = bounded_full(c);
        if (full) {
            dsy_sched_thread_blocks(); /* a next-slot entry must not wait for us; fork restart */
            dsy_park(&c->room, seen, poll);
        }
        atomic_fetch_sub_explicit(&c->nblocked, 1, memory_order_relaxed);
        if (!full || !bounded_full(c))
            break;
        if (poll < DSY_BOUNDED_POLL_MAX_NS)
            poll *= 2;
    }
    dsy_wait_leave(&edge);
    return rc;
}

/* Takes a place under q's limit: 0 (counted in pending), 1 (no limit now),
 * or DESYNC_EAGAIN (full, and the caller may not wait: try, a job of q, a
 * pool thread), DESYNC_EDEADLK, DESYNC_EFORKED. */
static int bounded_admit(desync_queue_t *q, dsy_queue_cold *c, bool try_only) {
    size_t max;
    while ((max = atomic_load_explicit(&c->max_pending, memory_order_relaxed))) {
        size_t p = atomic_load_explicit(&c->pending, memory_order_relaxed);
        if (p < max) {
            if (atomic_compare_exchange_weak_explicit(&c->pending, &p, p + 1,
                                                      memory_order_relaxed,
                                                      memory_order_relaxed))
                return 0;
            continue;
        }
        if (try_only || dsy_queue_in_chain(q) || dsy_sched_in_pool_job())
            return DESYNC_EAGAIN;
        int rc = bounded_wait(q, c);
        if (rc)
            return rc;
    }
    return 1;
}

static inline bool desync_args_bad(desync_queue_t *q, dsy_fn fn, const void *arg, size_t len,
                                   unsigned flags) {
    return !q || !fn || ((flags & DSY_JOB_COPY) && len && !arg);
}

/* A desync once the gate is open: forked-off queues, limits. */
static __attribute__((noinline)) int desync_gated(desync_queue_t *q, dsy_fn fn, const void *arg,
                                                  size_t len, unsigned flags) {
    if (desync_args_bad(q, fn, arg, len, flags))
        return DESYNC_EINVAL;
    if (forked_off_gated(q))
        return DESYNC_EFORKED;
    dsy_queue_cold *c = atomic_load_explicit(&q->cold, memory_order_acquire);
    int rc = c ? bounded_admit(q, c, flags & DSY_JOB_TRY) : 1;
    if (rc == 1)
        return desync_job(q, fn, arg, len, flags, job_ops);
    if (rc < 0)
        return rc;
    /* Counted: if the job cannot be queued, give its place back. */
    rc = desync_job(q, fn, arg, len, flags, bounded_ops);
    if (rc)
        bounded_done(q);
    return rc;
}

/* The common case, out of line: dsy_desync only tests the gate and jumps
 * here or to desync_gated, so the gated path does not pay for the register
 * saves of this one (the compiler would make them before the test). */
static __attribute__((noinline)) int desync_plain(desync_queue_t *q, dsy_fn fn, const void *arg,
                                                  size_t len, unsigned flags) {
    if (DSY_UNLIKELY(desync_args_bad(q, fn, arg, len, flags)))
        return DESYNC_EINVAL;
    return desync_job(q, fn, arg, len, flags, job_ops);
}

int dsy_desync(desync_queue_t *q, dsy_fn fn, const void *arg, size_t len, unsigned flags) {
    if (DSY_UNLIKELY(atomic_load_explicit(&gate, memory_order_relaxed)))
        return desync_gated(q, fn, arg, len, flags);
    return desync_plain(q, fn, arg, len, flags);
}

int desync_queue_set_max_pending(desync_queue_t *q, size_t n) {
    if (!q)
        return DESYNC_EINVAL;
    dsy_queue_cold *c = atomic_load_explicit(&q->cold, memory_order_acquire);
    if (!c && !n)
        return 0; /* no limit, as before */
    if (!c && !(c = cold_get(q)))
        return DESYNC_ENOMEM;
    if (n)
        atomic_fetch_or_explicit(&gate, GATE_LIMITS, memory_order_relaxed);
    /* The limit is read after the gate by desyncs that see it (a desync
     * racing with this call may go either way). */
    atomic_store_explicit(&c->max_pending, n, memory_order_seq_cst);
    /* A higher limit, or none: blocked producers look again. */
    atomic_fetch_add_explicit(&c->room, 1, memory_order_release);
    if (atomic_load_explicit(&c->nblocked, memory_order_seq_cst))
        dsy_unpark_all(&c->room);
    return 0;
}

/* -------------------------------------------------------- embedded kicks */

#define KICK_IDLE 0u
#define KICK_QUEUED 1u /* queued or running; requests so far are served */
#define KICK_AGAIN 2u  /* requested again since the run started */

static enum dsy_run_result kick_run(dsy_node *n, desync_queue_t *q, void *data) {
    (void)q;
    (void)data;
    dsy_kick *k = DSY_CONTAINER_OF(n, dsy_kick, node);
    /* Requests made before this point are served by this run. acq_rel pairs
     * with the requester's CAS: this run sees what it published. */
    atomic_exchange_explicit(&k->st, KICK_QUEUED, memory_order_acq_rel);
    k->run(k);
    return DSY_DONE;
}

static void kick_finish(dsy_node *n) {
    dsy_kick *k = DSY_CONTAINER_OF(n, dsy_kick, node);
    uint32_t e = KICK_QUEUED;
    if (atomic_compare_exchange_strong_explicit(&k->st, &e, KICK_IDLE, memory_order_acq_rel,
                                                memory_order_acquire))
        k->done(k);
    else
        dsy_queue_push_schedule(k->q, &k->node); /* requested during the run */
}

static const dsy_node_ops kick_ops = {kick_run, kick_finish, NULL};

void dsy_kick_init(dsy_kick *k, desync_queue_t *q, void (*run)(dsy_kick *k),
                   void (*done)(dsy_kick *k)) {
    k->node.ops = &kick_ops;
    k->q = q;
    atomic_init(&k->st, KICK_IDLE);
    k->run = run;
    k->done = done;
}

bool dsy_kick_arm(dsy_kick *k) {
    uint32_t s = atomic_load_explicit(&k->st, memory_order_relaxed);
    for (;;) {
        if (s == KICK_AGAIN)
            return false;
        uint32_t next = s == KICK_IDLE ? KICK_QUEUED : KICK_AGAIN;
        if (atomic_compare_exchange_weak_explicit(&k->st, &s, next, memory_order_acq_rel,
                                                  memory_order_relaxed))
            return s == KICK_IDLE;
    }
}

void dsy_kick_push(dsy_kick *k) { dsy_queue_push_schedule(k->q, &k->node); }

/* ------------------------------------------------------------ public API */

desync_queue_t *desync_queue_new(desync_scheduler_t *scheduler) {
    if (!scheduler && !(scheduler = desync_scheduler_default()))
        return NULL;
    desync_queue_t *q = malloc(sizeof *q);
    if (q && dsy_queue_init(q, scheduler, 0) != 0) {
        free(q);
        q = NULL;
    }
    return q;
}

desync_queue_t *desync_queue_retain(desync_queue_t *q) {
    if (q)
        dsy_queue_ref(q);
    return q;
}

/* A token that the scheduler dropped because it was freed (READY without an
 * entry: see queue_runnable_orphan) waits for a syncer or waiter. A release
 * runs that work here, so jobs queued on a queue that outlives its scheduler
 * are not lost. */
static void run_orphaned(desync_queue_t *q) {
    uint32_t s = atomic_load_explicit(&q->state, memory_order_acquire);
    while ((s & DSY_Q_READY) && !(s & DSY_Q_LINKED)) {
        dsy_hold h; /* from before the steal (fork); our reference keeps q */
        dsy_hold_push(&h, q);
        if (!steal(q, &s)) {
            dsy_hold_pop(&h);
            continue;
        }
        queue_run(q, 0, &h); /* never MORE without a limit; idle or parked after */
        s = atomic_load_explicit(&q->state, memory_order_acquire);
    }
}

void dsy_queue_help(desync_queue_t *q) {
    uint32_t s = atomic_load_explicit(&q->state, memory_order_acquire);
    while (s & DSY_Q_READY) {
        dsy_hold h; /* from before the steal (fork) */
        dsy_hold_push(&h, q);
        if (!steal(q, &s)) {
            dsy_hold_pop(&h);
            continue;
        }
        if (queue_run(q, DSY_SCHED_BATCH, &h)) {
            /* More to do: back to the scheduler. */
            atomic_store_explicit(&dsy_self.owned, NULL, memory_order_relaxed);
            dsy_token_place(q, true);
        }
        return;
    }
}

void desync_queue_release(desync_queue_t *q) {
    if (q) {
        run_orphaned(q);
        dsy_queue_unref(q);
    }
}

int desync_queue_desync(desync_queue_t *q, desync_queue_job_fn job, void *arg) {
    return dsy_desync(q, (dsy_fn)job, arg, 0, 0);
}

int desync_queue_desync_copy(desync_queue_t *q, desync_queue_job_fn job, const void *arg,
                             size_t len) {
    return dsy_desync(q, (dsy_fn)job, arg, len, DSY_JOB_COPY);
}

int desync_queue_try_desync(desync_queue_t *q, desync_queue_job_fn job, void *arg) {
    return dsy_desync(q, (dsy_fn)job, arg, 0, DSY_JOB_TRY);
}

int desync_queue_sync(desync_queue_t *q, desync_queue_job_fn job, void *arg) {
    return dsy_sync(q, (dsy_fn)job, arg, 0);
}

int desync_queue_try_sync(desync_queue_t *q, desync_queue_job_fn job, void *arg) {
    return dsy_sync(q, (dsy_fn)job, arg, DSY_JOB_TRY);
}

/* ------------------------------------------------- the queue as a runnable */

/* A worker took q's entry: claim it (unless it holds the token already),
 * then run. Held from before the claim (fork); the entry's reference, then
 * the token's, keeps q alive. */
static dsy_run_status queue_runnable_run(dsy_runnable *r, unsigned limit, bool owned) {
    desync_queue_t *q = (desync_queue_t *)r;
    dsy_hold h;
    dsy_hold_push(&h, q);
    if (owned) {
        atomic_store_explicit(&dsy_self.owned, NULL, memory_order_relaxed);
    } else if (!claim_entry(q)) {
        dsy_hold_pop(&h);
        dsy_queue_unref(q); /* the stale entry's reference */
        return DSY_RUN_RELEASED;
    }
    return queue_run(q, limit, &h) ? DSY_RUN_MORE : DSY_RUN_RELEASED;
}

/* The worker gives back the token it still holds (fairness). */
static void queue_runnable_requeue(dsy_runnable *r) {
    atomic_store_explicit(&dsy_self.owned, NULL, memory_order_release);
    dsy_token_place((desync_queue_t *)r, true);
}

/* ------------------------------------------------------- introspection */

int desync_queue_set_label(desync_queue_t *q, const char *name) {
    if (!q)
        return DESYNC_EINVAL;
    if (!name && !atomic_load_explicit(&q->cold, memory_order_acquire))
        return 0;
    char *copy = NULL;
    if (name && !(copy = strdup(name)))
        return DESYNC_ENOMEM;
    dsy_queue_cold *c = cold_get(q);
    if (!c) {
        free(copy);
        return DESYNC_ENOMEM;
    }
    pthread_mutex_lock(&cold_lock);
    char *old = c->label;
    c->label = copy;
    pthread_mutex_unlock(&cold_lock);
    free(old);
    return 0;
}

int desync_queue_stats(desync_queue_t *q, desync_queue_stats_t *out) {
    if (!q || !out)
        return DESYNC_EINVAL;
    /* unlinked first: read the other way round, a run in between could make
     * unlinked pass pushed. Both are 32-bit counts (see BACKLOG above). */
    uint32_t unlinked = atomic_load_explicit(&q->unlinked, memory_order_relaxed);
    uint32_t pushed = atomic_load_explicit(&q->pushed, memory_order_relaxed);
    uint32_t s = atomic_load_explicit(&q->state, memory_order_relaxed);
    out->pending = (uint32_t)(pushed - unlinked);
    out->run = unlinked;
    out->state = (s & (DSY_Q_SUSPENDED | DSY_Q_HELD)) ? DESYNC_QUEUE_SUSPENDED
                 : atomic_load_explicit(&q->tail, memory_order_relaxed) ? DESYNC_QUEUE_RUNNING
                                                                          : DESYNC_QUEUE_IDLE;
    if (out->state == DESYNC_QUEUE_IDLE)
        out->pending = 0; /* a count still in flight */
    dsy_queue_cold *c = atomic_load_explicit(&q->cold, memory_order_acquire);
    out->max_pending = c ? atomic_load_explicit(&c->max_pending, memory_order_relaxed) : 0;
    out->blocked = c ? atomic_load_explicit(&c->nblocked, memory_order_relaxed) : 0;
    return 0;
}

/* cold_lock held: c's queue is alive (its free unlists c first). */
static void cold_describe(const dsy_queue_cold *c, char *buf, size_t len) {
    if (c->label)
        snprintf(buf, len, "\"%s\" (%p)", c->label, (void *)c->q);
    else
        snprintf(buf, len, "queue %p", (void *)c->q);
}

static void queue_runnable_name(dsy_runnable *r, char *buf, size_t len) {
    snprintf(buf, len, "queue %p", (void *)r);
    pthread_mutex_lock(&cold_lock);
    for (dsy_queue_cold *c = cold_list; c; c = c->next)
        if (c->q == (desync_queue_t *)r) {
            cold_describe(c, buf, len);
            break;
        }
    pthread_mutex_unlock(&cold_lock);
}

/* The queues of s that the library knows by name (a cold part: a label or a
 * limit): state and counts. Others show up only as run by a thread or ready. */
static void queue_runnable_dump(desync_scheduler_t *s, FILE *f) {
    static const char *const states[] = {"idle", "running or ready", "suspended"};
    char name[128];
    pthread_mutex_lock(&cold_lock);
    for (dsy_queue_cold *c = cold_list; c; c = c->next) {
        if (queue_sched(c->q) != s)
            continue;
        desync_queue_stats_t st;
        desync_queue_stats(c->q, &st);
        cold_describe(c, name, sizeof name);
        fprintf(f, "  %s %s: %s, %llu pending, %llu run",
                st.state == DESYNC_QUEUE_SUSPENDED ? "suspended" : "queue", name, states[st.state],
                (unsigned long long)st.pending, (unsigned long long)st.run);
        if (st.max_pending)
            fprintf(f, ", limit %zu, %zu producers blocked", st.max_pending, st.blocked);
        fputc('\n', f);
    }
    pthread_mutex_unlock(&cold_lock);
}

/* A closed scheduler has no run list: the token stays READY with no entry,
 * for a syncer or waiter to steal, and the entry's reference goes with it. */
static void queue_runnable_orphan(dsy_runnable *r) {
    desync_queue_t *q = (desync_queue_t *)r;
    uint32_t old = atomic_fetch_and_explicit(&q->state, ~DSY_Q_LINKED, memory_order_acq_rel);
    DSY_ASSERT(old & DSY_Q_LINKED);
    if (!(old & DSY_Q_READY))
        dsy_queue_unref(q); /* already stolen, with a reference of its own */
}

/* Is this thread inside a job of a queue of s? The deadlock check's walk. */
static bool queue_runnable_running_here(desync_scheduler_t *s) {
    return chain_has(frame_top(), NULL, s, 0);
}

/* The jobs unlinked so far: a syncer or a future waiter that takes the
 * token from the listed entry runs them, and counts them there. */
static uint32_t queue_runnable_progress(dsy_runnable *r) {
    return atomic_load_explicit(&((desync_queue_t *)r)->unlinked, memory_order_relaxed);
}

static const dsy_runnable_ops queue_runnable_ops = {
    queue_runnable_run,          queue_runnable_requeue, queue_runnable_orphan,
    queue_runnable_running_here, queue_runnable_name,    queue_runnable_dump,
    queue_runnable_progress};

/* ------------------------------------------------------------------ fork
 *
 * In the child of a fork, a busy queue that a vanished thread had marked (a
 * frame, a hold, `owned`: internal.h) is forked off: its token was with that
 * thread, or will be handed to it (a waiter), or its list may be half linked
 * (a producer), and its list may hold nodes on that thread's stack, which new
 * threads may reuse. So nothing runs it again: FORKED is set and READY
 * cleared (an entry for it in a run list is stale), sync, desync and waits
 * return DESYNC_EFORKED, and a token still held (by the thread that called
 * fork, after its job) is dropped. Its jobs never run in the child and it is
 * never freed there (one more reference). An idle queue marked by a vanished
 * thread (its marker withdrawn a moment late) is left alone; a busy queue
 * marked by one a moment early is forked off all the same.
 */

bool dsy_queue_forked_off(desync_queue_t *q) {
    return atomic_load_explicit(&q->state, memory_order_relaxed) & DSY_Q_FORKED;
}

static void fork_off(desync_queue_t *q) {
    if (!q || !atomic_load_explicit(&q->tail, memory_order_relaxed))
        return;
    uint32_t s = atomic_load_explicit(&q->state, memory_order_relaxed);
    if (s & DSY_Q_FORKED)
        return;
    atomic_store_explicit(&q->state, (s | DSY_Q_FORKED) & ~DSY_Q_READY, memory_order_relaxed);
    atomic_fetch_or_explicit(&gate, GATE_FORKED, memory_order_relaxed); /* desyncs look */
    dsy_queue_ref(q);
}

void dsy_queue_fork_vanished(dsy_thread *t) {
    for (dsy_frame *f = atomic_load_explicit(&t->frame, memory_order_acquire); f; f = f->parent)
        fork_off(f->q);
    for (dsy_hold *h = atomic_load_explicit(&t->holds, memory_order_acquire); h; h = h->up)
        fork_off(h->q);
    fork_off(atomic_load_explicit(&t->owned, memory_order_acquire));
}

/* The threads the survivor ran jobs for (blocked syncers) vanished: their
 * chains no longer count for deadlock checks. */
void dsy_queue_fork_survivor(dsy_thread *t) {
    for (dsy_frame *f = atomic_load_explicit(&t->frame, memory_order_relaxed); f; f = f->parent)
        f->behalf = NULL;
}

/* ------------------------------------------------ multi-object jobs (multi.c)
 *
 * The few queue operations a multi-object job needs besides push, drain and
 * token_place: the idle fast path (take every token by CAS, give it back),
 * the frames of a job that holds several queues, and a waiter that waits for
 * nodes on several queues (counted on each, as dsy_queue_wait_node is on one).
 */

bool dsy_queue_looks_idle(desync_queue_t *q) {
    return !atomic_load_explicit(&q->tail, memory_order_relaxed);
}

void dsy_queue_waiter_add(desync_queue_t *q) {
    atomic_fetch_add_explicit(&q->state, DSY_WAITER, memory_order_acq_rel);
}

void dsy_queue_waiter_sub(desync_queue_t *q) {
    uint32_t old = atomic_fetch_sub_explicit(&q->state, DSY_WAITER, memory_order_release);
    DSY_ASSERT(old >= DSY_WAITER);
    (void)old;
}

bool dsy_queue_steal_ready(desync_queue_t *q) {
    uint32_t s = atomic_load_explicit(&q->state, memory_order_acquire);
    while (s & DSY_Q_READY)
        if (steal(q, &s))
            return true;
    return false;
}
