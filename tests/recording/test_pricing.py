"""Prices: per-token rates read once, multiplied per request, equal to genai-prices' figures."""

from __future__ import annotations

import math
from decimal import Decimal

import genai_prices
import pytest
from genai_prices.types import Tier, TieredPrices
from hypothesis import given, settings
from hypothesis import strategies as st

from routemeter.recording import _pricing
from routemeter.recording._pricing import (
    Prices,
    Rates,
    genai_prices_rates,
    known_model_ids,
    load_prices_file,
    rates_from_prices,
)
from routemeter.request._usage import EMPTY, Usage


def flat(input_mtok: float, output_mtok: float, read: float, write: float) -> Rates:
    """Rates from per-million prices, without tiers."""
    return Rates(
        ((0, input_mtok / 1e6),),
        ((0, output_mtok / 1e6),),
        ((0, read / 1e6),),
        ((0, write / 1e6),),
    )


def genai_cost(provider: str, model: str, usage: Usage) -> float:
    """What genai-prices charges for the same usage (its input_tokens include cache too)."""
    counts = {
        "input_tokens": usage.input,
        "cache_read_tokens": usage.cache_read,
        "cache_write_tokens": usage.cache_creation,
        "output_tokens": usage.output,
    }
    gp_usage = genai_prices.Usage(**{k: v for k, v in counts.items() if v is not None})
    return float(genai_prices.calc_price(gp_usage, model, provider_id=provider).total_price)


RATES = flat(1.0, 4.0, 0.1, 1.25)


@pytest.mark.parametrize(
    ("usage", "expected"),
    [
        (EMPTY, 0.0),
        (Usage(1000, 0), 1000 * 1e-6),
        (Usage(None, 100), 100 * 4e-6),
        (Usage(1000, 100, 400, 100), 500 * 1e-6 + 400 * 0.1e-6 + 100 * 1.25e-6 + 100 * 4e-6),
        (Usage(1000, 0, 1000, None), 1000 * 0.1e-6),
        (Usage(1000, 0, None, 1000), 1000 * 1.25e-6),
        # An inconsistent report (more cached than input) never yields a negative uncached part.
        (Usage(100, 0, 300, 0), 300 * 0.1e-6),
    ],
    ids=repr,
)
def test_flat_rates_cost(usage, expected):
    """Rates.cost charges uncached input, cache reads, cache writes and output at their rates."""
    assert RATES.cost(usage) == pytest.approx(expected, rel=1e-12, abs=0)


TIERED = Rates(
    ((1_000_000, 3e-6), (200_000, 2e-6), (0, 1e-6)),
    ((200_000, 8e-6), (0, 4e-6)),
    ((200_000, 0.2e-6), (0, 0.1e-6)),
    ((0, 1.25e-6),),
)


@pytest.mark.parametrize(
    ("usage", "expected"),
    [
        (Usage(0, 10), 10 * 4e-6),
        (Usage(200_000, 10), 200_000 * 1e-6 + 10 * 4e-6),
        (Usage(200_001, 10), 200_001 * 2e-6 + 10 * 8e-6),
        (Usage(1_000_000, 0), 1_000_000 * 2e-6),
        (Usage(1_000_001, 0), 1_000_001 * 3e-6),
        # The tier follows total input (cache included) for every part, output too.
        (Usage(250_000, 10, 240_000, 0), 10_000 * 2e-6 + 240_000 * 0.2e-6 + 10 * 8e-6),
    ],
    ids=repr,
)
def test_tier_is_chosen_by_total_input_above_threshold(usage, expected):
    """Crossing a tier's start (strictly above) prices all tokens at that tier's rate."""
    assert TIERED.cost(usage) == pytest.approx(expected, rel=1e-12, abs=0)


def test_rates_from_prices_converts_per_million_and_defaults_cache_to_input():
    """Prices per million become per token; missing cache prices fall back to the input rate."""
    rates = rates_from_prices({"input_mtok": 3, "output_mtok": Decimal("15")})
    assert rates == Rates(((0, 3e-6),), ((0, 15e-6),), ((0, 3e-6),), ((0, 3e-6),))


