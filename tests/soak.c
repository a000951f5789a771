/*
 * Soak: a long mixed workload through the public API, checked as it runs.
 *
 *   soak [-n jobs] [-s seconds] [-w warmup_s] [-g rss_growth_pct]
 *        [-t default|threads] [-p producers] [-o objects] [-S stall_s] [-F]
 *
 * `producers` threads (8) queue jobs on `objects` objects (64), choosing each
 * time among desync, desync_copy, sync, try_sync, future_desync,
 * future_sync, after, sync_all and desync_all over two objects (or one
 * object twice), a suspend/resume of the object's queue, and replacing the
 * object (re-creation). Every job carries its producer and a sequence
 * number per (producer, object) and checks, inside the job, that it is the
 * next one: none lost, none run twice, each producer's jobs in its order on
 * every object. When an object is destroyed its destroy callback checks that
 * the last job of every producer ran, and at the end the jobs that ran must
 * equal the jobs queued exactly.
 *
 * Each producer holds its own reference to every object and swaps it for
 * the current one now and then; a producer replaces an object in its slot
 * now and then. So an old object is retained by several threads, used by
 * them after it was replaced, and released concurrently (any of them may
 * hold the last reference, whose release waits for the object's jobs).
 *
 * -n: run until that many jobs are queued (default 10,000,000; 200,000 in
 *     sanitizer builds). -s: run that many seconds instead (any number of
 *     jobs). -w with -s: the RSS (VmRSS) is sampled after the warm-up and at
 *     the end; -g fails the run if it grew by that many percent or more.
 * -t: the default scheduler (default), or desync_scheduler_new(threads);
 *     with 0 threads jobs run only when a producer syncs or waits, or when
 *     the last release or the final drain runs them.
 * -S: the watchdog fails the run when nothing progresses for that many
 *     seconds (every wait is bounded by it; default 60, 240 in sanitizer
 *     builds), and the whole run may last at most its expected time plus
 *     that much again.
 * -F: no desync_after on a future_sync (on by default; see op_after).
 *
 * The rules that keep the workload itself free of deadlocks (the library
 * must not add any): a producer keeps "pending" items (a promise it will
 * complete, a future_sync that holds its queue until waited on or
 * detached) only between blocking calls, and settles them all before it
 * blocks (sync, waits, suspend, release); promises are completed by the
 * producer or by a completer queue whose jobs never wait; and a producer
 * holding a queue suspended only waits for that suspend. Each waiting item
 * then depends only on items created before it, so nothing can wait in a
 * cycle. With 0 threads a queue moves only while someone drives it, so a
 * producer also waits on a future queued right behind any job on another
 * object that one of its afters waits for (a sync there would queue behind
 * its own later items).
 *
 * Prints the figures (jobs, seconds, jobs/s, RSS) and "soak: PASS", or the
 * failures and "soak: FAIL" (exit 1).
 */
#include <desync.h>
#include <desync/multi.h>

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "test.h"

#if !defined(DESYNC_TEST_SANITIZED)
#if defined(__SANITIZE_THREAD__) || defined(__SANITIZE_ADDRESS__)
#define DESYNC_TEST_SANITIZED 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer) || __has_feature(address_sanitizer)
#define DESYNC_TEST_SANITIZED 1
#endif
#endif
#endif

#ifdef DESYNC_TEST_SANITIZED
#define DEFAULT_JOBS 200000ull
#define DEFAULT_STALL_S 240
#else
#define DEFAULT_JOBS 10000000ull
#define DEFAULT_STALL_S 60
#endif

#define MAXP 32   /* producers; the producer is 5 bits of a job's argument */
#define MAXO 1024 /* objects */
#define PENDING_MAX 8

/* ---------------------------------------------------------------- options */

static uint64_t o_jobs = DEFAULT_JOBS;
static double o_seconds = 0;
static double o_warmup = 0;
static double o_growth = -1;
static long o_threads = -1; /* -1: the default scheduler */
static int o_producers = 8;
static int o_objects = 64;
static double o_stall = DEFAULT_STALL_S;
static int o_after_sync = 1; /* -F turns off desync_after on a future_sync */

static desync_scheduler_t *g_sched; /* NULL: the default scheduler */

/* ------------------------------------------------------------ the objects */

struct prec;

/* An object's data. The first group belongs to the object's queue (only its
 * jobs and its destroy callback touch it); sent[p] is written by producer p
 * only, before it drops its reference. */
struct inst {
    desync_t *d;
    uint64_t seen[MAXP]; /* last sequence number run, per producer */
    uint64_t ran;        /* jobs run */
    uintptr_t last_value;
    struct prec *open; /* the promise a future_desync job left the queue on */
    _Atomic uint64_t sent[MAXP];
    atomic_int suspended; /* 1 while a producer holds the queue suspended */
};

/* A promise and what its reader expects; freed by the job that consumes it
 * (the after job, or the first job after a future_desync that returned it). */
struct prec {
    uint32_t p;
    uint64_t seq;
    uintptr_t value;
    desync_promise_t *pr;
    desync_future_t *f;
    atomic_int completed;
    int is_promise; /* after: the awaited future is pr's */
};

