#!/usr/bin/env node
/*
 * Runs the ORIGINAL hakken coordinator (npm hakken@0.1.12) embedded, for the
 * Rust interop tests.  The published package has no env.js, so its own
 * coordinator.js cannot start; this file does what it would have done.
 *
 * Usage:
 *   node coordinator.js --port P --discovery HOST:PORT --heartbeat H_MS
 *                       [--missed N] [--resync MS] [--announce NAME]
 *                       [--log-heartbeats] [--report-requests]
 * Every option may also come from the environment (argv wins):
 *   PORT, DISCOVERY_HOST, DISCOVERY_HEARTBEAT_INTERVAL, MISSED_HEARTBEATS_ALLOWED,
 *   RESYNC_POLL_INTERVAL, ANNOUNCE_HOST, LOG_HEARTBEATS=true.
 * Defaults: port 8082, discovery = ANNOUNCE:PORT (itself), heartbeat 60000,
 * missed 3, resync = heartbeat x 10, announce "localhost".
 *
 * Output: one line "READY <port>" on stdout once the server listens; with
 * --report-requests, then one line "REQUEST <method> <url> <status>" per request
 * answered (for tests that count what reached the original); everything else
 * (bunyan JSON logs of hakken/restify) goes to stderr.
 * On a listen error (e.g. EADDRINUSE): "FAILED <message>" on stderr, exit 1.
 * SIGTERM / SIGINT: exit 0.
 *
 * --port 0: the original cannot use an ephemeral port, because makeSimple()
 * builds the self-descriptor "ANNOUNCE:PORT" before listening, so it would
 * announce "localhost:0" to its discovery host and to everyone polling it.
 * Therefore --port 0 makes THIS script pick a free port first (a throwaway
 * listener on the same unspecified address the original binds, closed again
 * before the original starts) and run the original on that port.  There is a
 * tiny race window; on a collision the script exits 75 (EX_TEMPFAIL) with
 * FAILED, and the caller starts it again (tests/common/node.rs does).
 *
 * What the original server accepts (read from node_modules/hakken/lib):
 *   require('hakken')(config) — lib/hakken.js:
 *     host                     required: the discovery host "name:port" the
 *                              coordinator resyncs from (DISCOVERY_HOST)
 *     heartbeatInterval        default 20000 (NB: 20000 here, the 60000 of the
 *                              docs comes from the missing env.js); the listing
 *                              reaper period and the peer-poll period
 *     missedHeartbeatsAllowed  default 3; reaped when older than H x this
 *     logHeartbeats            default true; log every ?heartbeat=true POST
 *     pollInterval, resyncInterval, skipHakken   client-only
 *   lib/server/coordinatorBroker.js reads the resync period from
 *     config.resyncPollDuration  (NOT resyncPollInterval as the hakken.js doc
 *     comment says; env.js presumably mapped RESYNC_POLL_INTERVAL to the other
 *     name, hence "always H x 10").  --resync is passed as resyncPollDuration,
 *     so it DOES take effect here.
 *   server.makeSimple(host, port):
 *     host  is only the ANNOUNCE name: the self-descriptor is {host: host+':'+port}.
 *           It is NOT a bind address.
 *     port  listen port; start() calls restify listen(port) with no address,
 *           i.e. the unspecified address (dual-stack "::" on Linux), so
 *           127.0.0.1, ::1 and every other interface answer.
 *   start() takes no callback and returns nothing; we get the restify server
 *   through makeSimple(...).withRestifyServer(s => s) and wait for 'listening'.
 *   Polling (amoeba polling.repeat) runs its first round IMMEDIATELY, at
 *   makeSimple() time, i.e. before the server listens; all its timers are
 *   unref'd, so only the listening socket keeps the process alive.
 */
'use strict';

