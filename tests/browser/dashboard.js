#!/usr/bin/env node
// Drives the coordinator dashboard in headless Chromium. Run by tests/dashboard.rs:
//
//   node tests/browser/dashboard.js LIVE_URL LOAD_URL WARMING_URL ARTIFACTS_DIR
//
// LIVE_URL is a coordinator with a short heartbeat (listings expire quickly), LOAD_URL
// one with the default heartbeat that this script fills with 1,000 services and a
// service of 5,000 listings, WARMING_URL one started alone with an hour's heartbeat
// (warming up, its view maybe partial, for the whole script). The script does its own HTTP (publish, heartbeat,
// withdraw) and checks what the page shows, waiting on conditions with deadlines.
// It prints one line per step, then `PASS`; on a failure, `FAIL: reason` (and a
// screenshot in ARTIFACTS_DIR) and exits 1.
//
// Both coordinators sample the dashboard's charts often (tests/dashboard.rs sets
// `history_interval`), so the sparklines fill in within a few seconds; they are
// checked by their number of points and by what their SVG holds, never by timing.
"use strict";

const fs = require("fs");
const os = require("os");
const path = require("path");
const { chromium } = require("playwright-core");

const [LIVE, LOAD, WARMING, ARTIFACTS] = process.argv.slice(2);
if (!LIVE || !LOAD || !WARMING || !ARTIFACTS) {
  console.error("usage: dashboard.js LIVE_URL LOAD_URL WARMING_URL ARTIFACTS_DIR");
  process.exit(2);
}
const CHROMIUM = process.env.CHROMIUM_PATH || "/usr/bin/chromium";
const TIMEOUT = 20_000; // longest wait for any one condition
const WATCHDOG = 240_000; // longest the whole script may take
const DESKTOP = { width: 1280, height: 800 };
const PHONE = { width: 390, height: 844 };

const started = Date.now();
const log = (line) => console.log(`[${((Date.now() - started) / 1000).toFixed(1)}s] ${line}`);

class Failure extends Error {}
function check(condition, message) {
  if (!condition) throw new Failure(message);
}

// ---- HTTP to the coordinators ------------------------------------------------------

async function publish(base, listing) {
  const response = await fetch(`${base}/v1/listings`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify(listing),
  });
  await response.arrayBuffer();
  check(response.status === 201, `POST ${listing.service}/${listing.host}: HTTP ${response.status}`);
}

async function withdraw(base, service, host) {
  const url = `${base}/v1/listings/${encodeURIComponent(service)}/${encodeURIComponent(host)}`;
  const response = await fetch(url, { method: "DELETE" });
  await response.arrayBuffer();
  check(response.status === 204, `DELETE ${service}/${host}: HTTP ${response.status}`);
}

async function announce(base, host) {
  const response = await fetch(`${base}/v1/coordinator`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ host }),
  });
  await response.arrayBuffer();
  check(response.status === 201, `POST /v1/coordinator: HTTP ${response.status}`);
}

// Publishes `listing` now and every `everyMs` until the returned stop() resolves
// (which waits for a heartbeat in flight, so none lands after it).
async function keepAlive(base, listing, everyMs) {
  await publish(base, listing);
  let inFlight = Promise.resolve();
  let failed = null;
  const timer = setInterval(() => {
    inFlight = inFlight.then(() => publish(base, listing)).catch((e) => { failed = e; });
  }, everyMs);
  return async () => {
    clearInterval(timer);
    await inFlight;
    if (failed) throw failed;
  };
}

// Publishes every listing, `concurrency` at a time.
async function publishAll(base, listings, concurrency) {
  let next = 0;
  const worker = async () => {
    while (next < listings.length) await publish(base, listings[next++]);
  };
  await Promise.all(Array.from({ length: concurrency }, worker));
}

// ---- the page ----------------------------------------------------------------------

