/*
 * yamlcheck — checks and queries the YAML files of etc/kubernetes/ for
 * tests/integ/packaging.sh, with Debian's libyaml (no kubectl, python or
 * cluster on a test machine):
 *   yamlcheck FILE...                  every document parses; no mapping
 *                                      repeats a key (Kubernetes rejects
 *                                      that, libyaml alone does not)
 *   yamlcheck -g POINTER [-k KIND] FILE  prints one node of the first
 *                                      document (whose "kind" is KIND)
 * POINTER is a JSON Pointer (RFC 6901): /spec/template/spec/containers/0,
 * "~1" for a "/" in a key and "~0" for "~" (/metadata/annotations/
 * prometheus.io~1port); a last segment "#" prints the number of items. A
 * scalar prints as its value, a sequence as one item per line, a mapping
 * as its keys, one per line (nested collections as <mapping>/<sequence>).
 * Exit 0 on success, 1 if a check fails or the node is absent, 2 on usage
 * or I/O errors. Errors go to stderr as FILE:LINE:COLUMN: what.
 */
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <yaml.h>

static const char *
scalar_of(yaml_node_t *n)
{
    return n != NULL && n->type == YAML_SCALAR_NODE ? (const char *)n->data.scalar.value : NULL;
}

/* Reports keys that appear twice in one mapping, anywhere under node id.
 * Returns the number of duplicates found. depth bounds recursion through
 * aliases (libyaml resolves them to shared nodes, which may be cyclic). */
static int
check_dups(const char *file, yaml_document_t *doc, int id, int depth)
{
    yaml_node_t *n = yaml_document_get_node(doc, id);
    int bad = 0;

    if (n == NULL || depth > 64)
        return 0;
    if (n->type == YAML_SEQUENCE_NODE) {
        for (yaml_node_item_t *it = n->data.sequence.items.start; it < n->data.sequence.items.top;
             it++)
            bad += check_dups(file, doc, *it, depth + 1);
    } else if (n->type == YAML_MAPPING_NODE) {
        yaml_node_pair_t *start = n->data.mapping.pairs.start, *top = n->data.mapping.pairs.top;
        for (yaml_node_pair_t *p = start; p < top; p++) {
            yaml_node_t *k = yaml_document_get_node(doc, p->key);
            const char *ks = scalar_of(k);
            for (yaml_node_pair_t *q = start; ks != NULL && q < p; q++) {
                const char *qs = scalar_of(yaml_document_get_node(doc, q->key));
                if (qs != NULL && strcmp(ks, qs) == 0) {
                    fprintf(stderr, "%s:%zu:%zu: key \"%s\" repeated in one mapping\n", file,
                            k->start_mark.line + 1, k->start_mark.column + 1, ks);
                    bad++;
                    break;
                }
            }
            bad += check_dups(file, doc, p->value, depth + 1);
        }
    }
    return bad;
}

/* The value node of key in mapping n, or NULL. */
static yaml_node_t *
map_get(yaml_document_t *doc, yaml_node_t *n, const char *key)
{
    if (n == NULL || n->type != YAML_MAPPING_NODE)
        return NULL;
    for (yaml_node_pair_t *p = n->data.mapping.pairs.start; p < n->data.mapping.pairs.top; p++) {
        const char *ks = scalar_of(yaml_document_get_node(doc, p->key));
        if (ks != NULL && strcmp(ks, key) == 0)
            return yaml_document_get_node(doc, p->value);
    }
    return NULL;
}

/* Decodes one JSON Pointer segment in place: ~1 is "/", ~0 is "~". */
static void
unescape(char *s)
{
    char *w = s;
    for (char *r = s; *r; r++) {
        if (r[0] == '~' && (r[1] == '0' || r[1] == '1')) {
            *w++ = r[1] == '0' ? '~' : '/';
            r++;
        } else {
            *w++ = *r;
        }
    }
    *w = '\0';
}

static const char *
kind_name(yaml_node_t *n)
{
    return n->type == YAML_MAPPING_NODE ? "<mapping>" : "<sequence>";
}

