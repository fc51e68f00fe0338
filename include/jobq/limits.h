/*
 * limits — every size, count and time limit of jobq in one place, each with
 * its reason and its unit in the name, so they are reviewed together.
 */
#ifndef JOBQ_LIMITS_H
#define JOBQ_LIMITS_H

/* ---- runtime ---------------------------------------------------------- */

/* Usable stack of a coroutine. 64 KiB because nothing deep runs on a
 * coroutine: SQLite runs on the writer thread and the blocking pool, JSON
 * nesting is capped (JOBQ_JSON_MAX_DEPTH) before cJSON recurses, and the
 * deepest path measured (request handling with snprintf and cJSON_Print)
 * stays under 16 KiB. Only touched pages cost memory (a parked coroutine
 * that touched 1 KiB costs one 4 KiB page), so the size is address space,
 * not RSS. */
#define JOBQ_CORO_STACK_BYTES (64 * 1024)
/* Smallest stack accepted by rt_opts: the entry frame, the canary and a
 * signal-free call chain of a few frames. */
#define JOBQ_CORO_STACK_MIN_BYTES (16 * 1024)
/* Guard region below every coroutine stack, rounded up to whole pages.
 * On AArch64, GCC and LLVM -fstack-clash-protection probe a large frame
 * only every 64 KiB (the guard size the AArch64 ABI assumes), so a one-page
 * guard would be stepped over and a 200 KiB frame would land in the next
 * stack; x86-64 compilers probe every page. A guard costs address space
 * only: no RSS and, with MADV_GUARD_INSTALL, no map entry. */
#if defined(__aarch64__)
#define JOBQ_CORO_GUARD_BYTES (64 * 1024)
#else
#define JOBQ_CORO_GUARD_BYTES 4096
#endif
/* Names in stats, leak reports and crash messages. */
#define JOBQ_CORO_NAME_BYTES 32
/* Bytes at the low end of every stack filled with a pattern and verified at
 * each switch: catches an overflow that skipped or preceded a guard page. */
#define JOBQ_CORO_CANARY_BYTES 64
/* Stacks set up together (guards installed and top pages faulted in with
 * one process_madvise call each); slabs are carved from larger regions
 * mapped at once (stack.c), so a million coroutines cost a few hundred
 * mmap calls and map entries. */
#define JOBQ_CORO_STACKS_PER_SLAB 64
/* Free stacks a scheduler thread keeps for reuse before returning a batch
 * to the shared pool; the shared pool keeps JOBQ_CORO_POOL_KEEP stacks
 * resident, or a quarter of the live coroutines if more (a load that just
 * fell tends to come back, and a resident stack is reused without a page
 * fault), and releases the memory of the rest (MADV_DONTNEED). */
#define JOBQ_CORO_CACHE_STACKS 64
#define JOBQ_CORO_POOL_KEEP 1024
/* During a burst of spawns (the pool has mapped at least this many
 * stacks and its resident free ones run low), an idle scheduler thread
 * prepares up to this many free stacks ahead of the spawners: mapping a
 * stack and faulting its top page in is most of a spawn that finds no
 * free stack, and a spinning or sleeping thread can do it meanwhile. */
#define JOBQ_CORO_PREPARE_AFTER_STACKS 512
#define JOBQ_CORO_PREPARE_STACKS 512
/* A new coroutine stays on the spawner's thread unless that thread has
 * more than this many live coroutines above the least-loaded thread:
 * keeps hand-offs local (cache-hot) while bursts still spread out. */
#define JOBQ_SPAWN_LOCAL_SLACK 4
/* Coroutine switches between two looks at the clock while a thread stays
 * busy: a due timer waits at most this many switches. */
#define JOBQ_SCHED_POLL_EVERY 61
/* Longest a busy thread goes without polling its event base: bounds how
 * long a ready fd waits behind CPU work and hand-offs, while keeping
 * epoll_wait (~100 ns here) to a fraction of a percent of the time. */
#define JOBQ_SCHED_POLL_NS 50000
/* Longest an idle scheduler thread spins on its remote queue before it
 * sleeps in epoll (the spin adapts below it): a cross-thread hand-off that
 * lands within it costs a cache-line transfer instead of an eventfd write
 * (~6 us in a VM) and a wake-up (25-75 us measured on a 2-vCPU KVM guest).
 * Must exceed that wake-up latency, or two threads that once fell asleep
 * keep waking each other through eventfd instead of spinning again. */
