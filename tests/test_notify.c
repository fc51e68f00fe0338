/*
 * test_notify — the sd_notify side of jobqd, against a receiver datagram
 * socket standing in for the service manager: which messages go out, in
 * exactly which words, how status updates are coalesced and rate-limited,
 * that nothing is sent while nothing happens, and when the watchdog pings.
 */
#include <errno.h>
#include <poll.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "check.h"
#include "jobq/notify.h"
#include "jobq/runtime.h"

static inline bool
check_on_test_stack(void)
{
    return coro_self() == NULL && pthread_equal(pthread_self(), check_test_thread);
}

#define MS 1000000LL

struct rx {
    int fd;
    char addr[108];
    char env[160];
};

/* A receiver at a fresh path (or abstract name) and the NOTIFY_SOCKET
 * entry that points at it. */
static void
rx_open(struct rx *r, bool abstract)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    static int seq;
    socklen_t len;

    if (abstract)
        snprintf(r->addr, sizeof(r->addr), "@jobq-test-notify-%d-%d", (int)getpid(), seq++);
    else
        snprintf(r->addr, sizeof(r->addr), "/tmp/jobq-test-notify-%d-%d.sock", (int)getpid(),
                 seq++);
    snprintf(r->env, sizeof(r->env), "NOTIFY_SOCKET=%s", r->addr);
    memcpy(sa.sun_path, r->addr, strlen(r->addr));
    len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + strlen(r->addr));
    if (abstract)
        sa.sun_path[0] = '\0';
    else
        unlink(r->addr);
    r->fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    assert_true(r->fd >= 0);
    assert_int_equal(bind(r->fd, (struct sockaddr *)&sa, len), 0);
}

static void
rx_close(struct rx *r)
{
    close(r->fd);
    if (r->addr[0] == '/')
        unlink(r->addr);
}

/* The next message, NUL-terminated, within timeout_ms; false if none. */
static bool
rx_next(struct rx *r, char *buf, size_t len, int timeout_ms)
{
    struct pollfd p = {.fd = r->fd, .events = POLLIN};
    ssize_t n;

    if (poll(&p, 1, timeout_ms) <= 0)
        return false;
    n = recv(r->fd, buf, len - 1, 0);
    assert_true(n >= 0);
    buf[n] = '\0';
    return true;
}

static struct notify *
notifier(char *const *envp)
{
    struct notify *n = NULL;
    char why[256] = "";

    assert_int_equal(notify_new(envp, &n, why, sizeof(why)), 0);
    assert_non_null(n);
    return n;
}

static void
test_no_socket_means_no_notifier(void **state)
{
    char *envp[] = {"PATH=/bin", "NOTIFY_SOCKET=", NULL};
    struct notify *n = (struct notify *)1;
    char why[64];

    (void)state;
    assert_int_equal(notify_new(envp, &n, why, sizeof(why)), 0);
    assert_null(n);
    assert_int_equal(notify_new(NULL, &n, why, sizeof(why)), 0);
    assert_null(n);
}

static void
test_null_notifier_is_a_no_op(void **state)
{
    (void)state;
    assert_int_equal(notify_ready(NULL, "x"), 0);
    assert_int_equal(notify_reloading(NULL), 0);
    assert_int_equal(notify_stopping(NULL, "x"), 0);
    assert_int_equal(notify_send(NULL, "X=1"), 0);
    assert_int_equal(notify_watchdog_usec(NULL), 0);
    notify_changed(NULL);
    notify_stop(NULL);
    notify_free(NULL);
}

static void
test_relative_address_is_refused_with_a_reason(void **state)
{
    char *envp[] = {"NOTIFY_SOCKET=run/notify", NULL};
    struct notify *n = NULL;
    char why[256] = "";

    (void)state;
    assert_int_equal(notify_new(envp, &n, why, sizeof(why)), -EINVAL);
    assert_null(n);
    assert_non_null(strstr(why, "NOTIFY_SOCKET=run/notify"));
}

static void
test_ready_carries_mainpid_and_status(void **state)
{
    struct rx r;
    char buf[512], want[128];
    struct notify *n;

    (void)state;
    rx_open(&r, false);
    n = notifier((char *[]){r.env, NULL});
    assert_int_equal(notify_ready(n, "running 0, queued 0, 0 done"), 0);
    assert_true(rx_next(&r, buf, sizeof(buf), 1000));
    snprintf(want, sizeof(want), "READY=1\nMAINPID=%d\nSTATUS=running 0, queued 0, 0 done",
             (int)getpid());
    assert_string_equal(buf, want);
    assert_int_equal(notify_ready(n, NULL), 0);
    assert_true(rx_next(&r, buf, sizeof(buf), 1000));
    snprintf(want, sizeof(want), "READY=1\nMAINPID=%d", (int)getpid());
    assert_string_equal(buf, want);
    notify_free(n);
    rx_close(&r);
}

