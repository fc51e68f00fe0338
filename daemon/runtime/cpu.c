/*
 * cpu — how many CPUs this process may really use: the affinity mask,
 * capped by a cgroup CPU quota (v2 cpu.max, or v1 cfs_quota_us /
 * cfs_period_us) anywhere on the path from the process's cgroup to the
 * root. A container limited to 1.5 CPUs on a 64-core host gets 2 threads,
 * not 64.
 */
#include <limits.h>
#include <sched.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "jobq/runtime.h"

static long
read_quota_v2(const char *file)
{
    FILE *f = fopen(file, "r");
    char quota[32];
    long q, period;
    long cpus = 0;

    if (f == NULL)
        return 0;
    if (fscanf(f, "%31s %ld", quota, &period) == 2 && strcmp(quota, "max") != 0 && period > 0) {
        q = strtol(quota, NULL, 10);
        if (q > 0)
            cpus = (q + period - 1) / period;
    }
    fclose(f);
    return cpus;
}

static long
read_long(const char *file)
{
    FILE *f = fopen(file, "r");
    long v = 0;
    if (f == NULL)
        return 0;
    if (fscanf(f, "%ld", &v) != 1)
        v = 0;
    fclose(f);
    return v;
}

/* The smallest quota on the path root/rel and its ancestors, 0 if none. */
static long
quota_on_path(const char *root, const char *rel)
{
    char path[PATH_MAX], file[PATH_MAX + 32];
    long best = 0;

    snprintf(path, sizeof(path), "%s%s%s", root, rel[0] == '/' ? "" : "/", rel);
    for (;;) {
        long v;
        snprintf(file, sizeof(file), "%s/cpu.max", path);
        if ((v = read_quota_v2(file)) > 0 && (best == 0 || v < best))
            best = v;
        snprintf(file, sizeof(file), "%s/cpu.cfs_quota_us", path);
        long q = read_long(file);
        snprintf(file, sizeof(file), "%s/cpu.cfs_period_us", path);
        long p = read_long(file);
        if (q > 0 && p > 0 && ((q + p - 1) / p < best || best == 0))
            best = (q + p - 1) / p;
        if (strlen(path) <= strlen(root))
            break;
        char *slash = strrchr(path, '/');
        if (slash == NULL || slash < path + strlen(root))
            break;
        *slash = '\0';
    }
    return best;
}

/* The process's cgroup path relative to the hierarchy root ("/" if none). */
static void
own_cgroup(char *rel, size_t len, bool *v1)
{
    FILE *f = fopen("/proc/self/cgroup", "r");
    char line[1024];

    snprintf(rel, len, "/");
    *v1 = false;
    if (f == NULL)
        return;
    while (fgets(line, sizeof(line), f) != NULL) {
        char *p = strchr(line, ':'), *q;
        if (p == NULL || (q = strchr(p + 1, ':')) == NULL)
            continue;
        q[strcspn(q, "\n")] = '\0';
        if (strncmp(line, "0::", 3) == 0) {
            snprintf(rel, len, "%s", q + 1);
            break;
        }
        if (strstr(p, "cpu,") != NULL || strstr(p, ":cpu:") != NULL || strstr(p, ",cpu:")) {
            snprintf(rel, len, "%s", q + 1);
            *v1 = true;
        }
    }
    fclose(f);
}

int
rt_cpu_count(const char *cgroup_root)
{
    cpu_set_t set;
    long n = 1, quota;
    char rel[512], root[PATH_MAX];
    bool v1;

    if (sched_getaffinity(0, sizeof(set), &set) == 0)
        n = CPU_COUNT(&set);
    own_cgroup(rel, sizeof(rel), &v1);
    if (cgroup_root != NULL)
        snprintf(root, sizeof(root), "%s", cgroup_root);
    else
        snprintf(root, sizeof(root), "%s", v1 ? "/sys/fs/cgroup/cpu" : "/sys/fs/cgroup");
    quota = quota_on_path(root, rel);
    /* In a container the cgroup namespace makes our path "/" already; a
     * fake root in tests has the quota at its top. */
    if (quota == 0 && strcmp(rel, "/") != 0)
        quota = quota_on_path(root, "/");
    if (quota > 0 && quota < n)
        n = quota;
    return n < 1 ? 1 : (int)n;
}
