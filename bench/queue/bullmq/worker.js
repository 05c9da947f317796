// bench/queue BullMQ peer: one worker process; a no-op processor.
// usage: node worker.js REDIS_URL PREFIX CONCURRENCY
// Acknowledgement after completion is BullMQ's own: a job is moved to completed
// (here: removed, removeOnComplete) when the processor's promise resolves.
// The process exits when the queue is drained: on the worker's 'drained' event
// (its fetch found no waiting job) it closes, which waits for its active jobs.
// prints {"processed":n,"seconds":s} (seconds from the first job started)
'use strict';
const { Worker } = require('bullmq');

async function main() {
  const [url, prefix, concArg] = process.argv.slice(2);
  let processed = 0;
  let first = null;
  const worker = new Worker(
    'bench',
    async () => {
      if (first === null) first = process.hrtime.bigint();
      processed++;
    },
    { connection: { url }, prefix, concurrency: Number(concArg || 50), autorun: false },
  );
  let closing = false;
  worker.on('drained', async () => {
    if (closing) return;
    closing = true;
    await worker.close();
    const secs = first === null ? 0 : Number(process.hrtime.bigint() - first) / 1e9;
    console.log(JSON.stringify({ processed, seconds: secs }));
    process.exit(0);
  });
  worker.on('error', (e) => console.error('worker error:', e));
  await worker.run();
}

main().catch((e) => { console.error(e); process.exit(1); });
