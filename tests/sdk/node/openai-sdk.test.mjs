// The gateway as the official OpenAI Node SDK sees it.
//
// Talks to a running gateway (started by tests/sdk/run.sh) whose Codex worker
// is pointed at the project's offline model: a plain prompt comes back as
// `ECHO: <prompt>`, and triggers such as `[[error 429]]` make the model fail on
// purpose (offline-model/README.md). The assertions are what an SDK user
// notices: parsed objects, streamed chunks, and which error class is thrown.
// maxRetries: 0 so an error is seen once, not retried.
//
// Environment: GATEWAY_BASE_URL (http://127.0.0.1:PORT/v1), GATEWAY_API_KEY.

import assert from 'node:assert/strict';
import { describe, test, before } from 'node:test';

import OpenAI from 'openai';

const MODEL = 'codex-offline';
const BASE_URL = process.env.GATEWAY_BASE_URL;
const API_KEY = process.env.GATEWAY_API_KEY;
const TIMEOUT_MS = 30_000;

if (!BASE_URL || !API_KEY) {
  console.error('GATEWAY_BASE_URL and GATEWAY_API_KEY must be set; run tests/sdk/run.sh');
  process.exit(2);
}

const user = (text) => [{ role: 'user', content: text }];

function newClient(apiKey = API_KEY) {
  return new OpenAI({ baseURL: BASE_URL, apiKey, maxRetries: 0, timeout: TIMEOUT_MS });
}

/** Reads a whole stream: the chunks, the concatenated text, the finish reasons. */
async function collect(stream) {
  const chunks = [];
  for await (const chunk of stream) chunks.push(chunk);
  const text = chunks.map((c) => c.choices[0]?.delta?.content ?? '').join('');
  const finishes = chunks.map((c) => c.choices[0]?.finish_reason).filter((f) => f);
  return { chunks, text, finishes };
}

/** Runs `fn`, which must throw; returns the error. */
async function thrown(fn) {
  try {
    await fn();
  } catch (err) {
    return err;
  }
  assert.fail('expected an error, got a result');
}

let client;
before(() => {
  client = newClient();
});

describe('models', () => {
  test('the list contains the offline model', async () => {
    const page = await client.models.list();
    const ids = page.data.map((m) => m.id);
    assert.ok(ids.includes(MODEL), `models: ${ids}`);
    assert.equal(page.data.find((m) => m.id === MODEL).object, 'model');
  });
});

describe('chat, not streamed', () => {
  test('echoes the prompt with finish_reason stop and usage', async () => {
    const prompt = 'Hello from the Node SDK';
    const completion = await client.chat.completions.create({ model: MODEL, messages: user(prompt) });

    assert.equal(completion.object, 'chat.completion');
    assert.equal(completion.model, MODEL);
    assert.match(completion.id, /^chatcmpl-/);
    assert.equal(completion.choices.length, 1);
    const [choice] = completion.choices;
    assert.equal(choice.index, 0);
    assert.equal(choice.message.role, 'assistant');
    assert.equal(choice.message.content, `ECHO: ${prompt}`);
    assert.equal(choice.finish_reason, 'stop');

    const { usage } = completion;
    assert.ok(usage.prompt_tokens > 0, `prompt_tokens ${usage.prompt_tokens}`);
    assert.ok(usage.completion_tokens > 0, `completion_tokens ${usage.completion_tokens}`);
    assert.equal(usage.total_tokens, usage.prompt_tokens + usage.completion_tokens);
  });

  test('answers the last user message of a conversation', async () => {
    const completion = await client.chat.completions.create({
      model: MODEL,
      messages: [
        { role: 'system', content: 'You are terse.' },
        { role: 'user', content: 'first question' },
        { role: 'assistant', content: 'first answer' },
        { role: 'user', content: 'second question' },
      ],
    });
    assert.equal(completion.choices[0].message.content, 'ECHO: second question');
  });
});