def test_rates_from_prices_reads_all_four_prices():
    """Explicit cache read and write prices are used as given; strings parse as decimals."""
    rates = rates_from_prices(
        {"input_mtok": "2.5", "output_mtok": 10.0, "cache_read_mtok": 1.25, "cache_write_mtok": 3}
    )
    assert rates == Rates(((0, 2.5e-6),), ((0, 10e-6),), ((0, 1.25e-6),), ((0, 3e-6),))


@pytest.mark.parametrize(
    ("prices", "expected"),
    [
        ({"output_mtok": 2}, Rates(((0, 0.0),), ((0, 2e-6),), ((0, 0.0),), ((0, 0.0),))),
        ({"input_mtok": 2}, Rates(((0, 2e-6),), ((0, 0.0),), ((0, 2e-6),), ((0, 2e-6),))),
        ({"input_mtok": 0, "output_mtok": 0}, Rates(*([((0, 0.0),)] * 4))),
    ],
    ids=repr,
)
def test_rates_from_prices_with_one_side_missing(prices, expected):
    """A missing input or output price is zero; a zero price is a price."""
    assert rates_from_prices(prices) == expected


@pytest.mark.parametrize(
    "prices", [{}, {"cache_read_mtok": 1}, {"input_mtok": None, "output_mtok": None}], ids=repr
)
def test_rates_from_prices_without_input_or_output_is_none(prices):
    """Without an input or an output price there are no rates."""
    assert rates_from_prices(prices) is None


def test_rates_from_genai_tiered_prices():
    """genai-prices TieredPrices become (start, per-token) pairs, highest start first."""
    tiered = TieredPrices(
        base=Decimal("3"),
        tiers=[Tier(start=1_000_000, price=Decimal("9")), Tier(start=200_000, price=Decimal("6"))],
    )
    rates = rates_from_prices({"input_mtok": tiered, "output_mtok": Decimal("15")})
    assert rates is not None
    assert rates.input == ((1_000_000, 9e-6), (200_000, 6e-6), (0, 3e-6))
    assert rates.cache_read == rates.input


@pytest.mark.parametrize(
    "bad",
    [-1, "-0.5", float("nan"), "NaN", float("inf"), "Infinity", Decimal("Infinity")],
    ids=repr,
)
def test_rates_from_prices_rejects_negative_and_non_finite(bad):
    """A negative, NaN or infinite price is a ValueError, never a rate."""
    with pytest.raises(ValueError, match="price"):
        rates_from_prices({"input_mtok": bad, "output_mtok": 1})


PRICES_JSON = """{
  "models": [
    {"model": "House-LLM-7B", "input_mtok": 0.5, "output_mtok": "2"},
    {"model": "gpt-4o", "provider": "openai", "input_mtok": 1, "output_mtok": 2,
     "cache_read_mtok": 0.25, "cache_write_mtok": 1.5}
  ]
}"""
PRICES_TOML = """
[[models]]
model = "House-LLM-7B"
input_mtok = 0.5
output_mtok = "2"

[[models]]
model = "gpt-4o"
provider = "openai"
input_mtok = 1
output_mtok = 2
cache_read_mtok = 0.25
cache_write_mtok = 1.5
"""
EXPECTED_TABLE = {
    (None, "house-llm-7b"): Rates(((0, 0.5e-6),), ((0, 2e-6),), ((0, 0.5e-6),), ((0, 0.5e-6),)),
    ("openai", "gpt-4o"): Rates(((0, 1e-6),), ((0, 2e-6),), ((0, 0.25e-6),), ((0, 1.5e-6),)),
}


@pytest.mark.parametrize(("name", "text"), [("p.json", PRICES_JSON), ("p.toml", PRICES_TOML)])
def test_load_prices_file(tmp_path, name, text):
    """JSON and TOML files give rates keyed by (provider or None, lower-cased model)."""
    path = tmp_path / name
    path.write_text(text)
    assert load_prices_file(str(path)) == EXPECTED_TABLE


