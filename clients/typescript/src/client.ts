// modbot's TypeScript client: a gRPC (HTTP/2) transport to a modbot server and typed clients
// for its services, generated from proto/ by protoc-gen-es (gen/, never committed).
//
//   const modbot = connectModbot({ url: "https://modbot.internal:50051", caFile: "ca.pem",
//                                  token: loadToken({ tokenFile: "/run/secrets/modbot" }) });
//   const { verdicts } = await modbot.moderation.classify({ messages: [...] });
//   modbot.close();

import { readFileSync } from "node:fs";
import { isIP } from "node:net";

import { Code, ConnectError, createClient } from "@connectrpc/connect";
import type { Client, Interceptor, Transport } from "@connectrpc/connect";
import { Http2SessionManager, createGrpcTransport } from "@connectrpc/connect-node";

import { Health } from "../gen/grpc/health/v1/health_pb.js";
import { Actions } from "../gen/modbot/v1/actions_pb.js";
import { Admin } from "../gen/modbot/v1/admin_pb.js";
import { Appeals } from "../gen/modbot/v1/appeals_pb.js";
import { Moderation } from "../gen/modbot/v1/moderation_pb.js";
import { Review } from "../gen/modbot/v1/review_pb.js";
import { Transparency } from "../gen/modbot/v1/transparency_pb.js";

export interface ModbotOptions {
  /**
   * The server: `https://HOST:PORT` for TLS, or `http://127.0.0.1:PORT` for a plaintext
   * server on loopback (modbot serves plaintext without tokens only there).
   */
  url: string;
  /** Sent as `authorization: Bearer <token>` on every call; see {@link loadToken}. */
  token?: string;
  /** TLS: trust this CA (PEM file) instead of the system's roots. */
  caFile?: string;
  /** Mutual TLS: this client certificate (PEM file), with {@link keyFile}. */
  certFile?: string;
  /** Mutual TLS: the client certificate's private key (PEM file). */
  keyFile?: string;
  /**
   * A token over plaintext to anything but loopback is refused (anyone on the path could
   * read it) unless this is set.
   */
  allowPlaintextToken?: boolean;
  /** The timeout of a call that sets none of its own (ms); none by default. */
  defaultTimeoutMs?: number;
  /** More interceptors, run after the one that adds the token. */
  interceptors?: Interceptor[];
}

/** An interceptor that adds `authorization: Bearer <token>` to every request. */
export function bearerToken(token: string): Interceptor {
  const value = `Bearer ${token}`;
  return (next) => async (request) => {
    request.header.set("authorization", value);
    return next(request);
  };
}

/**
 * The token for a tool: the first line of `tokenFile` when given (a mounted secret), else
 * the environment variable `env` (`MODBOT_TOKEN` by default), else undefined. Tokens on the
 * command line show in `ps`; prefer these two.
 */
export function loadToken(from: { tokenFile?: string; env?: string } = {}): string | undefined {
  if (from.tokenFile !== undefined) {
    const token = (readFileSync(from.tokenFile, "utf8").split(/\r?\n/, 1)[0] ?? "").trim();
    if (token === "") {
      throw new Error(`${from.tokenFile}: no token on its first line`);
    }
    return token;
  }
  const token = process.env[from.env ?? "MODBOT_TOKEN"]?.trim();
  return token === "" ? undefined : token;
}

function isLoopback(hostname: string): boolean {
  const host = hostname.replace(/^\[(.*)\]$/, "$1");
  if (host === "localhost") {
    return true;
  }
  if (isIP(host) === 4) {
    return host.startsWith("127.");
  }
  return host === "::1";
}

/**
 * A transport to a modbot server: the gRPC protocol over one HTTP/2 connection (Node's
 * `http2`), TLS for `https://` URLs, the token on every call. Returns the connection's
 * manager too, so that the caller can close it.
 */
export function createModbotTransport(options: ModbotOptions): {
  transport: Transport;
  sessionManager: Http2SessionManager;
} {
  const url = new URL(options.url);
  const tls = url.protocol === "https:";
  if (!tls && url.protocol !== "http:") {
    throw new Error(`${options.url}: the URL must start with https:// (TLS) or http:// (plaintext)`);
  }
  if (url.port === "") {
    throw new Error(`${options.url}: the URL needs modbot's gRPC port (e.g. :50051)`);
  }
  if (!tls && (options.caFile ?? options.certFile ?? options.keyFile) !== undefined) {
    throw new Error(`${options.url}: a CA or client certificate needs an https:// URL`);
  }
  if ((options.certFile === undefined) !== (options.keyFile === undefined)) {
    throw new Error("a client certificate needs both certFile and keyFile");
  }
  if (
    !tls &&
    options.token !== undefined &&
    !options.allowPlaintextToken &&
    !isLoopback(url.hostname)
  ) {
    throw new Error(
      `${options.url}: refusing to send a token over plaintext to a host that is not loopback; use https://`,
    );
  }
  const read = (file: string | undefined) =>
    file === undefined ? undefined : readFileSync(file, "utf8");
  const nodeOptions = tls
    ? { ca: read(options.caFile), cert: read(options.certFile), key: read(options.keyFile) }
    : {};
  // The same keepalive as modbot's own (grpc.keepalive_*): a dead connection is noticed.
  const sessionManager = new Http2SessionManager(
    url,
    { pingIntervalMs: 20_000, pingTimeoutMs: 10_000 },
    nodeOptions,
  );
  const interceptors = [
    ...(options.token === undefined ? [] : [bearerToken(options.token)]),
    ...(options.interceptors ?? []),
  ];
  const transport = createGrpcTransport({
    baseUrl: url.origin,
    sessionManager,
    interceptors,
    defaultTimeoutMs: options.defaultTimeoutMs,
  });
  return { transport, sessionManager };
}

/** Typed clients for every modbot service (and gRPC health) over one connection. */
export interface Modbot {
  transport: Transport;
  health: Client<typeof Health>;
  moderation: Client<typeof Moderation>;
  actions: Client<typeof Actions>;
  appeals: Client<typeof Appeals>;
  review: Client<typeof Review>;
  admin: Client<typeof Admin>;
  transparency: Client<typeof Transparency>;
  /** Closes the connection (calls still running fail). */
  close(): void;
}

export function connectModbot(options: ModbotOptions): Modbot {
  const { transport, sessionManager } = createModbotTransport(options);
  return {
    transport,
    health: createClient(Health, transport),
    moderation: createClient(Moderation, transport),
    actions: createClient(Actions, transport),
    appeals: createClient(Appeals, transport),
    review: createClient(Review, transport),
    admin: createClient(Admin, transport),
    transparency: createClient(Transparency, transport),
    close: () => sessionManager.abort(),
  };
}

/**
 * An error as `CODE: message`, with the gRPC code's canonical name (`UNAUTHENTICATED`,
 * `INVALID_ARGUMENT`, ...), as grpcurl and the other clients print it.
 */
export function describeError(error: unknown): string {
  if (error instanceof ConnectError) {
    const name =
      error.code === Code.Canceled
        ? "CANCELLED"
        : Code[error.code].replace(/([a-z])([A-Z])/g, "$1_$2").toUpperCase();
    return `${name}: ${error.rawMessage}`;
  }
  return error instanceof Error ? error.message : String(error);
}

export { Code, ConnectError };
