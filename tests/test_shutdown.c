/*
 * Shutdown and the end of a program: desync_scheduler_drain, desync_shutdown,
 * queues that outlive their scheduler or live on a scheduler with 0 threads,
 * pipes read on a 0-thread scheduler, scheduler_free from a job run by a
 * sync, and when a pipe's object is destroyed.
 */
#include <desync.h>

#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include "test.h"

static void slow_count_job(void *data, void *arg) {
    (void)arg;
    test_spin_ns(2000);
    atomic_fetch_add((atomic_int *)data, 1);
}

/* Runs child() in a forked process and waits at most timeout_ms for it;
 * returns its exit status, or -1 if it crashed or hung (then killed). */
static int run_child(int (*child)(void *), void *arg, unsigned timeout_ms) {
    pid_t pid = fork();
    if (pid < 0)
        return -1;
    if (pid == 0)
        _exit(child(arg));
    uint64_t end = test_now_ns() + (uint64_t)timeout_ms * 1000000u;
    for (;;) {
        int st;
        pid_t r = waitpid(pid, &st, WNOHANG);
        if (r == pid)
            return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
        if (test_now_ns() > end) {
            kill(pid, SIGKILL);
            waitpid(pid, &st, 0);
            return -1;
        }
        test_sleep_ms(1);
    }
}

/* ------------------------------------------------------------------ drain */

/* A program that queues work and ends without releasing its object loses
 * nothing when it registers desync_shutdown with atexit. The count lives in
 * shared memory so the parent can read what the child's jobs did. */
#define EXIT_JOBS 20000

static atomic_int *g_shared;

static void shared_count_job(void *data, void *arg) {
    (void)data;
    (void)arg;
    atomic_fetch_add(g_shared, 1);
}

static int exit_child(void *arg) {
    (void)arg;
    atexit(desync_shutdown);
    desync_t *d = desync_new(NULL, NULL);
    if (!d)
        return 2;
    for (int i = 0; i < EXIT_JOBS; i++)
        if (desync_desync(d, shared_count_job, NULL) != 0)
            return 3;
    exit(0); /* returning from main: atexit handlers run, d is never released */
}

TEST(shutdown_at_exit_loses_nothing) {
    g_shared = mmap(NULL, sizeof *g_shared, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS,
                    -1, 0);
    CHECK(g_shared != MAP_FAILED);
    atomic_store(g_shared, 0);
    CHECK_EQ(run_child(exit_child, NULL, LONG_MS), 0);
    CHECK_EQ(atomic_load(g_shared), EXIT_JOBS);
    munmap(g_shared, sizeof *g_shared);
    return 0;
}

/* Jobs that queue more jobs on other objects: drain waits for all of them. */
typedef struct chain_ctx {
    desync_t *next;
    atomic_int *count;
    int hops;
} chain_ctx;

static void chain_job(void *data, void *arg) {
    (void)data;
    chain_ctx *c = arg;
    atomic_fetch_add(c->count, 1);
    if (c->hops-- > 0)
        desync_desync(c->next, chain_job, c);
}

static int drain_chains(desync_scheduler_t *s) {
    atomic_int count = 0;
    desync_t *a = desync_new_on(s, NULL, NULL), *b = desync_new_on(s, NULL, NULL);
    CHECK(a && b);
    enum { CHAINS = 50, HOPS = 40 };
    chain_ctx ctx[CHAINS];
    for (int i = 0; i < CHAINS; i++) {
        ctx[i] = (chain_ctx){i % 2 ? a : b, &count, HOPS};
        CHECK_EQ(desync_desync(i % 2 ? b : a, chain_job, &ctx[i]), 0);
    }
    CHECK_EQ(desync_scheduler_drain(s), 0);
    CHECK_EQ(atomic_load(&count), CHAINS * (HOPS + 1));
    desync_release(a);
    desync_release(b);
    return 0;
}

TEST(shutdown_drain_waits_for_jobs_queued_by_jobs) {
    desync_scheduler_t *s = desync_scheduler_new(2);
    CHECK(s);
    CHECK_EQ(drain_chains(s), 0);
    desync_scheduler_free(s);
    CHECK_EQ(drain_chains(NULL), 0); /* the default scheduler */
    return 0;
}

