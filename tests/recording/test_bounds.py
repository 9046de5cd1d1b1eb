"""Bounded attribute values: declared or first-seen values pass, secrets and junk never do."""

from __future__ import annotations

import random
import sys
import threading
from collections.abc import Callable, Iterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from routemeter.recording._bounds import Bounded
from routemeter.recording._semconv import OTHER
from routemeter.request._safe import MAX_VALUE_LENGTH, acceptable

MODEL_NAMES = [
    "gpt-4o-mini",
    "gpt-4o-2024-08-06",
    "o3-mini",
    "claude-sonnet-4-5-20250929",
    "claude-sonnet-4-5",
    "anthropic/claude-3-5-haiku",
    "gemini-2.5-pro",
    "gemini-1.5-pro-002",
    "meta-llama/Llama-3.1-8B-Instruct",
    "us.anthropic.claude-3-5-sonnet-20241022-v2:0",
    "amazon.nova-pro-v1:0",
    "claude-3-5-sonnet-v2@20241022",
    "ft:gpt-4o-mini-2024-07-18:acme::9xYzAbCd",
    "accounts/fireworks/models/llama-v3p1-70b-instruct",
    "openrouter/anthropic/claude-3.5-sonnet:beta",
    "Qwen/Qwen2.5-72B-Instruct-Turbo",
    "mistral-large-latest",
    "deepseek-chat",
    "text-embedding-3-large",
    "openai",
    "azure_ai",
    "vertex_ai",
    "api.anthropic.com",
    "default",
    "long_context",
    "429",
    "RateLimitError",
    "x" * MAX_VALUE_LENGTH,
    "0123456789abcdef0123456789abcde",  # 31 hex digits: short of a hash
]

SECRETS = {
    "openai-key": "sk-proj-" + "Ab3dE5gH7jK9mN1pQ3sT5vX7zB9dF1hJ",
    "openai-legacy-key": "sk-" + "T3BlbkFJ" + "a1B2c3D4e5F6g7H8i9J0kLmN",
    "anthropic-key": "sk-ant-api03-" + "AbCdEfGhIjKlMnOpQrStUvWxYz0123456789_-abcdEFGH-AA",
    "stripe-key": "rk_live_" + "51H8sLmN0pQrStUvWxYz",
    "aws-access-key": "AKIA" + "IOSFODNN7EXAMPLE",
    "aws-session-key": "ASIA" + "XY7Z3EXAMPLE4Q2R",
    "github-pat": "ghp_" + "16C7e42F292c6912E7710c838347Ae178B4a",
    "github-fine-grained": "github_pat_" + "11ABCDEFG0123456789_abcdefghijklmnop",
    "huggingface-token": "hf_" + "aBcDeFgHiJkLmNoPqRsTuVwXyZ012345",
    "google-key": "AIza" + "SyA1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6Q",
    "jwt": "eyJhbGciOiJIUzI1NiJ9" + ".eyJzdWIiOiIxMjM0NTY3ODkwIn0" + ".c2lnbmF0dXJlX2hlcmU",
    "email": "alice.smith@example.com",
    "email-plus": "bob+router@corp.example.co.uk",
    "ipv4": "10.0.0.1",
    "ipv4-port": "203.0.113.7:443",
    "md5": "d41d8cd98f00b204e9800998ecf8427e",
    "sha256": "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
    "sha256-upper": "E3B0C44298FC1C149AFBF4C8996FB92427AE41E4649B934CA495991B7852B855",
    "uuid": "123e4567-e89b-12d3-a456-426614174000",
    "uuid-upper": "123E4567-E89B-12D3-A456-426614174000",
    "key-after-provider": "openai/sk-proj-" + "Ab3dE5gH7jK9mN1pQ3sT5vX7zB9dF1hJ",
}
# Shapes the module means to catch but spells with "_" where the real tokens use "-", and secrets
# behind a provider prefix such as "bedrock/" (a secret does not stop being one there).
MORE_SECRETS = {
    "gitlab-pat": "glpat-" + "a1B2c3D4e5F6g7H8i9J0",
    "slack-bot-token": "xoxb-" + "123456789012-1234567890123-AbCdEfGhIjKlMnOpQrStUvWx",
    "aws-after-provider": "bedrock/AKIA" + "IOSFODNN7EXAMPLE",
    "github-after-provider": "github/ghp_" + "16C7e42F292c6912E7710c838347Ae178B4a",
    "google-after-provider": "vertex_ai/AIza" + "SyA1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6Q",
    "hf-after-provider": "huggingface/hf_" + "aBcDeFgHiJkLmNoPqRsTuVwXyZ012345",
}

MALFORMED = [
    "",
    " gpt-4o",
    "gpt-4o ",
    "gpt 4o",
    "gpt-4o\n",
    "gpt-4o\r\nX-Injected: 1",
    "gpt\t4o",
    "gpt-4o\x00",
    "gpt-4o\x1b[31m",
    "x" * (MAX_VALUE_LENGTH + 1),
    "-gpt-4o",
    "_OTHER",
    "/v1/chat/completions",
    "gpt-4o?key=1",
    "gpt-4o#frag",
    "gpt-4o;drop",
    'gpt-4o"',
    "gpt-4o{}",
    "gpt-4o\u00e9",
    "\u0433\u0440\u0442-4",
    "gpt-4o\u200b",
]


