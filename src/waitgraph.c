/*
 * The wait-for graph: deadlock detection across threads.
 *
 * A thread about to block until a queue Q has run its job (a sync on a busy
 * queue, a wait on a queue-bound future) first PUBLISHES an edge in its slot:
 * "I wait for Q, and I hold these queues" (the queues of the jobs it is
 * running: its frame chain, see queue.c). Then it WALKS: which blocked thread
 * holds Q? what does that thread wait for? who holds that? ... If the walk
 * comes back to a queue the walker holds, the threads on the path wait for
 * each other forever: the walker backs out (unpublishes, queues nothing) and
 * its call returns DESYNC_EDEADLK. The edge stays published for the whole
 * wait, and is removed when it ends.
 *
 * Why the thread that closes a cycle always sees it: publishing ends with a
 * seq_cst increment of the slot's generation, and walking reads generations
 * with seq_cst loads, so of two threads that publish and then walk, at least
 * one sees the other's edge (store-load order, as in Dekker's algorithm). The
 * last thread to join a cycle therefore sees every other edge of it.
 *
 * Why there are no false positives: a published held set only lists queues
 * whose jobs the thread is inside of, and a thread cannot leave those jobs
 * while it is blocked; the walk records each slot's generation, and a cycle
 * counts only if every generation on the path is unchanged afterwards, so
 * every edge held at one instant (the end of the walk). A slot caught being
 * rewritten, or a path that changed, makes the walk start again.
 *
 * A multi-object sync (desync_sync_all) waits for several queues at once:
 * its slot lists them all (the first DSY_WG_WAITS). Its held set is its
 * frames, as for any wait: the queues its parts already hold parked are not
 * listed (like queues parked on a future, below).
 *
 * SCHEDULERS. desync_scheduler_drain(S) waits for every busy worker of S,
 * not for one queue. Its edge points at S itself: the listed queue is S's
 * address with the low bit set (queues and schedulers are aligned, so a tag
 * cannot be a queue), and a slot "holds" S when its thread is a worker of S
 * (`sched`, set when the thread takes its slot) and waits for something: a
 * blocked worker is busy, so the drain waits for it. The drainer's edge
 * stays published while it runs ready jobs of S itself (drain does): it
 * does not return before S is quiet either way, so the edge is true.
 *
 * So a blocked thread may wait for several queues, and a queue (a tagged
 * scheduler) may be held by several blocked threads: the walk is a
 * depth-first search over both. Each slot is entered at most once per walk:
 * one whose search ended without a cycle cannot lead back to the walker
 * either (a change under the walk shows in the generations), and one on the
 * path is a loop that is not the walker's. The cycle it reports is one path,
 * validated by generations as above.
 *
 * HOLDING NOTHING. A thread outside any job that is not a worker holds no
 * queue and no scheduler, so no walk can pass through it (nobody waits for
 * what it holds) and its own walk could never come back to it: its wait
 * publishes nothing and walks nothing. Most waits are such (a plain thread's
 * sync on a busy object); with 8 threads syncing on 1,000 objects, the
 * publish and the walk took about 13% of the process's CPU time (CM).
 *
 * Only blocked threads are in the graph: a queue held by a running thread
 * ends the walk (that thread will walk when it blocks, if it does). Queues
 * parked on a future or a resumer have no holder: cycles through a promise
 * or a resume that only a later job would provide are not detected.
 *
 * Slots live in static storage (type-stable: a walker may read a slot that
 * was just released and reused, and the generation check then rejects what
 * it read). A thread takes a slot the first time it blocks and gives it back
 * when it exits. Past DSY_WG_SLOTS blocked-at-once threads, a thread without
 * a slot waits undetected; past DSY_WG_HELD nested jobs, the outer ones are
 * not listed. Both are documented limits.
 *
 * fork: the child frees every slot but the calling thread's. A thread that
 * vanished halfway through slot_write left its generation odd for good, and
 * every walk in the child would retry on it forever.
 */
#include "internal.h"

#include <pthread.h>

#define DSY_WG_SLOTS 1024u
#define DSY_WG_HELD 16u

