/*
 * Internal interfaces shared by the library's source files. Nothing here is
 * exported: every non-static symbol has the dsy_ prefix and hidden visibility
 * (the library is built with -fvisibility=hidden).
 *
 * Map of the sources:
 *   os.c        futex-style parking, clocks, CPU count (the only OS-specific file)
 *   jobpool.c   per-thread magazines of job nodes (no malloc per desync)
 *   queue.c     the serial queue: job list, run token, sync and the waiting path
 *   scheduler.c the thread pool that runs ready queues
 *   object.c    desync_t: data + queue, reference counting, destruction
 *   future.c    futures, promises, async jobs, suspend/resume
 *   stream.c, channel.c, pipe.c   streams
 */
#ifndef DSY_INTERNAL_H
#define DSY_INTERNAL_H

#include "desync.h"

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#if defined(__GNUC__)
#define DSY_LIKELY(x) __builtin_expect(!!(x), 1)
#define DSY_UNLIKELY(x) __builtin_expect(!!(x), 0)
#else
#define DSY_LIKELY(x) (x)
#define DSY_UNLIKELY(x) (x)
#endif

/* Thread-locals use the initial-exec model: one instruction to reach them,
 * instead of a __tls_get_addr call in the shared library. */
#if defined(__GNUC__)
#define DSY_TLS _Thread_local __attribute__((tls_model("initial-exec")))
#else
#define DSY_TLS _Thread_local
#endif

#define DSY_CONTAINER_OF(ptr, type, member) ((type *)(void *)((char *)(ptr)-offsetof(type, member)))

/* ------------------------------------------------------------------ os.c */

/* Sleeps while *word == expected (or until woken / timeout_ns passes; 0 = no
 * timeout). Spurious returns are allowed: callers re-check their condition. */
void dsy_park(_Atomic uint32_t *word, uint32_t expected, uint64_t timeout_ns);
/* Wakes a thread parked on word. */
void dsy_unpark_one(_Atomic uint32_t *word);
uint64_t dsy_now_ns(void);
unsigned dsy_cpu_count(void);
void dsy_cpu_relax(void);
void dsy_yield(void);
void dsy_sleep_ns(uint64_t ns);

/* A test-and-test-and-set spinlock for critical sections of a few
 * instructions that never block; yields to the OS if the holder was
 * preempted. Acquire on lock pairs with the release store of unlock. */
typedef _Atomic uint32_t dsy_spinlock;

static inline void dsy_spin_lock(dsy_spinlock *l) {
    for (unsigned i = 0;; i++) {
        if (!atomic_load_explicit(l, memory_order_relaxed) &&
            !atomic_exchange_explicit(l, 1, memory_order_acquire))
            return;
        if (i < 100)
            dsy_cpu_relax();
        else
            dsy_yield();
    }
}

static inline void dsy_spin_unlock(dsy_spinlock *l) { atomic_store_explicit(l, 0, memory_order_release); }

/* ---------------------------------------------------------- job nodes */

typedef struct dsy_node dsy_node;

enum dsy_run_result {
    DSY_DONE,   /* the node's work is finished: unlink it, then call finish */
    DSY_PARKED, /* the run token moved elsewhere (a future, a resumer, a waiter):
                 * the node stays at the head, the caller stops touching q */
};

typedef struct dsy_node_ops {
    /* Runs the node's job; the caller holds the run token. `data` is the
     * object's data (NULL for a bare queue), read once per run of the queue:
     * it shares a cache line with `tail`, which every producer exchanges. */
    enum dsy_run_result (*run)(dsy_node *n, desync_queue_t *q, void *data);
    /* Called once n is unlinked (no longer reachable from the queue): frees
     * the node or signals its waiter. Must not touch the queue. */
    void (*finish)(dsy_node *n);
    /* For nodes whose owner may wait for them (sync, futures), else NULL:
     * if a thread waits for n, hands it the run token (its word becomes
     * DSY_W_TOKEN) and returns 1; else returns 0. */
    int (*take_waiter)(dsy_node *n);
} dsy_node_ops;

