/*
 * The OS layer: everything the library asks of the operating system, behind
 * one small interface. Two implementations, chosen in one place (os.mk):
 *
 *   src/os/linux.c   futex parking, eventfd
 *   src/os/posix.c   a hashed table of mutex/condvar pairs, pipe() fds
 *   src/os/common.c  what both share: clocks, CPU count, yield, sleep,
 *                    thread start, page mappings (plain POSIX)
 *
 * A port to another system (macOS, the BSDs) needs only posix.c, or a file of
 * its own next to linux.c with the same functions (for example one using
 * __ulock_wait or _umtx_op for parking).
 *
 * Contract of parking: dsy_park() sleeps only while *word still holds
 * `expected`, checked atomically with going to sleep, so a waker that changes
 * the word and then calls dsy_unpark_one() is never missed. It may return
 * spuriously; callers re-check their condition.
 */
#ifndef DSY_OS_H
#define DSY_OS_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Sleeps while *word == expected, until woken or timeout_ns has passed
 * (0 = no timeout). Spurious returns are allowed. */
void dsy_park(_Atomic uint32_t *word, uint32_t expected, uint64_t timeout_ns);
/* Wakes (at least) one thread parked on word. Harmless if none is. */
void dsy_unpark_one(_Atomic uint32_t *word);
/* Wakes every thread parked on word. */
void dsy_unpark_all(_Atomic uint32_t *word);

/* Monotonic clock, in nanoseconds. */
uint64_t dsy_now_ns(void);
/* Online CPUs, at least 1. */
unsigned dsy_cpu_count(void);
/* Whether the CPU has a write-prefetch instruction the library may issue
 * (x86: PREFETCHW, CPUID 0x80000001 ECX bit 8; other CPUs: the compiler's
 * write prefetch, always). Asks the CPU each time: call it once. */
bool dsy_cpu_has_prefetchw(void);
/* Gives the CPU to another runnable thread (a holder we wait for may have
 * been preempted). */
void dsy_yield(void);
/* Sleeps at least ns nanoseconds (restarted after signals). */
void dsy_sleep_ns(uint64_t ns);

/* Starts a thread running fn(arg) with every signal blocked (the library's
 * threads take no signals: those belong to the application's threads).
 * 0, DESYNC_ENOMEM or DESYNC_EAGAIN. */
int dsy_thread_start(pthread_t *t, void *(*fn)(void *), void *arg);
/* Names the calling thread for debuggers and top -H (at most 15 bytes are
 * kept); does nothing where the system has no such call. */
void dsy_os_thread_name(const char *name);

/* Memory straight from the OS, for the job segments: `bytes` (a multiple of
 * `align`, itself a power of two and a multiple of the page size) aligned to
 * `align`, zero-filled, or NULL. dsy_os_unmap returns any page-aligned part
 * of such a mapping. */
void *dsy_os_map(size_t bytes, size_t align);
void dsy_os_unmap(void *p, size_t bytes);
/* Asks for huge pages behind [p, p + bytes), part of a dsy_os_map mapping
 * aligned to the huge page size: a hint, ignored where the system has no
 * such thing or declines. */
void dsy_os_advise_huge(void *p, size_t bytes);

/* An event fd for poll(): *read_fd becomes readable once signalled. On Linux
 * an eventfd (*write_fd = -1: signal read_fd itself), elsewhere a pipe.
 * Both ends are non-blocking and close-on-exec. 0, or DESYNC_ENOMEM /
 * DESYNC_EAGAIN (out of fds). */
int dsy_event_fd_open(int *read_fd, int *write_fd);
/* Makes the event fd readable (fd: write_fd if >= 0, else read_fd). A full
 * counter or pipe is readable already, so a failed write is ignored. */
void dsy_event_fd_signal(int fd);

/* fork(): the OS layer's own global locks, taken before fork (after the rest
 * of the library's) and released in the parent or reset in the child, where
 * no other thread exists (called by fork.c's pthread_atfork handlers). */
void dsy_os_fork_prepare(void);
void dsy_os_fork_parent(void);
void dsy_os_fork_child(void);

#endif
