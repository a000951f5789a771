/*
 * Jobs over several objects (desync_sync_all, desync_desync_all): the data
 * each job receives, errors, the order in every object's queue, a stress
 * test of many threads on overlapping random sets in random order (a total
 * that must be conserved, per-object counts, and a check that no two jobs
 * ever hold one object at once; a hang is a failure by timeout), and the
 * deadlock checks: from a job of one of the objects, and a cycle of threads
 * through a sync_all.
 */
#include "desync.h"
#include "fault.h"
#include "test.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <string.h>

/* ---------------------------------------------------------------- basic */

typedef struct seen {
    int n; /* how many datas the job copies (at most 8) */
    int calls;
    void *datas[8];
    pthread_t thread;
} seen;

static void record_job(void *const datas[], void *arg) {
    seen *s = arg;
    s->calls++;
    for (int i = 0; i < s->n && i < 8; i++)
        s->datas[i] = datas[i];
    s->thread = pthread_self();
}

TEST(multi_sync_all_datas) {
    int v[3] = {1, 2, 3};
    desync_t *o[3];
    for (int i = 0; i < 3; i++)
        CHECK((o[i] = desync_new(&v[i], NULL)));
    /* Idle objects: the job runs on the caller, datas in the caller's order. */
    seen s = {.n = 3};
    desync_t *order[3] = {o[2], o[0], o[1]};
    CHECK_EQ(desync_sync_all(order, 3, record_job, &s), 0);
    CHECK_EQ(s.calls, 1);
    CHECK(s.datas[0] == &v[2] && s.datas[1] == &v[0] && s.datas[2] == &v[1]);
    CHECK(pthread_equal(s.thread, pthread_self()));
    /* Duplicates: each position gets its data. */
    desync_t *dup[4] = {o[1], o[1], o[0], o[1]};
    s.n = 4;
    CHECK_EQ(desync_sync_all(dup, 4, record_job, &s), 0);
    CHECK_EQ(s.calls, 2);
    CHECK(s.datas[0] == &v[1] && s.datas[1] == &v[1] && s.datas[2] == &v[0] &&
          s.datas[3] == &v[1]);
    /* n == 1. */
    s.n = 1;
    CHECK_EQ(desync_sync_all(&o[0], 1, record_job, &s), 0);
    CHECK_EQ(s.calls, 3);
    CHECK(s.datas[0] == &v[0]);
    /* desync_all, with the array gone when the job runs. */
    seen s2 = {.n = 3};
    {
        desync_t *arr[3] = {o[1], o[2], o[1]};
        CHECK_EQ(desync_desync_all(arr, 3, record_job, &s2), 0);
        memset(arr, 0, sizeof arr);
    }
    for (int i = 0; i < 3; i++)
        CHECK_EQ(desync_sync(o[i], noop_job, NULL), 0);
    CHECK_EQ(s2.calls, 1);
    CHECK(s2.datas[0] == &v[1] && s2.datas[1] == &v[2] && s2.datas[2] == &v[1]);
    for (int i = 0; i < 3; i++)
        desync_release(o[i]);
    return 0;
}

/* Two objects, the fast path's own case: datas in the caller's order
 * whichever object comes first in memory, and one object named twice. */
TEST(multi_two_objects) {
    int v[2] = {1, 2};
    desync_t *o[2];
    for (int i = 0; i < 2; i++)
        CHECK((o[i] = desync_new(&v[i], NULL)));
    seen s = {.n = 2};
    desync_t *ab[2] = {o[0], o[1]}, *ba[2] = {o[1], o[0]}, *bb[2] = {o[1], o[1]};
    CHECK_EQ(desync_sync_all(ab, 2, record_job, &s), 0);
    CHECK(s.datas[0] == &v[0] && s.datas[1] == &v[1]);
    CHECK_EQ(desync_sync_all(ba, 2, record_job, &s), 0);
    CHECK(s.datas[0] == &v[1] && s.datas[1] == &v[0]);
    CHECK_EQ(desync_sync_all(bb, 2, record_job, &s), 0);
    CHECK(s.datas[0] == &v[1] && s.datas[1] == &v[1]);
    CHECK_EQ(s.calls, 3);
    CHECK(pthread_equal(s.thread, pthread_self()));
    /* Both idle again: a sync on each runs at once. */
    for (int i = 0; i < 2; i++) {
        CHECK_EQ(desync_sync(o[i], noop_job, NULL), 0);
        desync_release(o[i]);
    }
    return 0;
}

