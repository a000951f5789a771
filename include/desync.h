/**
 * @file
 * libdesync: protect data by scheduling operations in order instead of locking.
 *
 * A desync_t owns a pointer to user data and a serial job queue. Jobs queued on
 * one object run one at a time, in exactly the order their calls returned, so
 * the data needs no lock. desync_desync() queues a job and returns at once
 * (unless the object has a limit on pending jobs and is full);
 * desync_sync() queues a job and waits for it (on an idle object it simply runs
 * the job on the calling thread).
 *
 * Conventions used by every function in this library:
 *  - Calls that can fail return int: 0, or a negative DESYNC_E* code.
 *  - Calls that return a pointer return NULL on failure (bad input or memory).
 *  - "Blocks" means the call may put the calling thread to sleep; every other
 *    call returns without waiting for other threads (it may spin for a few
 *    instructions on a structure another thread is in the middle of updating).
 *  - Every call may be made from any thread, concurrently with any other call
 *    on the same handle, unless its comment says otherwise.
 *  - A call needs a handle its caller owns (a reference, an open channel
 *    handle, a future not yet freed) for the whole call: a retain racing with
 *    the last release of the same handle uses freed memory. Using a handle
 *    after its last release, free or close is undefined; some such misuses
 *    are checked while the state is still alive (said per call). To find the
 *    others, build the library with -DDESYNC_NOPOOL (`make NOPOOL=1`): its
 *    internal pools are bypassed and freed handles poisoned, so ASan
 *    (`make test SAN=address,undefined NOPOOL=1`) and valgrind report the
 *    first use of a freed future, promise, object, stream or channel.
 *
 * Blocking inside a job holds the thread that runs it. Background jobs run
 * on the scheduler's pool (the default one has max(8, 2 x cores) threads), so
 * jobs that sleep, wait on a lock, a future or a sync of a busy object take
 * those threads away from every other object: with 40 such jobs queued on the
 * default scheduler's 8 threads, the job that would release them waited about
 * 5 s for a thread. Prefer what parks a queue instead of a thread: return a
 * future from an async job (desync_future_desync), or chain work with
 * desync_after / desync_future_then. A sync or wait from inside a job on an
 * object that (transitively) waits for the calling job's object is refused
 * with DESYNC_EDEADLK where the chain is known (see desync_queue_sync).
 *
 * Deadlocks: a call that would block until a queue has run a job (a sync on a
 * busy queue, a wait on a future of a queue, a desync on a full queue with a
 * limit) returns DESYNC_EDEADLK instead, without queueing anything, when the
 * wait could never end because of other waits: the calling job's own queue
 * (directly, or through a chain of nested syncs, also across the threads
 * those syncs run on; a desync returns DESYNC_EAGAIN there), or a cycle of threads
 * each inside a job of one queue and blocked until the next queue runs (A's
 * job syncs B while B's running job waits for A's future; cycles of any
 * length). desync_scheduler_drain counts as a wait for each busy worker of
 * its scheduler, and a wait on a desync_future_all future as a wait on each
 * input. The check runs only when the caller is about to block; of the
 * waits that close a cycle, at least one is refused, and a wait is never
 * refused without a cycle. Not detected: a wait for a promise that only a
 * later job of a held queue would complete; a cycle through a wait on a
 * desync_future_any future; a sync on a queue that the
 * caller itself suspended (its resume never comes); cycles through more than
 * 1,024 threads blocked at once, or through jobs nested more than 16 deep.
 *
 * Memory: job nodes, futures and their queue nodes come from per-thread pools
 * that keep freed blocks for reuse (no malloc per job in a steady state); a
 * thread that queues many jobs takes their nodes from 64 KiB segments mapped
 * from the OS, of which up to 256 free ones (16 MiB) are kept for reuse. The
 * pools keep that memory after the objects are gone; desync_shutdown() gives
 * it back, and a thread's own cache goes back when the thread exits.
 *
 * The end of a program: returning from main (or exit()) does not wait for
 * background jobs, and jobs still queued are lost with the process. Register
 * desync_shutdown with atexit(), or call desync_scheduler_drain(), to run
 * them first.
 *
 * Topic headers: <desync/future.h> (futures, promises, suspend/resume),
 * <desync/stream.h> (streams, channels, pipes) and <desync/multi.h> (jobs
 * over several objects) are included below, and
 * <desync/version.h> (DESYNC_VERSION_* macros) above.
 */