/* Every job in a queue starts with this header. `next` is written once by
 * the producer that linked the node after it (release) and read by the token
 * holder (acquire). */
struct dsy_node {
    _Atomic(dsy_node *) next;
    const dsy_node_ops *ops;
};

/* A pooled node: the header plus room for a function, an argument and 32
 * bytes of copied argument (64 bytes, one cache line). */
#define DSY_INLINE_ARG 32
typedef struct dsy_job {
    dsy_node node;
    void (*fn)(void);
    void *arg;
    _Alignas(16) unsigned char buf[DSY_INLINE_ARG];
} dsy_job;

/* A job node: from the calling thread's job segment (*from_seg = true; see
 * jobpool.c) or from the block pool. NULL on ENOMEM. */
dsy_job *dsy_job_alloc(bool *from_seg);
/* Frees a finished job node (from_seg as returned by dsy_job_alloc). */
void dsy_job_release(dsy_job *j, bool from_seg);

/* The same pool for other small blocks: class DSY_POOL_64 or DSY_POOL_128
 * (block sizes in bytes). A block must be freed with the class it came from. */
#define DSY_POOL_64 0u
#define DSY_POOL_128 1u
void *dsy_pool_alloc(unsigned cls); /* NULL on ENOMEM */
void dsy_pool_free(void *p, unsigned cls);

/* --------------------------------------------------------------- queue */

/*
 * Queue state word (see queue.c for the whole state machine):
 *   LINKED   an entry for this queue sits in a scheduler run list or a worker's
 *            next slot (it may be stale: its claim fails once READY is gone)
 *   READY    the run token is with the scheduler; whoever clears READY with a
 *            CAS (a worker popping the entry, or a waiting syncer) owns it
 *   waiter count (units of DSY_WAITER): threads blocked until a node of this
 *            queue completes; a token holder that gives the token up while
 *            waiters exist hands it to the first of them instead of the
 *            scheduler, so a waiter never sleeps next to an unclaimed token
 */
#define DSY_Q_LINKED 1u
#define DSY_Q_READY 2u
#define DSY_Q_SUSPENDED 4u /* a suspend node holds the token (a resumer exists) */
#define DSY_Q_OBJECT 8u    /* the queue is part of a desync_t (set once) */
#define DSY_WAITER 16u

struct desync_queue {
    /* Last node; NULL exactly when the queue is idle (no job pending or
     * running). Producers link with one exchange; the exchange that finds
     * NULL creates the run token. */
    _Atomic(dsy_node *) tail;
    /* First unfinished node. Read and written only by the token holder. */
    dsy_node *head;
    _Atomic uint32_t state;
    /* References: users, the owning desync_t, a run token in transit. */
    _Atomic uint32_t refs;
    desync_scheduler_t *sched;
};

/* desync_t: a queue plus the data it protects. */
struct desync_object {
    struct desync_queue q;
    void *data;
    void (*destroy)(void *data);
    /* Strong references; the last one queues destruction. The object holds
     * one queue reference while strong references or weak ones remain. */
    _Atomic uint32_t strong;
    _Atomic uint32_t weak; /* weak refs + 1 while strong > 0 */
};

/* Kinds of thread-local frames: one per job being run by this thread. */
typedef struct dsy_frame {
    desync_queue_t *q;
    struct dsy_frame *parent; /* this thread's enclosing job */
    struct dsy_frame *behalf; /* the chain of the blocked thread this job runs for */
} dsy_frame;

/* True if q is running in the current thread's frame chain (a sync on q from
 * here could never complete). */
bool dsy_queue_in_chain(desync_queue_t *q);

void dsy_queue_init(desync_queue_t *q, desync_scheduler_t *s);
/* Links n at the tail; returns 0, or 1 if this push created the run token
 * (the queue was idle) and the caller must place it (dsy_token_place). */
