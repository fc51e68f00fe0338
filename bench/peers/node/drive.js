// drive.js — the client side of bench-peers for the two Node.js peers,
// BullMQ (on redis-server) and pg-boss (on PostgreSQL): the same workloads as
// bench/peers/drive.c runs against jobq and beanstalkd, through each
// library's ordinary API, as a Node.js application would use it.
//
//   node drive.js SYSTEM enqueue N CLIENTS     N jobs from CLIENTS concurrent
//        clients (each its own connection), each awaiting every add; "rate".
//   node drive.js SYSTEM exec N CONC           a worker process (work CONC N)
//        and N jobs added in bulk; "rate" from first add to last completion.
//   node drive.js SYSTEM latency N STAMP DIR   a worker process (work 1);
//        N times: add "STAMP DIR/lat.I", wait for the file; percentiles in us.
//   node drive.js SYSTEM work CONC [N]         a worker running each job's
//        command (job.data.cmd, an argv) with CONC at once; with N, exits after
//        N completions printing "done <realtime ns>".
//   node drive.js SYSTEM put N CMD...          N jobs of CMD added in bulk.
//   node drive.js SYSTEM count                 "total <jobs the system holds>".
//
// SYSTEM is bullmq (REDIS_SOCK: redis-server's Unix socket) or pgboss
// (PGHOST: the socket directory, PGUSER, PGDATABASE). Queue name: "bench".
'use strict'

const { spawn } = require('node:child_process')
const fs = require('node:fs')
const path = require('node:path')
const { performance } = require('node:perf_hooks')

const QUEUE = 'bench'
const BULK = 500 // jobs per bulk add, as jobq's batches in drive.c
// pg-boss polls; 0.5 s is the shortest interval it accepts (its default is
// 2 s), the setting most favourable to it.
const PGBOSS_POLL_S = 0.5
const START_TIMEOUT_MS = 30000
const LATENCY_GAP_MS = 10

function die (msg) {
  process.stderr.write(`drive.js: ${msg}\n`)
  process.exit(1)
}

// Wall-clock time in ns with sub-ms resolution (a double: ~256 ns steps).
function realNs () {
  return (performance.timeOrigin + performance.now()) * 1e6
}

function sleep (ms) {
  return new Promise(resolve => setTimeout(resolve, ms))
}

function pct (sorted, p) {
  const i = Math.round(p / 100 * (sorted.length - 1))
  return sorted[Math.min(i, sorted.length - 1)]
}

function runCmd (argv) {
  return new Promise((resolve, reject) => {
    const child = spawn(argv[0], argv.slice(1), { stdio: 'ignore' })
    child.on('error', reject)
    child.on('exit', code => resolve(code))
  })
}

// --- the two systems behind one small interface ---

function bullmq () {
  const { Queue, Worker } = require('bullmq')
  const connection = { path: process.env.REDIS_SOCK, maxRetriesPerRequest: null }
  return {
    async client () {
      const q = new Queue(QUEUE, { connection })
      await q.waitUntilReady()
      return {
        add: data => q.add('job', data),
        addBulk: list => q.addBulk(list.map(data => ({ name: 'job', data }))),
        close: () => q.close(),
        async count () {
          const c = await q.getJobCounts()
          return Object.values(c).reduce((a, b) => a + b, 0)
        }
      }
    },
    async worker (conc, handler) {
      const w = new Worker(QUEUE, job => handler(job.data), { connection, concurrency: conc })
      await w.waitUntilReady()
      return w
    }
  }
}

function pgboss () {
  const PgBoss = require('pg-boss')
  const opts = max => ({
    host: process.env.PGHOST,
    user: process.env.PGUSER,
    database: process.env.PGDATABASE || 'postgres',
    max,
    // Maintenance and cron belong to one long-lived process; the drivers
    // are many short ones.
    supervise: false,
    schedule: false
  })
  async function boss (max) {
    const b = new PgBoss(opts(max))
    b.on('error', e => die(`pg-boss: ${e.message}`))
    await b.start()
    await b.createQueue(QUEUE)
    return b
  }
  return {
    async client (max = 1) {
      const b = await boss(max)
      return {
        add: data => b.send(QUEUE, data),
        addBulk: list => b.insert(list.map(data => ({ name: QUEUE, data }))),
        close: () => b.stop({ graceful: false, wait: true }),
        async count () {
          const r = await b.getDb().executeSql('SELECT count(*)::int AS n FROM pgboss.job')
          return r.rows[0].n
        }
      }
    },
    // One work() fetching CONC jobs per poll and running them at once: pg-boss
    // 10 has no concurrency option of its own.
    async worker (conc, handler) {
      const b = await boss(2)
      await b.work(QUEUE, { batchSize: conc, pollingIntervalSeconds: PGBOSS_POLL_S },
        jobs => Promise.all(jobs.map(j => handler(j.data))))
      return b
    }
  }
}

// --- workloads ---

