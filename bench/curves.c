/*
 * The curves of bench/README.md ("How cost grows with work", issue 10): one
 * workload at several sizes, each size measured beside its baseline at the
 * same size (its variants interleaved, medians of BENCH_CURVE_RUNS runs,
 * default 3, to keep a full run's time reasonable; C6 without warm-up, as
 * each of its runs is a fresh child process).
 *
 *   C3: W3 (contended sync on one object) with 1..64 threads.
 *   C6: W6 (create, desync, sync, release) with 10^4..10^7 objects.
 *   C2: W2 (desync stream on one object) with 1..8 producers.
 *   CM: many on many: 8 threads, 1,000 objects, random desync/sync.
 *
 * The row of each curve in the summary table holds its largest size; the
 * curves are printed in full after the table and written as CSV files
 * (curves_report), which bench/chart.sh plots.
 */
#include "bench.h"

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static curve_t g_c3 = {.id = "C3", .file = "c3_threads", .title = "W3: threads syncing one object",
                       .xname = "threads", .unit = "ns/op", .lib_name = "libdesync",
                       .base_name = "pthread mutex"};
static curve_t g_c6 = {.id = "C6", .file = "c6_objects", .title = "W6: number of objects",
                       .xname = "objects", .unit = "ns/object", .lib_name = "libdesync",
                       .base_name = "mutex + u64"};
static curve_t g_c2 = {.id = "C2", .file = "c2_producers",
                       .title = "W2: producers desyncing onto one object", .xname = "producers",
                       .unit = "ns/job", .lib_name = "libdesync",
                       .base_name = "mutex+condvar queue"};
static curve_t g_cm = {.id = "CM", .file = "cm_many", .title = "8 threads on 1,000 objects",
                       .xname = "threads", .unit = "ns/op", .lib_name = "libdesync",
                       .base_name = "mutex per object"};
static curve_t *const g_curves[] = {&g_c3, &g_c6, &g_c2, &g_cm};
#define NCURVES ((int)(sizeof g_curves / sizeof g_curves[0]))

const curve_t *curve_get(const char *id) {
    for (int i = 0; i < NCURVES; i++)
        if (strcmp(g_curves[i]->id, id) == 0 && g_curves[i]->np > 0)
            return g_curves[i];
    return NULL;
}

/* Measures one point: v[0] libdesync, v[1] the baseline. */
static void point(curve_t *c, double x, variant_t *v) {
    char wl[48];
    snprintf(wl, sizeof wl, "%s %s=%.0f", c->id, c->xname, x);
    printf("  %s = %.0f\n", c->xname, x);
    int runs = g_runs;
    g_runs = g_curve_runs;
    measure(wl, v, 2);
    g_runs = runs;
    int i = c->np++;
    c->x[i] = x;
    c->lib_ns[i] = v[0].med_ns;
    c->base_ns[i] = v[1].med_ns;
    c->lib_cpu[i] = measured_cpu(0);
    c->base_cpu[i] = measured_cpu(1);
}

/* The table row shows the curve's last (largest) point. */
static void last_point_row(row_t *row, const curve_t *c) {
    int i = c->np - 1;
    row->lib_ns = c->lib_ns[i];
    row->base_ns = c->base_ns[i];
    row->lib_cpu = c->lib_cpu[i];
    row->base_cpu = c->base_cpu[i];
}

/* Starts threads-1 threads running fn(arg) (the caller is the last one). */
static void start_threads(pthread_t *t, int threads, void *(*fn)(void *), void *arg) {
    for (int i = 0; i < threads - 1; i++)
        CHECK_PT(pthread_create(&t[i], NULL, fn, arg));
}

static void join_threads(pthread_t *t, int threads) {
    for (int i = 0; i < threads - 1; i++)
        CHECK_PT(pthread_join(t[i], NULL));
}

/* ------------------------------------------------- C3: W3 by threads */

static const int c3_threads_list[] = {1, 2, 4, 8, 16, 64};
static int g_c3_n; /* threads of the point being measured */

static sample_t c3_desync(uint64_t total) {
    return w3_run(total / (uint64_t)g_c3_n, g_c3_n, 1);
}

static sample_t c3_mutex(uint64_t total) {
    return w3_run(total / (uint64_t)g_c3_n, g_c3_n, 0);
}

