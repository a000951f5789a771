/*
 * Test runner: runs every test registered in test_list.h (or only those named
 * on the command line), each in its own forked child, one after the other.
 *
 *   run_tests [-l|--list] [--tap] [name...]
 *
 * A child's exit code is the test's return value: 0 passes, TEST_SKIP_CODE
 * (77, as in Automake) skips, anything else fails; a signal or the timeout
 * (seconds from the table times $DESYNC_TEST_TIMEOUT_SCALE) fails the test.
 * Each test gets one line: "PASS name (12 ms)", "FAIL name (why)", or
 * "SKIP name (reason)" where the reason is the one given to TEST_SKIP (a test
 * that just exits with 77 prints "SKIP name"). The run ends with the line
 * "N passed, N failed, N skipped" and exits 1 if anything failed; skipped
 * tests do not fail the run.
 *
 * --tap prints TAP version 13 instead of those lines: "TAP version 13", the
 * plan "1..N", then per test "ok N - name", "not ok N - name" (followed by a
 * "# why" diagnostic line) or "ok N - name # SKIP reason", and the totals as
 * a closing "# N passed, N failed, N skipped" comment.
 * -l/--list prints every test name and runs nothing.
 */
#include <errno.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "test.h"

#define TEST_ENTRY(name, seconds) int test_##name(void);
#include "test_list.h"
#undef TEST_ENTRY

struct test_case {
    const char *name;
    int (*fn)(void);
    double seconds;
};

static const struct test_case tests[] = {
#define TEST_ENTRY(name, seconds) {#name, test_##name, (seconds)},
#include "test_list.h"
#undef TEST_ENTRY
};

#define NTESTS (sizeof tests / sizeof tests[0])

enum result { RESULT_PASS, RESULT_FAIL, RESULT_SKIP };

/* Why a test failed ("TIMEOUT after 10.0 s"), how long it took when it
 * passed ("12 ms"), or its skip reason (possibly empty). */
#define DETAIL_MAX 256

/* A skipping test's reason, written by the forked child (test_skip_reason)
 * into this shared page and read by the runner once the child has exited. */
#define SKIP_REASON_MAX 200
static char *g_skip_reason;

void test_skip_reason(const char *why) {
    if (!why)
        why = "";
    if (g_skip_reason)
        snprintf(g_skip_reason, SKIP_REASON_MAX, "%s", why);
    else
        fprintf(stderr, "skipped: %s\n", why);
}

static void sleep_us(long us) {
    struct timespec ts = {us / 1000000, (us % 1000000) * 1000};
    nanosleep(&ts, NULL);
}

static double timeout_scale(void) {
    const char *s = getenv("DESYNC_TEST_TIMEOUT_SCALE");
    if (!s || !*s)
        return 1.0;
    char *end;
    double v = strtod(s, &end);
    if (end == s || v <= 0) {
        fprintf(stderr, "ignoring bad DESYNC_TEST_TIMEOUT_SCALE=%s\n", s);
        return 1.0;
    }
    return v;
}

/* The skip reason as one line (a TAP directive or a result line must not
 * break), or "" if the test gave none. */
static void take_skip_reason(char *out, size_t size) {
    out[0] = '\0';
    if (!g_skip_reason)
        return;
    snprintf(out, size, "%s", g_skip_reason);
    for (char *p = out; *p; p++)
        if (*p == '\n' || *p == '\r')
            *p = ' ';
}

/* Runs one test in a child; fills detail (see DETAIL_MAX). */
static enum result run_one(const struct test_case *t, double scale, char *detail) {
    double limit_s = t->seconds * scale;
    uint64_t limit_ns = (uint64_t)(limit_s * 1e9);

    detail[0] = '\0';
    if (g_skip_reason)
        g_skip_reason[0] = '\0';

    /* Anything still buffered would otherwise be printed twice. */
    fflush(stdout);
    fflush(stderr);

    uint64_t start = test_now_ns();
    pid_t pid = fork();
    if (pid < 0) {
        snprintf(detail, DETAIL_MAX, "fork: %s", strerror(errno));
        return RESULT_FAIL;
    }
    if (pid == 0) {
        /* Own process group, so a timeout also kills any grandchildren. */
        setpgid(0, 0);
        int rc = t->fn();
        fflush(stdout);
        fflush(stderr);
        /* exit(), not _exit(): leak checkers and atexit handlers must run. */
        exit(rc);
    }
    setpgid(pid, pid); /* also from here, so kill(-pid) works at once */