struct slot {
    pthread_mutex_t mu;
    struct inst *x; /* the slot owns one reference to x->d */
};

static struct slot g_slots[MAXO];
static desync_queue_t *g_completer; /* completes promises, resumes queues */

static atomic_ullong g_created, g_destroyed, g_ran;
static atomic_ullong g_queued_total; /* published by producers as they go */
static atomic_int g_stop;

#define ERR(...)                                                                          \
    do {                                                                                  \
        if (atomic_fetch_add(&g_errors, 1) < 20)                                          \
            fprintf(stderr, "soak: " __VA_ARGS__);                                        \
    } while (0)

/* A job's argument in a pointer: sequence number, a mode bit, producer. */
#define ENC(seq, mode, p) ((void *)(((uintptr_t)(seq) << 6) | ((uintptr_t)(mode) << 5) | (p)))
#define ENC_SEQ(a) ((uint64_t)((uintptr_t)(a) >> 6))
#define ENC_MODE(a) ((int)(((uintptr_t)(a) >> 5) & 1))
#define ENC_P(a) ((uint32_t)((uintptr_t)(a) & 31))

/* The value a future_desync/future_sync job of mode 1 completes with. */
static uintptr_t value_of(uint64_t seq, uint32_t p) {
    return (uintptr_t)((seq * 2654435761u) ^ ((uint64_t)p << 40) ^ 0x5a5a);
}

/* Every job starts here: the queue is not suspended, not held by an open
 * promise, and this is producer p's next job on this object. */
static void check_job(struct inst *x, uint32_t p, uint64_t seq) {
    if (atomic_load_explicit(&x->suspended, memory_order_relaxed))
        ERR("a job ran on a suspended queue (producer %u, seq %llu)\n", p,
            (unsigned long long)seq);
    if (x->open) {
        if (!atomic_load(&x->open->completed))
            ERR("a job ran before the future its queue waited for completed\n");
        else
            free(x->open);
        x->open = NULL;
    }
    if (x->seen[p] + 1 != seq)
        ERR("producer %u: job %llu ran after job %llu on one object (%s)\n", p,
            (unsigned long long)seq, (unsigned long long)x->seen[p],
            seq <= x->seen[p] ? "twice or out of order" : "jobs lost or out of order");
    x->seen[p] = seq;
    x->ran++;
}

static void inst_destroy(void *data) {
    struct inst *x = data;
    for (int p = 0; p < o_producers; p++) {
        uint64_t sent = atomic_load(&x->sent[p]);
        if (x->seen[p] != sent)
            ERR("destroyed with producer %d's jobs %llu..%llu not run\n", p,
                (unsigned long long)x->seen[p] + 1, (unsigned long long)sent);
    }
    if (x->open) {
        if (!atomic_load(&x->open->completed))
            ERR("destroyed while its queue waited for a future\n");
        else
            free(x->open);
    }
    if (atomic_load(&x->suspended))
        ERR("destroyed while suspended\n");
    atomic_fetch_add(&g_ran, x->ran);
    atomic_fetch_add(&g_destroyed, 1);
    free(x);
}

static struct inst *inst_new(void) {
    struct inst *x = calloc(1, sizeof *x);
    if (!x) {
        fprintf(stderr, "soak: out of memory\n");
        exit(1);
    }
    x->d = g_sched ? desync_new_on(g_sched, x, inst_destroy) : desync_new(x, inst_destroy);
    if (!x->d) {
        fprintf(stderr, "soak: desync_new failed\n");
        exit(1);
    }
    atomic_fetch_add(&g_created, 1);
    return x;
}

/* ------------------------------------------------------------------- jobs */

static void plain_job(void *data, void *arg) { check_job(data, ENC_P(arg), ENC_SEQ(arg)); }

struct copy_arg {
    uint32_t p;
    uint64_t seq;
};

static void copy_job(void *data, void *arg) {
    const struct copy_arg *a = arg;
    check_job(data, a->p, a->seq);
}

struct sync_arg {
    uint32_t p;
    uint64_t seq;
    int ran;
};

static void sync_job(void *data, void *arg) {
    struct sync_arg *a = arg;
    check_job(data, a->p, a->seq);
    a->ran++;
}

/* sync_all / desync_all over two objects (the same one twice, too): the
 * job is producer p's next job on each, in the order listed. */
struct all_arg {
    uint32_t p;
    uint64_t seq[2];
    int ran;
    int heap; /* desync_all: the job frees it */
};

static void all_job(void *const datas[], void *arg) {
    struct all_arg *a = arg;
    check_job(datas[0], a->p, a->seq[0]);
    check_job(datas[1], a->p, a->seq[1]);
    a->ran++;
    if (a->heap)
        free(a);
}

/* future_desync / future_sync: mode 0 is done with NULL, mode 1 with a
 * ready future of value_of(seq, p). */
static desync_future_t *async_job(void *data, void *arg) {
    check_job(data, ENC_P(arg), ENC_SEQ(arg));
    if (ENC_MODE(arg) == 0)
        return NULL;
    return desync_future_ready((void *)value_of(ENC_SEQ(arg), ENC_P(arg)));
}

/* future_desync returning a promise's future: the queue is held until the
 * promise completes, which check_job verifies in the queue's next job. */
