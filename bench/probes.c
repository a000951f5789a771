/*
 * The machine-limit probes of bench/README.md: what two cores allow, measured
 * in the same run as the workloads so that targets are ratios to them.
 *
 *   P1: one cache line passed back and forth between two threads.
 *   P2: the best a job queue can do between two cores: a single-producer
 *       single-consumer ring of 32-byte job slots, indices published in
 *       batches of 16; then the same ring with one atomic read-modify-write
 *       per item, the floor of any queue open to several producers.
 *
 * Waits are plain load loops (what the probes measure), with a yield every
 * SPIN_YIELD_EVERY rounds so that a descheduled partner can run on our core.
 */
#include "bench.h"

#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------ P1 cache-line round trip */

#define P1_ROUND_TRIPS 100000

typedef struct {
    _Alignas(64) _Atomic uint64_t turn; /* 2i: main's turn; 2i+1: the partner's */
    _Alignas(64) uint64_t n;
    pthread_barrier_t bar;
} p1_t;

static void *p1_partner(void *p) {
    p1_t *w = p;
    uint64_t spins = 0;
    pthread_barrier_wait(&w->bar);
    for (uint64_t i = 0; i < w->n; i++) {
        while (atomic_load_explicit(&w->turn, memory_order_acquire) != 2 * i + 1)
            spin_step(&spins);
        atomic_store_explicit(&w->turn, 2 * i + 2, memory_order_release);
    }
    return NULL;
}

static sample_t p1_run(uint64_t n) {
    p1_t *w = aligned_alloc(64, sizeof *w);
    if (!w)
        die("out of memory");
    memset(w, 0, sizeof *w);
    w->n = n;
    CHECK_PT(pthread_barrier_init(&w->bar, NULL, 2));
    pthread_t t;
    CHECK_PT(pthread_create(&t, NULL, p1_partner, w));
    pthread_barrier_wait(&w->bar);
    uint64_t spins = 0;
    uint64_t t0 = now_ns();
    for (uint64_t i = 0; i < n; i++) {
        while (atomic_load_explicit(&w->turn, memory_order_acquire) != 2 * i)
            spin_step(&spins);
        atomic_store_explicit(&w->turn, 2 * i + 1, memory_order_release);
        if ((i & 0xffff) == 0)
            PROGRESS(i);
    }
    while (atomic_load_explicit(&w->turn, memory_order_acquire) != 2 * n)
        spin_step(&spins);
    uint64_t t1 = now_ns();
    CHECK_PT(pthread_join(t, NULL));
    pthread_barrier_destroy(&w->bar);
    free(w);
    return per_op(t1 - t0, n);
}

/* --------------------------------------------------- P2 SPSC ring stream */

#define P2_ITEMS 10000000
#define P2_SLOTS 4096u
#define P2_BATCH 16u

typedef struct {
    void (*fn)(void *data, void *arg);
    void *data;
    void *arg;
    void *pad;
} p2_slot_t;

_Static_assert(sizeof(p2_slot_t) == 32, "P2 slots are 32 bytes");

typedef struct {
    _Alignas(64) _Atomic uint64_t head; /* slots written, published every 16 (release) */
    _Alignas(64) _Atomic uint64_t tail; /* slots consumed, published every 16 (release) */
    _Alignas(64) p2_slot_t ring[P2_SLOTS];
    uint64_t n;
    pthread_barrier_t bar;
} p2_t;

static void p2_inc(void *data, void *arg) {
    (void)arg;
    ++*(uint64_t *)data;
}

static void *p2_consumer(void *p) {
    p2_t *w = p;
    uint64_t i = 0, avail = 0, spins = 0;
    pthread_barrier_wait(&w->bar);
    while (i < w->n) {
        while (i == avail) /* acquire pairs with the producer's release of head */
            if ((avail = atomic_load_explicit(&w->head, memory_order_acquire)) == i)
                spin_step(&spins);
        const p2_slot_t *s = &w->ring[i & (P2_SLOTS - 1)];
        s->fn(s->data, s->arg);
        if (++i % P2_BATCH == 0) /* release: the slots we read may be reused */
            atomic_store_explicit(&w->tail, i, memory_order_release);
    }
    atomic_store_explicit(&w->tail, i, memory_order_release);
    return NULL;
}

