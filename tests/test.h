/*
 * Minimal test harness shared by every test file, followed by the helpers
 * that more than one test file uses (test_future.h and test_pipe.h add those
 * shared by the future and the pipe tests).
 *
 * A test is `TEST(name) { ... return 0; }` in any tests/test_*.c file and is
 * registered, with its timeout in seconds, as `TEST_ENTRY(name, seconds)` in
 * tests/test_list.h. The runner (tests/runner.c) forks one child per test, so
 * a crash or a hang (killed at the timeout) fails that test only.
 * CHECK* macros print where they failed and make the test return 1.
 * TEST_SKIP("why") skips a test that cannot run here: it hands the reason to
 * the runner and returns TEST_SKIP_CODE (77); the runner then prints
 * "SKIP name (why)" (or "ok N - name # SKIP why" with --tap) and counts it
 * apart from passes and failures, without failing the run. Like CHECK, it
 * returns from the function it is in, so use it in the test function itself.
 * Every wait inside a test must be bounded (use test_wait_until or timeouts).
 */
#ifndef DESYNC_TEST_H
#define DESYNC_TEST_H

#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

/* AddressSanitizer, as the compiler says (gcc, clang). */
#if defined(__SANITIZE_ADDRESS__)
#define TEST_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define TEST_ASAN 1
#endif
#endif
#ifndef TEST_ASAN
#define TEST_ASAN 0
#endif

#define TEST(name) int test_##name(void)

#define CHECK(cond)                                                                       \
    do {                                                                                  \
        if (!(cond)) {                                                                    \
            fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond);     \
            return 1;                                                                     \
        }                                                                                 \
    } while (0)

#define CHECK_EQ(a, b)                                                                    \
    do {                                                                                  \
        long long check_a_ = (long long)(a), check_b_ = (long long)(b);                   \
        if (check_a_ != check_b_) {                                                       \
            fprintf(stderr, "%s:%d: CHECK_EQ failed: %s == %s (%lld != %lld)\n",         \
                    __FILE__, __LINE__, #a, #b, check_a_, check_b_);                      \
            return 1;                                                                     \
        }                                                                                 \
    } while (0)

/* Exit code of a skipped test (the Automake convention). */
#define TEST_SKIP_CODE 77

/* Defined in runner.c: records why the running test skips. */
void test_skip_reason(const char *why);

#define TEST_SKIP(why)                                                                    \
    do {                                                                                  \
        test_skip_reason(why);                                                            \
        return TEST_SKIP_CODE;                                                            \
    } while (0)

static inline uint64_t test_now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static inline void test_sleep_ms(unsigned ms) {
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0) {
    }
}

/* Polls pred(ctx) every millisecond until it is true (returns 1) or
 * timeout_ms passes (returns 0). For conditions with no other way to wait. */
static inline int test_wait_until(int (*pred)(void *ctx), void *ctx, unsigned timeout_ms) {
    uint64_t end = test_now_ns() + (uint64_t)timeout_ms * 1000000u;
    while (!pred(ctx)) {
        if (test_now_ns() > end)
            return 0;
        test_sleep_ms(1);
    }
    return 1;
}

/* Loop counts shrink tenfold in sanitizer builds (the Makefile defines
 * DESYNC_TEST_SANITIZED there), never below 1. */
#ifdef DESYNC_TEST_SANITIZED
#define TEST_SCALED(n) ((n) / 10 > 0 ? (n) / 10 : 1)
#else
#define TEST_SCALED(n) (n)
#endif

/* Race tests repeat a scenario up to `rounds` times but stop early (after at
 * least TEST_MIN_ROUNDS) once TEST_ROUND_BUDGET_NS has passed since `start`:
 * on a loaded machine, or in a sanitizer build, each round needs several
 * threads scheduled, and the test must not time out. Rounds count from 1:
 * for (int r = 1; test_rounds_left(r, rounds, start); r++). */
#define TEST_MIN_ROUNDS 200
#define TEST_ROUND_BUDGET_NS (8ull * 1000000000ull)

static inline int test_rounds_left(int r, int rounds, uint64_t start) {
    return r <= rounds && (r <= TEST_MIN_ROUNDS || test_now_ns() - start < TEST_ROUND_BUDGET_NS);
}

static inline int test_flag_is_set(void *p) { return atomic_load((atomic_int *)p) != 0; }

/* 1 once *f is non-zero, 0 after timeout_ms. */
static inline int test_wait_flag(atomic_int *f, unsigned timeout_ms) {
    return test_wait_until(test_flag_is_set, f, timeout_ms);
}

struct test_count_goal {
    atomic_int *counter;
    int goal;
};

static inline int test_count_reached(void *p) {
    struct test_count_goal *g = p;
    return atomic_load(g->counter) >= g->goal;
}

/* 1 once *counter >= goal, 0 after timeout_ms. */
static inline int test_wait_count(atomic_int *counter, int goal, unsigned timeout_ms) {
    struct test_count_goal g = {counter, goal};
    return test_wait_until(test_count_reached, &g, timeout_ms);
}

/* xorshift32: cheap, per thread, reproducible. */
static inline uint32_t test_rnd(uint32_t *state) {
    uint32_t x = *state;
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    return *state = x;
}

/* Busy-waits ns nanoseconds (to widen race windows; never to wait for
 * another thread). */
