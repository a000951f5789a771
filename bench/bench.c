/*
 * libdesync benchmarks: workloads W1..W8 and programs R1, R2 (defined in
 * bench/README.md), each run beside its hand-written baseline in the same
 * process and the same run, and the machine-limit probes P1, P2 (run first,
 * and again at the end). The targets of issue 10 are printed last.
 *
 *   bench [P1 P2 W1 ... W8 W3b R1 R2 C3 C6 C2 CM IB]   no argument: everything
 *   (C3 C6 C2 CM: the curves of curves.c, also written as CSV files)
 *   BENCH_RUNS=n           measured runs per variant, after 1 warm-up (5)
 *   BENCH_CURVE_RUNS=n     measured runs per variant and point of the curves (3)
 *   BENCH_SCALE=x          multiplies every iteration count (1.0)
 *   BENCH_TIMEOUT=s        one run longer than this is reported as a hang
 *                          (150, multiplied by BENCH_SCALE when above 1)
 *   BENCH_CSV_DIR=dir      where the curves' CSV files go (bench-csv beside
 *                          this program: build/bench-csv for build/bench)
 *
 * A watchdog ends the program with a message naming the workload, variant
 * and run if one run exceeds its time limit; a crash names them too. W6 and
 * the W8 memory figures run in fresh child processes (fork + exec of this
 * binary with --child), which report through a pipe.
 */
#include "bench.h"

#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sched.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define SETTLE_MS 10     /* pause between runs: lets idle threads settle */

int g_runs = 5;
int g_curve_runs = 3;
int g_skip_warmup;
double g_scale = 1.0;
static unsigned g_timeout_s = 150;
_Atomic uint64_t g_progress;

static int g_is_child;
static pthread_mutex_t g_wd_m = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t g_wd_cv;
static uint64_t g_wd_deadline; /* 0: no run in progress */
static uint64_t g_progress_total;
static char g_phase_base[96];
static char g_phase[160] = "startup";

/* ----------------------------------------------------------- utilities */

uint64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

void sleep_ms(unsigned ms) {
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0) {
    }
}

uint64_t scaled(uint64_t n) {
    double v = (double)n * g_scale;
    return v < 1.0 ? 1 : (uint64_t)(v + 0.5);
}

static uint64_t g_run_ops; /* ops of the run in progress (0: unknown) */

void count_ops(uint64_t ops) {
    g_run_ops = ops;
}

sample_t per_op(uint64_t ns, uint64_t ops) {
    count_ops(ops);
    return (sample_t){(double)ns / (double)ops, NAN, NAN};
}

uint64_t cpu_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* CPU time of the waited-for children so far (ns). */
static uint64_t children_cpu_ns(void) {
    struct rusage ru;
    getrusage(RUSAGE_CHILDREN, &ru);
    return ((uint64_t)ru.ru_utime.tv_sec + (uint64_t)ru.ru_stime.tv_sec) * 1000000000u +
           ((uint64_t)ru.ru_utime.tv_usec + (uint64_t)ru.ru_stime.tv_usec) * 1000u;
}

/* One run of v, with its CPU time per op (whole call: setup and checks
 * included; a child process's CPU counts once it has been waited for). */
static sample_t run_once(const variant_t *v) {
    g_run_ops = 0;
    uint64_t c0 = cpu_ns() + children_cpu_ns();
    sample_t s = v->fn(v->n);
    uint64_t c1 = cpu_ns() + children_cpu_ns();
    s.cpu = g_run_ops ? (double)(c1 - c0) / (double)g_run_ops : NAN;
    return s;
}

/* ------------------------------------------------------ temporary files */

static char g_tmpdir[64];

const char *bench_tmpdir(void) {
    if (!g_tmpdir[0]) {
        char t[] = "/tmp/desync-bench-XXXXXX";
        if (!mkdtemp(t))
            die("mkdtemp(%s): %s", t, strerror(errno));
        snprintf(g_tmpdir, sizeof g_tmpdir, "%s", t);
    }
    return g_tmpdir;
}

