/*
 * fuzz_api.c: a libFuzzer harness that drives libdesync's public API with a
 * sequence of calls read from the input and checks the library's promises.
 * `make fuzz` builds it (clang, -fsanitize=fuzzer,address,undefined, the
 * library with -DDESYNC_DEBUG in build-fuzz/) and runs it on fuzz/corpus/.
 *
 * MODES. Byte 0, bit 0 clear: single-threaded. One caller (this thread) on a
 * scheduler with 0 threads, so every job runs on this thread inside a sync,
 * wait, poll, read or drain: a run is deterministic and a crash reproduces
 * from its input. Bit 0 set: multi-threaded. A scheduler with 2 threads and
 * two caller threads that run their ops at the same time, to find races
 * (both kept across inputs: starting threads costs more than an input).
 * DESYNC_FUZZ_MODE=st or mt overrides byte 0; DESYNC_FUZZ_TRACE=1 prints
 * each op as it runs.
 *
 * INPUT. After byte 0, ops of 4 bytes [op, a, b, c] (a short tail is padded
 * with zeros; at most MAX_OPS ops). (op & 0x7f) % OP_COUNT picks the call;
 * in the multi-threaded mode bit 7 of op picks the caller (0 or 1). Each
 * caller owns its slots: NF futures, NP promises, NR resumers, NCH channels,
 * NS streams and NTEMP targets of its own (objects 0, 1 and a bare queue 2,
 * created and released by OP_TEMP). The NPERM shared targets (objects 0, 1,
 * bare queues 2, 3) live for the whole input. A target byte t picks
 * t % (NPERM + NTEMP): below NPERM a shared one, else one of the caller's.
 * An empty slot is passed as NULL: that is how NULL misuse happens.
 *
 *   DESYNC    a=target b=nest c=flags  desync (c&1: _copy, length (c>>1)&3;
 *                                      c&0x80: through the object's queue)
 *   SYNC      a=target b=nest c=flags  sync (when it cannot block forever)
 *   TRY_SYNC  a=target b=nest c=flags  try_sync
 *   FUT       a=target b=slot|mode<<3|fsync<<6|viaq<<7 c=nest
 *                                      future_desync / future_sync; the job
 *                                      returns NULL, a ready future, a
 *                                      promise's future (completed by INNER),
 *                                      a cancelled future, or a future of a
 *                                      shared queue with a higher index
 *   AFTER     a=target b=dst|src<<3 c=nest   desync_after on future slot src
 *   SUSPEND   a=target b=slot          queue_suspend
 *   RESUME    a=resumer slot           resume
 *   WAIT      a=slot b=timeout|NULL value<<6|unbounded<<7
 *   POLL      a=slot b=waker?          future_poll
 *   THEN/DETACH/FREE/FD/READY  a=slot  (THEN b&1: first with a NULL callback)
 *   PROMISE_NEW a=pslot b=fslot|NULL<<7; PROMISE_DONE a=pslot b=cancel?
 *   INNER     a=index b=cancel?        completes a job's inner promise
 *   CHAN_NEW  a=cslot b=capacity|NULL<<7 c=stream slot; CHAN_RETAIN/CLOSE a
 *   SEND      a=cslot b=try/future/blocking c=future slot
 *   READ      a=stream b=try/next_for/poll/next_future/next/NULL item c=slot
 *   STREAM_NEW a=slot b=array/user/NULL misuse c=items; STREAM_FREE a
 *   PIPE      a=target b=in|out<<2 c=kind|depth<<2|NULL process<<5
 *   REF       a=target b=retain/release/queue ref/checks
 *   TEMP      a=temp slot (create if empty, else release)
 *   DRAIN; SCHED (thread limits; queries only when single-threaded); MISC b
 *   (NULL arguments to every call, strerror)
 * A "nest" byte gives a job something to do while it runs: sync, try_sync
 * or wait on its own queue (must be DESYNC_EDEADLK), drain (EDEADLK),
 * scheduler_free (ignored), release a reference to its own object, queue,
 * sync, try_sync, future_sync-and-free or future_desync-and-detach on a
 * shared target ((nest >> 4) & 3), or then() on a future of its own queue.
 *
 * CHECKS (a failure prints why and aborts):
 *  - exactly once: every job whose call returned 0 (or a future) runs once,
 *    checked at the end after draining and releasing everything; a job whose
 *    call failed never runs; a sync's or successful try_sync's job has run
 *    when the call returns; a future_sync job whose future was freed before
 *    it started never runs; every then-callback runs once; every item a
 *    channel, array or user stream accepted is read, processed by a pipe or
 *    passed to item_free exactly once; destroy runs once per object, after
 *    every job accepted before the last release;
 *  - order: jobs carry a sequence number per (caller or shared source queue,
 *    target); each queue's jobs check theirs rise. Stream items rise per
 *    source, through any pipes. Two jobs (or a job and a pipe's process) of
 *    one queue never run at once;
 *  - results: each call's return value is one its header contract lists;
 *    exact where the harness knows the answer (NULL -> EINVAL, own queue from
 *    a job -> EDEADLK, a future's status and value, EOF only after every
 *    handle closed and every accepted item read, EPIPE iff the reader is
 *    gone); a future gives the same result every time; a poll waker is called
 *    at most once, never after it was replaced, and before a poll that
 *    returns the result; a complete future's fd is readable;
 *  - wake-ups on the spot: a send that gives a channel an item has called
 *    the waker of the reader's last poll and completed its pending
 *    next_future before it returns; completing or cancelling a promise
 *    completes its future, calls its poll waker and its then-callback before
 *    it returns (a lost wake-up would otherwise hide behind the final close);
 *  - no crash, no sanitizer report, no leak (everything is released at the
 *    end of each input and desync_shutdown returns the pools' memory).
 *
 * RULES that keep legitimate inputs from blocking forever (an op that would
 * break one is skipped or made bounded):
 *  - Waits and stream reads are bounded (wait_for / next_for) unless the
 *    result is known (the future was seen complete; array and user streams;
 *    a stream that ended). A blocking channel send only when it cannot block:
 *    the reader is freed, or it is in the caller's slot and fewer than
 *    `capacity` items are unread.
 *  - Single-threaded: before a sync, or the last release of an object (a
 *    sync), the harness probes the queue: a future_desync job waited for with
 *    timeout 0. If that does not complete the queue is held (suspended, an
 *    async job or after waiting on a future, a future_sync nobody drives) and
 *    the sync is skipped. Jobs probe the same way before a nested sync.
 *  - Multi-threaded: a caller that holds something that can stop a queue (a
 *    promise whose future it handed to after, an inner promise, a future_sync
 *    or suspend it has not driven, a resumer) never blocks without bound (no
 *    sync, drain, last release or despawn), and its cleanup releases those
 *    first without blocking, so every hold ends. Jobs sync only on shared
 *    targets with a higher index than their own (no cycles), not on a
 *    caller's thread that holds something, and (FUZZ_WORKER_SYNC) not on a
 *    worker thread. Only caller 0 despawns threads (FUZZ_CONCURRENT_DESPAWN).
 *  - No cycles: every wait of one queue for another points to a higher
 *    index (the shared targets come after the callers' own). A job syncs,
 *    and an async job returns a future of, only higher queues; an after
 *    awaits a future of a higher queue or one queued earlier on its own
 *    queue, never a pending suspend, send or next_future (those are disposed
 *    instead: a suspend could be its own queue's, a pipe may feed the rest).
 *  - A stream with a pending next_future is not read, freed or piped; a
 *    pending suspend or next_future future is disposed with then(), which
 *    resumes the queue or takes the item, so no resumer or item is lost.
 *  - Misuse the library reports (FUZZ_MISUSE_CHECKS, on by default): closing
 *    a channel more often than it has handles (ignored), send and retain
 *    after the last close (DESYNC_EPIPE / NULL), completing or cancelling a
 *    promise twice while its future lives (DESYNC_EINVAL).
 *
 * The cleanup at the end of an input: each caller completes its promises,
 * resumes, frees or detaches future_syncs, closes its channels, waits for
 * pending next_futures (bounded; failing means a lost wake-up), frees its
 * streams and futures and releases its targets; then the shared targets are
 * released, the scheduler drained (and freed, single-threaded), and every
 * record checked.
 */
#include <desync.h>

#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#ifndef FUZZ_MISUSE_CHECKS
#define FUZZ_MISUSE_CHECKS 1
#endif

/* 1: desync_after takes a future_sync future over when it is called, so
 * its job runs on its queue even when the after is queued behind it. Set it
 * to 0 on a tree without that fix (commit "desync_after takes a future_sync
 * future over at once"): an after then awaits only a future_sync whose job
 * has started, since the other cases hang (test
 * future_after_owns_future_sync_same_object). */
#ifndef FUZZ_AFTER_TAKES_FSYNC
#define FUZZ_AFTER_TAKES_FSYNC 1
#endif

/* 1: jobs on the scheduler's worker threads (multi-threaded mode) may sync
 * other queues; 0 lets only jobs on a caller's thread sync (for a tree
 * before test core_queue_made_ready_by_a_blocked_job_runs passed). */
#ifndef FUZZ_WORKER_SYNC
#define FUZZ_WORKER_SYNC 1
#endif

/* 1: both callers may call desync_scheduler_despawn_threads_if_overloaded
 * at once; 0 lets only caller 0 despawn (for a tree before test
 * core_despawn_concurrent_keeps_a_thread passed). */
#ifndef FUZZ_CONCURRENT_DESPAWN
#define FUZZ_CONCURRENT_DESPAWN 1
#endif

#if FUZZ_MISUSE_CHECKS
#define PROMISE_CANCEL(p) desync_promise_cancel(p)
#else
#define PROMISE_CANCEL(p) (desync_promise_cancel(p), 0)
#endif

#define NCTX 2
#define NPERM 4 /* shared: objects 0, 1; bare queues 2, 3 */
#define NTEMP 3 /* per caller: objects 0, 1; bare queue 2 */
#define NGID (NCTX * NTEMP + NPERM)
#define NLANES (NCTX + NPERM)
#define NF 6
#define NP 3
#define NR 4
#define NCH 2
#define NS 4
#define NINNER 8
#define MAX_OPS 256
#define MAX_EXTRA 4

/* ------------------------------------------------------------ failures */

static _Thread_local int tls_op = -1;
static _Thread_local int tls_ctx_id = -1;

__attribute__((noreturn, format(printf, 1, 2))) static void fail(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "\nfuzz_api: invariant broken (caller %d, op %d): ", tls_ctx_id, tls_op);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    abort();
}

#define REQUIRE(cond, ...)                                                                   \
    do {                                                                                     \
        if (!(cond))                                                                         \
            fail(__VA_ARGS__);                                                               \
    } while (0)

/* A set of return values: bit -rc (0 is bit 0). */
#define M(e) (1u << (unsigned)-(e))
#define M_OK 1u

static void check_rc(const char *call, int rc, unsigned allowed) {
    if (rc > 0 || rc < -31 || !(allowed & (1u << (unsigned)-rc)))
        fail("%s returned %d (%s), which its header contract does not list", call, rc,
             rc <= 0 ? desync_strerror(rc) : "positive");
}

/* ------------------------------------------------------------- records */

enum rkind { R_JOB, R_ITEM, R_THEN, R_ARM, R_USER };

/* What a job does while it runs (nest & 15). */
enum nest {
    N_NONE,
    N_SYNC_SELF,
    N_TRY_SELF,
    N_WAIT_SELF,
    N_DESYNC_OTHER,
    N_SYNC_OTHER,
    N_TRY_OTHER,
    N_DRAIN,
    N_SCHED_FREE,
    N_RELEASE_SELF,
    N_FSYNC_FREE,
    N_FDESYNC_DETACH,
    N_THEN_SELF,
    N_COUNT
};

/* What an async job returns. */
enum amode { A_NULL, A_READY, A_PROMISE, A_CANCELLED, A_OTHERQ };

/* Future slot kinds. */
enum fkind { F_NONE, F_READY, F_PROMISE, F_ASYNC, F_FSYNC, F_AFTER, F_SUSPEND, F_SEND, F_NEXT };

/* Send outcomes. */
enum { OUT_PENDING, OUT_TAKEN, OUT_REFUSED, OUT_UNKNOWN };

#define INNER_ABANDONED ((uintptr_t)1)

typedef struct checker checker;
typedef struct rec rec;
typedef struct sslot sslot;
typedef struct chmeta chmeta;
typedef struct pmeta pmeta;

/* One per queue incarnation: the order and exclusion checks of its jobs.
 * `last` and `nested_seq` are touched only by the queue's own jobs. */
struct checker {
    checker *next;
    int gid;
    bool is_obj, used;
    _Atomic int destroyed;
    _Atomic int busy;
    _Atomic long pending; /* definite jobs accepted (or being queued), not run */
    uint32_t last[NLANES];
    uint32_t nested_seq[NPERM];
};

