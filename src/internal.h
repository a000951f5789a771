/*
 * Internal interfaces shared by the library's source files. Nothing here is
 * exported: every non-static symbol has the dsy_ prefix and hidden visibility
 * (the library is built with -fvisibility=hidden).
 *
 * Map of the sources:
 *   base.h      the idioms written once: assertions, backoff, bounded spins,
 *               deadlines, reference counts, the spinlock
 *   tuning.h    every tuning constant, with what it trades
 *   os/         the OS layer: parking, clocks, threads, event fds (os.h)
 *   jobpool.c   per-thread magazines of job nodes (no malloc per desync)
 *   queue.c     the serial queue: job list, run token, sync and the waiting path
 *   queue_fast.h  its idle fast path, inline (dsy_sync, multi.c)
 *   scheduler.c the thread pool that runs ready queues
 *   object.c    desync_t: data + queue, reference counting, destruction
 *   future.c    futures, promises, async jobs, suspend/resume
 *   stream.c, channel.c, pipe.c   streams
 *   multi.c     jobs over several objects (desync_sync_all, desync_desync_all)
 *   timer.c     timers: a per-scheduler heap driven by the scheduler's threads
 *   waitgraph.c the wait-for graph: deadlock detection across threads
 *   fork.c      pthread_atfork handlers; the registry of threads using the library
 */
#ifndef DSY_INTERNAL_H
#define DSY_INTERNAL_H

#include "base.h"
#include "desync.h"

#include <stdio.h>

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
     * the node or signals its waiter. Must not touch the queue except to
     * push nodes, as any producer may (a dsy_kick queues itself again). */
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
    void (*fn)(void); /* a dsy_fn (declared below) */
    void *arg;
    _Alignas(16) unsigned char buf[DSY_INLINE_ARG];
} dsy_job;

/* Copies of up to DSY_INLINE_ARG_WIDE bytes (a typical log line) go in a
 * wide node: the same layout over two cache lines (128 bytes), its buffer
 * running on past buf (no malloc per job). */
#define DSY_INLINE_ARG_WIDE (128 - offsetof(dsy_job, buf))

/* A job node of `lines` cache lines (1, or 2 for a wide node): from the
 * calling thread's job segment (*from_seg = true; see jobpool.c) or from the
 * block pool. NULL on ENOMEM. */
dsy_job *dsy_job_alloc(unsigned lines, bool *from_seg);
/* Frees a finished job node (lines and from_seg as at dsy_job_alloc). */
void dsy_job_release(dsy_job *j, unsigned lines, bool from_seg);
/* Between these two (nested: the outermost end counts), this thread's
 * releases of segment nodes are added up per segment and dropped from the
 * segment's count in one RMW when the segment changes or at the end: a
 * runner's jobs mostly come from one producer's segment (jobpool.c). */
void dsy_job_release_batch_begin(void);
void dsy_job_release_batch_end(void);

/* The same pool for other small blocks: class DSY_POOL_64, DSY_POOL_128 or
 * DSY_POOL_192 (block sizes in bytes; 192: a future with its queue node),
 * or DSY_POOL_OBJECT (80 bytes: a desync_t; its blocks come from the OS in
 * large mappings, not malloc, and are never given back: jobpool.c, OBJECT
 * ARENA). A block must be freed with the class it came from. */
#define DSY_POOL_64 0u
#define DSY_POOL_128 1u
#define DSY_POOL_192 2u
#define DSY_POOL_OBJECT 3u
#define DSY_POOL_OBJECT_BYTES 80u
void *dsy_pool_alloc(unsigned cls); /* NULL on ENOMEM */
void dsy_pool_free(void *p, unsigned cls);

/* The NOPOOL build (make NOPOOL=1: -DDESYNC_NOPOOL), for finding misused
 * handles: the block pool and the job segments are bypassed (one malloc per
 * block, freed at once) and freed handles are poisoned, so that ASan and
 * valgrind see a use after free or a double free. Nothing else changes. */
#ifdef DESYNC_NOPOOL
#define DSY_NOPOOL 1
#else
#define DSY_NOPOOL 0
#endif
#define DSY_POISON_BYTE 0xdb /* a freed handle's bytes in NOPOOL builds */

