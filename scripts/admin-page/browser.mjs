// The admin page in a real headless browser (Debian's Chromium), against a
// switch under load: the charts show the load, and a stall of the journal
// (a PostgreSQL lock on its table) shows in the p99 line within seconds.
//
//   node browser.mjs BASE_URL OPERATOR_KEY SCREENSHOT.png
//
// DATABASE_URL names the switch's database; psql holds the lock. Run by
// scripts/test-admin-page, which starts the switch and the load.
import { spawn } from 'node:child_process';
import { chromium } from 'playwright-core';

const [base, key, screenshot] = process.argv.slice(2);
const STALL_S = 3;
// A stall of STALL_S seconds puts answers at least this late.
const STALLED_MS = 1800;

function fail(message) {
  console.error(`browser: FAIL: ${message}`);
  process.exit(1);
}

const browser = await chromium.launch({
  executablePath: '/usr/bin/chromium',
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync'],
});
try {
  // launch() gives the browser a fresh profile directory of its own.
  const page = await browser.newPage({ viewport: { width: 1400, height: 1000 } });
  const offsite = [];
  page.on('request', request => { if (!request.url().startsWith(base)) offsite.push(request.url()); });
  await page.goto(`${base}/admin`);
  await page.fill('#key', key);
  await page.click('#go');

  // What the page shows of one series of one chart, from its data attributes.
  const series = (chart, name) => page.evaluate(([chart, name]) => {
    const span = document.querySelector(`figure[data-chart="${chart}"] [data-series="${name}"]`);
    const figure = document.querySelector(`figure[data-chart="${chart}"]`);
    return span && { latest: Number(span.dataset.latest), max: Number(span.dataset.max),
      points: Number(figure.dataset.points) };
  }, [chart, name]);
  const waitFor = async (what, seconds, check) => {
    for (let i = 0; i < seconds * 4; i++) {
      const value = await check();
      if (value) return value;
      await page.waitForTimeout(250);
    }
    fail(`${what} not seen within ${seconds} s`);
  };

  // The load: approvals per second and latency points on the charts.
  const approved = await waitFor('approvals on the throughput chart', 15, async () => {
    const s = await series('throughput', '00');
    return s && s.points >= 3 && s.latest > 20 && s;
  });
  console.log(`browser: throughput chart: ${approved.latest.toFixed(0)} approvals/s over ${approved.points} points`);
  const before = await series('latency-total', 'p99');
  if (!(before.latest > 0)) fail(`no p99 on the total latency chart: ${JSON.stringify(before)}`);
  if (before.max >= STALLED_MS) fail(`p99 already ${before.max} ms before the stall`);
  const now = await page.evaluate(() => ({ ...document.getElementById('now').dataset,
    text: document.getElementById('now').textContent }));
  if (!(Number(now.p99Ms) > 0 && Number(now.sinceMs) > 0)) fail(`no "p99 now" headline: ${JSON.stringify(now)}`);
  console.log(`browser: headline: ${now.text}`);
  const batch = await series('journal', 'batch size');
  if (!(batch.max >= 1)) fail(`no journal batch size: ${JSON.stringify(batch)}`);
  const commit = await series('commit', 'commit');
  if (!(commit && commit.max > 0)) fail(`no journal commit time: ${JSON.stringify(commit)}`);
  console.log(`browser: before the stall: total p99 ${before.latest} ms (max ${before.max} ms), batch size up to ${batch.max}, commit up to ${commit.max} ms`);

  // The stall: the journal's table locked for STALL_S seconds.
  const stalledAt = Date.now();
  const psql = spawn('psql', [process.env.DATABASE_URL, '-v', 'ON_ERROR_STOP=1', '-q', '-c',
    `BEGIN; LOCK TABLE transactions IN ACCESS EXCLUSIVE MODE; SELECT pg_sleep(${STALL_S}); COMMIT;`],
    { stdio: ['ignore', 'ignore', 'inherit'] });
  const locked = new Promise(resolve => psql.on('exit', code => resolve(code)));
  const stalled = await waitFor(`total p99 over ${STALLED_MS} ms`, STALL_S + 8, async () => {
    const s = await series('latency-total', 'p99');
    return s && s.max >= STALLED_MS && s;
  });
  const seenAfterS = (Date.now() - stalledAt) / 1000;
  if ((await locked) !== 0) fail('psql could not hold the lock');
  const wait = await series('latency-journal_wait', 'p99');
  console.log(`browser: stall of ${STALL_S} s seen ${seenAfterS.toFixed(1)} s after it began: total p99 up to ${stalled.max} ms, journal wait p99 up to ${wait.max} ms`);
  if (!(wait.max >= STALLED_MS)) fail(`the journal wait chart does not show the stall: ${JSON.stringify(wait)}`);
  // Two more refreshes so the picture shows the recovery too.
  await page.waitForTimeout(2000);
  await page.screenshot({ path: screenshot, fullPage: true });
  console.log(`browser: screenshot ${screenshot}`);
  if (offsite.length) fail(`the page asked for something off the switch: ${offsite.join(', ')}`);
} finally {
  await browser.close();
}
