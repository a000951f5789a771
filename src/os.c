/*
 * The OS-specific layer, kept in one place: parking a thread on a 32-bit
 * word (futex on Linux, a hashed mutex/condvar table elsewhere), clocks, the
 * CPU count and the CPU's spin-wait hint.
 *
 * dsy_park() sleeps only while *word still holds `expected`, which is checked
 * atomically with going to sleep; so a waker that changes the word and then
 * calls dsy_unpark_*() can never be missed.
 */
#include "internal.h"

#include <errno.h>
#include <sched.h>
#include <time.h>
#include <unistd.h>

#if defined(__linux__)
#include <linux/futex.h>
#include <sys/syscall.h>

static void timeout_to_ts(uint64_t ns, struct timespec *ts) {
    ts->tv_sec = (time_t)(ns / 1000000000u);
    ts->tv_nsec = (long)(ns % 1000000000u);
}

void dsy_park(_Atomic uint32_t *word, uint32_t expected, uint64_t timeout_ns) {
    struct timespec ts, *tsp = NULL;
    if (timeout_ns) {
        timeout_to_ts(timeout_ns, &ts);
        tsp = &ts;
    }
    syscall(SYS_futex, (uint32_t *)word, FUTEX_WAIT_PRIVATE, expected, tsp, NULL, 0);
}

void dsy_unpark_one(_Atomic uint32_t *word) {
    syscall(SYS_futex, (uint32_t *)word, FUTEX_WAKE_PRIVATE, 1, NULL, NULL, 0);
}

#else /* portable fallback: a small table of mutex/condvar pairs hashed by address */
#include <pthread.h>

#define PARK_SLOTS 64
static struct {
    pthread_mutex_t m;
    pthread_cond_t c;
} park_table[PARK_SLOTS];
static pthread_once_t park_once = PTHREAD_ONCE_INIT;

static void park_init(void) {
    for (int i = 0; i < PARK_SLOTS; i++) {
        pthread_mutex_init(&park_table[i].m, NULL);
        pthread_cond_init(&park_table[i].c, NULL);
    }
}

static unsigned park_slot(const void *p) { return (unsigned)(((uintptr_t)p >> 4) % PARK_SLOTS); }

void dsy_park(_Atomic uint32_t *word, uint32_t expected, uint64_t timeout_ns) {
    pthread_once(&park_once, park_init);
    unsigned i = park_slot(word);
    pthread_mutex_lock(&park_table[i].m);
    if (atomic_load(word) == expected) {
        if (timeout_ns) {
            struct timespec ts;
            clock_gettime(CLOCK_REALTIME, &ts);
            uint64_t t = (uint64_t)ts.tv_nsec + timeout_ns % 1000000000u;
            ts.tv_sec += (time_t)(timeout_ns / 1000000000u + t / 1000000000u);
            ts.tv_nsec = (long)(t % 1000000000u);
            pthread_cond_timedwait(&park_table[i].c, &park_table[i].m, &ts);
        } else {
            pthread_cond_wait(&park_table[i].c, &park_table[i].m);
        }
    }
    pthread_mutex_unlock(&park_table[i].m);
}

/* Slots are shared by several words: wake every waiter of the slot; each
 * re-checks its own word. */
void dsy_unpark_one(_Atomic uint32_t *word) {
    pthread_once(&park_once, park_init);
    unsigned i = park_slot(word);
    pthread_mutex_lock(&park_table[i].m);
    pthread_cond_broadcast(&park_table[i].c);
    pthread_mutex_unlock(&park_table[i].m);
}
#endif

uint64_t dsy_now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

unsigned dsy_cpu_count(void) {
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n > 0 ? (unsigned)n : 1u;
}

void dsy_cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield");
#endif
}

void dsy_yield(void) { sched_yield(); }

void dsy_sleep_ns(uint64_t ns) {
    struct timespec ts = {(time_t)(ns / 1000000000u), (long)(ns % 1000000000u)};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}
