/*
 * Objects: reading and updating the data through jobs, retain/release, when
 * the data is destroyed, and releases made from the object's own jobs.
 * Every wait is bounded.
 */
#include <desync.h>

#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "test.h"

/* ------------------------------------------------------- basic access */

struct point {
    int x, y;
    char name[16];
    void *seen_data;
};

static void read_point(void *data, void *arg) {
    struct point *out = arg;
    *out = *(struct point *)data;
    out->seen_data = data;
}

TEST(core_sync_retrieve) {
    struct point *p = malloc(sizeof *p);
    CHECK(p);
    memset(p, 0, sizeof *p);
    p->x = 3;
    p->y = -4;
    strcpy(p->name, "origin");

    desync_t *d = desync_new(p, free);
    CHECK(d);
    CHECK(desync_data(d) == p);
    CHECK(desync_get_queue(d) != NULL);

    struct point *out = calloc(1, sizeof *out);
    CHECK(out);
    CHECK_EQ(desync_sync(d, read_point, out), 0);
    CHECK_EQ(out->x, 3);
    CHECK_EQ(out->y, -4);
    CHECK(strcmp(out->name, "origin") == 0);
    CHECK(out->seen_data == p); /* jobs receive the object's data pointer */
    free(out);
    desync_release(d);
    return 0;
}

struct sum_args {
    int from, to;
    long sum;
};

static void sum_range(void *data, void *arg) {
    int *a = data;
    struct sum_args *s = arg;
    s->sum = 0;
    for (int i = s->from; i < s->to; i++)
        s->sum += a[i];
}

TEST(core_sync_into_local) {
    int *a = malloc(100 * sizeof *a);
    CHECK(a);
    for (int i = 0; i < 100; i++)
        a[i] = i;
    desync_t *d = desync_new(a, free);
    CHECK(d);

    int v = -1; /* the job writes straight into the caller's stack */
    CHECK_EQ(desync_sync(d, get_int, &v), 0);
    CHECK_EQ(v, 0);

    struct sum_args s = {10, 20, -1};
    CHECK_EQ(desync_sync(d, sum_range, &s), 0);
    CHECK_EQ(s.sum, 145);
    desync_release(d);
    return 0;
}

struct slow_set_arg {
    int value;
    unsigned sleep_ms;
};

static void slow_set(void *data, void *arg) {
    struct slow_set_arg *a = arg;
    test_sleep_ms(a->sleep_ms);
    *(int *)data = a->value;
}

TEST(core_async_update_then_sync) {
    int *n = malloc(sizeof *n);
    CHECK(n);
    *n = 1;
    desync_t *d = desync_new(n, free);
    CHECK(d);
    static struct slow_set_arg arg = {77, 100};
    CHECK_EQ(desync_desync(d, slow_set, &arg), 0);
    int v = 0;
    CHECK_EQ(desync_sync(d, get_int, &v), 0);
    CHECK_EQ(v, 77); /* sync queued after the slow update sees it */
    desync_release(d);
    return 0;
}

static atomic_int g_int_destroyed;
static void counted_free(void *p) {
    free(p);
    atomic_fetch_add(&g_int_destroyed, 1);
}

TEST(core_desync_42_43_repeat) {
    atomic_store(&g_int_destroyed, 0);
    for (int i = 0; i < 1000; i++) {
        int *n = malloc(sizeof *n);
        CHECK(n);
        *n = 0;
        desync_t *d = desync_new(n, counted_free);
        CHECK(d);
        CHECK_EQ(desync_desync(d, set_int, (void *)(intptr_t)42), 0);
        CHECK_EQ(desync_desync(d, set_int, (void *)(intptr_t)43), 0);
        int v = 0;
        CHECK_EQ(desync_sync(d, get_int, &v), 0);
        if (v != 43)
            fprintf(stderr, "iteration %d\n", i);
        CHECK_EQ(v, 43);
        desync_release(d);
        CHECK_EQ(atomic_load(&g_int_destroyed), i + 1);
    }
    return 0;
}

/* ----------------------------------------------------------- lifetime */

struct slow_log {
    struct tracked t;
    int order[8];
    int n;
};

static void slow_log_job(void *data, void *arg) {
    struct slow_log *l = data;
    test_sleep_ms(20);
    l->order[l->n++] = (int)(intptr_t)arg;
    l->t.jobs++;
}

