/*
 * check.h — cmocka assertions that are safe inside coroutines and on
 * helper threads. cmocka reports a failure by longjmp'ing to the test's
 * frame, which from another stack or thread would crash without a word;
 * here a failure off the test thread prints where it happened and aborts,
 * which the runner counts as a failed suite. Include after <cmocka.h>.
 */
#ifndef JOBQ_TESTS_CHECK_H
#define JOBQ_TESTS_CHECK_H

#include <dirent.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static pthread_t check_test_thread;
static bool check_test_thread_set;

/* Call at the start of main(). */
static inline void
check_init(void)
{
    check_test_thread = pthread_self();
    check_test_thread_set = true;
}

static inline bool check_on_test_stack(void);

#define CHECK_FAIL(fmt, ...)                                                                       \
    do {                                                                                           \
        if (check_on_test_stack()) {                                                               \
            fail_msg("%s:%d: " fmt, __FILE__, __LINE__, __VA_ARGS__);                              \
        } else {                                                                                   \
            fprintf(stderr, "%s:%d: check failed off the test thread: " fmt "\n", __FILE__,        \
                    __LINE__, __VA_ARGS__);                                                        \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

#undef assert_true
#undef assert_false
#undef assert_int_equal
#undef assert_int_not_equal
#undef assert_non_null
#undef assert_null
#undef assert_string_equal

#define assert_true(c)                                                                             \
    do {                                                                                           \
        if (!(c))                                                                                  \
            CHECK_FAIL("%s", #c);                                                                  \
    } while (0)
#define assert_false(c) assert_true(!(c))
#define assert_int_equal(a, b)                                                                     \
    do {                                                                                           \
        long long a_ = (long long)(a), b_ = (long long)(b);                                        \
        if (a_ != b_)                                                                              \
            CHECK_FAIL("%s == %s: %lld != %lld", #a, #b, a_, b_);                                  \
    } while (0)
#define assert_int_not_equal(a, b)                                                                 \
    do {                                                                                           \
        long long a_ = (long long)(a), b_ = (long long)(b);                                        \
        if (a_ == b_)                                                                              \
            CHECK_FAIL("%s != %s: both %lld", #a, #b, a_);                                         \
    } while (0)
#define assert_non_null(p) assert_true((p) != NULL)
#define assert_null(p) assert_true((p) == NULL)
#define assert_string_equal(a, b)                                                                  \
    do {                                                                                           \
        const char *a_ = (a), *b_ = (b);                                                           \
        if (a_ == NULL || b_ == NULL || strcmp(a_, b_) != 0)                                       \
            CHECK_FAIL("%s == %s: \"%s\" != \"%s\"", #a, #b, a_ ? a_ : "(null)",                   \
                       b_ ? b_ : "(null)");                                                        \
    } while (0)

/* Descriptors open in this process, -1 if /proc cannot be read. Plain
 * return, no assertion: forked children call it too. */
static inline int
check_open_fds(void)
{
    DIR *d = opendir("/proc/self/fd");
    struct dirent *e;
    int n = 0;

    if (d == NULL)
        return -1;
    while ((e = readdir(d)) != NULL)
        n += e->d_name[0] != '.';
    closedir(d);
    return n - 1; /* the directory's own descriptor */
}

#endif
