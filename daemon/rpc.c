/*
 * rpc — request lines to reply lines. The text is checked before cJSON
 * parses it: cJSON neither validates UTF-8 nor bounds its recursion, and it
 * would silently cut a string at a \u0000 escape; a request that fails
 * those checks never reaches a handler.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "daemon.h"
#include "jobq/limits.h"
#include "jobq/log.h"
#include "jobq/proto.h"
#include "jobq/rpc.h"

cJSON *
api_fail(struct api_call *c, int code, cJSON *data, const char *fmt, ...)
{
    va_list ap;
    c->code = code;
    va_start(ap, fmt);
    vsnprintf(c->message, sizeof(c->message), fmt, ap);
    va_end(ap);
    cJSON_Delete(c->data);
    c->data = data;
    return NULL;
}

/* Length of the UTF-8 sequence at s (n bytes left), 0 if invalid. Strict:
 * no overlong forms, no surrogates, nothing above U+10FFFF. */
static size_t
utf8_seq(const unsigned char *s, size_t n)
{
    unsigned c = s[0];
    if (c < 0x80)
        return 1;
    if (c >= 0xC2 && c <= 0xDF)
        return n >= 2 && (s[1] & 0xC0) == 0x80 ? 2 : 0;
    if (c >= 0xE0 && c <= 0xEF) {
        if (n < 3 || (s[1] & 0xC0) != 0x80 || (s[2] & 0xC0) != 0x80)
            return 0;
        if ((c == 0xE0 && s[1] < 0xA0) || (c == 0xED && s[1] > 0x9F))
            return 0;
        return 3;
    }
    if (c >= 0xF0 && c <= 0xF4) {
        if (n < 4 || (s[1] & 0xC0) != 0x80 || (s[2] & 0xC0) != 0x80 || (s[3] & 0xC0) != 0x80)
            return 0;
        if ((c == 0xF0 && s[1] < 0x90) || (c == 0xF4 && s[1] > 0x8F))
            return 0;
        return 4;
    }
    return 0;
}

int
rpc_check_text(const char *text, size_t len, char *why, size_t whylen)
{
    const unsigned char *s = (const unsigned char *)text;
    bool in_str = false;
    int depth = 0;

    for (size_t i = 0; i < len;) {
        unsigned char c = s[i];
        size_t k;
        if (c == 0) {
            snprintf(why, whylen, "NUL byte at offset %zu", i);
            return -EINVAL;
        }
        if (c >= 0x80) {
            if ((k = utf8_seq(s + i, len - i)) == 0) {
                snprintf(why, whylen, "invalid UTF-8 at offset %zu", i);
                return -EINVAL;
            }
            i += k;
            continue;
        }
        if (in_str) {
            if (c == '\\' && i + 1 < len) {
                if (s[i + 1] == 'u' && i + 5 < len && memcmp(s + i + 2, "0000", 4) == 0) {
                    snprintf(why, whylen, "\\u0000 in a string at offset %zu", i);
                    return -EINVAL;
                }
                i += 2;
                continue;
            }
            if (c == '"')
                in_str = false;
        } else if (c == '"') {
            in_str = true;
        } else if (c == '[' || c == '{') {
            if (++depth > JOBQ_JSON_MAX_DEPTH) {
                snprintf(why, whylen, "nesting too deep");
                return -EINVAL;
            }
        } else if (c == ']' || c == '}') {
            depth--;
        }
        i++;
    }
    return 0;
}

cJSON *
rpc_error_object(int code, const char *message, cJSON *data)
{
    cJSON *e = cJSON_CreateObject();
    if (e == NULL) {
        cJSON_Delete(data);
        return NULL;
    }
    cJSON_AddNumberToObject(e, "code", code);
    cJSON_AddStringToObject(e, "message", message);
    if (data == NULL)
        data = cJSON_CreateObject();
    if (data != NULL)
        cJSON_AddItemToObject(e, "data", data);
    return e;
}

