/*
 * The OS layer on Linux: parking on a futex, eventfd for future fds, and
 * transparent huge pages on request (madvise).
 * See os.h for the contract; os.mk chooses this file for Linux builds.
 */
#if !defined(__linux__)
#error "src/os/linux.c is for Linux; build with OS=posix elsewhere (see src/os/os.mk)"
#endif

#include "os.h"

#include "desync.h"

#include <errno.h>
#include <linux/futex.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

void dsy_park(_Atomic uint32_t *word, uint32_t expected, uint64_t timeout_ns) {
    struct timespec ts, *tsp = NULL;
    if (timeout_ns) {
        ts.tv_sec = (time_t)(timeout_ns / 1000000000u);
        ts.tv_nsec = (long)(timeout_ns % 1000000000u);
        tsp = &ts;
    }
    syscall(SYS_futex, (uint32_t *)word, FUTEX_WAIT_PRIVATE, expected, tsp, NULL, 0);
}

void dsy_unpark_one(_Atomic uint32_t *word) {
    syscall(SYS_futex, (uint32_t *)word, FUTEX_WAKE_PRIVATE, 1, NULL, NULL, 0);
}

void dsy_unpark_all(_Atomic uint32_t *word) {
    syscall(SYS_futex, (uint32_t *)word, FUTEX_WAKE_PRIVATE, INT32_MAX, NULL, NULL, 0);
}

void dsy_os_thread_name(const char *name) { pthread_setname_np(pthread_self(), name); }

/* MADV_HUGEPAGE: honoured when transparent huge pages are "always" or
 * "madvise" (/sys/kernel/mm/transparent_hugepage/enabled); EINVAL without
 * them. A hint either way. */
void dsy_os_advise_huge(void *p, size_t bytes) {
#ifdef MADV_HUGEPAGE
    (void)madvise(p, bytes, MADV_HUGEPAGE);
#else
    (void)p;
    (void)bytes;
#endif
}

/* A futex is only a word in memory: nothing to lock or reset at fork. */
void dsy_os_fork_prepare(void) {}
void dsy_os_fork_parent(void) {}
void dsy_os_fork_child(void) {}

int dsy_event_fd_open(int *read_fd, int *write_fd) {
    *write_fd = -1;
    *read_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (*read_fd >= 0)
        return 0;
    return errno == ENOMEM ? DESYNC_ENOMEM : DESYNC_EAGAIN;
}

void dsy_event_fd_signal(int fd) {
    uint64_t one = 1;
    ssize_t r = write(fd, &one, sizeof one);
    (void)r; /* a full counter is readable already */
}
