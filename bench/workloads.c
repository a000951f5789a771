/*
 * W1..W8 of bench/README.md. Each workload has one function per variant
 * (libdesync and each baseline) returning ns per op for one run, and one
 * driver (w1_sync_idle, ...) that measures them side by side and fills its
 * table row. Every run checks its results and aborts the program on a
 * mismatch.
 */
#include "bench.h"

#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* --------------------------------------------------------------- common */

void job_inc(void *data, void *arg) {
    (void)arg;
    ++*(uint64_t *)data;
}

static void job_read(void *data, void *arg) {
    *(uint64_t *)arg = *(uint64_t *)data;
}

/* A Desync object owning a heap u64 counter (freed by the library). */
desync_t *lib_counter(void) {
    uint64_t *c = calloc(1, sizeof *c);
    if (!c)
        die("out of memory");
    desync_t *d = desync_new(c, free);
    if (!d)
        die("desync_new returned NULL");
    return d;
}

uint64_t lib_read(desync_t *d) {
    uint64_t v = 0;
    CHECK_DS(desync_sync(d, job_read, &v));
    return v;
}

typedef struct {
    pthread_mutex_t m;
    uint64_t v;
} mcounter_t;

/* The layouts W3 compares (w3_run's `mode`): an object whose data is its own
 * allocation (as a user writes it), a mutex with its counter beside it (the
 * target's baseline), and the two other ways round. */
enum { W3_MUTEX = 0, W3_LIB = 1, W3_MUTEX_APART = 2, W3_LIB_INLINE = 3 };

static void mc_inc(mcounter_t *c) {
    pthread_mutex_lock(&c->m);
    c->v++;
    pthread_mutex_unlock(&c->m);
}

void qjob_inc(void *arg) {
    ++*(uint64_t *)arg;
}

typedef struct {
    const uint64_t *src;
    uint64_t out;
} qread_t;

static void qjob_read(void *arg) {
    qread_t *r = arg;
    r->out = *r->src;
}

/* Reads *counter with a sync job on the baseline queue. */
uint64_t mq_read(mq_t *q, const uint64_t *counter) {
    qread_t r = {counter, 0};
    mq_sync(q, qjob_read, &r);
    return r.out;
}

void set_row(row_t *row, const variant_t *lib, const variant_t *base) {
    row->lib_ns = lib->med_ns;
    row->base_ns = base->med_ns;
    /* lib and base are v[0] and v[1] of the last measure() */
    row->lib_cpu = measured_cpu(0);
    row->base_cpu = measured_cpu(1);
}

/* ------------------------------------------------------- W1 sync-idle */

sample_t w1_desync(uint64_t n) {
    desync_t *d = lib_counter();
    uint64_t t0 = now_ns();
    for (uint64_t i = 0; i < n; i++) {
        if (desync_sync(d, job_inc, NULL) != 0)
            die("desync_sync failed at op %" PRIu64, i);
        if ((i & 0xffff) == 0)
            PROGRESS(i);
    }
    uint64_t t1 = now_ns();
    expect_eq("counter", lib_read(d), n);
    desync_release(d);
    return per_op(t1 - t0, n);
}

static sample_t w1_mutex(uint64_t n) {
    mcounter_t c = {PTHREAD_MUTEX_INITIALIZER, 0};
    uint64_t t0 = now_ns();
    for (uint64_t i = 0; i < n; i++) {
        mc_inc(&c);
        if ((i & 0xffff) == 0)
            PROGRESS(i);
    }
    uint64_t t1 = now_ns();
    expect_eq("counter", c.v, n);
    return per_op(t1 - t0, n);
}

/* The floor of W1 for any protocol in which producers on other threads can
 * link jobs behind a running sync: the caller takes the queue with one CAS
 * on the tail (NULL -> its node), calls the job through a pointer, and gives
 * the queue back with a second CAS (its node -> NULL), which must be an
 * atomic read-modify-write because a producer may have linked behind it. A
 * mutex also needs two (lock, unlock): this loop is the bare minimum of both,
 * without the function calls and checks around them. */
typedef struct floor_node {
    _Atomic(struct floor_node *) next;
} floor_node;

static _Alignas(64) _Atomic(floor_node *) g_floor_tail;
static void (*volatile g_floor_job)(void *, void *) = job_inc;

__attribute__((noinline)) static int floor_sync(void *data) {
    floor_node n;
    atomic_store_explicit(&n.next, NULL, memory_order_relaxed);
    floor_node *expect = NULL;
    if (!atomic_compare_exchange_strong_explicit(&g_floor_tail, &expect, &n,
                                                 memory_order_acq_rel, memory_order_relaxed))
        return -1;
    g_floor_job(data, NULL);
    floor_node *mine = &n;
    if (!atomic_compare_exchange_strong_explicit(&g_floor_tail, &mine, NULL,
                                                 memory_order_release, memory_order_relaxed))
        return -1;
    return 0;
}

static sample_t w1_floor(uint64_t n) {
    uint64_t counter = 0;
    uint64_t t0 = now_ns();
    for (uint64_t i = 0; i < n; i++) {
        if (floor_sync(&counter) != 0)
            die("the floor loop found its word taken at op %" PRIu64, i);
        if ((i & 0xffff) == 0)
            PROGRESS(i);
    }
    uint64_t t1 = now_ns();
    expect_eq("counter", counter, n);
    return per_op(t1 - t0, n);
}

