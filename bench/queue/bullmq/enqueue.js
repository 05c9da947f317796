// bench/queue BullMQ peer: enqueue TASKS no-op jobs with Queue.addBulk.
// usage: node enqueue.js REDIS_URL PREFIX TASKS [CHUNK=1000]
// prints {"enqueued":N,"seconds":S}
'use strict';
const { Queue } = require('bullmq');

async function main() {
  const [url, prefix, tasksArg, chunkArg] = process.argv.slice(2);
  const tasks = Number(tasksArg);
  const chunk = Number(chunkArg || 1000);
  const queue = new Queue('bench', { connection: { url }, prefix });
  await queue.waitUntilReady();
  // Completed jobs are removed (removeOnComplete), as sluice deletes a finished
  // task's hash when it keeps no result; failed ones are kept.
  const opts = { removeOnComplete: true, removeOnFail: false, attempts: 25 };
  const start = process.hrtime.bigint();
  for (let left = tasks; left > 0; ) {
    const n = Math.min(left, chunk);
    const jobs = new Array(n);
    for (let i = 0; i < n; i++) jobs[i] = { name: 'bench.noop', data: {}, opts };
    await queue.addBulk(jobs);
    left -= n;
  }
  const secs = Number(process.hrtime.bigint() - start) / 1e9;
  console.log(JSON.stringify({ enqueued: tasks, seconds: secs }));
  await queue.close();
}

main().catch((e) => { console.error(e); process.exit(1); });