typedef struct wg_slot {
    /* Even when stable; odd while its owner rewrites it. seq_cst RMWs by the
     * owner, seq_cst loads by walkers (see the top comment). */
    _Atomic uint32_t gen;
    _Atomic uint32_t used; /* 1 while a thread owns the slot */
    _Atomic uint32_t nwaits; /* 0: not blocked */
    _Atomic(desync_queue_t *) waits[DSY_WG_WAITS]; /* low bit set: a scheduler */
    /* The scheduler its thread is a worker of (NULL: none). A thread's
     * role never changes, so it is set when the thread takes the slot;
     * it counts only while the thread waits (nwaits > 0). */
    _Atomic(desync_scheduler_t *) sched;
    _Atomic uint32_t nheld;
    _Atomic(desync_queue_t *) held[DSY_WG_HELD];
} wg_slot;

static wg_slot slots[DSY_WG_SLOTS];
static _Atomic uint32_t slots_hw; /* slots [0, hw) have been used */

/* The lists of this thread's enclosing waits for several queues (the edge
 * keeps one queue; OUTER_STASHED in its outer_held says the list is here).
 * Deeper nesting keeps only the first queue of the outer waits. */
#define WG_STASH 2u
#define OUTER_STASHED 0x80000000u
static DSY_TLS struct {
    desync_queue_t *q[DSY_WG_WAITS];
    uint32_t n;
} stash[WG_STASH];
static DSY_TLS uint32_t stash_depth;

static DSY_TLS wg_slot *tls_slot;
static DSY_TLS bool tls_no_slot; /* none was free: this thread is not tracked */
static pthread_key_t slot_key;
static pthread_once_t slot_key_once = PTHREAD_ONCE_INIT;

static void slot_release(void *p) {
    wg_slot *s = p;
    atomic_fetch_add_explicit(&s->gen, 2, memory_order_seq_cst); /* stale reads fail */
    atomic_store_explicit(&s->used, 0, memory_order_release);
}

static void slot_key_init(void) { pthread_key_create(&slot_key, slot_release); }

static wg_slot *my_slot(void) {
    if (DSY_LIKELY(tls_slot != NULL) || tls_no_slot)
        return tls_slot;
    pthread_once(&slot_key_once, slot_key_init);
    for (uint32_t i = 0; i < DSY_WG_SLOTS; i++) {
        uint32_t free_ = 0;
        if (atomic_load_explicit(&slots[i].used, memory_order_relaxed) ||
            !atomic_compare_exchange_strong_explicit(&slots[i].used, &free_, 1,
                                                     memory_order_acquire, memory_order_relaxed))
            continue;
        uint32_t hw = atomic_load_explicit(&slots_hw, memory_order_relaxed);
        while (hw < i + 1 && !atomic_compare_exchange_weak_explicit(&slots_hw, &hw, i + 1,
                                                                    memory_order_seq_cst,
                                                                    memory_order_relaxed)) {
        }
        tls_slot = &slots[i];
        atomic_store_explicit(&tls_slot->sched, dsy_sched_worker_of(), memory_order_release);
        pthread_setspecific(slot_key, tls_slot);
        return tls_slot;
    }
    tls_no_slot = true;
    return NULL;
}

/* Rewrites the calling thread's slot: waiting for qs[0..nq) (nq 0: not
 * waiting), holding the `keep` outermost queues of its frame chain
 * (UINT32_MAX: all). Returns how many it holds. */
static uint32_t slot_write(wg_slot *s, desync_queue_t *const *qs, uint32_t nq, uint32_t keep) {
    atomic_fetch_add_explicit(&s->gen, 1, memory_order_seq_cst); /* odd */
    if (nq > DSY_WG_WAITS)
        nq = DSY_WG_WAITS;
    uint32_t n = nq ? dsy_queue_held(s->held, DSY_WG_HELD, keep) : 0;
    /* Release stores: a walker that reads one of them (acquire) also sees
     * the odd generation before it, so its re-check of gen fails. */
    atomic_store_explicit(&s->nheld, n, memory_order_release);
    for (uint32_t i = 0; i < nq; i++)
        atomic_store_explicit(&s->waits[i], qs[i], memory_order_release);
    atomic_store_explicit(&s->nwaits, nq, memory_order_release);
    atomic_fetch_add_explicit(&s->gen, 1, memory_order_seq_cst); /* even: published */
    return n;
}

