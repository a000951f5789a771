/*
 * A program as a user writes it, built by .ci/consumers against an
 * *installed* libdesync (pkg-config, find_package, add_subdirectory, the
 * Debian packages) as C11 and C17 with -Wall -Wextra -pedantic -Werror.
 * Prints "consumer ok <version>" and exits 0 when the library works.
 */
#include <desync.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Named like one of the library's internal functions: linking the static
 * archive must not collide with it (the archive exposes no dsy_* names). */
int dsy_queue_push(int x);
int dsy_queue_push(int x) { return x + 1; }

static void add(void *data, void *arg) { *(long *)data += *(const int *)arg; }
static void get(void *data, void *out) { *(long *)out = *(long *)data; }

int main(void) {
    if (desync_version() != DESYNC_VERSION_NUMBER ||
        strcmp(desync_version_string(), DESYNC_VERSION_STRING) != 0) {
        fprintf(stderr, "consumer: headers %s, library %s\n", DESYNC_VERSION_STRING,
                desync_version_string());
        return 1;
    }
    long *sum = calloc(1, sizeof *sum);
    desync_t *d = sum ? desync_new(sum, free) : NULL;
    if (!d)
        return 1;
    for (int i = 1; i <= 100; i++)
        if (desync_desync_copy(d, add, &i, sizeof i) != 0)
            return 1;
    long v = 0;
    if (desync_sync(d, get, &v) != 0 || v != 5050) {
        fprintf(stderr, "consumer: sum %ld, expected 5050\n", v);
        return 1;
    }
    desync_release(d);
    desync_shutdown();
    printf("consumer ok %s\n", desync_version_string());
    return dsy_queue_push(-1);
}
