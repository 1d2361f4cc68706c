#!/usr/bin/env node
// A tokenbroker client in Node: @grpc/grpc-js, with @grpc/proto-loader reading
// proto/tokenbroker/v1/tokenbroker.proto at run time (nothing is generated).
//
// It asks a broker for an access token (GetAccessToken) or watches one
// (WatchAccessToken) and prints one line per token, never the token itself:
//
//   token fp=<first 12 hex of its SHA-256> expires=<RFC 3339, UTC> cache=<HIT|MISS|SHARED>
//
// The fingerprint is the one the broker writes in its log and audit trail. A
// refusal prints `error code=<gRPC code> message=<text>` on stderr and exits 1.
//
//   npm ci
//   node client.js --addr 127.0.0.1:7443 --key tbk_... --tenant tn-demo --groups pismo-v1:accounts:rw
//   node client.js --addr broker.internal:7443 --ca ca.crt --cert me.crt --client-key me.key \
//     --tenant tn-demo --groups pismo-v1:accounts:rw --watch 3
'use strict';

const crypto = require('node:crypto');
const fs = require('node:fs');
const path = require('node:path');
const { parseArgs } = require('node:util');

const grpc = require('@grpc/grpc-js');
const protoLoader = require('@grpc/proto-loader');

const USAGE = `usage: node client.js --tenant T --groups G[,G...] [flags]
  --addr HOST:PORT     the broker's gRPC address (default 127.0.0.1:7443)
  --key KEY            the caller's bearer key (default $TOKENBROKER_KEY)
  --ca FILE            PEM CA certificates that issued the broker's certificate; turns on TLS
  --cert FILE          PEM client certificate (mTLS); turns on TLS
  --client-key FILE    the client certificate's PEM private key
  --tenant T           the tenant id
  --groups G[,G...]    comma-separated groups, e.g. pismo-v1:accounts:rw
  --uid ID             a Pismo account id, for an account token
  --min-ttl D          the least life the token must have left (broker default 60s)
  --watch N            read N tokens from WatchAccessToken instead of calling GetAccessToken once
  --timeout D          give up after this long (default 30s for one call, no limit for --watch)
  --proto DIR          the directory holding tokenbroker/v1/tokenbroker.proto (default ../../proto)
Durations: 90, 1.5s, 500ms, 2m, 1h.`;

function usage(msg) {
  if (msg) process.stderr.write(`client.js: ${msg}\n`);
  process.stderr.write(USAGE + '\n');
  process.exit(2);
}

// seconds parses `90`, `1.5s`, `500ms`, `2m` or `1h` into seconds.
function seconds(flag, text) {
  const m = /^(\d+(?:\.\d+)?)(ms|s|m|h|)$/.exec(text);
  if (!m) usage(`--${flag}: ${JSON.stringify(text)} is not a duration such as 30s, 500ms, 2m or 1h`);
  return Number(m[1]) * { ms: 0.001, s: 1, m: 60, h: 3600, '': 1 }[m[2]];
}

function flags(argv) {
  let values;
  try {
    ({ values } = parseArgs({
      args: argv,
      options: {
        addr: { type: 'string', default: '127.0.0.1:7443' },
        key: { type: 'string', default: process.env.TOKENBROKER_KEY || '' },
        ca: { type: 'string' },
        cert: { type: 'string' },
        'client-key': { type: 'string' },
        tenant: { type: 'string' },
        groups: { type: 'string' },
        uid: { type: 'string', default: '' },
        'min-ttl': { type: 'string' },
        watch: { type: 'string', default: '0' },
        timeout: { type: 'string' },
        proto: { type: 'string', default: path.join(__dirname, '..', '..', 'proto') },
        help: { type: 'boolean', short: 'h' },
      },
      strict: true,
    }));
  } catch (err) {
    usage(err.message);
  }
  if (values.help) usage();
  if (!values.tenant || !values.groups) usage('--tenant and --groups are required');
  if (!values.cert !== !values['client-key']) usage('--cert and --client-key go together');
  if (!values.key && !values.cert) {
    usage('give a bearer key (--key or $TOKENBROKER_KEY), a client certificate (--cert, --client-key), or both');
  }
  if (!/^\d+$/.test(values.watch)) usage('--watch must be a whole number');
  return {
    ...values,
    watch: Number(values.watch),
    minTtl: values['min-ttl'] === undefined ? undefined : seconds('min-ttl', values['min-ttl']),
    timeout: values.timeout === undefined ? undefined : seconds('timeout', values.timeout),
  };
}