/* More objects than the call keeps on its stack (an allocation). */
TEST(multi_many_objects) {
    enum { N = 40 };
    int v[N];
    desync_t *o[N], *rev[N];
    for (int i = 0; i < N; i++) {
        v[i] = i;
        CHECK((o[i] = desync_new(&v[i], NULL)));
    }
    for (int i = 0; i < N; i++)
        rev[i] = o[N - 1 - i];
    seen s = {.n = 8};
    CHECK_EQ(desync_sync_all(rev, N, record_job, &s), 0);
    CHECK(s.datas[0] == &v[N - 1] && s.datas[7] == &v[N - 8]);
    /* Busy objects: the locked path. */
    for (int i = 0; i < N; i++)
        CHECK_EQ(desync_desync(o[i], noop_job, NULL), 0);
    CHECK_EQ(desync_desync_all(o, N, record_job, &s), 0);
    CHECK_EQ(desync_sync_all(rev, N, record_job, &s), 0);
    CHECK_EQ(s.calls, 3);
    for (int i = 0; i < N; i++)
        desync_release(o[i]);
    return 0;
}

/* --------------------------------------------------------------- errors */

static void sync_all_inside(void *data, void *arg) {
    (void)data;
    desync_t **o = arg;
    seen s = {0};
    desync_t *set[2] = {o[1], o[0]}; /* o[0] is the object running this job */
    *(int *)o[2] = desync_sync_all(set, 2, record_job, &s);
    /* desync_all from here queues after this job. */
    *((int *)o[2] + 1) = desync_desync_all(set, 2, record_job, o[3]);
}

static void nested_multi(void *const datas[], void *arg) {
    (void)datas;
    desync_t **o = arg;
    seen s = {0};
    *(int *)o[2] = desync_sync_all(&o[1], 1, record_job, &s);
    *((int *)o[2] + 1) = desync_sync(o[0], noop_job, NULL);
}

TEST(multi_errors) {
    desync_t *a = desync_new(NULL, NULL), *b = desync_new(NULL, NULL);
    CHECK(a && b);
    desync_t *ab[2] = {a, b}, *anull[2] = {a, NULL};
    seen s = {0};
    CHECK_EQ(desync_sync_all(NULL, 1, record_job, &s), DESYNC_EINVAL);
    CHECK_EQ(desync_sync_all(ab, 0, record_job, &s), DESYNC_EINVAL);
    CHECK_EQ(desync_sync_all(ab, 2, NULL, &s), DESYNC_EINVAL);
    CHECK_EQ(desync_sync_all(anull, 2, record_job, &s), DESYNC_EINVAL);
    CHECK_EQ(desync_desync_all(NULL, 1, record_job, &s), DESYNC_EINVAL);
    CHECK_EQ(desync_desync_all(ab, 0, record_job, &s), DESYNC_EINVAL);
    CHECK_EQ(desync_desync_all(ab, 2, NULL, &s), DESYNC_EINVAL);
    CHECK_EQ(desync_desync_all(anull, 2, record_job, &s), DESYNC_EINVAL);
    CHECK_EQ(s.calls, 0);

    /* From a job of one of the objects. */
    int rc[2] = {1, 1};
    seen later = {0};
    desync_t *ctx[4] = {a, b, (desync_t *)(void *)rc, (desync_t *)(void *)&later};
    CHECK_EQ(desync_sync(a, sync_all_inside, ctx), 0);
    CHECK_EQ(rc[0], DESYNC_EDEADLK);
    CHECK_EQ(rc[1], 0);
    CHECK_EQ(desync_sync_all(ab, 2, record_job, &s), 0);
    CHECK_EQ(later.calls, 1);
    /* From a multi-object job: a sync on one of its objects. */
    rc[0] = rc[1] = 1;
    desync_t *ctx2[3] = {a, b, (desync_t *)(void *)rc};
    CHECK_EQ(desync_sync_all(ab, 2, nested_multi, ctx2), 0);
    CHECK_EQ(rc[0], DESYNC_EDEADLK);
    CHECK_EQ(rc[1], DESYNC_EDEADLK);

    /* No memory: nothing queued, nothing run. */
    s.calls = 0;
    desync_t *many[9] = {a, b, a, b, a, b, a, b, a};
    fault_set(FAULT_ALLOC, FAULT_FROM, 1);
    int r1 = desync_desync_all(ab, 2, record_job, &s);
    int r2 = desync_sync_all(many, 9, record_job, &s);
    int r3 = desync_sync_all(ab, 2, record_job, &s); /* needs no memory */
    fault_reset();
    CHECK_EQ(r1, DESYNC_ENOMEM);
    CHECK_EQ(r2, DESYNC_ENOMEM);
    CHECK_EQ(r3, 0);
    CHECK_EQ(desync_sync(a, noop_job, NULL), 0);
    CHECK_EQ(s.calls, 1);
    desync_release(a);
    desync_release(b);
    return 0;
}

