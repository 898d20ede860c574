#!/usr/bin/env node
// Drives a Faktory-compatible server with the npm client `faktory-worker`, through its public
// API only, and prints ONE JSON line with what the server answered. tests/test_interop_node.py
// runs it against a conveyor server (FAKTORY_URL) and asserts on that JSON.
//
//   FAKTORY_URL=tcp://:password@127.0.0.1:7419 [FAKTORY_TLS_CA=cert.pem] \
//     node scenario.js <roundtrip|mutate|queues|worker|quiet|admission>
"use strict";

const fs = require("fs");
const { Client, Worker } = require("faktory-worker");

const HOUR_MS = 3600 * 1000;

// FAKTORY_URL for everything; FAKTORY_TLS_CA (a PEM file) switches on TLS trusting that CA,
// since the client takes TLS settings as options rather than from a tcp+tls:// URL.
function connectionOptions() {
  const options = { url: process.env.FAKTORY_URL };
  if (process.env.FAKTORY_TLS_CA) {
    options.tlsOptions = { ca: [fs.readFileSync(process.env.FAKTORY_TLS_CA)] };
  }
  return options;
}

function sizes(info) {
  const { tasks, queues } = info.faktory;
  return {
    scheduled: tasks.Scheduled.size,
    retries: tasks.Retries.size,
    dead: tasks.Dead.size,
    queues,
  };
}

// PUSH (builder and plain object), PUSHB with one invalid job, FETCH in priority order,
// FAIL, ACK, INFO.
async function roundtrip(client) {
  await client.flush();
  const jid1 = await client.job("Add", 1, 2).push();
  const boom = client.job("Boom", "x", { nested: [1, 2] });
  boom.queue = "critical";
  boom.custom = { tenant: "acme" };
  boom.retry = 3;
  const jid2 = await boom.push();
  const rejected = await client.pushBulk([
    { jobtype: "Bulk", args: [1] },
    { jobtype: "Bulk", args: [2] },
    { jobtype: "", args: [] },
  ]);
  const before = await client.info();
  const first = await client.fetch("critical", "default");
  const failError = new Error("kaboom");
  failError.code = "KaboomError";
  await client.fail(first.jid, failError);
  const second = await client.fetch("critical", "default");
  await client.ack(second.jid);
  const after = await client.info();
  return {
    jid1,
    jid2,
    rejected: Object.values(rejected).map((r) => r.reason),
    first,
    second,
    before: sizes(before),
    after: sizes(after),
    processed: after.faktory.total_processed,
    failures: after.faktory.total_failures,
    server: after.server,
  };
}

// MUTATE kill/requeue/discard/clear with the jobtype, jids and pattern filters.
async function mutate(client) {
  await client.flush();
  const at = new Date(Date.now() + HOUR_MS).toISOString();
  const push = (jobtype, arg) => {
    const job = client.job(jobtype, arg);
    job.at = at;
    return job.push();
  };
  const a1 = await push("Alpha", 1);
  await push("Alpha", 2);
  await push("Beta", 3);
  await push("Gamma", 4);
  const steps = { pushed: sizes(await client.info()) };

  await client.scheduled.ofType("Alpha").kill();
  steps.killAlpha = sizes(await client.info());
  await client.dead.withJids(a1).requeue();
  steps.requeueA1 = sizes(await client.info());
  await client.scheduled.matching("*Gamma*").discard();
  steps.discardGamma = sizes(await client.info());
  await client.dead.discard();
  steps.discardDead = sizes(await client.info());
  await client.scheduled.clear();
  steps.clearScheduled = sizes(await client.info());
  const requeued = await client.fetch("default");
  return { a1, requeued, steps };
}

// QUEUE PAUSE/RESUME/LATENCY/REMOVE through the client's raw send (it has no wrapper).
async function queues(client) {
  await client.flush();
  const jid = await client.job("Paused", 1).push();
  const paused = await client.send(["QUEUE", "PAUSE", "default"]);
  const whilePaused = await client.fetch("default");
  const resumed = await client.send(["QUEUE", "RESUME", "default"]);
  const latency = JSON.parse(await client.send(["QUEUE", "LATENCY", "default", "nosuch"]));
  const fetched = await client.fetch("default");
  await client.ack(fetched.jid);
  await client.job("Doomed", 1).push();
  const beforeRemove = sizes(await client.info()).queues;
  const removed = await client.send(["QUEUE", "REMOVE", "default"]);
  const afterRemove = sizes(await client.info()).queues;
  let wildcardLatency = null;
  try {
    await client.send(["QUEUE", "LATENCY", "*"]);
  } catch (error) {
    wildcardLatency = error.message;
  }
  return {
    jid,
    paused,
    whilePaused,
    resumed,
    latency,
    fetched,
    beforeRemove,
    removed,
    afterRemove,
    wildcardLatency,
  };
}

