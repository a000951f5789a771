/*
 * Introspection (issue 11): desync_queue_stats, desync_scheduler_stats,
 * desync_scheduler_dump with labels, and the worker threads' names.
 */
#include "test.h"

#include <desync.h>

#include <dirent.h>
#include <string.h>

/* Counts are exact on a 0-thread scheduler once the queue is idle. */
TEST(stats_queue_counts_and_states) {
    desync_scheduler_t *s = desync_scheduler_new(0);
    CHECK(s);
    int v = 0;
    desync_t *d = desync_new_on(s, &v, NULL);
    CHECK(d);
    desync_queue_t *q = desync_get_queue(d);
    desync_queue_stats_t st;
    CHECK_EQ(desync_queue_stats(q, &st), 0);
    CHECK_EQ(st.state, DESYNC_QUEUE_IDLE);
    CHECK_EQ(st.pending, 0);
    CHECK_EQ(st.run, 0);
    CHECK_EQ(st.max_pending, 0);
    CHECK_EQ(st.blocked, 0);
    for (int i = 0; i < 5; i++)
        CHECK_EQ(desync_desync(d, count_job, NULL), 0);
    CHECK_EQ(desync_queue_stats(q, &st), 0);
    CHECK_EQ(st.state, DESYNC_QUEUE_RUNNING); /* waiting for a thread */
    CHECK_EQ(st.pending, 5);
    CHECK_EQ(st.run, 0);
    /* The sync queues behind them and runs all six here. */
    CHECK_EQ(desync_sync(d, count_job, NULL), 0);
    CHECK_EQ(v, 6);
    CHECK_EQ(desync_queue_stats(q, &st), 0);
    CHECK_EQ(st.state, DESYNC_QUEUE_IDLE);
    CHECK_EQ(st.pending, 0);
    CHECK_EQ(st.run, 6);
    /* A sync on an idle queue runs at once and is not counted. */
    CHECK_EQ(desync_sync(d, count_job, NULL), 0);
    CHECK_EQ(desync_queue_stats(q, &st), 0);
    CHECK_EQ(st.run, 6);
    /* Suspended, with work behind it. */
    desync_future_t *f = desync_queue_suspend(q);
    CHECK(f);
    void *resumer = NULL;
    CHECK_EQ(desync_future_wait_for(f, LONG_NS, &resumer), 0);
    desync_future_free(f);
    CHECK_EQ(desync_desync(d, count_job, NULL), 0);
    CHECK_EQ(desync_desync(d, count_job, NULL), 0);
    CHECK_EQ(desync_set_max_pending(d, 10), 0);
    CHECK_EQ(desync_queue_stats(q, &st), 0);
    CHECK_EQ(st.state, DESYNC_QUEUE_SUSPENDED);
    CHECK(st.pending >= 2);
    CHECK_EQ(st.max_pending, 10);
    CHECK_EQ(st.blocked, 0);
    desync_resumer_resume(resumer);
    CHECK_EQ(desync_sync(d, noop_job, NULL), 0);
    CHECK_EQ(v, 9);
    CHECK_EQ(desync_queue_stats(q, &st), 0);
    CHECK_EQ(st.state, DESYNC_QUEUE_IDLE);
    CHECK_EQ(st.pending, 0);
    CHECK_EQ(desync_queue_stats(NULL, &st), DESYNC_EINVAL);
    CHECK_EQ(desync_queue_stats(q, NULL), DESYNC_EINVAL);
    desync_release(d);
    desync_scheduler_free(s);
    return 0;
}

/* A queue held by a future reads SUSPENDED: an async job's node waiting for
 * the future its job returned, and a future_sync node reached by a thread
 * that does not wait on its future (a drain). It failed before: RUNNING. */
static desync_future_t *return_arg_future(void *data, void *arg) {
    (void)data;
    return arg;
}

static desync_future_t *ready_one(void *data, void *arg) {
    (void)data;
    (void)arg;
    return desync_future_ready((void *)1);
}

