/*
 * The parts of the OS layer that plain POSIX gives every system: clocks, the
 * CPU count, yielding, sleeping and starting threads. See os.h.
 */
#include "os.h"

#include "desync.h"

#include <errno.h>
#include <sched.h>
#include <signal.h>
#include <time.h>
#include <unistd.h>

uint64_t dsy_now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

unsigned dsy_cpu_count(void) {
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n > 0 ? (unsigned)n : 1u;
}

void dsy_yield(void) { sched_yield(); }

void dsy_sleep_ns(uint64_t ns) {
    struct timespec ts = {(time_t)(ns / 1000000000u), (long)(ns % 1000000000u)};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

int dsy_thread_start(pthread_t *t, void *(*fn)(void *), void *arg) {
    /* The new thread inherits the creator's mask: block everything around
     * the creation, then restore the caller's. */
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    int rc = pthread_create(t, NULL, fn, arg);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (rc == 0)
        return 0;
    return rc == ENOMEM ? DESYNC_ENOMEM : DESYNC_EAGAIN;
}
