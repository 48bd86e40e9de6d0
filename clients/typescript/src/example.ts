// A modbot client in TypeScript: checks health, then classifies messages and prints the
// verdicts (the same as clients/python/example.py).
//
//   node dist/src/example.js [--url http://127.0.0.1:50051] [--channel destinygg] [TEXT ...]
//   MODBOT_TOKEN=... node dist/src/example.js --url https://localhost:50051 --ca-file ca.pem ...
//
// Prints one JSON object: {"health": "SERVING", "verdicts": [...]} (proto3 JSON: enum names,
// camelCase fields, durations as "600s"). A failed call prints `... failed: CODE: message` on
// stderr and exits with 1; bad options exit with 2.

import { randomUUID } from "node:crypto";
import { parseArgs } from "node:util";

import { toJson } from "@bufbuild/protobuf";

import { HealthCheckResponse_ServingStatus } from "../gen/grpc/health/v1/health_pb.js";
import { VerdictSchema } from "../gen/modbot/v1/common_pb.js";
import { connectModbot, describeError, loadToken } from "./client.js";

const USAGE = `usage: node dist/src/example.js [options] [TEXT ...]

Checks modbot's health, then classifies each TEXT (default: two examples) and prints the
verdicts as JSON.

  --url URL          the server: https://HOST:PORT (TLS) or http://127.0.0.1:PORT
                     (plaintext, loopback); default http://127.0.0.1:50051
  --ca-file FILE     TLS: trust this CA (PEM) instead of the system's roots
  --cert-file FILE   mutual TLS: client certificate (PEM), with --key-file
  --key-file FILE    its private key (PEM)
  --token-file FILE  the bearer token: the file's first line (a mounted secret)
  --token TOKEN      the bearer token (shows in \`ps\`: prefer --token-file or $MODBOT_TOKEN)
                     default: $MODBOT_TOKEN; a server with tokens needs one with the
                     classifier (or admin) role
  --channel NAME     chat channel of the messages (default destinygg)
  --user NAME        author of the messages (default example-user)
  --timeout SECONDS  per call (default 10)
`;

async function main(): Promise<number> {
  let parsed;
  try {
    parsed = parseArgs({
      allowPositionals: true,
      options: {
        url: { type: "string", default: "http://127.0.0.1:50051" },
        "ca-file": { type: "string" },
        "cert-file": { type: "string" },
        "key-file": { type: "string" },
        "token-file": { type: "string" },
        token: { type: "string" },
        channel: { type: "string", default: "destinygg" },
        user: { type: "string", default: "example-user" },
        timeout: { type: "string", default: "10" },
        help: { type: "boolean", short: "h" },
      },
    });
  } catch (error) {
    process.stderr.write(`${describeError(error)}\n\n${USAGE}`);
    return 2;
  }
  const { values, positionals } = parsed;
  if (values.help) {
    process.stdout.write(USAGE);
    return 0;
  }
  const timeoutMs = Number(values.timeout) * 1000;
  if (!(timeoutMs > 0)) {
    process.stderr.write(`--timeout: not a positive number of seconds: ${values.timeout}\n`);
    return 2;
  }
  if (values.token !== undefined && values["token-file"] !== undefined) {
    process.stderr.write("--token and --token-file: give one of them\n");
    return 2;
  }
  const texts = positionals.length > 0 ? positionals : ["hello chat", "free nitro for everyone"];

  let modbot;
  try {
    const token = values.token ?? loadToken({ tokenFile: values["token-file"] });
    modbot = connectModbot({
      url: values.url,
      token,
      caFile: values["ca-file"],
      certFile: values["cert-file"],
      keyFile: values["key-file"],
      defaultTimeoutMs: timeoutMs,
    });
  } catch (error) {
    process.stderr.write(`${describeError(error)}\n`);
    return 2;
  }

  try {
    let health;
    try {
      health = await modbot.health.check({ service: "" });
    } catch (error) {
      process.stderr.write(`Health check failed: ${describeError(error)}\n`);
      return 1;
    }
    let response;
    try {
      response = await modbot.moderation.classify({
        messages: texts.map((text) => ({
          channel: values.channel,
          messageId: randomUUID(),
          userId: values.user,
          nick: values.user,
          roles: ["subscriber"],
          text,
        })),
        options: { includeNormalizedText: true },
      });
    } catch (error) {
      process.stderr.write(`Classify failed: ${describeError(error)}\n`);
      return 1;
    }
    const printed = {
      health: HealthCheckResponse_ServingStatus[health.status],
      verdicts: response.verdicts.map((verdict) => toJson(VerdictSchema, verdict)),
    };
    process.stdout.write(`${JSON.stringify(printed, null, 2)}\n`);
    return 0;
  } finally {
    modbot.close();
  }
}

process.exitCode = await main();
