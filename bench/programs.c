/*
 * R1 and R2 of bench/README.md: small programs written as a new user would
 * write them with libdesync, each beside the plain program it replaces.
 *
 *   R1 logger: 8 threads queue formatted lines (desync_desync_copy) on one
 *      logger object that owns a FILE *; baseline: fwrite under one mutex.
 *   R2 word count: lines -> channel -> desync_pipe through a tokenizer
 *      object -> desync_pipe_in into a counter object; baseline: one loop.
 *
 * Both check their output (the log file read back; the top 10 words against
 * every other run) and stop the program if it is wrong.
 */
#include "bench.h"

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <unistd.h>

/* ------------------------------------------------------------ R1 logger */

#define R1_THREADS 8
#define R1_TEXT "the quick brown fox jumps\n"
#define R1_LINE_MAX 96

typedef struct {
    desync_t *log; /* libdesync: the logger object, data = the FILE * */
    FILE *f;       /* baseline */
    pthread_mutex_t m;
    uint64_t n; /* lines per thread */
    pthread_barrier_t bar;
} r1_t;

typedef struct {
    r1_t *w;
    int t;
} r1_arg_t;

static atomic_int g_r1_close_err;

static int r1_format(char *buf, int t, uint64_t i) {
    int len = snprintf(buf, R1_LINE_MAX, "thread %d line %" PRIu64 ": " R1_TEXT, t, i);
    if (len < 0 || len >= R1_LINE_MAX)
        die("snprintf of a log line failed");
    return len;
}

static void r1_write_job(void *data, void *arg) {
    fputs(arg, data); /* errors show in ferror() at the close */
}

/* The logger object's destroy: flushes and closes its file. */
static void r1_close(void *data) {
    FILE *f = data;
    int bad = ferror(f);
    if (fclose(f) != 0 || bad)
        atomic_store(&g_r1_close_err, 1);
}

static void *r1_desync_thread(void *p) {
    r1_arg_t *a = p;
    char buf[R1_LINE_MAX];
    pthread_barrier_wait(&a->w->bar);
    for (uint64_t i = 0; i < a->w->n; i++) {
        int len = r1_format(buf, a->t, i);
        int rc = desync_desync_copy(a->w->log, r1_write_job, buf, (size_t)len + 1);
        if (rc != 0)
            die("desync_desync_copy returned %d (%s) at line %" PRIu64, rc, desync_strerror(rc),
                i);
        if (a->t == 0 && (i & 0xfff) == 0)
            PROGRESS(i);
    }
    return NULL;
}

static void *r1_mutex_thread(void *p) {
    r1_arg_t *a = p;
    char buf[R1_LINE_MAX];
    pthread_barrier_wait(&a->w->bar);
    for (uint64_t i = 0; i < a->w->n; i++) {
        int len = r1_format(buf, a->t, i);
        pthread_mutex_lock(&a->w->m);
        size_t put = fwrite(buf, 1, (size_t)len, a->w->f);
        pthread_mutex_unlock(&a->w->m);
        if (put != (size_t)len)
            die("fwrite to the log failed at line %" PRIu64, i);
        if (a->t == 0 && (i & 0xfff) == 0)
            PROGRESS(i);
    }
    return NULL;
}

static void r1_path(char *path, size_t len) {
    snprintf(path, len, "%s/r1.log", bench_tmpdir());
}

/* Reads the log back: every thread's n lines, each thread's in order. */
static void r1_check(const char *path, uint64_t n) {
    phase_step("reading the log back");
    FILE *f = fopen(path, "r");
    if (!f)
        die("cannot reopen %s: %s", path, strerror(errno));
    uint64_t next[R1_THREADS] = {0}, lines = 0;
    char *line = NULL, want[R1_LINE_MAX];
    size_t cap = 0;
    ssize_t len;
    while ((len = getline(&line, &cap, f)) > 0) {
        lines++;
        int t = -1;
        if (sscanf(line, "thread %d ", &t) != 1 || t < 0 || t >= R1_THREADS)
            die("log line %" PRIu64 " is not from a writer thread: '%.60s'", lines, line);
        if (next[t] >= n || r1_format(want, t, next[t]) != len || memcmp(want, line, (size_t)len))
            die("log line %" PRIu64 " is '%.60s', thread %d's next line should be line %" PRIu64
                " (a line was lost, reordered or damaged)",
                lines, line, t, next[t]);
        next[t]++;
    }
    free(line);
    fclose(f);
    for (int t = 0; t < R1_THREADS; t++)
        if (next[t] != n)
            die("the log holds %" PRIu64 " lines of thread %d, expected %" PRIu64, next[t], t, n);
    if (unlink(path) != 0)
        die("unlink %s: %s", path, strerror(errno));
}