describe('chat, streamed', () => {
  test('opens with the assistant role and concatenates to the echo', async () => {
    const prompt = 'Stream this, please';
    const stream = await client.chat.completions.create({ model: MODEL, messages: user(prompt), stream: true });
    const { chunks, text, finishes } = await collect(stream);

    assert.ok(chunks.length > 0, 'the stream carried no chunk');
    assert.equal(chunks[0].object, 'chat.completion.chunk');
    assert.equal(chunks[0].choices[0].delta.role, 'assistant');
    assert.equal(text, `ECHO: ${prompt}`);
    assert.deepEqual(finishes, ['stop']);
    assert.deepEqual(new Set(chunks.map((c) => c.id)), new Set([chunks[0].id]));
    assert.ok(chunks.every((c) => c.usage == null), 'usage sent without include_usage');
  });

  test('delivers one delta per word', async () => {
    const stream = await client.chat.completions.create({ model: MODEL, messages: user('[[words 12]]'), stream: true });
    const { chunks, text, finishes } = await collect(stream);
    assert.equal(text, Array.from({ length: 12 }, (_, i) => `w${i + 1}`).join(' '));
    assert.ok(chunks.filter((c) => c.choices[0]?.delta?.content).length > 1, 'the reply arrived in one piece');
    assert.deepEqual(finishes, ['stop']);
  });

  test('is incremental, not buffered', async () => {
    // 150 ms before each of ~6 deltas: a streaming gateway lets the first
    // words out long before the last.
    const prompt = '[[slow 150]] one two three';
    const stream = await client.chat.completions.create({ model: MODEL, messages: user(prompt), stream: true });
    const arrivals = [];
    let text = '';
    for await (const chunk of stream) {
      const content = chunk.choices[0]?.delta?.content;
      if (content) {
        arrivals.push(performance.now());
        text += content;
      }
    }
    assert.equal(text, `ECHO: ${prompt}`);
    assert.ok(arrivals.length >= 3);
    const spread = arrivals.at(-1) - arrivals[0];
    assert.ok(spread >= 400, `content arrived within ${spread.toFixed(0)} ms`);
  });

  test('include_usage ends with a usage chunk with empty choices', async () => {
    const prompt = 'count my tokens';
    const stream = await client.chat.completions.create({
      model: MODEL,
      messages: user(prompt),
      stream: true,
      stream_options: { include_usage: true },
    });
    const { chunks, text, finishes } = await collect(stream);

    assert.equal(text, `ECHO: ${prompt}`);
    assert.deepEqual(finishes, ['stop']);
    const last = chunks.at(-1);
    assert.deepEqual(last.choices, []);
    assert.ok(last.usage.prompt_tokens > 0);
    assert.ok(last.usage.completion_tokens > 0);
    assert.equal(last.usage.total_tokens, last.usage.prompt_tokens + last.usage.completion_tokens);
    assert.ok(chunks.slice(0, -1).every((c) => c.usage == null), 'usage before the last chunk');
  });

  test('concurrent streams do not mix', async () => {
    const prompts = [0, 1, 2].map((i) => `parallel stream number ${i}`);
    const texts = await Promise.all(
      prompts.map(async (p) => {
        const stream = await client.chat.completions.create({ model: MODEL, messages: user(p), stream: true });
        return (await collect(stream)).text;
      }),
    );
    assert.deepEqual(texts, prompts.map((p) => `ECHO: ${p}`));
  });

  test('the stream helper (chat.completions.stream) assembles the final message', async () => {
    const prompt = 'helper assembled';
    const runner = client.chat.completions.stream({ model: MODEL, messages: user(prompt) });
    const final = await runner.finalChatCompletion();
    assert.equal(final.choices[0].message.content, `ECHO: ${prompt}`);
    assert.equal(final.choices[0].finish_reason, 'stop');
  });
});

const WEATHER_TOOL = {
  type: 'function',
  function: {
    name: 'get_weather',
    description: 'Current weather for a city.',
    parameters: { type: 'object', properties: { city: { type: 'string' } }, required: ['city'] },
  },
};
// The offline model answers this prompt with one call of get_weather.
const CALL_PROMPT = '[[call get_weather {"city": "Paris"}]]';

