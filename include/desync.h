/*
 * libdesync: protect data by scheduling operations in order instead of locking.
 *
 * A desync_t owns a pointer to user data and a serial job queue. Jobs queued on
 * one object run one at a time, in exactly the order their calls returned, so
 * the data needs no lock. desync_desync() queues a job and returns at once;
 * desync_sync() queues a job and waits for it (on an idle object it simply runs
 * the job on the calling thread).
 *
 * Conventions used by every function in this library:
 *  - Calls that can fail return int: 0, or a negative DESYNC_E* code.
 *  - Calls that return a pointer return NULL on failure (bad input or memory).
 *  - "Blocks" means the call may put the calling thread to sleep; every other
 *    call returns without waiting for other threads (it may spin for a few
 *    instructions on a structure another thread is in the middle of updating).
 *
 * Topic headers: <desync/future.h> (futures, promises, suspend/resume) and
 * <desync/stream.h> (streams, channels, pipes) are included below.
 */
#ifndef DESYNC_H
#define DESYNC_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(__GNUC__) && !defined(DESYNC_STATIC)
#define DESYNC_API __attribute__((visibility("default")))
#else
#define DESYNC_API
#endif

/* ---------------------------------------------------------------- errors */

#define DESYNC_EINVAL (-1)    /* a NULL handle or job, or an argument out of range */
#define DESYNC_ENOMEM (-2)    /* out of memory; nothing was queued */
#define DESYNC_EBUSY (-3)     /* try_sync: the queue was not idle and empty */
#define DESYNC_EDEADLK (-4)   /* sync on a queue this thread (or its sync chain) is running */
#define DESYNC_ECANCELED (-5) /* the job or future was cancelled and will never run */
#define DESYNC_ETIMEDOUT (-6) /* a timed wait ran out */
#define DESYNC_EAGAIN (-7)    /* not ready yet: try again later (poll / try_* calls) */
#define DESYNC_EOF (-8)       /* a stream has ended */
#define DESYNC_EPIPE (-9)     /* the other end of a channel or pipe is gone */
#define DESYNC_EFORKED (-10)  /* in a fork() child: the object was forked off (see "fork") */

/* A static, human-readable description of an error code (never NULL). */
DESYNC_API const char *desync_strerror(int err);

/* ------------------------------------------------------------- handles */

typedef struct desync_scheduler desync_scheduler_t;
typedef struct desync_queue desync_queue_t;
typedef struct desync_object desync_t;

/* Job signatures. `data` is the object's data pointer; `arg` is the caller's. */
typedef void (*desync_job_fn)(void *data, void *arg);
typedef void (*desync_queue_job_fn)(void *arg);
/* Frees an object's data after its last job (desync_new). */
typedef void (*desync_destroy_fn)(void *data);

/* ----------------------------------------------------------- scheduler */

/*
 * The default scheduler, created on first use (thread-safe). It starts up to
 * max(8, 2 x cores) threads on demand; idle threads spin briefly, then sleep,
 * and exit after a few seconds without work. It is never freed. NULL only if
 * it could not be allocated.
 */
DESYNC_API desync_scheduler_t *desync_scheduler_default(void);

/*
 * A new scheduler that runs queues on at most `max_threads` threads, started
 * on demand. max_threads 0 runs nothing in the background: queued jobs run
 * when some thread syncs or waits on their queue. NULL on ENOMEM.
 */
DESYNC_API desync_scheduler_t *desync_scheduler_new(size_t max_threads);

/*
 * Blocks until every queue that is ready to run on `s` has run (helping on the
 * calling thread, so this also completes with 0 threads), then stops and joins
 * its threads. Queues that still exist stay usable, as on a scheduler with
 * max_threads 0: their later jobs run on the threads that sync or wait on
 * them. The memory is released with the last queue. Must not be called from
 * one of the scheduler's own jobs (it then returns without freeing). Ignores
 * NULL and the default scheduler.
 */
