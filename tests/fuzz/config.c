/*
 * config — libFuzzer target for jobqd's config file parser
 * (config_parse_buf): every line syntax, quoting, key and value type. A
 * file that parses must also dump (config_dump) to a file that parses back
 * to the same settings (config_diff finds no difference), as config.h
 * promises of config_dump.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "jobq/config.h"
#include "jobq/limits.h"

#define NAME "/etc/jobq/jobqd.conf"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct config_defaults defs = {.threads = 2, .state_dir = "/var/lib/jobq"};
    struct config *cfg = NULL, *back = NULL;
    char why[512] = "", *dump = NULL;
    int rc;

    if (size > JOBQ_CONFIG_FILE_MAX_BYTES)
        return -1; /* file_read refuses these */
    if (config_new(&defs, &cfg) < 0)
        return 0;
    rc = config_parse_buf(cfg, NAME, (const char *)data, size, why, sizeof(why));
    if (rc == -EINVAL && why[0] == '\0')
        __builtin_trap(); /* every refusal says why */
    if (rc < 0)
        goto out;
    if (config_dump(cfg, &dump) < 0 || config_new(&defs, &back) < 0)
        goto out;
    rc = config_parse_buf(back, NAME, dump, strlen(dump), why, sizeof(why));
    if (rc == -ENOMEM)
        goto out;
    if (rc < 0 || config_diff(cfg, back, NULL, 0, NULL, 0) != 0) {
        char live[512], restart[512];
        config_diff(cfg, back, live, sizeof(live), restart, sizeof(restart));
        fprintf(stderr, "dump does not read back: %s [%s %s]\n%s", why, live, restart, dump);
        __builtin_trap();
    }
out:
    free(dump);
    config_free(back);
    config_free(cfg);
    return 0;
}