static sample_t r1_run(uint64_t n, int use_lib) {
    char path[256];
    r1_path(path, sizeof path);
    r1_t w = {.n = n};
    CHECK_PT(pthread_mutex_init(&w.m, NULL));
    CHECK_PT(pthread_barrier_init(&w.bar, NULL, R1_THREADS + 1));
    FILE *f = fopen(path, "w");
    if (!f)
        die("cannot create %s: %s", path, strerror(errno));
    if (use_lib) {
        atomic_store(&g_r1_close_err, 0);
        w.log = desync_new(f, r1_close);
        if (!w.log)
            die("desync_new returned NULL");
    } else {
        w.f = f;
    }
    pthread_t th[R1_THREADS];
    r1_arg_t args[R1_THREADS];
    for (int t = 0; t < R1_THREADS; t++) {
        args[t] = (r1_arg_t){&w, t};
        CHECK_PT(pthread_create(&th[t], NULL, use_lib ? r1_desync_thread : r1_mutex_thread,
                                &args[t]));
    }
    pthread_barrier_wait(&w.bar);
    uint64_t t0 = now_ns();
    for (int t = 0; t < R1_THREADS; t++)
        CHECK_PT(pthread_join(th[t], NULL));
    if (use_lib) {
        desync_release(w.log); /* the last reference: runs every line, then r1_close */
        if (atomic_load(&g_r1_close_err))
            die("writing or closing the log failed");
    } else {
        int bad = ferror(f);
        if (fclose(f) != 0 || bad)
            die("writing or closing the log failed");
    }
    uint64_t t1 = now_ns();
    pthread_barrier_destroy(&w.bar);
    pthread_mutex_destroy(&w.m);
    r1_check(path, n);
    return per_op(t1 - t0, (uint64_t)R1_THREADS * n);
}

static sample_t r1_desync(uint64_t n) { return r1_run(n, 1); }
static sample_t r1_mutex(uint64_t n) { return r1_run(n, 0); }

/* The floor of R1 on this machine: the same formatting and writing, the
 * writing taken off the callers' threads by hand with no library and no
 * contention between callers. Each caller has its own single-producer
 * single-consumer ring of line slots (the P2 probe's scheme: indices
 * published every R1F_BATCH slots, and at the end); one writer thread polls
 * the rings in turn and fputs each line. Waits spin briefly, then yield. */
#define R1F_SLOTS 1024u
#define R1F_BATCH 16u

typedef struct {
    uint64_t ticket; /* the ordered floor: the line's place in the global order */
    char line[120];
} r1f_slot_t;

typedef struct {
    _Alignas(64) _Atomic uint64_t head; /* slots written, published by the caller */
    _Alignas(64) _Atomic uint64_t tail; /* slots written out, published by the writer */
    _Alignas(64) r1f_slot_t slot[R1F_SLOTS];
} r1f_ring_t;

typedef struct {
    r1f_ring_t ring[R1_THREADS];
    _Alignas(64) _Atomic uint64_t ticket; /* the ordered floor's one shared counter */
    _Alignas(64) _Atomic int callers_done;
    int ordered;
    uint64_t n;
    FILE *f;
    pthread_barrier_t bar;
} r1f_t;

typedef struct {
    r1f_t *w;
    int t;
} r1f_arg_t;

/* The hand-written floors' wait step (R1, R2): spin briefly, then yield (9
 * threads share 2 cores in R1). */
static void floor_wait(unsigned *spins) {
    if (++*spins < 256)
        return;
    *spins = 0;
    sched_yield();
}

static void *r1f_caller(void *p) {
    r1f_arg_t *a = p;
    r1f_ring_t *r = &a->w->ring[a->t];
    uint64_t tail = 0, n = a->w->n;
    pthread_barrier_wait(&a->w->bar);
    for (uint64_t i = 0; i < n; i++) {
        unsigned spins = 0;
        while (i - tail >= R1F_SLOTS)
            if (i - (tail = atomic_load_explicit(&r->tail, memory_order_acquire)) >= R1F_SLOTS)
                floor_wait(&spins);
        r1f_slot_t *sl = &r->slot[i & (R1F_SLOTS - 1)];
        r1_format(sl->line, a->t, i);
        if (a->w->ordered)
            sl->ticket = atomic_fetch_add_explicit(&a->w->ticket, 1, memory_order_relaxed);
        if ((i + 1) % R1F_BATCH == 0 || i + 1 == n)
            atomic_store_explicit(&r->head, i + 1, memory_order_release);
    }
    atomic_fetch_add_explicit(&a->w->callers_done, 1, memory_order_release);
    return NULL;
}

/* The ordered floor's writer: writes the lines in ticket order, staying on
 * the ring that had the last ticket and looking at the others on a miss. A
 * ring's written slots are given back when the writer leaves it. */
static void *r1f_writer_ordered(r1f_t *w) {
    uint64_t tail[R1_THREADS] = {0}, head[R1_THREADS] = {0}, given[R1_THREADS] = {0};
    uint64_t next = 0, total = (uint64_t)R1_THREADS * w->n;
    unsigned spins = 0;
    int t = 0;
    while (next < total) {
        int wrote = 0;
        for (int miss = 0; miss < R1_THREADS;) {
            r1f_ring_t *r = &w->ring[t];
            if (tail[t] == head[t])
                head[t] = atomic_load_explicit(&r->head, memory_order_acquire);
            r1f_slot_t *sl = &r->slot[tail[t] & (R1F_SLOTS - 1)];
            if (tail[t] != head[t] && sl->ticket == next) {
                fputs(sl->line, w->f);
                next++;
                tail[t]++;
                wrote = 1;
                miss = 0;
                continue;
            }
            if (given[t] != tail[t])
                atomic_store_explicit(&r->tail, given[t] = tail[t], memory_order_release);
            t = (t + 1) % R1_THREADS;
            miss++;
        }
        if (wrote)
            spins = 0;
        else
            floor_wait(&spins);
    }
    return NULL;
}

