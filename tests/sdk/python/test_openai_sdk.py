"""The gateway as the official OpenAI Python SDK sees it.

These tests talk to a running gateway (started by ``tests/sdk/run.sh``) whose
Codex worker is pointed at the project's offline model, so every answer is
deterministic: a plain prompt comes back as ``ECHO: <prompt>`` and triggers
such as ``[[error 429]]`` make the model fail on purpose (see
``offline-model/README.md``). What is checked is what an SDK user would
notice: the parsed objects, the streamed chunks, and which exception class an
error raises. ``max_retries=0`` so an error is seen once, not retried.

Environment: ``GATEWAY_BASE_URL`` (``http://127.0.0.1:PORT/v1``) and
``GATEWAY_API_KEY``.
"""

import asyncio
import json
import os
import time

import openai
import pytest

MODEL = "codex-offline"
BASE_URL = os.environ.get("GATEWAY_BASE_URL")
API_KEY = os.environ.get("GATEWAY_API_KEY")

if not BASE_URL or not API_KEY:
    pytest.exit(
        "GATEWAY_BASE_URL and GATEWAY_API_KEY must be set; run tests/sdk/run.sh",
        returncode=2,
    )

# A turn goes through codex app-server; none of these should take long, but a
# cold worker may need a few seconds for its first thread.
TIMEOUT_S = 30.0


@pytest.fixture(scope="module")
def client():
    with openai.OpenAI(base_url=BASE_URL, api_key=API_KEY, max_retries=0, timeout=TIMEOUT_S) as c:
        yield c


def user(text):
    return [{"role": "user", "content": text}]


def collect(stream):
    """Reads a whole stream; returns (chunks, text, finish_reasons)."""
    chunks = list(stream)
    text = "".join(
        c.choices[0].delta.content or "" for c in chunks if c.choices
    )
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    return chunks, text, finishes


# === models ===


def test_models_list_contains_the_offline_model(client):
    models = client.models.list()
    ids = [m.id for m in models.data]
    assert MODEL in ids, ids
    model = next(m for m in models.data if m.id == MODEL)
    assert model.object == "model"


# === non-streamed ===


def test_chat_echoes_the_prompt_with_stop_and_usage(client):
    prompt = "Hello from the Python SDK"
    completion = client.chat.completions.create(model=MODEL, messages=user(prompt))

    assert completion.object == "chat.completion"
    assert completion.model == MODEL
    assert completion.id.startswith("chatcmpl-"), completion.id
    assert len(completion.choices) == 1
    choice = completion.choices[0]
    assert choice.index == 0
    assert choice.message.role == "assistant"
    assert choice.message.content == f"ECHO: {prompt}"
    assert choice.finish_reason == "stop"

    usage = completion.usage
    assert usage is not None
    assert usage.prompt_tokens > 0
    assert usage.completion_tokens > 0
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens


def test_chat_answers_the_last_user_message_of_a_conversation(client):
    messages = [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "first question"},
        {"role": "assistant", "content": "first answer"},
        {"role": "user", "content": "second question"},
    ]
    completion = client.chat.completions.create(model=MODEL, messages=messages)
    assert completion.choices[0].message.content == "ECHO: second question"


# === streamed ===


def test_stream_opens_with_role_and_concatenates_to_the_echo(client):
    prompt = "Stream this, please"
    stream = client.chat.completions.create(model=MODEL, messages=user(prompt), stream=True)
    chunks, text, finishes = collect(stream)

    assert chunks, "the stream carried no chunk"
    first = chunks[0]
    assert first.object == "chat.completion.chunk"
    assert first.choices[0].delta.role == "assistant"
    assert text == f"ECHO: {prompt}"
    assert finishes == ["stop"], finishes
    # One completion, one id across every chunk, as OpenAI sends it.
    assert {c.id for c in chunks} == {first.id}
    # Without include_usage no chunk carries usage.
    assert all(c.usage is None for c in chunks)


def test_stream_delivers_one_delta_per_word(client):
    stream = client.chat.completions.create(model=MODEL, messages=user("[[words 12]]"), stream=True)
    chunks, text, finishes = collect(stream)
    assert text == " ".join(f"w{i}" for i in range(1, 13))
    content_chunks = [c for c in chunks if c.choices and c.choices[0].delta.content]
    assert len(content_chunks) > 1, "the reply arrived in one piece: not streamed"
    assert finishes == ["stop"]


