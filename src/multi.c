/*
 * Jobs over several objects: desync_sync_all and desync_desync_all.
 *
 * PARTS. A multi-object job M puts one *part* node on the queue of each
 * distinct object it names (duplicates share one part). A part that reaches
 * the head of its queue holds that queue's run token and parks there
 * (DSY_PARKED, as a future node does): no later job of the queue starts. The
 * part that arrives last (M.arrive drops to 0) runs the job, on the thread
 * that brought it there, with every object's data; all of M's queues are
 * then held by M, and that thread pushes a frame for each, so a sync on any
 * of them from the job is refused (DESYNC_EDEADLK). It then lets each other
 * queue go on (dsy_queue_drain_until: the parked part runs again, sees GO,
 * is unlinked, and the token goes to whoever is next), and its own part is
 * unlinked by the run it is in. The last part to finish signals the waiting
 * caller (sync_all) or frees M (desync_all).
 *
 * ORDER. Parts are linked under one global lock (link_lock): the linking of
 * all of M's parts is atomic with respect to every other multi-object job's,
 * so if M links before N, M's part is ahead of N's on *every* queue they
 * share. Every multi-object job therefore takes the same relative order on
 * every queue it touches, and its position in each queue is fixed once its
 * call has linked (desync_all returns after that).
 *
 * IDLE FAST PATH (sync_all). The caller tries to take every queue's token
 * with one CAS on its idle tail (idle_take_alone, in address order). If
 * all succeed it holds every queue at once: the job runs inline, and each
 * token is given back (the queue goes idle, or jobs queued behind meanwhile
 * get it). The first try (up to MULTI_STACK objects) uses nothing but
 * what it needs: the queues' addresses sorted on the stack (no object's
 * memory is read before the CAS that takes its token; the datas are read
 * once every token is held) and a node and a frame per queue: no multi, no
 * part, no line shared by all threads (no global lock or counter). If one
 * CAS fails, the tokens already taken are given back without running
 * anything (their queues go idle, or get the jobs linked behind); the call
 * watches the busy queues for a moment (DSY_MULTI_PRESPIN_ROUNDS,
 * as dsy_sync does) and tries again, yields once (a preempted holder) and
 * tries again, then takes the locked path. Two
 * fast-path jobs never wait for each other (each holds all or nothing). The
 * fast path and the locked path mix without breaking the
 * order: a fast-path job occupies no position until it holds all its tokens
 * at once, and then no part of another job can be pending on those queues
 * (they were idle). Suppose N (locked) were ahead of a fast-path M on queue
 * Y and behind it on X: N's part on Y finished before M's CAS on Y found Y
 * idle, so N's job ran before that; but N's part on X could only arrive
 * after M gave X back, after M's job, after that CAS. A contradiction.
 *
 * DEADLOCK-FREE. Among multi-object jobs, M waits for N only if N's part is
 * ahead of M's on some queue, i.e. N linked first (or ran on the fast path
 * earlier): the "waits for" relation follows one total order, so it has no
 * cycle, and the earliest pending job always gets all its queues once the
 * single-object jobs ahead of its parts finish. The fast path never waits
 * (CAS or give up), and the link lock is held only for the exchanges that
 * link the parts (no job, no wait, no allocation under it). What is left is
 * what any job can do: a job that waits (syncs) for another queue; a cycle
 * of such waits through a blocked sync_all caller is refused by the
 * wait-for graph (waitgraph.c: the caller waits for all its queues at once);
 * a queue held by a parked part has no holder there (as a queue parked on a
 * future), so a job of B that syncs on A while a sync_all over {A, B} has
 * its part parked on A is not detected (nor is it with mutexes).
 *
 * WAITING (sync_all, locked path). The caller counts itself a waiter on each
 * queue (like dsy_queue_wait_node on one): a token holder that gives up a
 * token while waiters are counted hands it to the first waiting node, and a
 * part of a waiting caller that has not arrived takes it (`handed`, then
 * TOKEN in the caller's word), so the caller runs that queue itself up to
 * its part. It also steals READY tokens (a scheduler with no threads). But
 * when the caller sleeps and the part is at the head, the holder runs the
 * part itself (it parks, or runs the job if it is the last), as dsy_sync's
 * combine_sleepers does: with more threads than cores, waiting for the
 * caller to be scheduled would stop that queue and every queue its other
 * parts hold parked meanwhile (a convoy: R3 of bench/ ran 4 to 6 times
 * slower). The caller returns once its word says DONE, written by the last
 * part's finish (the last touch of the parts, which live on the caller's
 * stack), and no hand-off is still signalling it (`handing`: the caller
 * acts on `handed` without waiting for the TOKEN that follows it).
 *
 * Memory ordering: `arrive` is decremented acq_rel, so the last arrival sees
 * every queue's earlier jobs' writes; the GO phase is written by the releaser
 * before it hands the token (dsy_queue_drain_until); `handed` is stored with
 * release and exchanged with acquire by the caller, who may see it before
 * the word: the token (and q->head) comes with it.
 */
