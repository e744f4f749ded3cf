"""``driftwarden demo``: the embedded broker, a drifting stream, and Slack/webhook stand-ins (test and demo only)."""
