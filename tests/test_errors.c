/*
 * Errors: calls with bad input are refused (and queue nothing), and every
 * error code has its own message.
 */
#include <desync.h>

#include <stdint.h>
#include <string.h>

#include "test.h"

TEST(core_bad_input) {
    int x = 0;
    desync_t *d = desync_new(&x, NULL);
    CHECK(d);
    desync_queue_t *q = desync_queue_new(NULL);
    CHECK(q);
    char buf[8] = {0};

    CHECK_EQ(desync_desync(NULL, noop_job, NULL), DESYNC_EINVAL);
    CHECK_EQ(desync_desync(d, NULL, NULL), DESYNC_EINVAL);
    CHECK_EQ(desync_desync_copy(NULL, noop_job, buf, 1), DESYNC_EINVAL);
    CHECK_EQ(desync_desync_copy(d, NULL, buf, 1), DESYNC_EINVAL);
    CHECK_EQ(desync_desync_copy(d, noop_job, NULL, 1), DESYNC_EINVAL);
    CHECK_EQ(desync_sync(NULL, noop_job, NULL), DESYNC_EINVAL);
    CHECK_EQ(desync_sync(d, NULL, NULL), DESYNC_EINVAL);
    CHECK_EQ(desync_try_sync(NULL, noop_job, NULL), DESYNC_EINVAL);
    CHECK_EQ(desync_try_sync(d, NULL, NULL), DESYNC_EINVAL);

    CHECK_EQ(desync_queue_desync(NULL, noop_queue_job, NULL), DESYNC_EINVAL);
    CHECK_EQ(desync_queue_desync(q, NULL, NULL), DESYNC_EINVAL);
    CHECK_EQ(desync_queue_desync_copy(NULL, noop_queue_job, buf, 1), DESYNC_EINVAL);
    CHECK_EQ(desync_queue_desync_copy(q, NULL, buf, 1), DESYNC_EINVAL);
    CHECK_EQ(desync_queue_desync_copy(q, noop_queue_job, NULL, 4096), DESYNC_EINVAL);
    CHECK_EQ(desync_queue_sync(NULL, noop_queue_job, NULL), DESYNC_EINVAL);
    CHECK_EQ(desync_queue_sync(q, NULL, NULL), DESYNC_EINVAL);
    CHECK_EQ(desync_queue_try_sync(NULL, noop_queue_job, NULL), DESYNC_EINVAL);
    CHECK_EQ(desync_queue_try_sync(q, NULL, NULL), DESYNC_EINVAL);

    CHECK_EQ(desync_scheduler_spawn_thread(NULL), DESYNC_EINVAL);

    /* NULL is accepted (and ignored) by these. */
    desync_release(NULL);
    CHECK(desync_retain(NULL) == NULL);
    desync_queue_release(NULL);
    CHECK(desync_queue_retain(NULL) == NULL);
    CHECK(desync_get_queue(NULL) == NULL);
    CHECK(desync_data(NULL) == NULL);
    desync_scheduler_free(NULL);

    /* Refused calls queued nothing: the object still works normally. */
    CHECK_EQ(desync_sync(d, set_int, (void *)(intptr_t)3), 0);
    CHECK_EQ(desync_queue_sync(q, noop_queue_job, NULL), 0);
    desync_queue_release(q);
    desync_release(d);
    CHECK_EQ(x, 3);

    /* A NULL data pointer is just data. */
    desync_t *e = desync_new(NULL, NULL);
    CHECK(e);
    CHECK(desync_data(e) == NULL);
    CHECK_EQ(desync_sync(e, noop_job, NULL), 0);
    desync_release(e);
    return 0;
}

TEST(core_strerror) {
    const int codes[] = {0,
                         DESYNC_EINVAL,
                         DESYNC_ENOMEM,
                         DESYNC_EBUSY,
                         DESYNC_EDEADLK,
                         DESYNC_ECANCELED,
                         DESYNC_ETIMEDOUT,
                         DESYNC_EAGAIN,
                         DESYNC_EOF,
                         DESYNC_EPIPE,
                         DESYNC_EFORKED,
                         -1000 /* unknown: distinct from every known code */};
    const size_t n = sizeof codes / sizeof codes[0];
    const char *msg[sizeof codes / sizeof codes[0]];
    for (size_t i = 0; i < n; i++) {
        msg[i] = desync_strerror(codes[i]);
        CHECK(msg[i] != NULL);
        CHECK(msg[i][0] != '\0');
    }
    for (size_t i = 0; i < n; i++)
        for (size_t j = i + 1; j < n; j++)
            if (strcmp(msg[i], msg[j]) == 0) {
                fprintf(stderr, "codes %d and %d share \"%s\"\n", codes[i], codes[j], msg[i]);
                return 1;
            }
    /* Unknown codes still get a string. */
    CHECK(desync_strerror(-1000) != NULL);
    CHECK(desync_strerror(12345) != NULL);
    CHECK(desync_strerror(-2147483647 - 1) != NULL);
    return 0;
}
