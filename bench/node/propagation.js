#!/usr/bin/env node
/*
 * Workload 5, original side: the ORIGINAL hakken client (npm hakken 0.1.12, from
 * interop/node/node_modules; run with NODE_PATH pointing there) watching one
 * service with N watches, polling. Prints one line `RESULT {json}` on stdout.
 *
 *   node propagation.js --coord 127.0.0.1:P --watchers 1000 --poll 1000 \
 *        --changes 1000 --every 10 --closes 50 --close-every 100
 *
 * Publish phase: a publisher client publishes listing k (host pub-k:1, field v = k)
 * every `every` ms. The original never replaces a payload, so each change is a new
 * listing (the coordinator should run with a short H so old ones expire). A
 * watcher's state is the highest v it holds; change k is seen when state >= k.
 * Close phase: `closes` clients publish one listing each to another service, then
 * close() one every `close-every` ms; seen when a watcher's view lost it.
 * Everything is bounded: the process exits after at most 140 s.
 */
'use strict';
const realStdoutWrite = process.stdout.write.bind(process.stdout);
process.stdout.write = process.stderr.write.bind(process.stderr);
const hakken = require('hakken');
const { performance } = require('perf_hooks');

const args = {};
const argv = process.argv.slice(2);
for (let i = 0; i + 1 < argv.length; i += 2) args[argv[i].replace(/^--/, '')] = argv[i + 1];
const coord = args.coord;
const N = Number(args.watchers || 1000);
const POLL = Number(args.poll || 1000);
const CHANGES = Number(args.changes || 1000);
const EVERY = Number(args.every || 10);
const CLOSES = Number(args.closes || 50);
const CLOSE_EVERY = Number(args['close-every'] || 100);

setTimeout(() => { process.stderr.write('propagation.js: overall time limit\n'); process.exit(3); }, 140000);
const keepAlive = setInterval(() => {}, 1000);

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const quiet = { info() {}, warn() {}, error() {}, debug() {}, trace() {}, child() { return quiet; } };

function startClient(heartbeatInterval) {
  return new Promise((resolve, reject) => {
    const c = hakken({ host: coord, heartbeatInterval, pollInterval: 60000, resyncInterval: 600000 }, quiet).client();
    c.start((err) => (err ? reject(err) : resolve(c)));
  });
}

function stats(samples, perChange, changes, missed) {
  const s = Float64Array.from(samples).sort();
  const a = Float64Array.from(perChange).sort();
  const pct = (arr, p) => (arr.length ? arr[Math.min(arr.length - 1, Math.max(0, Math.ceil(p / 100 * arr.length) - 1))] : 0);
  return {
    samples: s.length, changes, missed,
    p50_ms: pct(s, 50), p99_ms: pct(s, 99), max_ms: s.length ? s[s.length - 1] : 0,
    all_p50_ms: pct(a, 50), all_p99_ms: pct(a, 99),
  };
}

async function startWatches(client, service, makeUpdater) {
  const watches = [];
  for (let i = 0; i < N; ++i) {
    const w = client.watch(service, null, makeUpdater(i));
    watches.push(w);
  }
  // Staggered over one interval, as independent clients would be.
  for (let i = 0; i < N; ++i) {
    setTimeout(() => watches[i].start(), Math.floor(i * POLL / N)).unref();
  }
  await sleep(POLL + 200);
  return watches;
}

async function publishPhase() {
  const publisher = await startClient(600000);
  const watcher = await startClient(POLL);
  const t0 = new Array(CHANGES + 1);
  const last = new Array(N).fill(0);
  const perChangeMax = new Array(CHANGES + 1).fill(0);
  const seenCount = new Array(CHANGES + 1).fill(0);
  const samples = [];
  await startWatches(watcher, 'prop', (i) => ({
    update(listings) {
      let s = 0;
      for (const l of listings) if (typeof l.v === 'number' && l.v > s) s = l.v;
      if (s <= last[i]) return;
      const now = performance.now();
      for (let k = last[i] + 1; k <= s; ++k) {
        if (t0[k] === undefined) continue;
        const lat = now - t0[k];
        samples.push(lat);
        seenCount[k]++;
        if (lat > perChangeMax[k]) perChangeMax[k] = lat;
      }
      last[i] = s;
    },
    get() { return []; },
  }));
  for (let k = 1; k <= CHANGES; ++k) {
    t0[k] = performance.now();
    publisher.publish({ service: 'prop', host: 'pub-' + k + ':1', v: k }, () => {});
    await sleep(EVERY);
  }
  await sleep(POLL * 2 + 500);
  watcher.close();
  publisher.close();
  let missed = 0;
  for (let k = 1; k <= CHANGES; ++k) missed += N - seenCount[k];
  return stats(samples, perChangeMax.slice(1), CHANGES, missed);
}

async function closePhase() {
  const clients = [];
  for (let j = 0; j < CLOSES; ++j) {
    const c = await startClient(POLL);
    await new Promise((r) => c.publish({ service: 'close', host: 'close-' + j + ':1' }, () => r()));
    clients.push(c);
  }
  const watcher = await startClient(POLL);
  const present = [];
  const tClose = new Array(CLOSES);
  const seen = new Array(CLOSES).fill(0);
  const perMax = new Array(CLOSES).fill(0);
  const samples = [];
  await startWatches(watcher, 'close', (i) => {
    present[i] = new Set();
    return {
      update(listings) {
        const now = performance.now();
        const cur = new Set(listings.map((l) => l.host));
        for (const h of present[i]) {
          if (!cur.has(h)) {
            const j = Number(h.slice(6, h.indexOf(':')));
            if (tClose[j] !== undefined) {
              const lat = now - tClose[j];
              samples.push(lat);
              seen[j]++;
              if (lat > perMax[j]) perMax[j] = lat;
            }
          }
        }
        present[i] = cur;
      },
      get() { return []; },
    };
  });
  await sleep(POLL);
  for (let j = 0; j < CLOSES; ++j) {
    tClose[j] = performance.now();
    clients[j].close();
    await sleep(CLOSE_EVERY);
  }
  await sleep(POLL * 6 + 1000);
  watcher.close();
  let missed = 0;
  for (let j = 0; j < CLOSES; ++j) missed += N - seen[j];
  return stats(samples, perMax, CLOSES, missed);
}

(async () => {
  const publish = await publishPhase();
  const close = await closePhase();
  realStdoutWrite('RESULT ' + JSON.stringify({ watchers: N, poll_ms: POLL, every_ms: EVERY, publish, close }) + '\n');
  clearInterval(keepAlive);
  process.exit(0);
})().catch((e) => {
  process.stderr.write('propagation.js failed: ' + (e && e.stack || e) + '\n');
  process.exit(1);
});