#define JOBQ_SCHED_SPIN_NS 100000
/* Helper threads of the blocking pool (file I/O, SQLite reads). */
#define JOBQ_BLOCKING_THREADS 4

/* ---- protocol --------------------------------------------------------- */

/* Larger request lines get an error reply and the connection is closed;
 * 1 MiB holds a batch of 1000 ordinary job specs. */
#define JOBQ_REQUEST_MAX_BYTES (1024 * 1024)
/* JSON nesting allowed in a request. Job specs need 3 levels; the check
 * runs before cJSON, whose parser recurses per level on a coroutine stack. */
#define JOBQ_JSON_MAX_DEPTH 32
/* Requests of one connection being handled at once (pipelining); beyond it
 * the server stops reading that connection until replies drain. */
#define JOBQ_CONN_INFLIGHT_MAX 256
/* Job specs in one `submit --batch` request. */
#define JOBQ_BATCH_MAX_JOBS 10000
/* File descriptors a client connection may never take, so that jobs can
 * still start and the store can still open its files when connections
 * pile up to RLIMIT_NOFILE: JOBQ_FD_RESERVE for the daemon itself (the
 * database and its WAL, the listener, each thread's epoll and eventfd,
 * the signalfd, the HTTP listener, the blocking pool's files), plus
 * JOBQ_FD_PER_JOB for each job --concurrency lets run (pidfd, capture
 * pipe, log file). jobqd raises its soft limit to cover --max-connections
 * and these; a connection beyond what the limit leaves is refused as one
 * over the cap. Connections always get at least half the limit. */
#define JOBQ_FD_RESERVE 64
#define JOBQ_FD_PER_JOB 3

/* ---- job specs -------------------------------------------------------- */

/* Command and arguments together, bytes: ARG_MAX-sized commands belong in a
 * script file, not in the queue. */
#define JOBQ_COMMAND_MAX_BYTES (256 * 1024)
/* Arguments in a command. */
#define JOBQ_COMMAND_MAX_ARGS 4096
/* Environment entries of a job together, bytes. */
#define JOBQ_ENV_MAX_BYTES (64 * 1024)
/* Job names, queue names, unique keys, cwd: shown in tables and logs. */
#define JOBQ_NAME_MAX_BYTES 200
#define JOBQ_CWD_MAX_BYTES 4096
/* Attempts a job may ask for. */
#define JOBQ_ATTEMPTS_MAX 1000
/* Priority range; higher runs first. */
#define JOBQ_PRIORITY_MIN (-1000000)
#define JOBQ_PRIORITY_MAX 1000000
/* Longest timeout, backoff or delay accepted, ms (10 years). */
#define JOBQ_DURATION_MAX_MS (10LL * 366 * 24 * 3600 * 1000)

/* ---- execution -------------------------------------------------------- */

/* Captured output kept per attempt; the rest is counted and dropped, and
 * the truncation is marked in the log and in `show`. */
#define JOBQ_LOG_CAP_BYTES (10 * 1024 * 1024)
/* Between SIGTERM to a job's process group and SIGKILL. */
#define JOBQ_KILL_GRACE_MS 5000
/* After a job's group is killed: how long exec waits for the capture pipe
 * to reach end-of-file and for the group to be gone before it gives up on
 * whatever escaped and still holds the pipe. Exited group members close
 * the pipe at once; only an escapee (setsid, new session) can hold it. */
#define JOBQ_EXEC_DRAIN_MS 1000
/* Read size of the log copier, allocated on the first output only (most
 * jobs print nothing): one read drains a full pipe (64 KiB on Linux). */
#define JOBQ_EXEC_COPY_BUF_BYTES (64 * 1024)
/* Stack of the clone child between clone and execve: raw system calls
 * only, a few frames; it lives on the helper thread's own stack. */
#define JOBQ_EXEC_CHILD_STACK_BYTES (32 * 1024)
/* At a job's end, pids allocated since its start are probed on the
 * scheduler thread (getsid, one cheap call each) to find processes that
 * left its group; a job that ran longer than JOBQ_EXEC_PROBE_MAX_MS or saw
 * more pids than JOBQ_EXEC_PROBE_MAX_PIDS allocated (the range might have
 * wrapped) gets a full /proc scan on a helper thread instead. */