static void *r1f_writer(void *p) {
    r1f_t *w = p;
    if (w->ordered)
        return r1f_writer_ordered(w);
    uint64_t tail[R1_THREADS] = {0};
    unsigned spins = 0;
    for (;;) {
        /* Read before the rings: once all callers are done, an empty pass ends it. */
        int done = atomic_load_explicit(&w->callers_done, memory_order_acquire) == R1_THREADS;
        int wrote = 0;
        for (int t = 0; t < R1_THREADS; t++) {
            r1f_ring_t *r = &w->ring[t];
            uint64_t head = atomic_load_explicit(&r->head, memory_order_acquire);
            for (uint64_t i = tail[t]; i < head; i++) {
                fputs(r->slot[i & (R1F_SLOTS - 1)].line, w->f);
                if ((i + 1) % R1F_BATCH == 0)
                    atomic_store_explicit(&r->tail, i + 1, memory_order_release);
            }
            wrote |= head != tail[t];
            tail[t] = head;
        }
        if (wrote)
            spins = 0;
        else if (done)
            return NULL;
        else
            floor_wait(&spins);
    }
}

static sample_t r1_floor_run(uint64_t n, int ordered) {
    char path[256];
    r1_path(path, sizeof path);
    r1f_t *w = aligned_alloc(64, sizeof *w);
    if (!w)
        die("out of memory");
    for (int t = 0; t < R1_THREADS; t++) {
        atomic_init(&w->ring[t].head, 0);
        atomic_init(&w->ring[t].tail, 0);
    }
    atomic_init(&w->callers_done, 0);
    atomic_init(&w->ticket, 0);
    w->ordered = ordered;
    w->n = n;
    w->f = fopen(path, "w");
    if (!w->f)
        die("cannot create %s: %s", path, strerror(errno));
    CHECK_PT(pthread_barrier_init(&w->bar, NULL, R1_THREADS + 1));
    pthread_t th[R1_THREADS], wr;
    r1f_arg_t args[R1_THREADS];
    for (int t = 0; t < R1_THREADS; t++) {
        args[t] = (r1f_arg_t){w, t};
        CHECK_PT(pthread_create(&th[t], NULL, r1f_caller, &args[t]));
    }
    CHECK_PT(pthread_create(&wr, NULL, r1f_writer, w));
    pthread_barrier_wait(&w->bar);
    uint64_t t0 = now_ns();
    for (int t = 0; t < R1_THREADS; t++)
        CHECK_PT(pthread_join(th[t], NULL));
    CHECK_PT(pthread_join(wr, NULL));
    int bad = ferror(w->f);
    if (fclose(w->f) != 0 || bad)
        die("writing or closing the log failed");
    uint64_t t1 = now_ns();
    pthread_barrier_destroy(&w->bar);
    free(w);
    r1_check(path, n);
    return per_op(t1 - t0, (uint64_t)R1_THREADS * n);
}

static sample_t r1_floor(uint64_t n) { return r1_floor_run(n, 0); }
static sample_t r1_floor_ordered(uint64_t n) { return r1_floor_run(n, 1); }

void r1_logger(row_t *row) {
    uint64_t n = scaled(250000);
    variant_t v[] = {{"libdesync logger object", r1_desync, n, 0, 0},
                     {"fwrite under a mutex", r1_mutex, n, 0, 0},
                     {"floor: a ring per thread", r1_floor, n, 0, 0},
                     {"floor in order: + a ticket per line", r1_floor_ordered, n, 0, 0}};
    printf("  %d threads x %" PRIu64 " lines (n below is per thread), snprintf'd as \"thread T "
           "line N: %.*s\\n\" (about 48 bytes),\n"
           "  into a buffered FILE * in %s. libdesync: desync_desync_copy onto one logger "
           "object\n"
           "  whose job fputs the line; the run ends when the object is released (file "
           "closed).\n"
           "  Baseline: each thread fwrites under one pthread mutex, then fclose. The log is "
           "read back after each run.\n"
           "  Floor: the writing taken off the threads by hand, no library: an SPSC ring of line\n"
           "  slots per thread (P2's scheme), one writer thread polls them and fputs each line.\n"
           "  Floor in order: the same, keeping libdesync's contract that jobs run in the order\n"
           "  they were queued, across threads: each line takes a ticket from one shared counter\n"
           "  (one atomic read-modify-write on a shared line, as any such order needs), and the\n"
           "  writer writes the lines in ticket order.\n"
           "  ns per line (lower is better)\n",
           R1_THREADS, n, (int)strlen(R1_TEXT) - 1, R1_TEXT, bench_tmpdir());
    measure("R1", v, 4);
    row->floor_ns = v[2].med_ns;
    row->floor2_ns = v[3].med_ns;
    set_row(row, &v[0], &v[1]);
    printf("    lines/s: libdesync %.2f M, mutex %.2f M\n", 1e3 / v[0].med_ns,
           1e3 / v[1].med_ns);
    snprintf(row->extra, sizeof row->extra,
             "fwrite under one pthread mutex; lines/s: libdesync %.2f M, mutex %.2f M",
             1e3 / v[0].med_ns, 1e3 / v[1].med_ns);
}

