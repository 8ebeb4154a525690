"""The two kinds of user error abm reports without a traceback (exit code 2 from the ``abm`` command).

- :class:`ParameterError`: a scenario, parameter or regimen value that cannot be accepted; the message names the
  file (or the ``--set``), the key, what was given and what is allowed.
- :class:`UsageError`: a mistake in how abm was called (an output that exists, a missing input file).
"""

from __future__ import annotations


class ParameterError(ValueError):
    """A parameter or scenario value that cannot be accepted; the message says where, what and what is allowed."""


class UsageError(Exception):
    """A mistake in how abm was called (exit code 2)."""