// The real worker loop: HELLO with wid, BEAT, FETCH, ACK and FAIL through registered handlers.
// PREPUSHED=1: the jobs (Square 0..JOBS-1 and one Explode) were pushed by another client.
async function worker(client) {
  const count = Number(process.env.JOBS || 5);
  if (!process.env.PREPUSHED) {
    await client.flush();
    for (let i = 0; i < count; i += 1) await client.job("Square", i).push();
    await client.job("Explode", "now").push();
  }
  const results = [];
  let failed = null;
  let done;
  const finished = new Promise((resolve) => {
    done = resolve;
  });
  const check = () => {
    if (results.length === count && failed !== null) done();
  };
  const w = new Worker({
    ...connectionOptions(),
    concurrency: 2,
    queues: ["default"],
    registry: {
      Square: async (n) => {
        results.push(n * n);
        check();
      },
      Explode: async () => {
        failed = "Explode";
        setImmediate(check);
        throw new Error("exploded on purpose");
      },
    },
  });
  await w.work();
  await finished;
  await w.stop();
  const info = await client.info();
  return {
    wid: w.wid,
    results: results.sort((x, y) => x - y),
    failed,
    after: sizes(info),
    processed: info.faktory.total_processed,
    failures: info.faktory.total_failures,
  };
}

// BEAT state changes: print {"ready":...}, wait until the server (told by the test) answers a
// heartbeat with {"state":"quiet"}, then check that the quiet worker leaves new jobs alone.
async function quiet(client) {
  await client.flush();
  const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
  const ran = [];
  const w = new Worker({
    ...connectionOptions(),
    concurrency: 1,
    beatInterval: 0.05,
    registry: { Late: async (n) => ran.push(n) },
  });
  await w.work();
  process.stdout.write(`${JSON.stringify({ ready: true, wid: w.wid })}\n`);
  const started = Date.now();
  while (!w.quieted && Date.now() - started < 10000) await sleep(10);
  const quieted = Boolean(w.quieted);
  await sleep(500); // a FETCH already in flight when the signal came ends within the wait
  await client.job("Late", 1).push();
  await sleep(500); // a running worker would have fetched it by now
  const info = await client.info();
  await w.stop();
  return { wid: w.wid, quieted, ran, queued: info.faktory.queues.default || 0 };
}

// Faktory Enterprise's keys in `custom`: unique_for (PUSH and PUSHB refused with NOTUNIQUE),
// expires_at (a job expired already is accepted and never fetched), and backpressure refusing
// a PUSH to a full queue ("bounded", configured by the test).
async function admission(client) {
  await client.flush();
  const unique = () => {
    const job = client.job("Sync", { id: 7 });
    job.queue = "uq";
    job.custom = { unique_for: 60 };
    return job;
  };
  const first = await unique().push();
  let duplicate = null;
  try {
    await unique().push();
  } catch (error) {
    duplicate = String(error.message || error);
  }
  const bulk = await client.pushBulk([unique().toJSON(), client.job("Other", 1).toJSON()]);
  const expired = client.job("Late", 1);
  expired.queue = "xq";
  expired.custom = { expires_at: new Date(Date.now() - 1000).toISOString() };
  const expiredJid = await expired.push();
  const fetchedExpired = await client.fetch("xq");
  const bounded = client.job("Full", 1);
  bounded.queue = "bounded";
  await bounded.push();
  let full = null;
  try {
    const again = client.job("Full", 2);
    again.queue = "bounded";
    await again.push();
  } catch (error) {
    full = String(error.message || error);
  }
  const fetched = await client.fetch("uq");
  await client.ack(fetched.jid);
  const afterAck = await unique().push();
  const info = await client.info();
  return {
    first,
    duplicate,
    bulk: Object.values(bulk).map((r) => r.reason),
    expiredJid,
    fetchedExpired,
    full,
    afterAck,
    features: info.features,
  };
}

const SCENARIOS = { roundtrip, mutate, queues, worker, quiet, admission };

async function main() {
  const name = process.argv[2];
  const scenario = SCENARIOS[name];
  if (!scenario) {
    console.error(`usage: scenario.js <${Object.keys(SCENARIOS).join("|")}>`);
    process.exit(2);
  }
  const client = new Client(connectionOptions());
  try {
    const result = await scenario(client);
    process.stdout.write(`${JSON.stringify(result)}\n`);
  } finally {
    await client.close();
  }
}

main().catch((error) => {
  console.error(error && error.stack ? error.stack : error);
  process.exit(1);
});