/* -------------------------------------------------------- R2 word count */

#define R2_COPIES 1450
#define R2_TOP 10
#define R2_CHANNEL_CAP 1024

typedef struct {
    size_t len;
    char s[];
} r2_line_t;

typedef struct {
    uint32_t off, len;
} r2_span_t;

/* The tokenizer's output: one per line, owning the line. */
typedef struct {
    r2_line_t *line;
    size_t n;
    r2_span_t w[];
} r2_words_t;

/* Sent after the last line; passes through the tokenizer unchanged. */
static char r2_end_marker;

/* A word is a maximal run of ASCII letters and digits (case kept). */
static inline int r2_word_char(unsigned char c) {
    return (unsigned)((c | 32) - 'a') < 26 || (unsigned)(c - '0') < 10;
}

/* The tokenizer both variants use. out has room for len / 2 + 1 spans. */
static size_t r2_tokenize(const char *s, size_t len, r2_span_t *out) {
    size_t n = 0, i = 0;
    while (i < len) {
        while (i < len && !r2_word_char((unsigned char)s[i]))
            i++;
        size_t b = i;
        while (i < len && r2_word_char((unsigned char)s[i]))
            i++;
        if (i > b)
            out[n++] = (r2_span_t){(uint32_t)b, (uint32_t)(i - b)};
    }
    return n;
}

/* Growable scratch array of spans. */
typedef struct {
    r2_span_t *w;
    size_t cap;
} r2_scratch_t;

static r2_span_t *r2_scratch_for(r2_scratch_t *sc, size_t len) {
    if (len / 2 + 1 > sc->cap) {
        sc->cap = len / 2 + 1 > 2 * sc->cap ? len / 2 + 1 : 2 * sc->cap;
        free(sc->w);
        sc->w = malloc(sc->cap * sizeof *sc->w);
        if (!sc->w)
            die("out of memory");
    }
    return sc->w;
}

static void r2_scratch_free(void *p) {
    r2_scratch_t *sc = p;
    free(sc->w);
    free(sc);
}

/* Open-addressing hash table (linear probing), keys copied into an arena. */
typedef struct {
    uint64_t hash, count; /* count 0: empty */
    uint32_t off, len;
} r2_entry_t;

typedef struct {
    r2_entry_t *e;
    size_t cap, used;
    char *keys;
    size_t klen, kcap;
    uint64_t words, lines;
} r2_table_t;

static uint64_t r2_hash(const char *s, uint32_t len) {
    uint64_t h = 1469598103934665603u; /* FNV-1a */
    for (uint32_t i = 0; i < len; i++)
        h = (h ^ (unsigned char)s[i]) * 1099511628211u;
    return h;
}

static r2_table_t *r2_table_new(void) {
    r2_table_t *t = calloc(1, sizeof *t);
    if (!t)
        die("out of memory");
    t->cap = 1024;
    t->e = calloc(t->cap, sizeof *t->e);
    t->kcap = 16384;
    t->keys = malloc(t->kcap);
    if (!t->e || !t->keys)
        die("out of memory");
    return t;
}

static void r2_table_free(void *p) {
    r2_table_t *t = p;
    free(t->e);
    free(t->keys);
    free(t);
}

static void r2_table_grow(r2_table_t *t) {
    size_t cap = t->cap * 2;
    r2_entry_t *e = calloc(cap, sizeof *e);
    if (!e)
        die("out of memory");
    for (size_t i = 0; i < t->cap; i++) {
        if (!t->e[i].count)
            continue;
        size_t j = t->e[i].hash & (cap - 1);
        while (e[j].count)
            j = (j + 1) & (cap - 1);
        e[j] = t->e[i];
    }
    free(t->e);
    t->e = e;
    t->cap = cap;
}

static void r2_table_add(r2_table_t *t, const char *w, uint32_t len) {
    uint64_t h = r2_hash(w, len);
    size_t j = h & (t->cap - 1);
    t->words++;
    for (;; j = (j + 1) & (t->cap - 1)) {
        r2_entry_t *e = &t->e[j];
        if (!e->count)
            break;
        if (e->hash == h && e->len == len && memcmp(t->keys + e->off, w, len) == 0) {
            e->count++;
            return;
        }
    }
    if (t->klen + len > t->kcap) {
        while (t->klen + len > t->kcap)
            t->kcap *= 2;
        t->keys = realloc(t->keys, t->kcap);
        if (!t->keys)
            die("out of memory");
    }
    memcpy(t->keys + t->klen, w, len);
    t->e[j] = (r2_entry_t){h, 1, (uint32_t)t->klen, len};
    t->klen += len;
    if (++t->used * 2 > t->cap)
        r2_table_grow(t);
}