void w1_sync_idle(row_t *row) {
    variant_t v[] = {{"libdesync", w1_desync, scaled(10000000), 0, 0},
                     {"pthread mutex", w1_mutex, scaled(10000000), 0, 0},
                     {"floor: 2 CAS + call", w1_floor, scaled(10000000), 0, 0}};
    printf("  1 thread, %" PRIu64 " syncs (counter++) on one idle object; ns per sync.\n"
           "  The floor row is the least any sync protocol needs (a CAS to take the queue, an\n"
           "  indirect call, a CAS to give it back; a mutex needs two atomic operations too)\n",
           v[0].n);
    measure("W1", v, 3);
    set_row(row, &v[0], &v[1]);
    row->floor_ns = v[2].med_ns;
    snprintf(row->extra, sizeof row->extra, "pthread mutex lock+inc+unlock");
}

/* --------------------------------------------------- W2 desync-stream */

static sample_t w2_desync(uint64_t n) {
    desync_t *d = lib_counter();
    uint64_t t0 = now_ns();
    for (uint64_t i = 0; i < n; i++) {
        if (desync_desync(d, job_inc, NULL) != 0)
            die("desync_desync failed at job %" PRIu64, i);
        if ((i & 0xffff) == 0)
            PROGRESS(i);
    }
    uint64_t v = lib_read(d);
    uint64_t t1 = now_ns();
    expect_eq("counter after the final sync", v, n);
    desync_release(d);
    return per_op(t1 - t0, n);
}

static sample_t w2_queue(uint64_t n) {
    mq_t q;
    uint64_t counter = 0;
    mq_init(&q);
    uint64_t t0 = now_ns();
    for (uint64_t i = 0; i < n; i++) {
        mq_push(&q, qjob_inc, &counter);
        if ((i & 0xffff) == 0)
            PROGRESS(i);
    }
    uint64_t v = mq_read(&q, &counter);
    uint64_t t1 = now_ns();
    mq_destroy(&q);
    expect_eq("counter after the final sync", v, n);
    return per_op(t1 - t0, n);
}

void w2_desync_stream(row_t *row) {
    variant_t v[] = {{"libdesync", w2_desync, scaled(10000000), 0, 0},
                     {"mutex+condvar queue", w2_queue, scaled(10000000), 0, 0}};
    printf("  1 producer, %" PRIu64 " desync jobs (counter++) on one object + 1 final sync; "
           "ns per job\n",
           v[0].n);
    measure("W2", v, 2);
    set_row(row, &v[0], &v[1]);
    snprintf(row->extra, sizeof row->extra, "mutex+condvar job queue, 1 worker thread");
}

/* -------------------------------------------------- W3 contended-sync */

typedef struct {
    desync_t *d;
    mcounter_t mc;
    /* W3_MUTEX_APART: the mutex's counter, in its own allocation (else mc.v) */
    uint64_t *mcv;
    uint64_t n; /* per thread */
    pthread_barrier_t bar;
    uint32_t *lat; /* the latency pass: n per thread, in ns; NULL otherwise */
    atomic_int next_slot;
} w3_t;

/* The latency pass: each call timed on its own with the monotonic clock
 * (one clock read per call: each call's end is the next one's start). */
static void w3_timed_loop(w3_t *w, int use_lib, int main_thread) {
    uint32_t *lat = w->lat + (uint64_t)atomic_fetch_add(&w->next_slot, 1) * w->n;
    uint64_t a = now_ns();
    for (uint64_t i = 0; i < w->n; i++) {
        if (use_lib) {
            if (desync_sync(w->d, job_inc, NULL) != 0)
                die("desync_sync failed at op %" PRIu64, i);
        } else if (w->mcv) {
            pthread_mutex_lock(&w->mc.m);
            ++*w->mcv;
            pthread_mutex_unlock(&w->mc.m);
        } else {
            mc_inc(&w->mc);
        }
        uint64_t b = now_ns();
        lat[i] = b - a > UINT32_MAX ? UINT32_MAX : (uint32_t)(b - a);
        a = b;
        if (main_thread && (i & 0xffff) == 0)
            PROGRESS(i);
    }
}

static void w3_desync_loop(w3_t *w, int main_thread) {
    if (w->lat) {
        w3_timed_loop(w, 1, main_thread);
        return;
    }
    for (uint64_t i = 0; i < w->n; i++) {
        if (desync_sync(w->d, job_inc, NULL) != 0)
            die("desync_sync failed at op %" PRIu64, i);
        if (main_thread && (i & 0xffff) == 0)
            PROGRESS(i);
    }
}

static void *w3_desync_thread(void *p) {
    w3_t *w = p;
    pthread_barrier_wait(&w->bar);
    w3_desync_loop(w, 0);
    return NULL;
}

static void w3_mutex_loop(w3_t *w, int main_thread) {
    if (w->lat) {
        w3_timed_loop(w, 0, main_thread);
        return;
    }
    for (uint64_t i = 0; i < w->n; i++) {
        if (w->mcv) {
            pthread_mutex_lock(&w->mc.m);
            ++*w->mcv;
            pthread_mutex_unlock(&w->mc.m);
        } else {
            mc_inc(&w->mc);
        }
        if (main_thread && (i & 0xffff) == 0)
            PROGRESS(i);
    }
}

static void *w3_mutex_thread(void *p) {
    w3_t *w = p;
    pthread_barrier_wait(&w->bar);
    w3_mutex_loop(w, 0);
    return NULL;
}

