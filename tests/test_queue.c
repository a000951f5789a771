/*
 * Queues: the bare queue API, an object's own queue, and job arguments
 * copied into the queue (desync_copy and queue_desync_copy).
 * Every wait is bounded.
 */
#include <desync.h>

#include <pthread.h>
#include <stdalign.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "test.h"

#include <stdio.h>
#include <unistd.h>

/* ---------------------------------------------------------- desync_copy */

/* Inline (up to 32 bytes), wide nodes (33 to 96), separately allocated. */
static const size_t copy_sizes[] = {0, 1, 32, 33, 64, 96, 97, 4096};
#define NCOPY_SIZES (sizeof copy_sizes / sizeof copy_sizes[0])

static unsigned char copy_pattern(size_t i, size_t size, int round) {
    return (unsigned char)(i * 7 + size * 13 + (size_t)round * 31 + 1);
}

struct copy_state {
    int n;
    int errors;
};

/* Knows which size and round it is from the queue order. */
static void copy_check_job(void *data, void *arg) {
    struct copy_state *st = data;
    size_t size = copy_sizes[st->n % NCOPY_SIZES];
    int round = st->n / (int)NCOPY_SIZES;
    const unsigned char *p = arg;
    if (size > 0) {
        if (!p || (uintptr_t)p % alignof(max_align_t) != 0) {
            st->errors++;
        } else {
            for (size_t i = 0; i < size; i++) {
                if (p[i] != copy_pattern(i, size, round)) {
                    st->errors++;
                    break;
                }
            }
        }
    }
    st->n++;
}

static int run_copy_rounds(desync_t *d, struct copy_state *st, int rounds) {
    static unsigned char buf[4096];
    for (int round = 0; round < rounds; round++) {
        for (size_t k = 0; k < NCOPY_SIZES; k++) {
            size_t size = copy_sizes[k];
            for (size_t i = 0; i < size; i++)
                buf[i] = copy_pattern(i, size, round);
            CHECK_EQ(desync_desync_copy(d, copy_check_job, buf, size), 0);
            memset(buf, 0xEE, sizeof buf); /* the job must see its own copy */
        }
    }
    CHECK_EQ(desync_sync(d, noop_job, NULL), 0);
    CHECK_EQ(st->n, rounds * (int)NCOPY_SIZES);
    CHECK_EQ(st->errors, 0);
    return 0;
}

TEST(core_desync_copy) {
    /* 0 threads: every copy stays queued while the buffer is overwritten. */
    desync_scheduler_t *s0 = desync_scheduler_new(0);
    CHECK(s0);
    desync_scheduler_t *scheds[2] = {s0, NULL};
    for (int k = 0; k < 2; k++) {
        struct copy_state st = {0, 0};
        desync_t *d = scheds[k] ? desync_new_on(scheds[k], &st, NULL) : desync_new(&st, NULL);
        CHECK(d);
        if (run_copy_rounds(d, &st, 20))
            return 1;
        desync_release(d);
    }
    desync_scheduler_free(s0);

    /* NULL with length 0 is allowed. */
    int n = 0;
    desync_t *d = desync_new(&n, NULL);
    CHECK(d);
    CHECK_EQ(desync_desync_copy(d, count_job, NULL, 0), 0);
    CHECK_EQ(desync_sync(d, noop_job, NULL), 0);
    desync_release(d);
    CHECK_EQ(n, 1);
    return 0;
}

/* Enough copies, all queued at once (0 threads), that the producer moves
 * from the block pool to job segments and through several of them: wide
 * nodes take two slots, and one that does not fit a segment's last slot
 * starts the next segment. */
TEST(core_desync_copy_across_segments) {
    desync_scheduler_t *s0 = desync_scheduler_new(0);
    CHECK(s0);
    struct copy_state st = {0, 0};
    desync_t *d = desync_new_on(s0, &st, NULL);
    CHECK(d);
    if (run_copy_rounds(d, &st, TEST_SCALED(600) < 200 ? 200 : TEST_SCALED(600)))
        return 1;
    desync_release(d);
    desync_scheduler_free(s0);
    return 0;
}

