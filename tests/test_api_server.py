"""The API's HTTP/1.1 front end (api/server.py) with a fake router: keep-alive, pipelining,
requests in pieces, bodies, streams, hijacks and malformed input, over a real unix socket."""

from __future__ import annotations

import http.client
import json
import socket
import threading
import time
import weakref
from collections.abc import Iterator

import pytest
from vmctl_agent.api import connection, wire
from vmctl_agent.api.http import ApiError, Request, Response, json_response
from vmctl_agent.api.serve import unix_listener
from vmctl_agent.api.server import Server

BIG = 4 << 20


class FakeRouter:
    """Answers /now on the loop; everything else on a thread, by path."""

    def __init__(self) -> None:
        self.threads: list[str] = []  # the paths answered on a thread, in order

    def answer_now(self, request: Request) -> Response | None:
        if request.path == "/now":
            return json_response({"query": request.raw_query, "version": request.version})
        if request.path == "/missing-now":
            raise ApiError(404, "no such thing")
        if request.path == "/big":
            return Response(200, b"b" * BIG, "application/octet-stream")
        return None

    def __call__(self, request: Request) -> Response:
        self.threads.append(request.path)
        if request.path == "/echo":
            return Response(200, request.body(), "application/octet-stream")
        if request.path == "/json":
            return json_response(request.json())
        if request.path == "/stream":
            return Response(200, stream=(b"%d\n" % n for n in range(3)))
        if request.path == "/hijack":
            return Response(content_type="application/vnd.docker.raw-stream", hijack=_echo_once)
        if request.path == "/hijack-talks-first":
            return Response(hijack=lambda sock: sock.sendall(b"at once"))
        if request.path == "/ignore-body":
            return Response(200, b"ignored")
        raise ApiError(404, "page not found")


def _echo_once(sock: socket.socket) -> None:
    sock.sendall(b"hello " + sock.recv(100))


@pytest.fixture
def served(tmp_path) -> Iterator[tuple[str, FakeRouter]]:
    path = str(tmp_path / "api.sock")
    router = FakeRouter()
    server = Server([unix_listener(path)], router)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield path, router
    server.shutdown()
    server.server_close()
    thread.join(5)


def connect(path: str) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(10)
    sock.connect(path)
    return sock


class _Reader:
    """One buffered reader for a connection's responses (http.client makes one per response,
    and would lose what its buffer read ahead), which they may not close."""

    def __init__(self, sock: socket.socket) -> None:
        self.fp = sock.makefile("rb")

    def makefile(self, *_args, **_kwargs) -> _Reader:
        return self

    def __getattr__(self, name: str):
        return getattr(self.fp, name)

    def close(self) -> None:
        pass


_readers: weakref.WeakKeyDictionary[socket.socket, _Reader] = weakref.WeakKeyDictionary()


def responses(
    sock: socket.socket, count: int, method: str = "GET"
) -> list[tuple[int, dict, bytes]]:
    """`count` responses read in turn from one connection."""
    reader = _readers.setdefault(sock, _Reader(sock))
    answers = []
    for _ in range(count):
        response = http.client.HTTPResponse(reader, method=method)
        response.begin()
        answers.append((response.status, dict(response.getheaders()), response.read()))
    return answers


def at_end(sock: socket.socket) -> bool:
    """Has the server closed the connection, with nothing more after what was read?"""
    return _readers[sock].fp.read() == b""


def get(target: str) -> bytes:
    return b"GET %s HTTP/1.1\r\nHost: x\r\n\r\n" % target.encode()


def test_pipelined_requests_are_answered_in_order_on_one_connection(served):
    path, router = served
    with connect(path) as sock:
        sock.sendall(
            get("/now?a=1")
            + b"POST /echo HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello"
            + get("/v1.41/now?b=2")
            + get("/stream")
            + get("/now?c=3")
        )
        answers = responses(sock, 5)
    assert [a[0] for a in answers] == [200] * 5
    assert json.loads(answers[0][2]) == {"query": "a=1", "version": "1.50"}
    assert answers[1][2] == b"hello"
    assert json.loads(answers[2][2]) == {"query": "b=2", "version": "1.41"}
    assert answers[3][2] == b"0\n1\n2\n" and answers[3][1]["Transfer-Encoding"] == "chunked"
    assert json.loads(answers[4][2])["query"] == "c=3"
    assert router.threads == ["/echo", "/stream"]


