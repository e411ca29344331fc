"""Protobuf and gRPC code for protos/: generated, do not edit; run clients/python/generate.py."""