/* Resident memory in KiB from /proc/self/statm, or -1 where there is none. */
static long rss_kib_now(void) {
    FILE *f = fopen("/proc/self/statm", "r");
    if (!f)
        return -1;
    long size = 0, res = -1;
    if (fscanf(f, "%ld %ld", &size, &res) != 2)
        res = -1;
    fclose(f);
    return res < 0 ? -1 : res * (sysconf(_SC_PAGESIZE) / 1024);
}

/* Whether memory grew by more than a quarter of `none_kib`, what it would
 * have grown by had nothing been reused (first and last: rss_kib_now).
 * Never in sanitizer builds, where the sanitizers' own memory moves too
 * much, nor where RSS cannot be read. */
static bool rss_grew(long first, long last, long none_kib, const char *what) {
#ifndef DESYNC_TEST_SANITIZED
    if (first >= 0 && last >= 0 && last - first > none_kib / 4) {
        fprintf(stderr, "RSS grew %ld KiB (%ld KiB if no %s were reused)\n", last - first,
                none_kib, what);
        return true;
    }
#else
    (void)first;
    (void)last;
    (void)none_kib;
    (void)what;
#endif
    return false;
}

/* Objects come from the pool's object arena (jobpool.c), whose blocks never
 * go back to the OS: freed ones must be reused by the next objects, made on
 * this thread or any other. Rounds of objects, each given a job that a
 * worker runs (some of the last releases find the job still queued and
 * leave the free to the worker): after the first rounds, memory stays flat.
 * Lost blocks would cost 80 bytes per object per round. */
TEST(core_objects_memory_recycled) {
    const int rounds = 6, per = TEST_SCALED(100000);
    desync_t **h = malloc((size_t)per * sizeof *h);
    CHECK(h);
    long first = -1;
    for (int r = 0; r < rounds; r++) {
        for (int i = 0; i < per; i++)
            CHECK((h[i] = desync_new(NULL, NULL)) != NULL);
        for (int i = 0; i < per; i++)
            CHECK_EQ(desync_desync(h[i], noop_job, NULL), 0);
        for (int i = 0; i < per; i++)
            desync_release(h[i]);
        if (r == 1)
            first = rss_kib_now();
    }
    long last = rss_kib_now();
    free(h);
    CHECK(!rss_grew(first, last, (long)(rounds - 2) * per * 80 / 1024, "objects"));
    return 0;
}

/* A producer's job segments come back once a worker has run their jobs (the
 * worker drops the segments' counts in batches, at the latest when its run
 * ends), and are reused: the producer's memory stays flat. Kept, the
 * segments would cost 64 KiB per 1,023 jobs (2,000,000 jobs: about 125 MiB). */
TEST(core_job_segments_recycled) {
    int v = 0;
    desync_t *d = desync_new(&v, NULL);
    CHECK(d);
    const int chunks = 20, per = TEST_SCALED(100000);
    long first = -1;
    for (int c = 0; c < chunks; c++) {
        for (int i = 0; i < per; i++)
            CHECK_EQ(desync_desync(d, count_job, NULL), 0);
        CHECK_EQ(desync_sync(d, noop_job, NULL), 0);
        if (c == 1)
            first = rss_kib_now();
    }
    CHECK_EQ(v, chunks * per);
    long last = rss_kib_now();
    desync_release(d);
    CHECK(!rss_grew(first, last, (long)chunks * per / 1023 * 64, "segments"));
    return 0;
}

/* --------------------------------------------------------------- queues */

static void blocker_queue_job(void *arg) { blocker_job(NULL, arg); }

struct qlog {
    int order[256];
    int n;
    atomic_int ran;
};

struct qlog_arg {
    struct qlog *log;
    int value;
};

static void qlog_job(void *arg) {
    struct qlog_arg *a = arg;
    if (a->log->n < 256)
        a->log->order[a->log->n] = a->value;
    a->log->n++;
    atomic_fetch_add(&a->log->ran, 1);
}

static void qlog_slow_job(void *arg) {
    test_sleep_ms(20);
    qlog_job(arg);
}

static struct qcopy_state {
    int n, errors;
} g_qcopy;

