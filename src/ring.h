/*
 * A FIFO ring of pointers that grows by doubling (up to a limit), for
 * structures guarded by their owner's lock: the scheduler's run list and a
 * channel's accepted items. Not thread-safe by itself.
 *
 * Invariant: len <= cap, and the items are slots[(head + i) % cap] for
 * i < len, oldest first.
 */
#ifndef DSY_RING_H
#define DSY_RING_H

#include "base.h"

#include <stdlib.h>

typedef struct dsy_ring {
    void **slots;
    size_t cap, head, len;
} dsy_ring;

/* The slot `i` places after `head`, i < cap: a compare, not a division (a
 * 64-bit divide costs tens of cycles, inside the owner's lock, on every put
 * and take; the capacity need not be a power of two). */
static inline size_t dsy_ring_at(const struct dsy_ring *r, size_t i) {
    size_t k = r->head + i;
    return k >= r->cap ? k - r->cap : k;
}

/* An empty ring with no memory yet (all zero is the same). */
static inline void dsy_ring_init(dsy_ring *r) {
    r->slots = NULL;
    r->cap = r->head = r->len = 0;
}

static inline void dsy_ring_destroy(dsy_ring *r) {
    free(r->slots);
    dsy_ring_init(r);
}

/* Resizes to n slots (n >= len); false on ENOMEM. */
static inline bool dsy_ring_resize(dsy_ring *r, size_t n) {
    void **s = malloc(n * sizeof *s);
    if (!s)
        return false;
    for (size_t i = 0; i < r->len; i++)
        s[i] = r->slots[dsy_ring_at(r, i)];
    free(r->slots);
    r->slots = s;
    r->cap = n;
    r->head = 0;
    return true;
}

/* Makes room for one more item, growing to at most max items (the first
 * allocation takes `first`, at most max); false on ENOMEM or at max. */
static inline bool dsy_ring_reserve(dsy_ring *r, size_t first, size_t max) {
    if (r->len < r->cap)
        return true;
    size_t n = r->cap ? r->cap * 2 : first;
    if (n > max || n < r->cap)
        n = max;
    return n > r->cap && dsy_ring_resize(r, n);
}

/* Makes room for n items in all, doubling from `first`; false on ENOMEM. */
static inline bool dsy_ring_reserve_total(dsy_ring *r, size_t first, size_t n) {
    size_t c = r->cap ? r->cap : first;
    while (c < n)
        c = c * 2 > c ? c * 2 : n;
    return c <= r->cap || dsy_ring_resize(r, c);
}

/* Appends v; there must be room (dsy_ring_reserve). */
static inline void dsy_ring_put(dsy_ring *r, void *v) {
    DSY_ASSERT(r->len < r->cap);
    r->slots[dsy_ring_at(r, r->len)] = v;
    r->len++;
}

/* The oldest item, left in place; the ring must not be empty. */
static inline void *dsy_ring_first(const dsy_ring *r) {
    DSY_ASSERT(r->len > 0);
    return r->slots[r->head];
}

/* Removes and returns the oldest item; the ring must not be empty. An
 * emptied ring starts again at slot 0: a ring that rarely holds more than a
 * few items then keeps using its first lines, instead of walking through
 * its whole capacity (the run list reserves a slot per attached queue: 8 MB
 * for a million objects, all of it touched, page by page, as the head
 * went round). */
static inline void *dsy_ring_take(dsy_ring *r) {
    DSY_ASSERT(r->len > 0);
    void *v = r->slots[r->head];
    r->head = --r->len ? dsy_ring_at(r, 1) : 0;
    return v;
}

#endif