static desync_future_t *promise_job(void *data, void *arg) {
    struct prec *r = arg;
    struct inst *x = data;
    check_job(x, r->p, r->seq);
    x->open = r;
    return r->f;
}

/* after: runs once the awaited future completed, with its value. */
static void *after_job(void *data, int status, void *value, void *arg) {
    struct prec *r = arg;
    struct inst *x = data;
    check_job(x, r->p, r->seq);
    if (status != 0 || (uintptr_t)value != r->value)
        ERR("after: status %d value %#lx, expected 0 and %#lx\n", status,
            (unsigned long)(uintptr_t)value, (unsigned long)r->value);
    if (r->is_promise && !atomic_load(&r->completed))
        ERR("after ran before its promise completed\n");
    x->last_value = (uintptr_t)value; /* updating data from a future */
    free(r);
    return (void *)((uintptr_t)value + 1);
}

/* Completes r's promise (it may be freed as soon as the promise completes). */
static void prec_complete(struct prec *r) {
    desync_promise_t *pr = r->pr;
    uintptr_t v = r->value;
    atomic_store(&r->completed, 1);
    desync_promise_complete(pr, (void *)v);
}

static void complete_queue_job(void *arg) { prec_complete(arg); }

struct resume_arg {
    struct inst *x;
    desync_resumer_t *r;
};

static void resume_queue_job(void *arg) {
    struct resume_arg *a = arg;
    atomic_store(&a->x->suspended, 0);
    desync_resumer_resume(a->r);
    free(a);
}

static void noop_qjob(void *arg) { (void)arg; }

/* -------------------------------------------------------------- producers */

enum kind {
    K_DESYNC,
    K_COPY,
    K_SYNC,
    K_TRY,
    K_FDESYNC,
    K_FSYNC,
    K_AFTER,
    K_SYNC_ALL,
    K_DESYNC_ALL,
    K_NJOBKINDS
};
enum op { OP_SUSPEND = K_NJOBKINDS, OP_REFRESH, OP_RECREATE, OP_FLUSH, OP_DONE, NOPS };

static const char *const op_names[NOPS] = {
    "desync",   "desync_copy", "sync",    "try_sync",  "future_desync", "future_sync", "after",
    "sync_all", "desync_all",  "suspend", "refresh",   "re-create",     "flush",       "done"};

struct pending {
    struct prec *promise;  /* complete it; or */
    desync_future_t *f;    /* wait (checking the value), detach or free it */
    uintptr_t value;       /* expected value of f */
    int is_sync;           /* f is a future_sync: never free before it ran */
    int kind;              /* K_FDESYNC, K_FSYNC or K_AFTER, for messages */
    int must_wait;         /* 0 threads: waiting on f runs a job another waits for */
};

struct producer {
    pthread_t th;
    uint32_t id;
    uint32_t seed;
    struct inst *held[MAXO]; /* one reference each */
    struct pending pend[PENDING_MAX];
    int npend;
    int used_completer;
    uint64_t quota;
    uint64_t queued; /* jobs queued (with a sequence number) */
    uint64_t count[NOPS];
    uint64_t try_busy;
    _Alignas(64) atomic_ullong progress; /* for the watchdog */
    atomic_int doing;
};

static struct producer g_prod[MAXP];
static atomic_int g_gate_open;

static uint64_t next_seq(struct producer *pr, struct inst *x) {
    return atomic_load_explicit(&x->sent[pr->id], memory_order_relaxed) + 1;
}

static void sent(struct producer *pr, struct inst *x, uint64_t seq, int kind) {
    atomic_store_explicit(&x->sent[pr->id], seq, memory_order_relaxed);
    pr->queued++;
    pr->count[kind]++;
}

static void fatal(const char *what, int rc) {
    fprintf(stderr, "soak: %s failed: %s\n", what, desync_strerror(rc));
    fprintf(stderr, "soak: FAIL\n");
    _exit(1);
}

/* Bounded wait on a future; a timeout is a failure (the watchdog would
 * report the same hang later). */
static int wait_future(desync_future_t *f, void **v, const char *what) {
    int rc = desync_future_wait_for(f, (uint64_t)(o_stall * 1e9), v);
    if (rc == DESYNC_ETIMEDOUT)
        fatal(what, rc);
    return rc;
}

/* Settles every pending item: promises first, then futures in the order they
 * were made. Called before anything that may block. */
static void flush(struct producer *pr) {
    if (!pr->npend && !pr->used_completer)
        return;
    atomic_store(&pr->doing, OP_FLUSH);
    for (int i = 0; i < pr->npend; i++) {
        if (pr->pend[i].promise) {
            prec_complete(pr->pend[i].promise);
            pr->pend[i].promise = NULL;
        }
    }
    /* With no threads the completer's jobs run only when someone syncs it. */
    if (pr->used_completer && o_threads == 0) {
        int rc = desync_queue_sync(g_completer, noop_qjob, NULL);
        if (rc)
            fatal("sync on the completer", rc);
    }
    pr->used_completer = 0;
    for (int i = 0; i < pr->npend; i++) {
        struct pending *e = &pr->pend[i];
        if (!e->f)
            continue;
        uint32_t how = e->must_wait ? 2 : test_rnd(&pr->seed) % 4;
        if (how == 0) {
            desync_future_detach(e->f);
        } else if (how == 1 && !e->is_sync) {
            desync_future_free(e->f);
        } else {
            void *v = NULL;
            int rc = wait_future(e->f, &v, op_names[e->kind]);
            if (rc != 0 || (uintptr_t)v != e->value)
                ERR("a future completed with %d/%#lx, expected 0/%#lx\n", rc,
                    (unsigned long)(uintptr_t)v, (unsigned long)e->value);
            desync_future_free(e->f);
        }
        e->f = NULL;
    }
    pr->npend = 0;
}

