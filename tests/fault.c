/*
 * Fault injection hooks, sweeps and the job ledger (see fault.h).
 */
#include "fault.h"

#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/* ------------------------------------------------------------- the rules */

struct rule {
    _Atomic int mode; /* enum fault_mode; written last when a rule is set */
    _Atomic unsigned long n;
    _Atomic unsigned long calls;
    _Atomic unsigned long failures;
};

static struct rule rules[3];

void fault_set(enum fault_kind kind, enum fault_mode mode, unsigned long n) {
    struct rule *r = &rules[kind];
    atomic_store(&r->mode, FAULT_OFF);
    atomic_store(&r->n, n ? n : 1);
    atomic_store(&r->calls, 0);
    atomic_store(&r->failures, 0);
    atomic_store(&r->mode, mode);
}

void fault_reset(void) {
    fault_set(FAULT_ALLOC, FAULT_OFF, 1);
    fault_set(FAULT_THREAD, FAULT_OFF, 1);
    fault_set(FAULT_YIELD, FAULT_OFF, 1);
}

unsigned long fault_calls(enum fault_kind kind) { return atomic_load(&rules[kind].calls); }

unsigned long fault_failures(enum fault_kind kind) { return atomic_load(&rules[kind].failures); }

/* Counts one call; true if it must fail. */
static bool must_fail(enum fault_kind kind) {
    struct rule *r = &rules[kind];
    int mode = atomic_load_explicit(&r->mode, memory_order_acquire);
    if (mode == FAULT_OFF)
        return false;
    unsigned long c = atomic_fetch_add(&r->calls, 1) + 1;
    unsigned long n = atomic_load(&r->n);
    bool fail = (mode == FAULT_NTH && c == n) || (mode == FAULT_FROM && c >= n) ||
                (mode == FAULT_EVERY && c % n == 0);
    if (fail)
        atomic_fetch_add(&r->failures, 1);
    return fail;
}

/* ------------------------------------------------------------- the hooks
 * The library's objects call these instead of the C library's functions
 * (Makefile: objcopy --redefine-sym). Declared here only. */

void *dsy_fault_malloc(size_t n);
void *dsy_fault_calloc(size_t k, size_t n);
void *dsy_fault_realloc(void *p, size_t n);
void *dsy_fault_aligned_alloc(size_t align, size_t n);
int dsy_fault_posix_memalign(void **p, size_t align, size_t n);
void *dsy_fault_mmap(void *addr, size_t n, int prot, int flags, int fd, off_t off);
int dsy_fault_pthread_create(pthread_t *t, const pthread_attr_t *attr, void *(*fn)(void *),
                             void *arg);
int dsy_fault_sched_yield(void);

void *dsy_fault_malloc(size_t n) { return must_fail(FAULT_ALLOC) ? NULL : malloc(n); }

void *dsy_fault_calloc(size_t k, size_t n) { return must_fail(FAULT_ALLOC) ? NULL : calloc(k, n); }

void *dsy_fault_realloc(void *p, size_t n) { return must_fail(FAULT_ALLOC) ? NULL : realloc(p, n); }

void *dsy_fault_aligned_alloc(size_t align, size_t n) {
    return must_fail(FAULT_ALLOC) ? NULL : aligned_alloc(align, n);
}

int dsy_fault_posix_memalign(void **p, size_t align, size_t n) {
    return must_fail(FAULT_ALLOC) ? ENOMEM : posix_memalign(p, align, n);
}

/* The library maps memory only for job segments: an allocation too. */
void *dsy_fault_mmap(void *addr, size_t n, int prot, int flags, int fd, off_t off) {
    if (must_fail(FAULT_ALLOC)) {
        errno = ENOMEM;
        return MAP_FAILED;
    }
    return mmap(addr, n, prot, flags, fd, off);
}

int dsy_fault_pthread_create(pthread_t *t, const pthread_attr_t *attr, void *(*fn)(void *),
                             void *arg) {
    return must_fail(FAULT_THREAD) ? EAGAIN : pthread_create(t, attr, fn, arg);
}

int dsy_fault_sched_yield(void) {
    int rc = sched_yield();
    if (must_fail(FAULT_YIELD)) {
        struct timespec late = {0, FAULT_YIELD_LATE_US * 1000L};
        nanosleep(&late, NULL);
    }
    return rc;
}

/* ---------------------------------------------------------------- sweeps */

static double timeout_scale(void) {
    const char *s = getenv("DESYNC_TEST_TIMEOUT_SCALE");
    double v = s ? strtod(s, NULL) : 0;
    return v > 0 ? v : 1.0;
}

int fault_full(void) {
    const char *s = getenv("DESYNC_TEST_FAULT_FULL");
    return s && *s && strcmp(s, "0") != 0;
}

static uint64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* The rule a sweep's child applies at fault_begin(). */
static enum fault_kind pending_kind;
static enum fault_mode pending_mode;
static unsigned long pending_n;

enum fault_mode fault_sweep_mode(unsigned long *n) {
    if (n)
        *n = pending_n;
    return pending_mode;
}

void fault_begin(void) {
    if (pending_mode != FAULT_OFF)
        fault_set(pending_kind, pending_mode, pending_n);
}