M = '{"models": [{"model": "m", "input_mtok": %s, "output_mtok": 1}]}'
T = "[[models]]\nmodel = 'm'\noutput_mtok = 1\ninput_mtok = %s\n"
BAD_FILES = [
    pytest.param("p.json", "{not json", id="json-syntax"),
    pytest.param("p.json", "[]", id="json-top-level-list"),
    pytest.param("p.json", '"models"', id="json-top-level-string"),
    pytest.param("p.json", "{}", id="json-no-models"),
    pytest.param("p.json", '{"models": {"model": "m", "input_mtok": 1}}', id="json-models-dict"),
    pytest.param("p.json", '{"models": ["gpt-4o"]}', id="json-entry-string"),
    pytest.param("p.json", '{"models": [{"input_mtok": 1}]}', id="json-no-model"),
    pytest.param("p.json", '{"models": [{"model": "", "input_mtok": 1}]}', id="json-empty-model"),
    pytest.param("p.json", '{"models": [{"model": 5, "input_mtok": 1}]}', id="json-int-model"),
    pytest.param("p.json", '{"models": [{"model": "m"}]}', id="json-no-prices"),
    pytest.param(
        "p.json", '{"models": [{"model": "m", "cache_read_mtok": 1}]}', id="json-cache-only"
    ),
    pytest.param("p.json", M % "-1", id="json-negative"),
    pytest.param("p.json", M % "NaN", id="json-nan"),
    pytest.param("p.json", M % "Infinity", id="json-infinity"),
    pytest.param("p.json", M % "1e400", id="json-overflow-to-inf"),
    pytest.param("p.json", M % '"abc"', id="json-word"),
    pytest.param("p.json", M % '"1,5"', id="json-decimal-comma"),
    pytest.param("p.json", M % "true", id="json-bool"),
    pytest.param("p.json", M % "[1]", id="json-list"),
    pytest.param("p.json", M % '{"base": 3}', id="json-object"),
    pytest.param("p.toml", "models = [", id="toml-syntax"),
    pytest.param("p.toml", "[models]\nmodel = 'm'\ninput_mtok = 1\n", id="toml-models-table"),
    pytest.param("p.toml", T % "-0.5", id="toml-negative"),
    pytest.param("p.toml", T % "nan", id="toml-nan"),
    pytest.param("p.toml", T % "inf", id="toml-inf"),
    pytest.param("p.toml", T % "'three'", id="toml-word"),
]


@pytest.mark.parametrize(("name", "text"), BAD_FILES)
def test_load_prices_file_errors_are_value_errors(tmp_path, name, text):
    """Every malformed prices file raises ValueError (what setup() turns into a ConfigError)."""
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(ValueError):  # noqa: PT011 - the type is the contract here
        load_prices_file(str(path))


def test_load_prices_file_invalid_utf8_toml(tmp_path):
    """A TOML file that is not UTF-8 raises ValueError."""
    path = tmp_path / "p.toml"
    path.write_bytes(b"[[models]]\nmodel = '\xff'\n")
    with pytest.raises(ValueError):  # noqa: PT011 - the type is the contract here
        load_prices_file(str(path))


def test_load_prices_file_names_the_bad_entry(tmp_path):
    """The error names the index of the entry at fault."""
    path = tmp_path / "p.json"
    path.write_text('{"models": [{"model": "ok", "input_mtok": 1}, {"input_mtok": 1}]}')
    with pytest.raises(ValueError, match=r"models\[1\]"):
        load_prices_file(str(path))


def test_load_prices_file_missing_is_os_error(tmp_path):
    """A missing file raises OSError, which setup() reports as a configuration error."""
    with pytest.raises(OSError, match=r"nope\.json"):
        load_prices_file(str(tmp_path / "nope.json"))


OVERRIDE = flat(100.0, 200.0, 10.0, 125.0)
USAGE = Usage(10_000, 2_000, 4_000, 1_000)