/* A consistent copy of slot s: false if it is being rewritten. */
typedef struct wg_view {
    uint32_t gen, nheld, nwaits;
    desync_scheduler_t *sched;
    desync_queue_t *waits[DSY_WG_WAITS];
    desync_queue_t *held[DSY_WG_HELD];
} wg_view;

static bool slot_read(wg_slot *s, wg_view *v) {
    v->gen = atomic_load_explicit(&s->gen, memory_order_seq_cst);
    if (v->gen & 1)
        return false;
    uint32_t w = atomic_load_explicit(&s->nwaits, memory_order_acquire);
    v->nwaits = w < DSY_WG_WAITS ? w : DSY_WG_WAITS;
    for (uint32_t i = 0; i < v->nwaits; i++)
        v->waits[i] = atomic_load_explicit(&s->waits[i], memory_order_acquire);
    v->sched = atomic_load_explicit(&s->sched, memory_order_acquire);
    uint32_t n = atomic_load_explicit(&s->nheld, memory_order_acquire);
    v->nheld = n < DSY_WG_HELD ? n : DSY_WG_HELD;
    for (uint32_t i = 0; i < v->nheld; i++)
        v->held[i] = atomic_load_explicit(&s->held[i], memory_order_acquire);
    return atomic_load_explicit(&s->gen, memory_order_seq_cst) == v->gen;
}

/* Does the thread of view v hold q (a queue, or a tagged scheduler)? */
static bool view_holds(const wg_view *v, const desync_queue_t *q) {
    if ((uintptr_t)q & 1u)
        return v->sched && (uintptr_t)v->sched == ((uintptr_t)q & ~(uintptr_t)1u);
    for (uint32_t i = 0; i < v->nheld; i++)
        if (v->held[i] == q)
            return true;
    return false;
}

/* The walk: a depth-first search from the queues `mine` waits for (the top
 * comment). 1: a cycle back to `me` that held at one instant; 0: none; -1:
 * something changed under the walk (walk again). A level keeps its slot's
 * generation, which of its queues it follows (`next`: 1 + its index, 0
 * before the first) and where the scan for that queue's holders goes on;
 * it re-reads its slot for them (12 bytes a level). The walker's own level
 * is `root`, on `mine`. */
typedef struct wg_level {
    uint16_t slot, next, scan;
    uint32_t gen;
} wg_level;

static int walk(wg_slot *me, const wg_view *mine) {
    wg_level path[DSY_WG_SLOTS]; /* a path enters each slot once: 12 KiB of stack */
    uint64_t seen[DSY_WG_SLOTS / 64] = {0}; /* slots entered by this walk */
    wg_level root = {0, 0, 0, 0};
    uint32_t len = 0, hw = atomic_load_explicit(&slots_hw, memory_order_seq_cst);
    for (;;) {
        wg_level *l = len ? &path[len - 1] : &root;
        wg_view lv;
        const wg_view *v = mine;
        if (len) {
            if (!slot_read(&slots[l->slot], &lv) || lv.gen != l->gen)
                return -1;
            v = &lv;
        }
        if (l->next == 0 || l->scan >= hw) {
            /* The next queue of this level, if any. */
            if (l->next >= v->nwaits) {
                if (len == 0)
                    return 0;
                len--; /* searched to the end: stays seen */
                continue;
            }
            l->next++;
            l->scan = 0;
            if (view_holds(mine, v->waits[l->next - 1])) {
                /* Back to what the walker holds: a cycle if the path held. */
                for (uint32_t k = 0; k < len; k++)
                    if (atomic_load_explicit(&slots[path[k].slot].gen, memory_order_seq_cst) !=
                        path[k].gen)
                        return -1;
                return 1;
            }
        }
        desync_queue_t *q = v->waits[l->next - 1];
        /* The next blocked thread not entered yet that holds q. */
        uint32_t found = DSY_WG_SLOTS;
        wg_view hv;
        for (uint32_t i = l->scan; i < hw && found == DSY_WG_SLOTS; i++) {
            wg_slot *s = &slots[i];
            if (s == me || (seen[i / 64] >> (i % 64) & 1u) ||
                !atomic_load_explicit(&s->used, memory_order_acquire))
                continue;
            if (!slot_read(s, &hv))
                return -1;
            if (hv.nwaits && view_holds(&hv, q))
                found = i;
        }
        if (found == DSY_WG_SLOTS) {
            l->scan = (uint16_t)hw; /* held by a running thread, by nobody, or seen */
            continue;
        }
        l->scan = (uint16_t)(found + 1);
        seen[found / 64] |= (uint64_t)1 << (found % 64);
        path[len++] = (wg_level){(uint16_t)found, 0, 0, hv.gen};
    }
}

