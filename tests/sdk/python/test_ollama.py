"""The gateway's Ollama API as the official ``ollama`` Python client sees it.

Same gateway and offline model as ``test_openai_sdk.py`` (started by
``tests/sdk/run.sh``): the Ollama routes live at the root (``/api/chat``),
not under ``/v1``, and take the same bearer key. What is checked is what an
``ollama`` user would notice: ``list()``, ``chat``/``generate`` objects,
streamed parts (NDJSON), tool calls with object
arguments, and ``ResponseError`` with the status.
"""

import os

import ollama
import pytest

BASE_URL = os.environ.get("GATEWAY_BASE_URL")
API_KEY = os.environ.get("GATEWAY_API_KEY")

if not BASE_URL or not API_KEY:
    pytest.exit(
        "GATEWAY_BASE_URL and GATEWAY_API_KEY must be set; run tests/sdk/run.sh",
        returncode=2,
    )

HOST = BASE_URL.removesuffix("/v1")
MODEL = "codex-offline:latest"


@pytest.fixture(scope="module")
def client():
    return ollama.Client(
        host=HOST, headers={"Authorization": f"Bearer {API_KEY}"}, timeout=30.0
    )


def test_list_names_the_models_with_their_tag(client):
    names = [m.model for m in client.list().models]
    assert MODEL in names


def test_chat_whole_and_streamed(client):
    r = client.chat(
        model=MODEL,
        messages=[{"role": "user", "content": "hello ollama"}],
        stream=False,
    )
    assert r.message.role == "assistant"
    assert r.message.content == "ECHO: hello ollama"
    assert r.done and r.done_reason == "stop"
    assert r.eval_count > 0 and r.prompt_eval_count > 0

    parts = list(
        client.chat(
            model=MODEL, messages=[{"role": "user", "content": "[[words 3]]"}], stream=True
        )
    )
    assert len(parts) >= 3
    assert "".join(p.message.content for p in parts) == "w1 w2 w3"
    assert [p.done for p in parts].count(True) == 1 and parts[-1].done


def test_generate_with_options_and_system(client):
    r = client.generate(
        model=MODEL, prompt="[[words 40]]", options={"num_predict": 3}, stream=False
    )
    assert r.response.startswith("w1") and len(r.response) < 40
    assert r.done_reason == "length"
    text = "".join(
        p.response
        for p in client.generate(
            model=MODEL, prompt="[[instructions]]", system="Be terse.", stream=True
        )
    )
    assert "Be terse." in text


def test_tool_calls_arrive_with_object_arguments_and_results_go_back(client):
    tools = [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "description": "Weather of a city",
                "parameters": {
                    "type": "object",
                    "properties": {"city": {"type": "string"}},
                    "required": ["city"],
                },
            },
        }
    ]
    messages = [{"role": "user", "content": '[[call get_weather {"city":"Paris"}]]'}]
    r = client.chat(model=MODEL, messages=messages, tools=tools, stream=False)
    calls = r.message.tool_calls
    assert calls and calls[0].function.name == "get_weather"
    assert calls[0].function.arguments == {"city": "Paris"}

    messages.append(r.message)
    messages.append({"role": "tool", "tool_name": "get_weather", "content": "sunny"})
    messages.append({"role": "user", "content": "[[history]]"})
    r = client.chat(model=MODEL, messages=messages, tools=tools, stream=False)
    assert "call get_weather" in r.message.content
    assert ": sunny" in r.message.content


def test_errors_raise_response_error_with_the_status(client):
    with pytest.raises(ollama.ResponseError) as e:
        client.chat(model="no-such-model", messages=[{"role": "user", "content": "x"}], stream=False)
    assert e.value.status_code == 404
    assert "no-such-model" in e.value.error

    with pytest.raises(ollama.ResponseError) as e:
        client.generate(model=MODEL, prompt="[[error 429]]", stream=False)
    assert e.value.status_code == 429

    # A streamed request fails the same way inside the commit window.
    with pytest.raises(ollama.ResponseError) as e:
        list(client.generate(model=MODEL, prompt="[[error 500]]", stream=True))
    assert e.value.status_code >= 500

    bad = ollama.Client(host=HOST, headers={"Authorization": "Bearer wrong"})
    with pytest.raises(ollama.ResponseError) as e:
        bad.chat(model=MODEL, messages=[{"role": "user", "content": "x"}], stream=False)
    assert e.value.status_code == 401
