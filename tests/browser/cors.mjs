// Cross-origin checks of the gateway in a real headless Chromium.
//
// Started by run.sh with the gateway already up. Serves ./page from a second
// loopback origin, drives Debian's /usr/bin/chromium through playwright-core,
// and asserts in node what the page could read. Prints one line per check and
// closes with `browser: N passed, M failed`; exits non-zero on any failure.
//
// Environment: GATEWAY_URL (http://127.0.0.1:PORT), BROWSER_PROFILE_DIR (a
// fresh, empty directory), SCREENSHOT (where the PNG goes).
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { readFile } from 'node:fs/promises';
import http from 'node:http';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

const here = path.dirname(fileURLToPath(import.meta.url));
const gatewayUrl = required('GATEWAY_URL');
const profileDir = required('BROWSER_PROFILE_DIR');
const screenshot = required('SCREENSHOT');
const PAGE_TIMEOUT_MS = 45_000;

function required(name) {
  const value = process.env[name];
  if (!value) {
    console.error(`browser: ${name} is not set (run tests/browser/run.sh)`);
    process.exit(2);
  }
  return value;
}

// --- the other origin: a static server for ./page --------------------------
const pageFiles = {
  '/': ['index.html', 'text/html; charset=utf-8'],
  '/app.js': ['app.js', 'text/javascript; charset=utf-8'],
};
function servePage() {
  const server = http.createServer(async (req, res) => {
    const entry = pageFiles[new URL(req.url, 'http://x').pathname];
    if (!entry) {
      res.writeHead(404).end();
      return;
    }
    const body = await readFile(path.join(here, 'page', entry[0]));
    res.writeHead(200, { 'content-type': entry[1], 'cache-control': 'no-store' }).end(body);
  });
  return new Promise((resolve) => server.listen(0, '127.0.0.1', () => resolve(server)));
}

// --- SSE helpers -------------------------------------------------------------
function dataLines(sse) {
  return sse
    .split(/\r?\n/)
    .filter((line) => line.startsWith('data:'))
    .map((line) => line.slice(5).trim());
}
function deltas(sse) {
  return dataLines(sse)
    .filter((d) => d !== '[DONE]')
    .map((d) => JSON.parse(d).choices?.[0]?.delta?.content ?? '')
    .join('');
}

// --- run the page once, then check what it saw --------------------------------
const server = await servePage();
const pageOrigin = `http://127.0.0.1:${server.address().port}`;
assert.notEqual(new URL(pageOrigin).origin, new URL(gatewayUrl).origin);

let context;
let seen;
let setupError;
const consoleLines = [];
const preflights = [];
try {
  context = await chromium.launchPersistentContext(profileDir, {
    executablePath: '/usr/bin/chromium',
    headless: true,
    args: [
      '--headless',
      '--no-sandbox',
      '--disable-gpu',
      '--disable-quic',
      '--no-first-run',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
    ],
    viewport: { width: 1100, height: 520 },
  });
  const page = context.pages()[0] ?? (await context.newPage());
  page.on('console', (msg) => consoleLines.push(`[${msg.type()}] ${msg.text()}`));
  page.on('pageerror', (err) => consoleLines.push(`[pageerror] ${err.message}`));
  // Chromium reports its CORS preflights to DevTools (Playwright's own
  // request events do not include them): count the ones sent to the gateway.
  const cdp = await context.newCDPSession(page);
  await cdp.send('Network.enable');
  cdp.on('Network.requestWillBeSent', ({ request }) => {
    if (request.method === 'OPTIONS' && request.url.startsWith(gatewayUrl)) {
      preflights.push(request.headers);
    }
  });
  await page.goto(`${pageOrigin}/?gateway=${encodeURIComponent(gatewayUrl)}`);
  await page.waitForFunction(() => window.done !== undefined, null, { timeout: PAGE_TIMEOUT_MS });
  seen = await page.evaluate(() => window.done);
  await page.screenshot({ path: screenshot, fullPage: true });
} catch (err) {
  setupError = err;
}

