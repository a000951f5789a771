/*
 * A model of the queue protocol of src/queue.c (with the parts of
 * src/scheduler.c and src/future.c it relies on), for SPIN.
 *
 * When the protocol in queue.c changes, this model changes in the same
 * commit. models/README.md maps every inline below to its C function.
 *
 * dsy_queue_wait_node returns only once its word says DONE (see wait_node).
 * Without that (-DBUG_EARLY_RETURN, queue.c before this model), SPIN finds a
 * syncer that returns from dsy_sync while the thread that ran its node is
 * still about to write DONE into the sync_node on the syncer's (dead) stack.
 *
 * What it checks, under sequential consistency (SPIN's default; memory
 * orderings are left to ThreadSanitizer and the stress tests):
 *   - no deadlock: no invalid end state (every thread returns; workers end
 *     idle with nothing to run);
 *   - no lost wake-up: dsy_park is a real futex here (a parked thread sleeps
 *     until an unpark, whatever its word says meanwhile), so a waiter whose
 *     node is done or who was handed the token but is never woken is stuck
 *     in park: an invalid end state; so is a syncer waiting outside a queue
 *     (barging) that nobody wakes (in C its sleep also has a time limit; the
 *     model leaves it out, so that a lost wake-up cannot hide behind it);
 *   - every pushed job runs exactly once (ghost ran[]) and in each
 *     producer's order (ghost lastseq[]); all of them run: the last handle's
 *     release frees the queue only when no node is left (asserted), and init
 *     waits for that;
 *   - at most one token holder (ghost tok[]: asserted at every take, give and
 *     run);
 *   - references: a queue is freed only with no token, entry or node left,
 *     and never touched after (asserted); nodes are not touched after finish
 *     and no waiter word is written after its waiter returned.
 *
 * Configurations (-DCONFIG=n), the bounds that were checked:
 *   1 core:    1 queue, 1 worker; P1 desyncs 2 jobs, P2 and P3 sync once each
 *              (4 jobs, 4 threads). Push/token creation, claim,
 *              steal, hand-off to a waiter, combining, idle-sync fast path,
 *              pre-spin, waiting outside (barging), release.
 *   2 futures: 1 queue, 1 worker; P1 suspends the queue, then desyncs a
 *              job; a resumer resumes it once the suspend's future is done;
 *              P2 future_desyncs a job, releases its handle and waits for
 *              the future with a timeout (3 jobs, 4 threads).
 *   3 sched:   3 queues, 2 workers, batch 2; P1 desyncs 3 jobs on q0, the
 *              first desyncs a job onto q1, the second one onto q2 (submits
 *              from inside a job go to the worker's next slot, the second
 *              one displaces the first to the run list); P2 syncs q1; an idle
 *              worker may take over the other's next slot (6 jobs, 4 threads).
 *   4 closed:  1 queue, a closed scheduler (no workers: submit orphans the
 *              entry); P1 desyncs 2 jobs, P2 syncs, P3 desyncs 1 job; each
 *              releases its handle (run_orphaned) (4 jobs, 3 threads).
 * In each, init holds one handle per queue and releases it once the
 * producers have returned, then waits until every queue is freed.
 * make model runs each configuration exhaustively (pan -DSAFETY -DCOLLAPSE,
 * no bitstate): 0.5 to 6 million states each. Nodes are not reused within
 * a run (no ABA on tail; queue.c never unlinks a node it has not finished
 * with). The pre-spin of dsy_sync is one look; the spin phase of
 * dsy_wait_word returns what its first CAS returns, and the linger of a
 * worker only delays, so both are left out; waits for a thread that is
 * between two instructions (wait_next, spinlocks) are blocking guards.
 * Weak CASes do not fail spuriously, futexes do not wake spuriously.
 *
 * Injected bugs (-DBUG_...), each of which SPIN must catch:
 *   BUG_MISSED_WAKEUP         the waiter checks its word, then stores
 *                             SLEEPING (no CAS): a signal in between is lost
 *   BUG_MISSED_WAKEUP_SIGNAL  the signaller loads the word, then stores:
 *                             a waiter that went to sleep in between is not
 *                             woken
 *   BUG_DOUBLE_TOKEN          push reads tail, then stores it (no exchange):
 *                             two pushes both create the token, or one links
 *                             behind a finished node (a lost job)
 *   BUG_DOUBLE_SUBMIT         token_place submits even when LINKED is set:
 *                             the queue gets two run-list entries
 *   BUG_STALE_ENTRY_RUNS      claim_entry runs the queue without READY: a
 *                             stale entry runs a queue a waiter stole
 *   BUG_LEFT_WAITER           a timed-out future waiter leaves without
 *                             passing on a token handed to it meanwhile
 *   BUG_WAITER_NOT_REMOVED    a timed-out future waiter leaves without taking
 *                             itself off the future's waiter list
 *   BUG_EARLY_RETURN          dsy_queue_wait_node as queue.c had it: a
 *                             waiter whose drain found the queue idle returns
 *                             before its node's finish wrote DONE
 *   BUG_BARGE_NO_WAKE         making the queue idle does not look at
 *                             BSLEEP: a syncer waiting outside sleeps for
 *                             ever
 *   BUG_BARGE_LOOK_FIRST      a syncer waiting outside sets BSLEEP and
 *                             sleeps without looking at tail after it: the
 *                             queue went idle before, and nobody wakes it
 *   BUG_BARGE_CLEAR_ANY       a syncer that stops waiting outside clears
 *                             BSLEEP although others still wait there: one
 *                             asleep is never woken
 *   BUG_BARGE_NO_SAT          a syncer waiting outside uncounted (the count
 *                             is full) does not set SAT: the last counted
 *                             one clears BSLEEP under it
 * (BUG_LEFT_WAITER and BUG_WAITER_NOT_REMOVED need CONFIG 2.)
 */