#include "internal.h"
#include "queue_fast.h"

#include <stddef.h>
#include <stdlib.h>

/* Distinct objects a sync_all handles with no allocation. */
#define MULTI_STACK 8u

enum part_phase { PART_WAIT, PART_PARKED, PART_GO };

typedef struct multi multi;

typedef struct part {
    dsy_node node;
    multi *m;
    desync_queue_t *q;
    _Atomic uint32_t phase;  /* enum part_phase */
    _Atomic uint32_t handed; /* sync_all: q's token was handed to the caller */
    bool got;                /* the push created q's token (the caller holds it) */
    dsy_frame frame;         /* q's frame while the job runs, or on the fast path */
    dsy_hold hold;           /* the caller's fork marker for q */
} part;

struct multi {
    desync_all_fn job;
    void *arg;
    _Atomic uint32_t arrive; /* parts not yet at their queue's head */
    _Atomic uint32_t left;   /* parts not finished (+1 for desync_all's call) */
    uint32_t nq;
    bool sync;
    dsy_thread *owner;     /* sync_all: the waiting thread */
    dsy_frame *caller;     /* sync_all: its frame chain */
    _Atomic uint32_t word; /* sync_all: DSY_W_WAITING, TOKEN, DONE */
    /* sync_all: hand-offs in progress (part_take_waiter between its store of
     * `handed` and its last touch of m): the caller, which may act on
     * `handed` before the word says TOKEN, returns only once this is 0. */
    _Atomic uint32_t handing;
    void **datas;
    part *parts;
    desync_queue_t **qs;  /* the nq distinct queues, by address */
    struct idle_tok *tok; /* sync_all: the idle fast path's, per queue */
};

/* Links the parts of one job at a time (see ORDER). */
static dsy_spinlock link_lock;

void dsy_multi_fork_prepare(void) { dsy_spin_lock(&link_lock); }
void dsy_multi_fork_parent(void) { dsy_spin_unlock(&link_lock); }
void dsy_multi_fork_child(void) { atomic_store_explicit(&link_lock, 0, memory_order_relaxed); }

/* Runs M's job on this thread, which holds every queue of M: a frame for
 * each but `at` (the part being run, whose frame run_node pushed). */
static void run_job(multi *m, part *at) {
    dsy_frame *top = NULL;
    for (uint32_t i = 0; i < m->nq; i++) {
        if (&m->parts[i] != at) {
            frame_push(&m->parts[i].frame, m->parts[i].q);
            top = &m->parts[i].frame;
        }
    }
    /* Run for a blocked caller: its chain counts for deadlock checks. */
    if (m->sync && m->owner != &dsy_self) {
        if (!top)
            top = frame_top();
        top->behalf = m->caller;
    }
    m->job(m->datas, m->arg);
    for (uint32_t i = m->nq; i-- > 0;)
        if (&m->parts[i] != at)
            frame_pop(&m->parts[i].frame);
}

