"""Imported by the build's fork server alone, as it starts (`executor._PRELOAD`): the fork
server, and so every worker it forked (each dies with its parent), dies the moment the
process that started it dies, kill -9 included, rather than after its own clean exit.
"""
import signal

from ..system import die_with_parent

die_with_parent(signal.SIGKILL)
