/*
 * Core stress tests: many threads, many jobs, checked exactly.
 * Loops shrink 10x in sanitizer builds (-DDESYNC_TEST_SANITIZED) or when
 * $DESYNC_TEST_TSAN is set, since ThreadSanitizer is ~10x slower.
 */
#include <desync.h>

#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdint.h>
#include <string.h>

#include "test.h"

static int sanitized(void) {
#ifdef DESYNC_TEST_SANITIZED
    return 1;
#else
    const char *e = getenv("DESYNC_TEST_TSAN");
    return e && *e && strcmp(e, "0") != 0;
#endif
}

/* A tenth, never below 1 (as TEST_SCALED), in sanitizer builds and also
 * when $DESYNC_TEST_TSAN is set. */
static int scaled(int n) { return sanitized() ? (n / 10 > 0 ? n / 10 : 1) : n; }

/* Opens g_gate once all n threads exist. */
static int start_threads(pthread_t *th, int n, void *(*fn)(void *), void *args, size_t arg_size) {
    atomic_store(&g_gate, 0);
    for (int i = 0; i < n; i++)
        if (pthread_create(&th[i], NULL, fn, (char *)args + (size_t)i * arg_size) != 0)
            return -1;
    atomic_store(&g_gate, 1);
    return 0;
}

/* Marks a job as running on its object; two at once is a serial-order bug. */
static void enter(atomic_int *inside, const char *what) {
    if (atomic_fetch_add(inside, 1) != 0)
        FAILF("%s: two jobs of one queue ran concurrently\n", what);
}

static void leave(atomic_int *inside) { atomic_fetch_sub(inside, 1); }

/* ------------------------------------------------------------- mixed ops */

#define MIX_PRODUCERS 4
#define MIX_OBJECTS 4
#define SEQ_BITS 24

struct mix_entry {
    uint32_t producer, seq;
};

struct mix_obj {
    desync_t *d;
    struct mix_entry *log; /* only touched by the object's jobs */
    size_t n, cap;
    atomic_int inside;
};

/* The argument of sync/try_sync/copy jobs. */
struct mix_arg {
    uint32_t producer, seq;
    pthread_t caller;
    int must_run_on_caller;
    int ran; /* set by the job; read by the caller after sync returns */
};

static void mix_record(struct mix_obj *o, uint32_t producer, uint32_t seq) {
    enter(&o->inside, "mixed");
    if (o->n < o->cap)
        o->log[o->n] = (struct mix_entry){producer, seq};
    o->n++;
    leave(&o->inside);
}

static void mix_job_packed(void *data, void *arg) {
    uintptr_t v = (uintptr_t)arg;
    mix_record(data, (uint32_t)(v >> SEQ_BITS), (uint32_t)(v & ((1u << SEQ_BITS) - 1)));
}

static void mix_job_arg(void *data, void *arg) {
    struct mix_arg *a = arg;
    if (a->must_run_on_caller && !pthread_equal(a->caller, pthread_self()))
        FAILF("try_sync ran its job on another thread\n");
    mix_record(data, a->producer, a->seq);
    a->ran = 1;
}

struct mix_producer {
    int id, n;
    struct mix_obj *objs;
    signed char *expect; /* expect[seq] = object index, -1 = not queued */
};

static void *mix_producer_main(void *p) {
    struct mix_producer *pr = p;
    gate_wait();
    uint32_t state = 0x9e3779b9u * (uint32_t)(pr->id + 1);
    for (int seq = 0; seq < pr->n; seq++) {
        int oi = (int)(test_rnd(&state) % MIX_OBJECTS);
        desync_t *d = pr->objs[oi].d;
        struct mix_arg a = {(uint32_t)pr->id, (uint32_t)seq, pthread_self(), 0, 0};
        int op = (int)(test_rnd(&state) % 8);
        int rc;
        pr->expect[seq] = (signed char)oi;
        switch (op) {
        case 0: /* sync: the job has run when it returns */
            rc = desync_sync(d, mix_job_arg, &a);
            if (rc == 0 && !a.ran)
                FAILF("sync returned before its job ran\n");
            break;
        case 1: /* try_sync: runs now on this thread, or not at all */
            a.must_run_on_caller = 1;
            rc = desync_try_sync(d, mix_job_arg, &a);
            if (rc == DESYNC_EBUSY) {
                if (a.ran)
                    FAILF("try_sync ran its job but said EBUSY\n");
                pr->expect[seq] = -1;
                rc = 0;
            } else if (rc == 0 && !a.ran) {
                FAILF("try_sync returned 0 without running its job\n");
            }
            break;
        case 2:
        case 3: /* copy: the stack struct dies right after the call */
            rc = desync_desync_copy(d, mix_job_arg, &a, sizeof a);
            break;
        default:
            rc = desync_desync(d, mix_job_packed,
                               (void *)(((uintptr_t)pr->id << SEQ_BITS) | (uintptr_t)seq));
            break;
        }
        if (rc != 0) {
            FAILF("producer %d seq %d op %d: rc %d (%s)\n", pr->id, seq, op, rc,
                  desync_strerror(rc));
            pr->expect[seq] = -1;
        }
    }
    return NULL;
}

