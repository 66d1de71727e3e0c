"""The exceptions a user can fix, one family so the CLI prints them all the same way.

Every expected failure (a bad config value, a damaged dataset, weights file, checkpoint or
record, a folder in use, a recorded protocol that differs, a diverged run, an unwritable
output folder) raises an ``AttnlabError`` whose message is one line naming the file or key
and the fix. ``attnlab <command>`` prints it as ``attnlab <command>: error: <message>`` and
exits 2; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations


class AttnlabError(Exception):
    """A failure the user can fix; the message says what, where and how."""


class RecordError(AttnlabError, ValueError):
    """A run record (summary.json, metrics.csv, predictions, checkpoint) is missing or damaged."""


class CheckpointError(RecordError):
    """A checkpoint cannot be read safely (truncated, not attnlab's, or holding code)."""


class LockError(AttnlabError):
    """Another process holds the run or ablation folder."""


class ProtocolError(AttnlabError, ValueError):
    """The config differs from the protocol recorded in the folder."""


class OutputError(AttnlabError, OSError):
    """An output file cannot be written (read-only folder, full disk, ...)."""


class WeightsError(AttnlabError, ValueError, RuntimeError):
    """Pretrained weights that cannot be found, read or fitted to the backbone."""


class MissingWeightsFile(WeightsError, FileNotFoundError):
    """A local weights file that does not exist."""
