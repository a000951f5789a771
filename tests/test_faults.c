/*
 * Faults the system hands the library: thread creation that fails once or
 * always, allocations that fail once or from some point on. Each test sets a
 * rule of tests/fault.h (only the library's own calls are failed) and checks
 * that no call hangs, every call reports the error it documents, and no
 * accepted job is lost. The sweeps over every allocation site are in
 * test_fault_sweep.c.
 */
#include "desync.h"
#include "fault.h"
#include "test.h"

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>

static void count_ran(void *data, void *arg) {
    (void)data;
    atomic_fetch_add((atomic_int *)arg, 1);
}

static desync_future_t *count_ran_async(void *data, void *arg) {
    count_ran(data, arg);
    return NULL;
}

static void set_thread(void *data, void *arg) {
    (void)data;
    *(pthread_t *)arg = pthread_self();
}

static void flag_destroy(void *data) { atomic_store((atomic_int *)data, 1); }

/* One failed thread creation must not stall an object: the job that asked
 * for the thread and the ten queued behind it run without anyone syncing. */
TEST(fault_thread_fail_once_object_runs) {
    fault_set(FAULT_THREAD, FAULT_NTH, 1);
    int data = 0;
    desync_t *d = desync_new(&data, NULL);
    CHECK(d);
    atomic_int ran = 0;
    for (int i = 0; i < 11; i++)
        CHECK_EQ(desync_desync(d, count_ran, &ran), 0);
    CHECK(test_wait_count(&ran, 11, 5000));
    CHECK_EQ(fault_failures(FAULT_THREAD), 1);
    desync_release(d);
    return 0;
}

/* The same with a second object getting work first: its spawn retry must
 * not be the only thing that rescues the first. */
TEST(fault_thread_fail_once_two_objects) {
    fault_set(FAULT_THREAD, FAULT_NTH, 1);
    int a_data = 0, b_data = 0;
    desync_t *a = desync_new(&a_data, NULL), *b = desync_new(&b_data, NULL);
    CHECK(a && b);
    atomic_int ran_a = 0, ran_b = 0;
    CHECK_EQ(desync_desync(a, count_ran, &ran_a), 0); /* its thread fails */
    CHECK_EQ(desync_desync(b, count_ran, &ran_b), 0);
    CHECK(test_wait_count(&ran_b, 1, 5000));
    for (int i = 0; i < 10; i++)
        CHECK_EQ(desync_desync(a, count_ran, &ran_a), 0);
    CHECK(test_wait_count(&ran_a, 11, 5000));
    desync_release(a);
    desync_release(b);
    return 0;
}

/* Every other thread creation fails while jobs keep coming from two
 * threads onto many objects: they all run, with no sync to help. */
struct churn {
    desync_t *objs[16];
    atomic_int ran;
};

static void *churn_producer(void *arg) {
    struct churn *c = arg;
    uint32_t rnd = (uint32_t)(uintptr_t)pthread_self() | 1u;
    for (int i = 0; i < 400; i++)
        if (desync_desync(c->objs[test_rnd(&rnd) % 16], count_ran, &c->ran) != 0)
            FAILF("desync failed\n");
    return NULL;
}

TEST(fault_thread_fail_every_other) {
    fault_set(FAULT_THREAD, FAULT_EVERY, 2);
    struct churn c = {.ran = 0};
    int data[16] = {0};
    for (int i = 0; i < 16; i++)
        CHECK((c.objs[i] = desync_new(&data[i], NULL)));
    pthread_t th[2];
    for (int i = 0; i < 2; i++)
        CHECK_EQ(pthread_create(&th[i], NULL, churn_producer, &c), 0);
    test_join_threads(th, 2);
    CHECK_EQ(atomic_load(&g_errors), 0);
    CHECK(test_wait_count(&c.ran, 800, LONG_MS));
    for (int i = 0; i < 16; i++)
        desync_release(c.objs[i]);
    return 0;
}

/* Thread creation failing always: no job runs in the background, and
 * sync, future waits and release run the queued work on the caller. */
