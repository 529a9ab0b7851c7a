"""fsar's own exceptions: one small hierarchy for every mistake a user can make.

Everything fsar raises for bad input (a wrong option value, an unreadable clip, a corrupt
cache or checkpoint, a model that cannot be built as asked) is a :class:`FsarError`, so a
caller needs one ``except`` clause, and the ``fsar`` command turns it into one line,
``fsar <command>: error: <message>`` with exit status 2 (a traceback only with
``fsar --debug``). The message names the file, option or clip and what is wrong with it.

=====================  ==========================================================
class                  raised for
=====================  ==========================================================
:class:`ConfigError`   a configuration value or key: CLI flags, YAML, ``-O KEY=VALUE``
:class:`DataError`     a data root, split file, clip or frame that cannot be used
:class:`CacheError`    a feature cache that is corrupt, stale or does not fit
:class:`CheckpointError`  a checkpoint that cannot be read or does not fit
:class:`ModelError`    a method or encoder that cannot be built with the options given
=====================  ==========================================================

Each is also a :class:`ValueError`, as the older per-module exceptions were; those
(``ManifestError``, ``VideoReadError``, ``EpisodeError``, ``CacheMismatchError``, ...) are
subclasses of the kinds above, so existing ``except`` clauses keep working.
"""

from __future__ import annotations

__all__ = ["CacheError", "CheckpointError", "ConfigError", "DataError", "FsarError", "ModelError"]


class FsarError(Exception):
    """Base of every error fsar raises for bad input; ``str()`` is the whole user message."""


class ConfigError(FsarError, ValueError):
    """A configuration value or key that cannot be used (the message names the source and key)."""


class DataError(FsarError, ValueError):
    """A data root, split file, clip or frame that cannot be used (the message names it)."""


class CacheError(FsarError, ValueError):
    """A feature cache that is corrupt, stale or belongs to other clips or another encoder."""


class CheckpointError(FsarError, ValueError):
    """A checkpoint that cannot be read or does not fit (the message names the file)."""


class ModelError(FsarError, ValueError):
    """A method or encoder that cannot be built as asked (unknown option, bad value, weights)."""
