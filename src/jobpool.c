/*
 * Block pool for the library's small hot-path allocations (job nodes,
 * future nodes, futures): per-thread caches of fixed-size blocks, exchanged
 * in whole "magazines" through a global depot per size class (Bonwick's
 * magazine allocator, as in Solaris' kmem and Linux' slab caches).
 *
 * A producer thread that queues jobs allocates blocks; a worker thread frees
 * them after running them. With plain per-thread free lists the producer's
 * list would always be empty and the worker's always full, so full lists
 * (MAG blocks) move to the depot and empty caches take one back: one mutex
 * operation per MAG jobs instead of a malloc/free pair per job.
 *
 * Invariants: a thread's cache holds fewer than 2*MAG blocks per class; a
 * depot holds at most DEPOT_MAX magazines (beyond that, blocks go back to
 * malloc, or to the object arena). A thread's caches go to the depots (or
 * malloc, or the arena) when it exits.
 *
 * Objects (desync_t) have a class of their own, whose blocks come from
 * large OS mappings with huge pages instead of malloc (OBJECT ARENA below).
 *
 * NOPOOL builds (DSY_NOPOOL) take every block and job node straight from
 * malloc and poison it on free (dsy_handle_free), so that a freed future or
 * job is freed memory to ASan and valgrind instead of a live pool block.
 * fork: the depot and free-segment mutexes are held around fork (see
 * fork.c). In the child, the caches and segments of the threads that
 * vanished are leaked (their blocks may still be in use by queued jobs).
 */
#include "internal.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#define MAG DSY_POOL_MAG
#define DEPOT_MAX DSY_POOL_DEPOT_MAX
#define NCLASS 4

static const size_t class_size[NCLASS] = {64, 128, 192, DSY_POOL_OBJECT_BYTES};

/* A free block reuses its own memory: `next` chains the blocks of a
 * magazine, `mag_next` (only in a magazine's first block) chains magazines. */
typedef struct free_node {
    struct free_node *next;
    struct free_node *mag_next;
} free_node;

_Static_assert(sizeof(dsy_job) == 64, "job nodes are one cache line");

static struct depot {
    pthread_mutex_t lock;
    free_node *mags; /* full magazines of exactly MAG blocks */
    unsigned count;
} depots[NCLASS] = {{PTHREAD_MUTEX_INITIALIZER, NULL, 0},
                     {PTHREAD_MUTEX_INITIALIZER, NULL, 0},
                     {PTHREAD_MUTEX_INITIALIZER, NULL, 0},
                     {PTHREAD_MUTEX_INITIALIZER, NULL, 0}};

typedef struct {
    free_node *list;
    unsigned n;
} cache_t;

static DSY_TLS cache_t caches[NCLASS];
static DSY_TLS bool registered;
static pthread_key_t cache_key;
static pthread_once_t cache_key_once = PTHREAD_ONCE_INIT;

/* ------------------------------------------------------- object arena */

/*
 * OBJECT ARENA. Objects (class DSY_POOL_OBJECT) come from large mappings,
 * not malloc: a program that makes a million objects first-touched a new
 * 4 KiB page every 42 objects, and a first touch costs a page fault (on a
 * VM, microseconds: most of W6's creation time). Mappings double from
 * ARENA_FIRST; from ARENA_HUGE on they are aligned to it and advised for
 * transparent huge pages (where the system grants them on request), so
 * one fault maps 2 MiB, while a program with a few objects stays on small
 * pages. The arena's blocks never go back to the OS or to malloc: freed
 * objects wait in the pool (caches, depot, then `loose` here) for the next
 * ones, as in a malloc arena that never trims.
 */
#define ARENA_FIRST ((size_t)64 << 10)
#define ARENA_HUGE ((size_t)2 << 20)

static struct {
    pthread_mutex_t lock;
    unsigned char *next, *end; /* the unused rest of the last mapping */
    size_t mapped;             /* the last mapping's size (the next doubles it) */
    free_node *loose;          /* freed blocks that the depot did not take */
} arena = {PTHREAD_MUTEX_INITIALIZER, NULL, NULL, 0, NULL};

