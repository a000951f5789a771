/*
 * Version: the run-time version the library reports is the one its headers
 * declare, in both forms, and the macros agree with each other.
 */
#include <desync.h>

#include <stdio.h>
#include <string.h>

#include "test.h"

TEST(version_matches_headers) {
    CHECK_EQ(desync_version(), DESYNC_VERSION_NUMBER);
    CHECK(desync_version_string() != NULL);
    CHECK(strcmp(desync_version_string(), DESYNC_VERSION_STRING) == 0);

    /* The string is "MAJOR.MINOR.PATCH" of the same numbers. */
    int major = -1, minor = -1, patch = -1, end = 0;
    CHECK_EQ(sscanf(desync_version_string(), "%d.%d.%d%n", &major, &minor, &patch, &end), 3);
    CHECK_EQ((size_t)end, strlen(desync_version_string()));
    CHECK_EQ(major, DESYNC_VERSION_MAJOR);
    CHECK_EQ(minor, DESYNC_VERSION_MINOR);
    CHECK_EQ(patch, DESYNC_VERSION_PATCH);
    CHECK_EQ(desync_version(), DESYNC_VERSION_ENCODE(major, minor, patch));

    /* The encoding keeps its room: minor and patch below 100. */
    CHECK(DESYNC_VERSION_MINOR < 100 && DESYNC_VERSION_PATCH < 100);
    CHECK(
        DESYNC_VERSION_AT_LEAST(DESYNC_VERSION_MAJOR, DESYNC_VERSION_MINOR, DESYNC_VERSION_PATCH));
    CHECK(!DESYNC_VERSION_AT_LEAST(DESYNC_VERSION_MAJOR, DESYNC_VERSION_MINOR,
                                   DESYNC_VERSION_PATCH + 1));
    CHECK(DESYNC_VERSION_AT_LEAST(0, 0, 0));
    return 0;
}
