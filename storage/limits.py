"""Write limits the store applies by itself, so that callers need not know them."""

from __future__ import annotations

from dataclasses import dataclass

#: Default: dead letters stored per reason, partition and minute (beyond: counted only).
DEAD_LETTERS_PER_MINUTE = 60
#: Default: of those, how many keep their payload (the rest are stored without it).
DEAD_LETTER_PAYLOADS_PER_MINUTE = 1


@dataclass(frozen=True, slots=True)
class DeadLetterCap:
    """How many dead letters are stored per (reason code, topic, partition, minute).

    The minute is the one the letter was received in (``received_at``, UTC). The
    first ``payloads_per_minute`` letters of such a bucket are stored with their
    payload, the next ones up to ``per_minute`` without it (``payload`` NULL,
    ``payload_size`` still set), and the rest are not stored: they are counted in
    ``dead_letter_volume`` (with the offset range per partition) and
    ``dead_letter_totals``. Requires ``0 <= payloads_per_minute <= per_minute``
    and ``per_minute >= 1``.
    """

    per_minute: int = DEAD_LETTERS_PER_MINUTE
    payloads_per_minute: int = DEAD_LETTER_PAYLOADS_PER_MINUTE

    def __post_init__(self) -> None:
        if self.per_minute < 1:
            raise ValueError(f"per_minute must be >= 1, got {self.per_minute}")
        if not 0 <= self.payloads_per_minute <= self.per_minute:
            raise ValueError(
                f"payloads_per_minute must be in 0..{self.per_minute}, got {self.payloads_per_minute}"
            )