/* The job drops the last reference to one of its objects: destruction runs
 * after the job, and the call does not touch the freed object. On idle
 * objects (the fast path) and with one object busy (parts queued). */
static void release_first(void *const datas[], void *arg) {
    ((struct tracked *)datas[0])->jobs++;
    desync_release(arg);
}

static void *open_gate_later(void *p) {
    test_sleep_ms(20); /* most likely after the sync_all has queued; either way is fine */
    atomic_store(&((struct blocker *)p)->go, 1);
    return NULL;
}

TEST(multi_job_releases_object) {
    for (int busy = 0; busy < 2; busy++) {
        struct tracked ta = {0};
        int vb = 0;
        desync_t *a = desync_new(&ta, tracked_destroy), *b = desync_new(&vb, NULL);
        CHECK(a && b);
        struct blocker bl = {0};
        pthread_t th;
        if (busy) {
            CHECK_EQ(desync_desync(b, blocker_job, &bl), 0);
            CHECK(test_wait_flag(&bl.started, LONG_MS));
            CHECK_EQ(pthread_create(&th, NULL, open_gate_later, &bl), 0);
        }
        desync_t *set[2] = {a, b};
        CHECK_EQ(desync_sync_all(set, 2, release_first, a), 0);
        CHECK(test_wait_count(&ta.destroyed, 1, LONG_MS));
        CHECK_EQ(atomic_load(&ta.jobs_at_destroy), 1);
        if (busy)
            pthread_join(th, NULL);
        desync_release(b);
    }
    return 0;
}

/* ---------------------------------------------------------------- order */

#define LOGMAX 64
typedef struct logobj {
    int n;
    int entries[LOGMAX];
} logobj;

static void log_one(void *data, void *arg) {
    logobj *l = data;
    if (l->n < LOGMAX)
        l->entries[l->n++] = VI(arg);
}

static void log_all(void *const datas[], void *arg) {
    /* Each object once, even when named twice (datas[0] == datas[2]). */
    for (int i = 0; i < 3; i++) {
        bool first = true;
        for (int k = 0; k < i; k++)
            first &= datas[k] != datas[i];
        if (first)
            log_one(datas[i], arg);
    }
}

static void gate_job(void *data, void *arg) {
    (void)data;
    test_wait_flag(arg, LONG_MS);
}