def test_override_wins_over_genai_prices():
    """A (provider, model) override replaces genai-prices' price for that provider only."""
    prices = Prices({("openai", "gpt-4o"): OVERRIDE})
    assert prices.cost("openai", "gpt-4o", USAGE) == OVERRIDE.cost(USAGE)
    assert prices.cost("azure", "gpt-4o", USAGE) == Prices().cost("azure", "gpt-4o", USAGE)
    assert prices.cost("azure", "gpt-4o", USAGE) != OVERRIDE.cost(USAGE)


def test_provider_less_override_applies_to_every_provider():
    """An override without a provider prices the model whoever serves it."""
    prices = Prices({(None, "gpt-4o"): OVERRIDE})
    for provider in ("openai", "azure", "my-gateway"):
        assert prices.cost(provider, "gpt-4o", USAGE) == OVERRIDE.cost(USAGE)


def test_provider_specific_override_beats_provider_less_one():
    """With both, the provider's own override wins for that provider."""
    other = flat(1.0, 1.0, 1.0, 1.0)
    prices = Prices({(None, "house-llm"): other, ("acme", "house-llm"): OVERRIDE})
    assert prices.cost("acme", "house-llm", USAGE) == OVERRIDE.cost(USAGE)
    assert prices.cost("other", "house-llm", USAGE) == other.cost(USAGE)


def test_override_lookup_ignores_model_case(tmp_path):
    """Models from a prices file match whatever case the response uses."""
    path = tmp_path / "p.json"
    path.write_text(PRICES_JSON)
    prices = Prices(load_prices_file(str(path)))
    expected = 10_000 * 0.5e-6 + 2_000 * 2e-6
    assert prices.cost("anyone", "HOUSE-llm-7b", Usage(10_000, 2_000)) == pytest.approx(expected)
    assert prices.cost("openai", "GPT-4O", USAGE) == EXPECTED_TABLE[("openai", "gpt-4o")].cost(
        USAGE
    )


@pytest.mark.parametrize(
    ("provider", "model"),
    [("openai", "no-such-model-xyz"), ("acme", "house-llm-7b"), ("openai", "")],
)
def test_unknown_model_costs_none(provider, model):
    """A model neither overridden nor in genai-prices has no rates and no cost."""
    prices = Prices()
    assert prices.rates(provider, model) is None
    assert prices.cost(provider, model, USAGE) is None


def test_lookups_are_cached_per_provider_and_model(monkeypatch):
    """Each (provider, model) is looked up once, unknown ones included."""
    calls = []

    def fake(provider, model):
        calls.append((provider, model))
        return RATES if model == "known" else None

    monkeypatch.setattr(_pricing, "genai_prices_rates", fake)
    prices = Prices()
    for _ in range(3):
        assert prices.rates("p1", "known") is RATES
        assert prices.rates("p2", "known") is RATES
        assert prices.rates("p1", "unknown") is None
    assert calls == [("p1", "known"), ("p2", "known"), ("p1", "unknown")]


def test_overrides_do_not_consult_genai_prices(monkeypatch):
    """An overridden model never reaches genai-prices."""

    def forbidden(provider, model):
        raise AssertionError(f"genai-prices consulted for {provider}/{model}")

    monkeypatch.setattr(_pricing, "genai_prices_rates", forbidden)
    assert Prices({(None, "gpt-4o"): OVERRIDE}).rates("openai", "GPT-4o") is OVERRIDE


def test_genai_prices_rates_falls_back_to_any_provider():
    """An unknown provider name still finds a model genai-prices knows elsewhere."""
    rates = genai_prices_rates("my-gateway", "gpt-4o")
    assert rates is not None
    assert rates == genai_prices_rates(None, "gpt-4o")
    assert rates.cost(USAGE) == pytest.approx(genai_cost("openai", "gpt-4o", USAGE), rel=1e-12)


@pytest.mark.parametrize("model", ["", " ", "\x00", "(((", "*", "a" * 10_000, "gpt-4o\n"])
def test_genai_prices_rates_never_raises_on_odd_names(model):
    """Malformed model names give None or rates, never an exception."""
    result = genai_prices_rates("openai", model)
    assert result is None or isinstance(result, Rates)


