"""The gRPC interface, version 1 (``proto/saec/v1/saec.proto``).

``saec_pb2`` (messages) and ``saec_pb2_grpc`` (service stub and servicer) are generated:
regenerate them with ``python scripts/gen_grpc.py``, never edit them by hand.
``packed`` writes the messages whose generated classes cost too much (a lookup's keys and
its answer) straight to protobuf bytes.
"""