TEST(multi_order) {
    logobj la = {0}, lb = {0};
    desync_t *a = desync_new(&la, NULL), *b = desync_new(&lb, NULL);
    CHECK(a && b);
    atomic_int gate = 0;
    /* a is held by a job until the gate opens: everything below queues. */
    CHECK_EQ(desync_desync(a, gate_job, &gate), 0);
    CHECK_EQ(desync_desync(a, log_one, IV(1)), 0);
    CHECK_EQ(desync_desync(b, log_one, IV(1)), 0);
    desync_t *abx[3] = {a, b, a}, *bax[3] = {b, a, b};
    CHECK_EQ(desync_desync_all(abx, 3, log_all, IV(2)), 0);
    CHECK_EQ(desync_desync(a, log_one, IV(3)), 0);
    CHECK_EQ(desync_desync(b, log_one, IV(3)), 0);
    CHECK_EQ(desync_desync_all(bax, 3, log_all, IV(4)), 0);
    CHECK_EQ(desync_desync(b, log_one, IV(5)), 0);
    /* b alone must not run past the pending multi-object job. */
    CHECK_EQ(desync_desync(a, log_one, IV(5)), 0);
    atomic_store(&gate, 1);
    CHECK_EQ(desync_sync_all(abx, 3, log_all, IV(6)), 0);
    int want[] = {1, 2, 3, 4, 5, 6};
    CHECK_EQ(la.n, 6);
    CHECK_EQ(lb.n, 6);
    for (int i = 0; i < 6; i++) {
        CHECK_EQ(la.entries[i], want[i]);
        CHECK_EQ(lb.entries[i], want[i]);
    }
    desync_release(a);
    desync_release(b);
    return 0;
}

/* On a scheduler with no threads, sync_all runs the pending jobs of its
 * objects itself (stealing their tokens from the scheduler). */
TEST(multi_sync_all_no_threads) {
    desync_scheduler_t *s = desync_scheduler_new(0);
    CHECK(s);
    logobj la = {0}, lb = {0};
    desync_t *a = desync_new_on(s, &la, NULL), *b = desync_new_on(s, &lb, NULL);
    CHECK(a && b);
    for (int i = 0; i < 3; i++)
        CHECK_EQ(desync_desync(a, log_one, IV(1)), 0);
    CHECK_EQ(desync_desync(b, log_one, IV(1)), 0);
    desync_t *ab[3] = {b, a, b};
    CHECK_EQ(desync_desync_all(ab, 3, log_all, IV(2)), 0);
    CHECK_EQ(desync_desync(b, log_one, IV(3)), 0);
    CHECK_EQ(desync_sync_all(ab, 3, log_all, IV(4)), 0);
    CHECK_EQ(la.n, 5);
    CHECK_EQ(lb.n, 4);
    CHECK_EQ(la.entries[3], 2);
    CHECK_EQ(la.entries[4], 4);
    CHECK_EQ(lb.entries[1], 2);
    CHECK_EQ(lb.entries[2], 3);
    CHECK_EQ(lb.entries[3], 4);
    desync_release(a);
    desync_release(b);
    desync_scheduler_free(s);
    return 0;
}

/* On a scheduler with no threads, a sync on one object (and its last
 * release) runs the other objects of a multi-object job queued before it,
 * which would otherwise wait forever for a runner. */
TEST(multi_no_threads_sync_one_object) {
    desync_scheduler_t *s = desync_scheduler_new(0);
    CHECK(s);
    logobj la = {0}, lb = {0}, lc = {0};
    desync_t *a = desync_new_on(s, &la, NULL), *b = desync_new_on(s, &lb, NULL),
             *c = desync_new_on(s, &lc, NULL);
    CHECK(a && b && c);
    CHECK_EQ(desync_desync(b, log_one, IV(1)), 0);
    desync_t *abc[3] = {a, b, c};
    CHECK_EQ(desync_desync_all(abc, 3, log_all, IV(2)), 0);
    CHECK_EQ(desync_desync(c, log_one, IV(3)), 0);
    CHECK_EQ(desync_sync(a, log_one, IV(4)), 0);
    CHECK_EQ(la.n, 2);
    CHECK_EQ(la.entries[0], 2);
    CHECK_EQ(la.entries[1], 4);
    CHECK_EQ(lb.n, 2);
    CHECK_EQ(lb.entries[1], 2);
    /* And through a release: destroy waits for the job. */
    CHECK_EQ(desync_desync_all(abc, 3, log_all, IV(5)), 0);
    desync_release(c);
    CHECK_EQ(lc.n >= 2, 1);
    CHECK_EQ(lc.entries[lc.n - 1], 5);
    desync_release(a);
    desync_release(b);
    desync_scheduler_free(s);
    return 0;
}

/* A thread that syncs one job on an object (for the test below). */
typedef struct syncer {
    desync_t *d;
    desync_job_fn job;
    void *arg;
    atomic_int done;
} syncer;

