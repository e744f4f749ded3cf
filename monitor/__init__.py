"""The driftwarden daemon, in subpackages by job.

``ingest`` (Kafka client, decoding, dead letters) -> ``windows`` (assignment,
watermarks, figures of a closed window) -> ``service`` (pipeline, daemon,
alert wiring); ``references`` loads and validates reference data; ``web``
serves the HTTP API and metrics; ``cli`` is the command line; ``demo`` holds
the embedded broker and the Slack/webhook stand-ins (never imported by the
daemon). ``config`` is the one config parser.
"""
