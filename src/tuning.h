/*
 * Every tuning constant of the library, in one place. Each says what it
 * trades and which benchmark workload (bench/README.md) moves when it
 * changes. Sizes that define a data layout stay with their structure; the
 * numbers here only change how long something waits or how much it batches.
 */
#ifndef DSY_TUNING_H
#define DSY_TUNING_H

/* ------------------------------------------------------------ spinning */

/* Short waits for another thread that is between two instructions or in a
 * critical section of a few (a producer linking `next`, a spinlock holder):
 * pause this many rounds, then yield in case that thread was preempted.
 * Larger burns more CPU when the holder was preempted; smaller yields (a
 * syscall) when a few more pauses would have done. Moves W3/W3b slightly. */
#define DSY_BACKOFF_SPINS 64u

/* Time-bounded spins read the clock once every this many rounds: a clock
 * read costs about as much as 16 pauses. */
#define DSY_SPIN_CLOCK_EVERY 16u

/* ---------------------------------------------------------------- queue */

/* A syncer (or future waiter) spins this long on its word before it sleeps:
 * about one futex sleep/wake round trip. Longer steals the CPU from the
 * thread it waits for when threads outnumber cores (W3b); shorter makes more
 * waits pay for a wake-up (W3, W7). */
#define DSY_WAIT_SPIN_NS 4000u

/* A sync on a busy queue looks at it this many rounds for it to go idle
 * before it waits outside it (BARGING in queue.c). Few, as a mutex tries its
 * lock once before it sleeps: a look that finds the queue idle takes it from
 * the thread using it, and two threads that keep doing that hand the queue's
 * line across cores on every call (W3 p50 about 450 ns, 2x the mutex's
 * time); a thread that waits outside leaves it to the user for a run of
 * calls. Measured alternately on the 2-core VM (2026-12-02, P1 140-280 ns),
 * as libdesync's time over the mutex's: 1 or 2 rounds gave W3 0.55-1.44x
 * (the mutex itself swings 2x), W3b 0.80-0.92x, C3's worst 1.03-1.29x; 16
 * gave W3 1.6-2.1x, W3b 1.5-1.9x, C3's worst 2.1-3.0x. (In an earlier phase,
 * with P1 near 650 ns, 16 had measured better than 4.) W3, W3b, C3. */
#define DSY_SYNC_PRESPIN_ROUNDS 2u

/* ... then waits outside it this long at most for it to go idle, sleeping
 * (BARGING in queue.c), before it queues its node: the queue's current
 * user keeps the queue and its cache lines meanwhile, as with a mutex, and
 * no sync waits longer than this for its turn to come. W3, W3b. */
#define DSY_SYNC_BARGE_NS 1000000u

/* A syncer waiting outside watches the queue this many pause rounds before
 * each sleep (queue.c: barger_watch). W3 and W3b alternately on the 2-core
 * VM (2026-12-03), W3 with the waiters outside counted: about 21 ns with
 * the watch, 37-57 ns without it (60-170 with neither). 16, 64 and 256
 * rounds, or a look every 8th round, measured alike within the runs'
 * spread (W3b 30-65 ns with a slow cache line). W3, W3b. */
#define DSY_SYNC_BARGE_SPIN_ROUNDS 64u

/* Whoever makes a queue idle while a syncer watches it from outside waits
 * this long before it may take it again (queue.c: dsy_queue_barger_turn):
 * the watcher then runs a stretch of calls on its own, as the user did.
 * On the 2-core VM with a slow cache line (2026-12-03, 5 runs each, 8
 * threads, medians): 2.5 us 37 ns per sync, 5 us 32, 10 us 27, against 36
 * with a futex wake instead and 31 for the mutex; 2 threads 15 ns at each
 * length (the wake: 21). A pause-count window (256 to 1024 pauses of 18 ns
 * here) measured alike; time does not depend on the CPU's pause. W3, W3b. */
#define DSY_SYNC_BARGE_WINDOW_NS 5000u