int dsy_queue_push(desync_queue_t *q, dsy_node *n);
/* Pushes n and, if that made the queue busy, gives the token to the
 * scheduler. The common path of every asynchronous call. */
void dsy_queue_push_schedule(desync_queue_t *q, dsy_node *n);
/* The token holder gives the token away (to a waiter or the scheduler).
 * `has_ref`: the token already carries a queue reference. */
void dsy_token_place(desync_queue_t *q, bool has_ref);
/* Runs the queue with the token held, until it is idle, parked, or (when
 * limit > 0) `limit` jobs ran; returns true if the caller still holds the
 * token (only possible when the limit was hit). The token carries a ref. */
bool dsy_queue_run(desync_queue_t *q, unsigned limit);
/* Waits until *word becomes DSY_W_DONE for node n (already linked by a push
 * that returned 0), counting itself a waiter meanwhile, and running the queue
 * on this thread whenever the token is free or handed to it (DSY_W_TOKEN).
 * deadline: absolute dsy_now_ns() time, 0 for none; false if it passed. */
bool dsy_queue_wait_node(desync_queue_t *q, dsy_node *n, _Atomic uint32_t *word,
                         uint64_t deadline);
/* With the token (and its reference) held: runs the queue up to and
 * including `target`, then places the token. False if the queue parked
 * before target finished (the token is gone). */
bool dsy_queue_drain_until(desync_queue_t *q, dsy_node *target);
/* Waits until *word leaves DSY_W_WAITING (spin, then park); returns the new
 * value, or DSY_W_WAITING once deadline (0 = none) has passed. */
uint32_t dsy_wait_word(_Atomic uint32_t *word, uint64_t deadline);
/* Sets a waiter word to DONE or TOKEN, waking its thread if it sleeps. */
void dsy_waiter_signal(_Atomic uint32_t *word, uint32_t value);
void dsy_queue_unref(desync_queue_t *q);
/* The job calls behind the public functions (fn is cast back to
 * desync_job_fn when with_data, else to desync_queue_job_fn). */
int dsy_sync(desync_queue_t *q, void (*fn)(void), void *data, bool with_data, void *arg,
             bool try_only);
int dsy_desync(desync_queue_t *q, void (*fn)(void), bool with_data, const void *arg, size_t len,
               bool copy);

/* Waiter word values (per waiting node). */
#define DSY_W_WAITING 0u
#define DSY_W_TOKEN 1u /* the waiter now holds the run token */
#define DSY_W_DONE 2u  /* the node is finished */
#define DSY_W_SLEEPING 3u /* internal to dsy_wait_word: the waiter is parked */

/* ----------------------------------------------------------- scheduler */

/* Puts a queue whose state has just gained READY|LINKED on a run list (or
 * the calling worker's next slot); may wake or start a thread. */
void dsy_sched_submit(desync_scheduler_t *s, desync_queue_t *q);
void dsy_sched_retain(desync_scheduler_t *s);
void dsy_sched_release(desync_scheduler_t *s);
/* True if the calling thread is a worker with no other queue waiting for it
 * (its next slot and its scheduler's run list are empty). */
bool dsy_sched_nothing_else(void);
/* Claims the token of a queue whose entry was just taken from a run list:
 * clears LINKED, and READY if set; true if READY was set (token owned). */
bool dsy_queue_claim_entry(desync_queue_t *q);

/* -------------------------------------------------------------- futures */

/* Completes a promise's future with any status (e.g. DESYNC_EOF for
 * stream_next_future) and frees the promise. 0 or DESYNC_EINVAL. */
int dsy_promise_complete_status(desync_promise_t *p, int status, void *value);

/* -------------------------------------------------------------- objects */

void dsy_object_weak_retain(desync_t *d);
void dsy_object_weak_release(desync_t *d);
int dsy_object_alive(desync_t *d);

#endif