#define JOBQ_EXEC_PROBE_MAX_PIDS 1024
#define JOBQ_EXEC_PROBE_MAX_MS 1000
/* Unattributed processes found by that probe whose environment is read
 * (on a helper thread) for the job's marker: room for this many in the
 * sweep itself; more are given room on the heap for the job's end. */
#define JOBQ_EXEC_PROBE_CANDIDATES 64
/* Rounds of kill-and-rescan at a job's end: a process forking as fast as
 * it can while being killed is caught within a few. */
#define JOBQ_EXEC_SWEEP_ROUNDS 8
/* At start-up, how long exec_kill_leftovers waits for a crashed daemon's
 * SIGKILLed jobs to be gone (a process in uninterruptible sleep, e.g. on a
 * dead NFS server, can take long), and how often it looks. */
#define JOBQ_EXEC_LEFTOVER_WAIT_MS 10000
#define JOBQ_EXEC_LEFTOVER_POLL_MS 5
/* How long a submitter's looked-up identity (passwd entry, groups) is
 * reused by a root daemon: an NSS lookup costs ~20 us per job with files
 * and a network round trip with LDAP; a group change takes effect for new
 * jobs within this time, as with nscd. */
#define JOBQ_EXEC_IDENT_TTL_MS 30000
/* Identities cached at once; the oldest is replaced. */
#define JOBQ_EXEC_IDENT_CACHE 64
/* At start-up, how long jobqd waits for the state directory's lock when
 * the jobqd that holds it is gone (the kernel releasing a killed daemon's
 * last reference: up to 15 s seen under load), and how often it tries. A
 * lock held by a live jobqd is refused at once (exit 4). */
#define JOBQ_STATE_LOCK_WAIT_MS 30000
#define JOBQ_STATE_LOCK_POLL_MS 20

/* ---- logging ---------------------------------------------------------- */

/* A log line, bytes, newline included. PIPE_BUF on Linux: a line is one
 * write(2), and a write of at most PIPE_BUF bytes to a pipe (journald,
 * `kubectl logs`, a shell pipeline) is never interleaved with another
 * process's. Longer lines are cut at a field boundary and marked
 * truncated=true. log_emit keeps two buffers of this size on the stack
 * (about 8 KiB of a 64 KiB coroutine stack). */
#define JOBQ_LOG_LINE_MAX_BYTES 4096
/* One value quoted by log_q(): commands, paths and error texts longer than
 * this are cut and end in "..."; the whole value is in `show`. The buffer
 * lives on the caller's stack, once per log_q() in the statement. */
#define JOBQ_LOG_VALUE_MAX_BYTES 512

/* ---- configuration ---------------------------------------------------- */

/* A config file larger than this is refused: a real one is a few hundred
 * bytes, and the whole file is read into memory before it is parsed. */
#define JOBQ_CONFIG_FILE_MAX_BYTES (1024 * 1024)
/* Queues given per-queue concurrency with --queue (all sources merged). */
#define JOBQ_CONFIG_QUEUES_MAX 1024
/* --threads: scheduler threads, each with an event base and a notify fd. */
#define JOBQ_THREADS_MAX 1024
/* --concurrency and per-queue limits: each running job is a process with a
 * pidfd and a log fd, so the process table and RLIMIT_NOFILE bind long
 * before this does. */
#define JOBQ_CONCURRENCY_MAX 1000000
/* --max-queued: jobs waiting in the store before submit is refused. */
#define JOBQ_QUEUED_MAX 1000000000
/* --max-connections: one fd and one coroutine each. */
#define JOBQ_CONNECTIONS_MAX 1000000
/* --log-cap: captured output per attempt, bytes (1 TiB). */
#define JOBQ_LOG_CAP_MAX_BYTES (1LL << 40)
/* --kill-grace: SIGTERM to SIGKILL, ms; an hour is already a hung job. */
#define JOBQ_KILL_GRACE_MAX_MS (3600LL * 1000)
/* --request-timeout: below 10 ms a healthy client on a loaded host would
 * be cut off mid-message; above a day it protects nothing. */