/* Prints the node at pointer in doc. 0 printed, -ENOENT absent. */
static int
print_at(yaml_document_t *doc, const char *pointer)
{
    yaml_node_t *n = yaml_document_get_root_node(doc);
    char *path = strdup(pointer), *seg, *save = NULL;
    bool count = false;
    int rc = -ENOENT;

    if (path == NULL)
        return -ENOMEM;
    for (seg = strtok_r(path, "/", &save); seg != NULL && n != NULL;
         seg = strtok_r(NULL, "/", &save)) {
        if (strcmp(seg, "#") == 0) {
            count = true;
            break;
        }
        unescape(seg);
        if (n->type == YAML_SEQUENCE_NODE) {
            char *end;
            long i = strtol(seg, &end, 10);
            long len = n->data.sequence.items.top - n->data.sequence.items.start;
            n = *end == '\0' && i >= 0 && i < len
                    ? yaml_document_get_node(doc, n->data.sequence.items.start[i])
                    : NULL;
        } else {
            n = map_get(doc, n, seg);
        }
    }
    if (n == NULL)
        goto out;
    if (count) {
        long len = 0;
        if (n->type == YAML_SEQUENCE_NODE)
            len = n->data.sequence.items.top - n->data.sequence.items.start;
        else if (n->type == YAML_MAPPING_NODE)
            len = n->data.mapping.pairs.top - n->data.mapping.pairs.start;
        else
            goto out;
        printf("%ld\n", len);
    } else if (n->type == YAML_SCALAR_NODE) {
        printf("%s\n", scalar_of(n));
    } else if (n->type == YAML_SEQUENCE_NODE) {
        for (yaml_node_item_t *it = n->data.sequence.items.start; it < n->data.sequence.items.top;
             it++) {
            yaml_node_t *item = yaml_document_get_node(doc, *it);
            printf("%s\n", scalar_of(item) ? scalar_of(item) : kind_name(item));
        }
    } else {
        for (yaml_node_pair_t *p = n->data.mapping.pairs.start; p < n->data.mapping.pairs.top;
             p++) {
            yaml_node_t *k = yaml_document_get_node(doc, p->key);
            printf("%s\n", scalar_of(k) ? scalar_of(k) : kind_name(k));
        }
    }
    rc = 0;
out:
    free(path);
    return rc;
}

/* Loads each document of file in turn: checks it (pointer NULL) or prints
 * pointer from the first document whose kind matches. 0 ok, 1 a check
 * failed or nothing printed, 2 cannot read. */
static int
run(const char *file, const char *pointer, const char *kind)
{
    yaml_parser_t parser;
    yaml_document_t doc;
    FILE *f = fopen(file, "rb");
    int status = pointer != NULL ? 1 : 0;
    bool matched = false;

    if (f == NULL) {
        fprintf(stderr, "%s: %s\n", file, strerror(errno));
        return 2;
    }
    if (!yaml_parser_initialize(&parser)) {
        fclose(f);
        fprintf(stderr, "%s: out of memory\n", file);
        return 2;
    }
    yaml_parser_set_input_file(&parser, f);
    for (;;) {
        yaml_node_t *root;
        if (!yaml_parser_load(&parser, &doc)) {
            fprintf(stderr, "%s:%zu:%zu: %s%s%s\n", file, parser.problem_mark.line + 1,
                    parser.problem_mark.column + 1, parser.problem ? parser.problem : "bad YAML",
                    parser.context ? " " : "", parser.context ? parser.context : "");
            status = 1;
            break;
        }
        if ((root = yaml_document_get_root_node(&doc)) == NULL) {
            yaml_document_delete(&doc); /* the end of the stream */
            break;
        }
        if (pointer == NULL) {
            if (check_dups(file, &doc, 1, 0) > 0)
                status = 1;
        } else if (kind == NULL || (scalar_of(map_get(&doc, root, "kind")) != NULL &&
                                    strcmp(scalar_of(map_get(&doc, root, "kind")), kind) == 0)) {
            int rc = print_at(&doc, pointer);
            matched = true;
            yaml_document_delete(&doc);
            if (rc == 0)
                status = 0;
            else
                fprintf(stderr, "%s: no node at %s%s%s\n", file, pointer, kind ? " in kind " : "",
                        kind ? kind : "");
            break;
        }
        yaml_document_delete(&doc);
    }
    if (pointer != NULL && !matched && status == 1)
        fprintf(stderr, "%s: no document%s%s\n", file, kind ? " of kind " : "", kind ? kind : "");
    yaml_parser_delete(&parser);
    fclose(f);
    return status;
}

int
main(int argc, char **argv)
{
    const char *pointer = NULL, *kind = NULL;
    int opt, status = 0;

    while ((opt = getopt(argc, argv, "g:k:")) != -1) {
        switch (opt) {
        case 'g':
            pointer = optarg;
            break;
        case 'k':
            kind = optarg;
            break;
        default:
            goto usage;
        }
    }
    if (optind >= argc || (pointer != NULL && (pointer[0] != '/' || optind + 1 != argc)))
        goto usage;
    for (int i = optind; i < argc; i++) {
        int s = run(argv[i], pointer, kind);
        if (s > status)
            status = s;
    }
    return status;
usage:
    fprintf(stderr, "usage: yamlcheck FILE...\n"
                    "       yamlcheck -g /json/pointer [-k KIND] FILE\n");
    return 2;
}