TEST(fault_thread_fail_always) {
    fault_set(FAULT_THREAD, FAULT_FROM, 1);
    atomic_int destroyed = 0;
    desync_t *d = desync_new(&destroyed, flag_destroy);
    CHECK(d);
    atomic_int ran = 0;
    for (int i = 0; i < 10; i++)
        CHECK_EQ(desync_desync(d, count_ran, &ran), 0);
    CHECK_EQ(desync_scheduler_thread_count(desync_scheduler_default()), 0);
    CHECK_EQ(desync_scheduler_spawn_thread(desync_scheduler_default()), DESYNC_EAGAIN);
    pthread_t who;
    CHECK_EQ(desync_sync(d, set_thread, &who), 0);
    CHECK_EQ(atomic_load(&ran), 10);
    CHECK(pthread_equal(who, pthread_self()));

    /* A future of a job queued behind others: its wait runs them. */
    for (int i = 0; i < 5; i++)
        CHECK_EQ(desync_desync(d, count_ran, &ran), 0);
    desync_future_t *f = desync_future_desync(d, count_ran_async, &ran);
    CHECK(f);
    CHECK_EQ(desync_future_wait_for(f, LONG_NS, NULL), 0);
    CHECK_EQ(atomic_load(&ran), 16);
    desync_future_free(f);

    /* Release runs what is still queued. */
    for (int i = 0; i < 5; i++)
        CHECK_EQ(desync_desync(d, count_ran, &ran), 0);
    desync_release(d);
    CHECK_EQ(atomic_load(&ran), 21);
    CHECK_EQ(atomic_load(&destroyed), 1);
    CHECK(fault_failures(FAULT_THREAD) >= 1);
    return 0;
}

/* The default scheduler's creation fails once: a later call creates it. */
TEST(fault_default_scheduler_retry) {
    fault_set(FAULT_ALLOC, FAULT_NTH, 1);
    int data = 0;
    desync_t *d = desync_new(&data, NULL);
    CHECK(!d);
    CHECK_EQ(fault_failures(FAULT_ALLOC), 1);
    CHECK(desync_scheduler_default() != NULL);
    d = desync_new(&data, NULL);
    CHECK(d);
    CHECK_EQ(desync_sync(d, count_job, NULL), 0);
    CHECK_EQ(data, 1);
    desync_release(d);
    return 0;
}

/* desync_scheduler_free with no memory left: it must still stop and join
 * its threads and return. */
TEST(fault_oom_scheduler_free) {
    desync_scheduler_t *s = desync_scheduler_new(4);
    CHECK(s);
    CHECK_EQ(desync_scheduler_spawn_thread(s), 0);
    CHECK_EQ(desync_scheduler_spawn_thread(s), 0);
    fault_set(FAULT_ALLOC, FAULT_FROM, 1);
    desync_scheduler_free(s);
    fault_reset();
    return 0;
}

/* desync_scheduler_despawn_threads_if_overloaded with no memory left. */
TEST(fault_oom_despawn) {
    desync_scheduler_t *s = desync_scheduler_new(4);
    CHECK(s);
    for (int i = 0; i < 3; i++)
        CHECK_EQ(desync_scheduler_spawn_thread(s), 0);
    desync_scheduler_set_max_threads(s, 1);
    fault_set(FAULT_ALLOC, FAULT_FROM, 1);
    desync_scheduler_despawn_threads_if_overloaded(s);
    CHECK_EQ(desync_scheduler_thread_count(s), 1);
    fault_reset();
    desync_scheduler_free(s);
    return 0;
}

/* The last release, from the object's own job, with no memory left:
 * destruction is queued without allocating and runs after the job. */
struct rel_ctx {
    desync_t *d;
};

static void release_self_oom(void *data, void *arg) {
    (void)data;
    struct rel_ctx *c = arg;
    fault_set(FAULT_ALLOC, FAULT_FROM, 1);
    desync_release(c->d);
}

