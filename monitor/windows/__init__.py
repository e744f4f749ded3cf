"""Assigning rows to event-time and count windows, watermarks, and the figures of a closed window."""
