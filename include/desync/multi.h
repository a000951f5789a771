/**
 * @file
 * libdesync jobs over several objects: one job that has several objects to
 * itself at once (a transfer between two accounts), without locks and
 * without a lock order chosen by the caller. Included by <desync.h>; do not
 * include directly.
 *
 * A multi-object job takes one place in the queue of each object it names,
 * fixed when the call has queued it: every job queued on one of the objects
 * before the call runs before it, every job queued after runs after it. Two
 * multi-object jobs that share objects are in the same order on every object
 * they share, so any number of threads may call these with any sets of
 * objects, in any order, and they never deadlock each other (no lock order
 * to respect; the same object may even be named twice).
 *
 * On a scheduler with no threads (desync_scheduler_new(0)), a multi-object
 * job runs on a thread that syncs or waits on one of its objects: when the
 * job reaches object A and waits for its turn on object B, that thread runs
 * B's jobs ahead of it if B waits for a runner; if B is busy elsewhere then
 * (a sync on another thread, a job parked on a future, a suspended queue),
 * B waits for a runner once it is given up, and a thread waiting on any
 * queue of that scheduler from outside a job runs it (see
 * desync_scheduler_new). A thread that waits from inside a job does not:
 * there, give B a thread or sync on B.
 */
#ifndef DESYNC_MULTI_H
#define DESYNC_MULTI_H

#ifndef DESYNC_H
#error "include <desync.h>, not <desync/multi.h>"
#endif

#ifdef __cplusplus
extern "C" {
#endif

/** A job over several objects: datas[i] is the data of the call's objs[i]
 * (the array is the library's, valid while the job runs). */
typedef void (*desync_all_fn)(void *const datas[], void *arg);

/**
 * Runs job(datas, arg) with the n objects of objs to itself, and blocks until
 * it has run; then returns 0. While the job runs, every job queued on any of
 * the objects before the call has run, and none queued after the call
 * returned has started. The same object may appear more than once (each
 * position gets its data). When every object is idle, the job runs on the
 * calling thread at once, like desync_sync on an idle object. Otherwise the
 * job runs on the thread that brings the last of the objects to it: the
 * caller itself when no other thread runs those objects (it then runs their
 * pending jobs, up to this one), or a scheduler thread while the caller
 * sleeps. Jobs of the other objects keep running meanwhile.
 *
 * Ownership: the caller owns a reference to every object for the whole call;
 * `objs` is only read during the call and `arg` is passed as it is (both may
 * live on the caller's stack). From the job, desync_desync on the objects
 * queues after it; a sync on one of them is refused (DESYNC_EDEADLK). Up to
 * 8 distinct objects need no allocation.
 *
 * Errors (the job does not run): DESYNC_EINVAL for NULL objs or job, n == 0
 * or a NULL object; DESYNC_ENOMEM (more than 8 objects and no memory);
 * DESYNC_EDEADLK when called from a job of one of the objects (directly or
 * through a chain of nested syncs), or when the wait would close a cycle of
 * threads waiting for each other (see "Deadlocks" in <desync.h>; with more
 * than 8 distinct objects, only the first 8 by address take part in that
 * check). Not detected: a job of object B that syncs on object A while a
 * multi-object job over A and B is queued on A ahead of that sync and on B
 * behind that job (each waits for the other; with one mutex per object
 * taken in address order the same program deadlocks). DESYNC_EFORKED in the
 * child of a fork when one of the objects was forked off.
 */
DESYNC_API int desync_sync_all(desync_t *const objs[], size_t n, desync_all_fn job, void *arg);

/**
 * Queues job(datas, arg) over the n objects of objs and returns at once: its
 * place in every object's queue is fixed when this returns, as for
 * desync_sync_all (jobs queued on any of the objects before the call run
 * before it, jobs queued after run after it). The job runs on a scheduler
 * thread (or a thread that syncs on one of the objects) once each object has
 * run the jobs queued before it; until then the objects whose turn has come
 * wait for it (their later jobs do not start). `objs` is copied (it need not
 * outlive the call); `arg` is passed as it is and must stay valid until the
 * job has run. The caller owns a reference to every object for the call;
 * releasing them afterwards is fine (destruction runs after the job). Never
 * blocks (it may spin for a few instructions while another multi-object call
 * queues its parts). May be called from a job of one of the objects (the job
 * then runs after the current one).
 *
 * Errors (nothing queued): DESYNC_EINVAL for NULL objs or job, n == 0 or a
 * NULL object; DESYNC_ENOMEM; DESYNC_EFORKED in the child of a fork when one
 * of the objects was forked off. In a fork child, a job queued before the
 * fork on an object that was forked off never runs, and the other objects of
 * that job stop at it.
 */
DESYNC_API int desync_desync_all(desync_t *const objs[], size_t n, desync_all_fn job, void *arg);

#ifdef __cplusplus
}
#endif

#endif /* DESYNC_MULTI_H */