TEST(fault_oom_release_from_own_job) {
    desync_scheduler_t *s = desync_scheduler_new(1);
    CHECK(s);
    CHECK_EQ(desync_scheduler_spawn_thread(s), 0); /* runs what the job queues */
    atomic_int destroyed = 0;
    struct rel_ctx c = {desync_new_on(s, &destroyed, flag_destroy)};
    CHECK(c.d);
    CHECK_EQ(desync_sync(c.d, release_self_oom, &c), 0);
    CHECK(test_wait_flag(&destroyed, LONG_MS));
    fault_reset();
    desync_scheduler_free(s);
    return 0;
}

/* The scheduler cannot get memory when a job is queued: desync still
 * returns before the job runs (it must never run it on the caller). */
TEST(fault_oom_submit_never_runs_inline) {
#ifdef DESYNC_TEST_NOPOOL
    /* The premise below (the job node comes from the pool, so the failed
     * allocation is the submit's) does not hold without pools. */
    TEST_SKIP("needs the pools (NOPOOL build)");
#endif
    /* Put job nodes in this thread's pool cache: jobs run here (0 threads)
     * free their nodes here. */
    desync_scheduler_t *s0 = desync_scheduler_new(0);
    CHECK(s0);
    int data0 = 0;
    desync_t *d0 = desync_new_on(s0, &data0, NULL);
    CHECK(d0);
    for (int i = 0; i < 8; i++)
        CHECK_EQ(desync_desync(d0, count_job, NULL), 0);
    CHECK_EQ(desync_sync(d0, count_job, NULL), 0);
    desync_release(d0);
    desync_scheduler_free(s0);

    desync_scheduler_t *s = desync_scheduler_new(1);
    CHECK(s);
    int data = 0;
    desync_t *d = desync_new_on(s, &data, NULL);
    CHECK(d);
    fault_set(FAULT_ALLOC, FAULT_NTH, 1); /* the next library allocation fails */
    struct handshake h = {0};
    CHECK_EQ(desync_desync(d, handshake_job, &h), 0);
    atomic_store(&h.go, 1);
    CHECK_EQ(desync_sync(d, noop_job, NULL), 0); /* runs it here if no thread came */
    CHECK(atomic_load(&h.done));
    CHECK(atomic_load(&h.saw_go));
    fault_reset();
    desync_release(d);
    desync_scheduler_free(s);
    return 0;
}

/* A job queued with no memory left is refused, not waited for. */
TEST(fault_oom_desync_refused) {
    int data = 0;
    desync_t *d = desync_new(&data, NULL);
    CHECK(d);
    CHECK_EQ(desync_sync(d, count_job, NULL), 0); /* creates nothing later */
    fault_set(FAULT_ALLOC, FAULT_FROM, 1);
    int rc = desync_desync(d, count_job, NULL);
    CHECK(rc == 0 || rc == DESYNC_ENOMEM); /* pooled nodes need no malloc */
    char big[100] = {0};
    CHECK_EQ(desync_desync_copy(d, count_job, big, sizeof big), DESYNC_ENOMEM);
    desync_t *pooled = desync_new(&data, NULL); /* pooled objects need no malloc */
    if (pooled)
        desync_release(pooled);
    CHECK(!desync_new_copy(&data, sizeof data, NULL));
    CHECK(!desync_new_copy(NULL, 1000, NULL));
    CHECK(!desync_queue_new(NULL));
    CHECK(!desync_scheduler_new(1));
    fault_reset();
    desync_release(d);
    CHECK_EQ(data, rc == 0 ? 2 : 1);
    return 0;
}

/* ------------------------------------------------------------- streams */

/* A user stream that is told from outside when an item is ready. */
struct ext_src {
    atomic_int ready;
    desync_waker_t w;
    atomic_int has_waker;
    atomic_int freed;
};

