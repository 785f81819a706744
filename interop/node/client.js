#!/usr/bin/env node
/*
 * Drives the ORIGINAL hakken client (npm hakken@0.1.12) for the Rust interop
 * tests.  Protocol: one JSON object per line on stdin, one JSON reply line per
 * request on stdout, in request order (requests are handled one at a time).
 * Every request has an "id" that is echoed back.  Replies are
 *   {"id":..,"ok":true, ...}  or  {"id":..,"ok":false,"error":"..."}
 * plus "ms": how long the request took.  Logs (bunyan JSON) go to stderr only.
 * The process never crashes on a bad request; it exits 0 at stdin EOF (after
 * the request in progress has been answered).
 *
 * Commands:
 *   {"cmd":"start","host":"127.0.0.1:P","heartbeatInterval":200,"pollInterval":200,
 *    "resyncInterval":2000}
 *       require('hakken')({...}).client(), then client.start(cb); replies after cb.
 *       Also passes skipHakken when given.  One client per process.
 *   {"cmd":"publish","listing":{"service":"s","host":"h:1",...}}
 *       client.publish(listing, cb); replies when cb fires, i.e. after one
 *       ?heartbeat=true POST has been tried on every known coordinator
 *       (failures of those POSTs are only logged by the original, never reported).
 *   {"cmd":"randomWatch","watch":"w1","service":"s"[,"filter":{..}][,"numToPull":n]}
 *       client.randomWatch(service, filter, {numToPull}); watch.start(cb).
 *   {"cmd":"watch","watch":"w2","service":"s"[,"filter":{"k":"v"}]}
 *       client.watch(service, filter); watch.start(cb).  The filter keeps
 *       listings whose top-level fields are === to every given value.
 *   {"cmd":"get","watch":"w1"}          -> {"listings":[...]} from watch.get()
 *   {"cmd":"closeWatch","watch":"w1"}   watch.close(cb)
 *   {"cmd":"coordinators"}              -> {"coordinators":[...]}: client.getCoordinators()
 *                                          (host strings of the coordinators it knows)
 *   {"cmd":"listings"}                  -> {"listings":[...]}: client.getListings()
 *                                          (what it publishes)
 *   {"cmd":"close"}                     client.close() (no callback in the original)
 *   {"cmd":"ping"}                      -> ok
 * Optional "timeoutMs" on any request (default 30000): reply ok:false when the
 * original never calls back.
 */
'use strict';

// bunyan writes to process.stdout by default: keep stdout for replies only.
const realStdoutWrite = process.stdout.write.bind(process.stdout);
process.stdout.write = process.stderr.write.bind(process.stderr);

const readline = require('readline');
// Loaded up front so that "start" measures the network, not module loading:
// the first hakken(config) call loads restify (~130 ms), the first client
// loads superagent (~50 ms).  hakken(config) itself has no side effects.
const hakken = require('hakken');
hakken({ host: 'warmup.invalid:1' });
require('superagent');

let hakkenClient = null;
let skipHakken = false;
const watches = {};

function errText(err) {
  if (err == null) return 'unknown error';
  if (typeof err === 'string') return err;
  if (err instanceof Error) return err.message || String(err);
  if (typeof err.message === 'string') return err.message;
  try {
    return JSON.stringify(err);
  } catch (e) {
    return String(err);
  }
}

function reply(obj) {
  realStdoutWrite(JSON.stringify(obj) + '\n');
}

function needClient() {
  if (hakkenClient == null) throw new Error('no client: send "start" first');
  return hakkenClient;
}

function needWatch(req) {
  const w = watches[req.watch];
  if (w == null) throw new Error('unknown watch ' + JSON.stringify(req.watch));
  return w;
}

function startWatch(req, makeWatch, done) {
  if (typeof req.watch !== 'string') throw new Error('"watch" (a name) is required');
  if (watches[req.watch] != null) throw new Error('watch ' + JSON.stringify(req.watch) + ' exists');
  if (typeof req.service !== 'string') throw new Error('"service" is required');
  const watch = makeWatch(needClient());
  watches[req.watch] = watch;
  // The original may call this callback twice (callback(err) then callback()):
  // done() only answers the first call.
  watch.start((err) => done(err));
}

