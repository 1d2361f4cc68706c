#!/usr/bin/python3
"""A tokenbroker client in Python, from stubs generated out of proto/ at run time.

It asks a broker for an access token (GetAccessToken) or watches one
(WatchAccessToken) and prints one line per token, never the token itself:

    token fp=<first 12 hex of its SHA-256> expires=<RFC 3339, UTC> cache=<HIT|MISS|SHARED>

The fingerprint is the one the broker writes in its log and audit trail. A
refusal prints `error code=<gRPC code> message=<text>` on stderr and exits 1.

Needs grpcio and grpcio-tools (Debian: apt-get install python3-grpcio
python3-grpc-tools, for /usr/bin/python3). Examples, with the flags
`tokenbroker dev` prints:

    /usr/bin/python3 client.py --addr 127.0.0.1:7443 --key tbk_... \\
        --tenant tn-demo --groups pismo-v1:accounts:rw
    /usr/bin/python3 client.py --addr broker.internal:7443 --ca ca.crt \\
        --cert me.crt --client-key me.key --tenant tn-demo \\
        --groups pismo-v1:accounts:rw --watch 3
"""

import argparse
import atexit
import datetime
import hashlib
import importlib
import os
import re
import shutil
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_PROTO = os.path.join(HERE, "..", "..", "proto")
PROTO_FILE = "tokenbroker/v1/tokenbroker.proto"


def load_stubs(proto_dir):
    """Generate the messages and the service stub into a temporary directory and import them.

    A team would run `buf generate` (docs/clients.md) and commit or package
    the result; generating here keeps generated code out of the repository.
    """
    from grpc_tools import protoc

    out = tempfile.mkdtemp(prefix="tokenbroker-py-")
    atexit.register(shutil.rmtree, out, True)
    # The well-known types (duration, timestamp) ship inside grpc_tools.
    wkt = os.path.join(os.path.dirname(protoc.__file__), "_proto")
    code = protoc.main([
        "grpc_tools.protoc",
        "-I" + proto_dir,
        "-I" + wkt,
        "--python_out=" + out,
        "--grpc_python_out=" + out,
        os.path.join(proto_dir, PROTO_FILE),
    ])
    if code != 0:
        sys.exit(f"client.py: protoc failed on {os.path.join(proto_dir, PROTO_FILE)} (exit {code})")
    sys.path.insert(0, out)
    pb2 = importlib.import_module("tokenbroker.v1.tokenbroker_pb2")
    pb2_grpc = importlib.import_module("tokenbroker.v1.tokenbroker_pb2_grpc")
    return pb2, pb2_grpc


_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "": 1}


def duration(text):
    """Seconds from `90`, `1.5s`, `500ms`, `2m` or `1h`."""
    m = re.fullmatch(r"(\d+(?:\.\d+)?)(ms|s|m|h|)", text)
    if not m:
        raise argparse.ArgumentTypeError(f"{text!r} is not a duration such as 30s, 500ms, 2m or 1h")
    return float(m.group(1)) * _UNITS[m.group(2)]


def parse_args(argv):
    p = argparse.ArgumentParser(description="Ask a tokenbroker for an access token; print its fingerprint and expiry.")
    p.add_argument("--addr", default="127.0.0.1:7443", help="the broker's gRPC address (default %(default)s)")
    p.add_argument("--key", default=os.environ.get("TOKENBROKER_KEY", ""),
                   help="the caller's bearer key (default $TOKENBROKER_KEY)")
    p.add_argument("--ca", help="PEM CA certificates that issued the broker's certificate; turns on TLS")
    p.add_argument("--cert", help="PEM client certificate (mTLS); turns on TLS")
    p.add_argument("--client-key", help="the client certificate's PEM private key")
    p.add_argument("--tenant", required=True, help="the tenant id")
    p.add_argument("--groups", required=True, help="comma-separated groups, e.g. pismo-v1:accounts:rw")
    p.add_argument("--uid", default="", help="a Pismo account id, for an account token")
    p.add_argument("--min-ttl", type=duration, help="the least life the token must have left (broker default 60s)")
    p.add_argument("--watch", type=int, default=0, metavar="N",
                   help="read N tokens from WatchAccessToken instead of calling GetAccessToken once")
    p.add_argument("--timeout", type=duration,
                   help="give up after this long (default 30s for one call, no limit for --watch)")
    p.add_argument("--proto", default=DEFAULT_PROTO, help="the directory holding tokenbroker/v1/tokenbroker.proto")
    a = p.parse_args(argv)
    if bool(a.cert) != bool(a.client_key):
        p.error("--cert and --client-key go together")
    if not a.key and not a.cert:
        p.error("give a bearer key (--key or $TOKENBROKER_KEY), a client certificate (--cert, --client-key), or both")
    if a.watch < 0:
        p.error("--watch must be at least 1")
    return a


