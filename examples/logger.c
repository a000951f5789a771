/*
 * logger: a log file owned by a Desync object, fed by several threads, and
 * flushed every 20 ms by a timer, with no mutex and no thread of its own.
 *
 *   logger [FILE]      (no FILE: a temporary file; a summary is printed)
 *
 * Each writer thread formats a line on its stack and hands a copy to the
 * logger with desync_desync_copy, which returns at once: the line is written
 * by a job of the logger object, in the order the calls returned. The FILE
 * is fully buffered, so lines reach the file in large writes; a periodic
 * timer (desync_timer_start) queues a flush job on the same object, so the
 * flush runs between two lines, never in the middle of one, and a reader of
 * the file sees at most 20 ms of delay. At the end, cancel stops the timer;
 * releasing the object runs the lines still queued, then the destroy
 * function, which flushes and closes the file.
 */
#include "desync.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#define WRITERS 3
#define LINES_PER_WRITER 100
#define FLUSH_EVERY_NS 20000000ull /* 20 ms */

typedef struct {
    FILE *f;
    unsigned long lines, flushes;
} logger;

typedef struct {
    char text[96]; /* copied into the job: fits a pooled node */
} line;

/* Jobs of the logger object: `data` is the logger, only ever touched here. */
static void write_line(void *data, void *arg) {
    logger *lg = data;
    fputs(((line *)arg)->text, lg->f);
    lg->lines++;
}

static void flush_log(void *data, void *arg) {
    (void)arg;
    logger *lg = data;
    fflush(lg->f);
    lg->flushes++;
}

static void close_log(void *data) {
    logger *lg = data;
    fclose(lg->f);
}

static void *writer(void *arg) {
    desync_t *log = arg;
    static _Atomic unsigned next_id;
    unsigned id = ++next_id;
    for (int i = 0; i < LINES_PER_WRITER; i++) {
        line l;
        snprintf(l.text, sizeof l.text, "writer %u: event %d\n", id, i);
        desync_desync_copy(log, write_line, &l, sizeof l);
        nanosleep(&(struct timespec){0, 1000000}, NULL); /* 1 ms of "work" */
    }
    return NULL;
}

static void read_counts(void *data, void *arg) {
    logger *lg = data, *out = arg;
    *out = *lg;
}

int main(int argc, char **argv) {
    atexit(desync_shutdown); /* at exit: finish background work, stop threads */
    static char buf[1 << 16];
    logger lg = {argc > 1 ? fopen(argv[1], "w") : tmpfile(), 0, 0};
    if (!lg.f) {
        perror("logger: cannot open the log");
        return 1;
    }
    setvbuf(lg.f, buf, _IOFBF, sizeof buf);
    desync_t *log = desync_new(&lg, close_log);
    desync_timer_t *flusher =
        log ? desync_timer_start(log, FLUSH_EVERY_NS, FLUSH_EVERY_NS, flush_log, NULL) : NULL;
    if (!flusher) {
        fprintf(stderr, "logger: out of memory\n");
        return 1;
    }

    pthread_t th[WRITERS];
    for (int i = 0; i < WRITERS; i++)
        pthread_create(&th[i], NULL, writer, log);
    for (int i = 0; i < WRITERS; i++)
        pthread_join(th[i], NULL);

    desync_timer_cancel(flusher); /* no flush job starts after this */
    logger seen;
    desync_sync(log, read_counts, &seen); /* after every line queued so far */
    printf("logger: %lu lines from %d threads, %lu periodic flushes\n", seen.lines, WRITERS,
           seen.flushes);
    desync_release(log); /* the last reference: runs close_log (flush + close) */
    return seen.lines == WRITERS * LINES_PER_WRITER ? 0 : 1;
}