void c3_threads(row_t *row) {
    uint64_t total = scaled(1000000);
    printf("  W3 with 1 to 64 threads, %" PRIu64 " syncs (counter++) in total on ONE object "
           "(n below), split evenly; ns per op\n",
           total);
    g_c3.np = 0;
    for (size_t k = 0; k < sizeof c3_threads_list / sizeof c3_threads_list[0]; k++) {
        g_c3_n = c3_threads_list[k];
        uint64_t n = total / (uint64_t)g_c3_n * (uint64_t)g_c3_n;
        variant_t v[] = {{"libdesync", c3_desync, n, 0, 0},
                         {"pthread mutex", c3_mutex, n, 0, 0}};
        point(&g_c3, g_c3_n, v);
    }
    last_point_row(row, &g_c3);
    double worst = 0;
    int at = 0;
    for (int i = 0; i < g_c3.np; i++)
        if (g_c3.lib_ns[i] / g_c3.base_ns[i] > worst) {
            worst = g_c3.lib_ns[i] / g_c3.base_ns[i];
            at = (int)g_c3.x[i];
        }
    snprintf(row->extra, sizeof row->extra,
             "pthread mutex; shown: 64 threads; worst libdesync/mutex %.2fx at %d threads",
             worst, at);
}

/* ------------------------------------------------- C6: W6 by objects */

void c6_objects(row_t *row) {
    static const uint64_t sizes[] = {10000, 100000, 1000000, 10000000};
    printf("  W6 (create n objects, desync counter++ onto each, sync each, release all; each "
           "run in a child process)\n"
           "  with 10^4 to 10^7 objects (times BENCH_SCALE); ns per object\n");
    g_c6.np = 0;
    g_skip_warmup = 1; /* every run is a fresh process: a warm-up would warm nothing */
    for (size_t k = 0; k < sizeof sizes / sizeof sizes[0]; k++) {
        uint64_t n = scaled(sizes[k]);
        variant_t v[] = {{"libdesync", w6_desync, n, 0, 0},
                         {"pthread mutex + u64", w6_mutex, n, 0, 0}};
        point(&g_c6, (double)n, v);
    }
    g_skip_warmup = 0;
    last_point_row(row, &g_c6);
    int l = g_c6.np - 1;
    snprintf(row->extra, sizeof row->extra,
             "malloc'd {mutex, u64}; shown: %.0f objects; per-object cost x%.2f from %.0f to "
             "%.0f (mutex x%.2f)",
             g_c6.x[l], g_c6.lib_ns[l] / g_c6.lib_ns[0], g_c6.x[0], g_c6.x[l],
             g_c6.base_ns[l] / g_c6.base_ns[0]);
}

/* ----------------------------------------------- C2: W2 by producers */

static const int c2_producers_list[] = {1, 2, 4, 8};

typedef struct {
    desync_t *d;
    mq_t *q;
    uint64_t *counter; /* the queue baseline's, touched by its worker only */
    uint64_t n;        /* per producer */
    pthread_barrier_t bar;
} c2_t;

static int g_c2_n; /* producers of the point being measured */

static void c2_produce(c2_t *w) {
    for (uint64_t i = 0; i < w->n; i++) {
        if (w->d) {
            if (desync_desync(w->d, job_inc, NULL) != 0)
                die("desync_desync failed at job %" PRIu64, i);
        } else {
            mq_push(w->q, qjob_inc, w->counter);
        }
        if ((i & 0xffff) == 0)
            PROGRESS(i);
    }
}

static void *c2_thread(void *p) {
    c2_t *w = p;
    pthread_barrier_wait(&w->bar);
    c2_produce(w);
    return NULL;
}

static sample_t c2_run(uint64_t total, int use_lib) {
    mq_t q;
    uint64_t counter = 0;
    c2_t w = {.n = total / (uint64_t)g_c2_n, .q = &q, .counter = &counter};
    if (use_lib)
        w.d = lib_counter();
    else
        mq_init(&q);
    pthread_t t[8];
    CHECK_PT(pthread_barrier_init(&w.bar, NULL, (unsigned)g_c2_n));
    start_threads(t, g_c2_n, c2_thread, &w);
    pthread_barrier_wait(&w.bar);
    uint64_t t0 = now_ns();
    c2_produce(&w);
    join_threads(t, g_c2_n);
    uint64_t v = use_lib ? lib_read(w.d) : mq_read(&q, &counter);
    uint64_t t1 = now_ns();
    expect_eq("counter after the final sync", v, w.n * (uint64_t)g_c2_n);
    if (use_lib)
        desync_release(w.d);
    else
        mq_destroy(&q);
    pthread_barrier_destroy(&w.bar);
    return per_op(t1 - t0, w.n * (uint64_t)g_c2_n);
}