    int status = 0;
    int timed_out = 0;
    long nap = 50; /* microseconds; grows so long tests cost no CPU */
    for (;;) {
        pid_t r = waitpid(pid, &status, WNOHANG);
        if (r == pid)
            break;
        if (r < 0 && errno != EINTR) {
            snprintf(detail, DETAIL_MAX, "waitpid: %s", strerror(errno));
            return RESULT_FAIL;
        }
        if (test_now_ns() - start > limit_ns) {
            timed_out = 1;
            kill(-pid, SIGKILL);
            kill(pid, SIGKILL);
            while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
            }
            break;
        }
        sleep_us(nap);
        if (nap < 5000)
            nap *= 2;
    }
    /* Reap any grandchildren the test left behind. */
    kill(-pid, SIGKILL);

    unsigned long ms = (unsigned long)((test_now_ns() - start) / 1000000u);
    if (timed_out) {
        snprintf(detail, DETAIL_MAX, "TIMEOUT after %.1f s", limit_s);
        return RESULT_FAIL;
    }
    if (WIFSIGNALED(status)) {
        int sig = WTERMSIG(status);
        snprintf(detail, DETAIL_MAX, "signal %d: %s, %lu ms", sig, strsignal(sig), ms);
        return RESULT_FAIL;
    }
    if (WIFEXITED(status) && WEXITSTATUS(status) == 0) {
        snprintf(detail, DETAIL_MAX, "%lu ms", ms);
        return RESULT_PASS;
    }
    if (WIFEXITED(status) && WEXITSTATUS(status) == TEST_SKIP_CODE) {
        take_skip_reason(detail, DETAIL_MAX);
        return RESULT_SKIP;
    }
    snprintf(detail, DETAIL_MAX, "exit %d, %lu ms", WIFEXITED(status) ? WEXITSTATUS(status) : -1,
             ms);
    return RESULT_FAIL;
}

static void report(int tap, size_t number, const char *name, enum result r, const char *detail) {
    if (tap) {
        switch (r) {
        case RESULT_PASS:
            printf("ok %zu - %s\n", number, name);
            break;
        case RESULT_SKIP:
            printf("ok %zu - %s # SKIP%s%s\n", number, name, detail[0] ? " " : "", detail);
            break;
        case RESULT_FAIL:
            printf("not ok %zu - %s\n# %s: %s\n", number, name, name, detail);
            break;
        }
        return;
    }
    switch (r) {
    case RESULT_PASS:
        printf("PASS %s (%s)\n", name, detail);
        break;
    case RESULT_SKIP:
        if (detail[0])
            printf("SKIP %s (%s)\n", name, detail);
        else
            printf("SKIP %s\n", name);
        break;
    case RESULT_FAIL:
        printf("FAIL %s (%s)\n", name, detail);
        break;
    }
}

static const struct test_case *find(const char *name) {
    for (size_t i = 0; i < NTESTS; i++)
        if (strcmp(tests[i].name, name) == 0)
            return &tests[i];
    return NULL;
}

static void usage(FILE *f, const char *argv0) {
    fprintf(f, "usage: %s [-l|--list] [--tap] [test_name...]\n", argv0);
}

int main(int argc, char **argv) {
    /* Line-buffered so results interleave sensibly with tests' stderr. */
    setvbuf(stdout, NULL, _IOLBF, 0);

    int list = 0, tap = 0;
    const char **names = calloc((size_t)argc, sizeof *names);
    size_t nnames = 0;
    if (!names) {
        fprintf(stderr, "out of memory\n");
        return 2;
    }
    int options_done = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (options_done || a[0] != '-') {
            names[nnames++] = a;
        } else if (strcmp(a, "--") == 0) {
            options_done = 1;
        } else if (strcmp(a, "-l") == 0 || strcmp(a, "--list") == 0) {
            list = 1;
        } else if (strcmp(a, "--tap") == 0) {
            tap = 1;
        } else if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
            usage(stdout, argv[0]);
            free(names);
            return 0;
        } else {
            fprintf(stderr, "unknown option: %s\n", a);
            usage(stderr, argv[0]);
            free(names);
            return 2;
        }
    }

    if (list) {
        for (size_t i = 0; i < NTESTS; i++)
            printf("%s\n", tests[i].name);
        free(names);
        return 0;
    }

    /* Check every name first so a typo does not waste a long run. */
    for (size_t i = 0; i < nnames; i++) {
        if (!find(names[i])) {
            fprintf(stderr, "unknown test: %s (use --list)\n", names[i]);
            free(names);
            return 2;
        }
    }

    void *page = mmap(NULL, SKIP_REASON_MAX, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS,
                      -1, 0);
    if (page != MAP_FAILED)
        g_skip_reason = page; /* else skip reasons go to stderr only */

    double scale = timeout_scale();
    size_t total = nnames ? nnames : NTESTS;
    int passed = 0, failed = 0, skipped = 0;
    if (tap) {
        printf("TAP version 13\n");
        printf("1..%zu\n", total);
    }
    for (size_t i = 0; i < total; i++) {
        const struct test_case *t = nnames ? find(names[i]) : &tests[i];
        char detail[DETAIL_MAX];
        enum result r = run_one(t, scale, detail);
        report(tap, i + 1, t->name, r, detail);
        if (r == RESULT_PASS)
            passed++;
        else if (r == RESULT_SKIP)
            skipped++;
        else
            failed++;
    }
    printf("%s%d passed, %d failed, %d skipped\n", tap ? "# " : "", passed, failed, skipped);
    if (g_skip_reason)
        munmap(g_skip_reason, SKIP_REASON_MAX);
    free(names);
    return failed ? 1 : 0;
}