const sel = (attr, value) => `[${attr}="${value.replace(/["\\]/g, "\\$&")}"]`;
const serviceRow = (name) => `#services tr${sel("data-service", name)}`;
const listingRow = (host) => `#listings tr${sel("data-host", host)}`;

async function present(page, selector, what) {
  try {
    return await page.waitForSelector(selector, { state: "attached", timeout: TIMEOUT });
  } catch (e) {
    throw new Failure(`${what} did not appear within ${TIMEOUT / 1000} s (${selector})`);
  }
}

async function absent(page, selector, what) {
  try {
    await page.waitForSelector(selector, { state: "detached", timeout: TIMEOUT });
  } catch (e) {
    throw new Failure(`${what} did not disappear within ${TIMEOUT / 1000} s (${selector})`);
  }
}

async function until(page, what, fn, arg, timeout = TIMEOUT) {
  try {
    return await page.waitForFunction(fn, arg, { timeout, polling: 50 });
  } catch (e) {
    const detail = e instanceof Error ? e.message.split("\n")[0] : String(e);
    throw new Failure(`${what} within ${timeout / 1000} s (${detail})`);
  }
}

async function text(page, selector) {
  return (await page.textContent(selector)) ?? "";
}

async function noHorizontalOverflow(page, where) {
  const { scroll, inner } = await page.evaluate(() => ({
    scroll: document.documentElement.scrollWidth,
    inner: window.innerWidth,
  }));
  check(scroll <= inner, `${where}: the page overflows horizontally (scrollWidth ${scroll} > innerWidth ${inner})`);
  log(`${where}: no horizontal overflow (scrollWidth ${scroll} <= innerWidth ${inner})`);
}

// What a sparkline's SVG holds, read in the page: its number of points (the
// attribute and the polyline), its highest value, whether every coordinate lies in
// its box, and whether its area path is drawn.
async function spark(page, selector) {
  return page.evaluate((selector) => {
    const svg = document.querySelector(selector);
    if (!svg) return null;
    const width = Number(svg.getAttribute("width"));
    const height = Number(svg.getAttribute("height"));
    const pairs = (svg.querySelector("polyline")?.getAttribute("points") ?? "")
      .trim().split(/\s+/).filter(Boolean).map((pair) => pair.split(",").map(Number));
    return {
      points: Number(svg.dataset.points),
      max: Number(svg.dataset.max),
      pairs: pairs.length,
      inside: pairs.every(([x, y]) => x >= 0 && x <= width && y >= 0 && y <= height),
      area: (svg.querySelector("path.area")?.getAttribute("d") ?? "").length > 0,
      label: svg.getAttribute("aria-label") ?? "",
    };
  }, selector);
}

// Waits until the sparkline at `selector` has at least `points` points and a peak
// of at least `max`, then checks its SVG is drawn from them.
async function sparkFills(page, selector, what, points, max) {
  await until(page, `${what} should have at least ${points} points and a peak of at least ${max}`,
    ([selector, points, max]) => {
      const svg = document.querySelector(selector);
      return svg && Number(svg.dataset.points) >= points && Number(svg.dataset.max) >= max;
    }, [selector, points, max]);
  const seen = await spark(page, selector);
  check(seen && seen.pairs === seen.points, `${what}: the polyline should have one point per sample (${JSON.stringify(seen)})`);
  check(seen.inside, `${what}: every point should lie inside the chart (${JSON.stringify(seen)})`);
  check(seen.area, `${what}: the area under the line should be drawn (${JSON.stringify(seen)})`);
  log(`${what}: ${seen.points} points, peak ${seen.max}`);
  return seen;
}

async function screenshot(page, name, fullPage = false) {
  const file = path.join(ARTIFACTS, name);
  await page.screenshot({ path: file, fullPage });
  log(`screenshot ${file}`);
}

// ---- the scenario ------------------------------------------------------------------