static void add_pending(struct producer *pr, struct prec *promise, desync_future_t *f,
                        uintptr_t value, int kind) {
    if (pr->npend == PENDING_MAX)
        flush(pr);
    pr->pend[pr->npend++] = (struct pending){promise, f, value, kind == K_FSYNC, kind, 0};
}

/* Hands promise r to be completed: now, at the next flush, or by the
 * completer queue. */
static void settle_promise(struct producer *pr, struct prec *r) {
    uint32_t how = test_rnd(&pr->seed) % 3;
    if (how == 0) {
        prec_complete(r);
    } else if (how == 1) {
        add_pending(pr, r, NULL, 0, K_FDESYNC);
    } else {
        int rc = desync_queue_desync(g_completer, complete_queue_job, r);
        if (rc)
            fatal("desync on the completer", rc);
        pr->used_completer = 1;
    }
}

static struct prec *prec_new(uint32_t p, uint64_t seq, uintptr_t value, int with_promise) {
    struct prec *r = calloc(1, sizeof *r);
    if (!r)
        fatal("calloc", DESYNC_ENOMEM);
    r->p = p;
    r->seq = seq;
    r->value = value;
    if (with_promise) {
        r->pr = desync_promise_new(&r->f);
        if (!r->pr)
            fatal("desync_promise_new", DESYNC_ENOMEM);
        r->is_promise = 1;
    }
    return r;
}

static void op_future_desync(struct producer *pr, struct inst *x) {
    uint64_t seq = next_seq(pr, x);
    uint32_t mode = test_rnd(&pr->seed) % 3;
    desync_future_t *f;
    uintptr_t want = 0;
    struct prec *r = NULL;
    if (mode < 2) {
        f = desync_future_desync(x->d, async_job, ENC(seq, mode, pr->id));
        want = mode ? value_of(seq, pr->id) : 0;
    } else {
        r = prec_new(pr->id, seq, value_of(seq, pr->id) ^ 1, 1);
        want = r->value;
        f = desync_future_desync(x->d, promise_job, r);
    }
    if (!f)
        fatal("desync_future_desync", DESYNC_ENOMEM);
    sent(pr, x, seq, K_FDESYNC);
    if (r)
        settle_promise(pr, r); /* r may be freed from here on */
    add_pending(pr, NULL, f, want, K_FDESYNC);
}

static void op_future_sync(struct producer *pr, struct inst *x) {
    uint64_t seq = next_seq(pr, x);
    uint32_t mode = test_rnd(&pr->seed) % 2;
    desync_future_t *f = desync_future_sync(x->d, async_job, ENC(seq, mode, pr->id));
    if (!f)
        fatal("desync_future_sync", DESYNC_ENOMEM);
    sent(pr, x, seq, K_FSYNC);
    add_pending(pr, NULL, f, mode ? value_of(seq, pr->id) : 0, K_FSYNC);
}

/* after on x, waiting for a ready future, a promise, a future_desync or a
 * future_sync (not with -F) of another object y, whose value then updates
 * x's data. The future_sync case found a hang: desync_after used to start a
 * future_sync it took over only once x's queue reached the after (on one
 * object, never). */
static void op_after(struct producer *pr, struct inst *x, struct inst *y) {
    uint32_t mode = test_rnd(&pr->seed) % (o_after_sync ? 4u : 3u);
    desync_future_t *awaited = NULL;
    uintptr_t value = test_rnd(&pr->seed);
    if (mode >= 2) {
        /* Queued before the after job (y may be x). */
        uint64_t yseq = next_seq(pr, y);
        value = value_of(yseq, pr->id);
        awaited = mode == 2 ? desync_future_desync(y->d, async_job, ENC(yseq, 1, pr->id))
                            : desync_future_sync(y->d, async_job, ENC(yseq, 1, pr->id));
        if (!awaited)
            fatal("making the awaited future", DESYNC_ENOMEM);
        sent(pr, y, yseq, mode == 2 ? K_FDESYNC : K_FSYNC);
        if (o_threads == 0) {
            /* With no threads, y's job runs only when someone drives y; a
             * sync would queue behind this producer's later items on y, so
             * flush waits on a future right behind the job instead. */
            yseq = next_seq(pr, y);
            desync_future_t *m = desync_future_desync(y->d, async_job, ENC(yseq, 0, pr->id));
            if (!m)
                fatal("desync_future_desync", DESYNC_ENOMEM);
            sent(pr, y, yseq, K_FDESYNC);
            add_pending(pr, NULL, m, 0, K_FDESYNC);
            pr->pend[pr->npend - 1].must_wait = 1;
        }
    }
    uint64_t seq = next_seq(pr, x);
    struct prec *r = prec_new(pr->id, seq, value, mode == 1);
    if (mode == 0)
        awaited = desync_future_ready((void *)value);
    else if (mode == 1)
        awaited = r->f;
    if (!awaited)
        fatal("desync_future_ready", DESYNC_ENOMEM);
    desync_future_t *f = desync_after(x->d, awaited, after_job, r);
    if (!f)
        fatal("desync_after", DESYNC_ENOMEM);
    sent(pr, x, seq, K_AFTER);
    if (mode == 1)
        settle_promise(pr, r); /* r may be freed from here on */
    add_pending(pr, NULL, f, value + 1, K_AFTER);

}

