/*
 * TL timer-lateness (bench/README.md): how late timers fire when many are
 * pending. In a fresh child process: 1,000 objects, then 100,000 one-shot
 * timers (desync_timer_start) on random objects, their deadlines spread
 * evenly at random over TL_SPAN_MS starting TL_LEAD_MS from now, so about
 * 100,000 are pending when the first fires. Each job records its lateness:
 * the time it runs minus its deadline (start time + delay, the start time
 * read just before the call, so a figure errs late by the call's length).
 * Figures: the median and 99th percentile of the lateness of all timers,
 * and the memory per pending timer (the growth of the RSS over starting
 * them, divided by their number). Baseline: one thread that sleeps with
 * clock_nanosleep to each of TL_BASE_N absolute deadlines over the same
 * span: the machine's own lateness for a sleeping thread.
 */
#include "bench.h"

#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#define TL_OBJECTS 1000
#define TL_LEAD_MS 300 /* the first deadline, after the last start */
#define TL_SPAN_MS 2000
#define TL_BASE_N 2000

static uint64_t *g_deadline; /* per timer, written before its start */
static uint64_t *g_late;
static _Atomic uint64_t g_fired;

static void tl_job(void *data, void *arg) {
    (void)data;
    size_t i = (size_t)(uintptr_t)arg;
    g_late[i] = now_ns() - g_deadline[i];
    atomic_fetch_add_explicit(&g_fired, 1, memory_order_release);
}

static int cmp_u64(const void *a, const void *b) {
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

/* Median and 99th percentile of v[0..n) (sorts v). */
static void percentiles(uint64_t *v, size_t n, double *p50, double *p99) {
    qsort(v, n, sizeof *v, cmp_u64);
    *p50 = (double)v[n / 2];
    *p99 = (double)v[(n * 99) / 100];
}

/* ns: median lateness; extra: 99th percentile; rss0_kib: bytes per
 * pending timer (in that field for want of another). */
child_result_t tl_desync_child(uint64_t n) {
    desync_t **d = malloc(TL_OBJECTS * sizeof *d);
    desync_timer_t **t = malloc(n * sizeof *t);
    g_deadline = malloc(n * sizeof *g_deadline);
    g_late = malloc(n * sizeof *g_late);
    if (!d || !t || !g_deadline || !g_late)
        die("out of memory");
    for (int k = 0; k < TL_OBJECTS; k++)
        d[k] = lib_counter();
    /* Touch the arrays first: their pages are not the timers' memory. */
    for (uint64_t i = 0; i < n; i++)
        g_deadline[i] = g_late[i] = 0, t[i] = NULL;
    uint32_t rnd = 2463534242u;
    long rss0 = status_kib("VmRSS");
    uint64_t base = now_ns() + (uint64_t)TL_LEAD_MS * 1000000u;
    for (uint64_t i = 0; i < n; i++) {
        rnd ^= rnd << 13, rnd ^= rnd >> 17, rnd ^= rnd << 5;
        uint64_t at = base + (uint64_t)rnd % ((uint64_t)TL_SPAN_MS * 1000000u);
        uint64_t now = now_ns();
        if (now > at)
            die("starting the timers took longer than %d ms", TL_LEAD_MS);
        g_deadline[i] = at;
        t[i] = desync_timer_start(d[rnd % TL_OBJECTS], at - now, 0, tl_job, (void *)(uintptr_t)i);
        if (!t[i])
            die("desync_timer_start failed");
        PROGRESS(i);
    }
    long rss1 = status_kib("VmRSS");
    uint64_t end = now_ns() + (uint64_t)(TL_LEAD_MS + TL_SPAN_MS) * 1000000u + 10000000000ull;
    while (atomic_load_explicit(&g_fired, memory_order_acquire) < n) {
        if (now_ns() > end)
            die("only %" PRIu64 " of %" PRIu64 " timers fired",
                (uint64_t)atomic_load(&g_fired), n);
        sleep_ms(10);
    }
    for (uint64_t i = 0; i < n; i++)
        desync_timer_cancel(t[i]);
    for (int k = 0; k < TL_OBJECTS; k++)
        desync_release(d[k]);
    child_result_t c = {0};
    percentiles(g_late, n, &c.ns, &c.extra);
    c.rss0_kib = (double)(rss1 - rss0) * 1024.0 / (double)n;
    free(d);
    free(t);
    free(g_deadline);
    free(g_late);
    return c;
}

/* The same figures for one thread sleeping to each deadline in turn. */
child_result_t tl_sleep_child(uint64_t n) {
    (void)n;
    uint64_t *late = malloc(TL_BASE_N * sizeof *late);
    if (!late)
        die("out of memory");
    uint64_t base = now_ns() + (uint64_t)TL_LEAD_MS * 1000000u;
    uint64_t step = (uint64_t)TL_SPAN_MS * 1000000u / TL_BASE_N;
    for (int i = 0; i < TL_BASE_N; i++) {
        uint64_t at = base + (uint64_t)i * step;
        struct timespec ts = {(time_t)(at / 1000000000u), (long)(at % 1000000000u)};
        while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) != 0) {
        }
        late[i] = now_ns() - at;
        PROGRESS(i);
    }
    child_result_t c = {0};
    percentiles(late, TL_BASE_N, &c.ns, &c.extra);
    free(late);
    return c;
}