struct rec {
    rec *next;
    uint8_t kind;
    /* jobs */
    uint8_t nest, amode, aq, lane;
    bool definite;
    uint32_t seq;
    size_t copylen;
    int gid, perm;
    checker *chk;
    desync_queue_t *q;
    desync_t *selfobj;
    desync_queue_t *selfq;
    rec *aw; /* after: the settle record of the awaited future */
    _Atomic int accepted, ran, ran_at_free, must_run;
    _Atomic int exp_set;
    int exp_status;
    void *exp_value;
    _Atomic uintptr_t inner;
    /* items */
    int src;
    bool counted; /* in its channel's inflight */
    _Atomic int fates, outcome;
    /* then / settle records */
    _Atomic int calls;
    int expect_calls;
    uint8_t fkind;
    bool resumer_taken, obs_done;
    int obs_status;
    void *obs_value;
    rec *r2;
    pmeta *pm;
    sslot *ss;
    chmeta *cm;
    void *exp;
    /* poll wakers */
    _Atomic int wakes;
    _Atomic int frozen; /* -1 while it may still be called */
    /* user streams */
    uint32_t n, i;
};

struct pmeta {
    int state; /* 0 pending, 1 completed, 2 cancelled */
    void *value;
    bool fut_alive, handed;
    rec *then; /* the then-callback on its future, if any */
};

typedef struct pslot {
    desync_promise_t *p;
    pmeta *pm;
    desync_promise_t *consumed; /* the last one completed, for misuse checks */
    pmeta *consumed_pm;
} pslot;

enum { RX_SLOT, RX_PIPE, RX_FREED };

struct chmeta {
    desync_channel_t *c;
    size_t cap;
    int src;
    uint32_t seq;
    int rx;
    sslot *ss; /* the receiver's slot while rx == RX_SLOT */
    _Atomic int handles;
    _Atomic long inflight; /* accepted or waiting, not read through the slot yet */
};

enum { S_NONE, S_CHAN, S_PIPE, S_ARRAY, S_USER };

struct sslot {
    desync_stream_t *s;
    int kind;
    int src;
    bool may_null; /* pipe_async outputs carry NULL items */
    chmeta *cm;
    uint32_t last, n, nread;
    bool ended;
    _Atomic int nf; /* a next_future is pending: no read, free or pipe */
    rec *arm;
};

typedef struct fslot {
    desync_future_t *f;
    int kind;
    int gid;
    bool done, taken;
    int status;
    void *value;
    rec *r;
    pmeta *pm;
    sslot *ss;
    chmeta *cm;
    void *exp;
    rec *arm;
} fslot;

typedef struct target {
    int gid, perm;
    bool is_obj;
    desync_t *obj;
    desync_queue_t *q;
    checker *chk;
} target;

typedef struct pipemeta {
    checker *chk;
    int src;
    uint32_t last;
} pipemeta;

typedef struct ctx {
    int id;
    size_t nops;
    const uint8_t *ops[MAX_OPS];
    target temp[NTEMP];
    uint32_t seq[NGID];
    int extra[NGID], extraq[NGID];
    fslot f[NF];
    pslot p[NP];
    desync_resumer_t *res[NR];
    chmeta *ch[NCH];
    sslot s[NS];
    rec *inner[NINNER];
    int ninner;
    int spawned;
} ctx;

typedef struct blob {
    struct blob *next;
    _Alignas(max_align_t) unsigned char data[];
} blob;

static struct world {
    bool mt;
    desync_scheduler_t *sched;
    target perm[NPERM];
    ctx c[NCTX];
    uint8_t opbuf[MAX_OPS][4];
    _Atomic(rec *) recs;
    _Atomic(checker *) chks;
    _Atomic(blob *) blobs;
    _Atomic int next_src;
    _Atomic int started;
} W;

static _Thread_local ctx *tls_ctx;
static _Thread_local bool tls_holds;

static void *tmalloc(size_t n) {
    blob *b = calloc(1, sizeof(blob) + n);
    if (!b)
        abort();
    b->next = atomic_load(&W.blobs);
    while (!atomic_compare_exchange_weak(&W.blobs, &b->next, b)) {
    }
    return b->data;
}

static rec *rec_new(int kind) {
    rec *r = calloc(1, sizeof *r);
    if (!r)
        abort();
    r->kind = (uint8_t)kind;
    r->perm = -1;
    atomic_init(&r->ran_at_free, -1);
    atomic_init(&r->frozen, -1);
    r->next = atomic_load(&W.recs);
    while (!atomic_compare_exchange_weak(&W.recs, &r->next, r)) {
    }
    return r;
}

static checker *checker_new(int gid, bool is_obj) {
    checker *c = calloc(1, sizeof *c);
    if (!c)
        abort();
    c->gid = gid;
    c->is_obj = is_obj;
    c->next = atomic_load(&W.chks);
    while (!atomic_compare_exchange_weak(&W.chks, &c->next, c)) {
    }
    return c;
}

static rec *item_new(int src, uint32_t seq) {
    rec *it = rec_new(R_ITEM);
    it->src = src;
    it->seq = seq;
    return it;
}

static int src_new(void) { return atomic_fetch_add(&W.next_src, 1) + 1; }

static uint64_t tmo(uint8_t b) {
    static const uint64_t t[4] = {0, 1000, 10000, 100000};
    return W.mt ? t[b & 3] : 0;
}

/* --------------------------------------------------------------- jobs */

static void job_never(void *arg) {
    (void)arg;
    fail("a job whose call failed ran");
}

static void job_never_obj(void *data, void *arg) {
    (void)data;
    job_never(arg);
}

static void set_exp(rec *r, int status, void *value) {
    r->exp_status = status;
    r->exp_value = value;
    atomic_store(&r->exp_set, 1);
}

/* A record for a job that a job queues on (gid, perm, chk, q). Ordered on
 * lane NCTX + src->perm when the source is a shared target. */
static rec *nested_rec(rec *src, int gid, int perm, checker *chk, desync_queue_t *q,
                       bool definite) {
    rec *n = rec_new(R_JOB);
    n->gid = gid;
    n->perm = perm;
    n->chk = chk;
    n->q = q;
    n->definite = definite;
    if (src->perm >= 0 && perm >= 0) {
        n->lane = (uint8_t)(NCTX + src->perm);
        n->seq = ++src->chk->nested_seq[perm];
    }
    if (definite)
        atomic_fetch_add(&chk->pending, 1);
    return n;
}

static void rec_done(rec *r, bool accepted) {
    if (accepted) {
        atomic_store(&r->accepted, 1);
        return;
    }
    REQUIRE(atomic_load(&r->ran) == 0, "a job ran although its call failed");
    if (r->definite && r->chk)
        atomic_fetch_sub(&r->chk->pending, 1);
    if (r->selfobj)
        desync_release(r->selfobj);
    if (r->selfq)
        desync_queue_release(r->selfq);
    r->selfobj = NULL;
    r->selfq = NULL;
}

static int st_probe(desync_queue_t *q, checker *chk, int gid, int perm);
static desync_future_t *async_q(void *arg);
static desync_future_t *async_obj(void *data, void *arg);
static void job_q(void *arg);
static void job_obj(void *data, void *arg);
static void then_cb(int status, void *value, void *arg);
static rec *then_rec(int fkind, rec *r2);

static target *perm_target(int i) { return &W.perm[i & (NPERM - 1)]; }

/* May a job on queue src_gid sync shared target d now? 1 yes, -1 yes and it
 * must be EDEADLK, 0 no. */
static int nested_sync_ok(rec *r, target *d) {
    if (!W.mt)
        return st_probe(d->q, d->chk, d->gid, d->perm);
    if (d->gid <= r->gid || (tls_ctx && tls_holds) || (!tls_ctx && !FUZZ_WORKER_SYNC))
        return 0;
    return 1;
}

static void nested(rec *r) {
    int k = r->nest & 15;
    target *d = perm_target(r->nest >> 4);
    rec *n;
    int rc;
    desync_future_t *f;
    switch (k) {
    case N_SYNC_SELF:
        rc = desync_queue_sync(r->q, job_never, NULL);
        REQUIRE(rc == DESYNC_EDEADLK, "sync on its own queue from a job returned %d", rc);
        break;
    case N_TRY_SELF:
        rc = desync_queue_try_sync(r->q, job_never, NULL);
        REQUIRE(rc == DESYNC_EDEADLK, "try_sync on its own queue from a job returned %d", rc);
        break;
    case N_WAIT_SELF:
        n = nested_rec(r, r->gid, r->perm, r->chk, r->q, true);
        f = desync_queue_future_desync(r->q, async_q, n);
        rec_done(n, f != NULL);
        if (f) {
            rc =
                (r->nest & 0x40) ? desync_future_wait(f, NULL) : desync_future_wait_for(f, 0, NULL);
            REQUIRE(rc == DESYNC_EDEADLK, "a job waiting on a later job of its queue got %d", rc);
            desync_future_free(f);
        }
        break;
    case N_DESYNC_OTHER:
        n = nested_rec(r, d->gid, d->perm, d->chk, d->q, true);
        rc = d->is_obj ? desync_desync(d->obj, job_obj, n) : desync_queue_desync(d->q, job_q, n);
        check_rc("desync (from a job)", rc, M_OK | M(DESYNC_ENOMEM));
        rec_done(n, rc == 0);
        break;
    case N_SYNC_OTHER: {
        int ok = nested_sync_ok(r, d);
        if (!ok)
            break;
        n = nested_rec(r, d->gid, d->perm, d->chk, d->q, true);
        rc = d->is_obj ? desync_sync(d->obj, job_obj, n) : desync_queue_sync(d->q, job_q, n);
        if (ok < 0)
            REQUIRE(rc == DESYNC_EDEADLK, "sync on a queue in this thread's chain returned %d", rc);
        else
            REQUIRE(rc == 0, "sync from a job (no cycle) returned %d", rc);
        REQUIRE(atomic_load(&n->ran) == (rc == 0), "sync returned %d but its job ran %d times",
                rc, atomic_load(&n->ran));
        rec_done(n, rc == 0);
        break;
    }
    case N_TRY_OTHER:
        n = nested_rec(r, d->gid, d->perm, d->chk, d->q, true);
        rc =
            d->is_obj ? desync_try_sync(d->obj, job_obj, n) : desync_queue_try_sync(d->q, job_q, n);
        check_rc("try_sync (from a job)", rc, M_OK | M(DESYNC_EBUSY) | M(DESYNC_EDEADLK));
        REQUIRE(atomic_load(&n->ran) == (rc == 0), "try_sync returned %d but its job ran %d times",
                rc, atomic_load(&n->ran));
        rec_done(n, rc == 0);
        break;
    case N_DRAIN:
        rc = desync_scheduler_drain(W.sched);
        REQUIRE(rc == DESYNC_EDEADLK, "drain from a job of the scheduler returned %d", rc);
        break;
    case N_SCHED_FREE:
        desync_scheduler_free(W.sched); /* from its own job: ignored */
        break;
    case N_RELEASE_SELF: /* the reference is dropped below */
        break;
    case N_FSYNC_FREE:
        n = nested_rec(r, d->gid, d->perm, d->chk, d->q, false);
        f = d->is_obj ? desync_future_sync(d->obj, async_obj, n)
                      : desync_queue_future_sync(d->q, async_q, n);
        rec_done(n, f != NULL);
        if (f) {
            atomic_store(&n->ran_at_free, atomic_load(&n->ran));
            desync_future_free(f);
        }
        break;
    case N_FDESYNC_DETACH:
        n = nested_rec(r, d->gid, d->perm, d->chk, d->q, true);
        n->amode = (r->nest & 0x40) ? A_READY : A_NULL;
        f = d->is_obj ? desync_future_desync(d->obj, async_obj, n)
                      : desync_queue_future_desync(d->q, async_q, n);
        rec_done(n, f != NULL);
        desync_future_detach(f);
        break;
    case N_THEN_SELF:
        n = nested_rec(r, r->gid, r->perm, r->chk, r->q, true);
        n->amode = (r->nest & 0x40) ? A_READY : A_NULL;
        f = desync_queue_future_desync(r->q, async_q, n);
        rec_done(n, f != NULL);
        if (f) {
            rc = desync_future_then(f, then_cb, then_rec(F_ASYNC, n));
            REQUIRE(rc == 0, "then returned %d", rc);
        }
        break;
    default:
        break;
    }
    if (r->selfobj) /* drop the reference N_WAIT_SELF / N_THEN_SELF used */
        desync_release(r->selfobj);
    if (r->selfq)
        desync_queue_release(r->selfq);
    r->selfobj = NULL;
    r->selfq = NULL;
}

