/*
 * libdesync demo: four worker threads feed measurements into one shared
 * statistics object while the main thread peeks at it without blocking.
 * Every printed line goes through a logger object, so lines never interleave
 * and appear in the order they were queued. There is no mutex anywhere: each
 * object's jobs run one at a time, in order.
 */
#include <desync.h>

#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define WORKERS 4
#define SAMPLES 20000

/* ----------------------------------------------------------- the logger */

static desync_t *logger; /* its data is the FILE * it writes to */

static void write_line(void *file, void *line) { fputs(line, file); }

/* Formats on the calling thread, then queues a copy of the text: the call
 * returns at once and the writing happens in the background, in order. */
static void log_line(const char *fmt, ...) {
    char line[160];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    desync_desync_copy(logger, write_line, line, strlen(line) + 1);
}

/* --------------------------------------------------- the shared statistics */

struct stats {
    long count;
    double sum, min, max;
};

static void add_sample(void *data, void *arg) {
    struct stats *s = data;
    double v = *(const double *)arg;
    if (s->count == 0 || v < s->min)
        s->min = v;
    if (s->count == 0 || v > s->max)
        s->max = v;
    s->sum += v;
    s->count++;
}

static void read_stats(void *data, void *out) { *(struct stats *)out = *(struct stats *)data; }

/* ---------------------------------------------------------------- workers */

static desync_t *stats;
static atomic_int workers_done;

static void *worker(void *arg) {
    int id = (int)(long)arg;
    for (int i = 0; i < SAMPLES; i++) {
        /* A made-up "response time" between 10 and 99 ms. */
        double ms = 10 + (i * 7 + id * 13) % 90;
        desync_desync_copy(stats, add_sample, &ms, sizeof ms); /* no waiting */
        if (i % 1000 == 999)
            nanosleep(&(struct timespec){0, 1000000}, NULL); /* measuring takes time */
    }
    log_line("worker %d: queued %d samples\n", id, SAMPLES);
    atomic_fetch_add(&workers_done, 1);
    return NULL;
}

int main(void) {
    /* At exit, wait for background work and stop the library's threads. */
    atexit(desync_shutdown);
    logger = desync_new(stdout, NULL);
    struct stats *s = calloc(1, sizeof *s);
    stats = desync_new(s, free); /* stats owns s: free(s) runs after its last job */
    if (!logger || !s || !stats)
        return 1;

    log_line("demo: %d workers x %d samples into one statistics object\n", WORKERS, SAMPLES);
    pthread_t th[WORKERS];
    for (long i = 0; i < WORKERS; i++)
        pthread_create(&th[i], NULL, worker, (void *)i);

    /* Peek while the workers run. try_sync never waits: it reads the stats
     * right now if nobody else is using them, or reports DESYNC_EBUSY. */
    int peeks = 0, busy = 0;
    while (atomic_load(&workers_done) < WORKERS && peeks < 5) {
        struct stats now;
        if (desync_try_sync(stats, read_stats, &now) == 0) {
            log_line("peek: %ld samples so far, mean %.2f ms\n", now.count,
                     now.count ? now.sum / now.count : 0.0);
            peeks++;
        } else {
            busy++; /* a worker's update is queued or running: look later */
        }
        nanosleep(&(struct timespec){0, 2000000}, NULL);
    }
    for (int i = 0; i < WORKERS; i++)
        pthread_join(th[i], NULL);
    log_line("peeks that found the stats busy and did not wait: %d\n", busy);

    /* sync waits for every update queued before it, then reads. */
    struct stats total;
    desync_sync(stats, read_stats, &total);
    log_line("final: %ld samples, mean %.2f ms, min %.0f ms, max %.0f ms\n", total.count,
             total.sum / total.count, total.min, total.max);

    desync_release(stats);  /* frees s */
    desync_release(logger); /* waits until every line has been written */
    return total.count == (long)WORKERS * SAMPLES ? 0 : 1;
}