// $DRIVE_MAX_SECONDS, as in drive.c, ends the adding early; the rate is
// then over the jobs added.
async function enqueue (sys, n, clients) {
  const cs = []
  for (let i = 0; i < clients; i++) cs.push(await sys.client())
  const max = Number(process.env.DRIVE_MAX_SECONDS || 0)
  const t0 = performance.now()
  let done = 0
  await Promise.all(cs.map(async (c, i) => {
    const from = Math.floor(n * i / clients); const to = Math.floor(n * (i + 1) / clients)
    for (let k = from; k < to; k++) {
      if (max > 0 && performance.now() - t0 >= max * 1000) break
      await c.add({ cmd: ['/bin/true'] })
      done++
    }
  }))
  const dt = performance.now() - t0
  console.log(`rate ${(done * 1000 / dt).toFixed(1)}\nn ${done}`)
  for (const c of cs) await c.close()
}

async function addBulk (c, n, cmd) {
  for (let i = 0; i < n; i += BULK) {
    await c.addBulk(Array.from({ length: Math.min(BULK, n - i) }, () => ({ cmd })))
  }
}

async function put (sys, n, cmd) {
  const c = await sys.client()
  await addBulk(c, n, cmd)
  await c.close()
}

// Starts `work CONC [N]` in a child process; resolves once it is ready.
function startWorker (system, conc, n) {
  const args = [__filename, system, 'work', String(conc)]
  if (n) args.push(String(n))
  const child = spawn(process.execPath, args, { stdio: ['ignore', 'pipe', 'inherit'] })
  let out = ''
  const ready = new Promise((resolve, reject) => {
    child.stdout.on('data', d => {
      out += d
      if (out.includes('ready\n')) resolve()
    })
    child.on('exit', code => reject(new Error(`worker exited with ${code}`)))
  })
  const done = new Promise(resolve => child.on('exit', () => resolve(out)))
  return { child, ready, done }
}

async function exec (system, sys, n, conc) {
  const w = startWorker(system, conc, n)
  await w.ready
  const c = await sys.client()
  const t0 = realNs()
  await addBulk(c, n, ['/bin/true'])
  const out = await w.done
  const m = /done (\d+)/.exec(out)
  if (!m) die('the worker did not finish')
  console.log(`rate ${(n * 1e9 / (Number(m[1]) - t0)).toFixed(1)}`)
  await c.close()
}

// Resolves with the stamp in DIR/name once the job has written it.
function awaitStamp (dir, name) {
  const file = path.join(dir, name)
  return new Promise((resolve, reject) => {
    const check = () => {
      let text
      try { text = fs.readFileSync(file, 'utf8') } catch { return false }
      if (!text.endsWith('\n')) return false
      clearTimeout(timer)
      watcher.close()
      resolve(Number(text))
      return true
    }
    const watcher = fs.watch(dir, (ev, f) => { if (f === name) check() })
    const timer = setTimeout(() => {
      watcher.close()
      reject(new Error(`job ${name} did not start within ${START_TIMEOUT_MS} ms`))
    }, START_TIMEOUT_MS)
    check()
  })
}

async function latency (system, sys, n, stamp, dir) {
  const w = startWorker(system, 1)
  await w.ready
  const c = await sys.client()
  const start = []; const ack = []
  for (let i = 0; i < n; i++) {
    const name = `lat.${i}`
    const t0 = realNs()
    const wait = awaitStamp(dir, name)
    await c.add({ cmd: [stamp, path.join(dir, name)] })
    ack.push(realNs() - t0)
    start.push(await wait - t0)
    await sleep(LATENCY_GAP_MS)
  }
  start.sort((a, b) => a - b)
  ack.sort((a, b) => a - b)
  console.log(`start_latency_p50_us ${(pct(start, 50) / 1000).toFixed(0)}`)
  console.log(`start_latency_p99_us ${(pct(start, 99) / 1000).toFixed(0)}`)
  console.log(`ack_latency_p50_us ${(pct(ack, 50) / 1000).toFixed(0)}`)
  await c.close()
  w.child.kill('SIGKILL')
}

async function work (sys, conc, n) {
  let done = 0
  await sys.worker(conc, async data => {
    await runCmd(data.cmd)
    if (n && ++done === n) {
      // The job is complete once its handler returns; a tick later the
      // library has recorded it.
      setImmediate(() => {
        process.stdout.write(`done ${Math.round(realNs())}\n`, () => process.exit(0))
      })
    }
  })
  process.stdout.write('ready\n')
}

async function main () {
  const [system, cmd, ...a] = process.argv.slice(2)
  const sys = system === 'bullmq' ? bullmq() : system === 'pgboss' ? pgboss() : die(`unknown system ${system}`)
  switch (cmd) {
    case 'enqueue': return enqueue(sys, +a[0], +a[1]).then(() => process.exit(0))
    case 'exec': return exec(system, sys, +a[0], +a[1]).then(() => process.exit(0))
    case 'latency': return latency(system, sys, +a[0], a[1], a[2]).then(() => process.exit(0))
    case 'work': return work(sys, +a[0], a[1] ? +a[1] : 0)
    case 'put': return put(sys, +a[0], a.slice(1)).then(() => process.exit(0))
    case 'count': {
      const c = await sys.client()
      console.log(`total ${await c.count()}`)
      process.exit(0)
      break
    }
    default: die(`unknown command ${cmd}`)
  }
}

main().catch(e => die(e.stack || String(e)))
