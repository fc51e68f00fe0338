# bash completion for jobq(1): commands, their options, option values
# (states, queues, files) and job ids from the daemon.
#
# Job ids and queue names come from `jobq list`, through the socket or URL
# named on the command line (--socket, --url with --token-file) or the
# client's own default. Each call is
# bounded by a timeout, so a daemon that is down or stuck costs at most a
# second of waiting and completes nothing.
# Installed to share/bash-completion/completions/jobq.

_jobq_commands="submit list show logs wait cancel retry pause resume stats purge ping version help"
_jobq_states="scheduled queued running retrying succeeded failed canceled"

# _jobq_query SOCKET_ARGS... -- LIST_ARGS...: the lines of `jobq list` whose
# first column is a job id, or nothing if the daemon does not answer.
_jobq_query()
{
    local -a sock=()
    while [ $# -gt 0 ] && [ "$1" != -- ]; do
        sock+=("$1")
        shift
    done
    shift
    timeout 1 "${_jobq_bin:-jobq}" "${sock[@]}" list --limit 200 "$@" 2>/dev/null </dev/null |
        awk '$1 ~ /^[0-9]+$/'
}

# Completes the word being typed, cur, from whitespace-separated words.
_jobq_add()
{
    COMPREPLY+=($(compgen -W "$1" -- "$cur"))
}

# Queue names seen in jobs, and "default".
_jobq_queues()
{
    { _jobq_query "$@" -- | awk '{print $3}'; echo default; } | sort -u
}

_jobq()
{
    local cur prev verb="" i w cmd_at=0
    local -a sock=()
    COMPREPLY=()
    cur=${COMP_WORDS[COMP_CWORD]}
    prev=${COMP_WORDS[COMP_CWORD - 1]}

    # The command, the socket given before the word being completed, and
    # for submit where the job's own command line starts (after "--" or at
    # its first word that is not an option).
    for ((i = 1; i < COMP_CWORD; i++)); do
        w=${COMP_WORDS[i]}
        case $w in
        --socket | --url | --token-file)
            sock+=("$w" "${COMP_WORDS[i + 1]}")
            ((i++))
            continue
            ;;
        --socket=* | --url=* | --token-file=*)
            sock+=("$w")
            continue
            ;;
        esac
        if [ -z "$verb" ]; then
            [[ $w == -* ]] || verb=$w
        elif [ "$verb" = submit ]; then
            case $w in
            --) cmd_at=$((i + 1)) ;;
            --queue | --name | --priority | --attempts | --backoff | --timeout | --deadline | \
                --delay | --at | --unique | --env | --cwd | --batch) ((i++)) ;;
            -*) ;;
            *) cmd_at=$i ;;
            esac
            [ "$cmd_at" -gt 0 ] && break
        fi
    done

    # The job's command line: a command first, then files.
    if [ "$cmd_at" -gt 0 ]; then
        if [ "$COMP_CWORD" -eq "$cmd_at" ]; then
            COMPREPLY=($(compgen -c -- "$cur" | sort -u))
        else
            COMPREPLY=($(compgen -f -- "$cur"))
        fi
        return 0
    fi

    case $prev in
    --socket | --batch | --token-file)
        COMPREPLY=($(compgen -f -- "$cur"))
        [ "$prev" = --batch ] && COMPREPLY+=($(compgen -W "-" -- "$cur"))
        return 0
        ;;
    --cwd)
        COMPREPLY=($(compgen -d -- "$cur"))
        return 0
        ;;
    --queue)
        _jobq_add "$(_jobq_queues "${sock[@]}")"
        return 0
        ;;
    --state)
        # A comma-separated list: complete the part after the last comma.
        local head=${cur%,*} part=${cur##*,} s
        [ "$head" = "$cur" ] && head="" || head="$head,"
        for s in $_jobq_states; do
            [[ $s == "$part"* ]] && COMPREPLY+=("$head$s")
        done
        return 0
        ;;
    --env)
        COMPREPLY=($(compgen -e -S = -- "$cur"))
        compopt -o nospace 2>/dev/null
        return 0
        ;;
    --name | --priority | --attempts | --backoff | --timeout | --deadline | --delay | --at | \
        --unique | --limit | --attempt | --older-than | --url)
        return 0 # a value of the user's own
        ;;
    esac

    if [ -z "$verb" ]; then
        if [[ $cur == -* ]]; then
            _jobq_add "--socket --url --token-file --json --help --version -h"
        else
            _jobq_add "$_jobq_commands"
        fi
        return 0
    fi

    local opts="--json --socket --url --token-file --help"
    case $verb in
    submit) opts="$opts --queue --name --priority --attempts --backoff --timeout --deadline --delay --at --unique --env --cwd --wait --batch" ;;
    list) opts="$opts --state --queue --limit" ;;
    logs) opts="$opts --attempt --follow -f" ;;
    wait) opts="$opts --timeout" ;;
    purge) opts="$opts --older-than --state" ;;
    esac
    if [[ $cur == -* ]]; then
        _jobq_add "$opts"
        return 0
    fi
    case $verb in
    show | logs | wait)
        _jobq_add "$(_jobq_query "${sock[@]}" -- | awk '{print $1}')"
        ;;
    cancel)
        _jobq_add "$(_jobq_query "${sock[@]}" -- --state scheduled,queued,running,retrying |
            awk '{print $1}')"
        ;;
    retry)
        _jobq_add "$(_jobq_query "${sock[@]}" -- --state failed,canceled | awk '{print $1}')"
        ;;
    pause | resume)
        _jobq_add "$(_jobq_queues "${sock[@]}")"
        ;;
    help)
        _jobq_add "$_jobq_commands"
        ;;
    submit)
        COMPREPLY=($(compgen -c -- "$cur" | sort -u))
        ;;
    esac
    return 0
}
complete -F _jobq jobq