@pytest.mark.parametrize("value", MODEL_NAMES)
def test_realistic_names_are_acceptable(value):
    """Real model, provider, route and error names are acceptable."""
    assert acceptable(value)


@pytest.mark.parametrize("value", MODEL_NAMES)
def test_realistic_names_pass_a_fresh_allow_list(value):
    """A realistic name is admitted as itself within the budget."""
    bounded = Bounded("gen_ai.request.model", limit=1)
    assert bounded(value) == value
    assert bounded.rejected == 0


@pytest.mark.parametrize("value", list(SECRETS.values()), ids=list(SECRETS))
def test_secret_shaped_values_are_never_acceptable(value):
    """API keys, tokens, emails, IPv4 addresses, hashes and UUIDs are never acceptable."""
    assert not acceptable(value)


@pytest.mark.parametrize("value", list(SECRETS.values()), ids=list(SECRETS))
def test_secret_shaped_values_never_pass_even_when_declared(value):
    """A declared secret is dropped from the allow-list and maps to _OTHER."""
    bounded = Bounded("gen_ai.request.model", declared=[value, "gpt-4o"], limit=100)
    assert bounded(value) == OTHER
    assert value not in bounded.admitted
    assert bounded("gpt-4o") == "gpt-4o"
    assert bounded.rejected == 1


@pytest.mark.parametrize("value", list(SECRETS.values()), ids=list(SECRETS))
def test_secret_shaped_values_never_pass_even_when_known(value):
    """A known-predicate that says yes to everything still cannot admit a secret."""
    bounded = Bounded("gen_ai.request.model", limit=100, known=lambda _: True)
    assert bounded(value) == OTHER


@pytest.mark.parametrize("value", list(MORE_SECRETS.values()), ids=list(MORE_SECRETS))
def test_more_token_shapes_are_never_acceptable(value):
    """GitLab and Slack tokens, and keys after a provider prefix, are secret-shaped too."""
    assert not acceptable(value)


@pytest.mark.parametrize("value", MALFORMED, ids=repr)
def test_malformed_values_are_not_acceptable(value):
    """Empty, too long, spaced, control-character or punctuated values are not acceptable."""
    assert not acceptable(value)


@pytest.mark.parametrize("value", MALFORMED, ids=repr)
def test_malformed_values_become_other(value):
    """A malformed value maps to _OTHER even with budget left, and counts as rejected."""
    bounded = Bounded("x", declared=[value], limit=100)
    assert bounded(value) == OTHER
    assert bounded.rejected == 1
    assert bounded.admitted == frozenset()


@pytest.mark.parametrize(
    "value", [None, 4, 4.0, True, b"gpt-4o", ["gpt-4o"], object(), type("S", (str,), {})("gpt-4o")]
)
def test_non_str_values_become_other(value):
    """Only exact str values can pass; everything else is _OTHER and admits nothing."""
    bounded = Bounded("x", declared=["gpt-4o"], limit=100)
    assert bounded(value) == OTHER
    assert bounded.admitted == frozenset({"gpt-4o"})


def test_declared_values_pass_without_using_the_budget():
    """Declared values always pass, even with a zero budget."""
    bounded = Bounded("llm.router.route", declared=["default", "think", "background"], limit=0)
    for _ in range(3):
        assert bounded("think") == "think"
        assert bounded("default") == "default"
    assert bounded("long_context") == OTHER
    assert bounded.rejected == 1


def test_first_limit_others_pass_then_other():
    """The first `limit` distinct undeclared values pass; later ones become _OTHER."""
    bounded = Bounded("gen_ai.request.model", declared=["gpt-4o"], limit=3)
    names = [f"model-{i}" for i in range(6)]
    assert [bounded(n) for n in names] == names[:3] + [OTHER] * 3
    assert bounded.rejected == 3
    assert bounded.admitted == {"gpt-4o", *names[:3]}


def test_admitted_values_keep_passing_and_rejections_count_distinct_values():
    """An admitted value passes forever; rejected counts each refused value once, however often
    it comes back."""
    bounded = Bounded("gen_ai.request.model", limit=1)
    assert bounded("first") == "first"
    for i in range(5):
        assert bounded("second") == OTHER
        assert bounded(f"other-{i}") == OTHER
        assert bounded("first") == "first"
        assert bounded.rejected == i + 2


def test_known_values_pass_without_using_the_budget():
    """Values the known predicate accepts pass and leave the budget for others."""
    priced = {"gpt-4o", "claude-sonnet-4-5", "gemini-2.5-pro"}
    bounded = Bounded("gen_ai.request.model", limit=1, known=priced.__contains__)
    for name in sorted(priced):
        assert bounded(name) == name
    assert bounded("house-llm") == "house-llm"
    assert bounded("house-llm-2") == OTHER
    assert bounded.admitted == {*priced, "house-llm"}
    assert bounded.rejected == 1


