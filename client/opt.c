/*
 * opt — the client's option parser and option-value parsers. Written here
 * rather than with getopt_long: getopt keeps global state, prints its own
 * messages and permutes argv, while every message here names the option
 * and says what would have been right.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "client.h"
#include "jobq/duration.h"

int
optiter_init(struct optiter *it, int argc, char **argv, bool stop_at_positional)
{
    memset(it, 0, sizeof(*it));
    it->argc = argc;
    it->argv = argv;
    it->i = 1;
    it->verb = argc > 0 ? argv[0] : "jobq";
    it->stop_at_positional = stop_at_positional;
    if ((it->pos = calloc((size_t)argc + 1, sizeof(*it->pos))) == NULL)
        return -ENOMEM;
    return 0;
}

void
optiter_free(struct optiter *it)
{
    free(it->pos);
    it->pos = NULL;
}

static const struct opt *
opt_by_long(const struct opt *opts, const char *name, size_t n)
{
    for (; opts->name != NULL; opts++)
        if (strlen(opts->name) == n && memcmp(opts->name, name, n) == 0)
            return opts;
    return NULL;
}

static const struct opt *
opt_by_short(const struct opt *opts, char c)
{
    for (; opts->name != NULL; opts++)
        if (opts->shortname != 0 && opts->shortname == c)
            return opts;
    return NULL;
}

int
optiter_next(struct optiter *it, const struct opt *opts, const char **arg, char *why, size_t whylen)
{
    *arg = NULL;
    while (it->i < it->argc) {
        char *a = it->argv[it->i++];
        const struct opt *o;
        const char *val = NULL;

        /* "-" alone is an argument: standard input. */
        if (it->done || a[0] != '-' || a[1] == '\0') {
            it->pos[it->npos++] = a;
            if (it->stop_at_positional)
                it->done = true;
            continue;
        }
        if (strcmp(a, "--") == 0) {
            it->done = true;
            continue;
        }
        if (a[1] == '-') {
            const char *name = a + 2, *eq = strchr(name, '=');
            size_t n = eq != NULL ? (size_t)(eq - name) : strlen(name);
            snprintf(it->name, sizeof(it->name), "--%.*s", (int)n, name);
            o = opt_by_long(opts, name, n);
            if (o != NULL && eq != NULL) {
                if (!o->has_arg) {
                    snprintf(why, whylen, "%s: %s takes no value (see 'jobq help %s')", it->verb,
                             it->name, it->verb);
                    return -EINVAL;
                }
                val = eq + 1;
            }
        } else {
            snprintf(it->name, sizeof(it->name), "-%c", a[1]);
            o = opt_by_short(opts, a[1]);
            if (o != NULL && a[2] != '\0') {
                if (!o->has_arg) {
                    snprintf(why, whylen, "%s: unknown option '%s' (see 'jobq help %s')", it->verb,
                             a, it->verb);
                    return -EINVAL;
                }
                val = a + 2;
            }
        }
        if (o == NULL) {
            snprintf(why, whylen, "%s: unknown option '%s' (see 'jobq help %s')", it->verb,
                     it->name, it->verb);
            return -EINVAL;
        }
        if (o->has_arg && val == NULL) {
            if (it->i >= it->argc) {
                snprintf(why, whylen, "%s: %s needs a value (see 'jobq help %s')", it->verb,
                         it->name, it->verb);
                return -EINVAL;
            }
            val = it->argv[it->i++];
        }
        *arg = val;
        return o->key;
    }
    return 0;
}

int
opt_common(struct cli *c, struct req *r, int key, const char *arg)
{
    switch (key) {
    case OPT_JSON:
        c->json = true;
        return 1;
    case OPT_SOCKET:
        c->socket_flag = arg;
        return 1;
    case OPT_URL:
        c->url_flag = arg;
        return 1;
    case OPT_TOKEN_FILE:
        c->token_file_flag = arg;
        return 1;
    case OPT_HELP:
        r->help = true;
        return 1;
    }
    return 0;
}

