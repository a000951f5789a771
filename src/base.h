/*
 * The idioms every source file uses, each written once: compiler hints,
 * thread-locals, assertions, the CPU's spin hint, the short backoff, the
 * time-bounded spin, deadlines, reference counts and a spinlock. (No
 * out-of-memory retry: paths that must not fail need no memory; see
 * dsy_kick and the nodes embedded in desync_t and pipes.)
 */
#ifndef DSY_BASE_H
#define DSY_BASE_H

#include "os/os.h"
#include "tuning.h"

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#if defined(__GNUC__)
#define DSY_LIKELY(x) __builtin_expect(!!(x), 1)
#define DSY_UNLIKELY(x) __builtin_expect(!!(x), 0)
#define DSY_NORETURN __attribute__((noreturn))
/* For the rare branch of a hot function: kept out of line, so the hot path
 * saves no registers for it. */
#define DSY_NOINLINE __attribute__((noinline, cold))
#else
#define DSY_LIKELY(x) (x)
#define DSY_UNLIKELY(x) (x)
#define DSY_NORETURN
#define DSY_NOINLINE
#endif

/* Thread-locals use the initial-exec model: one instruction to reach them,
 * instead of a __tls_get_addr call in the shared library. Every
 * thread-local of the library is declared with DSY_TLS. */
#if defined(__GNUC__)
#define DSY_TLS _Thread_local __attribute__((tls_model("initial-exec")))
#else
#define DSY_TLS _Thread_local
#endif

#define DSY_CONTAINER_OF(ptr, type, member) ((type *)(void *)((char *)(ptr)-offsetof(type, member)))

/* ------------------------------------------------------------ assertions
 *
 * DSY_ASSERT(cond) checks an invariant the comments state. Active when built
 * with -DDESYNC_DEBUG (`make test DEBUG=1`, and every sanitizer build): a
 * failure prints the file, line and condition, then aborts. Compiled out
 * otherwise (the condition is not evaluated). It only checks: no code path
 * depends on it. */
#ifdef DESYNC_DEBUG
DSY_NORETURN void dsy_assert_fail(const char *file, int line, const char *cond);
#define DSY_ASSERT(cond) (DSY_LIKELY(cond) ? (void)0 : dsy_assert_fail(__FILE__, __LINE__, #cond))
#else
#define DSY_ASSERT(cond) ((void)sizeof(!(cond)))
#endif

/* ------------------------------------------------------------- spinning */

/* The CPU's spin-wait hint (inline: it sits inside every spin). */
static inline void dsy_cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield");
#endif
}

/* The CPU's write-prefetch hint: asks for the cache line at p in a state
 * this core may write, so that a write made soon after does not wait for the
 * line to leave another core's cache. A hint only, never a fault. On x86 it
 * is issued only where the CPU has PREFETCHW (`have`, from
 * dsy_cpu_has_prefetchw(), which the caller asked once). */
static inline void dsy_prefetch_write(const void *p, bool have) {
#if defined(__x86_64__) || defined(__i386__)
    if (have)
        __asm__ __volatile__("prefetchw %0" : : "m"(*(const char *)p));
#else
    (void)have;
    __builtin_prefetch(p, 1, 3);
#endif
}

/* The short backoff, for waits on a thread that is between two instructions
 * or in a critical section of a few: pause DSY_BACKOFF_SPINS rounds, then
 * yield each round (the thread may have been preempted). Start *round at 0. */
static inline void dsy_backoff(unsigned *round) {
    if (*round < DSY_BACKOFF_SPINS) {
        ++*round;
        dsy_cpu_relax();
    } else {
        dsy_yield();
    }
}

/* A spin bounded in time, for waits worth a few microseconds of CPU before
 * a sleep or a give-up:
 *
 *     dsy_spin sp = dsy_spin_for(NS, deadline);
 *     while (!cond && dsy_spin_round(&sp)) { }
 *
 * The clock is read every DSY_SPIN_CLOCK_EVERY rounds, the first time to
 * start the period; deadline (absolute dsy_now_ns() time, 0 = none) also
 * ends the spin. */
