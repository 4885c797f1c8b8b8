"""hearfuse's error policy, as exception classes.

- A user's mistake (an option, a config key, a path, a task folder) is a :class:`UsageError`: the
  command line prints one line naming the thing and what is expected, and exits with status 2.
- A problem with one input file is recorded with its reason (manifest, result file) and the run
  goes on; the command exits with status 1 when any file failed.
- Anything else is a bug and shows a traceback.

``UsageError`` derives from ``ValueError`` so library callers that catch ``ValueError`` keep working.
"""

from __future__ import annotations


class UsageError(ValueError):
    """A user's mistake; the message names the thing and what is expected."""


class ConfigError(UsageError):
    """A fusion config that is not valid; the message names the file (if any) and the key."""