/* ... but, with several watchers counted, only once one of them has taken
 * it: if none has within this long, the watchers are not running
 * (preempted: more threads than cores), and the queue is left to whoever
 * comes next. Running watchers take it within about 10 pauses (200 ns)
 * mostly. Before this limit, 4 turns in 10 with 8 threads found no watcher
 * and kept the queue idle for the whole window: half of W3b's CPU time went
 * into such windows. With one watcher (2 threads) the limit cost more than
 * it saved (a late take is still a take). 2-core VM, 2026-12-03, w3b
 * program, medians of 9 to 15 runs, ns per sync, against the window alone:
 * 19.6 against 33.2 (8 threads), 19.0 against 29.1 (16), 21.5 against 45.8
 * (64), 15.8 against 20.2 (4), 15.5 against 15.1 (2; 17.3 with the limit
 * for one watcher too). 1000 and 2500 ns measured between. W3b, C3. */
#define DSY_SYNC_BARGE_TAKE_NS 400u

/* A multi-object job whose queues are busy watches them this many rounds for
 * all of them to go idle before it queues its parts (it does not wait
 * outside). R3. */
#define DSY_MULTI_PRESPIN_ROUNDS 64u

/* A worker that ran a fed queue's last job polls for the next one this long
 * before letting the queue go idle: a steady producer then never sends the
 * queue through the scheduler. Longer holds a worker on a queue whose
 * producer has stopped. W2, W4. */
#define DSY_LINGER_NS 2000u
/* ... polling `next` only once per this many pauses, so the poll does not
 * pull each new node away from its producer. */
#define DSY_LINGER_POLL_PAUSES 16u
/* ... and running a new job only once this many pauses have passed (unless
 * someone waits for it), so that jobs come in batches: the producer links
 * them into lines the worker is not reading. Running each job as soon as it
 * was seen, the worker stayed at the producer's heels and W2 was bimodal
 * (2-core VM, 2026-12-03, w2 program, 9 runs each, medians: 57 to 62 ns per
 * job, runs 47 to 92) against 32.7 ns at 64 (runs 31 to 38), 38 at 32; W4
 * 41.5 against 43.5; R1, R2 unchanged within their noise. W2, W4. */
#define DSY_LINGER_BATCH_PAUSES 64u

/* A syncer that would hand the token to sleeping waiters runs at most this
 * many of their jobs itself first (combining; avoids a lock convoy when
 * threads outnumber cores). Larger delays the combiner's own return. W3b. */
#define DSY_COMBINE_MAX 8u

/* A future waiter whose queue another thread is running watches the future
 * this long before it lists itself (a wait-for edge, a waiter, a wake-up):
 * about one short job run by a worker that took the token first. W7. */
#define DSY_FUT_WATCH_NS 2000u

/* ------------------------------------------------------------ scheduler */

/* Jobs a worker runs from one queue before it lets other ready queues go
 * first (fairness). Larger amortises scheduling (W2, W4), smaller shortens
 * the wait of other queues (fairness tests). */
#define DSY_SCHED_BATCH 256u

/* An idle worker spins at most this long looking for work before it sleeps
 * (longer while work keeps arriving). Every W with desync jobs moves with it;
 * the CPU an idle process burns grows with it. */
#define DSY_WORKER_SPIN_NS 20000u

/* ... and at least this long: a worker whose spins keep failing (work comes
 * less often than a spin lasts) halves its spin down to this (scheduler.c:
 * spin_adapt). A spinner that sees a lone new queue spins on at least
 * through that queue's grace (below), so it still takes it if nobody else
 * runs it. IB. */
#define DSY_WORKER_SPIN_MIN_NS 2000u

/* ... yielding its core every this many rounds (pauses): with more threads
 * than cores (CM, W4: the producers), the spin would take the CPU of a
 * thread that makes the work; with a core to spare the yield returns at once.
 * Smaller makes more system calls while spinning. */