static void *syncer_thread(void *p) {
    syncer *s = p;
    if (desync_sync(s->d, s->job, s->arg) == 0)
        atomic_store(&s->done, 1);
    return NULL;
}

static void holder_job(void *data, void *arg) {
    (void)data;
    atomic_int *gate = arg;
    atomic_store(&gate[0], 1); /* entered */
    test_wait_flag(&gate[1], LONG_MS);
}

TEST(multi_no_threads_part_waits_for_later_token) {
    /* 0 threads. A desync_all over {a, b}: its part on a parks there while
     * b is held by a sync on another thread; a sync on a then waits behind
     * the parked part. When b's sync ends, b's token (with the part behind
     * it) must reach the part, since nothing else runs b: the job runs, and
     * the sync on a with it. This hung before the parked part had itself
     * counted a waiter on b. */
    desync_scheduler_t *s = desync_scheduler_new(0);
    CHECK(s);
    logobj la = {0}, lb = {0};
    desync_t *a = desync_new_on(s, &la, NULL), *b = desync_new_on(s, &lb, NULL);
    CHECK(a && b);
    atomic_int gate[2] = {0, 0};
    syncer hb = {.d = b, .job = holder_job, .arg = gate};
    pthread_t th_b, th_a;
    CHECK_EQ(pthread_create(&th_b, NULL, syncer_thread, &hb), 0);
    CHECK(test_wait_flag(&gate[0], LONG_MS)); /* b is held */
    desync_t *aba[3] = {a, b, a};
    CHECK_EQ(desync_desync_all(aba, 3, log_all, IV(1)), 0);
    syncer ha = {.d = a, .job = log_one, .arg = IV(2)};
    CHECK_EQ(pthread_create(&th_a, NULL, syncer_thread, &ha), 0);
    /* Let the sync on a run the part (it parks) and wait behind it. */
    desync_queue_t *qa = desync_get_queue(a); /* borrowed */
    CHECK(qa);
    desync_queue_stats_t st = {0};
    for (int i = 0; i < 5000 && st.pending < 2; i++) {
        CHECK_EQ(desync_queue_stats(qa, &st), 0);
        test_sleep_ms(1);
    }
    CHECK_EQ(st.pending, 2);
    test_sleep_ms(20);
    CHECK_EQ(atomic_load(&ha.done), 0);
    atomic_store(&gate[1], 1); /* b's sync ends */
    CHECK(test_wait_flag(&ha.done, 5000));
    CHECK(test_wait_flag(&hb.done, 5000));
    pthread_join(th_a, NULL);
    pthread_join(th_b, NULL);
    CHECK_EQ(la.n, 2);
    CHECK_EQ(la.entries[0], 1);
    CHECK_EQ(la.entries[1], 2);
    CHECK_EQ(lb.n, 1);
    desync_release(a);
    desync_release(b);
    desync_scheduler_free(s);
    return 0;
}

/* --------------------------------------------------------------- stress */

#define SOBJ 6
#define STHREADS 8
typedef struct account {
    long balance;
    long jobs;       /* jobs that touched this account */
    atomic_int busy; /* 1 while a job holds it: never two at once */
    /* The ticket of the last job of each thread: a thread's calls number
     * their jobs in call order, and each account must see them in order. */
    unsigned long last_ticket[STHREADS];
} account;

typedef struct stress {
    desync_t *o[SOBJ];
    account acc[SOBJ];
    atomic_int touched[SOBJ]; /* calls queued that name the account */
    atomic_int errors, overlaps, out_of_order, seed;
    int ops;
} stress;

/* The job's argument: the number of objects (2 bits), the amount (7), the
 * calling thread (3) and its ticket (the rest). */
#define ARG(n, amount, t, ticket)                                                         \
    P((uintptr_t)(n) | (uintptr_t)(amount) << 2 | (uintptr_t)(t) << 9 |                  \
      (uintptr_t)(ticket) << 12)
#define ARG_N(a) ((size_t)(U(a) & 3u))
#define ARG_AMOUNT(a) ((long)(U(a) >> 2 & 127u))
#define ARG_T(a) ((int)(U(a) >> 9 & 7u))
#define ARG_TICKET(a) ((unsigned long)(U(a) >> 12))

static atomic_int *g_out_of_order;

