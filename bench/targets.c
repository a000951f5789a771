/*
 * The targets of issue 10, as ratios to figures measured in the same run
 * (bench/README.md, "Targets"). Printed as "met" or "MISSED", never
 * asserted: the exit status does not depend on them.
 */
#include "bench.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

static const row_t *g_trows;
static int g_tn;

static const row_t *row(const char *id) {
    for (int i = 0; i < g_tn; i++)
        if (strcmp(g_trows[i].id, id) == 0 && g_trows[i].ran)
            return &g_trows[i];
    return NULL;
}

/* One target line: `what`, then the measured figure (formatted by the
 * caller) and the verdict; ok < 0: not measured in this run. */
static void line(const char *id, const char *what, const char *measured, int ok) {
    printf("  %-4s %-50s %12s  %s\n", id, what, ok < 0 ? "-" : measured,
           ok < 0 ? "not run" : ok ? "met" : "MISSED");
}

/* Target: a / b <= limit (or >= limit when at_least). */
static void ratio(const char *id, const char *what, const row_t *ra, double a, const row_t *rb,
                  double b, double limit, int at_least) {
    char m[32] = "";
    int ok = -1;
    if (ra && rb && !isnan(a) && !isnan(b) && b > 0) {
        double r = a / b;
        snprintf(m, sizeof m, "%.2fx", r);
        ok = at_least ? r >= limit : r <= limit;
    }
    line(id, what, m, ok);
}

/* A figure printed beside the targets, not judged: libdesync against a
 * floor, with what the ratio means. */
static void beside(const char *id, const char *what, double r, const char *means) {
    printf("  %-4s %-50s %12.2fx  (%s)\n", id, what, r, means);
}

/* The curves' targets (curves.c): each against its baseline at the same size. */
static void curve_targets(void) {
    const curve_t *c3 = curve_get("C3"), *c6 = curve_get("C6"), *c2 = curve_get("C2"),
                  *cm = curve_get("CM");
    char m[32] = "";
    /* C3: the worst point decides. */
    int ok = -1, at = 0;
    double worst = 0;
    for (int i = 0; c3 && i < c3->np; i++) {
        double r = c3->lib_ns[i] / c3->base_ns[i];
        if (r > worst || i == 0)
            worst = r, at = (int)c3->x[i];
    }
    if (c3) {
        snprintf(m, sizeof m, "%.2fx", worst);
        ok = worst <= 1;
    }
    line("C3", "W3 at every thread count <= the mutex (worst)", m, ok);
    if (c3)
        printf("  %-4s   (worst at %d threads; each count:", "", at);
    for (int i = 0; c3 && i < c3->np; i++)
        printf(" %.0f: %.2fx%s", c3->x[i], c3->lib_ns[i] / c3->base_ns[i],
               i + 1 < c3->np ? "," : ")\n");
    /* C6: growth of the per-object cost from the smallest to the largest size. */
    ok = -1;
    double gl = NAN, gb = NAN;
    if (c6 && c6->np > 1) {
        int l = c6->np - 1;
        gl = c6->lib_ns[l] / c6->lib_ns[0];
        gb = c6->base_ns[l] / c6->base_ns[0];
        snprintf(m, sizeof m, "%.2fx", gl / gb);
        ok = gl <= gb;
    }
    line("C6", "W6 per-object cost growth 10^4 -> 10^7 <= the mutex's", m, ok);
    if (c6 && c6->np > 1)
        printf("  %-4s   (from %.0f to %.0f objects: libdesync x%.2f, mutex x%.2f)\n", "",
               c6->x[0], c6->x[c6->np - 1], gl, gb);
    ok = -1;
    if (c2 && c2->np > 1) {
        double r = c2->lib_ns[c2->np - 1] / c2->lib_ns[0];
        snprintf(m, sizeof m, "%.2fx", r);
        ok = r <= 2;
    }
    line("C2", "W2 per job at 8 producers <= 2x at 1 producer", m, ok);
    ok = -1;
    if (cm) {
        double r = cm->base_ns[0] / cm->lib_ns[0]; /* throughput ratio */
        snprintf(m, sizeof m, "%.2fx", r);
        ok = r >= 1;
    }
    line("CM", "8 threads x 1,000 objects ops/s >= mutex per object", m, ok);
    const row_t *p2 = row("P2");
    if (cm && p2 && p2->floor_ns > 0) {
        /* 3 ops in 4 are desyncs onto an object that has been idle since its
         * last op (about 1,000 ops earlier): each must hand its job to
         * another thread, through a list open to every producer. Each such
         * hand-over costs at least one item of P2's RMW row (W2's floor);
         * the syncs and the jobs themselves are left out. */
        double fl = 0.75 * p2->floor_ns;
        snprintf(m, sizeof m, "%.2fx", cm->base_ns[0] / fl);
        line("CM", "  floor (3/4 x P2 with an RMW per item) / mutex", m, cm->base_ns[0] >= fl);
        beside("CM", "  libdesync / the floor", fl / cm->lib_ns[0],
               "libdesync's ops/s over the floor's");
    }
    const row_t *ib = row("IB");
    ok = -1;
    if (ib) {
        snprintf(m, sizeof m, "%.2f%%", ib->lib_ns);
        ok = ib->lib_ns < 5;
    }
    line("IB", "1,000 objects, 1 job/ms in all: < 5% of one core", m, ok);
    const row_t *tl = row("TL");
    ok = -1;
    if (tl) {
        snprintf(m, sizeof m, "%.0f/%.0f us", tl->lib_ns / 1e3, tl->tl_p99 / 1e3);
        ok = tl->lib_ns < 1e6 && tl->tl_p99 < 1e6;
    }
    line("TL", "100,000 pending timers: p50/p99 lateness < 1 ms", m, ok);
}