#ifndef CONFIG
#define CONFIG 1
#endif

#define NIL 0

/* queue.c: the queue state word */
#define LINKED 1
#define READY 2
#define SUSPENDED 4
#define BARGE 8
#define BARGER 16               /* barger count: 1 bit here (queue.c: 4), so that a second syncer outside waits uncounted */
#define BARGERS 16
#define BSLEEP 32
#define BSAT 64
#define WAITER 128

/* internal.h: waiter words */
#define W_WAITING 0
#define W_TOKEN 1
#define W_DONE 2
#define W_SLEEPING 3

/* node kinds: a desync job, a sync node, a future_desync node, a suspend node */
#define K_JOB 1
#define K_SYNC 2
#define K_FUT 3
#define K_SUSP 4

/* future.c: phases of a future node */
#define P_START 0
#define P_SUSPENDED 1
#define P_DONE 2

/* tuning.h: DSY_COMBINE_MAX (no configuration has more sleepers to
 * combine); DSY_SCHED_BATCH is 256, 2 here so that batches end and queues
 * are requeued */
#define COMBINE_MAX 2

/* ------------------------------------------------------ configurations
 * NQ queues, NW workers, nodes 1..NN; KIND(n), the queue QOF(n), the
 * producer OWN(n) and its sequence number SEQ(n) of each node; a job n may
 * desync node ACT(n) onto its queue (0: none). HAS_ACT and HAS_FUT compile
 * in the code for job actions and future nodes only where a configuration
 * has them (the verifier is large enough). */
#if CONFIG == 1
#define NQ 1
#define NW 1
#define NN 4
#define NOWN 3
#define BATCH 2
#define KIND(n) (n <= 2 -> K_JOB : K_SYNC)
#define QOF(n) 0
#define OWN(n) (n <= 2 -> 0 : n - 2)
#define SEQ(n) (n <= 2 -> n : 1)
#define ACT(n) 0
#elif CONFIG == 2
#define NQ 1
#define NW 1
#define NN 3
#define NOWN 2
#define BATCH 2
#define KIND(n) (n == 1 -> K_SUSP : (n == 2 -> K_JOB : K_FUT))
#define HAS_FUT 1
#define QOF(n) 0
#define OWN(n) (n <= 2 -> 0 : 1)
#define SEQ(n) (n <= 2 -> n : 1)
#define ACT(n) 0
#elif CONFIG == 3
#define NQ 3
#define NW 2
#define NN 6
#define NOWN 4
#define BATCH 2
/* 1..3 on q0 (by P1), 4 on q1 and 5 on q2 (desynced by jobs 1 and 2),
 * 6: P2's sync on q1 */
#define KIND(n) (n == 6 -> K_SYNC : K_JOB)
#define QOF(n) (n <= 3 -> 0 : (n == 5 -> 2 : 1))
#define OWN(n) (n <= 3 -> 0 : (n == 4 -> 1 : (n == 5 -> 2 : 3)))
#define SEQ(n) (n <= 3 -> n : 1)
#define ACT(n) (n == 1 -> 4 : (n == 2 -> 5 : 0))
#define HAS_ACT 1
#elif CONFIG == 4
#define NQ 1
#define NW 0
#define SCHED_CLOSED 1
#define NN 4
#define NOWN 3
#define BATCH 2
#define KIND(n) (n == 3 -> K_SYNC : K_JOB)
#define QOF(n) 0
#define OWN(n) (n <= 3 -> (n <= 2 -> 0 : 1) : 2)
#define SEQ(n) (n <= 2 -> n : 1)
#define ACT(n) 0
#endif

/* --------------------------------------------------------------- state */

/* per queue (desync_queue_t) */
byte tail[NQ];
byte head[NQ];
short qstate[NQ];
byte refs[NQ];
bit qfreed[NQ];          /* ghost: the last reference is gone */
byte tok[NQ];            /* ghost: _pid + 1 of the token holder, 0: none */

/* per node; sync nodes and future waiters have their word here too */
byte next[NN + 1];
byte word[NN + 1];
bit parked[NN + 1];      /* the word's thread sleeps in the futex */
bit bparked[8];          /* thread _pid sleeps on its queue's state (barging) */
bit gone[NN + 1];        /* ghost: the waiter returned (its stack is gone) */
bit finished[NN + 1];    /* ghost: finish ran (a job node is freed) */
bit ran[NN + 1];         /* ghost: the job ran */
byte phase[NN + 1];      /* future nodes */
bit fdone[NN + 1];       /* the node's future is complete */
bit fwaiter[NN + 1];     /* a thread is on the future's waiter list */
bit flock[NN + 1];       /* the future's spinlock */

