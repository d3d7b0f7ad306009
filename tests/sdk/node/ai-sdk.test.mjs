// The gateway as the Vercel AI SDK sees it: `@ai-sdk/openai-compatible` on
// /v1/chat/completions and `@ai-sdk/openai`'s Responses provider on
// /v1/responses. Same running gateway as openai-sdk.test.mjs (started by
// tests/sdk/run.sh with PROXY_OUTPUT_MODE=openai-json); answers are the
// offline model's (`ECHO: <prompt>`, `[[call …]]`, `[[reason …]]`,
// `[[error 429]]`, `[[break N]]`).
import assert from 'node:assert/strict';
import { test } from 'node:test';

import { createOpenAI } from '@ai-sdk/openai';
import { createOpenAICompatible } from '@ai-sdk/openai-compatible';
import { APICallError, generateText, stepCountIs, streamText, tool } from 'ai';
import { z } from 'zod';

const baseURL = process.env.GATEWAY_BASE_URL;
const apiKey = process.env.GATEWAY_API_KEY;
assert.ok(baseURL && apiKey, 'GATEWAY_BASE_URL and GATEWAY_API_KEY must be set; run tests/sdk/run.sh');

const compatible = createOpenAICompatible({ name: 'gateway', baseURL, apiKey, includeUsage: true });
const chatModel = compatible.chatModel('codex-offline');
const responsesModel = createOpenAI({ baseURL, apiKey }).responses('codex-offline');

for (const [name, model] of [['chat', chatModel], ['responses', responsesModel]]) {
  test(`${name}: generateText and streamText`, async () => {
    const { text, usage } = await generateText({ model, prompt: 'Hello Vercel', maxRetries: 0 });
    assert.equal(text, 'ECHO: Hello Vercel');
    assert.ok(usage.inputTokens > 0);
    const result = streamText({ model, prompt: 'stream this', maxRetries: 0 });
    let streamed = '';
    for await (const part of result.textStream) streamed += part;
    assert.equal(streamed, 'ECHO: stream this');
  });

  test(`${name}: a tool loop runs the tool and answers from its result`, async () => {
    const { text, steps } = await generateText({
      model,
      maxRetries: 0,
      prompt: '[[call get_weather {"city": "Paris"}]]',
      tools: {
        get_weather: tool({
          description: 'Current weather for a city',
          inputSchema: z.object({ city: z.string() }),
          execute: async ({ city }) => `sunny in ${city}`,
        }),
      },
      stopWhen: stepCountIs(3),
    });
    assert.equal(steps[0].toolCalls[0].toolName, 'get_weather');
    assert.deepEqual(steps[0].toolCalls[0].input, { city: 'Paris' });
    assert.match(text, /^TOOL RESULT call_\w+: "?sunny in Paris"?$/);
  });

  test(`${name}: a provider 429 is an APICallError with its status`, async () => {
    await assert.rejects(
      generateText({ model, prompt: '[[error 429]]', maxRetries: 0 }),
      (e) => APICallError.isInstance(e) && e.statusCode === 429,
    );
  });
}

test('chat: reasoning_content arrives as reasoning text', async () => {
  const { text, reasoningText } = await generateText({
    model: chatModel,
    prompt: '[[reason Weigh it.]] hi',
    maxRetries: 0,
  });
  assert.equal(reasoningText, 'Weigh it.');
  assert.ok(text.endsWith('hi'));
});

test('responses: a stream that breaks off ends in an error the SDK accepts', async () => {
  const result = streamText({ model: responsesModel, prompt: '[[break 2]] one two three', maxRetries: 0 });
  const errors = [];
  for await (const part of result.fullStream) {
    if (part.type === 'error') errors.push(part.error);
  }
  assert.equal(errors.length, 1, 'one error part, not a schema failure');
  assert.match(JSON.stringify(errors[0]), /upstream_error|stream disconnected/);
});