void print_targets(const row_t *rows, int n) {
    g_trows = rows;
    g_tn = n;
    const row_t *p1 = row("P1"), *p2 = row("P2"), *w1 = row("W1"), *w2 = row("W2"),
                *w3 = row("W3"), *w3b = row("W3b"), *w4 = row("W4"), *w5 = row("W5"),
                *w6 = row("W6"), *w7 = row("W7"), *w8 = row("W8"), *r1 = row("R1"),
                *r2 = row("R2");
#define NS(r, f) ((r) ? (r)->f : NAN)
    printf("\ntargets (issue 10): the libdesync median as a ratio to a figure of this run; "
           "printed, never asserted\n");
    ratio("W1", "sync, idle object <= 0.75x the uncontended mutex", w1, NS(w1, lib_ns), w1,
          NS(w1, base_ns), 0.75, 0);
    if (w1 && w1->floor_ns > 0) {
        /* The floor of W1: below 0.75x the mutex, the target can be met. */
        ratio("W1", "  floor (2 CAS + call) / the mutex", w1, w1->floor_ns, w1, NS(w1, base_ns),
              0.75, 0);
        beside("W1", "  libdesync / the floor", w1->lib_ns / w1->floor_ns,
               "libdesync's overhead over the floor");
    }
    ratio("W2", "desync stream, per job <= 2x P2 per item", w2, NS(w2, lib_ns), p2,
          NS(p2, base_ns), 2, 0);
    if (p2 && p2->floor_ns > 0) {
        /* Any multi-producer queue: one RMW per job, published per job. */
        ratio("W2", "  floor (P2 with an RMW per item) / P2", p2, p2->floor_ns, p2,
              NS(p2, base_ns), 2, 0);
        if (w2)
            beside("W2", "  libdesync / the floor", w2->lib_ns / p2->floor_ns,
                   "libdesync's W2 over that floor");
    }
    ratio("W3", "2 threads sync one object <= 1.0x the mutex", w3, NS(w3, lib_ns), w3,
          NS(w3, base_ns), 1, 0);
    if (w3 && w3->floor_ns > 0 && w3->floor2_ns > 0) {
        /* The same layout on both sides: data apart, or data inline. */
        ratio("W3", "  libdesync / the mutex with its counter apart", w3, NS(w3, lib_ns), w3,
              w3->floor_ns, 1, 0);
        ratio("W3", "  libdesync, data inline / the mutex", w3, w3->floor2_ns, w3,
              NS(w3, base_ns), 1, 0);
    }
    ratio("W3b", "8 threads sync one object <= 1.0x the mutex", w3b, NS(w3b, lib_ns), w3b,
          NS(w3b, base_ns), 1, 0);
    ratio("W4", "100 desync + 1 sync, per job <= 3x P2", w4, NS(w4, lib_ns), p2,
          NS(p2, base_ns), 3, 0);
    if (w4 && p2 && p2->floor_ns > 0) {
        /* Each of W4's desyncs is a W2 job: W2's floor, against W4's 3x. */
        ratio("W4", "  floor (P2 with an RMW per item) / P2", p2, p2->floor_ns, p2,
              NS(p2, base_ns), 3, 0);
        beside("W4", "  libdesync / the floor", w4->lib_ns / p2->floor_ns,
               "libdesync's W4 over W2's floor");
    }
    ratio("W5", "ping-pong round trip <= 2x P1", w5, NS(w5, lib_ns), p1, NS(p1, base_ns), 2, 0);
    ratio("W6", "per object <= 3x the (mutex + u64) object", w6, NS(w6, lib_ns), w6,
          NS(w6, base_ns), 3, 0);
    {
        char m[32];
        double b = NS(w6, lib_bytes);
        snprintf(m, sizeof m, "%.0f B", b);
        line("W6", "bytes per object with its payload <= 64", m, isnan(b) ? -1 : b <= 64);
    }
    ratio("W7", "future on an idle object <= 8x W1", w7, NS(w7, lib_ns), w1, NS(w1, lib_ns), 8,
          0);
    ratio("W8", "pipe, per item <= 4x P2", w8, NS(w8, lib_ns), p2, NS(p2, base_ns), 4, 0);
    line("W8", "pipe memory bounded (10x items: <= 2x peak growth)",
         w8 && w8->mem_ok == 1 ? "bounded" : "not bounded", w8 ? w8->mem_ok : -1);
    /* lines/s ratio = baseline ns per line / libdesync ns per line */
    ratio("R1", "logger lines/s >= 1.2x the mutex's", r1, NS(r1, base_ns), r1, NS(r1, lib_ns),
          1.2, 1);
    if (r1 && r1->floor_ns > 0)
        ratio("R1", "  floor (a ring per thread) lines/s / the mutex's", r1, NS(r1, base_ns), r1,
              r1->floor_ns, 1.2, 1);
    if (r1 && r1->floor2_ns > 0) {
        ratio("R1", "  floor in order (+ a shared ticket) / the mutex's", r1, NS(r1, base_ns),
              r1, r1->floor2_ns, 1.2, 1);
        beside("R1", "  libdesync / the floor in order", r1->floor2_ns / r1->lib_ns,
               "libdesync's lines/s over the floor in order's");
    }
    ratio("R2", "word count wall time <= 0.8x the plain loop", r2, NS(r2, lib_ns), r2,
          NS(r2, base_ns), 0.8, 0);
    if (r2 && r2->floor_ns > 0)
        ratio("R2", "  floor (2 threads by hand) / the plain loop", r2, r2->floor_ns, r2,
              NS(r2, base_ns), 0.8, 0);
    if (r2 && r2->floor2_ns > 0) {
        ratio("R2", "  channel floor (+ an RMW per line) / the loop", r2, r2->floor2_ns, r2,
              NS(r2, base_ns), 0.8, 0);
        beside("R2", "  libdesync / the channel floor", r2->lib_ns / r2->floor2_ns,
               "libdesync's wall time over the channel floor's");
    }
    /* issue 11: jobs over several objects */
    const row_t *w9 = row("W9"), *r3 = row("R3");
    ratio("W9", "sync_all, 2 idle objects <= 3x a sync on one", w9, NS(w9, lib_ns), w9,
          NS(w9, base_ns), 3, 0);
    ratio("R3", "bank transfers/s >= the mutex per account's", r3, NS(r3, base_ns), r3,
          NS(r3, lib_ns), 1, 1);
#undef NS
    curve_targets();
    printf("  (ratios are libdesync / reference, except R1, R3 and CM: libdesync ops/s / baseline "
           "ops/s)\n");
    char msg[256] = "";
    int noisy = probes_noisy(msg, sizeof msg);
    if (msg[0])
        printf("  %s:\n  %s\n", msg,
               noisy ? "the machine was busy (a probe's runs spread over more than 2x, or P1 "
                       "above 2 us): the targets against P1 and P2 are unreliable in this run"
                     : "the probes were steady");
}