static DSY_TLS unsigned tls_helping; /* nesting of help_others */

/* Before p arrives (m cannot finish before that, so m is alive): the other
 * queues of m whose token waits for a runner (READY) are run here, a batch
 * each, as a syncer runs its own queue. On a scheduler with no threads
 * nothing else would run them, and a sync on one object would wait forever
 * for a multi-object job queued on it; with threads it only saves them a
 * wake-up. Their jobs run inside p's frame, so a sync on p's queue from
 * them is refused (it would wait for m, which waits for them). */
static void help_others(multi *m, part *p) {
    if (tls_helping >= 2)
        return;
    tls_helping++;
    for (uint32_t i = 0; i < m->nq; i++)
        if (&m->parts[i] != p &&
            atomic_load_explicit(&m->parts[i].phase, memory_order_acquire) == PART_WAIT)
            dsy_queue_help(m->parts[i].q);
    tls_helping--;
}

static enum dsy_run_result part_run(dsy_node *n, desync_queue_t *q, void *data) {
    (void)q;
    (void)data;
    part *p = DSY_CONTAINER_OF(n, part, node);
    if (atomic_load_explicit(&p->phase, memory_order_relaxed) == PART_GO)
        return DSY_DONE; /* released: unlink it */
    multi *m = p->m;
    help_others(m, p);
    atomic_store_explicit(&p->phase, PART_PARKED, memory_order_relaxed);
    if (atomic_fetch_sub_explicit(&m->arrive, 1, memory_order_acq_rel) != 1)
        return DSY_PARKED; /* the token stays with p until the last part comes */
    run_job(m, p);
    for (uint32_t i = 0; i < m->nq; i++) {
        part *o = &m->parts[i];
        if (o == p)
            continue;
        atomic_store_explicit(&o->phase, PART_GO, memory_order_relaxed);
        dsy_queue_drain_until(o->q, &o->node); /* with its parked token */
    }
    return DSY_DONE;
}

static void part_finish(dsy_node *n) {
    multi *m = DSY_CONTAINER_OF(n, part, node)->m;
    if (atomic_fetch_sub_explicit(&m->left, 1, memory_order_acq_rel) != 1)
        return;
    if (m->sync)
        dsy_waiter_signal(&m->word, DSY_W_DONE); /* the last touch of m */
    else
        free(m);
}

/* A part of a waiting sync_all caller that has not arrived takes the token
 * for it (see WAITING). Parked parts and desync_all's never do. */
static DSY_TLS unsigned tls_combining; /* nesting of part_take_waiter's runs */

static int part_take_waiter(dsy_node *n) {
    part *p = DSY_CONTAINER_OF(n, part, node);
    if (!p->m->sync || atomic_load_explicit(&p->phase, memory_order_relaxed) != PART_WAIT)
        return 0;
    if (n == p->q->head && tls_combining < 2 &&
        atomic_load_explicit(&p->m->word, memory_order_relaxed) == DSY_W_SLEEPING) {
        /* The caller sleeps and p is next: run p here (it parks, or runs the
         * job if it is the last part) rather than wait for the caller to
         * wake up and take the queue on, during which this queue and every
         * queue its other parts hold would stand still (a convoy, with more
         * threads than cores). The token, with the reference token_place
         * gave it, goes with the run. */
        tls_combining++;
        dsy_queue_drain_until(p->q, n);
        tls_combining--;
        return 1;
    }
    multi *m = p->m;
    atomic_fetch_add_explicit(&m->handing, 1, memory_order_relaxed);
    /* Release: the caller may see `handed` before the word; it takes the
     * token (q->head and all) from here, and may run every part and see
     * DONE before our TOKEN lands: TOKEN never replaces DONE (which is
     * final), and `handing` keeps m until we are done with it. */
    atomic_store_explicit(&p->handed, 1, memory_order_release);
    uint32_t w = atomic_load_explicit(&m->word, memory_order_relaxed);
    while (w != DSY_W_DONE &&
           !atomic_compare_exchange_weak_explicit(&m->word, &w, DSY_W_TOKEN, memory_order_acq_rel,
                                                  memory_order_relaxed)) {
    }
    if (w == DSY_W_SLEEPING)
        dsy_unpark_one(&m->word);
    atomic_fetch_sub_explicit(&m->handing, 1, memory_order_release); /* the last touch of m */
    return 1;
}

