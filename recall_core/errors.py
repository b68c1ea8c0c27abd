"""The one error hierarchy of recall.

Every failure a user can cause (bad config, bad data, missing artifacts) is a
``RecallError``; the CLI and the gRPC layer each translate these in exactly one
place into one line / one status code. Anything else is a bug.
"""

from __future__ import annotations


class RecallError(Exception):
    """Base class: a problem the user can fix, with a one-line message."""


class ConfigError(RecallError):
    """A project or source configuration is invalid (unknown key, bad value)."""


class UnknownKindError(ConfigError):
    """No installed plugin provides the requested source kind."""


class UnknownSourceError(ConfigError):
    """A source name is not configured in the project."""


class PluginError(RecallError):
    """A plugin is broken or two plugins conflict (e.g. claim one kind)."""


class DataError(RecallError):
    """Input data is missing, malformed or inconsistent."""


class UnknownUserError(DataError):
    """A user id is not in the dataset and no history was given."""


class NotTrainedError(RecallError):
    """A source has no trained or indexed artifact to serve from."""


class ArtifactError(RecallError):
    """An artifact is corrupt, incomplete or does not match its manifest."""


class ProjectError(RecallError):
    """The project directory is missing or not a recall project."""


class AllSourcesFailedError(RecallError):
    """Every source of a request failed; there is nothing to merge."""