TEST(stats_queue_held_by_future) {
    desync_scheduler_t *s = desync_scheduler_new(0);
    CHECK(s);
    desync_t *d = desync_new_on(s, NULL, NULL);
    CHECK(d);
    desync_queue_t *q = desync_get_queue(d);
    desync_queue_stats_t st;
    desync_future_t *inner;
    desync_promise_t *p = desync_promise_new(&inner);
    CHECK(p);
    desync_future_t *out = desync_future_desync(d, return_arg_future, inner);
    CHECK(out);
    CHECK_EQ(desync_scheduler_drain(s), 0); /* runs the job: its node parks */
    CHECK_EQ(desync_queue_stats(q, &st), 0);
    CHECK_EQ(st.state, DESYNC_QUEUE_SUSPENDED);
    CHECK_EQ(desync_promise_complete(p, (void *)7), 0);
    void *v = NULL;
    CHECK_EQ(desync_future_wait_for(out, LONG_NS, &v), 0);
    CHECK(v == (void *)7);
    desync_future_free(out);
    CHECK_EQ(desync_queue_stats(q, &st), 0);
    CHECK_EQ(st.state, DESYNC_QUEUE_IDLE);
    /* future_sync: its job waits for a thread that waits on its future. */
    out = desync_future_sync(d, ready_one, NULL);
    CHECK(out);
    CHECK_EQ(desync_scheduler_drain(s), 0);
    CHECK_EQ(desync_queue_stats(q, &st), 0);
    CHECK_EQ(st.state, DESYNC_QUEUE_SUSPENDED);
    CHECK_EQ(desync_future_wait_for(out, LONG_NS, &v), 0);
    CHECK(v == (void *)1);
    desync_future_free(out);
    CHECK_EQ(desync_queue_stats(q, &st), 0);
    CHECK_EQ(st.state, DESYNC_QUEUE_IDLE);
    desync_release(d);
    desync_scheduler_free(s);
    return 0;
}

static int job_ran_and_wait(desync_t *d) {
    atomic_int done = 0;
    if (desync_desync(d, set_flag_job, &done) != 0)
        return 0;
    return test_wait_flag(&done, LONG_MS);
}

TEST(stats_scheduler_counters) {
    desync_scheduler_t *s = desync_scheduler_new(2);
    CHECK(s);
    desync_scheduler_stats_t st;
    CHECK_EQ(desync_scheduler_stats(s, &st), 0);
    CHECK_EQ(st.threads, 0);
    CHECK_EQ(st.threads_peak, 0);
    CHECK_EQ(st.max_threads, 2);
    CHECK_EQ(st.queues_run, 0);
    CHECK_EQ(st.wakeups, 0);
    CHECK_EQ(st.spawn_failures, 0);
    desync_t *d = desync_new_on(s, NULL, NULL);
    CHECK(d);
    CHECK(job_ran_and_wait(d));
    CHECK_EQ(desync_scheduler_stats(s, &st), 0);
    CHECK(st.threads >= 1 && st.threads <= 2);
    CHECK(st.threads_peak >= st.threads);
    CHECK(st.queues_run >= 1);
    /* A thread that went to sleep is woken for new work (bounded retries:
     * it sleeps once its short spin is over). */
    for (int i = 0; i < 200 && st.wakeups == 0; i++) {
        test_sleep_ms(10);
        CHECK(job_ran_and_wait(d));
        CHECK_EQ(desync_scheduler_stats(s, &st), 0);
    }
    CHECK(st.wakeups >= 1);
    CHECK(st.queues_run >= 2);
    CHECK_EQ(desync_scheduler_stats(NULL, &st), 0); /* the default one */
    CHECK_EQ(desync_scheduler_stats(s, NULL), DESYNC_EINVAL);
    desync_release(d);
    desync_scheduler_free(s);
    return 0;
}

/* The dump as a string (tmpfile: portable). */
static char *dump_to_string(desync_scheduler_t *s) {
    FILE *f = tmpfile();
    if (!f)
        return NULL;
    desync_scheduler_dump(s, f);
    long n = ftell(f);
    char *buf = n >= 0 ? calloc(1, (size_t)n + 1) : NULL;
    rewind(f);
    if (buf && fread(buf, 1, (size_t)n, f) != (size_t)n) {
        free(buf);
        buf = NULL;
    }
    fclose(f);
    return buf;
}

