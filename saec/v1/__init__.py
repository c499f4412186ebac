"""Generated stubs of ``proto/saec/v1/saec.proto`` (the gRPC interface, version 1).

``saec_pb2`` holds the messages, ``saec_pb2_grpc`` the service stub and servicer.
Regenerate with ``python scripts/gen_grpc.py``; do not edit them by hand.
"""