/* Removes the files in the directory (it has no subdirectories), then it. */
void bench_tmp_cleanup(void) {
    if (!g_tmpdir[0])
        return;
    DIR *dir = opendir(g_tmpdir);
    if (dir) {
        struct dirent *e;
        char path[512];
        while ((e = readdir(dir)) != NULL) {
            if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
                continue;
            snprintf(path, sizeof path, "%s/%s", g_tmpdir, e->d_name);
            unlink(path);
        }
        closedir(dir);
    }
    rmdir(g_tmpdir);
    g_tmpdir[0] = 0;
}

void spin_step(uint64_t *spins) {
    if (++*spins % SPIN_YIELD_EVERY == 0)
        sched_yield();
}

_Noreturn void die(const char *fmt, ...) {
    va_list ap;
    fflush(stdout);
    fprintf(stderr, "\nbench: ERROR in %s: ", g_phase);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    fflush(NULL);
    bench_tmp_cleanup();
    _exit(1);
}

void expect_eq(const char *what, uint64_t got, uint64_t want) {
    if (got != want)
        die("check failed: %s is %" PRIu64 ", expected %" PRIu64, what, got, want);
}

long status_kib(const char *key) {
    FILE *f = fopen("/proc/self/status", "r");
    if (!f)
        die("cannot open /proc/self/status");
    char line[256];
    size_t kl = strlen(key);
    long v = -1;
    while (fgets(line, sizeof line, f)) {
        if (strncmp(line, key, kl) == 0 && line[kl] == ':') {
            v = strtol(line + kl + 1, NULL, 10);
            break;
        }
    }
    fclose(f);
    if (v < 0)
        die("no %s in /proc/self/status", key);
    return v;
}

/* ------------------------------------------------ watchdog and crashes */

/* A child's limit is shorter, so that it reports before its parent does. */
static unsigned run_limit_s(void) {
    unsigned s = (unsigned)(g_timeout_s * (g_scale > 1.0 ? g_scale : 1.0));
    return g_is_child ? s - (s + 9) / 10 : s;
}

void phase_begin(uint64_t total, const char *fmt, ...) {
    va_list ap;
    pthread_mutex_lock(&g_wd_m);
    va_start(ap, fmt);
    vsnprintf(g_phase_base, sizeof g_phase_base, fmt, ap);
    va_end(ap);
    snprintf(g_phase, sizeof g_phase, "%s", g_phase_base);
    g_progress_total = total;
    PROGRESS(0);
    g_wd_deadline = now_ns() + (uint64_t)run_limit_s() * 1000000000u;
    pthread_cond_signal(&g_wd_cv);
    pthread_mutex_unlock(&g_wd_m);
}

void phase_step(const char *step) {
    pthread_mutex_lock(&g_wd_m);
    snprintf(g_phase, sizeof g_phase, "%s, %s", g_phase_base, step);
    pthread_mutex_unlock(&g_wd_m);
}

void phase_end(void) {
    pthread_mutex_lock(&g_wd_m);
    g_wd_deadline = 0;
    pthread_mutex_unlock(&g_wd_m);
}

static void *watchdog(void *arg) {
    (void)arg;
    pthread_mutex_lock(&g_wd_m);
    for (;;) {
        if (g_wd_deadline == 0) {
            pthread_cond_wait(&g_wd_cv, &g_wd_m);
            continue;
        }
        if (now_ns() >= g_wd_deadline) {
            fflush(stdout);
            fprintf(stderr,
                    "\nbench: HANG: %s still running after %u s (progress %" PRIu64
                    " of %" PRIu64 ")\n",
                    g_phase, run_limit_s(),
                    atomic_load_explicit(&g_progress, memory_order_relaxed), g_progress_total);
            fflush(NULL);
            bench_tmp_cleanup();
            _exit(3);
        }
        struct timespec ts = {(time_t)(g_wd_deadline / 1000000000u),
                              (long)(g_wd_deadline % 1000000000u)};
        pthread_cond_timedwait(&g_wd_cv, &g_wd_m, &ts);
    }
    return NULL;
}