static void job_body(rec *r, void *data, bool with_data) {
    checker *c = r->chk;
    REQUIRE(r->kind == R_JOB, "a job got an argument that is not its record");
    if (with_data)
        REQUIRE(data == c, "a job got another object's data");
    REQUIRE(atomic_fetch_add(&r->ran, 1) == 0, "a job ran twice");
    REQUIRE(atomic_load(&r->ran_at_free) != 0,
            "a future_sync job ran although its future was freed before it started");
    REQUIRE(!atomic_load(&c->destroyed), "a job ran after its object was destroyed");
    REQUIRE(!atomic_exchange(&c->busy, 1), "two jobs of one queue ran at once");
    if (r->seq) {
        REQUIRE(r->seq > c->last[r->lane], "order: job %u of lane %u ran after job %u", r->seq,
                r->lane, c->last[r->lane]);
        c->last[r->lane] = r->seq;
    }
    if (r->definite)
        REQUIRE(atomic_fetch_sub(&c->pending, 1) > 0, "more jobs ran than were queued");
    nested(r);
    atomic_store(&c->busy, 0);
}

static void job_q(void *arg) { job_body(arg, NULL, false); }
static void job_obj(void *data, void *arg) { job_body(arg, data, true); }

typedef struct copyarg {
    rec *r;
    uint8_t pat[56];
} copyarg;

static const size_t copylens[4] = {sizeof(rec *), 24, 32, sizeof(copyarg)};

static void copy_fill(copyarg *a, rec *r) {
    memset(a, 0, sizeof *a);
    a->r = r;
    for (size_t i = 0; i < sizeof a->pat; i++)
        a->pat[i] = (uint8_t)(r->seq * 7 + i);
}

static rec *copy_check(void *arg) {
    REQUIRE((uintptr_t)arg % _Alignof(max_align_t) == 0, "a copied argument is misaligned");
    copyarg *a = arg;
    rec *r = a->r;
    size_t n = r->copylen - offsetof(copyarg, pat);
    for (size_t i = 0; i < n; i++)
        REQUIRE(a->pat[i] == (uint8_t)(r->seq * 7 + i), "a copied argument changed");
    return r;
}

static void job_copy_q(void *arg) { job_body(copy_check(arg), NULL, false); }
static void job_copy_obj(void *data, void *arg) { job_body(copy_check(arg), data, true); }

static desync_future_t *async_ret(rec *r) {
    desync_future_t *f = NULL;
    desync_promise_t *p;
    switch (r->amode) {
    case A_READY:
        f = desync_future_ready(r);
        set_exp(r, 0, f ? r : NULL);
        return f;
    case A_PROMISE: {
        p = desync_promise_new(&f);
        if (!p) {
            set_exp(r, 0, NULL);
            return NULL;
        }
        uintptr_t z = 0;
        if (atomic_compare_exchange_strong(&r->inner, &z, (uintptr_t)p))
            return f; /* the caller sets exp when it completes p */
        /* Abandoned by the caller's cleanup: complete it here. */
        set_exp(r, 0, NULL);
        REQUIRE(desync_promise_complete(p, NULL) == 0, "promise_complete failed");
        return f;
    }
    case A_CANCELLED:
        p = desync_promise_new(&f);
        if (!p) {
            set_exp(r, 0, NULL);
            return NULL;
        }
        REQUIRE(PROMISE_CANCEL(p) == 0, "promise_cancel failed");
        set_exp(r, DESYNC_ECANCELED, NULL);
        return f;
    case A_OTHERQ: {
        target *d = perm_target(r->aq);
        if (d->gid > r->gid) {
            rec *n = nested_rec(r, d->gid, d->perm, d->chk, d->q, true);
            f = desync_queue_future_desync(d->q, async_q, n);
            rec_done(n, f != NULL);
        }
        set_exp(r, 0, NULL);
        return f;
    }
    default:
        set_exp(r, 0, NULL);
        return NULL;
    }
}

static desync_future_t *async_q(void *arg) {
    job_body(arg, NULL, false);
    return async_ret(arg);
}

static desync_future_t *async_obj(void *data, void *arg) {
    job_body(arg, data, true);
    return async_ret(arg);
}

static void settle(rec *t, int status, void *value);

static void *after_body(rec *r, void *data, bool with_data, int status, void *value) {
    job_body(r, data, with_data);
    REQUIRE(r->aw, "an after job without an awaited future");
    settle(r->aw, status, value);
    set_exp(r, 0, r);
    return r;
}

static void *after_q(int status, void *value, void *arg) {
    return after_body(arg, NULL, false, status, value);
}

static void *after_obj(void *data, int status, void *value, void *arg) {
    return after_body(arg, data, true, status, value);
}

static void destroy_chk(void *data) {
    checker *c = data;
    REQUIRE(!atomic_load(&c->busy), "destroy ran while a job of its object ran");
    REQUIRE(atomic_load(&c->pending) == 0, "destroy ran before %ld accepted jobs",
            atomic_load(&c->pending));
    REQUIRE(atomic_fetch_add(&c->destroyed, 1) == 0, "destroy ran twice");
}

/* ----------------------------------------------------- futures: results */

static void arm_wake(void *ctx) {
    rec *a = ctx;
    REQUIRE(a->kind == R_ARM, "a waker got a foreign context");
    REQUIRE(atomic_fetch_add(&a->wakes, 1) == 0, "a waker was called twice");
}

static rec *arm_new(void) { return rec_new(R_ARM); }

/* The waker can no longer be called: remember how often it was. */
static void arm_freeze(rec *a) {
    if (a)
        atomic_store(&a->frozen, atomic_load(&a->wakes));
}

static void item_free_cb(void *item) {
    if (!item)
        return;
    rec *it = item;
    REQUIRE(it->kind == R_ITEM, "item_free got something that is not an item");
    REQUIRE(atomic_fetch_add(&it->fates, 1) == 0, "an item was freed after being delivered");
}

/* An item (or the end) read from ss, by the caller or a then/after. */
static void stream_got(sslot *ss, int rc, void *item) {
    if (rc == DESYNC_EOF) {
        if (ss->kind == S_CHAN) {
            REQUIRE(atomic_load(&ss->cm->handles) == 0, "EOF while a sending handle is open");
            REQUIRE(atomic_load(&ss->cm->inflight) == 0,
                    "EOF before %ld accepted items were read", atomic_load(&ss->cm->inflight));
        }
        if (ss->kind == S_ARRAY || ss->kind == S_USER)
            REQUIRE(ss->nread == ss->n, "EOF after %u of %u items", ss->nread, ss->n);
        ss->ended = true;
        return;
    }
    if (rc != 0)
        return;
    REQUIRE(!ss->ended, "an item after EOF");
    if (!item) {
        REQUIRE(ss->may_null, "a NULL item from a stream that never carries one");
        return;
    }
    rec *it = item;
    REQUIRE(it->kind == R_ITEM && it->src == ss->src, "an item of another stream");
    REQUIRE(it->seq > ss->last, "items out of order: %u after %u", it->seq, ss->last);
    ss->last = it->seq;
    ss->nread++;
    REQUIRE(atomic_fetch_add(&it->fates, 1) == 0, "an item was delivered twice");
    if (ss->kind == S_CHAN)
        atomic_fetch_sub(&ss->cm->inflight, 1);
}

static void send_outcome(rec *it, chmeta *cm, int status) {
    int exp = OUT_PENDING;
    bool taken = status == 0;
    if (taken)
        atomic_store(&it->accepted, 1);
    else if (it->counted)
        atomic_fetch_sub(&cm->inflight, 1);
    atomic_compare_exchange_strong(&it->outcome, &exp, taken ? OUT_TAKEN : OUT_REFUSED);
}

/* Is (status, value) what a future of this kind may complete with? */
static void check_result(int kind, rec *r, pmeta *pm, void *exp, int status, void *value) {
    switch (kind) {
    case F_READY:
        REQUIRE(status == 0 && value == exp, "a ready future gave %d/%p", status, value);
        break;
    case F_PROMISE:
        REQUIRE(pm->state != 0, "a promise's future completed before its promise");
        if (pm->state == 1)
            REQUIRE(status == 0 && value == pm->value, "a promise's future gave %d/%p", status,
                    value);
        else
            REQUIRE(status == DESYNC_ECANCELED && !value, "a cancelled promise's future gave %d",
                    status);
        break;
    case F_ASYNC:
    case F_FSYNC:
        REQUIRE(atomic_load(&r->ran) == 1,
                "an async job's future completed but the job ran %d times", atomic_load(&r->ran));
        REQUIRE(atomic_load(&r->exp_set), "an async job's future completed before its result");
        REQUIRE(status == r->exp_status && value == r->exp_value,
                "an async job's future gave %d/%p, expected %d/%p", status, value, r->exp_status,
                r->exp_value);
        break;
    case F_AFTER:
        REQUIRE(atomic_load(&r->ran) == 1 && status == 0 && value == r,
                "an after future gave %d/%p (job ran %d)", status, value, atomic_load(&r->ran));
        break;
    case F_SUSPEND:
        REQUIRE(status == 0 && value, "a suspend future gave %d/%p", status, value);
        break;
    case F_SEND:
        REQUIRE((status == 0 || status == DESYNC_ECANCELED) && !value,
                "a send future gave %d/%p", status, value);
        break;
    case F_NEXT:
        REQUIRE(status == 0 || (status == DESYNC_EOF && !value), "a next_future gave %d/%p",
                status, value);
        break;
    default:
        fail("a future of unknown kind %d", kind);
    }
}

static rec *then_rec(int fkind, rec *r2) {
    rec *t = rec_new(R_THEN);
    t->fkind = (uint8_t)fkind;
    t->r2 = r2;
    t->expect_calls = 1;
    return t;
}

/* A then-callback, or an after job reporting what it awaited: checks the
 * result and does what observing it means (resume, take the item). */
static void settle(rec *t, int status, void *value) {
    REQUIRE(t->kind == R_THEN, "a callback got a foreign argument");
    REQUIRE(atomic_fetch_add(&t->calls, 1) == 0, "a then-callback ran twice");
    if (t->obs_done) {
        REQUIRE(status == t->obs_status && value == t->obs_value,
                "a future gave %d/%p after %d/%p", status, value, t->obs_status, t->obs_value);
        return;
    }
    check_result(t->fkind, t->r2, t->pm, t->exp, status, value);
    switch (t->fkind) {
    case F_SUSPEND:
        if (!t->resumer_taken)
            desync_resumer_resume(value);
        break;
    case F_NEXT:
        stream_got(t->ss, status, value);
        atomic_store(&t->ss->nf, 0);
        break;
    case F_SEND:
        send_outcome(t->r2, t->cm, status);
        break;
    default:
        break;
    }
}

static void then_cb(int status, void *value, void *arg) { settle(arg, status, value); }

static rec *settle_rec(fslot *fs) {
    rec *t = then_rec(fs->kind, fs->r);
    t->pm = fs->pm;
    t->ss = fs->ss;
    t->cm = fs->cm;
    t->exp = fs->exp;
    t->resumer_taken = fs->taken;
    if (fs->done) {
        t->obs_done = true;
        t->obs_status = fs->status;
        t->obs_value = fs->value;
    }
    return t;
}

static void resumer_keep(ctx *c, desync_resumer_t *r) {
    for (int i = 0; i < NR; i++)
        if (!c->res[i]) {
            c->res[i] = r;
            return;
        }
    desync_resumer_resume(r);
}

/* The caller saw fs complete with (status, value). */
static void observe(ctx *c, fslot *fs, int status, void *value) {
    if (fs->done) {
        REQUIRE(status == fs->status && value == fs->value,
                "a future gave %d/%p after %d/%p", status, value, fs->status, fs->value);
        return;
    }
    check_result(fs->kind, fs->r, fs->pm, fs->exp, status, value);
    fs->done = true;
    fs->status = status;
    fs->value = value;
    switch (fs->kind) {
    case F_SUSPEND:
        fs->taken = true;
        resumer_keep(c, value);
        break;
    case F_NEXT:
        stream_got(fs->ss, status, value);
        atomic_store(&fs->ss->nf, 0);
        break;
    case F_SEND:
        send_outcome(fs->r, fs->cm, status);
        break;
    default:
        break;
    }
}

enum { D_FREE, D_DETACH, D_THEN };

static void dispose(ctx *c, fslot *fs, int how) {
    (void)c;
    if (!fs->f) {
        if (how == D_THEN)
            REQUIRE(desync_future_then(NULL, then_cb, NULL) == DESYNC_EINVAL, "then(NULL)");
        else if (how == D_DETACH)
            desync_future_detach(NULL);
        else
            desync_future_free(NULL);
        return;
    }
    bool pending = !fs->done;
    /* A lost resumer or item would stall a queue or leak: take them. */
    if (pending && (fs->kind == F_SUSPEND || fs->kind == F_NEXT))
        how = D_THEN;
    switch (fs->kind) {
    case F_FSYNC:
        if (how == D_FREE)
            atomic_store(&fs->r->ran_at_free, atomic_load(&fs->r->ran));
        else
            atomic_store(&fs->r->must_run, 1);
        break;
    case F_PROMISE:
        fs->pm->fut_alive = false;
        break;
    case F_SEND:
        if (pending && how != D_THEN) {
            int exp = OUT_PENDING;
            atomic_compare_exchange_strong(&fs->r->outcome, &exp, OUT_UNKNOWN);
        }
        break;
    default:
        break;
    }
    if (how == D_THEN) {
        rec *t = settle_rec(fs);
        if (fs->kind == F_PROMISE)
            fs->pm->then = t;
        int rc = desync_future_then(fs->f, then_cb, t);
        REQUIRE(rc == 0, "then returned %d", rc);
    } else if (how == D_DETACH) {
        desync_future_detach(fs->f);
        arm_freeze(fs->arm);
    } else {
        desync_future_free(fs->f);
        arm_freeze(fs->arm);
    }
    memset(fs, 0, sizeof *fs);
}