TEST(core_stress_mixed) {
    const int n = scaled(200000);
    desync_scheduler_t *s = desync_scheduler_new(2);
    CHECK(s);
    static struct mix_obj objs[MIX_OBJECTS];
    for (int i = 0; i < MIX_OBJECTS; i++) {
        memset(&objs[i], 0, sizeof objs[i]);
        objs[i].cap = (size_t)n * MIX_PRODUCERS;
        objs[i].log = malloc(objs[i].cap * sizeof *objs[i].log);
        CHECK(objs[i].log);
        /* Half on the default scheduler, half on a private one. */
        objs[i].d = i % 2 ? desync_new_on(s, &objs[i], NULL) : desync_new(&objs[i], NULL);
        CHECK(objs[i].d);
    }
    static struct mix_producer prods[MIX_PRODUCERS];
    for (int p = 0; p < MIX_PRODUCERS; p++) {
        prods[p] = (struct mix_producer){p, n, objs, malloc((size_t)n)};
        CHECK(prods[p].expect);
    }
    pthread_t th[MIX_PRODUCERS];
    CHECK_EQ(start_threads(th, MIX_PRODUCERS, mix_producer_main, prods, sizeof prods[0]), 0);
    test_join_threads(th, MIX_PRODUCERS);
    for (int i = 0; i < MIX_OBJECTS; i++)
        CHECK_EQ(desync_sync(objs[i].d, noop_job, NULL), 0); /* drain */

    /* Every queued job ran exactly once, on the right object, and each
     * producer's jobs ran in its own order on every object. */
    unsigned char *seen[MIX_PRODUCERS];
    for (int p = 0; p < MIX_PRODUCERS; p++) {
        seen[p] = calloc((size_t)n, 1);
        CHECK(seen[p]);
    }
    for (int i = 0; i < MIX_OBJECTS; i++) {
        CHECK(objs[i].n <= objs[i].cap);
        long last[MIX_PRODUCERS];
        for (int p = 0; p < MIX_PRODUCERS; p++)
            last[p] = -1;
        for (size_t k = 0; k < objs[i].n; k++) {
            struct mix_entry e = objs[i].log[k];
            CHECK(e.producer < MIX_PRODUCERS);
            CHECK(e.seq < (uint32_t)n);
            if ((long)e.seq <= last[e.producer]) {
                fprintf(stderr, "object %d: producer %u seq %u ran after seq %ld\n", i,
                        e.producer, e.seq, last[e.producer]);
                return 1;
            }
            last[e.producer] = e.seq;
            CHECK_EQ(prods[e.producer].expect[e.seq], i);
            CHECK_EQ(seen[e.producer][e.seq], 0);
            seen[e.producer][e.seq] = 1;
        }
    }
    long queued = 0;
    for (int p = 0; p < MIX_PRODUCERS; p++)
        for (int q = 0; q < n; q++) {
            if (prods[p].expect[q] >= 0) {
                queued++;
                if (!seen[p][q]) {
                    fprintf(stderr, "producer %d seq %d never ran\n", p, q);
                    return 1;
                }
            }
        }
    CHECK(queued > 0);
    CHECK_EQ(atomic_load(&g_errors), 0);
    fprintf(stderr, "mixed: %ld of %d jobs queued\n", queued, MIX_PRODUCERS * n);

    for (int p = 0; p < MIX_PRODUCERS; p++) {
        free(seen[p]);
        free(prods[p].expect);
    }
    for (int i = 0; i < MIX_OBJECTS; i++) {
        desync_release(objs[i].d);
        free(objs[i].log);
    }
    desync_scheduler_free(s);
    return 0;
}

/* ------------------------------------------------------ concurrent sync */

struct counter_obj {
    long value; /* plain long: the queue is the only protection */
    atomic_int inside;
};

