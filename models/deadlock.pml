/*
 * A model of cross-thread deadlock detection (issue 9), for SPIN.
 *
 * The protocol (the hint of the issue): a thread about to sleep until it
 * gets queue Q first publishes "I wait for Q" (an edge, with a generation
 * that every publish and unpublish bumps), then walks: Q's runner, what that
 * runner waits for, that queue's runner, ... If the walk reaches the thread
 * itself (a queue it holds), it unpublishes and returns DESYNC_EDEADLK
 * instead of sleeping. Publish-then-check on both sides: of the threads
 * that close a cycle, the last to publish sees every edge of it.
 *
 * The walk validates what it reads, because edges change under it: after
 * reading runner r of queue `cur` and r's edge (queue, generation), it reads
 * the runner of `cur` again (r still holds it, so it held it while blocked
 * with that edge: a blocked thread releases nothing); before reporting, it
 * reads the generation of every edge on the path again (each was there all
 * along, so all were there at one instant: the cycle was real). A walk that
 * sees a change goes to sleep: a change is progress, and a cycle closed by
 * a later publish is that publisher's to find. The walk takes at most NT
 * hops (a longer path has a cycle that does not pass through the walker,
 * which its own closer finds), so no cycle within the bounds is too long.
 * The model reads an edge and its generation together (one atomic word, or
 * a seqlock, in C).
 *
 * Abstraction: holding a queue = running one of its jobs (its run token);
 * a thread's jobs nest (sync inside a job), so it holds a stack of queues;
 * waiting = sleeping until the queue is free, then taking it. queue.c and
 * future.c map onto this: holder[] is the token holder's published chain,
 * edge[] the edge a syncer or future waiter publishes before it sleeps.
 *
 * Properties (ghost global view: holder[], edge[]):
 *   - no false positive: a thread reports DESYNC_EDEADLK only if, at some
 *     instant since it published its edge, a cycle through it existed
 *     (incyc[], set by the publish step that closes a cycle, for every
 *     thread on it; a cycle arises only from a publish);
 *   - the closer detects: a thread that decides to sleep is never on a
 *     cycle all of whose other edges are older than its own (the newest
 *     edge's thread walked after all the others were there);
 *   - no deadlock: no invalid end state (every thread returns).
 *
 * Configurations (-DCONFIG=n), the bounds that were checked:
 *   1: 2 threads, 2 queues. T1: A { B }, T2: B { A }  (the crossing
 *      transfer: a 2-cycle).
 *   2: 3 threads, 3 queues. T1: A { B }, T2: B { C } then A { },
 *      T3: C { } then C { A }  (a 3-cycle; chains without a cycle; threads
 *      that release a queue, then wait for the walker's queue while it
 *      walks through them).
 *
 * Injected bugs (-DBUG_...), each of which SPIN must catch:
 *   BUG_WALK_BEFORE_PUBLISH  walk first, publish after: two threads both
 *                            walk before either publishes and both sleep
 *   BUG_NO_VALIDATE          trust what the walk read (no recheck of the
 *                            runner, no generation check): false positives
 *   BUG_NO_GEN_CHECK         recheck the runner per hop but not the
 *                            generations at the end: false positives
 *   BUG_HOP_LIMIT            at most NT - 1 hops: a cycle through all
 *                            threads slips past (CONFIG 2)
 */

#ifndef CONFIG
#define CONFIG 2
#endif

#if CONFIG == 1
#define NT 2
#define NQ 2
#elif CONFIG == 2
#define NT 3
#define NQ 3
#endif

#ifdef BUG_HOP_LIMIT
#define MAXHOPS (NT - 1)
#else
#define MAXHOPS NT
#endif

/* threads 1..NT, queues 1..NQ, 0: none */
byte holder[NQ + 1];     /* the thread running a job of q (holding its token) */
byte edge[NT + 1];       /* the queue thread t waits for (published) */
byte gen[NT + 1];        /* bumped by every publish and unpublish */

/* ghost */
byte clock;              /* counts publishes */
byte pubat[NT + 1];      /* clock of t's current edge */
bit incyc[NT + 1];       /* a cycle through t existed since its publish */
byte ndone;

#define LOCALS \
    byte cur; byte r; byte w; byte g; byte hops; byte n; byte i; \
    byte pr[NT]; byte pg[NT]; bit found; bit ok; \
    byte gc; byte gr; byte gi; byte gmax; bit gcyc

/* Ghost: is there a cycle t -> edge[t] -> holder -> edge -> ... -> t now?
 * gcyc = 1 if so, gmax = the newest publish clock among the others on it. */