typedef struct {
    char word[48]; /* truncated for display; counts and lengths compare in full */
    uint32_t len;
    uint64_t count;
} r2_top_t;

typedef struct {
    r2_top_t top[R2_TOP];
    int ntop;
    uint64_t words, distinct, lines;
} r2_result_t;

/* a ranks before b: higher count, then the smaller word. */
static int r2_before(const r2_table_t *t, const r2_entry_t *a, const r2_entry_t *b) {
    if (a->count != b->count)
        return a->count > b->count;
    uint32_t m = a->len < b->len ? a->len : b->len;
    int c = memcmp(t->keys + a->off, t->keys + b->off, m);
    return c ? c < 0 : a->len < b->len;
}

static void r2_top(const r2_table_t *t, r2_result_t *r) {
    const r2_entry_t *best[R2_TOP];
    int nb = 0;
    for (size_t i = 0; i < t->cap; i++) {
        const r2_entry_t *e = &t->e[i];
        if (!e->count || (nb == R2_TOP && !r2_before(t, e, best[nb - 1])))
            continue;
        int k = nb < R2_TOP ? nb++ : nb - 1;
        while (k > 0 && r2_before(t, e, best[k - 1])) {
            best[k] = best[k - 1];
            k--;
        }
        best[k] = e;
    }
    memset(r, 0, sizeof *r);
    r->ntop = nb;
    for (int k = 0; k < nb; k++) {
        uint32_t len = best[k]->len < sizeof r->top[k].word ? best[k]->len
                                                            : (uint32_t)sizeof r->top[k].word - 1;
        memcpy(r->top[k].word, t->keys + best[k]->off, len);
        r->top[k].len = best[k]->len;
        r->top[k].count = best[k]->count;
    }
    r->words = t->words;
    r->distinct = t->used;
    r->lines = t->lines;
}

/* The first run's result; every later run (of either variant) must match. */
static r2_result_t g_r2_ref;
static int g_r2_have_ref;
static char g_r2_path[256];
static uint64_t g_r2_lines; /* lines in the input */

static void r2_compare(const r2_result_t *r, const char *who) {
    if (!g_r2_have_ref) {
        g_r2_ref = *r;
        g_r2_have_ref = 1;
        return;
    }
    const r2_result_t *a = &g_r2_ref;
    int same = a->ntop == r->ntop && a->words == r->words && a->distinct == r->distinct &&
               a->lines == r->lines;
    for (int k = 0; same && k < a->ntop; k++)
        same = a->top[k].count == r->top[k].count && a->top[k].len == r->top[k].len &&
               strcmp(a->top[k].word, r->top[k].word) == 0;
    if (!same)
        die("%s counted %" PRIu64 " words (%" PRIu64 " distinct) in %" PRIu64
            " lines, top word '%s' x %" PRIu64 "; the first run counted %" PRIu64 " (%" PRIu64
            " distinct) in %" PRIu64 " lines, top word '%s' x %" PRIu64
            " (the top 10 lists differ)",
            who, r->words, r->distinct, r->lines, r->top[0].word, r->top[0].count, a->words,
            a->distinct, a->lines, a->top[0].word, a->top[0].count);
}

static FILE *r2_open_input(void) {
    FILE *in = fopen(g_r2_path, "r");
    if (!in)
        die("cannot open %s: %s", g_r2_path, strerror(errno));
    return in;
}

/* libdesync: the tokenizer object's pipe function (data: its scratch). */
static void *r2_tokenize_job(void *data, void *item, void *arg) {
    (void)arg;
    if (item == &r2_end_marker)
        return item;
    r2_line_t *l = item;
    r2_span_t *w = r2_scratch_for(data, l->len);
    size_t n = r2_tokenize(l->s, l->len, w);
    r2_words_t *ws = malloc(sizeof *ws + n * sizeof *w);
    if (!ws)
        die("out of memory");
    ws->line = l;
    ws->n = n;
    memcpy(ws->w, w, n * sizeof *w);
    return ws;
}

/* libdesync: the counter object's pipe_in function (data: its table). */
static void r2_count_job(void *data, void *item, void *arg) {
    r2_table_t *t = data;
    if (item == &r2_end_marker) {
        int rc = desync_promise_complete(arg, NULL);
        if (rc != 0)
            die("desync_promise_complete returned %d", rc);
        return;
    }
    r2_words_t *ws = item;
    for (size_t i = 0; i < ws->n; i++)
        r2_table_add(t, ws->line->s + ws->w[i].off, ws->w[i].len);
    t->lines++;
    free(ws->line);
    free(ws);
}

static void r2_top_job(void *data, void *arg) {
    r2_top(data, arg);
}

