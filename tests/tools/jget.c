/*
 * jget — prints one value of a JSON document read from stdin, for the
 * integration tests (no jq or python on a minimal Debian):
 *   jget .state            a member
 *   jget .attempts.0.exit_code   an array element by index
 *   jget .jobs.#           the length of an array
 * Strings print raw, numbers as integers when integral, null as "null",
 * objects and arrays as compact JSON. Exit 1 if the path is absent, 2 if
 * stdin is not JSON.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

static char *
slurp(FILE *f)
{
    size_t cap = 65536, len = 0;
    char *buf = malloc(cap);
    size_t n;
    while (buf != NULL && (n = fread(buf + len, 1, cap - len - 1, f)) > 0) {
        len += n;
        if (len + 1 == cap) {
            char *b = realloc(buf, cap *= 2);
            if (b == NULL) {
                free(buf);
                return NULL;
            }
            buf = b;
        }
    }
    if (buf != NULL)
        buf[len] = '\0';
    return buf;
}

int
main(int argc, char **argv)
{
    char *text = NULL, *path = NULL, *tok, *save = NULL;
    cJSON *root = NULL, *cur;
    int rc = 1;

    if (argc != 2 || argv[1][0] != '.') {
        fprintf(stderr, "usage: jget .path.to.member < json\n");
        return 2;
    }
    if ((text = slurp(stdin)) == NULL || (root = cJSON_Parse(text)) == NULL) {
        fprintf(stderr, "jget: stdin is not JSON\n");
        rc = 2;
        goto out;
    }
    cur = root;
    path = strdup(argv[1] + 1);
    for (tok = strtok_r(path, ".", &save); tok != NULL && cur != NULL;
         tok = strtok_r(NULL, ".", &save)) {
        if (strcmp(tok, "#") == 0) {
            if (!cJSON_IsArray(cur) && !cJSON_IsObject(cur))
                goto out;
            printf("%d\n", cJSON_GetArraySize(cur));
            rc = 0;
            goto out;
        }
        if (cJSON_IsArray(cur))
            cur = cJSON_GetArrayItem(cur, atoi(tok));
        else
            cur = cJSON_GetObjectItemCaseSensitive(cur, tok);
    }
    if (cur == NULL)
        goto out;
    if (cJSON_IsString(cur))
        printf("%s\n", cur->valuestring);
    else if (cJSON_IsNumber(cur) && cur->valuedouble == floor(cur->valuedouble) &&
             fabs(cur->valuedouble) < 9e15)
        printf("%.0f\n", cur->valuedouble);
    else {
        char *s = cJSON_PrintUnformatted(cur);
        printf("%s\n", s);
        free(s);
    }
    rc = 0;
out:
    free(path);
    cJSON_Delete(root);
    free(text);
    return rc;
}