static void qcopy_job(void *arg) {
    size_t size = copy_sizes[g_qcopy.n % NCOPY_SIZES];
    const unsigned char *p = arg;
    for (size_t i = 0; i < size; i++)
        if (p[i] != copy_pattern(i, size, 0)) {
            g_qcopy.errors++;
            break;
        }
    g_qcopy.n++;
}

TEST(core_queue_api) {
    desync_queue_t *q = desync_queue_new(NULL);
    CHECK(q);
    CHECK(desync_queue_retain(q) == q);
    desync_queue_release(q); /* back to one reference */

    /* Order across desync / copy / sync. */
    static struct qlog l;
    memset(&l, 0, sizeof l);
    static struct qlog_arg args[200];
    for (int i = 0; i < 200; i++) {
        args[i].log = &l;
        args[i].value = i;
    }
    for (int i = 0; i < 100; i++)
        CHECK_EQ(desync_queue_desync(q, qlog_job, &args[i]), 0);
    for (int i = 100; i < 150; i++) {
        struct qlog_arg tmp = {&l, i}; /* copied: tmp dies right away */
        CHECK_EQ(desync_queue_desync_copy(q, qlog_job, &tmp, sizeof tmp), 0);
    }
    CHECK_EQ(desync_queue_sync(q, qlog_job, &args[150]), 0);
    CHECK_EQ(l.n, 151);
    for (int i = 0; i < 151; i++)
        CHECK_EQ(l.order[i], i);

    /* try_sync on the idle queue runs on this thread. */
    struct try_probe p = {0};
    CHECK_EQ(desync_queue_try_sync(q, try_probe_queue_job, &p), 0);
    CHECK_EQ(atomic_load(&p.ran), 1);
    CHECK(pthread_equal(p.thread, pthread_self()));

    /* Busy queue: EBUSY, job not run. */
    static struct blocker b;
    memset(&b, 0, sizeof b);
    CHECK_EQ(desync_queue_desync(q, blocker_queue_job, &b), 0);
    CHECK(test_wait_flag(&b.started, 5000));
    struct try_probe p2 = {0};
    int rc = desync_queue_try_sync(q, try_probe_queue_job, &p2);
    atomic_store(&b.go, 1);
    CHECK_EQ(rc, DESYNC_EBUSY);
    CHECK_EQ(desync_queue_sync(q, noop_queue_job, NULL), 0);
    CHECK_EQ(atomic_load(&p2.ran), 0);

    /* Copies of every size. */
    static unsigned char buf[4096];
    memset(&g_qcopy, 0, sizeof g_qcopy);
    for (size_t k = 0; k < NCOPY_SIZES; k++) {
        for (size_t i = 0; i < copy_sizes[k]; i++)
            buf[i] = copy_pattern(i, copy_sizes[k], 0);
        CHECK_EQ(desync_queue_desync_copy(q, qcopy_job, buf, copy_sizes[k]), 0);
        memset(buf, 0xEE, sizeof buf);
    }
    CHECK_EQ(desync_queue_sync(q, noop_queue_job, NULL), 0);
    CHECK_EQ(g_qcopy.n, (int)NCOPY_SIZES);
    CHECK_EQ(g_qcopy.errors, 0);

    /* Releasing with slow jobs queued loses nothing. */
    static struct qlog l2;
    memset(&l2, 0, sizeof l2);
    static struct qlog_arg args2[5];
    for (int i = 0; i < 5; i++) {
        args2[i].log = &l2;
        args2[i].value = i;
        CHECK_EQ(desync_queue_desync(q, qlog_slow_job, &args2[i]), 0);
    }
    desync_queue_release(q);
    CHECK(test_wait_count(&l2.ran, 5, 5000));
    for (int i = 0; i < 5; i++)
        CHECK_EQ(l2.order[i], i);

    /* A queue on a 0-thread scheduler: sync runs the backlog on this thread. */
    desync_scheduler_t *s0 = desync_scheduler_new(0);
    CHECK(s0);
    desync_queue_t *q0 = desync_queue_new(s0);
    CHECK(q0);
    static struct qlog l3;
    memset(&l3, 0, sizeof l3);
    static struct qlog_arg args3[4];
    for (int i = 0; i < 4; i++) {
        args3[i].log = &l3;
        args3[i].value = i;
    }
    for (int i = 0; i < 3; i++)
        CHECK_EQ(desync_queue_desync(q0, qlog_job, &args3[i]), 0);
    test_sleep_ms(20);
    CHECK_EQ(atomic_load(&l3.ran), 0);
    CHECK_EQ(desync_queue_sync(q0, qlog_job, &args3[3]), 0);
    CHECK_EQ(l3.n, 4);
    for (int i = 0; i < 4; i++)
        CHECK_EQ(l3.order[i], i);
    desync_queue_release(q0);
    desync_scheduler_free(s0);
    return 0;
}