static void enter_accounts(void *const datas[], size_t n, atomic_int *overlaps, void *arg) {
    for (size_t i = 0; i < n; i++) {
        bool first = true;
        for (size_t k = 0; k < i; k++)
            first &= datas[k] != datas[i];
        if (!first)
            continue;
        account *a = datas[i];
        if (atomic_exchange(&a->busy, 1) != 0)
            atomic_fetch_add(overlaps, 1);
        a->jobs++;
        unsigned long *last = &a->last_ticket[ARG_T(arg)];
        if (ARG_TICKET(arg) <= *last)
            atomic_fetch_add(g_out_of_order, 1);
        *last = ARG_TICKET(arg);
    }
}

static void leave_accounts(void *const datas[], size_t n) {
    for (size_t i = 0; i < n; i++)
        atomic_store(&((account *)datas[i])->busy, 0);
}

/* arg: the number of objects (2 or 3) | overlap counter via a global. */
static atomic_int *g_overlaps;

static void transfer(void *const datas[], void *arg) {
    size_t n = ARG_N(arg);
    long amount = ARG_AMOUNT(arg);
    enter_accounts(datas, n, g_overlaps, arg);
    /* Moves amount from datas[0] to each other position (a self-transfer
     * when they are the same account): the total is conserved. */
    for (size_t i = 1; i < n; i++) {
        ((account *)datas[0])->balance -= amount;
        ((account *)datas[i])->balance += amount;
    }
    leave_accounts(datas, n);
}

static void single_job(void *data, void *arg) {
    void *datas[1] = {data};
    enter_accounts(datas, 1, g_overlaps, arg);
    leave_accounts(datas, 1);
}

static void *stress_thread(void *p) {
    stress *st = p;
    int t = atomic_fetch_add(&st->seed, 1);
    uint32_t r = (uint32_t)(t + 1) * 2654435761u;
    for (int k = 0; k < st->ops; k++) {
        uint32_t x = test_rnd(&r);
        size_t n = 2 + x % 2;
        desync_t *set[3];
        int idx[3];
        for (size_t i = 0; i < n; i++) {
            idx[i] = (int)(test_rnd(&r) % SOBJ);
            set[i] = st->o[idx[i]];
        }
        uintptr_t amount = 1 + test_rnd(&r) % 100;
        void *arg = ARG(n, amount, t, (unsigned long)k + 1);
        int rc;
        switch (x / 2 % 5) {
        case 0:
        case 1:
            rc = desync_sync_all(set, n, transfer, arg);
            break;
        case 2:
        case 3:
            rc = desync_desync_all(set, n, transfer, arg);
            break;
        default:
            rc = (x >> 8) & 1 ? desync_desync(set[0], single_job, arg)
                              : desync_sync(set[0], single_job, arg);
            n = 1;
            break;
        }
        if (rc != 0) {
            atomic_fetch_add(&st->errors, 1);
            continue;
        }
        for (size_t i = 0; i < n; i++) {
            bool first = true;
            for (size_t j = 0; j < i; j++)
                first &= idx[j] != idx[i];
            if (first)
                atomic_fetch_add(&st->touched[idx[i]], 1);
        }
    }
    return NULL;
}

static int run_stress(desync_scheduler_t *s, int threads, int ops) {
    static stress st; /* large; one test per process */
    memset(&st, 0, sizeof st);
    g_overlaps = &st.overlaps;
    g_out_of_order = &st.out_of_order;
    st.ops = ops;
    for (int i = 0; i < SOBJ; i++) {
        st.acc[i].balance = 1000;
        CHECK((st.o[i] = desync_new_on(s, &st.acc[i], NULL)));
    }
    pthread_t th[STHREADS];
    CHECK(threads <= STHREADS);
    for (int i = 0; i < threads; i++)
        CHECK_EQ(pthread_create(&th[i], NULL, stress_thread, &st), 0);
    test_join_threads(th, threads);
    /* A sync on each object runs after every job queued on it. */
    long total = 0;
    for (int i = 0; i < SOBJ; i++) {
        CHECK_EQ(desync_sync(st.o[i], noop_job, NULL), 0);
        total += st.acc[i].balance;
    }
    CHECK_EQ(atomic_load(&st.errors), 0);
    CHECK_EQ(atomic_load(&st.overlaps), 0);
    CHECK_EQ(atomic_load(&st.out_of_order), 0);
    CHECK_EQ(total, 1000L * SOBJ);
    for (int i = 0; i < SOBJ; i++) {
        CHECK_EQ(st.acc[i].jobs, atomic_load(&st.touched[i]));
        desync_release(st.o[i]);
    }
    return 0;
}

