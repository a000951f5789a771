/**
 * @file
 * libdesync futures: results that may not exist yet, async jobs, promises,
 * and queue suspend/resume. Included by <desync.h>; do not include directly.
 *
 * A future has a status and a void * value. It completes exactly once. The
 * status is 0 or a negative DESYNC_E* code: DESYNC_ECANCELED from
 * desync_promise_cancel, from a freed future_sync future and from an async
 * job whose returned future was cancelled (an async job's future takes the
 * status of the future the job returned); DESYNC_EOF from
 * desync_stream_next_future at the end of its stream; an input's status
 * from desync_future_all; those listed at desync_pipe_in_future; 0
 * otherwise. A desync_after future completes with 0 and its job's return
 * value: the job runs even if the awaited future was cancelled, and
 * receives that future's status (DESYNC_ECANCELED) to act on.
 * Each wait/poll/then that asks for the value gets it;
 * the future does not own the value (free it yourself if it is heap memory).
 *
 * An async job returns a future; the queue it runs on is held until that
 * future completes (no later job of the queue starts before then), without
 * blocking a thread: the queue is parked and resumed on completion. The queue
 * takes ownership of the future an async job returns; returning NULL means
 * "done, with value NULL".
 */
#ifndef DESYNC_FUTURE_H
#define DESYNC_FUTURE_H

#ifndef DESYNC_H
#error "include <desync.h>, not <desync/future.h>"
#endif

