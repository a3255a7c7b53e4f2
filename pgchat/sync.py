"""Deprecated name of pgchat.chat (it read as "synchronous"); import pgchat.chat instead."""

import warnings

from pgchat.chat import *  # noqa: F403
from pgchat.chat import __all__  # noqa: F401

warnings.warn("pgchat.sync is now pgchat.chat", DeprecationWarning, stacklevel=2)