describe('tool calls', () => {
  test('a tool call and its result round trip', async () => {
    const first = await client.chat.completions.create({ model: MODEL, messages: user(CALL_PROMPT), tools: [WEATHER_TOOL] });
    const [choice] = first.choices;
    assert.equal(choice.finish_reason, 'tool_calls');
    assert.equal(choice.message.content, null);
    assert.equal(choice.message.tool_calls.length, 1);
    const [call] = choice.message.tool_calls;
    assert.equal(call.type, 'function');
    assert.equal(call.function.name, 'get_weather');
    assert.deepEqual(JSON.parse(call.function.arguments), { city: 'Paris' });

    // Send the result back the way an agent loop does.
    const second = await client.chat.completions.create({
      model: MODEL,
      tools: [WEATHER_TOOL],
      messages: [...user(CALL_PROMPT), choice.message, { role: 'tool', tool_call_id: call.id, content: 'sunny, 21C' }],
    });
    assert.equal(second.choices[0].finish_reason, 'stop');
    assert.equal(second.choices[0].message.content, `TOOL RESULT ${call.id}: sunny, 21C`);
  });

  test('a streamed agent loop runs through to the final answer', async () => {
    const runner = client.chat.completions.stream({ model: MODEL, messages: user(CALL_PROMPT), tools: [WEATHER_TOOL] });
    const first = await runner.finalChatCompletion();
    const [call] = first.choices[0].message.tool_calls;
    assert.equal(first.choices[0].finish_reason, 'tool_calls');
    const stream = await client.chat.completions.create({
      model: MODEL,
      tools: [WEATHER_TOOL],
      stream: true,
      messages: [...user(CALL_PROMPT), first.choices[0].message, { role: 'tool', tool_call_id: call.id, content: 'cloudy' }],
    });
    let text = '';
    let finish = null;
    for await (const chunk of stream) {
      text += chunk.choices[0]?.delta?.content ?? '';
      finish = chunk.choices[0]?.finish_reason ?? finish;
    }
    assert.equal(text, `TOOL RESULT ${call.id}: cloudy`);
    assert.equal(finish, 'stop');
  });

  test('a streamed tool call assembles from deltas (stream helper)', async () => {
    // The SDK's own accumulator, which merges tool-call deltas by index.
    const runner = client.chat.completions.stream({ model: MODEL, messages: user(CALL_PROMPT), tools: [WEATHER_TOOL] });
    const final = await runner.finalChatCompletion();
    const [choice] = final.choices;
    assert.equal(choice.finish_reason, 'tool_calls');
    assert.equal(choice.message.tool_calls.length, 1);
    assert.equal(choice.message.tool_calls[0].function.name, 'get_weather');
    assert.deepEqual(JSON.parse(choice.message.tool_calls[0].function.arguments), { city: 'Paris' });
  });

  test(
    'a streamed tool call with include_usage ends with a usage chunk',
    async () => {
      const stream = await client.chat.completions.create({
        model: MODEL,
        messages: user(CALL_PROMPT),
        tools: [WEATHER_TOOL],
        stream: true,
        stream_options: { include_usage: true },
      });
      const { chunks, finishes } = await collect(stream);
      assert.deepEqual(finishes, ['tool_calls']);
      assert.deepEqual(chunks.at(-1).choices, [], 'no usage chunk after the tool call');
      assert.ok(chunks.at(-1).usage);
    },
  );
});