/* `threads` threads (the main thread is one of them) each do n ops on one
 * object (use_lib) or under one mutex; ns per op over all ops. With lat
 * (threads * n entries), each call's latency is recorded there. */
static sample_t w3_run_lat(uint64_t n, int threads, int mode, uint32_t *lat) {
    int use_lib = mode == W3_LIB || mode == W3_LIB_INLINE;
    uint64_t zero = 0;
    w3_t w = {.mc = {PTHREAD_MUTEX_INITIALIZER, 0}, .n = n, .lat = lat};
    if (mode == W3_LIB)
        w.d = lib_counter();
    else if (mode == W3_LIB_INLINE && !(w.d = desync_new_copy(&zero, sizeof zero, NULL)))
        die("desync_new_copy returned NULL");
    else if (mode == W3_MUTEX_APART && !(w.mcv = calloc(1, sizeof *w.mcv)))
        die("out of memory");
    pthread_t t[W3_MAX_THREADS];
    CHECK_PT(pthread_barrier_init(&w.bar, NULL, (unsigned)threads));
    for (int i = 1; i < threads; i++)
        CHECK_PT(pthread_create(&t[i], NULL, use_lib ? w3_desync_thread : w3_mutex_thread, &w));
    pthread_barrier_wait(&w.bar);
    uint64_t t0 = now_ns();
    if (use_lib)
        w3_desync_loop(&w, 1);
    else
        w3_mutex_loop(&w, 1);
    for (int i = 1; i < threads; i++)
        CHECK_PT(pthread_join(t[i], NULL));
    uint64_t t1 = now_ns();
    expect_eq("counter", use_lib ? lib_read(w.d) : w.mcv ? *w.mcv : w.mc.v,
              (uint64_t)threads * n);
    if (use_lib)
        desync_release(w.d);
    free(w.mcv);
    pthread_barrier_destroy(&w.bar);
    return per_op(t1 - t0, (uint64_t)threads * n);
}

sample_t w3_run(uint64_t n, int threads, int use_lib) {
    return w3_run_lat(n, threads, use_lib ? W3_LIB : W3_MUTEX, NULL);
}

/* The percentiles of the latency pass: p in [0, 1], nearest rank. Counted
 * in a histogram of 1-ns buckets up to LAT_BUCKETS; the rare slower calls
 * are sorted. */
#define LAT_BUCKETS 65536u

static int cmp_u32(const void *a, const void *b) {
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return (x > y) - (x < y);
}

static void lat_percentiles(const uint32_t *v, uint64_t count, const double *p, double *out,
                            int np) {
    static uint32_t hist[LAT_BUCKETS];
    memset(hist, 0, sizeof hist);
    uint64_t slow = 0;
    for (uint64_t i = 0; i < count; i++) {
        if (v[i] < LAT_BUCKETS)
            hist[v[i]]++;
        else
            slow++;
    }
    uint32_t *s = NULL;
    if (slow) {
        s = malloc(slow * sizeof *s);
        if (!s)
            die("out of memory");
        uint64_t k = 0;
        for (uint64_t i = 0; i < count; i++)
            if (v[i] >= LAT_BUCKETS)
                s[k++] = v[i];
        qsort(s, slow, sizeof *s, cmp_u32);
    }
    for (int j = 0; j < np; j++) {
        uint64_t rank = (uint64_t)ceil(p[j] * (double)count); /* 1-based */
        rank = rank < 1 ? 1 : rank;
        uint64_t seen = 0;
        out[j] = NAN;
        for (uint32_t b = 0; b < LAT_BUCKETS; b++) {
            seen += hist[b];
            if (seen >= rank) {
                out[j] = b;
                break;
            }
        }
        if (isnan(out[j]))
            out[j] = s[rank - seen - 1];
    }
    free(s);
}

/* p50 and p99 of each latency run (warm-up included: the last g_runs count). */
static double g_w3_p50[2][MAX_RUNS + 1], g_w3_p99[2][MAX_RUNS + 1];
static int g_w3_lat_runs[2];

static sample_t w3_lat(uint64_t n, int use_lib) {
    uint32_t *lat = malloc(2 * n * sizeof *lat);
    if (!lat)
        die("out of memory");
    sample_t s = w3_run_lat(n, 2, use_lib ? W3_LIB : W3_MUTEX, lat);
    static const double p[2] = {0.50, 0.99};
    double out[2];
    lat_percentiles(lat, 2 * n, p, out, 2);
    free(lat);
    int v = use_lib ? 0 : 1, r = g_w3_lat_runs[v]++ % (MAX_RUNS + 1);
    g_w3_p50[v][r] = out[0];
    g_w3_p99[v][r] = out[1];
    return s;
}

static sample_t w3_lat_desync(uint64_t n) { return w3_lat(n, 1); }
static sample_t w3_lat_mutex(uint64_t n) { return w3_lat(n, 0); }

/* The median over the measured runs (the last g_runs) of one variant. */
static double w3_lat_median(const double *v, int count) {
    double tmp[MAX_RUNS + 1];
    int k = 0;
    for (int r = count - g_runs; r < count; r++)
        tmp[k++] = v[r % (MAX_RUNS + 1)];
    return median(tmp, k);
}