DESYNC_API void desync_scheduler_free(desync_scheduler_t *s);

/*
 * Sets the thread limit. Raising it lets new threads start for waiting work;
 * lowering it does not stop running threads (see despawn below).
 */
DESYNC_API void desync_scheduler_set_max_threads(desync_scheduler_t *s, size_t n);
DESYNC_API size_t desync_scheduler_max_threads(desync_scheduler_t *s);

/* Threads currently alive (busy, spinning or sleeping). */
DESYNC_API size_t desync_scheduler_thread_count(desync_scheduler_t *s);

/*
 * Starts one more thread now, even above the maximum. DESYNC_EINVAL for NULL,
 * DESYNC_EAGAIN if the system refused the thread, DESYNC_ENOMEM.
 */
DESYNC_API int desync_scheduler_spawn_thread(desync_scheduler_t *s);

/*
 * Blocks until the number of threads is at most the maximum: surplus threads
 * finish the queue they are running (putting it back for the others), then
 * exit and are joined before this returns. Called from a job on one of the
 * scheduler's threads, that thread is not counted as stoppable.
 */
DESYNC_API void desync_scheduler_despawn_threads_if_overloaded(desync_scheduler_t *s);

/* ------------------------------------------------------------------ fork
 *
 * fork() may be called while the library is in use, from any thread and from
 * inside a job; the parent is unaffected. (The library's global locks are
 * taken around fork with pthread_atfork, so the child never finds one held.)
 * The child keeps only the thread that called fork. There:
 *
 *  - Schedulers (default and private) keep their settings and the work that
 *    was waiting in them, but have no threads: threads start again on demand,
 *    at the child's first call that queues work on the scheduler or blocks.
 *    desync_scheduler_thread_count() says 0 until then (1 on the scheduler of
 *    a job that called fork). A child that only calls exec or _exit starts
 *    no thread and runs nothing of the parent's.
 *  - Jobs that were queued and not running at fork time stay queued: they
 *    run in the child as well as in the parent, like unflushed stdio buffers.
 *    To run them once, let the objects go idle (sync on them) before fork.
 *  - An object (or queue) that another thread was using at fork time, while
 *    it was busy — running one of its jobs, waiting in a sync on it or on one
 *    of its futures, queueing a job on it — is "forked off": that thread does
 *    not exist in the child, so the object never runs again there. On it,
 *    desync, desync_copy, sync and try_sync (and the desync_queue_* forms)
 *    return DESYNC_EFORKED and queue nothing; future_desync, future_sync,
 *    after and suspend return NULL; future waits and polls on its futures
 *    return DESYNC_EFORKED; desync_release returns without running destroy.
 *    Its queued jobs never run, and its memory is not freed, in the child.
 *  - The job that called fork goes on in the child, and so does its object
 *    (unless another thread was waiting for it: then it is forked off once
 *    that job returns).
 *  - A future that only a vanished thread, or a job of a forked-off object,
 *    would complete stays pending, and a stream that only they would feed
 *    stays empty: wait with desync_future_wait_for / desync_stream_next_for.
 *  - As after any fork of a multithreaded process, an object that another
 *    thread was in the middle of a library call on at the instant of fork
 *    (completing a promise, sending on a channel, waking a stream's reader:
 *    a few instructions, under that object's own lock) may be left locked,
 *    and calls on it in the child may block. Objects that no other thread
 *    was touching, and everything the child creates, work normally.
 */

/* --------------------------------------------------------------- queues */

/*
 * A serial job queue on `scheduler` (NULL = the default scheduler), with one
 * reference owned by the caller. NULL on ENOMEM.
 */
DESYNC_API desync_queue_t *desync_queue_new(desync_scheduler_t *scheduler);

/* Adds a reference; returns q (NULL for NULL). */
DESYNC_API desync_queue_t *desync_queue_retain(desync_queue_t *q);

/*
 * Drops a reference. Jobs already queued still run (nothing is lost); the
 * memory goes when the last reference is gone and the queue is idle. Does not
 * block. Ignores NULL.
 */