/* Suspends x's queue, queues jobs behind the suspension, and resumes it
 * (here, or from the completer queue). */
static void op_suspend(struct producer *pr, struct inst *x) {
    flush(pr);
    desync_future_t *sf = desync_queue_suspend(desync_get_queue(x->d));
    if (!sf)
        fatal("desync_queue_suspend", DESYNC_ENOMEM);
    int behind = 1 + (int)(test_rnd(&pr->seed) % 3);
    for (int i = 0; i < behind; i++) {
        uint64_t seq = next_seq(pr, x);
        int rc = desync_desync(x->d, plain_job, ENC(seq, 0, pr->id));
        if (rc)
            fatal("desync", rc);
        sent(pr, x, seq, K_DESYNC);
    }
    void *v = NULL;
    int rc = wait_future(sf, &v, "suspend");
    if (rc != 0 || !v)
        fatal("waiting for a suspension", rc ? rc : DESYNC_EINVAL);
    desync_future_free(sf);
    /* Nothing of x runs from here until the resume. */
    atomic_store(&x->suspended, 1);
    if (test_rnd(&pr->seed) % 4 == 0)
        sched_yield();
    if (test_rnd(&pr->seed) % 2) {
        atomic_store(&x->suspended, 0);
        desync_resumer_resume(v);
    } else {
        struct resume_arg *a = malloc(sizeof *a);
        if (!a)
            fatal("malloc", DESYNC_ENOMEM);
        a->x = x;
        a->r = v;
        rc = desync_queue_desync(g_completer, resume_queue_job, a);
        if (rc)
            fatal("desync on the completer", rc);
        pr->used_completer = 1;
    }
    pr->count[OP_SUSPEND]++;
}

/* Swaps this producer's reference to slot o for one to its current object;
 * the release may be the last one (it then waits for the object's jobs). */
static void op_refresh(struct producer *pr, int o) {
    flush(pr);
    struct inst *old = pr->held[o];
    pthread_mutex_lock(&g_slots[o].mu);
    struct inst *x = g_slots[o].x;
    desync_retain(x->d); /* the slot's reference keeps x->d alive here */
    pthread_mutex_unlock(&g_slots[o].mu);
    pr->held[o] = x;
    desync_release(old->d);
    pr->count[OP_REFRESH]++;
}

/* Replaces slot o's object with a new one; producers still holding the old
 * one keep using it until they refresh. */
static void op_recreate(struct producer *pr, int o) {
    flush(pr);
    struct inst *nx = inst_new();
    pthread_mutex_lock(&g_slots[o].mu);
    struct inst *old = g_slots[o].x;
    g_slots[o].x = nx;
    pthread_mutex_unlock(&g_slots[o].mu);
    desync_release(old->d);
    pr->count[OP_RECREATE]++;
}

/* A job over x and y (y may be x), from sync_all or desync_all; it counts
 * as a job on each (two sequence numbers, two jobs queued and run). With 0
 * threads too: there a multi-object job parked on x whose turn on y comes
 * only after its part on x was reached is run by a thread waiting on the
 * scheduler (this soak found that gap: scheduler.c, HELPERS). */
static void op_all(struct producer *pr, struct inst *x, struct inst *y, int kind) {
    struct all_arg local, *a = &local;
    if (kind == K_DESYNC_ALL) {
        a = malloc(sizeof *a);
        if (!a)
            fatal("malloc", DESYNC_ENOMEM);
    } else {
        flush(pr); /* it blocks */
    }
    uint64_t sx = next_seq(pr, x);
    *a = (struct all_arg){pr->id, {sx, y == x ? sx + 1 : next_seq(pr, y)}, 0,
                          kind == K_DESYNC_ALL};
    uint64_t sy = a->seq[1];
    desync_t *objs[2] = {x->d, y->d};
    int rc = kind == K_DESYNC_ALL ? desync_desync_all(objs, 2, all_job, a)
                                  : desync_sync_all(objs, 2, all_job, a);
    if (rc)
        fatal(op_names[kind], rc);
    if (kind == K_SYNC_ALL && a->ran != 1)
        ERR("sync_all returned but its job ran %d times\n", a->ran);
    /* a may be freed from here on (desync_all) */
    sent(pr, x, sx, kind);
    sent(pr, y, sy, kind);
    pr->count[kind]--; /* one call, two jobs */
}

