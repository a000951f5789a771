/*
 * wordfreq: counts words with a small stream pipeline, and no mutex or
 * thread of its own.
 *
 *   wordfreq [-n TOP] [FILE...]     (no FILE: a built-in sample text)
 *
 *   lines --channel--> tokenizer 1 --pipe--\
 *         --channel--> tokenizer 2 --pipe---+--pipe_in--> counter
 *         --channel--> tokenizer 3 --pipe--/
 *
 * The main thread reads lines and sends them round-robin into one bounded
 * channel per tokenizer (send blocks while a channel is full: backpressure).
 * Each tokenizer is a Desync object whose pipe turns a line into a list of
 * words (the object keeps per-tokenizer statistics, touched only by its own
 * jobs). The counter object takes every word list through pipe_in and owns
 * the hash table. At the end main closes the channels and waits until all
 * three pipe_in futures are complete (desync_future_all): each completes
 * once its tokenizer's output has ended and its last word list was counted.
 * Then it reads the table with a sync job and prints the top words.
 */
#include "desync.h"

#include <ctype.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define TOKENIZERS 3

static const char *sample_text[] = {
    "It was the best of times, it was the worst of times, it was the age of",
    "wisdom, it was the age of foolishness, it was the epoch of belief, it was",
    "the epoch of incredulity, it was the season of Light, it was the season of",
    "Darkness, it was the spring of hope, it was the winter of despair, we had",
    "everything before us, we had nothing before us, we were all going direct",
    "to Heaven, we were all going direct the other way - in short, the period",
    "was so far like the present period, that some of its noisiest authorities",
    "insisted on its being received, for good or for evil, in the superlative",
    "degree of comparison only.",
};

/* ----------------------------------------------------------- word lists */

typedef struct {
    size_t n;
    char **words;
} wordlist;

static void wordlist_free(void *item) {
    wordlist *w = item;
    for (size_t i = 0; i < w->n; i++)
        free(w->words[i]);
    free(w->words);
    free(w);
}

/* ------------------------------------------------------------ tokenizer */

typedef struct {
    int id;
    unsigned long lines, words;
} tokenizer;

/* Runs on the tokenizer's queue: lowercase words of letters (and inner
 * apostrophes). Takes ownership of the line. */
static void *tokenize(void *data, void *item, void *arg) {
    (void)arg;
    tokenizer *t = data;
    char *line = item;
    wordlist *w = calloc(1, sizeof *w);
    if (!w)
        abort();
    size_t cap = 0;
    for (char *p = line; *p;) {
        while (*p && !isalpha((unsigned char)*p))
            p++;
        char *start = p;
        while (*p && (isalpha((unsigned char)*p) ||
                      (*p == '\'' && isalpha((unsigned char)p[1]) && p > start)))
            p++;
        if (p == start)
            continue;
        size_t len = (size_t)(p - start);
        char *word = malloc(len + 1);
        if (!word)
            abort();
        for (size_t i = 0; i < len; i++)
            word[i] = (char)tolower((unsigned char)start[i]);
        word[len] = '\0';
        if (w->n == cap) {
            cap = cap ? 2 * cap : 8;
            w->words = realloc(w->words, cap * sizeof *w->words);
            if (!w->words)
                abort();
        }
        w->words[w->n++] = word;
    }
    t->lines++;
    t->words += w->n;
    free(line);
    return w;
}

/* -------------------------------------------------------------- counter */

typedef struct {
    char *word;
    unsigned long count;
} entry;

typedef struct {
    entry *slots; /* open addressing, power-of-two size */
    size_t size, used;
    unsigned long total;
} counter;

static uint64_t hash(const char *s) {
    uint64_t h = 1469598103934665603ull; /* FNV-1a */
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 1099511628211ull;
    return h;
}

static void table_put(entry *slots, size_t size, char *word, unsigned long count) {
    size_t i = (size_t)hash(word) & (size - 1);
    while (slots[i].word)
        i = (i + 1) & (size - 1);
    slots[i].word = word;
    slots[i].count = count;
}

static void add_word(counter *c, char *word) {
    if (2 * (c->used + 1) > c->size) {
        size_t size = c->size ? 2 * c->size : 1024;
        entry *slots = calloc(size, sizeof *slots);
        if (!slots)
            abort();
        for (size_t i = 0; i < c->size; i++)
            if (c->slots[i].word)
                table_put(slots, size, c->slots[i].word, c->slots[i].count);
        free(c->slots);
        c->slots = slots;
        c->size = size;
    }
    size_t i = (size_t)hash(word) & (c->size - 1);
    for (; c->slots[i].word; i = (i + 1) & (c->size - 1)) {
        if (strcmp(c->slots[i].word, word) == 0) {
            c->slots[i].count++;
            free(word);
            return;
        }
    }
    c->slots[i].word = word;
    c->slots[i].count = 1;
    c->used++;
}