static sample_t r2_desync(uint64_t lines_expected) {
    FILE *in = r2_open_input();
    r2_result_t res;
    uint64_t t0 = now_ns(), lines = 0;
    r2_scratch_t *sc = calloc(1, sizeof *sc);
    if (!sc)
        die("out of memory");
    desync_t *tok = desync_new(sc, r2_scratch_free);
    desync_t *counter = desync_new(r2_table_new(), r2_table_free);
    if (!tok || !counter)
        die("desync_new returned NULL");
    desync_stream_t *rx;
    desync_channel_t *ch = desync_channel_new(R2_CHANNEL_CAP, &rx);
    if (!ch)
        die("desync_channel_new returned NULL");
    desync_stream_t *words = desync_pipe(tok, rx, r2_tokenize_job, NULL);
    if (!words)
        die("desync_pipe returned NULL");
    desync_future_t *done;
    desync_promise_t *p = desync_promise_new(&done);
    if (!p)
        die("desync_promise_new returned NULL");
    CHECK_DS(desync_pipe_in(counter, words, r2_count_job, p));

    char *buf = NULL;
    size_t cap = 0;
    ssize_t len;
    while ((len = getline(&buf, &cap, in)) > 0) {
        r2_line_t *l = malloc(sizeof *l + (size_t)len);
        if (!l)
            die("out of memory");
        l->len = (size_t)len;
        memcpy(l->s, buf, (size_t)len);
        int rc = desync_channel_send(ch, l);
        if (rc != 0)
            die("desync_channel_send returned %d (%s) at line %" PRIu64, rc,
                desync_strerror(rc), lines);
        if ((++lines & 0x3fff) == 0)
            PROGRESS(lines);
    }
    CHECK_DS(desync_channel_send(ch, &r2_end_marker));
    desync_channel_close(ch);
    phase_step("waiting for the counter");
    int rc = desync_future_wait(done, NULL);
    if (rc != 0)
        die("the end marker's future completed with %d (%s)", rc, desync_strerror(rc));
    desync_future_free(done);
    CHECK_DS(desync_sync(counter, r2_top_job, &res));
    desync_release(counter);
    desync_release(tok);
    uint64_t t1 = now_ns();
    free(buf);
    fclose(in);
    expect_eq("lines read", lines, lines_expected);
    expect_eq("lines counted", res.lines, lines_expected);
    r2_compare(&res, "libdesync pipeline");
    return per_op(t1 - t0, lines);
}

static sample_t r2_loop(uint64_t lines_expected) {
    FILE *in = r2_open_input();
    r2_result_t res;
    uint64_t t0 = now_ns(), lines = 0;
    r2_scratch_t sc = {NULL, 0};
    r2_table_t *t = r2_table_new();
    char *buf = NULL;
    size_t cap = 0;
    ssize_t len;
    while ((len = getline(&buf, &cap, in)) > 0) {
        r2_span_t *w = r2_scratch_for(&sc, (size_t)len);
        size_t n = r2_tokenize(buf, (size_t)len, w);
        for (size_t i = 0; i < n; i++)
            r2_table_add(t, buf + w[i].off, w[i].len);
        t->lines++;
        if ((++lines & 0x3fff) == 0)
            PROGRESS(lines);
    }
    r2_top(t, &res);
    r2_table_free(t);
    free(sc.w);
    uint64_t t1 = now_ns();
    free(buf);
    fclose(in);
    expect_eq("lines read", lines, lines_expected);
    r2_compare(&res, "plain loop");
    return per_op(t1 - t0, lines);
}

/* The floor of R2 on this machine: the same work with the same heap copies
 * split over two threads by hand, with no library. The main thread reads
 * and copies lines into a single-producer single-consumer ring (the P2
 * probe's scheme: indices published every R2F_BATCH slots); the other
 * thread tokenizes each into a heap word list and counts, then frees both.
 * (Of the two-core splits this one measured best: reading and tokenizing
 * against counting was slower. Any library adds its own costs to these.)
 * Waits spin briefly, then yield. */
#define R2F_SLOTS 1024u
#define R2F_BATCH 16u

/* The channel floor (r2_floor_rmw): one atomic read-modify-write per line on
 * a word of the reading thread's own, as a channel open to several senders
 * needs to claim a slot. A locked instruction also waits for the stores
 * before it, here the copy into memory that the other thread freed last. */
static _Alignas(64) _Atomic uint64_t g_r2f_claims;

typedef struct {
    _Alignas(64) _Atomic uint64_t head; /* slots written, published by the reader */
    _Alignas(64) _Atomic uint64_t tail; /* slots consumed, published by the counter */
    _Alignas(64) r2_line_t *slot[R2F_SLOTS];
    r2_table_t *t;
} r2f_ring_t;

