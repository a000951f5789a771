/*
 * The parts of the OS layer that plain POSIX gives every system: clocks, the
 * CPU count, yielding, sleeping and starting threads. See os.h.
 */
#include "os.h"

#include "desync.h"

#include <errno.h>
#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#endif
#include <sched.h>
#include <signal.h>
#include <sys/mman.h>
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

bool dsy_cpu_has_prefetchw(void) {
#if defined(__x86_64__) || defined(__i386__)
    unsigned a, b, c, d;
    return __get_cpuid(0x80000001u, &a, &b, &c, &d) && (c & bit_PRFCHW);
#else
    return true;
#endif
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

/* Maps bytes + align and trims both ends to the alignment. (The
 * fault-injection build of the tests fails mmap like an allocation.) */
void *dsy_os_map(size_t bytes, size_t align) {
    size_t len = bytes + align;
    void *m = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (m == MAP_FAILED)
        return NULL;
    uintptr_t start = (uintptr_t)m, aligned = (start + align - 1) & ~(uintptr_t)(align - 1);
    if (aligned > start)
        munmap(m, aligned - start);
    size_t tail = start + len - (aligned + bytes);
    if (tail)
        munmap((void *)(aligned + bytes), tail);
    return (void *)aligned;
}

void dsy_os_unmap(void *p, size_t bytes) { munmap(p, bytes); }