/* Takes the future out of fs to be awaited by an after on t: returns it
 * (NULL when it cannot be handed over safely: then it is disposed) and in
 * *aw the record the after job settles. */
static desync_future_t *handoff(ctx *c, fslot *fs, target *t, rec **aw) {
    *aw = NULL;
    if (!fs->f)
        return NULL;
    bool queued = t->q != NULL; /* else desync_after frees it at once */
    /* Waits point to higher queues only (see the top comment): an after on
     * t may wait for a queue-bound future of a higher queue, or of its own
     * queue when that is no future_sync (its node is ahead of the after's);
     * not for a pending send or next_future (a pipe's queue may feed it). */
    bool fsync_waits = fs->kind == F_FSYNC && !FUZZ_AFTER_TAKES_FSYNC && !atomic_load(&fs->r->ran);
    bool cycle = queued && !fs->done &&
                 (((fs->kind == F_ASYNC || fs->kind == F_AFTER || fs->kind == F_FSYNC) &&
                   fs->gid < t->gid) ||
                  fsync_waits || fs->kind == F_SEND || fs->kind == F_NEXT);
    if (cycle || (fs->kind == F_SUSPEND && !fs->done) || (fs->kind == F_NEXT && !fs->done)) {
        dispose(c, fs, fs->kind == F_NEXT || fs->kind == F_SUSPEND ? D_THEN : D_FREE);
        return NULL;
    }
    switch (fs->kind) {
    case F_FSYNC:
        if (queued)
            atomic_store(&fs->r->must_run, 1);
        else
            atomic_store(&fs->r->ran_at_free, atomic_load(&fs->r->ran));
        break;
    case F_PROMISE:
        fs->pm->handed = queued;
        fs->pm->fut_alive = false;
        break;
    case F_SEND:
        if (!fs->done && !queued) {
            int exp = OUT_PENDING;
            atomic_compare_exchange_strong(&fs->r->outcome, &exp, OUT_UNKNOWN);
        }
        break;
    default:
        break;
    }
    rec *s = settle_rec(fs);
    if (!queued)
        s->expect_calls = 0;
    desync_future_t *f = fs->f;
    memset(fs, 0, sizeof *fs); /* its waker may still be called once */
    *aw = s;
    return f;
}

/* ---------------------------------------------------------- the probe */

static desync_future_t *probe_job(void *arg) {
    job_body(arg, NULL, false);
    set_exp(arg, 0, NULL);
    return NULL;
}

/* Single-threaded: can a sync on q run now? Waits with timeout 0 for a job
 * queued behind everything: 1 it ran (q is free), 0 q is held, -1 q is in
 * this thread's chain (a sync must say EDEADLK). */
static int st_probe(desync_queue_t *q, checker *chk, int gid, int perm) {
    if (!q)
        return 0;
    rec *r = rec_new(R_JOB);
    r->definite = true;
    r->chk = chk;
    r->q = q;
    r->gid = gid;
    r->perm = perm;
    atomic_fetch_add(&chk->pending, 1);
    desync_future_t *f = desync_queue_future_desync(q, probe_job, r);
    rec_done(r, f != NULL);
    if (!f)
        return 0;
    int rc = desync_future_wait_for(f, 0, NULL);
    check_rc("future_wait_for (probe)", rc, M_OK | M(DESYNC_ETIMEDOUT) | M(DESYNC_EDEADLK));
    desync_future_free(f);
    return rc == 0 ? 1 : rc == DESYNC_EDEADLK ? -1 : 0;
}

/* ------------------------------------------------------------ holds */

static bool ctx_has_holds(ctx *c) {
    if (c->ninner)
        return true;
    for (int i = 0; i < NP; i++)
        if (c->p[i].p && c->p[i].pm->handed)
            return true;
    for (int i = 0; i < NF; i++)
        if ((c->f[i].kind == F_FSYNC && !c->f[i].done) ||
            (c->f[i].kind == F_SUSPEND && !c->f[i].taken))
            return true;
    for (int i = 0; i < NR; i++)
        if (c->res[i])
            return true;
    return false;
}

/* May the caller block on t now? 1 yes, -1 yes and it must be EDEADLK. */
static int can_block_on(ctx *c, target *t) {
    if (W.mt)
        return ctx_has_holds(c) ? 0 : 1;
    return st_probe(t->q, t->chk, t->gid, t->perm);
}

/* ------------------------------------------------------- caller ops */

enum {
    OP_DESYNC,
    OP_SYNC,
    OP_TRY_SYNC,
    OP_FUT,
    OP_AFTER,
    OP_SUSPEND,
    OP_RESUME,
    OP_WAIT,
    OP_POLL,
    OP_THEN,
    OP_DETACH,
    OP_FREE,
    OP_FD,
    OP_READY,
    OP_PROMISE_NEW,
    OP_PROMISE_DONE,
    OP_INNER,
    OP_CHAN_NEW,
    OP_CHAN_RETAIN,
    OP_CHAN_CLOSE,
    OP_SEND,
    OP_READ,
    OP_STREAM_NEW,
    OP_STREAM_FREE,
    OP_PIPE,
    OP_REF,
    OP_TEMP,
    OP_DRAIN,
    OP_SCHED,
    OP_MISC,
    OP_COUNT
};

static target *pick_target(ctx *c, uint8_t a) {
    unsigned i = a % (NPERM + NTEMP);
    return i < NPERM ? &W.perm[i] : &c->temp[i - NPERM];
}

static rec *top_rec(ctx *c, target *t, uint8_t nest, bool definite) {
    rec *r = rec_new(R_JOB);
    r->gid = t->gid;
    r->perm = t->perm;
    r->chk = t->chk;
    r->q = t->q;
    r->lane = (uint8_t)c->id;
    r->seq = ++c->seq[t->gid];
    r->definite = definite;
    r->nest = nest;
    /* Jobs that queue on their own queue, or release it, own a reference
     * for that (queueing on an object whose last release has begun is use
     * after release); jobs that may never run (future_sync) must not. */
    int k = nest & 15;
    if (k == N_RELEASE_SELF || k == N_WAIT_SELF || k == N_THEN_SELF) {
        if (!definite)
            r->nest = N_NONE;
        else if (t->obj)
            r->selfobj = desync_retain(t->obj);
        else if (t->q)
            r->selfq = desync_queue_retain(t->q);
    }
    if (definite && t->chk)
        atomic_fetch_add(&t->chk->pending, 1);
    return r;
}

static void op_desync(ctx *c, uint8_t a, uint8_t b, uint8_t cc) {
    target *t = pick_target(c, a);
    rec *r = top_rec(c, t, b, true);
    bool viaq = !t->is_obj || (cc & 0x80);
    int rc;
    if (cc & 1) {
        copyarg buf;
        r->copylen = copylens[(cc >> 1) & 3];
        copy_fill(&buf, r);
        rc = viaq ? desync_queue_desync_copy(t->q, job_copy_q, &buf, r->copylen)
                  : desync_desync_copy(t->obj, job_copy_obj, &buf, r->copylen);
        memset(&buf, 0xee, sizeof buf); /* the job must use its copy */
    } else {
        rc = viaq ? desync_queue_desync(t->q, job_q, r) : desync_desync(t->obj, job_obj, r);
    }
    check_rc("desync", rc, M_OK | M(DESYNC_EINVAL) | M(DESYNC_ENOMEM));
    REQUIRE((rc == DESYNC_EINVAL) == !t->q, "desync on %s returned %d", t->q ? "a queue" : "NULL",
            rc);
    rec_done(r, rc == 0);
}

static void op_sync(ctx *c, uint8_t a, uint8_t b, uint8_t cc, bool try_only) {
    target *t = pick_target(c, a);
    bool viaq = !t->is_obj || (cc & 0x80);
    int rc;
    if (!try_only && t->q) {
        int ok = can_block_on(c, t);
        if (!ok)
            return;
        REQUIRE(ok > 0, "a caller's probe found its own queue in a chain");
    }
    rec *r = top_rec(c, t, b, true);
    if (try_only) {
        rc = viaq ? desync_queue_try_sync(t->q, job_q, r) : desync_try_sync(t->obj, job_obj, r);
        check_rc("try_sync", rc, M_OK | M(DESYNC_EINVAL) | M(DESYNC_EBUSY) | M(DESYNC_EDEADLK));
        REQUIRE(rc != DESYNC_EDEADLK, "try_sync from a caller (no job) returned EDEADLK");
    } else {
        rc = viaq ? desync_queue_sync(t->q, job_q, r) : desync_sync(t->obj, job_obj, r);
        check_rc("sync", rc, M_OK | M(DESYNC_EINVAL) | M(DESYNC_EDEADLK));
        REQUIRE(rc != DESYNC_EDEADLK, "sync from a caller (no job) returned EDEADLK");
    }
    REQUIRE((rc == DESYNC_EINVAL) == !t->q, "sync on %s returned %d", t->q ? "a queue" : "NULL",
            rc);
    REQUIRE(atomic_load(&r->ran) == (rc == 0), "sync returned %d but its job ran %d times", rc,
            atomic_load(&r->ran));
    rec_done(r, rc == 0);
}

static void inner_resolve(ctx *c, int i, bool cancel) {
    rec *r = c->inner[i];
    c->inner[i] = c->inner[--c->ninner];
    uintptr_t p = atomic_exchange(&r->inner, INNER_ABANDONED);
    if (p == 0 || p == INNER_ABANDONED)
        return; /* not run yet: the job completes its own promise */
    if (cancel)
        set_exp(r, DESYNC_ECANCELED, NULL);
    else
        set_exp(r, 0, r);
    int rc = cancel ? PROMISE_CANCEL((desync_promise_t *)p)
                    : desync_promise_complete((desync_promise_t *)p, r);
    REQUIRE(rc == 0, "completing a job's promise returned %d", rc);
}

static void op_fut(ctx *c, uint8_t a, uint8_t b, uint8_t cc) {
    target *t = pick_target(c, a);
    fslot *fs = &c->f[b % NF];
    bool fsync = b & 0x40, viaq = !t->is_obj || (b & 0x80);
    static const uint8_t modes[8] = {A_NULL, A_READY, A_PROMISE, A_CANCELLED,
                                     A_OTHERQ, A_READY, A_NULL, A_PROMISE};
    dispose(c, fs, D_FREE);
    rec *r = top_rec(c, t, cc, !fsync);
    r->amode = modes[(b >> 3) & 7];
    r->aq = (uint8_t)((cc >> 4) & 3);
    if (r->amode == A_PROMISE && c->ninner == NINNER)
        inner_resolve(c, 0, false);
    desync_future_t *f;
    if (fsync)
        f = viaq ? desync_queue_future_sync(t->q, async_q, r)
                 : desync_future_sync(t->obj, async_obj, r);
    else
        f = viaq ? desync_queue_future_desync(t->q, async_q, r)
                 : desync_future_desync(t->obj, async_obj, r);
    REQUIRE(!f == !t->q, "future_%s on %s returned %p", fsync ? "sync" : "desync",
            t->q ? "a queue" : "NULL", (void *)f);
    rec_done(r, f != NULL);
    if (!f)
        return;
    fs->f = f;
    fs->kind = fsync ? F_FSYNC : F_ASYNC;
    fs->r = r;
    fs->gid = t->gid;
    if (r->amode == A_PROMISE)
        c->inner[c->ninner++] = r;
}

static void op_after(ctx *c, uint8_t a, uint8_t b, uint8_t cc) {
    target *t = pick_target(c, a);
    fslot *src = &c->f[b % NF], *dst = &c->f[(b >> 3) % NF];
    bool viaq = !t->is_obj || (cc & 0x80);
    rec *aw;
    desync_future_t *awf = handoff(c, src, t, &aw);
    dispose(c, dst, D_FREE);
    rec *r = top_rec(c, t, cc & 0x7f, true);
    r->aw = aw;
    desync_future_t *f = viaq ? desync_queue_after(t->q, awf, after_q, r)
                              : desync_after(t->obj, awf, after_obj, r);
    REQUIRE(!f == (!t->q || !awf), "after returned %p", (void *)f);
    rec_done(r, f != NULL);
    if (!f)
        return;
    dst->f = f;
    dst->kind = F_AFTER;
    dst->r = r;
    dst->gid = t->gid;
}

