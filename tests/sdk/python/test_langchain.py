"""The gateway as LangChain (``langchain-openai``) sees it.

Same running gateway as ``test_openai_sdk.py`` (``tests/sdk/run.sh`` starts it
with ``PROXY_OUTPUT_MODE=openai-json``, the mode SDK clients need), so answers
are the offline model's: ``ECHO: <prompt>``, and triggers such as
``[[call NAME {json}]]``. What is checked is what a LangChain user would
notice: message content, streamed chunks, tool calls an agent loop can
answer, structured output parsed into a pydantic model, the exception an
error raises, and reasoning tokens in the usage metadata.
"""

import os

import openai
import pytest
from langchain_core.messages import HumanMessage, ToolMessage
from langchain_core.tools import tool
from langchain_openai import ChatOpenAI
from pydantic import BaseModel

MODEL = "codex-offline"
BASE_URL = os.environ.get("GATEWAY_BASE_URL")
API_KEY = os.environ.get("GATEWAY_API_KEY")

if not BASE_URL or not API_KEY:
    pytest.exit(
        "GATEWAY_BASE_URL and GATEWAY_API_KEY must be set; run tests/sdk/run.sh",
        returncode=2,
    )


# Both of langchain-openai's transports: Chat Completions and the Responses
# API (which it picks by itself for some settings).
@pytest.fixture(params=[False, True], ids=["chat", "responses"])
def chat(request):
    def make(**kw):
        return ChatOpenAI(
            model=MODEL,
            base_url=BASE_URL,
            api_key=API_KEY,
            max_retries=0,
            timeout=30,
            use_responses_api=request.param,
            **kw,
        )

    return make


@tool
def get_weather(city: str) -> str:
    """Current weather for a city."""
    return f"sunny in {city}"


class Weather(BaseModel):
    """A weather report."""

    city: str
    celsius: int


def test_invoke_returns_the_answer_and_token_usage(chat):
    msg = chat().invoke("Hello LangChain")
    assert msg.text == "ECHO: Hello LangChain"
    assert msg.usage_metadata["input_tokens"] > 0
    assert msg.usage_metadata["output_tokens"] > 0


def test_stream_yields_the_answer_in_chunks(chat):
    chunks = list(chat().stream("stream this please"))
    assert len(chunks) > 1
    assert "".join(c.text for c in chunks) == "ECHO: stream this please"


def test_a_bound_tool_is_called_and_its_result_answered(chat):
    llm = chat().bind_tools([get_weather])
    question = HumanMessage('[[call get_weather {"city": "Paris"}]]')
    ai = llm.invoke([question])
    assert ai.tool_calls and ai.tool_calls[0]["name"] == "get_weather"
    assert ai.tool_calls[0]["args"] == {"city": "Paris"}
    call = ai.tool_calls[0]
    result = ToolMessage(get_weather.invoke(call["args"]), tool_call_id=call["id"])
    final = llm.invoke([question, ai, result])
    assert final.text == f"TOOL RESULT {call['id']}: sunny in Paris"


def test_structured_output_through_a_forced_tool_call(chat):
    llm = chat().with_structured_output(Weather, method="function_calling")
    got = llm.invoke('[[call Weather {"city": "Oslo", "celsius": 4}]]')
    assert got == Weather(city="Oslo", celsius=4)


def test_a_provider_rate_limit_raises_the_openai_rate_limit_error(chat):
    with pytest.raises(openai.RateLimitError):
        chat().invoke("[[error 429]]")


def test_reasoning_tokens_reach_the_usage_metadata(chat):
    msg = chat().invoke("[[reason Weigh it.]] hi")
    assert msg.text.endswith("hi")
    details = msg.usage_metadata.get("output_token_details", {})
    assert details.get("reasoning", 0) > 0, msg.usage_metadata