static void
test_abstract_address_reaches_receiver(void **state)
{
    struct rx r;
    char buf[512];
    struct notify *n;

    (void)state;
    rx_open(&r, true);
    n = notifier((char *[]){r.env, NULL});
    assert_int_equal(notify_stopping(n, "draining: 2 running"), 0);
    assert_true(rx_next(&r, buf, sizeof(buf), 1000));
    assert_string_equal(buf, "STOPPING=1\nSTATUS=draining: 2 running");
    notify_free(n);
    rx_close(&r);
}

static void
test_reloading_carries_monotonic_usec(void **state)
{
    struct rx r;
    char buf[512];
    struct notify *n;
    long long us;

    (void)state;
    rx_open(&r, false);
    n = notifier((char *[]){r.env, NULL});
    assert_int_equal(notify_reloading(n), 0);
    assert_true(rx_next(&r, buf, sizeof(buf), 1000));
    assert_int_equal(sscanf(buf, "RELOADING=1\nMONOTONIC_USEC=%lld", &us), 1);
    assert_true(us > 0 && us <= rt_now_ns() / 1000);
    notify_free(n);
    rx_close(&r);
}

static void
test_gone_receiver_is_an_error_not_a_hang(void **state)
{
    struct rx r;
    struct notify *n;

    (void)state;
    rx_open(&r, false);
    n = notifier((char *[]){r.env, NULL});
    rx_close(&r);
    assert_true(notify_send(n, "X=1") < 0);
    notify_free(n);
}

/* ---- with a runtime --------------------------------------------------- */

static atomic_int status_value;
static atomic_int status_calls;

static int
fake_status(void *arg, char *buf, size_t len)
{
    (void)arg;
    atomic_fetch_add(&status_calls, 1);
    snprintf(buf, len, "count %d", atomic_load(&status_value));
    return 0;
}

static struct rt *
runtime(void)
{
    struct rt_opts o = {.threads = 2};
    struct rt *rt = NULL;
    assert_int_equal(rt_new(&o, &rt), 0);
    return rt;
}

static void
test_status_goes_out_after_a_change_only(void **state)
{
    struct rx r;
    char buf[512];
    struct notify *n;
    struct rt *rt = runtime();

    (void)state;
    rx_open(&r, false);
    n = notifier((char *[]){r.env, NULL});
    atomic_store(&status_calls, 0);
    assert_int_equal(notify_start(n, rt, fake_status, NULL, 100 * MS), 0);
    /* Nothing changed: nothing is asked, nothing is sent. */
    assert_false(rx_next(&r, buf, sizeof(buf), 300));
    assert_int_equal(atomic_load(&status_calls), 0);
    atomic_store(&status_value, 7);
    notify_changed(n);
    assert_true(rx_next(&r, buf, sizeof(buf), 2000));
    assert_string_equal(buf, "STATUS=count 7");
    notify_stop(n);
    assert_int_equal(rt_free(rt), 0);
    notify_free(n);
    rx_close(&r);
}

static void
test_status_burst_is_coalesced_and_rate_limited(void **state)
{
    struct rx r;
    char buf[512];
    struct notify *n;
    struct rt *rt = runtime();
    int64_t t0, t1;
    int more = 0;

    (void)state;
    rx_open(&r, false);
    n = notifier((char *[]){r.env, NULL});
    assert_int_equal(notify_start(n, rt, fake_status, NULL, 500 * MS), 0);
    atomic_store(&status_value, 1);
    notify_changed(n);
    assert_true(rx_next(&r, buf, sizeof(buf), 2000));
    t0 = rt_now_ns();
    assert_string_equal(buf, "STATUS=count 1");
    /* A burst of changes right after: one more update, not before the
     * interval is over, carrying the last value. */
    for (int i = 2; i <= 100; i++) {
        atomic_store(&status_value, i);
        notify_changed(n);
    }
    assert_true(rx_next(&r, buf, sizeof(buf), 3000));
    t1 = rt_now_ns();
    assert_string_equal(buf, "STATUS=count 100");
    assert_true(t1 - t0 >= 300 * MS); /* t0 was taken a little after the send */
    while (rx_next(&r, buf, sizeof(buf), 700))
        more++;
    assert_int_equal(more, 0);
    notify_stop(n);
    assert_int_equal(rt_free(rt), 0);
    notify_free(n);
    rx_close(&r);
}

static void
test_unchanged_status_is_not_sent_again(void **state)
{
    struct rx r;
    char buf[512];
    struct notify *n;
    struct rt *rt = runtime();

    (void)state;
    rx_open(&r, false);
    n = notifier((char *[]){r.env, NULL});
    assert_int_equal(notify_start(n, rt, fake_status, NULL, 50 * MS), 0);
    atomic_store(&status_value, 5);
    atomic_store(&status_calls, 0);
    notify_changed(n);
    assert_true(rx_next(&r, buf, sizeof(buf), 2000));
    assert_string_equal(buf, "STATUS=count 5");
    notify_changed(n);
    assert_false(rx_next(&r, buf, sizeof(buf), 400));
    assert_int_equal(atomic_load(&status_calls), 2); /* asked, and found the same */
    notify_stop(n);
    assert_int_equal(rt_free(rt), 0);
    notify_free(n);
    rx_close(&r);
}

