"""Protobuf and gRPC code for protos/: generated, do not edit; run scripts/generate_protos.py."""