static sample_t c2_desync(uint64_t total) { return c2_run(total, 1); }
static sample_t c2_queue(uint64_t total) { return c2_run(total, 0); }

void c2_producers(row_t *row) {
    uint64_t total = scaled(4000000);
    printf("  W2 with 1 to 8 producer threads, %" PRIu64 " desync jobs (counter++) in total "
           "on one object (n below),\n"
           "  split evenly, + 1 final sync; ns per job over the whole wall time\n",
           total);
    g_c2.np = 0;
    for (size_t k = 0; k < sizeof c2_producers_list / sizeof c2_producers_list[0]; k++) {
        g_c2_n = c2_producers_list[k];
        uint64_t n = total / (uint64_t)g_c2_n * (uint64_t)g_c2_n;
        variant_t v[] = {{"libdesync", c2_desync, n, 0, 0},
                         {"mutex+condvar queue", c2_queue, n, 0, 0}};
        point(&g_c2, g_c2_n, v);
    }
    last_point_row(row, &g_c2);
    snprintf(row->extra, sizeof row->extra,
             "mutex+condvar job queue, 1 worker; shown: 8 producers; per job at 8 / at 1: "
             "libdesync %.2fx, queue %.2fx",
             g_c2.lib_ns[g_c2.np - 1] / g_c2.lib_ns[0],
             g_c2.base_ns[g_c2.np - 1] / g_c2.base_ns[0]);
}

/* ------------------------------------------- CM: many on many objects */

#define CM_THREADS 8
#define CM_OBJECTS 1000
#define CM_SYNC_ONE_IN 4 /* one op in 4 is a sync, the others desync */

typedef struct {
    pthread_mutex_t m;
    uint64_t v;
} cm_obj_t;

typedef struct {
    desync_t *d[CM_OBJECTS];
    cm_obj_t *m[CM_OBJECTS];
    uint64_t n; /* ops per thread */
    _Atomic unsigned next_seed;
    pthread_barrier_t bar;
} cm_t;

/* xorshift64*: a cheap, decent generator, one per thread. */
static uint64_t cm_rand(uint64_t *s) {
    *s ^= *s >> 12;
    *s ^= *s << 25;
    *s ^= *s >> 27;
    return *s * 0x2545F4914F6CDD1DULL;
}

static void cm_work(cm_t *w, int use_lib) {
    uint64_t seed = 0x9E3779B97F4A7C15ULL * (atomic_fetch_add(&w->next_seed, 1) + 1);
    for (uint64_t i = 0; i < w->n; i++) {
        uint64_t r = cm_rand(&seed);
        unsigned k = (unsigned)((r >> 16) % CM_OBJECTS);
        if (use_lib) {
            int rc = (r & 0xff) % CM_SYNC_ONE_IN == 0 ? desync_sync(w->d[k], job_inc, NULL)
                                                       : desync_desync(w->d[k], job_inc, NULL);
            if (rc != 0)
                die("desync_sync/desync_desync returned %d (%s) at op %" PRIu64, rc,
                    desync_strerror(rc), i);
        } else {
            pthread_mutex_lock(&w->m[k]->m);
            w->m[k]->v++;
            pthread_mutex_unlock(&w->m[k]->m);
        }
        if ((i & 0xffff) == 0)
            PROGRESS(i);
    }
}

static void *cm_desync_thread(void *p) {
    cm_t *w = p;
    pthread_barrier_wait(&w->bar);
    cm_work(w, 1);
    return NULL;
}

static void *cm_mutex_thread(void *p) {
    cm_t *w = p;
    pthread_barrier_wait(&w->bar);
    cm_work(w, 0);
    return NULL;
}

/* The clock runs until every op has run and the counters are summed. */
static sample_t cm_run(uint64_t n, int use_lib) {
    cm_t *w = calloc(1, sizeof *w);
    if (!w)
        die("out of memory");
    w->n = n;
    for (int k = 0; k < CM_OBJECTS; k++) {
        if (use_lib) {
            w->d[k] = lib_counter();
        } else {
            w->m[k] = malloc(sizeof *w->m[k]);
            if (!w->m[k])
                die("out of memory");
            CHECK_PT(pthread_mutex_init(&w->m[k]->m, NULL));
            w->m[k]->v = 0;
        }
    }
    pthread_t t[CM_THREADS];
    CHECK_PT(pthread_barrier_init(&w->bar, NULL, CM_THREADS));
    start_threads(t, CM_THREADS, use_lib ? cm_desync_thread : cm_mutex_thread, w);
    pthread_barrier_wait(&w->bar);
    uint64_t t0 = now_ns();
    cm_work(w, use_lib);
    join_threads(t, CM_THREADS);
    uint64_t sum = 0;
    for (int k = 0; k < CM_OBJECTS; k++) {
        if (use_lib) {
            sum += lib_read(w->d[k]);
        } else {
            pthread_mutex_lock(&w->m[k]->m);
            sum += w->m[k]->v;
            pthread_mutex_unlock(&w->m[k]->m);
        }
    }
    uint64_t t1 = now_ns();
    expect_eq("sum of the counters", sum, n * CM_THREADS);
    for (int k = 0; k < CM_OBJECTS; k++) {
        if (use_lib) {
            desync_release(w->d[k]);
        } else {
            pthread_mutex_destroy(&w->m[k]->m);
            free(w->m[k]);
        }
    }
    pthread_barrier_destroy(&w->bar);
    free(w);
    return per_op(t1 - t0, n * CM_THREADS);
}

