/*
 * eio_shim — an LD_PRELOAD library for the I/O-error tests
 * (tests/integ/chaos_disk.sh): it makes write(2)-family calls and fsyncs
 * on chosen files fail with EIO while a trigger file exists, so that
 * jobqd meets a failing disk through SQLite's real error paths.
 *   EIO_SHIM_PATH=PREFIX     the files: those whose path starts with PREFIX
 *                            (…/jobq.db matches jobq.db, -wal and -shm)
 *   EIO_SHIM_TRIGGER=FILE    while FILE exists, its first word says what
 *                            fails: "write" (write, pwrite, writev...),
 *                            "fsync" (fsync, fdatasync) or "all"
 *   EIO_SHIM_LOG=FILE        each failure injected appends "OP PATH" there
 * Without EIO_SHIM_PATH and EIO_SHIM_TRIGGER it does nothing. Built as
 * $(BUILD)/tools/eio_shim.so (not with the sanitizers: ASan wants to be the
 * first library loaded, so the tests skip it under asan/tsan).
 */
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <sys/uio.h>
#include <unistd.h>

enum op { OP_WRITE, OP_FSYNC };

static ssize_t (*real_write)(int, const void *, size_t);

/* Whether op on fd must fail now; fills path for the log. */
static bool
should_fail(int fd, enum op op, char *path, size_t len)
{
    const char *prefix = getenv("EIO_SHIM_PATH"), *trigger = getenv("EIO_SHIM_TRIGGER");
    char link[64], what[16] = "";
    ssize_t n;
    FILE *f;

    if (prefix == NULL || trigger == NULL || fd < 0)
        return false;
    snprintf(link, sizeof(link), "/proc/self/fd/%d", fd);
    if ((n = readlink(link, path, len - 1)) <= 0)
        return false;
    path[n] = '\0';
    if (strncmp(path, prefix, strlen(prefix)) != 0)
        return false;
    if ((f = fopen(trigger, "re")) == NULL)
        return false;
    if (fscanf(f, "%15s", what) != 1)
        what[0] = '\0';
    fclose(f);
    return strcmp(what, "all") == 0 || (op == OP_WRITE && strcmp(what, "write") == 0) ||
           (op == OP_FSYNC && strcmp(what, "fsync") == 0);
}

static void
note(const char *op, const char *path)
{
    const char *log = getenv("EIO_SHIM_LOG");
    char line[4200];
    int fd, n;

    if (log == NULL)
        return;
    if ((fd = open(log, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644)) < 0)
        return;
    n = snprintf(line, sizeof(line), "%s %s\n", op, path);
    if (real_write == NULL)
        real_write = (ssize_t(*)(int, const void *, size_t))dlsym(RTLD_NEXT, "write");
    if (real_write != NULL && n > 0)
        (void)!real_write(fd, line, (size_t)n);
    close(fd);
}

/* Fails the call with EIO if it must, else falls through. */
#define INJECT(op, name, fd)                                                                       \
    do {                                                                                           \
        char path_[4096];                                                                          \
        int saved_ = errno;                                                                        \
        if (should_fail((fd), (op), path_, sizeof(path_))) {                                       \
            note((name), path_);                                                                   \
            errno = EIO;                                                                           \
            return -1;                                                                             \
        }                                                                                          \
        errno = saved_;                                                                            \
    } while (0)

#define REAL(type, name, args)                                                                     \
    static type(*real_) args;                                                                      \
    if (real_ == NULL)                                                                             \
        real_ = (type(*) args)dlsym(RTLD_NEXT, name);

ssize_t
write(int fd, const void *buf, size_t n)
{
    if (real_write == NULL)
        real_write = (ssize_t(*)(int, const void *, size_t))dlsym(RTLD_NEXT, "write");
    INJECT(OP_WRITE, "write", fd);
    return real_write(fd, buf, n);
}

ssize_t
pwrite(int fd, const void *buf, size_t n, off_t off)
{
    REAL(ssize_t, "pwrite", (int, const void *, size_t, off_t));
    INJECT(OP_WRITE, "pwrite", fd);
    return real_(fd, buf, n, off);
}

ssize_t
pwrite64(int fd, const void *buf, size_t n, off64_t off)
{
    REAL(ssize_t, "pwrite64", (int, const void *, size_t, off64_t));
    INJECT(OP_WRITE, "pwrite64", fd);
    return real_(fd, buf, n, off);
}

ssize_t
writev(int fd, const struct iovec *iov, int cnt)
{
    REAL(ssize_t, "writev", (int, const struct iovec *, int));
    INJECT(OP_WRITE, "writev", fd);
    return real_(fd, iov, cnt);
}

ssize_t
pwritev(int fd, const struct iovec *iov, int cnt, off_t off)
{
    REAL(ssize_t, "pwritev", (int, const struct iovec *, int, off_t));
    INJECT(OP_WRITE, "pwritev", fd);
    return real_(fd, iov, cnt, off);
}

int
fsync(int fd)
{
    REAL(int, "fsync", (int));
    INJECT(OP_FSYNC, "fsync", fd);
    return real_(fd);
}

int
fdatasync(int fd)
{
    REAL(int, "fdatasync", (int));
    INJECT(OP_FSYNC, "fdatasync", fd);
    return real_(fd);
}