// bunyan (hakken's and amoeba's logger) writes to process.stdout by default.
// Keep the real stdout for our protocol line and send everything else to stderr.
// This must happen before hakken is required (bunyan captures the stream object,
// so patching its write method is enough).
const realStdoutWrite = process.stdout.write.bind(process.stdout);
process.stdout.write = process.stderr.write.bind(process.stderr);

const net = require('net');

function parseArgs(argv) {
  const out = {};
  for (let i = 0; i < argv.length; ++i) {
    const a = argv[i];
    if (!a.startsWith('--')) {
      throw new Error('unexpected argument ' + a);
    }
    let key = a.slice(2);
    let val;
    const eq = key.indexOf('=');
    if (eq >= 0) {
      val = key.slice(eq + 1);
      key = key.slice(0, eq);
    } else if (key === 'log-heartbeats' || key === 'report-requests') {
      val = 'true';
    } else {
      if (i + 1 >= argv.length) {
        throw new Error('missing value for ' + a);
      }
      val = argv[++i];
    }
    out[key] = val;
  }
  return out;
}

function num(name, v) {
  const n = Number(v);
  if (!Number.isInteger(n) || n < 0) {
    throw new Error('bad ' + name + ': ' + v);
  }
  return n;
}

function freePort() {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once('error', reject);
    // No address: the same unspecified (dual-stack) address the original binds.
    s.listen(0, () => {
      const port = s.address().port;
      s.close(() => resolve(port));
    });
  });
}

async function main() {
  const args = parseArgs(process.argv.slice(2));
  const env = process.env;
  const pick = (arg, envName) => (args[arg] !== undefined ? args[arg] : env[envName]);

  let port = num('port', pick('port', 'PORT') || 8082);
  const announce = pick('announce', 'ANNOUNCE_HOST') || 'localhost';
  const heartbeat = num('heartbeat', pick('heartbeat', 'DISCOVERY_HEARTBEAT_INTERVAL') || 60000);
  const missed = num('missed', pick('missed', 'MISSED_HEARTBEATS_ALLOWED') || 3);
  const resync = pick('resync', 'RESYNC_POLL_INTERVAL');
  const logHeartbeats = String(pick('log-heartbeats', 'LOG_HEARTBEATS') || 'false') === 'true';

  const picked = port === 0;
  if (picked) {
    port = await freePort();
  }
  const discovery = pick('discovery', 'DISCOVERY_HOST') || (announce + ':' + port);

  const config = {
    host: discovery,
    heartbeatInterval: heartbeat,
    missedHeartbeatsAllowed: missed,
    logHeartbeats: logHeartbeats
  };
  if (resync !== undefined) {
    config.resyncPollDuration = num('resync', resync);
  }
  process.stderr.write('coordinator.js: config ' + JSON.stringify(config) +
                       ' announce ' + announce + ':' + port + '\n');

  const simple = require('hakken')(config).server.makeSimple(announce, port);
  const restifyServer = simple.withRestifyServer((s) => s);
  if (args['report-requests'] === 'true') {
    restifyServer.on('after', (req, res) => {
      realStdoutWrite('REQUEST ' + req.method + ' ' + req.url + ' ' + res.statusCode + '\n');
    });
  }
  restifyServer.once('listening', () => {
    const addr = restifyServer.address();
    process.stderr.write('coordinator.js: listening on ' + JSON.stringify(addr) + '\n');
    realStdoutWrite('READY ' + addr.port + '\n');
  });
  restifyServer.on('error', (err) => {
    process.stderr.write('FAILED ' + (err && err.message) + '\n');
    // Someone took the port we picked between our probe and the original's
    // listen: exit 75 (EX_TEMPFAIL) so the caller may simply start us again.
    process.exit(picked && err && err.code === 'EADDRINUSE' ? 75 : 1);
  });
  simple.start();
}

process.on('SIGTERM', () => process.exit(0));
process.on('SIGINT', () => process.exit(0));

main().catch((err) => {
  process.stderr.write('FAILED ' + (err && err.stack || err) + '\n');
  process.exit(1);
});