static sample_t p2_run(uint64_t n) {
    p2_t *w = aligned_alloc(64, sizeof *w);
    if (!w)
        die("out of memory");
    memset(w, 0, sizeof *w);
    w->n = n;
    uint64_t counter = 0;
    CHECK_PT(pthread_barrier_init(&w->bar, NULL, 2));
    pthread_t t;
    CHECK_PT(pthread_create(&t, NULL, p2_consumer, w));
    pthread_barrier_wait(&w->bar);
    uint64_t tail = 0, spins = 0;
    uint64_t t0 = now_ns();
    for (uint64_t i = 0; i < n; i++) {
        while (i - tail >= P2_SLOTS) /* full: wait for the consumer */
            if (i - (tail = atomic_load_explicit(&w->tail, memory_order_acquire)) >= P2_SLOTS)
                spin_step(&spins);
        w->ring[i & (P2_SLOTS - 1)] = (p2_slot_t){p2_inc, &counter, NULL, NULL};
        if ((i + 1) % P2_BATCH == 0) {
            atomic_store_explicit(&w->head, i + 1, memory_order_release);
            if (((i + 1) & 0xffff) == 0)
                PROGRESS(i);
        }
    }
    atomic_store_explicit(&w->head, n, memory_order_release);
    while (atomic_load_explicit(&w->tail, memory_order_acquire) != n)
        spin_step(&spins);
    uint64_t t1 = now_ns();
    CHECK_PT(pthread_join(t, NULL));
    expect_eq("counter", counter, n);
    pthread_barrier_destroy(&w->bar);
    free(w);
    return per_op(t1 - t0, n);
}

/* P2 with what any queue open to several producers needs: the producer
 * claims each slot with an atomic read-modify-write (here a fetch-add on a
 * claim counter no other thread touches) and publishes each slot by itself
 * (a sequence number per slot, store-release), as W2's desync must (its job
 * runs even if no other call follows). An RMW waits for the producer's
 * earlier stores, which the consumer is pulling to its core: this is the
 * floor of W2 and W4 for any design with one RMW per job. */
typedef struct {
    void (*fn)(void *data, void *arg);
    void *data;
    void *arg;
    _Atomic uint64_t seq; /* i + 1 once slot i is written (release) */
} p2r_slot_t;

_Static_assert(sizeof(p2r_slot_t) == 32, "P2 slots are 32 bytes");

typedef struct {
    _Alignas(64) _Atomic uint64_t claim; /* the producers' slot counter */
    _Alignas(64) _Atomic uint64_t tail;  /* slots consumed, published every 16 */
    _Alignas(64) p2r_slot_t ring[P2_SLOTS];
    uint64_t n;
    pthread_barrier_t bar;
} p2r_t;

static void *p2r_consumer(void *p) {
    p2r_t *w = p;
    uint64_t i = 0, spins = 0;
    pthread_barrier_wait(&w->bar);
    while (i < w->n) {
        p2r_slot_t *s = &w->ring[i & (P2_SLOTS - 1)];
        while (atomic_load_explicit(&s->seq, memory_order_acquire) != i + 1)
            spin_step(&spins);
        s->fn(s->data, s->arg);
        if (++i % P2_BATCH == 0)
            atomic_store_explicit(&w->tail, i, memory_order_release);
    }
    atomic_store_explicit(&w->tail, i, memory_order_release);
    return NULL;
}

static sample_t p2_rmw_run(uint64_t n) {
    p2r_t *w = aligned_alloc(64, sizeof *w);
    if (!w)
        die("out of memory");
    memset(w, 0, sizeof *w);
    w->n = n;
    uint64_t counter = 0;
    CHECK_PT(pthread_barrier_init(&w->bar, NULL, 2));
    pthread_t t;
    CHECK_PT(pthread_create(&t, NULL, p2r_consumer, w));
    pthread_barrier_wait(&w->bar);
    uint64_t tail = 0, spins = 0;
    uint64_t t0 = now_ns();
    for (uint64_t k = 0; k < n; k++) {
        uint64_t i = atomic_fetch_add_explicit(&w->claim, 1, memory_order_relaxed);
        while (i - tail >= P2_SLOTS)
            if (i - (tail = atomic_load_explicit(&w->tail, memory_order_acquire)) >= P2_SLOTS)
                spin_step(&spins);
        p2r_slot_t *s = &w->ring[i & (P2_SLOTS - 1)];
        s->fn = p2_inc;
        s->data = &counter;
        s->arg = NULL;
        atomic_store_explicit(&s->seq, i + 1, memory_order_release);
        if (((k + 1) & 0xffff) == 0)
            PROGRESS(k);
    }
    while (atomic_load_explicit(&w->tail, memory_order_acquire) != n)
        spin_step(&spins);
    uint64_t t1 = now_ns();
    CHECK_PT(pthread_join(t, NULL));
    expect_eq("counter", counter, n);
    pthread_barrier_destroy(&w->bar);
    free(w);
    return per_op(t1 - t0, n);
}

/* ------------------------------------------------------------- drivers */