static void write_str(const char *s) {
    ssize_t r = write(2, s, strlen(s));
    (void)r;
}

static void write_u64(uint64_t v) {
    char b[24];
    int i = 23;
    b[i] = 0;
    do {
        b[--i] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    write_str(b + i);
}

static void on_crash(int sig) {
    write_str("\nbench: CRASH: signal ");
    write_u64((uint64_t)sig);
    write_str(" during ");
    write_str(g_phase);
    write_str(" (progress ");
    write_u64(atomic_load_explicit(&g_progress, memory_order_relaxed));
    write_str(")\n");
    raise(sig); /* SA_RESETHAND: default action now */
}

static void start_guards(void) {
    static const int sigs[] = {SIGSEGV, SIGBUS, SIGABRT, SIGFPE, SIGILL};
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_crash;
    sa.sa_flags = SA_RESETHAND | SA_NODEFER;
    sigemptyset(&sa.sa_mask);
    for (size_t i = 0; i < sizeof sigs / sizeof sigs[0]; i++)
        sigaction(sigs[i], &sa, NULL);

    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    CHECK_PT(pthread_cond_init(&g_wd_cv, &ca));
    pthread_condattr_destroy(&ca);
    pthread_t t;
    CHECK_PT(pthread_create(&t, NULL, watchdog, NULL));
    pthread_detach(t);
}

/* ---------------------------------------------------------- measuring */

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

double median(double *v, int n) {
    qsort(v, (size_t)n, sizeof *v, cmp_double);
    return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

static void print_runs(const char *label, const char *unit, const double *v, double med) {
    printf("    %-34s", label);
    for (int r = 0; r < g_runs; r++)
        printf(" %9.1f", v[r]);
    printf("   median %9.1f %s\n", med, unit);
}

#define MAX_VARIANTS 4
static double g_last_runs[MAX_VARIANTS][MAX_RUNS], g_last_cpu[MAX_VARIANTS];

const double *measured_runs(int i) {
    return g_last_runs[i];
}

double measured_cpu(int i) {
    return g_last_cpu[i];
}

void measure(const char *wl, variant_t *v, int nv) {
    static double ns[MAX_VARIANTS][MAX_RUNS], bytes[MAX_VARIANTS][MAX_RUNS],
        cpu[MAX_VARIANTS][MAX_RUNS];
    if (nv > MAX_VARIANTS)
        die("too many variants");
    for (int i = 0; i < nv && !g_skip_warmup; i++) {
        phase_begin(v[i].n, "%s %s warm-up", wl, v[i].name);
        run_once(&v[i]);
        phase_end();
        sleep_ms(SETTLE_MS);
    }
    for (int r = 0; r < g_runs; r++) {
        for (int i = 0; i < nv; i++) {
            phase_begin(v[i].n, "%s %s run %d/%d", wl, v[i].name, r + 1, g_runs);
            sample_t s = run_once(&v[i]);
            phase_end();
            ns[i][r] = s.ns;
            bytes[i][r] = s.bytes;
            cpu[i][r] = s.cpu;
            sleep_ms(SETTLE_MS);
        }
    }
    for (int i = 0; i < nv; i++) {
        double shown[MAX_RUNS];
        memcpy(shown, ns[i], sizeof(double) * (size_t)g_runs);
        memcpy(g_last_runs[i], ns[i], sizeof(double) * (size_t)g_runs);
        v[i].med_ns = median(ns[i], g_runs);
        char label[64];
        snprintf(label, sizeof label, "%s (n=%" PRIu64 ")", v[i].name, v[i].n);
        print_runs(label, "ns", shown, v[i].med_ns);
        v[i].med_bytes = NAN;
        if (!isnan(bytes[i][0])) {
            memcpy(shown, bytes[i], sizeof(double) * (size_t)g_runs);
            v[i].med_bytes = median(bytes[i], g_runs);
            print_runs("  bytes/object", "B", shown, v[i].med_bytes);
        }
        g_last_cpu[i] = NAN;
        if (!isnan(cpu[i][0])) {
            memcpy(shown, cpu[i], sizeof(double) * (size_t)g_runs);
            g_last_cpu[i] = median(cpu[i], g_runs);
            print_runs("  cpu", "ns", shown, g_last_cpu[i]);
        }
    }
}

/* ------------------------------------------------------ child processes */

child_result_t run_child(const char *what, uint64_t n) {
    int p[2];
    char nbuf[32];
    snprintf(nbuf, sizeof nbuf, "%" PRIu64, n);
    if (pipe(p) != 0)
        die("pipe: %s", strerror(errno));
    fflush(NULL);
    pid_t pid = fork();
    if (pid < 0)
        die("fork: %s", strerror(errno));
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        close(p[0]);
        if (dup2(p[1], 1) < 0)
            _exit(127);
        close(p[1]);
        execl("/proc/self/exe", "bench", "--child", what, nbuf, (char *)NULL);
        _exit(127);
    }
    close(p[1]);
    char buf[256];
    size_t len = 0;
    while (len < sizeof buf - 1) {
        ssize_t r = read(p[0], buf + len, sizeof buf - 1 - len);
        if (r == 0)
            break;
        if (r < 0) {
            if (errno == EINTR)
                continue;
            die("read from child: %s", strerror(errno));
        }
        len += (size_t)r;
    }
    buf[len] = 0;
    close(p[0]);
    int st;
    while (waitpid(pid, &st, 0) < 0)
        if (errno != EINTR)
            die("waitpid: %s", strerror(errno));
    if (WIFSIGNALED(st))
        die("child '%s %s' was killed by signal %d (%s)", what, nbuf, WTERMSIG(st),
            strsignal(WTERMSIG(st)));
    if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
        die("child '%s %s' failed with exit status %d", what, nbuf, WEXITSTATUS(st));
    child_result_t c;
    if (sscanf(buf, "%lf %lf %lf %lf", &c.ns, &c.rss0_kib, &c.hwm_kib, &c.extra) != 4)
        die("child '%s %s' printed '%s'", what, nbuf, buf);
    return c;
}

static int child_main(const char *what, const char *nstr) {
    char *end;
    uint64_t n = strtoull(nstr, &end, 10);
    if (*end || n == 0)
        die("bad child count '%s'", nstr);
    phase_begin(n, "child %s %" PRIu64, what, n);
    child_result_t c;
    if (strcmp(what, "w6-desync") == 0)
        c = w6_desync_child(n);
    else if (strcmp(what, "w6-mutex") == 0)
        c = w6_mutex_child(n);
    else if (strcmp(what, "w8-rss") == 0)
        c = w8_rss_child(n);
    else if (strcmp(what, "ib-desync") == 0)
        c = ib_desync_child(n);
    else if (strcmp(what, "ib-mutex") == 0)
        c = ib_mutex_child(n);
    else if (strcmp(what, "tl-desync") == 0)
        c = tl_desync_child(n);
    else if (strcmp(what, "tl-sleep") == 0)
        c = tl_sleep_child(n);
    else
        die("unknown child '%s'", what);
    phase_end();
    printf("%.4f %.0f %.0f %.0f\n", c.ns, c.rss0_kib, c.hwm_kib, c.extra);
    fflush(stdout);
    return 0;
}

/* ------------------------------------------------------------- report */

static row_t g_rows[] = {
    {.id = "P1", .name = "cache-line", .unit = "round trip"},
    {.id = "P2", .name = "spsc-ring", .unit = "item"},
    {.id = "W1", .name = "sync-idle", .unit = "op"},
    {.id = "W2", .name = "desync-stream", .unit = "job"},
    {.id = "W3", .name = "contended-sync", .unit = "op"},
    {.id = "W3b", .name = "contended-8", .unit = "op"},
    {.id = "W4", .name = "mixed", .unit = "job"},
    {.id = "W5", .name = "ping-pong", .unit = "round trip"},
    {.id = "W6", .name = "many-objects", .unit = "object"},
    {.id = "W7", .name = "future", .unit = "op"},
    {.id = "W8", .name = "pipe", .unit = "item"},
    {.id = "R1", .name = "logger", .unit = "line"},
    {.id = "R2", .name = "word-count", .unit = "line"},
    {.id = "W9", .name = "sync-all-idle", .unit = "op"},
    {.id = "R3", .name = "bank", .unit = "transfer"},
    {.id = "C3", .name = "curve-threads", .unit = "op"},
    {.id = "C6", .name = "curve-objects", .unit = "object"},
    {.id = "C2", .name = "curve-producers", .unit = "job"},
    {.id = "CM", .name = "many-on-many", .unit = "op"},
    {.id = "IB", .name = "idle-burn", .unit = "% of a core"},
    {.id = "TL", .name = "timer-lateness", .unit = "timer"},
};

static void (*const g_workloads[])(row_t *) = {
    p1_cache_line,     p2_spsc_ring, w1_sync_idle,  w2_desync_stream, w3_contended_sync,
    w3b_contended_8,   w4_mixed,     w5_ping_pong,  w6_many_objects,  w7_future,
    w8_pipe,           r1_logger,    r2_word_count, w9_sync_all_idle, r3_bank,
    c3_threads,        c6_objects,   c2_producers,  cm_many,          ib_idle_burn,
    tl_timer_lateness,
};

#define NPROBES 2 /* g_rows[0..1]: always run first */

#define NW ((int)(sizeof g_rows / sizeof g_rows[0]))

static void fmt_num(char *buf, size_t len, double v) {
    if (isnan(v))
        snprintf(buf, len, "-");
    else
        snprintf(buf, len, "%.1f", v);
}

static void print_table(void) {
    printf("\n%-20s %-11s %12s %12s %7s %9s %9s  %s\n", "workload", "per", "libdesync ns",
           "baseline ns", "ratio", "lib cpu", "base cpu", "baseline / extra");
    for (int i = 0; i < NW; i++) {
        row_t *r = &g_rows[i];
        if (!r->ran)
            continue;
        char wl[32], lib[16], base[16], ratio[16], lcpu[16], bcpu[16];
        snprintf(wl, sizeof wl, "%s %s", r->id, r->name);
        fmt_num(lib, sizeof lib, r->lib_ns);
        fmt_num(base, sizeof base, r->base_ns);
        fmt_num(lcpu, sizeof lcpu, r->lib_cpu);
        fmt_num(bcpu, sizeof bcpu, r->base_cpu);
        if (isnan(r->lib_ns) || isnan(r->base_ns))
            snprintf(ratio, sizeof ratio, "-");
        else
            snprintf(ratio, sizeof ratio, "%.2f", r->base_ns / r->lib_ns);
        printf("%-20s %-11s %12s %12s %7s %9s %9s  %s\n", wl, r->unit, lib, base, ratio, lcpu,
               bcpu, r->extra);
    }
    printf("\nratio = baseline ns / libdesync ns (above 1: libdesync is faster). Probes (P1, P2)\n"
           "have no libdesync variant: their figure is in the baseline column. lib cpu, base "
           "cpu:\nCPU ns per unit, all threads of the process (a child's for W6), whole run "
           "with its setup;\nabove the wall ns: more than one core was busy.\n"
           "Medians of %d runs after 1 warm-up (probes: of both passes' runs; curves C*: of "
           "%d runs,\nC6 without warm-up); a curve's row shows its largest size.\n",
           g_runs, g_curve_runs);
}

/* BENCH_CSV_DIR, else bench-csv in the directory of this program. */
static const char *csv_dir(void) {
    static char dir[4096];
    const char *e = getenv("BENCH_CSV_DIR");
    if (e && *e)
        return e;
    ssize_t len = readlink("/proc/self/exe", dir, sizeof dir - 16);
    if (len <= 0)
        return "bench-csv";
    dir[len] = 0;
    char *slash = strrchr(dir, '/');
    snprintf(slash ? slash + 1 : dir, 16, "bench-csv");
    return dir;
}

static int usage(void) {
    fprintf(stderr, "usage: bench [P1 P2 W1 W2 W3 W3b W4 ... W8 R1 R2 W9 R3 C3 C6 C2 CM IB TL]\n"
                    "env: BENCH_RUNS (default 5), BENCH_SCALE (default 1.0), BENCH_TIMEOUT "
                    "(seconds per run, default 150),\n"
                    "     BENCH_CURVE_RUNS (runs per point of the curves, default 3),\n"
                    "     BENCH_CSV_DIR (the curves' CSV files; default bench-csv beside "
                    "this program)\n");
    return 2;
}

int main(int argc, char **argv) {
    setvbuf(stdout, NULL, _IOLBF, 0);
    const char *e = getenv("BENCH_RUNS");
    if (e && *e) {
        char *end;
        long v = strtol(e, &end, 10);
        if (*end || v < 1 || v > MAX_RUNS) {
            fprintf(stderr, "bench: BENCH_RUNS must be 1..%d\n", MAX_RUNS);
            return 2;
        }
        g_runs = (int)v;
    }
    e = getenv("BENCH_CURVE_RUNS");
    if (e && *e) {
        char *end;
        long v = strtol(e, &end, 10);
        if (*end || v < 1 || v > MAX_RUNS) {
            fprintf(stderr, "bench: BENCH_CURVE_RUNS must be 1..%d\n", MAX_RUNS);
            return 2;
        }
        g_curve_runs = (int)v;
    }
    e = getenv("BENCH_SCALE");
    if (e && *e) {
        char *end;
        g_scale = strtod(e, &end);
        if (*end || !(g_scale > 0) || g_scale > 1000) {
            fprintf(stderr, "bench: BENCH_SCALE must be a number > 0\n");
            return 2;
        }
    }
    e = getenv("BENCH_TIMEOUT");
    if (e && *e) {
        char *end;
        long v = strtol(e, &end, 10);
        if (*end || v < 2 || v > 86400) {
            fprintf(stderr, "bench: BENCH_TIMEOUT must be 2..86400 seconds\n");
            return 2;
        }
        g_timeout_s = (unsigned)v;
    }
    if (argc >= 2 && strcmp(argv[1], "--child") == 0) {
        g_is_child = 1;
        start_guards();
        if (argc != 4)
            die("usage: bench --child WHAT N");
        return child_main(argv[2], argv[3]);
    }

    int selected[NW] = {0}, any = 0;
    for (int a = 1; a < argc; a++) {
        int found = 0;
        for (int i = 0; i < NW; i++)
            if (strcasecmp(argv[a], g_rows[i].id) == 0)
                selected[i] = found = any = 1;
        if (!found)
            return usage();
    }
    start_guards();
    printf("libdesync benchmarks (workloads: bench/README.md): %d measured runs per variant\n"
           "after 1 warm-up, variants interleaved, BENCH_SCALE %.3g, %ld online cores.\n"
           "Times in ns per op. The probes P1 and P2 run first and again at the end.\n",
           g_runs, g_scale, sysconf(_SC_NPROCESSORS_ONLN));
    uint64_t t0 = now_ns();
    int others = 0;
    for (int i = 0; i < NW; i++) {
        g_rows[i].lib_bytes = NAN;
        g_rows[i].lib_cpu = g_rows[i].base_cpu = NAN;
        g_rows[i].mem_ok = -1;
    }
    for (int i = 0; i < NW; i++) {
        /* The probes always run: the targets are ratios to them. */
        if (any && !selected[i] && i >= NPROBES)
            continue;
        printf("\n%s %s\n", g_rows[i].id, g_rows[i].name);
        g_workloads[i](&g_rows[i]);
        g_rows[i].ran = 1;
        others += i >= NPROBES;
    }
    if (others) {
        printf("\nP1, P2 again at the end of the run\n");
        probes_again(&g_rows[0], &g_rows[1]);
    }
    print_table();
    curves_report(csv_dir());
    print_targets(g_rows, NW);
    bench_tmp_cleanup();
    printf("total time %.1f s\n", (double)(now_ns() - t0) / 1e9);
    return 0;
}
