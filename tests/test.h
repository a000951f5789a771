/*
 * Minimal test harness shared by every test file.
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
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

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

#endif
