"""The private aioquic attributes ``rr.http3.quic`` relies on still exist (fails loudly when an
aioquic release renames one, before anything subtler breaks)."""

from __future__ import annotations

import inspect

import pytest
from aioquic.quic.connection import QuicConnection, QuicConnectionState
from aioquic.quic.recovery import QuicPacketSpace
from aioquic.quic.stream import QuicStream

from rr.http3.quic import RrQuic, load_certificate
from tests.rr.certs import make_cert


@pytest.fixture(scope="module")
def quic(tmp_path_factory):
    cert = make_cert(tmp_path_factory.mktemp("h3-quic"))
    return RrQuic(configuration=load_certificate(*cert), max_streams=10, stream_window=65536,
                  conn_window=65536, original_destination_connection_id=b"\x01" * 8)


def test_the_private_attributes_rr_uses_exist(quic):
    for name in ("_streams", "_local_max_data", "_handshake_complete", "_local_max_streams_bidi",
                 "_max_datagram_size", "_loss", "_spaces", "_remote_max_data", "_remote_max_data_used",
                 # path MTU probes: built and registered as aioquic's own packets are
                 "_state", "_close_pending", "_cryptos", "_network_paths", "_peer_cid", "_packet_number",
                 "_spin_bit", "_version", "_quic_logger"):
        assert hasattr(quic, name), name
    for name in ("_write_stream_limits", "_write_connection_limits", "_parse_transport_parameters",
                 "_flush_builder"):
        assert callable(getattr(QuicConnection, name)), name
    assert list(inspect.signature(QuicConnection._flush_builder).parameters) == [
        "self", "builder", "network_path", "peer_cid", "now"]
    assert hasattr(quic._peer_cid, "cid") and isinstance(quic._state, QuicConnectionState)
    loss = quic._loss
    assert hasattr(loss, "_pacer") and hasattr(loss._pacer, "_max_datagram_size")
    assert hasattr(loss, "_cc") and hasattr(loss, "_pto_count")
    assert hasattr(loss._cc, "bytes_in_flight") and hasattr(loss._cc, "congestion_window")
    # wrapped by RrQuic.start_pmtud: called by the recovery with these keywords
    assert {"packets", "congestion_event", "now", "space", "persistent_congestion"} <= set(
        inspect.signature(loss._on_packets_lost).parameters)
    assert isinstance(quic._spaces, dict) and hasattr(QuicPacketSpace(), "ack_at")  # by epoch (tls.Epoch)
    stream = QuicStream(stream_id=0, max_stream_data_local=10, max_stream_data_remote=10)
    for name in ("max_stream_data_local", "max_stream_data_local_sent", "max_stream_data_remote"):
        assert hasattr(stream, name), name
    assert hasattr(stream.sender, "_buffer_stop") and hasattr(stream.sender, "highest_offset")
    assert hasattr(stream.receiver, "highest_offset")
