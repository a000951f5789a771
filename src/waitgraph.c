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
 * its slot lists them all (the first DSY_WG_WAITS), and the walk is a
 * depth-first search over every queue a blocked thread waits for (a slot
 * whose searches all ended without a cycle is not searched again). Its held
 * set is its frames, as for any wait: the queues its parts already hold
 * parked are not listed (like queues parked on a future, below).
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
    _Atomic(desync_queue_t *) waits[DSY_WG_WAITS];
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
    uint32_t n = atomic_load_explicit(&s->nheld, memory_order_acquire);
    v->nheld = n < DSY_WG_HELD ? n : DSY_WG_HELD;
    for (uint32_t i = 0; i < v->nheld; i++)
        v->held[i] = atomic_load_explicit(&s->held[i], memory_order_acquire);
    return atomic_load_explicit(&s->gen, memory_order_seq_cst) == v->gen;
}

static bool view_holds(const wg_view *v, const desync_queue_t *q) {
    for (uint32_t i = 0; i < v->nheld; i++)
        if (v->held[i] == q)
            return true;
    return false;
}

/* The walk: a depth-first search from the queues `mine` waits for. 1: a
 * cycle back to `me` that held at one instant; 0: none; -1: something
 * changed under the walk (walk again). A path level keeps its slot's
 * generation and re-reads the slot for its next queue (the path stays small:
 * 8 bytes a level). */
typedef struct wg_level {
    uint16_t slot, next; /* next: the index of the slot's next queue to follow */
    uint32_t gen;
} wg_level;

static int walk(wg_slot *me, const wg_view *mine) {
    wg_level path[DSY_WG_SLOTS]; /* a path visits each slot once: 8 KiB of stack */
    uint32_t done[DSY_WG_SLOTS / 32] = {0}; /* slots searched to the end */
    uint32_t len = 0, root_next = 0, hw = atomic_load_explicit(&slots_hw, memory_order_seq_cst);
    for (;;) {
        desync_queue_t *q;
        if (len == 0) {
            if (root_next >= mine->nwaits)
                return 0;
            q = mine->waits[root_next++];
        } else {
            wg_level *l = &path[len - 1];
            wg_view v;
            if (!slot_read(&slots[l->slot], &v) || v.gen != l->gen)
                return -1;
            if (l->next >= v.nwaits) {
                done[l->slot / 32] |= 1u << (l->slot % 32);
                len--;
                continue;
            }
            q = v.waits[l->next++];
        }
        if (view_holds(mine, q))
            break; /* back to a queue the walker holds */
        /* The blocked thread that holds q, if any. */
        uint32_t found = DSY_WG_SLOTS;
        wg_view v;
        for (uint32_t i = 0; i < hw && found == DSY_WG_SLOTS; i++) {
            wg_slot *s = &slots[i];
            if (s == me || !atomic_load_explicit(&s->used, memory_order_acquire))
                continue;
            if (!slot_read(s, &v))
                return -1;
            if (v.nwaits && view_holds(&v, q))
                found = i;
        }
        if (found == DSY_WG_SLOTS)
            continue; /* q is held by a running thread, or by nobody */
        if (done[found / 32] & (1u << (found % 32)))
            continue;
        bool on_path = false;
        for (uint32_t k = 0; k < len && !on_path; k++)
            on_path = path[k].slot == found;
        if (on_path)
            continue; /* a loop that does not come back to us: theirs */
        path[len++] = (wg_level){(uint16_t)found, 0, v.gen};
    }
    for (uint32_t k = 0; k < len; k++)
        if (atomic_load_explicit(&slots[path[k].slot].gen, memory_order_seq_cst) != path[k].gen)
            return -1;
    return 1;
}

bool dsy_wait_enter(dsy_wait_edge *e, desync_queue_t *q) { return dsy_wait_enter_all(e, &q, 1); }

bool dsy_wait_enter_all(dsy_wait_edge *e, desync_queue_t *const qs[], uint32_t n) {
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
        atomic_store_explicit(&s->nheld, 0, memory_order_relaxed);
        uint32_t g = atomic_load_explicit(&s->gen, memory_order_relaxed);
        atomic_store_explicit(&s->gen, (g | 1u) + 1u, memory_order_relaxed); /* even, new */
        atomic_store_explicit(&s->used, 0, memory_order_relaxed);
    }
}