/* The p50 of back-to-back clock reads: what timing each call adds. */
static double clock_read_ns(void) {
    enum { N = 100000 };
    uint32_t *lat = malloc(N * sizeof *lat);
    if (!lat)
        die("out of memory");
    uint64_t a = now_ns();
    for (int i = 0; i < N; i++) {
        uint64_t b = now_ns();
        lat[i] = (uint32_t)(b - a < UINT32_MAX ? b - a : UINT32_MAX);
        a = b;
    }
    static const double p[1] = {0.50};
    double out;
    lat_percentiles(lat, N, p, &out, 1);
    free(lat);
    return out;
}

static sample_t w3_desync(uint64_t n) { return w3_run(n, 2, 1); }
static sample_t w3_mutex(uint64_t n) { return w3_run(n, 2, 0); }
static sample_t w3_mutex_apart(uint64_t n) { return w3_run_lat(n, 2, W3_MUTEX_APART, NULL); }
static sample_t w3_lib_inline(uint64_t n) { return w3_run_lat(n, 2, W3_LIB_INLINE, NULL); }
static sample_t w3b_desync(uint64_t n) { return w3_run(n / 8, 8, 1); }
static sample_t w3b_mutex(uint64_t n) { return w3_run(n / 8, 8, 0); }

void w3_contended_sync(row_t *row) {
    variant_t v[] = {{"libdesync", w3_desync, scaled(2000000), 0, 0},
                     {"pthread mutex", w3_mutex, scaled(2000000), 0, 0},
                     {"mutex, counter apart", w3_mutex_apart, scaled(2000000), 0, 0},
                     {"libdesync, data inline", w3_lib_inline, scaled(2000000), 0, 0}};
    printf("  2 threads x %" PRIu64 " syncs (counter++) on ONE object (n below is per "
           "thread); ns per op over all ops.\n"
           "  The object's u64 is its own calloc, as a user writes it; the mutex's counter sits\n"
           "  beside the mutex. Each hand-over between the threads moves the lines both touch:\n"
           "  two for the object, one for the mutex. So two more rows, the layouts swapped:\n"
           "  the mutex with its counter in its own calloc, and the object with its u64 inside\n"
           "  (desync_new_copy)\n",
           v[0].n);
    measure("W3", v, 4);
    set_row(row, &v[0], &v[1]);
    row->floor_ns = v[2].med_ns;
    row->floor2_ns = v[3].med_ns;

    uint64_t nl = scaled(500000);
    variant_t l[] = {{"libdesync, each call timed", w3_lat_desync, nl, 0, 0},
                     {"pthread mutex, each call timed", w3_lat_mutex, nl, 0, 0}};
    double clk = clock_read_ns();
    printf("  latency pass: the same, 2 threads x %" PRIu64 " calls, each call timed with the "
           "monotonic clock\n"
           "  (a clock read costs about %.0f ns here, included); p50 and p99 over both "
           "threads' calls\n",
           nl, clk);
    g_w3_lat_runs[0] = g_w3_lat_runs[1] = 0;
    measure("W3 latency", l, 2);
    double p50l = w3_lat_median(g_w3_p50[0], g_w3_lat_runs[0]),
           p99l = w3_lat_median(g_w3_p99[0], g_w3_lat_runs[0]),
           p50m = w3_lat_median(g_w3_p50[1], g_w3_lat_runs[1]),
           p99m = w3_lat_median(g_w3_p99[1], g_w3_lat_runs[1]);
    printf("    per-call latency (medians of the runs' percentiles): libdesync p50 %.0f ns, "
           "p99 %.0f ns; mutex p50 %.0f ns, p99 %.0f ns\n",
           p50l, p99l, p50m, p99m);
    snprintf(row->extra, sizeof row->extra,
             "pthread mutex, contended; per-call latency p50/p99: libdesync %.0f/%.0f ns, "
             "mutex %.0f/%.0f ns",
             p50l, p99l, p50m, p99m);
}

void w3b_contended_8(row_t *row) {
    variant_t v[] = {{"libdesync", w3b_desync, scaled(2000000), 0, 0},
                     {"pthread mutex", w3b_mutex, scaled(2000000), 0, 0}};
    printf("  8 threads, %" PRIu64 " syncs (counter++) in total on ONE object; ns per op\n",
           v[0].n);
    measure("W3b", v, 2);
    set_row(row, &v[0], &v[1]);
    snprintf(row->extra, sizeof row->extra, "pthread mutex, 8 threads on 2 cores");
}

/* ----------------------------------------------------------- W4 mixed */

#define W4_BATCH 100

static sample_t w4_desync(uint64_t rounds) {
    desync_t *d = lib_counter();
    uint64_t t0 = now_ns();
    for (uint64_t r = 0; r < rounds; r++) {
        for (int k = 0; k < W4_BATCH; k++)
            if (desync_desync(d, job_inc, NULL) != 0)
                die("desync_desync failed in round %" PRIu64, r);
        uint64_t v = lib_read(d);
        if (v != (r + 1) * W4_BATCH)
            die("round %" PRIu64 ": sync read %" PRIu64 ", expected %" PRIu64, r, v,
                (r + 1) * W4_BATCH);
        PROGRESS(r);
    }
    uint64_t t1 = now_ns();
    desync_release(d);
    return per_op(t1 - t0, rounds * (W4_BATCH + 1));
}