inline ghost_cycle(t) {
    gc = edge[t]; gi = 0; gcyc = 0; gmax = 0;
    do
    :: gc == 0 || gi > NT -> break
    :: else ->
        gr = holder[gc];
        if
        :: gr == 0 -> break
        :: gr == t -> gcyc = 1; break
        :: else ->
            if :: pubat[gr] > gmax -> gmax = pubat[gr] :: else fi;
            gc = edge[gr];
            gi++
        fi
    od
}

/* Ghost: every thread on the cycle through t is on a cycle now. */
inline mark_cycle(t) {
    ghost_cycle(t);
    if
    :: gcyc ->
        incyc[t] = 1;
        gc = edge[t];
        do
        :: holder[gc] == t -> break
        :: else -> gr = holder[gc]; incyc[gr] = 1; gc = edge[gr]
        od
    :: else
    fi;
    gc = 0; gr = 0; gi = 0; gmax = 0; gcyc = 0
}

/* "I wait for q" */
inline publish(t, q) {
    atomic {
        edge[t] = q; gen[t]++;
        clock++; pubat[t] = clock; incyc[t] = 0;
        mark_cycle(t)
    }
}

/* From q: runner -> its edge -> runner ...; found = 1 if it reaches t. */
inline walk(t, q) {
    found = 0; cur = q; hops = 0; n = 0;
    do
    :: hops >= MAXHOPS -> break
    :: else ->
        r = holder[cur];
        hops++;
        if
        :: r == 0 -> break
        :: r == t -> found = 1; break
        :: else
        fi;
        atomic { w = edge[r]; g = gen[r] };
        if :: w == 0 -> break :: else fi;
#ifndef BUG_NO_VALIDATE
        if :: holder[cur] != r -> break :: else fi;
#endif
        atomic { pr[n] = r; pg[n] = g; n++; cur = w }
    od;
#if !defined(BUG_NO_VALIDATE) && !defined(BUG_NO_GEN_CHECK)
    if
    :: found ->
        i = 0;
        do
        :: i < n ->
            if
            :: gen[pr[i]] != pg[i] -> found = 0; break
            :: else -> i++
            fi
        :: else -> break
        od
    :: else
    fi;
#endif
    atomic { cur = 0; r = 0; w = 0; g = 0; hops = 0; i = 0; n = 0;
             pr[0] = 0; pg[0] = 0; pr[1] = 0; pg[1] = 0; pr[NT - 1] = 0; pg[NT - 1] = 0 }
}

/* Takes q (ok = 1), or returns DESYNC_EDEADLK (ok = 0). */
inline acquire(t, q) {
    if
    :: atomic { holder[q] == 0 -> holder[q] = t; ok = 1 }   /* idle: no wait */
    :: else ->
#ifdef BUG_WALK_BEFORE_PUBLISH
        walk(t, q);
        publish(t, q);
#else
        publish(t, q);
        walk(t, q);
#endif
        if
        :: found ->
            atomic {                  /* unpublish; DESYNC_EDEADLK */
                assert(incyc[t]);     /* no false positive */
                edge[t] = 0; gen[t]++; found = 0; ok = 0
            }
        :: else ->
            atomic {                  /* the closer of a cycle never sleeps */
                ghost_cycle(t);
                assert(!(gcyc && gmax < pubat[t]));
                gc = 0; gr = 0; gi = 0; gmax = 0; gcyc = 0
            };
            /* sleep until q is free (its earlier jobs ran), take it */
            atomic { holder[q] == 0 -> holder[q] = t; edge[t] = 0; gen[t]++; ok = 1 }
        fi
    fi
}

inline release(t, q) {
    atomic { assert(holder[q] == t && edge[t] == 0); holder[q] = 0 }
}

/* a job on a that syncs b (nested), then (if c) a job on c that syncs d;
 * b or d 0: no nested sync */
inline job(t, a, b) {
    acquire(t, a);
    if
    :: ok ->
        if
        :: b != 0 ->
            acquire(t, b);
            if :: ok -> release(t, b) :: else fi
        :: else
        fi;
        release(t, a)
    :: else
    fi
}

proctype thread(byte t; byte a; byte b; byte c; byte d) {
    LOCALS;
    job(t, a, b);
    if :: c != 0 -> job(t, c, d) :: else fi;
    ndone++
}

#define A 1
#define B 2
#define C 3

init {
    atomic {
#if CONFIG == 1
        run thread(1, A, B, 0, 0);
        run thread(2, B, A, 0, 0)
#elif CONFIG == 2
        run thread(1, A, B, 0, 0);
        run thread(2, B, C, A, 0);
        run thread(3, C, 0, C, A)
#endif
    };
    (ndone == NT);
    byte k = 1;
    do
    :: k <= NQ -> assert(holder[k] == 0); k++
    :: else -> break
    od;
    k = 1;
    do
    :: k <= NT -> assert(edge[k] == 0); k++
    :: else -> break
    od
}