/* take_waiter is also what makes run_node keep q->head at a parking node. */
static const dsy_node_ops part_ops = {part_run, part_finish, part_take_waiter};

/* ------------------------------------------------------------ the calls */

/* The idle fast path's hold on one queue: the node that is its tail while
 * the token is ours, and the job's frame for it. */
typedef struct idle_tok {
    dsy_node node;
    dsy_frame frame;
} idle_tok;

/* m is followed by n of each: parts, datas, queues, and for sync_all the
 * idle fast path's tokens (its own: parts may be linked after a try). */
#define MULTI_ITEM (sizeof(part) + 2 * sizeof(void *) + sizeof(idle_tok))
#define MULTI_MAX ((SIZE_MAX - sizeof(multi)) / MULTI_ITEM)

static size_t multi_bytes(size_t n, bool sync) {
    return sizeof(multi) + n * (MULTI_ITEM - (sync ? 0 : sizeof(idle_tok)));
}

static multi *multi_layout(void *mem, size_t n, bool sync) {
    multi *m = mem;
    m->parts = (part *)(m + 1);
    m->tok = sync ? (idle_tok *)(m->parts + n) : NULL;
    m->datas = (void **)(sync ? (void *)(m->tok + n) : (void *)(m->parts + n));
    m->qs = (desync_queue_t **)(m->datas + n);
    return m;
}

static bool forked_off_any(const multi *m) {
    if (DSY_LIKELY(!atomic_load_explicit(&dsy_forked, memory_order_relaxed)))
        return false;
    for (uint32_t i = 0; i < m->nq; i++)
        if (dsy_queue_forked_off(m->qs[i]))
            return true;
    return false;
}

static int cmp_queue(const void *a, const void *b) {
    uintptr_t x = (uintptr_t) * (desync_queue_t *const *)a;
    uintptr_t y = (uintptr_t) * (desync_queue_t *const *)b;
    return (x > y) - (x < y);
}

/* qs[0, nq): the distinct queues of objs, sorted by address; returns nq,
 * or 0 for a NULL object. Addresses only (the queue is the object's first
 * member): no object's memory is read, so on the idle fast path the first
 * touch of each object is the CAS that takes its token (its line comes
 * once, owned). */
static inline __attribute__((always_inline)) uint32_t sort_queues(desync_queue_t *qs[],
                                                                  desync_t *const objs[],
                                                                  size_t n) {
    if (n == 2) { /* the common case (a transfer) */
        if (!objs[0] || !objs[1])
            return 0;
        desync_queue_t *a = &objs[0]->q, *b = &objs[1]->q;
        bool swap = (uintptr_t)a > (uintptr_t)b;
        qs[0] = swap ? b : a;
        qs[1] = swap ? a : b;
        return a == b ? 1 : 2;
    }
    uint32_t nq = 0;
    if (n <= 16) {
        /* Insertion sort, dropping duplicates as they come. */
        for (size_t i = 0; i < n; i++) {
            if (!objs[i])
                return 0;
            desync_queue_t *q = &objs[i]->q;
            uint32_t j = nq;
            while (j > 0 && (uintptr_t)qs[j - 1] > (uintptr_t)q)
                j--;
            if (j > 0 && qs[j - 1] == q)
                continue;
            for (uint32_t k = nq; k > j; k--)
                qs[k] = qs[k - 1];
            qs[j] = q;
            nq++;
        }
    } else {
        for (size_t i = 0; i < n; i++) {
            if (!objs[i])
                return 0;
            qs[i] = &objs[i]->q;
        }
        qsort(qs, n, sizeof *qs, cmp_queue);
        nq = 1;
        for (size_t i = 1; i < n; i++)
            if (qs[nq - 1] != qs[i])
                qs[nq++] = qs[i];
    }
    return nq;
}