def test_known_model_ids():
    """known_model_ids() is the exact, case-sensitive set of genai-prices model ids."""
    ids = known_model_ids()
    assert isinstance(ids, frozenset)
    assert len(ids) > 500
    assert {"gpt-4o", "gpt-4o-mini", "claude-sonnet-4-5", "gemini-2.5-pro"} <= ids
    assert "GPT-4O" not in ids
    assert all(type(i) is str and i for i in ids)


# The key equivalence: reading rates once and multiplying equals genai_prices.calc_price.
MODELS = [
    ("openai", "gpt-4o-mini"),
    ("openai", "gpt-4o"),
    ("anthropic", "claude-sonnet-4-5"),
    ("anthropic", "claude-opus-4-1"),
    ("google", "gemini-2.5-pro"),
    ("google", "gemini-2.5-flash"),
    ("mistral", "mistral-large-latest"),
    ("mistral", "codestral-latest"),
    ("deepseek", "deepseek-chat"),
    ("groq", "llama-3.1-8b-instant"),
]
USAGES = [
    Usage(1_000, 500),
    Usage(1_000, 500, 0, 0),
    Usage(12_000, 800, 10_000, None),
    Usage(12_000, 800, None, 4_000),
    Usage(12_000, 800, 6_000, 4_000),
    Usage(0, 700),
    Usage(None, 700),
    Usage(200_000, 1_000),
    Usage(200_001, 1_000),
    Usage(350_000, 4_000, 300_000, 20_000),
    Usage(1_500_000, 64_000, 1_000_000, 0),
]


@pytest.mark.parametrize("usage", USAGES, ids=repr)
@pytest.mark.parametrize(("provider", "model"), MODELS, ids=lambda v: v)
def test_cost_equals_genai_prices_calc_price(provider, model, usage):
    """Prices().cost equals genai_prices.calc_price's total within 1e-12 relative."""
    ours = Prices().cost(provider, model, usage)
    assert ours is not None
    assert math.isclose(ours, genai_cost(provider, model, usage), rel_tol=1e-12, abs_tol=0)


@pytest.mark.parametrize(
    ("provider", "model"), [("anthropic", "claude-sonnet-4-5"), ("google", "gemini-2.5-pro")]
)
def test_tiered_models_really_are_tiered(provider, model):
    """The long-context models in the table cost more per token above 200k input tokens."""
    prices = Prices()
    below = prices.cost(provider, model, Usage(200_000, 0))
    above = prices.cost(provider, model, Usage(200_001, 0))
    assert below is not None
    assert above is not None
    assert above / 200_001 > below / 200_000 * 1.5


def test_model_without_cache_price_charges_cache_reads_as_input():
    """Mistral has no cache price: cached tokens cost the same as uncached ones."""
    rates = Prices().rates("mistral", "mistral-large-latest")
    assert rates is not None
    assert rates.cache_read == rates.input
    assert rates.cost(Usage(1_000, 0, 800, None)) == rates.cost(Usage(1_000, 0))


def test_cost_includes_per_request_price():
    """A model with a per-request fee (Perplexity sonar) costs what calc_price says."""
    usage = Usage(1_000, 500)
    ours = Prices().cost("perplexity", "sonar", usage)
    assert ours is not None
    assert math.isclose(ours, genai_cost("perplexity", "sonar", usage), rel_tol=1e-12)


token_counts = st.integers(0, 600_000)


@settings(max_examples=200, deadline=None, database=None)
@given(
    st.sampled_from(
        [
            ("openai", "gpt-4o"),
            ("anthropic", "claude-sonnet-4-5"),
            ("google", "gemini-2.5-pro"),
            ("mistral", "mistral-large-latest"),
        ]
    ),
    token_counts,
    token_counts,
    token_counts,
    st.integers(0, 100_000),
)
def test_cost_matches_calc_price_property(provider_model, uncached, read, write, output):
    """For random token counts, our cost equals calc_price's within 1e-12 relative."""
    provider, model = provider_model
    usage = Usage(uncached + read + write, output, read, write)
    ours = Prices().cost(provider, model, usage)
    assert ours is not None
    assert math.isclose(ours, genai_cost(provider, model, usage), rel_tol=1e-12, abs_tol=0)