static sample_t w4_queue(uint64_t rounds) {
    mq_t q;
    uint64_t counter = 0;
    mq_init(&q);
    uint64_t t0 = now_ns();
    for (uint64_t r = 0; r < rounds; r++) {
        for (int k = 0; k < W4_BATCH; k++)
            mq_push(&q, qjob_inc, &counter);
        uint64_t v = mq_read(&q, &counter);
        if (v != (r + 1) * W4_BATCH)
            die("round %" PRIu64 ": sync read %" PRIu64 ", expected %" PRIu64, r, v,
                (r + 1) * W4_BATCH);
        PROGRESS(r);
    }
    uint64_t t1 = now_ns();
    mq_destroy(&q);
    return per_op(t1 - t0, rounds * (W4_BATCH + 1));
}

void w4_mixed(row_t *row) {
    variant_t v[] = {{"libdesync", w4_desync, scaled(100000), 0, 0},
                     {"mutex+condvar queue", w4_queue, scaled(100000), 0, 0}};
    printf("  1 thread, %" PRIu64 " rounds (n below) of 100 desync counter++ + 1 sync read; "
           "ns per job (%" PRIu64 " jobs)\n",
           v[0].n, v[0].n * (W4_BATCH + 1));
    measure("W4", v, 2);
    set_row(row, &v[0], &v[1]);
    snprintf(row->extra, sizeof row->extra,
             "mutex+condvar queue, 1 worker; sync waits on a per-call condvar");
}

/* ------------------------------------------------------- W5 ping-pong */

typedef struct {
    desync_t *a, *b; /* libdesync: data = a u64 count of the jobs run there */
    mq_t qa, qb;     /* baseline */
    uint64_t a_runs, b_runs;
    uint64_t n;
    latch_t done;
} w5_t;

/* A's job runs n + 1 times (the start, then once per round trip). */
static void w5_lib_b(void *data, void *arg);

static void w5_lib_a(void *data, void *arg) {
    w5_t *w = arg;
    uint64_t c = ++*(uint64_t *)data;
    PROGRESS(c);
    if (c > w->n) {
        latch_open(&w->done, 0);
    } else {
        int rc = desync_desync(w->b, w5_lib_b, w);
        if (rc != 0)
            latch_open(&w->done, rc);
    }
}

static void w5_lib_b(void *data, void *arg) {
    w5_t *w = arg;
    ++*(uint64_t *)data;
    int rc = desync_desync(w->a, w5_lib_a, w);
    if (rc != 0)
        latch_open(&w->done, rc);
}

static sample_t w5_desync(uint64_t n) {
    w5_t w = {.a = lib_counter(), .b = lib_counter(), .n = n};
    latch_init(&w.done);
    uint64_t t0 = now_ns();
    CHECK_DS(desync_desync(w.a, w5_lib_a, &w));
    int err = latch_wait(&w.done);
    uint64_t t1 = now_ns();
    if (err != 0)
        die("desync_desync in a job failed: %s", desync_strerror(err));
    expect_eq("jobs run on A", lib_read(w.a), n + 1);
    expect_eq("jobs run on B", lib_read(w.b), n);
    desync_release(w.a);
    desync_release(w.b);
    latch_destroy(&w.done);
    return per_op(t1 - t0, n);
}

static void w5_queue_b(void *arg);

static void w5_queue_a(void *arg) {
    w5_t *w = arg;
    uint64_t c = ++w->a_runs;
    PROGRESS(c);
    if (c > w->n)
        latch_open(&w->done, 0);
    else
        mq_push(&w->qb, w5_queue_b, w);
}

static void w5_queue_b(void *arg) {
    w5_t *w = arg;
    ++w->b_runs;
    mq_push(&w->qa, w5_queue_a, w);
}

static sample_t w5_queue(uint64_t n) {
    w5_t w = {.n = n};
    latch_init(&w.done);
    mq_init(&w.qa);
    mq_init(&w.qb);
    uint64_t t0 = now_ns();
    mq_push(&w.qa, w5_queue_a, &w);
    latch_wait(&w.done);
    uint64_t t1 = now_ns();
    mq_destroy(&w.qa);
    mq_destroy(&w.qb);
    expect_eq("jobs run on A", w.a_runs, n + 1);
    expect_eq("jobs run on B", w.b_runs, n);
    latch_destroy(&w.done);
    return per_op(t1 - t0, n);
}

void w5_ping_pong(row_t *row) {
    variant_t v[] = {{"libdesync", w5_desync, scaled(1000000), 0, 0},
                     {"mutex+condvar queues", w5_queue, scaled(50000), 0, 0}};
    printf("  A -> B -> A round trips, main waits for the last one; ns per round trip.\n"
           "  The queue baseline (1 thread per object, a thread wake-up per hop) runs %" PRIu64
           " round trips, not %" PRIu64 "\n",
           v[1].n, v[0].n);
    measure("W5", v, 2);
    set_row(row, &v[0], &v[1]);
    snprintf(row->extra, sizeof row->extra,
             "mutex+condvar queue, 1 thread per object, run with %" PRIu64 " round trips",
             v[1].n);
}

/* --------------------------------------------------- W6 many-objects */

/*
 * Runs in a fresh child process. Each object's u64 payload is its own
 * calloc(1, 8), freed by the object's destroy (free), as a user would write
 * it; it counts in bytes per object (a 32-byte malloc chunk on glibc). The
 * array of handles is touched before the VmRSS reading and does not count.
 * The baseline is a malloc'd {mutex, u64} per object.
 */