/* scheduler */
chan runlist = [4] of { byte };  /* entries: queue + 1 */
#if NW > 0
byte nextq[NW];                  /* each worker's next slot: queue + 1 or 0 */
#endif

/* ghost checks */
byte nran;
byte lastseq[NOWN];
byte ndone;

#define TAKE(q) assert(tok[q] == 0); tok[q] = _pid + 1
#define GIVE(q) assert(tok[q] == _pid + 1); tok[q] = 0
#define MINE(q) assert(tok[q] == _pid + 1)
/* a node is alive until its finish; a sync node lives on its waiter's stack */
#define ALIVE(n) assert(!finished[n] && (KIND(n) != K_SYNC || !gone[n]))

/* Every thread's locals: the inlines below use them (no inline is active
 * twice at once on one thread). */
#define LOCALS \
    byte pv; bit created; bit adv_idle; byte sg_old; \
    short wn_s; byte wn_w; bit wn_ok; \
    byte du_h; byte du_nx; bit du_pk; \
    byte cb_i; byte cb_w; byte cb_nx; bit cb_pk; \
    bit fc_w; bit tw_w; \
    byte gw_n; byte gw_nx; \
    short tp_s; bit tp_found; bit tp_ok; \
    byte sb_r; byte sb_old; short cl_s; \
    byte qr_n; byte qr_nx; byte qr_ran; bit qr_pk; \
    byte sy_nx; bit sy_idle; bit sy_ok; bit res; \
    byte wi; short bg_s; bit bg_c; \
    byte fw_w; bit fw_st; bit fw_rm; bit fw_done; \
    short ro_s; bit ro_ok; bit more; \
    bit injob; byte me

/* Each atomic step below is one shared-memory operation of the C code (a
 * load, a store, an exchange, a CAS), together with the local work and the
 * ghost bookkeeping next to it; accesses only the token holder makes
 * (head, a node it runs) ride along with its neighbouring step. */

/* ------------------------------------------------------- references */

inline ref(q) {
    atomic { assert(refs[q] > 0 && !qfreed[q]); refs[q]++ }
}

/* dsy_queue_unref */
inline unref(q) {
    atomic {
        assert(refs[q] > 0);
        refs[q]--;
        if
        :: refs[q] == 0 ->
            /* the last reference: no token, no entry and no node remain */
            assert(tail[q] == NIL && (qstate[q] & (LINKED | READY)) == 0 && tok[q] == 0);
            qfreed[q] = 1
        :: else
        fi
    }
}

/* the ghost of running node n's job (with the token held) */
inline job_runs(q, n) {
    MINE(q);
    ALIVE(n);
    assert(ran[n] == 0);
    ran[n] = 1;
    nran++;
    assert(lastseq[OWN(n)] + 1 == SEQ(n));
    lastseq[OWN(n)] = SEQ(n)
}

/* ------------------------------------------------------ park and wake */

/* dsy_park(word, SLEEPING, timeout): sleeps only if the word is SLEEPING,
 * checked atomically with going to sleep, then until unparked (or, with a
 * timeout, until it passes). No spurious returns. */
inline park(w, timed) {
    atomic { if :: word[w] == W_SLEEPING -> parked[w] = 1 :: else fi };
    if
    :: parked[w] == 0
    :: atomic { timed && parked[w] -> parked[w] = 0 }
    fi
}

/* dsy_waiter_signal: sets the word to DONE or TOKEN (handing the token
 * on), and unparks the waiter if it slept. The word must still exist. */
inline signal(q, w, val) {
#ifdef BUG_MISSED_WAKEUP_SIGNAL
    sg_old = word[w];
    atomic {
        assert(!gone[w]);
        word[w] = val;
        if :: val == W_TOKEN -> GIVE(q) :: else fi
    };
#else
    atomic {
        assert(!gone[w]);
        sg_old = word[w];
        word[w] = val;
        if :: val == W_TOKEN -> GIVE(q) :: else fi
    };
#endif
    if
    :: sg_old == W_SLEEPING -> atomic { parked[w] = 0; sg_old = 0 }  /* dsy_unpark_one */
    :: else -> sg_old = 0
    fi
}

/* wake_bargers: clears BARGE, BSLEEP and SAT, and unparks every thread
 * sleeping on a queue's state (dsy_unpark_all). */
inline wake_bargers(q) {
    atomic {
        qstate[q] = qstate[q] & ~(BARGE | BSLEEP | BSAT);
        bparked[1] = 0; bparked[2] = 0; bparked[3] = 0; bparked[4] = 0;
        bparked[5] = 0; bparked[6] = 0; bparked[7] = 0
    }
}

/* went_idle: after the CAS tail: n -> NIL, a look at BSLEEP and BARGE
 * (dsy_queue_barger_turn): sleepers are woken; mere watchers get BARGE
 * cleared and a moment to take the queue (the moment is not modelled). */
inline went_idle(q) {
#ifdef BUG_BARGE_NO_WAKE
    skip
#else
    atomic { wi = qstate[q] & (BARGE | BSLEEP) };
    if
    :: wi & BSLEEP -> wi = 0; wake_bargers(q)
    :: (wi & (BARGE | BSLEEP)) == BARGE -> wi = 0; atomic { qstate[q] = qstate[q] & ~BARGE }
    :: wi == 0 -> skip
    fi
#endif
}