/* Per run of each variant: the 99th percentile, and bytes per timer. */
static double g_p99[2][MAX_RUNS + 1], g_bytes[MAX_RUNS + 1];
static int g_nrun[2];

static sample_t tl_desync(uint64_t n) {
    child_result_t c = run_child("tl-desync", n);
    g_p99[0][g_nrun[0]] = c.extra;
    g_bytes[g_nrun[0]++] = c.rss0_kib;
    return (sample_t){c.ns, NAN, NAN};
}

static sample_t tl_sleep(uint64_t n) {
    child_result_t c = run_child("tl-sleep", n);
    g_p99[1][g_nrun[1]++] = c.extra;
    return (sample_t){c.ns, NAN, NAN};
}

void tl_timer_lateness(row_t *row) {
    uint64_t n = scaled(100000);
    n = n < 1000 ? 1000 : n;
    variant_t v[] = {{"libdesync timers", tl_desync, n, 0, 0},
                     {"clock_nanosleep loop", tl_sleep, n, 0, 0}};
    printf("  %" PRIu64 " one-shot timers on %d objects, deadlines spread over %d ms starting "
           "%d ms after the\n  last start; each job records how late it ran. A fresh child "
           "process per run (no warm-up).\n  Figure: the median lateness of all timers, in "
           "ns. Baseline: one thread sleeping with\n  clock_nanosleep to each of %d deadlines "
           "over the same span (the machine's own lateness)\n",
           n, TL_OBJECTS, TL_SPAN_MS, TL_LEAD_MS, TL_BASE_N);
    g_nrun[0] = g_nrun[1] = 0;
    g_skip_warmup = 1;
    measure("TL", v, 2);
    g_skip_warmup = 0;
    double p99l = median(g_p99[0], g_nrun[0]), p99b = median(g_p99[1], g_nrun[1]);
    double bytes = median(g_bytes, g_nrun[0]);
    row->lib_ns = v[0].med_ns;
    row->base_ns = v[1].med_ns;
    row->lib_bytes = bytes;
    row->tl_p99 = p99l;
    printf("    lateness (medians of the runs): libdesync p50 %.1f us, p99 %.1f us; "
           "clock_nanosleep p50 %.1f us, p99 %.1f us\n"
           "    memory per pending timer: %.0f bytes (RSS growth / timers)\n",
           v[0].med_ns / 1e3, p99l / 1e3, v[1].med_ns / 1e3, p99b / 1e3, bytes);
    snprintf(row->extra, sizeof row->extra,
             "p50 lateness; p99: libdesync %.1f us, clock_nanosleep %.1f us; %.0f B per "
             "pending timer",
             p99l / 1e3, p99b / 1e3, bytes);
}