describe('errors, as the SDK error classes', () => {
  test('wrong key: AuthenticationError', async () => {
    const err = await thrown(() => newClient('sk-wrong-key').chat.completions.create({ model: MODEL, messages: user('hi') }));
    assert.ok(err instanceof OpenAI.AuthenticationError, `got ${err?.constructor?.name}: ${err}`);
    assert.equal(err.status, 401);
    assert.equal(err.code, 'invalid_api_key');
    assert.equal(err.type, 'invalid_request_error');
  });

  test('unknown model: NotFoundError', async () => {
    const err = await thrown(() => client.chat.completions.create({ model: 'no-such-model', messages: user('hi') }));
    assert.ok(err instanceof OpenAI.NotFoundError, `got ${err?.constructor?.name}: ${err}`);
    assert.equal(err.status, 404);
    assert.equal(err.code, 'model_not_found');
    assert.equal(err.param, 'model');
    assert.match(err.message, /no-such-model/);
  });

  test('temperature 5: BadRequestError', async () => {
    const err = await thrown(() =>
      client.chat.completions.create({ model: MODEL, messages: user('hi'), temperature: 5 }),
    );
    assert.ok(err instanceof OpenAI.BadRequestError, `got ${err?.constructor?.name}: ${err}`);
    assert.equal(err.status, 400);
    assert.equal(err.type, 'invalid_request_error');
    assert.equal(err.param, 'temperature');
  });

  test('provider 429: RateLimitError', async () => {
    const err = await thrown(() => client.chat.completions.create({ model: MODEL, messages: user('[[error 429]]') }));
    assert.ok(err instanceof OpenAI.RateLimitError, `got ${err?.constructor?.name}: ${err}`);
    assert.equal(err.status, 429);
    assert.equal(err.type, 'rate_limit_error');
    assert.equal(err.code, 'rate_limit_exceeded');
    // The SDK's own backoff reads this header.
    assert.equal(err.headers.get('retry-after'), '1');
  });

  test('provider 429 on a stream: RateLimitError before any chunk', async () => {
    const err = await thrown(() =>
      client.chat.completions.create({ model: MODEL, messages: user('[[error 429]]'), stream: true }),
    );
    assert.ok(err instanceof OpenAI.RateLimitError, `got ${err?.constructor?.name}: ${err}`);
    assert.equal(err.status, 429);
  });

  test('provider 500: InternalServerError (the gateway answers 502)', async () => {
    const err = await thrown(() => client.chat.completions.create({ model: MODEL, messages: user('[[error 500]]') }));
    // The SDK maps every status >= 500 to InternalServerError.
    assert.ok(err instanceof OpenAI.InternalServerError, `got ${err?.constructor?.name}: ${err}`);
    assert.equal(err.status, 502);
    assert.equal(err.type, 'api_error');
    assert.equal(err.code, 'upstream_error');
  });

  test('a stream broken mid-body throws APIError, not a short answer', async () => {
    // Three deltas, then the model drops the connection: the stream has
    // started, so the failure arrives as an error frame that the SDK throws.
    const prompt = '[[break 3]] one two three four five';
    const stream = await client.chat.completions.create({ model: MODEL, messages: user(prompt), stream: true });
    let text = '';
    const err = await thrown(async () => {
      for await (const chunk of stream) text += chunk.choices[0]?.delta?.content ?? '';
    });
    assert.ok(err instanceof OpenAI.APIError, `got ${err?.constructor?.name}: ${err}`);
    // From the gateway's error frame, not from a dropped connection.
    assert.ok(!(err instanceof OpenAI.APIConnectionError), `got ${err?.constructor?.name}`);
    assert.equal(err.status, undefined);
    assert.match(err.message, /stream disconnected/);
    assert.ok(text.startsWith('ECHO:'), `text before the break: ${JSON.stringify(text)}`);
    assert.notEqual(text, `ECHO: ${prompt}`);
  });

  test(
    'an upstream disconnect: InternalServerError (502)',
    async () => {
      const err = await thrown(() =>
        client.chat.completions.create({ model: MODEL, messages: user('[[break 0]] cut me off') }),
      );
      assert.ok(err instanceof OpenAI.InternalServerError, `got ${err?.constructor?.name} ${err?.status} ${err?.code}`);
      assert.equal(err.status, 502);
      assert.equal(err.code, 'upstream_error');
    },
  );
});

describe('responses, stored', () => {
  test('previous_response_id continues the conversation; retrieve and input_items read it back', async () => {
    const first = await client.responses.create({ model: MODEL, input: 'my name is Ada' });
    const second = await client.responses.create({
      model: MODEL,
      input: '[[history]]',
      previous_response_id: first.id,
    });
    assert.equal(
      second.output_text,
      'HISTORY: user: my name is Ada | assistant: ECHO: my name is Ada | user: [[history]]',
    );
    const again = await client.responses.retrieve(second.id);
    assert.equal(again.id, second.id);
    assert.equal(again.output[0].content[0].text, second.output_text);
    const items = await client.responses.inputItems.list(second.id);
    assert.deepEqual(
      items.data.map((i) => i.content[0].text),
      ['[[history]]'],
    );
    await client.responses.delete(first.id);
    const err = await thrown(() => client.responses.retrieve(first.id));
    assert.ok(err instanceof OpenAI.NotFoundError, `got ${err?.constructor?.name}: ${err}`);
  });
});