int
opt_duration(const char *opt, const char *arg, int64_t *ms, char *why, size_t whylen)
{
    char reason[256];

    if (duration_parse_ms(arg, ms, reason, sizeof(reason)) < 0) {
        snprintf(why, whylen, "%s: %s", opt, reason);
        return -EINVAL;
    }
    return 0;
}

int
opt_time(const struct cli *c, const char *opt, const char *arg, int64_t *unix_ms, char *why,
         size_t whylen)
{
    char reason[256];

    if (time_parse_ms(arg, c->now_ms, unix_ms, reason, sizeof(reason)) < 0) {
        snprintf(why, whylen, "%s: %s", opt, reason);
        return -EINVAL;
    }
    return 0;
}

int
opt_int(const char *opt, const char *arg, int64_t min, int64_t max, int64_t *v, char *why,
        size_t whylen)
{
    char *end;
    long long n;

    errno = 0;
    n = strtoll(arg, &end, 10);
    if (errno != 0 || end == arg || *end != '\0' || n < min || n > max) {
        snprintf(why, whylen, "%s: expected an integer from %lld to %lld, got \"%s\"", opt,
                 (long long)min, (long long)max, arg);
        return -EINVAL;
    }
    *v = n;
    return 0;
}

int
opt_id(const char *arg, int64_t *id, char *why, size_t whylen)
{
    char *end;
    long long n;

    errno = 0;
    n = strtoll(arg, &end, 10);
    if (errno == ERANGE && arg[0] >= '0' && arg[0] <= '9' && *end == '\0')
        goto big;
    if (errno != 0 || end == arg || *end != '\0' || arg[0] == '+' || arg[0] == '-' || n <= 0) {
        snprintf(why, whylen, "bad job id \"%s\": expected a positive integer like 42", arg);
        return -EINVAL;
    }
    /* Ids travel as JSON numbers, which other languages read as doubles:
     * exact only up to 2^53-1 (docs/PROTOCOL.md). */
    if (n > (1LL << 53) - 1)
        goto big;
    *id = n;
    return 0;
big:
    snprintf(why, whylen, "bad job id \"%s\": too large (ids go up to 9007199254740991, 2^53-1)",
             arg);
    return -EINVAL;
}

static const char *const state_names[] = {"scheduled", "queued", "running", "retrying",
                                          "succeeded", "failed", "canceled"};

static bool
state_terminal(const char *s)
{
    return strcmp(s, "succeeded") == 0 || strcmp(s, "failed") == 0 || strcmp(s, "canceled") == 0;
}

static bool
state_known(const char *s)
{
    for (size_t i = 0; i < sizeof(state_names) / sizeof(state_names[0]); i++)
        if (strcmp(s, state_names[i]) == 0)
            return true;
    return false;
}

int
opt_states(const char *opt, const char *arg, bool terminal_only, cJSON **arr, char *why,
           size_t whylen)
{
    const char *p = arg;

    if (*arr == NULL && (*arr = cJSON_CreateArray()) == NULL)
        return -ENOMEM;
    for (;;) {
        const char *comma = strchr(p, ',');
        size_t n = comma != NULL ? (size_t)(comma - p) : strlen(p);
        char name[32];

        snprintf(name, sizeof(name), "%.*s", (int)n, p);
        if (n >= sizeof(name) || !state_known(name)) {
            snprintf(why, whylen, "%s: unknown state \"%.*s\" (expected %s, separated by commas)",
                     opt, (int)n, p,
                     terminal_only ? "succeeded, failed or canceled"
                                   : "scheduled, queued, running, retrying, succeeded, failed "
                                     "or canceled");
            return -EINVAL;
        }
        if (terminal_only && !state_terminal(name)) {
            snprintf(why, whylen,
                     "%s: \"%s\" is not a final state; only succeeded, failed and canceled "
                     "jobs can be purged",
                     opt, name);
            return -EINVAL;
        }
        if (!cJSON_AddItemToArray(*arr, cJSON_CreateString(name)))
            return -ENOMEM;
        if (comma == NULL)
            return 0;
        p = comma + 1;
    }
}