/* One operation on a random object, in these shares (per 100,000): 5
 * re-creations, 200 reference swaps, 50 suspends, 2,000 afters, 1,500
 * future_syncs, 2,500 future_desyncs, 3,000 try_syncs, 5,000 syncs, 1,000
 * sync_alls, 2,000 desync_alls, 10,000 desync_copys, the rest (about 73%)
 * desyncs: mostly the cheap calls, so that 10M jobs take well under a minute
 * on 2 cores. */
static void one_op(struct producer *pr) {
    uint32_t r = test_rnd(&pr->seed) % 100000u;
    int o = (int)(test_rnd(&pr->seed) % (uint32_t)o_objects);
    struct inst *x = pr->held[o];
    int rc;
    if (r < 5) {
        atomic_store(&pr->doing, OP_RECREATE);
        op_recreate(pr, o);
    } else if (r < 205) {
        atomic_store(&pr->doing, OP_REFRESH);
        op_refresh(pr, o);
    } else if (r < 255) {
        atomic_store(&pr->doing, OP_SUSPEND);
        op_suspend(pr, x);
    } else if (r < 2255) {
        atomic_store(&pr->doing, K_AFTER);
        int o2 = (int)(test_rnd(&pr->seed) % (uint32_t)o_objects);
        op_after(pr, x, pr->held[o2]);
    } else if (r < 3755) {
        atomic_store(&pr->doing, K_FSYNC);
        op_future_sync(pr, x);
    } else if (r < 6255) {
        atomic_store(&pr->doing, K_FDESYNC);
        op_future_desync(pr, x);
    } else if (r < 9255) {
        atomic_store(&pr->doing, K_TRY);
        struct sync_arg a = {pr->id, next_seq(pr, x), 0};
        rc = desync_try_sync(x->d, sync_job, &a);
        if (rc == 0) {
            if (a.ran != 1)
                ERR("try_sync returned 0 but its job ran %d times\n", a.ran);
            sent(pr, x, a.seq, K_TRY);
        } else if (rc == DESYNC_EBUSY) {
            if (a.ran != 0)
                ERR("try_sync returned EBUSY but its job ran\n");
            pr->try_busy++;
        } else {
            fatal("try_sync", rc);
        }
    } else if (r < 14255) {
        atomic_store(&pr->doing, K_SYNC);
        flush(pr);
        struct sync_arg a = {pr->id, next_seq(pr, x), 0};
        rc = desync_sync(x->d, sync_job, &a);
        if (rc)
            fatal("sync", rc);
        if (a.ran != 1)
            ERR("sync returned but its job ran %d times\n", a.ran);
        sent(pr, x, a.seq, K_SYNC);
    } else if (r < 17255) {
        int kind = r < 15255 ? K_SYNC_ALL : K_DESYNC_ALL;
        atomic_store(&pr->doing, kind);
        /* One object in 8 twice (a transfer to itself). */
        int o2 =
            test_rnd(&pr->seed) % 8 == 0 ? o : (int)(test_rnd(&pr->seed) % (uint32_t)o_objects);
        op_all(pr, x, pr->held[o2], kind);
    } else if (r < 27255) {
        atomic_store(&pr->doing, K_COPY);
        struct copy_arg a = {pr->id, next_seq(pr, x)};
        rc = desync_desync_copy(x->d, copy_job, &a, sizeof a);
        if (rc)
            fatal("desync_copy", rc);
        sent(pr, x, a.seq, K_COPY);
    } else {
        atomic_store(&pr->doing, K_DESYNC);
        uint64_t seq = next_seq(pr, x);
        rc = desync_desync(x->d, plain_job, ENC(seq, 0, pr->id));
        if (rc)
            fatal("desync", rc);
        sent(pr, x, seq, K_DESYNC);
    }
}

static void *producer_main(void *arg) {
    struct producer *pr = arg;
    while (!atomic_load(&g_gate_open))
        sched_yield();
    uint64_t last = 0;
    while (!atomic_load_explicit(&g_stop, memory_order_relaxed) &&
           (o_seconds > 0 || pr->queued < pr->quota)) {
        one_op(pr);
        atomic_store_explicit(&pr->progress, pr->queued, memory_order_relaxed);
        if (pr->queued - last >= 4096) {
            atomic_fetch_add_explicit(&g_queued_total, pr->queued - last, memory_order_relaxed);
            last = pr->queued;
        }
    }
    atomic_fetch_add(&g_queued_total, pr->queued - last);
    flush(pr);
    atomic_store(&pr->doing, OP_DONE);
    for (int o = 0; o < o_objects; o++) {
        desync_release(pr->held[o]->d);
        pr->held[o] = NULL;
        atomic_fetch_add_explicit(&pr->progress, 1, memory_order_relaxed);
    }
    return NULL;
}

/* --------------------------------------------------------------- watchdog */

static atomic_ullong g_main_progress;
static uint64_t g_start_ns;
static double g_max_seconds;

static uint64_t progress_sum(void) {
    uint64_t s = atomic_load(&g_main_progress);
    for (int p = 0; p < o_producers; p++)
        s += atomic_load_explicit(&g_prod[p].progress, memory_order_relaxed);
    return s;
}