#ifdef __cplusplus
extern "C" {
#endif

/** A future: a status and a value that may not exist yet. */
typedef struct desync_future desync_future_t;
/** The writing end of a future (desync_promise_new). */
typedef struct desync_promise desync_promise_t;
/** Resumes a suspended queue (desync_queue_suspend). */
typedef struct desync_resumer desync_resumer_t;

/** A callback that a pending poll arranges to be called (once) when it may
 * succeed. Copied by the poll call; ctx must stay valid until wake runs or a
 * later poll replaces the waker. */
typedef struct desync_waker {
    void (*wake)(void *ctx); /**< called with ctx */
    void *ctx;               /**< passed to wake */
} desync_waker_t;

/** An async job (desync_future_desync): returns a future its queue waits for. */
typedef desync_future_t *(*desync_async_fn)(void *data, void *arg);
/** An async job on a bare queue (desync_queue_future_desync). */
typedef desync_future_t *(*desync_queue_async_fn)(void *arg);
/** A job run once a future completed (desync_after): returns the value. */
typedef void *(*desync_after_fn)(void *data, int status, void *value, void *arg);
/** A job run once a future completed, on a bare queue (desync_queue_after). */
typedef void *(*desync_queue_after_fn)(int status, void *value, void *arg);
/** desync_future_then's callback: the future's status and value, and arg. */
typedef void (*desync_then_fn)(int status, void *value, void *arg);

/* ------------------------------------------------------------ creating */

/**
 * Queues an async job on d; it runs in order in the background even if nobody
 * waits. The returned future completes with the result of the future the job
 * returned (DESYNC_ECANCELED if that future was cancelled). NULL for NULL d
 * or job, or on ENOMEM (nothing queued).
 */
DESYNC_API desync_future_t *desync_future_desync(desync_t *d, desync_async_fn job, void *arg);

/**
 * Queues an async job on d that runs on the thread that waits on or polls the
 * returned future, once the queue reaches it (the queue is held there until
 * then). So its fd (desync_future_fd) becomes readable only once some thread
 * has waited or polled: an event loop polls the future when the fd of the
 * previous step fires, or uses future_desync instead. After then() or
 * detach, or when an async job or desync_after takes the future over, the
 * job runs on the queue like a future_desync job. Freeing the future before
 * the job started cancels it: the queue moves on and the job never runs.
 * NULL for NULL d or job, or on ENOMEM.
 */
DESYNC_API desync_future_t *desync_future_sync(desync_t *d, desync_async_fn job, void *arg);

/**
 * When d's queue reaches this point it waits (holding the queue, blocking no
 * thread) for `after`, then runs job(data, status, value, arg) on the queue;
 * the returned future completes with the job's return value. Takes ownership
 * of `after` (also on failure). NULL for NULL d, after or job, or on ENOMEM.
 */
DESYNC_API desync_future_t *desync_after(desync_t *d, desync_future_t *after, desync_after_fn job,
                                         void *arg);

/** @{ */
/** The same three on a bare queue (jobs receive no data pointer). */
DESYNC_API desync_future_t *desync_queue_future_desync(desync_queue_t *q, desync_queue_async_fn job,
                                                       void *arg);
DESYNC_API desync_future_t *desync_queue_future_sync(desync_queue_t *q, desync_queue_async_fn job,
                                                     void *arg);
DESYNC_API desync_future_t *desync_queue_after(desync_queue_t *q, desync_future_t *after,
                                               desync_queue_after_fn job, void *arg);
/** @} */

/** A future that is already complete with `value`. NULL on ENOMEM. */
DESYNC_API desync_future_t *desync_future_ready(void *value);

/** @{ */
/**
 * Combinators over n futures fs[0..n-1] (the array is read during the call
 * only; the same future may appear twice). Never block.
 *
 * desync_future_all completes once every input has completed: status 0, or
 * the first non-zero status in array order; value NULL.
 * desync_future_any completes once the first input completes (if several
 * are complete already, the lowest index): status 0, value the index as
 * (void *)(uintptr_t)i; read that input's own status and value from fs[i]
 * (complete, so its wait returns at once).
 *
 * Ownership: the inputs are not taken. The caller still waits on, polls or
 * frees each input (a completed input's value can be read after the
 * combined future completed), and may free an input only once the combined
 * future has completed or has been freed. Freeing the combined future
 * early is safe at any time, whatever the inputs are doing; the inputs
 * then go on as if it never existed.
 *
 * Waiting: a wait on the combined future does the waits' work for its
 * inputs: a future_sync input's job runs on the thread that waits on (or
 * polls) the combined future, as if it waited on that input. A wait on an
 * all-future waits on each input in turn, so it also runs the inputs'
 * queues when no thread does and returns DESYNC_EDEADLK (as
 * desync_future_wait) if waiting for an input could never end, and
 * DESYNC_ETIMEDOUT (wait_for) if an input is still pending at the deadline
 * (the combined future stays valid either way). A wait on an any-future
 * also runs its inputs' queues when no thread does (on a scheduler with 0
 * threads it looks again every 0.1 ms), and returns DESYNC_EDEADLK when
 * every pending input is a future of a queue whose job the caller is
 * running; it does not detect cycles across threads (see "Deadlocks" in
 * desync.h). Polls never run queue work other than a due future_sync job.
 * Once the combined future is consumed by then(), detached or taken over
 * (async job, after), nothing runs a future_sync input for it: wait on
 * that input yourself.
 *
 * The combined future is used like any other (wait, poll, then, fd, free;
 * the same concurrency rules) and may itself be an input of a combinator.
 * NULL for NULL fs, n == 0 or a NULL input, or on ENOMEM (nothing changes).
 */
DESYNC_API desync_future_t *desync_future_all(desync_future_t *const fs[], size_t n);
DESYNC_API desync_future_t *desync_future_any(desync_future_t *const fs[], size_t n);
/** @} */

/**
 * A future that completes with status 0 and value NULL once ns nanoseconds
 * have passed: to combine with desync_after (run a job on an object later,
 * holding its queue meanwhile), desync_future_then, or as a sleep that an
 * event loop can poll. Driven by a timer of the default scheduler (see
 * "timers" in desync.h): it completes on one of its threads, or, if that
 * scheduler has 0 threads, at a drain of it or a sync on one of its queues.
 * Freeing the future before then does not stop the timer: its memory (one
 * pooled block) is held until the deadline. Never blocks. NULL on ENOMEM.
 */
DESYNC_API desync_future_t *desync_future_delay(uint64_t ns);

/**
 * A promise and its future (stored in *future). The promise is the writing
 * end: complete or cancel consumes it. NULL for NULL future, or on ENOMEM.
 */
DESYNC_API desync_promise_t *desync_promise_new(desync_future_t **future);

/**
 * Completes the future with value and frees the promise. 0, or DESYNC_EINVAL
 * for NULL or for a promise already consumed (by complete or cancel) whose
 * future is still alive: the future keeps its first result. Once both the
 * promise is consumed and the future freed, the memory is gone and a further
 * complete is undefined (the NOPOOL build under ASan reports it, see
 * <desync.h>). Never blocks; callbacks and wakers of the future run on the
 * calling thread. May race with a complete or cancel of the same promise on
 * another thread: exactly one of them returns 0.
 */
DESYNC_API int desync_promise_complete(desync_promise_t *p, void *value);

/** Completes the future with DESYNC_ECANCELED and frees the promise. 0, or
 * DESYNC_EINVAL as for desync_promise_complete (NULL, or consumed already). */
DESYNC_API int desync_promise_cancel(desync_promise_t *p);

/* ------------------------------------------------------------- reading */

/**
 * Blocks until f is complete; stores its value in *value (value may be NULL)
 * and returns its status (0 or a negative DESYNC_E* code, see above). If f belongs to a queue that
 * no thread is running, the caller runs that queue's work itself (as sync
 * does), so waiting works on a scheduler with 0 threads. DESYNC_EINVAL for
 * NULL f. DESYNC_EDEADLK if f waits for a job queued behind the queue the
 * calling job is running, or if the wait would close a cycle of threads
 * waiting for each other (see "Deadlocks" in desync.h): it could never
 * complete. f is not consumed and its job stays queued.
 * Concurrency: any number of threads may wait, wait_for, poll and call
 * desync_future_fd on the same f at once; each gets the result. None of
 * them may overlap then, detach or free of f (those end the handle).
 */
DESYNC_API int desync_future_wait(desync_future_t *f, void **value);

/** As desync_future_wait, but gives up after timeout_ns: DESYNC_ETIMEDOUT
 * (f stays valid and may be waited on again). Concurrency as for wait. */
DESYNC_API int desync_future_wait_for(desync_future_t *f, uint64_t timeout_ns, void **value);

/**
 * Never blocks (a future_sync job that is due runs inside this call). Returns
 * the status (with *value set) when complete, else
 * DESYNC_EAGAIN after arranging that waker->wake(waker->ctx) is called exactly
 * once when f completes; a later poll replaces the waker (the old one is then
 * never called). waker may be NULL (no call). Once poll or free has returned,
 * no call of a waker it replaced or dropped is still under way, so the
 * waker's ctx may be freed. DESYNC_EINVAL for NULL f.
 * Concurrency: may run at once with wait/wait_for/fd on other threads. Polls
 * of one f on several threads at once are safe, but f keeps one waker: the
 * last poll's, so only one poller is called (poll from one thread at a time
 * if each needs its wake). Must not overlap then, detach or free of f.
 */
DESYNC_API int desync_future_poll(desync_future_t *f, void **value, const desync_waker_t *waker);

/**
 * Consumes f: callback(status, value, arg) runs exactly once when f completes,
 * on the thread that completes it (at once, on this thread, if f is already
 * complete). 0, or DESYNC_EINVAL for NULL f or callback (f is then not
 * consumed). Concurrency: no other call on f may overlap it or follow it (a
 * free or detach that follows while f is still pending is ignored; after
 * completion the memory may be gone).
 */
DESYNC_API int desync_future_then(desync_future_t *f, desync_then_fn callback, void *arg);

/**
 * A file descriptor that becomes readable when f is complete (eventfd on
 * Linux, a pipe elsewhere), to watch f with poll/epoll/libuv. It belongs to f
 * and is closed by desync_future_free; do not read or close it yourself.
 * DESYNC_EINVAL for NULL; DESYNC_ENOMEM or DESYNC_EAGAIN if no descriptor
 * can be made (out of memory, or of file descriptors).
 * Concurrency as for desync_future_wait.
 */
DESYNC_API int desync_future_fd(desync_future_t *f);

/** Drops the handle and lets f finish on its own; the job still runs.
 * Handle rules as for desync_future_free. */
DESYNC_API void desync_future_detach(desync_future_t *f);

/**
 * Drops the handle. A future_sync job that has not started is cancelled;
 * other jobs still run. Any fd of f is closed (a poll(2) that still watches
 * it then reports POLLNVAL, or, if the number was reused, another file:
 * stop watching the fd first). Ignores NULL.
 * The handle ends here: no other call on f may overlap this one or follow
 * it. A second free or detach (or one after then) is ignored while the
 * producer still holds f (a pending promise or job); once f is complete and
 * freed the memory is gone and any use is undefined. (Futures come from an
 * internal pool that keeps the memory live and hands it out again, so ASan
 * and valgrind see such a use only in the NOPOOL build, see <desync.h>.)
 */
DESYNC_API void desync_future_free(desync_future_t *f);

/* -------------------------------------------------------- suspend/resume */

/**
 * Once the jobs queued on q before this call have run, q stops running jobs
 * and the returned future completes with a desync_resumer_t * as its value.
 * Jobs queued meanwhile wait. The resumer keeps q alive until resumed.
 * NULL for NULL q or on ENOMEM.
 */
DESYNC_API desync_future_t *desync_queue_suspend(desync_queue_t *q);

/** Lets the suspended queue run again and frees the resumer. Call exactly once.
 * Ignores NULL. */
DESYNC_API void desync_resumer_resume(desync_resumer_t *r);

#ifdef __cplusplus
}
#endif

#endif /* DESYNC_FUTURE_H */