static void op_suspend(ctx *c, uint8_t a, uint8_t b) {
    target *t = pick_target(c, a);
    fslot *fs = &c->f[b % NF];
    dispose(c, fs, D_FREE);
    desync_future_t *f = desync_queue_suspend(t->q);
    REQUIRE(!f == !t->q, "queue_suspend returned %p", (void *)f);
    if (!f)
        return;
    fs->f = f;
    fs->kind = F_SUSPEND;
    fs->gid = t->gid;
}

static void op_wait(ctx *c, uint8_t a, uint8_t b) {
    fslot *fs = &c->f[a % NF];
    void *v = NULL;
    bool want = !(b & 0x40);
    int rc;
    if (!fs->f) {
        rc = (b & 0x80) ? desync_future_wait(NULL, &v) : desync_future_wait_for(NULL, 0, &v);
        REQUIRE(rc == DESYNC_EINVAL, "wait(NULL) returned %d", rc);
        return;
    }
    if ((b & 0x80) && fs->done)
        rc = desync_future_wait(fs->f, want ? &v : NULL);
    else
        rc = desync_future_wait_for(fs->f, tmo(b), want ? &v : NULL);
    check_rc("future_wait_for", rc,
             M_OK | M(DESYNC_ECANCELED) | M(DESYNC_EOF) | M(DESYNC_ETIMEDOUT));
    if (rc == DESYNC_ETIMEDOUT) {
        REQUIRE(!fs->done, "a wait on a complete future timed out");
        return;
    }
    if (want)
        observe(c, fs, rc, v);
    else if (fs->done)
        REQUIRE(rc == fs->status, "a future gave %d after %d", rc, fs->status);
}

static void op_poll(ctx *c, uint8_t a, uint8_t b) {
    fslot *fs = &c->f[a % NF];
    void *v = NULL;
    rec *arm = (b & 1) ? arm_new() : NULL;
    desync_waker_t wk = {arm_wake, arm};
    int rc = desync_future_poll(fs->f, &v, arm ? &wk : NULL);
    if (!fs->f) {
        REQUIRE(rc == DESYNC_EINVAL, "poll(NULL) returned %d", rc);
        arm_freeze(arm);
        return;
    }
    check_rc("future_poll", rc, M_OK | M(DESYNC_ECANCELED) | M(DESYNC_EOF) | M(DESYNC_EAGAIN));
    if (rc == DESYNC_EAGAIN) {
        REQUIRE(!fs->done, "poll of a complete future returned EAGAIN");
        arm_freeze(fs->arm); /* replaced: never called from now on */
        fs->arm = arm;
        return;
    }
    arm_freeze(arm); /* complete: this poll's waker is never called */
    if (fs->arm && !fs->done)
        REQUIRE(atomic_load(&fs->arm->wakes) == 1,
                "a future completed after a poll left a waker, which was not called");
    arm_freeze(fs->arm);
    fs->arm = NULL;
    observe(c, fs, rc, v);
}

static void op_fd(ctx *c, uint8_t a) {
    fslot *fs = &c->f[a % NF];
    int fd = desync_future_fd(fs->f);
    if (!fs->f) {
        REQUIRE(fd == DESYNC_EINVAL, "future_fd(NULL) returned %d", fd);
        return;
    }
    if (fd < 0) {
        check_rc("future_fd", fd, M(DESYNC_ENOMEM) | M(DESYNC_EAGAIN) | M(DESYNC_EINVAL));
        return;
    }
    if (fs->done) {
        struct pollfd p = {fd, POLLIN, 0};
        int n = poll(&p, 1, W.mt ? 2000 : 0);
        REQUIRE(n == 1 && (p.revents & POLLIN), "the fd of a complete future is not readable");
    }
}

static void op_ready(ctx *c, uint8_t a, uint8_t b) {
    fslot *fs = &c->f[a % NF];
    dispose(c, fs, D_FREE);
    void *v = (b & 1) ? NULL : (void *)(uintptr_t)(0x1000 + b);
    fs->f = desync_future_ready(v);
    REQUIRE(fs->f, "future_ready returned NULL");
    fs->kind = F_READY;
    fs->exp = v;
}

static void promise_resolve(pslot *ps, bool cancel, uint8_t tag) {
    pmeta *pm = ps->pm;
    pm->state = cancel ? 2 : 1;
    pm->value = cancel ? NULL : (void *)(uintptr_t)(0x2000 + tag);
    int rc = cancel ? PROMISE_CANCEL(ps->p) : desync_promise_complete(ps->p, pm->value);
    REQUIRE(rc == 0, "promise_%s returned %d", cancel ? "cancel" : "complete", rc);
    ps->consumed = ps->p;
    ps->consumed_pm = pm;
    ps->p = NULL;
    ps->pm = NULL;
}

static void op_promise_new(ctx *c, uint8_t a, uint8_t b) {
    pslot *ps = &c->p[a % NP];
    if (b & 0x80) {
        REQUIRE(desync_promise_new(NULL) == NULL, "promise_new(NULL) returned a promise");
        return;
    }
    if (ps->p)
        promise_resolve(ps, false, b);
    fslot *fs = &c->f[b % NF];
    dispose(c, fs, D_FREE);
    desync_future_t *f = NULL;
    desync_promise_t *p = desync_promise_new(&f);
    REQUIRE(p && f, "promise_new failed");
    pmeta *pm = tmalloc(sizeof *pm);
    pm->fut_alive = true;
    ps->p = p;
    ps->pm = pm;
    ps->consumed = NULL;
    fs->f = f;
    fs->kind = F_PROMISE;
    fs->pm = pm;
}

/* Completing a promise serves its future on the calling thread: complete,
 * its poll waker called, its then-callback run. */
static void check_promise_served(ctx *c, pmeta *pm) {
    if (pm->then)
        REQUIRE(atomic_load(&pm->then->calls) == 1,
                "a then-callback did not run inside promise_complete");
    for (int i = 0; i < NF; i++) {
        fslot *fs = &c->f[i];
        if (fs->kind != F_PROMISE || fs->pm != pm || fs->done)
            continue;
        if (fs->arm)
            REQUIRE(atomic_load(&fs->arm->wakes) == 1,
                    "a poll waker was not called inside promise_complete");
        void *v = NULL;
        int rc = desync_future_poll(fs->f, &v, NULL);
        REQUIRE(rc != DESYNC_EAGAIN, "a future is pending after its promise completed");
        arm_freeze(fs->arm);
        fs->arm = NULL;
        observe(c, fs, rc, v);
    }
}

static void op_promise_done(ctx *c, uint8_t a, uint8_t b) {
    pslot *ps = &c->p[a % NP];
    bool cancel = b & 1;
    if (ps->p) {
        pmeta *pm = ps->pm;
        promise_resolve(ps, cancel, b);
        check_promise_served(c, pm);
        return;
    }
#if FUZZ_MISUSE_CHECKS
    if (ps->consumed && ps->consumed_pm->fut_alive) {
        int rc = cancel ? desync_promise_cancel(ps->consumed)
                        : desync_promise_complete(ps->consumed, (void *)1);
        REQUIRE(rc == DESYNC_EINVAL, "a second %s of a promise returned %d",
                cancel ? "cancel" : "complete", rc);
        return;
    }
#endif
    if (cancel) {
        int rc = PROMISE_CANCEL(NULL);
        REQUIRE(rc == 0 || rc == DESYNC_EINVAL, "promise_cancel(NULL) returned %d", rc);
    } else {
        REQUIRE(desync_promise_complete(NULL, NULL) == DESYNC_EINVAL, "promise_complete(NULL)");
    }
}

/* ----------------------------------------------------------- streams */

static void stream_slot_free(sslot *ss) {
    if (!ss->s) {
        desync_stream_free(NULL);
        return;
    }
    REQUIRE(!atomic_load(&ss->nf), "harness: freeing a stream with a pending next_future");
    desync_stream_free(ss->s);
    arm_freeze(ss->arm);
    if (ss->kind == S_CHAN) {
        ss->cm->rx = RX_FREED;
        ss->cm->ss = NULL;
    }
    memset(ss, 0, sizeof *ss);
}

static void chan_close_all(chmeta *cm) {
    while (atomic_load(&cm->handles) > 0) {
        atomic_fetch_sub(&cm->handles, 1);
        desync_channel_close(cm->c);
    }
}

static void op_chan_new(ctx *c, uint8_t a, uint8_t b, uint8_t cc) {
    size_t cap = b & 3;
    if (b & 0x80) {
        REQUIRE(desync_channel_new(cap, NULL) == NULL, "channel_new(NULL receiver)");
        return;
    }
    sslot *ss = &c->s[cc % NS];
    if (atomic_load(&ss->nf))
        return;
    chmeta **slot = &c->ch[a % NCH];
    if (*slot)
        chan_close_all(*slot);
    *slot = NULL;
    stream_slot_free(ss);
    desync_stream_t *rx = NULL;
    desync_channel_t *ch = desync_channel_new(cap, &rx);
    REQUIRE(ch && rx, "channel_new failed");
    chmeta *cm = tmalloc(sizeof *cm);
    cm->c = ch;
    cm->cap = cap;
    cm->src = src_new();
    cm->rx = RX_SLOT;
    atomic_store(&cm->handles, 1);
    desync_stream_set_item_free(rx, item_free_cb);
    ss->s = rx;
    ss->kind = S_CHAN;
    ss->src = cm->src;
    ss->cm = cm;
    cm->ss = ss;
    *slot = cm;
}

static void op_chan_retain(ctx *c, uint8_t a) {
    chmeta *cm = c->ch[a % NCH];
    if (!cm) {
        REQUIRE(desync_channel_retain(NULL) == NULL, "channel_retain(NULL)");
        return;
    }
    if (atomic_load(&cm->handles) > 0) {
        if (atomic_load(&cm->handles) >= MAX_EXTRA)
            return;
        REQUIRE(desync_channel_retain(cm->c) == cm->c, "channel_retain returned another channel");
        atomic_fetch_add(&cm->handles, 1);
        return;
    }
#if FUZZ_MISUSE_CHECKS
    if (cm->rx == RX_SLOT)
        REQUIRE(desync_channel_retain(cm->c) == NULL, "channel_retain after the last close");
#endif
}

static void op_chan_close(ctx *c, uint8_t a) {
    chmeta *cm = c->ch[a % NCH];
    if (!cm) {
        desync_channel_close(NULL);
        return;
    }
    if (atomic_load(&cm->handles) > 0) {
        atomic_fetch_sub(&cm->handles, 1);
        desync_channel_close(cm->c);
        return;
    }
#if FUZZ_MISUSE_CHECKS
    if (cm->rx == RX_SLOT)
        desync_channel_close(cm->c); /* one close too many: ignored */
#endif
}

/* A channel wakes its reader inside the send that gave it an item (or a
 * waiting sender): the waker of the reader's last poll has been called, and
 * a pending next_future has completed. */
static void check_reader_woken(ctx *c, chmeta *cm) {
    sslot *ss = cm->ss;
    if (cm->rx != RX_SLOT || !ss)
        return;
    if (ss->arm) {
        REQUIRE(atomic_load(&ss->arm->wakes) == 1,
                "a send gave a channel an item but its reader's waker was not called");
        ss->arm = NULL; /* used up */
    }
    if (!atomic_load(&ss->nf))
        return;
    for (int i = 0; i < NF; i++) {
        fslot *fs = &c->f[i];
        if (fs->kind == F_NEXT && fs->ss == ss && !fs->done) {
            void *v = NULL;
            int rc = desync_future_poll(fs->f, &v, NULL);
            REQUIRE(rc != DESYNC_EAGAIN,
                    "a send gave a channel an item but the reader's next_future is pending");
            observe(c, fs, rc, v);
            arm_freeze(fs->arm);
            fs->arm = NULL;
        }
    }
    REQUIRE(!atomic_load(&ss->nf), "a send gave a channel an item but its next_future's then "
                                   "callback did not run");
}