/* Frees a handle's memory (an object or queue, future, resumer, stream,
 * channel, pipe) of `size` bytes; NOPOOL builds poison it first, so a stale
 * handle reads garbage even where no tool watches. */
void dsy_handle_free(void *p, size_t size);

/* --------------------------------------------------------------- queue */

/* The serial queue. Its fields belong to queue.c alone (the state word's
 * bits are defined there); other files go through the dsy_queue_* calls. */
struct desync_queue {
    /* Last node; NULL exactly when the queue is idle (no job pending or
     * running). Producers link with one exchange; the exchange that finds
     * NULL creates the run token. */
    _Atomic(dsy_node *) tail;
    /* The object's data (desync_t), NULL for a bare queue; set at creation,
     * never changed. Beside `tail`, so that the 16 bytes a runner, a sync and
     * a multi-object job need first share one cache line whatever the
     * allocation's alignment (after the object's queue it sat on the next
     * line in 3 objects of 4). */
    void *data;
    /* First unfinished node. Read and written only by the token holder. */
    dsy_node *head;
    _Atomic uint32_t state; /* DSY_Q_* bits and waiter count: see queue.c */
    /* References: users, the owning desync_t, a run token in transit. */
    dsy_refcount refs;
    /* Nodes linked by dsy_queue_push, and nodes unlinked by the token
     * holders (added in batches): pushed - unlinked is the backlog, give or
     * take the batches in flight. Both on the line of `tail`, which a
     * producer owns anyway when it pushes. */
    _Atomic uint32_t pushed, unlinked;
    /* The cold part (queue.c: struct dsy_queue_cold): what few queues use, a
     * scheduler other than the default one, a limit on pending desyncs and
     * the producers blocked on it, a label. NULL until first needed (set
     * once, never replaced; made at creation for a queue on another
     * scheduler), freed with the queue. A desync looks at it only once a
     * limit was set on some queue of the process (queue.c: the gate); a
     * queue's scheduler is read from it (dsy_queue_sched) when the queue is
     * handed to its scheduler or waited for. */
    _Atomic(struct dsy_queue_cold *) cold;
};

/* The default scheduler's storage (scheduler.c): its address is known
 * before it is initialised (desync_scheduler_default does that). */
extern struct desync_scheduler dsy_default_scheduler;

/* q's scheduler: from its cold part, else the default one. */
desync_scheduler_t *dsy_queue_sched(desync_queue_t *q);

/* desync_t: a queue plus the data it protects, 80 bytes. Kept minimal
 * (issue 10): what few objects use (another scheduler than the default
 * one, a limit, a label) goes in the queue's cold part. */
struct desync_object {
    struct desync_queue q; /* its data: q.data */
    desync_destroy_fn destroy;
    /* Strong references; the last one queues destruction. The object holds
     * one queue reference while strong references or weak ones remain. */
    dsy_refcount strong;
    dsy_refcount weak; /* weak refs + 1 while strong > 0 */
    /* The destruction job the last release queues when it must not wait
     * (object.c): part of the object, so release never needs memory. */
    dsy_node destroy_node;
};

/* Kinds of thread-local frames: one per job being run by this thread. */
typedef struct dsy_frame {
    desync_queue_t *q;
    struct dsy_frame *parent; /* this thread's enclosing job */
    struct dsy_frame *behalf; /* the chain of the blocked thread this job runs for */
} dsy_frame;

/* The generic job function: cast back to desync_job_fn (DSY_JOB_DATA) or
 * desync_queue_job_fn before the call. */
typedef void (*dsy_fn)(void);

/* Flags of dsy_sync / dsy_desync. */
enum dsy_job_flags {
    DSY_JOB_DATA = 1u, /* fn takes the object's data: a desync_job_fn */
    DSY_JOB_COPY = 2u, /* desync: run fn on a copy of len bytes at arg */
    DSY_JOB_TRY = 4u,  /* sync: DESYNC_EBUSY rather than wait for a busy queue;
                        * desync: DESYNC_EAGAIN rather than wait for room */
};

/* Flags of dsy_queue_init. */
#define DSY_QUEUE_OF_OBJECT 1u /* the queue is the first member of a desync_t */
/* desync_new_copy: the object's data is stored just before it, in the same
 * allocation, which starts DSY_DATA_BEFORE bytes before the object. */