def test_stream_is_incremental_not_buffered(client):
    # The model waits 150 ms before each of its ~6 word deltas, so a gateway
    # that streams lets the first words out long before the last.
    prompt = "[[slow 150]] one two three"
    stream = client.chat.completions.create(model=MODEL, messages=user(prompt), stream=True)
    arrivals = []
    text = ""
    for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            arrivals.append(time.monotonic())
            text += chunk.choices[0].delta.content
    assert text == f"ECHO: {prompt}"
    assert len(arrivals) >= 3
    assert arrivals[-1] - arrivals[0] >= 0.4, f"content arrived within {arrivals[-1] - arrivals[0]:.3f}s"


def test_stream_include_usage_ends_with_a_usage_chunk(client):
    prompt = "count my tokens"
    stream = client.chat.completions.create(
        model=MODEL,
        messages=user(prompt),
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks, text, finishes = collect(stream)

    assert text == f"ECHO: {prompt}"
    assert finishes == ["stop"]
    last = chunks[-1]
    assert last.choices == []
    assert last.usage is not None
    assert last.usage.prompt_tokens > 0
    assert last.usage.completion_tokens > 0
    assert last.usage.total_tokens == last.usage.prompt_tokens + last.usage.completion_tokens
    # Every other chunk has usage null, as the API documents.
    assert all(c.usage is None for c in chunks[:-1])


def test_async_client_streams():
    prompt = "async hello"

    async def run():
        async with openai.AsyncOpenAI(
            base_url=BASE_URL, api_key=API_KEY, max_retries=0, timeout=TIMEOUT_S
        ) as aclient:
            stream = await aclient.chat.completions.create(
                model=MODEL, messages=user(prompt), stream=True
            )
            chunks = [c async for c in stream]
            return chunks

    chunks = asyncio.run(run())
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == f"ECHO: {prompt}"
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes == ["stop"]


def test_async_client_concurrent_streams_do_not_mix():
    prompts = [f"parallel stream number {i}" for i in range(3)]

    async def one(aclient, prompt):
        stream = await aclient.chat.completions.create(model=MODEL, messages=user(prompt), stream=True)
        return "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])

    async def run():
        async with openai.AsyncOpenAI(
            base_url=BASE_URL, api_key=API_KEY, max_retries=0, timeout=TIMEOUT_S
        ) as aclient:
            return await asyncio.gather(*(one(aclient, p) for p in prompts))

    texts = asyncio.run(run())
    assert texts == [f"ECHO: {p}" for p in prompts]


# === tool calls ===

WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather for a city.",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    },
}
# The offline model answers this prompt with one call of get_weather.
CALL_PROMPT = '[[call get_weather {"city": "Paris"}]]'


def test_tool_call_and_its_result_round_trip(client):
    first = client.chat.completions.create(model=MODEL, messages=user(CALL_PROMPT), tools=[WEATHER_TOOL])
    choice = first.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content is None
    assert len(choice.message.tool_calls) == 1
    call = choice.message.tool_calls[0]
    assert call.type == "function"
    assert call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == {"city": "Paris"}

    # Send the result back the way an agent loop does.
    second = client.chat.completions.create(
        model=MODEL,
        tools=[WEATHER_TOOL],
        messages=[
            *user(CALL_PROMPT),
            choice.message.model_dump(exclude_none=True),
            {"role": "tool", "tool_call_id": call.id, "content": "sunny, 21C"},
        ],
    )
    assert second.choices[0].finish_reason == "stop"
    assert second.choices[0].message.content == f"TOOL RESULT {call.id}: sunny, 21C"


def test_streamed_tool_call_assembles_from_deltas(client):
    stream = client.chat.completions.create(
        model=MODEL, messages=user(CALL_PROMPT), tools=[WEATHER_TOOL], stream=True
    )
    name, arguments, ids = "", "", set()
    finishes = []
    for chunk in stream:
        if not chunk.choices:
            continue
        for tc in chunk.choices[0].delta.tool_calls or []:
            assert tc.index == 0
            if tc.id:
                ids.add(tc.id)
            if tc.function and tc.function.name:
                name += tc.function.name
            if tc.function and tc.function.arguments:
                arguments += tc.function.arguments
        if chunk.choices[0].finish_reason:
            finishes.append(chunk.choices[0].finish_reason)
    assert len(ids) == 1
    assert name == "get_weather"
    assert json.loads(arguments) == {"city": "Paris"}
    assert finishes == ["tool_calls"]


