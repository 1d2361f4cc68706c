// Runs panva's oidc-provider on loopback for tokenbroker's interop tests.
//
//   node provider.js CLIENTS.json [PORT]
//
// CLIENTS.json is a JSON array of client metadata in oidc-provider's (RFC 7591)
// form: client_id, token_endpoint_auth_method, client_secret, jwks or jwks_uri,
// scope, token_endpoint_auth_signing_alg. Each client defaults to the
// client-credentials grant only. PORT defaults to 0 (any free port).
//
// Once listening, it prints one line "ISSUER <url>" to stdout. Everything else
// goes to stderr: one JSON line per token-endpoint event (grant.success,
// grant.error with the error's description and detail, server_error) and
// oidc-provider's own notices. It exits on SIGTERM, SIGINT, and when stdin
// closes, so it dies with the process that started it (run it by hand with
// stdin open, not from /dev/null). Each stdin line "sync N" is answered on
// stderr with "SYNC N", after every event logged before it.
//
// Access tokens are JWTs for the single resource server RESOURCE (the default
// resource), whose scopes are the union of the clients' scopes.

import { generateKeyPairSync, randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { createServer } from 'node:http';
import { createInterface } from 'node:readline';

import Provider, { errors } from 'oidc-provider';

const RESOURCE = 'urn:tokenbroker:interop';
const ACCESS_TOKEN_TTL = 300;

// oidc-provider prints its notices with console.info; keep stdout for ISSUER.
console.info = console.error;

const [clientsFile, port = '0'] = process.argv.slice(2);
if (!clientsFile) {
  console.error('usage: node provider.js CLIENTS.json [PORT]');
  process.exit(2);
}

const clients = JSON.parse(readFileSync(clientsFile, 'utf8')).map((c) => ({
  grant_types: ['client_credentials'],
  response_types: [],
  redirect_uris: [],
  ...c,
}));
const scopes = [...new Set(clients.flatMap((c) => c.scope?.split(' ') ?? []))].filter(Boolean);

let handle = (_req, res) => { res.statusCode = 503; res.end(); };
const server = createServer((req, res) => handle(req, res));
await new Promise((resolve, reject) => {
  server.once('error', reject);
  server.listen(Number(port), '127.0.0.1', resolve);
});
const issuer = `http://127.0.0.1:${server.address().port}`;

const provider = new Provider(issuer, {
  clients,
  scopes,
  jwks: { keys: [generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey.export({ format: 'jwk' })] },
  cookies: { keys: [randomBytes(32).toString('base64url')] },
  ttl: { AccessToken: ACCESS_TOKEN_TTL, ClientCredentials: ACCESS_TOKEN_TTL },
  features: {
    devInteractions: { enabled: false },
    clientCredentials: { enabled: true },
    resourceIndicators: {
      enabled: true,
      defaultResource: () => RESOURCE,
      getResourceServerInfo: (_ctx, resource) => {
        if (resource !== RESOURCE) throw new errors.InvalidTarget();
        return {
          scope: scopes.join(' '),
          audience: RESOURCE,
          accessTokenFormat: 'jwt',
          accessTokenTTL: ACCESS_TOKEN_TTL,
        };
      },
    },
  },
  // oidc-provider refuses to fetch from special-use addresses (SSRF guard);
  // the tests' jwks_uri servers are on 127.0.0.1, so drop that guard here.
  fetch: (url, { dispatcher, ...options }) => fetch(url, options),
});

function log(event, ctx, err) {
  const causes = [];
  for (let c = err?.cause; c; c = c.cause) causes.push(String(c.error_description ?? c.message ?? c));
  console.error(JSON.stringify({
    event,
    client_id: ctx.oidc?.client?.clientId ?? ctx.oidc?.params?.client_id,
    grant_type: ctx.oidc?.params?.grant_type,
    status: ctx.status,
    scope: err ? err.scope : ctx.body?.scope,
    error: err?.error ?? err?.message,
    error_description: err?.error_description,
    error_detail: err?.error_detail,
    cause: causes.length ? causes.join(': ') : undefined,
  }));
}
provider.on('grant.success', (ctx) => log('grant.success', ctx));
provider.on('grant.error', (ctx, err) => log('grant.error', ctx, err));
provider.on('server_error', (ctx, err) => log('server_error', ctx, err));

// Static clients are checked on first use; check them now so that bad
// metadata fails the start, not the first token request.
for (const { client_id: id } of clients) {
  try {
    await provider.Client.find(id);
  } catch (err) {
    console.error(`client ${JSON.stringify(id)}: ${err.error_description ?? err.message}`);
    process.exit(1);
  }
}

handle = provider.callback();
process.stdout.write(`ISSUER ${issuer}\n`);

function stop() {
  server.closeAllConnections();
  server.close(() => process.exit(0));
}
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
// A line "sync N" on stdin is answered with "SYNC N" on stderr, after the
// events of every request answered before: the Go helper waits for it to know
// its copy of the log is complete.
createInterface({ input: process.stdin })
  .on('line', (line) => {
    const n = line.match(/^sync (\d+)$/)?.[1];
    if (n) console.error(`SYNC ${n}`);
  })
  .on('close', stop);