/* Up to n blocks, chained (NULL if none: ENOMEM); *got says how many. */
static free_node *arena_take(unsigned n, unsigned *got) {
    const size_t size = DSY_POOL_OBJECT_BYTES;
    free_node *chain = NULL;
    unsigned k = 0;
    pthread_mutex_lock(&arena.lock);
    while (k < n) {
        free_node *f = arena.loose;
        if (f) {
            arena.loose = f->next;
        } else {
            if ((size_t)(arena.end - arena.next) < size) {
                size_t len = arena.mapped ? arena.mapped * 2 : ARENA_FIRST;
                if (len > ARENA_HUGE)
                    len = ARENA_HUGE;
                unsigned char *m = dsy_os_map(len, len < ARENA_HUGE ? ARENA_FIRST : ARENA_HUGE);
                if (!m)
                    break;
                if (len == ARENA_HUGE)
                    dsy_os_advise_huge(m, len);
                arena.next = m;
                arena.end = m + len;
                arena.mapped = len;
            }
            f = (free_node *)(void *)arena.next;
            arena.next += size;
        }
        f->next = chain;
        chain = f;
        k++;
    }
    pthread_mutex_unlock(&arena.lock);
    *got = k;
    return chain;
}

static void arena_put(free_node *f) {
    if (!f)
        return;
    free_node *last = f;
    while (last->next)
        last = last->next;
    pthread_mutex_lock(&arena.lock);
    last->next = arena.loose;
    arena.loose = f;
    pthread_mutex_unlock(&arena.lock);
}

/* Gives back a chain of blocks of class cls that the pool does not keep. */
static void free_chain(unsigned cls, free_node *f) {
    if (cls == DSY_POOL_OBJECT) {
        arena_put(f);
        return;
    }
    while (f) {
        free_node *next = f->next;
        free(f);
        f = next;
    }
}

/* Moves the MAG most recently freed blocks of a cache out as one magazine:
 * into the depot, or back to malloc when the depot is full. */
DSY_NOINLINE static void cache_spill(unsigned cls) {
    cache_t *c = &caches[cls];
    DSY_ASSERT(c->n >= MAG);
    struct depot *d = &depots[cls];
    free_node *mag = c->list, *last = mag;
    for (unsigned i = 1; i < MAG; i++)
        last = last->next;
    c->list = last->next;
    c->n -= MAG;
    last->next = NULL;
    pthread_mutex_lock(&d->lock);
    if (d->count < DEPOT_MAX) {
        mag->mag_next = d->mags;
        d->mags = mag;
        d->count++;
        mag = NULL;
    }
    pthread_mutex_unlock(&d->lock);
    free_chain(cls, mag);
}

static void seg_retire(void);

/* Thread exit: whole magazines go to the depot, the rest back to malloc;
 * the job segment is retired. */
/* Frees every block of the calling thread's caches. */
static void cache_clear(void) {
    for (unsigned cls = 0; cls < NCLASS; cls++) {
        free_chain(cls, caches[cls].list);
        caches[cls].list = NULL;
        caches[cls].n = 0;
    }
}

static void cache_destroy(void *unused) {
    (void)unused;
    seg_retire();
    for (unsigned cls = 0; cls < NCLASS; cls++)
        while (caches[cls].n >= MAG)
            cache_spill(cls);
    cache_clear();
}

static void cache_key_init(void) { pthread_key_create(&cache_key, cache_destroy); }

DSY_NOINLINE static void cache_register(void) {
    dsy_fork_init(); /* before this thread first takes a depot lock */
    pthread_once(&cache_key_once, cache_key_init);
    pthread_setspecific(cache_key, caches);
    registered = true;
}

void dsy_handle_free(void *p, size_t size) {
    if (DSY_NOPOOL && p)
        memset(p, DSY_POISON_BYTE, size);
    free(p);
}

/* AddressSanitizer's runtime defines this; the weak reference is NULL in
 * a process without it. A process under ASan (the library's own sanitizer
 * builds, or a program built with -fsanitize=address linking a plain
 * libdesync) takes its objects from malloc, as before the arena: a desync_t
 * used after its last release is then reported as a heap use after free,
 * where an arena slot would be live memory to ASan. */
extern void __asan_poison_memory_region(void const volatile *addr, size_t size)
    __attribute__((weak));

static inline bool block_from_malloc(unsigned cls) {
    return DSY_NOPOOL || (cls == DSY_POOL_OBJECT && &__asan_poison_memory_region != NULL);
}

/* dsy_pool_alloc once this thread's cache of the class is empty (or the
 * class is served by malloc): a magazine from the depot, the object arena,
 * or malloc. */