bool dsy_wait_enter(dsy_wait_edge *e, desync_queue_t *q) { return dsy_wait_enter_all(e, &q, 1); }

bool dsy_wait_enter_all(dsy_wait_edge *e, desync_queue_t *const qs[], uint32_t n) {
    /* HOLDING NOTHING (top comment): no edge, no walk. */
    if (!atomic_load_explicit(&dsy_self.frame, memory_order_relaxed) && !dsy_sched_worker_of()) {
        e->slot = NULL;
        return false;
    }
    wg_slot *me = my_slot();
    e->slot = me;
    if (!me)
        return false;
    /* A wait inside a job this thread runs during another wait (as a waiter
     * that took the token): the enclosing edge is restored at leave, with
     * the held set it had (the outermost frames then), not today's frames. */
    uint32_t nouter = atomic_load_explicit(&me->nwaits, memory_order_relaxed);
    e->outer = nouter ? atomic_load_explicit(&me->waits[0], memory_order_relaxed) : NULL;
    e->outer_held = atomic_load_explicit(&me->nheld, memory_order_relaxed);
    if (nouter > 1 && stash_depth < WG_STASH) {
        /* An enclosing wait for several queues: its list is kept here. */
        stash[stash_depth].n = nouter;
        for (uint32_t i = 0; i < nouter; i++)
            stash[stash_depth].q[i] = atomic_load_explicit(&me->waits[i], memory_order_relaxed);
        stash_depth++;
        e->outer_held |= OUTER_STASHED;
    }
    slot_write(me, qs, n, UINT32_MAX);
    wg_view mine;
    mine.sched = atomic_load_explicit(&me->sched, memory_order_relaxed);
    mine.nwaits = n < DSY_WG_WAITS ? n : DSY_WG_WAITS;
    for (uint32_t i = 0; i < mine.nwaits; i++)
        mine.waits[i] = qs[i];
    mine.nheld = atomic_load_explicit(&me->nheld, memory_order_relaxed);
    if (mine.nheld > DSY_WG_HELD)
        mine.nheld = DSY_WG_HELD;
    for (uint32_t i = 0; i < mine.nheld; i++)
        mine.held[i] = atomic_load_explicit(&me->held[i], memory_order_relaxed);
    int r;
    for (unsigned b = 0; (r = walk(me, &mine)) < 0;)
        dsy_backoff(&b);
    if (r == 0)
        return false;
    dsy_wait_leave(e);
    return true;
}

bool dsy_wait_enter_sched(dsy_wait_edge *e, desync_scheduler_t *s) {
    return dsy_wait_enter(e, (desync_queue_t *)((uintptr_t)s | 1u));
}

void dsy_wait_leave(dsy_wait_edge *e) {
    if (!e->slot)
        return;
    uint32_t held = e->outer_held & ~OUTER_STASHED;
    if (e->outer_held & OUTER_STASHED) {
        stash_depth--;
        slot_write(e->slot, stash[stash_depth].q, stash[stash_depth].n, held);
    } else {
        slot_write(e->slot, &e->outer, e->outer != NULL, held); /* the enclosing wait, if any */
    }
}

void dsy_wait_fork_child(void) {
    uint32_t hw = atomic_load_explicit(&slots_hw, memory_order_relaxed);
    for (uint32_t i = 0; i < hw; i++) {
        wg_slot *s = &slots[i];
        if (s == tls_slot)
            continue;
        atomic_store_explicit(&s->nwaits, 0, memory_order_relaxed);
        atomic_store_explicit(&s->sched, NULL, memory_order_relaxed);
        atomic_store_explicit(&s->nheld, 0, memory_order_relaxed);
        uint32_t g = atomic_load_explicit(&s->gen, memory_order_relaxed);
        atomic_store_explicit(&s->gen, (g | 1u) + 1u, memory_order_relaxed); /* even, new */
        atomic_store_explicit(&s->used, 0, memory_order_relaxed);
    }
}