/* A reply object; id is duplicated (NULL: null). Takes result or err. */
static cJSON *
reply_obj(const cJSON *id, cJSON *result, cJSON *err)
{
    cJSON *r = cJSON_CreateObject();
    cJSON *idc = id ? cJSON_Duplicate(id, true) : cJSON_CreateNull();
    if (r == NULL || idc == NULL) {
        cJSON_Delete(r);
        cJSON_Delete(idc);
        cJSON_Delete(result);
        cJSON_Delete(err);
        return NULL;
    }
    cJSON_AddStringToObject(r, "jsonrpc", "2.0");
    cJSON_AddItemToObject(r, "id", idc);
    if (err != NULL)
        cJSON_AddItemToObject(r, "error", err);
    else
        cJSON_AddItemToObject(r, "result", result);
    return r;
}

static cJSON *
reply_error(const cJSON *id, int code, const char *message, const char *key, const char *value)
{
    cJSON *data = cJSON_CreateObject();
    if (data != NULL && key != NULL)
        cJSON_AddStringToObject(data, key, value);
    return reply_obj(id, NULL, rpc_error_object(code, message, data));
}

static bool
valid_id(const cJSON *id)
{
    return cJSON_IsNumber(id) || cJSON_IsString(id) || cJSON_IsNull(id);
}

/*
 * One request object. Returns its reply (owned), or NULL for a
 * notification (or out of memory, with *oom).
 */
static cJSON *
handle_one(struct daemon *d, const struct rpc_peer *peer, const cJSON *req, bool *oom)
{
    const cJSON *id = NULL, *ver, *method, *params, *m;
    struct api_call call = {.d = d, .peer = peer};
    bool notification;
    cJSON *result, *reply;
    api_fn fn;

    if (!cJSON_IsObject(req))
        return reply_error(NULL, PROTO_INVALID_REQUEST, "invalid request", "reason",
                           "a request must be an object");
    id = cJSON_GetObjectItemCaseSensitive(req, "id");
    notification = id == NULL;
    if (id != NULL && !valid_id(id))
        return reply_error(NULL, PROTO_INVALID_REQUEST, "invalid request", "reason",
                           "id must be a number, a string or null");
    cJSON_ArrayForEach (m, req) {
        if (m->string == NULL ||
            (strcmp(m->string, "jsonrpc") != 0 && strcmp(m->string, "id") != 0 &&
             strcmp(m->string, "method") != 0 && strcmp(m->string, "params") != 0))
            return reply_error(id, PROTO_INVALID_REQUEST, "invalid request", "reason",
                               "unknown member in the request");
    }
    ver = cJSON_GetObjectItemCaseSensitive(req, "jsonrpc");
    if (!cJSON_IsString(ver) || strcmp(ver->valuestring, "2.0") != 0)
        return reply_error(id, PROTO_INVALID_REQUEST, "invalid request", "reason",
                           "jsonrpc must be \"2.0\"");
    method = cJSON_GetObjectItemCaseSensitive(req, "method");
    if (!cJSON_IsString(method) || method->valuestring == NULL)
        return reply_error(id, PROTO_INVALID_REQUEST, "invalid request", "reason",
                           "method must be a string");
    params = cJSON_GetObjectItemCaseSensitive(req, "params");
    if ((fn = api_find(method->valuestring)) == NULL) {
        char msg[300];
        snprintf(msg, sizeof(msg), "no method \"%.200s\"", method->valuestring);
        return notification
                   ? NULL
                   : reply_error(id, PROTO_METHOD_NOT_FOUND, msg, "method", method->valuestring);
    }
    if (params != NULL && !cJSON_IsNull(params) && !cJSON_IsObject(params))
        return notification ? NULL
                            : reply_error(id, PROTO_INVALID_PARAMS, "params must be an object",
                                          "reason", "params must be an object");
    if (params != NULL && cJSON_IsNull(params))
        params = NULL;

    result = fn(&call, params);
    if (notification) {
        cJSON_Delete(result);
        cJSON_Delete(call.data);
        return NULL;
    }
    if (result == NULL && call.code == 0) {
        /* A handler that failed without saying why ran out of memory. */
        *oom = true;
        return NULL;
    }
    if (result == NULL)
        reply = reply_obj(id, NULL, rpc_error_object(call.code, call.message, call.data));
    else
        reply = reply_obj(id, result, NULL);
    if (reply == NULL)
        *oom = true;
    return reply;
}

