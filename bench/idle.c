/*
 * IB idle-burn (bench/README.md): how much CPU a process that is nearly idle
 * burns. 1,000 objects; the main thread sleeps until the next millisecond
 * (an absolute deadline), then queues one job (counter++) on the next object
 * in turn, so the objects receive one job per ms in total. Workers that spin
 * before they sleep show here. Each run is a fresh child process; its figure
 * is the process's CPU time (all threads) over the wall time, in percent of
 * one core. Baseline: the same program with a mutex per object, the job run
 * inline (what the sleeping loop itself costs).
 */
#include "bench.h"

#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <time.h>

#define IB_OBJECTS 1000
#define IB_SETTLE_MS 100 /* after creating the objects, before the clock starts */

typedef struct {
    pthread_mutex_t m;
    uint64_t v;
} ib_obj_t;

static long ctx_switches(void) {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return ru.ru_nvcsw + ru.ru_nivcsw;
}

static child_result_t ib_child(uint64_t ms, int use_lib) {
    static desync_t *d[IB_OBJECTS];
    static ib_obj_t m[IB_OBJECTS];
    for (int k = 0; k < IB_OBJECTS; k++) {
        if (use_lib)
            d[k] = lib_counter();
        else
            CHECK_PT(pthread_mutex_init(&m[k].m, NULL));
    }
    sleep_ms(IB_SETTLE_MS);
    struct timespec next;
    clock_gettime(CLOCK_MONOTONIC, &next);
    uint64_t c0 = cpu_ns(), w0 = now_ns();
    long s0 = ctx_switches();
    for (uint64_t i = 0; i < ms; i++) {
        next.tv_nsec += 1000000;
        if (next.tv_nsec >= 1000000000) {
            next.tv_nsec -= 1000000000;
            next.tv_sec++;
        }
        while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &next, NULL) != 0) {
        }
        int k = (int)(i % IB_OBJECTS);
        if (use_lib) {
            CHECK_DS(desync_desync(d[k], job_inc, NULL));
        } else {
            pthread_mutex_lock(&m[k].m);
            m[k].v++;
            pthread_mutex_unlock(&m[k].m);
        }
        PROGRESS(i);
    }
    uint64_t c1 = cpu_ns(), w1 = now_ns();
    long s1 = ctx_switches();
    uint64_t sum = 0;
    for (int k = 0; k < IB_OBJECTS; k++) {
        if (use_lib) {
            sum += lib_read(d[k]);
            desync_release(d[k]);
        } else {
            sum += m[k].v;
            pthread_mutex_destroy(&m[k].m);
        }
    }
    expect_eq("jobs run", sum, ms);
    child_result_t c = {.ns = 100.0 * (double)(c1 - c0) / (double)(w1 - w0),
                        .extra = (double)(s1 - s0) * 1e9 / (double)(w1 - w0)};
    return c;
}

child_result_t ib_desync_child(uint64_t ms) {
    return ib_child(ms, 1);
}

child_result_t ib_mutex_child(uint64_t ms) {
    return ib_child(ms, 0);
}

/* Context switches per second of the last run of each variant. */
static double g_ib_csw[2];

static sample_t ib_desync(uint64_t ms) {
    child_result_t c = run_child("ib-desync", ms);
    g_ib_csw[0] = c.extra;
    return (sample_t){c.ns, NAN, NAN};
}

static sample_t ib_mutex(uint64_t ms) {
    child_result_t c = run_child("ib-mutex", ms);
    g_ib_csw[1] = c.extra;
    return (sample_t){c.ns, NAN, NAN};
}

void ib_idle_burn(row_t *row) {
    uint64_t ms = scaled(2000);
    ms = ms < 100 ? 100 : ms;
    variant_t v[] = {{"libdesync", ib_desync, ms, 0, 0},
                     {"mutex per object", ib_mutex, ms, 0, 0}};
    printf("  %d objects; the main thread sleeps to the next ms, then desyncs one counter++ "
           "on the next object:\n"
           "  one job per ms in total, for %" PRIu64 " ms (n below), in a fresh child process "
           "per run (no warm-up).\n"
           "  Figure: the process's CPU time (all threads) / wall time, in %% of one core "
           "(printed in the ns columns).\n"
           "  Baseline: a mutex per object, the job run inline: the cost of the sleeping loop "
           "itself\n",
           IB_OBJECTS, ms);
    g_skip_warmup = 1;
    measure("IB", v, 2);
    g_skip_warmup = 0;
    row->lib_ns = v[0].med_ns;
    row->base_ns = v[1].med_ns;
    printf("    %% of a core: libdesync %.2f, mutex %.2f; context switches/s in the last run: "
           "libdesync %.0f, mutex %.0f\n",
           v[0].med_ns, v[1].med_ns, g_ib_csw[0], g_ib_csw[1]);
    snprintf(row->extra, sizeof row->extra,
             "%% of one core, not ns: libdesync %.2f%%, mutex per object %.2f%% (the sleeping "
             "loop alone)",
             v[0].med_ns, v[1].med_ns);
}