#define DSY_QUEUE_DATA_BEFORE 2u
#define DSY_DATA_BEFORE 32u
#define DSY_CACHE_LINE 64u

/* True if q is running in the current thread's frame chain (a sync on q from
 * here could never complete). */
bool dsy_queue_in_chain(desync_queue_t *q);

/* A new queue with one reference, attached to s (which it keeps alive).
 * 0 or DESYNC_ENOMEM (q is then not attached: just free it). */
int dsy_queue_init(desync_queue_t *q, desync_scheduler_t *s, unsigned flags);
/* One more queue reference; the caller already holds one (or the token). */
void dsy_queue_ref(desync_queue_t *q);
/* Drops a queue reference; the last one frees the queue. */
void dsy_queue_unref(desync_queue_t *q);
/* Suspension marks, set and cleared by the suspend node that holds the run
 * token (future.c): while set, a job of the queue's owner that would wait
 * for the queue (release) queues its work instead. */
void dsy_queue_mark_suspended(desync_queue_t *q);
bool dsy_queue_is_suspended(desync_queue_t *q);
/* A hint for desync_queue_stats, set and cleared by the token holder: a
 * future node parks the token until a future completes or a waiter comes
 * (the queue reads SUSPENDED meanwhile). Nothing else reads it. */
void dsy_queue_mark_held(desync_queue_t *q, bool held);
/* Clears the mark and places the token the suspend node held. */
void dsy_queue_resume(desync_queue_t *q);
/* Links n at the tail; returns 0, or 1 if this push created the run token
 * (the queue was idle) and the caller must place it (dsy_token_place). */
int dsy_queue_push(desync_queue_t *q, dsy_node *n);
/* Pushes n and, if that made the queue busy, gives the token to the
 * scheduler. The common path of every asynchronous call. */
void dsy_queue_push_schedule(desync_queue_t *q, dsy_node *n);

/* A job node embedded in its owner, for work that must be queued without
 * allocating and may be asked for any number of times (a stream's wakes):
 * requests made while it is queued and not started are served by that run;
 * a request made during its run makes it run once more. */
typedef struct dsy_kick {
    dsy_node node;
    desync_queue_t *q;
    _Atomic uint32_t st;              /* idle, queued, queued again: see queue.c */
    void (*run)(struct dsy_kick *k);  /* a run, on q's queue */
    void (*done)(struct dsy_kick *k); /* after the last run of a request; may free k */
} dsy_kick;

void dsy_kick_init(dsy_kick *k, desync_queue_t *q, void (*run)(dsy_kick *k),
                   void (*done)(dsy_kick *k));
/* Requests a run. True if the caller must queue it: it first takes what
 * done() gives back (a reference on the owner), then calls dsy_kick_push. */
bool dsy_kick_arm(dsy_kick *k);
void dsy_kick_push(dsy_kick *k);
/* The token holder gives the token away (to a waiter or the scheduler).
 * `has_ref`: the token already carries a queue reference. */
void dsy_token_place(desync_queue_t *q, bool has_ref);
/* If q's token waits for a runner (READY), takes it and runs up to one
 * batch of q's jobs on this thread; else does nothing. For threads about to
 * sleep until q's work is done. */
void dsy_queue_help(desync_queue_t *q);
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
struct dsy_hold;
/* As dsy_queue_drain_until, for a caller whose hold `held` on q (the last
 * it pushed) covered the taking of the token: it serves as the drain's own
 * hold and is popped with it, before the token and its reference go. So
 * the caller needs no reference of its own, and must not touch q after. */
bool dsy_queue_drain_until_held(desync_queue_t *q, dsy_node *target, struct dsy_hold *held);
/* Waits until *word leaves DSY_W_WAITING (spin, then park); returns the new
 * value, or DSY_W_WAITING once deadline (0 = none) has passed. */
uint32_t dsy_wait_word(_Atomic uint32_t *word, uint64_t deadline);
/* dsy_wait_word for a node of a queue of s: if s has no threads and the
 * caller runs no job, runs s's run list meanwhile (HELPERS, scheduler.c).
 * Never returns DSY_W_HELP. */