static void *r2f_consumer(void *p) {
    r2f_ring_t *r = p;
    r2_scratch_t sc = {NULL, 0};
    uint64_t i = 0, head = 0;
    for (;;) {
        unsigned spins = 0;
        while (i == head && (head = atomic_load_explicit(&r->head, memory_order_acquire)) == i)
            floor_wait(&spins);
        r2_line_t *l = r->slot[i & (R2F_SLOTS - 1)];
        if (++i % R2F_BATCH == 0)
            atomic_store_explicit(&r->tail, i, memory_order_release);
        if (!l)
            break;
        r2_span_t *w = r2_scratch_for(&sc, l->len);
        size_t n = r2_tokenize(l->s, l->len, w);
        r2_words_t *ws = malloc(sizeof *ws + n * sizeof *w);
        if (!ws)
            die("out of memory");
        ws->line = l;
        ws->n = n;
        memcpy(ws->w, w, n * sizeof *w);
        for (size_t k = 0; k < ws->n; k++)
            r2_table_add(r->t, l->s + ws->w[k].off, ws->w[k].len);
        r->t->lines++;
        free(ws->line);
        free(ws);
    }
    free(sc.w);
    return NULL;
}

/* Puts l (NULL: the end) in the ring, waiting for room. */
static void r2f_put(r2f_ring_t *r, uint64_t *i, uint64_t *tail, r2_line_t *l, bool rmw) {
    unsigned spins = 0;
    while (*i - *tail >= R2F_SLOTS)
        if (*i - (*tail = atomic_load_explicit(&r->tail, memory_order_acquire)) >= R2F_SLOTS)
            floor_wait(&spins);
    if (rmw)
        atomic_fetch_add_explicit(&g_r2f_claims, 1, memory_order_relaxed);
    r->slot[*i & (R2F_SLOTS - 1)] = l;
    if (++*i % R2F_BATCH == 0 || !l)
        atomic_store_explicit(&r->head, *i, memory_order_release);
}

static sample_t r2_floor_run(uint64_t lines_expected, bool rmw) {
    FILE *in = r2_open_input();
    r2_result_t res;
    uint64_t t0 = now_ns(), lines = 0, i = 0, tail = 0;
    r2f_ring_t *r = aligned_alloc(64, sizeof *r);
    if (!r)
        die("out of memory");
    atomic_init(&r->head, 0);
    atomic_init(&r->tail, 0);
    r->t = r2_table_new();
    pthread_t th;
    if (pthread_create(&th, NULL, r2f_consumer, r) != 0)
        die("pthread_create failed");
    char *buf = NULL;
    size_t cap = 0;
    ssize_t len;
    while ((len = getline(&buf, &cap, in)) > 0) {
        r2_line_t *l = malloc(sizeof *l + (size_t)len);
        if (!l)
            die("out of memory");
        l->len = (size_t)len;
        memcpy(l->s, buf, (size_t)len);
        r2f_put(r, &i, &tail, l, rmw);
        if ((++lines & 0x3fff) == 0)
            PROGRESS(lines);
    }
    r2f_put(r, &i, &tail, NULL, rmw);
    pthread_join(th, NULL);
    r2_top(r->t, &res);
    r2_table_free(r->t);
    free(r);
    uint64_t t1 = now_ns();
    free(buf);
    fclose(in);
    expect_eq("lines read", lines, lines_expected);
    expect_eq("lines counted", res.lines, lines_expected);
    r2_compare(&res, "hand-written 2-thread floor");
    return per_op(t1 - t0, lines);
}

static sample_t r2_floor(uint64_t lines_expected) { return r2_floor_run(lines_expected, false); }

static sample_t r2_floor_rmw(uint64_t lines_expected) {
    return r2_floor_run(lines_expected, true);
}

/* Deterministic stand-in for the GPL-3 text: ~35 KB of lines of 50 to 75
 * characters, words from a 600-word vocabulary with a skewed (Zipf-like)
 * frequency, a blank line after every 12th line. */
static char *r2_pseudo_text(size_t *len) {
    enum { VOCAB = 600, TARGET = 35000 };
    static const char *syl[] = {"li", "cen", "se", "pro", "gram", "the", "of", "to",
                                "work", "soft", "ware", "you", "dis", "tri", "bu", "tion",
                                "a", "or", "any", "co", "py", "right", "free", "dom"};
    static char vocab[VOCAB][16];
    uint64_t x = 88172645463325252u;
#define R2_RAND() (x ^= x << 13, x ^= x >> 7, x ^= x << 17, x)
    for (int i = 0; i < VOCAB; i++) {
        int ns = 1 + (int)(R2_RAND() % 3);
        vocab[i][0] = 0;
        for (int k = 0; k < ns; k++)
            strcat(vocab[i], syl[R2_RAND() % (sizeof syl / sizeof syl[0])]);
    }
    char *text = malloc(TARGET + 256);
    if (!text)
        die("out of memory");
    size_t n = 0, line_len = 0, line_goal = 50, lines = 0;
    while (n < TARGET) {
        double u = (double)(R2_RAND() % 1000000) / 1e6;
        const char *w = vocab[(int)(VOCAB * u * u * u)];
        size_t wl = strlen(w);
        if (line_len)
            text[n++] = ' ';
        memcpy(text + n, w, wl);
        n += wl;
        line_len += wl + 1;
        if (line_len >= line_goal) {
            text[n++] = '\n';
            if (++lines % 12 == 0)
                text[n++] = '\n';
            line_len = 0;
            line_goal = 50 + R2_RAND() % 26;
        }
    }
#undef R2_RAND
    if (line_len)
        text[n++] = '\n';
    *len = n;
    return text;
}

