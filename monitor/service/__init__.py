"""The running daemon: the stream pipeline, the consume loop, and the wiring of ``alerts``."""
