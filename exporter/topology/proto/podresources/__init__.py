"""Generated protobuf/gRPC modules of vendored .proto files (regenerate with scripts/gen-protos)."""