def test_streamed_agent_loop_runs_through_to_the_final_answer(client):
    calls = {}
    stream = client.chat.completions.create(model=MODEL, messages=user(CALL_PROMPT), tools=[WEATHER_TOOL], stream=True)
    for chunk in stream:
        for tc in (chunk.choices[0].delta.tool_calls or []) if chunk.choices else []:
            entry = calls.setdefault(tc.index, {"id": "", "name": "", "arguments": ""})
            entry["id"] = tc.id or entry["id"]
            entry["name"] += (tc.function.name or "") if tc.function else ""
            entry["arguments"] += (tc.function.arguments or "") if tc.function else ""
    call = calls[0]
    assistant = {"role": "assistant", "content": None, "tool_calls": [
        {"id": call["id"], "type": "function", "function": {"name": call["name"], "arguments": call["arguments"]}}]}
    final = client.chat.completions.create(
        model=MODEL, tools=[WEATHER_TOOL], stream=True,
        messages=user(CALL_PROMPT) + [assistant, {"role": "tool", "tool_call_id": call["id"], "content": "windy"}],
    )
    text, finish = "", None
    for chunk in final:
        if chunk.choices:
            text += chunk.choices[0].delta.content or ""
            finish = chunk.choices[0].finish_reason or finish
    assert text == f"TOOL RESULT {call['id']}: windy"
    assert finish == "stop"


def test_streamed_tool_call_with_include_usage_ends_with_usage(client):
    stream = client.chat.completions.create(
        model=MODEL,
        messages=user(CALL_PROMPT),
        tools=[WEATHER_TOOL],
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    assert any(c.choices and c.choices[0].finish_reason == "tool_calls" for c in chunks)
    last = chunks[-1]
    assert last.choices == [], "no usage chunk after the tool call"
    assert last.usage is not None


# === errors, as the SDK's own exception classes ===


def test_wrong_key_raises_authentication_error():
    with openai.OpenAI(base_url=BASE_URL, api_key="sk-wrong-key", max_retries=0, timeout=TIMEOUT_S) as bad:
        with pytest.raises(openai.AuthenticationError) as info:
            bad.chat.completions.create(model=MODEL, messages=user("hi"))
    err = info.value
    assert err.status_code == 401
    assert err.code == "invalid_api_key"
    assert err.type == "invalid_request_error"


def test_unknown_model_raises_not_found_error(client):
    with pytest.raises(openai.NotFoundError) as info:
        client.chat.completions.create(model="no-such-model", messages=user("hi"))
    err = info.value
    assert err.status_code == 404
    assert err.code == "model_not_found"
    assert err.param == "model"
    assert "no-such-model" in err.message


def test_out_of_range_temperature_raises_bad_request_error(client):
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model=MODEL, messages=user("hi"), temperature=5)
    err = info.value
    assert err.status_code == 400
    assert err.type == "invalid_request_error"
    assert err.param == "temperature"


def test_provider_429_raises_rate_limit_error(client):
    with pytest.raises(openai.RateLimitError) as info:
        client.chat.completions.create(model=MODEL, messages=user("[[error 429]]"))
    err = info.value
    assert err.status_code == 429
    assert err.type == "rate_limit_error"
    assert err.code == "rate_limit_exceeded"
    # The SDK's own backoff reads this header.
    assert err.response.headers.get("retry-after") == "1"


def test_provider_429_on_a_stream_raises_before_any_chunk(client):
    # A failure inside the gateway's commit window keeps its HTTP status, so
    # the SDK raises at create() rather than handing back a broken stream.
    with pytest.raises(openai.RateLimitError) as info:
        client.chat.completions.create(model=MODEL, messages=user("[[error 429]]"), stream=True)
    assert info.value.status_code == 429


def test_provider_500_raises_internal_server_error(client):
    with pytest.raises(openai.InternalServerError) as info:
        client.chat.completions.create(model=MODEL, messages=user("[[error 500]]"))
    err = info.value
    # The gateway reports an upstream failure as 502 Bad Gateway; the SDK maps
    # every status >= 500 to InternalServerError.
    assert err.status_code == 502
    assert err.type == "api_error"
    assert err.code == "upstream_error"


