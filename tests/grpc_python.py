"""One CSI call from Python grpcio with default channel options, over the unix socket.

grpcio >= 1.57 sends the socket path (percent-encoded) as :authority; the driver
must answer it. Usage: python3 tests/grpc_python.py /path/to/csi.sock
"""
import sys

import grpc

sock = sys.argv[1]
with grpc.insecure_channel(f"unix://{sock}") as channel:
    # Raw bytes, no generated stubs: an empty GetPluginInfoRequest is zero bytes.
    call = channel.unary_unary(
        "/csi.v1.Identity/GetPluginInfo",
        request_serializer=lambda _: b"",
        response_deserializer=lambda b: b,
    )
    try:
        answer = call(None, timeout=10)
    except grpc.RpcError as e:
        print(f"FAIL grpcio {grpc.__version__}: {e.code()} {e.details()}")
        sys.exit(1)
    if b"csi.proxmox-csi.dev" not in answer:
        print(f"FAIL grpcio {grpc.__version__}: unexpected answer {answer!r}")
        sys.exit(1)
    print(f"PASS grpcio {grpc.__version__}: GetPluginInfo answered over unix://{sock}")