static inline void test_spin_ns(uint64_t ns) {
    uint64_t end = test_now_ns() + ns;
    while (test_now_ns() < end) {
    }
}

static inline void test_join_threads(pthread_t *th, int n) {
    for (int i = 0; i < n; i++)
        pthread_join(th[i], NULL);
}

/*
 * Helpers shared by several test files. Globals are static (one per test
 * file) and every test runs in a fresh process, so tests never share them.
 */

#define TEST_UNUSED __attribute__((unused))

/* Small integers carried in a void * (an argument, a value or an item). */
#define IV(x) ((void *)(intptr_t)(x))
#define VI(p) ((int)(intptr_t)(p))
#define P(x) ((void *)(uintptr_t)(x))
#define U(x) ((uintptr_t)(x))

/* One second, for the calls that take a timeout in nanoseconds. */
#define SEC 1000000000ull

/* A bound for waits that must succeed (a hang becomes a failed check). */
#define LONG_NS (20ull * 1000000000ull)
#define LONG_MS 20000u

/* Errors found on other threads (they cannot use CHECK): FAILF counts them
 * in g_errors, which the test then checks, and prints the first 20. */
static atomic_int g_errors TEST_UNUSED;

#define FAILF(...)                                                                        \
    do {                                                                                  \
        if (atomic_fetch_add(&g_errors, 1) < 20)                                          \
            fprintf(stderr, __VA_ARGS__);                                                 \
    } while (0)

/* Threads wait at this gate until the test opens it, so they really overlap
 * (a thread that finishes before the next starts tests nothing). */
static atomic_int g_gate TEST_UNUSED;

static inline void gate_wait(void) {
    while (!atomic_load(&g_gate))
        sched_yield();
}

/* Heap items, so the AddressSanitizer build reports any item we lose;
 * g_freed counts the items released by heap_free. */
static atomic_int g_freed TEST_UNUSED;

static inline void *heap_item(int v) {
    int *p = malloc(sizeof *p);
    *p = v;
    return p;
}

static inline void heap_free(void *item) {
    atomic_fetch_add(&g_freed, 1);
    free(item);
}

/* Jobs for desync_t objects (data, arg) and bare queues (arg). */
static inline void noop_job(void *data, void *arg) {
    (void)data;
    (void)arg;
}

static inline void noop_queue_job(void *arg) { (void)arg; }

static inline void get_int(void *data, void *out) { *(int *)out = *(int *)data; }

static inline void set_int(void *data, void *arg) { *(int *)data = VI(arg); }

static inline void set_flag_job(void *data, void *arg) {
    (void)data;
    atomic_store((atomic_int *)arg, 1);
}

/* A job that waits (bounded) until `go` is set, so its queue stays busy. */
struct blocker {
    atomic_int started;
    atomic_int go;
    atomic_int finished;
};

static inline void blocker_job(void *data, void *arg) {
    (void)data;
    struct blocker *b = arg;
    atomic_store(&b->started, 1);
    test_wait_flag(&b->go, LONG_MS);
    atomic_store(&b->finished, 1);
}

/* Counts destroy calls made on a data block whose first member is this. */
struct tracked {
    atomic_int destroyed;
    atomic_int jobs_at_destroy;
    int jobs; /* only touched from jobs */
};

static inline void tracked_destroy(void *data) {
    struct tracked *t = data;
    atomic_store(&t->jobs_at_destroy, t->jobs);
    atomic_fetch_add(&t->destroyed, 1);
}

static inline void tracked_job(void *data, void *arg) {
    (void)arg;
    ((struct tracked *)data)->jobs++;
}

/* Increments the object's int. */
static inline void count_job(void *data, void *arg) {
    (void)arg;
    (*(int *)data)++;
}

/* Stores the thread that runs the job in *(pthread_t *)arg. */
static inline void record_thread(void *data, void *arg) {
    (void)data;
    *(pthread_t *)arg = pthread_self();
}

/* The object's data: each job's argument (an int) and thread, in the order
 * the jobs ran. */
struct thread_log {
    int order[64];
    pthread_t threads[64];
    int n;
    atomic_int ran;
};

static inline void thread_log_job(void *data, void *arg) {
    struct thread_log *l = data;
    if (l->n < 64) {
        l->order[l->n] = (int)(intptr_t)arg;
        l->threads[l->n] = pthread_self();
    }
    l->n++;
    atomic_fetch_add(&l->ran, 1);
}

/* Whether, and on which thread, the job (arg) ran. */
struct try_probe {
    atomic_int ran;
    pthread_t thread;
};

static inline void try_probe_job(void *data, void *arg) {
    (void)data;
    struct try_probe *p = arg;
    p->thread = pthread_self();
    atomic_fetch_add(&p->ran, 1);
}

static inline void try_probe_queue_job(void *arg) { try_probe_job(NULL, arg); }

/* The job waits for a flag that the caller only sets after desync returned:
 * a desync that ran its job inline would see the flag still clear. */
struct handshake {
    atomic_int go;
    atomic_int saw_go;
    atomic_int done;
};

static inline void handshake_job(void *data, void *arg) {
    (void)data;
    struct handshake *h = arg;
    atomic_store(&h->saw_go, test_wait_flag(&h->go, 3000));
    atomic_store(&h->done, 1);
}

static inline void handshake_queue_job(void *arg) { handshake_job(NULL, arg); }

#endif