uint32_t dsy_wait_word_help(_Atomic uint32_t *word, uint64_t deadline, desync_scheduler_t *s);
/* Sets a waiter word to DONE or TOKEN, waking its thread if it sleeps. */
void dsy_waiter_signal(_Atomic uint32_t *word, uint32_t value);
/* The job calls behind the public functions (enum dsy_job_flags). DSY_JOB_DATA
 * jobs get q's data (q->data). */
int dsy_sync(desync_queue_t *q, dsy_fn fn, void *arg, unsigned flags);
int dsy_desync(desync_queue_t *q, dsy_fn fn, const void *arg, size_t len, unsigned flags);

/* Waiter word values (per waiting node). */
#define DSY_W_WAITING 0u
#define DSY_W_TOKEN 1u    /* the waiter now holds the run token */
#define DSY_W_DONE 2u     /* the node is finished */
#define DSY_W_SLEEPING 3u /* internal to dsy_wait_word: the waiter is parked */
#define DSY_W_HELP 4u     /* a listed helper: run the scheduler's run list */

/* The queues of the jobs the calling thread is inside of (its frame chain):
 * of the `keep` outermost (UINT32_MAX: all), stores at most max in out,
 * innermost first, and returns how many there are. For the wait-for graph. */
uint32_t dsy_queue_held(_Atomic(desync_queue_t *) *out, uint32_t max, uint32_t keep);

/* For multi-object jobs (multi.c): the frames of this thread's chain and
 * the idle fast path are inline in queue_fast.h (frame_push, frame_pop,
 * frame_top, idle_take_alone, idle_give_back). */
bool dsy_queue_looks_idle(desync_queue_t *q); /* a relaxed hint, for spinning */
/* A thread waiting for nodes of several queues counts itself a waiter on
 * each (as dsy_queue_wait_node does on one), and takes a READY token (true:
 * it holds it, with a reference). */
void dsy_queue_waiter_add(desync_queue_t *q);
void dsy_queue_waiter_sub(desync_queue_t *q);
bool dsy_queue_steal_ready(desync_queue_t *q);
/* fork.c's handlers: the lock that links a multi-object job's parts. */
void dsy_multi_fork_prepare(void);
void dsy_multi_fork_parent(void);
void dsy_multi_fork_child(void);

/* ----------------------------------------------------------- waitgraph
 *
 * Deadlock detection across threads (waitgraph.c). A thread about to block
 * until q has run its job calls dsy_wait_enter before it links its node: true
 * means the wait would close a cycle of threads waiting for each other (the
 * edge is already withdrawn: return DESYNC_EDEADLK, queue nothing). Otherwise
 * the edge stays published until dsy_wait_leave, once the wait is over. */
#define DSY_WG_WAITS 8u /* queues one wait lists (a multi-object sync) */
typedef struct dsy_wait_edge {
    void *slot;              /* the thread's slot (NULL: not tracked) */
    desync_queue_t *outer;   /* the enclosing wait of this thread, if any */
    uint32_t outer_held;     /* ... and how many queues it held */
} dsy_wait_edge;

bool dsy_wait_enter(dsy_wait_edge *e, desync_queue_t *q);
/* The same for a wait until every one of qs[0..n) has run a node of the
 * caller (desync_sync_all): a cycle through any of them is refused. Only the
 * first DSY_WG_WAITS are listed. */
bool dsy_wait_enter_all(dsy_wait_edge *e, desync_queue_t *const qs[], uint32_t n);
/* The same for a thread about to wait until s's busy workers are done
 * (desync_scheduler_drain): the edge points at s, held by its workers. */
bool dsy_wait_enter_sched(dsy_wait_edge *e, desync_scheduler_t *s);
void dsy_wait_leave(dsy_wait_edge *e);
/* In a fork child (fork.c): frees the slots of the threads that vanished. */
void dsy_wait_fork_child(void);

/* ----------------------------------------------------------- scheduler
 *
 * The scheduler runs *runnables*: entries that it keeps on a run list or in
 * a worker's next slot, and knows nothing else about. The layering is
 * one-way: owners of runnables (queue.c) call the scheduler; the scheduler
 * calls back only through the runnable callback table below. Every runnable
 * of one scheduler shares one table, bound when its owner attaches, so an
 * entry costs no pointer of its own; a run of an entry is one indirect call
 * (not one per job). */