static void op_send(ctx *c, uint8_t a, uint8_t b, uint8_t cc) {
    chmeta *cm = c->ch[a % NCH];
    int how = b % 3;
    if (!cm) {
        if (how == 1)
            REQUIRE(desync_channel_send_future(NULL, NULL) == NULL, "send_future(NULL)");
        else
            REQUIRE((how ? desync_channel_send(NULL, NULL) : desync_channel_try_send(NULL, NULL)) ==
                        DESYNC_EINVAL,
                    "send(NULL)");
        return;
    }
    bool closed = atomic_load(&cm->handles) == 0;
    if (closed && (!FUZZ_MISUSE_CHECKS || cm->rx != RX_SLOT))
        return; /* the channel's memory may be gone */
    bool gone = cm->rx == RX_FREED, exact = cm->rx != RX_PIPE;
    if (how == 2 && !closed && !gone &&
        !(cm->rx == RX_SLOT && cm->cap > 0 && atomic_load(&cm->inflight) < (long)cm->cap))
        how = 0; /* it could block for good: try instead */
    rec *it = item_new(cm->src, ++cm->seq);
    it->counted = !closed; /* after the last close nothing is taken */
    if (it->counted)
        atomic_fetch_add(&cm->inflight, 1);
    if (how == 1) {
        fslot *fs = &c->f[cc % NF];
        dispose(c, fs, D_FREE);
        desync_future_t *f = desync_channel_send_future(cm->c, it);
        REQUIRE(f, "send_future returned NULL");
        fs->f = f;
        fs->kind = F_SEND;
        fs->r = it;
        fs->cm = cm;
        if (!closed && !gone)
            check_reader_woken(c, cm);
        return;
    }
    int rc = how ? desync_channel_send(cm->c, it) : desync_channel_try_send(cm->c, it);
    check_rc(how ? "channel_send" : "channel_try_send", rc,
             M_OK | M(DESYNC_EPIPE) | (how ? 0 : M(DESYNC_EAGAIN)));
    if (closed)
        REQUIRE(rc == DESYNC_EPIPE, "send after the last close returned %d", rc);
    else if (exact)
        REQUIRE((rc == DESYNC_EPIPE) == gone, "send returned %d with the reader %s", rc,
                gone ? "freed" : "alive");
    if (rc == 0) {
        atomic_store(&it->accepted, 1);
        check_reader_woken(c, cm);
    } else if (it->counted) {
        atomic_fetch_sub(&cm->inflight, 1);
    }
}

static int user_poll(void *self, void **item, const desync_waker_t *w) {
    (void)w;
    rec *u = self;
    REQUIRE(!atomic_load(&u->calls), "a user stream was polled after its free");
    if (u->i == u->n)
        return DESYNC_EOF;
    rec *it = item_new(u->src, ++u->i);
    atomic_store(&it->accepted, 1);
    *item = it;
    return 0;
}

static void user_free(void *self) {
    rec *u = self;
    REQUIRE(atomic_fetch_add(&u->calls, 1) == 0, "a user stream was freed twice");
}

static const desync_stream_ops_t user_ops = {user_poll, user_free};
static const desync_stream_ops_t null_ops = {NULL, user_free};

static void op_stream_new(ctx *c, uint8_t a, uint8_t b, uint8_t cc) {
    sslot *ss = &c->s[a % NS];
    uint32_t n = cc % 8;
    if (atomic_load(&ss->nf))
        return;
    switch (b % 4) {
    case 2:
        REQUIRE(desync_stream_from_array(NULL, n + 1) == NULL, "stream_from_array(NULL, n)");
        REQUIRE(desync_stream_new(NULL, NULL) == NULL, "stream_new(NULL)");
        REQUIRE(desync_stream_new(&null_ops, NULL) == NULL, "stream_new(no poll_next)");
        return;
    case 3: {
        desync_stream_t *s = desync_stream_from_array(NULL, 0);
        REQUIRE(s, "stream_from_array(NULL, 0) failed");
        void *item = (void *)1;
        REQUIRE(desync_stream_try_next(s, &item) == DESYNC_EOF, "an empty array stream had items");
        desync_stream_free(s);
        return;
    }
    default:
        break;
    }
    stream_slot_free(ss);
    int src = src_new();
    desync_stream_t *s;
    if (b % 4 == 0) {
        void *items[8];
        for (uint32_t i = 0; i < n; i++) {
            rec *it = item_new(src, i + 1);
            atomic_store(&it->accepted, 1);
            items[i] = it;
        }
        s = desync_stream_from_array(items, n);
        ss->kind = S_ARRAY;
    } else {
        rec *u = rec_new(R_USER);
        u->src = src;
        u->n = n;
        u->expect_calls = 1;
        s = desync_stream_new(&user_ops, u);
        ss->kind = S_USER;
    }
    REQUIRE(s, "creating a stream failed");
    desync_stream_set_item_free(s, item_free_cb);
    ss->s = s;
    ss->src = src;
    ss->n = n;
}

static void op_read(ctx *c, uint8_t a, uint8_t b, uint8_t cc) {
    sslot *ss = &c->s[a % NS];
    void *item = NULL;
    int how = b % 6, rc;
    if (!ss->s) {
        if (how == 3) {
            REQUIRE(desync_stream_next_future(NULL) == NULL, "next_future(NULL)");
            return;
        }
        rc =
            how == 1 ? desync_stream_next_for(NULL, 0, &item) : desync_stream_try_next(NULL, &item);
        REQUIRE(rc == DESYNC_EINVAL, "reading a NULL stream returned %d", rc);
        return;
    }
    if (atomic_load(&ss->nf))
        return;
    ss->arm = NULL; /* any read replaces the last poll's waker */
    switch (how) {
    case 0:
        rc = desync_stream_try_next(ss->s, &item);
        check_rc("stream_try_next", rc, M_OK | M(DESYNC_EAGAIN) | M(DESYNC_EOF));
        break;
    case 1:
        rc = desync_stream_next_for(ss->s, tmo(cc), &item);
        check_rc("stream_next_for", rc, M_OK | M(DESYNC_ETIMEDOUT) | M(DESYNC_EOF));
        break;
    case 2: {
        rec *arm = (cc & 1) ? arm_new() : NULL;
        desync_waker_t wk = {arm_wake, arm};
        rc = desync_stream_poll_next(ss->s, &item, arm ? &wk : NULL);
        check_rc("stream_poll_next", rc, M_OK | M(DESYNC_EAGAIN) | M(DESYNC_EOF));
        if (rc == DESYNC_EAGAIN) {
            ss->arm = arm; /* the old one may still be called once, never twice */
        } else {
            arm_freeze(arm);
        }
        break;
    }
    case 3: {
        fslot *fs = &c->f[cc % NF];
        dispose(c, fs, D_FREE);
        atomic_store(&ss->nf, 1);
        desync_future_t *f = desync_stream_next_future(ss->s);
        REQUIRE(f, "next_future returned NULL");
        fs->f = f;
        fs->kind = F_NEXT;
        fs->ss = ss;
        return;
    }
    case 4:
        if (ss->ended || ss->kind == S_ARRAY || ss->kind == S_USER) {
            rc = desync_stream_next(ss->s, &item);
            check_rc("stream_next", rc, M_OK | M(DESYNC_EOF));
        } else {
            rc = desync_stream_next_for(ss->s, 0, &item);
            check_rc("stream_next_for", rc, M_OK | M(DESYNC_ETIMEDOUT) | M(DESYNC_EOF));
        }
        break;
    default:
        rc = desync_stream_try_next(ss->s, NULL);
        REQUIRE(rc == DESYNC_EINVAL, "try_next with a NULL item pointer returned %d", rc);
        return;
    }
    if (ss->ended && ss->kind != S_PIPE)
        REQUIRE(rc == DESYNC_EOF, "a stream that ended gave %d", rc);
    stream_got(ss, rc, item);
}

/* ------------------------------------------------------------- pipes */

static void pipe_item(pipemeta *pm, void *data, void *item) {
    REQUIRE(data == pm->chk, "a pipe's process got another object's data");
    REQUIRE(!atomic_load(&pm->chk->destroyed), "a pipe processed an item after destroy");
    if (!item)
        return;
    rec *it = item;
    REQUIRE(it->kind == R_ITEM && it->src == pm->src, "a pipe got an item of another stream");
    REQUIRE(it->seq > pm->last, "a pipe processed item %u after %u", it->seq, pm->last);
    pm->last = it->seq;
}

static void pipe_enter(pipemeta *pm) {
    REQUIRE(!atomic_exchange(&pm->chk->busy, 1), "a pipe's process ran during a job of its object");
}

static void pipe_leave(pipemeta *pm) { atomic_store(&pm->chk->busy, 0); }

static void consume(void *item) {
    if (item)
        REQUIRE(atomic_fetch_add(&((rec *)item)->fates, 1) == 0, "an item was consumed twice");
}

static void proc_in(void *data, void *item, void *arg) {
    pipe_enter(arg);
    pipe_item(arg, data, item);
    consume(item);
    pipe_leave(arg);
}

static void *proc_out(void *data, void *item, void *arg) {
    pipe_enter(arg);
    pipe_item(arg, data, item);
    pipe_leave(arg);
    return item;
}

static desync_future_t *proc_in_async(void *data, void *item, void *arg) {
    pipe_enter(arg);
    pipe_item(arg, data, item);
    consume(item);
    desync_future_t *f = item && (((rec *)item)->seq & 1) ? desync_future_ready(NULL) : NULL;
    pipe_leave(arg);
    return f;
}

static desync_future_t *proc_out_async(void *data, void *item, void *arg) {
    pipe_enter(arg);
    pipe_item(arg, data, item);
    desync_future_t *f = NULL;
    if (item) {
        switch (((rec *)item)->seq % 3) {
        case 0:
            f = desync_future_ready(item);
            if (!f)
                consume(item);
            break;
        case 1:
            consume(item); /* output: NULL */
            break;
        default: {
            consume(item); /* no output */
            desync_promise_t *p = desync_promise_new(&f);
            if (p)
                REQUIRE(PROMISE_CANCEL(p) == 0, "promise_cancel failed");
            break;
        }
        }
    }
    pipe_leave(arg);
    return f;
}

static void op_pipe(ctx *c, uint8_t a, uint8_t b, uint8_t cc) {
    target *t = pick_target(c, a);
    sslot *in = &c->s[b & 3], *out = &c->s[(b >> 2) & 3];
    int kind = cc & 3;
    bool has_out = kind == 1 || kind == 3, nullproc = cc & 0x20;
    if (atomic_load(&in->nf) || (has_out && atomic_load(&out->nf)))
        return;
    sslot inm = *in;
    memset(in, 0, sizeof *in); /* the pipe owns the input now */
    if (has_out)
        stream_slot_free(out);
    pipemeta *pm = tmalloc(sizeof *pm);
    pm->chk = t->chk;
    pm->src = inm.src;
    desync_t *d = t->is_obj ? t->obj : NULL;
    desync_stream_t *o = NULL;
    int rc = 0;
    switch (kind) {
    case 0:
        rc = desync_pipe_in(d, inm.s, nullproc ? NULL : proc_in, pm);
        break;
    case 1:
        o = desync_pipe(d, inm.s, nullproc ? NULL : proc_out, pm);
        break;
    case 2:
        rc = desync_pipe_in_async(d, inm.s, nullproc ? NULL : proc_in_async, pm);
        break;
    default:
        o = desync_pipe_async(d, inm.s, nullproc ? NULL : proc_out_async, pm);
        break;
    }
    bool ok = has_out ? o != NULL : rc == 0;
    bool valid = d && inm.s && !nullproc;
    if (!has_out)
        check_rc("pipe_in", rc, M_OK | M(DESYNC_EINVAL) | M(DESYNC_ENOMEM));
    REQUIRE(ok == valid, "a pipe with%s valid arguments %s", valid ? "" : "out",
            ok ? "succeeded" : "failed");
    if (inm.kind == S_CHAN) {
        inm.cm->rx = ok ? RX_PIPE : RX_FREED; /* on failure the input is freed */
        inm.cm->ss = NULL;
    }
    if (!o)
        return;
    desync_stream_set_item_free(o, item_free_cb);
    desync_pipe_set_backpressure_depth(o, (cc >> 2) & 7);
    out->s = o;
    out->kind = S_PIPE;
    out->src = inm.src;
    out->may_null = inm.may_null || kind == 3;
}

/* ------------------------------------------------------------ targets */

static void target_create(target *t) {
    t->chk = checker_new(t->gid, t->is_obj);
    if (t->is_obj) {
        t->obj = desync_new_on(W.sched, t->chk, destroy_chk);
        REQUIRE(t->obj, "desync_new_on failed");
        t->q = desync_get_queue(t->obj);
        REQUIRE(t->q && desync_data(t->obj) == t->chk, "get_queue/data of a new object");
    } else {
        t->q = desync_queue_new(W.sched);
        REQUIRE(t->q, "queue_new failed");
    }
}

/* Releases the caller's references to t; false if that could block forever
 * now (the last release of an object syncs). */
static bool target_release(ctx *c, target *t, bool must) {
    if (!t->q)
        return true;
    if (t->is_obj) {
        int ok = c ? can_block_on(c, t) : (W.mt ? 1 : st_probe(t->q, t->chk, t->gid, t->perm));
        if (ok <= 0) {
            REQUIRE(!must, "a queue is still held after the cleanup released everything");
            return false;
        }
    }
    if (c) {
        for (; c->extra[t->gid] > 0; c->extra[t->gid]--)
            t->is_obj ? desync_release(t->obj) : desync_queue_release(t->q);
        for (; c->extraq[t->gid] > 0; c->extraq[t->gid]--)
            desync_queue_release(t->q);
    }
    if (t->is_obj)
        desync_release(t->obj);
    else
        desync_queue_release(t->q);
    t->obj = NULL;
    t->q = NULL;
    t->chk = NULL;
    return true;
}