static void
test_watchdog_pings_every_half_interval(void **state)
{
    struct rx r;
    char buf[512];
    struct notify *n;
    struct rt *rt = runtime();
    int pings = 0;
    int64_t t0;

    (void)state;
    rx_open(&r, false);
    n = notifier((char *[]){r.env, "WATCHDOG_USEC=200000", NULL});
    assert_int_equal(notify_watchdog_usec(n), 200000);
    assert_int_equal(notify_start(n, rt, NULL, NULL, 0), 0);
    t0 = rt_now_ns();
    while (pings < 4 && rx_next(&r, buf, sizeof(buf), 2000)) {
        assert_string_equal(buf, "WATCHDOG=1");
        pings++;
    }
    assert_int_equal(pings, 4);
    /* Every 100 ms: four pings take at least 400 ms (and, on a loaded
     * host, rather more; the upper bound is only a sanity check). */
    assert_true(rt_now_ns() - t0 >= 350 * MS);
    assert_true(rt_now_ns() - t0 < 5000 * MS);
    notify_stop(n);
    assert_int_equal(rt_free(rt), 0);
    notify_free(n);
    rx_close(&r);
}

static void
block_thread(void *arg)
{
    /* A coroutine that hogs its thread, as a bug would: no coroutine else
     * runs there meanwhile. */
    intptr_t ms = (intptr_t)arg;
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * MS};
    nanosleep(&ts, NULL);
}

static void
test_watchdog_pings_stop_while_a_thread_is_stuck(void **state)
{
    struct rx r;
    char buf[512];
    struct notify *n;
    struct rt *rt = runtime();
    int64_t last, gap = 0;

    (void)state;
    rx_open(&r, false);
    n = notifier((char *[]){r.env, "WATCHDOG_USEC=200000", NULL});
    assert_int_equal(notify_start(n, rt, NULL, NULL, 0), 0);
    assert_true(rx_next(&r, buf, sizeof(buf), 2000));
    last = rt_now_ns();
    assert_int_equal(coro_spawn_on(rt, 1, "stuck", block_thread, (void *)(intptr_t)1000), 0);
    /* Thread 1 stops ticking for a second: within it the pings stop once
     * its last tick is a whole interval old, and resume after. */
    for (int i = 0; i < 30 && rx_next(&r, buf, sizeof(buf), 2000); i++) {
        int64_t now = rt_now_ns();
        assert_string_equal(buf, "WATCHDOG=1");
        if (now - last > gap)
            gap = now - last;
        last = now;
        if (gap >= 500 * MS)
            break;
    }
    assert_true(gap >= 500 * MS);
    assert_true(rx_next(&r, buf, sizeof(buf), 2000)); /* resumed */
    notify_stop(n);
    assert_int_equal(rt_free(rt), 0);
    notify_free(n);
    rx_close(&r);
}

static void
test_watchdog_for_another_pid_is_off(void **state)
{
    struct rx r;
    char buf[512];
    struct notify *n;
    struct rt *rt = runtime();

    (void)state;
    rx_open(&r, false);
    n = notifier((char *[]){r.env, "WATCHDOG_USEC=100000", "WATCHDOG_PID=1", NULL});
    assert_int_equal(notify_watchdog_usec(n), 0);
    assert_int_equal(notify_start(n, rt, NULL, NULL, 0), 0);
    assert_false(rx_next(&r, buf, sizeof(buf), 300));
    notify_stop(n);
    assert_int_equal(rt_free(rt), 0);
    notify_free(n);
    rx_close(&r);
}

static void
test_watchdog_for_this_pid_is_on(void **state)
{
    char pid[64];
    struct notify *n;

    (void)state;
    snprintf(pid, sizeof(pid), "WATCHDOG_PID=%d", (int)getpid());
    n = notifier(
        (char *[]){"NOTIFY_SOCKET=/nonexistent/notify", "WATCHDOG_USEC=3000000", pid, NULL});
    assert_int_equal(notify_watchdog_usec(n), 3000000);
    notify_free(n);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_no_socket_means_no_notifier),
        cmocka_unit_test(test_null_notifier_is_a_no_op),
        cmocka_unit_test(test_relative_address_is_refused_with_a_reason),
        cmocka_unit_test(test_ready_carries_mainpid_and_status),
        cmocka_unit_test(test_abstract_address_reaches_receiver),
        cmocka_unit_test(test_reloading_carries_monotonic_usec),
        cmocka_unit_test(test_gone_receiver_is_an_error_not_a_hang),
        cmocka_unit_test(test_status_goes_out_after_a_change_only),
        cmocka_unit_test(test_status_burst_is_coalesced_and_rate_limited),
        cmocka_unit_test(test_unchanged_status_is_not_sent_again),
        cmocka_unit_test(test_watchdog_pings_every_half_interval),
        cmocka_unit_test(test_watchdog_pings_stop_while_a_thread_is_stuck),
        cmocka_unit_test(test_watchdog_for_another_pid_is_off),
        cmocka_unit_test(test_watchdog_for_this_pid_is_on),
    };
    check_init();
    return cmocka_run_group_tests(tests, NULL, NULL);
}