/* Writes the input once: the GPL-3 text (or the stand-in) `copies` times.
 * Returns its line count. */
static uint64_t r2_make_input(uint64_t copies, const char **source) {
    static const char *gpl = "/usr/share/common-licenses/GPL-3";
    char *text = NULL;
    size_t len = 0;
    FILE *g = fopen(gpl, "r");
    if (g) {
        ssize_t r = getdelim(&text, &len, 0, g); /* the whole file */
        fclose(g);
        if (r <= 0)
            die("cannot read %s", gpl);
        len = (size_t)r;
        if (text[len - 1] != '\n')
            die("%s does not end with a newline", gpl);
        *source = gpl;
    } else {
        text = r2_pseudo_text(&len);
        *source = NULL;
    }
    uint64_t per_copy = 0;
    for (size_t i = 0; i < len; i++)
        per_copy += text[i] == '\n';
    snprintf(g_r2_path, sizeof g_r2_path, "%s/r2-input.txt", bench_tmpdir());
    FILE *f = fopen(g_r2_path, "w");
    if (!f)
        die("cannot create %s: %s", g_r2_path, strerror(errno));
    for (uint64_t c = 0; c < copies; c++)
        if (fwrite(text, 1, len, f) != len)
            die("writing %s failed", g_r2_path);
    if (fclose(f) != 0)
        die("writing %s failed", g_r2_path);
    free(text);
    return per_copy * copies;
}

void r2_word_count(row_t *row) {
    uint64_t copies = scaled(R2_COPIES);
    const char *source;
    phase_begin(0, "R2 writing the input");
    g_r2_lines = r2_make_input(copies, &source);
    phase_end();
    long long bytes = 0;
    FILE *f = r2_open_input();
    if (fseek(f, 0, SEEK_END) == 0)
        bytes = ftell(f);
    fclose(f);
    if (source)
        printf("  input: %s x %" PRIu64 " = %.1f MB, %" PRIu64 " lines\n", source, copies,
               (double)bytes / 1e6, g_r2_lines);
    else
        printf("  input: /usr/share/common-licenses/GPL-3 is MISSING; using deterministic "
               "pseudo-text of similar shape\n"
               "  (~35 KB, 600-word skewed vocabulary) x %" PRIu64 " = %.1f MB, %" PRIu64
               " lines\n",
               copies, (double)bytes / 1e6, g_r2_lines);
    printf("  libdesync: main getline()s, sends a heap copy of each line into a channel "
           "(capacity %d);\n"
           "  desync_pipe through a tokenizer object (one heap word list per line); "
           "desync_pipe_in into a counter\n"
           "  object (own open-addressing hash table); an end marker after the last line "
           "completes a promise\n"
           "  from the counter's job; then a sync on the counter takes the top %d. Default "
           "pipe settings.\n"
           "  Baseline: one loop on one thread, same reading, tokenizer and table. ns per "
           "input line (whole wall time / lines)\n",
           R2_CHANNEL_CAP, R2_TOP);
    g_r2_have_ref = 0;
    printf(
        "  Floor: the same work and heap copies split over two threads by hand, no library: the\n"
        "  main thread reads lines into an SPSC ring (P2's scheme), one thread tokenizes and "
        "counts.\n"
        "  Channel floor: the same, plus one atomic read-modify-write per line (a channel open "
        "to several\n"
        "  senders claims each slot with one)\n");
    variant_t v[] = {{"libdesync pipeline", r2_desync, g_r2_lines, 0, 0},
                     {"plain loop", r2_loop, g_r2_lines, 0, 0},
                     {"floor: 2 threads, SPSC ring", r2_floor, g_r2_lines, 0, 0},
                     {"channel floor: + an RMW per line", r2_floor_rmw, g_r2_lines, 0, 0}};
    measure("R2", v, 4);
    row->floor_ns = v[2].med_ns;
    row->floor2_ns = v[3].med_ns;
    unlink(g_r2_path);
    set_row(row, &v[0], &v[1]);
    double lib_s = v[0].med_ns * (double)g_r2_lines / 1e9,
           base_s = v[1].med_ns * (double)g_r2_lines / 1e9;
    printf("    wall time: libdesync %.3f s, plain loop %.3f s; %" PRIu64 " words, %" PRIu64
           " distinct; top %d (same in every run):\n     ",
           lib_s, base_s, g_r2_ref.words, g_r2_ref.distinct, R2_TOP);
    for (int k = 0; k < g_r2_ref.ntop; k++)
        printf(" %s %" PRIu64 "%s", g_r2_ref.top[k].word, g_r2_ref.top[k].count,
               k + 1 < g_r2_ref.ntop ? "," : "\n");
    snprintf(row->extra, sizeof row->extra,
             "one plain loop; wall time: libdesync %.3f s, loop %.3f s; top 10 match", lib_s,
             base_s);
}