async function liveScenario(context, page) {
  const liveHost = new URL(LIVE).host;
  const loadHost = new URL(LOAD).host;
  const stops = [];
  try {
    log(`open ${LIVE}/`);
    await page.goto(`${LIVE}/`);
    check(new URL(page.url()).pathname === "/ui", `GET / should redirect to /ui, got ${page.url()}`);
    await present(page, '#status[data-state="ok"]', "the live status");
    check((await text(page, "#self")) === liveHost, `#self should show ${liveHost}`);
    await present(page, `#coordinators tr${sel("data-coordinator", liveHost)}`, "this coordinator's row");

    log("a coordinator announces itself: it appears, with the time of its last poll");
    await announce(LIVE, loadHost);
    const peerCell = `#coordinators tr${sel("data-coordinator", loadHost)} td.age`;
    await present(page, peerCell, "the announced coordinator");
    await until(page, "the announced coordinator should show the time of its last successful poll",
      (s) => / s ago$/.test(document.querySelector(s)?.textContent ?? ""), peerCell);

    log("publish web/web-1: the service appears without a reload; choose it");
    const web1 = {
      service: "web",
      host: "web-1:8080",
      version: "1.2.3",
      meta: { zone: "eu-1", tags: ["blue", "canary"] },
      note: '<img src=x onerror="window.__xss=1"><b>bold</b>',
    };
    stops.push(await keepAlive(LIVE, web1, 100));
    await present(page, serviceRow("web"), "service web");
    await page.click(`${serviceRow("web")} a`);
    check(new URL(page.url()).hash === "#service=web", `the choice should be in the URL hash, got ${page.url()}`);
    await present(page, listingRow("web-1:8080"), "listing web-1:8080");
    await present(page, `${serviceRow("web")}[aria-current="true"]`, "the chosen service highlighted");
    const row = await text(page, listingRow("web-1:8080"));
    for (const part of ["1.2.3", '{"zone":"eu-1","tags":["blue","canary"]}', '<img src=x onerror="window.__xss=1"><b>bold</b>']) {
      check(row.includes(part), `listing row should show ${part}, shows ${JSON.stringify(row)}`);
    }
    check((await page.$$("#listings img, #listings b")).length === 0, "listing fields must be escaped, not parsed as HTML");
    check((await page.evaluate(() => window.__xss)) === undefined, "a listing field ran script");
    await until(page, "the heartbeat age should read like '0.1 s ago'",
      (s) => /^\d+(\.\d)? s ago$/.test(document.querySelector(s)?.textContent ?? ""),
      `${listingRow("web-1:8080")} td.age.beat`);
    check(/ ago$/.test(await text(page, `${listingRow("web-1:8080")} td.age.first`)),
      "the listing should show when it was first seen");
    check((await text(page, `${listingRow("web-1:8080")} td.age.changed`)) === "–",
      "a listing whose heartbeats repeat its payload should show no change");

    log("one service: the Services card is no taller than its row");
    const services = await page.evaluate(() => {
      const box = document.getElementById("services");
      const table = box.querySelector("table");
      return {
        rows: box.querySelectorAll("tr[data-service]").length,
        box: box.clientHeight,
        table: table ? table.getBoundingClientRect().height : -1,
      };
    });
    check(services.rows === 1 && services.box <= services.table + 1,
      `the Services card should fit its one row, no empty space below (${JSON.stringify(services)})`);

    log("publish web-2, then withdraw it: it appears, then disappears");
    const web2 = { service: "web", host: "web-2:8080", version: "1.2.4" };
    const stopWeb2 = await keepAlive(LIVE, web2, 100);
    await present(page, listingRow("web-2:8080"), "listing web-2:8080");
    await stopWeb2();
    await withdraw(LIVE, "web", "web-2:8080");
    await absent(page, listingRow("web-2:8080"), "withdrawn listing web-2:8080");

    log("publish web-3, then stop its heartbeats: it expires and disappears");
    const stopWeb3 = await keepAlive(LIVE, { service: "web", host: "web-3:8080" }, 100);
    await present(page, listingRow("web-3:8080"), "listing web-3:8080");
    await stopWeb3();
    await absent(page, listingRow("web-3:8080"), "expired listing web-3:8080");
    await present(page, listingRow("web-1:8080"), "listing web-1:8080 (still heartbeated)");

    log("a service withdrawn while another is chosen leaves the service list");
    const stopCron = await keepAlive(LIVE, { service: "cron", host: "cron-1:9000" }, 100);
    await present(page, serviceRow("cron"), "service cron");
    await stopCron();
    await withdraw(LIVE, "cron", "cron-1:9000");
    await absent(page, serviceRow("cron"), "withdrawn service cron");

    log("more listings, then the filter narrows services and listings by any field");
    for (const [i, zone] of [[4, "eu-1"], [5, "eu-2"], [6, "us-1"]]) {
      stops.push(await keepAlive(LIVE, {
        service: "web", host: `web-${i}:8080`, version: `1.3.${i}`, meta: { zone }, weight: i * 10,
      }, 100));
    }
    for (const name of ["billing", "search", "auth-gateway"]) {
      stops.push(await keepAlive(LIVE, { service: name, host: `${name}-1:7000`, version: "0.9.0" }, 100));
    }
    await present(page, listingRow("web-6:8080"), "listing web-6:8080");
    await present(page, serviceRow("auth-gateway"), "service auth-gateway");
    await page.fill("#filter", "eu-2");
    await until(page, "the filter 'eu-2' should leave exactly web-5's listing",
      () => [...document.querySelectorAll("#listings tr[data-host]")].map((r) => r.dataset.host).join() === "web-5:8080");
    await page.fill("#filter", "bill");
    await until(page, "the filter 'bill' should leave exactly service billing",
      () => [...document.querySelectorAll("#services tr[data-service]")].map((r) => r.dataset.service).join() === "billing");
    await page.fill("#filter", "");
    await present(page, listingRow("web-4:8080"), "listing web-4:8080 after clearing the filter");

    log("a listing's payload changes: 'Changed' moves, 'First seen' does not");
    const web7 = { service: "web", host: "web-7:8080", version: "1.0.0" };
    const stopWeb7 = await keepAlive(LIVE, web7, 100);
    const web7Row = listingRow("web-7:8080");
    // Wait until its first sighting is a millisecond old, so the change is later.
    await until(page, "listing web-7:8080 should show when it was first seen",
      (s) => Number(document.querySelector(s)?.dataset.ageMs) >= 1, `${web7Row} td.age.first`);
    check((await text(page, `${web7Row} td.age.changed`)) === "–", "web-7 has not changed yet");
    await stopWeb7();
    stops.push(await keepAlive(LIVE, { ...web7, version: "1.0.1" }, 100));
    await until(page, "listing web-7:8080 should show its new payload and when it changed",
      (s) => {
        const row = document.querySelector(s);
        const first = Number(row?.querySelector("td.age.first")?.dataset.ageMs);
        const changed = Number(row?.querySelector("td.age.changed")?.dataset.ageMs);
        return row?.textContent.includes("1.0.1") && changed < first &&
          / ago$/.test(row.querySelector("td.age.changed").textContent);
      }, web7Row);

    log("the charts: sparklines fill in with samples, in the header and beside each service");
    const webSpark = `${serviceRow("web")} td.trend svg.spark`;
    await sparkFills(page, "#spark-heartbeats svg.spark", "the heartbeats/s sparkline", 10, 1);
    await sparkFills(page, "#spark-changes svg.spark", "the changes/s sparkline", 10, 0.01);
    await sparkFills(page, "#spark-listings svg.spark", "the listings sparkline", 10, 5);
    await sparkFills(page, webSpark, "service web's sparkline", 10, 5);
    await sparkFills(page, `${serviceRow("billing")} td.trend svg.spark`, "service billing's sparkline", 3, 1);
    check(/^\d/.test(await text(page, "#rate-heartbeats")), `#rate-heartbeats: ${await text(page, "#rate-heartbeats")}`);
    const label = (await spark(page, webSpark)).label;
    check(/^web: listings over the last /.test(label), `service web's chart should say what it shows: ${label}`);
    await screenshot(page, "dashboard-desktop-charts.png");
    const header = await page.$("header.top");
    await header.screenshot({ path: path.join(ARTIFACTS, "dashboard-header-charts.png") });
    log(`screenshot ${path.join(ARTIFACTS, "dashboard-header-charts.png")}`);
    const servicesPanel = await page.$("#services");
    await servicesPanel.screenshot({ path: path.join(ARTIFACTS, "dashboard-services-charts.png") });
    log(`screenshot ${path.join(ARTIFACTS, "dashboard-services-charts.png")}`);

    log("the choice survives a reload (URL hash)");
    await page.reload();
    await present(page, listingRow("web-1:8080"), "listing web-1:8080 after a reload");
    await present(page, '#status[data-state="ok"]', "the live status after a reload");
    await sparkFills(page, webSpark, "service web's sparkline after a reload (kept by the coordinator)", 10, 5);
    await noHorizontalOverflow(page, "desktop, live");
    await screenshot(page, "dashboard-desktop.png");
    await page.setViewportSize(PHONE);
    await noHorizontalOverflow(page, "phone, live");
    await screenshot(page, "dashboard-phone.png");
    await page.setViewportSize(DESKTOP);

    log("the coordinator becomes unreachable: the status says so, retries back off, then recovers");
    const attempts = [];
    const down = (route) => route.abort("connectionrefused");
    const downState = (route) => { attempts.push(Date.now()); return route.abort("connectionrefused"); };
    await page.route("**/v1/**", down);
    await page.route("**/ui/api/**", downState);
    await present(page, '#status[data-state="error"]', "the error status");
    check(/retrying/.test(await text(page, "#status")), "the error status should say it is retrying");
    await screenshot(page, "dashboard-desktop-error.png");
    // The attempts are counted in this process: poll the count, with a deadline.
    const seen = attempts.length;
    const deadline = Date.now() + TIMEOUT;
    const wanted = Math.max(seen + 2, 3);
    while (attempts.length < wanted) {
      check(Date.now() < deadline, `only ${attempts.length - seen} more attempts in ${TIMEOUT / 1000} s after the first failure`);
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
    const [a, b, c] = attempts.slice(-3);
    const gaps = [b - a, c - b];
    log(`retry gaps: ${gaps.join(", ")} ms`);
    check(gaps.every((g) => g >= 300), `retries should be spaced, gaps ${gaps.join(", ")} ms`);
    check(gaps[1] > gaps[0], `retries should back off, gaps ${gaps.join(", ")} ms`);
    await page.unroute("**/v1/**", down);
    await page.unroute("**/ui/api/**", downState);
    await present(page, '#status[data-state="ok"]', "the live status after the coordinator is back");
    await present(page, listingRow("web-1:8080"), "listing web-1:8080 after recovery");
  } finally {
    for (const stop of stops) await stop();
  }
}

// With the page's timer at an hour (`?refresh=3600`, which the page says it
// took), only a stream's event can make it fetch the state again: a new service
// shows, a stream brought a change (an event after its first, with a new id), and
// no stream failed (a failed stream makes the page poll instead).
async function streamsScenario(context, pageErrors) {
  log("with ?refresh=3600, a new service shows at once: a stream brings it, none failed");
  const page = await context.newPage();
  page.on("pageerror", (e) => pageErrors.push(e.message));
  try {
    await page.addInitScript(() => {
      const seen = { opened: 0, first: 0, changes: 0, errors: 0 };
      window.__streams = seen;
      const Native = window.EventSource;
      window.EventSource = class extends Native {
        constructor(...args) {
          super(...args);
          seen.opened += 1;
          let firstId = null;
          this.addEventListener("message", (event) => {
            if (firstId === null) {
              firstId = event.lastEventId;
              seen.first += 1;
            } else if (event.lastEventId !== firstId) {
              seen.changes += 1;
            }
          });
          this.addEventListener("error", () => { seen.errors += 1; });
        }
      };
    });
    await page.goto(`${LOAD}/ui?refresh=3600`);
    await present(page, "#status[data-state]", "the status");
    const refresh = await page.evaluate(() => document.documentElement.dataset.refreshMs);
    check(refresh === "3600000", `?refresh=3600 should set an hour, the page says ${refresh} ms`);
    await until(page, "the page should wait on a stream", () => window.__streams.first > 0);
    const service = `streamed-${Date.now()}`;
    await publish(LOAD, { service, host: "s-1:80" });
    await present(page, serviceRow(service), `service ${service}, brought by a stream`);
    const after = await page.evaluate(() => ({ ...window.__streams }));
    check(after.changes > 0, `no stream brought a change: ${JSON.stringify(after)}`);
    check(after.errors === 0, `a stream failed: ${JSON.stringify(after)}`);
    await withdraw(LOAD, service, "s-1:80");
    await absent(page, serviceRow(service), `service ${service} withdrawn, by a stream`);
    const last = await page.evaluate(() => ({ ...window.__streams }));
    check(last.errors === 0, `a stream failed: ${JSON.stringify(last)}`);
  } finally {
    await page.close();
  }
}

// A coordinator that refuses streams (at its cap on streams), played by
// refusing every stream request on the page: the page refreshes on its timer and
// says so; its status never says the coordinator cannot be reached.
async function streamsRefusedScenario(context, pageErrors) {
  log("streams refused (a coordinator at its cap): the page refreshes on its timer, says so, shows no error");
  const page = await context.newPage();
  page.on("pageerror", (e) => pageErrors.push(e.message));
  try {
    let refused = 0;
    await page.route(/stream=true/, (route) => {
      refused += 1;
      return route.fulfill({
        status: 503,
        contentType: "application/json",
        body: '{"error":"too many open streams: try again later, or use a blocking query"}',
      });
    });
    await page.addInitScript(() => {
      window.__states = [];
      new MutationObserver(() => {
        const status = document.getElementById("status");
        if (status) window.__states.push(status.dataset.state);
      }).observe(document, { subtree: true, attributes: true, attributeFilter: ["data-state"] });
    });
    await page.goto(`${LOAD}/ui`);
    await until(page, "the status should say the streams are unavailable",
      () => /streams are unavailable/.test(document.getElementById("status")?.textContent ?? ""));
    const service = `polled-${Date.now()}`;
    await publish(LOAD, { service, host: "p-1:80" });
    await present(page, serviceRow(service), `service ${service}, brought by the timer`);
    await withdraw(LOAD, service, "p-1:80");
    await absent(page, serviceRow(service), `service ${service} withdrawn`);
    check(refused > 0, "the page never asked for a stream");
    const states = await page.evaluate(() => window.__states);
    check(!states.includes("error"), `the status said the coordinator cannot be reached: ${states.join(", ")}`);
    log("streams served again: the page goes back to them");
    await page.unroute(/stream=true/);
    // The page tries streams again up to a minute after their last failure (5 s
    // after the first, doubling): as long as the failures here took.
    await until(page, "the status should no longer say the streams are unavailable",
      () => !/streams are unavailable/.test(document.getElementById("status")?.textContent ?? ""),
      undefined, 90_000);
  } finally {
    await page.close();
  }
}

async function loadScenario(context, page) {
  const longService = "a-service-with-a-rather-long-name-that-must-not-break-the-layout-0123456789";
  const listings = [];
  for (let i = 1; i <= 998; i++) {
    listings.push({ service: `svc-${String(i).padStart(4, "0")}`, host: `10.1.${i >> 8}.${i & 255}:8080` });
  }
  listings.push({
    service: longService,
    host: "a-very-long-host-name.with.many.labels.in.a.private.zone.example.internal:65535",
    url: "https://" + "x".repeat(200),
  });
  for (let i = 0; i < 5000; i++) {
    const n = String(i).padStart(4, "0");
    listings.push({
      service: "big",
      host: `big-${n}.example.internal:8080`,
      version: `2.4.${i % 10}`,
      zone: ["eu-1", "eu-2", "us-1"][i % 3],
      weight: i % 7,
      health: `http://big-${n}.example.internal:8080/health/check/with/a/rather/long/path/that/has/no/spaces`,
      labels: { tier: i % 2 ? "web" : "api", shard: i % 16 },
    });
  }
  const t0 = Date.now();
  await publishAll(LOAD, listings, 64);
  log(`published ${listings.length} listings (1,000 services, 5,000 in 'big') in ${Date.now() - t0} ms`);

  const t1 = Date.now();
  await page.goto(`${LOAD}/ui#service=big`);
  await until(page, "the page should render 1,000 listings of 'big' (the cap)",
    () => document.querySelectorAll("#listings tr[data-host]").length === 1000);
  log(`page shows 'big' in ${Date.now() - t1} ms`);
  check((await text(page, "#count-services")) === "1,000", `#count-services: ${await text(page, "#count-services")}`);
  check((await text(page, "#count-listings")) === "5,999", `#count-listings: ${await text(page, "#count-listings")}`);
  check(/Showing 1,000 of 5,000/.test(await text(page, "#listings-note")), `#listings-note: ${await text(page, "#listings-note")}`);
  check((await page.$$("#services tr[data-service]")).length === 500, "the service list should be capped at 500 rows");
  check(/Showing 500 of 1,000/.test(await text(page, "#services-note")), `#services-note: ${await text(page, "#services-note")}`);
  await noHorizontalOverflow(page, "desktop, 1,000 services and 5,000 listings");
  log("1,000 services are charted (the cap), 'big' up to its 5,000 listings");
  await sparkFills(page, `${serviceRow("big")} td.trend svg.spark`, "service big's sparkline", 2, 5000);
  await sparkFills(page, `${serviceRow("svc-0001")} td.trend svg.spark`, "service svc-0001's sparkline", 2, 1);
  await sparkFills(page, "#spark-listings svg.spark", "the listings sparkline", 2, 5999);
  check((await page.$$("#services td.trend svg.spark")).length === 500,
    "each of the 500 service rows shown should have a sparkline");
  await screenshot(page, "dashboard-desktop-load.png");

  log("the filter finds what the caps leave out");
  await page.fill("#filter", "big-4321");
  await until(page, "the filter 'big-4321' should leave exactly one listing",
    () => [...document.querySelectorAll("#listings tr[data-host]")].map((r) => r.dataset.host).join() === "big-4321.example.internal:8080");
  await page.fill("#filter", "svc-0900");
  await until(page, "the filter 'svc-0900' should leave exactly one service",
    () => [...document.querySelectorAll("#services tr[data-service]")].map((r) => r.dataset.service).join() === "svc-0900");
  await page.fill("#filter", "");
  await until(page, "with the filter cleared, all 1,000 listings and 500 services should be shown again",
    () => document.querySelectorAll("#listings tr[data-host]").length === 1000 &&
      document.querySelectorAll("#services tr[data-service]").length === 500);

  log("phone-sized window, the page's next refresh held");
  // The page rebuilds its 1,000 listing rows and 500 charts every 2 s (ages move
  // on). On a loaded machine a screenshot taken amid that churn once waited its
  // whole 30 s for a frame. The page renders only once its request for the state
  // has been answered, so with that request held the page is still: the checks and
  // screenshots below wait until it is held, and let it go after.
  const held = [];
  const hold = (route) => { held.push(route); };
  await page.route("**/ui/api/state**", hold);
  const holdDeadline = Date.now() + TIMEOUT;
  while (held.length === 0) {
    check(Date.now() < holdDeadline, `the page asked for no new state in ${TIMEOUT / 1000} s`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  await page.setViewportSize(PHONE);
  await until(page, "the listings should be laid out", () => document.querySelectorAll("#listings tr[data-host]").length === 1000);
  await noHorizontalOverflow(page, "phone, 1,000 services and 5,000 listings");
  const inner = await page.evaluate(() => {
    const el = document.getElementById("listings");
    return { scroll: el.scrollWidth, client: el.clientWidth };
  });
  check(inner.scroll <= inner.client, `on a phone the listings should fit their box as cards (${JSON.stringify(inner)})`);
  await screenshot(page, "dashboard-phone-load.png");
  await page.evaluate(() => document.getElementById("listings").scrollIntoView());
  await screenshot(page, "dashboard-phone-load-listings.png");
  await page.unroute("**/ui/api/state**", hold);
  // The page may have given up on the request meanwhile (after 15 s), and then asks again.
  for (const route of held) await route.continue().catch(() => {});

  log("a long service name on a phone");
  await page.goto("about:blank");
  await page.goto(`${LOAD}/ui#service=${encodeURIComponent(longService)}`);
  await present(page, `#listings tr[data-host^="a-very-long-host-name"]`, "the long-named service's listing");
  await noHorizontalOverflow(page, "phone, long names");
  await screenshot(page, "dashboard-phone-long-names.png", true);
}

async function main() {
  fs.mkdirSync(ARTIFACTS, { recursive: true });
  const userDataDir = fs.mkdtempSync(path.join(os.tmpdir(), "hakken-chromium-"));
  let context = null;
  let page = null;
  const pageErrors = [];
  try {
    context = await chromium.launchPersistentContext(userDataDir, {
      executablePath: CHROMIUM,
      headless: true,
      viewport: DESKTOP,
      args: [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
      ],
      timeout: 60_000,
    });
    log(`chromium ${context.browser()?.version() ?? "(persistent context)"} started`);
    page = context.pages()[0] ?? (await context.newPage());
    page.on("pageerror", (e) => pageErrors.push(e.message));
    // The dashboard waits for changes on streams (EventSource), not by polling.
    let streams = 0;
    page.on("request", (r) => { if (r.url().includes("stream=true")) streams += 1; });
    log("a coordinator still warming up: the status says its view may be missing listings");
    await page.goto(`${WARMING}/ui`);
    await present(page, '#status[data-state="warming"]', "the warming-up status");
    check(/warming up/.test(await text(page, "#status")), `#status: ${await text(page, "#status")}`);
    await noHorizontalOverflow(page, "desktop, warming up");
    await screenshot(page, "dashboard-warming.png");
    await liveScenario(context, page);
    await streamsScenario(context, pageErrors);
    await streamsRefusedScenario(context, pageErrors);
    await loadScenario(context, page);
    check(pageErrors.length === 0, `the page threw: ${pageErrors.join("; ")}`);
    check(streams > 0, "the dashboard should wait for changes on streams (EventSource)");
    console.log("PASS");
  } catch (e) {
    console.log(`FAIL: ${e instanceof Failure ? e.message : e && e.stack ? e.stack : e}`);
    if (pageErrors.length) console.log(`page errors: ${pageErrors.join("; ")}`);
    if (page) {
      try {
        await screenshot(page, "dashboard-failure.png");
      } catch (_) { /* the browser may be gone */ }
    }
    process.exitCode = 1;
  } finally {
    if (context) await context.close().catch(() => {});
    fs.rmSync(userDataDir, { recursive: true, force: true });
  }
}

const watchdog = setTimeout(() => {
  console.log(`FAIL: the browser test took longer than ${WATCHDOG / 1000} s`);
  process.exit(1);
}, WATCHDOG);
main().finally(() => clearTimeout(watchdog));
