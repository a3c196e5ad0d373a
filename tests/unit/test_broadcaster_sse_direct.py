"""An event stream's direct writes: the bytes uvicorn's own send would write,
and only while that send would write them at once."""

from __future__ import annotations

from uvicorn.protocols.http.httptools_impl import RequestResponseCycle

from rowcast.broadcaster.sse import Chunks
from tests.cycles import response_cycle


class Transport:
    def __init__(self) -> None:
        self.written: list[bytes] = []
        self.closing = False

    def write(self, data: bytes) -> None:
        self.written.append(data)

    def is_closing(self) -> bool:
        return self.closing

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


def cycle() -> tuple[RequestResponseCycle, Transport]:
    transport = Transport()
    return response_cycle(transport), transport


async def test_a_direct_write_is_the_chunk_uvicorns_send_writes():
    c, transport = cycle()
    direct = Chunks.of(c.send)
    assert direct is not None
    assert not direct.ready()  # nothing may go before the response's head
    await c.send({"type": "http.response.start", "status": 200, "headers": []})
    assert direct.ready()
    for body in (b"id: 1\nevent: change\ndata: {}\n\n", b"x" * 70_000):
        transport.written.clear()
        await c.send({"type": "http.response.body", "body": body, "more_body": True})
        by_uvicorn = b"".join(transport.written)
        transport.written.clear()
        direct.write(body)
        assert b"".join(transport.written) == by_uvicorn


async def test_no_direct_write_while_the_socket_pushes_back_or_after_the_end():
    c, transport = cycle()
    direct = Chunks.of(c.send)
    assert direct is not None
    await c.send({"type": "http.response.start", "status": 200, "headers": []})
    c.flow.pause_writing()
    assert not direct.ready()
    c.flow.resume_writing()
    transport.closing = True
    assert not direct.ready()
    transport.closing = False
    await c.send({"type": "http.response.body", "body": b"", "more_body": False})
    assert not direct.ready()


def test_a_send_that_is_not_uvicorns_has_no_direct_path():
    async def send(message: object) -> None:
        pass

    assert Chunks.of(send) is None
    assert Chunks.of(None) is None