/* Both passes' runs, for the combined median. */
static double g_p1_runs[2 * MAX_RUNS], g_p2_runs[2 * MAX_RUNS];
static int g_p1_count, g_p2_count;

static void probe(row_t *row, const char *id, run_fn fn, uint64_t n, const char *label,
                  double *all, int *count) {
    variant_t v[] = {{label, fn, n, 0, 0}};
    char wl[32];
    snprintf(wl, sizeof wl, "%s%s", id, *count ? " again" : "");
    measure(wl, v, 1);
    memcpy(all + *count, measured_runs(0), sizeof(double) * (size_t)g_runs);
    *count += g_runs;
    double tmp[2 * MAX_RUNS];
    memcpy(tmp, all, sizeof(double) * (size_t)*count);
    row->lib_ns = NAN;
    row->base_ns = median(tmp, *count);
    row->base_cpu = measured_cpu(0); /* this pass's */
}

void p1_cache_line(row_t *row) {
    uint64_t n = scaled(P1_ROUND_TRIPS);
    printf("  2 threads take turns on one atomic word (spin on a load until it is our turn, "
           "then store the next turn);\n"
           "  %" PRIu64 " round trips; ns per round trip\n",
           n);
    g_p1_count = 0;
    probe(row, "P1", p1_run, n, "round trip", g_p1_runs, &g_p1_count);
    snprintf(row->extra, sizeof row->extra, "machine limit: cache-line round trip");
}

void p2_spsc_ring(row_t *row) {
    uint64_t n = scaled(P2_ITEMS);
    printf("  1 producer, 1 consumer, ring of %u slots of 32 bytes (fn, data, arg, pad), "
           "indices published every %u slots;\n"
           "  consumer calls each slot's fn (counter++); %" PRIu64 " items; ns per item\n",
           P2_SLOTS, P2_BATCH, n);
    g_p2_count = 0;
    probe(row, "P2", p2_run, n, "spsc ring", g_p2_runs, &g_p2_count);
    snprintf(row->extra, sizeof row->extra, "machine limit: SPSC ring stream");
    printf("  the same ring with an atomic read-modify-write per item (a slot claimed with a\n"
           "  fetch-add, published by itself): the floor of any queue open to several producers\n");
    variant_t v[] = {{"ring, RMW per item", p2_rmw_run, n, 0, 0}};
    measure("P2 rmw", v, 1);
    row->floor_ns = v[0].med_ns;
}

/* The spread of one probe's runs (max / min) and its extremes. */
static double spread(const double *v, int n, double *lo, double *hi) {
    *lo = *hi = v[0];
    for (int i = 1; i < n; i++) {
        *lo = v[i] < *lo ? v[i] : *lo;
        *hi = v[i] > *hi ? v[i] : *hi;
    }
    return *hi / *lo;
}

int probes_noisy(char *msg, size_t len) {
    if (!g_p1_count || !g_p2_count)
        return 0;
    double lo1, hi1, lo2, hi2;
    double s1 = spread(g_p1_runs, g_p1_count, &lo1, &hi1);
    double s2 = spread(g_p2_runs, g_p2_count, &lo2, &hi2);
    snprintf(msg, len,
             "P1 runs ranged %.1f to %.1f ns (%.1fx), P2 runs %.1f to %.1f ns (%.1fx)", lo1,
             hi1, s1, lo2, hi2, s2);
    /* Even across sockets a cache line moves in well under a microsecond:
     * slower means the two threads did not run at the same time. */
    double tmp[2 * MAX_RUNS];
    memcpy(tmp, g_p1_runs, sizeof(double) * (size_t)g_p1_count);
    return s1 > PROBE_NOISY_SPREAD || s2 > PROBE_NOISY_SPREAD ||
           median(tmp, g_p1_count) > P1_PLAUSIBLE_NS;
}

void probes_again(row_t *p1, row_t *p2) {
    double first1 = p1->base_ns, first2 = p2->base_ns;
    probe(p1, "P1", p1_run, scaled(P1_ROUND_TRIPS), "round trip", g_p1_runs, &g_p1_count);
    probe(p2, "P2", p2_run, scaled(P2_ITEMS), "spsc ring", g_p2_runs, &g_p2_count);
    printf("    first pass medians: P1 %.1f ns, P2 %.1f ns; both passes (%d runs each): "
           "P1 %.1f ns, P2 %.1f ns\n",
           first1, first2, g_p1_count, p1->base_ns, p2->base_ns);
    snprintf(p1->extra, sizeof p1->extra,
             "machine limit: cache-line round trip (first pass %.1f)", first1);
    snprintf(p2->extra, sizeof p2->extra, "machine limit: SPSC ring stream (first pass %.1f)",
             first2);
}