/* Integers become raw text before printing: cJSON 1.7.15 prints every
 * number with "%1.15g" and reads it back with sscanf to check it, which
 * took a fifth of the daemon's time on one-job submits (a job object holds
 * a dozen integers). Every number of ours is an integer below 2^53, which
 * "%lld" prints exactly; anything else is left to cJSON. */
static void
integers_raw(cJSON *item)
{
    for (; item != NULL; item = item->next) {
        if (cJSON_IsNumber(item) && item->valuedouble >= -9007199254740992.0 &&
            item->valuedouble <= 9007199254740992.0 &&
            item->valuedouble == (double)(long long)item->valuedouble) {
            char buf[24], *text;
            snprintf(buf, sizeof(buf), "%lld", (long long)item->valuedouble);
            if ((text = strdup(buf)) != NULL) {
                item->type = cJSON_Raw;
                item->valuestring = text; /* cJSON_Delete frees it */
            }
        } else if (item->child != NULL) {
            integers_raw(item->child);
        }
    }
}

static char *
print_line(cJSON *reply)
{
    char *s, *line;
    size_t n;

    integers_raw(reply);
    if ((s = cJSON_PrintUnformatted(reply)) == NULL)
        return NULL;
    n = strlen(s);
    if ((line = realloc(s, n + 2)) == NULL) {
        free(s);
        return NULL;
    }
    line[n] = '\n';
    line[n + 1] = '\0';
    return line;
}

char *
rpc_handle(struct daemon *d, const struct rpc_peer *peer, const char *line, size_t len, bool *oom)
{
    char why[160];
    cJSON *req = NULL, *reply = NULL;
    char *out = NULL;
    const char *end = NULL;

    *oom = false;
    if (rpc_check_text(line, len, why, sizeof(why)) < 0) {
        reply = reply_error(NULL, PROTO_PARSE_ERROR, "parse error", "reason", why);
        goto out;
    }
    if ((req = cJSON_ParseWithLengthOpts(line, len, &end, false)) == NULL) {
        reply = reply_error(NULL, PROTO_PARSE_ERROR, "parse error", "reason", "not valid JSON");
        goto out;
    }
    /* cJSON stops after the first value; two messages run together or
     * trailing garbage would otherwise lose the rest of the line unseen. */
    for (const char *p = end; p < line + len; p++)
        if (*p != ' ' && *p != '\t' && *p != '\r' && *p != '\n') {
            snprintf(why, sizeof(why), "text after the JSON value at offset %zu",
                     (size_t)(p - line));
            reply = reply_error(NULL, PROTO_PARSE_ERROR, "parse error", "reason", why);
            goto out;
        }
    if (cJSON_IsArray(req)) {
        const cJSON *r;
        if (cJSON_GetArraySize(req) == 0) {
            reply = reply_error(NULL, PROTO_INVALID_REQUEST, "invalid request", "reason",
                                "empty batch");
            goto out;
        }
        if ((reply = cJSON_CreateArray()) == NULL) {
            *oom = true;
            goto out;
        }
        cJSON_ArrayForEach (r, req) {
            cJSON *one = handle_one(d, peer, r, oom);
            if (*oom)
                goto out;
            if (one != NULL)
                cJSON_AddItemToArray(reply, one);
        }
        if (cJSON_GetArraySize(reply) == 0) {
            cJSON_Delete(reply);
            reply = NULL;
        }
    } else {
        reply = handle_one(d, peer, req, oom);
    }
out:
    if (reply != NULL && (out = print_line(reply)) == NULL)
        *oom = true;
    cJSON_Delete(reply);
    cJSON_Delete(req);
    return out;
}

char *
rpc_error_line(int code, const char *message, const char *data_key, int64_t data_value)
{
    cJSON *data = cJSON_CreateObject(), *reply;
    char *out;
    if (data != NULL && data_key != NULL)
        cJSON_AddNumberToObject(data, data_key, (double)data_value);
    reply = reply_obj(NULL, NULL, rpc_error_object(code, message, data));
    if (reply == NULL)
        return NULL;
    out = print_line(reply);
    cJSON_Delete(reply);
    return out;
}
