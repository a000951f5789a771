/* Error descriptions, and the report of a failed assertion (debug builds). */
#include "internal.h"

#include <stdio.h>
#include <stdlib.h>

const char *desync_strerror(int err) {
    switch (err) {
    case 0: return "success";
    case DESYNC_EINVAL: return "invalid argument";
    case DESYNC_ENOMEM: return "out of memory";
    case DESYNC_EBUSY: return "queue is busy";
    case DESYNC_EDEADLK:
        return "would deadlock: the wait would close a cycle of jobs waiting for each other";
    case DESYNC_ECANCELED: return "cancelled";
    case DESYNC_ETIMEDOUT: return "timed out";
    case DESYNC_EAGAIN: return "not ready, try again";
    case DESYNC_EOF: return "end of stream";
    case DESYNC_EPIPE: return "the other end is gone";
    case DESYNC_EFORKED: return "forked off: a thread that did not survive fork() held the queue";
    default: return "unknown error";
    }
}

#ifdef DESYNC_DEBUG
void dsy_assert_fail(const char *file, int line, const char *cond) {
    fprintf(stderr, "libdesync: %s:%d: assertion failed: %s\n", file, line, cond);
    fflush(stderr);
    abort();
}
#endif
