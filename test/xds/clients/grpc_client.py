#!/usr/bin/python3
"""A proxyless gRPC client on gRPC C-core (Debian python3-grpcio), driven by isomesh's xDS tests.

Reads commands as JSON lines on stdin and answers each with one JSON line on stdout, so one process
(one C-core xDS client, one channel per target) serves a whole test:
  {"op": "call", "target": "xds:///svc.acme", "count": 40, "timeout": 5}
      -> {"ok": {"b1": 30, "b2": 10}, "errors": {"UNAVAILABLE": 0}, "last_error": "..."}
  {"op": "close", "target": "..."}   {"op": "exit"}
The bootstrap comes from GRPC_XDS_BOOTSTRAP / GRPC_XDS_BOOTSTRAP_CONFIG (set by the test).
Every call has a deadline; the test bounds the process's lifetime too.
"""
import json
import sys

import grpc

METHOD = "/isomesh.test.Echo/Call"
channels = {}


def channel(target):
    ch = channels.get(target)
    if ch is None:
        ch = grpc.insecure_channel(target)
        # grpcio drives C-core's I/O only from threads that poll: without a call in flight the xDS
        # stream would be read only at the next RPC. A connectivity watch keeps a polling thread,
        # as any long-lived client has, so updates are applied (and ACKed) as they arrive.
        ch.subscribe(lambda _state: None, try_to_connect=True)
        channels[target] = ch
    return ch


def call(cmd):
    stub = channel(cmd["target"]).unary_unary(METHOD)
    ok, errors, last = {}, {}, None
    for _ in range(int(cmd.get("count", 1))):
        try:
            reply = stub(b"ping", timeout=float(cmd.get("timeout", 5)), wait_for_ready=bool(cmd.get("wait", False)))
            key = reply.decode()
            ok[key] = ok.get(key, 0) + 1
        except grpc.RpcError as err:
            name = err.code().name
            errors[name] = errors.get(name, 0) + 1
            last = err.details()
    return {"ok": ok, "errors": errors, "last_error": last}


def main():
    print(json.dumps({"ready": True, "grpc": grpc.__version__}), flush=True)
    for line in sys.stdin:
        cmd = json.loads(line)
        op = cmd.get("op")
        if op == "exit":
            break
        if op == "call":
            out = call(cmd)
        elif op == "close":
            ch = channels.pop(cmd["target"], None)
            if ch is not None:
                ch.close()
            out = {"closed": True}
        else:
            out = {"error": "unknown op %r" % op}
        print(json.dumps(out), flush=True)
    for ch in channels.values():
        ch.close()


if __name__ == "__main__":
    main()
