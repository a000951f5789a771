/*
 * Shared declarations of the libdesync benchmark (the bench/ sources link into one
 * binary, build/bench). bench.c: harness, watchdog, child processes, table.
 * baseline.c: the hand-written mutex/condvar primitives the baselines use.
 * workloads.c: W1..W8 (bench/README.md), libdesync and baseline variants.
 * probes.c: P1, P2, the machine-limit probes. programs.c: R1, R2, the real
 * programs. curves.c: C3, C6, C2, CM, the curves. idle.c: IB, idle burn.
 * multi.c: W9 and R3, jobs over several objects.
 * targets.c: the targets of issue 10, printed as met / MISSED.
 * timers.c: TL, timers' lateness with 100,000 pending.
 */
#ifndef DESYNC_BENCH_H
#define DESYNC_BENCH_H

#include "desync.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

/* ------------------------------------------------------------ harness */

/* One measured run: ns per operation, and bytes per object (NaN: none).
 * measure() adds the CPU time per operation (cpu, in ns): the process's CPU
 * time (all threads, and any child process run meanwhile) over the whole
 * run, divided by the ops count the run gave per_op() or count_ops(). */
typedef struct {
    double ns;
    double bytes;
    double cpu;
} sample_t;

typedef sample_t (*run_fn)(uint64_t n);

#define MAX_RUNS 99

/* A variant of a workload: measured 1 warm-up + g_runs times, interleaved
 * with the other variants of the same workload. */
typedef struct {
    const char *name;
    run_fn fn;
    uint64_t n;
    double med_ns, med_bytes;
} variant_t;

/* One line of the final table: what this run measured. A probe has no
 * libdesync variant (lib_ns NaN; its figure is in base_ns). lib_bytes: W6's
 * bytes per object; mem_ok: W8's memory verdict (1 bounded, 0 not, -1 not
 * measured); set by the workloads that measure them. */
typedef struct {
    const char *id, *name, *unit;
    int ran;
    double lib_ns, base_ns;
    double lib_cpu, base_cpu; /* CPU ns per unit (NaN: not measured) */
    double lib_bytes;
    int mem_ok;
    /* The floor measured beside a workload (0: none): P2's with an RMW per
     * item (W2's and W4's), W1's of any sync protocol on an idle object,
     * R1's and R2's of the program written by hand without the library. */
    double floor_ns;
    double floor2_ns; /* R1: its floor keeping the order across threads */
    double tl_p99; /* TL: the 99th percentile of the lateness (ns) */
    char extra[512];
} row_t;

extern int g_runs;
extern int g_curve_runs; /* g_runs for the curves' points (BENCH_CURVE_RUNS) */
extern int g_skip_warmup; /* measure() without warm-up runs (fresh child processes) */
extern double g_scale;
extern _Atomic uint64_t g_progress;

#define PROGRESS(i) atomic_store_explicit(&g_progress, (uint64_t)(i), memory_order_relaxed)

