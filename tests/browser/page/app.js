// Runs in the browser, on an origin other than the gateway's. Calls the
// gateway exactly as a browser OpenAI client would (bearer key, JSON body,
// x-stainless-* and openai-* headers, so Chromium must preflight first), reads
// the streamed body with a reader, and leaves what it saw in `window.done` for
// the test driver. A CORS failure shows up as `error` (fetch rejects with a
// TypeError and the page learns nothing else), never as a status.
'use strict';

const gateway = new URLSearchParams(location.search).get('gateway');

async function chat(apiKey) {
  const seen = { status: null, requestId: null, contentType: null, text: '', reads: 0, error: null };
  try {
    const res = await fetch(gateway + '/v1/chat/completions', {
      method: 'POST',
      headers: {
        'authorization': 'Bearer ' + apiKey,
        'content-type': 'application/json',
        'x-stainless-lang': 'js',
        'openai-beta': 'x',
      },
      body: JSON.stringify({
        model: 'codex-offline',
        stream: true,
        messages: [{ role: 'user', content: 'hello browser' }],
      }),
    });
    seen.status = res.status;
    seen.requestId = res.headers.get('x-request-id');
    seen.contentType = res.headers.get('content-type');
    const reader = res.body.getReader();
    const decoder = new TextDecoder();
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      seen.reads += 1;
      seen.text += decoder.decode(value, { stream: true });
    }
    seen.text += decoder.decode();
  } catch (err) {
    seen.error = String(err);
  }
  return seen;
}

function row(name, seen) {
  const tr = document.createElement('tr');
  const cells = [name, seen.status ?? '-', seen.requestId ?? '-', seen.error ?? seen.text];
  cells.forEach((value, i) => {
    const td = document.createElement('td');
    if (i === 3) {
      const pre = document.createElement('pre');
      pre.textContent = String(value);
      td.appendChild(pre);
    } else {
      td.textContent = String(value);
    }
    if (i === 1) td.className = seen.error ? 'bad' : 'ok';
    tr.appendChild(td);
  });
  return tr;
}

(async () => {
  document.getElementById('origin').textContent = location.origin;
  document.getElementById('gateway').textContent = gateway;
  const stream = await chat('sk-browser-test');
  const unauthorized = await chat('sk-wrong-key');
  const body = document.querySelector('#results tbody');
  body.appendChild(row('streamed chat, right key', stream));
  body.appendChild(row('wrong key', unauthorized));
  document.getElementById('results').hidden = false;
  document.getElementById('state').textContent = 'done';
  window.done = { origin: location.origin, stream, unauthorized };
})();
