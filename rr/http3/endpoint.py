"""The QUIC endpoint: a process reading one of the listener's UDP sockets, routing datagrams.

What it is: a child of the listener's supervisor (``rr.listener``) when the
listener serves ``http3``, one per UDP socket bound on the listener's port
(``http3.listeners``, SO_REUSEPORT when several: the kernel hashes each
client's address and port to one of them). It reads datagrams from (a dup
of) its socket and routes each by its destination connection ID to the
connection process that issued that ID (``runtime.quic_routes``, one table
for every endpoint of the listener, so a client whose datagrams move to
another socket still reaches its connection; the Retry key is shared too).
An unknown ID starts a connection only for a client Initial of at least
1200 bytes (RFC 9000 §14.1), admitted through the listener like an accepted
TCP socket (``max_clients``, eviction of idle connections, refusal at the
cap), and optionally only after a Retry has proved the client's address
(RFC 9000 §8.1.2). An unsupported version is answered with Version
Negotiation; anything else unroutable is dropped.

What it owns: nothing that outlives it. The routing table lives in the
listener's runtime and is kept by the connection processes (each adds the
IDs it issues and removes those it retires) and by whoever observes a
connection's end (``QuicAdmission.close``, run by the connection supervisor's
``on_exit``), so a restarted endpoint routes to the connections that were
already there.

What it must never do: decrypt, keep per-connection state, or queue without
bound: a connection whose mailbox already holds ``max_queued_datagrams``
datagrams loses the next ones (QUIC recovers from loss), and while the
listener drains no new connection is started.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from aioquic.buffer import Buffer
from aioquic.quic.packet import (
    QuicPacketType,
    encode_quic_retry,
    encode_quic_version_negotiation,
    pull_quic_header,
)
from aioquic.quic.retry import QuicRetryTokenHandler

import supervisors
from rr.log import get_logger

if TYPE_CHECKING:
    from rr.runtime import ListenerRuntime

_log = get_logger("rr.http3")

# RFC 9000 §14.1: a client's first datagram is at least this big (anti-amplification).
MIN_INITIAL = 1200
# Connection IDs rr issues are this long (aioquic's default), so short headers can be parsed.
CID_LENGTH = 8
SUPPORTED_VERSIONS = (0x00000001, 0x6B3343CF)  # QUIC v1 (RFC 9000) and v2 (RFC 9369)


class QuicAdmission:
    """A new QUIC connection on its way to a process: what the endpoint knows of it.

    Passed to the connection supervisor in place of an accepted socket; its
    ``close`` (run when the connection process ends, however it ends)
    removes every connection ID routed to that process.
    """

    __slots__ = ("runtime", "dcid", "first", "addr", "original_dcid", "retry_scid", "cids", "pid")

    def __init__(self, runtime: ListenerRuntime, dcid: bytes, first: bytes, addr: Any,
                 original_dcid: bytes, retry_scid: bytes | None) -> None:
        self.runtime = runtime
        self.dcid = dcid
        self.first = first
        self.addr = addr
        self.original_dcid = original_dcid
        self.retry_scid = retry_scid
        self.cids: set[bytes] = set()
        self.pid: supervisors.Pid | None = None

    def route(self, cid: bytes, pid: supervisors.Pid) -> None:
        self.pid = pid
        self.cids.add(cid)
        self.runtime.quic_routes[cid] = pid

    def unroute(self, cid: bytes) -> None:
        self.cids.discard(cid)
        if self.runtime.quic_routes.get(cid) is self.pid:
            del self.runtime.quic_routes[cid]

    def close(self) -> None:
        for cid in list(self.cids):
            self.unroute(cid)


def endpoint(runtime: ListenerRuntime, admit: Callable[[ListenerRuntime, Any, Any], None], index: int = 0) -> None:
    """The endpoint process's body: read socket ``index`` of the listener's UDP sockets, route,
    admit (``admit`` is the listener's)."""
    assert runtime.udp_socks, "the socket owner binds the UDP sockets first"
    sock = runtime.udp_socks[index].dup()
    options = runtime.config.http3
    assert options is not None
    retry = None
    if options.retry:
        if runtime.quic_retry is None:
            runtime.quic_retry = QuicRetryTokenHandler()
        retry = runtime.quic_retry
    routes = runtime.quic_routes
    received = runtime.quic_received
    limit = options.max_queued_datagrams
    mailbox_size = supervisors.mailbox_size
    send = supervisors.send
    try:
        while True:
            try:
                data, addr = sock.recvfrom(65536)
            except (BlockingIOError, InterruptedError):
                continue
            except OSError as exc:
                _log.debug("quic recvfrom failed", error=str(exc))
                continue
            received[index] += 1
            try:
                header = pull_quic_header(Buffer(data=data), host_cid_length=CID_LENGTH)
            except ValueError:
                continue  # not QUIC, or truncated: nothing to answer
            pid = routes.get(header.destination_cid)
            if pid is not None:
                if mailbox_size(pid) < limit:
                    send(pid, ("h3.dgram", data, addr))
                else:
                    runtime.quic_dropped += 1
                continue
            version = header.version
            if version is None:
                continue  # a short header for a connection we do not know (stateless reset: not sent)
            if header.packet_type == QuicPacketType.VERSION_NEGOTIATION:
                continue  # never answer one (reflection loops)
            if version not in SUPPORTED_VERSIONS:
                if len(data) >= MIN_INITIAL:  # only for what could be a client's first datagram
                    _send(sock, encode_quic_version_negotiation(
                        source_cid=header.destination_cid, destination_cid=header.source_cid,
                        supported_versions=list(SUPPORTED_VERSIONS)), addr)
                continue
            if header.packet_type != QuicPacketType.INITIAL or len(data) < MIN_INITIAL:
                continue
            if runtime.draining:
                continue  # no new connection while draining
            original = header.destination_cid
            retry_scid = None
            if retry is not None:
                if not header.token:
                    scid = os.urandom(CID_LENGTH)
                    token = retry.create_token(address=addr, original_destination_connection_id=original,
                                               retry_source_connection_id=scid, now=time.time())
                    _send(sock, encode_quic_retry(version=version, source_cid=scid,
                                                  destination_cid=header.source_cid,
                                                  original_destination_cid=header.destination_cid,
                                                  retry_token=token), addr)
                    continue
                try:
                    original = retry.validate_token(address=addr, destination_cid=header.destination_cid,
                                                    token=header.token, now=time.time())
                except ValueError:
                    continue  # a forged or stale token: silence
                retry_scid = header.destination_cid
            admission = QuicAdmission(runtime, header.destination_cid, data, addr, original, retry_scid)
            admit(runtime, admission, addr)
    finally:
        sock.close()


def _send(sock: Any, data: bytes, addr: Any) -> None:
    try:
        sock.sendto(data, addr)
    except OSError:
        pass