struct sync_arg {
    int ran;
};

static void counter_inc(void *data, void *arg) {
    struct counter_obj *c = data;
    enter(&c->inside, "concurrent sync");
    long v = c->value;
    /* A little work between read and write keeps the queue busy, so the
     * other syncing threads really have to queue up and wait. */
    for (volatile int i = 0; i < 50; i++) {
    }
    c->value = v + 1;
    leave(&c->inside);
    if (arg)
        ((struct sync_arg *)arg)->ran = 1;
}

static void get_long(void *data, void *out) { *(long *)out = ((struct counter_obj *)data)->value; }

static desync_future_t *counter_inc_future(void *data, void *arg) {
    counter_inc(data, arg);
    return desync_future_ready(NULL);
}

/* counter_inc as a future job on d, waited for at once. */
static void future_inc_wait(desync_t *d) {
    desync_future_t *f = desync_future_desync(d, counter_inc_future, NULL);
    if (!f || desync_future_wait_for(f, LONG_NS, NULL) != 0)
        FAILF("future_desync failed\n");
    desync_future_free(f);
}

/* d's stats once every queued node is counted run, by whichever thread held
 * the token (one writer at a time: a lost count would leave `pending` above
 * 0 for good). The last runner may still be between its job and its count:
 * a bounded wait; *st then has pending > 0. */
static void stats_when_counted(desync_t *d, desync_queue_stats_t *st) {
    for (int w = 0; w < 20000; w++) {
        if (desync_queue_stats(desync_get_queue(d), st) != 0)
            FAILF("desync_queue_stats failed\n");
        if (st->pending == 0)
            return;
        test_sleep_ms(1);
    }
}

struct syncer {
    desync_t *d;
    int n;
    int with_desync;
};

static void *syncer_main(void *p) {
    struct syncer *s = p;
    gate_wait();
    for (int i = 0; i < s->n; i++) {
        struct sync_arg a = {0};
        int rc = desync_sync(s->d, counter_inc, &a);
        if (rc != 0 || !a.ran)
            FAILF("sync: rc %d ran %d\n", rc, a.ran);
        if (s->with_desync && i % 4 == 0 && desync_desync(s->d, counter_inc, NULL) != 0)
            FAILF("desync failed\n");
        if (s->with_desync && i % 8 == 1)
            future_inc_wait(s->d);
    }
    return NULL;
}

TEST(core_stress_concurrent_sync) {
    const int n = scaled(30000);
    enum { NT = 4 };
    desync_scheduler_t *s0 = desync_scheduler_new(0);
    CHECK(s0);
    /* Default scheduler (threads may run the queue) and 0 threads (only the
     * syncing threads do). */
    desync_scheduler_t *scheds[2] = {NULL, s0};
    for (int k = 0; k < 2; k++) {
        static struct counter_obj c;
        memset(&c, 0, sizeof c);
        desync_t *d = scheds[k] ? desync_new_on(scheds[k], &c, NULL) : desync_new(&c, NULL);
        CHECK(d);
        struct syncer args[NT];
        for (int i = 0; i < NT; i++)
            args[i] = (struct syncer){d, n / 2, i % 2};
        pthread_t th[NT];
        CHECK_EQ(start_threads(th, NT, syncer_main, args, sizeof args[0]), 0);
        test_join_threads(th, NT);
        long v = -1;
        CHECK_EQ(desync_sync(d, get_long, &v), 0);
        long expected = 0;
        for (int i = 0; i < NT; i++)
            expected += args[i].n +
                        (args[i].with_desync ? (args[i].n + 3) / 4 + (args[i].n + 6) / 8 : 0);
        CHECK_EQ(v, expected);
        desync_queue_stats_t st = {0};
        stats_when_counted(d, &st);
        CHECK_EQ(st.pending, 0);
        long queued = 0; /* desyncs and future jobs: always queued nodes */
        for (int i = 0; i < NT; i++)
            queued += args[i].with_desync ? (args[i].n + 3) / 4 + (args[i].n + 6) / 8 : 0;
        CHECK(st.run >= (uint64_t)queued);
        CHECK_EQ(atomic_load(&g_errors), 0);
        desync_release(d);
    }
    desync_scheduler_free(s0);
    return 0;
}

/* Only the token holder adds to the queue's `unlinked` count, with a load and
 * a store: a count made after the token went (racing the next holder's)
 * would be lost, and `pending` would stay above 0. Short desyncs from
 * several threads make the queue go idle and busy again all the time, each
 * busy period on whichever thread takes it. */