static void slow_log_destroy(void *data) {
    struct slow_log *l = data;
    l->t.jobs_at_destroy = l->n; /* must see every job */
    atomic_fetch_add(&l->t.destroyed, 1);
}

TEST(core_release_with_slow_jobs_queued) {
    static struct slow_log l;
    memset(&l, 0, sizeof l);
    desync_t *d = desync_new(&l, slow_log_destroy);
    CHECK(d);
    for (int i = 0; i < 5; i++)
        CHECK_EQ(desync_desync(d, slow_log_job, (void *)(intptr_t)i), 0);
    /* The last release blocks until the queued jobs ran, then destroys. */
    desync_release(d);
    CHECK_EQ(atomic_load(&l.t.destroyed), 1);
    CHECK_EQ(l.t.jobs_at_destroy, 5);
    CHECK_EQ(l.n, 5);
    for (int i = 0; i < 5; i++)
        CHECK_EQ(l.order[i], i);
    /* Nothing runs destroy a second time later. */
    test_sleep_ms(50);
    CHECK_EQ(atomic_load(&l.t.destroyed), 1);
    return 0;
}

TEST(core_retain_release) {
    static struct tracked t;
    memset(&t, 0, sizeof t);
    desync_t *d = desync_new(&t, tracked_destroy);
    CHECK(d);
    CHECK(desync_retain(d) == d);
    CHECK(desync_retain(d) == d); /* three references now */
    desync_release(d);
    desync_release(d);
    CHECK_EQ(atomic_load(&t.destroyed), 0);
    CHECK_EQ(desync_desync(d, tracked_job, NULL), 0);
    CHECK_EQ(desync_sync(d, tracked_job, NULL), 0); /* still alive and usable */
    desync_release(d);
    CHECK_EQ(atomic_load(&t.destroyed), 1);
    CHECK_EQ(t.jobs_at_destroy, 2);

    /* destroy may be NULL. */
    int x = 5;
    desync_t *e = desync_new(&x, NULL);
    CHECK(e);
    CHECK_EQ(desync_desync(e, set_int, (void *)(intptr_t)6), 0);
    desync_release(e);
    CHECK_EQ(x, 6);
    return 0;
}

/* ------------------------------------------------ release from own job */

struct selfrel {
    struct tracked t;
    desync_t *d;
    atomic_int release_returned;
    int destroyed_seen_in_job; /* destroy count right after release, in the job */
    int release_returned_at_destroy;
};

static void selfrel_job(void *data, void *arg) {
    struct selfrel *s = data;
    (void)arg;
    desync_release(s->d); /* may be the last reference: must not deadlock */
    s->destroyed_seen_in_job = atomic_load(&s->t.destroyed);
    s->t.jobs++;
    atomic_store(&s->release_returned, 1);
}

static void selfrel_destroy(void *data) {
    struct selfrel *s = data;
    s->release_returned_at_destroy = atomic_load(&s->release_returned);
    tracked_destroy(data);
}