typedef struct dsy_runnable dsy_runnable; /* opaque to the scheduler */

typedef enum dsy_run_status {
    DSY_RUN_RELEASED, /* the entry is no longer the worker's business */
    DSY_RUN_MORE,     /* `limit` jobs ran; the worker still owns the entry */
} dsy_run_status;

typedef struct dsy_runnable_ops {
    /* A worker took r off a run list or a next slot: claim it (a stale entry
     * is dropped: RELEASED) and run at most `limit` jobs (0: no limit, never
     * MORE). After MORE the worker owns r and calls run again with `owned`
     * (no claim), or requeue. */
    dsy_run_status (*run)(dsy_runnable *r, unsigned limit, bool owned);
    /* Gives back an entry the worker owns (after MORE). */
    void (*requeue)(dsy_runnable *r);
    /* The scheduler is closed and drops r without running it: its owner
     * keeps the work runnable for whoever waits for it. */
    void (*orphan)(dsy_runnable *r);
    /* True if the calling thread is running a job of a runnable of s (its
     * own, or one it runs for a thread blocked in it): waiting for s to be
     * quiet, or freeing s, from there could never finish. */
    bool (*running_here)(desync_scheduler_t *s);
    /* For desync_scheduler_dump: a short name of r (its label, or its
     * address) in buf, from r's address alone (r may be gone: the owner
     * dereferences it only if it knows it alive); and the owner's own lines
     * about its runnables of s. Never called with the scheduler's lock held. */
    void (*name)(dsy_runnable *r, char *buf, size_t len);
    void (*dump)(desync_scheduler_t *s, FILE *f);
    /* A count that moves whenever r's work is run by a thread other than a
     * worker (a waiter that took r's token while r was listed), for the
     * spinners' grace (scheduler.c). Called with the scheduler's lock held,
     * while r is listed (its entry's reference keeps it). */
    uint32_t (*progress)(dsy_runnable *r);
} dsy_runnable_ops;

/* Attaches an owner of runnables to s, which it keeps alive until detach.
 * All owners of a scheduler pass the same table. An owner has at most one
 * entry submitted at a time; attaching reserves room for it, so submitting
 * never needs memory. 0 or DESYNC_ENOMEM (not attached). */
int dsy_sched_attach(desync_scheduler_t *s, const dsy_runnable_ops *ops);
void dsy_sched_detach(desync_scheduler_t *s);
/* Takes a runnable entry (from an attached owner) to run: the run list, or
 * the calling worker's next slot; may wake or start a thread. */
void dsy_sched_submit(desync_scheduler_t *s, dsy_runnable *r);
/* HELPERS (scheduler.c): a thread about to sleep until a queue of a scheduler
 * with no threads has run its node lists itself here with its wait word;
 * the next entry submitted to s sets that word to DSY_W_HELP (from WAITING
 * or SLEEPING, never over TOKEN or DONE) and wakes it, to run the run list.
 * add: false (not listed) unless s has no threads and is not freed. */
typedef struct dsy_helper {
    _Atomic uint32_t *word;
    struct dsy_helper *next;
    bool listed; /* (s's lock) */
} dsy_helper;
bool dsy_sched_helper_add(desync_scheduler_t *s, dsy_helper *h);
void dsy_sched_helper_remove(desync_scheduler_t *s, dsy_helper *h);
/* Runs one entry of s's run list on this thread; false if it was empty. */
bool dsy_sched_help_one(desync_scheduler_t *s);
/* Schedulers whose last try to start a thread for their run list failed.
 * Read (relaxed) before every push: a global that is written only when a
 * thread start fails, so it costs nothing otherwise. */
extern _Atomic unsigned dsy_sched_starved_count;
/* A push finds its queue's token waiting in s (READY) while some scheduler
 * is starved: if s is, try again to get a thread. */
void dsy_sched_poke(desync_scheduler_t *s);
/* True if the calling thread is a worker with no other entry waiting for it
 * (its next slot and its scheduler's run list are empty). */
bool dsy_sched_nothing_else(void);
/* The scheduler the calling thread is a worker of, or NULL (waitgraph.c). */
desync_scheduler_t *dsy_sched_worker_of(void);
/* The calling thread is about to sleep in the library (a sync or a wait,
 * maybe inside a job): an entry in its next slot would wait for it to wake,
 * and may be what it waits for. If it is a worker, the entry goes to the run
 * list, for other threads. In a fork child, it first starts the threads of
 * work listed at fork (dsy_sched_fork_restart). */