struct counts_arg {
    desync_t *d;
    int n;
};

static void quick_inc(void *data, void *arg) {
    (void)arg;
    ((struct counter_obj *)data)->value++;
}

static void *counts_main(void *p) {
    struct counts_arg *a = p;
    gate_wait();
    for (int i = 0; i < a->n; i++) {
        if (desync_desync(a->d, quick_inc, NULL) != 0)
            FAILF("desync failed\n");
        if (i % 64 == 63)
            future_inc_wait(a->d);
    }
    return NULL;
}

TEST(core_stress_counts_exact) {
    enum { NT = 4 };
    const int n = scaled(50000);
    for (int round = 0; round < 3; round++) {
        static struct counter_obj c;
        memset(&c, 0, sizeof c);
        desync_t *d = desync_new(&c, NULL);
        CHECK(d);
        struct counts_arg args[NT];
        for (int i = 0; i < NT; i++)
            args[i] = (struct counts_arg){d, n};
        pthread_t th[NT];
        CHECK_EQ(start_threads(th, NT, counts_main, args, sizeof args[0]), 0);
        test_join_threads(th, NT);
        long v = -1;
        CHECK_EQ(desync_sync(d, get_long, &v), 0);
        long queued = (long)NT * (n + n / 64);
        CHECK_EQ(v, queued);
        desync_queue_stats_t st = {0};
        stats_when_counted(d, &st);
        CHECK_EQ(st.pending, 0);
        /* The sync above counts too if it found the queue busy. */
        CHECK(st.run == (uint64_t)queued || st.run == (uint64_t)queued + 1);
        CHECK_EQ(atomic_load(&g_errors), 0);
        desync_release(d);
    }
    return 0;
}

/* --------------------------------------------------- create and release */

#define CR_THREADS 4
#define CR_SLOTS 16

struct cr_data {
    atomic_long queued; /* incremented before each queuing call */
    long ran;           /* only touched from jobs (and destroy) */
    atomic_int inside;
    uint32_t magic;
};

struct cr_handle {
    desync_t *d;
    struct cr_data *data;
};

static atomic_long g_cr_created, g_cr_destroyed;
static _Atomic(struct cr_handle *) g_cr_slots[CR_SLOTS];

static void cr_destroy(void *p) {
    struct cr_data *c = p;
    if (c->magic != 0xC0FFEEu)
        FAILF("destroy: bad data\n");
    if (c->ran != atomic_load(&c->queued))
        FAILF("destroy before every job ran: %ld of %ld\n", c->ran, atomic_load(&c->queued));
    if (atomic_load(&c->inside) != 0)
        FAILF("destroy while a job runs\n");
    c->magic = 0xDEADu;
    free(c);
    atomic_fetch_add(&g_cr_destroyed, 1);
}

static void cr_job(void *data, void *arg) {
    struct cr_data *c = data;
    enter(&c->inside, "create/release");
    if (c->magic != 0xC0FFEEu)
        FAILF("job on destroyed data\n");
    if (arg && *(uint32_t *)arg != 0xABCDu)
        FAILF("copied argument corrupted\n");
    c->ran++;
    leave(&c->inside);
}

/* Drops the reference that the job was given, from inside the job. */
static void cr_release_job(void *data, void *arg) {
    cr_job(data, NULL);
    desync_release(arg);
}

static int cr_queue(struct cr_handle *h, uint32_t r) {
    atomic_fetch_add(&h->data->queued, 1);
    uint32_t tag = 0xABCDu;
    int rc;
    switch (r % 4) {
    case 0:
        rc = desync_desync_copy(h->d, cr_job, &tag, sizeof tag);
        break;
    case 1:
        rc = desync_sync(h->d, cr_job, NULL);
        break;
    default:
        rc = desync_desync(h->d, cr_job, NULL);
        break;
    }
    if (rc != 0) {
        atomic_fetch_sub(&h->data->queued, 1);
        FAILF("queuing failed: %d\n", rc);
    }
    return rc;
}

struct cr_worker {
    int id, iterations;
    desync_scheduler_t *s;
};