TEST(shutdown_drain_with_no_threads) {
    desync_scheduler_t *s = desync_scheduler_new(0);
    CHECK(s);
    atomic_int count = 0;
    desync_t *d = desync_new_on(s, &count, NULL);
    CHECK(d);
    for (int i = 0; i < 100; i++)
        CHECK_EQ(desync_desync(d, slow_count_job, NULL), 0);
    CHECK_EQ(atomic_load(&count), 0); /* nothing runs in the background */
    CHECK_EQ(desync_scheduler_drain(s), 0);
    CHECK_EQ(atomic_load(&count), 100);
    CHECK_EQ(drain_chains(s), 0);
    desync_release(d);
    desync_scheduler_free(s);
    return 0;
}

/* Draining from one of the scheduler's own jobs could never finish. */
typedef struct drain_probe {
    int rc;
    desync_scheduler_t *s;
} drain_probe;

static void drain_probe_job(void *data, void *arg) {
    (void)data;
    drain_probe *p = arg;
    p->rc = desync_scheduler_drain(p->s);
}

TEST(shutdown_drain_from_own_job_edeadlk) {
    desync_scheduler_t *s = desync_scheduler_new(1);
    CHECK(s);
    desync_t *d = desync_new_on(s, NULL, NULL);
    CHECK(d);
    /* On the caller's thread (an idle sync runs here) and on a worker. */
    drain_probe p = {1, s};
    CHECK_EQ(desync_sync(d, drain_probe_job, &p), 0);
    CHECK_EQ(p.rc, DESYNC_EDEADLK);
    drain_probe q = {1, s};
    atomic_int done = 0;
    CHECK_EQ(desync_desync(d, drain_probe_job, &q), 0);
    CHECK_EQ(desync_desync(d, set_flag_job, &done), 0);
    CHECK(test_wait_flag(&done, LONG_MS));
    CHECK_EQ(q.rc, DESYNC_EDEADLK);
    /* Another scheduler's drain from here is fine. */
    drain_probe o = {1, NULL};
    CHECK_EQ(desync_sync(d, drain_probe_job, &o), 0);
    CHECK_EQ(o.rc, 0);
    desync_release(d);
    desync_scheduler_free(s);
    return 0;
}

/* --------------------------------------------------------------- shutdown */

TEST(shutdown_library_usable_afterwards) {
    atomic_int count = 0;
    desync_t *d = desync_new(&count, NULL);
    CHECK(d);
    for (int round = 0; round < 3; round++) {
        for (int i = 0; i < 1000; i++)
            CHECK_EQ(desync_desync(d, slow_count_job, NULL), 0);
        desync_shutdown();
        CHECK_EQ(atomic_load(&count), 1000 * (round + 1));
        CHECK_EQ(desync_scheduler_thread_count(desync_scheduler_default()), 0);
    }
    /* Threads start again on demand. */
    CHECK_EQ(desync_desync(d, slow_count_job, NULL), 0);
    int v = 0;
    CHECK_EQ(desync_sync(d, get_int, &v), 0);
    CHECK_EQ(v, 3001);
    desync_release(d);
    desync_shutdown();
    return 0;
}

/* exit() from a job on a worker thread runs the atexit handler there: it
 * must not wait for its own job or join its own thread. */
static void exit_job(void *data, void *arg) {
    (void)data;
    (void)arg;
    exit(7);
}

static int exit_in_job_child(void *arg) {
    (void)arg;
    atexit(desync_shutdown);
    desync_t *d = desync_new(NULL, NULL);
    if (!d || desync_desync(d, exit_job, NULL) != 0)
        return 2;
    for (;;)
        test_sleep_ms(10); /* the job ends the process */
}

TEST(shutdown_from_job_does_not_hang) {
    CHECK_EQ(run_child(exit_in_job_child, NULL, LONG_MS), 7);
    return 0;
}

/* ------------------------------------------- queues without a scheduler */

static void count_queue_job(void *arg) { atomic_fetch_add((atomic_int *)arg, 1); }

/* The header promises that a queue outliving its freed scheduler stays
 * usable and that its queued jobs still run. */
TEST(shutdown_queue_outlives_freed_scheduler) {
    desync_scheduler_t *s = desync_scheduler_new(2);
    CHECK(s);
    desync_queue_t *q = desync_queue_new(s);
    CHECK(q);
    desync_scheduler_free(s);
    atomic_int count = 0;
    for (int i = 0; i < 10; i++)
        CHECK_EQ(desync_queue_desync(q, count_queue_job, &count), 0);
    desync_queue_release(q); /* runs them: no thread ever will */
    CHECK_EQ(atomic_load(&count), 10);
    return 0;
}