/* dsy_wait_word: the word's new value in ret, or W_WAITING once the
 * deadline (if timed) passed. (Its spin phase returns what the first CAS
 * below returns: left out.) */
inline wait_word(w, timed, ret) {
    do
    ::
#ifdef BUG_MISSED_WAKEUP
        ret = word[w];
        if :: ret == W_WAITING -> word[w] = W_SLEEPING :: else fi;
#else
        atomic {                             /* CAS WAITING -> SLEEPING */
            ret = word[w];
            if :: ret == W_WAITING -> word[w] = W_SLEEPING :: else fi
        };
#endif
        if
        :: ret != W_WAITING && ret != W_SLEEPING -> break
        :: timed && ret == W_SLEEPING ->     /* the deadline passed */
            atomic {                         /* CAS SLEEPING -> WAITING */
                ret = word[w];
                if
                :: ret == W_SLEEPING -> word[w] = W_WAITING; ret = W_WAITING
                :: else
                fi
            };
            break
        :: ret == W_WAITING || ret == W_SLEEPING -> park(w, timed)
        fi
    od
}

/* ------------------------------------------------------------ futures */

/* fut_complete: done, then the waiters (taken under the lock) get DONE.
 * A suspend node's token is the resumer's from the moment done is set. */
inline fut_complete(q, n) {
    atomic {
        flock[n] == 0 ->
        assert(!fdone[n]);
        fdone[n] = 1;
        fc_w = fwaiter[n];
        fwaiter[n] = 0;
        if :: KIND(n) == K_SUSP -> GIVE(q) :: else fi
    };
    if :: fc_w -> signal(q, n, W_DONE); fc_w = 0 :: else fi
}

/* fnode_take_waiter: under the future's lock, the first waiter (if any)
 * gets the token; it stays on the list. */
inline fut_take_waiter(q, n, found) {
    atomic { flock[n] == 0 -> flock[n] = 1; tw_w = fwaiter[n] };
    if :: tw_w -> signal(q, n, W_TOKEN) :: else fi;
    atomic { flock[n] = 0; found = tw_w; tw_w = 0 }
}

/* ------------------------------------------------------------ the list */

/* dsy_queue_push: created = 1 if the push found the queue idle (the pusher
 * now holds the new token). */
