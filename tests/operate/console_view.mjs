// The console mounted in the running checkout (saga-checkout serve with
// CK_ADMIN_TOKEN): the orders' sagas are listed newest first, one opens with
// its timeline, data and the checkout definition drawn; a screenshot.
//   node console_view.mjs URL TOKEN SCREENSHOT
import puppeteer from 'puppeteer-core';

const [url, token, shot] = process.argv.slice(2);
const fail = (msg) => { console.error('console_view: FAIL: ' + msg); process.exit(1); };
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
  await page.goto(new URL('/console/#token=' + token, url).href, { waitUntil: 'networkidle0' });
  await page.waitForSelector('#sagas tbody tr[data-state]');
  const defs = await page.$$eval('#f-def option', (o) => o.map((x) => x.value));
  if (!defs.includes('checkout')) fail('definitions: ' + defs);
  await page.click('#sagas tbody tr[data-state]');
  await page.waitForFunction(() => document.querySelector('#detail')?.dataset.id);
  const steps = await page.$$eval('#diagram svg g[data-step]', (g) => g.length);
  if (steps < 3) fail('diagram has ' + steps + ' steps');
  const events = await page.$$eval('#timeline tbody tr td:nth-child(5)', (t) => t.map((x) => x.textContent));
  if (events[0] !== 'STARTED') fail('timeline: ' + events);
  await page.screenshot({ path: shot, fullPage: true });
  if (errors.length) fail('page errors: ' + errors.join('; '));
  console.log('console_view: OK (' + events.length + ' journal entries, ' + steps + ' steps); screenshot ' + shot);
} finally {
  clearTimeout(deadline);
  await browser.close();
}