TEST(shutdown_queue_on_zero_threads_runs_at_drain) {
    desync_scheduler_t *s = desync_scheduler_new(0);
    CHECK(s);
    desync_queue_t *q = desync_queue_new(s);
    CHECK(q);
    atomic_int count = 0;
    for (int i = 0; i < 10; i++)
        CHECK_EQ(desync_queue_desync(q, count_queue_job, &count), 0);
    desync_queue_release(q);
    CHECK_EQ(atomic_load(&count), 0);
    CHECK_EQ(desync_scheduler_drain(s), 0);
    CHECK_EQ(atomic_load(&count), 10);
    desync_scheduler_free(s);
    return 0;
}

/* ------------------------------------------------- pipes with 0 threads */

static void *add_one(void *data, void *item, void *arg) {
    (void)data;
    (void)arg;
    return P(U(item) + 1);
}

TEST(shutdown_pipe_on_zero_threads_produces_output) {
    desync_scheduler_t *s = desync_scheduler_new(0);
    CHECK(s);
    desync_t *d = desync_new_on(s, NULL, NULL);
    CHECK(d);
    desync_stream_t *rx = NULL;
    desync_channel_t *ch = desync_channel_new(16, &rx);
    CHECK(ch);
    desync_stream_t *out = desync_pipe(d, rx, add_one, NULL);
    CHECK(out);
    enum { N = 200 };
    int sent = 0, got = 0;
    while (got < N) {
        while (sent < N && desync_channel_try_send(ch, P(sent + 1)) == 0)
            sent++;
        void *item = NULL;
        int r = desync_stream_next_for(out, 5 * SEC, &item);
        CHECK_EQ(r, 0); /* before: the reader slept and no thread ran the pipe */
        CHECK_EQ(U(item), (uintptr_t)got + 2);
        got++;
    }
    desync_channel_close(ch);
    void *item = NULL;
    CHECK_EQ(desync_stream_next_for(out, 5 * SEC, &item), DESYNC_EOF);
    desync_stream_free(out);
    desync_release(d);
    CHECK_EQ(desync_scheduler_drain(s), 0);
    desync_scheduler_free(s);
    return 0;
}

/* ----------------------------------------------- scheduler_free from a job */

typedef struct free_probe {
    desync_scheduler_t *s;
} free_probe;

static void free_sched_job(void *data, void *arg) {
    (void)data;
    desync_scheduler_free(((free_probe *)arg)->s);
}

/* A job that a sync runs on the caller's own thread is one of the
 * scheduler's jobs too: freeing from there must be ignored, or the later
 * free (and the release) would touch freed memory. */
TEST(shutdown_scheduler_free_from_sync_job_ignored) {
    desync_scheduler_t *s = desync_scheduler_new(1);
    CHECK(s);
    desync_t *d = desync_new_on(s, NULL, NULL);
    CHECK(d);
    free_probe p = {s};
    CHECK_EQ(desync_sync(d, free_sched_job, &p), 0); /* runs on this thread */
    atomic_int count = 0;
    desync_t *e = desync_new_on(s, &count, NULL);
    CHECK(e);
    CHECK_EQ(desync_desync(e, slow_count_job, NULL), 0);
    CHECK_EQ(desync_scheduler_drain(s), 0); /* s is still alive and working */
    CHECK_EQ(atomic_load(&count), 1);
    desync_release(e);
    desync_release(d);
    desync_scheduler_free(s);
    return 0;
}

/* -------------------------------------------------- pipes and destroy */

static atomic_int g_destroyed;

static void count_destroy(void *data) {
    (void)data;
    atomic_fetch_add(&g_destroyed, 1);
}

/* After desync_pipe the user's last release returns before destroy runs
 * (the pipe drops its own reference from a queued job); a drain covers it. */
TEST(shutdown_drain_runs_pipe_object_destroy) {
    atomic_store(&g_destroyed, 0);
    desync_t *d = desync_new(NULL, count_destroy);
    CHECK(d);
    desync_stream_t *rx = NULL;
    desync_channel_t *ch = desync_channel_new(4, &rx);
    CHECK(ch);
    desync_stream_t *out = desync_pipe(d, rx, add_one, NULL);
    CHECK(out);
    CHECK_EQ(desync_channel_send(ch, P(1)), 0);
    desync_channel_close(ch);
    desync_release(d);
    desync_stream_free(out);
    CHECK_EQ(desync_scheduler_drain(NULL), 0);
    CHECK_EQ(atomic_load(&g_destroyed), 1);
    return 0;
}
