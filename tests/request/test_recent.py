"""Request ids: which a client may choose, and the ones made here."""

from __future__ import annotations

import pytest

from routemeter.request import _recent


@pytest.mark.parametrize(
    "value",
    [
        "req-42.a",
        "0b7c1f9e-3d1a-4c55-9a0e-2f3b6d7c8e91",
        "4bf92f3577b34da6a3ce929d0e0e4736",
        "trace:01:span",
        "a" * 64,
    ],
)
def test_plain_request_ids_are_kept(value):
    """Tokens, UUIDs and hex ids name a request: they are kept as the client sent them."""
    assert _recent.client_id(value.encode()) == value


@pytest.mark.parametrize(
    "value",
    [
        "sk-proj-abcdefghijklmnop0123",
        "203.0.113.77",
        "alice@example.com",
        "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.sig",
        "a" * 65,
        "-leading-dash",
        "",
        "white space",
        "caf\u00e9",
    ],
)
def test_key_address_or_odd_request_ids_are_replaced(value):
    """A key-, token-, address- or email-shaped id, or one outside 1-64 plain characters, is
    never kept: the request gets a generated id."""
    assert _recent.client_id(value.encode()) is None


def test_generated_ids_are_unique_and_plain():
    """Generated ids never repeat in a process and pass the client-id check themselves."""
    made = {_recent.new_id() for _ in range(1000)}
    assert len(made) == 1000
    assert all(_recent.client_id(i.encode()) == i for i in made)


def test_a_kept_stream_keeps_one_chunk_mark_not_all():
    """A finished stream in the recent ring keeps its first chunk's mark (its time to first
    chunk), not every mark a recorder that needs each gap collected: the ring's memory stays
    bounded by its length, not by stream lengths."""
    import routemeter
    from routemeter.testing import capture

    @routemeter.route("stream")
    def stream() -> None:
        with routemeter.current().attempt("openai", "gpt-4o-mini") as a:
            for _ in range(5_000):
                a.chunk()

    with capture(recorder="sdk"):
        _recent.configure(10)
        try:
            stream()
            [kept] = _recent.latest(1)
            [attempt] = kept.attempts
            assert attempt.chunk_marks is not None
            assert len(attempt.chunk_marks) == 1
        finally:
            _recent.configure(0)