static void fill_datas(void **datas, desync_t *const objs[], size_t n) {
    for (size_t i = 0; i < n; i++)
        datas[i] = objs[i]->q.data;
}

/* The rest of m, for the parts that will be linked (not needed by the idle
 * fast path, which only takes and gives back tokens). */
static void multi_prepare(multi *m, desync_t *const objs[], size_t n, desync_all_fn job,
                          void *arg, bool sync) {
    fill_datas(m->datas, objs, n);
    m->job = job;
    m->arg = arg;
    m->sync = sync;
    for (uint32_t i = 0; i < m->nq; i++) {
        part *p = &m->parts[i];
        p->node.ops = &part_ops;
        p->m = m;
        p->q = m->qs[i];
        atomic_init(&p->phase, PART_WAIT);
        atomic_init(&p->handed, 0);
        p->got = false;
    }
    atomic_init(&m->arrive, m->nq);
    atomic_init(&m->left, m->nq);
    atomic_init(&m->word, DSY_W_WAITING);
    atomic_init(&m->handing, 0);
    m->owner = NULL;
    m->caller = NULL;
}

/* Links every part, atomically with respect to the other multi-object jobs
 * (ORDER). p->got: the push created that queue's token. The caller has
 * registered this thread (no registration under the lock: fork order). */
static void link_parts(multi *m) {
    for (uint32_t i = 0; i < m->nq; i++) {
        desync_queue_t *q = m->parts[i].q;
        /* As in dsy_queue_push_schedule: a starved scheduler tries again. */
        if (DSY_UNLIKELY(atomic_load_explicit(&dsy_sched_starved_count, memory_order_relaxed)))
            dsy_sched_poke(dsy_queue_sched(q));
    }
    dsy_spin_lock(&link_lock);
    for (uint32_t i = 0; i < m->nq; i++)
        m->parts[i].got = dsy_queue_push(m->parts[i].q, &m->parts[i].node);
    dsy_spin_unlock(&link_lock);
}

/* Gives back the first k tokens taken by run_if_idle, last first. */
static inline __attribute__((always_inline)) void give_back(desync_queue_t *const qs[],
                                                            idle_tok tok[], uint32_t k) {
    while (k-- > 0) {
        idle_give_back(qs[k], &tok[k].node);
        frame_pop(&tok[k].frame);
    }
}

/* The idle fast path: takes the token of each of the nq queues qs (by
 * address) with one CAS, with tok[i]'s node and frame. If it got them all,
 * fills datas (now: the line of each object is ours already) and runs the
 * job, and returns true. Gives back every token it took either way.
 * Inlined where called: with nq and n known (two objects) the loops go. */
static inline __attribute__((always_inline)) bool
run_if_idle(desync_queue_t *const qs[], uint32_t nq, idle_tok tok[], desync_t *const objs[],
            size_t n, void *datas[], desync_all_fn job, void *arg) {
    for (uint32_t k = 0; k < nq; k++) {
        frame_push(&tok[k].frame, qs[k]); /* before the token exists (fork) */
        if (!idle_take_alone(qs[k], &tok[k].node)) {
            frame_pop(&tok[k].frame);
            give_back(qs, tok, k);
            return false;
        }
    }
    fill_datas(datas, objs, n);
    job(datas, arg);
    give_back(qs, tok, nq);
    return true;
}

/* sync_all's wait (WAITING): runs its queues up to its parts when their
 * tokens come its way, until the last part has finished. */