static DSY_NOINLINE void *pool_alloc_general(unsigned cls) {
    if (block_from_malloc(cls))
        return malloc(class_size[cls]);
    cache_t *c = &caches[cls];
    free_node *f;
    if (!registered)
        cache_register();
    struct depot *d = &depots[cls];
    pthread_mutex_lock(&d->lock);
    f = d->mags;
    if (f) {
        DSY_ASSERT(d->count > 0);
        d->mags = f->mag_next;
        d->count--;
    }
    pthread_mutex_unlock(&d->lock);
    if (f) {
        c->list = f->next;
        c->n = MAG - 1;
        return f;
    }
    if (cls == DSY_POOL_OBJECT) {
        unsigned got;
        f = arena_take(MAG, &got);
        if (f) {
            c->list = f->next;
            c->n = got - 1;
        }
        return f;
    }
    return malloc(class_size[cls]);
}

/* The common case inline, with nothing to save for calls: a block from
 * this thread's cache. (A class served by malloc keeps its cache empty.) */
void *dsy_pool_alloc(unsigned cls) {
    cache_t *c = &caches[cls];
    free_node *f = c->list;
    if (DSY_UNLIKELY(f == NULL))
        return pool_alloc_general(cls);
    c->list = f->next;
    c->n--;
    return f;
}

void dsy_pool_free(void *p, unsigned cls) {
    if (block_from_malloc(cls)) {
        dsy_handle_free(p, class_size[cls]);
        return;
    }
    if (DSY_UNLIKELY(!registered))
        cache_register(); /* so the cache is handed back when the thread exits */
    cache_t *c = &caches[cls];
    free_node *f = p;
    f->next = c->list;
    c->list = f;
    DSY_ASSERT(c->n < 2 * MAG); /* the bound: a cache holds fewer than 2*MAG */
    if (DSY_LIKELY(++c->n < 2 * MAG))
        return;
    cache_spill(cls);
}

/* Frees the magazines of every depot (but the object arena's: its blocks
 * only ever go back to the arena, where they would wait just the same). */
static void depots_clear(void) {
    for (unsigned cls = 0; cls < NCLASS; cls++) {
        if (cls == DSY_POOL_OBJECT)
            continue;
        struct depot *d = &depots[cls];
        pthread_mutex_lock(&d->lock);
        free_node *mags = d->mags;
        d->mags = NULL;
        d->count = 0;
        pthread_mutex_unlock(&d->lock);
        while (mags) {
            free_node *next = mags->mag_next;
            free_chain(cls, mags);
            mags = next;
        }
    }
}

/* ---------------------------------------------------------- job segments
 *
 * A thread that queues many jobs allocates their nodes from segments: 64 KiB
 * blocks (aligned to their size) that it fills in address order, like a bump
 * allocator. The thread running the queue then walks memory in address
 * order, which the hardware prefetcher follows, instead of chasing pointers
 * to scattered nodes (each a cache miss that crosses cores), and nodes cost
 * no free-list traffic. A segment counts its unfinished jobs, plus one for
 * its owner while the owner still allocates from it (a wide node takes two
 * consecutive slots and counts two); whoever drops the count to zero
 * recycles the segment. A queue's runner drops the counts of the jobs it ran
 * in batches, one RMW per run of jobs from one segment rather than one per
 * job (dsy_job_release_batch_begin, around queue.c's runs). Slots are never
 * reused within a segment's life, so there is no ABA. Threads start with the
 * block pool and switch to segments after SEG_AFTER jobs, so light users do
 * not hold 64 KiB each.
 */
#define SEG_BYTES DSY_SEG_BYTES
#define SEG_SLOTS (SEG_BYTES / sizeof(dsy_job) - 1)
#define SEG_AFTER DSY_SEG_AFTER

typedef struct segment {
    dsy_refcount live;          /* unfinished jobs + 1 while the owner allocates */
    struct segment *next_free;  /* on the free list (seg_free.lock) */
    _Alignas(64) dsy_job slots[SEG_SLOTS];
} segment;

_Static_assert(sizeof(segment) <= SEG_BYTES, "a segment fits its alignment");

/* A recycled segment's lines were last read by the threads that ran its
 * jobs, often on another core. Writing a node there waits for its lines to
 * come over, and the exchange that links the node (a locked instruction)
 * waits for those writes: the transfer's latency landed in every push (R1:
 * half of the producers' time). So the allocator asks for the lines a few
 * nodes ahead with a write prefetch, overlapping their transfer with the
 * caller's own work. seg_prefetchw: whether the CPU has the instruction,
 * set once (seg_probe_once) before any thread allocates from a segment. */
