"""OTLP trace receivers (gRPC, HTTP): bodies in, plain request records out to the span pipeline."""