static int ext_poll(void *self, void **item, const desync_waker_t *w) {
    struct ext_src *e = self;
    if (atomic_load(&e->ready) == 1) {
        atomic_store(&e->ready, 2);
        *item = IV(7);
        return 0;
    }
    if (atomic_load(&e->ready) == 2)
        return DESYNC_EOF;
    if (w && w->wake) {
        e->w = *w;
        atomic_store(&e->has_waker, 1);
    }
    return DESYNC_EAGAIN;
}

static void ext_free(void *self) { atomic_store(&((struct ext_src *)self)->freed, 1); }

static const desync_stream_ops_t ext_ops = {ext_poll, ext_free};

/* A worker of the default scheduler exists (sleeping) after this. */
static int start_default_worker(void) {
    int data = 0;
    desync_t *d = desync_new(&data, NULL);
    if (!d)
        return 0;
    atomic_int ran = 0;
    desync_desync(d, count_ran, &ran);
    int ok = test_wait_count(&ran, 1, LONG_MS);
    desync_release(d);
    return ok && desync_scheduler_thread_count(desync_scheduler_default()) > 0;
}

/* A user stream's wake for next_future, with no memory left: the wake is
 * trampolined through a job that needs no allocation. */
TEST(fault_oom_next_future_user_stream_wake) {
    CHECK(start_default_worker());
    struct ext_src e = {0};
    desync_stream_t *s = desync_stream_new(&ext_ops, &e);
    CHECK(s);
    desync_future_t *f = desync_stream_next_future(s);
    CHECK(f);
    CHECK(atomic_load(&e.has_waker));
    fault_set(FAULT_ALLOC, FAULT_FROM, 1);
    atomic_store(&e.ready, 1);
    e.w.wake(e.w.ctx);
    void *v = NULL;
    CHECK_EQ(desync_future_wait_for(f, LONG_NS, &v), 0);
    CHECK_EQ(VI(v), 7);
    fault_reset();
    desync_future_free(f);
    desync_stream_free(s);
    CHECK(atomic_load(&e.freed));
    return 0;
}

/* -------------------------------------------------------------- pipes */

static atomic_int g_in_freed, g_out_freed, g_processed;

static void in_free(void *item) {
    atomic_fetch_add(&g_in_freed, 1);
    free(item);
}

static void out_free(void *item) {
    if (!item)
        return; /* an async pipe's NULL future: output NULL */
    atomic_fetch_add(&g_out_freed, 1);
    free(item);
}

static void *twice(void *data, void *item, void *arg) {
    (void)data;
    (void)arg;
    atomic_fetch_add(&g_processed, 1);
    int *o = malloc(sizeof *o);
    *o = 2 * *(int *)item;
    free(item);
    return o;
}

/* The pipe's input ends while no memory is left: the end of the output
 * needs no allocation, and the reader sees it. */
TEST(fault_oom_pipe_end) {
    CHECK(start_default_worker());
    desync_stream_t *rx;
    desync_channel_t *c = desync_channel_new(8, &rx);
    CHECK(c);
    desync_stream_set_item_free(rx, in_free);
    atomic_int destroyed = 0;
    desync_t *d = desync_new(&destroyed, flag_destroy);
    CHECK(d);
    desync_stream_t *out = desync_pipe(d, rx, twice, NULL);
    CHECK(out);
    desync_stream_set_item_free(out, out_free);
    CHECK_EQ(desync_channel_send(c, heap_item(1)), 0);
    void *v;
    CHECK_EQ(desync_stream_next_for(out, LONG_NS, &v), 0);
    CHECK_EQ(*(int *)v, 2);
    free(v);
    fault_set(FAULT_ALLOC, FAULT_FROM, 1);
    desync_channel_close(c);
    int rc = desync_stream_next_for(out, LONG_NS, &v);
    CHECK_EQ(rc, DESYNC_EOF);
    desync_stream_free(out);
    desync_release(d);
    CHECK(test_wait_flag(&destroyed, LONG_MS));
    fault_reset();
    return 0;
}

/* desync_pipe with allocations failing from the nth on, for every n: it
 * returns (NULL or an output), and the reader sees the end or
 * DESYNC_ENOMEM; every item is processed or freed. */