void dsy_sched_thread_blocks(void);

/* True if the calling thread is a scheduler's worker running a job (a
 * limit's producer must not block such a thread: DESYNC_EAGAIN). */
bool dsy_sched_in_pool_job(void);

/* Timers (timer.c) are driven by the scheduler's threads. A scheduler
 * keeps a pointer to its timer heap (made by the first timer started on it)
 * and lets one idle worker at a time sleep until the heap's earliest
 * deadline (the timer waiter) instead of sleeping for good. */
typedef struct dsy_timers dsy_timers;
/* s's heap, or NULL if no timer was ever started on s (acquire). */
dsy_timers *dsy_sched_timers(desync_scheduler_t *s);
/* Installs t as s's heap unless one was installed first; returns the one
 * that is. */
dsy_timers *dsy_sched_timers_install(desync_scheduler_t *s, dsy_timers *t);
/* The earliest deadline of s's heap became earlier: wakes the timer waiter,
 * or gets a worker to look (woken or started, as for new work). */
void dsy_sched_timer_kick(desync_scheduler_t *s);

/* Gives the block pools' free memory back to malloc: the calling thread's
 * caches and job segment, the depots and the segment cache (other threads'
 * caches go back when they exit). For desync_shutdown. */
void dsy_pool_reclaim(void);

/* ----------------------------------------------------------------- fork
 *
 * At fork() the child keeps only the calling thread; every other thread
 * vanishes at whatever instruction it was on. The library's global locks are
 * taken around fork (fork.c), and each thread that uses the library keeps a
 * record, in a registry, of what it is in the middle of: the queues whose
 * token it holds or waits for, and an entry it is handing to a scheduler. The
 * child's fork handler reads the records of the vanished threads: their
 * queues are "forked off" (calls on them return DESYNC_EFORKED, instead of
 * waiting for a thread that does not exist), their entries stay runnable.
 *
 * The fields are written by their own thread only: a marker is published
 * with a release store before the state it covers can exist (before the
 * atomic operation that takes a token, links a node or lists an entry), and
 * withdrawn after it has ended; the child reads them with acquire loads. A
 * marker names a queue only while the thread keeps it alive (a reference of
 * its own, its caller's, or the token's). */
struct fwaiter; /* future.c */

typedef struct dsy_hold { /* a queue token held (or awaited) outside a job frame */
    desync_queue_t *q;
    struct dsy_hold *up;
} dsy_hold;

typedef struct dsy_thread {
    _Atomic(dsy_frame *) frame;       /* queue.c: the innermost job frame */
    _Atomic(dsy_hold *) holds;        /* queue.c, future.c: innermost hold */
    _Atomic(desync_queue_t *) owned;  /* queue.c: a worker's token between two runs */
    _Atomic(struct fwaiter *) waiting; /* future.c: the waits listing this thread */
    _Atomic(desync_scheduler_t *) submit_sched; /* scheduler.c: an entry being listed, */
    _Atomic(dsy_runnable *) submit_entry;       /* not yet in any list (see submit) */
    bool survivor;        /* this thread called fork and goes on in the child */
    unsigned char state;  /* 0 not registered yet, 1 registered, 2 cannot be */
    struct dsy_thread *prev, *next; /* the registry (fork.c, under its mutex) */
} dsy_thread;

extern DSY_TLS dsy_thread dsy_self;
/* Nonzero in a process that is the child of a fork of a process that used
 * the library: the gate of every check for forked-off queues. */
extern _Atomic unsigned dsy_forked;

/* Registers the atfork handlers (once; called before any global lock of the
 * library is first used: scheduler creation, a thread's first pool use). */
void dsy_fork_init(void);
void dsy_thread_register(void);

/* The calling thread's record, registered on first use. Never call it for
 * the first time with a lock of the library held (registration takes the
 * registry mutex, which fork takes before them). */
static inline dsy_thread *dsy_thread_self(void) {
    if (DSY_UNLIKELY(!dsy_self.state))
        dsy_thread_register();
    return &dsy_self;
}