static bool seg_prefetchw;
static pthread_once_t seg_probe_once = PTHREAD_ONCE_INIT;
static void seg_probe(void) { seg_prefetchw = dsy_cpu_has_prefetchw(); }

static DSY_TLS segment *tls_seg;
static DSY_TLS unsigned tls_seg_next, tls_jobs;

/* Free segments, for reuse. Their memory comes from the OS in batches of
 * DSY_SEG_MAP_BATCH (dsy_os_map), not from malloc: glibc serves 64 KiB
 * aligned blocks from mmap or from heaps it trims, and a queue whose
 * backlog grew and drained paid a munmap, with a TLB flush on every core,
 * for most segments (R1: ten times slower drains). At most DSY_SEG_KEEP
 * stay here; beyond that an emptied segment goes back to the OS. */
static struct {
    pthread_mutex_t lock;
    segment *list;
    unsigned n;
} seg_free = {PTHREAD_MUTEX_INITIALIZER, NULL, 0};

static segment *seg_new(void) {
    pthread_once(&seg_probe_once, seg_probe);
    pthread_mutex_lock(&seg_free.lock);
    segment *g = seg_free.list;
    if (g) {
        seg_free.list = g->next_free;
        seg_free.n--;
    }
    pthread_mutex_unlock(&seg_free.lock);
    if (!g) {
        unsigned char *run = dsy_os_map((size_t)DSY_SEG_MAP_BATCH * SEG_BYTES, SEG_BYTES);
        if (!run)
            return NULL;
        g = (segment *)(void *)run;
        /* The rest of the batch joins the free list, chained first. */
        segment *first = NULL, *last = NULL;
        for (unsigned i = 1; i < DSY_SEG_MAP_BATCH; i++) {
            segment *x = (segment *)(void *)(run + (size_t)i * SEG_BYTES);
            x->next_free = first;
            first = x;
            if (!last)
                last = x;
        }
        if (first) {
            pthread_mutex_lock(&seg_free.lock);
            last->next_free = seg_free.list;
            seg_free.list = first;
            seg_free.n += DSY_SEG_MAP_BATCH - 1;
            pthread_mutex_unlock(&seg_free.lock);
        }
    }
    dsy_ref_init(&g->live, (uint32_t)SEG_SLOTS + 1);
    return g;
}

static void seg_put(segment *g, uint32_t n) {
    if (!dsy_ref_sub(&g->live, n))
        return;
    pthread_mutex_lock(&seg_free.lock);
    if (seg_free.n < DSY_SEG_KEEP) {
        g->next_free = seg_free.list;
        seg_free.list = g;
        seg_free.n++;
        g = NULL;
    }
    pthread_mutex_unlock(&seg_free.lock);
    if (g)
        dsy_os_unmap(g, SEG_BYTES);
}

/* The owner stops allocating from its segment: the unused slots and its
 * own hold are dropped together. */
static void seg_retire(void) {
    segment *g = tls_seg;
    if (!g)
        return;
    tls_seg = NULL;
    seg_put(g, (uint32_t)(SEG_SLOTS - tls_seg_next) + 1);
}

static segment *seg_of(dsy_job *j) {
    return (segment *)(void *)((uintptr_t)j & ~(uintptr_t)(SEG_BYTES - 1));
}

/* Asks for the lines of g that enter the window of DSY_SEG_PREFETCH_LINES
 * ahead once the node of `lines` lines (1 or 2) at slot `at` is taken. */
static inline void seg_prefetch(segment *g, unsigned at, unsigned lines) {
    unsigned ask = at + DSY_SEG_PREFETCH_LINES;
    if (ask < SEG_SLOTS)
        dsy_prefetch_write(&g->slots[ask], seg_prefetchw);
    if (lines == 2 && ask + 1 < SEG_SLOTS)
        dsy_prefetch_write(&g->slots[ask + 1], seg_prefetchw);
}

/* Every case of dsy_job_alloc: no segment yet (the first SEG_AFTER nodes
 * of a thread come from the block pool), a node that does not fit in the
 * segment, or one that fills it. */