#ifndef DESYNC_H
#define DESYNC_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "desync/version.h"

#ifdef __cplusplus
extern "C" {
#endif

/** Marks the library's public functions: default visibility in a shared build,
 * nothing with DESYNC_STATIC or a compiler without visibility attributes. */
#if defined(__GNUC__) && !defined(DESYNC_STATIC)
#define DESYNC_API __attribute__((visibility("default")))
#else
#define DESYNC_API
#endif

/* ---------------------------------------------------------------- errors */

#define DESYNC_EINVAL (-1) /**< a NULL handle or job, or an argument out of range */
/** out of memory; nothing was queued (from a pipe's output: the pipe stopped for lack
 * of memory) */
#define DESYNC_ENOMEM (-2)
#define DESYNC_EBUSY (-3)     /**< try_sync: the queue was not idle and empty */
#define DESYNC_EDEADLK (-4)   /**< the wait would never end: see "Deadlocks" below */
#define DESYNC_ECANCELED (-5) /**< the job or future was cancelled and will never run */
#define DESYNC_ETIMEDOUT (-6) /**< a timed wait ran out */
#define DESYNC_EAGAIN (-7)    /**< not ready yet: try again later (poll / try_* calls) */
#define DESYNC_EOF (-8)       /**< a stream has ended */
#define DESYNC_EPIPE (-9)     /**< the other end of a channel or pipe is gone */
#define DESYNC_EFORKED (-10)  /**< in a fork() child: the object was forked off (see "fork") */

/** A static, human-readable description of an error code (never NULL). */
DESYNC_API const char *desync_strerror(int err);

/* ------------------------------------------------------------- version */

/** The version of the library the program runs with, as DESYNC_VERSION_NUMBER
 * encodes it (MAJOR * 10000 + MINOR * 100 + PATCH; see <desync/version.h>).
 * It can differ from the DESYNC_VERSION_* macros the program was compiled
 * with when a newer release of the same soname is installed. Never fails,
 * never blocks. */
DESYNC_API int desync_version(void);

/** The same version as a static string "MAJOR.MINOR.PATCH" (never NULL; do
 * not free). Never fails, never blocks. */
DESYNC_API const char *desync_version_string(void);

/* ------------------------------------------------------------- handles */

/** A scheduler: a pool of threads that runs queues (desync_scheduler_new). */
typedef struct desync_scheduler desync_scheduler_t;
/** A serial job queue (desync_queue_new). */
typedef struct desync_queue desync_queue_t;
/** A Desync object: user data and its queue (desync_new). */
typedef struct desync_object desync_t;

/** @{ */
/** Job signatures. `data` is the object's data pointer; `arg` is the caller's. */
typedef void (*desync_job_fn)(void *data, void *arg);
typedef void (*desync_queue_job_fn)(void *arg);
/** @} */
/** Frees an object's data after its last job (desync_new). */
typedef void (*desync_destroy_fn)(void *data);

/* ----------------------------------------------------------- scheduler */

/**
 * @file
 * @par Scheduler threads
 * Threads are started on demand. When the system refuses one (or there is
 * no memory for it), nothing fails and no job is lost: the work waits for
 * the threads that exist, and the scheduler tries again to start one each
 * time a job is queued on a queue that waits for a thread, and whenever
 * another queue becomes ready. If no thread exists and none can be started,
 * jobs do not run in the background; they run when a thread syncs on their
 * queue, waits on a future of it, or drops the object's last reference
 * (desync_release), since these run pending work on the calling thread, as
 * on a scheduler with max_threads 0. */

/**
 * The default scheduler, created on first use (thread-safe; it needs no
 * allocation, so never NULL). It starts up to max(8, 2 x cores) threads on
 * demand; idle threads spin briefly, then sleep, and exit after a few seconds
 * without work. It is never freed; desync_shutdown stops its threads.
 */
DESYNC_API desync_scheduler_t *desync_scheduler_default(void);

/**
 * A new scheduler that runs queues on at most `max_threads` threads, started
 * on demand. max_threads 0 runs nothing in the background: queued jobs run
 * when some thread syncs or waits on their queue, reads a pipe output fed by
 * it, or drains or frees the scheduler. A thread that waits on one of its
 * queues from outside any job also runs the scheduler's other ready queues
 * meanwhile, so that work the awaited job depends on (a multi-object job's
 * turn on another object) is not left to nobody. NULL on ENOMEM.
 */
DESYNC_API desync_scheduler_t *desync_scheduler_new(size_t max_threads);

/**
 * Drains `s` (see desync_scheduler_drain), then stops and joins its threads.
 * Queues that still exist stay usable, as on a scheduler with max_threads 0:
 * their later jobs run on the threads that sync or wait on them, and a
 * desync_queue_release runs the jobs still queued on its queue. The memory is
 * released with the last queue. Needs no allocation. Ignored when called
 * from one of the scheduler's own jobs (on any thread: also a job that a sync
 * runs on the caller): freeing from there could never finish. Ignores NULL
 * and the default scheduler.
 */
DESYNC_API void desync_scheduler_free(desync_scheduler_t *s);

/**
 * Blocks until no job of `s` (NULL = the default scheduler) is runnable or
 * running on its threads, including jobs that jobs queue meanwhile; ready
 * work that no thread runs is run on the calling thread, so this also
 * completes with 0 threads. Not waited for: queues that are suspended, or
 * held by an async job or `after` whose future nobody completes (they are not
 * runnable), and a job that a sync on another thread is running at that
 * moment. Producers that never stop mean it never returns. Timers of s that
 * are due are fired (their jobs run); later deadlines are not waited for.
 * Polls every 0.1 ms while threads finish their jobs. 0, or DESYNC_EDEADLK
 * when called from one of s's jobs (on any thread), or when the wait would
 * close a cycle of threads waiting for each other (see "Deadlocks"): a
 * worker of s blocked, directly or through other blocked threads, on a
 * queue whose job the caller is running (a job of A drains s while s's job
 * syncs on A). The cycle is refused on whichever side closes it: the drain,
 * or the wait of the worker that blocks last (its sync or wait then returns
 * EDEADLK); when both begin to wait at the same moment, both may be.
 */
DESYNC_API int desync_scheduler_drain(desync_scheduler_t *s);

/**
 * For the end of a program (register it with atexit): drains the default
 * scheduler, stops and joins its threads, and gives the memory the pools keep
 * (job nodes, futures) back to malloc, so leak checkers see nothing left.
 * The library stays usable afterwards: threads start again on demand. Called
 * from one of the default scheduler's jobs (exit() on a worker thread, say)
 * it does not wait or join: it runs the work that is ready and returns.
 * Private schedulers are not touched: drain or free them yourself. Pending
 * timers are not cancelled (cancel them first: each holds its object).
 */
DESYNC_API void desync_shutdown(void);

/**
 * Sets the thread limit. Raising it lets new threads start for waiting work;
 * lowering it does not stop running threads (see despawn below).
 */
DESYNC_API void desync_scheduler_set_max_threads(desync_scheduler_t *s, size_t n);
/** The thread limit (desync_scheduler_set_max_threads). */
DESYNC_API size_t desync_scheduler_max_threads(desync_scheduler_t *s);

/** Threads currently alive (busy, spinning or sleeping). */
DESYNC_API size_t desync_scheduler_thread_count(desync_scheduler_t *s);

/**
 * Starts one more thread now, even above the maximum. DESYNC_EINVAL for NULL,
 * DESYNC_EAGAIN if the system refused the thread, DESYNC_ENOMEM.
 */
DESYNC_API int desync_scheduler_spawn_thread(desync_scheduler_t *s);

/**
 * Blocks until the number of threads is at most the maximum: surplus threads
 * finish the queue they are running (putting it back for the others), then
 * exit and are joined before this returns. Called from a job on one of the
 * scheduler's threads, that thread is not counted as stoppable. Needs no
 * memory.
 */
DESYNC_API void desync_scheduler_despawn_threads_if_overloaded(desync_scheduler_t *s);

/** Counters of a scheduler (desync_scheduler_stats). */
typedef struct desync_scheduler_stats {
    size_t threads;          /**< threads alive now */
    size_t threads_peak;     /**< the most alive at once so far */
    size_t max_threads;      /**< the limit */
    size_t ready;            /**< queues waiting on the run list for a thread */
    uint64_t queues_run;     /**< turns of a queue taken by its threads (a turn
                                runs up to 256 jobs) */
    uint64_t wakeups;        /**< times a sleeping thread was woken for work */
    uint64_t spawn_failures; /**< thread starts the system refused */
} desync_scheduler_stats_t;

/**
 * Fills *out with s's counters (NULL s = the default scheduler). Each worker
 * keeps its own counts, added up here, so the figures are a snapshot that
 * may be a little behind a busy scheduler. Never blocks (takes the
 * scheduler's lock for a moment). 0, or DESYNC_EINVAL for a NULL out.
 */
DESYNC_API int desync_scheduler_stats(desync_scheduler_t *s, desync_scheduler_stats_t *out);

/**
 * Writes a human-readable snapshot of s (NULL = the default scheduler) to f
 * (NULL = stderr), for debugging a stalled program: the counters above, each
 * thread (named desync-N, as debuggers and `top -H` show it, on systems
 * that name threads) and the queue it runs, the queues waiting for a
 * thread, and every queue of s with a label or a limit (desync_set_label,
 * desync_set_max_pending) with its state (suspended ones included) and
 * counts. Other queues appear only by address, where a thread runs them or
 * they wait. A snapshot taken while the threads go on: approximate. Never
 * blocks on the queues (writing to f may block).
 */
DESYNC_API void desync_scheduler_dump(desync_scheduler_t *s, FILE *f);

/* ------------------------------------------------------------------ fork */

/**
 * @file
 * @par fork()
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

/**
 * A serial job queue on `scheduler` (NULL = the default scheduler), with one
 * reference owned by the caller. NULL on ENOMEM. The scheduler sets aside
 * room for the queue's turn on its run list now, so queueing jobs later
 * never needs memory beyond the job itself.
 */
DESYNC_API desync_queue_t *desync_queue_new(desync_scheduler_t *scheduler);

/** Adds a reference; returns q (NULL for NULL). The caller must own a
 * reference for the whole call (not race with the last release). */
DESYNC_API desync_queue_t *desync_queue_retain(desync_queue_t *q);

/**
 * Drops a reference. Jobs already queued still run (nothing is lost): on a
 * scheduler with threads in the background; on one with 0 threads when it is
 * drained or freed; on a freed scheduler this call runs them on the calling
 * thread. The memory goes when the last reference is gone and the queue is
 * idle. Does not block otherwise. Ignores NULL.
 */
DESYNC_API void desync_queue_release(desync_queue_t *q);

/**
 * Queues job(arg) to run after every job queued before it; returns at once,
 * never running the job itself (even when memory or threads run out: see
 * the scheduler section). `arg` is passed as it is: what it points to must
 * stay valid until the job has run (the job may free it); use
 * desync_queue_desync_copy for data on the caller's stack. Never blocks
 * (from a job, it never waits for that job), except on a queue with a limit
 * (desync_queue_set_max_pending) that is full: see there. When the queue is more than
 * 4,096 jobs behind, one call in 64 yields the CPU (sched_yield) so that
 * the queue's thread can catch up: with more busy producer threads than
 * cores it would otherwise get no more CPU than any one of them, and the
 * backlog's memory would grow. DESYNC_EINVAL (NULL q or job), DESYNC_ENOMEM
 * (no memory for the job; nothing queued); on a full queue with a limit,
 * DESYNC_EAGAIN, DESYNC_EDEADLK or DESYNC_EFORKED as said there.
 */
DESYNC_API int desync_queue_desync(desync_queue_t *q, desync_queue_job_fn job, void *arg);

/**
 * As desync_queue_desync, but the `len` bytes at `arg` are copied into the job
 * and the job receives a pointer to the copy (valid while it runs, aligned for
 * any type). Up to 96 bytes need no allocation beyond the job itself (a
 * pooled node); a larger copy is allocated (DESYNC_ENOMEM if it cannot be;
 * nothing queued).
 * DESYNC_EINVAL also for arg == NULL with len > 0.
 */
DESYNC_API int desync_queue_desync_copy(desync_queue_t *q, desync_queue_job_fn job, const void *arg,
                                        size_t len);

/**
 * Queues job(arg) and blocks until it has run; then returns 0. On an idle
 * queue the job runs on the calling thread at once. If the queue has pending
 * jobs that no thread is running, the caller runs them itself, up to and
 * including its own job; if a thread is running the queue, the caller spins
 * briefly and then sleeps until the queue is free and takes it then, as a
 * mutex waiter would: the thread that is using the queue keeps it, rather
 * than every sync being handed between threads in turn. After about a
 * millisecond of that (DSY_SYNC_BARGE_NS) it queues its job behind the
 * pending ones and sleeps until it has run, so no sync waits for its turn
 * for ever. Every job queued before the call (happens-before) runs before
 * this one. `arg` may live on the caller's stack. Needs no heap allocation.
 * DESYNC_EINVAL (NULL q or job); DESYNC_EDEADLK when called from a job of q,
 * directly or through a chain of nested syncs, or when the wait would close a
 * cycle of threads waiting for each other (see "Deadlocks" above; the job is
 * then not queued).
 */
DESYNC_API int desync_queue_sync(desync_queue_t *q, desync_queue_job_fn job, void *arg);

/**
 * Runs job(arg) on the calling thread only if q is idle and empty, else
 * returns DESYNC_EBUSY without running it (DESYNC_EDEADLK from q's own jobs,
 * DESYNC_EINVAL for NULL). Never blocks.
 */
DESYNC_API int desync_queue_try_sync(desync_queue_t *q, desync_queue_job_fn job, void *arg);

/**
 * Bounded queues. Sets the most desync jobs that may be pending on q (queued
 * by desync, desync_copy or try_desync and not yet run); 0, the default,
 * means no limit. Only those calls count and only they can be refused or
 * held back: syncs, futures, `after`, pipes and destruction are never. With
 * the limit reached, desync and desync_copy (and the desync_t forms) BLOCK
 * until a job has run and made room: the producer parks, and is woken once
 * the queue is down to half its limit; meanwhile, if no thread runs the
 * queue (a scheduler with 0 threads, or none left), it runs the queue on the
 * calling thread, as a sync does. They do not block, and return
 * DESYNC_EAGAIN with nothing queued, on a full queue when called:
 *   - from a job of q itself (on any thread, also through nested syncs):
 *     waiting there would never end;
 *   - from a job running on a scheduler's thread (any scheduler): a pool
 *     thread is never held by a full queue; retry later, or use a future;
 * and return DESYNC_EDEADLK, nothing queued, when the wait would close a
 * cycle of threads waiting for each other (see "Deadlocks"), DESYNC_EFORKED
 * if q is forked off meanwhile. Lowering the limit below the jobs pending
 * drops none: producers wait until the queue is below it; raising it or
 * setting 0 lets blocked producers go on. The limit lives in the queue's
 * cold part, allocated on first use: 0 or DESYNC_ENOMEM (limit unchanged),
 * DESYNC_EINVAL for NULL. Never blocks. Without limits a desync pays
 * nothing for them; once any queue of the process has had one, every desync
 * (on any queue) takes a slightly longer path that reads its queue's limit
 * (about 13% more instructions per desync, memory allocation included).
 */
DESYNC_API int desync_queue_set_max_pending(desync_queue_t *q, size_t n);

/**
 * As desync_queue_desync, but returns DESYNC_EAGAIN (nothing queued) instead
 * of blocking when q has a limit and is full. Never blocks. Without a limit
 * it is desync_queue_desync. DESYNC_EINVAL, DESYNC_ENOMEM, DESYNC_EFORKED as
 * there.
 */
DESYNC_API int desync_queue_try_desync(desync_queue_t *q, desync_queue_job_fn job, void *arg);

/* A queue's state (desync_queue_stats). */
#define DESYNC_QUEUE_IDLE 0    /**< nothing pending or running */
#define DESYNC_QUEUE_RUNNING 1 /**< work pending: a thread runs it, or it waits for one */
/** stopped by desync_queue_suspend until resumed, or held by a future: an async job's or
 * `after`'s node waiting for its future, a future_sync job waiting for a thread that
 * waits on its future */
#define DESYNC_QUEUE_SUSPENDED 2

/** A queue's counts and state (desync_queue_stats). */
typedef struct desync_queue_stats {
    uint64_t pending;   /**< jobs queued and not finished (syncs, future jobs too) */
    uint64_t run;       /**< queued jobs finished so far, modulo 2^32 */
    int state;          /**< DESYNC_QUEUE_* */
    size_t max_pending; /**< the limit (desync_queue_set_max_pending), 0 none */
    size_t blocked;     /**< producers blocked on the limit now */
} desync_queue_stats_t;

/**
 * Fills *out with q's counts and state. Approximate while other threads use
 * q: the counts are read one after the other, without stopping anyone, and
 * the runner adds finished jobs in batches (of up to 64, and at the end of
 * each turn), so `pending` may be a little high and `run` a little behind
 * while q runs; both are exact when q is idle. A sync that ran at once on an
 * idle queue (the calling thread's fast path) is counted in neither. A
 * queue held by a future reads SUSPENDED until its node runs again (after
 * the future completed, it may read SUSPENDED while it waits for a thread).
 * Never blocks. 0, or DESYNC_EINVAL for NULL.
 */
DESYNC_API int desync_queue_stats(desync_queue_t *q, desync_queue_stats_t *out);

/**
 * Names q for desync_scheduler_dump: `name` is copied (NULL clears it). The
 * label is kept in q's cold part (allocated on first use, freed with q).
 * Never blocks. 0, DESYNC_ENOMEM (label unchanged), DESYNC_EINVAL for NULL q.
 */
DESYNC_API int desync_queue_set_label(desync_queue_t *q, const char *name);

/* ------------------------------------------------------ desync objects */

/** @{ */
/**
 * A Desync object owning `data`, on the default scheduler (or `scheduler`),
 * with one reference owned by the caller. `destroy` (may be NULL) is called
 * with `data` once, after the last job. NULL on ENOMEM (destroy not
 * called).
 */
DESYNC_API desync_t *desync_new(void *data, desync_destroy_fn destroy);
DESYNC_API desync_t *desync_new_on(desync_scheduler_t *scheduler, void *data,
                                   desync_destroy_fn destroy);
/** @} */

/** @{ */
/**
 * A Desync object owning its own copy of the `size` bytes at `init` (zeros if
 * `init` is NULL), on the default scheduler (or `scheduler`), with one
 * reference owned by the caller. Jobs receive a pointer to that copy,
 * aligned for any type; it lives in the object's own allocation (one
 * allocation instead of two; data of up to 32 bytes shares a cache line with
 * the object's queue, so a sync on an idle object touches one line).
 * `destroy` (may be NULL) is called with the copy once, after the last job,
 * to release what the data owns; it must not free the copy itself, which goes
 * with the object. Does not block. NULL on ENOMEM (also when size is too
 * large); destroy is then not called.
 */
DESYNC_API desync_t *desync_new_copy(const void *init, size_t size, desync_destroy_fn destroy);
DESYNC_API desync_t *desync_new_copy_on(desync_scheduler_t *scheduler, const void *init,
                                        size_t size, desync_destroy_fn destroy);
/** @} */

/** Adds a reference; returns d (NULL for NULL). The caller must own a
 * reference for the whole call (not race with the last release). */
DESYNC_API desync_t *desync_retain(desync_t *d);

/**
 * Drops a reference. The last one blocks until every job queued so far has
 * run, then calls destroy(data) in queue order and frees the object (memory
 * shared with its queue is kept while desync_get_queue() references remain).
 * Called from one of the object's own jobs it does not block: destruction
 * then happens after that job, still in queue order. Needs no memory (the
 * destruction job is part of the object), so it cannot fail. Ignores NULL.
 */
DESYNC_API void desync_release(desync_t *d);

/** @{ */
/** The same calls as for queues, with the same errors; jobs also receive the
 * object's data. desync and desync_copy return at once unless d has a limit
 * on pending jobs (desync_set_max_pending) and is full. */
DESYNC_API int desync_desync(desync_t *d, desync_job_fn job, void *arg);
DESYNC_API int desync_desync_copy(desync_t *d, desync_job_fn job, const void *arg, size_t len);
DESYNC_API int desync_sync(desync_t *d, desync_job_fn job, void *arg);
DESYNC_API int desync_try_sync(desync_t *d, desync_job_fn job, void *arg);
DESYNC_API int desync_try_desync(desync_t *d, desync_job_fn job, void *arg);
/** @} */
/** desync_queue_set_max_pending on the object's queue: desync, desync_copy
 * and try_desync on d then block (or fail with DESYNC_EAGAIN) as said
 * there while d is full. */
DESYNC_API int desync_set_max_pending(desync_t *d, size_t n);
/** desync_queue_set_label on the object's queue. */
DESYNC_API int desync_set_label(desync_t *d, const char *name);

/**
 * The object's queue, borrowed (valid while the object is; retain it to keep
 * it longer). Jobs queued on it run in order with the object's jobs but do
 * not receive the data pointer. NULL for NULL.
 */
DESYNC_API desync_queue_t *desync_get_queue(desync_t *d);

/** The data pointer given to desync_new (NULL for NULL). Touch it only from
 * the object's own jobs. */
DESYNC_API void *desync_data(desync_t *d);

/* --------------------------------------------------------------- timers */

/**
 * @file
 * @par Timers
 * A timer queues a job on an object (or queue) after a delay, then, if it
 * has a period, again every period. Timers are driven by the threads of the
 * object's scheduler (no thread per timer: the pending timers of a
 * scheduler are kept in one heap, about 170 bytes each (bench TL: a 128-byte
 * pooled timer, its heap entry and the heap's spare room), and one idle
 * worker sleeps until the earliest deadline). A due timer's job goes to the
 * end of the queue when it fires: its position is the time it fires, not
 * the time it was started. Timers due at the same time fire in the order they were
 * started (and so run in that order on one object).
 *
 * Fixed rate: a periodic timer is due at start + delay + k x period. Periods
 * missed (the threads were busy, the job was slow) are coalesced: at most
 * one run of a timer waits in its queue at a time; a fire while the previous
 * run is still waiting is dropped, and a fire while it is running queues one
 * more run when it returns. Lateness: bench TL (bench/README.md) measures
 * it with 100,000 pending timers, as a median and a 99th percentile beside
 * a thread sleeping to the same deadlines; the README's Performance table
 * gives the figures. When every thread of the scheduler is busy, a due timer
 * waits for one of them to look for work.
 *
 * On a scheduler with 0 threads (or one that was freed), timers fire only
 * when a thread looks: desync_scheduler_drain fires those that are due (it
 * does not wait for later deadlines), and so does a sync on any of its
 * queues, before queueing its own job (so a due timer's job runs first).
 * desync_scheduler_free and desync_shutdown do not cancel pending timers:
 * cancel them first (a timer keeps its object, and so the scheduler,
 * alive). In a fork() child, timers pending at fork stay pending and fire
 * there as well (like queued jobs), once the child's threads start: at its
 * first call that queues work, blocks, or starts a timer. A timer that
 * another thread was firing at the instant of fork may miss that fire in
 * the child.
 */
/** A timer (desync_timer_start), owned by its starter until desync_timer_cancel. */
typedef struct desync_timer desync_timer_t;

/**
 * Starts a timer that queues job(data, arg) on d after delay_ns, then every
 * period_ns if period_ns is not 0 (0 = a one-shot timer); see above for the
 * rules. Never blocks, never runs the job itself. The timer keeps d alive
 * (holds a reference) until it is cancelled or, for a one-shot timer, until
 * its job has run. `arg` must stay valid until the timer is cancelled and
 * any run in progress has returned (see desync_timer_cancel). Returns the
 * handle, which the caller owns and must give to desync_timer_cancel exactly
 * once, also after a one-shot timer has fired (that frees it). NULL for NULL
 * d or job, on ENOMEM, and in a fork child for a forked-off object; nothing
 * is started then. (Like every call returning a pointer, NULL does not say
 * which: with valid arguments it means out of memory.)
 */
DESYNC_API desync_timer_t *desync_timer_start(desync_t *d, uint64_t delay_ns, uint64_t period_ns,
                                              desync_job_fn job, void *arg);

/** The same on a bare queue: job(arg) is queued on q, and the timer holds a
 * reference to q until it is cancelled. */
DESYNC_API desync_timer_t *desync_queue_timer_start(desync_queue_t *q, uint64_t delay_ns,
                                                    uint64_t period_ns, desync_queue_job_fn job,
                                                    void *arg);

/**
 * Stops the timer and frees the handle. After it returns, the job is never
 * started again: a run already waiting in the queue is skipped (it does
 * nothing). A run that had already started may still be running, on another
 * thread, when this returns (it is not waited for); to wait for it, sync on
 * the object afterwards (desync_sync with a job that does nothing, not from
 * the object's own jobs). Never blocks; may be called from any thread,
 * including from the timer's own job (that run completes; no other starts).
 * Drops the timer's reference to the object (if it still holds it) without
 * waiting: if it was the last, the object's destruction is queued and runs
 * in the background, after the jobs queued before it. Must be called exactly
 * once per handle (a second call, or a call racing with another, is a use
 * after free). Ignores NULL.
 */
DESYNC_API void desync_timer_cancel(desync_timer_t *t);

#ifdef __cplusplus
}
#endif

#include "desync/future.h"
#include "desync/stream.h"
#include "desync/multi.h"

#endif /* DESYNC_H */
