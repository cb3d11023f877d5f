"""Mount and URL parsing, and routing of ferry paths to nodes."""

import pytest

from ferry.agent.routes import Mount, NodeAddr, RouteError, Router, parse_url


def test_url_with_and_without_subdir():
    assert parse_url("ferry://127.0.0.1:7070") == (NodeAddr("127.0.0.1", 7070), "/")
    assert parse_url("ferry://127.0.0.1:7070/a/b/") == (NodeAddr("127.0.0.1", 7070), "/a/b")
    assert parse_url("ferry://[::1]:9/x") == (NodeAddr("::1", 9), "/x")


@pytest.mark.parametrize("url, why", [
    ("http://127.0.0.1:7070", "must start with ferry://"),
    ("ferry://127.0.0.1", "HOST:PORT"),
    ("ferry://127.0.0.1:0", "out of range"),
    ("ferry://127.0.0.1:99999", "out of range"),
    ("ferry://h:1/../etc", "'..'"),
    ("ferry://[zz::1]:1", "IPv6"),
])
def test_bad_urls_say_why(url, why):
    with pytest.raises(RouteError, match=why.replace("(", r"\(").replace(".", r"\.")):
        parse_url(url)


@pytest.mark.parametrize("spec, why", [
    ("nocolon", "PREFIX=URL"),
    ("relative=ferry://h:1", "absolute"),
    ("/=ferry://h:1", "absolute path other than /"),
    ("/a:b=ferry://h:1", "may not contain ':'"),
    ("/REMOTE@x=ferry://h:1", "reserved"),
])
def test_bad_mounts_say_why(spec, why):
    with pytest.raises(RouteError, match=why):
        Mount.parse(spec)


def test_overlapping_mounts_are_refused():
    with pytest.raises(RouteError, match="overlap"):
        Router([Mount.parse("/data=ferry://h:1"), Mount.parse("/data/sub=ferry://h:2")])


def test_routing():
    r = Router([Mount.parse("/data=ferry://10.0.0.1:7070/export"), Mount.parse("/d2=ferry://h:2")])
    assert r.route(b"/data") == (NodeAddr("10.0.0.1", 7070), b"/export")
    assert r.route(b"/data/x/y") == (NodeAddr("10.0.0.1", 7070), b"/export/x/y")
    assert r.route(b"/d2/z") == (NodeAddr("h", 2), b"/z")
    assert r.route(b"/REMOTE@127.0.0.1:9/a") == (NodeAddr("127.0.0.1", 9), b"/a")
    assert r.route(b"/REMOTE@127.0.0.1:9") == (NodeAddr("127.0.0.1", 9), b"/")
    assert r.root_of(b"/data2/x") == b""
    with pytest.raises(RouteError):
        r.route(b"/elsewhere")
    with pytest.raises(RouteError, match="HOST:PORT"):
        r.route(b"/REMOTE@nohost/a")
