"""The evidence folder, bounded: at most one file per (sender, phase), a byte budget per sender.

Theory of operation
-------------------
Every :class:`pbft.events.EquivocationDetected` may become a file
``DATA/evidence/<phase>-v<view>-n<seq>-from-<sender>.json`` for
``pbft verify-evidence``. A faulty replica that equivocates without end would
fill the disk, so :class:`EvidenceStore` keeps:

* at most one file per (sender, phase): the *first* proof. One valid pair of
  conflicting signed messages already convicts its sender, so a second adds
  nothing; later ones are refused, not swapped in, so that nothing a faulty
  replica sends can remove a proof already on disk;
* at most ``sender_budget_bytes`` of files per sender (a file that would go
  past it is refused), so one faulty sender cannot use up the room another's
  evidence needs. With five phases and n senders the folder never holds more
  than 5n files and ``n * sender_budget_bytes`` bytes.

Files already in the folder (from before a restart) count against the bounds.
Refusals are counted (:attr:`EvidenceStore.refused`); :meth:`EvidenceStore.save`
tells the caller whether this is the first refusal for that sender, which the
node logs once.
"""

from __future__ import annotations

import re
from pathlib import Path

import attrs

from pbft.config import ClusterConfig
from pbft.evidence import Evidence, encode_evidence, evidence_file_name

_FILE_NAME = re.compile(r"^([a-z-]+?)-(?:v[0-9]+-)?(?:n[0-9]+-)?from-([0-9]+)\.json$")


@attrs.frozen
class Saved:
    """What became of one piece of evidence."""

    #: The file written, or None.
    path: Path | None
    #: Why nothing was written ("" when a file was).
    reason: str = ""
    #: True for the first refusal about this sender: the one to log.
    first_refusal: bool = False


class EvidenceStore:
    """Writes evidence files into ``directory`` within the bounds above."""

    def __init__(self, directory: Path, config: ClusterConfig, sender_budget_bytes: int) -> None:
        self.directory = Path(directory)
        self.config = config
        self.sender_budget_bytes = sender_budget_bytes
        #: Evidence not written: a proof of that (sender, phase) was kept, or no room.
        self.refused = 0
        self._phases: set[tuple[int, str]] = set()
        self._bytes: dict[int, int] = {}
        self._refused_senders: set[int] = set()
        self._scanned = False

    def bytes_kept(self) -> int:
        return sum(self._bytes.values())

    def files_kept(self) -> int:
        return len(self._phases)

    def save(self, evidence: Evidence) -> Saved:
        """Write ``evidence`` unless a bound forbids it; OSError propagates."""
        self._scan()
        sender, phase = evidence.sender, evidence.phase.lower()
        if (sender, phase) in self._phases:
            return self._refuse(sender, f"a {evidence.phase} proof of replica {sender} is kept")
        data = encode_evidence(evidence, self.config)
        used = self._bytes.get(sender, 0)
        if used + len(data) > self.sender_budget_bytes:
            return self._refuse(
                sender,
                f"{len(data)} bytes would exceed the {self.sender_budget_bytes}-byte "
                f"budget of replica {sender} ({used} used)",
            )
        self.directory.mkdir(parents=True, exist_ok=True)
        path = self.directory / evidence_file_name(evidence)
        path.write_bytes(data)
        self._phases.add((sender, phase))
        self._bytes[sender] = used + len(data)
        return Saved(path)

    def _refuse(self, sender: int, reason: str) -> Saved:
        self.refused += 1
        first = sender not in self._refused_senders
        self._refused_senders.add(sender)
        return Saved(None, reason, first)

    def _scan(self) -> None:
        """Count the files a previous run left, once."""
        if self._scanned:
            return
        self._scanned = True
        try:
            entries = list(self.directory.iterdir())
        except FileNotFoundError:
            return
        for path in entries:
            match = _FILE_NAME.match(path.name)
            if match is None or not path.is_file():
                continue
            sender = int(match[2])
            self._phases.add((sender, match[1]))
            self._bytes[sender] = self._bytes.get(sender, 0) + path.stat().st_size
