/* The agent's C unit tests' one assertion: CHECK counts, and says where it failed; main prints the
 * counts and returns failed != 0. */
#ifndef VMPOD_TESTS_CHECK_H
#define VMPOD_TESTS_CHECK_H
#include <stdio.h>

static int passed, failed;

#define CHECK(cond) do { \
        if (cond) passed++; \
        else { failed++; fprintf(stderr, "%s:%d: %s: CHECK(%s) failed\n", __FILE__, __LINE__, \
                                 __func__, #cond); } \
    } while (0)

#endif