const checks = [
  [
    'cross-origin streamed chat: Chromium preflights the custom headers, then reads the whole SSE body',
    () => {
      const s = seen.stream;
      assert.equal(s.error, null, `fetch failed in the page (CORS?): ${s.error}`);
      assert.equal(seen.origin, pageOrigin);
      // Headers as Chromium sent them (names in its own case).
      const asked = preflights.map((h) =>
        Object.fromEntries(Object.entries(h).map(([k, v]) => [k.toLowerCase(), v])));
      assert.ok(asked.length >= 1, 'Chromium sent no OPTIONS preflight to the gateway');
      assert.equal(asked[0].origin, pageOrigin);
      assert.equal(asked[0]['access-control-request-method'], 'POST');
      for (const h of ['authorization', 'x-stainless-lang', 'openai-beta']) {
        assert.ok(asked[0]['access-control-request-headers']?.split(',').includes(h),
          `preflight did not ask for ${h}: ${asked[0]['access-control-request-headers']}`);
      }
      assert.equal(s.status, 200, `status ${s.status}, body: ${s.text.slice(0, 300)}`);
      assert.match(s.contentType ?? '', /^text\/event-stream/);
      assert.ok(s.requestId, 'x-request-id is not readable by the page (Access-Control-Expose-Headers)');
      assert.equal(deltas(s.text), 'ECHO: hello browser');
      assert.ok(s.text.trimEnd().endsWith('data: [DONE]'), `stream does not end with [DONE]: ...${s.text.slice(-200)}`);
    },
  ],
  [
    'explicit preflight (curl OPTIONS) allows the origin and every requested header',
    () => {
      const requested = ['authorization', 'content-type', 'x-stainless-lang'];
      const out = execFileSync('curl', [
        '-sS', '-o', '/dev/null', '-D', '-', '--max-time', '10',
        '-X', 'OPTIONS',
        '-H', 'Origin: http://x',
        '-H', 'Access-Control-Request-Method: POST',
        '-H', `Access-Control-Request-Headers: ${requested.join(',')}`,
        `${gatewayUrl}/v1/chat/completions`,
      ], { encoding: 'utf8' });
      const [statusLine, ...lines] = out.trim().split(/\r?\n/);
      const headers = {};
      for (const line of lines) {
        const i = line.indexOf(':');
        if (i > 0) headers[line.slice(0, i).trim().toLowerCase()] = line.slice(i + 1).trim();
      }
      const status = Number(statusLine.split(' ')[1]);
      assert.ok(status >= 200 && status < 300, `preflight answered ${statusLine}`);
      assert.ok(
        ['*', 'http://x'].includes(headers['access-control-allow-origin']),
        `access-control-allow-origin: ${headers['access-control-allow-origin']}`,
      );
      const allowed = (headers['access-control-allow-headers'] ?? '')
        .split(',')
        .map((h) => h.trim().toLowerCase());
      for (const h of requested) {
        assert.ok(allowed.includes(h) || (allowed.includes('*') && h !== 'authorization'), // '*' never covers authorization
          `access-control-allow-headers (${headers['access-control-allow-headers']}) lacks ${h}`);
      }
      const methods = (headers['access-control-allow-methods'] ?? '').toUpperCase();
      assert.ok(methods.includes('POST'), `access-control-allow-methods: ${methods}`);
    },
  ],
  [
    'a 401 for a wrong key is readable cross-origin, with error.code invalid_api_key',
    () => {
      const u = seen.unauthorized;
      assert.equal(u.error, null, `fetch failed in the page, so the rejection lacks CORS headers: ${u.error}`);
      assert.equal(u.status, 401, `status ${u.status}, body: ${u.text.slice(0, 300)}`);
      assert.match(u.contentType ?? '', /^application\/json/);
      const body = JSON.parse(u.text);
      assert.equal(body.error?.code, 'invalid_api_key', u.text);
    },
  ],
];

let passed = 0;
let failed = 0;
for (const [name, check] of checks) {
  try {
    if (setupError && name !== checks[1][0]) throw setupError;
    check();
    passed += 1;
    console.log(`ok - ${name}`);
  } catch (err) {
    failed += 1;
    console.log(`not ok - ${name}\n  ${String(err.message ?? err).split('\n').join('\n  ')}`);
  }
}
if (failed && consoleLines.length) {
  console.log('page console:');
  for (const line of consoleLines) console.log(`  ${line}`);
}
await context?.close().catch(() => {});
server.close();
if (!setupError) console.log(`screenshot: ${screenshot}`);
console.log(`browser: ${passed} passed, ${failed} failed`);
process.exit(failed ? 1 : 0);