typedef struct dsy_spin {
    uint64_t ns, end, deadline;
    unsigned round;
} dsy_spin;

static inline dsy_spin dsy_spin_for(uint64_t ns, uint64_t deadline) {
    dsy_spin sp = {ns, 0, deadline, 0};
    return sp;
}

/* Pauses once; false once the period (or the deadline) has passed. */
static inline bool dsy_spin_round(dsy_spin *sp) {
    dsy_cpu_relax();
    if (++sp->round % DSY_SPIN_CLOCK_EVERY)
        return true;
    uint64_t now = dsy_now_ns();
    if (!sp->end)
        sp->end = now + sp->ns;
    return now < sp->end && (!sp->deadline || now < sp->deadline);
}

/* Starts the period again at the next clock read (work keeps arriving). */
static inline void dsy_spin_extend(dsy_spin *sp) { sp->end = 0; }

/* ... and makes it at least ns long. */
static inline void dsy_spin_extend_for(dsy_spin *sp, uint64_t ns) {
    if (sp->ns < ns)
        sp->ns = ns;
    sp->end = 0;
}

/* ------------------------------------------------------------- deadlines */

/* The absolute deadline (dsy_now_ns() time) `timeout_ns` from now, or 0 (no
 * deadline) for UINT64_MAX. Never 0 for a real deadline. */
static inline uint64_t dsy_deadline_after(uint64_t timeout_ns) {
    if (timeout_ns == UINT64_MAX)
        return 0;
    uint64_t d = dsy_now_ns() + timeout_ns;
    return d ? d : 1;
}

/* -------------------------------------------------------- reference counts
 *
 * A count of owners. Taking one more needs no ordering (the taker already
 * owns one, which keeps the object alive). Dropping one is acq_rel: the
 * release publishes this owner's writes, the acquire of the last dropper
 * sees everyone's before it frees. */
typedef _Atomic uint32_t dsy_refcount;

static inline void dsy_ref_init(dsy_refcount *r, uint32_t n) { atomic_init(r, n); }

static inline void dsy_ref_inc(dsy_refcount *r) {
    uint32_t old = atomic_fetch_add_explicit(r, 1, memory_order_relaxed);
    DSY_ASSERT(old >= 1 && old < UINT32_MAX);
    (void)old;
}

/* Drops n owners; true if they were the last (the caller frees). */
static inline bool dsy_ref_sub(dsy_refcount *r, uint32_t n) {
    uint32_t old = atomic_fetch_sub_explicit(r, n, memory_order_acq_rel);
    DSY_ASSERT(old >= n);
    return old == n;
}

static inline bool dsy_ref_dec(dsy_refcount *r) { return dsy_ref_sub(r, 1); }

/* Unlinks node n from an intrusive doubly linked list whose first node is
 * *head, through n's fields named prev and next. */
#define DSY_DLIST_UNLINK(head, n, prev, next)                                               \
    do {                                                                                   \
        if ((n)->prev)                                                                     \
            (n)->prev->next = (n)->next;                                                   \
        else                                                                               \
            *(head) = (n)->next;                                                           \
        if ((n)->next)                                                                     \
            (n)->next->prev = (n)->prev;                                                   \
    } while (0)

/* ------------------------------------------------------------- spinlock */

/* A test-and-test-and-set spinlock for critical sections of a few
 * instructions that never block. Acquire on lock pairs with the release
 * store of unlock. */
typedef _Atomic uint32_t dsy_spinlock;

/* Takes l only if it is free now (true), without waiting. */
static inline bool dsy_spin_trylock(dsy_spinlock *l) {
    return !atomic_load_explicit(l, memory_order_relaxed) &&
           !atomic_exchange_explicit(l, 1, memory_order_acquire);
}

static inline void dsy_spin_lock(dsy_spinlock *l) {
    for (unsigned b = 0; !dsy_spin_trylock(l); dsy_backoff(&b)) {
    }
}

static inline void dsy_spin_unlock(dsy_spinlock *l) {
    DSY_ASSERT(atomic_load_explicit(l, memory_order_relaxed) == 1);
    atomic_store_explicit(l, 0, memory_order_release);
}

#endif