#define JOBQ_REQUEST_TIMEOUT_MIN_MS 10
#define JOBQ_REQUEST_TIMEOUT_MAX_MS (86400LL * 1000)

/* ---- store ------------------------------------------------------------ */

/* Kernel boot id (a 36-character UUID) stored with each attempt, NUL
 * included, with room to spare. */
#define JOBQ_BOOT_ID_BYTES 40
/* Requests the writer thread puts in one transaction (group commit): large
 * enough that 64 concurrent submitters share one fsync, small enough that a
 * burst does not hold every requester behind one huge COMMIT. */
#define JOBQ_STORE_BATCH_MAX_REQS 1024
/* After a group commit of several requests, the writer waits at most
 * this long (us) for those requesters to send their next request, so
 * concurrent submitters share one fsync instead of splitting into two
 * alternating halves. A lone submitter never waits: the wait ends when
 * everyone is back. */
#define JOBQ_STORE_GATHER_US 100
/* How long a lazy write (a running job's process group: store.h,
 * store_set_pgid_lazy) may wait for a group to ride in before it commits on
 * its own. Under load it always finds one, which saved half the commits
 * of a /bin/true workload; idle, it lands this long after the start. The
 * leftover scan at start-up finds a job's processes by their environment
 * marker, so the record's delay does not open a double run. */
#define JOBQ_STORE_LAZY_MS 20
/* How long the writer holds a group of patient writes (completions while
 * many jobs run: store_completion.patient) open for more, when the last
 * fsync ended less than this ago. 20,000 /bin/true jobs at --concurrency
 * 64: 13,000 commits became 7,300 at 1 ms, 4,700 at 2 ms, 2,750 at 4 ms
 * (daemon CPU per job 220 -> 150 us: each fsync costs ~80 us of CPU in a
 * VM, the disk's doorbell being a VM exit); at 8 ms the CPUs went idle
 * waiting for slots and claims. A job's end is recorded up to this much
 * later; submits never wait for it. */
#define JOBQ_STORE_LINGER_US 4000
/* Running jobs from which the dispatcher marks completions patient. */
#define JOBQ_DISPATCH_PATIENT_RUNNING 8
/* Scheduled and retrying jobs made ready by one claim: keeps a claim O(K)
 * even when a million jobs fall due at once; the rest follow next claim. */
#define JOBQ_STORE_PROMOTE_MAX 1000
/* Jobs one claim may return: a claim is one transaction on the writer. */
#define JOBQ_STORE_CLAIM_MAX 1024
/* Rows one purge transaction deletes, so a purge of millions never holds
 * the writer (and every submitter behind it) for long. */
#define JOBQ_STORE_PURGE_CHUNK 1000
/* Read connections (get, list, stats): one per blocking-pool thread, plus
 * one for callers on plain threads. */
#define JOBQ_STORE_READERS (JOBQ_BLOCKING_THREADS + 1)
/* How long a statement waits for a lock held by another connection before
 * it fails with a storage error, ms. Only a checkpoint or a foreign process
 * (the sqlite3 shell) can hold one: jobqd has a single writer. */
#define JOBQ_STORE_BUSY_TIMEOUT_MS 5000
/* wal_checkpoint(RESTART) after this many commits, or after the writer has
 * been idle this long with commits since the last one: with short readers
 * the WAL restarts from its beginning and stays near journal_size_limit. */
#define JOBQ_STORE_CHECKPOINT_COMMITS 1000
#define JOBQ_STORE_CHECKPOINT_IDLE_MS 1000
/* The WAL file is truncated back to this size after a checkpoint. */
#define JOBQ_STORE_WAL_LIMIT_BYTES (64 * 1024 * 1024)
/* Page cache of the writer connection, KiB: holds the hot index pages of a
 * million-job table (ready and due indexes, counters). */
#define JOBQ_STORE_CACHE_KIB (32 * 1024)
/* Page cache of each read connection, KiB. */
#define JOBQ_STORE_READ_CACHE_KIB (4 * 1024)
/* Jobs one list call returns. */
#define JOBQ_STORE_LIST_MAX 10000

/* ---- PostgreSQL store (docs/POSTGRES.md) -------------------------------- */