static void *watchdog_main(void *arg) {
    (void)arg;
    uint64_t last = progress_sum(), last_change = test_now_ns();
    for (;;) {
        test_sleep_ms(100);
        uint64_t now = test_now_ns(), cur = progress_sum();
        if (cur != last) {
            last = cur;
            last_change = now;
        }
        int stalled = (double)(now - last_change) / 1e9 > o_stall;
        int too_long = (double)(now - g_start_ns) / 1e9 > g_max_seconds;
        if (stalled || too_long) {
            fprintf(stderr, "soak: %s\n",
                    stalled ? "no progress: a job, sync or wait hangs" : "the run takes too long");
            for (int p = 0; p < o_producers; p++)
                fprintf(stderr, "soak:   producer %d: %llu jobs queued, in %s\n", p,
                        (unsigned long long)atomic_load(&g_prod[p].progress),
                        op_names[atomic_load(&g_prod[p].doing)]);
            fprintf(stderr, "soak: FAIL\n");
            _exit(1);
        }
    }
    return NULL;
}

/* ------------------------------------------------------------------- main */

/* VmRSS in KiB, 0 if unknown. */
static long rss_kib(void) {
    FILE *f = fopen("/proc/self/status", "r");
    if (!f)
        return 0;
    char line[256];
    long kib = 0;
    while (fgets(line, sizeof line, f))
        if (sscanf(line, "VmRSS: %ld", &kib) == 1)
            break;
    fclose(f);
    return kib;
}

static void usage(void) {
    fprintf(stderr,
            "usage: soak [-n jobs] [-s seconds] [-w warmup_s] [-g rss_growth_pct]\n"
            "            [-t default|threads] [-p producers] [-o objects] [-S stall_s] [-F]\n");
    exit(2);
}

static void sleep_until(uint64_t t_ns) {
    while (!atomic_load(&g_stop)) {
        uint64_t now = test_now_ns();
        if (now >= t_ns)
            return;
        uint64_t left_ms = (t_ns - now) / 1000000u;
        test_sleep_ms(left_ms > 100 ? 100 : (unsigned)left_ms + 1);
    }
}