TEST(stats_dump_shows_labels) {
    desync_scheduler_t *s = desync_scheduler_new(1);
    CHECK(s);
    desync_t *d = desync_new_on(s, NULL, NULL);
    desync_queue_t *q = desync_queue_new(s);
    CHECK(d && q);
    CHECK_EQ(desync_set_label(d, "busy-logger"), 0);
    CHECK_EQ(desync_queue_set_label(q, "temporary"), 0);
    CHECK_EQ(desync_queue_set_label(q, "paused-queue"), 0); /* replaces it */
    CHECK_EQ(desync_set_label(NULL, "x"), DESYNC_EINVAL);
    struct blocker b = {0};
    CHECK_EQ(desync_desync(d, blocker_job, &b), 0);
    CHECK(test_wait_flag(&b.started, LONG_MS));
    desync_future_t *f = desync_queue_suspend(q);
    CHECK(f);
    /* Its suspend node waits for the scheduler's one thread, held by the
     * blocker: the dump shows q ready, then (after the blocker) suspended. */
    char *out = dump_to_string(s);
    CHECK(out);
    if (!strstr(out, "running \"busy-logger\"") || !strstr(out, "desync-1") ||
        !strstr(out, "paused-queue"))
        fprintf(stderr, "dump:\n%s", out);
    CHECK(strstr(out, "running \"busy-logger\""));
    CHECK(strstr(out, "thread desync-1"));
    CHECK(strstr(out, "ready: \"paused-queue\""));
    free(out);
    atomic_store(&b.go, 1);
    void *resumer = NULL;
    CHECK_EQ(desync_future_wait_for(f, LONG_NS, &resumer), 0);
    desync_future_free(f);
    out = dump_to_string(s);
    CHECK(out);
    if (!strstr(out, "suspended \"paused-queue\""))
        fprintf(stderr, "dump:\n%s", out);
    CHECK(strstr(out, "suspended \"paused-queue\""));
    free(out);
    desync_resumer_resume(resumer);
    CHECK_EQ(desync_set_label(d, NULL), 0); /* cleared */
    CHECK_EQ(desync_sync(d, noop_job, NULL), 0);
    out = dump_to_string(s);
    CHECK(out);
    CHECK(!strstr(out, "busy-logger"));
    free(out);
    desync_queue_release(q);
    desync_release(d);
    desync_scheduler_free(s);
    return 0;
}

/* An object's scheduler, when not the default one, lives in the queue's
 * cold part, made at creation; a label and a limit set later go in the same
 * part. Its jobs must still go to its own scheduler's threads, and only that
 * scheduler's dump may list it. */
TEST(stats_cold_part_keeps_scheduler) {
    desync_scheduler_t *s = desync_scheduler_new(1);
    CHECK(s);
    int v = 0;
    desync_t *d = desync_new_on(s, &v, NULL);
    CHECK(d);
    CHECK_EQ(desync_set_label(d, "on-its-own-pool"), 0);
    CHECK_EQ(desync_set_max_pending(d, 100), 0);
    desync_scheduler_stats_t before, after;
    CHECK_EQ(desync_scheduler_stats(s, &before), 0);
    struct blocker b = {0};
    CHECK_EQ(desync_desync(d, blocker_job, &b), 0);
    CHECK(test_wait_flag(&b.started, LONG_MS)); /* on one of s's threads */
    char *mine = dump_to_string(s), *other = dump_to_string(desync_scheduler_default());
    CHECK(mine && other);
    CHECK(strstr(mine, "running \"on-its-own-pool\""));
    CHECK(!strstr(other, "on-its-own-pool"));
    free(mine);
    free(other);
    atomic_store(&b.go, 1);
    CHECK_EQ(desync_sync(d, count_job, NULL), 0);
    CHECK_EQ(v, 1);
    CHECK_EQ(desync_scheduler_stats(s, &after), 0);
    CHECK(after.queues_run > before.queues_run);
    desync_release(d);
    desync_scheduler_free(s);
    return 0;
}

#ifdef __linux__
/* 1 if some thread of this process is named `name` (/proc/self/task/N/comm). */
static int thread_named(const char *name) {
    DIR *dir = opendir("/proc/self/task");
    if (!dir)
        return -1;
    int found = 0;
    struct dirent *e;
    while (!found && (e = readdir(dir))) {
        if (e->d_name[0] == '.')
            continue;
        char path[300], comm[64] = "";
        snprintf(path, sizeof path, "/proc/self/task/%s/comm", e->d_name);
        FILE *f = fopen(path, "r");
        if (!f)
            continue;
        if (fgets(comm, sizeof comm, f)) {
            comm[strcspn(comm, "\n")] = 0;
            found = strcmp(comm, name) == 0;
        }
        fclose(f);
    }
    closedir(dir);
    return found;
}
#endif

TEST(stats_worker_threads_named) {
#ifndef __linux__
    TEST_SKIP("thread names are read from /proc on Linux only");
#else
    if (thread_named("no-such-thread") < 0)
        TEST_SKIP("no /proc/self/task");
    desync_scheduler_t *s = desync_scheduler_new(1);
    CHECK(s);
    desync_t *d = desync_new_on(s, NULL, NULL);
    CHECK(d);
    struct blocker b = {0};
    CHECK_EQ(desync_desync(d, blocker_job, &b), 0);
    CHECK(test_wait_flag(&b.started, LONG_MS)); /* named before its first job */
    int named = thread_named("desync-1");
    atomic_store(&b.go, 1);
    desync_release(d);
    desync_scheduler_free(s);
    CHECK_EQ(named, 1);
    return 0;
#endif
}