def read(path):
    with open(path, "rb") as f:
        return f.read()


def channel(grpc, a):
    """The channel, and the metadata each call must carry.

    Over TLS (and mTLS) the key rides as call credentials, which gRPC sends
    only over a secure channel: a misconfigured client cannot leak it in
    clear. In plaintext, which the broker serves on loopback only (`make
    run`), gRPC refuses call credentials, so the key goes as call metadata.
    """
    if not (a.ca or a.cert):
        metadata = [("authorization", "Bearer " + a.key)] if a.key else None
        return grpc.insecure_channel(a.addr), metadata
    creds = grpc.ssl_channel_credentials(
        root_certificates=read(a.ca) if a.ca else None,  # None: the system's roots
        private_key=read(a.client_key) if a.client_key else None,
        certificate_chain=read(a.cert) if a.cert else None,
    )
    if a.key:  # sends "authorization: Bearer <key>"
        creds = grpc.composite_channel_credentials(creds, grpc.access_token_call_credentials(a.key))
    return grpc.secure_channel(a.addr, creds), None


def line(resp, pb2):
    fp = hashlib.sha256(resp.access_token.encode()).hexdigest()[:12]
    expires = datetime.datetime.fromtimestamp(resp.expire_time.seconds, datetime.timezone.utc)
    cache = pb2.CacheStatus.Name(resp.cache_status).removeprefix("CACHE_STATUS_")
    return f"token fp={fp} expires={expires.strftime('%Y-%m-%dT%H:%M:%SZ')} cache={cache}"


def main(argv):
    a = parse_args(argv)
    try:  # after the flags, so that --help works without them
        import grpc
        import grpc_tools.protoc  # noqa: F401
    except ImportError as e:
        sys.exit(f"client.py: {e}: needs grpcio and grpcio-tools "
                 "(Debian: apt-get install python3-grpcio python3-grpc-tools, then run /usr/bin/python3)")

    pb2, pb2_grpc = load_stubs(os.path.abspath(a.proto))
    fields = dict(tenant=a.tenant, uid=a.uid, groups=[g for g in a.groups.split(",") if g])
    if a.min_ttl is not None:
        from google.protobuf import duration_pb2

        fields["min_ttl"] = duration_pb2.Duration(seconds=int(a.min_ttl), nanos=round(a.min_ttl % 1 * 1e9))
    ch, metadata = channel(grpc, a)
    with ch:
        stub = pb2_grpc.TokenBrokerServiceStub(ch)
        try:
            if not a.watch:
                resp = stub.GetAccessToken(pb2.GetAccessTokenRequest(**fields), metadata=metadata,
                                           timeout=a.timeout or 30)
                print(line(resp, pb2), flush=True)
                return 0
            stream = stub.WatchAccessToken(pb2.WatchAccessTokenRequest(**fields), metadata=metadata,
                                           timeout=a.timeout)
            got = 0
            for resp in stream:
                print(line(resp, pb2), flush=True)
                got += 1
                if got == a.watch:
                    stream.cancel()  # enough: end the stream; the broker sees the caller go away
                    return 0
            print(f"error code=UNAVAILABLE message=the stream ended after {got} of {a.watch} tokens",
                  file=sys.stderr)
            return 1
        except grpc.RpcError as e:
            print(f"error code={e.code().name} message={e.details()}", file=sys.stderr)
            return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