static void qlog_obj_job(void *data, void *arg) {
    (void)data;
    qlog_job(arg);
}

TEST(core_get_queue) {
    static struct tracked t;
    memset(&t, 0, sizeof t);
    desync_t *d = desync_new(&t, tracked_destroy);
    CHECK(d);
    desync_queue_t *q = desync_get_queue(d);
    CHECK(q);
    CHECK(desync_get_queue(d) == q);

    /* Queue jobs and object jobs share one order. */
    static struct qlog l;
    memset(&l, 0, sizeof l);
    static struct qlog_arg args[100];
    for (int i = 0; i < 100; i++) {
        args[i].log = &l;
        args[i].value = i;
        if (i % 2)
            CHECK_EQ(desync_queue_desync(q, qlog_job, &args[i]), 0);
        else
            CHECK_EQ(desync_desync(d, qlog_obj_job, &args[i]), 0);
    }
    CHECK_EQ(desync_sync(d, noop_job, NULL), 0);
    CHECK_EQ(l.n, 100);
    for (int i = 0; i < 100; i++)
        CHECK_EQ(l.order[i], i);

    /* A retained queue outlives its object. */
    CHECK(desync_queue_retain(q) == q);
    CHECK_EQ(desync_desync(d, tracked_job, NULL), 0);
    desync_release(d);
    CHECK_EQ(atomic_load(&t.destroyed), 1);
    CHECK_EQ(t.jobs_at_destroy, 1);
    static struct qlog l2;
    memset(&l2, 0, sizeof l2);
    struct qlog_arg a2 = {&l2, 7};
    CHECK_EQ(desync_queue_desync(q, qlog_job, &a2), 0);
    CHECK_EQ(desync_queue_sync(q, qlog_job, &a2), 0);
    CHECK_EQ(l2.n, 2);
    desync_queue_release(q);
    return 0;
}

/* Copies of every size from 0 to 200 bytes arrive intact and in order:
 * inline (up to 32), in a wide node (up to 96), or in their own block. */
typedef struct copy_check {
    int next_len;
    atomic_int bad;
} copy_check;

static void check_copy_job(void *data, void *arg) {
    copy_check *c = data;
    const unsigned char *p = arg;
    int len = c->next_len++;
    for (int i = 0; i < len; i++)
        if (p[i] != (unsigned char)(len * 31 + i))
            atomic_fetch_add(&c->bad, 1);
    if (((uintptr_t)p & 15) != 0)
        atomic_fetch_add(&c->bad, 1);
}

TEST(core_desync_copy_sizes) {
    copy_check c = {0, 0};
    desync_t *d = desync_new(&c, NULL);
    CHECK(d);
    unsigned char buf[256];
    for (int rep = 0; rep < 20; rep++) {
        c.next_len = 0;
        desync_sync(d, noop_job, NULL);
        for (int len = 0; len <= 200; len++) {
            for (int i = 0; i < len; i++)
                buf[i] = (unsigned char)(len * 31 + i);
            CHECK_EQ(desync_desync_copy(d, check_copy_job, buf, (size_t)len), 0);
            memset(buf, 0xee, sizeof buf); /* the copy must not depend on buf */
        }
        int n = 0;
        CHECK_EQ(desync_sync(d, get_int, &n), 0);
        CHECK_EQ(c.next_len, 201);
    }
    CHECK_EQ(atomic_load(&c.bad), 0);
    desync_release(d);
    return 0;
}