TEST(multi_stress_random_sets) {
    return run_stress(NULL, 8, TEST_SCALED(20000));
}

/* One thread for six objects: most waits go through hand-offs to waiting
 * callers and through callers that run the queues themselves. */
TEST(multi_stress_one_thread_scheduler) {
    desync_scheduler_t *s = desync_scheduler_new(1);
    CHECK(s);
    int rc = run_stress(s, 6, TEST_SCALED(10000));
    desync_scheduler_free(s);
    return rc;
}

/* ------------------------------------------------------- deadlock cycles */

/* Thread 0 is inside a job of X and calls sync_all({Y, Z}); thread 1 is
 * inside a job of Y and syncs X (or sync_alls {X, W}). One of them gets
 * DESYNC_EDEADLK, and both finish. */
typedef struct cyc {
    desync_t *x, *y, *z, *w;
    bool both_multi;
    atomic_int holding, edeadlk, ok, other;
} cyc;

static void cyc_note(cyc *c, int rc) {
    if (rc == DESYNC_EDEADLK)
        atomic_fetch_add(&c->edeadlk, 1);
    else if (rc == 0)
        atomic_fetch_add(&c->ok, 1);
    else
        atomic_fetch_add(&c->other, 1);
}

static void cyc_job0(void *data, void *arg) {
    (void)data;
    cyc *c = arg;
    atomic_fetch_add(&c->holding, 1);
    if (!test_wait_count(&c->holding, 2, LONG_MS)) {
        atomic_fetch_add(&c->other, 1);
        return;
    }
    desync_t *set[2] = {c->y, c->z};
    cyc_note(c, desync_sync_all(set, 2, record_job,
                                &(seen){0}));
}

static void cyc_job1(void *data, void *arg) {
    (void)data;
    cyc *c = arg;
    atomic_fetch_add(&c->holding, 1);
    if (!test_wait_count(&c->holding, 2, LONG_MS)) {
        atomic_fetch_add(&c->other, 1);
        return;
    }
    if (c->both_multi) {
        desync_t *set[2] = {c->w, c->x};
        cyc_note(c, desync_sync_all(set, 2, record_job, &(seen){0}));
    } else {
        cyc_note(c, desync_sync(c->x, noop_job, NULL));
    }
}

static void *cyc_thread0(void *p) {
    cyc *c = p;
    desync_sync(c->x, cyc_job0, c);
    return NULL;
}

static void *cyc_thread1(void *p) {
    cyc *c = p;
    desync_sync(c->y, cyc_job1, c);
    return NULL;
}

static int run_cycle(bool both_multi) {
    for (int round = 0; round < 20; round++) {
        cyc c = {.both_multi = both_multi};
        CHECK((c.x = desync_new(NULL, NULL)) && (c.y = desync_new(NULL, NULL)) &&
              (c.z = desync_new(NULL, NULL)) && (c.w = desync_new(NULL, NULL)));
        pthread_t th[2];
        CHECK_EQ(pthread_create(&th[0], NULL, cyc_thread0, &c), 0);
        CHECK_EQ(pthread_create(&th[1], NULL, cyc_thread1, &c), 0);
        test_join_threads(th, 2);
        CHECK_EQ(atomic_load(&c.other), 0);
        CHECK(atomic_load(&c.edeadlk) >= 1);
        CHECK_EQ(atomic_load(&c.edeadlk) + atomic_load(&c.ok), 2);
        desync_release(c.x);
        desync_release(c.y);
        desync_release(c.z);
        desync_release(c.w);
    }
    return 0;
}

TEST(multi_cycle_sync_all_and_sync) { return run_cycle(false); }

TEST(multi_cycle_two_sync_alls) { return run_cycle(true); }