int main(int argc, char **argv) {
    int c;
    while ((c = getopt(argc, argv, "n:s:w:g:t:p:o:S:F")) != -1) {
        switch (c) {
        case 'n': o_jobs = strtoull(optarg, NULL, 10); break;
        case 's': o_seconds = atof(optarg); break;
        case 'w': o_warmup = atof(optarg); break;
        case 'g': o_growth = atof(optarg); break;
        case 't': o_threads = strcmp(optarg, "default") ? atol(optarg) : -1; break;
        case 'p': o_producers = atoi(optarg); break;
        case 'o': o_objects = atoi(optarg); break;
        case 'S': o_stall = atof(optarg); break;
        case 'F': o_after_sync = 0; break;
        default: usage();
        }
    }
    if (optind != argc || o_producers < 1 || o_producers > MAXP || o_objects < 1 ||
        o_objects > MAXO || o_stall <= 0 || (o_seconds <= 0 && o_jobs == 0))
        usage();
    if (o_threads >= 0) {
        g_sched = desync_scheduler_new((size_t)o_threads);
        if (!g_sched)
            fatal("desync_scheduler_new", DESYNC_ENOMEM);
    }
    g_completer = desync_queue_new(g_sched);
    if (!g_completer)
        fatal("desync_queue_new", DESYNC_ENOMEM);
    for (int o = 0; o < o_objects; o++) {
        pthread_mutex_init(&g_slots[o].mu, NULL);
        g_slots[o].x = inst_new();
    }
    char sched_name[64];
    if (o_threads < 0)
        snprintf(sched_name, sizeof sched_name, "the default scheduler");
    else
        snprintf(sched_name, sizeof sched_name, "a scheduler with %ld threads", o_threads);
    if (o_seconds > 0)
        printf("soak: %.0f s, %d producers, %d objects, %s\n", o_seconds, o_producers, o_objects,
               sched_name);
    else
        printf("soak: %llu jobs, %d producers, %d objects, %s\n", (unsigned long long)o_jobs,
               o_producers, o_objects, sched_name);
    fflush(stdout);

    for (int p = 0; p < o_producers; p++) {
        struct producer *pr = &g_prod[p];
        pr->id = (uint32_t)p;
        pr->seed = 0x9e3779b9u * (uint32_t)(p + 1);
        pr->quota = o_jobs / (uint64_t)o_producers + ((uint64_t)p < o_jobs % (uint64_t)o_producers);
        for (int o = 0; o < o_objects; o++) {
            pr->held[o] = g_slots[o].x;
            desync_retain(pr->held[o]->d);
        }
    }
    g_start_ns = test_now_ns();
    /* The run's expected length plus the stall bound (and a generous
     * allowance for a job-count run, whose length we do not know). */
    g_max_seconds = (o_seconds > 0 ? o_seconds : 600) + o_stall;
    pthread_t wd;
    if (pthread_create(&wd, NULL, watchdog_main, NULL) != 0)
        fatal("pthread_create", DESYNC_EAGAIN);
    pthread_detach(wd);
    for (int p = 0; p < o_producers; p++)
        if (pthread_create(&g_prod[p].th, NULL, producer_main, &g_prod[p]) != 0)
            fatal("pthread_create", DESYNC_EAGAIN);
    uint64_t t0 = test_now_ns();
    atomic_store(&g_gate_open, 1);

    long rss_warm = 0, rss_end = 0;
    uint64_t jobs_warm = 0;
    if (o_seconds > 0) {
        if (o_warmup > 0) {
            sleep_until(t0 + (uint64_t)(o_warmup * 1e9));
            rss_warm = rss_kib();
            jobs_warm = atomic_load(&g_queued_total);
            printf("soak: warm-up done after %.0f s: %llu jobs, RSS %ld KiB\n", o_warmup,
                   (unsigned long long)jobs_warm, rss_warm);
            fflush(stdout);
        }
        for (int minute = 1; t0 + (uint64_t)(o_seconds * 1e9) > test_now_ns(); minute++) {
            uint64_t next = t0 + (uint64_t)minute * 60000000000ull;
            uint64_t end = t0 + (uint64_t)(o_seconds * 1e9);
            sleep_until(next < end ? next : end);
            if (next < end && (double)minute * 60 != o_warmup) {
                printf("soak: %d min: %llu jobs, RSS %ld KiB\n", minute,
                       (unsigned long long)atomic_load(&g_queued_total), rss_kib());
                fflush(stdout);
            }
        }
        rss_end = rss_kib();
        atomic_store(&g_stop, 1);
    } else {
        rss_warm = rss_kib();
    }
    for (int p = 0; p < o_producers; p++)
        pthread_join(g_prod[p].th, NULL);
    uint64_t t1 = test_now_ns();
    if (o_seconds <= 0)
        rss_end = rss_kib();

    /* Teardown: the slots' references are the last ones now, so each release
     * waits for its object's jobs and destroys it. */
    for (int o = 0; o < o_objects; o++) {
        desync_release(g_slots[o].x->d);
        g_slots[o].x = NULL;
        atomic_fetch_add(&g_main_progress, 1);
    }
    desync_queue_release(g_completer);
    int rc = desync_scheduler_drain(g_sched);
    if (rc)
        fatal("desync_scheduler_drain", rc);
    atomic_fetch_add(&g_main_progress, 1);
    /* Objects resumed by the completer's last jobs finish on their own. */
    uint64_t end = test_now_ns() + (uint64_t)(o_stall * 1e9);
    while (atomic_load(&g_destroyed) != atomic_load(&g_created) && test_now_ns() < end)
        test_sleep_ms(1);
    uint64_t t2 = test_now_ns();

    uint64_t queued = 0, count[NOPS] = {0}, busy = 0;
    for (int p = 0; p < o_producers; p++) {
        queued += g_prod[p].queued;
        busy += g_prod[p].try_busy;
        for (int k = 0; k < NOPS; k++)
            count[k] += g_prod[p].count[k];
    }
    double secs = (double)(t1 - t0) / 1e9;
    printf("soak: %llu jobs queued in %.1f s (%.0f jobs/s), all run and checked %.1f s later\n",
           (unsigned long long)queued, secs, (double)queued / secs, (double)(t2 - t1) / 1e9);
    printf("soak:  ");
    for (int k = 0; k < K_NJOBKINDS; k++)
        printf(" %s %llu,", op_names[k], (unsigned long long)count[k]);
    printf(" (try_sync busy %llu)\n", (unsigned long long)busy);
    printf("soak:   %llu suspends, %llu reference swaps, %llu objects re-created\n",
           (unsigned long long)count[OP_SUSPEND], (unsigned long long)count[OP_REFRESH],
           (unsigned long long)count[OP_RECREATE]);
    double growth = rss_warm > 0 ? 100.0 * (double)(rss_end - rss_warm) / (double)rss_warm : 0;
    printf("soak: RSS %ld KiB at %s, %ld KiB at the end (%+.1f%%)\n", rss_warm,
           o_seconds > 0 && o_warmup > 0 ? "the end of the warm-up" : "setup", rss_end, growth);

    int fail = 0;
    if (atomic_load(&g_destroyed) != atomic_load(&g_created)) {
        fprintf(stderr, "soak: %llu objects created, %llu destroyed\n",
                (unsigned long long)atomic_load(&g_created),
                (unsigned long long)atomic_load(&g_destroyed));
        fail = 1;
    }
    if (atomic_load(&g_ran) != queued) {
        fprintf(stderr, "soak: %llu jobs queued, %llu ran\n", (unsigned long long)queued,
                (unsigned long long)atomic_load(&g_ran));
        fail = 1;
    }
    if (atomic_load(&g_errors)) {
        fprintf(stderr, "soak: %d errors\n", atomic_load(&g_errors));
        fail = 1;
    }
    if (o_growth >= 0 && rss_warm > 0 && growth >= o_growth) {
        fprintf(stderr, "soak: RSS grew by %.1f%% (limit: under %.0f%%)\n", growth, o_growth);
        fail = 1;
    }
    if (g_sched)
        desync_scheduler_free(g_sched);
    desync_shutdown();
    printf("soak: %s\n", fail ? "FAIL" : "PASS");
    return fail;
}