child_result_t w6_desync_child(uint64_t n) {
    desync_t **h = malloc(n * sizeof *h);
    if (!h)
        die("out of memory");
    memset(h, 0, n * sizeof *h);
    child_result_t c = {.rss0_kib = (double)status_kib("VmRSS")};
    uint64_t t0 = now_ns();
    phase_step("create");
    for (uint64_t i = 0; i < n; i++) {
        uint64_t *pay = calloc(1, sizeof *pay);
        if (!pay)
            die("out of memory");
        h[i] = desync_new(pay, free);
        if (!h[i])
            die("desync_new returned NULL at object %" PRIu64, i);
        PROGRESS(i);
    }
    phase_step("desync");
    for (uint64_t i = 0; i < n; i++) {
        if (desync_desync(h[i], job_inc, NULL) != 0)
            die("desync_desync failed at object %" PRIu64, i);
        PROGRESS(i);
    }
    phase_step("sync");
    for (uint64_t i = 0; i < n; i++) {
        uint64_t v = lib_read(h[i]);
        if (v != 1)
            die("object %" PRIu64 " reads %" PRIu64 ", expected 1", i, v);
        PROGRESS(i);
    }
    phase_step("release");
    for (uint64_t i = 0; i < n; i++) {
        desync_release(h[i]);
        PROGRESS(i);
    }
    uint64_t t1 = now_ns();
    c.hwm_kib = (double)status_kib("VmHWM");
    c.ns = (double)(t1 - t0) / (double)n;
    free(h);
    return c;
}

typedef struct {
    pthread_mutex_t m;
    uint64_t v;
} mobj_t;

child_result_t w6_mutex_child(uint64_t n) {
    mobj_t **h = malloc(n * sizeof *h);
    if (!h)
        die("out of memory");
    memset(h, 0, n * sizeof *h);
    child_result_t c = {.rss0_kib = (double)status_kib("VmRSS")};
    uint64_t t0 = now_ns();
    for (uint64_t i = 0; i < n; i++) {
        h[i] = malloc(sizeof *h[i]);
        if (!h[i])
            die("out of memory");
        CHECK_PT(pthread_mutex_init(&h[i]->m, NULL));
        h[i]->v = 0;
        PROGRESS(i);
    }
    for (uint64_t i = 0; i < n; i++) {
        pthread_mutex_lock(&h[i]->m);
        ++h[i]->v;
        pthread_mutex_unlock(&h[i]->m);
        PROGRESS(i);
    }
    for (uint64_t i = 0; i < n; i++) {
        pthread_mutex_lock(&h[i]->m);
        uint64_t v = h[i]->v;
        pthread_mutex_unlock(&h[i]->m);
        if (v != 1)
            die("object %" PRIu64 " reads %" PRIu64 ", expected 1", i, v);
        PROGRESS(i);
    }
    for (uint64_t i = 0; i < n; i++) {
        pthread_mutex_destroy(&h[i]->m);
        free(h[i]);
        PROGRESS(i);
    }
    uint64_t t1 = now_ns();
    c.hwm_kib = (double)status_kib("VmHWM");
    c.ns = (double)(t1 - t0) / (double)n;
    free(h);
    return c;
}

static sample_t w6_in_child(const char *what, uint64_t n) {
    child_result_t c = run_child(what, n);
    count_ops(n);
    return (sample_t){c.ns, (c.hwm_kib - c.rss0_kib) * 1024.0 / (double)n, NAN};
}

sample_t w6_desync(uint64_t n) {
    return w6_in_child("w6-desync", n);
}

sample_t w6_mutex(uint64_t n) {
    return w6_in_child("w6-mutex", n);
}

void w6_many_objects(row_t *row) {
    uint64_t n = scaled(1000000);
    variant_t v[] = {{"libdesync", w6_desync, n, 0, 0},
                     {"pthread mutex + u64", w6_mutex, n, 0, 0}};
    printf("  create %" PRIu64 " objects, desync 1 counter++ onto each, sync each (reads 1), "
           "release all; ns per object.\n"
           "  Each run in a fresh child process (fork + exec); bytes/object = (VmHWM after - "
           "VmRSS before) / n.\n"
           "  Payloads: each its own calloc(1, 8), destroy free, counted; the handle array is "
           "not.\n"
           "  Baseline: malloc'd {pthread mutex, u64} per object (no queue: 1 thread per "
           "object is impossible)\n",
           n);
    measure("W6", v, 2);
    set_row(row, &v[0], &v[1]);
    row->lib_bytes = v[0].med_bytes;
    snprintf(row->extra, sizeof row->extra, "bytes/object: libdesync %.0f, mutex %.0f",
             v[0].med_bytes, v[1].med_bytes);
}

/* ---------------------------------------------------------- W7 future */

static desync_future_t *w7_job(void *data, void *arg) {
    (void)arg;
    uint64_t c = ++*(uint64_t *)data;
    return desync_future_ready((void *)(uintptr_t)c);
}

static sample_t w7_desync(uint64_t n) {
    desync_t *d = lib_counter();
    uint64_t t0 = now_ns();
    for (uint64_t i = 0; i < n; i++) {
        desync_future_t *f = desync_future_desync(d, w7_job, NULL);
        if (!f)
            die("desync_future_desync returned NULL at op %" PRIu64, i);
        void *v = NULL;
        int rc = desync_future_wait(f, &v);
        if (rc != 0)
            die("desync_future_wait returned %d (%s) at op %" PRIu64, rc, desync_strerror(rc),
                i);
        if ((uintptr_t)v != i + 1)
            die("future %" PRIu64 " has value %" PRIuPTR ", expected %" PRIu64, i,
                (uintptr_t)v, i + 1);
        desync_future_free(f);
        PROGRESS(i);
    }
    uint64_t t1 = now_ns();
    desync_release(d);
    return per_op(t1 - t0, n);
}

