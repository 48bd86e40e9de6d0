#!/usr/bin/env python3
"""A modbot client in Python: checks health, then classifies messages and prints the verdicts.

    python clients/python/example.py [--addr 127.0.0.1:50051] [--channel destinygg] [TEXT ...]

Prints one JSON object: {"health": "SERVING", "verdicts": [...]}. The client code is generated
from proto/ on first use (into clients/python/build/) unless it is already importable.
"""

import argparse
import json
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
    parser.add_argument("texts", nargs="*", default=["hello chat", "free nitro for everyone"])
    args = parser.parse_args()

    moderation_pb2, moderation_pb2_grpc, common_pb2 = import_client()
    with grpc.insecure_channel(args.addr) as channel:
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
            response = moderation.Classify(request, timeout=args.timeout)
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