def test_a_request_split_into_many_small_writes(served):
    path, _ = served
    request = b"POST /json HTTP/1.1\r\nHost: x\r\nContent-Length: 13\r\n\r\n" + b'{"a": [1, 2]}'
    with connect(path) as sock:
        for n in range(0, len(request), 3):
            sock.sendall(request[n : n + 3])
            time.sleep(0.002)
        [(status, _, body)] = responses(sock, 1)
    assert status == 200 and json.loads(body) == {"a": [1, 2]}


def test_keep_alive_survives_the_hand_off_to_a_thread_and_back(served):
    path, router = served
    conn = http.client.HTTPConnection("x")
    conn.sock = connect(path)
    for n in range(3):
        conn.request("POST", "/echo", body=b"x" * n)
        assert conn.getresponse().read() == b"x" * n
        conn.request("GET", "/now")
        assert json.loads(conn.getresponse().read())["version"] == "1.50"
    conn.close()
    assert router.threads == ["/echo"] * 3


def test_a_chunked_body(served):
    path, _ = served
    with connect(path) as sock:
        sock.sendall(
            b"POST /echo HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"5\r\nhello\r\n1;ext=1\r\n \r\n5\r\nworld\r\n0\r\n\r\n" + get("/now")
        )
        first, second = responses(sock, 2)
    assert first[2] == b"hello world" and second[0] == 200


def test_a_body_the_handler_did_not_read_is_skipped(served):
    path, _ = served
    with connect(path) as sock:
        sock.sendall(b"POST /ignore-body HTTP/1.1\r\nContent-Length: 4\r\n\r\nGET " + get("/now"))
        first, second = responses(sock, 2)
    assert first[2] == b"ignored" and second[0] == 200


def test_expect_100_continue(served):
    path, _ = served
    with connect(path) as sock:
        sock.sendall(b"POST /echo HTTP/1.1\r\nContent-Length: 2\r\nExpect: 100-continue\r\n\r\n")
        assert sock.recv(100) == b"HTTP/1.1 100 Continue\r\n\r\n"
        sock.sendall(b"ok")
        [(status, _, body)] = responses(sock, 1)
    assert status == 200 and body == b"ok"


def test_upgrade_hijacks_the_connection(served):
    path, _ = served
    with connect(path) as sock:
        sock.sendall(b"POST /hijack HTTP/1.1\r\nConnection: Upgrade\r\nUpgrade: tcp\r\n\r\n")
        response = http.client.HTTPResponse(sock, method="POST")
        response.begin()
        assert response.status == 101 and response.reason == "UPGRADED"
        assert response.getheader("Upgrade") == "tcp"
        sock.sendall(b"there")
        assert sock.recv(100) == b"hello there"
        assert sock.recv(100) == b""  # closed after the session


def test_a_hijacked_stream_starts_after_the_client_has_read_the_head(served):
    """docker-py reads the head through a buffered reader and the stream from the socket
    under it: stream bytes that arrive with the head are lost, so they must come after."""
    path, _ = served
    with connect(path) as sock:
        sock.sendall(b"POST /hijack-talks-first HTTP/1.1\r\nConnection: Upgrade\r\n\r\n")
        head = sock.recv(65536)
        assert head.startswith(b"HTTP/1.1 101 UPGRADED\r\n") and head.endswith(b"\r\n\r\n")
        assert sock.recv(100) == b"at once"


def test_unread_counts_what_the_peer_has_not_read():
    ours, theirs = socket.socketpair()
    with ours, theirs:
        assert connection.unread(ours) == 0 and connection.wait_until_read(ours, 0)
        ours.sendall(b"head")
        assert connection.unread(ours) > 0 and not connection.wait_until_read(ours, 0)
        assert theirs.recv(100) == b"head"
        assert connection.unread(ours) == 0 and connection.wait_until_read(ours, 0)