#define DSY_WORKER_SPIN_YIELD_EVERY 16u

/* A spinning worker leaves a lone newly ready queue alone this long, and
 * this long again each time a waiter has run its jobs meanwhile (GRACE in
 * scheduler.c): the thread that made it ready often waits for it soon (a
 * future wait at once, W7; a sync after a burst of 100 desyncs, about 3 us,
 * W4) and then runs its jobs itself, cheaper than moving them across cores.
 * Far below the cost of a wake-up. Longer keeps longer bursts on their
 * thread; each lone queue nobody waits for then costs a spinner that much
 * more CPU (IB) and starts that much later. */
#define DSY_WORKER_GRACE_NS 3000u

/* Each time a waiter has run the lone queue's jobs through a whole grace,
 * the next grace is twice as long, up to this: the spinner's look at the
 * queue's progress count takes the cache line the waiter's pushes write
 * (W4: one look every 3 us cost the pushing thread about 4 ns per job),
 * and a queue its waiter keeps serving is likely to stay served. A queue
 * whose waiter walks away is run within about two of these. */
#define DSY_WORKER_GRACE_MAX_NS 48000u

/* A spinning worker's yield that returns this late ran another thread on
 * its core (CROWDED in scheduler.c): the spin ends there, as the kernel has
 * put the spinner beside a busy thread (often the very waiter that runs the
 * lone queue the spinner watches), and each of its rounds now takes that
 * thread's CPU. A yield with a core to spare returns in about a microsecond. */
#define DSY_WORKER_CROWDED_NS 50000u

/* While entries wait for the awake workers (AWAKE CAP in scheduler.c), an
 * idle worker looks this often whether any entry left the run list, and
 * takes one if none did (the awake ones are blocked in jobs). Shorter runs a
 * queue sooner behind jobs that block; longer costs fewer wake-ups while
 * the awake workers keep up. CM; programs whose jobs block. */
#define DSY_WORKER_WATCH_NS 1000000u

/* An idle worker exits after sleeping this long without work. Shorter gives
 * memory and threads back sooner; longer saves thread starts for bursty
 * programs. */
#define DSY_WORKER_RETIRE_NS 5000000000ull

/* A spinning worker takes over next-slot entries of at most this many other
 * workers that waited through its whole spin phase. */
#define DSY_WORKER_TAKEOVER_MAX 64u

/* desync_scheduler_drain (and free, shutdown) look again this often while
 * workers finish: the latency of a drain against a few wake-ups of an idle
 * process. */
#define DSY_SCHED_DRAIN_POLL_NS 100000u

/* The default scheduler's threads: this many per CPU, at least the minimum
 * (jobs that block a while must not starve the others on small machines). */
#define DSY_DEFAULT_THREADS_PER_CPU 2u
#define DSY_DEFAULT_THREADS_MIN 8u

/* First size of a scheduler's run list (it doubles as needed). */
#define DSY_RUNLIST_INITIAL 64u

/* ---------------------------------------------------------------- timers */

/* A thread fires at most this many due timers per hold of a timer heap's
 * lock (it takes the lock again for the rest), so a start or cancel waits
 * for at most that many pushes. Timers' lateness (bench TL). */
#define DSY_TIMER_FIRE_BATCH 64u

/* ------------------------------------------------------------- job pool */

/* Blocks per magazine: one depot lock operation per this many jobs that
 * move between a producer and a worker. Larger holds more memory per
 * thread. W2, W4, W6. */
#define DSY_POOL_MAG 64u
/* Full magazines kept in a depot per size class; beyond, blocks go back to
 * malloc. Bounds what the pools keep after a burst. */
#define DSY_POOL_DEPOT_MAX 256u

/* Job segments: a thread that queues many jobs takes their nodes from
 * 64 KiB segments in address order (see jobpool.c). */
#define DSY_SEG_BYTES 65536u
/* ... after this many jobs from the block pool (light users do not hold a
 * segment each). W2, W4. */
