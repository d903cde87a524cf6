"""What the write path's shortcuts must not change: what a body decodes to (or why it is refused),
the fields a view carries, and the store's memory after a commit that fails."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from swarm_discovery.core.published import view_of
from swarm_discovery.core.shared import Shared
from swarm_discovery.decoding import Decoder, _checked
from swarm_discovery.errors import StoreError
from swarm_discovery.records import Heartbeat, InstanceSpec, NodeSpec
from swarm_discovery.store import Compare, Put, SqliteStore

# Free text with what a pattern refuses, what it lets through, and what JSON escapes.
TEXT = st.text(
    alphabet=st.sampled_from(["a", "é", '"', "\\", "\t", "\n", "\x01", "\x7f", "\u202e", "\u2069", "\u2026"])
)


def outcome(decode: Any, body: bytes) -> tuple[str, Any]:
    try:
        return "ok", msgspec.to_builtins(decode(body))
    except msgspec.ValidationError as exc:
        return "invalid", str(exc)
    except msgspec.DecodeError as exc:
        return "malformed", str(exc)


@pytest.mark.parametrize("kind", [InstanceSpec, NodeSpec, Heartbeat])
def test_a_kind_with_text_patterns_gets_a_twin_that_checks_them(kind: type) -> None:
    twin = _checked(kind, {})
    assert twin is not kind and twin.__name__ == kind.__name__
    assert _checked(int, {}) is int and _checked(list[str], {}) == list[str]


@settings(max_examples=300, deadline=None)
@given(
    version=TEXT,
    tag=TEXT,
    meta_key=TEXT,
    meta_value=TEXT,
    zone=TEXT,
    output=TEXT,
    raw=st.booleans(),
)
def test_decoding_refuses_and_accepts_what_checking_every_string_would(
    version: str, tag: str, meta_key: str, meta_value: str, zone: str, output: str, raw: bool
) -> None:
    instance = {
        "address": "10.0.0.1",
        "port": 80,
        "version": version,
        "tags": [tag],
        "meta": {meta_key: meta_value},
        "location": {"zone": zone},
        "checks": [{"type": "ttl", "ttl": "5s", "name": output}],
    }
    body = msgspec.json.encode(instance)
    if raw:  # the characters as their own bytes where JSON lets them be (it escapes controls, not DEL or overrides)
        body = body.replace(b"\\u007f", b"\x7f")
    strict = msgspec.json.Decoder(_checked(InstanceSpec, {})).decode
    assert outcome(Decoder(InstanceSpec).decode, body) == outcome(strict, body)
    beat = msgspec.json.encode({"output": output})
    assert outcome(Decoder(Heartbeat).decode, beat) == outcome(
        msgspec.json.Decoder(_checked(Heartbeat, {})).decode, beat
    )


def test_a_clean_body_is_decoded_without_the_twin_and_a_risky_one_with_it() -> None:
    decoder = Decoder(InstanceSpec)
    clean = b'{"address":"10.0.0.1","port":80,"version":"1.0","tags":["a"]}'
    assert decoder.decode(clean).version == "1.0"
    for risky in ("1.0\u202e", "1.0\x7f", "1.0\\u0007"):
        body = b'{"address":"10.0.0.1","port":80,"version":"' + risky.encode() + b'"}'
        with pytest.raises(msgspec.ValidationError, match=r"matching regex .* - at `\$.version`"):
            decoder.decode(body)
    assert decoder.decode('{"address":"a","port":1,"version":"1.0 é…"}'.encode()).version == "1.0 é…"


def every_field_set() -> InstanceSpec:
    spec = msgspec.convert(
        {
            "service": "s",
            "id": "i",
            "node": "n",
            "address": "10.0.0.1",
            "port": 81,
            "protocol": "grpc",
            "version": "2",
            "tags": ["t"],
            "meta": {"k": "v"},
            "location": {"region": "eu"},
            "capabilities": {"gpu": 1},
            "capacity": {"c": 1.0},
            "weight": 7,
            "checks": [{"type": "ttl", "ttl": "5s"}],
            "metrics": {"m": 1.0},
        },
        InstanceSpec,
    )
    defaults = InstanceSpec(address="", port=1)
    unset = [f for f in InstanceSpec.__struct_fields__ if getattr(spec, f) == getattr(defaults, f)]
    assert not unset, f"give these a value that is not the default: {unset}"
    return spec


def test_a_view_carries_every_field_of_its_spec() -> None:
    spec = every_field_set()
    view = view_of(spec)
    assert [getattr(view, f) for f in InstanceSpec.__struct_fields__] == [
        getattr(spec, f) for f in InstanceSpec.__struct_fields__
    ]
    assert view_of(InstanceSpec(address="a", port=1)).tags == []  # the blank it copies is left as it was


def test_empty_parts_are_one_value_and_equal_parts_one_whatever_the_key() -> None:
    shared = Shared()
    specs = [msgspec.convert({"address": "a", "port": 1, **extra}, InstanceSpec) for extra in ({}, {}, {"tags": ["k"]})]
    tagged = msgspec.convert({"address": "a", "port": 1, "tags": ["k"], "meta": {"k": "v"}}, InstanceSpec)
    for spec in [*specs, tagged]:
        shared.spec(spec)
    assert specs[0].tags is specs[1].tags and specs[0].meta is specs[1].meta is specs[0].capabilities
    assert specs[2].tags is tagged.tags and tagged.meta == {"k": "v"}


def test_a_commit_that_fails_leaves_the_store_as_it_was(tmp_path: Path) -> None:
    """SQLite refuses the batch (the file may not grow): what judging it changed in memory is
    taken back, revisions and leases alike, and nothing reaches the feed."""

    async def scenario() -> None:
        store = SqliteStore(str(tmp_path))
        await store.open()
        try:
            kept = await store.txn([], [Put("kept", b"1")])
            lease = await store.grant(60)
            feed = aiter(store.watch(kept.revision + 1))
            db = store._db
            assert db is not None
            pages = db.execute("PRAGMA page_count").fetchone()[0]
            db.execute(f"PRAGMA max_page_count = {pages}")
            failing = [
                store.txn([Compare("kept", kept.revision)], [Put("kept", b"2", lease=lease)]),
                store.txn([Compare("new", 0)], [Put("new", b"x" * 1_000_000)]),
            ]
            for result in await asyncio.gather(*failing, return_exceptions=True):
                assert isinstance(result, StoreError)
            db.execute("PRAGMA max_page_count = 1073741823")
            await store.revoke(lease)  # "kept" never took the lease: it stays
            again = await store.txn([Compare("kept", kept.revision), Compare("new", 0)], [Put("new", b"y")])
            assert again.succeeded
            batch = await asyncio.wait_for(anext(feed), 5)
            assert [(e.key, e.value) for e in batch.events] == [("new", b"y")]
            assert {kv.key: kv.value for kv in (await store.snapshot()).items} == {"kept": b"1", "new": b"y"}
        finally:
            await store.close()

    asyncio.run(asyncio.wait_for(scenario(), 30))