@pytest.mark.parametrize(
    "head",
    [
        b"GARBAGE\r\n\r\n",
        b"GET /now HTTP/1.1 extra\r\n\r\n",
        b"GET /now HTTP/2.0\r\n\r\n",
        b"GET now HTTP/1.1\r\n\r\n",
        b"G(T /now HTTP/1.1\r\n\r\n",
        b"GET /now HTTP/1.1\r\nno colon here\r\n\r\n",
        b"GET /now HTTP/1.1\r\nbad name: x\r\n\r\n",
        b"GET /now HTTP/1.1\r\n" + b"X-A: b\r\n" * 101 + b"\r\n",
        b"GET /now HTTP/1.1\r\nX-Big: " + b"a" * (70 << 10),
        b"POST /echo HTTP/1.1\r\nContent-Length: lots\r\n\r\n",
        b"POST /echo HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
    ],
)
def test_malformed_requests_get_a_400_and_the_server_lives(served, head):
    path, _ = served
    with connect(path) as sock:
        sock.sendall(head)
        [(status, headers, body)] = responses(sock, 1)
        assert at_end(sock)  # and the connection is closed
    assert status == 400 and headers["Content-Type"] == "application/json"
    assert json.loads(body)["message"]
    with connect(path) as sock:
        sock.sendall(get("/now"))
        assert responses(sock, 1)[0][0] == 200


def test_errors_answered_on_the_loop_are_dockerds_json(served):
    path, _ = served
    with connect(path) as sock:
        sock.sendall(get("/missing-now") + get("/v1.99/now") + get("/x"))
        answers = responses(sock, 3)
    assert [a[0] for a in answers] == [404, 400, 404]
    assert json.loads(answers[0][2]) == {"message": "no such thing"}
    assert "too new" in json.loads(answers[1][2])["message"]


def test_head_and_http_1_0(served):
    path, _ = served
    with connect(path) as sock:
        sock.sendall(b"HEAD /now HTTP/1.1\r\n\r\n" + b"GET /now HTTP/1.0\r\n\r\n")
        head, plain = responses(sock, 1, "HEAD") + responses(sock, 1)
        assert at_end(sock)  # HTTP/1.0 without keep-alive: closed after
    assert head[0] == 200 and head[2] == b"" and int(head[1]["Content-Length"]) > 0
    assert plain[0] == 200 and plain[1]["Connection"] == "close"


def test_a_slow_reader_gets_everything_and_others_are_not_held_up(served):
    path, _ = served
    with connect(path) as slow, connect(path) as quick:
        slow.sendall(get("/big") + get("/now?after"))  # megabytes that it does not read yet
        time.sleep(0.2)
        quick.sendall(get("/now"))
        assert responses(quick, 1)[0][0] == 200
        big, after = responses(slow, 2)
    assert big[2] == b"b" * BIG and json.loads(after[2])["query"] == "after"


def test_a_client_that_leaves_mid_request_is_forgotten(served):
    path, _ = served
    for partial in (b"GET /now HT", b"POST /echo HTTP/1.1\r\nContent-Length: 10\r\n\r\nabc"):
        with connect(path) as sock:
            sock.sendall(partial)
    with connect(path) as sock:
        sock.sendall(get("/now"))
        assert responses(sock, 1)[0][0] == 200


def test_wire_headers_are_case_insensitive():
    head = wire.parse_head(b"GET /a?b=1 HTTP/1.1\r\nX-Registry-Auth: abc\r\ncontent-length: 0")
    assert head.headers["x-registry-auth"] == head.headers.get("X-REGISTRY-AUTH") == "abc"
    assert "Content-Length" in head.headers and not head.has_body
    assert (head.path, head.query, head.keep_alive) == ("/a", "b=1", True)
    assert not wire.parse_head(b"GET / HTTP/1.1\nConnection: close").keep_alive
