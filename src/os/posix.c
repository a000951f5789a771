/*
 * The portable OS layer: parking on a small table of mutex/condvar pairs
 * hashed by address, and a pipe for future fds. Used where there is no
 * Linux futex (and forced with `make OS=posix`, so CI keeps it working).
 * See os.h for the contract.
 */
#include "os.h"

#include "desync.h"

#include <errno.h>
#include <fcntl.h>
#include <time.h>
#include <unistd.h>

/* Words share slots: a wake broadcasts to the slot, every sleeper re-checks
 * its own word. More slots, fewer needless wake-ups. */
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
    /* Checked under the slot's mutex, which every waker takes: atomic with
     * going to sleep. */
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

void dsy_unpark_one(_Atomic uint32_t *word) {
    pthread_once(&park_once, park_init);
    unsigned i = park_slot(word);
    pthread_mutex_lock(&park_table[i].m);
    pthread_cond_broadcast(&park_table[i].c);
    pthread_mutex_unlock(&park_table[i].m);
}

/* A wake broadcasts to the slot already. */
void dsy_unpark_all(_Atomic uint32_t *word) { dsy_unpark_one(word); }

/* Thread names: glibc's call where it exists, else nothing (the call and
 * its signature differ between systems). */
void dsy_os_thread_name(const char *name) {
#if defined(__GLIBC__)
    pthread_setname_np(pthread_self(), name);
#else
    (void)name;
#endif
}

/* No portable way to ask for huge pages. */
void dsy_os_advise_huge(void *p, size_t bytes) {
    (void)p;
    (void)bytes;
}

/* fork: no wait or wake may be half done in the child, and the condition
 * variables there may still count waiters that vanished (a broadcast could
 * then wait for them): every slot is locked around fork, and made anew in
 * the child. */
void dsy_os_fork_prepare(void) {
    pthread_once(&park_once, park_init);
    for (int i = 0; i < PARK_SLOTS; i++)
        pthread_mutex_lock(&park_table[i].m);
}

void dsy_os_fork_parent(void) {
    for (int i = PARK_SLOTS; i-- > 0;)
        pthread_mutex_unlock(&park_table[i].m);
}

void dsy_os_fork_child(void) { park_init(); }

static int set_flags(int fd) {
    int fl = fcntl(fd, F_GETFL);
    if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0)
        return -1;
    int fdfl = fcntl(fd, F_GETFD);
    return fdfl < 0 ? -1 : fcntl(fd, F_SETFD, fdfl | FD_CLOEXEC);
}

int dsy_event_fd_open(int *read_fd, int *write_fd) {
    int p[2];
    if (pipe(p) != 0)
        return errno == ENOMEM ? DESYNC_ENOMEM : DESYNC_EAGAIN;
    if (set_flags(p[0]) < 0 || set_flags(p[1]) < 0) {
        close(p[0]);
        close(p[1]);
        return DESYNC_EAGAIN;
    }
    *read_fd = p[0];
    *write_fd = p[1];
    return 0;
}

void dsy_event_fd_signal(int fd) {
    char one = 1;
    ssize_t r = write(fd, &one, 1);
    (void)r; /* a full pipe is readable already */
}
