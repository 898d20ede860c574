#!/usr/bin/env node
// Interop between conveyor's Python library and the npm client `faktory-worker`, through its
// public API only. tests/test_library_interop_node.py runs it and asserts on the ONE JSON line
// it prints.
//
//   FAKTORY_URL=tcp://127.0.0.1:7419 node worker_library.js push
//       Node pushes jobs that the Python worker (conveyor.App) processes.
//   FAKTORY_URL=... JOBS=3 node worker_library.js work
//       A Node worker processes JOBS jobs that Python pushed, and reports what it received.
"use strict";

const { Client, Worker } = require("faktory-worker");

async function push() {
  const client = new Client({ url: process.env.FAKTORY_URL });
  try {
    const email = client.job("send_email", { to: "node@example.com", subject: "from node", extra: 1 });
    email.queue = "emails";
    email.custom = { origin: "node" };
    const jids = {
      email: await email.push(),
      add: await client.job("add", 2, 40).push(),
      bad: await client.job("send_email", "not an object").push(),
    };
    return { jids };
  } finally {
    await client.close();
  }
}

async function work() {
  const count = Number(process.env.JOBS || 1);
  const received = [];
  let done;
  const finished = new Promise((resolve) => {
    done = resolve;
  });
  const record = (jobtype) => async (...args) => {
    received.push({ jobtype, args });
    if (received.length === count) setImmediate(done);
  };
  const w = new Worker({
    url: process.env.FAKTORY_URL,
    concurrency: 2,
    queues: (process.env.QUEUES || "default").split(","),
    registry: { node_greet: record("node_greet"), node_sum: record("node_sum") },
  });
  const jobs = {};
  w.use(async (ctx, next) => {
    jobs[ctx.job.jid] = { queue: ctx.job.queue, custom: ctx.job.custom || null, retry: ctx.job.retry };
    await next();
  });
  await w.work();
  await finished;
  await w.stop();
  return { received, jobs };
}

const SCENARIOS = { push, work };

async function main() {
  const scenario = SCENARIOS[process.argv[2]];
  if (!scenario) {
    console.error(`usage: worker_library.js <${Object.keys(SCENARIOS).join("|")}>`);
    process.exit(2);
  }
  process.stdout.write(`${JSON.stringify(await scenario())}\n`);
}

main().catch((error) => {
  console.error(error && error.stack ? error.stack : error);
  process.exit(1);
});