static void op_ref(ctx *c, uint8_t a, uint8_t b) {
    target *t = pick_target(c, a);
    switch (b % 4) {
    case 0:
        if (!t->q) {
            REQUIRE(desync_retain(NULL) == NULL && desync_queue_retain(NULL) == NULL,
                    "retain(NULL)");
        } else if (c->extra[t->gid] < MAX_EXTRA) {
            if (t->is_obj)
                REQUIRE(desync_retain(t->obj) == t->obj, "retain returned another object");
            else
                REQUIRE(desync_queue_retain(t->q) == t->q, "queue_retain returned another queue");
            c->extra[t->gid]++;
        }
        break;
    case 1:
        if (!t->q) {
            desync_release(NULL);
            desync_queue_release(NULL);
        } else if (c->extra[t->gid] > 0) {
            c->extra[t->gid]--;
            t->is_obj ? desync_release(t->obj) : desync_queue_release(t->q);
        } else if (c->extraq[t->gid] > 0) {
            c->extraq[t->gid]--;
            desync_queue_release(t->q);
        }
        break;
    case 2:
        if (t->q && c->extraq[t->gid] < MAX_EXTRA) {
            REQUIRE(desync_queue_retain(desync_get_queue(t->obj) ? desync_get_queue(t->obj)
                                                                 : t->q) == t->q,
                    "queue_retain of an object's queue");
            c->extraq[t->gid]++;
        }
        break;
    default:
        REQUIRE(desync_get_queue(t->obj) == (t->is_obj ? t->q : NULL), "get_queue");
        REQUIRE(desync_data(t->obj) == (t->is_obj ? (void *)t->chk : NULL), "desync_data");
        break;
    }
}

static void op_temp(ctx *c, uint8_t a) {
    target *t = &c->temp[a % NTEMP];
    if (!t->q)
        target_create(t);
    else
        target_release(c, t, false);
}

static void op_sched(ctx *c, uint8_t b, uint8_t cc) {
    if (!W.mt) {
        REQUIRE(desync_scheduler_thread_count(W.sched) == 0, "a 0-thread scheduler has threads");
        REQUIRE(desync_scheduler_max_threads(W.sched) == 0, "max_threads of a 0-thread scheduler");
        return;
    }
    switch (b % 4) {
    case 0:
        desync_scheduler_set_max_threads(W.sched, 1 + cc % 3);
        break;
    case 1:
        if (c->spawned < 2) {
            int rc = desync_scheduler_spawn_thread(W.sched);
            check_rc("spawn_thread", rc, M_OK | M(DESYNC_EAGAIN) | M(DESYNC_ENOMEM));
            c->spawned++;
        }
        break;
    case 2:
        if (!ctx_has_holds(c) && (FUZZ_CONCURRENT_DESPAWN || c->id == 0))
            desync_scheduler_despawn_threads_if_overloaded(W.sched);
        break;
    default:
        (void)desync_scheduler_thread_count(W.sched);
        REQUIRE(desync_scheduler_max_threads(W.sched) >= 1, "max_threads dropped below 1");
        break;
    }
}

static void op_misc(ctx *c, uint8_t b) {
    target *o = &W.perm[0], *q = &W.perm[2];
    desync_future_t *f;
    void *v = NULL;
    switch (b % 10) {
    case 0: {
        const char *s = desync_strerror((int)(int8_t)b);
        REQUIRE(s && *s, "strerror gave nothing");
        REQUIRE(desync_strerror(DESYNC_EPIPE) && desync_strerror(0), "strerror");
        break;
    }
    case 1:
        REQUIRE(!desync_retain(NULL) && !desync_queue_retain(NULL) && !desync_get_queue(NULL) &&
                    !desync_data(NULL),
                "calls on NULL objects");
        desync_release(NULL);
        desync_queue_release(NULL);
        break;
    case 2:
        REQUIRE(desync_desync(NULL, job_never_obj, NULL) == DESYNC_EINVAL, "desync(NULL)");
        REQUIRE(desync_desync(o->obj, NULL, NULL) == DESYNC_EINVAL, "desync(no job)");
        REQUIRE(desync_queue_desync(q->q, NULL, NULL) == DESYNC_EINVAL, "queue_desync(no job)");
        REQUIRE(desync_sync(o->obj, NULL, NULL) == DESYNC_EINVAL, "sync(no job)");
        REQUIRE(desync_queue_sync(NULL, job_never, NULL) == DESYNC_EINVAL, "queue_sync(NULL)");
        REQUIRE(desync_try_sync(NULL, job_never_obj, NULL) == DESYNC_EINVAL, "try_sync(NULL)");
        REQUIRE(desync_queue_try_sync(q->q, NULL, NULL) == DESYNC_EINVAL, "try_sync(no job)");
        REQUIRE(desync_queue_desync_copy(q->q, job_never, NULL, 5) == DESYNC_EINVAL,
                "desync_copy(NULL arg, 5)");
        REQUIRE(desync_desync_copy(NULL, job_never_obj, &v, sizeof v) == DESYNC_EINVAL,
                "desync_copy(NULL)");
        break;
    case 3:
        REQUIRE(desync_future_wait(NULL, &v) == DESYNC_EINVAL, "wait(NULL)");
        REQUIRE(desync_future_poll(NULL, &v, NULL) == DESYNC_EINVAL, "poll(NULL)");
        REQUIRE(desync_future_fd(NULL) == DESYNC_EINVAL, "fd(NULL)");
        REQUIRE(!desync_future_desync(NULL, async_obj, NULL) &&
                    !desync_future_sync(NULL, async_obj, NULL),
                "future_desync/sync(NULL)");
        REQUIRE(!desync_queue_future_desync(q->q, NULL, NULL) &&
                    !desync_queue_future_sync(q->q, NULL, NULL) && !desync_queue_suspend(NULL),
                "future calls without a job");
        desync_future_detach(NULL);
        desync_future_free(NULL);
        desync_resumer_resume(NULL);
        break;
    case 4: /* desync_after takes the future even when it fails */
        f = desync_future_ready(NULL);
        REQUIRE(!desync_after(NULL, f, after_obj, NULL), "after(NULL object)");
        REQUIRE(!desync_after(o->obj, NULL, after_obj, NULL), "after(NULL future)");
        f = desync_future_ready(NULL);
        REQUIRE(!desync_after(o->obj, f, NULL, NULL), "after(no job)");
        f = desync_future_ready(NULL);
        REQUIRE(!desync_queue_after(q->q, f, NULL, NULL), "queue_after(no job)");
        break;
    case 5:
        REQUIRE(desync_stream_next(NULL, &v) == DESYNC_EINVAL, "next(NULL)");
        REQUIRE(desync_stream_poll_next(NULL, &v, NULL) == DESYNC_EINVAL, "poll_next(NULL)");
        desync_stream_set_item_free(NULL, item_free_cb);
        desync_stream_free(NULL);
        desync_pipe_set_backpressure_depth(NULL, 3);
        break;
    case 6:
        REQUIRE(!desync_channel_new(1, NULL), "channel_new(NULL)");
        REQUIRE(desync_channel_try_send(NULL, NULL) == DESYNC_EINVAL, "try_send(NULL)");
        REQUIRE(!desync_channel_send_future(NULL, NULL), "send_future(NULL)");
        desync_channel_close(NULL);
        break;
    case 7: { /* pipes with NULL arguments free their input */
        int src = src_new();
        rec *it = item_new(src, 1);
        atomic_store(&it->accepted, 1);
        void *items[1] = {it};
        desync_stream_t *s = desync_stream_from_array(items, 1);
        REQUIRE(s, "stream_from_array failed");
        desync_stream_set_item_free(s, item_free_cb);
        desync_pipe_set_backpressure_depth(s, 2); /* not a pipe output: ignored */
        if (b & 0x10)
            REQUIRE(desync_pipe_in(NULL, s, proc_in, NULL) == DESYNC_EINVAL, "pipe_in(NULL)");
        else
            REQUIRE(!desync_pipe(o->obj, s, NULL, NULL), "pipe(no process)");
        REQUIRE(desync_pipe_in(o->obj, NULL, proc_in, NULL) == DESYNC_EINVAL, "pipe_in(no input)");
        REQUIRE(!desync_pipe_async(o->obj, NULL, proc_out_async, NULL), "pipe_async(no input)");
        break;
    }
    case 8:
        desync_scheduler_free(NULL);
        desync_scheduler_free(desync_scheduler_default()); /* ignored */
        REQUIRE(desync_scheduler_spawn_thread(NULL) == DESYNC_EINVAL, "spawn_thread(NULL)");
        REQUIRE(desync_scheduler_max_threads(NULL) == 0 && desync_scheduler_thread_count(NULL) == 0,
                "scheduler queries on NULL");
        desync_scheduler_set_max_threads(NULL, 3);
        desync_scheduler_despawn_threads_if_overloaded(NULL);
        break;
    default: {
        f = desync_future_ready((void *)3);
        REQUIRE(f, "future_ready failed");
        int fd = desync_future_fd(f);
        if (fd >= 0) {
            struct pollfd p = {fd, POLLIN, 0};
            REQUIRE(poll(&p, 1, 0) == 1, "the fd of a ready future is not readable");
        }
        REQUIRE(desync_future_poll(f, &v, NULL) == 0 && v == (void *)3, "poll of a ready future");
        REQUIRE(desync_future_then(f, NULL, NULL) == DESYNC_EINVAL, "then(no callback)");
        desync_future_free(f);
        (void)c;
        break;
    }
    }
}

static const char *const op_names[OP_COUNT] = {
    "DESYNC",    "SYNC",       "TRY_SYNC",     "FUT",         "AFTER",      "SUSPEND",
    "RESUME",    "WAIT",       "POLL",         "THEN",        "DETACH",     "FREE",
    "FD",        "READY",      "PROMISE_NEW",  "PROMISE_DONE", "INNER",     "CHAN_NEW",
    "CHAN_RETAIN", "CHAN_CLOSE", "SEND",       "READ",        "STREAM_NEW", "STREAM_FREE",
    "PIPE",      "REF",        "TEMP",         "DRAIN",       "SCHED",      "MISC"};

/* DESYNC_FUZZ_TRACE=1 prints each op as it runs (to read a reproducer). */
static bool tracing(void) {
    static int on = -1;
    if (on < 0)
        on = getenv("DESYNC_FUZZ_TRACE") != NULL;
    return on;
}

static void trace_mark(int id, const char *what) {
    if (!tracing())
        return;
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    fprintf(stderr, "%ld.%06ld caller %d: %s\n", (long)ts.tv_sec % 1000, ts.tv_nsec / 1000, id,
            what);
}

static void exec_op(ctx *c, const uint8_t *op) {
    uint8_t a = op[1], b = op[2], cc = op[3];
    if (tracing()) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        fprintf(stderr, "%ld.%06ld caller %d op %d: %s a=%u b=%u c=%u\n", (long)ts.tv_sec % 1000,
                ts.tv_nsec / 1000, c->id, tls_op, op_names[(op[0] & 0x7f) % OP_COUNT], a, b, cc);
    }
    switch ((op[0] & 0x7f) % OP_COUNT) {
    case OP_DESYNC:
        op_desync(c, a, b, cc);
        break;
    case OP_SYNC:
        op_sync(c, a, b, cc, false);
        break;
    case OP_TRY_SYNC:
        op_sync(c, a, b, cc, true);
        break;
    case OP_FUT:
        op_fut(c, a, b, cc);
        break;
    case OP_AFTER:
        op_after(c, a, b, cc);
        break;
    case OP_SUSPEND:
        op_suspend(c, a, b);
        break;
    case OP_RESUME:
        desync_resumer_resume(c->res[a % NR]);
        c->res[a % NR] = NULL;
        break;
    case OP_WAIT:
        op_wait(c, a, b);
        break;
    case OP_POLL:
        op_poll(c, a, b);
        break;
    case OP_THEN:
        if ((b & 1) && c->f[a % NF].f)
            REQUIRE(desync_future_then(c->f[a % NF].f, NULL, NULL) == DESYNC_EINVAL,
                    "then(no callback)");
        dispose(c, &c->f[a % NF], D_THEN);
        break;
    case OP_DETACH:
        dispose(c, &c->f[a % NF], D_DETACH);
        break;
    case OP_FREE:
        dispose(c, &c->f[a % NF], D_FREE);
        break;
    case OP_FD:
        op_fd(c, a);
        break;
    case OP_READY:
        op_ready(c, a, b);
        break;
    case OP_PROMISE_NEW:
        op_promise_new(c, a, b);
        break;
    case OP_PROMISE_DONE:
        op_promise_done(c, a, b);
        break;
    case OP_INNER:
        if (c->ninner)
            inner_resolve(c, a % c->ninner, b & 1);
        break;
    case OP_CHAN_NEW:
        op_chan_new(c, a, b, cc);
        break;
    case OP_CHAN_RETAIN:
        op_chan_retain(c, a);
        break;
    case OP_CHAN_CLOSE:
        op_chan_close(c, a);
        break;
    case OP_SEND:
        op_send(c, a, b, cc);
        break;
    case OP_READ:
        op_read(c, a, b, cc);
        break;
    case OP_STREAM_NEW:
        op_stream_new(c, a, b, cc);
        break;
    case OP_STREAM_FREE:
        if (!atomic_load(&c->s[a % NS].nf))
            stream_slot_free(&c->s[a % NS]);
        break;
    case OP_PIPE:
        op_pipe(c, a, b, cc);
        break;
    case OP_REF:
        op_ref(c, a, b);
        break;
    case OP_TEMP:
        op_temp(c, a);
        break;
    case OP_DRAIN:
        if (!W.mt || !ctx_has_holds(c))
            REQUIRE(desync_scheduler_drain(W.sched) == 0, "drain from a caller failed");
        break;
    case OP_SCHED:
        op_sched(c, b, cc);
        break;
    default:
        op_misc(c, b);
        break;
    }
}