def test_known_predicate_is_asked_once_per_admitted_value():
    """Once admitted, a value is served from the allow-list without asking again."""
    asked = []

    def known(value):
        asked.append(value)
        return True

    bounded = Bounded("x", limit=0, known=known)
    for _ in range(10):
        assert bounded("gpt-4o") == "gpt-4o"
    assert asked == ["gpt-4o"]


def test_zero_limit_admits_nothing_undeclared():
    """With limit 0 only declared or known values ever pass."""
    bounded = Bounded("x", limit=0)
    assert [bounded(v) for v in ("a", "b", "c")] == [OTHER] * 3
    assert bounded.rejected == 3


@settings(max_examples=200, deadline=None, database=None)
@given(st.text(max_size=200))
def test_acceptable_values_are_short_single_tokens(value):
    """Any acceptable value is at most 128 chars of [A-Za-z0-9._:/@+-], led by a letter or digit."""
    if acceptable(value):
        assert 0 < len(value) <= MAX_VALUE_LENGTH
        assert value[0].isascii()
        assert value[0].isalnum()
        assert all(c.isascii() and (c.isalnum() or c in "._:/@+-") for c in value)


@settings(max_examples=100, deadline=None, database=None)
@given(st.lists(st.text(max_size=20), max_size=50), st.integers(0, 10))
def test_bounded_property(values, limit):
    """Outputs are the input or _OTHER; at most `limit` distinct values are admitted."""
    bounded = Bounded("x", limit=limit)
    out = [bounded(v) for v in values]
    assert all(o in (v, OTHER) for o, v in zip(out, values, strict=True))
    passed = {o for o in out if o != OTHER}
    assert len(passed) <= limit
    assert passed == bounded.admitted
    assert bounded.rejected == len(
        {v for o, v in zip(out, values, strict=True) if o == OTHER and v != OTHER}
    )


@pytest.fixture
def fast_switching() -> Iterator[None]:
    """Switch threads as often as the interpreter allows, to make races likely."""
    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    yield
    sys.setswitchinterval(old)


def run_threads(n: int, work: Callable[[int], list[str]]) -> list[list[str]]:
    """Run work(i) in n real threads released together; return each thread's results."""
    barrier = threading.Barrier(n)
    results: list[list[str]] = [[] for _ in range(n)]
    errors: list[BaseException] = []

    def target(i: int) -> None:
        try:
            barrier.wait()
            results[i] = work(i)
        except BaseException as e:  # surfaced below: a thread must not fail silently
            errors.append(e)

    threads = [threading.Thread(target=target, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert not errors
    assert not any(t.is_alive() for t in threads)
    return results


@pytest.mark.usefixtures("fast_switching")
@pytest.mark.parametrize("round_", range(5))
def test_concurrent_admission_admits_exactly_limit(round_):
    """8 threads offering 1,000 distinct values with limit 100 admit exactly 100."""
    values = [f"model-{round_}-{i}" for i in range(1000)]
    bounded = Bounded("gen_ai.request.model", limit=100)
    results = run_threads(8, lambda i: [bounded(v) for v in values[i::8]])
    passed = [o for r in results for o in r if o != OTHER]
    assert len(passed) == 100
    assert len(set(passed)) == 100
    assert set(passed) == bounded.admitted
    assert bounded.rejected == 900


@pytest.mark.usefixtures("fast_switching")
def test_concurrent_same_values_are_answered_consistently():
    """Threads offering the same values agree on each one: all pass it or all refuse it."""
    values = [f"model-{i}" for i in range(1000)]
    bounded = Bounded("gen_ai.request.model", limit=100)

    def work(i: int) -> list[str]:
        order = values[:]
        random.Random(i).shuffle(order)
        return [f"{v}={bounded(v)}" for v in order]

    results = run_threads(8, work)
    answers: dict[str, set[str]] = {}
    for line in (a for r in results for a in r):
        value, answer = line.split("=")
        answers.setdefault(value, set()).add(answer)
    assert all(len(a) == 1 for a in answers.values())
    admitted = {v for v, a in answers.items() if a == {v}}
    assert admitted == bounded.admitted
    assert len(admitted) == 100
    assert bounded.rejected == 900


@pytest.mark.usefixtures("fast_switching")
def test_concurrent_rejections_of_malformed_values_are_counted_exactly():
    """Concurrent refusals of malformed and secret values count each distinct value once."""
    junk = [f"bad value {i}" for i in range(2_500)] + ["alice@example.com", "10.0.0.1"] * 100
    bounded = Bounded("x", limit=100)
    results = run_threads(8, lambda i: [bounded(v) for v in junk])
    assert all(o == OTHER for r in results for o in r)
    assert bounded.rejected == 2_502
    assert bounded.admitted == frozenset()