TEST(core_release_from_own_job) {
    /* The job drops the only reference while later jobs are still queued. */
    static struct selfrel s;
    memset(&s, 0, sizeof s);
    s.d = desync_new(&s, selfrel_destroy);
    CHECK(s.d);
    static struct blocker b;
    memset(&b, 0, sizeof b);
    CHECK_EQ(desync_desync(s.d, blocker_job, &b), 0);
    CHECK_EQ(desync_desync(s.d, selfrel_job, NULL), 0); /* owns our reference now */
    CHECK_EQ(desync_desync(s.d, tracked_job, NULL), 0);
    atomic_store(&b.go, 1);
    CHECK(test_wait_flag(&s.t.destroyed, 5000));
    test_sleep_ms(20);
    CHECK_EQ(atomic_load(&s.t.destroyed), 1);
    CHECK_EQ(s.destroyed_seen_in_job, 0);       /* not destroyed inside the job */
    CHECK_EQ(s.release_returned_at_destroy, 1); /* destroy ran after the job */
    CHECK_EQ(s.t.jobs_at_destroy, 2);           /* and after the job queued behind it */

    /* Same on a 0-thread scheduler: the job drops the last reference while
     * nothing runs the queue; scheduler_free runs the backlog here, and the
     * destruction comes after the releasing job and the job behind it. */
    desync_scheduler_t *s0 = desync_scheduler_new(0);
    CHECK(s0);
    static struct selfrel s2;
    memset(&s2, 0, sizeof s2);
    s2.d = desync_new_on(s0, &s2, selfrel_destroy);
    CHECK(s2.d);
    CHECK_EQ(desync_desync(s2.d, selfrel_job, NULL), 0); /* owns our reference */
    CHECK_EQ(desync_desync(s2.d, tracked_job, NULL), 0);
    test_sleep_ms(20);
    CHECK_EQ(atomic_load(&s2.t.destroyed), 0); /* nothing ran yet */
    desync_scheduler_free(s0);
    CHECK_EQ(atomic_load(&s2.t.destroyed), 1);
    CHECK_EQ(s2.t.jobs_at_destroy, 2);
    CHECK_EQ(s2.destroyed_seen_in_job, 0);
    CHECK_EQ(s2.release_returned_at_destroy, 1);

    /* Two references, released by the job and by us in either order: the
     * destruction still comes after both jobs. */
    static struct selfrel s3;
    memset(&s3, 0, sizeof s3);
    s3.d = desync_new(&s3, selfrel_destroy);
    CHECK(s3.d);
    CHECK(desync_retain(s3.d) == s3.d);
    CHECK_EQ(desync_desync(s3.d, selfrel_job, NULL), 0);
    CHECK_EQ(desync_desync(s3.d, tracked_job, NULL), 0);
    desync_release(s3.d);
    CHECK(test_wait_flag(&s3.t.destroyed, 5000));
    test_sleep_ms(20);
    CHECK_EQ(atomic_load(&s3.t.destroyed), 1);
    CHECK_EQ(s3.t.jobs_at_destroy, 2);
    CHECK_EQ(s3.destroyed_seen_in_job, 0);
    return 0;
}

TEST(core_release_inside_sync_job) {
    static struct selfrel s;
    memset(&s, 0, sizeof s);
    s.d = desync_new(&s, selfrel_destroy);
    CHECK(s.d);
    /* The sync job drops the last reference; the sync must still return. */
    CHECK_EQ(desync_sync(s.d, selfrel_job, NULL), 0);
    CHECK(test_wait_flag(&s.t.destroyed, 5000));
    CHECK_EQ(s.destroyed_seen_in_job, 0);
    CHECK_EQ(s.release_returned_at_destroy, 1);
    test_sleep_ms(20);
    CHECK_EQ(atomic_load(&s.t.destroyed), 1);
    return 0;
}

/* ------------------------------------------------ non-blocking releases */

TEST(core_release_not_last_does_not_block) {
    /* The job waits for a flag that is set only after release returned: a
     * release that waited for the job would leave it without the flag. */
    int x = 0;
    desync_t *d = desync_new(&x, NULL);
    CHECK(d);
    CHECK(desync_retain(d) == d);
    static struct handshake h;
    memset(&h, 0, sizeof h);
    CHECK_EQ(desync_desync(d, handshake_job, &h), 0);
    desync_release(d); /* not the last reference */
    atomic_store(&h.go, 1);
    CHECK_EQ(desync_sync(d, noop_job, NULL), 0);
    CHECK_EQ(atomic_load(&h.saw_go), 1);
    desync_release(d);

    /* desync_queue_release never blocks, even for the last reference. */
    desync_queue_t *q = desync_queue_new(NULL);
    CHECK(q);
    static struct handshake hq;
    memset(&hq, 0, sizeof hq);
    CHECK_EQ(desync_queue_desync(q, handshake_queue_job, &hq), 0);
    desync_queue_release(q);
    atomic_store(&hq.go, 1);
    CHECK(test_wait_flag(&hq.done, 5000));
    CHECK_EQ(atomic_load(&hq.saw_go), 1);
    return 0;
}

TEST(core_release_runs_backlog_no_threads) {
    /* With 0 threads, the last release runs the queued jobs itself. */
    desync_scheduler_t *s0 = desync_scheduler_new(0);
    CHECK(s0);
    static struct tracked t;
    memset(&t, 0, sizeof t);
    desync_t *d = desync_new_on(s0, &t, tracked_destroy);
    CHECK(d);
    for (int i = 0; i < 3; i++)
        CHECK_EQ(desync_desync(d, tracked_job, NULL), 0);
    desync_release(d);
    CHECK_EQ(atomic_load(&t.destroyed), 1);
    CHECK_EQ(t.jobs_at_destroy, 3);
    desync_scheduler_free(s0);
    return 0;
}