static sample_t cm_desync(uint64_t n) { return cm_run(n, 1); }
static sample_t cm_mutex(uint64_t n) { return cm_run(n, 0); }

void cm_many(row_t *row) {
    uint64_t n = scaled(250000);
    printf("  %d threads x %" PRIu64 " ops (n below is per thread) on %d objects: each op "
           "picks an object at random\n"
           "  and runs counter++ on it, as a sync (1 in %d) or a desync; then every counter "
           "is read and summed.\n"
           "  Baseline: the same program with a malloc'd {pthread mutex, u64} per object "
           "(lock, counter++, unlock).\n"
           "  ns per op over the whole wall time (lower is better: throughput = 1 / ns)\n",
           CM_THREADS, n, CM_OBJECTS, CM_SYNC_ONE_IN);
    g_cm.np = 0;
    variant_t v[] = {{"libdesync", cm_desync, n, 0, 0},
                     {"mutex per object", cm_mutex, n, 0, 0}};
    point(&g_cm, CM_THREADS, v);
    last_point_row(row, &g_cm);
    snprintf(row->extra, sizeof row->extra,
             "one pthread mutex per object; M ops/s: libdesync %.2f, mutex %.2f",
             1e3 / g_cm.lib_ns[0], 1e3 / g_cm.base_ns[0]);
}

/* ------------------------------------------------------------ report */

static void write_csv(const char *dir, const curve_t *c) {
    char path[512];
    snprintf(path, sizeof path, "%s/%s.csv", dir, c->file);
    FILE *f = fopen(path, "w");
    if (!f) {
        printf("  cannot write %s: %s\n", path, strerror(errno));
        return;
    }
    fprintf(f, "%s,libdesync_ns,baseline_ns,libdesync_cpu_ns,baseline_cpu_ns\n", c->xname);
    for (int i = 0; i < c->np; i++)
        fprintf(f, "%.0f,%.2f,%.2f,%.2f,%.2f\n", c->x[i], c->lib_ns[i], c->base_ns[i],
                c->lib_cpu[i], c->base_cpu[i]);
    if (fclose(f) != 0)
        printf("  writing %s failed\n", path);
}

void curves_report(const char *dir) {
    int any = 0;
    for (int i = 0; i < NCURVES; i++)
        any |= g_curves[i]->np > 0;
    if (!any)
        return;
    printf("\ncurves (medians; cpu: CPU ns per unit, all threads); CSV files in %s/\n", dir);
    if (mkdir(dir, 0777) != 0 && errno != EEXIST)
        printf("  cannot create %s: %s\n", dir, strerror(errno));
    for (int i = 0; i < NCURVES; i++) {
        char path[512];
        snprintf(path, sizeof path, "%s/%s.csv", dir, g_curves[i]->file);
        unlink(path); /* no file from another run beside this run's */
    }
    for (int i = 0; i < NCURVES; i++) {
        const curve_t *c = g_curves[i];
        if (c->np == 0)
            continue;
        printf("  %s %s (%s)\n  %10s %12s %14s %8s %10s %10s\n", c->id, c->title, c->unit,
               c->xname, c->lib_name, c->base_name, "ratio", "lib cpu", "base cpu");
        for (int k = 0; k < c->np; k++)
            printf("  %10.0f %12.1f %14.1f %8.2f %10.1f %10.1f\n", c->x[k], c->lib_ns[k],
                   c->base_ns[k], c->base_ns[k] / c->lib_ns[k], c->lib_cpu[k],
                   c->base_cpu[k]);
        write_csv(dir, c);
    }
    printf("  (ratio = baseline / libdesync: above 1, libdesync is faster)\n");
}