def test_stream_broken_mid_body_raises_api_error(client):
    # The model sends three deltas and then drops the connection: the stream
    # has already started, so the failure can only arrive as an error frame,
    # which the SDK must turn into an exception rather than a silent short
    # answer.
    prompt = "[[break 3]] one two three four five"
    stream = client.chat.completions.create(model=MODEL, messages=user(prompt), stream=True)
    text = ""
    with pytest.raises(openai.APIError) as info:
        for chunk in stream:
            if chunk.choices:
                text += chunk.choices[0].delta.content or ""
    err = info.value
    # Raised from the gateway's error frame, not from a dropped connection.
    assert not isinstance(err, (openai.APIStatusError, openai.APIConnectionError)), type(err)
    assert "stream disconnected" in err.message
    assert text.startswith("ECHO:")
    assert text != f"ECHO: {prompt}"


def test_upstream_disconnect_raises_internal_server_error(client):
    with pytest.raises(openai.APIStatusError) as info:
        client.chat.completions.create(model=MODEL, messages=user("[[break 0]] cut me off"))
    err = info.value
    assert isinstance(err, openai.InternalServerError), f"{type(err).__name__} {err.status_code} {err.code}"
    assert err.status_code == 502
    assert err.code == "upstream_error"


# --- Responses API --------------------------------------------------------


def test_responses_create_returns_output_text(client):
    response = client.responses.create(model=MODEL, input="hello responses", instructions="Be kind.")
    assert response.status == "completed"
    assert response.output_text == "ECHO: hello responses"
    assert response.usage.input_tokens > 0


def test_responses_stream_ends_with_completed(client):
    events = list(client.responses.create(model=MODEL, input="stream the response", stream=True))
    assert events[0].type == "response.created"
    assert events[-1].type == "response.completed"
    text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert text == "ECHO: stream the response"
    assert events[-1].response.output_text == text


def test_responses_function_call_round_trip(client):
    tools = [{"type": "function", "name": "get_weather", "description": "Weather",
              "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}]
    first = client.responses.create(
        model=MODEL, tools=tools, input=[{"role": "user", "content": '[[call get_weather {"city": "Oslo"}]]'}]
    )
    call = first.output[0]
    assert call.type == "function_call" and call.name == "get_weather"
    assert json.loads(call.arguments) == {"city": "Oslo"}
    second = client.responses.create(
        model=MODEL,
        tools=tools,
        input=[
            {"role": "user", "content": '[[call get_weather {"city": "Oslo"}]]'},
            call,
            {"type": "function_call_output", "call_id": call.call_id, "output": "cold"},
        ],
    )
    assert second.output_text == f"TOOL RESULT {call.call_id}: cold"


def test_responses_previous_response_id_continues_and_retrieve_reads_back(client):
    first = client.responses.create(model=MODEL, input="my name is Ada", instructions="Be kind.")
    second = client.responses.create(
        model=MODEL, input="[[history]]", instructions="Be kind.", previous_response_id=first.id
    )
    # The model saw the first turn without it being sent again.
    assert second.output_text == (
        "HISTORY: user: my name is Ada | assistant: ECHO: my name is Ada | user: [[history]]"
    )
    assert second.previous_response_id == first.id
    again = client.responses.retrieve(second.id)
    assert again.id == second.id and again.output_text == second.output_text
    items = client.responses.input_items.list(second.id)
    assert [i.content[0].text for i in items.data] == ["[[history]]"]
    deleted = client.responses.delete(first.id)
    assert deleted is None or getattr(deleted, "deleted", True)
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(first.id)
    with pytest.raises(openai.NotFoundError):
        client.responses.create(model=MODEL, input="x", previous_response_id="resp_never_was")


def test_rate_limited_request_is_retried_after_retry_after():
    """`/v1/models/{id}` allows one call per 2 s here (tests/sdk/run.sh).

    The second call gets a 429 with Retry-After; the SDK waits that long and
    retries on its own, so the caller just sees the answer, later."""
    with openai.OpenAI(base_url=BASE_URL, api_key=API_KEY, max_retries=0, timeout=TIMEOUT_S) as strict:
        strict.models.retrieve(MODEL)
        with pytest.raises(openai.RateLimitError) as info:
            strict.models.retrieve(MODEL)
        retry_after = int(info.value.response.headers["retry-after"])
        assert 1 <= retry_after <= 2
        assert info.value.response.headers["x-ratelimit-limit-requests"] == "1"
    with openai.OpenAI(base_url=BASE_URL, api_key=API_KEY, max_retries=2, timeout=TIMEOUT_S) as patient:
        started = time.monotonic()
        model = patient.models.retrieve(MODEL)
        assert model.id == MODEL
        # The bucket was empty: the answer came only after the SDK slept on Retry-After.
        assert time.monotonic() - started >= 0.9
