/*
 * The FIFO ring under the run list and the channels (src/ring.h): order
 * across wraps, and an emptied ring starting again at its first slot.
 */
#include "ring.h"
#include "test.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifdef DESYNC_DEBUG
/* ring.h's assertions (debug and sanitizer builds): the library's own
 * handler is hidden inside it. */
void dsy_assert_fail(const char *file, int line, const char *cond) {
    fprintf(stderr, "%s:%d: assertion failed: %s\n", file, line, cond);
    abort();
}
#endif

#define RP(x) ((void *)(uintptr_t)(x))

/* One item in, one out, many times over a large ring: every put lands in
 * slot 0, so the ring's memory beyond its first line is never touched (the
 * run list reserves a slot per attached queue; walking through all of them
 * made a million objects touch 8 MB of slots). */
TEST(ring_emptied_restarts_at_first_slot) {
    dsy_ring r;
    dsy_ring_init(&r);
    CHECK(dsy_ring_reserve_total(&r, 16, 1000));
    CHECK(r.cap >= 1000);
    memset(r.slots, 0, r.cap * sizeof *r.slots);
    for (uintptr_t i = 1; i <= 10000; i++) {
        dsy_ring_put(&r, RP(i));
        CHECK_EQ((uintptr_t)dsy_ring_take(&r), i);
        CHECK_EQ(r.head, 0);
    }
    for (size_t i = 1; i < r.cap; i++)
        CHECK(r.slots[i] == NULL);
    dsy_ring_destroy(&r);
    return 0;
}

/* Items in and out in varying numbers, never emptied until the end: the
 * order holds as the head wraps, and across a growth from a wrapped state. */
TEST(ring_order_across_wraps_and_growth) {
    dsy_ring r;
    dsy_ring_init(&r);
    uintptr_t put = 1, got = 1;
    for (int round = 0; round < 2000; round++) {
        for (int i = 0; i < 1 + round % 7; i++) {
            CHECK(dsy_ring_reserve(&r, 5, 64));
            dsy_ring_put(&r, RP(put++));
        }
        for (int i = 0; i < 1 + round % 5 && r.len > 1; i++)
            CHECK_EQ((uintptr_t)dsy_ring_take(&r), got++);
        if (r.len > 40) /* keep well under the 64-item limit */
            while (r.len > 1)
                CHECK_EQ((uintptr_t)dsy_ring_take(&r), got++);
    }
    while (r.len)
        CHECK_EQ((uintptr_t)dsy_ring_take(&r), got++);
    CHECK_EQ(got, put);
    CHECK_EQ(r.head, 0);
    dsy_ring_destroy(&r);
    return 0;
}
