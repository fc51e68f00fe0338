/*
 * store_pg_lib — libpq, loaded when a PostgreSQL store is opened rather
 * than linked into jobqd. libpq brings about twenty libraries with it
 * (OpenSSL, Kerberos, LDAP, SASL): 4 MiB of resident memory at idle and a
 * slower start for every jobqd, though SQLite is the default and most
 * daemons never talk to PostgreSQL. The backend calls libpq through
 * pg_api, filled once (pg_lib_load) by dlopen and dlsym; store_pg_int.h
 * maps the PQ* names onto it, so the backend's code reads as plain libpq.
 */
#include <dlfcn.h>
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>

#define JOBQ_PG_API_ITSELF
#include "store_pg_int.h"

/* Written once under pg_once, then only read: a table of entry points,
 * not state. */
struct pg_api pg_api;

static pthread_once_t pg_once = PTHREAD_ONCE_INIT;
static char pg_load_error[256];

#define PG_SYM(name)                                                                               \
    {                                                                                              \
#name, (void **)&pg_api.name                                                               \
    }

static void
load(void)
{
    static const struct {
        const char *name;
        void **slot;
    } syms[] = {
        PG_SYM(PQclear),
        PG_SYM(PQntuples),
        PG_SYM(PQgetvalue),
        PG_SYM(PQresultStatus),
        PG_SYM(PQstatus),
        PG_SYM(PQexec),
        PG_SYM(PQtransactionStatus),
        PG_SYM(PQresultErrorMessage),
        PG_SYM(PQerrorMessage),
        PG_SYM(PQgetisnull),
        PG_SYM(PQreset),
        PG_SYM(PQfinish),
        PG_SYM(PQexecParams),
        PG_SYM(PQcmdTuples),
        PG_SYM(PQsocket),
        PG_SYM(PQresultErrorField),
        PG_SYM(PQprepare),
        PG_SYM(PQnotifies),
        PG_SYM(PQfreemem),
        PG_SYM(PQexecPrepared),
        PG_SYM(PQconsumeInput),
        PG_SYM(PQconnectdbParams),
        PG_SYM(PQcmdStatus),
    };
    /* The soname of Debian 12's libpq5 (and every libpq since 8.2). */
    void *h = dlopen("libpq.so.5", RTLD_NOW | RTLD_LOCAL);

    if (h == NULL) {
        snprintf(pg_load_error, sizeof(pg_load_error), "%s", dlerror());
        return;
    }
    for (size_t i = 0; i < sizeof(syms) / sizeof(syms[0]); i++) {
        if ((*syms[i].slot = dlsym(h, syms[i].name)) == NULL) {
            snprintf(pg_load_error, sizeof(pg_load_error), "libpq has no %s", syms[i].name);
            return;
        }
    }
    /* Kept loaded for the life of the process: connections may come and
     * go, the library stays. */
}

int
pg_lib_load(char *why, size_t whylen)
{
    pthread_once(&pg_once, load);
    if (pg_load_error[0] != '\0') {
        snprintf(why, whylen,
                 "the PostgreSQL store needs libpq (Debian: apt-get install libpq5): %s",
                 pg_load_error);
        return -ENOENT;
    }
    return 0;
}