static DSY_NOINLINE dsy_job *job_alloc_general(unsigned lines, bool *from_seg) {
    unsigned cls = lines == 1 ? DSY_POOL_64 : DSY_POOL_128;
    *from_seg = false;
    if (DSY_NOPOOL)
        return dsy_pool_alloc(cls);
    if (DSY_UNLIKELY(!tls_seg) && ++tls_jobs >= SEG_AFTER) {
        if (!registered)
            cache_register(); /* the segment is retired at thread exit */
        tls_seg = seg_new();
        tls_seg_next = 0;
    }
    segment *g = tls_seg;
    if (DSY_UNLIKELY(g && tls_seg_next + lines > SEG_SLOTS)) {
        /* No room for a wide node: the last slot goes unused. */
        seg_retire();
        g = tls_seg = seg_new();
        tls_seg_next = 0;
    }
    if (DSY_LIKELY(g != NULL)) {
        dsy_job *j = &g->slots[tls_seg_next];
        seg_prefetch(g, tls_seg_next, lines);
        tls_seg_next += lines;
        if (tls_seg_next == SEG_SLOTS) {
            tls_seg = NULL; /* full: the next allocation starts a new one */
            tls_jobs = SEG_AFTER;
            seg_put(g, 1);
        }
        *from_seg = true;
        return j;
    }
    return dsy_pool_alloc(cls);
}

/* The common case inline, with nothing to save for calls: room in this
 * thread's segment, short of its last slot. */
dsy_job *dsy_job_alloc(unsigned lines, bool *from_seg) {
    DSY_ASSERT(lines == 1 || lines == 2);
    segment *g = tls_seg;
    unsigned at = tls_seg_next, end = at + lines;
    if (DSY_NOPOOL || DSY_UNLIKELY(!g || end >= SEG_SLOTS))
        return job_alloc_general(lines, from_seg);
    tls_seg_next = end;
    seg_prefetch(g, at, lines);
    *from_seg = true;
    return &g->slots[at];
}

/* Batched releases (dsy_job_release_batch_begin): the segment whose count
 * this thread still owes `tls_owed` slots, and the nesting depth. A delayed
 * drop only delays the segment's recycling. */
static DSY_TLS segment *tls_owed_seg;
static DSY_TLS uint32_t tls_owed, tls_batch_depth;

static void owed_flush(void) {
    segment *g = tls_owed_seg;
    uint32_t n = tls_owed;
    tls_owed_seg = NULL;
    tls_owed = 0;
    if (g)
        seg_put(g, n);
}

void dsy_job_release_batch_begin(void) { tls_batch_depth++; }

void dsy_job_release_batch_end(void) {
    DSY_ASSERT(tls_batch_depth > 0);
    if (--tls_batch_depth == 0)
        owed_flush();
}

static DSY_NOINLINE void job_release_general(dsy_job *j, unsigned lines, bool from_seg) {
    if (!from_seg) {
        dsy_pool_free(j, lines == 1 ? DSY_POOL_64 : DSY_POOL_128);
        return;
    }
    segment *g = seg_of(j);
    if (!tls_batch_depth) {
        seg_put(g, lines);
        return;
    }
    if (g != tls_owed_seg)
        owed_flush();
    tls_owed_seg = g;
    tls_owed += lines;
}

/* The common case inline: a node of the segment this batch already owes. */
void dsy_job_release(dsy_job *j, unsigned lines, bool from_seg) {
    if (DSY_LIKELY(from_seg && tls_batch_depth && seg_of(j) == tls_owed_seg)) {
        tls_owed += lines;
        return;
    }
    job_release_general(j, lines, from_seg);
}

/* Returns the free segments to the OS. */
static void seg_free_clear(void) {
    pthread_mutex_lock(&seg_free.lock);
    segment *g = seg_free.list;
    seg_free.list = NULL;
    seg_free.n = 0;
    pthread_mutex_unlock(&seg_free.lock);
    while (g) {
        segment *next = g->next_free;
        dsy_os_unmap(g, SEG_BYTES);
        g = next;
    }
}

void dsy_pool_reclaim(void) {
    seg_retire();
    tls_jobs = 0; /* start from the block pool again */
    cache_clear();
    depots_clear();
    seg_free_clear();
}

/* ------------------------------------------------------------------ fork */

void dsy_pool_fork_prepare(void) {
    for (unsigned cls = 0; cls < NCLASS; cls++)
        pthread_mutex_lock(&depots[cls].lock);
    pthread_mutex_lock(&seg_free.lock);
    pthread_mutex_lock(&arena.lock);
}

void dsy_pool_fork_parent(void) {
    pthread_mutex_unlock(&arena.lock);
    pthread_mutex_unlock(&seg_free.lock);
    for (unsigned cls = NCLASS; cls-- > 0;)
        pthread_mutex_unlock(&depots[cls].lock);
}

/* The calling thread holds them in the child too. */
void dsy_pool_fork_child(void) { dsy_pool_fork_parent(); }
