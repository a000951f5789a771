/* The library's run-time version (include/desync/version.h): compiled in,
 * so a program can compare it with the headers it was built against. */
#include "desync.h"

int desync_version(void) { return DESYNC_VERSION_NUMBER; }

const char *desync_version_string(void) { return DESYNC_VERSION_STRING; }