DESYNC_API void desync_queue_release(desync_queue_t *q);

/*
 * Queues job(arg) to run after every job queued before it; returns at once.
 * DESYNC_EINVAL (NULL q or job), DESYNC_ENOMEM (nothing queued).
 */
DESYNC_API int desync_queue_desync(desync_queue_t *q, desync_queue_job_fn job, void *arg);

/*
 * As desync_queue_desync, but the `len` bytes at `arg` are copied into the job
 * and the job receives a pointer to the copy (valid while it runs, aligned for
 * any type). Up to 32 bytes need no allocation beyond the job itself.
 * DESYNC_EINVAL also for arg == NULL with len > 0.
 */
DESYNC_API int desync_queue_desync_copy(desync_queue_t *q, desync_queue_job_fn job,
                                        const void *arg, size_t len);

/*
 * Queues job(arg) and blocks until it has run; then returns 0. On an idle
 * queue the job runs on the calling thread at once. If the queue has pending
 * jobs that no thread is running, the caller runs them itself, up to and
 * including its own job; if a thread is running the queue, the caller spins
 * briefly and then sleeps until its job has run. `arg` may live on the
 * caller's stack. Needs no heap allocation.
 * DESYNC_EINVAL (NULL q or job); DESYNC_EDEADLK when called from a job of q,
 * directly or through a chain of nested syncs (the job is then not queued).
 */
DESYNC_API int desync_queue_sync(desync_queue_t *q, desync_queue_job_fn job, void *arg);

/*
 * Runs job(arg) on the calling thread only if q is idle and empty, else
 * returns DESYNC_EBUSY without running it (DESYNC_EDEADLK from q's own jobs,
 * DESYNC_EINVAL for NULL). Never blocks.
 */
DESYNC_API int desync_queue_try_sync(desync_queue_t *q, desync_queue_job_fn job, void *arg);

/* ------------------------------------------------------ desync objects */

/*
 * A Desync object owning `data`, on the default scheduler (or `scheduler`),
 * with one reference owned by the caller. `destroy` (may be NULL) is called
 * with `data` once, after the last job. NULL on ENOMEM (destroy not called).
 */
DESYNC_API desync_t *desync_new(void *data, desync_destroy_fn destroy);
DESYNC_API desync_t *desync_new_on(desync_scheduler_t *scheduler, void *data,
                                   desync_destroy_fn destroy);

/* Adds a reference; returns d (NULL for NULL). */
DESYNC_API desync_t *desync_retain(desync_t *d);

/*
 * Drops a reference. The last one blocks until every job queued so far has
 * run, then calls destroy(data) in queue order and frees the object (memory
 * shared with its queue is kept while desync_get_queue() references remain).
 * Called from one of the object's own jobs it does not block: destruction
 * then happens after that job, still in queue order. Ignores NULL.
 */
DESYNC_API void desync_release(desync_t *d);

/* The same calls as for queues; jobs also receive the object's data. */
DESYNC_API int desync_desync(desync_t *d, desync_job_fn job, void *arg);
DESYNC_API int desync_desync_copy(desync_t *d, desync_job_fn job, const void *arg, size_t len);
DESYNC_API int desync_sync(desync_t *d, desync_job_fn job, void *arg);
DESYNC_API int desync_try_sync(desync_t *d, desync_job_fn job, void *arg);

/*
 * The object's queue, borrowed (valid while the object is; retain it to keep
 * it longer). Jobs queued on it run in order with the object's jobs but do
 * not receive the data pointer. NULL for NULL.
 */
DESYNC_API desync_queue_t *desync_get_queue(desync_t *d);

/* The data pointer given to desync_new (NULL for NULL). Touch it only from
 * the object's own jobs. */
DESYNC_API void *desync_data(desync_t *d);

#ifdef __cplusplus
}
#endif

#include "desync/future.h"
#include "desync/stream.h"

#endif /* DESYNC_H */
