"""The edges file: its format, defaults, validation, and the ice_servers it produces."""

from __future__ import annotations

import json
from typing import Any

import pytest

from turnpike.core.edges import Edge, EdgeDirectory, EdgesError, Ports

SAMPLE = {
    "global": {"host": "turn.example.org"},
    "edges": [
        {
            "name": "ashburn",
            "location": "US East Coast (Virginia)",
            "host": "ashburn.turn.example.org",
            "ports": {"udp": 3478, "tcp": 3478, "tls": 443},
        }
    ],
}


def test_the_documented_example_parses() -> None:
    directory = EdgeDirectory.parse(json.dumps(SAMPLE))
    assert directory.global_edge.host == "turn.example.org"
    assert directory.global_edge.ports == Ports(3478, 3478, 443)
    assert directory.names == ("ashburn",)
    ashburn = directory.get("ashburn")
    assert ashburn is not None
    assert ashburn.location == "US East Coast (Virginia)"
    assert directory.get("global") is directory.global_edge
    assert directory.get("nowhere") is None


def test_ports_default_per_transport() -> None:
    doc = {
        "global": {"host": "10.0.0.1", "ports": {"udp": 3479}},
        "edges": [{"name": "a", "host": "a.example"}],
    }
    directory = EdgeDirectory.parse(json.dumps(doc))
    assert directory.global_edge.ports == Ports(3479, 3478, 443)
    assert directory.edges[0].ports == Ports(3478, 3478, 443)
    assert EdgeDirectory.parse('{"global": {"host": "x.example"}}').edges == ()


def test_ice_servers_order_and_ipv6_brackets() -> None:
    doc = {"global": {"host": "2001:db8::7", "ports": {"udp": 1, "tcp": 2, "tls": 3}}}
    servers = EdgeDirectory.parse(json.dumps(doc)).global_edge.ice_servers("u", "p")
    assert [s["urls"] for s in servers] == [
        "stun:[2001:db8::7]:1",
        "turn:[2001:db8::7]:1?transport=udp",
        "turn:[2001:db8::7]:2?transport=tcp",
        "turn:[2001:db8::7]:3?transport=tcp",
    ]
    assert all(s["url"] == s["urls"] for s in servers)
    assert "username" not in servers[0]
    assert all(s["username"] == "u" and s["credential"] == "p" for s in servers[1:])


@pytest.mark.parametrize(
    ("doc", "problem"),
    [
        ("[]", "$: expected an object, found an empty array"),
        ("{", "not valid JSON (Expecting property name enclosed in double quotes: line 1"),
        ({"edges": []}, "$.global: expected an object, found nothing"),
        (
            {"global": {"host": "bad host"}},
            '$.global.host: expected a DNS name or an IP address, found "bad host"',
        ),
        ({"global": {"host": "a..b"}}, 'expected a DNS name or an IP address, found "a..b"'),
        (
            {"global": {"host": "x.example"}, "edge": []},
            '$: expected only the fields "global", "edges", found "edge"',
        ),
        (
            {"global": {"host": "x.example", "ports": {"udp": 0}}},
            "$.global.ports.udp: expected an integer from 1 to 65535, found 0",
        ),
        ({"global": {"host": "x.example", "ports": {"udp": "3478"}}}, '65535, found "3478"'),
        ({"global": {"host": "x.example", "ports": {"udp": True}}}, "65535, found true"),
        (
            {"global": {"host": "x.example", "ports": {"dtls": 1}}},
            '$.global.ports: expected only the fields "udp", "tcp", "tls", found "dtls"',
        ),
        (
            {"global": {"host": "x"}, "edges": [{"name": "A", "host": "a"}]},
            '$.edges[0].name: expected a lowercase DNS label such as "ashburn"',
        ),
        (
            {"global": {"host": "x"}, "edges": [{"name": "global", "host": "a"}]},
            '$.edges[0].name: expected a lowercase DNS label such as "ashburn" ("global" is '
            'reserved), found "global"',
        ),
        (
            {"global": {"host": "x"}, "edges": [{"name": "a", "host": "a"}] * 2},
            '$.edges[1].name: expected each value once, found "a" listed twice',
        ),
        (
            {"global": {"host": "x"}, "edges": [{"name": "a"}]},
            "$.edges[0].host: expected a DNS name or an IP address, found nothing",
        ),
        (
            {"global": {"host": "x"}, "edges": {"a": 1}},
            "$.edges: expected an array, found an object",
        ),
        (
            {"global": {"host": "x"}, "edges": [{"name": "a", "host": "a", "zone": 1}]},
            '$.edges[0]: expected only the fields "name", "location", "host", "ports", found "zo',
        ),
    ],
)
def test_broken_files_name_the_problem(doc: Any, problem: str) -> None:
    text = doc if isinstance(doc, str) else json.dumps(doc)
    with pytest.raises(EdgesError) as caught:
        EdgeDirectory.parse(text, "edges.json")
    assert str(caught.value).startswith("edges.json: ")
    assert problem in str(caught.value)


def test_the_documented_example_renders_back_to_itself() -> None:
    directory = EdgeDirectory.parse(json.dumps(SAMPLE))
    assert json.loads(directory.render()) == SAMPLE
    assert directory.render().endswith("}\n")


def test_render_then_parse_gives_the_same_directory() -> None:
    # Everything a directory can say: global ports and location, an IPv6 host, odd ports.
    directory = EdgeDirectory(
        Edge("global", "2001:db8::1", "Anywhere", Ports(3479, 3480, 3481)),
        (
            Edge("local", "127.0.0.1", "This machine", Ports(40000, 40000, 40000)),
            Edge("dublin", "dublin.turn.example.org", "", Ports()),
        ),
    )
    assert EdgeDirectory.parse(directory.render()) == directory
    plain = EdgeDirectory(Edge("global", "turn.example.org"))
    assert json.loads(plain.render()) == {"global": {"host": "turn.example.org"}, "edges": []}