typedef struct {
    cvfuture_t *f;
    uint64_t *counter;
} w7_call_t;

static void w7_queue_job(void *arg) {
    w7_call_t *c = arg;
    cvf_complete(c->f, (void *)(uintptr_t)++*c->counter);
}

static sample_t w7_queue(uint64_t n) {
    mq_t q;
    uint64_t counter = 0;
    mq_init(&q);
    uint64_t t0 = now_ns();
    for (uint64_t i = 0; i < n; i++) {
        w7_call_t c = {cvf_new(), &counter};
        mq_push(&q, w7_queue_job, &c);
        uintptr_t v = (uintptr_t)cvf_wait(c.f);
        if (v != i + 1)
            die("future %" PRIu64 " has value %" PRIuPTR ", expected %" PRIu64, i, v, i + 1);
        cvf_free(c.f);
        PROGRESS(i);
    }
    uint64_t t1 = now_ns();
    mq_destroy(&q);
    return per_op(t1 - t0, n);
}

void w7_future(row_t *row) {
    variant_t v[] = {{"libdesync", w7_desync, scaled(1000000), 0, 0},
                     {"condvar future+worker", w7_queue, scaled(100000), 0, 0}};
    printf("  1 thread, desync_future_desync (job returns desync_future_ready(counter)), wait "
           "at once, free; ns per op.\n"
           "  The baseline (2 thread wake-ups per op) runs %" PRIu64 " ops, not %" PRIu64 "\n",
           v[1].n, v[0].n);
    measure("W7", v, 2);
    set_row(row, &v[0], &v[1]);
    snprintf(row->extra, sizeof row->extra,
             "heap mutex+condvar future completed by a worker thread's queue, run with %" PRIu64
             " ops",
             v[1].n);
}

/* ------------------------------------------------------------ W8 pipe */

/* Always-ready input: yields 1..n cast to void *, then EOF. The harness
 * owns the memory: free() only records that the library released it. */
typedef struct {
    uint64_t next, n;
    _Atomic uint64_t polled;
    atomic_int freed;
} w8_src_t;

static int w8_poll_next(void *self, void **item, const desync_waker_t *waker) {
    (void)waker;
    w8_src_t *s = self;
    if (s->next > s->n)
        return DESYNC_EOF;
    *item = (void *)(uintptr_t)s->next;
    atomic_store_explicit(&s->polled, s->next, memory_order_relaxed);
    s->next++;
    return 0;
}

static void w8_src_free(void *self) {
    w8_src_t *s = self;
    atomic_fetch_add(&s->freed, 1);
}

static const desync_stream_ops_t w8_ops = {w8_poll_next, w8_src_free};

/* output = item + state, where state counts the items processed so far:
 * the k-th output is 2k. */
static void *w8_process(void *data, void *item, void *arg) {
    (void)arg;
    uint64_t *state = data;
    ++*state;
    return (void *)((uintptr_t)item + (uintptr_t)*state);
}

#define W8_RSS_SLACK_KIB 4096

static uint64_t g_w8_ahead;  /* max items read from the input beyond the consumer */
static int g_w8_warned;

/* One run of the libdesync pipe with default backpressure (a depth of 5
 * that grows up to 64 while items are quick). */
static double w8_desync_core(uint64_t n) {
    desync_t *d = lib_counter();
    w8_src_t *src = calloc(1, sizeof *src);
    if (!src)
        die("out of memory");
    src->next = 1;
    src->n = n;
    uint64_t t0 = now_ns();
    desync_stream_t *in = desync_stream_new(&w8_ops, src);
    if (!in)
        die("desync_stream_new returned NULL");
    desync_stream_t *out = desync_pipe(d, in, w8_process, NULL);
    if (!out)
        die("desync_pipe returned NULL");
    uint64_t k = 0, sum = 0;
    for (;;) {
        void *item;
        int rc = desync_stream_next(out, &item);
        if (rc == DESYNC_EOF)
            break;
        if (rc != 0)
            die("desync_stream_next returned %d (%s) after %" PRIu64 " items", rc,
                desync_strerror(rc), k);
        k++;
        if ((uintptr_t)item != 2 * k)
            die("output %" PRIu64 " is %" PRIuPTR ", expected %" PRIu64
                " (an item was lost or reordered)",
                k, (uintptr_t)item, 2 * k);
        sum += (uintptr_t)item;
        uint64_t p = atomic_load_explicit(&src->polled, memory_order_relaxed);
        if (p > k && p - k > g_w8_ahead)
            g_w8_ahead = p - k;
        PROGRESS(k);
    }
    desync_stream_free(out);
    uint64_t t1 = now_ns();
    expect_eq("items read", k, n);
    expect_eq("sum of outputs", sum, n * (n + 1));
    desync_release(d);
    if (atomic_load(&src->freed) == 1) {
        free(src);
    } else if (!g_w8_warned) {
        g_w8_warned = 1; /* leak it: the library may still call free */
        printf("    NOTE: the input stream's free was called %d times by the time "
               "desync_release returned (expected 1)\n",
               atomic_load(&src->freed));
    }
    return (double)(t1 - t0) / (double)n;
}