static int pipe_oom_scenario(bool async);

static desync_future_t *twice_async(void *data, void *item, void *arg) {
    void *o = twice(data, item, arg);
    desync_future_t *f = desync_future_ready(o);
    if (!f)
        out_free(o);
    return f;
}

static int g_accepted;

static int items_settled(void *unused) {
    (void)unused;
    return atomic_load(&g_processed) + atomic_load(&g_in_freed) == g_accepted &&
           atomic_load(&g_out_freed) == atomic_load(&g_processed);
}

static int pipe_oom_scenario(bool async) {
    if (!start_default_worker())
        return 1;
    atomic_int destroyed = 0;
    fault_begin();
    int accepted = 0;
    desync_stream_t *rx;
    desync_channel_t *c = desync_channel_new(8, &rx);
    if (!c)
        return 0;
    desync_stream_set_item_free(rx, in_free);
    for (int i = 1; i <= 5; i++) {
        int *item = heap_item(i);
        if (desync_channel_send(c, item) == 0)
            accepted++;
        else
            free(item);
    }
    desync_channel_close(c);
    desync_t *d = desync_new(&destroyed, flag_destroy);
    if (!d) {
        desync_stream_free(rx);
    } else {
        desync_stream_t *out =
            async ? desync_pipe_async(d, rx, twice_async, NULL) : desync_pipe(d, rx, twice, NULL);
        if (out) {
            desync_stream_set_item_free(out, out_free);
            void *v;
            int rc;
            while ((rc = desync_stream_next_for(out, LONG_NS, &v)) == 0)
                out_free(v);
            CHECK(rc == DESYNC_EOF || rc == DESYNC_ENOMEM);
            desync_stream_free(out);
        }
        desync_release(d);
        CHECK(test_wait_flag(&destroyed, LONG_MS));
    }
    /* The pipe's last reference may go (freeing what it still holds) on a
     * worker just after destroy ran. */
    g_accepted = accepted;
    CHECK(test_wait_until(items_settled, NULL, LONG_MS));
    CHECK_EQ(atomic_load(&g_processed) + atomic_load(&g_in_freed), accepted);
    CHECK_EQ(atomic_load(&g_out_freed), atomic_load(&g_processed));
    return 0;
}

static int pipe_oom_sync(void) { return pipe_oom_scenario(false); }
static int pipe_oom_async(void) { return pipe_oom_scenario(true); }

TEST(fault_oom_pipe_sweep) {
    return fault_sweep("pipe", pipe_oom_sync, FAULT_ALLOC, FAULT_FROM, 1, 1, 200, 10, NULL);
}

TEST(fault_oom_pipe_async_sweep) {
    return fault_sweep("pipe_async", pipe_oom_async, FAULT_ALLOC, FAULT_FROM, 1, 1, 200, 10, NULL);
}

/* ------------------------------------------------- found by the sweeps */

/* A sync whose job drops the object's last reference while another thread
 * runs the queue: the syncer waits as a counted waiter, and must not touch
 * the queue once its job is done (the object may be gone). */
static void release_job(void *data, void *arg) {
    (void)data;
    desync_release(arg);
}

TEST(fault_found_sync_job_releases_busy_object) {
    desync_scheduler_t *s = desync_scheduler_new(1);
    CHECK(s);
    for (int i = 0; i < TEST_SCALED(200); i++) {
        atomic_int destroyed = 0;
        desync_t *d = desync_new_on(s, &destroyed, flag_destroy);
        CHECK(d);
        struct blocker b = {0};
        CHECK_EQ(desync_desync(d, blocker_job, &b), 0);
        CHECK(test_wait_flag(&b.started, LONG_MS)); /* the worker holds d's queue */
        atomic_store(&b.go, 1);
        CHECK_EQ(desync_sync(d, release_job, d), 0); /* waits; d is freed by the worker */
        CHECK(test_wait_flag(&destroyed, LONG_MS));
    }
    desync_scheduler_free(s);
    return 0;
}