static void wait_all(multi *m) {
    for (uint32_t i = 0; i < m->nq; i++) {
        part *p = &m->parts[i];
        if (p->got) {
            dsy_queue_ref(p->q); /* a token run by drain_until carries a reference */
            atomic_store_explicit(&p->handed, 1, memory_order_relaxed);
        }
        dsy_queue_waiter_add(p->q);
    }
    for (;;) {
        for (uint32_t i = 0; i < m->nq; i++) {
            part *p = &m->parts[i];
            if (atomic_exchange_explicit(&p->handed, 0, memory_order_acquire)) {
                dsy_queue_drain_until(p->q, &p->node);
            } else if (atomic_load_explicit(&p->phase, memory_order_acquire) == PART_WAIT &&
                       dsy_queue_steal_ready(p->q)) {
                /* Our part may have gone by meanwhile (the token is then a
                 * later busy period's): only run up to a part still queued. */
                if (atomic_load_explicit(&p->phase, memory_order_acquire) == PART_WAIT)
                    dsy_queue_drain_until(p->q, &p->node);
                else
                    dsy_token_place(p->q, true);
            }
        }
        if (dsy_wait_word_help(&m->word, 0, dsy_queue_sched(m->qs[0])) == DSY_W_DONE)
            break;
        /* TOKEN: a part was handed a token. No DONE can come before we run
         * it (that part has not arrived), so the exchange loses none. */
        if (atomic_exchange_explicit(&m->word, DSY_W_WAITING, memory_order_acq_rel) ==
            DSY_W_DONE)
            break;
    }
    for (uint32_t i = 0; i < m->nq; i++)
        dsy_queue_waiter_sub(m->parts[i].q);
    /* A hand-off may still be finishing its signal (a few instructions). */
    for (unsigned b = 0; atomic_load_explicit(&m->handing, memory_order_acquire);)
        dsy_backoff(&b);
}

/* sync_all past the first try of the idle fast path (`tried`; for more than
 * MULTI_STACK objects that try is made here): every check, the prespin,
 * then the locked path. */
static __attribute__((noinline)) int sync_all_wait(desync_t *const objs[], size_t n,
                                                   desync_all_fn job, void *arg, bool tried) {
    _Alignas(max_align_t) unsigned char small[sizeof(multi) + MULTI_STACK * MULTI_ITEM];
    void *mem = small;
    if (n > MULTI_STACK && (n > MULTI_MAX || !(mem = malloc(multi_bytes(n, true)))))
        return DESYNC_ENOMEM;
    multi *m = multi_layout(mem, n, true);
    int rc = 0;
    if (!(m->nq = sort_queues(m->qs, objs, n)))
        rc = DESYNC_EINVAL;
    else if (forked_off_any(m))
        rc = DESYNC_EFORKED;
    if (rc != 0)
        goto out;
    (void)dsy_thread_self(); /* registered before any frame, hold or lock */
    if (!tried && run_if_idle(m->qs, m->nq, m->tok, objs, n, m->datas, job, arg))
        goto out;
    for (uint32_t i = 0; i < m->nq; i++) {
        if (dsy_queue_in_chain(m->qs[i])) {
            rc = DESYNC_EDEADLK;
            goto out;
        }
    }
    /* Busy: watch for a moment for all to be idle, as dsy_sync does for
     * one queue (a short job running on another core ends sooner than a
     * queued part's hand-offs and wake-ups). */
    for (unsigned r = 0; r < DSY_MULTI_PRESPIN_ROUNDS; r++) {
        dsy_cpu_relax();
        bool idle = true;
        for (uint32_t i = 0; i < m->nq && idle; i++)
            idle = dsy_queue_looks_idle(m->qs[i]);
        if (idle && run_if_idle(m->qs, m->nq, m->tok, objs, n, m->datas, job, arg))
            goto out;
    }
    /* Still busy: with more threads than cores the holder is most likely
     * preempted (R3: 8 threads on 2 cores). Lend it this CPU once and try
     * again before linking parts: a yield is one system call, while the
     * locked path costs hand-offs, a wake-up, and parks our other queues
     * behind the busy one meanwhile. In R3 this turns about three in four
     * locked-path calls into fast-path runs. */
    dsy_yield();
    if (run_if_idle(m->qs, m->nq, m->tok, objs, n, m->datas, job, arg))
        goto out;
    multi_prepare(m, objs, n, job, arg, true);
    /* About to block: a cycle through any of our queues is refused before
     * anything is linked. */
    uint32_t nw = m->nq < DSY_WG_WAITS ? m->nq : DSY_WG_WAITS;
    dsy_wait_edge edge;
    if (dsy_wait_enter_all(&edge, m->qs, nw)) {
        rc = DESYNC_EDEADLK;
        goto out;
    }
    m->owner = &dsy_self;
    m->caller = frame_top();
    /* A job may drop the last reference to an object (a release inside
     * it): we hold one of our own on each queue until we are done. */
    for (uint32_t i = 0; i < m->nq; i++) {
        dsy_queue_ref(m->parts[i].q);
        dsy_hold_push(&m->parts[i].hold, m->parts[i].q); /* our parts are in q (fork) */
    }
    link_parts(m);
    wait_all(m);
    dsy_wait_leave(&edge);
    for (uint32_t i = m->nq; i-- > 0;)
        dsy_hold_pop(&m->parts[i].hold);
    for (uint32_t i = 0; i < m->nq; i++)
        dsy_queue_unref(m->parts[i].q);
out:
    if (mem != small)
        free(mem);
    return rc;
}