/* Runs on the counter's queue, for the word lists of every tokenizer. */
static void count_words(void *data, void *item, void *arg) {
    (void)arg;
    counter *c = data;
    wordlist *w = item;
    for (size_t i = 0; i < w->n; i++)
        add_word(c, w->words[i]); /* takes the word */
    c->total += w->n;
    free(w->words);
    free(w);
}

static void counter_destroy(void *data) {
    counter *c = data;
    for (size_t i = 0; i < c->size; i++)
        free(c->slots[i].word);
    free(c->slots);
    free(c);
}

static int by_count(const void *a, const void *b) {
    const entry *x = a, *y = b;
    if (x->count != y->count)
        return x->count < y->count ? 1 : -1;
    return strcmp(x->word, y->word);
}

typedef struct {
    int top;
} report_arg;

/* A sync job on the counter: it owns the table, so it reads it here. */
static void report(void *data, void *arg) {
    counter *c = data;
    int top = ((report_arg *)arg)->top;
    entry *all = malloc((c->used ? c->used : 1) * sizeof *all);
    if (!all)
        abort();
    size_t n = 0;
    for (size_t i = 0; i < c->size; i++)
        if (c->slots[i].word)
            all[n++] = c->slots[i];
    qsort(all, n, sizeof *all, by_count);
    printf("%lu words, %zu distinct; top %d:\n", c->total, n, top);
    for (size_t i = 0; i < n && i < (size_t)top; i++)
        printf("%7lu  %s\n", all[i].count, all[i].word);
    free(all);
}

static void tokenizer_report(void *data, void *arg) {
    (void)arg;
    tokenizer *t = data;
    printf("tokenizer %d: %lu lines, %lu words\n", t->id, t->lines, t->words);
}

/* ---------------------------------------------------------------- main */

static int send_line(desync_channel_t *c, char *line) {
    int r = desync_channel_send(c, line);
    if (r != 0) {
        fprintf(stderr, "wordfreq: send: %s\n", desync_strerror(r));
        free(line);
    }
    return r;
}

int main(int argc, char **argv) {
    atexit(desync_shutdown); /* at exit: finish background work, stop threads */
    int top = 10, first = 1;
    if (argc > 2 && strcmp(argv[1], "-n") == 0) {
        top = atoi(argv[2]);
        first = 3;
    }

    counter *cdata = calloc(1, sizeof *cdata);
    if (!cdata)
        return 1;
    desync_t *count = desync_new(cdata, counter_destroy);
    desync_future_t *counted[TOKENIZERS]; /* complete once a tokenizer's lists are counted */
    desync_t *tok[TOKENIZERS];
    desync_channel_t *lines[TOKENIZERS];
    for (int i = 0; i < TOKENIZERS; i++) {
        tokenizer *t = calloc(1, sizeof *t);
        t->id = i + 1;
        tok[i] = desync_new(t, free);
        desync_stream_t *rx;
        lines[i] = desync_channel_new(16, &rx);
        desync_stream_set_item_free(rx, free);
        desync_stream_t *words = desync_pipe(tok[i], rx, tokenize, NULL);
        desync_stream_set_item_free(words, wordlist_free);
        if (!count || !tok[i] || !lines[i] || !words ||
            !(counted[i] = desync_pipe_in_future(count, words, count_words, NULL))) {
            fprintf(stderr, "wordfreq: out of memory\n");
            return 1;
        }
    }

    unsigned long nlines = 0;
    int status = 0;
    if (first >= argc) {
        for (size_t i = 0; i < sizeof sample_text / sizeof *sample_text; i++, nlines++)
            if (send_line(lines[nlines % TOKENIZERS], strdup(sample_text[i])) != 0)
                status = 1;
    }
    for (int a = first; a < argc; a++) {
        FILE *f = fopen(argv[a], "r");
        if (!f) {
            perror(argv[a]);
            status = 1;
            continue;
        }
        char *buf = NULL;
        size_t cap = 0;
        while (getline(&buf, &cap, f) >= 0) {
            if (send_line(lines[nlines % TOKENIZERS], strdup(buf)) != 0)
                status = 1;
            nlines++;
        }
        free(buf);
        fclose(f);
    }
    for (int i = 0; i < TOKENIZERS; i++)
        desync_channel_close(lines[i]);

    /* Closing a channel ends its tokenizer's output once every line went
     * through, and that ends the pipe_in: wait for all three. */
    desync_future_t *all = desync_future_all(counted, TOKENIZERS);
    if (!all || desync_future_wait(all, NULL) != 0) {
        fprintf(stderr, "wordfreq: words were lost\n");
        status = 1;
    }
    desync_future_free(all);
    for (int i = 0; i < TOKENIZERS; i++)
        desync_future_free(counted[i]);
    printf("%lu lines\n", nlines);
    for (int i = 0; i < TOKENIZERS; i++)
        desync_sync(tok[i], tokenizer_report, NULL);
    report_arg ra = {top};
    desync_sync(count, report, &ra);

    for (int i = 0; i < TOKENIZERS; i++)
        desync_release(tok[i]);
    desync_release(count);
    return status;
}
