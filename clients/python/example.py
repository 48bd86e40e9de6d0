#!/usr/bin/env python3
"""A modbot client in Python: checks health, then classifies messages and prints the verdicts.

    python clients/python/example.py [--addr 127.0.0.1:50051] [--channel destinygg] [TEXT ...]
    MODBOT_TOKEN=... python clients/python/example.py --ca-file ca.pem --addr localhost:50051 ...

A server with tokens needs one with the `classifier` (or `admin`) role: `--token` or, better
(flags show in `ps`), MODBOT_TOKEN. `--ca-file` connects with TLS, trusting that CA (`--tls`
alone trusts the system's roots); a client certificate for mutual TLS is `--cert-file` and
`--key-file`. Prints one JSON object: {"health": "SERVING", "verdicts": [...]}. The client code is generated
from proto/ on first use (into clients/python/build/) unless it is already importable.
"""

import argparse
import json
import os
import pathlib
import sys
import uuid

import grpc
from google.protobuf import json_format
from grpc_health.v1 import health_pb2, health_pb2_grpc

HERE = pathlib.Path(__file__).resolve().parent


def import_client():
    """Imports the generated modules, generating them first if needed."""
    try:
        from modbot.v1 import moderation_pb2, moderation_pb2_grpc, common_pb2  # noqa: F401
    except ImportError:
        sys.path.insert(0, str(HERE))
        from generate import generate

        build = HERE / "build"
        generate(build)
        sys.path.insert(0, str(build))
        from modbot.v1 import moderation_pb2, moderation_pb2_grpc, common_pb2  # noqa: F401
    return moderation_pb2, moderation_pb2_grpc, common_pb2


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--addr", default="127.0.0.1:50051", help="modbot's gRPC address (host:port)")
    parser.add_argument("--channel", default="destinygg", help="chat channel of the messages")
    parser.add_argument("--user", default="example-user", help="author of the messages")
    parser.add_argument("--timeout", type=float, default=10.0, help="seconds to wait for each call")
    parser.add_argument("--token", default=os.environ.get("MODBOT_TOKEN", ""),
                        help="bearer token (default: $MODBOT_TOKEN)")
    parser.add_argument("--tls", action="store_true", help="connect with TLS (system roots)")
    parser.add_argument("--ca-file", help="connect with TLS, trusting this CA (PEM)")
    parser.add_argument("--cert-file", help="client certificate (PEM) for mutual TLS")
    parser.add_argument("--key-file", help="its private key (PEM)")
    parser.add_argument("texts", nargs="*", default=["hello chat", "free nitro for everyone"])
    args = parser.parse_args()

    moderation_pb2, moderation_pb2_grpc, common_pb2 = import_client()
    if args.tls or args.ca_file or args.cert_file:
        read = lambda path: pathlib.Path(path).read_bytes() if path else None  # noqa: E731
        credentials = grpc.ssl_channel_credentials(
            root_certificates=read(args.ca_file),
            private_key=read(args.key_file),
            certificate_chain=read(args.cert_file),
        )
        channel = grpc.secure_channel(args.addr, credentials)
    else:
        channel = grpc.insecure_channel(args.addr)
    metadata = [("authorization", f"Bearer {args.token}")] if args.token else None
    with channel:
        health = health_pb2_grpc.HealthStub(channel)
        status = health.Check(health_pb2.HealthCheckRequest(service=""), timeout=args.timeout).status
        moderation = moderation_pb2_grpc.ModerationStub(channel)
        request = moderation_pb2.ClassifyRequest(
            messages=[
                common_pb2.ChatMessage(
                    channel=args.channel,
                    message_id=str(uuid.uuid4()),
                    user_id=args.user,
                    nick=args.user,
                    roles=["subscriber"],
                    text=text,
                )
                for text in args.texts
            ],
            options=moderation_pb2.ClassifyOptions(include_normalized_text=True),
        )
        try:
            response = moderation.Classify(request, timeout=args.timeout, metadata=metadata)
        except grpc.RpcError as error:
            print(f"Classify failed: {error.code().name}: {error.details()}", file=sys.stderr)
            return 1
    print(
        json.dumps(
            {
                "health": health_pb2.HealthCheckResponse.ServingStatus.Name(status),
                "verdicts": [json_format.MessageToDict(v) for v in response.verdicts],
            },
            indent=2,
            ensure_ascii=False,
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