function bearer(key) {
  const md = new grpc.Metadata();
  md.set('authorization', `Bearer ${key}`);
  return md;
}

// channel returns the channel credentials, and the metadata each call must
// carry. Over TLS (and mTLS) the key rides as call credentials, which grpc-js
// sends only over a secure channel: a misconfigured client cannot leak it in
// clear. In plaintext, which the broker serves on loopback only (`make run`),
// grpc-js refuses call credentials, so the key goes as call metadata.
function channel(a) {
  if (!a.ca && !a.cert) {
    return { creds: grpc.credentials.createInsecure(), md: a.key ? bearer(a.key) : new grpc.Metadata() };
  }
  let creds = grpc.credentials.createSsl(
    a.ca ? fs.readFileSync(a.ca) : null, // null: Node's root certificates
    a.cert ? fs.readFileSync(a['client-key']) : null,
    a.cert ? fs.readFileSync(a.cert) : null,
  );
  if (a.key) {
    const callCreds = grpc.credentials.createFromMetadataGenerator((_params, cb) => cb(null, bearer(a.key)));
    creds = grpc.credentials.combineChannelCredentials(creds, callCreds);
  }
  return { creds, md: new grpc.Metadata() };
}

function line(resp) {
  const fp = crypto.createHash('sha256').update(resp.accessToken).digest('hex').slice(0, 12);
  const expires = new Date(Number(resp.expireTime.seconds) * 1000).toISOString().replace(/\.\d{3}Z$/, 'Z');
  const cache = String(resp.cacheStatus).replace(/^CACHE_STATUS_/, '');
  return `token fp=${fp} expires=${expires} cache=${cache}`;
}

function fail(err) {
  const code = grpc.status[err.code] ?? err.code;
  process.stderr.write(`error code=${code} message=${err.details ?? err.message}\n`);
  process.exitCode = 1;
}

function main() {
  const a = flags(process.argv.slice(2));
  const def = protoLoader.loadSync('tokenbroker/v1/tokenbroker.proto', {
    includeDirs: [a.proto], // the well-known types come with protobufjs
    longs: String, // int64 (Timestamp.seconds) as a decimal string
    enums: String, // cacheStatus as 'CACHE_STATUS_HIT'
    defaults: true,
  });
  const { TokenBrokerService } = grpc.loadPackageDefinition(def).tokenbroker.v1;
  const { creds, md } = channel(a);
  const client = new TokenBrokerService(a.addr, creds);

  const req = { tenant: a.tenant, uid: a.uid, groups: a.groups.split(',').filter(Boolean) };
  if (a.minTtl !== undefined) {
    req.minTtl = { seconds: Math.trunc(a.minTtl), nanos: Math.round((a.minTtl % 1) * 1e9) };
  }
  const limit = a.timeout ?? (a.watch ? undefined : 30);
  const opts = limit === undefined ? {} : { deadline: Date.now() + limit * 1000 };

  if (!a.watch) {
    client.getAccessToken(req, md, opts, (err, resp) => {
      if (err) fail(err);
      else console.log(line(resp));
      client.close();
    });
    return;
  }
  const stream = client.watchAccessToken(req, md, opts);
  let got = 0;
  stream.on('data', (resp) => {
    if (got === a.watch) return;
    console.log(line(resp));
    if (++got === a.watch) stream.cancel(); // enough: end the stream; the broker sees the caller go away
  });
  let failed = false;
  stream.on('error', (err) => {
    if (got === a.watch) return; // after cancel() the stream ends with CANCELLED: expected
    failed = true;
    fail(err);
  });
  stream.on('close', () => {
    if (got < a.watch && !failed) {
      fail({ code: 'UNAVAILABLE', details: `the stream ended after ${got} of ${a.watch} tokens` });
    }
    client.close();
  });
}

main();
