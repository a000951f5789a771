/*
 * Test runner: runs every test registered in test_list.h (or only those named
 * on the command line), each in its own forked child, one after the other.
 *
 *   run_tests [-l|--list] [name...]
 *
 * A child's exit code is the test's return value; a signal or the timeout
 * (seconds from the table times $DESYNC_TEST_TIMEOUT_SCALE) fails the test.
 * Ends with the line "N passed, N failed" and exits 1 if anything failed.
 */
#include <errno.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

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

static uint64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
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

/* Runs one test in a child; returns 1 if it passed. */
static int run_one(const struct test_case *t, double scale) {
    double limit_s = t->seconds * scale;
    uint64_t limit_ns = (uint64_t)(limit_s * 1e9);

    /* Anything still buffered would otherwise be printed twice. */
    fflush(stdout);
    fflush(stderr);

    uint64_t start = now_ns();
    pid_t pid = fork();
    if (pid < 0) {
        printf("FAIL %s (fork: %s)\n", t->name, strerror(errno));
        return 0;
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
            printf("FAIL %s (waitpid: %s)\n", t->name, strerror(errno));
            return 0;
        }
        if (now_ns() - start > limit_ns) {
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

    unsigned long ms = (unsigned long)((now_ns() - start) / 1000000u);
    if (timed_out) {
        printf("FAIL %s (TIMEOUT after %.1f s)\n", t->name, limit_s);
        return 0;
    }
    if (WIFSIGNALED(status)) {
        int sig = WTERMSIG(status);
        printf("FAIL %s (signal %d: %s, %lu ms)\n", t->name, sig, strsignal(sig), ms);
        return 0;
    }
    if (WIFEXITED(status) && WEXITSTATUS(status) == 0) {
        printf("PASS %s (%lu ms)\n", t->name, ms);
        return 1;
    }
    printf("FAIL %s (exit %d, %lu ms)\n", t->name, WIFEXITED(status) ? WEXITSTATUS(status) : -1,
           ms);
    return 0;
}

static const struct test_case *find(const char *name) {
    for (size_t i = 0; i < NTESTS; i++)
        if (strcmp(tests[i].name, name) == 0)
            return &tests[i];
    return NULL;
}

int main(int argc, char **argv) {
    /* Line-buffered so results interleave sensibly with tests' stderr. */
    setvbuf(stdout, NULL, _IOLBF, 0);

    if (argc > 1 && (strcmp(argv[1], "-l") == 0 || strcmp(argv[1], "--list") == 0)) {
        for (size_t i = 0; i < NTESTS; i++)
            printf("%s\n", tests[i].name);
        return 0;
    }
    if (argc > 1 && (strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "--help") == 0)) {
        printf("usage: %s [-l|--list] [test_name...]\n", argv[0]);
        return 0;
    }

    /* Check every name first so a typo does not waste a long run. */
    for (int i = 1; i < argc; i++) {
        if (!find(argv[i])) {
            fprintf(stderr, "unknown test: %s (use --list)\n", argv[i]);
            return 2;
        }
    }

    double scale = timeout_scale();
    int passed = 0, failed = 0;
    if (argc > 1) {
        for (int i = 1; i < argc; i++) {
            if (run_one(find(argv[i]), scale))
                passed++;
            else
                failed++;
        }
    } else {
        for (size_t i = 0; i < NTESTS; i++) {
            if (run_one(&tests[i], scale))
                passed++;
            else
                failed++;
        }
    }
    printf("%d passed, %d failed\n", passed, failed);
    return failed ? 1 : 0;
}