static void *cr_worker_main(void *p) {
    struct cr_worker *w = p;
    gate_wait();
    uint32_t state = 0x85ebca6bu * (uint32_t)(w->id + 1);
    for (int it = 0; it < w->iterations; it++) {
        struct cr_handle *h = malloc(sizeof *h);
        struct cr_data *c = malloc(sizeof *c);
        if (!h || !c) {
            FAILF("malloc\n");
            free(h);
            free(c);
            return NULL;
        }
        atomic_init(&c->queued, 0);
        c->ran = 0;
        atomic_init(&c->inside, 0);
        c->magic = 0xC0FFEEu;
        h->data = c;
        h->d =
            (test_rnd(&state) % 2) ? desync_new_on(w->s, c, cr_destroy) : desync_new(c, cr_destroy);
        if (!h->d) {
            FAILF("desync_new failed\n");
            free(h);
            free(c);
            return NULL;
        }
        atomic_fetch_add(&g_cr_created, 1);

        int jobs = (int)(test_rnd(&state) % 5);
        for (int j = 0; j < jobs; j++)
            cr_queue(h, test_rnd(&state));

        /* Swap a second reference into a shared slot; whatever was there
         * (another thread's object, maybe still busy) gets a job and is
         * released here. */
        desync_retain(h->d);
        struct cr_handle *h2 = malloc(sizeof *h2);
        if (!h2) {
            FAILF("malloc\n");
            desync_release(h->d);
        } else {
            *h2 = *h;
            struct cr_handle *old = atomic_exchange(&g_cr_slots[test_rnd(&state) % CR_SLOTS], h2);
            if (old) {
                cr_queue(old, test_rnd(&state));
                desync_release(old->d);
                free(old);
            }
        }

        /* Drop our own reference: directly, or from inside a job. */
        if (test_rnd(&state) % 4 == 0) {
            atomic_fetch_add(&c->queued, 1);
            if (desync_desync(h->d, cr_release_job, h->d) != 0) {
                atomic_fetch_sub(&c->queued, 1);
                FAILF("desync failed\n");
                desync_release(h->d);
            }
        } else {
            desync_release(h->d);
        }
        free(h);
    }
    return NULL;
}

static int cr_all_destroyed(void *p) {
    (void)p;
    return atomic_load(&g_cr_destroyed) == atomic_load(&g_cr_created);
}

TEST(core_stress_create_release) {
    desync_scheduler_t *s = desync_scheduler_new(2);
    CHECK(s);
    struct cr_worker w[CR_THREADS];
    for (int i = 0; i < CR_THREADS; i++)
        w[i] = (struct cr_worker){i, scaled(30000), s};
    pthread_t th[CR_THREADS];
    CHECK_EQ(start_threads(th, CR_THREADS, cr_worker_main, w, sizeof w[0]), 0);
    test_join_threads(th, CR_THREADS);
    for (int i = 0; i < CR_SLOTS; i++) {
        struct cr_handle *h = atomic_exchange(&g_cr_slots[i], NULL);
        if (h) {
            desync_release(h->d);
            free(h);
        }
    }
    /* Releases from inside jobs finish in the background. */
    int all = test_wait_until(cr_all_destroyed, NULL, 10000);
    if (!all)
        fprintf(stderr, "created %ld, destroyed %ld\n", atomic_load(&g_cr_created),
                atomic_load(&g_cr_destroyed));
    CHECK(all);
    CHECK_EQ(atomic_load(&g_cr_created), (long)CR_THREADS * scaled(30000));
    CHECK_EQ(atomic_load(&g_errors), 0);
    desync_scheduler_free(s);
    return 0;
}

/* -------------------------------------------------------- thread churn */

#define CH_PRODUCERS 3
#define CH_OBJECTS 4

struct churn_obj {
    desync_t *d;
    long ran;
    int last_seq[CH_PRODUCERS];
    atomic_int inside;
};

static atomic_long g_churn_queued[CH_OBJECTS];

static void churn_job(void *data, void *arg) {
    struct churn_obj *o = data;
    uintptr_t v = (uintptr_t)arg;
    int producer = (int)(v >> SEQ_BITS);
    int seq = (int)(v & ((1u << SEQ_BITS) - 1));
    enter(&o->inside, "churn");
    if (seq <= o->last_seq[producer])
        FAILF("churn: producer %d seq %d after %d\n", producer, seq, o->last_seq[producer]);
    o->last_seq[producer] = seq;
    o->ran++;
    leave(&o->inside);
}

struct churner {
    desync_scheduler_t *s;
    atomic_int stop;
    atomic_long ops;
    long min_ops;
};

struct churn_producer {
    int id, n;
    struct churn_obj *objs;
    struct churner *churner;
    long produced;
};