uint64_t now_ns(void);
uint64_t scaled(uint64_t n);
/* Also records ops for the CPU figure (count_ops). */
sample_t per_op(uint64_t ns, uint64_t ops);
/* The number of operations of the run in progress, for its CPU per op. */
void count_ops(uint64_t ops);
/* CPU time used so far by this process, all threads (ns). */
uint64_t cpu_ns(void);
/* Names the run in progress for the watchdog and crash messages. */
void phase_begin(uint64_t total, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void phase_step(const char *step);
void phase_end(void);
_Noreturn void die(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void expect_eq(const char *what, uint64_t got, uint64_t want);
void measure(const char *wl, variant_t *v, int nv);
/* The g_runs ns figures of variant i in the last measure(), in run order. */
const double *measured_runs(int i);
/* The median CPU ns per op of variant i in the last measure() (NaN: none). */
double measured_cpu(int i);
/* Fills a workload's row from its libdesync and baseline variants (v[0]
 * and v[1] of the last measure(): their medians and CPU per op). */
void set_row(row_t *row, const variant_t *lib, const variant_t *base);
/* W1's libdesync loop: n syncs (counter++) on one idle object; W9 runs it
 * as its baseline. */
sample_t w1_desync(uint64_t n);
long status_kib(const char *key);
double median(double *v, int n); /* sorts v */
void sleep_ms(unsigned ms);
/* A private temporary directory (mkdtemp under /tmp, made on first use);
 * removed with its files at the end of the program, also after die(). */
const char *bench_tmpdir(void);
void bench_tmp_cleanup(void);

/* A spin-wait step: a plain load loop is what the probes measure, but on a
 * loaded machine the other thread may share our core: yield now and then. */
#define SPIN_YIELD_EVERY 2000
void spin_step(uint64_t *spins);

/* Runs `bench --child what n` in a fresh process (fork + exec); it prints
 * "ns rss_before_kib hwm_after_kib extra" on its stdout, a pipe to us. */
typedef struct {
    double ns, rss0_kib, hwm_kib, extra;
} child_result_t;
child_result_t run_child(const char *what, uint64_t n);

#define CHECK_DS(call)                                                                    \
    do {                                                                                  \
        int rc_ = (call);                                                                 \
        if (rc_ != 0)                                                                     \
            die("%s returned %d (%s)", #call, rc_, desync_strerror(rc_));                 \
    } while (0)

#define CHECK_PT(call)                                                                    \
    do {                                                                                  \
        int rc_ = (call);                                                                 \
        if (rc_ != 0)                                                                     \
            die("%s failed: error %d", #call, rc_);                                       \
    } while (0)

/* ---------------------------------------------------------- workloads */

void w1_sync_idle(row_t *row);
void w2_desync_stream(row_t *row);
void w3_contended_sync(row_t *row);
void w3b_contended_8(row_t *row);
void w4_mixed(row_t *row);
void w5_ping_pong(row_t *row);
void w6_many_objects(row_t *row);
void w7_future(row_t *row);
void w8_pipe(row_t *row);

/* Shared with curves.c. job_inc: counter++ on the object's u64. lib_counter:
 * an object owning a heap u64 (freed with it); lib_read: its value by sync.
 * qjob_inc, mq_read: the same on a baseline queue. w3_run: `threads`
 * threads (the caller one of them, at most W3_MAX_THREADS) each sync n
 * counter++ on one object (use_lib) or under one mutex; ns per op. w6_*:
 * one W6 run of n objects in a child process (libdesync, mutex + u64). */
void job_inc(void *data, void *arg);
desync_t *lib_counter(void);
uint64_t lib_read(desync_t *d);
#define W3_MAX_THREADS 64
sample_t w3_run(uint64_t n, int threads, int use_lib);
sample_t w6_desync(uint64_t n);
sample_t w6_mutex(uint64_t n);

/* Curves (curves.c): one workload at several sizes, beside its baseline at
 * each size; printed after the table and written as CSV files. */
#define CURVE_MAX_POINTS 8
typedef struct {
    const char *id, *file, *title, *xname, *unit, *lib_name, *base_name;
    int np;
    double x[CURVE_MAX_POINTS];
    double lib_ns[CURVE_MAX_POINTS], base_ns[CURVE_MAX_POINTS];
    double lib_cpu[CURVE_MAX_POINTS], base_cpu[CURVE_MAX_POINTS];
} curve_t;

void c3_threads(row_t *row);
void c6_objects(row_t *row);
void c2_producers(row_t *row);
void cm_many(row_t *row);
/* The curve measured in this run with this id, or NULL. */
const curve_t *curve_get(const char *id);
/* Prints the curves that ran and writes each as dir/<file>.csv (dir made
 * if missing; the curves' old files there are removed first). */
void curves_report(const char *dir);

void p1_cache_line(row_t *row);
void p2_spsc_ring(row_t *row);
/* Measures P1 and P2 again at the end of the run; each row then holds the
 * median of both passes' runs. */
void probes_again(row_t *p1, row_t *p2);
/* Describes the spread of the probes' runs in msg; nonzero when one probe's
 * slowest run took more than PROBE_NOISY_SPREAD times its fastest, or P1's
 * median is above P1_PLAUSIBLE_NS: the machine was busy and the ratios to
 * the probes say little. */
#define PROBE_NOISY_SPREAD 2.0
#define P1_PLAUSIBLE_NS 2000.0
int probes_noisy(char *msg, size_t len);

void r1_logger(row_t *row);
void r2_word_count(row_t *row);
/* multi.c: jobs over several objects. */
void w9_sync_all_idle(row_t *row);
void r3_bank(row_t *row);

/* The targets section; rows indexed by id (NULL when absent). */
void print_targets(const row_t *rows, int n);

/* Bodies run in a child process: fill ns and the memory figures. */
child_result_t w6_desync_child(uint64_t n);
child_result_t w6_mutex_child(uint64_t n);
child_result_t w8_rss_child(uint64_t n);
/* IB (idle.c): ms milliseconds of one job per ms over 1,000 objects; ns is
 * the % of one core used, extra the context switches per second. */
child_result_t ib_desync_child(uint64_t ms);
child_result_t ib_mutex_child(uint64_t ms);
void ib_idle_burn(row_t *row);
/* TL (timers.c): n timers; ns the median lateness, extra the 99th
 * percentile, rss0_kib the bytes per pending timer. */
child_result_t tl_desync_child(uint64_t n);
child_result_t tl_sleep_child(uint64_t n);
void tl_timer_lateness(row_t *row);

/* ----------------------------------------------------------- baselines */

typedef void (*qjob_fn)(void *arg);
typedef struct mq mq_t;
void qjob_inc(void *arg);
/* Reads *counter with a sync job on the baseline queue. */
uint64_t mq_read(mq_t *q, const uint64_t *counter);

/* Mutex + condvar job queue (growable ring of {fn, arg}), one worker thread. */
typedef struct {
    qjob_fn fn;
    void *arg;
} qjob_t;

struct mq {
    pthread_mutex_t m;
    pthread_cond_t cv;
    qjob_t *ring;
    size_t cap, head, len;
    int stop;
    pthread_t thread;
};

void mq_init(mq_t *q);
void mq_push(mq_t *q, qjob_fn fn, void *arg);
/* Queues fn(arg) and waits for it on a per-call condvar. */
void mq_sync(mq_t *q, qjob_fn fn, void *arg);
/* Runs the jobs still queued, stops and joins the worker. */
void mq_destroy(mq_t *q);

/* Mutex + condvar bounded queue of u64 items with a close flag. */
#define BQ_CAP 5
typedef struct {
    pthread_mutex_t m;
    pthread_cond_t not_full, not_empty;
    uint64_t buf[BQ_CAP];
    size_t head, len;
    int closed;
} bq_t;

void bq_init(bq_t *q);
void bq_push(bq_t *q, uint64_t v);
/* 1 with *v set, 0 once closed and empty. */
int bq_pop(bq_t *q, uint64_t *v);
void bq_close(bq_t *q);
void bq_destroy(bq_t *q);

/* Mutex + condvar "future" (heap-allocated). */
typedef struct {
    pthread_mutex_t m;
    pthread_cond_t cv;
    int done;
    void *value;
} cvfuture_t;

cvfuture_t *cvf_new(void);
void cvf_complete(cvfuture_t *f, void *value);
void *cvf_wait(cvfuture_t *f);
void cvf_free(cvfuture_t *f);

/* One-shot completion flag (mutex + condvar) carrying an error code. */
typedef struct {
    pthread_mutex_t m;
    pthread_cond_t cv;
    int done, err;
} latch_t;

void latch_init(latch_t *l);
void latch_open(latch_t *l, int err);
int latch_wait(latch_t *l);
void latch_destroy(latch_t *l);

#endif
