"""The transfer messages round-trip through zactor.protocol's encode/decode."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from zactor import protocol as P
from zactor.transfer import messages as M

oids = st.binary(min_size=28, max_size=28)
u64 = st.integers(min_value=0, max_value=2**64 - 1)
req_ids = u64

bodies = st.one_of(
    st.tuples(st.just(M.XFER_HELLO), st.fixed_dictionaries({})),
    st.tuples(st.just(M.XFER_WELCOME), st.fixed_dictionaries({"sid": u64, "nonce": st.binary()})),
    st.tuples(st.just(M.XFER_META_REQ), st.fixed_dictionaries(
        {"oid": oids}, optional={"sid": u64, "seq": u64, "mac": st.binary(max_size=32)})),
    st.tuples(st.just(M.XFER_META), st.fixed_dictionaries(
        {"oid": oids, "size": u64}, optional={"metadata": st.binary(), "compress": st.booleans()})),
    st.tuples(st.just(M.XFER_CHUNK_REQ), st.fixed_dictionaries(
        {"oid": oids, "offset": u64, "length": u64},
        optional={"compress": st.booleans(), "sid": u64, "seq": u64, "mac": st.binary()})),
    st.tuples(st.just(M.XFER_CHUNK), st.fixed_dictionaries(
        {"oid": oids, "offset": u64, "length": u64},
        optional={"codec": st.sampled_from([M.CODEC_RAW, M.CODEC_LZ4])})),
)


@given(bodies, req_ids, st.lists(st.binary(max_size=256), max_size=2))
def test_round_trip(mtype_body, req_id, payload):
    mtype, body = mtype_body
    msg = P.decode(P.encode(mtype, body, req_id, payload))
    assert msg.mtype is mtype and msg.req_id == req_id and msg.payload == payload
    assert msg.body == {**mtype.optional, **body}


@given(st.lists(st.binary(max_size=64), min_size=0, max_size=4))
def test_decode_of_garbage_raises_only_protocol_error(frames):
    try:
        P.decode(frames)
    except P.ProtocolError:
        pass


def test_codes_are_in_the_transfer_range():
    for mtype in (M.XFER_HELLO, M.XFER_WELCOME, M.XFER_META_REQ, M.XFER_META, M.XFER_CHUNK_REQ,
                  M.XFER_CHUNK):
        assert 0x80 <= mtype.code <= 0xBF


def test_transfer_error_pickles():
    import pickle

    err = M.TransferError(b"\1" * 28, "tcp://h:1", "missing", "gone")
    back = pickle.loads(pickle.dumps(err))
    assert str(back) == str(err) and back.reason == "missing" and back.oid == err.oid