int desync_sync_all(desync_t *const objs[], size_t n, desync_all_fn job, void *arg) {
    if (!objs || !n || !job)
        return DESYNC_EINVAL;
    if (n <= MULTI_STACK) {
        /* The idle fast path's first try, with nothing but what it uses. */
        desync_queue_t *qs[MULTI_STACK];
        idle_tok tok[MULTI_STACK];
        void *datas[MULTI_STACK];
        uint32_t nq = sort_queues(qs, objs, n);
        if (!nq)
            return DESYNC_EINVAL;
        if (DSY_UNLIKELY(atomic_load_explicit(&dsy_forked, memory_order_relaxed)))
            return sync_all_wait(objs, n, job, arg, false); /* forked-off checks first */
        if (nq == 2 && n == 2 ? run_if_idle(qs, 2, tok, objs, 2, datas, job, arg) /* unrolled */
                              : run_if_idle(qs, nq, tok, objs, n, datas, job, arg))
            return 0;
        return sync_all_wait(objs, n, job, arg, true);
    }
    return sync_all_wait(objs, n, job, arg, false);
}

int desync_desync_all(desync_t *const objs[], size_t n, desync_all_fn job, void *arg) {
    if (!objs || !n || !job)
        return DESYNC_EINVAL;
    void *mem;
    if (n > MULTI_MAX || !(mem = malloc(multi_bytes(n, false))))
        return DESYNC_ENOMEM;
    multi *m = multi_layout(mem, n, false);
    int rc = 0;
    if (!(m->nq = sort_queues(m->qs, objs, n)))
        rc = DESYNC_EINVAL;
    else if (forked_off_any(m))
        rc = DESYNC_EFORKED;
    if (rc != 0) {
        free(m);
        return rc;
    }
    multi_prepare(m, objs, n, job, arg, false);
    (void)dsy_thread_self(); /* registered before any hold or lock */
    /* One count of our own keeps m (and the holds in it) until we return:
     * the job may run and finish every part before that. */
    atomic_fetch_add_explicit(&m->left, 1, memory_order_relaxed);
    for (uint32_t i = 0; i < m->nq; i++)
        dsy_hold_push(&m->parts[i].hold, m->parts[i].q); /* mid-push, then the token (fork) */
    link_parts(m);
    for (uint32_t i = 0; i < m->nq; i++)
        if (m->parts[i].got)
            dsy_token_place(m->parts[i].q, false); /* a thread runs the part */
    for (uint32_t i = m->nq; i-- > 0;)
        dsy_hold_pop(&m->parts[i].hold);
    if (atomic_fetch_sub_explicit(&m->left, 1, memory_order_acq_rel) == 1)
        free(m);
    return 0;
}