static sample_t w8_desync(uint64_t n) {
    sample_t s = {w8_desync_core(n), NAN, NAN};
    count_ops(n);
    return s;
}

child_result_t w8_rss_child(uint64_t n) {
    child_result_t c = {.rss0_kib = (double)status_kib("VmRSS")};
    c.ns = w8_desync_core(n);
    c.hwm_kib = (double)status_kib("VmHWM");
    c.extra = (double)g_w8_ahead;
    return c;
}

typedef struct {
    bq_t in, out;
    uint64_t n;
    pthread_barrier_t bar;
} w8_base_t;

static void *w8_producer(void *p) {
    w8_base_t *w = p;
    pthread_barrier_wait(&w->bar);
    for (uint64_t i = 1; i <= w->n; i++)
        bq_push(&w->in, i);
    bq_close(&w->in);
    return NULL;
}

static void *w8_worker(void *p) {
    w8_base_t *w = p;
    uint64_t state = 0, v;
    pthread_barrier_wait(&w->bar);
    while (bq_pop(&w->in, &v)) {
        ++state;
        bq_push(&w->out, v + state);
    }
    bq_close(&w->out);
    return NULL;
}

static sample_t w8_queue(uint64_t n) {
    w8_base_t w = {.n = n};
    pthread_t tp, tw;
    bq_init(&w.in);
    bq_init(&w.out);
    CHECK_PT(pthread_barrier_init(&w.bar, NULL, 3));
    CHECK_PT(pthread_create(&tp, NULL, w8_producer, &w));
    CHECK_PT(pthread_create(&tw, NULL, w8_worker, &w));
    pthread_barrier_wait(&w.bar);
    uint64_t t0 = now_ns(), k = 0, sum = 0, v;
    while (bq_pop(&w.out, &v)) {
        k++;
        if (v != 2 * k)
            die("output %" PRIu64 " is %" PRIu64 ", expected %" PRIu64, k, v, 2 * k);
        sum += v;
        PROGRESS(k);
    }
    uint64_t t1 = now_ns();
    CHECK_PT(pthread_join(tp, NULL));
    CHECK_PT(pthread_join(tw, NULL));
    expect_eq("items read", k, n);
    expect_eq("sum of outputs", sum, n * (n + 1));
    pthread_barrier_destroy(&w.bar);
    bq_destroy(&w.in);
    bq_destroy(&w.out);
    return per_op(t1 - t0, n);
}

void w8_pipe(row_t *row) {
    variant_t v[] = {{"libdesync", w8_desync, scaled(1000000), 0, 0},
                     {"2 bounded queues (5)", w8_queue, scaled(100000), 0, 0}};
    printf("  %" PRIu64 " u64 items from an always-ready desync_stream_new input through "
           "desync_pipe (output = item + state,\n"
           "  default backpressure: depth 5, growing to 64 for quick items), consumer reads all\n"
           "  and checks each; ns per item.\n"
           "  Baseline: producer thread -> bounded queue (5) -> worker thread -> bounded queue "
           "(5) -> main;\n"
           "  it wakes threads per item and runs %" PRIu64 " items, not %" PRIu64 "\n",
           v[0].n, v[1].n, v[0].n);
    g_w8_ahead = 0;
    measure("W8", v, 2);
    set_row(row, &v[0], &v[1]);
    uint64_t lib_ahead = g_w8_ahead;
    printf("    max input read-ahead of the consumer (libdesync): %" PRIu64 " items\n",
           lib_ahead);

    uint64_t sizes[2] = {scaled(1000000), scaled(10000000)};
    double growth[2];
    char rss[2][64];
    for (int i = 0; i < 2; i++) {
        phase_begin(sizes[i], "W8 libdesync pipe RSS child (%" PRIu64 " items)", sizes[i]);
        child_result_t c = run_child("w8-rss", sizes[i]);
        phase_end();
        printf("    libdesync pipe, %" PRIu64 " items in a child: %.1f ns/item, VmRSS before "
               "%.0f KiB, VmHWM after %.0f KiB (peak growth %.0f KiB), read-ahead %.0f\n",
               sizes[i], c.ns, c.rss0_kib, c.hwm_kib, c.hwm_kib - c.rss0_kib, c.extra);
        snprintf(rss[i], sizeof rss[i], "%.0f KiB for %" PRIu64, c.hwm_kib - c.rss0_kib,
                 sizes[i]);
        growth[i] = c.hwm_kib - c.rss0_kib;
        if (c.extra > lib_ahead)
            lib_ahead = (uint64_t)c.extra;
    }
    /* Bounded: 10x the items may not cost anywhere near 10x the memory. */
    row->mem_ok = growth[1] <= 2 * growth[0] + W8_RSS_SLACK_KIB;
    printf("    memory %s: peak growth %.0f KiB with %" PRIu64 " items, %.0f KiB with %" PRIu64
           " (bounded: at most 2x + %d KiB)\n",
           row->mem_ok ? "bounded" : "NOT bounded", growth[1], sizes[1], growth[0], sizes[0],
           W8_RSS_SLACK_KIB);
    snprintf(row->extra, sizeof row->extra,
             "producer/worker threads, 2 bounded queues (5), run with %" PRIu64
             " items; libdesync peak RSS growth %s, %s items; max read-ahead %" PRIu64,
             v[1].n, rss[0], rss[1], lib_ahead);
}