// Each handler calls done(err, extraFields) exactly once (later calls ignored).
const handlers = {
  ping(req, done) {
    done(null);
  },
  start(req, done) {
    if (hakkenClient != null) throw new Error('client already started');
    const config = {};
    for (const k of ['host', 'heartbeatInterval', 'pollInterval', 'resyncInterval', 'skipHakken']) {
      if (req[k] !== undefined) config[k] = req[k];
    }
    const client = hakken(config).client();
    hakkenClient = client;
    skipHakken = !!config.skipHakken;
    if (skipHakken) {
      client.start(); // the original never calls the callback with skipHakken
      return done(null);
    }
    client.start((err) => {
      if (err != null) hakkenClient = null; // allow another attempt
      done(err);
    });
  },
  publish(req, done) {
    needClient().publish(req.listing, (err) => done(err));
    if (skipHakken) done(null); // the original returns without calling back
  },
  randomWatch(req, done) {
    const cfg = req.numToPull != null ? { numToPull: req.numToPull } : undefined;
    startWatch(req, (c) => c.randomWatch(req.service, req.filter, cfg), done);
  },
  watch(req, done) {
    startWatch(req, (c) => c.watch(req.service, req.filter), done);
  },
  get(req, done) {
    done(null, { listings: needWatch(req).get() });
  },
  closeWatch(req, done) {
    const w = needWatch(req);
    delete watches[req.watch];
    w.close(() => done(null));
  },
  coordinators(req, done) {
    done(null, { coordinators: needClient().getCoordinators() });
  },
  listings(req, done) {
    done(null, { listings: needClient().getListings() });
  },
  close(req, done) {
    if (hakkenClient != null) hakkenClient.close();
    done(null);
  }
};

function handle(line) {
  return new Promise((resolve) => {
    const t0 = Date.now();
    let req;
    try {
      req = JSON.parse(line);
    } catch (e) {
      reply({ id: null, ok: false, error: 'bad JSON: ' + e.message });
      return resolve();
    }
    const id = req && req.id !== undefined ? req.id : null;
    let answered = false;
    let timer = null;
    const done = (err, extra) => {
      if (answered) return;
      answered = true;
      if (timer) clearTimeout(timer);
      const ms = Date.now() - t0;
      if (err != null) {
        reply({ id, ok: false, error: errText(err), ms });
      } else {
        reply(Object.assign({ id, ok: true }, extra || {}, { ms }));
      }
      resolve();
    };
    if (req == null || typeof req !== 'object' || typeof req.cmd !== 'string' ||
        !Object.prototype.hasOwnProperty.call(handlers, req.cmd)) {
      return done('unknown command ' + JSON.stringify(req && req.cmd));
    }
    const timeoutMs = typeof req.timeoutMs === 'number' ? req.timeoutMs : 30000;
    timer = setTimeout(() => done('timeout after ' + timeoutMs + ' ms'), timeoutMs);
    try {
      handlers[req.cmd](req, done);
    } catch (e) {
      done(e);
    }
  });
}

process.on('uncaughtException', (e) => {
  process.stderr.write('client.js: uncaught exception: ' + (e && e.stack || e) + '\n');
});
process.on('unhandledRejection', (e) => {
  process.stderr.write('client.js: unhandled rejection: ' + (e && e.stack || e) + '\n');
});
process.on('SIGTERM', () => process.exit(0));
process.on('SIGINT', () => process.exit(0));

let chain = Promise.resolve();
const rl = readline.createInterface({ input: process.stdin, terminal: false });
rl.on('line', (line) => {
  if (line.trim() === '') return;
  chain = chain.then(() => handle(line));
});
rl.on('close', () => {
  chain.then(() => process.exit(0));
});