/* A node's lease, ms: this long after its last renewal, other nodes take
 * its running jobs over. Long enough that a slow database or a stall of a
 * few seconds does not split a healthy cluster, short enough that a dead
 * node's jobs run again within a quarter of a minute. JOBQ_PG_LEASE_MS in
 * jobqd's environment overrides it (tests use 2-3 s). */
#define JOBQ_PG_LEASE_MS 15000
/* Renewals per lease: one every lease/5 leaves four to lose. */
#define JOBQ_PG_RENEWALS_PER_LEASE 5
/* A node stops its own jobs once it has gone lease * 2/3 without a
 * successful renewal (on its monotonic clock, counted from when it sent
 * the last one): they are dead before any other node may take them over,
 * with a third of the lease left for the kill and for clock-rate drift. */
#define JOBQ_PG_LEASE_SELF_NUM 2
#define JOBQ_PG_LEASE_SELF_DEN 3
/* Dispatchers are woken by LISTEN/NOTIFY; this often, ms, each also looks
 * by itself, in case a notification was lost with a connection. */
#define JOBQ_PG_POLL_MS 5000
/* A NOTIFY payload may hold 8000 bytes; job ids go out in chunks this big. */
#define JOBQ_PG_NOTIFY_MAX_BYTES 7000
/* Connecting to the database, s (libpq's connect_timeout). */
#define JOBQ_PG_CONNECT_TIMEOUT_S 10
/* A statement of the writer waits this long for a row or advisory lock
 * another node holds, ms, then fails its group with a storage error
 * (-ETIMEDOUT): the writer must not hang behind a stuck node. */
#define JOBQ_PG_LOCK_TIMEOUT_MS 10000
/* Counter changes (jobq.count_deltas) are folded into jobq.counts this
 * often by one node at a time, ms, so reads sum a short table. */
#define JOBQ_PG_COMPACT_MS 2000

/* ---- operations: service manager, HTTP --------------------------------- */

/* STATUS= updates to the service manager, at most one per this many ms:
 * PID 1 handles each one, a busy queue would otherwise send one per job,
 * and nobody reads `systemctl status` faster. */
#define JOBQ_NOTIFY_STATUS_MIN_MS 1000
/* A STATUS= text ("running 3, queued 12, 1520 done; ..."), NUL included. */
#define JOBQ_NOTIFY_STATUS_MAX_BYTES 256
/* READY=1, RELOADING=1 or STOPPING=1 refused by a full manager queue is
 * tried again this many times, 10 ms apart (half a second in all), then
 * given up: the manager is not reading at all. */
#define JOBQ_NOTIFY_RETRIES 50
/* HTTP connections at once. Probes and scrapers need a handful, remote
 * clients one per command (a held `wait` or `logs --follow` keeps its
 * own); past the cap the listener stops accepting until one closes
 * (newcomers wait in the kernel's backlog), so slow clients cost bounded
 * memory and fds. evhttp reads a body before /rpc can check its token, so
 * the cap also bounds what unauthenticated clients can make jobqd buffer:
 * 128 bodies of 1 MiB, each for at most --request-timeout. jobqd's fd
 * limit is raised to cover these. */
#define JOBQ_HTTP_CONNECTIONS_MAX 128
/* Request line and headers of one HTTP request: a probe or a Prometheus
 * scrape sends a few hundred bytes, /rpc a bearer token of up to
 * JOBQ_HTTP_TOKEN_MAX_BYTES more. Larger gets 413 and is closed. */
#define JOBQ_HTTP_HEADERS_MAX_BYTES 8192
/* Body of an HTTP request: a POST /rpc carries one JSON-RPC message, as
 * large as a request line on the socket; GET and HEAD carry none. Larger
 * gets 413 and the connection is closed. */
#define JOBQ_HTTP_BODY_MAX_BYTES JOBQ_REQUEST_MAX_BYTES
/* The bearer token of --http-token-file, bytes: 16 base64 characters
 * hold 96 random bits, and anything shorter is a password, not a token
 * (docs suggest `openssl rand -hex 32`); at most half the header limit. */
#define JOBQ_HTTP_TOKEN_MIN_BYTES 16
#define JOBQ_HTTP_TOKEN_MAX_BYTES 4096

#endif