static void *churn_producer_main(void *p) {
    struct churn_producer *pr = p;
    gate_wait();
    uint32_t state = 0xc2b2ae35u * (uint32_t)(pr->id + 1);
    /* At least n jobs, and on until the churner has done enough (capped). */
    int seq;
    for (seq = 0; seq < pr->n || (atomic_load(&pr->churner->ops) < pr->churner->min_ops &&
                                  seq < 40 * pr->n);
         seq++) {
        int oi = (int)(test_rnd(&state) % CH_OBJECTS);
        atomic_fetch_add(&g_churn_queued[oi], 1);
        void *arg = (void *)(((uintptr_t)pr->id << SEQ_BITS) | (uintptr_t)seq);
        int rc = (seq % 256 == 255) ? desync_sync(pr->objs[oi].d, churn_job, arg)
                                    : desync_desync(pr->objs[oi].d, churn_job, arg);
        if (rc != 0) {
            atomic_fetch_sub(&g_churn_queued[oi], 1);
            FAILF("churn: rc %d\n", rc);
        }
    }
    pr->produced = seq;
    return NULL;
}

static void *churner_main(void *p) {
    struct churner *c = p;
    uint32_t state = 12345;
    while (!atomic_load(&c->stop)) {
        switch (test_rnd(&state) % 4) {
        case 0: {
            int rc = desync_scheduler_spawn_thread(c->s);
            if (rc != 0 && rc != DESYNC_EAGAIN)
                FAILF("spawn: %d\n", rc);
            break;
        }
        case 1:
            desync_scheduler_set_max_threads(c->s, test_rnd(&state) % 4);
            break;
        case 2:
            desync_scheduler_despawn_threads_if_overloaded(c->s);
            break;
        default:
            if (desync_scheduler_thread_count(c->s) > 64)
                FAILF("thread count runaway\n");
            break;
        }
        atomic_fetch_add(&c->ops, 1);
        if (test_rnd(&state) % 64 == 0)
            test_sleep_ms(1); /* sometimes let threads settle and sleep */
    }
    return NULL;
}

TEST(core_stress_thread_churn) {
    const int n = scaled(100000);
    desync_scheduler_t *s = desync_scheduler_new(2);
    CHECK(s);
    static struct churn_obj objs[CH_OBJECTS];
    for (int i = 0; i < CH_OBJECTS; i++) {
        memset(&objs[i], 0, sizeof objs[i]);
        for (int p = 0; p < CH_PRODUCERS; p++)
            objs[i].last_seq[p] = -1;
        atomic_store(&g_churn_queued[i], 0);
        objs[i].d = desync_new_on(s, &objs[i], NULL);
        CHECK(objs[i].d);
    }
    static struct churner ch;
    memset(&ch, 0, sizeof ch);
    ch.s = s;
    ch.min_ops = scaled(5000);
    pthread_t cth;
    CHECK_EQ(pthread_create(&cth, NULL, churner_main, &ch), 0);
    struct churn_producer prods[CH_PRODUCERS];
    for (int p = 0; p < CH_PRODUCERS; p++)
        prods[p] = (struct churn_producer){p, n, objs, &ch, 0};
    pthread_t th[CH_PRODUCERS];
    CHECK_EQ(start_threads(th, CH_PRODUCERS, churn_producer_main, prods, sizeof prods[0]), 0);
    test_join_threads(th, CH_PRODUCERS);
    atomic_store(&ch.stop, 1);
    pthread_join(cth, NULL);

    /* Nothing was lost: drain (works even if the limit ended at 0). */
    desync_scheduler_set_max_threads(s, 2);
    for (int i = 0; i < CH_OBJECTS; i++) {
        CHECK_EQ(desync_sync(objs[i].d, noop_job, NULL), 0);
        CHECK_EQ(objs[i].ran, atomic_load(&g_churn_queued[i]));
    }
    long total = 0;
    for (int i = 0; i < CH_OBJECTS; i++)
        total += objs[i].ran;
    long produced = 0;
    for (int p = 0; p < CH_PRODUCERS; p++)
        produced += prods[p].produced;
    CHECK_EQ(total, produced);
    CHECK(total >= (long)CH_PRODUCERS * n);
    fprintf(stderr, "churn: %ld jobs, %ld scheduler operations\n", total, atomic_load(&ch.ops));
    CHECK_EQ(atomic_load(&g_errors), 0);
    for (int i = 0; i < CH_OBJECTS; i++)
        desync_release(objs[i].d);
    desync_scheduler_free(s);
    return 0;
}
