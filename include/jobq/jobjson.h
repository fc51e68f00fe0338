/*
 * jobjson — the job object and the submit spec of docs/PROTOCOL.md
 * (sections 6 and 7.1) to and from cJSON: one place that knows the field
 * names, so `show --json`, `list`, `wait` and `submit` agree.
 */
#ifndef JOBQ_JOBJSON_H
#define JOBQ_JOBJSON_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <cjson/cJSON.h>

#include "jobq/job.h"

/* Returns an owned cJSON object (cJSON_Delete), or NULL when memory runs
 * out. attempts: include the `attempts` array (get, submit). Borrows j. */
cJSON *jobjson_job(const struct job *j, bool attempts);

/* The short form of a batch submit's result: {"id", "state"}. */
cJSON *jobjson_summary(int64_t id, enum job_state state, bool existing);

/*
 * Fills *spec from a submit spec object: strict (an unknown member is an
 * error, the job object's read-only members are ignored so `show --json`
 * output can be submitted again), defaults applied, times resolved against
 * now_ms. uid/gid are left for the caller. On -EINVAL, field names the
 * member (may be "") and why says what is wrong; *spec is then empty.
 * Returns 0 with an owned spec (job_spec_free) otherwise. Borrows obj.
 */
int jobjson_spec(const cJSON *obj, int64_t now_ms, struct job_spec *spec, char *field,
                 size_t fieldlen, char *why, size_t whylen);

/* Reads an integral JSON number in [lo, hi] (both within +-2^53). -EINVAL
 * if item is not such a number. */
int jobjson_int(const cJSON *item, int64_t lo, int64_t hi, int64_t *out);

#endif
