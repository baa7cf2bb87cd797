// The operator console in a real browser (headless Debian chromium driven by
// puppeteer-core): open the console, find the FAILED order, press Retry with
// a reason, and watch it reach COMPENSATED; a screenshot goes to the logs.
//   node console_test.mjs URL TOKEN SAGA_ID SCREENSHOT
import puppeteer from 'puppeteer-core';

const [url, token, sagaId, shot] = process.argv.slice(2);
const fail = (msg) => { console.error('console_test: FAIL: ' + msg); process.exit(1); };

// The admin API refuses a request without the token.
const anon = await fetch(new URL('/api/stats', url));
if (anon.status !== 401) fail('GET /api/stats without a token gave ' + anon.status);

const browser = await puppeteer.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  headless: true,
  args: ['--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage'],
});
const deadline = setTimeout(() => fail('timed out'), 60000);
try {
  const page = await browser.newPage();
  await page.setViewport({ width: 1400, height: 900 });
  const errors = [];
  page.on('pageerror', (e) => errors.push(e.message));
  page.on('requestfailed', (r) => {
    if (!r.url().startsWith(url)) errors.push('fetched from elsewhere: ' + r.url());
  });
  await page.goto(new URL('/console/#token=' + token, url).href, { waitUntil: 'networkidle0' });

  // Counts per state are shown (and refreshed live).
  await page.waitForSelector('#counts span[data-state="FAILED"]');
  const failedCount = await page.$eval('#counts span[data-state="FAILED"]', (e) => +e.dataset.count);
  if (failedCount < 1) fail('no FAILED saga counted');

  // Filter on FAILED, find our order, open it.
  await page.select('#f-state', 'FAILED');
  const row = `#sagas tbody tr[data-id="${sagaId}"]`;
  await page.waitForSelector(row);
  await page.click(row);
  await page.waitForFunction((id) => document.querySelector('#detail')?.dataset.id === id, {}, sagaId);
  const st = await page.$eval('#d-state', (e) => e.textContent);
  if (st !== 'FAILED') fail('detail shows ' + st);
  // Timeline, data and diagram are there; the current step is highlighted.
  const events = await page.$$eval('#timeline tbody tr td:nth-child(5)', (tds) => tds.map((t) => t.textContent));
  if (!events.includes('COMP_FAIL') || events[events.length - 1] !== 'FAILED') fail('timeline: ' + events);
  const data = JSON.parse(await page.$eval('#d-data', (e) => e.textContent));
  if (!data.order_id) fail('data JSON has no order_id');
  const current = await page.$$eval('#diagram svg .current', (g) => g.length);
  if (current !== 1) fail('diagram highlights ' + current + ' elements');
  await page.screenshot({ path: shot.replace(/\.png$/, '-failed.png'), fullPage: true });

  // Retry with a reason.
  await page.type('#reason', 'warehouse API is back (browser test)');
  await page.click('#btn-retry');
  await page.waitForFunction(() => /retry done by/.test(document.querySelector('#action-result').textContent),
    { timeout: 20000 });
  // The running service picks it up and compensates: the page refreshes.
  await page.waitForFunction(() => document.querySelector('#d-state').textContent === 'COMPENSATED',
    { timeout: 30000, polling: 250 });
  const events2 = await page.$$eval('#timeline tbody tr td:nth-child(5)', (tds) => tds.map((t) => t.textContent));
  if (!events2.includes('OPERATOR_RETRY') || events2[events2.length - 1] !== 'COMPENSATED') fail('timeline after retry: ' + events2);
  const result = await page.$eval('#action-result', (e) => e.textContent);
  await page.screenshot({ path: shot, fullPage: true });
  if (errors.length) fail('page errors: ' + errors.join('; '));
  console.log('console_test: OK (' + result + '); screenshot ' + shot);
} finally {
  clearTimeout(deadline);
  await browser.close();
}