/* ------------------------------------------------- data owned by the object */

struct copied {
    int64_t balance;
    char name[8];
    atomic_int *destroyed; /* counts destroy calls */
};

static void copied_destroy(void *data) {
    struct copied *c = data;
    atomic_fetch_add(c->destroyed, 1);
    c->balance = -1; /* the copy is still valid while destroy runs */
}

static void copied_add(void *data, void *arg) { ((struct copied *)data)->balance += *(int *)arg; }

static void copied_read(void *data, void *arg) {
    struct copied *c = data;
    struct point *out = arg;
    out->x = (int)c->balance;
    memcpy(out->name, c->name, sizeof c->name);
    out->seen_data = data;
}

TEST(core_new_copy_owns_its_copy) {
    /* Small data (the line shared with the queue) and large data (after the
     * object), each its own copy, aligned for any type, destroyed once. */
    for (size_t size = sizeof(struct copied); size <= 4096; size *= 16) {
        static atomic_int destroyed;
        atomic_store(&destroyed, 0);
        struct copied *init = calloc(1, size);
        CHECK(init);
        init->balance = 100;
        memcpy(init->name, "alice", 6);
        init->destroyed = &destroyed;
        desync_t *d = desync_new_copy(init, size, copied_destroy);
        CHECK(d);
        init->balance = 5; /* the object has its own copy */
        free(init);
        int add = 7;
        for (int i = 0; i < 10; i++)
            CHECK_EQ(desync_desync(d, copied_add, &add), 0);
        struct point p;
        CHECK_EQ(desync_sync(d, copied_read, &p), 0);
        CHECK_EQ(p.x, 170);
        CHECK(strcmp(p.name, "alice") == 0);
        CHECK(p.seen_data != (void *)init);
        CHECK_EQ((uintptr_t)p.seen_data % _Alignof(max_align_t), 0);
        CHECK_EQ(atomic_load(&destroyed), 0);
        desync_release(d);
        CHECK_EQ(atomic_load(&destroyed), 1);
    }
    return 0;
}

static void zero_check(void *data, void *arg) {
    const unsigned char *b = data;
    size_t n = *(size_t *)arg, nonzero = 0;
    for (size_t i = 0; i < n; i++)
        nonzero += b[i] != 0;
    *(size_t *)arg = nonzero;
}

TEST(core_new_copy_null_init_zeroes) {
    /* NULL init: zeros, whatever the size (0 included), with no destroy;
     * on a scheduler with no threads the last release runs the backlog. */
    desync_scheduler_t *s0 = desync_scheduler_new(0);
    CHECK(s0);
    size_t sizes[] = {0, 1, 32, 33, 1000};
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
        desync_t *d = desync_new_copy_on(s0, NULL, sizes[i], NULL);
        CHECK(d);
        size_t n = sizes[i];
        CHECK_EQ(desync_sync(d, zero_check, &n), 0);
        CHECK_EQ(n, 0);
        desync_release(d);
    }
    CHECK(desync_new_copy(NULL, SIZE_MAX - 16, NULL) == NULL); /* too large */
    desync_scheduler_free(s0);
    return 0;
}

static void copied_job_release(void *data, void *arg) {
    (void)data;
    desync_release(arg); /* the last reference, from the object's own job */
}

TEST(core_new_copy_release_from_own_job) {
    /* The copy outlives the last release until destroy has run, and the
     * object's memory stays while a queue reference remains. */
    static atomic_int destroyed;
    atomic_store(&destroyed, 0);
    struct copied init = {.balance = 1, .destroyed = &destroyed};
    desync_t *d = desync_new_copy(&init, sizeof init, copied_destroy);
    CHECK(d);
    desync_queue_t *q = desync_queue_retain(desync_get_queue(d));
    CHECK(q);
    int add = 1;
    CHECK_EQ(desync_desync(d, copied_add, &add), 0);
    CHECK_EQ(desync_desync(d, copied_job_release, d), 0);
    CHECK(test_wait_count(&destroyed, 1, 5000));
    CHECK_EQ(desync_queue_sync(q, noop_queue_job, NULL), 0); /* the queue is still usable */
    desync_queue_release(q);
    return 0;
}
