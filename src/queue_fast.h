/*
 * The idle fast path of the queue (queue.c), in a header so that the
 * multi-object fast path (multi.c) inlines it as dsy_sync does: one CAS
 * takes an idle queue, one CAS gives it back, with this thread's frame
 * pushed around the job. Part of queue.c's state machine (see its top
 * comment); only queue.c and multi.c include it.
 */
#ifndef DESYNC_QUEUE_FAST_H
#define DESYNC_QUEUE_FAST_H

#include "internal.h"

/* Bits of the queue state word (the others: queue.c). */
#define DSY_Q_BARGE 64u
#define DSY_Q_BSLEEP 4096u

/* Out of line in queue.c. */
void dsy_queue_barger_turn(desync_queue_t *q, uint32_t s);
void dsy_queue_give_back_behind(desync_queue_t *q, dsy_node *n);

/* This thread's frame chain lives in its record (internal.h: fork), where
 * the child of a fork finds the queues whose jobs vanished threads ran. */
static inline dsy_frame *frame_top(void) {
    return atomic_load_explicit(&dsy_self.frame, memory_order_relaxed);
}

/* Published before the operation that may take q's token (fork). */
static inline void frame_push(dsy_frame *f, desync_queue_t *q) {
    /* dsy_self itself, not a pointer to it: gcc 12 with
     * -fsanitize=address,undefined compiled the null check of such a
     * pointer in sync_wait_outside's loop into a jump on stale flags, and
     * reported a null pointer that was not there. */
    (void)dsy_thread_self(); /* registers it */
    f->q = q;
    f->parent = atomic_load_explicit(&dsy_self.frame, memory_order_relaxed);
    f->behalf = NULL;
    atomic_store_explicit(&dsy_self.frame, f, memory_order_release);
}

static inline void frame_pop(dsy_frame *f) {
    atomic_store_explicit(&dsy_self.frame, f->parent, memory_order_release);
}

/* In a fork child, the thread that called fork may come back from a job to
 * a queue that was forked off meanwhile: it must leave it alone. */
static inline bool survivor_left_forked(desync_queue_t *q) {
    return DSY_UNLIKELY(dsy_self.survivor) && dsy_queue_forked_off(q);
}

/* Syncers waiting outside a busy queue (dsy_sync: BARGING in queue.c) set
 * BARGE while they watch it, and BSLEEP too before they sleep on `state`.
 * Whoever makes the queue idle (tail n -> NULL, seq_cst) loads `state`
 * (seq_cst) and, if either is set, gives them their turn
 * (dsy_queue_barger_turn): it wakes the sleepers if BSLEEP is set, else it
 * clears BARGE and, once a watching syncer has taken the queue, waits a
 * moment before it may take it again. Pairs with the sleeper's fetch-or of
 * BSLEEP and its load of `tail` after it (Dekker): either the sleeper sees
 * the queue idle or the one that made it idle sees BSLEEP. q is alive: the
 * caller holds the token's reference or its own. */
static inline void went_idle(desync_queue_t *q) {
    uint32_t s = atomic_load_explicit(&q->state, memory_order_seq_cst);
    if (DSY_UNLIKELY(s & (DSY_Q_BARGE | DSY_Q_BSLEEP)))
        dsy_queue_barger_turn(q, s);
}

/* The idle fast path of a sync (and of a multi-object job, which takes every
 * token this way): one CAS takes an idle queue (tail NULL -> n, n->next
 * already NULL), creating the token on this thread; acq_rel orders this busy
 * period after the previous one's idle CAS, and releases n->next to
 * producers that link behind n. */
static inline bool idle_take(desync_queue_t *q, dsy_node *n) {
    dsy_node *expect = NULL;
    return atomic_compare_exchange_strong_explicit(&q->tail, &expect, n, memory_order_acq_rel,
                                                   memory_order_relaxed);
}

/* For a multi-object job: takes idle q with n as its only node, the head
 * (true: this thread holds the token; the caller's reference keeps q). */
static inline bool idle_take_alone(desync_queue_t *q, dsy_node *n) {
    atomic_store_explicit(&n->next, NULL, memory_order_relaxed);
    if (!idle_take(q, n))
        return false;
    q->head = n;
    return true;
}

/* ... and gives it back after n's job ran: a second CAS (n -> NULL) if no
 * job was queued behind n, else the jobs behind it are handed on. */
static inline void idle_give_back(desync_queue_t *q, dsy_node *n) {
    dsy_node *mine = n;
    if (survivor_left_forked(q) ||
        DSY_LIKELY(atomic_compare_exchange_strong_explicit(&q->tail, &mine, NULL,
                                                           memory_order_seq_cst,
                                                           memory_order_relaxed))) {
        went_idle(q);
        return;
    }
    dsy_queue_give_back_behind(q, n);
}

#endif /* DESYNC_QUEUE_FAST_H */