/* What a child tells its parent (a shared page). */
struct report {
    unsigned long calls, failures;
};

/* Runs one child: rule (kind, mode, n) unless mode is FAULT_OFF. 0 if it
 * returned 0 in time; *rep gets its counters. */
static int run_child(const char *name, int (*fn)(void), enum fault_kind kind, enum fault_mode mode,
                     unsigned long n, unsigned timeout_s, struct report *rep) {
    memset(rep, 0, sizeof *rep);
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    if (pid < 0) {
        fprintf(stderr, "%s: fork: %s\n", name, strerror(errno));
        return 1;
    }
    if (pid == 0) {
        fault_reset();
        pending_kind = kind;
        pending_mode = mode;
        pending_n = n;
        int rc = fn();
        rep->calls = fault_calls(kind);
        rep->failures = fault_failures(kind);
        /* Threads of the library that are still winding down may allocate:
         * the checks are done, so let them. */
        fault_reset();
        fflush(stdout);
        fflush(stderr);
        exit(rc); /* exit(), not _exit(): LeakSanitizer checks at exit */
    }
    uint64_t limit = (uint64_t)(timeout_s * timeout_scale() * 1e9);
    uint64_t start = now_ns();
    int status = 0;
    for (;;) {
        pid_t r = waitpid(pid, &status, WNOHANG);
        if (r == pid)
            break;
        if (r < 0 && errno != EINTR) {
            fprintf(stderr, "%s: waitpid: %s\n", name, strerror(errno));
            return 1;
        }
        if (now_ns() - start > limit) {
            kill(pid, SIGKILL);
            waitpid(pid, &status, 0);
            fprintf(stderr, "%s: n=%lu: hung (killed after %u s)\n", name, n, timeout_s);
            return 1;
        }
        struct timespec ts = {0, 200000};
        nanosleep(&ts, NULL);
    }
    if (WIFSIGNALED(status)) {
        fprintf(stderr, "%s: n=%lu: signal %d (%s)\n", name, n, WTERMSIG(status),
                strsignal(WTERMSIG(status)));
        return 1;
    }
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        /* A sanitizer's report (a leak at exit too) is printed above. */
        fprintf(stderr, "%s: n=%lu: exit %d\n", name, n, WEXITSTATUS(status));
        return 1;
    }
    return 0;
}

static const char *mode_name(enum fault_mode m) {
    switch (m) {
    case FAULT_NTH:
        return "nth";
    case FAULT_FROM:
        return "from";
    case FAULT_EVERY:
        return "every";
    case FAULT_COUNT:
        return "count";
    default:
        return "off";
    }
}

int fault_sweep(const char *name, int (*scenario)(void), enum fault_kind kind,
                enum fault_mode mode, unsigned long first, unsigned long step,
                unsigned long max_n, unsigned timeout_s, unsigned long *runs) {
    struct report *rep =
        mmap(NULL, sizeof *rep, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (rep == MAP_FAILED) {
        perror("mmap");
        return 1;
    }
    char label[160];
    snprintf(label, sizeof label, "%s [%s %s]", name, kind == FAULT_ALLOC ? "alloc" : "thread",
             mode_name(mode));
    unsigned long nruns = 0, n = first, failed_sites = 0;
    int rc = 0;
    for (; n <= max_n; n += step ? step : 1) {
        nruns++;
        if (run_child(label, scenario, kind, mode, n, timeout_s, rep) != 0) {
            rc = 1;
            break;
        }
        if (!rep->failures)
            break; /* the scenario made fewer calls than n: all sites seen */
        failed_sites++;
    }
    if (!rc && fault_full())
        fprintf(stderr, "%s: %lu runs, %lu with a failure injected\n", label, nruns,
                failed_sites);
    if (runs)
        *runs = nruns;
    munmap(rep, sizeof *rep);
    return rc;
}

int fault_in_child(const char *name, int (*fn)(void), unsigned timeout_s) {
    struct report rep;
    return run_child(name, fn, FAULT_ALLOC, FAULT_OFF, 0, timeout_s, &rep);
}

/* ---------------------------------------------------------------- ledger */

static atomic_int ledger_next;
static atomic_int ledger_accepted[LEDGER_MAX];
static atomic_int ledger_runs[LEDGER_MAX];

int ledger_new(void) {
    int id = atomic_fetch_add(&ledger_next, 1);
    if (id >= LEDGER_MAX) {
        fprintf(stderr, "ledger: more than %d jobs\n", LEDGER_MAX);
        abort();
    }
    return id;
}

void ledger_queued(int id, int accepted) { atomic_store(&ledger_accepted[id], accepted ? 1 : 0); }

void ledger_ran(int id) { atomic_fetch_add(&ledger_runs[id], 1); }

int ledger_ran_count(int id) { return atomic_load(&ledger_runs[id]); }

int ledger_check(const char *where) {
    int bad = 0, n = atomic_load(&ledger_next);
    for (int id = 0; id < n; id++) {
        int want = atomic_load(&ledger_accepted[id]), got = atomic_load(&ledger_runs[id]);
        if (want != got) {
            if (bad++ < 10)
                fprintf(stderr, "%s: job %d ran %d times, its call %s\n", where, id, got,
                        want ? "succeeded" : "failed");
        }
    }
    return bad;
}