#define DSY_SEG_AFTER 1024u
/* ... and asks for its segment's lines this many lines (job nodes of one
 * line) ahead of the next node, so that their transfer from the core that
 * last read them overlaps the caller's own work (jobpool.c). R1, W2. */
#define DSY_SEG_PREFETCH_LINES 8u
/* A producer that finds a queue more than this many jobs behind gives up
 * its time slice now and then (one push in DSY_BACKLOG_YIELD_EVERY): with
 * more producer threads than cores the queue's one thread gets as much CPU
 * as any producer, falls behind, and the backlog's memory grows without
 * bound (R1: 8 threads logging to one object on 2 cores). A yield is not a
 * wait: with nothing else to run it returns at once. */
#define DSY_BACKLOG_YIELD 4096u
#define DSY_BACKLOG_YIELD_EVERY 64u

/* A producer blocked on a queue's limit (desync_set_max_pending) is woken
 * when a job ran and the queue is down to half its limit; it also wakes
 * after this long (doubling up to the maximum while the queue stays full)
 * to see whether it can run the queue itself: a token that no thread takes
 * may become free without any job running (a resume, a future completed on
 * a queue of a 0-thread scheduler). Shorter costs wake-ups while a queue
 * stays full for long; longer delays such a producer. */
#define DSY_BOUNDED_POLL_MIN_NS 100000u
#define DSY_BOUNDED_POLL_MAX_NS 10000000u

/* Segments are mapped from the OS this many at a time (1 MiB)... */
#define DSY_SEG_MAP_BATCH 16u
/* ... and this many free ones are kept for reuse (16 MiB); beyond that a
 * segment that empties goes back to the OS. A queue whose backlog grows
 * (producers outrun its thread: R1) takes them back without a page fault;
 * each one returned costs a munmap (a TLB flush on every core). */
#define DSY_SEG_KEEP 256u

/* -------------------------------------------------------------- streams */

/* A blocked reader spins on a pipe output's `ready` hint this long before
 * it polls with a waker: about one sleep/wake round trip. W8. */
#define DSY_READER_SPIN_NS 8000u

/* Backpressure: a pipe's default depth (items polled but not processed plus
 * unread outputs) starts at DSY_PIPE_DEPTH and doubles, up to
 * DSY_PIPE_DEPTH_MAX, each time the pump is held back by it right after a
 * batch whose items took under DSY_PIPE_SLOW_ITEM_NS each (about a
 * sleep/wake hand-off: below it, batching pays). Deeper batches
 * more per job and hands off less often (R2, W8) but holds more items: slow
 * items (where a hand-off is cheap beside the work) keep the small depth,
 * and the maximum bounds what any pipe holds. A depth the program sets is
 * kept as it is. */
#define DSY_PIPE_DEPTH 5u
#define DSY_PIPE_DEPTH_MAX 64u
/* pipe_in has no output to set a depth on: it reads at most this many
 * items ahead of processing. Larger than DSY_PIPE_DEPTH because, while it is
 * not held back, a send that returned has its job queued already. */
#define DSY_PIPE_IN_DEPTH 64u
/* Items per process job, so one job cannot hold the object for long. */
#define DSY_PIPE_MAX_BATCH 64u
/* A process job whose end finds the output full waits this long for the
 * reader to take an item before it parks the pump. W8. */
#define DSY_PUMP_SPIN_NS 3000u
/* An item that takes this long is slow (one threshold for both uses): the
 * default depth does not grow after a batch of slow items (above), and a
 * process job wakes its output's reader after each item, not once per
 * batch, when the batch's first item was slow, so slow items are not held
 * back for the whole batch. Smaller wakes a downstream pipe (and queues its
 * job) per item more often. R2, W8. */
#define DSY_PIPE_SLOW_ITEM_NS 20000u
/* A blocked reader runs a batch of at most this many items itself. W8. */
#define DSY_PIPE_INLINE_MAX 32u

#endif
