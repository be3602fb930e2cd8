"""Mutation fuzzing seeded with the real captured OTLP bodies (the corpus): protobuf, JSON and gzip decoders, and
both receivers end to end, which must refuse a bad body with a named reason and count it, and never fail otherwise.

CI-sized: 50,000 protobuf, 10,000 JSON, 10,000 gzip mutations and 1,000 through each receiver, in seconds.
LLM_EXPORTER_TEST_FUZZ_CORPUS_SCALE multiplies every count for a longer run by hand (100 = 5 million protobuf
inputs); LLM_EXPORTER_TEST_FUZZ_SEED picks another sequence. A crash prints the input's seed and index.
"""

from __future__ import annotations

import asyncio
import gzip
import os
import random
import threading
from collections.abc import Callable

import grpc
from aiohttp.test_utils import TestClient, TestServer

from exporter.otlp import grpc_receiver as otlp_grpc
from exporter.otlp.decode import BodyDecodeError, DecodeRules, flatten, parse_json, parse_protobuf
from exporter.otlp.http_receiver import OtlpHttpReceiver
from exporter.otlp.ingest import BodyTooLarge, gunzip_limited
from exporter.requests.pipeline import PipelineOptions, SpanPipeline
from exporter.service.admission import Admission
from tests.support import harness_env
from tests.support.otlp import GRPC_CAPTURE, HTTP_CAPTURE, load, to_otlp_json
from tests.support.procs import free_port

SCALE = float(os.environ.get(harness_env.FUZZ_CORPUS_SCALE, "1"))
SEED = int(os.environ.get(harness_env.FUZZ_SEED, "20261128"))
CORPUS = [load(p) for p in (*HTTP_CAPTURE, *GRPC_CAPTURE)]
PROTOBUF_CORPUS = [r.SerializeToString() for r in CORPUS]
JSON_CORPUS = [to_otlp_json(r) for r in CORPUS]
INTERESTING = [b"\x00", b"\xff", b"\x80", b"\x7f", b"\x0a", b"\x12", b"{", b"}", b'"', b"\\", b"-1", b"1e999", b"null"]
EXPORT = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"


def count(n: int) -> int:
    return max(1, int(n * SCALE))


def mutate(rng: random.Random, data: bytes, corpus: list[bytes]) -> bytes:
    """One (mostly) to four byte-level mutations: flip, overwrite, insert, delete, truncate, duplicate, splice."""
    out = bytearray(data)
    for _ in range(rng.choices((1, 2, 3, 4), (70, 20, 6, 4))[0]):
        op = rng.randrange(7)
        at = rng.randrange(len(out) + 1)
        if op == 0 and out:
            i = rng.randrange(len(out))
            out[i] ^= 1 << rng.randrange(8)
        elif op == 1 and out:
            i = rng.randrange(len(out))
            out[i : i + 1] = rng.choice(INTERESTING)
        elif op == 2:
            out[at:at] = rng.choice(INTERESTING) * rng.randint(1, 3)
        elif op == 3 and out:
            del out[at : at + rng.randint(1, 16)]
        elif op == 4:
            del out[at:]
        elif op == 5 and out:
            length = rng.randint(1, 64)
            out[at:at] = out[at : at + length]
        else:
            other = rng.choice(corpus)
            j = rng.randrange(len(other) + 1)
            out[at:] = other[j:]
    return bytes(out)


def fuzz(corpus: list[bytes], n: int, decode: Callable[[bytes], object], salt: int) -> tuple[int, int]:
    """Feed n mutations to `decode`; returns (accepted, refused). Any exception but the named ones fails."""
    rng = random.Random(SEED + salt)
    accepted = refused = 0
    for i in range(n):
        body = mutate(rng, rng.choice(corpus), corpus)
        try:
            decode(body)
        except (BodyDecodeError, BodyTooLarge):
            refused += 1
        except Exception as exc:  # the finding: report how to replay it
            raise AssertionError(f"input {i} (seed {SEED + salt}) raised {exc!r}: {body[:200]!r}") from exc
        else:
            accepted += 1
    return accepted, refused


def test_protobuf_mutations_decode_and_flatten_or_are_refused_by_name() -> None:
    accepted, refused = fuzz(PROTOBUF_CORPUS, count(50_000), lambda b: flatten(parse_protobuf(b), DecodeRules()), 1)
    assert accepted > 0 and refused > 0, (accepted, refused)  # both paths exercised


def test_json_mutations_decode_and_flatten_or_are_refused_by_name() -> None:
    accepted, refused = fuzz(JSON_CORPUS, count(10_000), lambda b: flatten(parse_json(b), DecodeRules()), 2)
    assert accepted > 0 and refused > 0, (accepted, refused)


def test_gzip_mutations_inflate_within_the_limit_or_are_refused_by_name() -> None:
    gz = [gzip.compress(b) for b in PROTOBUF_CORPUS]

    def decode(body: bytes) -> object:
        return flatten(parse_protobuf(gunzip_limited(body, 1 << 20)), DecodeRules())

    # Mutated gzip streams (mostly refused by the CRC), and gzip streams of mutated bodies (inflated, then parsed).
    _, refused = fuzz(gz, count(5_000), decode, 3)
    accepted, _ = fuzz(PROTOBUF_CORPUS, count(5_000), lambda b: decode(gzip.compress(b)), 5)
    assert accepted > 0 and refused > 0, (accepted, refused)


def test_both_receivers_refuse_mutated_bodies_with_a_reason_and_count_each() -> None:
    async def main() -> None:
        rng = random.Random(SEED + 4)
        n = count(1_000)
        pipeline = SpanPipeline(PipelineOptions())
        admission = Admission(64, 0, lambda: pipeline.queue_depth)
        receiver = OtlpHttpReceiver(pipeline, DecodeRules(), 1 << 20, admission, pipeline.stats)
        http_refused = 0
        async with TestClient(TestServer(receiver.app())) as client:
            for _ in range(n):
                body = mutate(rng, rng.choice(PROTOBUF_CORPUS), PROTOBUF_CORPUS)
                response = await client.post(
                    "/v1/traces", data=body, headers={"Content-Type": "application/x-protobuf"}
                )
                assert response.status in (200, 400), response.status
                http_refused += response.status == 400
        port = free_port()
        grpc_receiver = otlp_grpc.OtlpGrpcReceiver(pipeline, DecodeRules(), admission, pipeline.stats)
        server = otlp_grpc.server(grpc_receiver, f"127.0.0.1:{port}", 1 << 20)
        await server.start()
        grpc_refused = 0
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                export = channel.unary_unary(EXPORT)
                for _ in range(n):
                    body = mutate(rng, rng.choice(PROTOBUF_CORPUS), PROTOBUF_CORPUS)
                    try:
                        await export(body, timeout=10)
                    except grpc.aio.AioRpcError as exc:
                        assert exc.code() == grpc.StatusCode.INVALID_ARGUMENT, exc
                        grpc_refused += 1
        finally:
            await server.stop(None)
        assert http_refused > 0 and grpc_refused > 0
        assert pipeline.stats.batches_rejected == {
            ("http", "decode_error"): http_refused,
            ("grpc", "decode_error"): grpc_refused,
        }
        admission.close()

    asyncio.run(main())
    # Receivers take their admission (and its decode thread) from whoever wires them, who closes it: none is left.
    assert [t.name for t in threading.enumerate() if t.name.startswith("otlp-decode")] == []