/* A hold on q (on the caller's stack) from now until dsy_hold_pop. */
static inline void dsy_hold_push(dsy_hold *h, desync_queue_t *q) {
    (void)dsy_thread_self(); /* registers it */
    h->q = q;
    h->up = atomic_load_explicit(&dsy_self.holds, memory_order_relaxed);
    atomic_store_explicit(&dsy_self.holds, h, memory_order_release);
}

static inline void dsy_hold_pop(dsy_hold *h) {
    atomic_store_explicit(&dsy_self.holds, h->up, memory_order_release);
}

/* The child's handler calls these for each vanished thread's record t, with
 * every lock of the library held by the calling thread: */
void dsy_queue_fork_vanished(dsy_thread *t);  /* forks off t's queues */
void dsy_future_fork_vanished(dsy_thread *t); /* unlists t as a future's waiter */
void dsy_sched_fork_vanished(dsy_thread *t);  /* lists the entry t was listing */
/* ... and these for the thread that goes on (its own record). */
void dsy_queue_fork_survivor(dsy_thread *t);
/* Lock handling per file, called by fork.c's handlers in the order of the
 * registry mutex, queues' cold parts, schedulers, pools, OS layer (reverse
 * to release). The
 * scheduler's child handler also resets the workers (none exist). */
void dsy_queue_fork_prepare(void); /* the cold parts' list (queue.c) */
void dsy_queue_fork_parent(void);
void dsy_queue_fork_child(void);
void dsy_sched_fork_prepare(void);
void dsy_sched_fork_parent(void);
void dsy_sched_fork_child(void);
void dsy_pool_fork_prepare(void);
void dsy_pool_fork_parent(void);
void dsy_pool_fork_child(void);
/* In a child whose schedulers had work listed at fork, but no threads yet:
 * starts them (called by the first submit, or the first thread to sleep). */
extern _Atomic bool dsy_sched_restart_pending;
void dsy_sched_fork_restart(void);
/* True if q was forked off (its token held by a thread that vanished). */
bool dsy_queue_forked_off(desync_queue_t *q);

/* --------------------------------------------------------------- timers
 *
 * timer.c, for the scheduler (a timer heap's lock is a leaf; the scheduler
 * calls these without its own lock held). */
/* The earliest pending deadline (dsy_now_ns() time), UINT64_MAX if none.
 * Relaxed: may be stale by a start or a fire in progress. */
uint64_t dsy_timers_next(dsy_timers *t);
/* True if a deadline has passed (reads the clock only if one is pending). */
bool dsy_timers_due(dsy_timers *t);
/* Queues the jobs of every due timer (completes due delay futures, whose
 * callbacks run on the calling thread); first waits for a thread that is
 * pushing a batch (a few pushes). */
void dsy_timers_fire(dsy_timers *t);
/* Frees an empty heap (the scheduler's last release). */
void dsy_timers_free(dsy_timers *t);
/* Gives the heap's array back if no timer is pending (desync_shutdown). */
void dsy_timers_reclaim(dsy_timers *t);
/* Heaps that exist; while nonzero, dsy_sync calls dsy_timers_on_sync: on a
 * scheduler with 0 threads, whoever syncs fires the due timers first. */
extern _Atomic unsigned dsy_timer_heaps;
void dsy_timers_on_sync(desync_scheduler_t *s);
/* fork.c's handlers: every heap's lock, taken before the schedulers'. */
void dsy_timers_fork_prepare(void);
void dsy_timers_fork_parent(void);
void dsy_timers_fork_child(void);

/* -------------------------------------------------------------- futures */

/* Completes a promise's future with any status (e.g. DESYNC_EOF for
 * stream_next_future) and frees the promise. 0, or DESYNC_EINVAL (NULL, or
 * the promise was consumed already). */
int dsy_promise_complete_status(desync_promise_t *p, int status, void *value);

/* -------------------------------------------------------------- objects */

void dsy_object_weak_retain(desync_t *d);
void dsy_object_weak_release(desync_t *d);
int dsy_object_alive(desync_t *d);
/* Drops a strong reference without ever waiting: the last one queues the
 * destruction (as desync_release does from the object's own jobs). For
 * owners that may hold no reference to the queue's thread (timers). */
void dsy_object_release_async(desync_t *d);

#endif