/* ------------------------------------------------------------ cleanup */

static bool nf_pending(ctx *c) {
    for (int i = 0; i < NS; i++)
        if (atomic_load(&c->s[i].nf))
            return true;
    return false;
}

static void sleep_us(long us) {
    struct timespec ts = {0, us * 1000};
    nanosleep(&ts, NULL);
}

static void ctx_cleanup(ctx *c) {
    tls_op = -1;
    trace_mark(c->id, "cleanup");
    /* 1. End every hold; nothing here blocks. */
    for (int i = 0; i < NP; i++)
        if (c->p[i].p)
            promise_resolve(&c->p[i], i & 1, 0);
    while (c->ninner)
        inner_resolve(c, c->ninner - 1, c->ninner & 1);
    for (int i = 0; i < NF; i++) {
        fslot *fs = &c->f[i];
        if ((fs->kind == F_FSYNC && !fs->done) || (fs->kind == F_SUSPEND && !fs->taken))
            dispose(c, fs, (i & 1) ? D_DETACH : D_FREE);
    }
    for (int i = 0; i < NR; i++) {
        desync_resumer_resume(c->res[i]);
        c->res[i] = NULL;
    }
    tls_holds = false;
    trace_mark(c->id, "channels");
    /* 2. Close the channels: every stream can end now. */
    for (int i = 0; i < NCH; i++)
        if (c->ch[i])
            chan_close_all(c->ch[i]);
    /* 3. Pending next_futures complete (they may need queues to run). */
    for (int round = 0; nf_pending(c); round++) {
        REQUIRE(desync_scheduler_drain(W.sched) == 0, "drain failed");
        if (!nf_pending(c))
            break;
        for (int i = 0; i < NF; i++)
            if (c->f[i].kind == F_NEXT && !c->f[i].done) {
                void *v = NULL;
                int rc = desync_future_wait_for(c->f[i].f, W.mt ? 1000000 : 0, &v);
                if (rc != DESYNC_ETIMEDOUT)
                    observe(c, &c->f[i], rc, v);
            }
        REQUIRE(
            W.mt || !nf_pending(c),
            "a next_future is still pending after its channels closed and a drain (lost wake-up?)");
        REQUIRE(round < 10000, "a next_future is still pending after 10 s (lost wake-up?)");
        if (nf_pending(c))
            sleep_us(1000);
    }
    trace_mark(c->id, "streams and futures");
    /* 4. Streams and futures. */
    for (int i = 0; i < NS; i++)
        stream_slot_free(&c->s[i]);
    for (int i = 0; i < NF; i++)
        dispose(c, &c->f[i], D_FREE);
    trace_mark(c->id, "references");
    /* 5. References. */
    if (!W.mt)
        REQUIRE(desync_scheduler_drain(W.sched) == 0, "drain failed");
    for (int i = 0; i < NTEMP; i++)
        target_release(c, &c->temp[i], true);
    for (int i = 0; i < NPERM; i++) {
        target *t = &W.perm[i];
        for (; c->extra[t->gid] > 0; c->extra[t->gid]--)
            t->is_obj ? desync_release(t->obj) : desync_queue_release(t->q);
        for (; c->extraq[t->gid] > 0; c->extraq[t->gid]--)
            desync_queue_release(t->q);
    }
}

static void ctx_run(ctx *c) {
    tls_ctx = c;
    tls_ctx_id = c->id;
    for (size_t i = 0; i < c->nops; i++) {
        tls_op = (int)(c->ops[i] - W.opbuf[0]) / 4;
        tls_holds = W.mt && ctx_has_holds(c);
        exec_op(c, c->ops[i]);
    }
    ctx_cleanup(c);
    tls_ctx = NULL;
    tls_ctx_id = -1;
}

/* The two caller threads of the multi-threaded mode live across inputs
 * (creating threads under ASan costs more than a whole input): each input
 * bumps `gen`, both run their ops at once, and the last to finish says so. */
static struct {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    unsigned gen, done;
    bool up;
} callers = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0, 0, false};

static void *ctx_thread(void *arg) {
    int id = (int)(intptr_t)arg;
    unsigned seen = 0;
    for (;;) {
        pthread_mutex_lock(&callers.mu);
        while (callers.gen == seen)
            pthread_cond_wait(&callers.cv, &callers.mu);
        seen = callers.gen;
        pthread_mutex_unlock(&callers.mu);
        atomic_fetch_add(&W.started, 1);
        while (atomic_load(&W.started) < NCTX)
            sched_yield();
        ctx_run(&W.c[id]);
        pthread_mutex_lock(&callers.mu);
        if (++callers.done == NCTX)
            pthread_cond_broadcast(&callers.cv);
        pthread_mutex_unlock(&callers.mu);
    }
    return NULL;
}

static void run_callers(void) {
    if (!callers.up) {
        for (int i = 0; i < NCTX; i++) {
            pthread_t th;
            if (pthread_create(&th, NULL, ctx_thread, (void *)(intptr_t)i) != 0)
                fail("pthread_create failed");
            pthread_detach(th);
        }
        callers.up = true;
    }
    pthread_mutex_lock(&callers.mu);
    callers.done = 0;
    callers.gen++;
    pthread_cond_broadcast(&callers.cv);
    while (callers.done < NCTX)
        pthread_cond_wait(&callers.cv, &callers.mu);
    pthread_mutex_unlock(&callers.mu);
}

/* ------------------------------------------------------------- world */

/* The multi-threaded mode's scheduler lives across inputs, like its caller
 * threads (starting its 2 threads for each input would cost more than the
 * input); each input starts with its limit back at 2 and ends drained with
 * no threads above it. The single-threaded mode makes a new one each time. */
static desync_scheduler_t *mt_sched;

static void world_init(bool mt) {
    memset(&W, 0, sizeof W);
    W.mt = mt;
    if (mt && !mt_sched)
        mt_sched = desync_scheduler_new(2);
    W.sched = mt ? mt_sched : desync_scheduler_new(0);
    REQUIRE(W.sched, "scheduler_new failed");
    if (mt)
        desync_scheduler_set_max_threads(W.sched, 2);
    for (int c = 0; c < NCTX; c++) {
        W.c[c].id = c;
        for (int j = 0; j < NTEMP; j++) {
            target *t = &W.c[c].temp[j];
            t->gid = c * NTEMP + j;
            t->perm = -1;
            t->is_obj = j < 2;
        }
    }
    for (int i = 0; i < NPERM; i++) {
        target *t = &W.perm[i];
        t->gid = NCTX * NTEMP + i;
        t->perm = i;
        t->is_obj = i < 2;
        target_create(t);
    }
}

static void check_records(void) {
    for (checker *k = atomic_load(&W.chks); k; k = k->next) {
        REQUIRE(atomic_load(&k->pending) == 0, "%ld accepted jobs of queue %d never ran",
                atomic_load(&k->pending), k->gid);
        if (k->is_obj)
            REQUIRE(atomic_load(&k->destroyed) == 1, "an object's destroy ran %d times",
                    atomic_load(&k->destroyed));
    }
    for (rec *r = atomic_load(&W.recs); r; r = r->next) {
        int ran = atomic_load(&r->ran);
        switch (r->kind) {
        case R_JOB:
            if (!atomic_load(&r->accepted))
                REQUIRE(ran == 0, "a job whose call failed ran");
            else if (r->definite || atomic_load(&r->must_run))
                REQUIRE(ran == 1, "an accepted job (queue %d, lane %u, seq %u, nest %u) never ran",
                        r->gid, r->lane, r->seq, r->nest);
            else if (atomic_load(&r->ran_at_free) == 0)
                REQUIRE(ran == 0, "a future_sync job ran after its future was freed");
            if (r->amode == A_PROMISE && ran)
                REQUIRE(atomic_load(&r->inner) == INNER_ABANDONED, "an inner promise was left");
            break;
        case R_ITEM: {
            int fates = atomic_load(&r->fates), out = atomic_load(&r->outcome);
            if (out == OUT_UNKNOWN)
                REQUIRE(fates <= 1, "an item was delivered %d times", fates);
            else if (atomic_load(&r->accepted))
                REQUIRE(fates == 1, "an accepted item (source %d, seq %u) was delivered %d times",
                        r->src, r->seq, fates);
            else
                REQUIRE(fates == 0, "an item that was not accepted was delivered");
            break;
        }
        case R_THEN:
        case R_USER:
            REQUIRE(atomic_load(&r->calls) == r->expect_calls, "a callback ran %d times, not %d",
                    atomic_load(&r->calls), r->expect_calls);
            break;
        case R_ARM: {
            int w = atomic_load(&r->wakes), fr = atomic_load(&r->frozen);
            REQUIRE(w <= 1, "a waker was called %d times", w);
            REQUIRE(fr < 0 || w == fr, "a waker was called after it was replaced or dropped");
            break;
        }
        default:
            break;
        }
    }
}

static void noop_job(void *arg) { (void)arg; }

static void world_finish(void) {
    tls_op = -1;
    trace_mark(-1, "finish");
    REQUIRE(desync_scheduler_drain(W.sched) == 0, "drain failed");
    /* Every hold has ended: with 0 threads the drain ran everything. */
    if (!W.mt)
        for (int i = 0; i < NPERM; i++) {
            int rc = desync_queue_try_sync(W.perm[i].q, noop_job, NULL);
            REQUIRE(rc == 0, "shared queue %d is not idle after the final drain (%d)", i, rc);
        }
    /* The handles stay set until all are released: a job still queued would
     * find freed memory (ASan) rather than NULL. */
    for (int i = 0; i < NPERM; i++)
        W.perm[i].is_obj ? desync_release(W.perm[i].obj) : desync_queue_release(W.perm[i].q);
    REQUIRE(desync_scheduler_drain(W.sched) == 0, "drain failed");
    trace_mark(-1, "scheduler_free");
    if (W.mt) {
        desync_scheduler_set_max_threads(W.sched, 2);
        desync_scheduler_despawn_threads_if_overloaded(W.sched);
        REQUIRE(desync_scheduler_thread_count(W.sched) <= 2, "%zu threads after despawn",
                desync_scheduler_thread_count(W.sched));
    } else {
        desync_scheduler_free(W.sched);
    }
    trace_mark(-1, "checks");
    check_records();
    for (rec *r = atomic_load(&W.recs), *n; r; r = n) {
        n = r->next;
        free(r);
    }
    for (checker *k = atomic_load(&W.chks), *n; k; k = n) {
        n = k->next;
        free(k);
    }
    for (blob *b = atomic_load(&W.blobs), *n; b; b = n) {
        n = b->next;
        free(b);
    }
    trace_mark(-1, "shutdown");
    desync_shutdown(); /* the pools' memory back to malloc: no leak reports */
    trace_mark(-1, "done");
}

/* DESYNC_FUZZ_MODE=st or mt forces a mode whatever byte 0 says. */
static int forced_mode(void) {
    static int mode = -2;
    if (mode == -2) {
        const char *m = getenv("DESYNC_FUZZ_MODE");
        mode = !m ? -1 : !strcmp(m, "st") ? 0 : !strcmp(m, "mt") ? 1 : -1;
    }
    return mode;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 1)
        return 0;
    world_init(forced_mode() >= 0 ? forced_mode() : data[0] & 1);
    size_t nops = (size - 1 + 3) / 4;
    if (nops > MAX_OPS)
        nops = MAX_OPS;
    for (size_t i = 0; i < nops; i++) {
        size_t off = 1 + 4 * i, n = size - off < 4 ? size - off : 4;
        memcpy(W.opbuf[i], data + off, n);
        ctx *c = &W.c[W.mt ? W.opbuf[i][0] >> 7 : 0];
        c->ops[c->nops++] = W.opbuf[i];
    }
    if (W.mt) {
        run_callers();
    } else {
        ctx_run(&W.c[0]);
    }
    world_finish();
    return 0;
}
