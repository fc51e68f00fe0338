/*
 * main — jobq's entry point: gathers the process's surroundings (the
 * environment, the current directory, the clock, the terminal's width)
 * into a struct cli and hands the command line to cli_main, which does
 * everything else and returns the exit status.
 */
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/ioctl.h>
#include <time.h>
#include <unistd.h>

#include "client.h"

extern char **environ;

static int64_t
now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* The terminal's width; else $COLUMNS; else 80, so piped output is the
 * same on every machine. */
static size_t
output_columns(void)
{
    struct winsize ws;
    const char *env = getenv("COLUMNS");

    if (isatty(STDOUT_FILENO) && ioctl(STDOUT_FILENO, TIOCGWINSZ, &ws) == 0 && ws.ws_col > 0)
        return ws.ws_col;
    if (env != NULL && atoi(env) > 0)
        return (size_t)atoi(env);
    return 80;
}

int
main(int argc, char **argv)
{
    static char cwd[PATH_MAX];
    struct cli c = {
        .env_socket = getenv("JOBQ_SOCKET"),
        .env_url = getenv("JOBQ_URL"),
        .env_token_file = getenv("JOBQ_TOKEN_FILE"),
        .env_xdg_state = getenv("XDG_STATE_HOME"),
        .env_home = getenv("HOME"),
        .environ = environ,
        .cwd = getcwd(cwd, sizeof(cwd)),
        .now_ms = now_ms(),
        .columns = output_columns(),
        .in = stdin,
        .out = stdout,
        .err = stderr,
    };

    return cli_main(&c, argc, argv);
}