inline push(q, n) {
#ifdef BUG_DOUBLE_TOKEN
    pv = tail[q];
    atomic {
#else
    atomic {
        pv = tail[q];
#endif
        assert(!qfreed[q]);
        tail[q] = n;
        if
        :: pv == NIL -> TAKE(q); head[q] = n; created = 1
        :: else -> created = 0
        fi
    };
    if
    :: pv != NIL -> atomic { next[pv] = n; pv = 0 }
    :: else
    fi
}

/* advance, then a job's finish (which frees it: folded in): nx = the node
 * after the finished head n, or NIL if the CAS tail: n -> NIL made the
 * queue idle (the token is gone). A sync node's finish is finish_sync. */
inline advance(q, n, nx) {
    atomic {
        ALIVE(n);
        nx = next[n];
        if :: nx != NIL && KIND(n) != K_SYNC -> finished[n] = 1 :: else fi
    };
    if
    :: nx == NIL ->
        atomic {
            if
            :: tail[q] == n ->
                tail[q] = NIL; GIVE(q); adv_idle = 1;
                if :: KIND(n) != K_SYNC -> finished[n] = 1 :: else fi
            :: else -> adv_idle = 0
            fi
        };
        if
        :: adv_idle -> adv_idle = 0; went_idle(q)
        :: else ->
            atomic {                          /* wait_next */
                next[n] != NIL -> nx = next[n];
                if :: KIND(n) != K_SYNC -> finished[n] = 1 :: else fi
            }
        fi
    :: else
    fi
}

/* sync_finish: the waiter gets DONE */
inline finish_sync(q, n) {
    if :: KIND(n) == K_SYNC -> signal(q, n, W_DONE) :: else fi
}

/* -------------------------------------------------------- the token */

/* dsy_sched_submit: from inside a job on a worker, into its next slot (an
 * entry there before goes to the run list); else to the run list. A closed
 * scheduler orphans the entry (queue_runnable_orphan). */
inline submit(q) {
#ifdef SCHED_CLOSED
    atomic {
        cl_s = qstate[q];
        assert(cl_s & LINKED);
        qstate[q] = cl_s & ~LINKED
    };
    if :: !(cl_s & READY) -> unref(q) :: else fi;
    cl_s = 0
#else
    sb_r = q + 1;
#if NW > 0
    if
    :: injob -> atomic { sb_old = nextq[me]; nextq[me] = sb_r; sb_r = sb_old; sb_old = 0 }
    :: else
    fi;
#endif
    if
    :: sb_r != 0 -> atomic { runlist!sb_r; sb_r = 0 }
    :: else
    fi
#endif
}

/* give_first_waiter: hands the token to the waiter of the first node from
 * the head that has one; found = 0 if none. */
inline give_first_waiter(q, found) {
    atomic { found = 0; gw_n = head[q] };
    do
    :: if
        :: KIND(gw_n) == K_SYNC -> ALIVE(gw_n); signal(q, gw_n, W_TOKEN); found = 1; break
#ifdef HAS_FUT
        :: KIND(gw_n) == K_FUT || KIND(gw_n) == K_SUSP ->
            ALIVE(gw_n);
            fut_take_waiter(q, gw_n, found);
            if :: found -> break :: else fi
#endif
        :: else
        fi;
        atomic { ALIVE(gw_n); gw_nx = next[gw_n] };
        if
        :: gw_nx == NIL ->
            if
            :: tail[q] == gw_n -> break
            :: else -> atomic { next[gw_n] != NIL -> gw_nx = next[gw_n] }
            fi
        :: else
        fi;
        gw_n = gw_nx
    od;
    gw_n = 0; gw_nx = 0
}

/* dsy_token_place: the holder gives the token to the first waiter, or to
 * the scheduler (READY | LINKED; an entry is submitted unless one exists). */
inline token_place(q, has_ref) {
    atomic {
        MINE(q);
        assert(tail[q] != NIL && !qfreed[q]);
        tp_s = qstate[q]
    };
    /* A listed entry keeps the token's reference: a token without one of
     * its own is placed with one CAS, and q is not touched after it. */
    if
    :: !has_ref && (tp_s & (LINKED | BSLEEP)) == LINKED && tp_s < WAITER ->
        atomic {
            if
            :: qstate[q] == tp_s -> qstate[q] = tp_s | READY; GIVE(q); tp_found = 1; tp_ok = 1
            :: else -> tp_s = qstate[q]
            fi
        }
    :: else
    fi;
    if
    :: tp_ok -> skip
    :: else ->
    atomic { if :: !has_ref -> assert(refs[q] > 0); refs[q]++ :: else fi };  /* ref */
    do
    :: if
        :: tp_s >= WAITER ->
            give_first_waiter(q, tp_found);
            if :: tp_found -> break :: else fi
        :: else
        fi;
        atomic {
            if
            :: qstate[q] == tp_s -> qstate[q] = tp_s | READY | LINKED; GIVE(q); tp_ok = 1
            :: else -> tp_s = qstate[q]
            fi
        };
        if :: tp_ok -> break :: else fi
    od;
    if :: !tp_found && (tp_s & BSLEEP) -> wake_bargers(q) :: else fi;
    if
    :: tp_found
#ifdef BUG_DOUBLE_SUBMIT
    :: else -> submit(q)
#else
    :: !tp_found && (tp_s & LINKED) -> unref(q)   /* the entry has a reference */
    :: !tp_found && !(tp_s & LINKED) -> submit(q)
#endif
    fi
    fi;
    tp_s = 0; tp_found = 0; tp_ok = 0
}

inline push_schedule(q, n) {
    push(q, n);
    if :: created -> created = 0; token_place(q, 0) :: else fi
}

/* ------------------------------------------------------------ running */

/* run_node: runs node n's job with the token held; pk = 1 if it parked
 * (the token left with it). A job may desync onto another queue. */
inline run_node(q, n, pk) {
    pk = 0;
    if
    :: KIND(n) == K_JOB ->
        atomic { job_runs(q, n) };
#ifdef HAS_ACT
        if
        :: ACT(n) != 0 ->
            push_schedule(QOF(ACT(n)), ACT(n));
            unref(QOF(ACT(n)))               /* the job's handle on that queue */
        :: else
        fi
#endif
    :: KIND(n) == K_SYNC -> atomic { head[q] = n; job_runs(q, n) }
#ifdef HAS_FUT
    :: KIND(n) == K_FUT ->
        /* its job returns a ready future: complete `out` */
        atomic { head[q] = n; job_runs(q, n) };
        fut_complete(q, n)
    :: KIND(n) == K_SUSP ->
        if
        :: atomic { phase[n] == P_START -> head[q] = n; job_runs(q, n); phase[n] = P_SUSPENDED };
            qstate[q] = qstate[q] | SUSPENDED;   /* dsy_queue_mark_suspended */
            fut_complete(q, n);                  /* the resumer takes the token */
            pk = 1
        :: atomic { phase[n] == P_DONE -> MINE(q); head[q] = n }   /* resumed */
        fi
#endif
    fi
}

/* queue_run: runs the queue until idle or parked, or `limit` jobs ran
 * (limit > 0; more = 1: the caller still holds the token). */
inline queue_run(q, limit, more) {
    atomic { MINE(q); more = 0; qr_ran = 0; qr_n = head[q] };
    do
    :: run_node(q, qr_n, qr_pk);
        if :: qr_pk -> qr_pk = 0; break :: else fi;
        advance(q, qr_n, qr_nx);
        finish_sync(q, qr_n);
        if :: qr_nx == NIL -> unref(q); break :: else fi;
        qr_n = qr_nx;
        qr_ran++;
        if :: limit && qr_ran >= limit -> atomic { head[q] = qr_n; more = 1 }; break :: else fi
    od;
    qr_n = 0; qr_nx = 0; qr_ran = 0
}

/* combine_sleepers: runs up to COMBINE_MAX sleeping syncers' jobs from n
 * on; n becomes the new head, or NIL if the queue went idle. */
inline combine_sleepers(q, n) {
    cb_i = 0;
    do
    :: cb_i < COMBINE_MAX && KIND(n) == K_SYNC ->
        atomic { ALIVE(n); cb_w = word[n] };
        if
        :: cb_w == W_SLEEPING ->
            cb_w = 0;
            run_node(q, n, cb_pk);
            advance(q, n, cb_nx);
            finish_sync(q, n);
            n = cb_nx;
            cb_i++;
            if :: n == NIL -> break :: else fi
        :: else -> break
        fi
    :: else -> break
    od;
    cb_i = 0; cb_w = 0; cb_nx = 0
}

/* dsy_queue_drain_until: with the token (and a reference) held, runs the
 * queue up to and including target, then places the token; res = 0 if the
 * queue parked first. */
inline drain_until(q, target, res) {
    atomic { MINE(q); du_h = head[q] };
    do
    :: run_node(q, du_h, du_pk);
        if :: du_pk -> du_pk = 0; res = 0; break :: else fi;
        advance(q, du_h, du_nx);
        finish_sync(q, du_h);
        if :: du_nx == NIL -> unref(q); res = 1; break :: else fi;
        if
        :: du_h == target ->
            combine_sleepers(q, du_nx);
            if
            :: du_nx == NIL -> unref(q)
            :: else -> atomic { head[q] = du_nx }; token_place(q, 1)
            fi;
            res = 1;
            break
        :: else -> du_h = du_nx
        fi
    od;
    du_h = 0; du_nx = 0
}

/* dsy_queue_wait_node: counts itself a waiter, then steals a READY token
 * or sleeps on the word until DONE or TOKEN; done = 0 if timed out. */
inline wait_node(q, n, w, timed, done) {
    atomic {
        assert(!qfreed[q]);
        qstate[q] = qstate[q] + WAITER;
        wn_s = qstate[q];
        done = 0
    };
    do
    :: if
        :: (wn_s & READY) ->
            atomic {                          /* steal */
                if
                :: qstate[q] == wn_s -> qstate[q] = wn_s & ~READY; TAKE(q); wn_ok = 1
                :: else -> wn_s = qstate[q]; wn_ok = 0
                fi
            };
            if :: wn_ok && (wn_s & LINKED) -> ref(q) :: else fi
        :: else ->
            wait_word(w, timed, wn_w);
            if
            :: wn_w == W_DONE -> done = 1; break
            :: wn_w == W_TOKEN -> atomic { word[w] = W_WAITING; TAKE(q); wn_ok = 1 }
            :: else -> break                  /* timed out */
            fi
        fi;
        if
        :: wn_ok ->                           /* the token is ours */
            drain_until(q, n, wn_ok);
            if :: wn_ok -> done = 1; break :: else fi;
            wn_s = qstate[q]
        :: else
        fi
    od;
    atomic {
        assert(qstate[q] >= WAITER);
        qstate[q] = qstate[q] - WAITER;
        wn_s = 0; wn_w = 0; wn_ok = 0
    };
#ifndef BUG_EARLY_RETURN
    /* A drain that found the queue idle before reaching n means another
     * thread unlinked n and may not have called its finish yet: the word
     * (on the waiter's stack) must outlive that DONE. */
    if
    :: done -> wait_word(w, 0, wn_w); assert(wn_w == W_DONE); wn_w = 0
    :: else
    fi
#endif
}

/* ------------------------------------------------------ the operations */

/* dsy_desync */
inline desync(q, n) {
    push_schedule(q, n)
}

/* sync_wait_outside: counts itself among the bargers and sets BARGE in one
 * CAS (with the count full it is not counted and sets SAT instead). Then,
 * until it takes the queue or gives up: unless READY, it looks at tail and
 * takes an idle queue; else either its watch saw the queue idle (it sets
 * BARGE and looks again), or it sets BSLEEP (and SAT if uncounted), looks
 * once more, and sleeps on the state word until unparked (the futex
 * compares the word with what the fetch-or returned). It may give up at any
 * round (the time limit) and queue its node; a sleep itself has no timeout
 * here, so a lost wake-up is a thread stuck in it. The last counted barger
 * to leave clears BARGE and BSLEEP unless SAT is set. */
inline barge(q, n) {
    atomic {
        if
        :: (qstate[q] & BARGERS) == BARGERS -> bg_c = 0;
#ifndef BUG_BARGE_NO_SAT
            qstate[q] = qstate[q] | BSAT;
#endif
            qstate[q] = qstate[q] | BARGE
        :: else -> bg_c = 1; qstate[q] = (qstate[q] + BARGER) | BARGE
        fi;
        bg_s = qstate[q]
    };
    do
    ::
        if :: bg_s & READY -> break :: else fi;
        if
        :: tail[q] == NIL ->
            atomic { if :: tail[q] == NIL -> tail[q] = n; TAKE(q); sy_idle = 1 :: else fi }
        :: else
        fi;
        if :: sy_idle -> break :: else fi;
        /* (a watch that saw the queue idle sets BARGE and looks again:
         * the same as a sleep that returns at once, below) */
        if
        :: break                                    /* the time limit */
        :: atomic {
               qstate[q] = qstate[q] | BARGE | BSLEEP;
#ifndef BUG_BARGE_NO_SAT
               if :: !bg_c -> qstate[q] = qstate[q] | BSAT :: else fi;
#endif
               bg_s = qstate[q]
           };
#ifndef BUG_BARGE_LOOK_FIRST
            if :: bg_s & READY -> break :: else fi;
            if
            :: tail[q] == NIL ->
                atomic { if :: tail[q] == NIL -> tail[q] = n; TAKE(q); sy_idle = 1 :: else fi }
            :: else
            fi;
            if :: sy_idle -> break :: else fi;
#endif
            /* (the time limit may end the wait here too, as above) */
            atomic { if :: qstate[q] == bg_s -> bparked[_pid] = 1 :: else fi };
            (bparked[_pid] == 0);
            atomic { qstate[q] = qstate[q] | BARGE; bg_s = qstate[q] }
        fi
    od;
    if
    :: bg_c ->
        atomic {
            qstate[q] = qstate[q] - BARGER;
#ifdef BUG_BARGE_CLEAR_ANY
            qstate[q] = qstate[q] & ~(BARGE | BSLEEP)
#else
            if
            :: !(qstate[q] & (BARGERS | BSAT)) -> qstate[q] = qstate[q] & ~(BARGE | BSLEEP)
            :: else
            fi
#endif
        }
    :: else
    fi;
    bg_s = 0;
    bg_c = 0
}

/* dsy_sync (not inside a job: no chain) */
inline sync(q, n) {
    atomic {                                  /* idle: CAS tail NIL -> n */
        assert(!qfreed[q]);
        if :: tail[q] == NIL -> tail[q] = n; TAKE(q); sy_idle = 1 :: else fi
    };
    if
    :: !sy_idle && !(qstate[q] & READY) ->
        /* the pre-spin: a look at tail, then the CAS */
        if
        :: tail[q] == NIL ->
            atomic { if :: tail[q] == NIL -> tail[q] = n; TAKE(q); sy_idle = 1 :: else fi }
        :: else
        fi;
        /* waits outside only while no queued node is pending (counts that
         * the model leaves out): either way */
        if :: !sy_idle -> barge(q, n) :: !sy_idle -> skip :: else fi
    :: else
    fi;
    if
    :: sy_idle ->
        atomic { head[q] = n; job_runs(q, n) };
        atomic {                              /* CAS tail n -> NIL */
            if
            :: tail[q] == n -> tail[q] = NIL; GIVE(q); sy_ok = 1
            :: else -> sy_ok = 0
            fi
        };
        if
        :: sy_ok -> sy_ok = 0; went_idle(q); gone[n] = 1
        :: else ->
            atomic { next[n] != NIL -> sy_nx = next[n]; gone[n] = 1 };
            combine_sleepers(q, sy_nx);
            if
            :: sy_nx != NIL -> atomic { head[q] = sy_nx; sy_nx = 0 }; token_place(q, 0)
            :: else
            fi
        fi;
        sy_idle = 0
    :: else ->
        push(q, n);
        if
        :: created -> created = 0; ref(q); drain_until(q, n, res)
        :: else -> wait_node(q, n, n, 0, res)
        fi;
        atomic { gone[n] = 1; res = 0 }
    fi
}

/* desync_future_wait_for on the future of node n (future_desync), with a
 * timeout if timed */
inline fut_wait(q, n, timed) {
    do
    :: atomic {
            flock[n] == 0 ->
            if
            :: fdone[n] -> fw_st = 1
            :: else ->                        /* on the list, and a queue reference */
                word[n] = W_WAITING; gone[n] = 0; fwaiter[n] = 1; fw_st = 0;
                assert(refs[q] > 0 && !qfreed[q]); refs[q]++
            fi
        };
        if :: fw_st -> fw_st = 0; break :: else fi;
        wait_node(q, n, n, timed, fw_done);
        if
        :: !fw_done ->
            /* timed out: leave the list; a token handed to us meanwhile
             * is passed on */
#ifdef BUG_WAITER_NOT_REMOVED
            fw_rm = 1;
#else
            atomic { flock[n] == 0 -> fw_rm = fwaiter[n]; fwaiter[n] = 0 };
#endif
            if :: !fw_rm -> wait_word(n, 0, fw_w) :: else fi;
            fw_w = word[n];
#ifndef BUG_LEFT_WAITER
            if :: fw_w == W_TOKEN -> atomic { TAKE(q) }; token_place(q, 1) :: else fi;
#endif
            unref(q);
            if
            :: fw_w == W_DONE -> atomic { gone[n] = 1; fw_w = 0; fw_rm = 0 }
            :: else -> atomic { gone[n] = 1; fw_w = 0; fw_rm = 0 }; break   /* DESYNC_ETIMEDOUT */
            fi
        :: else -> fw_done = 0; unref(q)
        fi
    od;
    gone[n] = 1
}

/* desync_queue_release: run_orphaned + dsy_queue_unref. With a live
 * scheduler READY implies LINKED (only an orphaned entry leaves READY
 * alone), so run_orphaned finds nothing to run: asserted, and the loop is
 * left out (a smaller verifier) except for the closed scheduler. */
inline release(q) {
#ifndef SCHED_CLOSED
    atomic { assert(!((qstate[q] & READY) && !(qstate[q] & LINKED))) };
#else
    ro_s = qstate[q];
    do
    :: (ro_s & READY) && !(ro_s & LINKED) ->
        atomic {                              /* steal */
            if
            :: qstate[q] == ro_s -> qstate[q] = ro_s & ~READY; TAKE(q); ro_ok = 1
            :: else -> ro_s = qstate[q]; ro_ok = 0
            fi
        };
        if
        :: ro_ok -> ro_ok = 0; queue_run(q, 0, more); ro_s = qstate[q]
        :: else
        fi
    :: else -> break
    od;
    ro_s = 0;
#endif
    unref(q)
}

/* desync_resumer_resume */
inline resume(q, n) {
    atomic { fdone[n] -> TAKE(q); phase[n] = P_DONE };
    atomic { assert(qstate[q] & SUSPENDED); qstate[q] = qstate[q] & ~SUSPENDED };
    token_place(q, 1)
}

/* ------------------------------------------------------------ threads */

#if NW > 0
/* worker_main: find_work (an idle worker waits for the run list, or takes
 * over the other worker's next slot), then run_work with
 * queue_runnable_run / claim_entry / queue_runnable_requeue. */
proctype worker(byte wid) {
    LOCALS;
    byte r;
    bit owned;
    me = wid;
end_idle:
    if
    :: runlist?r
#if NW > 1
    :: atomic { nextq[1 - me] != 0 -> r = nextq[1 - me]; nextq[1 - me] = 0 }
#endif
    fi;
    /* run_work */
    do
    :: injob = 1;
        if
        :: owned -> owned = 0; queue_run(r - 1, BATCH, more)
        :: else ->
            atomic {                          /* claim_entry */
                assert(!qfreed[r - 1]);
                cl_s = qstate[r - 1];
                assert(cl_s & LINKED);
                qstate[r - 1] = cl_s & ~(LINKED | READY);
#ifdef BUG_STALE_ENTRY_RUNS
                cl_s = cl_s | READY;
#endif
                if :: (cl_s & READY) -> TAKE(r - 1) :: else fi
            };
            if
            :: (cl_s & READY) -> cl_s = 0; queue_run(r - 1, BATCH, more)
            :: else -> cl_s = 0; unref(r - 1)
            fi
        fi;
        injob = 0;
        if
        :: more ->
            more = 0;
            if
            :: atomic { len(runlist) == 0 && nextq[me] == 0 -> owned = 1 }
            :: else -> token_place(r - 1, 1)   /* queue_runnable_requeue */
            fi
        :: else
        fi;
        if
        :: owned
        :: else ->
            atomic { r = nextq[me]; nextq[me] = 0 };
            if :: r == 0 -> break :: else fi
        fi
    od;
    goto end_idle
}
#endif

/* ------------------------------------------------- the configurations */

#if CONFIG == 1
#define NPROD 3
proctype p1() { LOCALS; desync(0, 1); desync(0, 2); release(0); ndone++ }
proctype p2() { LOCALS; sync(0, 3); release(0); ndone++ }
proctype p3() { LOCALS; sync(0, 4); release(0); ndone++ }
inline start() {
    refs[0] = NPROD + 1;
    run worker(0); run p1(); run p2(); run p3()
}
#elif CONFIG == 2
#define NPROD 2
/* desync_queue_suspend (node 1), then a job; the resumer gets the resumer
 * from the suspend's future once it completes */
proctype p1() { LOCALS; desync(0, 1); desync(0, 2); release(0); ndone++ }
proctype resumer() { LOCALS; resume(0, 1) }
/* future_desync (node 3), release the queue, then desync_future_wait_for
 * with a timeout (the wait's own reference keeps the queue) */
proctype p2() { LOCALS; desync(0, 3); release(0); fut_wait(0, 3, 1); ndone++ }
inline start() {
    refs[0] = NPROD + 1;
    run worker(0); run p1(); run resumer(); run p2()
}
#elif CONFIG == 3
#define NPROD 2
proctype p1() { LOCALS; desync(0, 1); desync(0, 2); desync(0, 3); release(0); ndone++ }
proctype p2() { LOCALS; sync(1, 6); release(1); ndone++ }
inline start() {
    refs[0] = 2;  /* P1, init */
    refs[1] = 3;  /* P2, job 1, init */
    refs[2] = 2;  /* job 2, init */
    run worker(0); run worker(1); run p1(); run p2()
}
#elif CONFIG == 4
#define NPROD 3
proctype p1() { LOCALS; desync(0, 1); desync(0, 2); release(0); ndone++ }
proctype p2() { LOCALS; sync(0, 3); release(0); ndone++ }
proctype p3() { LOCALS; desync(0, 4); release(0); ndone++ }
inline start() {
    refs[0] = NPROD + 1;
    run p1(); run p2(); run p3()
}
#endif

/* Starts the threads; once every producer returned, releases the last
 * handles, waits until every queue is freed (no token, entry or node left)
 * and checks that every job ran. */
init {
    LOCALS;
    byte i;
    atomic { start() };
    (ndone == NPROD);
    i = 0;
    do
    :: i < NQ -> release(i); i++
    :: else -> break
    od;
    i = 0;
    do
    :: i < NQ -> (qfreed[i]); i++
    :: else -> break
    od;
    assert(nran == NN && len(runlist) == 0)
}
